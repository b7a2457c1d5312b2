package slowpath_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/slowpath"
	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/slowproc"
)

// The test binary doubles as an external slow-path filter process: run
// with slowproc.FDEnv set (by a Supervisor), it serves the handler
// VFTEST_SLOW_VERDICT picks instead of running tests.
func TestMain(m *testing.M) {
	if os.Getenv(slowproc.FDEnv) != "" {
		os.Exit(serveTestFilter())
	}
	os.Exit(m.Run())
}

func serveTestFilter() int {
	name := os.Getenv("VNICFILTER_FILTER")
	if os.Getenv("VFTEST_SLOW_WRONG_NAME") != "" {
		name += "-other"
	}
	err := slowproc.Serve(slowproc.Filter{
		Name: name, Version: "0.0.1",
		Params: []sdk.ParamSpec{{Name: "verdict", Type: sdk.String, Enum: []string{"pass", "drop", "panic", "stall"}, Default: "pass"}},
		New: func(ctx *sdk.SlowPathContext) (sdk.SlowPath, error) {
			h := &handler{}
			switch ctx.Instance.Params.String("verdict") {
			case "drop":
				h.verdict = sdk.Drop
			case "panic":
				h.panics = true
			case "stall":
				h.sleep = 2 * time.Second // the first frame's Process call
			}
			return h, nil
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func newSupervisor(t *testing.T, name string, env ...string) (*slowpath.Supervisor, error) {
	t.Helper()
	for _, e := range env {
		k, v, _ := strings.Cut(e, "=")
		t.Setenv(k, v)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	s, err := slowpath.NewSupervisor(name, []string{self, "-test.run=^$"}, "", slowpath.SupervisorOptions{
		Logger:     slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		MinBackoff: 50 * time.Millisecond, StartTimeout: 10 * time.Second,
	})
	if err == nil {
		t.Cleanup(s.Stop)
	}
	return s, err
}

func (l *lab) startExternal(t *testing.T, s *slowpath.Supervisor, mode sdk.FailMode, params map[string]string, opts ...slowpath.Options) *slowpath.Punt {
	t.Helper()
	var p *slowpath.Punt
	err := l.host.Do(func() (err error) {
		vn := sdk.VNIC{Name: l.v.Name, Ifindex: l.v.Ifindex}
		var o slowpath.Options
		if len(opts) > 0 {
			o = opts[0]
		}
		o.Logger, o.FailMode = slog.New(slog.NewTextHandler(testWriter{t}, nil)), mode
		opts := o
		p, err = slowpath.StartExternal(context.Background(), vn, 0, sdk.DirBoth, s, params, l.v, opts)
		return err
	})
	if err != nil {
		t.Fatalf("start external: %v", err)
	}
	t.Cleanup(func() { _ = p.Stop() })
	return p
}

func TestExternalPassThrough(t *testing.T) {
	l := newLab(t, sdk.FailClosed)
	s, err := newSupervisor(t, "ext-pass")
	if err != nil {
		t.Fatal(err)
	}
	p := l.startExternal(t, s, sdk.FailClosed, map[string]string{"verdict": "pass"})
	if p.State() != slowpath.Running {
		t.Fatalf("state %v right after start: the process should have opened the instance", p.State())
	}
	if err := l.a.Ping(t, l.b.IPv4.IP, 3); err != nil {
		t.Fatal(err)
	}
	const size = 32 << 20
	d := transfer(t, l.a, l.b, size)
	t.Logf("a → b through the external slow path: %d MiB in %v (%.2f Gb/s)", size>>20, d, float64(size)*8/d.Seconds()/1e9)
	d = transfer(t, l.b, l.a, size)
	t.Logf("b → a: %d MiB in %v (%.2f Gb/s)", size>>20, d, float64(size)*8/d.Seconds()/1e9)
	// Counters arrive with the next pong.
	deadline := time.Now().Add(2 * time.Second)
	for _, dir := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
		for p.Stats(dir).Passed == 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if ps := p.Stats(dir); ps.Passed == 0 || ps.Errors != 0 {
			t.Errorf("%v: stats %+v: want frames passed by the process, no errors", dir, ps)
		}
	}
	st := l.stats(t)
	if st[sdk.FromVM][0][sdk.StatPunt].Packets == 0 || st[sdk.FromVM][1][sdk.StatContinue].Packets == 0 {
		t.Errorf("slot 0 punted %d, slot 1 saw %d: frames did not go through the process and back into the chain",
			st[sdk.FromVM][0][sdk.StatPunt].Packets, st[sdk.FromVM][1][sdk.StatContinue].Packets)
	}
	if got := s.Status(); got.State != "running" || got.Instances != 1 || got.PID == 0 {
		t.Errorf("supervisor status %+v", got)
	}
}

func TestExternalDropAndParams(t *testing.T) {
	l := newLab(t, sdk.FailOpen) // fail-open: only the process can drop
	s, err := newSupervisor(t, "ext-drop")
	if err != nil {
		t.Fatal(err)
	}
	l.startExternal(t, s, sdk.FailOpen, map[string]string{"verdict": "drop"})
	if err := l.a.Ping(t, l.b.IPv4.IP, 2); err == nil {
		t.Fatal("ping passed an external slow path told to drop everything")
	}
}

// TestExternalKill is the crash drill: kill -9 the process under
// traffic; the vNIC applies its failure mode within the lease (1 s), the
// supervisor restarts the process, which reopens the instance, and
// traffic flows again.
func TestExternalKill(t *testing.T) {
	l := newLab(t, sdk.FailClosed)
	s, err := newSupervisor(t, "ext-kill")
	if err != nil {
		t.Fatal(err)
	}
	p := l.startExternal(t, s, sdk.FailClosed, nil)
	if err := l.a.Ping(t, l.b.IPv4.IP, 2); err != nil {
		t.Fatal(err)
	}
	pid := s.Status().PID
	before := l.stats(t)[sdk.FromVM][0][sdk.StatFailClosed].Packets
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitState(t, p, slowpath.Disconnected, time.Second)
	t.Logf("instance disconnected %v after kill -9", time.Since(killed).Round(time.Millisecond))
	back := make(chan time.Duration, 1)
	go func() {
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
			if p.State() == slowpath.Running {
				back <- time.Since(killed)
				return
			}
		}
		back <- -1
	}()
	// Frames now meet the failure mode in the fast path, at once: the
	// lease was ended when the socket closed, not left to expire.
	if err := l.a.Ping(t, l.b.IPv4.IP, 1); err == nil && p.State() == slowpath.Disconnected {
		t.Error("ping passed a fail-closed slot whose process is dead")
	}
	if after := l.stats(t)[sdk.FromVM][0][sdk.StatFailClosed].Packets; after <= before {
		t.Errorf("fail_closed %d → %d: the failure mode did not apply", before, after)
	}
	d := <-back
	if d < 0 {
		t.Fatalf("instance not running again 5s after kill -9: state %v, supervisor %+v", p.State(), s.Status())
	}
	t.Logf("instance running again %v after kill -9 (restart backoff 50ms)", d.Round(time.Millisecond))
	st := s.Status()
	if st.Restarts < 1 || st.PID == pid || st.PID == 0 {
		t.Errorf("status after kill %+v (old pid %d): want a restarted process", st, pid)
	}
	if err := l.a.Ping(t, l.b.IPv4.IP, 2); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}

func TestExternalPanic(t *testing.T) {
	l := newLab(t, sdk.FailClosed)
	s, err := newSupervisor(t, "ext-panic")
	if err != nil {
		t.Fatal(err)
	}
	p := l.startExternal(t, s, sdk.FailClosed, map[string]string{"verdict": "panic"})
	if err := l.a.Ping(t, l.b.IPv4.IP, 1); err == nil {
		t.Fatal("ping passed a panicking fail-closed slow path")
	}
	waitState(t, p, slowpath.Panicked, 2*time.Second)
}

// TestExternalStall: a Process call in the external process running past
// the watchdog fails the instance by its failure mode (the same watchdog
// as in-process slow paths, fed by the process's call counter), and it
// recovers when the call returns.
func TestExternalStall(t *testing.T) {
	l := newLab(t, sdk.FailOpen)
	s, err := newSupervisor(t, "ext-stall")
	if err != nil {
		t.Fatal(err)
	}
	p := l.startExternal(t, s, sdk.FailOpen, map[string]string{"verdict": "stall"},
		slowpath.Options{Watchdog: 500 * time.Millisecond, Heartbeat: 50 * time.Millisecond, Lease: 400 * time.Millisecond})
	go l.a.Ping(t, l.b.IPv4.IP, 1) // the first frame stalls the handler
	waitState(t, p, slowpath.Stalled, 2*time.Second)
	before := l.stats(t)[sdk.FromVM][0][sdk.StatFailOpen].Packets
	if err := l.a.Ping(t, l.b.IPv4.IP, 2); err != nil {
		t.Fatalf("fail-open while stalled: %v", err)
	}
	if after := l.stats(t)[sdk.FromVM][0][sdk.StatFailOpen].Packets; after <= before {
		t.Errorf("fail_open %d → %d: the fast path did not take over", before, after)
	}
	waitState(t, p, slowpath.Running, 4*time.Second)
}

func TestExternalStartErrors(t *testing.T) {
	_, err := slowpath.NewSupervisor("bad", []string{"/nonexistent/filter"}, "", slowpath.SupervisorOptions{})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/filter") {
		t.Errorf("missing binary: %v", err)
	}
	_, err = slowpath.NewSupervisor("bad", []string{"/bin/true"}, "", slowpath.SupervisorOptions{StartTimeout: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "before its hello") {
		t.Errorf("not a filter: %v", err)
	}
	_, err = newSupervisor(t, "ext-name", "VFTEST_SLOW_WRONG_NAME=1")
	if err == nil || !strings.Contains(err.Error(), `says it is filter "ext-name-other"`) {
		t.Errorf("wrong name: %v", err)
	}
	if errors.Is(err, sdk.ErrABIMismatch) {
		t.Errorf("wrong name reported as ABI mismatch: %v", err)
	}
}
