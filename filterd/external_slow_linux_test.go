package filterd_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// dnsQuery builds a DNS query message for name.
func dnsQuery(name string) []byte {
	m := []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, l := range strings.Split(name, ".") {
		m = append(m, byte(len(l)))
		m = append(m, l...)
	}
	return append(m, 0, 0, 1, 0, 1)
}

// slowManifest is examples/dnsblock's manifest with the program named by
// absolute path, as a filter loaded through the API must.
func slowManifest(t *testing.T, command string) []byte {
	t.Helper()
	b := readFile(t, "../examples/dnsblock/dnsblock.json")
	return []byte(strings.Replace(string(b), `"command": ["dnsblock"]`, `"command": ["`+command+`"]`, 1))
}

func processOf(t *testing.T, d *daemon, name string) *api.ProcessStatus {
	t.Helper()
	fs, err := d.client.Filters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fs {
		if f.Name == name {
			if f.Process == nil {
				t.Fatalf("filter %s has no process status: %+v", name, f)
			}
			return f.Process
		}
	}
	t.Fatalf("filter %s not loaded", name)
	return nil
}

func slotState(t *testing.T, d *daemon, vnic string) string {
	t.Helper()
	v, err := d.client.VNIC(context.Background(), vnic)
	if err != nil {
		t.Fatal(err)
	}
	return v.Slots[0].SlowPathState
}

// TestExternalSlowPathFilter loads examples/dnsblock — its own module, its
// own process — into a running filterd, chains it before a built-in
// filter, checks it decides on real traffic, then kills it with -9 under
// traffic: only its vNIC applies its failure mode (within 1 s), another
// vNIC's traffic never stops, and the restarted process takes over again.
func TestExternalSlowPathFilter(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	t.Parallel()
	host := testkit.NewHost(t)
	a, b, c := host.AddVM(t, "a"), host.AddVM(t, "b"), host.AddVM(t, "c")
	d := newDaemon(t, host)
	ctx := context.Background()
	bin := filepath.Join(binDir, "dnsblock")

	// Refusals name their cause and load nothing.
	for _, tc := range []struct{ name, command, code, msg string }{
		{"relative command through the API", "dnsblock", api.CodeBadManifest, "absolute path"},
		{"missing program", "/nonexistent/dnsblock", api.CodeBadManifest, "/nonexistent/dnsblock"},
		{"not a filter process", "/bin/true", api.CodeBadManifest, "before its hello"},
	} {
		_, err := d.client.LoadFilter(ctx, api.LoadFilterRequest{Manifest: slowManifest(t, tc.command)})
		if !api.IsCode(err, tc.code) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: error %v, want code %s naming %q", tc.name, err, tc.code, tc.msg)
		}
	}
	fi, err := d.client.LoadFilter(ctx, api.LoadFilterRequest{Manifest: slowManifest(t, bin)})
	if err != nil {
		t.Fatalf("load dnsblock: %v", err)
	}
	if !fi.SlowPath || fi.FastPath || !fi.External {
		t.Errorf("filter info %+v: want an external slow-path-only filter", fi)
	}
	pid := processOf(t, d, "dnsblock").PID
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) }) // if filterd left it behind

	if _, err := d.client.SetChain(ctx, a.TapName, api.ChainRequest{Filters: []api.FilterSpec{
		{Name: "dnsblock", Params: map[string]string{"names": "blocked.example"}},
		{Name: "count"},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.client.SetChain(ctx, c.TapName, api.ChainRequest{Filters: []api.FilterSpec{{Name: "count"}}}); err != nil {
		t.Fatal(err)
	}
	if st := slotState(t, d, a.TapName); st != "running" {
		t.Fatalf("slot state %q right after attach", st)
	}

	// The resolver on b records the names it is asked for.
	var pc net.PacketConn
	if err := b.Do(func() (err error) {
		pc, err = net.ListenPacket("udp4", net.JoinHostPort(b.IPv4.IP.String(), "53"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	got := make(chan string, 64)
	go func() {
		buf := make([]byte, 512)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n > 13 {
				got <- string(buf[13 : 13+min(int(buf[12]), n-13)])
			}
		}
	}()
	ask := func(name string) {
		t.Helper()
		if err := a.Do(func() error {
			conn, err := net.Dial("udp4", net.JoinHostPort(b.IPv4.IP.String(), "53"))
			if err != nil {
				return err
			}
			defer conn.Close()
			_, err = conn.Write(dnsQuery(name))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	ask("www.blocked.example")
	ask("allowed.example")
	select {
	case n := <-got:
		if n != "allowed" {
			t.Fatalf("resolver asked for %q first: the blocked query passed", n)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("allowed query never reached the resolver")
	}
	// The process's counters reach `vfctl show` with its next pong.
	var blocked float64
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end) && blocked == 0; time.Sleep(50 * time.Millisecond) {
		v, err := d.client.VNIC(ctx, a.TapName)
		if err != nil {
			t.Fatal(err)
		}
		for _, ct := range v.Slots[0].Counters {
			if ct.Name == "dns_blocked_total" {
				blocked = ct.Value
			}
		}
	}
	if blocked != 1 {
		t.Errorf("dns_blocked_total %v, want 1", blocked)
	}

	// Kill -9 under traffic. c keeps pinging b all along.
	var cLost, cSent atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			cSent.Add(1)
			if !pingTTL(t, c, b.IPv4.IP, 64) {
				cLost.Add(1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var down time.Duration
	for end := killed.Add(time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if slotState(t, d, a.TapName) != "running" {
			down = time.Since(killed)
			break
		}
	}
	if down == 0 {
		t.Fatalf("slot still running 1s after kill -9 of its process")
	}
	var back time.Duration
	for end := killed.Add(10 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if slotState(t, d, a.TapName) == "running" {
			back = time.Since(killed)
			break
		}
	}
	close(stop)
	<-done
	if back == 0 {
		t.Fatalf("slot not running again 10s after kill -9: process %+v", processOf(t, d, "dnsblock"))
	}
	t.Logf("kill -9: failure mode after %v, running again after %v; other vNIC: %d of %d pings lost",
		down.Round(time.Millisecond), back.Round(time.Millisecond), cLost.Load(), cSent.Load())
	if cLost.Load() != 0 {
		t.Errorf("another vNIC lost %d of %d pings while the external filter was down", cLost.Load(), cSent.Load())
	}
	ps := processOf(t, d, "dnsblock")
	if ps.Restarts < 1 || ps.PID == pid || ps.State != "running" {
		t.Errorf("process after kill %+v (old pid %d)", ps, pid)
	}
	newPID := ps.PID
	t.Cleanup(func() { _ = syscall.Kill(newPID, syscall.SIGKILL) })
	ask("again.blocked.example")
	ask("again.example")
	select {
	case n := <-got:
		if n != "again" {
			t.Fatalf("after restart the resolver was asked for %q", n)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("after restart the allowed query never arrived")
	}

	// In use: unload is refused; detached: unload ends the process.
	if err := d.client.UnloadFilter(ctx, "dnsblock"); !api.IsCode(err, api.CodeFilterInUse) {
		t.Errorf("unload while in use: %v", err)
	}
	if err := d.client.Detach(ctx, a.TapName); err != nil {
		t.Fatal(err)
	}
	if err := d.client.UnloadFilter(ctx, "dnsblock"); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if err := syscall.Kill(newPID, 0); errors.Is(err, syscall.ESRCH) {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("process %d still alive after unload", newPID)
		}
	}
}

// TestVfctlLoadSlowPathFilter loads the example the way an operator does:
// vfctl with the manifest beside its program (relative command), and
// filterd restarted finds it again.
func TestVfctlLoadSlowPathFilter(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	t.Parallel()
	host := testkit.NewHost(t)
	d := newDaemon(t, host)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dnsblock.json"), readFile(t, "../examples/dnsblock/dnsblock.json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(binDir, "dnsblock"), filepath.Join(dir, "dnsblock")); err != nil {
		t.Fatal(err)
	}
	if out, err := d.vfctl("filter", "load", filepath.Join(dir, "dnsblock.json")); err != nil {
		t.Fatalf("vfctl filter load: %v\n%s", err, out)
	}
	out, err := d.vfctl("filter", "info", "dnsblock")
	if err != nil || !strings.Contains(out, "process: running, pid ") {
		t.Fatalf("vfctl filter info: %v\n%s", err, out)
	}
	pid := processOf(t, d, "dnsblock").PID
	// kill -9 filterd: its filter process goes with it (Pdeathsig); the
	// restarted daemon starts the saved filter again.
	d.kill()
	for end := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			break
		}
		if time.Now().After(end) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("filter process %d outlived filterd", pid)
		}
	}
	d.start()
	ps := processOf(t, d, "dnsblock")
	t.Cleanup(func() { _ = syscall.Kill(ps.PID, syscall.SIGKILL) })
	if ps.State != "running" || ps.PID == pid {
		t.Errorf("after filterd restart: %+v", ps)
	}
}
