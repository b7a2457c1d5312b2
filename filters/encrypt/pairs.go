package encrypt

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// MaxPairs is the number of pairs a policy holds (bits of enc_sides).
const MaxPairs = 64

// Pair protects the traffic between two sets of addresses, in both
// directions: {"from": "tag:pci", "to": "tag:pci"} encrypts every packet
// between two VMs tagged pci on different hosts.
type Pair struct {
	From, To Selector
}

func (p Pair) String() string { return p.From.String() + " <-> " + p.To.String() }

// id names the pair independently of its place in the file and of the
// order of its sides: a pair keeps its bit across reloads (Tunnel.pairBits).
func (p Pair) id() string {
	a, b := p.From.String(), p.To.String()
	if b < a {
		a, b = b, a
	}
	return a + "\x00" + b
}

// Selector is one side of a pair: a host group (tag:<tag> or
// group:<name>, resolved through filterd's group table), every prefix
// behind a peer (peer:<name>), or an address or prefix.
type Selector struct {
	// Group is the host group's name as filterd knows it: "tag:pci" for
	// tag:pci, "web" for group:web.
	Group  string
	Peer   string
	Prefix netip.Prefix
	line   int
	col    int
	field  string
}

func (s Selector) String() string {
	switch {
	case s.Group != "" && strings.HasPrefix(s.Group, "tag:"):
		return s.Group
	case s.Group != "":
		return "group:" + s.Group
	case s.Peer != "":
		return "peer:" + s.Peer
	}
	return s.Prefix.String()
}

func parsePairs(n *jnode) ([]Pair, error) {
	if err := expect(n, "pairs", '['); err != nil {
		return nil, err
	}
	if len(n.vals) > MaxPairs {
		return nil, errAt(n, "pairs", "%d pairs, at most %d", len(n.vals), MaxPairs)
	}
	var out []Pair
	seen := map[string]int{}
	for i, e := range n.vals {
		f := fmt.Sprintf("pairs[%d]", i)
		if err := members(e, f, "from", "to"); err != nil {
			return nil, err
		}
		var p Pair
		for _, side := range []string{"from", "to"} {
			sn := e.get(side)
			if sn == nil {
				return nil, errAt(e, join(f, side), "missing")
			}
			sel, err := parseSelector(sn, join(f, side))
			if err != nil {
				return nil, err
			}
			if side == "from" {
				p.From = sel
			} else {
				p.To = sel
			}
		}
		if j, dup := seen[p.id()]; dup {
			return nil, errAt(e, f, "the same pair as pairs[%d] (%s)", j, p)
		}
		seen[p.id()] = i
		out = append(out, p)
	}
	return out, nil
}

func parseSelector(n *jnode, field string) (Selector, error) {
	if err := expect(n, field, '"'); err != nil {
		return Selector{}, err
	}
	sel := Selector{line: n.line, col: n.col, field: field}
	s := n.str
	switch {
	case strings.HasPrefix(s, "tag:"):
		if !groupNameOK(strings.TrimPrefix(s, "tag:")) || strings.Contains(strings.TrimPrefix(s, "tag:"), ":") {
			return sel, errAt(n, field, "%q is not a tag (letters, digits, '_', '.', '-', at most 63)", s)
		}
		sel.Group = s
	case strings.HasPrefix(s, "group:"):
		g := strings.TrimPrefix(s, "group:")
		if !groupNameOK(g) {
			return sel, errAt(n, field, "%q is not a group name (letters, digits, '_', '.', ':', '-', at most 63)", s)
		}
		sel.Group = g
	case strings.HasPrefix(s, "peer:"):
		p := strings.TrimPrefix(s, "peer:")
		if !peerNameRE.MatchString(p) {
			return sel, errAt(n, field, "%q is not a peer name", p)
		}
		sel.Peer = p
	default:
		p, err := parsePrefix(s)
		if err != nil {
			return sel, errAt(n, field, "%v (or tag:<tag>, group:<name>, peer:<name>)", err)
		}
		sel.Prefix = p
	}
	return sel, nil
}

// groupNameOK is filterd's rule for group names.
func groupNameOK(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || i > 0 && strings.ContainsRune("_.:-", c)
		if !ok {
			return false
		}
	}
	return true
}

// Sides is what enc_pairs holds for a prefix: the pairs whose "from"
// side (bit i of A) and "to" side (bit i of B) contain it.
type Sides struct{ A, B uint64 }

// resolvedPairs are a policy's pairs with their host groups resolved.
type resolvedPairs struct {
	// table is enc_pairs' content: every member prefix with the union of
	// the sides of every member prefix containing it, so that the
	// longest match alone answers (an LPM trie returns only that one).
	table map[netip.Prefix]Sides
	// groups names the host groups resolved (sdk.GroupUser).
	groups []string
}

// resolvePairs resolves the policy's pairs: each host group through
// groups (filterd's table; nil outside filterd), each peer through peers.
// bits gives each pair its bit (by Pair.id). A group nobody defines is an
// error at the selector's place in file.
func resolvePairs(file string, pol *Policy, peers *Peers, groups sdk.Groups, bits map[string]int) (*resolvedPairs, error) {
	out := &resolvedPairs{table: map[netip.Prefix]Sides{}}
	if pol == nil {
		return out, nil
	}
	direct := map[netip.Prefix]Sides{}
	members := func(s Selector) ([]netip.Prefix, error) {
		switch {
		case s.Group != "":
			if groups == nil {
				return nil, &ConfigError{File: file, Line: s.line, Col: s.col, Field: s.field,
					Err: fmt.Errorf("%s: no host group table here (groups are resolved by filterd)", s)}
			}
			ms, err := groups.Members(s.Group)
			if err != nil {
				if errors.Is(err, sdk.ErrUnknownGroup) {
					return nil, &ConfigError{File: file, Line: s.line, Col: s.col, Field: s.field, Err: fmt.Errorf("%s: %w", s, err)}
				}
				return nil, fmt.Errorf("%s: resolve %s: %w", s.field, s, err)
			}
			if !slices.Contains(out.groups, s.Group) {
				out.groups = append(out.groups, s.Group)
			}
			return ms, nil
		case s.Peer != "":
			p := peers.Peer(s.Peer)
			if p == nil {
				return nil, &ConfigError{File: file, Line: s.line, Col: s.col, Field: s.field, Err: fmt.Errorf("unknown peer %q", s.Peer)}
			}
			return p.Prefixes, nil
		}
		return []netip.Prefix{s.Prefix}, nil
	}
	for _, p := range pol.Pairs {
		bit, ok := bits[p.id()]
		if !ok {
			return nil, fmt.Errorf("pair %s has no bit", p)
		}
		for side, sel := range []Selector{p.From, p.To} {
			ms, err := members(sel)
			if err != nil {
				return nil, err
			}
			for _, m := range ms {
				m = netip.PrefixFrom(m.Addr().Unmap(), m.Bits()-unmapBits(m)).Masked()
				s := direct[m]
				if side == 0 {
					s.A |= 1 << bit
				} else {
					s.B |= 1 << bit
				}
				direct[m] = s
			}
		}
	}
	for p, s := range direct {
		for q, qs := range direct {
			if q != p && q.Bits() <= p.Bits() && q.Addr().Is4() == p.Addr().Is4() && q.Contains(p.Addr()) {
				s.A |= qs.A
				s.B |= qs.B
			}
		}
		out.table[p] = s
	}
	slices.Sort(out.groups)
	return out, nil
}

// unmapBits is 96 for an IPv4-mapped IPv6 prefix (::ffff:a.b.c.d/n).
func unmapBits(p netip.Prefix) int {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return 96
	}
	return 0
}

// assignPairBits gives every pair of pol a bit: a pair keeps its bit
// across reloads (by id), new pairs take the lowest bit free in both the
// old and the new assignment, so that while enc_pairs is being rewritten
// an address's old and new entries never disagree on a pair both
// configurations have. It returns the new assignment.
func assignPairBits(old map[string]int, pol *Policy) map[string]int {
	out := map[string]int{}
	if pol == nil {
		return out
	}
	used := map[int]bool{}
	for _, p := range pol.Pairs {
		if b, ok := old[p.id()]; ok {
			out[p.id()] = b
			used[b] = true
		}
	}
	for _, b := range old {
		used[b] = true // not reused in this step
	}
	for _, p := range pol.Pairs {
		if _, ok := out[p.id()]; ok {
			continue
		}
		b := 0
		for used[b] {
			b++
		}
		if b >= MaxPairs { // old bits all taken: reuse freed ones
			b = 0
			for slices.Contains(mapValues(out), b) {
				b++
			}
		}
		out[p.id()] = b
		used[b] = true
	}
	return out
}

func mapValues(m map[string]int) []int {
	out := make([]int, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
