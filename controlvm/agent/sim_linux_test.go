package agent_test

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"crypto/rand"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	fapi "github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/internal/nsutil"
	mapi "github.com/vnicfilter/vnicfilter/manager/api"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vfagent-bin-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/vnicfilter/vnicfilter/cmd/vfmanager",
		"github.com/vnicfilter/vnicfilter/cmd/vfagent", "github.com/vnicfilter/vnicfilter/cmd/filterd")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// simConfig sizes a simulation.
type simConfig struct {
	hosts, real, vnics int
	// changes: group-membership changes timed.
	changes int
}

// TestSimulation is the small multi-host simulation of make test: 8 hosts
// (2 with real datapaths), 400 vNICs. TestSimulationSoak (make soak) runs
// 50 hosts (5 real), 5,000 vNICs.
func TestSimulation(t *testing.T) {
	runSimulation(t, simConfig{hosts: 8, real: 2, vnics: 400, changes: 6})
}

// TestSimulationSoak is the full simulation: VNICFILTER_SOAK=1 (make soak).
func TestSimulationSoak(t *testing.T) {
	if os.Getenv("VNICFILTER_SOAK") == "" {
		t.Skip("the 50-host simulation runs with VNICFILTER_SOAK=1 (make soak)")
	}
	runSimulation(t, simConfig{hosts: 50, real: 5, vnics: 5000, changes: 20})
}

// proc is a process the test started; stopped by pid at cleanup.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	log  strings.Builder
	// applied: the agent's "applied" lines, version and arrival time.
	applied []applied
}

type applied struct {
	version int64
	at      time.Time
	took    time.Duration // the agent's own time to apply
}

func startProc(t *testing.T, name string, nsPath string, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command("nsenter", append([]string{"--net=" + nsPath, "--", filepath.Join(binDir, bin)}, args...)...)
	r, w := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			now := time.Now()
			var ev struct {
				Msg     string `json:"msg"`
				Version int64  `json:"version"`
				Took    string `json:"took"`
			}
			p.mu.Lock()
			if json.Unmarshal([]byte(line), &ev) == nil && ev.Msg == "applied" {
				took, _ := time.ParseDuration(ev.Took)
				p.applied = append(p.applied, applied{ev.Version, now, took})
			}
			if p.log.Len() < 4<<20 {
				p.log.WriteString(line)
				p.log.WriteByte('\n')
			}
			p.mu.Unlock()
		}
	}()
	go func() { p.cmd.Wait(); w.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", name, tail(p.logs(), 3000))
		}
	})
	return p
}

func (p *proc) stop(sig syscall.Signal) {
	if p.cmd.Process == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	<-p.done
}

func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// appliedAt returns when the agent first logged applying version v or
// later, if it did.
func (p *proc) appliedAt(v int64) (time.Time, bool) {
	a, ok := p.appliedEntry(v)
	return a.at, ok
}

func (p *proc) appliedEntry(v int64) (applied, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, a := range p.applied {
		if a.version >= v {
			return a, true
		}
	}
	return applied{}, false
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// simHost is one simulated hypervisor: a host namespace with filterd, a
// control-VM namespace with the agent, wired by the hidden bridge.
type simHost struct {
	name    string
	real    bool
	host    *testkit.Host
	cvm     *testkit.VM // the control VM: eth0 on the management network, eth1 on the hidden bridge
	dir     string
	filterd *proc
	agent   *proc
	fd      *fapi.Client
	vms     []string // VM names
	// real hosts: the VMs playing web, db and other.
	web, db, other *testkit.VM
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

const mgrAddr = "10.99.0.254"

func runSimulation(t *testing.T, cfg simConfig) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	testkit.Need(t, testkit.Nft)
	ctx := context.Background()
	start := time.Now()

	m := startManagement(t)
	mgmt, mgrArgs, mgr, server, admin := m.host, m.args, m.proc, m.server, m.admin

	// Configuration: web and db by name pattern or tag; db takes
	// postgres from web only.
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(admin.PutGroup(ctx, mapi.Group{Name: "web-tagged", Selector: map[string]string{"tier": "web"}}))
	must(admin.PutGroup(ctx, mapi.Group{Name: "web", NameGlob: "*-web*", Include: []string{"web-tagged"}}))
	must(admin.PutGroup(ctx, mapi.Group{Name: "db", NameGlob: "*-db*"}))
	rule, _ := json.Marshal(map[string]any{"name": "pg", "direction": "to-vm", "src_groups": []string{"web"}, "proto": "tcp", "dst_ports": []int{5432}, "action": "allow"})
	must(admin.PutPolicy(ctx, mapi.Policy{Name: "db-in", Defaults: map[string]string{"to-vm": "deny"}, Rules: []json.RawMessage{rule}}))
	must(admin.PutAssignment(ctx, mapi.Assignment{Name: "db-in", Policy: "db-in", Group: "db"}))

	// Hosts.
	recordHosts := cfg.hosts - cfg.real
	perRecord := (cfg.vnics - 3*cfg.real + recordHosts - 1) / recordHosts
	hosts := make([]*simHost, cfg.hosts)
	total := 0
	for i := range hosts {
		h := &simHost{name: fmt.Sprintf("h%02d", i), real: i < cfg.real, dir: t.TempDir()}
		h.host = testkit.NewHost(t)
		h.cvm = mgmt.AddVM(t, "cvm-"+h.name)
		args := []string{"--hidden-bridge", "vfh0", "--hidden-addr", "169.254.77.1/24", "--hidden-tls-dir", filepath.Join(h.dir, "tls")}
		if !h.real {
			args = append(args, "--datapath", "record")
		}
		h.filterd, h.fd = startFilterd(t, h.name, h.host, h.dir, args...)
		if h.real {
			h.web, h.db, h.other = h.host.AddVM(t, h.name+"-web"), h.host.AddVM(t, h.name+"-db"), h.host.AddVM(t, h.name+"-vm")
			total += 3
		} else {
			total += perRecord
		}
		hosts[i] = h
	}
	for _, h := range hosts {
		waitFilterd(t, h)
		plugHidden(t, h)
		// The VMs, as libvirt's hook registers them: a chain owned by
		// the domain (empty until the manager says otherwise) and the
		// VM's addresses as labels.
		if h.real {
			for _, vm := range []*testkit.VM{h.web, h.db, h.other} {
				must(h.fd.SetChain(ctx, vm.TapName, fapi.ChainRequest{Owner: "libvirt:" + vm.Label, Filters: []fapi.FilterSpec{}, Addresses: []string{vm.IPv4.IP.String()}}))
				h.vms = append(h.vms, vm.Label)
			}
		} else {
			i := slices.Index(hosts, h)
			for k := range perRecord {
				role := "vm"
				switch {
				case k < perRecord/10:
					role = "web"
				case k < 2*perRecord/10:
					role = "db"
				}
				vm := fmt.Sprintf("%s-%s%03d", h.name, role, k)
				addr := fmt.Sprintf("10.%d.%d.%d", 100+i/250, i%250, k+1)
				must(h.fd.SetChain(ctx, fmt.Sprintf("vnet%d", k), fapi.ChainRequest{Owner: "libvirt:" + vm, Filters: []fapi.FilterSpec{}, Addresses: []string{addr}}))
				h.vms = append(h.vms, vm)
			}
		}
		if out, err := exec.Command(filepath.Join(binDir, "filterd"), "issue-cert", "--hidden-tls-dir", filepath.Join(h.dir, "tls"), "--name", "agent", "--out", filepath.Join(h.dir, "agent-tls")).CombinedOutput(); err != nil {
			t.Fatalf("issue-cert %s: %v\n%s", h.name, err, out)
		}
		m.joinFiles(t, h.name, h.dir)
		h.startAgent(t, server, true)
	}
	t.Logf("%d hosts (%d with real datapaths, %d record-only), %d vNICs: set up in %v", cfg.hosts, cfg.real, recordHosts, total, time.Since(start).Round(time.Millisecond))

	// Everything reported, computed, applied and reported back.
	waitInSync(t, admin, hosts, 120*time.Second)
	t.Logf("all hosts in sync %v after start", time.Since(start).Round(time.Millisecond))
	st, err := admin.Status(ctx, hosts[0].name)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.VNICs) != 3 && cfg.real > 0 {
		t.Fatalf("host %s: %d vNICs in status, want 3", hosts[0].name, len(st.VNICs))
	}
	// Key files: the agent's key is 0600 in a 0700 directory.
	for path, want := range map[string]os.FileMode{filepath.Join(hosts[0].dir, "agent"): 0o700, filepath.Join(hosts[0].dir, "agent", "agent.key"): 0o600} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want %04o", path, fi.Mode(), err, want)
		}
	}

	// Real datapaths: web reaches db:5432, other does not.
	for _, h := range hosts[:cfg.real] {
		h.db.ServeTCP(t, 5432, nil)
		checkTraffic(t, h, true, false)
	}

	// Group-membership changes: a VM joins web (tier=web) and leaves it;
	// each changes the db policy of every host.
	retag := hosts[len(hosts)-1].vms[len(hosts[len(hosts)-1].vms)-1] // an "other" VM
	// Changes one second apart: each is measured on its own, not queued
	// behind the previous one's realized-state reports.
	var lat, took []time.Duration
	for i := range cfg.changes {
		tags := mapi.Tags{"tier": "web"}
		if i%2 == 1 {
			tags = mapi.Tags{}
		}
		time.Sleep(time.Second)
		rev, t0 := change(t, admin, retag, tags)
		for _, h := range hosts {
			at := waitApplied(t, h, rev, 30*time.Second)
			lat = append(lat, at.Sub(t0))
			a, _ := h.agent.appliedEntry(rev)
			took = append(took, a.took)
		}
	}
	pct := func(ds []time.Duration, p int) time.Duration {
		slices.Sort(ds)
		return ds[(len(ds)*p+99)/100-1].Round(time.Millisecond)
	}
	p99 := pct(lat, 99)
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		t.Logf("machine load average (1, 5, 15 min): %s", strings.Join(strings.Fields(string(la))[:3], " "))
	}
	t.Logf("group-membership change → applied on every host (%d hosts × %d changes): p50 %v, p99 %v, max %v; of which the agents' own apply: p50 %v, p99 %v",
		cfg.hosts, cfg.changes, pct(lat, 50), p99, pct(lat, 100), pct(took, 50), pct(took, 99))
	if p99 > 10*time.Second { // a sanity bound; the figure is reported above
		t.Errorf("p99 %v: propagation is broken, not slow", p99)
	}

	// Traffic follows a retag on a real host.
	if cfg.real > 0 {
		h := hosts[0]
		rev, _ := change(t, admin, h.other.Label, mapi.Tags{"tier": "web"})
		for _, h := range hosts {
			waitApplied(t, h, rev, 30*time.Second)
		}
		checkTraffic(t, h, true, true)
		rev, _ = change(t, admin, h.other.Label, mapi.Tags{})
		for _, h := range hosts {
			waitApplied(t, h, rev, 30*time.Second)
		}
		checkTraffic(t, h, true, false)
	}

	// An agent killed, a change while it is away, the agent back: it
	// catches up. The datapath kept enforcing meanwhile.
	away := hosts[len(hosts)/2]
	away.agent.stop(syscall.SIGKILL)
	if cfg.real > 0 {
		checkTraffic(t, hosts[0], true, false)
	}
	rev, _ := change(t, admin, retag, mapi.Tags{"tier": "web"})
	away.startAgent(t, server, false)
	waitApplied(t, away, rev, 30*time.Second)

	// A control VM cut off the management network for a while.
	cut := hosts[len(hosts)/3]
	setLink(t, cut.cvm, "eth0", false)
	rev, _ = change(t, admin, retag, mapi.Tags{})
	time.Sleep(time.Second)
	if _, ok := cut.agent.appliedAt(rev); ok {
		t.Errorf("host %s applied version %d while cut off", cut.name, rev)
	}
	setLink(t, cut.cvm, "eth0", true)
	waitApplied(t, cut, rev, 60*time.Second)

	// The manager killed right after acknowledging a change, and
	// restarted: every host gets the change, also one whose control VM
	// was cut off until the manager was back (it can only have it from
	// the restarted manager).
	late := hosts[len(hosts)-1]
	setLink(t, late.cvm, "eth0", false)
	rev, _ = change(t, admin, retag, mapi.Tags{"tier": "web"})
	mgr.stop(syscall.SIGKILL)
	mgr = startProc(t, "vfmanager (restarted)", mgmt.Path, "vfmanager", mgrArgs...)
	setLink(t, late.cvm, "eth0", true)
	if _, ok := late.agent.appliedAt(rev); ok {
		t.Errorf("host %s applied version %d while cut off", late.name, rev)
	}
	for _, h := range hosts {
		waitApplied(t, h, rev, 60*time.Second)
	}
	waitInSync(t, admin, hosts, 60*time.Second)

	// Counters reach the manager.
	if cfg.real > 0 {
		h := hosts[0]
		deadline := time.Now().Add(20 * time.Second)
		for {
			cs, err := admin.Counters(ctx, h.name)
			if err == nil && slices.ContainsFunc(cs.VNICs, func(c mapi.VNICCounters) bool {
				return c.VNIC == h.db.TapName && c.Packets["to-vm.entered"] > 0
			}) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no counters of %s/%s at the manager: %+v %v", h.name, h.db.TapName, cs, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	t.Logf("whole simulation %v", time.Since(start).Round(time.Millisecond))
}

// management is the management network: a namespace with a bridge, the
// manager (vfmanager) on it, an admin client dialing into it.
type management struct {
	host   *testkit.Host
	args   []string // vfmanager's, to restart it
	proc   *proc
	server string
	caPEM  []byte
	admin  *mapi.Client
}

func startManagement(t *testing.T) *management {
	t.Helper()
	mgmt := testkit.NewHost(t)
	br, err := mgmt.Handle().LinkByName(mgmt.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	if err := mgmt.Handle().AddrAdd(br, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(mgrAddr).To4(), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	mgrDir := t.TempDir()
	mgrArgs := []string{"serve", "--listen", mgrAddr + ":8443", "--data-dir", mgrDir, "--tls-san", mgrAddr, "--log-level", "warn"}
	mgr := startProc(t, "vfmanager", mgmt.Path, "vfmanager", mgrArgs...)
	waitFile(t, filepath.Join(mgrDir, "manager.addr"), mgr)
	server := "https://" + mgrAddr + ":8443"
	caPEM, err := os.ReadFile(filepath.Join(mgrDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(filepath.Join(mgrDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	mgmtNS, err := netns.GetFromPath(mgmt.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mgmtNS.Close() })
	admin, err := mapi.NewClient(mapi.ClientOptions{Server: server, CA: caPEM, Token: strings.TrimSpace(string(tok)),
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := nsutil.Do(mgmtNS, mgmt.Name, func() error {
				var err error
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	return &management{host: mgmt, args: mgrArgs, proc: mgr, server: server, caPEM: caPEM, admin: admin}
}

// joinFiles writes a join token for host and the manager CA into dir
// (join.token, manager-ca.pem), what vfagent's first run needs.
func (m *management) joinFiles(t *testing.T, host, dir string) {
	t.Helper()
	jt, err := m.admin.CreateToken(context.Background(), mapi.TokenRequest{Role: mapi.RoleJoin, Host: host})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "join.token"), jt.Secret)
	writeFile(t, filepath.Join(dir, "manager-ca.pem"), string(m.caPEM))
}

// startFilterd starts a filterd in host with its socket, state and a
// bpffs root of its own under dir (extra: more flags). At cleanup it is
// killed and its pins removed.
func startFilterd(t *testing.T, name string, host *testkit.Host, dir string, extra ...string) (*proc, *fapi.Client) {
	t.Helper()
	root := "/sys/fs/bpf/vfsim-" + randHex(4)
	args := append([]string{"--socket", filepath.Join(dir, "filterd.sock"), "--bpffs-root", root, "--state-dir", filepath.Join(dir, "state"), "--log-format", "json"}, extra...)
	p := startProc(t, "filterd "+name, host.Path, "filterd", args...)
	t.Cleanup(func() {
		p.stop(syscall.SIGKILL)
		_ = host.Do(func() error {
			if dp, err := datapath.New(datapath.Options{Root: root}); err == nil {
				names, _ := dp.Pinned()
				for _, n := range names {
					_ = dp.Remove(n)
				}
			}
			return nil
		})
		_ = os.RemoveAll(root)
	})
	return p, fapi.NewClient(filepath.Join(dir, "filterd.sock"))
}

func (h *simHost) startAgent(t *testing.T, server string, enroll bool) {
	t.Helper()
	args := []string{"run", "--manager", server, "--host", h.name, "--dir", filepath.Join(h.dir, "agent"),
		"--filterd", "https://169.254.77.1:9443", "--filterd-cert", filepath.Join(h.dir, "agent-tls", "agent.pem"),
		"--filterd-key", filepath.Join(h.dir, "agent-tls", "agent-key.pem"), "--filterd-ca", filepath.Join(h.dir, "agent-tls", "ca.pem"),
		"--log-format", "json", "--inventory-interval", "1s", "--counters-interval", "0"}
	if h.real {
		// Record-only hosts have no counters; reading 100 vNICs' every
		// 2 s on 45 hosts would only load the machine under measurement.
		args[len(args)-1] = "2s"
	}
	if enroll {
		args = append(args, "--join-token-file", filepath.Join(h.dir, "join.token"), "--manager-ca", filepath.Join(h.dir, "manager-ca.pem"))
	}
	prev := h.agent
	h.agent = startProc(t, "vfagent "+h.name, h.cvm.Path, "vfagent", args...)
	if prev != nil { // keep what the previous process applied
		prev.mu.Lock()
		h.agent.mu.Lock()
		h.agent.applied = append(h.agent.applied, prev.applied...)
		h.agent.mu.Unlock()
		prev.mu.Unlock()
	}
}

// change sets a VM's tags and returns the desired version that carries
// it and when the write was sent.
func change(t *testing.T, admin *mapi.Client, vm string, tags mapi.Tags) (int64, time.Time) {
	t.Helper()
	t0 := time.Now()
	if _, err := admin.SetTags(context.Background(), vm, tags); err != nil {
		t.Fatalf("tag %s %v: %v", vm, tags, err)
	}
	// Writes return once the manager's view applied them: the desired
	// state of any host (all have db VMs) carries the change's version.
	d, err := admin.Desired(context.Background(), "h00")
	if err != nil {
		t.Fatal(err)
	}
	return d.Version, t0
}

func waitApplied(t *testing.T, h *simHost, rev int64, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if at, ok := h.agent.appliedAt(rev); ok {
			return at
		}
		if time.Now().After(deadline) {
			t.Fatalf("host %s did not apply version %d within %v", h.name, rev, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func waitInSync(t *testing.T, admin *mapi.Client, hosts []*simHost, timeout time.Duration) {
	t.Helper()
	want := map[string]int{}
	for _, h := range hosts {
		want[h.name] = len(h.vms)
	}
	waitSynced(t, admin, want, timeout, func(string) string { return "" })
}

// waitSynced waits until each host of want reports its desired state
// realized (every vNIC and every host document) with want[host] vNICs;
// logs gives what to show of a host that does not.
func waitSynced(t *testing.T, admin *mapi.Client, want map[string]int, timeout time.Duration, logs func(host string) string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for _, h := range slices.Sorted(maps.Keys(want)) {
		for {
			st, err := admin.Status(context.Background(), h)
			if err == nil && st.InSync && len(st.VNICs) == want[h] {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("host %s not in sync within %v: %+v %v\n%s", h, timeout, st, err, logs(h))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func waitFile(t *testing.T, path string, p *proc) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if data, err := os.ReadFile(path); err == nil && len(data) > 0 {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited:\n%s", p.name, p.logs())
		default:
		}
	}
	t.Fatalf("%s did not write %s:\n%s", p.name, path, p.logs())
}

func waitFilterd(t *testing.T, h *simHost) {
	t.Helper()
	waitUntilUp(t, h.filterd, func(ctx context.Context) error { _, err := h.fd.Hidden(ctx); return err })
}

// waitUntilUp waits for p to answer probe (30 s), failing with its logs
// if it exits or does not.
func waitUntilUp(t *testing.T, p *proc, probe func(context.Context) error) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if err := probe(context.Background()); err == nil {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited:\n%s", p.name, p.logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not come up:\n%s", p.name, p.logs())
		}
	}
}

// plugHidden links the control VM to the host's hidden bridge: vfcvm0 on
// the bridge, eth1 with 169.254.77.2 in the control VM.
func plugHidden(t *testing.T, h *simHost) {
	t.Helper()
	cvmNS, err := netns.GetFromPath(h.cvm.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer cvmNS.Close()
	hh := h.host.Handle()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vfcvm0"}, PeerName: "eth1", PeerNamespace: netlink.NsFd(cvmNS)}
	if err := hh.LinkAdd(veth); err != nil {
		t.Fatalf("%s: hidden link: %v", h.name, err)
	}
	l, err := hh.LinkByName("vfcvm0")
	if err != nil {
		t.Fatal(err)
	}
	br, err := hh.LinkByName("vfh0")
	if err != nil {
		t.Fatal(err)
	}
	if err := hh.LinkSetMasterByIndex(l, br.Attrs().Index); err != nil {
		t.Fatal(err)
	}
	if err := hh.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	ch := h.cvm.Handle()
	e, err := ch.LinkByName("eth1")
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.AddrAdd(e, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(169, 254, 77, 2), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := ch.LinkSetUp(e); err != nil {
		t.Fatal(err)
	}
}

func setLink(t *testing.T, vm *testkit.VM, dev string, up bool) {
	t.Helper()
	l, err := vm.Handle().LinkByName(dev)
	if err == nil {
		if up {
			err = vm.Handle().LinkSetUp(l)
		} else {
			err = vm.Handle().LinkSetDown(l)
		}
	}
	if err != nil {
		t.Fatalf("set %s of %s up=%v: %v", dev, vm.Label, up, err)
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func canConnect(vm *testkit.VM, addr string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	c, err := vm.DialTCP(ctx, addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// checkTraffic asserts web→db:5432 and other→db:5432 on a real host.
func checkTraffic(t *testing.T, h *simHost, web, other bool) {
	t.Helper()
	pg := net.JoinHostPort(h.db.IPv4.IP.String(), "5432")
	if got := canConnect(h.web, pg); got != web {
		t.Errorf("host %s: web → db:5432 connects=%v, want %v", h.name, got, web)
	}
	if got := canConnect(h.other, pg); got != other {
		t.Errorf("host %s: other → db:5432 connects=%v, want %v", h.name, got, other)
	}
}
