package model

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"path"
	"slices"
	"strings"

	"github.com/vnicfilter/vnicfilter/filters/firewall"
	"github.com/vnicfilter/vnicfilter/manager/api"
)

// vmInstance is one reported VM on one host.
type vmInstance struct {
	host string
	vm   api.VM
}

// Resolver answers group questions for one Config, memoizing.
type Resolver struct {
	c *Config
	// byName: reported VMs by name (a migrating VM may be on two hosts).
	byName  map[string][]vmInstance
	members map[string]map[string]bool
	addrs   map[string][]string
}

// Resolve returns a Resolver over c. c must be valid (no include cycles).
func (c *Config) Resolve() *Resolver {
	r := &Resolver{c: c, byName: map[string][]vmInstance{}, members: map[string]map[string]bool{}, addrs: map[string][]string{}}
	for _, host := range slices.Sorted(maps.Keys(c.Inventory)) {
		for _, vm := range c.Inventory[host].VMs {
			r.byName[vm.Name] = append(r.byName[vm.Name], vmInstance{host: host, vm: vm})
		}
	}
	return r
}

// Members returns the names of the VMs in group (nil for an unknown
// group): static members whether reported or not, VMs (reported, or
// tagged ahead of their start) that match the selector or the name
// pattern, and members of included groups.
func (r *Resolver) Members(group string) map[string]bool {
	if m, ok := r.members[group]; ok {
		return m
	}
	g, ok := r.c.Groups[group]
	if !ok {
		return nil
	}
	m := map[string]bool{}
	r.members[group] = m // a cycle (refused by Validate) ends here
	for _, vm := range g.VMs {
		m[vm] = true
	}
	if len(g.Selector) > 0 || g.NameGlob != "" {
		// Candidates: reported VMs and VMs tagged ahead of their start.
		for name := range r.byName {
			if r.matches(g, name) {
				m[name] = true
			}
		}
		for name := range r.c.Tags {
			if r.matches(g, name) {
				m[name] = true
			}
		}
	}
	for _, inc := range g.Include {
		for vm := range r.Members(inc) {
			m[vm] = true
		}
	}
	return m
}

func (r *Resolver) matches(g api.Group, vm string) bool {
	if g.NameGlob != "" {
		if ok, _ := path.Match(g.NameGlob, vm); ok {
			return true
		}
	}
	if len(g.Selector) == 0 {
		return false
	}
	tags := r.c.Tags[vm]
	for k, want := range g.Selector {
		have, ok := tags[k]
		if !ok || (want != "*" && have != want) {
			return false
		}
	}
	return true
}

// Addresses returns the sorted, distinct addresses of the vNICs of
// group's reported members, as host prefixes.
func (r *Resolver) Addresses(group string) []string {
	if a, ok := r.addrs[group]; ok {
		return a
	}
	set := map[netip.Prefix]bool{}
	for vm := range r.Members(group) {
		for _, inst := range r.byName[vm] {
			addVMPrefixes(set, inst.vm)
		}
	}
	out := sortedPrefixes(set)
	r.addrs[group] = out
	return out
}

// addVMPrefixes adds the addresses of vm's vNICs to set, as host
// prefixes (an IPv4-mapped IPv6 address as IPv4).
func addVMPrefixes(set map[netip.Prefix]bool, vm api.VM) {
	for _, nic := range vm.VNICs {
		for _, ip := range nic.IPs {
			if a, err := netip.ParseAddr(ip); err == nil {
				set[netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())] = true
			}
		}
	}
}

// sortedPrefixes lists set in address order, as strings.
func sortedPrefixes(set map[netip.Prefix]bool) []string {
	out := []string{}
	for _, p := range slices.SortedFunc(maps.Keys(set), func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	}) {
		out = append(out, p.String())
	}
	return out
}

// GroupsOf returns the sorted groups vm belongs to.
func (r *Resolver) GroupsOf(vm string) []string {
	var out []string
	for _, g := range slices.Sorted(maps.Keys(r.c.Groups)) {
		if r.Members(g)[vm] {
			out = append(out, g)
		}
	}
	return out
}

// PoliciesOf returns the sorted policies assigned to a group vm is in.
func (r *Resolver) PoliciesOf(vm string) []string {
	groups := r.GroupsOf(vm)
	var out []string
	for _, a := range r.c.Assignments {
		if slices.Contains(groups, a.Group) && !slices.Contains(out, a.Policy) {
			out = append(out, a.Policy)
		}
	}
	slices.Sort(out)
	return out
}

// Desired computes every host's desired state (Version left 0: the
// caller versions it). Each vNIC a host reported gets a chain of one
// fail-closed firewall enforcing the merge of the policies assigned to
// its VM's groups, or no chain when none are.
func (c *Config) Desired() map[string]api.HostDesired {
	r := c.Resolve()
	type compiled struct {
		chain []api.Filter
		hash  string
		ref   string
		doc   json.RawMessage
		err   string
	}
	cache := map[string]compiled{}
	chainFor := func(policies []string) compiled {
		key := strings.Join(policies, "\x00")
		if cc, ok := cache[key]; ok {
			return cc
		}
		var cc compiled
		if len(policies) > 0 {
			var ps []api.Policy
			for _, p := range policies {
				ps = append(ps, c.Policies[p])
			}
			doc, err := merge(ps, r.Addresses)
			if err == nil {
				_, err = firewall.ParsePolicy(doc, firewall.ParseOptions{})
			}
			if err != nil {
				cc.err = "merged policy: " + policyErr(err)
			} else {
				cc.ref, cc.doc = docRef(doc), doc
				cc.chain = []api.Filter{{Filter: "firewall", FailMode: "closed", PolicyRef: cc.ref}}
			}
		}
		if cc.chain == nil {
			cc.chain = []api.Filter{}
		}
		cc.hash = ChainHash(cc.chain)
		cache[key] = cc
		return cc
	}
	net := c.network(r)
	out := map[string]api.HostDesired{}
	hosts := maps.Clone(c.Hosts)
	for h := range c.Inventory {
		if _, ok := hosts[h]; !ok {
			hosts[h] = api.Host{Name: h}
		}
	}
	for h := range hosts {
		d := api.HostDesired{Host: h, VNICs: []api.DesiredVNIC{}, Documents: map[string]json.RawMessage{}}
		vms := slices.Clone(c.Inventory[h].VMs)
		slices.SortFunc(vms, func(a, b api.VM) int { return strings.Compare(a.Name, b.Name) })
		for _, vm := range vms {
			policies := r.PoliciesOf(vm.Name)
			cc := chainFor(policies)
			for _, nic := range vm.VNICs {
				dv := api.DesiredVNIC{VNIC: nic.Name, VM: vm.Name, MAC: nic.MAC, Policies: policies, Chain: cc.chain, Hash: cc.hash, Error: cc.err}
				if f, err := net.slot(h, vm, nic); err != "" {
					dv.Error = joinErr(dv.Error, err)
				} else if f != nil && dv.Error == "" {
					// The network filter goes last: encap decides every
					// from-vm frame's fate, encrypt steers into the tunnel.
					dv.Chain = append(slices.Clone(cc.chain), *f)
					dv.Hash = ChainHash(dv.Chain)
				}
				d.VNICs = append(d.VNICs, dv)
				if cc.ref != "" {
					d.Documents[cc.ref] = cc.doc
				}
			}
		}
		slices.SortFunc(d.VNICs, func(a, b api.DesiredVNIC) int { return strings.Compare(a.VNIC, b.VNIC) })
		if _, enrolled := c.Hosts[h]; enrolled {
			d.HostDocs = net.hostDocs(h)
		}
		out[h] = d
	}
	return out
}

func joinErr(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// docRef names a policy document by its content.
func docRef(doc []byte) string {
	sum := sha256.Sum256(doc)
	return hex.EncodeToString(sum[:8])
}

// ChainHash identifies a chain: the first 16 hex digits of the SHA-256
// of its JSON.
func ChainHash(chain []api.Filter) string {
	data, _ := json.Marshal(chain)
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}

// StateHash identifies a host's desired state regardless of its version:
// every vNIC's fields, its chain by its hash (not the chain itself, which
// may carry large address sets shared by many vNICs).
func StateHash(d api.HostDesired) string {
	h := sha256.New()
	h.Write([]byte(d.Host))
	for _, v := range d.VNICs {
		fmt.Fprintf(h, "\x00%s\x00%s\x00%s\x00%q\x00%s\x00%s", v.VNIC, v.VM, v.MAC, v.Policies, v.Hash, v.Error)
	}
	h.Write([]byte(HostDocsKey(d.HostDocs)))
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// HostDocsKey identifies a host's documents by their hashes and errors.
func HostDocsKey(docs api.HostDocs) string {
	h := sha256.New()
	for _, name := range []string{api.DocEncap, api.DocEncryptPeers, api.DocEncryptPolicy} {
		if d := docs.Docs()[name]; d != nil {
			fmt.Fprintf(h, "\x00%s\x00%s\x00%s", name, d.Hash, d.Error)
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}
