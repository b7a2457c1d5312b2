package encrypt

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// tc return codes.
const (
	tcOK       = 0
	tcShot     = 2
	tcRedirect = 7
)

// loadBare loads encrypt.c for BPF_PROG_TEST_RUN without a tunnel: the
// test fills the maps through the same Go code the tunnel uses.
func loadBare(t *testing.T) *fastPath {
	t.Helper()
	testkit.Need(t, testkit.Root, testkit.BPF)
	spec, err := encSpec()
	if err != nil {
		t.Fatal(err)
	}
	inst := sdk.Instance{VNIC: sdk.VNIC{Name: "vnet1", Ifindex: 1}, Directions: sdk.DirBoth}
	fp := &fastPath{vnic: "vnet1", mode: ProtectPolicy}
	if err := sdk.NewFastPathContext(inst, false, nil, testkit.VNICMaps(t, spec), "").Load(spec, &fp.objs); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fp.objs.Close() })
	return fp
}

// frame builds an Ethernet frame carrying an IPv4 or IPv6 UDP packet.
func frame(src, dst string) []byte {
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	eth := []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00}
	udp := []byte{0x30, 0x39, 0x1f, 0x40, 0, 12, 0, 0, 'd', 'a', 't', 'a'}
	if s.Is4() {
		ip := make([]byte, 20)
		ip[0], ip[8], ip[9] = 0x45, 64, 17
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
		copy(ip[12:], s.AsSlice())
		copy(ip[16:], d.AsSlice())
		return append(append(eth, ip...), udp...)
	}
	eth[12], eth[13] = 0x86, 0xdd
	ip := make([]byte, 40)
	ip[0], ip[6], ip[7] = 0x60, 17, 64
	binary.BigEndian.PutUint16(ip[4:], uint16(len(udp)))
	copy(ip[8:], s.AsSlice())
	copy(ip[24:], d.AsSlice())
	return append(append(eth, ip...), udp...)
}

// ext is an IPv6 extension header: typ, and its bytes from the length
// byte on (the next-header byte is filled in by withExt).
type ext struct {
	typ  byte
	body []byte
}

// withExt inserts extension headers after an IPv6 frame's fixed header.
func withExt(f []byte, exts ...ext) []byte {
	if len(exts) == 0 {
		return f
	}
	out := append([]byte{}, f[:54]...)
	last := f[20] // the upper-layer protocol
	out[20] = exts[0].typ
	plen := len(f) - 54
	for i, e := range exts {
		next := last
		if i+1 < len(exts) {
			next = exts[i+1].typ
		}
		out = append(out, next)
		out = append(out, e.body...)
		plen += 1 + len(e.body)
	}
	binary.BigEndian.PutUint16(out[18:], uint16(plen))
	return append(out, f[54:]...)
}

// Extension headers (body after the next-header byte).
var (
	hopByHop = ext{0, []byte{0, 1, 4, 0, 0, 0, 0}} // PadN
	destOpts = ext{60, []byte{0, 1, 4, 0, 0, 0, 0}}
	fragment = ext{44, []byte{0, 0, 1, 0, 0, 0, 7}}
	unknown  = ext{253, []byte{0, 0, 0, 0, 0, 0, 0}}
	rpl      = ext{43, []byte{2, 3, 1, 0, 0, 0, 0, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}}
)

// withOpts inserts IPv4 options (padded with end-of-options to a multiple
// of 4) after an IPv4 frame's 20-byte header.
func withOpts(f []byte, opts ...byte) []byte {
	for len(opts)%4 != 0 {
		opts = append(opts, 0)
	}
	out := append([]byte{}, f[:34]...)
	out[14] = 0x40 | byte(5+len(opts)/4)
	binary.BigEndian.PutUint16(out[16:], uint16(len(f)-14+len(opts)))
	out = append(out, opts...)
	return append(out, f[34:]...)
}

// IPv4 options.
var (
	lsrr        = []byte{131, 7, 4, 10, 99, 2, 5} // loose source route via 10.99.2.5
	ssrr        = []byte{137, 7, 4, 10, 99, 2, 5} // strict
	recordRoute = []byte{7, 7, 4, 0, 0, 0, 0}     // record route
	badOpt      = []byte{1, 68, 1}                // a timestamp whose length says 1
)

// srh is a segment routing header (routing type 4) listing segs.
func srh(segs ...string) ext {
	b := []byte{byte(2 * len(segs)), 4, byte(len(segs) - 1), byte(len(segs) - 1), 0, 0, 0}
	for _, a := range segs {
		b = append(b, netip.MustParseAddr(a).AsSlice()...)
	}
	return ext{43, b}
}

func TestFastPathVerdicts(t *testing.T) {
	fp := loadBare(t)
	peers, err := ParsePeers([]byte(`{"prefixes": ["10.99.1.0/24"], "peers": [
		{"name": "b", "public_key": "` + keyB + `", "endpoint": "192.0.2.2:1", "prefixes": ["10.99.2.0/24", "fd00:2::/64"]},
		{"name": "c", "public_key": "` + keyC + `", "endpoint": "192.0.2.3:1", "prefixes": ["10.99.3.0/24"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := ParsePolicy([]byte(`{"space": ["10.99.0.0/16"], "vnics": {"vnet1": ["peer:b", "10.99.3.7", "10.99.9.0/24"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	slots := map[string]uint32{"b": 3, "c": 5}
	const tun = 42
	if err := fp.writeRoutesLocked(peers, pol, slots); err != nil {
		t.Fatal(err)
	}
	if err := fp.setTunnelIfindex(tun); err != nil {
		t.Fatal(err)
	}
	live := func(slots ...uint32) {
		t.Helper()
		leases := make([]uint64, MaxPeers)
		for _, s := range slots {
			leases[s] = sdk.KtimeNow() + 60e9
		}
		if err := fp.writeLeases(leases); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name       string
		dir        sdk.Direction
		frame      []byte
		iif        uint32
		live       []uint32
		tun        uint32
		want       uint32
		slot, stat uint32 // counter that must grow (stat < numStats)
	}{
		{"protected, peer up", sdk.FromVM, frame("10.99.1.2", "10.99.2.5"), 0, []uint32{3}, tun, tcRedirect, 3, 0},
		{"protected IPv6, peer up", sdk.FromVM, frame("fd00:1::2", "fd00:2::5"), 0, []uint32{3}, tun, tcRedirect, 3, 0},
		{"protected, peer down", sdk.FromVM, frame("10.99.1.2", "10.99.2.5"), 0, nil, tun, tcShot, 3, 1},
		{"protected, other peer up", sdk.FromVM, frame("10.99.1.2", "10.99.2.5"), 0, []uint32{5}, tun, tcShot, 3, 1},
		{"protected, tunnel stopped", sdk.FromVM, frame("10.99.1.2", "10.99.2.5"), 0, []uint32{3}, 0, tcShot, 3, 1},
		{"protected host in c", sdk.FromVM, frame("10.99.1.2", "10.99.3.7"), 0, []uint32{5}, tun, tcRedirect, 5, 0},
		{"unprotected host in c", sdk.FromVM, frame("10.99.1.2", "10.99.3.8"), 0, nil, tun, tcOK, 0, numStats},
		{"protected, no peer", sdk.FromVM, frame("10.99.1.2", "10.99.9.1"), 0, []uint32{3, 5}, tun, tcShot, peerNone, 3},
		{"local", sdk.FromVM, frame("10.99.1.2", "10.99.1.3"), 0, nil, tun, tcOK, 0, numStats},
		{"outside", sdk.FromVM, frame("10.99.1.2", "8.8.8.8"), 0, nil, tun, tcOK, 0, numStats},
		{"to-vm via tunnel", sdk.ToVM, frame("10.99.2.5", "10.99.1.2"), tun, nil, tun, tcOK, 3, 4},
		{"to-vm in clear", sdk.ToVM, frame("10.99.2.5", "10.99.1.2"), 7, []uint32{3}, tun, tcShot, 3, 2},
		{"to-vm in clear, tunnel stopped", sdk.ToVM, frame("10.99.2.5", "10.99.1.2"), 0, nil, 0, tcShot, 3, 2},
		{"to-vm unprotected source", sdk.ToVM, frame("10.99.3.8", "10.99.1.2"), 7, nil, tun, tcOK, 0, numStats},
		{"to-vm from a revoked prefix in clear", sdk.ToVM, frame("10.99.9.1", "10.99.1.2"), 7, nil, tun, tcShot, peerNone, 2},
		{"ARP", sdk.FromVM, append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06}, make([]byte, 28)...), 0, nil, tun, tcOK, 0, numStats},
		// IPv6 extension headers: the destination decides when it is
		// protected (the whole packet goes into the tunnel); otherwise a
		// routing header may still take it to a protected address, and
		// what cannot be walked is dropped.
		{"IPv6 hop-by-hop + dest opts, protected", sdk.FromVM, withExt(frame("fd00:1::2", "fd00:2::5"), hopByHop, destOpts), 0, []uint32{3}, tun, tcRedirect, 3, 0},
		{"IPv6 hop-by-hop, unprotected", sdk.FromVM, withExt(frame("fd00:1::2", "2001:db8::1"), hopByHop, destOpts), 0, nil, tun, tcOK, 0, numStats},
		{"IPv6 fragment, unprotected", sdk.FromVM, withExt(frame("fd00:1::2", "2001:db8::1"), fragment), 0, nil, tun, tcOK, 0, numStats},
		{"IPv6 SRH via unprotected to protected", sdk.FromVM, withExt(frame("fd00:1::2", "2001:db8::1"), srh("fd00:2::5", "2001:db8::1")), 0, []uint32{3}, tun, tcShot, peerNone, statUnsafe},
		{"IPv6 SRH, all unprotected", sdk.FromVM, withExt(frame("fd00:1::2", "2001:db8::1"), hopByHop, srh("2001:db8::9", "2001:db8::1")), 0, nil, tun, tcOK, 0, numStats},
		{"IPv6 RPL routing header", sdk.FromVM, withExt(frame("fd00:1::2", "2001:db8::1"), rpl), 0, nil, tun, tcShot, peerNone, statUnsafe},
		{"IPv6 unknown extension", sdk.FromVM, withExt(frame("fd00:1::2", "2001:db8::1"), unknown), 0, nil, tun, tcShot, peerNone, statUnsafe},
		{"IPv6 truncated extension", sdk.FromVM, withExt(frame("fd00:1::2", "2001:db8::1"), hopByHop)[:55], 0, nil, tun, tcShot, peerNone, statUnsafe},
		{"IPv6 truncated routing header", sdk.FromVM, withExt(frame("fd00:1::2", "2001:db8::1"), srh("2001:db8::9", "fd00:2::5"))[:80], 0, nil, tun, tcShot, peerNone, statUnsafe},
		{"IPv6 nine extension headers", sdk.FromVM, withExt(frame("fd00:1::2", "2001:db8::1"), destOpts, destOpts, destOpts, destOpts, destOpts, destOpts, destOpts, destOpts, destOpts), 0, nil, tun, tcShot, peerNone, statUnsafe},
		// (A frame too short for its IPv6 or IPv4 header is refused by
		// BPF_PROG_TEST_RUN itself: covered by the model only.)
		{"IPv4 loose source route to protected", sdk.FromVM, withOpts(frame("10.99.1.2", "8.8.8.8"), lsrr...), 0, []uint32{3}, tun, tcShot, peerNone, statUnsafe},
		{"IPv4 strict source route", sdk.FromVM, withOpts(frame("10.99.1.2", "8.8.8.8"), append([]byte{1}, ssrr...)...), 0, nil, tun, tcShot, peerNone, statUnsafe},
		{"IPv4 source route, destination protected", sdk.FromVM, withOpts(frame("10.99.1.2", "10.99.2.5"), lsrr...), 0, []uint32{3}, tun, tcRedirect, 3, 0},
		{"IPv4 record route", sdk.FromVM, withOpts(frame("10.99.1.2", "8.8.8.8"), recordRoute...), 0, nil, tun, tcOK, 0, numStats},
		{"IPv4 malformed option", sdk.FromVM, withOpts(frame("10.99.1.2", "8.8.8.8"), badOpt...), 0, nil, tun, tcShot, peerNone, statUnsafe},
		{"VLAN-tagged", sdk.FromVM, append([]byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x81, 0x00, 0, 5}, frame("10.99.1.2", "10.99.2.5")[12:]...), 0, []uint32{3}, tun, tcShot, peerNone, statUnsafe},
		{"to-vm IPv6 SRH", sdk.ToVM, withExt(frame("2001:db8::1", "fd00:1::2"), srh("fd00:2::5")), 7, nil, tun, tcOK, 0, numStats},
	} {
		t.Run(tc.name, func(t *testing.T) {
			live(tc.live...)
			if err := fp.setTunnelIfindex(int(tc.tun)); err != nil {
				t.Fatal(err)
			}
			var before [numStats][2]uint64
			if tc.stat < numStats {
				before, _ = fp.stats(tc.slot)
			}
			// struct __sk_buff: ingress_ifindex at byte 36, cb[0] at 48.
			ctx := make([]byte, 192)
			binary.LittleEndian.PutUint32(ctx[48:], uint32(tc.dir)<<8) // cb[0]: dir << 8 | slot 0
			binary.LittleEndian.PutUint32(ctx[36:], tc.iif)            // ingress_ifindex
			ret, err := fp.Program().Run(&ebpf.RunOptions{Data: tc.frame, Context: ctx})
			if err != nil {
				t.Fatal(err)
			}
			if ret != tc.want {
				t.Fatalf("verdict %d, want %d", ret, tc.want)
			}
			if tc.stat < numStats {
				after, _ := fp.stats(tc.slot)
				if after[tc.stat][0] != before[tc.stat][0]+1 {
					t.Errorf("counter %d (%s) of slot %d: %d -> %d", tc.stat, statNames[tc.stat].name, tc.slot, before[tc.stat][0], after[tc.stat][0])
				}
			}
		})
	}
}

// TestPairVerdicts: a pair protects traffic between its sides only, in
// both directions; local destinations stay local, prefixes no peer carries
// are dropped; when the pairs go, so does the protection; an unprotected
// vNIC (no routes protected, no pairs) passes what it cannot parse.
func TestPairVerdicts(t *testing.T) {
	fp := loadBare(t)
	peers, err := ParsePeers([]byte(pairPeers))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := ParsePolicy([]byte(`{"pairs": [{"from": "tag:pci", "to": "tag:pci"}, {"from": "group:web", "to": "fd00:2::/64"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	g := testGroups{"tag:pci": pfx("10.99.1.5/32", "10.99.1.6/32", "10.99.2.7/32", "10.99.9.9/32"), "web": pfx("fd00:1::/64")}
	rp, err := resolvePairs("p", pol, peers, g, assignPairBits(nil, pol))
	if err != nil {
		t.Fatal(err)
	}
	slots := map[string]uint32{"b": 3, "c": 5}
	const tun = 42
	if err := fp.setTunnelIfindex(tun); err != nil {
		t.Fatal(err)
	}
	if err := fp.writeRoutesLocked(peers, pol, slots); err != nil {
		t.Fatal(err)
	}
	if err := fp.writePairs(rp.table); err != nil {
		t.Fatal(err)
	}
	leases := make([]uint64, MaxPeers)
	leases[3] = sdk.KtimeNow() + 60e9
	if err := fp.writeLeases(leases); err != nil {
		t.Fatal(err)
	}
	run := func(dir sdk.Direction, f []byte, iif uint32) uint32 {
		t.Helper()
		ctx := make([]byte, 192)
		binary.LittleEndian.PutUint32(ctx[48:], uint32(dir)<<8)
		binary.LittleEndian.PutUint32(ctx[36:], iif)
		ret, err := fp.Program().Run(&ebpf.RunOptions{Data: f, Context: ctx})
		if err != nil {
			t.Fatal(err)
		}
		return ret
	}
	for _, tc := range []struct {
		name     string
		dir      sdk.Direction
		src, dst string
		iif      uint32
		want     uint32
	}{
		{"pci to pci on b", sdk.FromVM, "10.99.1.5", "10.99.2.7", 0, tcRedirect},
		{"pci to non-pci on b", sdk.FromVM, "10.99.1.5", "10.99.2.8", 0, tcOK},
		{"non-pci to pci on b", sdk.FromVM, "10.99.1.7", "10.99.2.7", 0, tcOK},
		{"pci to pci, local", sdk.FromVM, "10.99.1.5", "10.99.1.6", 0, tcOK},
		{"pci to pci, no peer", sdk.FromVM, "10.99.1.5", "10.99.9.9", 0, tcShot},
		{"web to b's IPv6", sdk.FromVM, "fd00:1::5", "fd00:2::9", 0, tcRedirect},
		{"to-vm pci from b via tunnel", sdk.ToVM, "10.99.2.7", "10.99.1.5", tun, tcOK},
		{"to-vm pci from b in clear", sdk.ToVM, "10.99.2.7", "10.99.1.5", 7, tcShot},
		{"to-vm non-pci from b in clear", sdk.ToVM, "10.99.2.8", "10.99.1.5", 7, tcOK},
		{"to-vm pci, local", sdk.ToVM, "10.99.1.6", "10.99.1.5", 9, tcOK},
		{"to-vm pci from nowhere in clear", sdk.ToVM, "10.99.9.9", "10.99.1.5", 7, tcShot},
		{"to-vm IPv6 from b in clear", sdk.ToVM, "fd00:2::9", "fd00:1::5", 7, tcShot},
	} {
		if got := run(tc.dir, frame(tc.src, tc.dst), tc.iif); got != tc.want {
			t.Errorf("%s: verdict %d, want %d", tc.name, got, tc.want)
		}
	}
	if fp.flags != cfgPairs|cfgGuard {
		t.Errorf("flags %#x, want pairs|guard", fp.flags)
	}
	// The pairs go: no protection left, nothing guarded.
	if err := fp.writePairs(map[netip.Prefix]Sides{}); err != nil {
		t.Fatal(err)
	}
	if got := run(sdk.FromVM, frame("10.99.1.5", "10.99.2.7"), 0); got != tcOK {
		t.Errorf("after the pairs went: verdict %d, want continue", got)
	}
	if got := run(sdk.FromVM, withExt(frame("fd00:1::2", "2001:db8::1"), unknown), 0); got != tcOK || fp.flags != 0 {
		t.Errorf("unguarded vNIC: unparseable IPv6 verdict %d (flags %#x), want continue", got, fp.flags)
	}
}

// An adopted instance (filterd restarted) finds the routes of the old
// configuration in its pinned table and deletes those the new one lacks.
func TestAdoptedRoutesReplaced(t *testing.T) {
	fp := loadBare(t)
	old, err := ParsePeers([]byte(`{"peers": [
		{"name": "b", "public_key": "` + keyB + `", "endpoint": "192.0.2.2:1", "prefixes": ["10.99.2.0/25", "10.99.2.128/25", "fd00:2::/64"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := fp.writeRoutesLocked(old, nil, map[string]uint32{"b": 0}); err != nil {
		t.Fatal(err)
	}
	// filterd restarts: a new instance on the same pinned maps.
	adopted := &fastPath{objs: fp.objs, vnic: fp.vnic, mode: ProtectAll}
	if err := adopted.readRoutes(); err != nil {
		t.Fatal(err)
	}
	if len(adopted.routes) != len(fp.routes) {
		t.Fatalf("read back %v, wrote %v", adopted.routes, fp.routes)
	}
	for p, r := range fp.routes {
		if adopted.routes[p] != r {
			t.Errorf("%s: read back %+v, wrote %+v", p, adopted.routes[p], r)
		}
	}
	cur, err := ParsePeers([]byte(`{"peers": [
		{"name": "b", "public_key": "` + keyB + `", "endpoint": "192.0.2.2:1", "prefixes": ["10.99.2.0/24"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := adopted.writeRoutesLocked(cur, nil, map[string]uint32{"b": 0}); err != nil {
		t.Fatal(err)
	}
	// (A lookup in an LPM trie matches the longest prefix: list the keys.)
	now := &fastPath{objs: fp.objs}
	if err := now.readRoutes(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"10.99.2.0/25", "10.99.2.128/25", "fd00:2::/64"} {
		if _, ok := now.routes[netip.MustParsePrefix(p)]; ok {
			t.Errorf("stale route %s still in enc_routes", p)
		}
	}
	if len(now.routes) != 1 {
		t.Errorf("enc_routes holds %v, want 10.99.2.0/24 only", now.routes)
	}
	ret, err := fp.Program().Run(&ebpf.RunOptions{Data: frame("10.99.1.2", "10.99.2.7"), Context: fromVMCtx()})
	if err != nil || ret != tcShot {
		t.Fatalf("10.99.2.7 now falls under protected 10.99.2.0/24 with no lease: verdict %d (%v), want drop", ret, err)
	}
}

func fromVMCtx() []byte { return make([]byte, 192) }

// An adopted instance keeps the pinned flags until it has rewritten its
// pairs (attach reads them before writing the tunnel's ifindex): a pair
// protects throughout the restart; stale pairs are deleted after.
func TestAdoptedPairsKept(t *testing.T) {
	fp := loadBare(t)
	peers, err := ParsePeers([]byte(pairPeers))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := ParsePolicy([]byte(`{"pairs": [{"from": "tag:pci", "to": "tag:pci"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	rp, err := resolvePairs("p", pol, peers, testGroups{"tag:pci": pfx("10.99.1.5/32", "10.99.2.7/32")}, assignPairBits(nil, pol))
	if err != nil {
		t.Fatal(err)
	}
	if err := fp.writeRoutesLocked(peers, pol, map[string]uint32{"b": 0, "c": 1}); err != nil {
		t.Fatal(err)
	}
	if err := fp.writePairs(rp.table); err != nil {
		t.Fatal(err)
	}
	// filterd restarts: a new instance on the same pinned maps, attached
	// as Tunnel.attach does, up to the point where the pairs are written.
	adopted := &fastPath{objs: fp.objs, vnic: fp.vnic, mode: ProtectPolicy}
	if err := adopted.readConfig(); err != nil {
		t.Fatal(err)
	}
	if err := adopted.setTunnelIfindex(42); err != nil {
		t.Fatal(err)
	}
	if err := adopted.writeLeases(make([]uint64, MaxPeers)); err != nil {
		t.Fatal(err)
	}
	ret, err := fp.Program().Run(&ebpf.RunOptions{Data: frame("10.99.1.5", "10.99.2.7"), Context: fromVMCtx()})
	if err != nil || ret != tcShot {
		t.Fatalf("pci -> pci during adoption: verdict %d (%v), want drop (protected, no lease yet)", ret, err)
	}
	if err := adopted.readPairs(); err != nil {
		t.Fatal(err)
	}
	if len(adopted.pairs) != len(rp.table) {
		t.Fatalf("read back %v, wrote %v", adopted.pairs, rp.table)
	}
	if err := adopted.writePairs(map[netip.Prefix]Sides{}); err != nil {
		t.Fatal(err)
	}
	now := &fastPath{objs: fp.objs}
	if err := now.readPairs(); err != nil || len(now.pairs) != 0 {
		t.Errorf("enc_pairs after the new policy: %v (%v), want empty", now.pairs, err)
	}
	ret, err = fp.Program().Run(&ebpf.RunOptions{Data: frame("10.99.1.5", "10.99.2.7"), Context: fromVMCtx()})
	if err != nil || ret != tcOK {
		t.Fatalf("pci -> pci without the pair: verdict %d (%v), want continue", ret, err)
	}
}

// TestDifferential runs random frames through encrypt.c and the Go model
// with random leases, tunnel state and ingress devices, and compares the
// verdicts and the counter each one moves.
func TestDifferential(t *testing.T) {
	fp := loadBare(t)
	peers, err := ParsePeers([]byte(`{"prefixes": ["10.99.1.0/24", "fd00:1::/64"], "peers": [
		{"name": "b", "public_key": "` + keyB + `", "endpoint": "192.0.2.2:1", "prefixes": ["10.99.2.0/24", "fd00:2::/64"]},
		{"name": "c", "public_key": "` + keyC + `", "endpoint": "192.0.2.3:1", "prefixes": ["10.99.3.0/25"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := ParsePolicy([]byte(`{"space": ["10.99.0.0/16", "fd00::/16"], "vnics": {"vnet1": ["10.99.3.0/26", "10.99.2.128/25", "fd00:2::8"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	addrs := []string{"10.99.1.5", "10.99.2.1", "10.99.2.200", "10.99.3.1", "10.99.3.100", "10.99.3.200", "10.99.9.9", "8.8.8.8",
		"fd00:1::5", "fd00:2::8", "fd00:2::9", "fd00:9::1", "2001:db8::1", "2001:db8::7", "fd00:1::7"}
	v6addrs := []string{"fd00:1::5", "fd00:2::8", "fd00:2::9", "fd00:9::1", "2001:db8::1", "2001:db8::7", "::ffff:10.99.2.1"}
	exts := func(rng *rand.Rand) []ext {
		var out []ext
		for range rng.IntN(4) {
			switch rng.IntN(7) {
			case 0:
				out = append(out, hopByHop)
			case 1:
				out = append(out, destOpts)
			case 2:
				out = append(out, fragment)
			case 3:
				out = append(out, rpl)
			case 4:
				out = append(out, unknown)
			default:
				segs := []string{v6addrs[rng.IntN(len(v6addrs))]}
				if rng.IntN(2) == 0 {
					segs = append(segs, v6addrs[rng.IntN(len(v6addrs))])
				}
				out = append(out, srh(segs...))
			}
		}
		return out
	}
	pairPol, err := ParsePolicy([]byte(`{"pairs": [{"from": "tag:pci", "to": "tag:pci"}, {"from": "group:web", "to": "fd00:2::/64"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	groups := testGroups{"tag:pci": pfx("10.99.1.5/32", "10.99.2.0/25", "10.99.9.9/32", "2001:db8::7/128"), "web": pfx("fd00:1::/64", "2001:db8::/64")}
	rp, err := resolvePairs("p", pairPol, peers, groups, assignPairBits(nil, pairPol))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const tun = 42
	for _, tc := range []struct {
		mode  Mode
		pol   *Policy
		pairs map[netip.Prefix]Sides
	}{{ProtectPolicy, pol, nil}, {ProtectAll, pol, nil}, {ProtectPolicy, pol, rp.table}, {ProtectPolicy, nil, rp.table}, {ProtectPolicy, nil, nil}} {
		mode := tc.mode
		fp.mode = mode
		if err := fp.writeRoutesLocked(peers, tc.pol, map[string]uint32{"b": 1, "c": 2}); err != nil {
			t.Fatal(err)
		}
		if err := fp.writePairs(tc.pairs); err != nil {
			t.Fatal(err)
		}
		for i := range 2000 {
			live := [3]bool{rng.IntN(2) == 0, rng.IntN(2) == 0, rng.IntN(2) == 0}
			leases := make([]uint64, MaxPeers)
			for s, l := range live {
				if l {
					leases[s] = sdk.KtimeNow() + 60e9
				}
			}
			if err := fp.writeLeases(leases); err != nil {
				t.Fatal(err)
			}
			tunIdx := uint32(tun)
			if rng.IntN(5) == 0 {
				tunIdx = 0
			}
			if err := fp.setTunnelIfindex(int(tunIdx)); err != nil {
				t.Fatal(err)
			}
			src, dst := addrs[rng.IntN(len(addrs))], addrs[rng.IntN(len(addrs))]
			if netip.MustParseAddr(src).Is4() != netip.MustParseAddr(dst).Is4() {
				continue
			}
			toVM := rng.IntN(2) == 0
			iif := []uint32{0, 7, tun}[rng.IntN(3)]
			f := frame(src, dst)
			if netip.MustParseAddr(src).Is4() && !toVM && rng.IntN(3) == 0 {
				var opts []byte
				for range 1 + rng.IntN(3) {
					opts = append(opts, [][]byte{lsrr, ssrr, recordRoute, badOpt, {1}, {0}}[rng.IntN(6)]...)
				}
				if len(opts) <= 40 {
					f = withOpts(f, opts...)
				}
			}
			if !netip.MustParseAddr(src).Is4() && !toVM {
				f = withExt(f, exts(rng)...)
				if rng.IntN(8) == 0 && len(f) > 55 {
					f = f[:55+rng.IntN(len(f)-55)] // the test run refuses less than the fixed header
				}
			}
			m := &Model{Routes: fp.routes, Pairs: fp.pairs, Flags: fp.flags, Live: func(s uint32) bool { return s < 3 && live[s] }, Tunnel: tunIdx}
			want, slot, stat := m.Decide(f, toVM, iif)
			var before [numStats][2]uint64
			if stat < numStats {
				before, _ = fp.stats(slot)
			}
			ctx := make([]byte, 192)
			dir := uint32(sdk.FromVM)
			if toVM {
				dir = uint32(sdk.ToVM)
			}
			binary.LittleEndian.PutUint32(ctx[48:], dir<<8)
			binary.LittleEndian.PutUint32(ctx[36:], iif)
			ret, err := fp.Program().Run(&ebpf.RunOptions{Data: f, Context: ctx})
			if err != nil {
				t.Fatal(err)
			}
			got := map[uint32]Verdict{tcOK: Continue, tcRedirect: Redirect, tcShot: Drop}[ret]
			if got != want {
				t.Fatalf("%s #%d: %s -> %s to-vm=%v iif=%d tunnel=%d live=%v flags=%#x frame %x: eBPF %s (%d), model %s", mode, i, src, dst, toVM, iif, tunIdx, live, fp.flags, f, got, ret, want)
			}
			if stat < numStats {
				after, _ := fp.stats(slot)
				if after[stat][0] != before[stat][0]+1 {
					t.Fatalf("%s #%d: %s -> %s: counter %s of slot %d did not move", mode, i, src, dst, statNames[stat].name, slot)
				}
			}
		}
	}
}
