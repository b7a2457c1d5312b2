package encrypt

import (
	"encoding/binary"
	"net/netip"
)

// Verdict is what the fast path does with a frame.
type Verdict int

const (
	// Continue: the frame goes on along the chain, untouched.
	Continue Verdict = iota
	// Redirect: into the tunnel.
	Redirect
	// Drop: dropped and counted.
	Drop
)

func (v Verdict) String() string {
	return [...]string{"continue", "redirect", "drop"}[v]
}

// Model is the Go reference of encrypt.c: the same decision from the same
// tables, for differential tests.
type Model struct {
	Routes map[netip.Prefix]Route
	// Pairs is enc_pairs; Flags enc_config's flags (cfgPairs, cfgGuard).
	Pairs map[netip.Prefix]Sides
	Flags uint32
	// Live reports whether slot's lease is current.
	Live func(slot uint32) bool
	// Tunnel is the tunnel's ifindex, 0 while stopped.
	Tunnel uint32
}

// statUnsafe counts, in slot peerNone, frames from the VM that cannot be
// classified safely (ENC_STAT_UNSAFE).
const statUnsafe = 1

// Decide returns the verdict for an Ethernet frame in direction toVM
// (false: from the VM) that entered the host on ingress (to-vm only), and
// the counter it moves: slot and statistic (numStats: none).
func (m *Model) Decide(frame []byte, toVM bool, ingress uint32) (v Verdict, slot, stat uint32) {
	src, dst, v6, v4end, res := packetAddrs(frame)
	switch res {
	case addrNotIP:
		return Continue, 0, numStats
	case addrShort, addrTagged:
		if toVM {
			return Continue, 0, numStats
		}
		return m.unsafe()
	}
	if toVM {
		r, ok := m.lookup(src)
		if !ok || !r.Protected() {
			if m.Flags&cfgPairs == 0 || !m.pairMatch(src, dst) {
				return Continue, 0, numStats
			}
			if ok && r.Peer >= peerNone && r.Flags&flagNoPeer == 0 {
				return Continue, 0, numStats
			}
		}
		peer := uint32(peerNone)
		if ok {
			peer = r.Peer
		}
		if m.Tunnel != 0 && ingress == m.Tunnel {
			return Continue, min(peer, peerNone), 4
		}
		return Drop, min(peer, peerNone), 2
	}
	r, ok := m.lookup(dst)
	if !ok || !r.Protected() {
		if m.Flags&cfgPairs != 0 && m.pairMatch(src, dst) {
			if !ok || r.Flags&flagNoPeer != 0 {
				return Drop, peerNone, 3
			}
			if r.Peer >= peerNone {
				return Continue, 0, numStats
			}
		} else {
			if v6 != nil && !m.v6Safe(frame, src, v6) {
				return m.unsafe()
			}
			if v4end != 0 && v4end != 34 && !v4Safe(frame, v4end) {
				return m.unsafe()
			}
			return Continue, 0, numStats
		}
	}
	if r.Flags&flagNoPeer != 0 {
		return Drop, peerNone, 3
	}
	if r.Peer >= MaxPeers || m.Tunnel == 0 || !m.Live(r.Peer) {
		return Drop, min(r.Peer, peerNone), 1
	}
	return Redirect, r.Peer, 0
}

func (m *Model) unsafe() (Verdict, uint32, uint32) {
	if m.Flags&cfgGuard == 0 {
		return Continue, 0, numStats
	}
	return Drop, peerNone, statUnsafe
}

const (
	addrOK = iota
	addrNotIP
	addrShort
	addrTagged
)

// v6Walk is where an IPv6 packet's extension headers start.
type v6Walk struct {
	next byte
	off  int
}

// packetAddrs returns an IPv4 or IPv6 packet's source and destination,
// for IPv6 where its extension headers start, for IPv4 where its header
// ends.
func packetAddrs(f []byte) (src, dst netip.Addr, v6 *v6Walk, v4end int, res int) {
	if len(f) < 14 {
		return src, dst, nil, 0, addrNotIP
	}
	switch binary.BigEndian.Uint16(f[12:]) {
	case 0x0800:
		if len(f) < 14+20 {
			return src, dst, nil, 0, addrShort
		}
		return netip.AddrFrom4([4]byte(f[26:30])), netip.AddrFrom4([4]byte(f[30:34])), nil, 14 + int(f[14]&0xf)*4, addrOK
	case 0x86dd:
		if len(f) < 14+40 {
			return src, dst, nil, 0, addrShort
		}
		return netip.AddrFrom16([16]byte(f[22:38])).Unmap(), netip.AddrFrom16([16]byte(f[38:54])).Unmap(), &v6Walk{next: f[20], off: 54}, 0, addrOK
	case 0x8100, 0x88a8:
		return src, dst, nil, 0, addrTagged
	}
	return src, dst, nil, 0, addrNotIP
}

// v4Safe is v4_safe in encrypt.c.
func v4Safe(f []byte, end int) bool {
	off := 34
	if end < off {
		return false
	}
	for range 20 {
		if off >= end {
			return true
		}
		if len(f) <= off {
			return false
		}
		switch f[off] {
		case 0:
			return true
		case 1:
			off++
			continue
		case 131, 137:
			return false
		}
		if len(f) <= off+1 || f[off+1] < 2 {
			return false
		}
		off += int(f[off+1])
	}
	return off >= end
}

// protectedDst is protected_dst in encrypt.c.
func (m *Model) protectedDst(src, dst netip.Addr) bool {
	if r, ok := m.lookup(dst); ok && r.Protected() {
		return true
	}
	return m.Flags&cfgPairs != 0 && m.pairMatch(src, dst)
}

// v6Safe is v6_safe in encrypt.c.
func (m *Model) v6Safe(f []byte, src netip.Addr, w *v6Walk) bool {
	next, off := w.next, w.off
	for range 8 {
		switch next {
		case 0, 60:
			if len(f) < off+2 {
				return false
			}
			next, off = f[off], off+(int(f[off+1])+1)*8
		case 51:
			if len(f) < off+2 {
				return false
			}
			next, off = f[off], off+(int(f[off+1])+2)*4
		case 43:
			if len(f) < off+4 {
				return false
			}
			if t := f[off+2]; t != 0 && t != 2 && t != 4 {
				return false
			}
			n := int(f[off+1]) / 2
			if n > 8 {
				return false
			}
			for j := range n {
				o := off + 8 + j*16
				if len(f) < o+16 {
					return false
				}
				if m.protectedDst(src, netip.AddrFrom16([16]byte(f[o:o+16])).Unmap()) {
					return false
				}
			}
			next, off = f[off], off+(int(f[off+1])+1)*8
		case 44, 50, 59:
			return true
		case 135, 139, 140, 253, 254:
			return false
		default:
			return true
		}
	}
	return false
}

func (m *Model) pairMatch(x, y netip.Addr) bool {
	sx, ok := lookupLPM(m.Pairs, x)
	if !ok {
		return false
	}
	sy, ok := lookupLPM(m.Pairs, y)
	if !ok {
		return false
	}
	return sx.A&sy.B|sx.B&sy.A != 0
}

func (m *Model) lookup(a netip.Addr) (Route, bool) { return lookupLPM(m.Routes, a) }

func lookupLPM[V any](t map[netip.Prefix]V, a netip.Addr) (V, bool) {
	best, found := -1, *new(V)
	for p, r := range t {
		if p.Addr().Is4() == a.Is4() && p.Contains(a) && p.Bits() > best {
			best, found = p.Bits(), r
		}
	}
	return found, best >= 0
}
