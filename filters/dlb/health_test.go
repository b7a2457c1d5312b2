package dlb

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// waitFor polls cond every 10 ms until it holds or limit passes.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func backendAt(t *testing.T, addr string) Backend {
	ap := netip.MustParseAddrPort(addr)
	return Backend{Addr: ap.Addr(), Port: ap.Port(), Weight: 1}
}

// TestCheckerTCP: a TCP check goes down after fall refused connects and
// up after rise accepted ones; every subscriber hears of each change.
func TestCheckerTCP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	h := &HealthCheck{Type: "tcp", Interval: MinHealthInterval, Timeout: MinHealthInterval, Rise: 2, Fall: 3}
	k := checkKeyOf(backendAt(t, addr), h)
	a, b := make(chan struct{}, 1), make(chan struct{}, 1)
	c := acquireChecker(k, a)
	if c2 := acquireChecker(k, b); c2 != c {
		t.Fatal("the same check got two checkers")
	}
	defer releaseChecker(c, a)
	defer releaseChecker(c, b)
	state := func(want Health) func() bool {
		return func() bool { s, _, _ := c.status(); return s == want }
	}
	waitFor(t, 5*time.Second, "up", state(Up))
	<-a
	<-b
	l.Close()
	took := waitFor(t, 5*time.Second, "down after the listener closed", state(Down))
	<-a
	<-b
	_, _, last := c.status()
	t.Logf("down %v after the listener closed (interval %v × fall %d); last failure: %s", took, h.Interval, h.Fall, last)
	l2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	go func() {
		for {
			c, err := l2.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	waitFor(t, 5*time.Second, "up again", state(Up))
}

// TestCheckerHTTP: a 2xx or 3xx answer to GET path is healthy, a 5xx and
// a server that is gone are not.
func TestCheckerHTTP(t *testing.T) {
	var status atomic.Int32
	status.Store(200)
	var gotPath atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath.Store(r.URL.Path)
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	h := &HealthCheck{Type: "http", Path: "/healthz", Interval: MinHealthInterval, Timeout: MinHealthInterval, Rise: 1, Fall: 1}
	k := checkKeyOf(backendAt(t, srv.Listener.Addr().String()), h)
	kick := make(chan struct{}, 1)
	c := acquireChecker(k, kick)
	defer releaseChecker(c, kick)
	state := func(want Health) func() bool {
		return func() bool { s, _, _ := c.status(); return s == want }
	}
	waitFor(t, 5*time.Second, "up on 200", state(Up))
	if p, _ := gotPath.Load().(string); p != "/healthz" {
		t.Errorf("checked path %q", p)
	}
	status.Store(503)
	waitFor(t, 5*time.Second, "down on 503", state(Down))
	status.Store(302)
	waitFor(t, 5*time.Second, "up on 302", state(Up))
	srv.Close()
	waitFor(t, 5*time.Second, "down with the server gone", state(Down))
}

// TestCheckersStopWithLastUser: checkers are shared per (netns, address,
// check) and refcounted; when the last user goes, every checker and its
// goroutines are gone.
func TestCheckersStopWithLastUser(t *testing.T) {
	before := runtime.NumGoroutine()
	h := &HealthCheck{Type: "tcp", Interval: MinHealthInterval, Timeout: MinHealthInterval, Rise: 1, Fall: 1}
	other := *h
	other.Netns = "/run/netns/absent-for-test"
	var held []*checker
	var kicks []chan struct{}
	for i := range 3 { // three instances of the same services
		kick := make(chan struct{}, 1)
		kicks = append(kicks, kick)
		for _, b := range []string{"127.0.0.1:1", "127.0.0.2:1"} {
			held = append(held, acquireChecker(checkKeyOf(backendAt(t, b), h), kick))
			held = append(held, acquireChecker(checkKeyOf(backendAt(t, b), &other), kick))
		}
		if n := runningCheckers(); n != 4 {
			t.Fatalf("after instance %d: %d checkers, want 4 (2 backends × 2 namespaces)", i, n)
		}
	}
	time.Sleep(3 * MinHealthInterval) // let them check a few times
	for i, c := range held {
		releaseChecker(c, kicks[i/4])
	}
	if n := runningCheckers(); n != 0 {
		t.Fatalf("%d checkers left", n)
	}
	waitFor(t, 5*time.Second, "goroutines back to the count before", func() bool { return runtime.NumGoroutine() <= before })
}
