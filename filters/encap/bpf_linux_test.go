package encap

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	mrand "math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

const (
	tcActOK       = 0
	tcActShot     = 2
	tcActStolen   = 4
	tcActRedirect = 7
)

var (
	ownMAC  = [6]byte{2, 0, 0, 0, 0, 1}
	peerMAC = [6]byte{2, 0, 0, 0, 0, 2} // on the other host
	nearMAC = [6]byte{2, 0, 0, 0, 0, 4} // a local vNIC of the segment
	ownIP   = netip.MustParseAddr("10.0.0.1")
	peerIP  = netip.MustParseAddr("10.0.0.2")
	ownIP6  = netip.MustParseAddr("fd00::1")
	peerIP6 = netip.MustParseAddr("fd00::2")
)

const unitFIB = `{
  "segments": [{"vni": 100, "hosts": ["192.0.2.1", "192.0.2.2"]},
               {"vni": 200, "hosts": ["192.0.2.1", "192.0.2.2"]}],
  "entries": [
    {"vni": 100, "mac": "02:00:00:00:00:01", "host": "192.0.2.1", "ips": ["10.0.0.1", "fd00::1"]},
    {"vni": 100, "mac": "02:00:00:00:00:02", "host": "192.0.2.2", "ips": ["10.0.0.2", "fd00::2"]},
    {"vni": 100, "mac": "02:00:00:00:00:04", "host": "192.0.2.1", "ips": ["10.0.0.4"]},
    {"vni": 200, "mac": "02:00:00:00:00:02", "host": "192.0.2.2", "ips": ["10.0.0.3"]}
  ]
}`

// unitInstance loads one instance (VNI 100, group 10, MAC ownMAC) against
// stand-in vNIC maps, in a namespace holding a VXLAN device, with a local
// vNIC of the segment (nearMAC) registered on the host.
func unitInstance(t *testing.T) (*fastPath, *testkit.Host) {
	t.Helper()
	h := testkit.NewHost(t)
	hl := h.Handle()
	vx := &netlink.Vxlan{LinkAttrs: netlink.NewLinkAttrs(), FlowBased: true, GBP: true, Port: vxlanPort}
	vx.Name = vxlanDev
	if err := hl.LinkAdd(vx); err != nil {
		t.Fatal(err)
	}
	if l, err := hl.LinkByName(vxlanDev); err != nil || hl.LinkSetUp(l) != nil {
		t.Fatalf("%s up: %v", vxlanDev, err)
	}
	t.Cleanup(func() { _ = h.Do(func() error { return DetachDevice(vxlanDev, DeviceOptions{}) }) })
	near := h.AddVM(t, "near")
	fib := filepath.Join(t.TempDir(), "fib.json")
	if err := os.WriteFile(fib, []byte(unitFIB), 0o644); err != nil {
		t.Fatal(err)
	}
	spec, err := encapSpec()
	if err != nil {
		t.Fatal(err)
	}
	raw := map[string]string{ParamVNI: "100", ParamGroup: "10", ParamMAC: "02:00:00:00:00:01", ParamFIB: fib, ParamVXLANDev: vxlanDev, ParamLocalIP: "192.0.2.1"}
	p, err := sdk.ValidateParams(Descriptor.Params, raw)
	if err != nil {
		t.Fatal(err)
	}
	maps := testkit.VNICMaps(t, spec)
	fp := loadInstance(t, h, p, maps, "", false)
	if err := h.Do(func() error {
		return fp.dev.register(Port{VNI: 100, MAC: nearMAC, Ifindex: near.TapIndex, Group: 10, owner: 42})
	}); err != nil {
		t.Fatal(err)
	}
	return fp, h
}

// loadInstance loads an instance for vNIC lo (ifindex 1) in h, closed at
// cleanup.
func loadInstance(t *testing.T, h *testkit.Host, p sdk.Params, maps map[string]*ebpf.Map, pinDir string, adopt bool) *fastPath {
	t.Helper()
	var fp sdk.FastPath
	err := h.Do(func() (err error) {
		inst := sdk.Instance{VNIC: sdk.VNIC{Name: "lo", Ifindex: 1}, Directions: sdk.DirBoth, Params: p}
		fp, err = Descriptor.FastPath(sdk.NewFastPathContext(inst, adopt, nil, maps, pinDir))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fp.Close() })
	return fp.(*fastPath)
}

// skb is the part of struct __sk_buff the tests set and read.
type skb struct {
	mark    uint32
	cb      [5]uint32
	gsoSegs uint32
	gsoSize uint32
}

const sizeofSkBuff = 192

func (s skb) bytes() []byte {
	b := make([]byte, sizeofSkBuff)
	binary.NativeEndian.PutUint32(b[8:], s.mark)
	for i, v := range s.cb {
		binary.NativeEndian.PutUint32(b[48+4*i:], v)
	}
	binary.NativeEndian.PutUint32(b[164:], s.gsoSegs)
	binary.NativeEndian.PutUint32(b[176:], s.gsoSize)
	return b
}

func parseSkb(b []byte) skb {
	var s skb
	s.mark = binary.NativeEndian.Uint32(b[8:])
	for i := range s.cb {
		s.cb[i] = binary.NativeEndian.Uint32(b[48+4*i:])
	}
	return s
}

// run passes frame through the instance: the tc action, the frame as left
// and the __sk_buff after the run.
func run(t *testing.T, h *testkit.Host, fp *fastPath, frame []byte, in skb) (uint32, []byte, skb) {
	t.Helper()
	out := make([]byte, len(frame)+256)
	ctxOut := make([]byte, sizeofSkBuff)
	opts := &ebpf.RunOptions{Data: frame, DataOut: out, Context: in.bytes(), ContextOut: ctxOut}
	var ret uint32
	// Clones go to the namespace's devices: run there.
	err := h.Do(func() (err error) {
		ret, err = fp.Program().Run(opts)
		return err
	})
	if err != nil {
		t.Fatalf("test run of % x...: %v", frame[:min(len(frame), 64)], err)
	}
	return ret, opts.DataOut, parseSkb(ctxOut)
}

func stats(t *testing.T, fp *fastPath) map[string]uint64 {
	t.Helper()
	cs, err := fp.Counters()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]uint64{}
	for _, c := range cs {
		m[c.Name] = uint64(c.Value)
	}
	return m
}

const toVM = 1 << 8 // cb[0] = dir << 8 | slot

func TestFastPath(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	fp, h := unitInstance(t)
	local := [6]byte{0x02, 0xee, 0, 0, 0, 9}
	max := 1500 - 36 // largest frame whose IPv4 encapsulation fits 1500

	ns := neighborSolicitation(ownMAC, ownIP6, peerIP6)
	cases := []struct {
		name    string
		frame   []byte
		ctx     skb
		ret     uint32
		counter string
		out     []byte // the frame as the program leaves it, if checked
		mark    uint32 // skb->mark afterwards, if non-zero
	}{
		{name: "ARP request for a peer answered in place", frame: arpRequest(ownMAC, ownIP, peerIP), ret: tcActRedirect, counter: "arp_replies_total",
			out: arpReply(arpRequest(ownMAC, ownIP, peerIP), peerMAC), mark: 0x7e6c0000},
		{name: "ARP for an address of another segment flooded", frame: arpRequest(ownMAC, ownIP, netip.MustParseAddr("10.0.0.3")), ret: tcActStolen, counter: "tx_flood_total"},
		{name: "ARP probe for the VM's own address not answered", frame: arpRequest(ownMAC, netip.IPv4Unspecified(), ownIP), ret: tcActStolen, counter: "tx_flood_total"},
		{name: "gratuitous ARP not answered", frame: arpRequest(ownMAC, peerIP, peerIP), ret: tcActStolen, counter: "tx_flood_total"},
		{name: "neighbour solicitation answered in place", frame: ns, ret: tcActRedirect, counter: "nd_replies_total",
			out: neighborAdvertisement(ns, peerIP6, peerMAC), mark: 0x7e6c0000},
		{name: "duplicate address detection not answered", frame: neighborSolicitation(ownMAC, netip.IPv6Unspecified(), peerIP6), ret: tcActStolen, counter: "tx_flood_total"},
		{name: "foreign source MAC", frame: arpRequest(local, ownIP, peerIP), ret: tcActShot, counter: "drop_src_mac_total"},
		{name: "unicast to a peer on another host tunnelled", frame: ipv4Frame(peerMAC, ownMAC, 17, 100), ret: tcActRedirect, counter: "tx_remote_total"},
		{name: "unicast to a local vNIC of the segment", frame: ipv4Frame(nearMAC, ownMAC, 17, 100), ret: tcActRedirect, counter: "tx_local_total", mark: 0x7e6c0000 | 10},
		{name: "unicast to an unknown MAC flooded", frame: ipv4Frame(local, ownMAC, 17, 100), ret: tcActStolen, counter: "tx_flood_total"},
		{name: "unicast to the VM itself", frame: ipv4Frame(ownMAC, ownMAC, 17, 100), ret: tcActShot, counter: "drop_self_total"},
		{name: "largest frame the underlay carries", frame: ipv4Frame(peerMAC, ownMAC, 17, max-14), ret: tcActRedirect, counter: "tx_remote_total"},
		{name: "one byte more: dropped, not fragmented", frame: ipv4Frame(peerMAC, ownMAC, 17, max-13), ret: tcActShot, counter: "drop_oversize_total"},
		{name: "GSO frame whose segments fit", frame: ipv4Frame(peerMAC, ownMAC, 6, 3000), ctx: skb{gsoSegs: 3, gsoSize: uint32(max - 14 - 20 - 32)}, ret: tcActRedirect, counter: "tx_remote_total"},
		{name: "GSO frame whose segments do not fit", frame: ipv4Frame(peerMAC, ownMAC, 6, 3000), ctx: skb{gsoSegs: 3, gsoSize: uint32(max - 14 - 20 - 32 + 1)}, ret: tcActShot, counter: "drop_oversize_total"},
		{name: "to-vm frame from outside the segment", frame: ipv4Frame(ownMAC, peerMAC, 17, 100), ctx: skb{cb: [5]uint32{toVM}}, ret: tcActShot, counter: "drop_foreign_total"},
		{name: "to-vm frame the segment delivered", frame: ipv4Frame(ownMAC, peerMAC, 17, 100), ctx: skb{cb: [5]uint32{toVM}, mark: 0x7e6c0000 | 20}, ret: tcActOK, counter: "rx_total", mark: 0x7e6c0000 | 20},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := stats(t, fp)
			ret, out, after := run(t, h, fp, c.frame, c.ctx)
			if ret != c.ret {
				t.Errorf("tc action %d, want %d", ret, c.ret)
			}
			got := stats(t, fp)
			if got[c.counter] != before[c.counter]+1 {
				t.Errorf("%s %d -> %d, want +1 (all: %v)", c.counter, before[c.counter], got[c.counter], got)
			}
			if c.out != nil && !bytes.Equal(out, c.out) {
				t.Errorf("frame\n got  % x\n want % x", out, c.out)
			}
			if c.mark != 0 && after.mark != c.mark {
				t.Errorf("mark %#x, want %#x", after.mark, c.mark)
			}
		})
	}
	t.Run("sender's group in the chain metadata", func(t *testing.T) {
		_, _, after := run(t, h, fp, ipv4Frame(ownMAC, peerMAC, 17, 100), skb{cb: [5]uint32{toVM}, mark: 0x7e6c0000 | 20})
		if after.cb[3] != 20 {
			t.Errorf("vf_meta.identity (cb[3]) = %d, want the GBP group 20", after.cb[3])
		}
	})
}

// TestRegistry covers the host's registry of local vNICs: a MAC of a
// segment belongs to one live vNIC, a stale entry is taken over, and an
// instance's Close removes exactly its own entries.
func TestRegistry(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	fp, h := unitInstance(t)
	a, b := h.AddVM(t, "a"), h.AddVM(t, "b")
	dev := fp.dev
	err := h.Do(func() error {
		if err := dev.register(Port{VNI: 300, MAC: peerMAC, Ifindex: a.TapIndex, owner: 7}); err != nil {
			return err
		}
		// Same segment and MAC on another live vNIC: refused.
		err := dev.register(Port{VNI: 300, MAC: peerMAC, Ifindex: b.TapIndex, owner: 8})
		if err == nil || !bytesContains(err.Error(), "02:00:00:00:00:02 in segment 300 is on vNIC "+a.TapName) {
			t.Errorf("conflict: got %v", err)
		}
		// Same MAC in another segment: fine.
		if err := dev.register(Port{VNI: 301, MAC: peerMAC, Ifindex: b.TapIndex, owner: 8}); err != nil {
			return err
		}
		// A stale entry (its vNIC is gone) is taken over.
		if err := dev.register(Port{VNI: 302, MAC: peerMAC, Ifindex: 999999, owner: 9}); err != nil {
			return err
		}
		return dev.register(Port{VNI: 302, MAC: peerMAC, Ifindex: b.TapIndex, owner: 8})
	})
	if err != nil {
		t.Fatal(err)
	}
	ports, err := dev.Ports()
	if err != nil {
		t.Fatal(err)
	}
	if got := FloodList(ports, 300); len(got) != 1 || got[0] != a.TapIndex {
		t.Errorf("flood list of 300: %v", got)
	}
	var fl rxEncapFloodList
	if err := dev.flood.Lookup(uint32(301), &fl); err != nil || fl.N != 1 || int(fl.Ifindex[0]) != b.TapIndex {
		t.Errorf("flood map of 301: %+v %v", fl, err)
	}
	A, B, C := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11"), netip.MustParseAddr("2001:db8::12")
	if err := dev.setMembers(500, 7, []netip.Addr{A, B}); err != nil {
		t.Fatal(err)
	}
	if err := dev.setMembers(500, 8, []netip.Addr{B, C}); err != nil {
		t.Fatal(err)
	}
	if got, err := dev.Accepts(500); err != nil || !slices.Equal(got, []netip.Addr{A, B, C}) {
		t.Errorf("segment 500 accepted from %v (%v), want the union of both lists", got, err)
	}
	if err := dev.unregister(8); err != nil {
		t.Fatal(err)
	}
	if got, err := dev.Accepts(500); err != nil || !slices.Equal(got, []netip.Addr{A, B}) {
		t.Errorf("after owner 8 left, segment 500 accepted from %v (%v), want owner 7's list", got, err)
	}
	ports, _ = dev.Ports()
	for _, p := range ports {
		if p.owner == 8 {
			t.Errorf("entry of owner 8 left: %+v", p)
		}
	}
	if err := dev.flood.Lookup(uint32(301), &fl); err == nil {
		t.Errorf("segment 301 keeps a flood list after its last vNIC left: %+v", fl)
	}
}

func bytesContains(s, sub string) bool { return bytes.Contains([]byte(s), []byte(sub)) }

// TestAdoptAndReplace loads a second instance over the first one's pinned
// maps, as filterd does after a restart (and, with fresh maps, when it
// replaces a chain): the second works, and closing the first does not take
// the vNIC out of the host's registry.
func TestAdoptAndReplace(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	first, h := unitInstance(t)
	p := first.rawParamsForTest(t)
	spec, err := encapSpec()
	if err != nil {
		t.Fatal(err)
	}
	maps := testkit.VNICMaps(t, spec)
	pinDir := filepath.Join("/sys/fs/bpf", "vftest-encap-"+strconv.Itoa(os.Getpid())+"-"+strconv.FormatUint(first.owner, 16))
	t.Cleanup(func() { _ = os.RemoveAll(pinDir) })
	a := loadInstance(t, h, p, maps, pinDir, false)
	b := loadInstance(t, h, p, maps, pinDir, true) // filterd restarted
	a.Close()
	first.Close()
	req := arpRequest(ownMAC, ownIP, peerIP)
	if ret, out, _ := run(t, h, b, req, skb{}); ret != tcActRedirect || !bytes.Equal(out, arpReply(req, peerMAC)) {
		t.Errorf("adopted instance: action %d, frame % x", ret, out)
	}
	ports, err := b.dev.Ports()
	if err != nil {
		t.Fatal(err)
	}
	if got := FloodList(ports, 100); len(got) == 0 || got[0] != 1 {
		t.Errorf("after the older instances closed, segment 100's local vNICs are %v, want lo (1) still there", got)
	}
}

// rawParamsForTest returns the validated parameters the instance was
// loaded with.
func (f *fastPath) rawParamsForTest(t *testing.T) sdk.Params {
	t.Helper()
	raw := map[string]string{
		ParamVNI: strconv.Itoa(int(f.params.vni)), ParamGroup: strconv.Itoa(int(f.params.group)),
		ParamMAC: macString(f.params.mac), ParamFIB: f.params.fib, ParamVXLANDev: f.params.dev,
		ParamLocalIP: f.params.local.String(),
	}
	p, err := sdk.ValidateParams(Descriptor.Params, raw)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestInspect(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	fp, _ := unitInstance(t)
	if _, err := fp.Inspect(context.Background(), map[string]string{"limit": "1"}); err == nil {
		t.Error("an unknown query parameter was accepted")
	}
	v, err := fp.Inspect(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	got := string(out)
	for _, want := range []string{
		`"vni":100`, `"group":10`, `"remote":[{"mac":"02:00:00:00:00:02","host":"192.0.2.2"}]`, `"members":["192.0.2.2"]`,
		`{"ip":"10.0.0.2","mac":"02:00:00:00:00:02"}`, `{"ip":"fd00::1","mac":"02:00:00:00:00:01"}`,
		`"accept_from":["192.0.2.2"]`, `{"mac":"02:00:00:00:00:01","ifindex":1,"group":10}`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("inspect output lacks %s:\n%s", want, got)
		}
	}
	// Entries of segment 200 (10.0.0.3) never reach segment 100's maps.
	if strings.Contains(got, "10.0.0.3") {
		t.Errorf("segment 100's table holds an address of segment 200:\n%s", got)
	}
}

// TestDifferential runs random frames through the eBPF program and the Go
// model and compares what each decides (the counter the program bumps)
// and, for ARP/ND replies, the frame built.
func TestDifferential(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	fp, h := unitInstance(t)
	fib, err := ParseFIB([]byte(unitFIB))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := Compile(fib, 100, netip.MustParseAddr("192.0.2.1"), 16)
	if err != nil {
		t.Fatal(err)
	}
	m := &model{mac: ownMAC, maxLen: 1500 - 36, local: map[[6]byte]bool{nearMAC: true}, tables: tables}
	counterOf := map[decision]string{
		decDropSrcMAC: "drop_src_mac_total", decDropOversize: "drop_oversize_total", decARPReply: "arp_replies_total",
		decNDReply: "nd_replies_total", decLocal: "tx_local_total", decRemote: "tx_remote_total", decFlood: "tx_flood_total",
		decDropSelf: "drop_self_total",
	}
	rng := mrand.New(mrand.NewPCG(1, 2))
	macs := [][6]byte{ownMAC, peerMAC, nearMAC, broadcast, {0x33, 0x33, 0, 0, 0, 1}, {2, 9, 9, 9, 9, 9}}
	ips := []netip.Addr{ownIP, peerIP, netip.MustParseAddr("10.0.0.4"), netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("10.0.0.9"), netip.IPv4Unspecified()}
	ip6s := []netip.Addr{ownIP6, peerIP6, netip.MustParseAddr("fd00::9"), netip.IPv6Unspecified()}
	n := 3000
	if testing.Short() {
		n = 300
	}
	seen := map[decision]int{}
	for i := range n {
		src := ownMAC
		if rng.IntN(10) == 0 {
			src = macs[1+rng.IntN(len(macs)-1)]
		}
		var frame []byte
		gso := 0
		switch rng.IntN(4) {
		case 0:
			spa, tpa := ips[rng.IntN(len(ips))], ips[rng.IntN(len(ips)-1)]
			frame = arpRequest(src, spa, tpa)
			if rng.IntN(8) == 0 {
				binary.BigEndian.PutUint16(frame[20:], 2) // a reply: never answered
			}
		case 1:
			frame = neighborSolicitation(src, ip6s[rng.IntN(len(ip6s))], ip6s[rng.IntN(len(ip6s)-1)])
			if rng.IntN(8) == 0 {
				frame[21] = 64 // hop limit not 255: not a valid NS
			}
		case 2:
			size := 28 + rng.IntN(1600)
			if rng.IntN(2) == 0 {
				size = 1440 + rng.IntN(40) // around the limit
			}
			frame = ipv4Frame(macs[rng.IntN(len(macs))], src, 17, size)
		default:
			frame = ipv4Frame(macs[rng.IntN(len(macs))], src, 6, 1000+rng.IntN(2000))
			gso = 1300 + rng.IntN(200)
		}
		copy(frame[6:12], src[:])
		if frame[12] == 0x08 && frame[13] == 0x06 {
			copy(frame[22:28], src[:])
		}
		want := m.decide(frame, gso)
		seen[want]++
		before := stats(t, fp)
		ctx := skb{}
		if gso > 0 {
			ctx = skb{gsoSegs: 2, gsoSize: uint32(gso)}
		}
		_, out, _ := run(t, h, fp, frame, ctx)
		after := stats(t, fp)
		var got []string
		for _, c := range counterOf {
			if after[c] != before[c] {
				got = append(got, c)
			}
		}
		if len(got) != 1 || got[0] != counterOf[want] {
			t.Fatalf("frame %d (gso %d): model says %v, program bumped %v\n% x", i, gso, want, got, frame[:min(len(frame), 96)])
		}
		switch want {
		case decARPReply:
			mac := tables.Neigh[netip.AddrFrom4([4]byte(frame[38:42]))]
			if !bytes.Equal(out, arpReply(frame, mac)) {
				t.Fatalf("frame %d: ARP reply\n got  % x\n want % x", i, out, arpReply(frame, mac))
			}
		case decNDReply:
			target, _ := netip.AddrFromSlice(frame[62:78])
			want := neighborAdvertisement(frame, target, tables.Neigh[target])
			if !bytes.Equal(out, want) {
				t.Fatalf("frame %d: neighbour advertisement\n got  % x\n want % x", i, out, want)
			}
		}
	}
	t.Logf("%d frames, decisions %v", n, seen)
	for d := range decisionNames {
		if seen[decision(d)] == 0 {
			t.Errorf("no frame exercised %v", decision(d))
		}
	}
}

func TestClampMSS(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	fp, h := unitInstance(t)
	// IPv4 underlay, MTU 1500: frames up to 1464 bytes, so MSS 1410 over
	// inner IPv4 and 1390 over inner IPv6.
	cases := []struct {
		name    string
		frame   []byte
		ctx     skb
		wantMSS uint16
		clamped bool
	}{
		{"SYN from the VM, IPv4", tcpSYN(peerMAC, ownMAC, ownIP, peerIP, 1460, false), skb{}, 1410, true},
		{"SYN from the VM, IPv6", tcpSYN(peerMAC, ownMAC, ownIP6, peerIP6, 1440, false), skb{}, 1390, true},
		{"SYN with a small MSS left alone", tcpSYN(peerMAC, ownMAC, ownIP, peerIP, 1300, false), skb{}, 1300, false},
		{"SYN-ACK to the VM", tcpSYN(ownMAC, peerMAC, peerIP, ownIP, 8960, true), skb{cb: [5]uint32{toVM}, mark: 0x7e6c0000 | 20}, 1410, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := stats(t, fp)["mss_clamped_total"]
			_, out, _ := run(t, h, fp, c.frame, c.ctx)
			mss, ok := synMSS(out[:len(c.frame)])
			if mss != c.wantMSS || !ok {
				t.Errorf("MSS %d (checksum ok: %v), want %d with a valid checksum", mss, ok, c.wantMSS)
			}
			if d := stats(t, fp)["mss_clamped_total"] - before; (d == 1) != c.clamped {
				t.Errorf("mss_clamped_total +%d", d)
			}
		})
	}
}

func TestDeviceChecks(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	h := testkit.NewHost(t)
	hl := h.Handle()
	add := func(name string, flowBased, gbp bool, port int) {
		vx := &netlink.Vxlan{LinkAttrs: netlink.NewLinkAttrs(), FlowBased: flowBased, GBP: gbp, Port: port, VxlanId: 5}
		vx.Name = name
		if flowBased {
			vx.VxlanId = 0
		}
		if err := hl.LinkAdd(vx); err != nil {
			t.Fatalf("add %s: %v", name, err)
		}
	}
	add("nogbp", true, false, 4790)
	add("notexternal", false, true, 4791)
	for _, c := range []struct{ dev, want string }{
		{"nosuch0", "create it: ip link add nosuch0 type vxlan external gbp dstport 4789"},
		{"br0", "device br0 is a bridge, not a vxlan device"},
		{"nogbp", "vxlan device nogbp does not carry the group policy extension: recreate it with `gbp`"},
		{"notexternal", "vxlan device notexternal is not in collect-metadata mode: recreate it with `external`"},
	} {
		err := h.Do(func() error {
			d, err := AttachDevice(c.dev, DeviceOptions{})
			if err == nil {
				d.Close()
				_ = DetachDevice(c.dev, DeviceOptions{})
			}
			return err
		})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.dev, err, c.want)
		}
	}
}

func TestBothDirectionsRequired(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	fp, h := unitInstance(t)
	p := fp.rawParamsForTest(t)
	spec, err := encapSpec()
	if err != nil {
		t.Fatal(err)
	}
	maps := testkit.VNICMaps(t, spec)
	for _, d := range []sdk.Directions{sdk.DirFromVM, sdk.DirToVM} {
		err := h.Do(func() error {
			inst := sdk.Instance{VNIC: sdk.VNIC{Name: "lo", Ifindex: 1}, Directions: d, Params: p}
			f, err := Descriptor.FastPath(sdk.NewFastPathContext(inst, false, nil, maps, ""))
			if err == nil {
				f.Close()
			}
			return err
		})
		if !errors.Is(err, sdk.ErrInvalidParam) || !strings.Contains(err.Error(), "encap runs in both directions") {
			t.Errorf("directions %s: got %v", d, err)
		}
	}
}
