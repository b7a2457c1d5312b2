// Package manager is the vnicfilter management service: a REST API (v1,
// manager/openapi.yaml) over TLS that keeps hosts, VMs, tags, groups,
// firewall policies and their assignments in a revisioned store
// (manager/store), computes each host's desired state (manager/model),
// streams it to the host's agent, and compares it with what the agent
// reports as realized. docs/manager.md tells the whole story.
package manager

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/vnicfilter/vnicfilter/manager/api"
	"github.com/vnicfilter/vnicfilter/manager/pki"
	"github.com/vnicfilter/vnicfilter/manager/store"
)

// AdminTokenFile is the file in the data directory that receives the
// first admin token at first start (mode 0600).
const AdminTokenFile = "admin.token"

// Options configure New. The zero value of each field is its default.
type Options struct {
	// Store holds the state; the Server does not close it.
	Store store.Store
	// DataDir holds the CA, the server certificate and the bootstrap admin
	// token (created 0700).
	DataDir string
	// Names are the DNS names and IP addresses the server certificate
	// covers, besides localhost, 127.0.0.1, ::1 and the host name.
	Names []string
	// Logger receives the service log (default: slog.Default()).
	Logger *slog.Logger
	// PingInterval is the keep-alive period of desired-state streams
	// (default 15 s).
	PingInterval time.Duration
}

// Server is one manager instance.
type Server struct {
	st   store.Store
	ca   *pki.CA
	cert tls.Certificate
	log  *slog.Logger
	view *view
	ping time.Duration

	cancel context.CancelFunc
	done   chan struct{}

	metrics *metrics

	mu sync.Mutex
	// streams counts open desired-state streams per host.
	streams map[string]int
}

// New loads or creates the CA and server certificate in opts.DataDir,
// starts following the store, and, at first start, writes an admin token
// to DataDir/admin.token.
func New(ctx context.Context, opts Options) (*Server, error) {
	if opts.Store == nil || opts.DataDir == "" {
		return nil, errors.New("manager: Store and DataDir are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.PingInterval <= 0 {
		opts.PingInterval = 15 * time.Second
	}
	ca, err := pki.LoadOrCreateCA(opts.DataDir)
	if err != nil {
		return nil, err
	}
	names := []string{"localhost", "127.0.0.1", "::1"}
	if hn, err := os.Hostname(); err == nil && hn != "" {
		names = append(names, hn)
	}
	names = append(names, opts.Names...)
	cert, err := ca.ServerCert(opts.DataDir, names)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s := &Server{st: opts.Store, ca: ca, cert: cert, log: opts.Logger, view: newView(opts.Store, opts.Logger),
		ping: opts.PingInterval, cancel: cancel, done: make(chan struct{}), streams: map[string]int{}}
	s.metrics = newMetrics(s)
	go func() {
		defer close(s.done)
		s.view.run(runCtx)
	}()
	select {
	case <-s.view.ready:
	case <-ctx.Done():
		s.Close()
		return nil, ctx.Err()
	}
	if err := s.bootstrap(ctx, opts.DataDir); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// bootstrap mints the first admin token when DataDir has none yet.
func (s *Server) bootstrap(ctx context.Context, dir string) error {
	path := filepath.Join(dir, AdminTokenFile)
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	t, err := s.mintToken(ctx, api.TokenRequest{Role: api.RoleAdmin, Name: "bootstrap"})
	if err != nil {
		return fmt.Errorf("bootstrap admin token: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("bootstrap admin token: %w", err)
	}
	if _, err := fmt.Fprintln(f, t.Secret); err != nil {
		f.Close()
		return err
	}
	s.log.Info("first admin token written", "file", path)
	return f.Close()
}

// CAPEM returns the manager CA certificate clients should trust.
func (s *Server) CAPEM() []byte { return s.ca.PEM }

// TLSConfig is the server side of the API: TLS 1.3, the manager's
// certificate, and client certificates verified against the manager CA
// when given (agent endpoints require one; user endpoints use tokens).
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{s.cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    s.ca.Pool(),
	}
}

// Serve answers the API on l (a plain TCP listener: Serve adds TLS)
// until ctx ends, then shuts down, giving requests 5 s to finish.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(tls.NewListener(l, s.TLSConfig())) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
		return nil
	}
}

// Close stops following the store. It does not close the store.
func (s *Server) Close() {
	s.cancel()
	<-s.done
}

// connected reports whether an agent stream of host is open here.
func (s *Server) connected(host string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams[host] > 0
}
