package manager_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/manager/api"
)

var binDir string

// buildFlags are passed to go build for the binaries under test.
var buildFlags []string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vfmgr-bin-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	args := append(append([]string{"build"}, buildFlags...), "-o", dir+"/", "github.com/vnicfilter/vnicfilter/cmd/vfmanager", "github.com/vnicfilter/vnicfilter/cmd/vfctl")
	cmd := exec.Command("go", args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer collects a process's stderr; the test reads it while the
// process writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// mgr is one running vfmanager process.
type mgr struct {
	t       testing.TB
	dataDir string
	args    []string
	cmd     *exec.Cmd
	exited  chan struct{}
	log     *syncBuffer
	addr    string
	ca      []byte
	token   string
	admin   *api.Client
}

// startManager runs vfmanager serve on a free loopback port with dataDir
// (reused across restarts) and waits until it answers.
func startManager(t *testing.T, dataDir string, extra ...string) *mgr {
	return startManagerB(t, dataDir, extra...)
}

// startManagerB is startManager for benchmarks too.
func startManagerB(t testing.TB, dataDir string, extra ...string) *mgr {
	t.Helper()
	m := &mgr{t: t, dataDir: dataDir, args: extra}
	m.start()
	t.Cleanup(m.kill)
	return m
}

func (m *mgr) start() {
	t := m.t
	t.Helper()
	addrFile := filepath.Join(m.dataDir, "manager.addr")
	os.Remove(addrFile)
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", m.dataDir, "--log-level", "debug"}, m.args...)
	m.cmd = exec.Command(filepath.Join(binDir, "vfmanager"), args...)
	m.log = &syncBuffer{}
	m.cmd.Stderr = m.log
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	m.exited = exited
	go func() { m.cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if data, err := os.ReadFile(addrFile); err == nil && len(data) > 0 {
			m.addr = strings.TrimSpace(string(data))
			break
		}
		select {
		case <-exited:
			t.Fatalf("vfmanager exited at start:\n%s", m.log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("vfmanager did not start within 20 s:\n%s", m.log)
		}
	}
	var err error
	if m.ca, err = os.ReadFile(filepath.Join(m.dataDir, "ca.crt")); err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(filepath.Join(m.dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	m.token = strings.TrimSpace(string(tok))
	m.admin = m.client(m.token)
}

// client returns a user client with token.
func (m *mgr) client(token string) *api.Client {
	m.t.Helper()
	c, err := api.NewClient(api.ClientOptions{Server: m.addr, Token: token, CA: m.ca})
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(c.Close)
	return c
}

// stop ends the process with sig and waits for it.
func (m *mgr) stop(sig syscall.Signal) {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	m.cmd.Process.Signal(sig)
	select {
	case <-m.exited:
	case <-time.After(10 * time.Second):
		m.cmd.Process.Kill()
		m.t.Errorf("vfmanager pid %d did not exit on %v", m.cmd.Process.Pid, sig)
	}
	if strings.Contains(m.log.String(), "DATA RACE") {
		m.t.Errorf("vfmanager reported a data race:\n%s", m.log)
	}
	m.cmd = nil
}

func (m *mgr) kill() {
	if m.cmd != nil {
		m.stop(syscall.SIGKILL)
	}
	if m.t.Failed() && m.log != nil {
		m.t.Logf("vfmanager log:\n%s", m.log)
	}
}

// restart stops the manager the hard way (SIGKILL: nothing is flushed
// at exit) and starts it again on the same data directory.
func (m *mgr) restart() {
	m.stop(syscall.SIGKILL)
	m.start()
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wantStatus asserts err is an API error with status (and the message
// containing want).
func wantStatus(t *testing.T, what string, err error, status int, want string) {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != status {
		t.Fatalf("%s: got %v, want HTTP %d", what, err, status)
	}
	if !strings.Contains(ae.Message, want) {
		t.Fatalf("%s: message %q does not say %q", what, ae.Message, want)
	}
}

// raw sends one request with an optional bearer token and body, as
// bytes (so malformed JSON can be sent), and returns the status.
func (m *mgr) raw(method, path, token, body string) int {
	status, _ := m.rawBody(method, path, token, body)
	return status
}

func (m *mgr) rawBody(method, path, token, body string) (int, string) {
	m.t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(m.ca)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(method, m.addr+path, strings.NewReader(body))
	if err != nil {
		m.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		m.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

type rawJSON string

func (r rawJSON) MarshalJSON() ([]byte, error) { return []byte(r), nil }

// agent is an enrolled host.
type agent struct {
	host string
	c    *api.Client
}

func (m *mgr) enroll(t testing.TB, host string) *agent {
	t.Helper()
	tok, err := m.admin.CreateToken(ctxT(t), api.TokenRequest{Role: api.RoleJoin, Name: "join " + host, Host: host})
	if err != nil {
		t.Fatal(err)
	}
	e, err := api.Enroll(ctxT(t), m.addr, m.ca, tok.Secret, host)
	if err != nil {
		t.Fatalf("enroll %s: %v", host, err)
	}
	return m.agentClient(t, host, e)
}

func (m *mgr) agentClient(t testing.TB, host string, e *api.Enrolled) *agent {
	c, err := api.NewClient(api.ClientOptions{Server: m.addr, CA: m.ca, Certificate: &e.Certificate})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &agent{host: host, c: c}
}

// events reads a stream into a channel until it ends.
func events(s *api.Stream) <-chan api.WatchEvent {
	ch := make(chan api.WatchEvent, 64)
	go func() {
		defer close(ch)
		for {
			ev, err := s.Next()
			if err != nil {
				return
			}
			if ev.Type != api.EventPing {
				ch <- ev
			}
		}
	}()
	return ch
}

func nextEvent(t *testing.T, what string, ch <-chan api.WatchEvent) api.WatchEvent {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatalf("%s: stream ended", what)
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no event within 10 s", what)
	}
	return api.WatchEvent{}
}
