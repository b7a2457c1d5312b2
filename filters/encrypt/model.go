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
	// Live reports whether slot's lease is current.
	Live func(slot uint32) bool
	// Tunnel is the tunnel's ifindex, 0 while stopped.
	Tunnel uint32
}

// Decide returns the verdict for an Ethernet frame in direction toVM
// (false: from the VM) that entered the host on ingress (to-vm only), and
// the counter it moves: slot and statistic (numStats: none).
func (m *Model) Decide(frame []byte, toVM bool, ingress uint32) (v Verdict, slot, stat uint32) {
	a, ok := address(frame, toVM)
	if !ok {
		return Continue, 0, numStats
	}
	r, ok := m.lookup(a)
	if !ok || !r.Protected() {
		return Continue, 0, numStats
	}
	if toVM {
		if m.Tunnel != 0 && ingress == m.Tunnel {
			return Continue, r.Peer, 4
		}
		return Drop, r.Peer, 2
	}
	if r.Flags&flagNoPeer != 0 {
		return Drop, peerNone, 3
	}
	if r.Peer >= MaxPeers || m.Tunnel == 0 || !m.Live(r.Peer) {
		return Drop, min(r.Peer, peerNone), 1
	}
	return Redirect, r.Peer, 0
}

// address is the destination (from the VM) or source (to the VM) of an
// IPv4 or IPv6 packet.
func address(f []byte, toVM bool) (netip.Addr, bool) {
	if len(f) < 14 {
		return netip.Addr{}, false
	}
	switch binary.BigEndian.Uint16(f[12:]) {
	case 0x0800:
		off := 14 + 16
		if toVM {
			off = 14 + 12
		}
		if len(f) < off+4 {
			return netip.Addr{}, false
		}
		return netip.AddrFrom4([4]byte(f[off : off+4])), true
	case 0x86dd:
		off := 14 + 24
		if toVM {
			off = 14 + 8
		}
		if len(f) < off+16 {
			return netip.Addr{}, false
		}
		return netip.AddrFrom16([16]byte(f[off : off+16])), true
	}
	return netip.Addr{}, false
}

func (m *Model) lookup(a netip.Addr) (Route, bool) {
	best, found := -1, Route{}
	for p, r := range m.Routes {
		if p.Addr().Is4() == a.Is4() && p.Contains(a) && p.Bits() > best {
			best, found = p.Bits(), r
		}
	}
	return found, best >= 0
}
