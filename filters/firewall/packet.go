package firewall

import (
	"encoding/binary"
	"net/netip"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// Parsing limits shared with firewall.c (FW_MAX_VLANS, FW_MAX_EXTHDRS).
const (
	maxVLANs   = 2
	maxExtHdrs = 8
)

// Kind is what a frame turned out to be.
type Kind uint8

const (
	// KindIP is an IPv4 or IPv6 packet whose headers parsed.
	KindIP Kind = iota
	// KindARP frames are always allowed (the spoof guard polices ARP).
	KindARP
	// KindNonIP is any other ethertype: the policy's non_ip action.
	KindNonIP
	// KindInvalid is a truncated or malformed IP packet: always dropped.
	KindInvalid
)

var kindNames = [...]string{"ip", "arp", "non-ip", "invalid"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(?)"
}

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// Packet is what the firewall looks at in a frame.
type Packet struct {
	Kind Kind
	// Dir is the direction the frame crosses the vNIC.
	Dir sdk.Direction
	// Family is 4 or 6.
	Family uint8
	// Src and Dst are the IP addresses.
	Src, Dst netip.Addr
	// Proto is the IPv4 protocol or the IPv6 upper-layer header.
	Proto uint8
	// Fragment is true for a fragment after the first: no L4 header.
	Fragment bool
	// P1 and P2 are the source and destination ports (TCP, UDP), or the
	// ICMP type and code; 0 otherwise.
	P1, P2 uint16
	// TCPFlags of a TCP segment.
	TCPFlags uint8
	// EchoID is the identifier of an ICMP/ICMPv6 echo request or reply.
	EchoID uint16
	// Inner is, for an ICMP error (ICMP destination unreachable, time
	// exceeded, parameter problem; ICMPv6 types 1-4), the packet it
	// quotes, seen in the opposite direction (it is the packet that went
	// the other way), when that names a trackable flow: IPv4 without
	// fragment offset / IPv6 without extension headers, then TCP or UDP
	// ports, an ICMP(v6) echo, or another protocol. nil otherwise.
	Inner *Packet
}

// isICMPError: the ICMP messages that quote a packet of a flow.
func (p *Packet) isICMPError() bool {
	switch {
	case p.Family == 4 && p.Proto == ProtoICMP:
		return p.P1 == 3 || p.P1 == 11 || p.P1 == 12
	case p.Family == 6 && p.Proto == ProtoICMPv6:
		return p.P1 >= 1 && p.P1 <= 4
	}
	return false
}

// parseInner parses the packet quoted by an ICMP error at b[off:], as
// firewall.c fw_parse_inner does; nil if it names no trackable flow.
func parseInner(b []byte, off int, outer *Packet) *Packet {
	has := func(off, n int) bool { return off >= 0 && off+n <= len(b) }
	in := &Packet{Kind: KindIP, Dir: 1 - outer.Dir, Family: outer.Family}
	var l4 int
	if outer.Family == 4 {
		if !has(off, 20) || b[off]>>4 != 4 {
			return nil
		}
		ihl := int(b[off]&0xf) * 4
		if ihl < 20 || be16(b, off+6)&0x1fff != 0 {
			return nil
		}
		in.Proto = b[off+9]
		in.Src = netip.AddrFrom4([4]byte(b[off+12 : off+16]))
		in.Dst = netip.AddrFrom4([4]byte(b[off+16 : off+20]))
		l4 = off + ihl
	} else {
		if !has(off, 40) || b[off]>>4 != 6 {
			return nil
		}
		in.Proto = b[off+6]
		switch in.Proto {
		case 0, 43, 60, 51, 44:
			return nil
		}
		in.Src = netip.AddrFrom16([16]byte(b[off+8 : off+24]))
		in.Dst = netip.AddrFrom16([16]byte(b[off+24 : off+40]))
		l4 = off + 40
	}
	switch in.Proto {
	case ProtoTCP, ProtoUDP:
		if !has(l4, 8) {
			return nil
		}
		in.P1, in.P2 = be16(b, l4), be16(b, l4+2)
	case ProtoICMP, ProtoICMPv6:
		if !has(l4, 8) {
			return nil
		}
		in.P1, in.P2 = uint16(b[l4]), uint16(b[l4+1])
		in.EchoID = be16(b, l4+4)
		if !in.isEcho() {
			return nil
		}
	}
	return in
}

func be16(b []byte, off int) uint16 { return binary.BigEndian.Uint16(b[off:]) }

// ParseFrame parses an Ethernet frame exactly as firewall.c does.
func ParseFrame(b []byte, dir sdk.Direction) Packet {
	p := Packet{Dir: dir}
	has := func(off, n int) bool { return off >= 0 && off+n <= len(b) }
	if !has(0, 14) {
		p.Kind = KindInvalid
		return p
	}
	off := 14
	et := be16(b, 12)
	for range maxVLANs {
		if et != 0x8100 && et != 0x88a8 {
			break
		}
		if !has(off, 4) {
			p.Kind = KindInvalid
			return p
		}
		et = be16(b, off+2)
		off += 4
	}
	var l4 int
	switch et {
	case 0x0806:
		p.Kind = KindARP
		return p
	case 0x0800:
		if !has(off, 20) || b[off]>>4 != 4 {
			p.Kind = KindInvalid
			return p
		}
		ihl := int(b[off]&0xf) * 4
		if ihl < 20 || !has(off, ihl) {
			p.Kind = KindInvalid
			return p
		}
		p.Family = 4
		p.Proto = b[off+9]
		p.Src = netip.AddrFrom4([4]byte(b[off+12 : off+16]))
		p.Dst = netip.AddrFrom4([4]byte(b[off+16 : off+20]))
		if be16(b, off+6)&0x1fff != 0 {
			p.Fragment = true
			return p
		}
		l4 = off + ihl
	case 0x86dd:
		if !has(off, 40) || b[off]>>4 != 6 {
			p.Kind = KindInvalid
			return p
		}
		p.Family = 6
		p.Src = netip.AddrFrom16([16]byte(b[off+8 : off+24]))
		p.Dst = netip.AddrFrom16([16]byte(b[off+24 : off+40]))
		nh := b[off+6]
		l4 = off + 40
		done := false
		for range maxExtHdrs {
			switch nh {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if !has(l4, 2) {
					p.Kind = KindInvalid
					return p
				}
				nh, l4 = b[l4], l4+(int(b[l4+1])+1)*8
			case 51: // authentication header
				if !has(l4, 2) {
					p.Kind = KindInvalid
					return p
				}
				nh, l4 = b[l4], l4+(int(b[l4+1])+2)*4
			case 44: // fragment
				if !has(l4, 8) {
					p.Kind = KindInvalid
					return p
				}
				frag := be16(b, l4+2) & 0xfff8
				nh, l4 = b[l4], l4+8
				if frag != 0 {
					p.Proto = nh
					p.Fragment = true
					return p
				}
			default:
				done = true
			}
			if done {
				break
			}
		}
		if !done {
			switch nh {
			case 0, 43, 60, 51, 44:
				p.Kind = KindInvalid // more extension headers than we walk
				return p
			}
		}
		p.Proto = nh
	default:
		p.Kind = KindNonIP
		return p
	}
	switch p.Proto {
	case ProtoTCP:
		if !has(l4, 20) || b[l4+12]>>4 < 5 {
			p.Kind = KindInvalid
			return p
		}
		p.P1, p.P2 = be16(b, l4), be16(b, l4+2)
		p.TCPFlags = b[l4+13]
	case ProtoUDP:
		if !has(l4, 8) {
			p.Kind = KindInvalid
			return p
		}
		p.P1, p.P2 = be16(b, l4), be16(b, l4+2)
	case ProtoICMP, ProtoICMPv6:
		if !has(l4, 8) {
			p.Kind = KindInvalid
			return p
		}
		p.P1, p.P2 = uint16(b[l4]), uint16(b[l4+1])
		p.EchoID = be16(b, l4+4)
		if p.isICMPError() {
			p.Inner = parseInner(b, l4+8, &p)
		}
	}
	return p
}

// validTCPFlags: the SYN/ACK/RST/FIN combinations a real stack sends.
// Everything else (SYN+FIN, null, Xmas, ...) is dropped as invalid.
func validTCPFlags(f uint8) bool {
	switch f & (tcpFIN | tcpSYN | tcpRST | tcpACK) {
	case tcpSYN, tcpSYN | tcpACK, tcpRST, tcpRST | tcpACK, tcpFIN | tcpACK, tcpACK:
		return true
	}
	return false
}

// isEcho reports an ICMP(v6) echo request or reply: the messages tracked
// as pseudo-flows by their identifier.
func (p *Packet) isEcho() bool {
	switch p.Proto {
	case ProtoICMP:
		return !p.Fragment && (p.P1 == 8 || p.P1 == 0)
	case ProtoICMPv6:
		return !p.Fragment && (p.P1 == 128 || p.P1 == 129)
	}
	return false
}

// isND reports IPv6 router/neighbour solicitations and advertisements,
// always allowed like ARP.
func (p *Packet) isND() bool {
	return p.Proto == ProtoICMPv6 && !p.Fragment && p.P1 >= 133 && p.P1 <= 136
}
