package firewall

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// Address pools small enough that random rules and packets meet.
var (
	pool4 = []string{"10.0.0.1", "10.0.0.2", "10.0.1.7", "10.1.2.3", "192.168.5.5", "172.16.0.9", "8.8.8.8"}
	pool6 = []string{"fd00::1", "fd00::2", "fd00:0:0:1::7", "fd01::3", "2001:db8::5"}
)

func randAddr(rng *rand.Rand, v6 bool) netip.Addr {
	if rng.IntN(8) == 0 { // occasionally anywhere
		if v6 {
			var b [16]byte
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			return netip.AddrFrom16(b)
		}
		return netip.AddrFrom4([4]byte{byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())})
	}
	if v6 {
		return netip.MustParseAddr(pool6[rng.IntN(len(pool6))])
	}
	return netip.MustParseAddr(pool4[rng.IntN(len(pool4))])
}

func randPrefix(rng *rand.Rand) string {
	v6 := rng.IntN(3) == 0
	a := randAddr(rng, v6)
	bits := []int{0, 8, 16, 24, 28, 31, 32}
	if v6 {
		bits = []int{0, 16, 32, 48, 64, 120, 128}
	}
	return netip.PrefixFrom(a, bits[rng.IntN(len(bits))]).Masked().String()
}

var portPool = []uint16{0, 22, 53, 80, 443, 1000, 1024, 5001, 8080, 40000, 65535}

func randPorts(rng *rand.Rand) []any {
	var out []any
	for range 1 + rng.IntN(3) {
		lo := portPool[rng.IntN(len(portPool))]
		if rng.IntN(3) == 0 {
			hi := int(lo) + rng.IntN(3000)
			if hi > 65535 {
				hi = 65535
			}
			out = append(out, fmt.Sprintf("%d-%d", lo, hi))
		} else {
			out = append(out, lo)
		}
	}
	return out
}

// randPolicyJSON writes a random but valid policy of n rules.
func randPolicyJSON(rng *rand.Rand, n int) []byte {
	actions := []string{"allow", "deny", "reject"}
	groups := map[string][]string{}
	for g := range rng.IntN(4) {
		var m []string
		for range rng.IntN(4) {
			m = append(m, randPrefix(rng))
		}
		groups[fmt.Sprintf("g%d", g)] = m
	}
	var rules []map[string]any
	for i := range n {
		r := map[string]any{"name": fmt.Sprintf("r%d", i), "action": actions[rng.IntN(3)]}
		if rng.IntN(2) == 0 {
			r["priority"] = rng.IntN(50)
		}
		r["direction"] = []string{"from-vm", "to-vm", "both"}[rng.IntN(3)]
		for _, side := range []string{"src", "dst"} {
			switch rng.IntN(4) {
			case 1, 2:
				var l []string
				for range 1 + rng.IntN(3) {
					l = append(l, randPrefix(rng))
				}
				r[side] = l
			case 3:
				if len(groups) > 0 {
					r[side+"_groups"] = []string{fmt.Sprintf("g%d", rng.IntN(len(groups)))}
				}
			}
		}
		switch rng.IntN(8) {
		case 0, 1:
			r["proto"] = "tcp"
		case 2:
			r["proto"] = "udp"
		case 3:
			r["proto"] = "icmp"
		case 4:
			r["proto"] = "icmpv6"
		case 5:
			r["proto"] = []any{47, "132", "any"}[rng.IntN(3)]
		}
		switch r["proto"] {
		case "tcp", "udp":
			if rng.IntN(2) == 0 {
				r["dst_ports"] = randPorts(rng)
			}
			if rng.IntN(5) == 0 {
				r["src_ports"] = randPorts(rng)
			}
		case "icmp", "icmpv6":
			if rng.IntN(2) == 0 {
				r["icmp_type"] = []int{0, 8, 3, 128, 129, 1}[rng.IntN(6)]
				if rng.IntN(2) == 0 {
					r["icmp_code"] = rng.IntN(3)
				}
			}
		}
		if _, ports := r["dst_ports"]; !ports && r["src_ports"] == nil && r["icmp_type"] == nil && rng.IntN(4) == 0 {
			r["fragments"] = true
		}
		if rng.IntN(5) == 0 {
			r["log"] = true
		}
		rules = append(rules, r)
	}
	doc := map[string]any{
		"version":  1,
		"defaults": map[string]string{"from-vm": actions[rng.IntN(2)], "to-vm": actions[rng.IntN(3)]},
		"non_ip":   actions[rng.IntN(2)],
		"groups":   groups,
		"rules":    rules,
	}
	b, err := json.MarshalIndent(doc, "", " ")
	if err != nil {
		panic(err)
	}
	return b
}

func randPolicy(t testing.TB, rng *rand.Rand, n int) *Policy {
	t.Helper()
	b := randPolicyJSON(rng, n)
	p, err := ParsePolicy(b, ParseOptions{File: "random.json"})
	if err != nil {
		t.Fatalf("random policy does not parse: %v\n%s", err, b)
	}
	return p
}

// flow is the 5-tuple of a conversation, as the VM sends it.
type flow struct {
	v6         bool
	vm, remote netip.Addr
	proto      uint8
	vmPort     uint16
	remotePort uint16
}

// pktSpec describes one frame to build.
type pktSpec struct {
	dir        sdk.Direction
	v6         bool
	src, dst   netip.Addr
	proto      uint8
	sport      uint16
	dport      uint16
	flags      uint8
	icmpType   uint8
	icmpCode   uint8
	echoID     uint16
	fragOff    uint16 // 8-byte units; non-zero: a later fragment
	firstFrag  bool   // MF set, offset 0
	ipOptions  int    // IPv4 option bytes (multiple of 4)
	extHdrs    []uint8
	vlans      int
	truncateTo int // 0: no truncation
	payload    int
	quote      []byte // ICMP: the quoted packet (replaces the payload)
	l2group    bool   // to the Ethernet broadcast address
}

func (f flow) spec(dir sdk.Direction) pktSpec {
	s := pktSpec{dir: dir, v6: f.v6, proto: f.proto, echoID: f.vmPort}
	if dir == sdk.FromVM {
		s.src, s.dst, s.sport, s.dport = f.vm, f.remote, f.vmPort, f.remotePort
	} else {
		s.src, s.dst, s.sport, s.dport = f.remote, f.vm, f.remotePort, f.vmPort
	}
	return s
}

// build serialises s (checksums are not computed: nothing here checks
// them, and the kernel's test run does not either).
func (s pktSpec) build() []byte {
	var l4 []byte
	switch s.proto {
	case ProtoTCP:
		l4 = make([]byte, 20+s.payload)
		binary.BigEndian.PutUint16(l4[0:], s.sport)
		binary.BigEndian.PutUint16(l4[2:], s.dport)
		l4[12] = 5 << 4
		l4[13] = s.flags
	case ProtoUDP:
		l4 = make([]byte, 8+s.payload)
		binary.BigEndian.PutUint16(l4[0:], s.sport)
		binary.BigEndian.PutUint16(l4[2:], s.dport)
	case ProtoICMP, ProtoICMPv6:
		l4 = make([]byte, 8+s.payload)
		l4[0], l4[1] = s.icmpType, s.icmpCode
		binary.BigEndian.PutUint16(l4[4:], s.echoID)
		if s.quote != nil {
			l4 = append(l4[:8], s.quote...)
		}
	default:
		l4 = make([]byte, 4+s.payload)
	}
	var ip []byte
	if !s.v6 {
		hl := 20 + s.ipOptions
		ip = make([]byte, hl)
		ip[0] = 0x40 | byte(hl/4)
		binary.BigEndian.PutUint16(ip[2:], uint16(hl+len(l4)))
		frag := s.fragOff & 0x1fff
		if s.firstFrag {
			frag |= 0x2000
		}
		binary.BigEndian.PutUint16(ip[6:], frag)
		ip[8] = 64
		ip[9] = s.proto
		a, b := s.src.As4(), s.dst.As4()
		copy(ip[12:], a[:])
		copy(ip[16:], b[:])
		for i := 20; i < hl; i++ {
			ip[i] = 1 // NOP
		}
	} else {
		ip = make([]byte, 40)
		ip[0] = 0x60
		ip[7] = 64
		a, b := s.src.As16(), s.dst.As16()
		copy(ip[8:], a[:])
		copy(ip[24:], b[:])
		nh := &ip[6]
		for _, h := range s.extHdrs {
			*nh = h
			var eh []byte
			switch h {
			case 44:
				eh = make([]byte, 8)
				off := s.fragOff << 3
				if s.firstFrag {
					off |= 1
				}
				binary.BigEndian.PutUint16(eh[2:], off)
			case 51:
				eh = make([]byte, 12)
				eh[1] = 1 // (1+2)*4 = 12
			default:
				eh = make([]byte, 8)
			}
			ip = append(ip, eh...)
			nh = &ip[len(ip)-len(eh)]
		}
		*nh = s.proto
		binary.BigEndian.PutUint16(ip[4:], uint16(len(ip)-40+len(l4)))
	}
	frame := make([]byte, 12, 14+4*s.vlans+len(ip)+len(l4))
	copy(frame, []byte{2, 0x76, 0x66, 0, 0, 1, 2, 0x76, 0x66, 0, 0, 2})
	if s.l2group {
		copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	}
	for range s.vlans {
		frame = append(frame, 0x81, 0x00, 0, byte(1+len(frame)))
	}
	if s.v6 {
		frame = append(frame, 0x86, 0xdd)
	} else {
		frame = append(frame, 0x08, 0x00)
	}
	frame = append(frame, ip...)
	frame = append(frame, l4...)
	if s.truncateTo > 0 && s.truncateTo < len(frame) {
		frame = frame[:s.truncateTo]
	}
	return frame
}

var tcpFlagChoices = []uint8{tcpSYN, tcpSYN | tcpACK, tcpACK, tcpACK | 0x08, tcpFIN | tcpACK, tcpRST, tcpRST | tcpACK}

// trafficGen produces a stream of frames: conversations in both directions
// (so conntrack state matters) mixed with random and adversarial frames.
type trafficGen struct {
	rng   *rand.Rand
	flows []flow
}

func (g *trafficGen) newFlow() flow {
	rng := g.rng
	f := flow{v6: rng.IntN(3) == 0}
	f.vm, f.remote = randAddr(rng, f.v6), randAddr(rng, f.v6)
	f.proto = []uint8{ProtoTCP, ProtoTCP, ProtoUDP, ProtoICMP, ProtoICMPv6, 47, 132}[rng.IntN(7)]
	f.vmPort = portPool[rng.IntN(len(portPool))]
	if rng.IntN(2) == 0 {
		f.vmPort = uint16(30000 + rng.IntN(100))
	}
	f.remotePort = portPool[rng.IntN(len(portPool))]
	return f
}

func (g *trafficGen) next() ([]byte, sdk.Direction, string) {
	rng := g.rng
	var s pktSpec
	kind := rng.IntN(20)
	switch {
	case kind < 12 && len(g.flows) > 0: // continue a conversation, either way
		f := g.flows[rng.IntN(len(g.flows))]
		s = f.spec(sdk.Direction(rng.IntN(2)))
	default:
		f := g.newFlow()
		if len(g.flows) < 64 {
			g.flows = append(g.flows, f)
		} else {
			g.flows[rng.IntN(len(g.flows))] = f
		}
		s = f.spec(sdk.Direction(rng.IntN(2)))
	}
	switch s.proto {
	case ProtoTCP:
		s.flags = tcpFlagChoices[rng.IntN(len(tcpFlagChoices))]
		if rng.IntN(20) == 0 {
			s.flags = uint8(rng.Uint32()) // flag soup
		}
	case ProtoICMP, ProtoICMPv6:
		types := []uint8{8, 0, 128, 129, 3, 1, 135, 136, 134, 11}
		s.icmpType = types[rng.IntN(len(types))]
		s.icmpCode = uint8(rng.IntN(3))
	}
	s.payload = rng.IntN(64)
	s.l2group = rng.IntN(50) == 0 // never answered when rejected
	what := "flow"
	if len(g.flows) > 0 && rng.IntN(12) == 0 {
		return g.icmpError()
	}
	switch rng.IntN(30) {
	case 0:
		what = "later fragment"
		s.fragOff = uint16(1 + rng.IntN(100))
		if s.v6 {
			s.extHdrs = []uint8{44}
		}
	case 1:
		what = "first fragment"
		s.firstFrag = true
		if s.v6 {
			s.extHdrs = []uint8{44}
		}
	case 2:
		what = "ip options"
		if !s.v6 {
			s.ipOptions = 4 * (1 + rng.IntN(10))
		}
	case 3:
		what = "ext headers"
		if s.v6 {
			all := []uint8{0, 43, 60, 51, 44}
			for range 1 + rng.IntN(10) {
				s.extHdrs = append(s.extHdrs, all[rng.IntN(len(all))])
			}
		}
	case 4:
		what = "truncated"
		s.truncateTo = 14 + rng.IntN(70) // a tap never delivers less than a MAC header
	case 5:
		what = "vlan"
		s.vlans = 1 + rng.IntN(3)
	case 6:
		what = "garbage"
		b := make([]byte, 14+rng.IntN(120))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if len(b) > 14 && rng.IntN(2) == 0 {
			b[12], b[13] = 0x08, 0x00
			if rng.IntN(2) == 0 {
				b[12], b[13] = 0x86, 0xdd
			}
		}
		return b, s.dir, "garbage"
	case 7:
		what = "arp/non-ip"
		b := s.build()
		b[12], b[13] = 0x08, 0x06
		if rng.IntN(2) == 0 {
			b[12], b[13] = 0x88, 0xcc
		}
		return b, s.dir, what
	}
	return s.build(), s.dir, what
}

// icmpError builds an ICMP error (sometimes a non-error ICMP message, or a
// mangled quote) quoting a packet of a known conversation, sent back the
// other way: related traffic if the flow is tracked.
func (g *trafficGen) icmpError() ([]byte, sdk.Direction, string) {
	rng := g.rng
	f := g.flows[rng.IntN(len(g.flows))]
	dir := sdk.Direction(rng.IntN(2))
	in := f.spec(1 - dir) // the quoted packet went the other way
	switch in.proto {
	case ProtoTCP:
		in.flags = tcpFlagChoices[rng.IntN(len(tcpFlagChoices))]
	case ProtoICMP, ProtoICMPv6:
		in.icmpType = []uint8{8, 0, 128, 129, 3, 1}[rng.IntN(6)]
	}
	in.payload = rng.IntN(16)
	what := "icmp error"
	switch rng.IntN(10) {
	case 0:
		what = "icmp error, quoted fragment"
		in.fragOff = uint16(1 + rng.IntN(100))
		if in.v6 {
			in.extHdrs = []uint8{44}
		}
	case 1:
		what = "icmp error, quoted ext header / options"
		if in.v6 {
			in.extHdrs = []uint8{[]uint8{0, 43, 60}[rng.IntN(3)]}
		} else {
			in.ipOptions = 4 * (1 + rng.IntN(5))
		}
	}
	quote := in.build()[14:]
	if rng.IntN(6) == 0 {
		what += ", truncated quote"
		quote = quote[:rng.IntN(len(quote)+1)]
	}
	out := f.spec(dir)
	out.quote = quote
	if out.v6 {
		out.proto = ProtoICMPv6
		out.icmpType = []uint8{1, 2, 3, 4, 1, 128, 135}[rng.IntN(7)]
	} else {
		out.proto = ProtoICMP
		out.icmpType = []uint8{3, 11, 12, 3, 5, 0}[rng.IntN(6)]
	}
	out.icmpCode = uint8(rng.IntN(4))
	if rng.IntN(4) == 0 { // from a router on the path
		if dir == sdk.ToVM {
			out.src = randAddr(rng, out.v6)
		} else {
			out.dst = randAddr(rng, out.v6)
		}
	}
	return out.build(), dir, what
}
