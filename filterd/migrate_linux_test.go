package filterd_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// buildHook builds cmd/vnicfilter-hook into binDir once.
var buildHook = sync.OnceValue(func() error {
	out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, "vnicfilter-hook"), "github.com/vnicfilter/vnicfilter/cmd/vnicfilter-hook").CombinedOutput()
	if err != nil {
		return fmt.Errorf("build vnicfilter-hook: %v\n%s", err, out)
	}
	return nil
})

// migHost is one "hypervisor" of the migration tests: a host namespace
// with its bridge, a filterd with a migration listener on the management
// link, and the libvirt hook installed as libvirt would run it.
type migHost struct {
	host *testkit.Host
	d    *daemon
	ip   string // management address
	tls  string // host CA directory
	hook string // .../hooks/qemu.d/vnicfilter
}

// hookRun is one hook invocation's outcome.
type hookRun struct {
	code           int
	stdout, stderr string
}

// runHook runs the hook the way libvirtd does: `vnicfilter DOMAIN OP SUBOP
// -` with the domain XML on stdin and a clean environment.
func (h *migHost) runHook(t *testing.T, xml string, args ...string) hookRun {
	t.Helper()
	cmd := h.host.Command(context.Background(), h.hook, args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "HOME=/"}
	cmd.Stdin = strings.NewReader(xml)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	r := hookRun{stdout: out.String(), stderr: errb.String()}
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run hook %v: %v", args, err)
	}
	t.Logf("hook %s: exit %d %s", strings.Join(args, " "), r.code, strings.TrimSpace(r.stderr))
	return r
}

// newMigHosts builds two hosts whose bridges are joined by a veth (the
// VM network) and whose filterds reach each other over a second veth
// (the management network, 10.250.0.1 and .2), each trusting the other's
// host CA; migrateState is the destination hook's migrate-state.
func newMigHosts(t *testing.T, migrateState string) (a, b *migHost) {
	t.Helper()
	if err := buildHook(); err != nil {
		t.Fatal(err)
	}
	a, b = &migHost{host: testkit.NewHost(t), ip: "10.250.0.1"}, &migHost{host: testkit.NewHost(t), ip: "10.250.0.2"}
	nsB, err := netns.GetFromPath(b.host.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer nsB.Close()
	for _, l := range []struct {
		name     string
		bridged  bool
		addrA, B string
	}{{"trunk", true, "", ""}, {"mgmt", false, a.ip + "/30", b.ip + "/30"}} {
		veth := &netlink.Veth{LinkAttrs: netlink.NewLinkAttrs(), PeerName: l.name + "b", PeerNamespace: netlink.NsFd(nsB)}
		veth.Name = l.name + "a"
		if err := a.host.Handle().LinkAdd(veth); err != nil {
			t.Fatalf("add %s link: %v", l.name, err)
		}
		for _, side := range []struct {
			h    *testkit.Host
			name string
			addr string
		}{{a.host, l.name + "a", l.addrA}, {b.host, l.name + "b", l.B}} {
			nh := side.h.Handle()
			link, err := nh.LinkByName(side.name)
			if err != nil {
				t.Fatal(err)
			}
			if l.bridged {
				br, err := nh.LinkByName(side.h.Bridge)
				if err != nil {
					t.Fatal(err)
				}
				if err := nh.LinkSetMasterByIndex(link, br.Attrs().Index); err != nil {
					t.Fatal(err)
				}
			} else {
				addr, err := netlink.ParseAddr(side.addr)
				if err != nil {
					t.Fatal(err)
				}
				if err := nh.AddrAdd(link, addr); err != nil {
					t.Fatal(err)
				}
			}
			if err := nh.LinkSetUp(link); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Each host's CA, created before its filterd starts so the other can
	// trust it; the peers file holds both.
	dir := t.TempDir()
	var peers []byte
	for i, h := range []*migHost{a, b} {
		h.tls = filepath.Join(dir, fmt.Sprintf("tls%d", i))
		out, err := exec.Command(filepath.Join(binDir, "filterd"), "issue-cert", "--hidden-tls-dir", h.tls, "--name", "probe", "--out", filepath.Join(dir, fmt.Sprintf("probe%d", i))).CombinedOutput()
		if err != nil {
			t.Fatalf("create host CA: %v\n%s", err, out)
		}
		pem, err := os.ReadFile(filepath.Join(h.tls, "ca.pem"))
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, pem...)
	}
	peersFile := filepath.Join(dir, "peers-ca.pem")
	if err := os.WriteFile(peersFile, peers, 0o644); err != nil {
		t.Fatal(err)
	}
	for i, h := range []*migHost{a, b} {
		other := []*migHost{b, a}[i]
		h.d = newDaemon(t, h.host, "--migrate-listen", h.ip+":9444", "--hidden-tls-dir", h.tls,
			// One peer list for all hosts, this one first: it skips itself.
			"--migrate-peers-ca", peersFile, "--migrate-peers", "https://"+h.ip+":9444,https://"+other.ip+":9444")
		hooks := filepath.Join(dir, fmt.Sprintf("hooks%d", i))
		if err := os.MkdirAll(filepath.Join(hooks, "qemu.d"), 0o755); err != nil {
			t.Fatal(err)
		}
		h.hook = filepath.Join(hooks, "qemu.d", "vnicfilter")
		if err := os.Symlink(filepath.Join(binDir, "vnicfilter-hook"), h.hook); err != nil {
			t.Fatal(err)
		}
		state := "best-effort"
		if h == b {
			state = migrateState
		}
		conf := fmt.Sprintf("socket=%s\nbpffs-root=%s\nmarker-dir=%s\nmigrate-state=%s\ntimeout=20s\n",
			filepath.Join(h.d.dir, "filterd.sock"), h.d.root, filepath.Join(hooks, "markers"), state)
		if err := os.WriteFile(filepath.Join(hooks, "vnicfilter.conf"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return a, b
}

// domainXML is the domain as libvirt passes it to the hook: with the tap
// at start and later (tap ""), without it at prepare and stopped.
func domainXML(name string, mac net.HardwareAddr, tap, policy string) string {
	target := ""
	if tap != "" {
		target = fmt.Sprintf("<target dev='%s'/>", tap)
	}
	return fmt.Sprintf(`<domain type='qemu'>
  <name>%[1]s</name>
  <uuid>6d1c5f0e-3b4a-4c1e-9a55-2f0d7c1e0a01</uuid>
  <metadata>
    <vnicfilter:filters xmlns:vnicfilter="https://vnicfilter.dev/xmlns/domain/1">
      <vnicfilter:interface mac="%[2]s">
        <vnicfilter:filter name="firewall">
          <vnicfilter:param name="policy" value="%[4]s"/>
        </vnicfilter:filter>
      </vnicfilter:interface>
    </vnicfilter:filters>
  </metadata>
  <memory unit='KiB'>131072</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <interface type='bridge'>
      <mac address='%[2]s'/>
      <source bridge='br0'/>
      <model type='virtio'/>
      %[3]s
    </interface>
  </devices>
</domain>
`, name, mac, target, policy)
}

// replugTo gives vm a second interface (down, eth0's MAC) whose host side
// is a new tap on host's bridge: the VM's vNIC on the destination.
func replugTo(t *testing.T, host *testkit.Host, vm *testkit.VM, tap string) {
	t.Helper()
	vmNS, err := netns.GetFromPath(vm.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer vmNS.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.NewLinkAttrs(), PeerName: "eth1", PeerHardwareAddr: vm.MAC, PeerNamespace: netlink.NsFd(vmNS)}
	veth.Name = tap
	nh := host.Handle()
	if err := nh.LinkAdd(veth); err != nil {
		t.Fatalf("add tap %s: %v", tap, err)
	}
	link, err := nh.LinkByName(tap)
	if err != nil {
		t.Fatal(err)
	}
	br, err := nh.LinkByName(host.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	if err := nh.LinkSetMasterByIndex(link, br.Attrs().Index); err != nil {
		t.Fatal(err)
	}
	if err := nh.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
}

// cutover resumes vm on the interface replugTo made: eth0 (and with it the
// source tap) goes, eth1 becomes eth0 with the same MAC and addresses.
func cutover(t *testing.T, vm *testkit.VM, tap string) {
	t.Helper()
	h := vm.Handle()
	old, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkDel(old); err != nil {
		t.Fatal(err)
	}
	eth, err := h.LinkByName("eth1")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetName(eth, "eth0"); err != nil {
		t.Fatal(err)
	}
	for _, a := range []*netlink.Addr{{IPNet: &vm.IPv4}, {IPNet: &vm.IPv6, Flags: unix.IFA_F_NODAD}} {
		if err := h.AddrAdd(eth, a); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.LinkSetUp(eth); err != nil {
		t.Fatal(err)
	}
	vm.TapName = tap
	announce(t, vm)
}

// announce sends what QEMU sends from a migrated guest's NICs as it
// resumes (qemu_announce_self): broadcast RARPs from the guest's MAC, in
// five rounds 50 ms apart and growing (QEMU's defaults), so that the
// bridges learn where the VM is now. Without it the
// destination's bridge keeps the VM's MAC behind the link to the source,
// where it saw the VM's frames before the move.
func announce(t *testing.T, vm *testkit.VM) {
	t.Helper()
	frame := make([]byte, 60)
	copy(frame[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(frame[6:12], vm.MAC)
	frame[12], frame[13] = 0x80, 0x35 // RARP
	copy(frame[14:22], []byte{0, 1, 8, 0, 6, 4, 0, 3})
	copy(frame[22:28], vm.MAC)
	copy(frame[32:38], vm.MAC)
	err := vm.Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrLinklayer{Protocol: 0x3580, Ifindex: l.Attrs().Index, Halen: 6}
		copy(sa.Addr[:], frame[0:6])
		for round := range 5 {
			if err := unix.Sendto(fd, frame, 0, sa); err != nil {
				return err
			}
			time.Sleep(time.Duration(50+100*round) * time.Millisecond)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("announce vm %q: %v", vm.Label, err)
	}
}

// download is a stream from the server to the VM through the firewall.
type download struct {
	got  atomic.Int64
	done chan error
	conn net.Conn
}

// serveZeros makes server send zeros to every client of port until the
// test ends.
func serveZeros(t *testing.T, server *testkit.VM, port int) {
	t.Helper()
	server.ServeTCP(t, port, func(c net.Conn) { _, _ = io.Copy(c, zeroReader{}) })
}

func openStream(t *testing.T, ctx context.Context, vm, server *testkit.VM, port int) *download {
	t.Helper()
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := vm.DialTCP(dctx, net.JoinHostPort(server.IPv4.IP.String(), fmt.Sprint(port)))
	if err != nil {
		t.Fatalf("connect to port %d through the firewall: %v", port, err)
	}
	t.Cleanup(func() { conn.Close() })
	s := &download{done: make(chan error, 1), conn: conn}
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := conn.Read(buf)
			s.got.Add(int64(n))
			if err != nil {
				s.done <- err
				return
			}
		}
	}()
	return s
}

// grows reports whether at least more bytes arrive within d.
func (s *download) grows(more int64, d time.Duration) bool {
	from := s.got.Load()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if s.got.Load()-from >= more {
			return true
		}
	}
	return false
}

func (s *download) ended() error {
	select {
	case err := <-s.done:
		return err
	default:
		return nil
	}
}

// TestMigrateLibvirtFlow runs a live migration's hook phases, in the order
// and with the XML libvirt gives them, on two filterd hosts joined by a
// VM network and a management network, with the real filterd-to-filterd
// mutual-TLS state transfer (docs/migration.md). A VM behind a
// default-deny firewall (it may only open connections to port 5001)
// downloads over a long TCP stream:
//
//   - a migration cancelled on the destination after its state pull leaves
//     the source as it was (chain, state, stream);
//   - with migrate-state=best-effort the stream goes on across the move,
//     and a second stream opened after the destination's pull (only the
//     source's final push at `stopped` carries it) goes on too;
//   - with migrate-state=off the same moves cut both: the test can fail.
func TestMigrateLibvirtFlow(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	for _, state := range []string{"best-effort", "off"} {
		t.Run(state, func(t *testing.T) {
			t.Parallel()
			migrateFlow(t, state)
		})
	}
}

func migrateFlow(t *testing.T, migrateState string) {
	transfer := migrateState != "off"
	src, dst := newMigHosts(t, migrateState)
	vm, server := src.host.AddVM(t, "vm"), src.host.AddVM(t, "server")
	ctx := context.Background()
	policy := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(policy, []byte(movePolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	const dom = "mig01"
	xmlNoTap := domainXML(dom, vm.MAC, "", policy)

	// The domain starts on the source.
	for _, ph := range []struct{ op, xml string }{{"prepare", xmlNoTap}, {"start", domainXML(dom, vm.MAC, vm.TapName, policy)}} {
		if r := src.runHook(t, ph.xml, dom, ph.op, "begin", "-"); r.code != 0 {
			t.Fatalf("source %s: exit %d: %s", ph.op, r.code, r.stderr)
		}
	}
	if v, err := src.d.client.VNIC(ctx, vm.TapName); err != nil || v.Owner != "libvirt:"+dom {
		t.Fatalf("source chain on %s: %+v, %v", vm.TapName, v, err)
	}
	serveZeros(t, server, 5001)
	s1 := openStream(t, ctx, vm, server, 5001)
	if !s1.grows(8<<20, 10*time.Second) {
		t.Fatalf("only %d bytes before the migration", s1.got.Load())
	}

	// A migration cancelled on the destination after its pull: libvirt
	// runs stopped and release there. The source is untouched.
	cancelTap := "vnetc0"
	dummy := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: cancelTap}, PeerName: cancelTap + "p"}
	if err := dst.host.Handle().LinkAdd(dummy); err != nil {
		t.Fatal(err)
	}
	if r := dst.runHook(t, xmlNoTap, dom, "migrate", "begin", "-"); r.code != 0 || r.stdout != xmlNoTap {
		t.Fatalf("destination migrate: exit %d, XML passed through: %v: %s", r.code, r.stdout == xmlNoTap, r.stderr)
	}
	dst.runHook(t, xmlNoTap, dom, "prepare", "begin", "-")
	r := dst.runHook(t, domainXML(dom, vm.MAC, cancelTap, policy), dom, "start", "begin", "-")
	if r.code != 0 || (transfer && !strings.Contains(r.stderr, "moved")) {
		t.Fatalf("destination start (cancelled migration): exit %d: %s", r.code, r.stderr)
	}
	dst.runHook(t, xmlNoTap, dom, "stopped", "end", "-")
	dst.runHook(t, xmlNoTap, dom, "release", "end", "-")
	if err := dst.host.Handle().LinkDel(dummy); err != nil {
		t.Fatal(err)
	}
	if vs, _ := dst.d.client.VNICs(ctx); len(vs) != 0 {
		t.Errorf("destination keeps chains after the cancelled migration: %+v", vs)
	}
	if v, err := src.d.client.VNIC(ctx, vm.TapName); err != nil || v.Owner != "libvirt:"+dom {
		t.Fatalf("source chain after the cancelled migration: %+v, %v", v, err)
	}
	if !s1.grows(8<<20, 5*time.Second) || s1.ended() != nil {
		t.Fatalf("the source's stream stalled or ended after the cancelled migration: %v", s1.ended())
	}

	// The migration. Destination: migrate, prepare, start (chain, then the
	// state pulled from the source), started; the guest still runs on the
	// source.
	newTap := "vnetm0"
	replugTo(t, dst.host, vm, newTap)
	if r := dst.runHook(t, xmlNoTap, dom, "migrate", "begin", "-"); r.code != 0 {
		t.Fatalf("destination migrate: exit %d: %s", r.code, r.stderr)
	}
	dst.runHook(t, xmlNoTap, dom, "prepare", "begin", "-")
	xmlDst := domainXML(dom, vm.MAC, newTap, policy)
	r = dst.runHook(t, xmlDst, dom, "start", "begin", "-")
	switch {
	case r.code != 0:
		t.Fatalf("destination start: exit %d: %s", r.code, r.stderr)
	case transfer && !strings.Contains(r.stderr, "moved"):
		t.Fatalf("destination start moved no state: %s", r.stderr)
	case !transfer && !strings.Contains(r.stderr, "not moved (migrate-state=off)"):
		t.Fatalf("destination start with migrate-state=off: %s", r.stderr)
	}
	dst.runHook(t, xmlDst, dom, "started", "begin", "-")
	// A connection opened after the pull: only the final push carries it.
	s2 := openStream(t, ctx, vm, server, 5001)
	if !s2.grows(1<<20, 10*time.Second) {
		t.Fatal("second stream: no data before the move")
	}

	// The source pauses, the destination resumes (no hook runs), then the
	// source's stopped (final push, detach) and release.
	before1, before2 := s1.got.Load(), s2.got.Load()
	cutover(t, vm, newTap)
	if r := src.runHook(t, xmlNoTap, dom, "stopped", "end", "-"); r.code != 0 {
		t.Fatalf("source stopped: exit %d: %s", r.code, r.stderr)
	}
	src.runHook(t, xmlNoTap, dom, "release", "end", "-")
	if vs, _ := src.d.client.VNICs(ctx); len(vs) != 0 {
		t.Errorf("source keeps chains after the migration: %+v", vs)
	}
	if v, err := dst.d.client.VNIC(ctx, newTap); err != nil || v.Owner != "libvirt:"+dom {
		t.Fatalf("destination chain on %s: %+v, %v", newTap, v, err)
	}

	flowed1, flowed2 := s1.grows(8<<20, 5*time.Second), s2.grows(4<<20, 5*time.Second)
	for i, s := range []*download{s1, s2} {
		if err := s.ended(); err != nil {
			t.Errorf("stream %d ended across the migration: %v", i+1, err)
		}
	}
	t.Logf("migrate-state=%s: stream 1 %d MiB after the move, stream 2 %d MiB", migrateState, (s1.got.Load()-before1)>>20, (s2.got.Load()-before2)>>20)
	if transfer && (!flowed1 || !flowed2) {
		_, out, _ := dst.d.client.Inspect(ctx, newTap, 0, nil)
		v, _ := dst.d.client.VNIC(ctx, newTap)
		t.Logf("destination chain: %+v\n%s", v, out)
		t.Fatalf("with the state moved a stream stalled: stream 1 went on: %v, stream 2: %v", flowed1, flowed2)
	}
	if !transfer && (flowed1 || flowed2) {
		t.Fatalf("without the state a stream went on (1: %v, 2: %v): the test cannot tell the difference", flowed1, flowed2)
	}
}

// TestMigrateState100k moves 100,000 connections from one filterd host to
// the other the way a migration does (the destination's pull over mutual
// TLS: export at the source, transfer, import), five times, and reports
// the median time and the CPU time both filterds spent per move.
func TestMigrateState100k(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	t.Parallel()
	src, dst := newMigHosts(t, "best-effort")
	vm := src.host.AddVM(t, "vm")
	ctx := context.Background()
	chain := bigChain(t)
	chain.Owner = "libvirt:bench"
	if _, err := src.d.client.SetChain(ctx, vm.TapName, chain); err != nil {
		t.Fatal(err)
	}
	const n = 100_000
	fillFlows(t, src.d, vm.TapName, n)
	tap := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vnetb0"}, PeerName: "vnetb0p"}
	if err := dst.host.Handle().LinkAdd(tap); err != nil {
		t.Fatal(err)
	}
	var took, cpu []time.Duration
	size := 0
	for range moveRuns {
		if _, err := dst.d.client.SetChain(ctx, "vnetb0", chain); err != nil {
			t.Fatal(err)
		}
		cpu0 := procCPU(t, src.d.cmd.Process.Pid) + procCPU(t, dst.d.cmd.Process.Pid)
		start := time.Now()
		r, err := dst.d.client.PullState(ctx, "vnetb0", api.PullRequest{Owner: chain.Owner, NoFollow: true})
		if err != nil {
			t.Fatal(err)
		}
		took = append(took, time.Since(start))
		cpu = append(cpu, procCPU(t, src.d.cmd.Process.Pid)+procCPU(t, dst.d.cmd.Process.Pid)-cpu0)
		if r.Import == nil || len(r.Import.Slots) != 1 || r.Import.Slots[0].Entries != n {
			t.Fatalf("pull %+v: want %d flows", r, n)
		}
		size = r.Bytes
		if err := dst.d.client.Detach(ctx, "vnetb0"); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("moved %d flows (%.1f MB bundle) filterd to filterd over mutual TLS: p50 %v over %d runs (all: %v); CPU of both filterds per move p50 %v",
		n, float64(size)/1e6, median(took), moveRuns, took, median(cpu))

	// A migration's two steps: the pull (followed), then 1,000 new flows
	// at the source, then the final push at the pause carries only them.
	if _, err := dst.d.client.SetChain(ctx, "vnetb0", chain); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.d.client.PullState(ctx, "vnetb0", api.PullRequest{Owner: chain.Owner}); err != nil {
		t.Fatal(err)
	}
	const fresh = 1000
	writeFlows(t, src.d, vm.TapName, n, fresh, sdk.KtimeNow()+uint64(5*24*time.Hour))
	start := time.Now()
	h, err := src.d.client.Handoff(ctx, api.HandoffRequest{Owner: chain.Owner})
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Pushed) != 1 || h.Pushed[0].Error != "" || h.Pushed[0].Entries != fresh {
		t.Fatalf("final push %+v: want the %d new flows", h.Pushed, fresh)
	}
	t.Logf("final push after the pull: %d new flows of %d, %d bytes, %v", h.Pushed[0].Entries, n+fresh, h.Pushed[0].Bytes, time.Since(start).Round(time.Millisecond))
}

// TestMigrateListenerRefuses: the migration listener serves only peers
// with a certificate of a trusted host CA, only its two endpoints, and a
// trusted peer can only add state to a chain of the same owner.
func TestMigrateListenerRefuses(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	t.Parallel()
	src, dst := newMigHosts(t, "best-effort")
	vm := src.host.AddVM(t, "vm")
	ctx := context.Background()
	chain := bigChain(t)
	chain.Owner = "libvirt:guarded"
	if _, err := src.d.client.SetChain(ctx, vm.TapName, chain); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	client := func(tlsDir string) *http.Client {
		out := filepath.Join(dir, filepath.Base(tlsDir)+"-cert")
		if b, err := exec.Command(filepath.Join(binDir, "filterd"), "issue-cert", "--hidden-tls-dir", tlsDir, "--name", "peer", "--out", out).CombinedOutput(); err != nil {
			t.Fatalf("issue-cert: %v: %s", err, b)
		}
		cert, err := tls.LoadX509KeyPair(filepath.Join(out, "peer.pem"), filepath.Join(out, "peer-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		pem, _ := os.ReadFile(filepath.Join(src.tls, "ca.pem"))
		roots.AppendCertsFromPEM(pem)
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, MinVersion: tls.VersionTLS13},
			// Dial from the destination host's namespace, over the
			// management link.
			DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
				err = dst.host.Do(func() error {
					var d net.Dialer
					c, err = d.DialContext(ctx, network, addr)
					return err
				})
				return c, err
			},
		}}
	}
	base := "https://" + src.ip + ":9444/v1/migrate/state"
	status := func(c *http.Client, method, u string, body []byte) (int, string, error) {
		req, _ := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}

	// A peer (the destination host's CA) is served.
	peer := client(dst.tls)
	if code, _, err := status(peer, "GET", base+"?owner=libvirt:guarded", nil); err != nil || code != 200 {
		t.Fatalf("trusted peer: %d, %v", code, err)
	}
	// A certificate of a CA nobody trusts: no TLS session at all.
	if code, _, err := status(client(filepath.Join(dir, "stranger-ca")), "GET", base+"?owner=libvirt:guarded", nil); err == nil {
		t.Errorf("a stranger's certificate was served (status %d)", code)
	} else {
		t.Logf("stranger refused: %v", err)
	}
	for _, tc := range []struct {
		what, method, url string
		code              int
		want              string
	}{
		{"unknown owner", "GET", base + "?owner=libvirt:other", 404, api.CodeNotAttached},
		{"state into another owner's chain", "PUT", base + "?owner=libvirt:other&vnic=" + vm.TapName, 400, "belongs to"},
		{"the rest of the API", "GET", "https://" + src.ip + ":9444/v1/vnics", 404, "no such endpoint on the migration listener"},
		{"a chain change", "DELETE", "https://" + src.ip + ":9444/v1/vnics/" + vm.TapName, 404, "no such endpoint"},
	} {
		code, body, err := status(peer, tc.method, tc.url, []byte("x"))
		if err != nil || code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %s, %v; want %d naming %q", tc.what, code, body, err, tc.code, tc.want)
		}
	}
	if v, err := src.d.client.VNIC(ctx, vm.TapName); err != nil || v.Owner != chain.Owner {
		t.Errorf("the source chain after the refused requests: %+v, %v", v, err)
	}
	// A pull into a chain of another owner is refused before any peer is
	// asked.
	other := chain
	other.Owner = "libvirt:mine"
	tap := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vnetr0"}, PeerName: "vnetr0p"}
	if err := dst.host.Handle().LinkAdd(tap); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.d.client.SetChain(ctx, "vnetr0", other); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.d.client.PullState(ctx, "vnetr0", api.PullRequest{Owner: chain.Owner}); !api.IsCode(err, api.CodeBadRequest) {
		t.Errorf("pull into another owner's chain: %v", err)
	}
}
