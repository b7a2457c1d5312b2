package encap

import (
	"encoding/binary"
	"net/netip"
)

// Reference model of the replies the filter builds in place, and frame
// builders for the eBPF tests.

const (
	etherARP  = 0x0806
	etherIPv4 = 0x0800
	etherIPv6 = 0x86dd
)

func ethHdr(dst, src [6]byte, proto uint16) []byte {
	b := make([]byte, 14)
	copy(b, dst[:])
	copy(b[6:], src[:])
	binary.BigEndian.PutUint16(b[12:], proto)
	return b
}

var broadcast = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// arpRequest asks, from sha/spa, who has tpa.
func arpRequest(sha [6]byte, spa, tpa netip.Addr) []byte {
	f := ethHdr(broadcast, sha, etherARP)
	a := make([]byte, 28)
	binary.BigEndian.PutUint16(a[0:], 1)
	binary.BigEndian.PutUint16(a[2:], etherIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], 1)
	copy(a[8:], sha[:])
	s, d := spa.As4(), tpa.As4()
	copy(a[14:], s[:])
	copy(a[24:], d[:])
	return append(f, a...)
}

// arpReply is the answer a host owning tpa with MAC mac sends to req.
func arpReply(req []byte, mac [6]byte) []byte {
	out := append([]byte(nil), req...)
	copy(out[0:6], req[6:12])
	copy(out[6:12], mac[:])
	binary.BigEndian.PutUint16(out[20:], 2)
	copy(out[22:28], mac[:])
	copy(out[28:32], req[38:42])
	copy(out[32:38], req[22:28])
	copy(out[38:42], req[28:32])
	return out
}

// solicitedNode is the solicited-node multicast group of a.
func solicitedNode(a netip.Addr) netip.Addr {
	b := a.As16()
	g := netip.MustParseAddr("ff02::1:ff00:0").As16()
	copy(g[13:], b[13:])
	return netip.AddrFrom16(g)
}

func ipv6Hdr(src, dst netip.Addr, next byte, hop byte, payloadLen int) []byte {
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(payloadLen))
	h[6], h[7] = next, hop
	s, d := src.As16(), dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return h
}

// icmp6Checksum computes the ICMPv6 checksum of msg (checksum field zero)
// between src and dst.
func icmp6Checksum(src, dst netip.Addr, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for ; len(b) >= 2; b = b[2:] {
			sum += uint32(b[0])<<8 | uint32(b[1])
		}
		if len(b) == 1 {
			sum += uint32(b[0]) << 8
		}
	}
	s, d := src.As16(), dst.As16()
	add(s[:])
	add(d[:])
	var l [8]byte
	binary.BigEndian.PutUint32(l[:], uint32(len(msg)))
	l[7] = 58
	add(l[:])
	add(msg)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// neighborSolicitation from mac/src for target, with the source
// link-layer address option.
func neighborSolicitation(mac [6]byte, src, target netip.Addr) []byte {
	dst := solicitedNode(target)
	g := dst.As16()
	dmac := [6]byte{0x33, 0x33, g[12], g[13], g[14], g[15]}
	msg := make([]byte, 32)
	msg[0] = 135
	t := target.As16()
	copy(msg[8:], t[:])
	msg[24], msg[25] = 1, 1
	copy(msg[26:], mac[:])
	binary.BigEndian.PutUint16(msg[2:], icmp6Checksum(src, dst, msg))
	f := ethHdr(dmac, mac, etherIPv6)
	f = append(f, ipv6Hdr(src, dst, 58, 255, len(msg))...)
	return append(f, msg...)
}

// neighborAdvertisement is the solicited answer of target's owner (MAC
// mac) to the solicitation req.
func neighborAdvertisement(req []byte, target netip.Addr, mac [6]byte) []byte {
	var reqMAC [6]byte
	copy(reqMAC[:], req[6:12])
	src, _ := netip.AddrFromSlice(req[22:38])
	msg := make([]byte, 32)
	msg[0] = 136
	binary.BigEndian.PutUint32(msg[4:], 0x60000000) // solicited, override
	t := target.As16()
	copy(msg[8:], t[:])
	msg[24], msg[25] = 2, 1
	copy(msg[26:], mac[:])
	binary.BigEndian.PutUint16(msg[2:], icmp6Checksum(target, src, msg))
	f := ethHdr(reqMAC, mac, etherIPv6)
	f = append(f, ipv6Hdr(target, src, 58, 255, len(msg))...)
	return append(f, msg...)
}

// ipv4Frame is an Ethernet frame carrying an IPv4/UDP (or TCP header
// only) packet of l3Len bytes.
func ipv4Frame(dst, src [6]byte, proto byte, l3Len int) []byte {
	f := ethHdr(dst, src, etherIPv4)
	ip := make([]byte, l3Len)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(l3Len))
	ip[8], ip[9] = 64, proto
	copy(ip[12:], []byte{10, 0, 0, 1})
	copy(ip[16:], []byte{10, 0, 0, 2})
	if proto == 6 {
		ip[20+12] = 8 << 4 // TCP header of 32 bytes (timestamps)
	}
	return append(f, ip...)
}

// decision is what the instance does with a frame the VM sends.
type decision int

const (
	decDropSrcMAC decision = iota
	decDropOversize
	decARPReply
	decNDReply
	decLocal
	decRemote
	decFlood
	decDropSelf
)

var decisionNames = []string{"drop_src_mac", "drop_oversize", "arp_reply", "nd_reply", "local", "remote", "flood", "drop_self"}

func (d decision) String() string { return decisionNames[d] }

// model is the Go statement of the from-vm rules of encap.c.
type model struct {
	mac    [6]byte
	maxLen int              // largest frame the underlay carries
	local  map[[6]byte]bool // local vNICs of the segment (registry)
	tables *Tables          // the compiled segment
}

func (m *model) decide(f []byte, gsoSize int) decision {
	var src, dst [6]byte
	copy(dst[:], f[0:6])
	copy(src[:], f[6:12])
	proto := binary.BigEndian.Uint16(f[12:14])
	if src != m.mac {
		return decDropSrcMAC
	}
	if gsoSize == 0 && len(f) > m.maxLen {
		return decDropOversize
	}
	if gsoSize > 0 && proto == etherIPv4 {
		hdr := 14 + int(f[14]&0xf)*4
		if f[14+9] == 6 {
			hdr += int(f[hdr+12]>>4) * 4
		} else {
			hdr += 8
		}
		if hdr+gsoSize > m.maxLen {
			return decDropOversize
		}
	}
	switch proto {
	case etherARP:
		if len(f) >= 42 && binary.BigEndian.Uint16(f[14:]) == 1 && binary.BigEndian.Uint16(f[16:]) == etherIPv4 &&
			f[18] == 6 && f[19] == 4 && binary.BigEndian.Uint16(f[20:]) == 1 {
			tpa := netip.AddrFrom4([4]byte(f[38:42]))
			spa := netip.AddrFrom4([4]byte(f[28:32]))
			if mac, ok := m.tables.Neigh[tpa]; ok && mac != m.mac && spa != tpa {
				return decARPReply
			}
		}
	case etherIPv6:
		if len(f) == 86 && f[20] == 58 && f[21] == 255 && binary.BigEndian.Uint16(f[18:]) == 32 &&
			f[54] == 135 && f[55] == 0 && f[78] == 1 && f[79] == 1 {
			src, _ := netip.AddrFromSlice(f[22:38])
			target, _ := netip.AddrFromSlice(f[62:78])
			if mac, ok := m.tables.Neigh[target]; ok && mac != m.mac && !src.IsUnspecified() {
				return decNDReply
			}
		}
	}
	if dst[0]&1 == 0 {
		switch {
		case dst == m.mac:
			return decDropSelf
		case m.local[dst]:
			return decLocal
		}
		if _, ok := m.tables.Remote[dst]; ok {
			return decRemote
		}
	}
	return decFlood
}

// tcpSYN is a TCP SYN (or SYN-ACK with ack) from src to dst with an MSS
// option, window scale and SACK-permitted, and a correct checksum.
func tcpSYN(dstMAC, srcMAC [6]byte, src, dst netip.Addr, mss uint16, ack bool) []byte {
	tcp := make([]byte, 32)
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5001)
	binary.BigEndian.PutUint32(tcp[4:], 1)
	tcp[12] = 8 << 4
	tcp[13] = 0x02
	if ack {
		tcp[13] |= 0x10
		binary.BigEndian.PutUint32(tcp[8:], 7)
	}
	binary.BigEndian.PutUint16(tcp[14:], 64240)
	// options: NOP, window scale 7, MSS, SACK permitted, NOP, NOP, EOL pad
	copy(tcp[20:], []byte{1, 3, 3, 7, 2, 4, byte(mss >> 8), byte(mss), 4, 2, 1, 0})
	var f []byte
	if src.Is4() {
		f = ethHdr(dstMAC, srcMAC, etherIPv4)
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(tcp)))
		ip[8], ip[9] = 64, 6
		s, d := src.As4(), dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], ^onesSum(ip))
		f = append(f, ip...)
	} else {
		f = append(ethHdr(dstMAC, srcMAC, etherIPv6), ipv6Hdr(src, dst, 6, 64, len(tcp))...)
	}
	binary.BigEndian.PutUint16(tcp[16:], tcpChecksum(src, dst, tcp))
	return append(f, tcp...)
}

func onesSum(b []byte) uint16 {
	var sum uint32
	for ; len(b) >= 2; b = b[2:] {
		sum += uint32(b[0])<<8 | uint32(b[1])
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// tcpChecksum computes the TCP checksum of seg (checksum field zero).
func tcpChecksum(src, dst netip.Addr, seg []byte) uint16 {
	var pseudo []byte
	pseudo = append(pseudo, src.AsSlice()...)
	pseudo = append(pseudo, dst.AsSlice()...)
	if src.Is4() {
		pseudo = append(pseudo, 0, 6, byte(len(seg)>>8), byte(len(seg)))
	} else {
		pseudo = append(pseudo, 0, 0, byte(len(seg)>>8), byte(len(seg)), 0, 0, 0, 6)
	}
	c := append(pseudo, seg...)
	return ^onesSum(c)
}

// synMSS reads the MSS option of a frame built by tcpSYN and checks its
// TCP checksum.
func synMSS(f []byte) (mss uint16, checksumOK bool) {
	l3 := 14 + 20
	src, _ := netip.AddrFromSlice(f[26:30])
	dst, _ := netip.AddrFromSlice(f[30:34])
	if binary.BigEndian.Uint16(f[12:]) == etherIPv6 {
		l3 = 14 + 40
		src, _ = netip.AddrFromSlice(f[22:38])
		dst, _ = netip.AddrFromSlice(f[38:54])
	}
	seg := append([]byte(nil), f[l3:]...)
	got := binary.BigEndian.Uint16(seg[16:])
	seg[16], seg[17] = 0, 0
	return binary.BigEndian.Uint16(seg[26:]), got == tcpChecksum(src, dst, seg)
}
