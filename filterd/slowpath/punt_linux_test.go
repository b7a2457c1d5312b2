package slowpath_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/filterd/slowpath"
	"github.com/vnicfilter/vnicfilter/filters/count"
	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// lab is a host with two VMs; a's vNIC has a chain of punt-all (slot 0,
// the slow path under test) and count (slot 1, which proves the chain
// resumes after the punting slot in both directions).
type lab struct {
	host  *testkit.Host
	a, b  *testkit.VM
	v     *datapath.VNIC
	count sdk.FastPath
}

func newRoot(t *testing.T) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	root := filepath.Join("/sys/fs/bpf", "vftest-"+hex.EncodeToString(b[:]))
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	return root
}

func newLab(t *testing.T, mode sdk.FailMode) *lab {
	t.Helper()
	testkit.Need(t, testkit.Root, testkit.BPF)
	l := &lab{host: testkit.NewHost(t)}
	l.a, l.b = l.host.AddVM(t, "a"), l.host.AddVM(t, "b")
	root := newRoot(t)
	err := l.host.Do(func() error {
		dp, err := datapath.New(datapath.Options{Root: root})
		if err != nil {
			return err
		}
		l.v, err = dp.Create(l.a.TapName, func(v *datapath.VNIC) error {
			inst := sdk.Instance{VNIC: sdk.VNIC{Name: v.Name, Ifindex: v.Ifindex}, Slot: 0, FailMode: mode}
			fp, err := datapath.LoadPuntAll(sdk.NewFastPathContext(inst, false, nil, v.Maps(), v.SlotDir(0)))
			if err != nil {
				return err
			}
			t.Cleanup(func() { fp.Close() })
			if err := v.SetSlot(0, fp.Program(), datapath.Slot{FailOpen: mode == sdk.FailOpen, Dirs: sdk.DirBoth}); err != nil {
				return err
			}
			inst.Slot = 1
			l.count, err = count.Descriptor.FastPath(sdk.NewFastPathContext(inst, false, nil, v.Maps(), v.SlotDir(1)))
			if err != nil {
				return err
			}
			t.Cleanup(func() { l.count.Close() })
			return v.SetSlot(1, l.count.Program(), datapath.Slot{FailOpen: true, Dirs: sdk.DirBoth})
		})
		return err
	})
	if err != nil {
		t.Fatalf("create datapath: %v", err)
	}
	t.Cleanup(func() { _ = l.host.Do(l.v.Detach) })
	return l
}

func (l *lab) start(t *testing.T, h sdk.SlowPath, opts slowpath.Options) *slowpath.Punt {
	t.Helper()
	var p *slowpath.Punt
	err := l.host.Do(func() (err error) {
		vn := sdk.VNIC{Name: l.v.Name, Ifindex: l.v.Ifindex}
		if opts.Logger == nil {
			opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
		}
		p, err = slowpath.Start(context.Background(), vn, 0, sdk.DirBoth, h, l.v, opts)
		return err
	})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { _ = p.Stop() })
	return p
}

func (l *lab) stats(t *testing.T) *datapath.Stats {
	t.Helper()
	st, err := l.v.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// testWriter sends log lines to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// handler is a configurable slow path.
type handler struct {
	verdict sdk.SlowVerdict
	panics  bool
	sleep   time.Duration
	frames  atomic.Uint64
	gso     atomic.Uint64 // GSO frames seen
	maxLen  atomic.Uint64
	slept   atomic.Bool
}

func (h *handler) Process(f *sdk.Frame) sdk.SlowVerdict {
	h.frames.Add(1)
	if f.GSO.Type != 0 {
		h.gso.Add(1)
	}
	if n := uint64(len(f.Data)); n > h.maxLen.Load() {
		h.maxLen.Store(n)
	}
	if h.panics {
		panic("handler under test panics")
	}
	if h.sleep > 0 && h.slept.CompareAndSwap(false, true) {
		time.Sleep(h.sleep)
	}
	return h.verdict
}

func (h *handler) Close() error { return nil }

// transfer sends n bytes from src to dst over TCP and checks they arrive.
func transfer(t *testing.T, src, dst *testkit.VM, n int64) time.Duration {
	t.Helper()
	ln, err := dst.ListenTCP(net.JoinHostPort(dst.IPv4.IP.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		m, _ := io.Copy(io.Discard, c)
		got <- m
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := src.DialTCP(ctx, ln.Addr().String())
	if err != nil {
		t.Fatalf("dial %s → %s: %v", src.Label, dst.Label, err)
	}
	start := time.Now()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.CopyN(c, zeroReader{}, n); err != nil {
		t.Fatalf("send %s → %s: %v", src.Label, dst.Label, err)
	}
	c.Close()
	select {
	case m := <-got:
		if m != n {
			t.Fatalf("%s → %s: received %d of %d bytes", src.Label, dst.Label, m, n)
		}
	case <-ctx.Done():
		t.Fatalf("%s → %s: transfer timed out", src.Label, dst.Label)
	}
	return time.Since(start)
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func waitState(t *testing.T, p *slowpath.Punt, want slowpath.State, within time.Duration) {
	t.Helper()
	for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if p.State() == want {
			return
		}
	}
	t.Fatalf("state %v after %v, want %v", p.State(), within, want)
}

func TestPassThrough(t *testing.T) {
	l := newLab(t, sdk.FailClosed)
	h := &handler{verdict: sdk.Pass}
	p := l.start(t, h, slowpath.Options{})
	if p.State() != slowpath.Running {
		t.Fatalf("state %v", p.State())
	}
	for _, dir := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
		if p.Ifindex(dir) == 0 {
			t.Fatalf("no punt tap for %v", dir)
		}
	}
	if err := l.a.Ping(t, l.b.IPv4.IP, 3); err != nil {
		t.Fatal(err)
	}
	if err := l.b.Ping(t, l.a.IPv6.IP, 3); err != nil {
		t.Fatal(err)
	}
	const size = 64 << 20
	for _, c := range []struct{ src, dst *testkit.VM }{{l.a, l.b}, {l.b, l.a}} {
		d := transfer(t, c.src, c.dst, size)
		t.Logf("%s → %s: %d MiB in %v (%.2f Gb/s)", c.src.Label, c.dst.Label, size>>20, d, float64(size)*8/d.Seconds()/1e9)
	}
	st := l.stats(t)
	for _, dir := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
		ps := p.Stats(dir)
		t.Logf("%v: %+v", dir, ps)
		if ps.Frames == 0 || ps.Passed == 0 || ps.Errors != 0 {
			t.Errorf("%v: stats %+v: want frames passed, no errors", dir, ps)
		}
		if st[dir][0][sdk.StatPunt].Packets == 0 {
			t.Errorf("%v: slot 0 punted nothing", dir)
		}
		// The re-injected frames resume at slot 1: it sees as many as
		// were passed, and the dispatcher does not count them again.
		if got := st[dir][1][sdk.StatContinue].Packets; got < ps.Passed {
			t.Errorf("%v: slot 1 saw %d frames, slow path passed %d: chain did not resume", dir, got, ps.Passed)
		}
		var slot0 uint64
		for _, c := range st[dir][0] {
			slot0 += c.Packets
		}
		if enter := st[dir][sdk.ChainSlot][sdk.StatEnter].Packets; enter != slot0 {
			t.Errorf("%v: dispatcher counted %d frames entering, slot 0 decided on %d", dir, enter, slot0)
		}
	}
	t.Logf("GSO frames %d of %d, largest %d bytes", h.gso.Load(), h.frames.Load(), h.maxLen.Load())
	if h.maxLen.Load() <= 1514 {
		t.Errorf("largest frame %d bytes: GSO frames were segmented before the slow path", h.maxLen.Load())
	}
}

func TestDropBlocks(t *testing.T) {
	l := newLab(t, sdk.FailOpen) // fail-open: only the handler can drop
	h := &handler{verdict: sdk.Drop}
	p := l.start(t, h, slowpath.Options{})
	if err := l.a.Ping(t, l.b.IPv4.IP, 2); err == nil {
		t.Fatal("ping passed a slow path dropping everything")
	}
	if ps := p.Stats(sdk.FromVM); ps.Dropped == 0 || ps.Passed != 0 {
		t.Errorf("from-vm stats %+v: want only drops", ps)
	}
}

func TestFailureModeAfterStop(t *testing.T) {
	for _, mode := range []sdk.FailMode{sdk.FailClosed, sdk.FailOpen} {
		t.Run(mode.String(), func(t *testing.T) {
			l := newLab(t, mode)
			p := l.start(t, &handler{verdict: sdk.Pass}, slowpath.Options{})
			taps := []string{slowpath.TapName(l.v.Ifindex, 0, sdk.FromVM, 0), slowpath.TapName(l.v.Ifindex, 0, sdk.ToVM, 0)}
			if err := l.a.Ping(t, l.b.IPv4.IP, 2); err != nil {
				t.Fatalf("before stop: %v", err)
			}
			if err := p.Stop(); err != nil {
				t.Fatalf("stop: %v", err)
			}
			if p.State() != slowpath.Down {
				t.Errorf("state %v after stop", p.State())
			}
			for _, tap := range taps {
				if _, err := l.host.Handle().LinkByName(tap); err == nil {
					t.Errorf("punt tap %s still exists after stop", tap)
				}
			}
			before := l.stats(t)[sdk.FromVM][0]
			err := l.a.Ping(t, l.b.IPv4.IP, 2)
			after := l.stats(t)[sdk.FromVM][0]
			stat := sdk.StatFailOpen
			if mode == sdk.FailClosed {
				stat = sdk.StatFailClosed
				if err == nil {
					t.Error("ping passed a stopped fail-closed slow path")
				}
			} else if err != nil {
				t.Errorf("fail-open after stop: %v", err)
			}
			if after[stat].Packets <= before[stat].Packets {
				t.Errorf("%v counter did not move: %d → %d", stat, before[stat].Packets, after[stat].Packets)
			}
			if after[sdk.StatPunt].Packets != before[sdk.StatPunt].Packets {
				t.Errorf("slot punted after stop")
			}
		})
	}
}

func TestPanicAppliesFailureMode(t *testing.T) {
	l := newLab(t, sdk.FailClosed)
	p := l.start(t, &handler{panics: true}, slowpath.Options{})
	if err := l.a.Ping(t, l.b.IPv4.IP, 1); err == nil {
		t.Fatal("ping passed a panicking fail-closed slow path")
	}
	waitState(t, p, slowpath.Panicked, time.Second)
	before := l.stats(t)[sdk.FromVM][0][sdk.StatFailClosed].Packets
	if err := l.a.Ping(t, l.b.IPv4.IP, 2); err == nil {
		t.Fatal("ping passed after the slow path panicked")
	}
	if after := l.stats(t)[sdk.FromVM][0][sdk.StatFailClosed].Packets; after <= before {
		t.Errorf("fail_closed %d → %d: the fast path did not take over", before, after)
	}
	if p.State() != slowpath.Panicked {
		t.Errorf("state %v", p.State())
	}
}

func TestStallAppliesFailureMode(t *testing.T) {
	l := newLab(t, sdk.FailOpen)
	h := &handler{verdict: sdk.Pass, sleep: 2 * time.Second}
	p := l.start(t, h, slowpath.Options{Watchdog: 300 * time.Millisecond, Heartbeat: 50 * time.Millisecond, Lease: 250 * time.Millisecond})
	go l.a.Ping(t, l.b.IPv4.IP, 1) // the first frame stalls the handler
	waitState(t, p, slowpath.Stalled, time.Second)
	before := l.stats(t)[sdk.FromVM][0][sdk.StatFailOpen].Packets
	if err := l.a.Ping(t, l.b.IPv4.IP, 2); err != nil {
		t.Fatalf("fail-open while stalled: %v", err)
	}
	if after := l.stats(t)[sdk.FromVM][0][sdk.StatFailOpen].Packets; after <= before {
		t.Errorf("fail_open %d → %d: the fast path did not take over", before, after)
	}
	waitState(t, p, slowpath.Running, 3*time.Second)
	if err := l.a.Ping(t, l.b.IPv4.IP, 2); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	punted := l.stats(t)[sdk.FromVM][0][sdk.StatPunt].Packets
	if err := l.a.Ping(t, l.b.IPv4.IP, 1); err != nil {
		t.Fatal(err)
	}
	if l.stats(t)[sdk.FromVM][0][sdk.StatPunt].Packets == punted {
		t.Error("punting did not resume after recovery")
	}
}
