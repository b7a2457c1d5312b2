package filterd_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vfbin-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/vnicfilter/vnicfilter/cmd/filterd", "github.com/vnicfilter/vnicfilter/cmd/vfctl")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		os.Exit(1)
	}
	// The example external slow-path filter, built as its own module.
	cmd = exec.Command("go", "build", "-C", "../examples/dnsblock", "-o", dir+"/dnsblock", "./cmd/dnsblock")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build examples/dnsblock:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is a filterd process running inside a test host namespace.
type daemon struct {
	t      *testing.T
	host   *testkit.Host
	dir    string // socket, state
	root   string // bpffs root
	cmd    *exec.Cmd
	logs   *bytes.Buffer
	client *api.Client
}

func newDaemon(t *testing.T, host *testkit.Host, extra ...string) *daemon {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	d := &daemon{t: t, host: host, dir: t.TempDir(), root: "/sys/fs/bpf/vftest-" + hex.EncodeToString(b[:])}
	d.client = api.NewClient(filepath.Join(d.dir, "filterd.sock"))
	t.Cleanup(func() {
		d.kill()
		// Remove whatever chains are left, as an operator would.
		_ = host.Do(func() error {
			dp, err := datapath.New(datapath.Options{Root: d.root})
			if err == nil {
				names, _ := dp.Pinned()
				for _, n := range names {
					_ = dp.Remove(n)
				}
			}
			return nil
		})
		_ = os.RemoveAll(d.root)
		if t.Failed() {
			t.Logf("filterd logs:\n%s", d.logs)
		}
	})
	d.start(extra...)
	return d
}

func (d *daemon) start(extra ...string) {
	d.t.Helper()
	args := append([]string{"--socket", filepath.Join(d.dir, "filterd.sock"), "--bpffs-root", d.root,
		"--state-dir", filepath.Join(d.dir, "state"), "--log-level", "debug"}, extra...)
	d.cmd = d.host.Command(context.Background(), filepath.Join(binDir, "filterd"), args...)
	if d.logs == nil {
		d.logs = &bytes.Buffer{}
	}
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	if err := d.cmd.Start(); err != nil {
		d.t.Fatalf("start filterd: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := d.client.Version(context.Background()); err == nil {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("filterd did not come up; logs:\n%s", d.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill ends filterd with SIGKILL (by pid) and waits for it.
func (d *daemon) kill() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	_, _ = d.cmd.Process.Wait()
	d.cmd = nil
}

func (d *daemon) vfctl(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(binDir, "vfctl"), append([]string{"--socket", filepath.Join(d.dir, "filterd.sock")}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// pinnedStats reads a chain's counters straight from bpffs, as possible
// while filterd is down.
func (d *daemon) pinnedStats(vnic string) *datapath.Stats {
	d.t.Helper()
	var st *datapath.Stats
	err := d.host.Do(func() error {
		dp, err := datapath.New(datapath.Options{Root: d.root})
		if err != nil {
			return err
		}
		v, err := dp.Adopt(vnic)
		if err != nil {
			return err
		}
		defer v.Close()
		st, err = v.Stats()
		return err
	})
	if err != nil {
		d.t.Fatalf("read pinned counters of %s: %v", vnic, err)
	}
	return st
}

func TestAttachShowMetricsDetach(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	t.Parallel()
	host := testkit.NewHost(t)
	a, b := host.AddVM(t, "a"), host.AddVM(t, "b")
	d := newDaemon(t, host)
	ctx := context.Background()

	if _, err := d.client.Attach(ctx, a.TapName, api.AttachRequest{Filter: api.FilterSpec{Name: "count"}}); err != nil {
		t.Fatalf("attach count: %v", err)
	}
	out, err := d.vfctl("attach", a.TapName, "count")
	if err != nil {
		t.Fatalf("vfctl attach: %v\n%s", err, out)
	}
	if err := a.Ping(t, b.IPv4.IP, 3); err != nil {
		t.Fatalf("ping through chain: %v", err)
	}
	v, err := d.client.VNIC(ctx, a.TapName)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Slots) != 2 || v.Slots[0].Filter != "count" || v.Slots[1].Filter != "count" {
		t.Fatalf("chain = %+v, want [count count]", v.Slots)
	}
	if v.Chain["from-vm"].Entered.Packets == 0 || v.Chain["to-vm"].Passed.Packets == 0 {
		t.Errorf("chain counters empty: %+v", v.Chain)
	}
	if len(v.Slots[0].Counters) == 0 {
		t.Errorf("count filter reported no counters")
	}
	out, err = d.vfctl("show", a.TapName)
	if err != nil || !strings.Contains(out, "count") {
		t.Errorf("vfctl show: %v\n%s", err, out)
	}
	out, err = d.vfctl("list", "-o", "json")
	if err != nil || !strings.Contains(out, a.TapName) {
		t.Errorf("vfctl list: %v\n%s", err, out)
	}
	m, err := d.client.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		fmt.Sprintf(`vnicfilter_chain_packets_total{direction="from-vm",result="entered",vnic=%q}`, a.TapName),
		`vnicfilter_slot_packets_total{direction="to-vm",filter="count",slot="1",verdict="continue",vnic=`,
		`vnicfilter_filter_count_packets_total{direction="from-vm",filter="count",slot="0",vnic=`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if err := d.client.DetachSlot(ctx, a.TapName, 0); err != nil {
		t.Fatal(err)
	}
	if err := a.Ping(t, b.IPv4.IP, 1); err != nil {
		t.Fatalf("ping after detaching slot 0: %v", err)
	}
	if err := d.client.Detach(ctx, a.TapName); err != nil {
		t.Fatal(err)
	}
	if vs, _ := d.client.VNICs(ctx); len(vs) != 0 {
		t.Errorf("vnics after detach = %+v", vs)
	}
	if _, err := os.Stat(filepath.Join(d.root, a.TapName)); !os.IsNotExist(err) {
		t.Errorf("pins left after detach")
	}
}

// Bad requests get a clear error and change nothing.
func TestBadInputChangesNothing(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	t.Parallel()
	host := testkit.NewHost(t)
	a, b := host.AddVM(t, "a"), host.AddVM(t, "b")
	d := newDaemon(t, host)
	ctx := context.Background()
	if _, err := d.client.SetChain(ctx, a.TapName, api.ChainRequest{Filters: []api.FilterSpec{{Name: "count"}}}); err != nil {
		t.Fatal(err)
	}
	before, err := d.client.VNICs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	zero := 0
	nine := 9
	for _, tc := range []struct {
		name string
		do   func() error
		code string
		msg  string
	}{
		{"unknown filter", func() error {
			_, err := d.client.Attach(ctx, a.TapName, api.AttachRequest{Filter: api.FilterSpec{Name: "nosuch"}})
			return err
		}, api.CodeUnknownFilter, `"nosuch"`},
		{"invalid parameter value", func() error {
			_, err := d.client.Attach(ctx, a.TapName, api.AttachRequest{Filter: api.FilterSpec{Name: "punt", Params: map[string]string{"verdict": "maybe"}}})
			return err
		}, api.CodeInvalidParam, `"verdict"`},
		{"unknown parameter", func() error {
			_, err := d.client.Attach(ctx, a.TapName, api.AttachRequest{Filter: api.FilterSpec{Name: "count", Params: map[string]string{"colour": "red"}}})
			return err
		}, api.CodeInvalidParam, `"colour"`},
		{"bad failmode", func() error {
			_, err := d.client.Attach(ctx, a.TapName, api.AttachRequest{Filter: api.FilterSpec{Name: "count", FailMode: "sideways"}})
			return err
		}, api.CodeInvalidParam, "sideways"},
		{"nonexistent device", func() error {
			_, err := d.client.Attach(ctx, "nosuchdev0", api.AttachRequest{Filter: api.FilterSpec{Name: "count"}})
			return err
		}, api.CodeNoSuchDevice, "nosuchdev0"},
		{"second attach of the same slot", func() error {
			_, err := d.client.Attach(ctx, a.TapName, api.AttachRequest{Slot: &zero, Filter: api.FilterSpec{Name: "count"}})
			return err
		}, api.CodeSlotTaken, "slot 0"},
		{"slot leaving a gap", func() error {
			_, err := d.client.Attach(ctx, a.TapName, api.AttachRequest{Slot: &nine, Filter: api.FilterSpec{Name: "count"}})
			return err
		}, api.CodeBadRequest, "gap"},
		{"second chain on the same vNIC", func() error {
			_, err := d.client.SetChain(ctx, a.TapName, api.ChainRequest{Filters: []api.FilterSpec{{Name: "count"}}})
			return err
		}, api.CodeAlreadyExists, a.TapName},
		{"chain with one bad filter", func() error {
			_, err := d.client.SetChain(ctx, b.TapName, api.ChainRequest{Filters: []api.FilterSpec{{Name: "count"}, {Name: "nosuch"}}})
			return err
		}, api.CodeUnknownFilter, "slot 1"},
		{"detach of an unprotected vNIC", func() error {
			return d.client.Detach(ctx, b.TapName)
		}, api.CodeNotAttached, b.TapName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			var ae *api.Error
			if !errors.As(err, &ae) {
				t.Fatalf("got %v, want an API error %s", err, tc.code)
			}
			if ae.Code != tc.code || !strings.Contains(ae.Message, tc.msg) {
				t.Errorf("got [%s] %q, want [%s] mentioning %q", ae.Code, ae.Message, tc.code, tc.msg)
			}
			after, err := d.client.VNICs(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(after) != fmt.Sprint(before) {
				t.Errorf("state changed:\nbefore %+v\nafter  %+v", before, after)
			}
		})
	}
	if err := a.Ping(t, b.IPv4.IP, 2); err != nil {
		t.Errorf("traffic broken after bad requests: %v", err)
	}
	if _, err := os.Stat(filepath.Join(d.root, b.TapName)); !os.IsNotExist(err) {
		t.Errorf("failed chain request left pins for %s", b.TapName)
	}
	// The CLI turns these into clear messages and exit codes.
	out, err := d.vfctl("attach", a.TapName, "nosuch")
	if err == nil || !strings.Contains(out, "nosuch") {
		t.Errorf("vfctl attach unknown filter: err=%v out=%s", err, out)
	}
}

// kill -9 filterd during a TCP stream: the stream survives, the chain keeps
// running while the daemon is down, and the restarted daemon shows the
// same state.
func TestKill9KeepsStreamAndState(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	t.Parallel()
	host := testkit.NewHost(t)
	a, b := host.AddVM(t, "a"), host.AddVM(t, "b")
	d := newDaemon(t, host)
	ctx := context.Background()
	if _, err := d.client.SetChain(ctx, a.TapName, api.ChainRequest{Owner: "test", Filters: []api.FilterSpec{{Name: "count"}, {Name: "count", FailMode: "closed"}}}); err != nil {
		t.Fatal(err)
	}
	before, _ := d.client.VNICs(ctx)

	st := startStream(t, a, b, 5001)
	time.Sleep(500 * time.Millisecond)
	d.kill()
	down := d.pinnedStats(a.TapName)
	time.Sleep(time.Second) // daemon down: the chain carries on
	downAfter := d.pinnedStats(a.TapName)
	if downAfter[sdk.FromVM][1][sdk.StatContinue].Packets <= down[sdk.FromVM][1][sdk.StatContinue].Packets {
		t.Errorf("chain did not run while filterd was down")
	}
	d.start()
	time.Sleep(500 * time.Millisecond)
	st.finish(t)
	after, err := d.client.VNICs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("state after restart differs:\nbefore %+v\nafter  %+v", before, after)
	}
	out, err := d.vfctl("list")
	if err != nil || !strings.Contains(out, a.TapName) {
		t.Errorf("vfctl list after restart: %v\n%s", err, out)
	}
	// Not one frame was dropped by the chain across kill and restart.
	v, err := d.client.VNIC(ctx, a.TapName)
	if err != nil {
		t.Fatal(err)
	}
	for dir, c := range v.Chain {
		if c.Dropped.Packets != 0 || c.Passed.Packets != c.Entered.Packets {
			t.Errorf("%s: chain dropped %d frames (entered %d, passed %d)", dir, c.Dropped.Packets, c.Entered.Packets, c.Passed.Packets)
		}
	}
}

// A fail-closed slow-path filter whose slow path is gone drops; a fail-open
// one passes; both are counted and shown.
func TestSlowPathFailModes(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	t.Parallel()
	host := testkit.NewHost(t)
	a, b, c := host.AddVM(t, "a"), host.AddVM(t, "b"), host.AddVM(t, "c")
	d := newDaemon(t, host)
	ctx := context.Background()
	if _, err := d.client.SetChain(ctx, a.TapName, api.ChainRequest{Filters: []api.FilterSpec{{Name: "punt", FailMode: "closed"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.client.SetChain(ctx, c.TapName, api.ChainRequest{Filters: []api.FilterSpec{{Name: "punt", FailMode: "open"}}}); err != nil {
		t.Fatal(err)
	}
	for _, vm := range []*testkit.VM{a, c} {
		if err := vm.Ping(t, b.IPv4.IP, 3); err != nil {
			t.Fatalf("%s: ping through running slow path: %v", vm.TapName, err)
		}
	}
	v, _ := d.client.VNIC(ctx, a.TapName)
	if v.Slots[0].SlowPathState != "running" || v.Slots[0].Verdicts["from-vm"].Punt.Packets == 0 {
		t.Errorf("slow path not running or not punting: %+v", v.Slots[0])
	}

	d.kill() // the slow path dies with filterd; its lease runs out
	time.Sleep(1500 * time.Millisecond)
	if err := a.Ping(t, b.IPv4.IP, 2); err == nil {
		t.Errorf("fail-closed: ping passed with the slow path gone")
	}
	if err := c.Ping(t, b.IPv4.IP, 2); err != nil {
		t.Errorf("fail-open: ping blocked with the slow path gone: %v", err)
	}
	if n := d.pinnedStats(a.TapName)[sdk.FromVM][0][sdk.StatFailClosed].Packets; n == 0 {
		t.Errorf("fail-closed drops not counted")
	}
	if n := d.pinnedStats(c.TapName)[sdk.FromVM][0][sdk.StatFailOpen].Packets; n == 0 {
		t.Errorf("fail-open passes not counted")
	}

	d.start()
	va, err := d.client.VNIC(ctx, a.TapName)
	if err != nil {
		t.Fatal(err)
	}
	if va.Slots[0].Verdicts["from-vm"].FailClosed.Packets == 0 {
		t.Errorf("vfctl show lacks fail_closed count: %+v", va.Slots[0].Verdicts)
	}
	vc, _ := d.client.VNIC(ctx, c.TapName)
	if vc.Slots[0].Verdicts["from-vm"].FailOpen.Packets == 0 {
		t.Errorf("vfctl show lacks fail_open count: %+v", vc.Slots[0].Verdicts)
	}
	if out, err := d.vfctl("show", a.TapName); err != nil || !strings.Contains(out, "fail") {
		t.Errorf("vfctl show: %v\n%s", err, out)
	}
	// The restarted daemon brings the slow path back.
	if err := a.Ping(t, b.IPv4.IP, 5); err != nil {
		t.Errorf("ping after restart: %v", err)
	}
	// Detaching a chain with a running slow path removes everything.
	if err := d.client.Detach(ctx, a.TapName); err != nil {
		t.Fatalf("detach slow-path chain: %v", err)
	}
	if err := d.client.DetachSlot(ctx, c.TapName, 0); err != nil {
		t.Fatalf("detach slow-path slot: %v", err)
	}
	links, err := host.Handle().LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "vfp") {
			t.Errorf("punt tap %s left after detach", l.Attrs().Name)
		}
	}
	if err := a.Ping(t, b.IPv4.IP, 2); err != nil {
		t.Errorf("ping after detach: %v", err)
	}
}

// Replacing a chain is atomic: a TCP stream through a vNIC survives two
// replacements without a dropped frame, a kept filter keeps its counters,
// and a replacement that denies cuts the flow.
func TestReplaceChainAtomically(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	t.Parallel()
	host := testkit.NewHost(t)
	a, b := host.AddVM(t, "a"), host.AddVM(t, "b")
	d := newDaemon(t, host)
	ctx := context.Background()
	if _, err := d.client.SetChain(ctx, a.TapName, api.ChainRequest{Filters: []api.FilterSpec{{Name: "count"}}}); err != nil {
		t.Fatal(err)
	}
	st := startStream(t, a, b, 5002)
	time.Sleep(300 * time.Millisecond)
	before, _ := d.client.VNIC(ctx, a.TapName)
	for _, chain := range [][]api.FilterSpec{
		{{Name: "count"}, {Name: "count"}},
		{{Name: "count"}, {Name: "punt"}},
	} {
		if _, err := d.client.SetChain(ctx, a.TapName, api.ChainRequest{Replace: true, Filters: chain}); err != nil {
			t.Fatalf("replace with %v: %v", chain, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	st.finish(t)
	v, err := d.client.VNIC(ctx, a.TapName)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Slots) != 2 || v.Slots[1].Filter != "punt" || v.Slots[1].SlowPathState != "running" {
		t.Fatalf("chain after replace = %+v", v.Slots)
	}
	for dir, c := range v.Chain {
		if c.Dropped.Packets != 0 {
			t.Errorf("%s: %d frames dropped across replacements", dir, c.Dropped.Packets)
		}
	}
	// Slot 0 kept its filter and parameters: its counters carried on.
	if v.Slots[0].Counters[0].Value <= before.Slots[0].Counters[0].Value {
		t.Errorf("kept count filter restarted its counters: %v -> %v", before.Slots[0].Counters[0].Value, v.Slots[0].Counters[0].Value)
	}
	// A replacement that denies takes effect at once.
	if _, err := d.client.SetChain(ctx, a.TapName, api.ChainRequest{Replace: true, Filters: []api.FilterSpec{{Name: "punt", Params: map[string]string{"verdict": "drop"}}}}); err != nil {
		t.Fatal(err)
	}
	if err := a.Ping(t, b.IPv4.IP, 2); err == nil {
		t.Error("ping passed a deny-all chain after replacement")
	}
	// A bad replacement leaves the live chain as it was.
	if _, err := d.client.SetChain(ctx, a.TapName, api.ChainRequest{Replace: true, Filters: []api.FilterSpec{{Name: "count"}, {Name: "nosuch"}}}); !api.IsCode(err, api.CodeUnknownFilter) {
		t.Errorf("bad replacement: %v", err)
	}
	if v, _ := d.client.VNIC(ctx, a.TapName); len(v.Slots) != 1 || v.Slots[0].Params["verdict"] != "drop" {
		t.Errorf("bad replacement changed the chain: %+v", v.Slots)
	}
	links, _ := host.Handle().LinkList()
	taps := 0
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "vfp") {
			taps++
		}
	}
	if taps != 2 {
		t.Errorf("%d punt taps after replacements, want 2 (one slow slot, both directions)", taps)
	}
	// The CLI replaces too; without --replace it refuses.
	if out, err := d.vfctl("chain", "set", a.TapName, "count"); err == nil {
		t.Errorf("vfctl chain set over a chain without --replace succeeded: %s", out)
	}
	if out, err := d.vfctl("chain", "set", a.TapName, "count", "--replace"); err != nil {
		t.Fatalf("vfctl chain set --replace: %v\n%s", err, out)
	}
	if err := a.Ping(t, b.IPv4.IP, 2); err != nil {
		t.Errorf("ping after replacing the deny chain with count: %v", err)
	}
}

// The clsact fallback (kernels without tcx) runs the same chains, survives
// a restart and detaches cleanly.
func TestClsactModeEndToEnd(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	t.Parallel()
	host := testkit.NewHost(t)
	a, b := host.AddVM(t, "a"), host.AddVM(t, "b")
	d := newDaemon(t, host, "--attach-mode", "clsact")
	ctx := context.Background()
	v, err := d.client.SetChain(ctx, a.TapName, api.ChainRequest{Filters: []api.FilterSpec{{Name: "count"}, {Name: "punt"}}})
	if err != nil {
		t.Fatal(err)
	}
	if v.Mode != "clsact" {
		t.Fatalf("mode %q, want clsact", v.Mode)
	}
	if err := a.Ping(t, b.IPv4.IP, 2); err != nil {
		t.Fatalf("ping through clsact chain: %v", err)
	}
	d.kill()
	d.start("--attach-mode", "clsact")
	if err := a.Ping(t, b.IPv4.IP, 3); err != nil {
		t.Fatalf("ping after restart: %v", err)
	}
	v, err = d.client.VNIC(ctx, a.TapName)
	if err != nil {
		t.Fatal(err)
	}
	if v.Slots[1].SlowPathState != "running" || v.Slots[1].Verdicts["from-vm"].Punt.Packets == 0 {
		t.Errorf("slow path after restart: %+v", v.Slots[1])
	}
	if err := d.client.Detach(ctx, a.TapName); err != nil {
		t.Fatal(err)
	}
	out, _ := host.Command(ctx, "tc", "qdisc", "show", "dev", a.TapName).CombinedOutput()
	if strings.Contains(string(out), "clsact") {
		t.Errorf("clsact qdisc left after detach: %s", out)
	}
}

// stream is a TCP connection from VM a to VM b that carries data, written
// continuously from its own goroutine, while a test changes the datapath
// under it.
type stream struct {
	conn     net.Conn
	sent     atomic.Int64
	stop     chan struct{}
	writer   chan error // the writer's end: nil, or the write that failed
	received chan int64 // bytes b read, once a closes
}

func startStream(t *testing.T, a, b *testkit.VM, port int) *stream {
	t.Helper()
	ln, err := b.ListenTCP(fmt.Sprintf(":%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &stream{stop: make(chan struct{}), writer: make(chan error, 1), received: make(chan int64, 1)}
	go func() {
		c, err := ln.Accept()
		if err != nil {
			s.received <- -1
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		s.received <- n
	}()
	if s.conn, err = a.DialTCP(context.Background(), fmt.Sprintf("%s:%d", b.IPv4.IP, port)); err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 32<<10)
		for {
			select {
			case <-s.stop:
				s.writer <- nil
				return
			default:
			}
			s.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			n, err := s.conn.Write(buf)
			s.sent.Add(int64(n))
			if err != nil {
				s.writer <- err
				return
			}
		}
	}()
	return s
}

// finish stops writing and requires that no write failed and that b
// received every byte a sent.
func (s *stream) finish(t *testing.T) {
	t.Helper()
	close(s.stop)
	if err := <-s.writer; err != nil {
		t.Fatalf("stream broke after %d bytes: %v", s.sent.Load(), err)
	}
	s.conn.Close()
	if got := <-s.received; got != s.sent.Load() {
		t.Errorf("received %d bytes of %d", got, s.sent.Load())
	}
}
