package encap

import (
	"fmt"
	"net/netip"
	"slices"
)

// Tables is what one vNIC's instance loads: the part of the forwarding
// table of its own segment, seen from its host. Entries of other segments
// never reach a vNIC's maps, so no lookup can leave the segment.
type Tables struct {
	// Remote maps the MACs of the segment on other hosts to their host.
	// MACs placed on this host are not in it: local vNICs are found
	// through the host's port registry (only the vNICs really attached
	// here, whatever the table says).
	Remote map[[6]byte]netip.Addr
	// Members are the segment's other hosts, in table order: where
	// broadcast, multicast and unknown unicast are replicated.
	Members []netip.Addr
	// Neigh maps every address of the segment to its MAC, for the
	// ARP and neighbour discovery replies.
	Neigh map[netip.Addr][6]byte
}

// Compile selects segment vni of f as seen from the host whose underlay
// address is local. The host must be a member of the segment (else no
// other host replicates broadcasts to it), and every member must be of
// local's address family (the tunnel's source).
func Compile(f *FIB, vni uint32, local netip.Addr, fibSize int) (*Tables, error) {
	s := f.Segment(vni)
	if s == nil {
		return nil, fmt.Errorf("%w: segment %d is not in the table", ErrInvalidFIB, vni)
	}
	local = local.Unmap()
	t := &Tables{Remote: map[[6]byte]netip.Addr{}, Neigh: map[netip.Addr][6]byte{}}
	member := false
	for _, h := range s.Hosts {
		if h.Is4() != local.Is4() {
			return nil, fmt.Errorf("%w: segment %d: host %s is not of the address family of local_ip %s", ErrInvalidFIB, vni, h, local)
		}
		if h == local {
			member = true
			continue
		}
		t.Members = append(t.Members, h)
	}
	if !member {
		return nil, fmt.Errorf("%w: this host (local_ip %s) is not a member of segment %d (hosts: %s)", ErrInvalidFIB, local, vni, joinAddrs(s.Hosts))
	}
	for _, e := range s.Entries {
		if e.Host != local {
			t.Remote[e.MAC] = e.Host
		}
		for _, ip := range e.IPs {
			t.Neigh[ip] = e.MAC
		}
	}
	if len(t.Remote) > fibSize {
		return nil, fmt.Errorf("%w: segment %d has %d remote MACs, more than fib_size %d", ErrInvalidFIB, vni, len(t.Remote), fibSize)
	}
	if len(t.Neigh) > fibSize {
		return nil, fmt.Errorf("%w: segment %d has %d addresses, more than fib_size %d", ErrInvalidFIB, vni, len(t.Neigh), fibSize)
	}
	return t, nil
}

// Replicas returns where a broadcast or unknown unicast frame from local
// vNIC self goes: the other local vNICs of the segment (locals, as
// registered on the host) and the member hosts. It is the Go statement of
// the eBPF flood loops.
func (t *Tables) Replicas(self int, locals []int) (vnics []int, hosts []netip.Addr) {
	for _, l := range locals {
		if l != self {
			vnics = append(vnics, l)
		}
	}
	return vnics, append([]netip.Addr(nil), t.Members...)
}

// Port is one local vNIC of a segment, as the registry holds it.
type Port struct {
	VNI     uint32
	MAC     [6]byte
	Ifindex int
	Group   uint16
	owner   uint64
}

// FloodList returns the local vNICs a broadcast of segment vni reaches.
func FloodList(ports []Port, vni uint32) []int {
	var out []int
	for _, p := range ports {
		if p.VNI == vni && !slices.Contains(out, p.Ifindex) {
			out = append(out, p.Ifindex)
		}
	}
	slices.Sort(out)
	return out
}
