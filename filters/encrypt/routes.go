package encrypt

import (
	"net/netip"
)

// Route flags (enc_route.flags in encrypt.c).
const (
	flagProtect = 1 // the policy protects the prefix
	flagNoPeer  = 2 // protected, but no peer carries it: dropped
)

// numStats is the number of per-peer counters (ENC_NUM_STATS).
const numStats = 5

// enc_cfg.flags (ENC_CFG_* in encrypt.c).
const (
	cfgPairs = 1 // enc_pairs is not empty
	cfgGuard = 2 // the vNIC has protected destinations: unsafe frames dropped
)

// peerNone is the peer number of prefixes no peer carries (ENC_PEER_NONE).
const peerNone = MaxPeers

// Route is what a vNIC's fast path knows about one prefix.
type Route struct {
	// Peer is the peer's slot (index in enc_peers), peerNone if none.
	Peer uint32
	// Flags: flagProtect, flagNoPeer.
	Flags uint32
}

// Protected reports whether the policy protects the prefix.
func (r Route) Protected() bool { return r.Flags&flagProtect != 0 }

// Mode is a vNIC's protect parameter.
type Mode string

const (
	// ProtectAll protects every destination behind a peer and the
	// policy's space.
	ProtectAll Mode = "all"
	// ProtectPolicy protects the destinations the policy lists for the vNIC.
	ProtectPolicy Mode = "policy"
)

// Routes computes a vNIC's routing table: every peer's prefixes (so the
// fast path knows which peer carries an address), this host's own
// prefixes (local traffic is never tunnelled), and the protected
// destinations of the vNIC's policy, marked. slot gives each peer's slot.
//
// A protected destination inside a peer's prefix goes to that peer; one
// that covers peers' prefixes protects them and drops the rest of it (no
// peer carries it: a revoked host's VMs, or one not yet announced); one
// inside this host's prefixes is local and left alone.
func Routes(peers *Peers, pol *Policy, mode Mode, vnic string, slot map[string]uint32) map[netip.Prefix]Route {
	out := map[netip.Prefix]Route{}
	type owned struct {
		p    netip.Prefix
		peer uint32
	}
	var carried []owned
	for _, p := range peers.Peers {
		for _, pr := range p.Prefixes {
			out[pr] = Route{Peer: slot[p.Name]}
			carried = append(carried, owned{pr, slot[p.Name]})
		}
	}
	for _, pr := range peers.Prefixes {
		out[pr] = Route{Peer: peerNone}
	}
	protect := func(pr netip.Prefix) {
		r, ok := out[pr]
		if !ok {
			r = Route{Peer: peerNone}
			for _, c := range carried {
				if c.p.Contains(pr.Addr()) && c.p.Bits() <= pr.Bits() {
					r.Peer = c.peer
					break
				}
			}
			if r.Peer == peerNone {
				r.Flags |= flagNoPeer
			}
		}
		r.Flags |= flagProtect
		out[pr] = r
	}
	local := func(pr netip.Prefix) bool {
		for _, l := range peers.Prefixes {
			if l.Contains(pr.Addr()) && l.Bits() <= pr.Bits() {
				return true
			}
		}
		return false
	}
	var dests []netip.Prefix
	if mode == ProtectAll {
		for _, c := range carried {
			dests = append(dests, c.p)
		}
		if pol != nil {
			dests = append(dests, pol.Space...)
		}
	}
	if pol != nil {
		for _, d := range pol.VNICs[vnic] {
			if d.Peer != "" {
				if p := peers.Peer(d.Peer); p != nil {
					dests = append(dests, p.Prefixes...)
				}
				continue
			}
			dests = append(dests, d.Prefix)
		}
	}
	for _, d := range dests {
		if local(d) {
			continue
		}
		protect(d)
		// A wide destination protects the peers' prefixes inside it.
		for _, c := range carried {
			if d.Contains(c.p.Addr()) && d.Bits() <= c.p.Bits() {
				protect(c.p)
			}
		}
	}
	return out
}
