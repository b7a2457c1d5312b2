package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// builtFilterdDir holds the filterd buildFilterd built, shared by every
// test of the package: TestMain removes it after the last one.
var builtFilterdDir string

var buildFilterd = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "vfbin-")
	if err != nil {
		return "", err
	}
	builtFilterdDir = dir
	out, err := exec.Command("go", "build", "-o", dir+"/", "github.com/vnicfilter/vnicfilter/cmd/filterd").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build filterd: %v: %s", err, out)
	}
	return filepath.Join(dir, "filterd"), nil
})

// startFilterd runs a real filterd inside host and returns its socket;
// it is killed (by pid) and its chains removed at cleanup.
func startFilterd(t *testing.T, host *testkit.Host) string {
	t.Helper()
	bin, err := buildFilterd()
	if err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	dir, err := os.MkdirTemp("", "vfctl-lb") // short: sun_path holds 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	root := "/sys/fs/bpf/vftest-" + hex.EncodeToString(b[:])
	sock := filepath.Join(dir, "filterd.sock")
	var logs bytes.Buffer
	cmd := host.Command(context.Background(), bin, "--socket", sock, "--bpffs-root", root, "--state-dir", filepath.Join(dir, "state"))
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_, _ = cmd.Process.Wait()
		_ = host.Do(func() error {
			if dp, err := datapath.New(datapath.Options{Root: root}); err == nil {
				names, _ := dp.Pinned()
				for _, n := range names {
					_ = dp.Remove(n)
				}
			}
			return nil
		})
		os.RemoveAll(root)
		os.RemoveAll(dir)
		if t.Failed() {
			t.Logf("filterd logs:\n%s", logs.String())
		}
	})
	c := api.NewClient(sock)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := c.Version(context.Background()); err == nil {
			return sock
		}
		if time.Now().After(deadline) {
			t.Fatalf("filterd did not come up:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLBAgainstFilterd: vfctl lb against a real filterd, a client VM with
// dlb on its tap and three backend VMs: show, add a backend (new
// connections reach it), drain one (new connections avoid it, an open one
// keeps working), a refused drain leaves the file untouched, weight and rm.
func TestLBAgainstFilterd(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	ctx := context.Background()
	host := testkit.NewHost(t)
	client := host.AddVM(t, "client")
	var backends []*testkit.VM
	for _, name := range []string{"b1", "b2", "b3"} {
		vm := host.AddVM(t, name)
		vm.ServeTCP(t, 8080, func(c net.Conn) {
			io.WriteString(c, name+"\n")
			io.Copy(c, c)
		})
		backends = append(backends, vm)
	}
	// Checks run from b3's namespace: from the client's, a check on a
	// backend's service port could share a source port with a VIP flow
	// and have its replies reverse-NATed (docs/dlb.md).
	const vip = "10.99.0.200"
	if out, err := client.Command(ctx, "ip", "neigh", "replace", vip, "lladdr", "02:00:00:00:00:c8", "dev", "eth0", "nud", "permanent").CombinedOutput(); err != nil {
		t.Fatalf("static neighbour for the VIP: %v: %s", err, out)
	}
	addr := func(vm *testkit.VM) string { return vm.IPv4.IP.String() + ":8080" }
	path := filepath.Join(t.TempDir(), "lb.json")
	file := fmt.Sprintf(`{"services": [{"name": "web", "vip": %q, "port": 80, "protocol": "tcp", "table_size": 4099,
  "health": {"type": "tcp", "interval": "200ms", "netns": %q},
  "backends": [{"addr": %q, "port": 8080, "mac": %q}, {"addr": %q, "port": 8080, "mac": %q}]}]}`,
		vip, backends[2].Path, backends[0].IPv4.IP, backends[0].MAC, backends[1].IPv4.IP, backends[1].MAC)
	if err := os.WriteFile(path, []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := startFilterd(t, host)
	tap := client.TapName
	run := func(code int, args ...string) string {
		t.Helper()
		r := vfctl(t, ctx, sock, args...)
		if r.code != code {
			t.Fatalf("%v: exit %d, want %d\nstdout %s\nstderr %s", args, r.code, code, r.stdout, r.stderr)
		}
		return r.stdout + r.stderr
	}
	run(ExitOK, "attach", tap, "count")
	run(ExitOK, "attach", tap, "dlb", "--param", "services="+path)

	dial := func() (net.Conn, *bufio.Reader, string) {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		c, err := client.DialTCP(cctx, vip+":80")
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		r := bufio.NewReader(c)
		name, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read backend name: %v", err)
		}
		return c, r, strings.TrimSpace(name)
	}
	spread := func(n int) map[string]int {
		got := map[string]int{}
		for range n {
			c, _, name := dial()
			c.Close()
			got[name]++
		}
		return got
	}
	show := func() lbShow {
		t.Helper()
		var s lbShow
		if err := json.Unmarshal([]byte(run(ExitOK, "-o", "json", "lb", "show", tap)), &s); err != nil {
			t.Fatal(err)
		}
		return s
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		s := show()
		if len(s.State.Services) == 1 && s.State.Services[0].Backends[0].Health == "up" && s.State.Services[0].Backends[1].Health == "up" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backends not up: %+v", s.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := spread(200); got["b3"] != 0 || got["b1"] == 0 || got["b2"] == 0 {
		t.Errorf("before add: %v", got)
	}
	out := run(ExitOK, "lb", "show", tap)
	for _, want := range []string{"slot 1: services from " + path, "service web  " + vip + ":80/tcp  affinity none", "health: tcp backend port every 200ms, timeout 200ms, rise 2, fall 3 from " + backends[2].Path, addr(backends[0]), "up for "} {
		if !strings.Contains(out, want) {
			t.Errorf("lb show lacks %q:\n%s", want, out)
		}
	}
	t.Logf("vfctl lb show %s:\n%s", tap, out)

	out = run(ExitOK, "lb", "add", tap, "web", addr(backends[2]), "--mac", backends[2].MAC.String())
	if !strings.Contains(out, "reloaded "+tap+" slot 1") {
		t.Errorf("add: %s", out)
	}
	if got := spread(300); got["b3"] == 0 {
		t.Errorf("after add, no new connection reached b3: %v", got)
	} else {
		t.Logf("after add: %v", got)
	}

	open, r, name := dial()
	defer open.Close()
	run(ExitOK, "lb", "drain", tap, "web", addr(backends[0]))
	if got := spread(300); got["b1"] != 0 {
		t.Errorf("drained b1 still got new connections: %v", got)
	}
	if _, err := io.WriteString(open, "still there\n"); err != nil {
		t.Fatal(err)
	}
	if got, err := r.ReadString('\n'); err != nil || got != "still there\n" {
		t.Errorf("connection to %s across the drain: %q %v", name, got, err)
	}
	s := show()
	if len(s.State.Services) != 1 || len(s.State.Services[0].Backends) != 3 {
		t.Fatalf("lb show -o json: %+v", s)
	}
	b1 := s.State.Services[0].Backends[0]
	if b1.Weight != 0 || b1.NewFlows == 0 || b1.PinnedFlows == 0 || s.Filter != "dlb" || s.Slot != 1 {
		t.Errorf("b1 after the drain: %+v (slot %d filter %s)", b1, s.Slot, s.Filter)
	}

	// Drain b2 and b3 too: the last one is refused, the file untouched.
	run(ExitOK, "lb", "drain", tap, "web", addr(backends[1]))
	before, _ := os.ReadFile(path)
	out = run(ExitBadInput, "lb", "drain", tap, "web", addr(backends[2]))
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) || !strings.Contains(out, "empty pool") {
		t.Errorf("refused drain: %s\nfile before %s\nafter %s", out, before, after)
	}
	if got := spread(100); got["b3"] != 100 {
		t.Errorf("with b1 and b2 drained: %v", got)
	}
	run(ExitOK, "lb", "weight", tap, "web", addr(backends[0]), "3")
	run(ExitOK, "lb", "rm", tap, "web", addr(backends[2]))
	if got := spread(200); got["b1"] != 200 {
		t.Errorf("with b2 drained and b3 removed: %v", got)
	}
	run(ExitNotFound, "lb", "show", tap, "--slot", "0")
	out = run(ExitOK, "lb", "show", tap)
	t.Logf("vfctl lb show %s at the end:\n%s", tap, out)
	// The counters are in vfctl show too, labelled.
	if out := run(ExitOK, "-o", "json", "show", tap); !strings.Contains(out, `"backend_pinned_flows"`) || !strings.Contains(out, `"service": "web"`) {
		t.Errorf("vfctl show lacks the dlb counters:\n%s", out)
	}
}
