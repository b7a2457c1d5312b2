package firewall

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
)

// Compilation budgets (docs/firewall.md, "Limits"). The kernel maps are
// sized for two generations of each.
const (
	// MaxCrossEntries bounds the four cross-product tables of one
	// generation together (fw_cross holds two generations).
	MaxCrossEntries = 1 << 19
	// MaxPrefixes bounds the distinct prefixes of one address side.
	MaxPrefixes = 1 << 18
	// maxSetWork bounds the rule-set elements the compiler materialises.
	maxSetWork = 64 << 20
)

// Layout of the per-generation dimension array (fw_dims).
const (
	dimProtoBase = 0     // [frag<<9 | dir<<8 | proto]
	dimProtoSize = 1024  //
	dimP1Base    = 1024  // [source port or ICMP type]
	dimP2Base    = 66560 // [destination port or ICMP code]
	dimsPerGen   = dimP2Base + 65536
)

// Cross-product tables, the low bits of fw_cross_key.tag (gen << 2 | table).
const (
	crossProtoP1 = iota // (proto class, p1 class) → x
	crossL4             // (x, p2 class) → l4 class
	crossAddr           // (src class, dst class) → address class
	crossFinal          // (address class, l4 class) → verdict
	numCross
)

// Encoding of a crossFinal value: rule index + 1, action, log flag.
const (
	finalRuleMask    = 1<<24 - 1
	finalActionShift = 24
	finalLogBit      = 1 << 26
)

// LPMEntry is one prefix of an address trie and the class of the rules
// whose side covers it.
type LPMEntry struct {
	Prefix netip.Prefix
	Class  uint32
}

// Compiled is a policy turned into classification tables. Classifying a
// packet costs two longest-prefix lookups, three array reads and four hash
// lookups whatever the number of rules (docs/firewall.md, "Classification").
type Compiled struct {
	// Policy is what was compiled.
	Policy *Policy
	// Src and Dst are the address tries (both families).
	Src, Dst []LPMEntry
	// Dims maps protocol, P1 and P2 values to classes (layout dim*).
	Dims []uint32
	// Cross are the cross-product tables.
	Cross [numCross]map[[2]uint32]uint32
	// Classes counts the distinct classes per dimension, for `explain`
	// and the docs: src, dst, proto, p1, p2, proto×p1, l4, addr.
	Classes [8]int

	src, dst map[netip.Prefix]uint32
}

// classer deduplicates rule sets into class ids; class 0 is the empty set.
type classer struct {
	ids  map[string]uint32
	sets [][]int32
	work *atomic.Int64 // shared by the classers of one compile
	key  []byte        // scratch: the set's bytes, the map key
}

// newClasser sizes its map for about hint classes: a 10,000-rule policy
// makes ~10,000 classes in several dimensions, and growing the maps
// step by step was a fifth of the compile.
func newClasser(work *atomic.Int64, hint int) *classer {
	return &classer{ids: make(map[string]uint32, hint), sets: make([][]int32, 1, hint+1), work: work}
}

func (c *classer) id(set []int32) (uint32, error) {
	if len(set) == 0 {
		return 0, nil
	}
	k := c.key[:0]
	for _, r := range set {
		k = binary.LittleEndian.AppendUint32(k, uint32(r))
	}
	c.key = k
	if id, ok := c.ids[string(k)]; ok { // no allocation for the lookup
		return id, nil
	}
	if c.work.Add(int64(len(set))) > maxSetWork {
		return 0, fmt.Errorf("%w: more than %d rule-set elements (too many rules that overlap on every dimension)", ErrTooComplex, maxSetWork)
	}
	id := uint32(len(c.sets))
	c.sets = append(c.sets, set)
	c.ids[string(k)] = id
	return id, nil
}

// union merges two ascending rule lists.
func union(a, b []int32) []int32 {
	out := make([]int32, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || (i < len(a) && a[i] < b[j]):
			out = append(out, a[i])
			i++
		case i == len(a) || b[j] < a[i]:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i, j = i+1, j+1
		}
	}
	return out
}

// Compile builds the classification tables of p.
func Compile(p *Policy) (*Compiled, error) {
	if len(p.Rules) > MaxRules {
		return nil, fmt.Errorf("%w: %d rules, at most %d", ErrTooComplex, len(p.Rules), MaxRules)
	}
	c := &Compiled{Policy: p, Dims: make([]uint32, dimsPerGen), src: map[netip.Prefix]uint32{}, dst: map[netip.Prefix]uint32{}}
	var work atomic.Int64
	// Address and final classes grow with the rules; protocol and port
	// classes are bounded by the dimension's size.
	hint := min(len(p.Rules)+1, 1<<17)
	srcC, dstC, protoC, p1C, p2C := newClasser(&work, hint), newClasser(&work, hint), newClasser(&work, 64), newClasser(&work, min(hint, 1<<12)), newClasser(&work, min(hint, 1<<12))
	xC, l4C, adC := newClasser(&work, min(hint, 1<<12)), newClasser(&work, hint), newClasser(&work, hint)
	n := len(p.Rules)
	// Two independent pipelines, run concurrently: the addresses (both
	// tries, then their cross product) and the protocol and ports (three
	// arrays, then two cross products). The budget is shared, so whether
	// a policy fits does not depend on the timing; which stage reports
	// the overflow may.
	var addrErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		var err error
		if c.Src, err = addrDim(p.Rules, func(r *Rule) *AddrMatch { return &r.Src }, srcC, c.src); err != nil {
			addrErr = fmt.Errorf("source addresses: %w", err)
			return
		}
		if c.Dst, err = addrDim(p.Rules, func(r *Rule) *AddrMatch { return &r.Dst }, dstC, c.dst); err != nil {
			addrErr = fmt.Errorf("destination addresses: %w", err)
			return
		}
		c.Cross[crossAddr], addrErr = cross("source × destination address", srcC.sets, dstC.sets, n, adC, nil)
	})
	l4Err := func() error {
		if err := protoDim(p.Rules, protoC, c.Dims[dimProtoBase:dimProtoBase+dimProtoSize]); err != nil {
			return err
		}
		p1 := func(r *Rule) []PortRange {
			if r.SrcPorts != nil {
				return r.SrcPorts
			}
			if r.ICMPType >= 0 {
				return []PortRange{{uint16(r.ICMPType), uint16(r.ICMPType)}}
			}
			return nil
		}
		p2 := func(r *Rule) []PortRange {
			if r.DstPorts != nil {
				return r.DstPorts
			}
			if r.ICMPCode >= 0 {
				return []PortRange{{uint16(r.ICMPCode), uint16(r.ICMPCode)}}
			}
			return nil
		}
		if err := portDim(p.Rules, p1, p1C, c.Dims[dimP1Base:dimP1Base+65536]); err != nil {
			return err
		}
		if err := portDim(p.Rules, p2, p2C, c.Dims[dimP2Base:dimP2Base+65536]); err != nil {
			return err
		}
		var err error
		if c.Cross[crossProtoP1], err = cross("protocol × source port", protoC.sets, p1C.sets, n, xC, nil); err != nil {
			return err
		}
		c.Cross[crossL4], err = cross("l4 × destination port", xC.sets, p2C.sets, n, l4C, nil)
		return err
	}()
	wg.Wait()
	if addrErr != nil {
		return nil, addrErr
	}
	if l4Err != nil {
		return nil, l4Err
	}
	var err error
	if c.Cross[crossFinal], err = cross("addresses × l4", adC.sets, l4C.sets, n, nil, p.Rules); err != nil {
		return nil, err
	}
	total := 0
	for _, t := range c.Cross {
		total += len(t)
	}
	if total > MaxCrossEntries {
		return nil, fmt.Errorf("%w: %d cross-product entries, at most %d", ErrTooComplex, total, MaxCrossEntries)
	}
	for i, cl := range []*classer{srcC, dstC, protoC, p1C, p2C, xC, l4C, adC} {
		c.Classes[i] = len(cl.sets) - 1
	}
	return c, nil
}

// covers reports whether outer contains every address of inner (same
// family).
func covers(outer, inner netip.Prefix) bool {
	return outer.Addr().Is4() == inner.Addr().Is4() && outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

func familyRoot(f int) netip.Prefix {
	if f == 4 {
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
}

// addrDim: the class of prefix P is the set of rules with a prefix that
// covers P (or no address constraint). The longest stored prefix covering an
// address is covered by exactly the prefixes that cover the address, so one
// LPM lookup yields the address's rule set.
func addrDim(rules []Rule, side func(*Rule) *AddrMatch, cl *classer, index map[netip.Prefix]uint32) ([]LPMEntry, error) {
	var out []LPMEntry
	var wild []int32
	by := make(map[netip.Prefix][]int32, len(rules))
	for i := range rules {
		m := side(&rules[i])
		if m.Any {
			wild = append(wild, int32(i))
			continue
		}
		for _, pr := range m.Prefixes {
			if l := by[pr]; len(l) == 0 || l[len(l)-1] != int32(i) {
				by[pr] = append(by[pr], int32(i))
			}
		}
	}
	if len(by) > MaxPrefixes {
		return nil, fmt.Errorf("%w: %d distinct prefixes, at most %d", ErrTooComplex, len(by), MaxPrefixes)
	}
	for _, f := range []int{4, 6} {
		root := familyRoot(f)
		if _, ok := by[root]; !ok {
			by[root] = nil
		}
	}
	prefixes := make([]netip.Prefix, 0, len(by))
	for pr := range by {
		prefixes = append(prefixes, pr)
	}
	// In (family, address, length) order a prefix comes after every
	// prefix covering it, and the prefixes covering the current one form
	// a stack: pop what does not cover it, the top is its parent. (One
	// map probe per length, the earlier way, cost up to 128 per IPv6
	// host.)
	slices.SortFunc(prefixes, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	sets := make([][]int32, len(prefixes))
	var stack []int // indexes into prefixes
	for i, pr := range prefixes {
		for len(stack) > 0 && !covers(prefixes[stack[len(stack)-1]], pr) {
			stack = stack[:len(stack)-1]
		}
		parent := wild
		if len(stack) > 0 {
			parent = sets[stack[len(stack)-1]]
		}
		stack = append(stack, i)
		set := union(parent, by[pr])
		sets[i] = set
		id, err := cl.id(set)
		if err != nil {
			return nil, err
		}
		if id == 0 {
			continue // only an empty family root: a lookup miss means the same
		}
		index[pr] = id
		out = append(out, LPMEntry{Prefix: pr, Class: id})
	}
	return out, nil
}

// protoDim classes every (fragment, direction, protocol) triple.
func protoDim(rules []Rule, cl *classer, out []uint32) error {
	type sig struct {
		dirs  uint8
		proto int
		frag  bool
	}
	sigIdx := map[sig]int{}
	var sigs []sig
	var members [][]int32
	for i := range rules {
		r := &rules[i]
		s := sig{uint8(r.Dirs), r.Proto, r.Fragments}
		k, ok := sigIdx[s]
		if !ok {
			k = len(sigs)
			sigIdx[s] = k
			sigs = append(sigs, s)
			members = append(members, nil)
		}
		members[k] = append(members[k], int32(i))
	}
	seen := map[string]uint32{}
	for idx := range dimProtoSize {
		frag, dir, proto := idx>>9 == 1, (idx>>8)&1, idx&0xff
		key := make([]byte, 0, len(sigs))
		var matched []int
		for k, s := range sigs {
			ok := s.dirs&(1<<dir) != 0 && (s.proto == ProtoAny || s.proto == proto) && (!frag || s.frag)
			if ok {
				matched = append(matched, k)
				key = append(key, 1)
			} else {
				key = append(key, 0)
			}
		}
		if id, ok := seen[string(key)]; ok {
			out[idx] = id
			continue
		}
		var set []int32
		for _, k := range matched {
			set = append(set, members[k]...)
		}
		slices.Sort(set)
		id, err := cl.id(set)
		if err != nil {
			return err
		}
		seen[string(key)] = id
		out[idx] = id
	}
	return nil
}

// portDim classes every port value: the 65536 values fall into elementary
// intervals between range boundaries, each with one rule set.
func portDim(rules []Rule, get func(*Rule) []PortRange, cl *classer, out []uint32) error {
	bounds := []int{0, 65536}
	var wild []int32
	for i := range rules {
		rs := get(&rules[i])
		if rs == nil {
			wild = append(wild, int32(i))
			continue
		}
		for _, r := range rs {
			bounds = append(bounds, int(r.Lo), int(r.Hi)+1)
		}
	}
	slices.Sort(bounds)
	bounds = slices.Compact(bounds)
	lists := make([][]int32, len(bounds)-1)
	at := func(v int) int { i, _ := slices.BinarySearch(bounds, v); return i }
	for i := range rules {
		rs := get(&rules[i])
		for _, r := range rs {
			for k := at(int(r.Lo)); k < at(int(r.Hi)+1); k++ {
				if l := lists[k]; len(l) == 0 || l[len(l)-1] != int32(i) {
					lists[k] = append(lists[k], int32(i))
				}
			}
		}
	}
	for k := range lists {
		id, err := cl.id(union(wild, lists[k]))
		if err != nil {
			return err
		}
		for v := bounds[k]; v < bounds[k+1]; v++ {
			out[v] = id
		}
	}
	return nil
}

// anyClass is the second class of a row's fallback entry (firewall.c
// FW_CLASS_ANY): the lookup of (x, y) that finds no entry reads (x,
// anyClass) instead.
const anyClass = 0xffffffff

// cross builds the table of non-empty intersections of two dimensions'
// classes: into a new class (out) or, for the final table, the first rule
// of the intersection with its action.
//
// Rules that are in every non-empty y class ("wild" in y: no constraint
// on that dimension, like an ICMP rule without a code in the
// destination-port dimension) would give every x holding them one entry
// per y class. They are kept out of the per-y entries instead: each x
// gets entries for the ys its other rules reach (with the wild rules
// added in), and one fallback entry (x, anyClass) holding only its wild
// rules, which is what x meets in every other y. A packet's lookup that
// misses (x, y) reads (x, anyClass): one more hash lookup on a miss, and
// tables and compile work that no longer multiply wildcards by the other
// dimension's classes.
func cross(what string, xs, ys [][]int32, nrules int, out *classer, final []Rule) (map[[2]uint32]uint32, error) {
	inY := make([]int32, nrules)
	for y := 1; y < len(ys); y++ {
		for _, r := range ys[y] {
			inY[r]++
		}
	}
	ny := int32(len(ys) - 1)
	wild := make([]bool, nrules)
	for r, n := range inY {
		wild[r] = ny > 0 && n == ny
	}
	yOf := make([][]uint32, nrules)
	for y := 1; y < len(ys); y++ {
		for _, r := range ys[y] {
			if !wild[r] {
				yOf[r] = append(yOf[r], uint32(y))
			}
		}
	}
	verdict := func(r int32) uint32 {
		v := uint32(r+1) | uint32(final[r].Action)<<finalActionShift
		if final[r].Log {
			v |= finalLogBit
		}
		return v
	}
	table := make(map[[2]uint32]uint32, len(xs)+len(ys))
	work := 0
	// Per x: the rules of each y met so far (or the first one, for the
	// final table), in slices indexed by y with the list of the ys
	// touched — maps here were a third of the compile time.
	acc := make([][]int32, len(ys))
	first := make([]int32, len(ys))
	for i := range first {
		first[i] = -1
	}
	var touched []uint32
	for x := 1; x < len(xs); x++ {
		touched = touched[:0]
		var w []int32 // x's wild rules, ascending
		for _, r := range xs[x] {
			if wild[r] {
				w = append(w, r)
				continue
			}
			work += len(yOf[r])
			if work > maxSetWork {
				return nil, fmt.Errorf("%w: %s cross product needs more than %d steps", ErrTooComplex, what, maxSetWork)
			}
			for _, y := range yOf[r] {
				if final != nil {
					if first[y] < 0 {
						first[y] = r
						touched = append(touched, y)
					}
					continue
				}
				if len(acc[y]) == 0 {
					touched = append(touched, y)
				}
				acc[y] = append(acc[y], r)
			}
		}
		for _, y := range touched {
			if final != nil {
				r := first[y]
				first[y] = -1
				if len(w) > 0 && w[0] < r {
					r = w[0]
				}
				table[[2]uint32{uint32(x), y}] = verdict(r)
				continue
			}
			set := acc[y]
			if len(w) > 0 {
				work += len(set) + len(w)
				if work > maxSetWork {
					return nil, fmt.Errorf("%w: %s cross product needs more than %d steps", ErrTooComplex, what, maxSetWork)
				}
				set = union(set, w)
			}
			id, err := out.id(set)
			if err != nil {
				return nil, err
			}
			// The classer may keep acc[y] itself: then start a new one.
			if out.sets[id] != nil && &out.sets[id][0] == &acc[y][0] {
				acc[y] = nil
			} else {
				acc[y] = acc[y][:0]
			}
			table[[2]uint32{uint32(x), y}] = id
		}
		if len(w) > 0 {
			if final != nil {
				table[[2]uint32{uint32(x), anyClass}] = verdict(w[0])
			} else {
				id, err := out.id(w)
				if err != nil {
					return nil, err
				}
				table[[2]uint32{uint32(x), anyClass}] = id
			}
		}
		if len(table) > MaxCrossEntries {
			return nil, fmt.Errorf("%w: %s table exceeds %d entries", ErrTooComplex, what, MaxCrossEntries)
		}
	}
	return table, nil
}

// crossGet is a cross-product lookup as firewall.c does it: (a, b), or
// the row's fallback (a, anyClass); 0 when either class is empty.
func crossGet(t map[[2]uint32]uint32, a, b uint32) uint32 {
	if a == 0 || b == 0 {
		return 0
	}
	if v, ok := t[[2]uint32{a, b}]; ok {
		return v
	}
	return t[[2]uint32{a, anyClass}]
}

// protoIndex is the fw_dims index of a packet's protocol class.
func protoIndex(p *Packet) int {
	idx := int(p.Dir)<<8 | int(p.Proto)
	if p.Fragment {
		idx |= 1 << 9
	}
	return idx
}

func lpm(index map[netip.Prefix]uint32, a netip.Addr) uint32 {
	for b := a.BitLen(); b >= 0; b-- {
		if id, ok := index[netip.PrefixFrom(a, b).Masked()]; ok {
			return id
		}
	}
	return 0
}

// Classify returns the index of the first rule matching p, or -1, with the
// table lookups firewall.c performs.
func (c *Compiled) Classify(p *Packet) int {
	v := c.lookup(p)
	return int(v&finalRuleMask) - 1
}

func (c *Compiled) lookup(p *Packet) uint32 {
	a, b := lpm(c.src, p.Src), lpm(c.dst, p.Dst)
	pc := c.Dims[dimProtoBase+protoIndex(p)]
	p1, p2 := c.Dims[dimP1Base+int(p.P1)], c.Dims[dimP2Base+int(p.P2)]
	x := crossGet(c.Cross[crossProtoP1], pc, p1)
	l4 := crossGet(c.Cross[crossL4], x, p2)
	ad := crossGet(c.Cross[crossAddr], a, b)
	return crossGet(c.Cross[crossFinal], ad, l4)
}
