package firewall

import "encoding/binary"

// Reject answers in the reference model: the same bytes firewall.c
// (fw_answer_tcp, fw_answer_icmp) makes of a rejected frame whose checksum
// state is CHECKSUM_NONE (BPF_PROG_TEST_RUN's), so the differential test
// can compare them. docs/firewall.md, "Reject", describes the answers.

const (
	answerTTL        = 64
	icmpUnreach      = 3
	icmpPortUnreach  = 3
	icmpAdminProhib  = 13
	icmp6Unreach     = 1
	icmp6AdminProhib = 1
	icmp6PortUnreach = 4
	quote6           = 48 // IPv6 header + 64 bits
	ethHeaderLen     = 14
)

// frameOffsets finds the IP header, L4 header and IP length of a frame
// ParseFrame accepted as IP (not a fragment), as fw_parse records them.
func frameOffsets(frame []byte, p *Packet) (l3, l4 int, iplen uint32) {
	l3 = ethHeaderLen
	et := binary.BigEndian.Uint16(frame[12:])
	for i := 0; i < maxVLANs && (et == 0x8100 || et == 0x88a8); i++ {
		et = binary.BigEndian.Uint16(frame[l3+2:])
		l3 += 4
	}
	if p.Family == 4 {
		return l3, l3 + int(frame[l3]&0xf)*4, uint32(binary.BigEndian.Uint16(frame[l3+2:]))
	}
	l4 = l3 + 40
	if isExtHeader(frame[l3+6]) {
		l4 = -1 // extension headers: never answered, exact offset unneeded
	}
	return l3, l4, 40 + uint32(binary.BigEndian.Uint16(frame[l3+4:]))
}

func isExtHeader(nh byte) bool {
	switch nh {
	case 0, 43, 60, 51, 44:
		return true
	}
	return false
}

// canAnswer mirrors fw_can_answer.
func canAnswer(frame []byte, p *Packet, l3, l4 int) bool {
	if p.Fragment || frame[0]&1 != 0 || p.isICMPError() {
		return false
	}
	if p.Proto == ProtoTCP && p.TCPFlags&tcpRST != 0 {
		return false
	}
	s, d := p.Src.AsSlice(), p.Dst.AsSlice()
	if p.Family == 4 {
		return s[0] < 224 && d[0] < 224 && !p.Src.IsUnspecified()
	}
	return s[0] != 0xff && d[0] != 0xff && !p.Src.IsUnspecified() && l4 == l3+40
}

// answer returns the frame firewall.c makes of a rejected frame, or nil
// when it sends none (fw_answer_* returning 0).
func answer(frame []byte, p *Packet) []byte {
	l3, l4, iplen := frameOffsets(frame, p)
	if p.Proto == ProtoTCP {
		return answerTCP(frame, p, l3, l4, iplen)
	}
	return answerICMP(frame, p, l3, l4)
}

func answerTCP(frame []byte, p *Packet, l3, l4 int, iplen uint32) []byte {
	if len(frame) < l4+20 {
		return nil
	}
	out := append([]byte(nil), frame[:l4+20]...)
	copy(out[0:6], frame[6:12])
	copy(out[6:12], frame[0:6])
	in := frame[l4 : l4+20]
	hl := uint32(l4 - l3)
	seg := iplen - hl - uint32(in[12]>>4)*4
	if in[13]&tcpSYN != 0 {
		seg++
	}
	if in[13]&tcpFIN != 0 {
		seg++
	}
	th := out[l4:]
	clear(th)
	copy(th[0:2], in[2:4])
	copy(th[2:4], in[0:2])
	if in[13]&tcpACK != 0 {
		copy(th[4:8], in[8:12])
		th[13] = tcpRST
	} else {
		binary.BigEndian.PutUint32(th[8:], binary.BigEndian.Uint32(in[4:])+seg)
		th[13] = tcpRST | tcpACK
	}
	th[12] = 5 << 4
	ip := out[l3:l4]
	var pseudo []byte
	src, dst := p.Dst.AsSlice(), p.Src.AsSlice() // the answer goes back
	if p.Family == 4 {
		for i := range ip {
			ip[i] = 1 // options become NOPs
		}
		clear(ip[:20])
		ip[0] = 0x40 | byte(hl/4)
		binary.BigEndian.PutUint16(ip[2:], uint16(hl+20))
		ip[6] = 0x40 // DF
		ip[8] = answerTTL
		ip[9] = ProtoTCP
		copy(ip[12:], src)
		copy(ip[16:], dst)
		binary.BigEndian.PutUint16(ip[10:], ^fold16(uint64(onesSum(ip))))
		pseudo = append(append(append([]byte{}, src...), dst...), 0, ProtoTCP, 0, 20)
	} else {
		clear(ip)
		ip[0] = 0x60
		ip[5] = 20
		ip[6] = ProtoTCP
		ip[7] = answerTTL
		copy(ip[8:], src)
		copy(ip[24:], dst)
		pseudo = append(append(append([]byte{}, src...), dst...), 0, 0, 0, 20, 0, 0, 0, ProtoTCP)
	}
	// The two bpf_l4_csum_replace diffs of fw_answer_tcp, as the kernel
	// applies them to a CHECKSUM_NONE frame.
	var field uint16
	field = csumFold(csumAdd(onesSum(th), ^uint32(field)))
	field = csumFold(csumAdd(onesSum(pseudo), ^uint32(field)))
	binary.BigEndian.PutUint16(th[16:], field)
	return out
}

func answerICMP(frame []byte, p *Packet, l3, l4 int) []byte {
	if l3 != ethHeaderLen {
		return nil
	}
	qlen := quote6
	iph := 40
	if p.Family == 4 {
		qlen = l4 - l3 + 8
		iph = 20
	}
	qlen = min(qlen, len(frame)-ethHeaderLen)
	quote := frame[l3 : l3+qlen]
	out := make([]byte, ethHeaderLen+iph+8+qlen)
	copy(out[0:6], frame[6:12])
	copy(out[6:12], frame[0:6])
	copy(out[12:14], frame[12:14])
	ip := out[ethHeaderLen : ethHeaderLen+iph]
	ic := out[ethHeaderLen+iph : ethHeaderLen+iph+8]
	copy(out[ethHeaderLen+iph+8:], quote)
	src, dst := p.Dst.AsSlice(), p.Src.AsSlice()
	var sum uint32
	if p.Family == 4 {
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(28+qlen))
		ip[6] = 0x40
		ip[8] = answerTTL
		ip[9] = ProtoICMP
		copy(ip[12:], src)
		copy(ip[16:], dst)
		binary.BigEndian.PutUint16(ip[10:], ^fold16(uint64(onesSum(ip))))
		ic[0], ic[1] = icmpUnreach, icmpAdminProhib
		if p.Proto == ProtoUDP {
			ic[1] = icmpPortUnreach
		}
	} else {
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(8+qlen))
		ip[6] = ProtoICMPv6
		ip[7] = answerTTL
		copy(ip[8:], src)
		copy(ip[24:], dst)
		ic[0], ic[1] = icmp6Unreach, icmp6AdminProhib
		if p.Proto == ProtoUDP {
			ic[1] = icmp6PortUnreach
		}
		sum = onesSum(ip[8:40]) + uint32(8+qlen) + ProtoICMPv6
	}
	sum = csumAdd(sum, onesSum(out[ethHeaderLen+iph:]))
	binary.BigEndian.PutUint16(ic[2:], ^fold16(uint64(sum)))
	return out
}

// onesSum is the one's complement sum of b as big-endian 16-bit words (an
// odd last byte padded with zero), folded to at most 17 bits.
func onesSum(b []byte) uint32 {
	var s uint64
	for i := 0; i+1 < len(b); i += 2 {
		s += uint64(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint64(b[len(b)-1]) << 8
	}
	return uint32(fold16(s))
}

// fold16 folds a one's complement sum to 16 bits.
func fold16(v uint64) uint16 {
	for v > 0xffff {
		v = v&0xffff + v>>16
	}
	return uint16(v)
}

// csumAdd and csumFold are the kernel's (32-bit end-around carry add;
// fold to 16 bits and complement).
func csumAdd(a, b uint32) uint32 {
	s := a + b
	if s < a {
		s++
	}
	return s
}

func csumFold(s uint32) uint16 {
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	return ^uint16(s)
}
