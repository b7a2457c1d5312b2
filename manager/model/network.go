package model

// What segments and encryptions add to desired state: the encap or
// encrypt slot of member vNICs' chains, and per host the overlay
// forwarding table, the WireGuard peers document and the encryption
// policy document its agent puts into filterd (docs/manager.md,
// "Segments and encryption").

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/vnicfilter/vnicfilter/filters/encap"
	"github.com/vnicfilter/vnicfilter/filters/encrypt"
	"github.com/vnicfilter/vnicfilter/manager/api"
)

// network resolves segments and encryptions over one Config.
type network struct {
	c *Config
	r *Resolver
	// owner is the host a VM runs on. A VM reported by two hosts (a live
	// migration between their reports) belongs to the host whose
	// inventory is older — the source, which reported it before the
	// destination did — until the source stops reporting it.
	owner map[string]string
	// segs: VM -> the segments it is a member of, sorted by name.
	segs map[string][]api.Segment
	// protect: VM -> the groups it exchanges protected traffic with.
	protect map[string][]string
	// encBy: VM -> the encryptions that protect it (for messages).
	encBy map[string][]string
	// space: VM -> the spaces of the encryptions that protect it.
	space map[string][]string
	// Computed once for all hosts' documents: the overlay, and each
	// host's protected addresses.
	ov       *overlay
	prefixes map[string][]string
}

func (c *Config) network(r *Resolver) *network {
	n := &network{c: c, r: r, owner: map[string]string{}, segs: map[string][]api.Segment{}, protect: map[string][]string{}, encBy: map[string][]string{}, space: map[string][]string{}, prefixes: map[string][]string{}}
	for vm, insts := range r.byName {
		best := insts[0]
		for _, in := range insts[1:] {
			a, b := c.Inventory[in.host].ReportedAt, c.Inventory[best.host].ReportedAt
			if a.Before(b) || (a.Equal(b) && in.host < best.host) {
				best = in
			}
		}
		n.owner[vm] = best.host
	}
	for _, s := range sortedValues(c.Segments) {
		for vm := range r.Members(s.Group) {
			n.segs[vm] = append(n.segs[vm], s)
		}
	}
	for _, e := range sortedValues(c.Encryptions) {
		from, to := r.Members(e.From), r.Members(e.To)
		for vm := range from {
			n.protect[vm] = appendNew(n.protect[vm], e.To)
		}
		for vm := range to {
			n.protect[vm] = appendNew(n.protect[vm], e.From)
		}
		for _, m := range []map[string]bool{from, to} {
			for vm := range m {
				n.encBy[vm] = appendNew(n.encBy[vm], e.Name)
				for _, p := range e.Space {
					n.space[vm] = appendNew(n.space[vm], p)
				}
			}
		}
	}
	return n
}

func appendNew(s []string, v string) []string {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

// slot returns the network filter a vNIC of vm on host gets (nil: none),
// or the reason it cannot get the one it should.
func (n *network) slot(host string, vm api.VM, nic api.VNIC) (*api.Filter, string) {
	segs, enc := n.segs[vm.Name], n.encBy[vm.Name]
	switch {
	case len(segs) > 1:
		var names []string
		for _, s := range segs {
			names = append(names, fmt.Sprintf("%s (VNI %d)", s.Name, s.VNI))
		}
		return nil, fmt.Sprintf("VM %s is in %d segments, %s: a vNIC has one segment (change the segments' groups)", vm.Name, len(segs), strings.Join(names, " and "))
	case len(segs) == 1 && len(enc) > 0:
		return nil, fmt.Sprintf("VM %s is in segment %s and protected by encryption %s: encryption works in the underlay's address space, a segment has its own; not both", vm.Name, segs[0].Name, enc[0])
	case len(segs) == 1:
		s := segs[0]
		inv := n.c.Inventory[host]
		if inv.Underlay == "" {
			return nil, fmt.Sprintf("segment %s: host %s reported no underlay address (start its agent with --underlay)", s.Name, host)
		}
		if nic.MAC == "" {
			return nil, fmt.Sprintf("segment %s: vNIC %s has no guest MAC label (the libvirt hook records it from the domain XML; vfctl label %s --mac …)", s.Name, nic.Name, nic.Name)
		}
		p := map[string]string{"vni": strconv.FormatInt(s.VNI, 10), "mac": nic.MAC, "local_ip": inv.Underlay}
		if s.GBP != 0 {
			p["group"] = strconv.Itoa(s.GBP)
		}
		if s.UnderlayMTU != 0 {
			p["underlay_mtu"] = strconv.Itoa(s.UnderlayMTU)
		}
		return &api.Filter{Filter: "encap", FailMode: "closed", Params: p}, ""
	case len(enc) > 0:
		if n.c.Inventory[host].Tunnel == nil {
			return nil, fmt.Sprintf("encryption %s: host %s reported no tunnel key (its filterd's GET /v1/encrypt/host, read by the agent; with several underlay addresses start the agent with --underlay)", enc[0], host)
		}
		return &api.Filter{Filter: "encrypt", FailMode: "closed", Params: map[string]string{"peers": "api", "policy": "api", "protect": "policy"}}, ""
	}
	return nil, ""
}

// hostDocs computes host's documents.
func (n *network) hostDocs(host string) api.HostDocs {
	var out api.HostDocs
	if len(n.c.Segments) > 0 {
		out.Encap = n.encapDoc(host)
	}
	if len(n.c.Encryptions) > 0 && n.c.Inventory[host].Tunnel != nil {
		out.EncryptPeers = n.peersDoc(host)
		out.EncryptPolicy = n.policyDoc(host)
	}
	return out
}

func newDoc(v any, check func([]byte) error) *api.HostDoc {
	data, err := json.Marshal(v)
	if err == nil && check != nil {
		err = check(data)
	}
	if err != nil {
		return &api.HostDoc{Hash: "", Error: err.Error()}
	}
	return &api.HostDoc{Hash: docRef(data), Document: data}
}

// overlay is every segment's side of the forwarding tables, computed
// once for all hosts' documents.
type overlay struct {
	members map[int64][]string           // VNI -> member hosts' underlay addresses, sorted
	entries map[int64][]encap.TableEntry // VNI -> entries, by MAC
	local   map[string]map[int64]bool    // host -> the VNIs it has a vNIC in
}

// segments computes the overlay once: each segment's member hosts (those
// with a member vNIC) and an entry per member vNIC, on the host its VM
// runs on.
func (n *network) segments() *overlay {
	if n.ov != nil {
		return n.ov
	}
	hosts := map[int64]map[string]bool{}
	o := &overlay{members: map[int64][]string{}, entries: map[int64][]encap.TableEntry{}, local: map[string]map[int64]bool{}}
	for h, inv := range n.c.Inventory {
		if inv.Underlay == "" {
			continue
		}
		for _, vm := range inv.VMs {
			segs := n.segs[vm.Name]
			if len(segs) != 1 || len(n.encBy[vm.Name]) > 0 {
				continue // no segment, or refused on the vNIC
			}
			vni := segs[0].VNI
			for _, nic := range vm.VNICs {
				if nic.MAC == "" {
					continue
				}
				if hosts[vni] == nil {
					hosts[vni] = map[string]bool{}
				}
				hosts[vni][inv.Underlay] = true
				if o.local[h] == nil {
					o.local[h] = map[int64]bool{}
				}
				o.local[h][vni] = true
				if n.owner[vm.Name] == h {
					o.entries[vni] = append(o.entries[vni], encap.TableEntry{VNI: vni, MAC: strings.ToLower(nic.MAC), Host: inv.Underlay, IPs: slices.Clone(nic.IPs)})
				}
			}
		}
	}
	for vni, hs := range hosts {
		o.members[vni] = slices.SortedFunc(maps.Keys(hs), compareAddr)
		slices.SortFunc(o.entries[vni], func(a, b encap.TableEntry) int { return strings.Compare(a.MAC, b.MAC) })
	}
	n.ov = o
	return o
}

// encapDoc is the forwarding table of the segments host has a vNIC in.
func (n *network) encapDoc(host string) *api.HostDoc {
	if n.c.Inventory[host].Underlay == "" {
		return nil
	}
	o := n.segments()
	t := encap.Table{Segments: []encap.TableSegment{}, Entries: []encap.TableEntry{}}
	for _, vni := range slices.Sorted(maps.Keys(o.local[host])) {
		t.Segments = append(t.Segments, encap.TableSegment{VNI: vni, Hosts: o.members[vni]})
		t.Entries = append(t.Entries, o.entries[vni]...)
	}
	return newDoc(t, func([]byte) error {
		if _, err := encap.ParseTable(t); err != nil {
			return fmt.Errorf("forwarding table: %w", err)
		}
		return nil
	})
}

func compareAddr(a, b string) int {
	x, errA := netip.ParseAddr(a)
	y, errB := netip.ParseAddr(b)
	if errA != nil || errB != nil {
		return strings.Compare(a, b)
	}
	return x.Compare(y)
}

// PeerName is a host's name in peers documents and encryption counters:
// the manager's host name in lower case with '_' as '-'.
func PeerName(host string) string {
	return strings.ReplaceAll(strings.ToLower(host), "_", "-")
}

// protectedPrefixes are the addresses of the protected VMs that run on
// host, as host prefixes.
func (n *network) protectedPrefixes(host string) []string {
	if p, ok := n.prefixes[host]; ok {
		return p
	}
	set := map[netip.Prefix]bool{}
	for _, vm := range n.c.Inventory[host].VMs {
		if len(n.encBy[vm.Name]) > 0 && len(n.segs[vm.Name]) == 0 && n.owner[vm.Name] == host {
			addVMPrefixes(set, vm)
		}
	}
	n.prefixes[host] = sortedPrefixes(set)
	return n.prefixes[host]
}

// peersDoc lists every other host that reported a tunnel, with the
// protected VMs' addresses behind it. A host deleted from the manager
// (or whose agent stops reporting a tunnel) leaves every document:
// its key is revoked everywhere.
func (n *network) peersDoc(host string) *api.HostDoc {
	own := n.c.Inventory[host].Tunnel
	ap, err := netip.ParseAddrPort(own.Endpoint)
	if err != nil {
		return &api.HostDoc{Error: fmt.Sprintf("host %s: tunnel endpoint %q: %v", host, own.Endpoint, err)}
	}
	doc := encrypt.PeersDocument{ListenPort: int(ap.Port()), Prefixes: n.protectedPrefixes(host), Peers: []encrypt.PeerEntry{}}
	names := map[string]string{}
	for _, h := range slices.Sorted(maps.Keys(n.c.Inventory)) {
		t := n.c.Inventory[h].Tunnel
		if h == host || t == nil {
			continue
		}
		if _, ok := n.c.Hosts[h]; !ok {
			continue // reported but deleted: revoked
		}
		name := PeerName(h)
		if other, dup := names[name]; dup {
			return &api.HostDoc{Error: fmt.Sprintf("hosts %s and %s have the same peer name %q (lower case, '_' as '-')", other, h, name)}
		}
		names[name] = h
		doc.Peers = append(doc.Peers, encrypt.PeerEntry{Name: name, PublicKey: t.PublicKey, Endpoint: t.Endpoint, Prefixes: n.protectedPrefixes(h)})
	}
	ownKey, _ := encrypt.ParseKey(own.PublicKey)
	return newDoc(doc, func(data []byte) error {
		if _, err := encrypt.CheckPeers(data, ownKey); err != nil {
			return fmt.Errorf("peers document: %w", err)
		}
		return nil
	})
}

// policyDoc lists, for each protected vNIC on host, the addresses its
// traffic must be encrypted to: the members of the groups it is paired
// with (wherever they run; addresses on this host stay local).
func (n *network) policyDoc(host string) *api.HostDoc {
	doc := encrypt.PolicyDocument{VNICs: map[string][]string{}}
	for _, vm := range n.c.Inventory[host].VMs {
		groups := n.protect[vm.Name]
		if len(groups) == 0 || len(n.segs[vm.Name]) > 0 {
			continue
		}
		own := map[netip.Prefix]bool{}
		addVMPrefixes(own, vm)
		set := map[netip.Prefix]bool{}
		for _, g := range groups {
			for _, s := range n.r.Addresses(g) {
				if p, err := netip.ParsePrefix(s); err == nil && !own[p] {
					set[p] = true
				}
			}
		}
		for _, s := range n.space[vm.Name] {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return &api.HostDoc{Error: fmt.Sprintf("encryption space %q: %v", s, err)}
			}
			set[p.Masked()] = true
		}
		if len(set) == 0 {
			continue
		}
		dests := sortedPrefixes(set)
		for _, nic := range vm.VNICs {
			doc.VNICs[nic.Name] = dests
		}
	}
	return newDoc(doc, func(data []byte) error {
		if _, err := encrypt.ParsePolicy(data); err != nil {
			return fmt.Errorf("encryption policy document: %w", err)
		}
		return nil
	})
}
