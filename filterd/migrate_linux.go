package filterd

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// MigrateConfig configures the filterd-to-filterd state transfer of a
// live migration (docs/migration.md): a listener on the management network
// serving only the migration endpoints over mutual TLS, with certificates
// of the host CA the hidden bridge uses (tlsca.go).
type MigrateConfig struct {
	// Listen is IP:PORT on the management network (e.g. 10.0.0.5:9444);
	// empty: no migration listener, pulls are refused.
	Listen string
	// TLSDir holds the host CA (the hidden bridge's, --hidden-tls-dir).
	TLSDir string
	// PeersCA is a PEM file of the CA certificates of the hosts this one
	// migrates with (their TLSDir/ca.pem, concatenated). Only filterds with
	// a certificate of one of them (or of this host's CA) are served, and
	// only they are trusted as sources.
	PeersCA string
	// Peers are the filterds asked for an arriving VM's state, as
	// https://IP:PORT (their Listen).
	Peers []string
}

func (c MigrateConfig) validate() error {
	host, _, err := net.SplitHostPort(c.Listen)
	switch {
	case err != nil:
		return fmt.Errorf("migration listener %q: want IP:PORT on the management network: %v", c.Listen, err)
	case net.ParseIP(host) == nil || net.ParseIP(host).IsUnspecified():
		return fmt.Errorf("migration listener %q: want the host's own IP address on the management network (its certificate names it), not a name or 0.0.0.0", c.Listen)
	case c.TLSDir == "":
		return errors.New("migration listener: a TLS directory with the host CA is required (--hidden-tls-dir)")
	case c.PeersCA == "":
		return errors.New("migration listener: the CA certificates of the peer hosts are required (--migrate-peers-ca)")
	}
	for _, p := range c.Peers {
		if err := checkPeerURL(p); err != nil {
			return err
		}
	}
	return nil
}

func checkPeerURL(p string) error {
	u, err := url.Parse(p)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return fmt.Errorf("migration peer %q: want https://IP:PORT (the peer's --migrate-listen)", p)
	}
	return nil
}

// migrator is the migration side of a daemon: the mutual-TLS client and
// server, and the peers that pulled a vNIC's state and want its final
// state at handoff.
type migrator struct {
	cfg    MigrateConfig
	self   string // https://Listen: where peers push to us
	log    *slog.Logger
	client *http.Client
	server *tls.Config

	mu        sync.Mutex
	followers map[string]follower // by local vNIC
}

// follower is a peer that pulled a vNIC's state for a migration in
// progress: at handoff the vNIC's final state goes to its vNIC.
type follower struct {
	peer, vnic, owner string
	at                time.Time
}

// deltaMargin widens the final push's window beyond the pull: entries
// whose activity stamp is coarse (the load balancer refreshes it once a
// second) or that changed while the pull was being exported.
const deltaMargin = 2 * time.Second

// followerTTL bounds how long a pull waits for its handoff: a migration
// cancelled at the destination leaves a follower the source never uses.
const followerTTL = 24 * time.Hour

// newMigrator issues this host's migration certificates from the host CA
// (the server one for Listen's IP, a client one for pulls and pushes; both
// kept in memory, reissued at every start) and trusts the host CA and the
// peers' CAs.
func newMigrator(cfg MigrateConfig, log *slog.Logger) (*migrator, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ca, err := loadOrCreateCA(cfg.TLSDir)
	if err != nil {
		return nil, fmt.Errorf("migration TLS: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	peers, err := os.ReadFile(cfg.PeersCA)
	if err != nil {
		return nil, fmt.Errorf("migration peers' CAs: %w", err)
	}
	if !pool.AppendCertsFromPEM(peers) {
		return nil, fmt.Errorf("migration peers' CAs %s: no PEM certificate in it", cfg.PeersCA)
	}
	host, _, _ := net.SplitHostPort(cfg.Listen)
	ip := net.ParseIP(host)
	const life = 365 * 24 * time.Hour
	sder, skey, err := ca.issue("filterd-migrate "+host, []net.IP{ip}, true, life)
	if err != nil {
		return nil, err
	}
	cder, ckey, err := ca.issue("filterd-migrate "+host, nil, false, life)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{
			Certificates: []tls.Certificate{{Certificate: [][]byte{cder, ca.cert.Raw}, PrivateKey: ckey}},
			RootCAs:      pool,
			MinVersion:   tls.VersionTLS13,
		},
		MaxIdleConns:       8,
		IdleConnTimeout:    time.Minute,
		DisableCompression: true, // conntrack entries barely compress; gzip would cost more than the wire
	}
	return &migrator{
		cfg:    cfg,
		self:   "https://" + cfg.Listen,
		log:    log,
		client: &http.Client{Transport: tr},
		server: &tls.Config{
			Certificates: []tls.Certificate{{Certificate: [][]byte{sder, ca.cert.Raw}, PrivateKey: skey}},
			ClientCAs:    pool,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			MinVersion:   tls.VersionTLS13,
		},
		followers: map[string]follower{},
	}, nil
}

// serveMigrate serves the migration endpoints on Listen over mutual TLS
// until the returned stop is called.
func (d *Daemon) serveMigrate(ctx context.Context) (func() error, error) {
	m, err := newMigrator(d.cfg.Migrate, d.log.With("component", "migrate"))
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", m.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("migration listener on %s: %w", m.cfg.Listen, err)
	}
	mux := http.NewServeMux()
	v := "/" + api.Version
	mux.HandleFunc("GET "+v+"/migrate/state", d.handlePeerExport)
	mux.HandleFunc("PUT "+v+"/migrate/state", d.handlePeerImport)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusNotFound, api.Error{Code: api.CodeBadRequest, Message: fmt.Sprintf("no such endpoint on the migration listener: %s %s", r.Method, r.URL.Path)})
	})
	srv := &http.Server{Handler: mux, TLSConfig: m.server, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(m.log.Handler(), slog.LevelDebug)}
	d.mu.Lock()
	d.mig = m
	d.mu.Unlock()
	go func() {
		if err := srv.Serve(tls.NewListener(ln, m.server)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Error("migration listener", "err", err)
		}
	}()
	m.log.Info("serving state transfers (mutual TLS)", "addr", m.cfg.Listen, "peers", m.cfg.Peers)
	return func() error {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	}, nil
}

func (d *Daemon) migrator() (*migrator, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mig == nil {
		return nil, fmt.Errorf("%w: filterd runs without a migration listener (--migrate-listen)", sdk.ErrNotSupported)
	}
	return d.mig, nil
}

// vnicOf finds the vNIC of owner's VM with the guest MAC mac: the only one
// the owner has, or the one whose device has that MAC (libvirt gives a tap
// the guest's MAC with the first octet 0xfe).
func (d *Daemon) vnicOf(owner, mac string) (string, error) {
	if owner == "" {
		return "", fmt.Errorf("%w: no owner named", ErrBadRequest)
	}
	var names []string
	d.mu.Lock()
	for name, v := range d.vnics {
		if v.owner == owner && !v.capture {
			names = append(names, name)
		}
	}
	d.mu.Unlock()
	slices.Sort(names)
	switch {
	case len(names) == 0:
		return "", fmt.Errorf("no chain of %s here: %w", owner, datapath.ErrNotAttached)
	case len(names) == 1:
		return names[0], nil
	}
	want, err := net.ParseMAC(mac)
	if err != nil {
		return "", fmt.Errorf("%w: %s has %d chains (%s) and the guest MAC %q does not pick one", ErrBadRequest, owner, len(names), strings.Join(names, ", "), mac)
	}
	for _, name := range names {
		l, err := netlink.LinkByName(name)
		if err != nil {
			continue
		}
		hw := l.Attrs().HardwareAddr
		if len(hw) == len(want) && (bytes.Equal(hw, want) || (hw[0] == 0xfe && bytes.Equal(hw[1:], want[1:]))) {
			return name, nil
		}
	}
	return "", fmt.Errorf("none of the chains of %s (%s) is on a device with guest MAC %s: %w", owner, strings.Join(names, ", "), mac, datapath.ErrNotAttached)
}

// ownerOf returns the owner of the chain on vnic.
func (d *Daemon) ownerOf(vnic string) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.vnics[vnic]
	if !ok {
		return "", fmt.Errorf("%s: %w", vnic, datapath.ErrNotAttached)
	}
	return v.owner, nil
}

// handlePeerExport is GET /v1/migrate/state on the migration listener: a
// peer pulls the state of a VM arriving there. The chain and its state
// stay as they are here (an export only reads), so a migration that fails
// later leaves the source intact.
func (d *Daemon) handlePeerExport(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	owner := q.Get("owner")
	name, err := d.vnicOf(owner, q.Get("mac"))
	if err != nil {
		replyErr(w, err)
		return
	}
	if peer := q.Get("follow"); peer != "" {
		if m, err := d.migrator(); err == nil && strings.TrimSuffix(peer, "/") == m.self {
			// Ourselves: the chain found is the one being filled.
			replyErr(w, fmt.Errorf("%w: a pull from this filterd itself", ErrBadRequest))
			return
		}
		if err := checkPeerURL(peer); err != nil || q.Get("vnic") == "" {
			replyErr(w, fmt.Errorf("%w: follow=%q vnic=%q: want the puller's https://IP:PORT and its vNIC", ErrBadRequest, peer, q.Get("vnic")))
			return
		}
		m, err := d.migrator()
		if err != nil {
			replyErr(w, err)
			return
		}
		m.mu.Lock()
		m.followers[name] = follower{peer: peer, vnic: q.Get("vnic"), owner: owner, at: time.Now()}
		m.mu.Unlock()
	}
	d.log.Info("state pulled by a peer", "vnic", name, "owner", owner, "peer", peerName(r), "follow", q.Get("follow"))
	d.writeExport(w, r, name, map[string]string{sourceHeader: name})
}

// sourceHeader names the source vNIC of a pulled bundle.
const sourceHeader = "Vnicfilter-Source-Vnic"

func peerName(r *http.Request) string {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return r.TLS.PeerCertificates[0].Subject.CommonName + " at " + r.RemoteAddr
	}
	return r.RemoteAddr
}

// handlePeerImport is PUT /v1/migrate/state on the migration listener: the
// source's final push at handoff. A peer may only add state to a chain of
// the same owner, one the destination's hook attached for that VM.
func (d *Daemon) handlePeerImport(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	vnic, owner := q.Get("vnic"), q.Get("owner")
	have, err := d.ownerOf(vnic)
	if err != nil {
		replyErr(w, err)
		return
	}
	if owner == "" || have != owner {
		replyErr(w, fmt.Errorf("%w: %s belongs to %q here, not to %q", ErrBadRequest, vnic, have, owner))
		return
	}
	b, err := readBundleBody(r)
	if err != nil {
		replyErr(w, err)
		return
	}
	out, err := d.ImportState(r.Context(), vnic, b)
	if err == nil {
		d.log.Info("final state pushed by a peer", "vnic", vnic, "owner", owner, "peer", peerName(r), "bytes", len(b))
	}
	respond(w, out, err)
}

// PullState fetches the state of req.Owner's vNIC from the peer that holds
// it (the source of a migration, asked in turn) and imports it into
// vnic's chain, which must be attached here with the same owner.
func (d *Daemon) PullState(ctx context.Context, vnic string, req api.PullRequest) (*api.PullResult, error) {
	m, err := d.migrator()
	if err != nil {
		return nil, err
	}
	have, err := d.ownerOf(vnic)
	if err != nil {
		return nil, err
	}
	if req.Owner == "" || have != req.Owner {
		return nil, fmt.Errorf("%w: the chain on %s belongs to %q, not to %q", ErrBadRequest, vnic, have, req.Owner)
	}
	peers := req.Peers
	if len(peers) == 0 {
		peers = m.cfg.Peers
	}
	if len(peers) == 0 {
		return nil, fmt.Errorf("%w: no migration peers to ask (--migrate-peers)", ErrBadRequest)
	}
	start := time.Now()
	var why []string
	for _, peer := range peers {
		if err := checkPeerURL(peer); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
		}
		if strings.TrimSuffix(peer, "/") == m.self {
			continue // a peer list shared by all hosts names this one too
		}
		q := url.Values{"owner": {req.Owner}}
		if req.MAC != "" {
			q.Set("mac", req.MAC)
		}
		if !req.NoFollow {
			q.Set("follow", m.self)
			q.Set("vnic", vnic)
		}
		b, src, err := m.get(ctx, strings.TrimSuffix(peer, "/")+"/"+api.Version+"/migrate/state?"+q.Encode())
		if api.IsCode(err, api.CodeNotAttached) {
			why = append(why, peer+": no chain of "+req.Owner)
			continue
		}
		if err != nil {
			why = append(why, fmt.Sprintf("%s: %v", peer, err))
			continue
		}
		imp, err := d.ImportState(ctx, vnic, b)
		if err != nil {
			return nil, fmt.Errorf("state of %s from %s (%s): %w", req.Owner, peer, src, err)
		}
		out := &api.PullResult{Peer: peer, Source: src, Bytes: len(b), Seconds: time.Since(start).Seconds(), Import: imp}
		d.log.Info("pulled state", "vnic", vnic, "owner", req.Owner, "peer", peer, "source", src, "bytes", len(b), "took", time.Since(start))
		return out, nil
	}
	return nil, fmt.Errorf("no peer holds the state of %s (%s): %w", req.Owner, strings.Join(why, "; "), datapath.ErrNotAttached)
}

// get fetches a bundle from a peer.
func (m *migrator) get(ctx context.Context, u string) ([]byte, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, "", err
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", peerError(resp)
	}
	b, err := readBody(resp)
	return b, resp.Header.Get(sourceHeader), err
}

// readBody reads a bundle in one allocation when its length is known.
func readBody(resp *http.Response) ([]byte, error) {
	if n := resp.ContentLength; n > 0 && n <= maxBundle {
		b := make([]byte, n)
		_, err := io.ReadFull(resp.Body, b)
		return b, err
	}
	return io.ReadAll(io.LimitReader(resp.Body, maxBundle+1))
}

func peerError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var e api.Error
	if json.Unmarshal(data, &e) != nil || e.Message == "" {
		return &api.Error{Code: api.CodeInternal, Message: resp.Status}
	}
	return &e
}

// Handoff pushes the final state of owner's vNICs to the peers that pulled
// them, as the VM leaves this host: the source's `stopped` hook calls it
// before detaching (and filterd's libvirt watcher when the domain pauses
// for migration, earlier). A vNIC no peer pulled is skipped; a failed push
// is reported, never fatal: the chain here is left to the caller.
func (d *Daemon) Handoff(ctx context.Context, req api.HandoffRequest) (*api.HandoffResult, error) {
	out := &api.HandoffResult{Pushed: []api.Handoff{}}
	m, err := d.migrator()
	if err != nil {
		return out, nil // no migration listener: nobody pulled
	}
	if req.Owner == "" {
		return nil, fmt.Errorf("%w: no owner named", ErrBadRequest)
	}
	m.mu.Lock()
	var todo []string
	for vnic, f := range m.followers {
		if time.Since(f.at) > followerTTL {
			delete(m.followers, vnic)
			continue
		}
		if f.owner == req.Owner {
			todo = append(todo, vnic)
		}
	}
	m.mu.Unlock()
	slices.Sort(todo)
	for _, vnic := range todo {
		m.mu.Lock()
		f, ok := m.followers[vnic]
		delete(m.followers, vnic)
		m.mu.Unlock()
		if !ok {
			continue // another handoff took it
		}
		h := api.Handoff{VNIC: vnic, Peer: f.peer, To: f.vnic}
		start := time.Now()
		if have, err := d.ownerOf(vnic); err != nil || have != f.owner {
			h.Error = fmt.Sprintf("%s is no longer %s's", vnic, f.owner)
			out.Pushed = append(out.Pushed, h)
			continue
		}
		// Only what changed since the pull (what saw a packet since,
		// with a margin), where the filter can tell.
		var buf bytes.Buffer
		parts, err := d.exportParts(ctx, vnic, time.Since(f.at)+deltaMargin)
		if err == nil {
			err = writeBundle(&buf, vnic, time.Now(), parts)
		}
		if err != nil {
			h.Error = err.Error()
			out.Pushed = append(out.Pushed, h)
			continue
		}
		h.Bytes = buf.Len()
		imp, err := m.put(ctx, f, buf.Bytes())
		h.Seconds = time.Since(start).Seconds()
		if err != nil {
			h.Error = err.Error()
			d.log.Warn("final state push failed", "vnic", vnic, "peer", f.peer, "to", f.vnic, "err", err)
		} else {
			for _, s := range imp.Slots {
				h.Entries += s.Entries
			}
			d.log.Info("pushed final state", "vnic", vnic, "peer", f.peer, "to", f.vnic, "bytes", h.Bytes, "took", time.Since(start))
		}
		out.Pushed = append(out.Pushed, h)
	}
	return out, nil
}

func (m *migrator) put(ctx context.Context, f follower, b []byte) (*api.ImportResult, error) {
	q := url.Values{"owner": {f.owner}, "vnic": {f.vnic}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, strings.TrimSuffix(f.peer, "/")+"/"+api.Version+"/migrate/state?"+q.Encode(), bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := m.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, peerError(resp)
	}
	var out api.ImportResult
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("decode the peer's answer: %w", err)
	}
	return &out, nil
}

func (d *Daemon) handlePullState(w http.ResponseWriter, r *http.Request) {
	var req api.PullRequest
	if !decode(w, r, &req) {
		return
	}
	out, err := d.PullState(r.Context(), r.PathValue("vnic"), req)
	respond(w, out, err)
}

func (d *Daemon) handleHandoff(w http.ResponseWriter, r *http.Request) {
	var req api.HandoffRequest
	if !decode(w, r, &req) {
		return
	}
	out, err := d.Handoff(r.Context(), req)
	respond(w, out, err)
}

// handoffPaused pushes a domain's final state as it pauses for the
// switch-over of a migration away from this host (the libvirt watcher's
// VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED): normally before the destination
// resumes it, where the `stopped` hook's push comes after. Without a
// migration listener, or with no peer having pulled, it does nothing.
func (d *Daemon) handoffPaused(ctx context.Context, domain string) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := d.Handoff(ctx, api.HandoffRequest{Owner: "libvirt:" + domain})
	if err != nil {
		d.log.Warn("push the final state at the migration's pause", "domain", domain, "err", err)
		return
	}
	for _, p := range res.Pushed {
		d.log.Info("final state pushed at the migration's pause", "domain", domain, "vnic", p.VNIC, "peer", p.Peer, "to", p.To, "entries", p.Entries, "ms", p.Seconds*1000, "err", p.Error)
	}
}
