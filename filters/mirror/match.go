package mirror

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Match selects the frames a mirror copies: every term given must hold
// (terms are ANDed), absent terms match anything. It is the Go model of
// matches() in mirror.c; TestMatchDifferential holds the two together.
//
// Grammar (ParseMatch), terms separated by commas or blanks:
//
//	src=PREFIX dst=PREFIX host=PREFIX
//	proto=tcp|udp|icmp|icmpv6|sctp|gre|esp|ah|N
//	sport=PORT[-PORT] dport=PORT[-PORT] port=PORT[-PORT]
//	bidir
//
// PREFIX is an IPv4 or IPv6 prefix (10.0.0.0/24, 2001:db8::/64) or a single
// address; host and port match the source or the destination; bidir also
// matches the reverse direction (source and destination, and source and
// destination ports, swapped), so one match selects both halves of a
// conversation.
type Match struct {
	// Src, Dst and Host (source or destination) are prefixes of one
	// address family; invalid = any. A frame of the other family never
	// matches an address term.
	Src, Dst, Host netip.Prefix
	// Proto is the IP protocol (IPv6: after the extension headers) when
	// HasProto.
	Proto    uint8
	HasProto bool
	// SPort, DPort and Port (source or destination) are TCP/UDP port
	// ranges; nil = any. A frame without ports (not TCP or UDP, or a
	// later fragment) never matches a port term.
	SPort, DPort, Port *PortRange
	// Bidir: the frame also matches when it would with source and
	// destination (addresses and ports) swapped.
	Bidir bool
}

// PortRange is an inclusive range of ports.
type PortRange struct{ Lo, Hi uint16 }

func (r *PortRange) has(p uint16) bool { return r.Lo <= p && p <= r.Hi }

func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(int(r.Lo))
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// IsZero reports whether m has no term: it matches every frame, IP or not.
func (m Match) IsZero() bool {
	return !m.Src.IsValid() && !m.Dst.IsValid() && !m.Host.IsValid() && !m.HasProto &&
		m.SPort == nil && m.DPort == nil && m.Port == nil && !m.Bidir
}

// needsPorts reports whether a term reads the transport ports.
func (m Match) needsPorts() bool { return m.SPort != nil || m.DPort != nil || m.Port != nil }

// needsL4 reports whether a term reads the transport protocol: only then
// are IPv6 extension headers walked.
func (m Match) needsL4() bool { return m.HasProto || m.needsPorts() }

// family is 4 or 6 for a match with address terms, else 0.
func (m Match) family() int {
	for _, p := range []netip.Prefix{m.Src, m.Dst, m.Host} {
		if p.IsValid() {
			if p.Addr().Is4() {
				return 4
			}
			return 6
		}
	}
	return 0
}

// Protocol names ParseMatch knows, and the name String uses.
var protoNames = map[string]uint8{"icmp": 1, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "ah": 51, "icmpv6": 58, "sctp": 132}

// IPv6 extension headers matches() walks over to find the transport
// protocol; a proto term naming one could never match.
const (
	ipv6HopByHop = 0
	ipv6Routing  = 43
	ipv6Fragment = 44
	ipv6DestOpts = 60
	// maxExtHeaders bounds the walk (MIRROR_MAX_EXT in mirror.c): a frame
	// with more is not mirrored by a match that needs its protocol.
	maxExtHeaders = 6
)

func isExtHeader(nh uint8) bool {
	return nh == ipv6HopByHop || nh == ipv6Routing || nh == ipv6Fragment || nh == ipv6DestOpts
}

// String is the match in canonical form: ParseMatch(m.String()) == m.
func (m Match) String() string {
	var terms []string
	for _, t := range []struct {
		key string
		p   netip.Prefix
	}{{"src", m.Src}, {"dst", m.Dst}, {"host", m.Host}} {
		if t.p.IsValid() {
			terms = append(terms, t.key+"="+t.p.String())
		}
	}
	if m.HasProto {
		name := strconv.Itoa(int(m.Proto))
		for n, v := range protoNames {
			if v == m.Proto {
				name = n
			}
		}
		terms = append(terms, "proto="+name)
	}
	for _, t := range []struct {
		key string
		r   *PortRange
	}{{"sport", m.SPort}, {"dport", m.DPort}, {"port", m.Port}} {
		if t.r != nil {
			terms = append(terms, t.key+"="+t.r.String())
		}
	}
	if m.Bidir {
		terms = append(terms, "bidir")
	}
	return strings.Join(terms, ",")
}

// MatchError is a match text ParseMatch refuses; Field names the term.
type MatchError struct {
	Field string // "src", "dport", …; "" for the text as a whole
	Msg   string
}

func (e *MatchError) Error() string {
	if e.Field == "" {
		return "match: " + e.Msg
	}
	return "match: " + e.Field + ": " + e.Msg
}

// ParseMatch parses the match grammar (see Match). The empty text is the
// zero Match (everything).
func ParseMatch(s string) (Match, error) {
	var m Match
	bad := func(field, format string, a ...any) (Match, error) {
		return Match{}, &MatchError{Field: field, Msg: fmt.Sprintf(format, a...)}
	}
	seen := map[string]bool{}
	for _, term := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }) {
		key, val, hasVal := strings.Cut(term, "=")
		if seen[key] {
			return bad(key, "given twice")
		}
		seen[key] = true
		if key == "bidir" {
			if hasVal {
				return bad(key, "takes no value")
			}
			m.Bidir = true
			continue
		}
		if !hasVal || val == "" {
			if _, known := keyDoc[key]; known {
				return bad(key, "missing value (want %s=%s)", key, keyDoc[key])
			}
		}
		switch key {
		case "src", "dst", "host":
			p, err := parseMatchPrefix(val)
			if err != nil {
				return bad(key, "%v", err)
			}
			switch key {
			case "src":
				m.Src = p
			case "dst":
				m.Dst = p
			default:
				m.Host = p
			}
		case "proto":
			n, ok := protoNames[strings.ToLower(val)]
			if !ok {
				v, err := strconv.ParseUint(val, 10, 8)
				if err != nil {
					return bad(key, "%q is not a protocol (want tcp, udp, icmp, icmpv6, sctp, gre, esp, ah or a number 1-255)", val)
				}
				n = uint8(v)
			}
			if isExtHeader(n) {
				return bad(key, "%d is an IPv6 extension header or reserved, not a transport protocol: omit proto to match any", n)
			}
			m.Proto, m.HasProto = n, true
		case "sport", "dport", "port":
			r, err := parsePortRange(val)
			if err != nil {
				return bad(key, "%v", err)
			}
			switch key {
			case "sport":
				m.SPort = &r
			case "dport":
				m.DPort = &r
			default:
				m.Port = &r
			}
		default:
			return bad("", "unknown term %q (known: src, dst, host, proto, sport, dport, port, bidir)", term)
		}
	}
	if err := m.check(); err != nil {
		return Match{}, err
	}
	return m, nil
}

// keyDoc is the value syntax of each keyed term, for messages.
var keyDoc = map[string]string{
	"src": "PREFIX", "dst": "PREFIX", "host": "PREFIX", "proto": "tcp|udp|icmp|icmpv6|N",
	"sport": "PORT[-PORT]", "dport": "PORT[-PORT]", "port": "PORT[-PORT]",
}

// check refuses matches no frame could satisfy or that mean nothing.
func (m Match) check() error {
	fam, famKey := 0, ""
	for _, t := range []struct {
		key string
		p   netip.Prefix
	}{{"src", m.Src}, {"dst", m.Dst}, {"host", m.Host}} {
		if !t.p.IsValid() {
			continue
		}
		f := 6
		if t.p.Addr().Is4() {
			f = 4
		}
		if fam != 0 && f != fam {
			return &MatchError{Field: t.key, Msg: fmt.Sprintf("%s is IPv%d but %s is IPv%d: no packet could match", t.p, f, famKey, fam)}
		}
		fam, famKey = f, t.key
	}
	if m.needsPorts() && m.HasProto && m.Proto != protoTCP && m.Proto != protoUDP {
		field := "port"
		switch {
		case m.SPort != nil:
			field = "sport"
		case m.DPort != nil:
			field = "dport"
		}
		return &MatchError{Field: field, Msg: fmt.Sprintf("ports need proto tcp or udp (proto is %d)", m.Proto)}
	}
	if m.Bidir && !m.Src.IsValid() && !m.Dst.IsValid() && m.SPort == nil && m.DPort == nil {
		return &MatchError{Field: "bidir", Msg: "needs src, dst, sport or dport (host, port and proto already match both directions)"}
	}
	return nil
}

func parseMatchPrefix(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return p, fmt.Errorf("%q is not an IP prefix (want 10.0.0.0/24 or 2001:db8::/64)", s)
		}
		if p != p.Masked() {
			return p, fmt.Errorf("%s has bits set past the prefix length (did you mean %s?)", s, p.Masked())
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return p, fmt.Errorf("%q is not an IP address or prefix", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		return p, fmt.Errorf("%s is IPv4-mapped: write the IPv4 prefix", s)
	}
	return p, nil
}

func parsePortRange(s string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	l, err1 := strconv.ParseUint(lo, 10, 16)
	h, err2 := strconv.ParseUint(hi, 10, 16)
	if err1 != nil || err2 != nil {
		return PortRange{}, fmt.Errorf("%q is not a port or range (want N or N-M, 0-65535)", s)
	}
	if l > h {
		return PortRange{}, fmt.Errorf("range %q is empty (first port above last)", s)
	}
	return PortRange{uint16(l), uint16(h)}, nil
}

const (
	protoTCP = 6
	protoUDP = 17
)

// packet is what matches() reads from a frame.
type packet struct {
	v6       bool
	src, dst [16]byte // IPv4: the first four bytes
	proto    uint8
	hasPorts bool
	sport    uint16
	dport    uint16
}

// Matches reports whether the Ethernet frame passes m, as mirror.c decides:
// a frame the match cannot parse (too short, wrong IP version, an IPv4
// header length below 5, too many IPv6 extension headers or one cut short,
// a TCP/UDP header cut short) is not mirrored by a match that needs the
// part it could not read. The zero Match passes every frame.
func (m Match) Matches(frame []byte) bool {
	if m.IsZero() {
		return true
	}
	p, ok := m.parse(frame)
	if !ok {
		return false
	}
	return m.test(&p, false) || m.Bidir && m.test(&p, true)
}

func (m Match) parse(f []byte) (packet, bool) {
	var p packet
	if len(f) < 14 {
		return p, false
	}
	var off int
	later := false
	switch binary.BigEndian.Uint16(f[12:]) {
	case 0x0800:
		if len(f) < 14+20 || f[14]>>4 != 4 || f[14]&0xf < 5 {
			return p, false
		}
		copy(p.src[:4], f[26:30])
		copy(p.dst[:4], f[30:34])
		p.proto = f[23]
		off = 14 + int(f[14]&0xf)*4
		later = binary.BigEndian.Uint16(f[20:])&0x1fff != 0
	case 0x86DD:
		if len(f) < 14+40 || f[14]>>4 != 6 {
			return p, false
		}
		p.v6 = true
		copy(p.src[:], f[22:38])
		copy(p.dst[:], f[38:54])
		p.proto = f[20]
		off = 14 + 40
		if m.needsL4() {
			for range maxExtHeaders {
				if !isExtHeader(p.proto) {
					break
				}
				if off+8 > len(f) {
					return p, false
				}
				nh := f[off]
				if p.proto == ipv6Fragment {
					later = binary.BigEndian.Uint16(f[off+2:])&0xfff8 != 0
					off += 8
				} else {
					off += (int(f[off+1]) + 1) * 8
				}
				p.proto = nh
				if later {
					break
				}
			}
			if !later && isExtHeader(p.proto) {
				return p, false
			}
		}
	default:
		return p, false
	}
	if m.needsPorts() && !later && (p.proto == protoTCP || p.proto == protoUDP) {
		if off+4 > len(f) {
			return p, false
		}
		p.hasPorts = true
		p.sport = binary.BigEndian.Uint16(f[off:])
		p.dport = binary.BigEndian.Uint16(f[off+2:])
	}
	return p, true
}

// test applies the terms to p, or to p reversed.
func (m Match) test(p *packet, swap bool) bool {
	src, dst, sp, dp := p.src, p.dst, p.sport, p.dport
	if swap {
		src, dst, sp, dp = dst, src, dp, sp
	}
	if fam := m.family(); fam != 0 && (fam == 6) != p.v6 {
		return false
	}
	in := func(pf netip.Prefix, a [16]byte) bool {
		if p.v6 {
			return pf.Contains(netip.AddrFrom16(a))
		}
		return pf.Contains(netip.AddrFrom4([4]byte(a[:4])))
	}
	if m.Src.IsValid() && !in(m.Src, src) ||
		m.Dst.IsValid() && !in(m.Dst, dst) ||
		m.Host.IsValid() && !in(m.Host, src) && !in(m.Host, dst) {
		return false
	}
	if m.HasProto && p.proto != m.Proto {
		return false
	}
	if m.needsPorts() && !p.hasPorts {
		return false
	}
	return (m.SPort == nil || m.SPort.has(sp)) &&
		(m.DPort == nil || m.DPort.has(dp)) &&
		(m.Port == nil || m.Port.has(sp) || m.Port.has(dp))
}

// mirror_match bits (MM_* in mirror.c).
const (
	mmSrc = 1 << iota
	mmDst
	mmHost
	mmProto
	mmSPort
	mmDPort
	mmPort
	mmBidir
)

// rodata is the match as mirror.c's .rodata variables.
func (m Match) rodata() map[string]any {
	var bits uint32
	v := map[string]any{}
	prefix := func(name string, p netip.Prefix, bit uint32) {
		var net, mask [4]uint32
		if p.IsValid() {
			bits |= bit
			a := p.Addr().AsSlice()
			for i := 0; i < len(a)/4; i++ {
				net[i] = binary.NativeEndian.Uint32(a[i*4:])
				var mb [4]byte
				n := min(max(p.Bits()-32*i, 0), 32)
				binary.BigEndian.PutUint32(mb[:], uint32(0xffffffff)<<(32-n)) // n = 0: 0
				mask[i] = binary.NativeEndian.Uint32(mb[:])
			}
		}
		v["mirror_"+name+"_net"], v["mirror_"+name+"_mask"] = net, mask
	}
	prefix("src", m.Src, mmSrc)
	prefix("dst", m.Dst, mmDst)
	prefix("host", m.Host, mmHost)
	if m.HasProto {
		bits |= mmProto
	}
	v["mirror_proto"] = uint32(m.Proto)
	ports := func(name string, r *PortRange, bit uint32) {
		var lo, hi uint32
		if r != nil {
			bits |= bit
			lo, hi = uint32(r.Lo), uint32(r.Hi)
		}
		v["mirror_"+name+"_lo"], v["mirror_"+name+"_hi"] = lo, hi
	}
	ports("sport", m.SPort, mmSPort)
	ports("dport", m.DPort, mmDPort)
	ports("port", m.Port, mmPort)
	if m.Bidir {
		bits |= mmBidir
	}
	v["mirror_match"] = bits
	v["mirror_family"] = uint32(m.family())
	return v
}
