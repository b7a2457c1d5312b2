package spoofguard

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

const (
	tcActOK   = 0
	tcActShot = 2
)

// configParams turns a Config back into parameters (the loader's input).
func configParams(c *Config) map[string]string {
	var v4, v6 []string
	for _, p := range c.IPv4 {
		v4 = append(v4, p.String())
	}
	for _, p := range c.IPv6 {
		v6 = append(v6, p.String())
	}
	pick := func(b bool) string {
		if b {
			return "allow"
		}
		return "drop"
	}
	return map[string]string{
		ParamMAC:            net.HardwareAddr(c.MAC[:]).String(),
		ParamIPv4:           strings.Join(v4, ","),
		ParamIPv6:           strings.Join(v6, ","),
		ParamAllowLinkLocal: fmt.Sprint(c.AllowLinkLocal),
		ParamVLAN:           pick(c.AllowVLAN),
		ParamOtherEthertype: pick(c.AllowOther),
	}
}

// testMaps stands in for a vNIC's maps: the chain is empty, so a frame the
// filter continues passes (TC_ACT_OK) and a dropped one is shot.
func testMaps(t testing.TB) map[string]*ebpf.Map {
	t.Helper()
	spec, err := spoofguardSpec()
	if err != nil {
		t.Fatal(err)
	}
	maps := testkit.VNICMaps(t, spec)
	return maps
}

func loadTest(t testing.TB, maps map[string]*ebpf.Map, c *Config, pinDir string, adopt bool) *fastPath {
	t.Helper()
	inst := sdk.Instance{VNIC: sdk.VNIC{Name: "test", Ifindex: 1}, Directions: Descriptor.Dirs(), Params: params(t, configParams(c))}
	fp, err := Descriptor.FastPath(sdk.NewFastPathContext(inst, adopt, nil, maps, pinDir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fp.Close() })
	return fp.(*fastPath)
}

func drops(t testing.TB, fp *fastPath) [NumReasons]uint64 {
	t.Helper()
	var out [NumReasons]uint64
	for r := range out {
		p, _, err := sdk.SumPerCPU(fp.objs.SgDrops, uint32(r))
		if err != nil {
			t.Fatal(err)
		}
		out[r] = p
	}
	return out
}

// refusedByTestRun: BPF_PROG_TEST_RUN refuses (EINVAL) an IPv4 or IPv6
// frame shorter than its network header; the model covers those frames.
func refusedByTestRun(f []byte) bool {
	proto := uint16(f[12])<<8 | uint16(f[13])
	return proto == 0x0800 && len(f) < 14+20 || proto == 0x86dd && len(f) < 14+40
}

func run(t testing.TB, fp *fastPath, frame []byte) uint32 {
	t.Helper()
	ret, err := fp.Program().Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		t.Fatalf("run on %x: %v", frame, err)
	}
	return ret
}

// TestFastPathCases runs the hand-written cases through the eBPF program
// (the model's expectations, TestModel, are the same table).
func TestFastPathCases(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	maps := testMaps(t)
	loaded := map[string]*fastPath{}
	for _, c := range handCases() {
		if c.vlan || refusedByTestRun(c.frame) {
			continue // BPF_PROG_TEST_RUN cannot set skb->vlan_present or run these
		}
		cfg := c.config()
		key := fmt.Sprint(configParams(cfg))
		fp := loaded[key]
		if fp == nil {
			fp = loadTest(t, maps, cfg, "", false)
			loaded[key] = fp
		}
		before := drops(t, fp)
		ret := run(t, fp, c.frame)
		after := drops(t, fp)
		want := uint32(tcActOK)
		if c.want.Drop {
			want = tcActShot
		}
		if ret != want {
			t.Errorf("%s: tc action %d, want %d (%+v)", c.name, ret, want, c.want)
		}
		for r := Reason(0); r < NumReasons; r++ {
			d := after[r] - before[r]
			if exp := uint64(0); c.want.Drop && c.want.Reason == r {
				exp = 1
				if d != exp {
					t.Errorf("%s: %v counter moved by %d, want %d", c.name, r, d, exp)
				}
			} else if d != 0 {
				t.Errorf("%s: %v counter moved by %d, want 0", c.name, r, d)
			}
		}
	}
}

// diffFrames is the number of frames of the differential test; make soak
// (VNICFILTER_SOAK=1) runs the long version.
func diffFrames() int {
	if os.Getenv("VNICFILTER_SOAK") != "" {
		return 2_000_000
	}
	return 60_000
}

// TestDifferentialSpoofguard runs the eBPF program (BPF_PROG_TEST_RUN) and
// the Go model on the same random and adversarial frames over random
// configurations, and requires the same verdict and drop reason for each.
func TestDifferentialSpoofguard(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	var sb [8]byte
	_, _ = rand.Read(sb[:])
	seed := uint64(sb[0]) | uint64(sb[1])<<8 | uint64(sb[2])<<16 | uint64(sb[3])<<24 | uint64(sb[4])<<32
	if s := os.Getenv("SPOOFGUARD_SEED"); s != "" {
		fmt.Sscan(s, &seed)
	}
	t.Logf("seed %d (SPOOFGUARD_SEED=%d reproduces)", seed, seed)
	rng := mrand.New(mrand.NewPCG(seed, 7))
	maps := testMaps(t)
	total, perConfig := diffFrames(), 2000
	seen := map[Verdict]int{}
	mismatches, refused := 0, 0
	for done := 0; done < total; {
		cfg := randomConfig(rng)
		fp := loadTest(t, maps, cfg, "", false)
		m := NewModel(cfg)
		g := &gen{rng: rng, cfg: cfg}
		var want [NumReasons]uint64
		for i := 0; i < perConfig && done < total; i, done = i+1, done+1 {
			f := g.frame()
			for refusedByTestRun(f) {
				refused++
				f = g.frame()
			}
			v := m.Decide(f, false)
			seen[v]++
			ret := run(t, fp, f)
			exp := uint32(tcActOK)
			if v.Drop {
				exp = tcActShot
				want[v.Reason]++
				p, _, err := sdk.SumPerCPU(fp.objs.SgDrops, uint32(v.Reason))
				if err != nil {
					t.Fatal(err)
				}
				if p != want[v.Reason] && mismatches < 20 {
					t.Errorf("config %v frame %x: model drops for %v, eBPF counted %d, want %d", configParams(cfg), f, v.Reason, p, want[v.Reason])
					want[v.Reason] = p
					mismatches++
				}
			}
			if ret != exp {
				mismatches++
				if mismatches <= 20 {
					t.Errorf("config %v frame %x: eBPF tc action %d, model %+v", configParams(cfg), f, ret, v)
				}
			}
		}
		if got := drops(t, fp); got != want {
			t.Errorf("config %v: drop counters %v, model %v", configParams(cfg), got, want)
		}
		fp.Close()
	}
	if mismatches > 0 {
		t.Fatalf("%d mismatches in %d frames (seed %d)", mismatches, total, seed)
	}
	if seen[pass] == 0 {
		t.Error("no frame passed")
	}
	for r := Reason(0); r < NumReasons; r++ {
		if seen[drop(r)] == 0 {
			t.Errorf("no frame dropped for %v", r)
		}
	}
	t.Logf("%d frames, verdicts %v (%d short IP frames the kernel's test run refuses were replaced)", total, seen, refused)
}

// TestAdoptKeepsState: a reload with Adopt keeps the counters and makes the
// tries hold exactly the new addresses.
func TestAdoptKeepsState(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	var rb [4]byte
	_, _ = rand.Read(rb[:])
	dir := filepath.Join("/sys/fs/bpf", "vftest-"+hex.EncodeToString(rb[:]))
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	maps := testMaps(t)
	cfg := testConfig()
	fp := loadTest(t, maps, cfg, dir, false)
	own := [6]byte{0x52, 0x54, 0, 0, 0, 5}
	a := netip.MustParseAddr
	f5 := ipv4Frame(own, a("10.0.0.5"), a("10.0.0.9"), 1, make([]byte, 8))
	f7 := ipv4Frame(own, a("10.0.0.7"), a("10.0.0.9"), 1, make([]byte, 8))
	if run(t, fp, f5) != tcActOK || run(t, fp, f7) != tcActShot {
		t.Fatal("first load: wrong verdicts")
	}
	cfg.IPv4 = []netip.Prefix{netip.MustParsePrefix("10.0.0.7/32")}
	fp2 := loadTest(t, maps, cfg, dir, true)
	if run(t, fp2, f5) != tcActShot || run(t, fp2, f7) != tcActOK {
		t.Error("after adoption with new addresses: wrong verdicts")
	}
	if d := drops(t, fp2); d[ReasonIPv4] != 2 {
		t.Errorf("ipv4 drops after adoption %d, want 2 (counters survive)", d[ReasonIPv4])
	}
}

// sendRaw writes frame on the VM's interface ifindex with a packet socket.
func sendRaw(t *testing.T, vm *testkit.VM, ifindex int, frame []byte) {
	t.Helper()
	err := vm.Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifindex, Halen: 6})
	})
	if err != nil {
		t.Fatalf("send raw frame: %v", err)
	}
}

// TestNamespaceSpoofing: spoofguard on a namespace VM's tap through the
// real datapath. Its own MAC and addresses work; a changed IP and a forged
// MAC are blocked and counted by reason.
func TestNamespaceSpoofing(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	host := testkit.NewHost(t)
	a, b := host.AddVM(t, "a"), host.AddVM(t, "b")
	p, err := sdk.ValidateParams(Descriptor.Params, map[string]string{
		"mac": a.MAC.String(), "ipv4": a.IPv4.IP.String(), "ipv6": a.IPv6.IP.String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	chain := a.AttachFilter(t, Descriptor, p.Map())
	fp, v := chain.FastPath, chain.VNIC

	reasons := func() map[string]float64 {
		cs, err := fp.Counters()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, c := range cs {
			if c.Name == "dropped_packets_total" {
				out[c.Labels["reason"]] = c.Value
			}
		}
		return out
	}
	mustPing := func(what string) {
		t.Helper()
		if err := a.Ping(t, b.IPv4.IP, 2); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if err := a.Ping(t, b.IPv6.IP, 2); err != nil {
			t.Fatalf("%s (IPv6): %v", what, err)
		}
	}
	mustPing("own MAC and addresses")

	eth0, err := a.Handle().LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	// The VM moves to another IPv4 address.
	before := reasons()
	newIP := &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 99, 0, 200).To4(), Mask: a.IPv4.Mask}}
	orig := &netlink.Addr{IPNet: &a.IPv4}
	if err := a.Handle().AddrDel(eth0, orig); err != nil {
		t.Fatal(err)
	}
	if err := a.Handle().AddrAdd(eth0, newIP); err != nil {
		t.Fatal(err)
	}
	if err := a.Ping(t, b.IPv4.IP, 2); err == nil {
		t.Error("ping from a changed IPv4 address got through")
	}
	after := reasons()
	t.Logf("changed IP: drops %v -> %v", before, after)
	if after["arp"] <= before["arp"] {
		t.Error("changed IP: its ARP requests were not dropped as arp")
	}
	// With b's MAC known (a static neighbour entry), the VM sends IPv4 from
	// the new address straight away.
	neigh := &netlink.Neigh{LinkIndex: eth0.Attrs().Index, IP: b.IPv4.IP, HardwareAddr: b.MAC, State: netlink.NUD_PERMANENT, Family: netlink.FAMILY_V4}
	if err := a.Handle().NeighSet(neigh); err != nil {
		t.Fatal(err)
	}
	before = after
	if err := a.Ping(t, b.IPv4.IP, 2); err == nil {
		t.Error("ping from a changed IPv4 address (known neighbour) got through")
	}
	after = reasons()
	t.Logf("changed IP, known neighbour: drops %v -> %v", before, after)
	if after["ipv4"] < before["ipv4"]+2 {
		t.Error("changed IP: echo requests were not dropped as ipv4")
	}
	if err := a.Handle().NeighDel(neigh); err != nil {
		t.Fatal(err)
	}
	if err := a.Handle().AddrDel(eth0, newIP); err != nil {
		t.Fatal(err)
	}
	if err := a.Handle().AddrAdd(eth0, orig); err != nil {
		t.Fatal(err)
	}
	mustPing("address restored")

	// The VM forges its source MAC.
	before = reasons()
	if err := a.Handle().LinkSetHardwareAddr(eth0, net.HardwareAddr{0x02, 0x76, 0x66, 0xee, 0xee, 0x01}); err != nil {
		t.Fatal(err)
	}
	if err := a.Ping(t, b.IPv4.IP, 2); err == nil {
		t.Error("ping with a forged MAC got through")
	}
	after = reasons()
	t.Logf("forged MAC: drops %v -> %v", before, after)
	if after["mac"] <= before["mac"] {
		t.Error("forged MAC: no mac drops counted")
	}
	if err := a.Handle().LinkSetHardwareAddr(eth0, a.MAC); err != nil {
		t.Fatal(err)
	}
	// b may have learnt nothing new, but give the bridge a moment anyway.
	time.Sleep(50 * time.Millisecond)
	mustPing("MAC restored")

	// Frames written raw on the VM's eth0 (AF_PACKET), each with the drop
	// reason it must be counted under: a tagged frame (the kernel moves the
	// tag out of band before tc, skb->vlan_present), ARP poisoning of b's
	// address, and an unsolicited NA claiming b's IPv6 address.
	var ownMAC, bMAC [6]byte
	copy(ownMAC[:], a.MAC)
	copy(bMAC[:], b.MAC)
	a4, _ := netip.AddrFromSlice(a.IPv4.IP.To4())
	b4, _ := netip.AddrFromSlice(b.IPv4.IP.To4())
	a6, _ := netip.AddrFromSlice(a.IPv6.IP.To16())
	b6, _ := netip.AddrFromSlice(b.IPv6.IP.To16())
	tagged := ipv4Frame(ownMAC, a4, b4, 1, []byte{8, 0, 0xf7, 0xfe, 0, 1, 0, 0})
	tagged = append(append(append([]byte{}, tagged[:12]...), 0x81, 0x00, 0, 10), tagged[12:]...)
	copy(tagged[0:6], bMAC[:])
	poison := append(eth(ownMAC, 0x0806), arpBody(2, ownMAC, b4, a4)...)
	copy(poison[0:6], bMAC[:])
	fakeNA := ipv6Frame(ownMAC, a6, netip.MustParseAddr("ff02::1"), 58, nd(136, b6, ndOpt(2, ownMAC)))
	copy(fakeNA[0:6], []byte{0x33, 0x33, 0, 0, 0, 1})
	for _, c := range []struct {
		frame  []byte
		reason string
	}{{tagged, "vlan"}, {poison, "arp"}, {fakeNA, "nd"}} {
		before = reasons()
		sendRaw(t, a, eth0.Attrs().Index, c.frame)
		deadline := time.Now().Add(2 * time.Second)
		for reasons()[c.reason] <= before[c.reason] && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if after := reasons(); after[c.reason] <= before[c.reason] {
			t.Errorf("raw frame not dropped as %s: drops %v -> %v", c.reason, before, after)
		}
	}

	// The slot's own counters agree: frames were dropped by slot 0 from-vm.
	st, err := v.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st[sdk.FromVM][0][sdk.StatDrop].Packets == 0 {
		t.Error("slot 0 counted no drops")
	}
}

// FuzzDifferential feeds fuzzed frames to the eBPF program and the model
// (go test -fuzz FuzzDifferential as root); plain go test runs the seeds.
func FuzzDifferential(f *testing.F) {
	for _, c := range handCases() {
		if !c.vlan {
			f.Add(c.frame, c.cfg != nil)
		}
	}
	f.Fuzz(func(t *testing.T, frame []byte, loose bool) {
		testkit.Need(t, testkit.Root, testkit.BPF)
		if len(frame) < 14 || len(frame) > 1500 || refusedByTestRun(frame) {
			return
		}
		cfg := testConfig()
		cfg.AllowVLAN, cfg.AllowOther, cfg.AllowLinkLocal = loose, loose, !loose
		fp := loadFuzz(t, cfg)
		before := drops(t, fp)
		v := NewModel(cfg).Decide(frame, false)
		ret := run(t, fp, frame)
		after := drops(t, fp)
		if (ret == tcActShot) != v.Drop || (v.Drop && after[v.Reason] != before[v.Reason]+1) {
			t.Fatalf("frame %x: eBPF action %d drops %v -> %v, model %+v", frame, ret, before, after, v)
		}
	})
}

// loadFuzz keeps one loaded program per configuration across fuzz calls.
var fuzzLoaded = map[bool]*fastPath{}

func loadFuzz(t *testing.T, cfg *Config) *fastPath {
	if fp := fuzzLoaded[cfg.AllowVLAN]; fp != nil {
		return fp
	}
	spec, err := spoofguardSpec()
	if err != nil {
		t.Fatal(err)
	}
	maps := map[string]*ebpf.Map{}
	for _, name := range []string{sdk.MapChain, sdk.MapSlots, sdk.MapStats} {
		m, err := ebpf.NewMap(spec.Maps[name].Copy())
		if err != nil {
			t.Fatal(err)
		}
		maps[name] = m // kept for the life of the test binary
	}
	inst := sdk.Instance{VNIC: sdk.VNIC{Name: "fuzz", Ifindex: 1}, Directions: Descriptor.Dirs(), Params: params(t, configParams(cfg))}
	fp, err := Descriptor.FastPath(sdk.NewFastPathContext(inst, false, nil, maps, ""))
	if err != nil {
		t.Fatal(err)
	}
	fuzzLoaded[cfg.AllowVLAN] = fp.(*fastPath)
	return fp.(*fastPath)
}
