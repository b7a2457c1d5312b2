package spoofguard

import (
	"encoding/binary"
	"net/netip"
)

// Verdict of the reference model: Pass (VF_CONTINUE) or a drop reason.
type Verdict struct {
	Drop   bool
	Reason Reason // meaningful when Drop
}

var pass = Verdict{}

func drop(r Reason) Verdict { return Verdict{Drop: true, Reason: r} }

// Model is the Go reference model of spoofguard.c: the same rules in plain
// Go, checked against the eBPF program by the differential test.
type Model struct {
	cfg *Config
	v6  []netip.Prefix // cfg.IPv6 plus fe80::/64 when allowed
}

// NewModel returns the model of an instance configured with c.
func NewModel(c *Config) *Model {
	m := &Model{cfg: c, v6: append([]netip.Prefix{}, c.IPv6...)}
	if c.AllowLinkLocal {
		m.v6 = append(m.v6, LinkLocal)
	}
	return m
}

func (m *Model) own4(b []byte) bool {
	a := netip.AddrFrom4([4]byte(b[:4]))
	for _, p := range m.cfg.IPv4 {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (m *Model) own6(b []byte) bool {
	a := netip.AddrFrom16([16]byte(b[:16]))
	for _, p := range m.v6 {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (m *Model) macEq(b []byte) bool { return [6]byte(b[:6]) == m.cfg.MAC }

func isVLAN(proto uint16) bool { return proto == 0x8100 || proto == 0x88a8 || proto == 0x9100 }

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// Decide returns the verdict on a frame the VM sends. vlanPresent says the
// kernel already took one VLAN tag out of the frame (skb->vlan_present).
func (m *Model) Decide(f []byte, vlanPresent bool) Verdict {
	if len(f) < 14 {
		return drop(ReasonMalformed)
	}
	if !m.macEq(f[6:]) {
		return drop(ReasonMAC)
	}
	proto := binary.BigEndian.Uint16(f[12:])
	off, tags := 14, 0
	if vlanPresent {
		if !m.cfg.AllowVLAN {
			return drop(ReasonVLAN)
		}
		tags = 1
	}
	for isVLAN(proto) {
		if !m.cfg.AllowVLAN || tags >= 2 {
			return drop(ReasonVLAN)
		}
		if off+4 > len(f) {
			return drop(ReasonMalformed)
		}
		proto = binary.BigEndian.Uint16(f[off+2:])
		off += 4
		tags++
	}
	switch proto {
	case 0x0800:
		return m.ipv4(f, off)
	case 0x86dd:
		return m.ipv6(f, off)
	case 0x0806:
		return m.arp(f, off)
	}
	if m.cfg.AllowOther {
		return pass
	}
	return drop(ReasonEthertype)
}

func (m *Model) ipv4(f []byte, off int) Verdict {
	if off+20 > len(f) {
		return drop(ReasonMalformed)
	}
	h := f[off:]
	ihl := int(h[0] & 0xf)
	if h[0]>>4 != 4 || ihl < 5 {
		return drop(ReasonMalformed)
	}
	if m.own4(h[12:]) {
		return pass
	}
	// DHCP client before it has an address: 0.0.0.0, UDP 68 -> 67, whole.
	if !allZero(h[12:16]) || h[9] != 17 || binary.BigEndian.Uint16(h[6:])&0x3fff != 0 {
		return drop(ReasonIPv4)
	}
	l4 := off + ihl*4
	if l4+4 > len(f) {
		return drop(ReasonIPv4)
	}
	if binary.BigEndian.Uint16(f[l4:]) == 68 && binary.BigEndian.Uint16(f[l4+2:]) == 67 {
		return pass
	}
	return drop(ReasonIPv4)
}

func (m *Model) arp(f []byte, off int) Verdict {
	if off+28 > len(f) {
		return drop(ReasonMalformed)
	}
	a := f[off:]
	op := binary.BigEndian.Uint16(a[6:])
	if binary.BigEndian.Uint16(a[0:]) != 1 || binary.BigEndian.Uint16(a[2:]) != 0x0800 ||
		a[4] != 6 || a[5] != 4 || (op != 1 && op != 2) {
		return drop(ReasonARP)
	}
	if !m.macEq(a[8:]) {
		return drop(ReasonARP)
	}
	if m.own4(a[14:]) {
		return pass
	}
	// RFC 5227 probe for one of the vNIC's own addresses.
	if op == 1 && allZero(a[14:18]) && m.own4(a[24:]) {
		return pass
	}
	return drop(ReasonARP)
}

func (m *Model) ipv6(f []byte, off int) Verdict {
	if off+40 > len(f) {
		return drop(ReasonMalformed)
	}
	h := f[off:]
	if h[0]>>4 != 6 {
		return drop(ReasonMalformed)
	}
	unspec := allZero(h[8:24])
	if !unspec && !m.own6(h[8:]) {
		return drop(ReasonIPv6)
	}
	notND := pass
	if unspec {
		notND = drop(ReasonIPv6)
	}
	pos := off + 40
	end := min(pos+int(binary.BigEndian.Uint16(h[4:])), len(f))
	nh := h[6]
	frag := false
	isExt := func(nh byte) bool { return nh == 0 || nh == 43 || nh == 60 || nh == 51 || nh == 44 }
	for i := 0; i < 8 && isExt(nh); i++ {
		switch nh {
		case 0, 43, 60:
			if pos+2 > len(f) {
				return drop(ReasonMalformed)
			}
			nh, pos = f[pos], pos+(int(f[pos+1])+1)*8
		case 51:
			if pos+2 > len(f) {
				return drop(ReasonMalformed)
			}
			nh, pos = f[pos], pos+(int(f[pos+1])+2)*4
		case 44:
			if pos+8 > len(f) {
				return drop(ReasonMalformed)
			}
			fo := binary.BigEndian.Uint16(f[pos+2:]) & 0xfff8
			nh, pos = f[pos], pos+8
			frag = true
			if fo != 0 {
				return notND
			}
		}
	}
	if isExt(nh) {
		return drop(ReasonMalformed)
	}
	if nh != 58 {
		return notND
	}
	if pos+4 > len(f) {
		return drop(ReasonMalformed)
	}
	typ := f[pos]
	if frag && typ >= 133 && typ <= 137 {
		return drop(ReasonND)
	}
	if typ != 135 && typ != 136 {
		return notND
	}
	if unspec && typ == 136 {
		return drop(ReasonIPv6)
	}
	if pos+24 > end {
		return drop(ReasonND)
	}
	if (typ == 136 || unspec) && !m.own6(f[pos+8:]) {
		return drop(ReasonND)
	}
	// Options: well-formed, at most 8, link-layer ones the vNIC's MAC.
	p := pos + 24
	for i := 0; i < 8; i++ {
		if p >= end {
			return pass
		}
		if end-p < 2 {
			return drop(ReasonND)
		}
		ot, ol := f[p], int(f[p+1])*8
		if ol == 0 || p+ol > end {
			return drop(ReasonND)
		}
		if ot == 1 || ot == 2 {
			if ol != 8 || (unspec && ot == 1) || !m.macEq(f[p+2:]) {
				return drop(ReasonND)
			}
		}
		p += ol
	}
	if p >= end {
		return pass
	}
	return drop(ReasonND)
}
