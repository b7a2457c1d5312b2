package encap

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

type segSpec struct {
	name  string
	vni   int
	group int
}

type vmSpec struct {
	label string
	seg   int // index into segs
	host  int // index into hosts
	mac   string
	ip4   string
	ip6   string
}

// Two segments with overlapping addresses: red1 and blue1 even share a
// MAC, and every IPv4/IPv6 address of blue is also one of red's.
var (
	segs = []segSpec{{"red", 100, 10}, {"blue", 200, 20}}
	vms  = []vmSpec{
		{"red1", 0, 0, "02:00:00:00:00:01", "10.0.0.1", "fd00::1"},
		{"red2", 0, 1, "02:00:00:00:00:02", "10.0.0.2", "fd00::2"},
		{"red3", 0, 2, "02:00:00:00:00:03", "10.0.0.3", "fd00::3"},
		{"red4", 0, 0, "02:00:00:00:00:04", "10.0.0.4", "fd00::4"},
		{"blue1", 1, 0, "02:00:00:00:00:01", "10.0.0.1", "fd00::1"},
		{"blue2", 1, 1, "02:00:00:00:00:b2", "10.0.0.2", "fd00::2"},
		{"blue3", 1, 2, "02:00:00:00:00:b3", "10.0.0.3", "fd00::3"},
	}
)

// underlayMTU is the MTU of every host's uplink.
const underlayMTU = 1500

// guestMTU is what the docs recommend for a VM behind h: 1450 over an
// IPv4 underlay, 1430 over IPv6.
func guestMTU(h *simHost) int {
	if h.IP.Is4() {
		return underlayMTU - OverheadIPv4
	}
	return underlayMTU - OverheadIPv6
}

// writeFIB writes the table placing each VM on hostOf[label].
func writeFIB(t testing.TB, path string, hosts []*simHost, hostOf map[string]int) {
	t.Helper()
	var raw rawFIB
	for _, s := range segs {
		rs := rawSegment{VNI: int64(s.vni)}
		for _, h := range hosts {
			rs.Hosts = append(rs.Hosts, h.IP.String())
		}
		raw.Segments = append(raw.Segments, rs)
	}
	for _, v := range vms {
		raw.Entries = append(raw.Entries, rawEntry{VNI: int64(segs[v.seg].vni), MAC: v.mac, Host: hosts[hostOf[v.label]].IP.String(), IPs: []string{v.ip4, v.ip6}})
	}
	data, err := json.MarshalIndent(raw, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

type labVM struct {
	spec vmSpec
	vm   *testkit.VM
	att  *attached
	cap  *capture
}

func vmParams(s vmSpec, h *simHost) map[string]string {
	return map[string]string{
		ParamVNI: strconv.Itoa(segs[s.seg].vni), ParamGroup: strconv.Itoa(segs[s.seg].group),
		ParamMAC: s.mac, ParamFIB: h.FIB, ParamVXLANDev: vxlanDev, ParamLocalIP: h.IP.String(),
	}
}

func TestOverlayAcrossThreeHosts(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF, testkit.TCX, testkit.Tshark)
	for _, u := range []struct{ name, addr string }{{"ipv4 underlay", "192.0.2.%d"}, {"ipv6 underlay", "2001:db8:1::%d"}} {
		t.Run(u.name, func(t *testing.T) { overlay(t, u.addr) })
	}
}

// overlay runs the acceptance scenario over hosts with underlay addresses
// fmt.Sprintf(addr, 1..3).
func overlay(t *testing.T, addr string) {
	top := t // owns what outlives a subtest

	ul := newUnderlay(t)
	var hosts []*simHost
	for i := 1; i <= 3; i++ {
		hosts = append(hosts, ul.addHost(t, fmt.Sprintf("h%d", i), i, netip.MustParseAddr(fmt.Sprintf(addr, i)), underlayMTU))
	}
	hostOf := map[string]int{}
	for _, v := range vms {
		hostOf[v.label] = v.host
	}
	for _, h := range hosts {
		writeFIB(t, h.FIB, hosts, hostOf)
	}
	ulCap := startCapture(t, ul.Do, "")

	lab := map[string]*labVM{}
	for _, s := range vms {
		h := hosts[s.host]
		// The tap stays a port of the host's bridge, as libvirt leaves
		// it: the filter, attached before the VM gets its identity and
		// before the capture starts, is what keeps the segments apart
		// (frames that reach the tap through the bridge are dropped as
		// foreign).
		v := h.AddVM(t, s.label)
		lv := &labVM{spec: s, vm: v}
		lv.att = attach(t, h, v.TapName, vmParams(s, h))
		mac, _ := net.ParseMAC(s.mac)
		setVMAddrs(t, v.Handle(), "eth0", mac, netip.MustParseAddr(s.ip4), netip.MustParseAddr(s.ip6), guestMTU(h))
		lv.cap = startCapture(t, v.Do, "")
		lab[s.label] = lv
	}

	// On h2, before the chains: which groups arrive at red2's and blue2's
	// taps.
	spies := map[string]*markSpy{}
	for _, l := range []string{"red2", "blue2"} {
		spies[l] = attachMarkSpy(t, hosts[lab[l].spec.host], lab[l].vm.TapIndex)
	}

	t.Run("within a segment across hosts", func(t *testing.T) {
		for _, a := range vms {
			for _, b := range vms {
				if a.label == b.label || a.seg != b.seg {
					continue
				}
				for _, dst := range []string{b.ip4, b.ip6} {
					if err := lab[a.label].vm.Ping(t, net.ParseIP(dst), 3); err != nil {
						t.Errorf("%s -> %s (%s): %v", a.label, b.label, dst, err)
					}
				}
			}
		}
	})

	t.Run("not across segments", func(t *testing.T) {
		// red4's address exists only in red: blue1 asks for it in vain.
		if err := lab["blue1"].vm.Ping(t, net.ParseIP("10.0.0.4"), 2); err == nil {
			t.Error("blue1 reached 10.0.0.4, an address only segment red has")
		}
		// Marked datagrams: unicast to every peer of the segment and a
		// broadcast; plus a frame blue2 forges to red3's MAC.
		for _, a := range vms {
			sendMarked(t, lab[a.label], a)
		}
		forge := append(append(mustMAC("02:00:00:00:00:03"), mustMAC(lab["blue2"].spec.mac)...), 0x88, 0xb5)
		forge = append(forge, []byte("seg=blue; forged to red3's MAC")...)
		if err := lab["blue2"].vm.Do(func() error { return sendRaw("eth0", forge) }); err != nil {
			t.Fatal(err)
		}
		// Each VM gets a unicast datagram from every peer of its segment
		// and their broadcasts.
		for _, a := range vms {
			peers := 0
			for _, b := range vms {
				if b.seg == a.seg && b.label != a.label {
					peers++
				}
			}
			marked := func() int {
				n := 0
				for _, f := range lab[a.label].cap.snapshot() {
					if bytes.Contains(f.data, []byte("seg="+segs[a.seg].name+";")) {
						n++
					}
				}
				return n
			}
			got := marked()
			for start := time.Now(); got < 2*peers && time.Since(start) < 3*time.Second; got = marked() {
				time.Sleep(20 * time.Millisecond)
			}
			if got < 2*peers {
				t.Errorf("%s received %d marked datagrams of its segment, want at least %d", a.label, got, 2*peers)
			}
		}
		// Give a leak as long to show as the datagrams took to arrive.
		time.Sleep(200 * time.Millisecond)
	})

	t.Run("sender's group delivered with the frame", func(t *testing.T) {
		// Frames from the other hosts reach red2 with red's group (10)
		// and blue2 with blue's (20), read from the GBP header by h2's
		// receive program; 0 marks the filter's own ARP/ND replies.
		for l, spy := range spies {
			own, other := uint16(segs[lab[l].spec.seg].group), uint16(segs[1-lab[l].spec.seg].group)
			got := spy.groups(t)
			if !got[own] || got[other] {
				t.Errorf("%s's tap saw groups %v: want %d and never %d", l, got, own, other)
			}
			t.Logf("%s's tap: frames delivered with groups %v", l, got)
		}
	})

	t.Run("GBP on the wire", func(t *testing.T) {
		pcap := filepath.Join(t.TempDir(), "underlay.pcap")
		if err := writePcap(pcap, ulCap.snapshot()); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("tshark", "-r", pcap, "-d", fmt.Sprintf("udp.port==%d,vxlan", vxlanPort), "-V", "-Y", "vxlan").CombinedOutput()
		if err != nil {
			t.Fatalf("tshark: %v\n%s", err, out)
		}
		text := string(out)
		for _, s := range segs {
			vni := regexp.MustCompile(fmt.Sprintf(`VXLAN Network Identifier \(VNI\): %d\b`, s.vni))
			gpid := regexp.MustCompile(fmt.Sprintf(`Group Policy ID: %d\b`, s.group))
			if !vni.MatchString(text) || !gpid.MatchString(text) {
				t.Errorf("tshark shows no VNI %d with Group Policy ID %d", s.vni, s.group)
			}
		}
		ver := "4"
		if hosts[0].IP.Is6() {
			ver = "6"
		}
		outer := regexp.MustCompile(`Internet Protocol Version ` + ver + `, Src: ` + regexp.QuoteMeta(hosts[0].IP.String()) + `, Dst: `)
		if !outer.MatchString(text) {
			t.Errorf("tshark shows no IPv%s underlay packet from %s", ver, hosts[0].IP)
		}
		if hosts[0].IP.Is4() && !strings.Contains(text, "Don't fragment: Set") {
			t.Error("tshark shows no outer IPv4 header with DF set")
		}
		if !strings.Contains(text, "GBP Extension: Defined") {
			t.Error("tshark does not see the GBP flag")
		}
		if i := strings.Index(text, "Virtual eXtensible Local Area Network"); i >= 0 {
			end := min(len(text), i+900)
			t.Logf("tshark -V, first VXLAN header:\n%s", text[i:end])
		}
	})

	t.Run("TCP through the tunnel", func(t *testing.T) {
		bulkTCP(t, lab["red3"], lab["red2"])
	})

	t.Run("TCP from guests with MTU 1500: MSS clamped", func(t *testing.T) {
		a, b := lab["red3"], lab["red2"]
		for _, v := range []*labVM{a, b} {
			l, err := v.vm.Handle().LinkByName("eth0")
			if err != nil {
				t.Fatal(err)
			}
			if err := v.vm.Handle().LinkSetMTU(l, underlayMTU); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = v.vm.Handle().LinkSetMTU(l, guestMTU(hosts[v.spec.host])) }()
		}
		ca, cb := a.att.counter(t, "mss_clamped_total"), b.att.counter(t, "mss_clamped_total")
		bulkTCP(t, a, b)
		// Each end's SYN is lowered as it leaves its VM; when it reaches
		// the other end's to-vm half it already fits.
		if da, db := a.att.counter(t, "mss_clamped_total")-ca, b.att.counter(t, "mss_clamped_total")-cb; da != 1 || db != 1 {
			t.Errorf("mss_clamped_total +%d on %s, +%d on %s; want +1 each (the SYN and the SYN-ACK)", da, a.spec.label, db, b.spec.label)
		}
	})

	t.Run("oversize frames dropped and counted", func(t *testing.T) {
		oversize(t, lab["red4"], hosts[lab["red4"].spec.host], lab["red2"])
	})

	t.Run("frames from a host outside the segment dropped", func(t *testing.T) {
		rogueIP := netip.MustParseAddr(fmt.Sprintf(addr, 99))
		rogue := ul.addHost(top, "rogue", 9, rogueIP, underlayMTU)
		injection(t, hosts[0], hosts[1], rogue, lab)
	})

	t.Run("move a VM to another host", func(t *testing.T) {
		moveVM(t, top, lab, hosts, hostOf)
	})

	t.Run("bad table leaves forwarding as it was", func(t *testing.T) {
		badTables(t, lab["red2"], hosts)
	})

	t.Run("zero frames across segments", func(t *testing.T) {
		macsOf := map[int]map[string]bool{}
		for _, v := range vms {
			if macsOf[v.seg] == nil {
				macsOf[v.seg] = map[string]bool{}
			}
			macsOf[v.seg][v.mac] = true
		}
		total := 0
		for _, v := range vms {
			frames := lab[v.label].cap.snapshot()
			total += len(frames)
			other := segs[1-v.seg].name
			for _, f := range frames {
				if len(f.data) < 14 {
					continue
				}
				src := net.HardwareAddr(f.data[6:12]).String()
				switch {
				case bytes.Contains(f.data, []byte("seg="+other+";")):
					t.Errorf("%s (segment %s) received a frame of segment %s: % x", v.label, segs[v.seg].name, other, f.data)
				case !macsOf[v.seg][src]:
					t.Errorf("%s (segment %s) received a frame from %s, not a MAC of its segment: % x", v.label, segs[v.seg].name, src, f.data[:min(len(f.data), 64)])
				}
				if bytes.Contains(f.data, []byte("forged to red3")) {
					t.Errorf("%s received blue2's forged frame", v.label)
				}
			}
			drops, err := lab[v.label].cap.dropped()
			if err != nil {
				t.Fatal(err)
			}
			if drops != 0 {
				t.Errorf("%s: the capture lost %d frames: no proof for them", v.label, drops)
			}
			t.Logf("%s: %d frames received, all from its segment, none lost by the capture", v.label, len(frames))
		}
		t.Logf("%d frames checked on %d VMs", total, len(vms))
		for _, v := range vms {
			a := lab[v.label].att
			t.Logf("%s: tx_remote %d tx_local %d flood %d (remote copies %d, local %d) arp %d nd %d rx %d drop_foreign %d errors %d",
				v.label, a.counter(t, "tx_remote_total"), a.counter(t, "tx_local_total"), a.counter(t, "tx_flood_total"),
				a.counter(t, "flood_remote_copies_total"), a.counter(t, "flood_local_copies_total"),
				a.counter(t, "arp_replies_total"), a.counter(t, "nd_replies_total"), a.counter(t, "rx_total"),
				a.counter(t, "drop_foreign_total"), a.counter(t, "errors_total"))
		}
	})
}

func mustMAC(s string) []byte {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// sendMarked sends, from a, one datagram to every peer of its segment and
// one broadcast, each saying which segment and VM it comes from.
func sendMarked(t *testing.T, lv *labVM, a vmSpec) {
	t.Helper()
	msg := []byte(fmt.Sprintf("seg=%s; from=%s", segs[a.seg].name, a.label))
	err := lv.vm.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BROADCAST, 1); err != nil {
			return err
		}
		dsts := []string{"10.0.0.255"}
		for _, b := range vms {
			if b.seg == a.seg && b.label != a.label {
				dsts = append(dsts, b.ip4)
			}
		}
		for _, d := range dsts {
			ip := netip.MustParseAddr(d).As4()
			if err := unix.Sendto(fd, msg, 0, &unix.SockaddrInet4{Port: 9999, Addr: ip}); err != nil {
				return fmt.Errorf("send to %s: %w", d, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", a.label, err)
	}
}

// sendRaw sends a whole Ethernet frame out of dev (calling thread's netns).
func sendRaw(dev string, frame []byte) error {
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6})
}

// moveVM moves red1 from h1 to h3 as a live migration would: the port on
// the destination is prepared first, then the VM stops on the source, its
// interface comes up on the destination, and the control plane rewrites
// and reloads every host's table. A probe from red2 (h2) every 5 ms
// measures the outage.
//
// The new port and its filter belong to top: they outlive the subtest.
func moveVM(t, top *testing.T, lab map[string]*labVM, hosts []*simHost, hostOf map[string]int) {
	mover, peer := lab["red1"], lab["red2"]
	from, to := hosts[hostOf["red1"]], hosts[2]
	mac := mustMAC(mover.spec.mac)

	srv, err := mover.vm.ListenUDP("0.0.0.0:7777")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 64)
		for {
			n, addr, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = srv.WriteTo(buf[:n], addr)
		}
	}()
	conn, err := peer.vm.DialUDP(context.Background(), "10.0.0.1:7777")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var mu sync.Mutex
	replies := map[uint64]time.Time{}
	sent := map[uint64]time.Time{}
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			if n == 8 {
				mu.Lock()
				replies[binary.BigEndian.Uint64(buf)] = time.Now()
				mu.Unlock()
			}
		}
	}()
	stop := make(chan struct{})
	probing := make(chan struct{})
	go func() {
		defer close(probing)
		var seq uint64
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			seq++
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], seq)
			mu.Lock()
			sent[seq] = time.Now()
			mu.Unlock()
			_, _ = conn.Write(b[:])
		}
	}()
	defer func() { close(stop); <-probing }()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(replies) }
	for start := time.Now(); count() < 20; time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > 3*time.Second {
			t.Fatalf("probe red2 -> red1 gets no replies before the move")
		}
	}

	// Prepare the destination: a tap on h3 whose VM end (eth1) is
	// red1's new interface, with the filter attached.
	vmHandle := mover.vm.Handle()
	tap := "vnetmove"
	addVeth(top, to, tap, mover.vm, "eth1", mac)
	newAtt := attach(top, to, tap, vmParams(mover.spec, to))

	// Switch.
	t0 := time.Now()
	l, err := from.Handle().LinkByName(mover.vm.TapName)
	if err == nil {
		err = from.Handle().LinkDel(l)
	}
	if err != nil {
		t.Fatalf("stop red1 on %s: %v", from.Label, err)
	}
	mover.att.detach()
	setVMAddrs(t, vmHandle, "eth1", mac, netip.MustParseAddr(mover.spec.ip4), netip.MustParseAddr(mover.spec.ip6), guestMTU(to))
	hostOf["red1"] = 2
	for _, h := range hosts {
		writeFIB(t, h.FIB, hosts, hostOf)
	}
	for _, lv := range lab {
		if lv == mover {
			continue
		}
		if err := lv.att.reload(); err != nil {
			t.Fatalf("reload %s: %v", lv.spec.label, err)
		}
	}
	if err := newAtt.reload(); err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	mover.att = newAtt

	deadline := t0.Add(3 * time.Second)
	var first time.Time
	var firstSeq uint64
	for time.Now().Before(deadline) && first.IsZero() {
		time.Sleep(5 * time.Millisecond)
		mu.Lock()
		for s, at := range replies {
			if sent[s].After(t0) && (first.IsZero() || at.Before(first)) {
				first, firstSeq = at, s
			}
		}
		mu.Unlock()
	}
	if first.IsZero() {
		t.Fatalf("no reply from red1 within 3 s of the move")
	}
	mu.Lock()
	var lastBefore time.Time
	for s, at := range replies {
		if sent[s].Before(t0) && at.After(lastBefore) {
			lastBefore = at
		}
	}
	mu.Unlock()
	outage := first.Sub(t0)
	t.Logf("move red1 h1 -> h3: control plane (stop on h1, addresses, tables written and reloaded on %d instances) %v; first reply %v after the move began (probe %d), %v after the reload; last reply before the move %v before it",
		len(lab), t1.Sub(t0).Round(time.Microsecond), outage.Round(time.Microsecond), firstSeq, first.Sub(t1).Round(time.Microsecond), t0.Sub(lastBefore).Round(time.Microsecond))
	if outage > time.Second {
		t.Errorf("connectivity restored %v after the move began, want within 1 s", outage)
	}
	// Within the segment from everywhere, red3 now on the same host.
	for _, from := range []string{"red2", "red3", "red4"} {
		if err := lab[from].vm.Ping(t, net.ParseIP(mover.spec.ip4), 3); err != nil {
			t.Errorf("after the move: %v", err)
		}
	}
	if err := mover.vm.Ping(t, net.ParseIP("fd00::4"), 3); err != nil {
		t.Errorf("after the move: %v", err)
	}
}

// addVeth creates tap on host h with its peer, named peer and carrying
// mac, inside the VM's namespace; both ends up.
func addVeth(t *testing.T, h *simHost, tap string, vm *testkit.VM, peer string, mac net.HardwareAddr) {
	t.Helper()
	vmns, err := netns.GetFromPath(vm.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer vmns.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.NewLinkAttrs(), PeerName: peer, PeerHardwareAddr: mac, PeerNamespace: netlink.NsFd(vmns)}
	veth.Name = tap
	if err := h.Handle().LinkAdd(veth); err != nil {
		t.Fatalf("add %s on %s: %v", tap, h.Label, err)
	}
	t.Cleanup(func() {
		if l, err := h.Handle().LinkByName(tap); err == nil {
			_ = h.Handle().LinkDel(l)
		}
	})
	for _, e := range []struct {
		h    *netlink.Handle
		name string
	}{{h.Handle(), tap}, {vm.Handle(), peer}} {
		l, err := e.h.LinkByName(e.name)
		if err == nil {
			err = e.h.LinkSetMTU(l, guestMTU(h))
		}
		if err == nil {
			err = e.h.LinkSetUp(l)
		}
		if err != nil {
			t.Fatalf("%s: %v", e.name, err)
		}
	}
	for _, e := range []struct {
		h    *netlink.Handle
		name string
	}{{h.Handle(), tap}, {vm.Handle(), peer}} {
		if err := waitUp(e.h, e.name); err != nil {
			t.Fatalf("%s: %v", e.name, err)
		}
	}
}

// badTables checks that a broken table is refused with its place and that
// the running forwarding state stays as it was.
func badTables(t *testing.T, lv *labVM, hosts []*simHost) {
	h := hosts[lv.spec.host]
	good, err := os.ReadFile(h.FIB)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.WriteFile(h.FIB, good, 0o644) })
	before := dumpTables(t, lv.att.fp)
	base := filepath.Base(h.FIB)
	cases := []struct {
		name, fib string
		want      string
	}{
		{"VNI out of range", `{"segments": [{"vni": 100, "hosts": ["192.0.2.1", "192.0.2.2"]},
  {"vni": 16777216, "hosts": ["192.0.2.1"]}]}`, `:2:11: segments[1].vni: VNI 16777216 out of range 1-16777215`},
		{"unknown host", `{"segments": [{"vni": 100, "hosts": ["192.0.2.1", "192.0.2.2"]}],
 "entries": [{"vni": 100, "mac": "02:00:00:00:00:09", "host": "192.0.2.9"}]}`, `:2:63: entries[0].host: unknown host 192.0.2.9: not a member of segment 100 (hosts: 192.0.2.1, 192.0.2.2)`},
		{"conflicting entries", `{"segments": [{"vni": 100, "hosts": ["192.0.2.1", "192.0.2.2"]}],
 "entries": [{"vni": 100, "mac": "02:00:00:00:00:01", "host": "192.0.2.1"},
             {"vni": 100, "mac": "02:00:00:00:00:01", "host": "192.0.2.2"}]}`, `:3:34: entries[1].mac: conflicting entries: 02:00:00:00:00:01 in segment 100 is also placed by entries[0].mac (line 2:34)`},
	}
	for _, c := range cases {
		if err := os.WriteFile(h.FIB, []byte(c.fib), 0o644); err != nil {
			t.Fatal(err)
		}
		err := lv.att.reload()
		if err == nil {
			t.Errorf("%s: reload accepted the table", c.name)
			continue
		}
		if !strings.Contains(err.Error(), base+c.want) {
			t.Errorf("%s: error\n  %v\nwant it to contain\n  %s%s", c.name, err, base, c.want)
		} else {
			t.Logf("%s: %v", c.name, err)
		}
		if after := dumpTables(t, lv.att.fp); after != before {
			t.Errorf("%s: the live table changed:\nbefore %s\nafter  %s", c.name, before, after)
		}
	}
	for _, ip := range []string{"10.0.0.1", "10.0.0.3", "fd00::4"} {
		if err := lv.vm.Ping(t, net.ParseIP(ip), 3); err != nil {
			t.Errorf("after the refused tables: %v", err)
		}
	}
}

// dumpTables renders the live generation of an instance's maps.
func dumpTables(t *testing.T, f *fastPath) string {
	t.Helper()
	var cfg encapEncapCfg
	if err := f.objs.EncapConfig.Lookup(uint32(0), &cfg); err != nil {
		t.Fatal(err)
	}
	var lines []string
	var fk encapEncapFibKey
	var fv encapEncapHost
	it := f.objs.EncapFib.Iterate()
	for it.Next(&fk, &fv) {
		if fk.Gen == cfg.Gen {
			lines = append(lines, fmt.Sprintf("fib %x -> %v", fk.Mac, fv))
		}
	}
	var nk encapEncapNeighKey
	var nv encapEncapNeighEntry
	it = f.objs.EncapNeigh.Iterate()
	for it.Next(&nk, &nv) {
		if nk.Gen == cfg.Gen {
			lines = append(lines, fmt.Sprintf("neigh %d %x -> %x", nk.Family, nk.Ip, nv.Mac))
		}
	}
	var m encapEncapMemberList
	if err := f.objs.EncapMembers.Lookup(cfg.Gen, &m); err != nil {
		t.Fatal(err)
	}
	lines = append(lines, fmt.Sprintf("members %v", m.Hosts[:m.N]))
	slices.Sort(lines)
	return fmt.Sprintf("gen %d vxlan %d %s", cfg.Gen, cfg.VxlanIfindex, strings.Join(lines, "; "))
}

// bulkTCP sends 64 MiB from a to b: large (GSO) frames from the guest
// cross the tunnel; none may be taken for oversize.
func bulkTCP(t *testing.T, a, b *labVM) {
	const size = 64 << 20
	ln, err := b.vm.ListenTCP(b.spec.ip4 + ":5001")
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
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	before := a.att.counter(t, "drop_oversize_total")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := a.vm.DialTCP(ctx, b.spec.ip4+":5001")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	buf := make([]byte, 1<<20)
	for sent := 0; sent < size; sent += len(buf) {
		if _, err := c.Write(buf); err != nil {
			t.Fatalf("write after %d bytes: %v", sent, err)
		}
	}
	c.Close()
	n := <-got
	elapsed := time.Since(start)
	if n != size {
		t.Fatalf("%s received %d bytes of %d", b.spec.label, n, size)
	}
	if d := a.att.counter(t, "drop_oversize_total") - before; d != 0 {
		t.Errorf("%d frames of the TCP stream dropped as oversize", d)
	}
	t.Logf("TCP %s -> %s across hosts: %d MiB in %v (%.2f Gbit/s; functional figure on a shared machine, not a benchmark)",
		a.spec.label, b.spec.label, size>>20, elapsed.Round(time.Millisecond), float64(size)*8/elapsed.Seconds()/1e9)
}

// oversize raises a VM's MTU above what the underlay carries and sends a
// datagram that fills it: dropped at the tap and counted, never
// fragmented, never seen by the receiver.
func oversize(t *testing.T, a *labVM, h *simHost, b *labVM) {
	l, err := a.vm.Handle().LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.vm.Handle().LinkSetMTU(l, underlayMTU); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = a.vm.Handle().LinkSetMTU(l, guestMTU(h)) }()
	before := a.att.counter(t, "drop_oversize_total")
	before0 := map[string]uint64{"rx": b.att.counter(t, "rx_total")}
	for _, n := range []string{"tx_remote_total", "tx_flood_total", "drop_oversize_total", "errors_total"} {
		before0[n] = a.att.counter(t, n)
	}
	fits := bytes.Repeat([]byte("o"), guestMTU(h)-28)
	big := bytes.Repeat([]byte("O"), underlayMTU-28)
	err = a.vm.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		to := &unix.SockaddrInet4{Port: 9998, Addr: netip.MustParseAddr(b.spec.ip4).As4()}
		if err := unix.Sendto(fd, fits, 0, to); err != nil {
			return err
		}
		return unix.Sendto(fd, big, 0, to)
	})
	if err != nil {
		t.Fatal(err)
	}
	// Wait for the datagram that fits: the one that does not was sent
	// before it.
	var sawFit bool
	for start := time.Now(); !sawFit && time.Since(start) < 3*time.Second; time.Sleep(20 * time.Millisecond) {
		for _, f := range b.cap.snapshot() {
			if bytes.Contains(f.data, fits[:64]) && f.length == 14+len(fits)+28 {
				sawFit = true
			}
		}
	}
	if d := a.att.counter(t, "drop_oversize_total") - before; d != 1 {
		t.Errorf("drop_oversize_total +%d, want +1", d)
	}
	for _, f := range b.cap.snapshot() {
		if bytes.Contains(f.data, big[:64]) {
			t.Errorf("%s received a part of the oversize datagram (%d bytes)", b.spec.label, f.length)
		}
	}
	if !sawFit {
		var sizes []int
		for _, f := range b.cap.snapshot() {
			sizes = append(sizes, f.length)
		}
		t.Errorf("%s did not receive the datagram that fits the guest MTU; sender: %d remote, %d flooded, %d oversize, %d errors; receiver: %d delivered; frames seen by the receiver: %v",
			b.spec.label, a.att.counter(t, "tx_remote_total")-before0["tx_remote_total"], a.att.counter(t, "tx_flood_total")-before0["tx_flood_total"],
			a.att.counter(t, "drop_oversize_total")-before0["drop_oversize_total"], a.att.counter(t, "errors_total")-before0["errors_total"],
			b.att.counter(t, "rx_total")-before0["rx"], sizes[max(0, len(sizes)-10):])
	}
}

// vxlanGBP is a VXLAN-GBP packet (UDP payload) carrying frame in segment
// vni with group.
func vxlanGBP(vni uint32, group uint16, frame []byte) []byte {
	h := []byte{0x88, 0, byte(group >> 8), byte(group), byte(vni >> 16), byte(vni >> 8), byte(vni), 0}
	return append(h, frame...)
}

// injection sends a broadcast of segment red straight to h1's VXLAN port,
// once from h2 (a member: delivered to red's VMs on h1, and only to them)
// and once from rogue (no member of any segment: dropped and counted).
func injection(t *testing.T, h1, h2, rogue *simHost, lab map[string]*labVM) {
	send := func(from *simHost, who string) {
		inner := append(append(append([]byte{}, broadcast[:]...), mustMAC(lab["red2"].spec.mac)...), 0x88, 0xb5)
		inner = append(inner, []byte("seg=red; injected from "+who)...)
		pkt := vxlanGBP(uint32(segs[0].vni), uint16(segs[0].group), inner)
		err := from.Do(func() error {
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(h1.IP, vxlanPort)))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write(pkt)
			return err
		})
		if err != nil {
			t.Fatalf("send from %s: %v", who, err)
		}
	}
	rxCounters := func() map[string]uint64 {
		var m map[string]uint64
		err := h1.Do(func() error {
			d, err := AttachDevice(vxlanDev, DeviceOptions{})
			if err != nil {
				return err
			}
			defer d.Close()
			m, err = d.Counters()
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	seen := func(label, marker string) bool {
		for _, f := range lab[label].cap.snapshot() {
			if bytes.Contains(f.data, []byte(marker)) {
				return true
			}
		}
		return false
	}

	before := rxCounters()
	send(h2, "h2")
	for start := time.Now(); !seen("red4", "injected from h2") && time.Since(start) < 3*time.Second; {
		time.Sleep(20 * time.Millisecond)
	}
	if !seen("red4", "injected from h2") {
		t.Fatalf("a frame of segment red sent by member h2 did not reach red4 on h1 (receive counters %v)", rxCounters())
	}
	send(rogue, "rogue")
	var after map[string]uint64
	for start := time.Now(); time.Since(start) < 3*time.Second; time.Sleep(20 * time.Millisecond) {
		if after = rxCounters(); after["rx_not_member_total"] > before["rx_not_member_total"] {
			break
		}
	}
	if d := after["rx_not_member_total"] - before["rx_not_member_total"]; d != 1 {
		t.Errorf("rx_not_member_total +%d, want +1", d)
	}
	time.Sleep(100 * time.Millisecond)
	for label := range lab {
		if seen(label, "injected from rogue") {
			t.Errorf("%s received the frame injected by a host outside the segment", label)
		}
		if lab[label].spec.seg != 0 && seen(label, "injected from h2") {
			t.Errorf("%s (segment blue) received the frame of segment red", label)
		}
	}
	var accepts []netip.Addr
	if err := h1.Do(func() error {
		d, err := AttachDevice(vxlanDev, DeviceOptions{})
		if err != nil {
			return err
		}
		defer d.Close()
		accepts, err = d.Accepts(uint32(segs[0].vni))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("h1 accepts segment %d from %v; receive counters %v", segs[0].vni, accepts, after)
}
