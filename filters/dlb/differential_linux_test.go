package dlb

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

const (
	tcActOK   = 0
	tcActShot = 2
)

// testInstance loads dlb with stand-in vNIC maps.
func testInstance(t testing.TB, servicesJSON []byte, conntrack, tableEntries string) (*fastPath, string) {
	t.Helper()
	testkit.Need(t, testkit.Root, testkit.BPF)
	spec, err := dlbSpec()
	if err != nil {
		t.Fatal(err)
	}
	maps := testkit.VNICMaps(t, spec)
	path := filepath.Join(t.TempDir(), "services.json")
	if err := os.WriteFile(path, servicesJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	params, err := sdk.ValidateParams(Descriptor.Params, map[string]string{"services": path, "conntrack_size": conntrack, "table_entries": tableEntries})
	if err != nil {
		t.Fatal(err)
	}
	inst := sdk.Instance{VNIC: sdk.VNIC{Name: "test", Ifindex: 1}, Directions: sdk.DirBoth, Params: params}
	fp, err := loadFastPath(sdk.NewFastPathContext(inst, false, nil, maps, ""))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fp.Close() })
	return fp.(*fastPath), path
}

// runFrame runs frame through prog in dir and returns the tc action and
// the frame as the program left it; ok is false when the harness refuses
// the frame.
func runFrame(t testing.TB, prog *ebpf.Program, frame []byte, dir int) (ret uint32, out []byte, ok bool) {
	ctx := make([]byte, 192)
	binary.NativeEndian.PutUint32(ctx[48:], uint32(dir)<<8)
	out = make([]byte, len(frame)+256)
	opts := &ebpf.RunOptions{Data: frame, DataOut: out, Context: ctx}
	ret, err := prog.Run(opts)
	if errors.Is(err, unix.EINVAL) && len(frame) < 14+40 {
		return 0, nil, false
	}
	if err != nil {
		t.Fatalf("test run of %x: %v", frame, err)
	}
	return ret, opts.DataOut, true
}

// randServices makes 1-5 services on VIPs 10.0.0.1-4, ports 80/443/53,
// with 1-6 backends in 10.1.0.0/24.
func randServices(rng *rand.Rand) (*Config, []byte) {
	type be struct {
		Addr   string `json:"addr"`
		Port   int    `json:"port,omitempty"`
		Weight int    `json:"weight"`
		MAC    string `json:"mac,omitempty"`
	}
	type svc struct {
		VIP       string `json:"vip"`
		Port      int    `json:"port"`
		Protocol  string `json:"protocol"`
		TableSize int    `json:"table_size"`
		Affinity  string `json:"affinity,omitempty"`
		Backends  []be   `json:"backends"`
	}
	var svcs []svc
	seen := map[string]bool{}
	for range 1 + rng.IntN(5) {
		v6 := rng.IntN(3) == 0
		vip := fmt.Sprintf("10.0.0.%d", 1+rng.IntN(4))
		if v6 {
			vip = fmt.Sprintf("fd00::%d", 1+rng.IntN(4))
		}
		s := svc{VIP: vip, Port: []int{80, 443, 53}[rng.IntN(3)], Protocol: []string{"tcp", "udp"}[rng.IntN(2)], TableSize: []int{251, 4099, 65537}[rng.IntN(3)], Affinity: []string{"", "none", "client"}[rng.IntN(3)]}
		k := fmt.Sprint(s.VIP, s.Port, s.Protocol)
		if seen[k] {
			continue
		}
		seen[k] = true
		used := map[int]bool{}
		for range 1 + rng.IntN(6) {
			n := 1 + rng.IntN(20)
			if used[n] {
				continue
			}
			used[n] = true
			b := be{Addr: fmt.Sprintf("10.1.0.%d", n), Weight: 1 + rng.IntN(4)}
			if v6 {
				b.Addr = fmt.Sprintf("fd01::%d", n)
			}
			if rng.IntN(2) == 0 {
				b.Port = 8000 + rng.IntN(3)
			}
			if rng.IntN(2) == 0 {
				b.MAC = fmt.Sprintf("02:00:00:00:01:%02x", n)
			}
			s.Backends = append(s.Backends, b)
		}
		svcs = append(svcs, s)
	}
	data, _ := json.Marshal(map[string]any{"services": svcs})
	c, err := ParseConfig(data)
	if err != nil {
		panic(fmt.Sprintf("%s: %v", data, err))
	}
	return c, data
}

// frame builds Ethernet+IPv4(+options)+TCP/UDP, or Ethernet+IPv6+TCP/UDP
// when the addresses are IPv6.
func frame(rng *rand.Rand, src, dst netip.Addr, sport, dport uint16, proto uint8) []byte {
	if src.Is6() {
		return frame6(rng, src, dst, sport, dport, proto)
	}
	opts := 0
	if rng.IntN(8) == 0 {
		opts = 4 * (1 + rng.IntN(3))
	}
	l4len := 20
	if proto == ProtoUDP {
		l4len = 8
	}
	payload := rng.IntN(40)
	f := make([]byte, 14+20+opts+l4len+payload)
	copy(f[0:6], []byte{2, 0, 0, 0, 0, 0xee})
	copy(f[6:12], []byte{2, 0, 0, 0, 0, 0x01})
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0] = 0x40 | byte(5+opts/4)
	binary.BigEndian.PutUint16(ip[2:], uint16(len(f)-14))
	ip[8] = 64
	ip[9] = proto
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	for i := range opts {
		ip[20+i] = 1 // NOP
	}
	binary.BigEndian.PutUint16(ip[10:], ^sum16(ip[:20+opts], 0))
	l4 := ip[20+opts:]
	binary.BigEndian.PutUint16(l4[0:], sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	for i := 4; i < len(l4); i++ {
		if proto == ProtoUDP && (i == 6 || i == 7) {
			continue
		}
		l4[i] = byte(rng.Uint32())
	}
	if proto == ProtoUDP {
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		binary.BigEndian.PutUint16(l4[6:], 0)
	} else {
		l4[12] = 5 << 4
		binary.BigEndian.PutUint16(l4[16:], 0)
	}
	// Pseudo-header checksum.
	var ph [12]byte
	copy(ph[0:], s4[:])
	copy(ph[4:], d4[:])
	ph[9] = proto
	binary.BigEndian.PutUint16(ph[10:], uint16(len(l4)))
	cs := ^sum16(l4, sum16(ph[:], 0))
	switch {
	case proto == ProtoUDP && rng.IntN(6) == 0:
		cs = 0 // no checksum
	case proto == ProtoUDP && cs == 0:
		cs = 0xffff
	}
	off := 16
	if proto == ProtoUDP {
		off = 6
	}
	binary.BigEndian.PutUint16(l4[off:], cs)
	return f
}

func frame6(rng *rand.Rand, src, dst netip.Addr, sport, dport uint16, proto uint8) []byte {
	l4len := 20
	if proto == ProtoUDP {
		l4len = 8
	}
	payload := rng.IntN(40)
	f := make([]byte, 14+40+l4len+payload)
	copy(f[0:6], []byte{2, 0, 0, 0, 0, 0xee})
	copy(f[6:12], []byte{2, 0, 0, 0, 0, 0x01})
	binary.BigEndian.PutUint16(f[12:], 0x86dd)
	ip := f[14:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(l4len+payload))
	ip[6] = proto
	ip[7] = 64
	s16, d16 := src.As16(), dst.As16()
	copy(ip[8:], s16[:])
	copy(ip[24:], d16[:])
	l4 := ip[40:]
	binary.BigEndian.PutUint16(l4[0:], sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	for i := 4; i < len(l4); i++ {
		l4[i] = byte(rng.Uint32())
	}
	off := 16
	if proto == ProtoUDP {
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		off = 6
	} else {
		l4[12] = 5 << 4
	}
	binary.BigEndian.PutUint16(l4[off:], 0)
	var ph [40]byte
	copy(ph[0:], s16[:])
	copy(ph[16:], d16[:])
	binary.BigEndian.PutUint32(ph[32:], uint32(len(l4)))
	ph[39] = proto
	cs := ^sum16(l4, sum16(ph[:], 0))
	if proto == ProtoUDP && cs == 0 {
		cs = 0xffff
	}
	binary.BigEndian.PutUint16(l4[off:], cs)
	return f
}

func sum16(b []byte, init uint16) uint16 {
	s := uint32(init)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// checksumsOK verifies the IPv4 and L4 checksums of a well-formed frame.
func checksumsOK(f []byte) bool {
	if binary.BigEndian.Uint16(f[12:]) == 0x86dd {
		l4 := f[54:]
		var ph [40]byte
		copy(ph[0:], f[22:54])
		binary.BigEndian.PutUint32(ph[32:], uint32(len(l4)))
		ph[39] = f[20]
		return sum16(l4, sum16(ph[:], 0)) == 0xffff
	}
	ihl := int(f[14]&0xf) * 4
	if sum16(f[14:14+ihl], 0) != 0xffff {
		return false
	}
	l4 := f[14+ihl:]
	proto := f[14+9]
	if proto == ProtoUDP && binary.BigEndian.Uint16(l4[6:]) == 0 {
		return true
	}
	var ph [12]byte
	copy(ph[0:], f[26:34])
	ph[9] = proto
	binary.BigEndian.PutUint16(ph[10:], uint16(len(l4)))
	return sum16(l4, sum16(ph[:], 0)) == 0xffff
}

func wordsAddr(w [4]uint32, family uint8) netip.Addr {
	var b [16]byte
	for i := range w {
		binary.LittleEndian.PutUint32(b[4*i:], w[i])
	}
	if family == 4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}

// TestDifferentialDLB runs dlb.c (BPF_PROG_TEST_RUN) and the Go model on
// the same random services and packets, IPv4 and IPv6 (new flows to VIPs, established
// flows, replies from backends, non-VIP traffic, fragments, IP options,
// runts and other malformed frames) and requires the same tc action, the
// same output bytes and the same counters (per backend and per service
// too); services are swapped in live
// every 2,500 packets (a quarter of them with every backend of a service
// down, as health checks leave it); the connection table is small enough
// to fill up.
func TestDifferentialDLB(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("VF_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (rerun with VF_SEED)", seed)
	rng := rand.New(rand.NewPCG(seed, 11))
	const ctSize, tableEntries, total = 400, 1 << 20, 50000
	cfg, data := randServices(rng)
	fp, _ := testInstance(t, data, strconv.Itoa(ctSize), strconv.Itoa(tableEntries))
	model := NewModel(2 * ctSize)
	for i := range cfg.Services { // the ids the instance gave them
		cfg.Services[i].ID = fp.cfg.Services[i].ID
	}
	tab, err := Compile(cfg, 1, tableEntries)
	if err != nil {
		t.Fatal(err)
	}
	model.SetTables(tab)
	prog := fp.Program()
	clients := []netip.Addr{netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.9.0.2"), netip.MustParseAddr("10.9.0.3")}
	kinds := map[string]int{}
	refused, rewritten, rewritten6, shot := 0, 0, 0, 0
	for i := range total {
		if i > 0 && i%2500 == 0 {
			cfg, _ = randServices(rng)
			if (i/2500)%4 == 1 { // every backend of a service down (health checks)
				for j := range cfg.Services[0].Backends {
					cfg.Services[0].Backends[j].Weight = 0
				}
			}
			if err := fp.Update(cfg); err != nil {
				t.Fatal(err)
			}
			tab, err := Compile(cfg, (model.Gen+1)&1, tableEntries)
			if err != nil {
				t.Fatal(err)
			}
			model.SetTables(tab)
		}
		var f []byte
		dir := 0
		kind := ""
		proto := []uint8{ProtoTCP, ProtoUDP}[rng.IntN(2)]
		v6 := rng.IntN(3) == 0
		client := clients[rng.IntN(len(clients))]
		vipAddr := func(n int) netip.Addr {
			if v6 {
				return netip.AddrFrom16([16]byte{0: 0xfd, 15: byte(n)})
			}
			return netip.AddrFrom4([4]byte{10, 0, 0, byte(n)})
		}
		if v6 {
			client = netip.AddrFrom16([16]byte{0: 0xfd, 1: 9, 15: byte(1 + rng.IntN(3))})
		}
		cport := uint16(1024 + rng.IntN(40))
		switch r := rng.IntN(100); {
		case r < 45: // to a VIP-ish destination
			kind = "to-vip"
			f = frame(rng, client, vipAddr(1+rng.IntN(5)), cport, []uint16{80, 443, 53, 22}[rng.IntN(4)], proto)
		case r < 70: // a reply to a pinned flow (or a made-up one)
			kind = "reply"
			dir = 1
			var keys []CtKey
			for k := range model.CT {
				if k.Kind == 1 {
					keys = append(keys, k)
				}
				if len(keys) > 8 {
					break
				}
			}
			if len(keys) > 0 && rng.IntN(5) > 0 {
				k := keys[rng.IntN(len(keys))]
				sp, dp := portWord(k.Sport), portWord(k.Dport) // a swap is its own inverse
				f = frame(rng, wordsAddr(k.Saddr, k.Family), wordsAddr(k.Daddr, k.Family), sp, dp, k.Proto)
			} else if v6 {
				f = frame(rng, netip.AddrFrom16([16]byte{0: 0xfd, 1: 1, 15: byte(1 + rng.IntN(20))}), client, 8000, cport, proto)
			} else {
				f = frame(rng, netip.AddrFrom4([4]byte{10, 1, 0, byte(1 + rng.IntN(20))}), client, 8000, cport, proto)
			}
		case r < 80: // non-VIP, either direction
			kind = "other"
			dir = rng.IntN(2)
			other := netip.AddrFrom4([4]byte{192, 168, byte(rng.IntN(3)), byte(rng.IntN(3))})
			if v6 {
				other = netip.AddrFrom16([16]byte{0: 0xfd, 1: 0xaa, 15: byte(rng.IntN(3))})
			}
			f = frame(rng, client, other, cport, 80, proto)
		default: // malformed
			kind = "malformed"
			dir = rng.IntN(2)
			f = frame(rng, client, vipAddr(1+rng.IntN(4)), cport, []uint16{80, 443, 53}[rng.IntN(3)], proto)
			switch rng.IntN(7) {
			case 0:
				f = f[:rng.IntN(len(f))]
			case 1:
				if v6 {
					f[20] = []byte{0, 43, 44, 60}[rng.IntN(4)] // extension headers
					break
				}
				binary.BigEndian.PutUint16(f[20:], uint16(rng.IntN(2))<<13|uint16(rng.IntN(3))) // MF / offset
			case 2:
				f[14] = f[14]&0x0f | byte(rng.IntN(16))<<4 // version
			case 3:
				f[14] = f[14]&0xf0 | byte(rng.IntN(16)) // ihl (v6: traffic class)
			case 4:
				if v6 {
					f[20] = byte(rng.IntN(256))
				} else {
					f[23] = byte(rng.IntN(256)) // protocol
				}
			case 5:
				binary.BigEndian.PutUint16(f[12:], []uint16{0x86dd, 0x0800, 0x8100, 0x0806}[rng.IntN(4)])
			case 6:
				f[rng.IntN(len(f))] ^= byte(1 + rng.IntN(255))
			}
		}
		kinds[kind]++
		in := append([]byte(nil), f...)
		ret, out, ok := runFrame(t, prog, f, dir)
		if !ok {
			refused++
			continue
		}
		want := append([]byte(nil), f...)
		v := model.Process(want, dir)
		wantRet := uint32(tcActOK)
		if v != VerdictContinue {
			wantRet = tcActShot
			shot++
		}
		if ret != wantRet {
			t.Fatalf("seed %d packet %d (%s, dir %d): kernel tc action %d, model verdict %d\nframe %x", seed, i, kind, dir, ret, v, in)
		}
		if !bytes.Equal(out, want) {
			t.Fatalf("seed %d packet %d (%s, dir %d): bytes differ\nin     %x\nkernel %x\nmodel  %x", seed, i, kind, dir, in, out, want)
		}
		if !bytes.Equal(in, want) {
			rewritten++
			if binary.BigEndian.Uint16(want[12:]) == 0x86dd {
				rewritten6++
			}
			if kind != "malformed" && !checksumsOK(want) {
				t.Fatalf("seed %d packet %d: rewritten frame has bad checksums: %x", seed, i, want)
			}
		}
	}
	st, err := fp.stats()
	if err != nil {
		t.Fatal(err)
	}
	for i := range st {
		if st[i] != model.Stats[i] {
			t.Fatalf("seed %d: kernel counters %v, model %v", seed, st, model.Stats)
		}
	}
	for i := range uint32(2 * MaxBackends) {
		var vals []uint64
		if err := fp.objs.DlbBackendFlows.Lookup(i, &vals); err != nil {
			t.Fatal(err)
		}
		var sum uint64
		for _, v := range vals {
			sum += v
		}
		if sum != model.BackendFlows[i] {
			t.Fatalf("seed %d: backend %d: kernel counted %d new flows, model %d", seed, i, sum, model.BackendFlows[i])
		}
	}
	traffic := 0
	for id := range uint32(maxServiceIDs) {
		for dir := range uint32(2) {
			var vals []dlbDlbTraffic
			if err := fp.objs.DlbSvcStats.Lookup(id*2+dir, &vals); err != nil {
				t.Fatal(err)
			}
			var got [2]uint64
			for _, v := range vals {
				got[0] += v.Packets
				got[1] += v.Bytes
			}
			if got != model.SvcTraffic[id*2+dir] {
				t.Fatalf("seed %d: service id %d dir %d: kernel counted %v packets/bytes, model %v", seed, id, dir, got, model.SvcTraffic[id*2+dir])
			}
			if got[0] > 0 {
				traffic++
			}
		}
	}
	if len(fp.ids) < 2 || traffic < 2 {
		t.Errorf("per-service counters barely exercised: %d ids, %d non-zero counters", len(fp.ids), traffic)
	}
	if model.Stats[0] == 0 || model.Stats[1] == 0 || model.Stats[2] == 0 || model.Stats[3] == 0 || model.Stats[4] == 0 {
		t.Errorf("a path was not exercised: counters %v", model.Stats)
	}
	if rewritten6 == 0 {
		t.Error("no IPv6 frame was rewritten")
	}
	t.Logf("%d packets (%v): identical tc actions and bytes; %d rewritten (%d IPv6), %d dropped/failed, %d runts refused by the harness; counters %v (new, established, reverse, full, no backend)", total-refused, kinds, rewritten, rewritten6, shot, refused, model.Stats)
}
