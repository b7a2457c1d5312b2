package spoofguard

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
)

// Frame builders shared by the model tests and the eBPF tests.

func eth(src [6]byte, proto uint16) []byte {
	f := make([]byte, 14)
	copy(f[0:6], []byte{0x02, 0, 0, 0, 0, 0xfe})
	copy(f[6:12], src[:])
	binary.BigEndian.PutUint16(f[12:], proto)
	return f
}

func vlanTag(tpid uint16, vid uint16) []byte {
	// tag as it sits after the MAC addresses: TPID was already written as
	// the outer ethertype, so a tag here is TCI + next ethertype.
	b := make([]byte, 4)
	binary.BigEndian.PutUint16(b, vid)
	binary.BigEndian.PutUint16(b[2:], tpid)
	return b
}

func ipv4Hdr(src, dst netip.Addr, proto byte, fragOff uint16, payloadLen int) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+payloadLen))
	binary.BigEndian.PutUint16(h[6:], fragOff)
	h[8] = 64
	h[9] = proto
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	return h
}

func udp(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b, sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	return append(b, payload...)
}

func ipv4Frame(mac [6]byte, src, dst netip.Addr, proto byte, l4 []byte) []byte {
	f := eth(mac, 0x0800)
	f = append(f, ipv4Hdr(src, dst, proto, 0, len(l4))...)
	return append(f, l4...)
}

func arpBody(op uint16, sha [6]byte, spa netip.Addr, tpa netip.Addr) []byte {
	a := make([]byte, 28)
	binary.BigEndian.PutUint16(a[0:], 1)
	binary.BigEndian.PutUint16(a[2:], 0x0800)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], op)
	copy(a[8:], sha[:])
	s, t := spa.As4(), tpa.As4()
	copy(a[14:], s[:])
	copy(a[24:], t[:])
	return a
}

func ipv6Hdr(src, dst netip.Addr, nh byte, payloadLen int) []byte {
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(payloadLen))
	h[6] = nh
	h[7] = 255
	s, d := src.As16(), dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return h
}

// ndOpt is a link-layer address option (type 1 source, 2 target).
func ndOpt(typ byte, mac [6]byte) []byte {
	return append([]byte{typ, 1}, mac[:]...)
}

// nd builds an NS (135) or NA (136) message with target and options.
func nd(typ byte, target netip.Addr, opts ...[]byte) []byte {
	b := make([]byte, 24)
	b[0] = typ
	t := target.As16()
	copy(b[8:], t[:])
	for _, o := range opts {
		b = append(b, o...)
	}
	return b
}

func ipv6Frame(mac [6]byte, src, dst netip.Addr, nh byte, l4 []byte) []byte {
	f := eth(mac, 0x86dd)
	f = append(f, ipv6Hdr(src, dst, nh, len(l4))...)
	return append(f, l4...)
}

// gen makes random and adversarial frames around one configuration.
type gen struct {
	rng *rand.Rand
	cfg *Config
}

func (g *gen) n(k int) int       { return g.rng.IntN(k) }
func (g *gen) chance(p int) bool { return g.rng.IntN(100) < p }

func (g *gen) bytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(g.rng.Uint32())
	}
	return b
}

func (g *gen) mac() [6]byte {
	switch g.n(20) {
	case 0:
		return [6]byte(g.bytes(6))
	case 1:
		m := g.cfg.MAC
		m[g.n(6)] ^= 1 << g.n(8)
		return m
	}
	return g.cfg.MAC
}

func (g *gen) randomIn(p netip.Prefix) netip.Addr {
	a := p.Addr().AsSlice()
	rnd := g.bytes(len(a))
	for i := range a {
		bit := i * 8
		for j := 0; j < 8; j++ {
			if bit+j >= p.Bits() {
				a[i] = a[i]&^(0x80>>j) | rnd[i]&(0x80>>j)
			}
		}
	}
	r, _ := netip.AddrFromSlice(a)
	return r
}

func (g *gen) v4() netip.Addr {
	switch g.n(6) {
	case 0, 1:
		if len(g.cfg.IPv4) > 0 {
			return g.randomIn(g.cfg.IPv4[g.n(len(g.cfg.IPv4))])
		}
	case 2:
		return netip.IPv4Unspecified()
	case 3:
		return netip.AddrFrom4([4]byte(g.bytes(4)))
	}
	return g.randomIn(netip.MustParsePrefix("10.0.0.0/26"))
}

func (g *gen) v6() netip.Addr {
	switch g.n(8) {
	case 0, 1, 2:
		if len(g.cfg.IPv6) > 0 {
			return g.randomIn(g.cfg.IPv6[g.n(len(g.cfg.IPv6))])
		}
	case 3:
		return netip.IPv6Unspecified()
	case 4:
		return g.randomIn(LinkLocal)
	case 5:
		return g.randomIn(netip.MustParsePrefix("fe80::/16"))
	case 6:
		return netip.AddrFrom16([16]byte(g.bytes(16)))
	}
	return g.randomIn(netip.MustParsePrefix("2001:db8::/122"))
}

func (g *gen) vlanStack(f []byte) []byte {
	if !g.chance(15) {
		return f
	}
	tpids := []uint16{0x8100, 0x88a8, 0x9100}
	inner := binary.BigEndian.Uint16(f[12:])
	k := 1 + g.n(3)
	binary.BigEndian.PutUint16(f[12:], tpids[g.n(3)])
	for i := 0; i < k; i++ {
		next := inner
		if i < k-1 {
			next = tpids[g.n(3)]
		}
		f = append(f, vlanTag(next, uint16(g.n(4096)))...)
	}
	return f
}

func (g *gen) ipv4Body() []byte {
	proto := []byte{17, 17, 6, 1, byte(g.n(256))}[g.n(5)]
	var l4 []byte
	if proto == 17 {
		sp, dp := uint16(68), uint16(67)
		if g.chance(40) {
			sp, dp = uint16(g.n(70)), uint16(g.n(70))
		}
		l4 = udp(sp, dp, g.bytes(g.n(40)))
	} else {
		l4 = g.bytes(g.n(60))
	}
	var frag uint16
	if g.chance(20) {
		frag = uint16(g.rng.Uint32())
	}
	h := ipv4Hdr(g.v4(), g.v4(), proto, frag, len(l4))
	if g.chance(10) {
		h[0] = byte(g.rng.Uint32())
	} else if g.chance(10) {
		opts := 4 * (1 + g.n(10))
		h[0] = 0x40 | byte(5+opts/4)
		h = append(h, g.bytes(opts)...)
	}
	return append(h, l4...)
}

func (g *gen) arp() []byte {
	op := uint16(1 + g.n(2))
	if g.chance(5) {
		op = uint16(g.n(10))
	}
	a := arpBody(op, g.mac(), g.v4(), g.v4())
	if g.chance(10) {
		a[g.n(6)] = byte(g.rng.Uint32()) // lying hardware/protocol fields
	}
	return a
}

func (g *gen) ndOpts(unspec bool) []byte {
	var b []byte
	for i := g.n(4); i > 0; i-- {
		switch g.n(8) {
		case 0:
			b = append(b, 14, 1, 1, 2, 3, 4, 5, 6) // nonce
		case 1:
			l := g.n(4)
			o := append([]byte{byte(g.n(256)), byte(l)}, g.bytes(max(0, l*8-2))...)
			b = append(b, o...)
		case 2:
			b = append(b, 1, 2)
			b = append(b, g.bytes(14)...)
		default:
			typ := byte(1 + g.n(2))
			if unspec && g.chance(50) {
				typ = 2
			}
			b = append(b, ndOpt(typ, g.mac())...)
		}
	}
	if g.chance(5) {
		b = append(b, g.bytes(1+g.n(7))...)
	}
	return b
}

func (g *gen) ipv6Body() []byte {
	src := g.v6()
	var ext []byte
	nh := byte(58)
	switch g.n(10) {
	case 0:
		nh = 17
	case 1:
		nh = 6
	case 2:
		nh = byte(g.n(256))
	}
	upper := nh
	// Extension headers, built back to front.
	for i := g.n(4); g.chance(35) && i >= 0; i-- {
		t := []byte{0, 43, 60, 44, 51}[g.n(5)]
		var h []byte
		switch t {
		case 44:
			h = make([]byte, 8)
			if g.chance(50) {
				binary.BigEndian.PutUint16(h[2:], uint16(g.rng.Uint32()))
			} else {
				h[3] = byte(g.n(2)) // M flag only
			}
		case 51:
			l := g.n(3)
			h = make([]byte, (l+2)*4)
			h[1] = byte(l)
		default:
			l := g.n(3)
			h = make([]byte, (l+1)*8)
			h[1] = byte(l)
		}
		h[0] = nh
		nh = t
		ext = append(h, ext...)
	}
	var l4 []byte
	if upper != 58 {
		l4 = g.bytes(g.n(40))
	} else {
		switch g.n(10) {
		case 0:
			l4 = append([]byte{byte([]int{128, 133, 134, 137, 143}[g.n(5)]), 0, 0, 0}, g.bytes(g.n(30))...)
		case 1, 2, 3, 4:
			l4 = nd(135, g.v6(), []byte(g.ndOpts(src.IsUnspecified())))
		default:
			l4 = nd(136, g.v6(), []byte(g.ndOpts(false)))
		}
		if g.chance(5) {
			l4 = l4[:g.n(len(l4)+1)]
		}
	}
	body := append(ext, l4...)
	h := ipv6Hdr(src, g.v6(), nh, len(body))
	if g.chance(8) {
		binary.BigEndian.PutUint16(h[4:], uint16(g.n(len(body)+20)))
	}
	if g.chance(4) {
		h[0] = byte(g.rng.Uint32())
	}
	return append(h, body...)
}

// frame returns one random or adversarial frame of at least 14 bytes.
func (g *gen) frame() []byte {
	var proto uint16
	var body []byte
	switch r := g.n(100); {
	case r < 30:
		proto, body = 0x0800, g.ipv4Body()
	case r < 70:
		proto, body = 0x86dd, g.ipv6Body()
	case r < 88:
		proto, body = 0x0806, g.arp()
	default:
		proto = []uint16{0x88cc, 0x8035, 0x0042, 0x88a8, 0x8100, uint16(g.rng.Uint32())}[g.n(6)]
		body = g.bytes(g.n(60))
	}
	f := g.vlanStack(eth(g.mac(), proto))
	f = append(f, body...)
	if g.chance(10) {
		f = f[:14+g.n(len(f)-13)]
	}
	if g.chance(10) {
		f = append(f, g.bytes(g.n(20))...)
	}
	return f
}

// randomConfig returns a configuration with small address spaces, so
// random addresses hit and miss.
func randomConfig(rng *rand.Rand) *Config {
	g := &gen{rng: rng}
	c := &Config{
		AllowLinkLocal: rng.IntN(2) == 0,
		AllowVLAN:      rng.IntN(2) == 0,
		AllowOther:     rng.IntN(3) == 0,
	}
	c.MAC = [6]byte(g.bytes(6))
	c.MAC[0] &^= 1
	for i := rng.IntN(4); i > 0; i-- {
		bits := []int{32, 32, 30, 28}[rng.IntN(4)]
		c.IPv4 = append(c.IPv4, netip.PrefixFrom(g.randomIn(netip.MustParsePrefix("10.0.0.0/26")), bits).Masked())
	}
	for i := rng.IntN(4); i > 0; i-- {
		bits := []int{128, 128, 124, 64}[rng.IntN(4)]
		base := netip.MustParsePrefix("2001:db8::/122")
		if rng.IntN(5) == 0 {
			base = netip.MustParsePrefix("fe80::/120")
		}
		c.IPv6 = append(c.IPv6, netip.PrefixFrom(g.randomIn(base), bits).Masked())
	}
	return c
}
