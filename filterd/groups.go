package filterd

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// TagPrefix names dynamic groups: "tag:web" holds the addresses of every
// vNIC labelled with tag web (plus members pushed for "tag:web", e.g. the
// control plane's view of other hosts).
const TagPrefix = "tag:"

var groupNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.:-]{0,62}$`)

// labels are what the host knows of a vNIC's VM: its tags and addresses,
// and the guest MAC of its interface (for the manager's overlay segments;
// it joins no group).
type labels struct {
	Tags      []string       `json:"tags,omitempty"`
	Addresses []netip.Prefix `json:"addresses,omitempty"`
	// MAC is canonical (parseMAC), empty when unknown.
	MAC string `json:"mac,omitempty"`
}

func (l labels) empty() bool {
	return len(l.Tags) == 0 && len(l.Addresses) == 0 && l.MAC == ""
}

// groupTable is the host's address groups: pushed members per name and
// the vNICs' labels. It implements sdk.Groups for the filters.
type groupTable struct {
	mu     sync.RWMutex
	pushed map[string][]netip.Prefix
	vnics  map[string]labels
}

var _ sdk.Groups = (*groupTable)(nil)

func newGroupTable() *groupTable {
	return &groupTable{pushed: map[string][]netip.Prefix{}, vnics: map[string]labels{}}
}

// Members implements sdk.Groups.
func (g *groupTable) Members(name string) ([]netip.Prefix, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	m, ok := g.membersLocked(name)
	if !ok {
		return nil, fmt.Errorf("%w %q (push it with PUT /v1/groups/%s, or tag a vNIC for a tag: group)", sdk.ErrUnknownGroup, name, name)
	}
	return m, nil
}

// membersLocked: a tag group exists as soon as its name is asked for (an
// empty tag group matches nothing, and fills as VMs are tagged); any other
// group must have been pushed.
func (g *groupTable) membersLocked(name string) ([]netip.Prefix, bool) {
	pushed, ok := g.pushed[name]
	out := slices.Clone(pushed)
	if tag, isTag := strings.CutPrefix(name, TagPrefix); isTag {
		ok = true
		for _, l := range g.vnics {
			if slices.Contains(l.Tags, tag) {
				out = append(out, l.Addresses...)
			}
		}
	}
	if !ok {
		return nil, false
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(out), true
}

// names lists every group: pushed ones and one per tag in use.
func (g *groupTable) names() []string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	set := map[string]bool{}
	for n := range g.pushed {
		set[n] = true
	}
	for _, l := range g.vnics {
		for _, t := range l.Tags {
			set[TagPrefix+t] = true
		}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// parseMembers checks a member list: addresses or CIDR prefixes.
func parseMembers(in []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(in))
	for i, s := range in {
		p, err := parsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%w: members[%d]: %q is not an IP address or CIDR prefix", ErrBadRequest, i, s)
		}
		out = append(out, p)
	}
	return out, nil
}

// parseMAC checks a vNIC's guest MAC: a 6-byte unicast Ethernet address
// (a multicast or all-zero one is no interface's), returned lower case
// with colons.
func parseMAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("%w: mac: %q is not a 6-byte Ethernet MAC address (like 52:54:00:12:34:56)", ErrBadRequest, s)
	}
	if hw[0]&1 != 0 {
		return "", fmt.Errorf("%w: mac: %s is a multicast address, not an interface's", ErrBadRequest, hw)
	}
	if bytes.Equal(hw, make(net.HardwareAddr, 6)) {
		return "", fmt.Errorf("%w: mac: %s is the all-zero address, not an interface's", ErrBadRequest, hw)
	}
	return hw.String(), nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

func checkGroupName(name string) error {
	if !groupNameRE.MatchString(name) {
		return fmt.Errorf("%w: group name %q: want letters, digits, '_', '.', ':', '-', at most 63", ErrBadRequest, name)
	}
	return nil
}

func checkTags(tags []string) error {
	for _, t := range tags {
		if !groupNameRE.MatchString(t) || strings.Contains(t, ":") {
			return fmt.Errorf("%w: tag %q: want letters, digits, '_', '.', '-', at most 63", ErrBadRequest, t)
		}
	}
	return nil
}
