package firewall

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// Limits of this increment (docs/firewall.md, "Limits").
const (
	// MaxRules is the most rules a policy may hold; it sizes the per-rule
	// counter array.
	MaxRules = 1 << 17
	// MaxGroupMembers bounds one address group.
	MaxGroupMembers = 1 << 16
	// DefaultPriority is the priority of a rule that names none.
	DefaultPriority = 1000
)

// Action is what a rule (or a direction's default) does with a new flow.
type Action uint8

const (
	// Allow passes the packet and, for a new flow, remembers it so that
	// its replies pass too.
	Allow Action = iota
	// Deny drops the packet.
	Deny
	// Reject drops the packet and answers it: a TCP RST for TCP, an
	// ICMP/ICMPv6 destination unreachable otherwise, sent back where the
	// packet came from, at most reject_rate per second and vNIC
	// (docs/firewall.md, "Reject").
	Reject
)

var actionNames = [...]string{"allow", "deny", "reject"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// Drops reports whether the action drops the packet.
func (a Action) Drops() bool { return a != Allow }

func parseAction(s string) (Action, error) {
	for i, n := range actionNames {
		if n == s {
			return Action(i), nil
		}
	}
	return 0, fmt.Errorf("action %q: want allow, deny or reject", s)
}

// Protocol numbers the policy names.
const (
	ProtoAny    = -1
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// PortRange is an inclusive range of ports (or of ICMP types/codes).
type PortRange struct{ Lo, Hi uint16 }

// AddrMatch is one side (source or destination) of a rule.
type AddrMatch struct {
	// Any is true when the rule names neither prefixes nor groups: every
	// address of either family matches.
	Any bool
	// Prefixes are the masked prefixes the side matches (CIDRs and the
	// resolved group members). Empty with Any false matches nothing: an
	// empty group must never widen a rule to "any".
	Prefixes []netip.Prefix
}

// Contains reports whether a matches addr.
func (a AddrMatch) Contains(addr netip.Addr) bool {
	if a.Any {
		return true
	}
	for _, p := range a.Prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Rule is one compiled-from-file rule, in priority order within Policy.
type Rule struct {
	// Name is the operator's label (or "rule-<n>"), used by counters.
	Name string
	// Priority orders rules: lower first; ties keep file order.
	Priority int
	// Line is where the rule starts in its file (0 if unknown).
	Line int
	// Dirs are the directions the rule applies to.
	Dirs sdk.Directions
	// Src and Dst match the packet's addresses.
	Src, Dst AddrMatch
	// Proto is an IP protocol number or ProtoAny.
	Proto int
	// SrcPorts and DstPorts (TCP/UDP only): nil matches every port.
	SrcPorts, DstPorts []PortRange
	// ICMPType and ICMPCode (ICMP/ICMPv6 only): -1 matches any.
	ICMPType, ICMPCode int
	// Fragments lets the rule match non-first fragments too (which carry
	// no ports); such a rule may not match on ports or ICMP type/code.
	Fragments bool
	// Action is what happens to a matching packet.
	Action Action
	// Log marks the rule's hits for the flow log (counted only, today).
	Log bool
}

// Policy is a parsed, validated policy.
type Policy struct {
	// Defaults[dir] applies to new flows no rule matches.
	Defaults [sdk.NumDirections]Action
	// NonIP applies to frames that are neither IPv4, IPv6 nor ARP (ARP is
	// always allowed: the spoof guard polices it).
	NonIP Action
	// Rules in evaluation order.
	Rules []Rule
	// File and Source are the file name and the bytes the policy was
	// parsed from (empty for a policy built in code): the firewall's
	// Inspect hands them out, so `vfctl fw explain VNIC` explains the
	// policy that runs, not the file as it is now.
	File   string
	Source []byte
}

// GroupResolver supplies the members of address groups a policy names but
// does not define itself. It is the seam for dynamic groups (all vNICs of
// the VMs carrying a tag); the file's own "groups" are static.
type GroupResolver interface {
	// Members returns the prefixes of group, or an error wrapping
	// ErrUnknownGroup.
	Members(group string) ([]netip.Prefix, error)
}

// StaticGroups is a GroupResolver over a fixed table.
type StaticGroups map[string][]netip.Prefix

var _ GroupResolver = StaticGroups(nil)

// Members implements GroupResolver.
func (g StaticGroups) Members(group string) ([]netip.Prefix, error) {
	m, ok := g[group]
	if !ok {
		return nil, g.unknown(group)
	}
	return m, nil
}

func (StaticGroups) unknown(group string) error { return fmt.Errorf("%w %q", ErrUnknownGroup, group) }

// Errors callers branch on.
var (
	// ErrUnknownGroup: a rule names a group nobody defines.
	// It is sdk.ErrUnknownGroup, so host group tables and the file agree.
	ErrUnknownGroup = sdk.ErrUnknownGroup
	// ErrInvalidPolicy: the policy file is malformed; the error is a
	// *PolicyError with the position.
	ErrInvalidPolicy = errors.New("invalid firewall policy")
	// ErrTooComplex: the compiled tables would exceed their budget.
	ErrTooComplex = errors.New("policy too complex to compile")
)

// PolicyError locates a problem in a policy file.
type PolicyError struct {
	// File is the file name ("" when parsing bytes without one).
	File string
	// Line and Col are 1-based; 0 when unknown.
	Line, Col int
	// Field is the JSON path, e.g. rules[3].dst_ports[1].
	Field string
	// Err is what is wrong.
	Err error
}

func (e *PolicyError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(":")
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, "%d:%d:", e.Line, e.Col)
	}
	if b.Len() > 0 {
		b.WriteString(" ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *PolicyError) Unwrap() []error { return []error{ErrInvalidPolicy, e.Err} }

// ParseOptions tune Parse. The zero value parses a self-contained policy.
type ParseOptions struct {
	// File names the source in errors.
	File string
	// Groups resolves group names the file does not define (nil: such
	// names are errors).
	Groups GroupResolver
}

// LoadPolicy reads and parses a policy file.
func LoadPolicy(path string, groups GroupResolver) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read firewall policy: %w", err)
	}
	return ParsePolicy(data, ParseOptions{File: path, Groups: groups})
}

// The file format (docs/firewall.md).
type fileRule struct {
	Name        string            `json:"name"`
	Priority    *int              `json:"priority"`
	Direction   string            `json:"direction"`
	Src         []string          `json:"src"`
	Dst         []string          `json:"dst"`
	SrcGroups   []string          `json:"src_groups"`
	DstGroups   []string          `json:"dst_groups"`
	Proto       json.RawMessage   `json:"proto"`
	SrcPorts    []json.RawMessage `json:"src_ports"`
	DstPorts    []json.RawMessage `json:"dst_ports"`
	ICMPType    *int              `json:"icmp_type"`
	ICMPCode    *int              `json:"icmp_code"`
	Fragments   bool              `json:"fragments"`
	Action      string            `json:"action"`
	Log         bool              `json:"log"`
	Description string            `json:"description"`
}

type filePolicy struct {
	Version     int                 `json:"version"`
	Description string              `json:"description"`
	Defaults    map[string]string   `json:"defaults"`
	NonIP       string              `json:"non_ip"`
	Groups      map[string][]string `json:"groups"`
	Rules       []fileRule          `json:"rules"`
}

// Keys each object may hold; anything else is a typo worth an error.
var (
	topKeys     = []string{"version", "description", "defaults", "non_ip", "groups", "rules"}
	defaultKeys = []string{"from-vm", "to-vm"}
	ruleKeys    = []string{"name", "priority", "direction", "src", "dst", "src_groups", "dst_groups", "proto", "src_ports", "dst_ports", "icmp_type", "icmp_code", "fragments", "action", "log", "description"}
)

// ParsePolicy parses and validates a JSON policy. Errors are *PolicyError
// (wrapping ErrInvalidPolicy) with line, column and field.
func ParsePolicy(data []byte, opts ParseOptions) (*Policy, error) {
	return parsePolicy(data, opts, true)
}

// parsePolicy is ParsePolicy; fast false skips fastLocate and the decoders
// it enables (tests compare both ways).
func parsePolicy(data []byte, opts ParseOptions, fast bool) (*Policy, error) {
	var loc *locations
	if fast {
		loc = fastLocate(data)
	}
	if loc == nil {
		var err error
		if loc, err = locate(data); err != nil {
			return nil, withFile(err, opts.File)
		}
	}
	if err := loc.checkKeys(); err != nil {
		return nil, withFile(err, opts.File)
	}
	var fp filePolicy
	if !loc.decode(&fp) {
		fp = filePolicy{}
		if err := json.Unmarshal(data, &fp); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				line, col := lineCol(data, te.Offset)
				return nil, &PolicyError{File: opts.File, Line: line, Col: col, Field: te.Field, Err: fmt.Errorf("want %s, got %s", te.Type, te.Value)}
			}
			return nil, &PolicyError{File: opts.File, Err: err}
		}
	}
	bad := func(field string, format string, args ...any) error {
		line, col := loc.pos(field)
		return &PolicyError{File: opts.File, Line: line, Col: col, Field: field, Err: fmt.Errorf(format, args...)}
	}
	if fp.Version != 1 {
		return nil, bad("version", "version %d: want 1", fp.Version)
	}
	p := &Policy{Defaults: [sdk.NumDirections]Action{Allow, Deny}}
	for k, v := range fp.Defaults {
		a, err := parseAction(v)
		if err != nil {
			return nil, bad("defaults."+k, "%v", err)
		}
		d := sdk.FromVM
		if k == "to-vm" {
			d = sdk.ToVM
		}
		p.Defaults[d] = a
	}
	if fp.NonIP != "" {
		a, err := parseAction(fp.NonIP)
		if err != nil {
			return nil, bad("non_ip", "%v", err)
		}
		p.NonIP = a
	}
	groups := map[string][]netip.Prefix{}
	for name, members := range fp.Groups {
		field := "groups." + name
		if name == "" {
			return nil, bad(field, "empty group name")
		}
		if len(members) > MaxGroupMembers {
			return nil, bad(field, "%d members: at most %d", len(members), MaxGroupMembers)
		}
		for i, m := range members {
			pr, err := parsePrefix(m)
			if err != nil {
				return nil, bad(fmt.Sprintf("%s[%d]", field, i), "%v", err)
			}
			groups[name] = append(groups[name], pr)
		}
		if groups[name] == nil {
			groups[name] = []netip.Prefix{}
		}
	}
	resolve := func(field, name string) ([]netip.Prefix, error) {
		if m, ok := groups[name]; ok {
			return m, nil
		}
		if opts.Groups != nil {
			m, err := opts.Groups.Members(name)
			if err != nil {
				return nil, bad(field, "%v", err)
			}
			return m, nil
		}
		return nil, bad(field, "%w %q (define it under \"groups\")", ErrUnknownGroup, name)
	}
	if len(fp.Rules) > MaxRules {
		return nil, bad("rules", "%d rules: at most %d", len(fp.Rules), MaxRules)
	}
	if len(fp.Rules) > 0 {
		p.Rules = make([]Rule, 0, len(fp.Rules)) // Rule is large: no regrowth
	}
	for i, fr := range fp.Rules {
		r, err := parseRule(i, fr, bad, resolve)
		if err != nil {
			return nil, err
		}
		r.Line = loc.ruleLine(i)
		p.Rules = append(p.Rules, r)
	}
	sort.SliceStable(p.Rules, func(i, j int) bool { return p.Rules[i].Priority < p.Rules[j].Priority })
	p.File, p.Source = opts.File, data
	return p, nil
}

// decode fills fp from a document fastLocate accepted, each top-level
// value on its own and the rules in parallel (decoding was the largest
// part of parsing a big policy). It returns false for a document it did
// not check, and on any error: the caller then decodes the whole document
// with json.Unmarshal, whose error carries the offset and field.
func (l *locations) decode(fp *filePolicy) bool {
	if l.top == nil {
		return false
	}
	for k, sp := range l.top {
		var dst any
		switch k {
		case "version":
			dst = &fp.Version
		case "description":
			dst = &fp.Description
		case "defaults":
			dst = &fp.Defaults
		case "non_ip":
			dst = &fp.NonIP
		case "groups":
			dst = &fp.Groups
		case "rules":
			if l.data[sp.start] != '[' {
				return false
			}
			continue
		default:
			return false
		}
		if json.Unmarshal(l.data[sp.start:sp.end], dst) != nil {
			return false
		}
	}
	n := len(l.ruleOffs)
	if n == 0 {
		return true
	}
	fp.Rules = make([]fileRule, n)
	workers := min(runtime.GOMAXPROCS(0), 1+n/512)
	var wg sync.WaitGroup
	var failed atomic.Bool
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n && !failed.Load(); i += workers {
				b := l.data[l.ruleOffs[i]:l.ruleEnds[i]]
				if decodeRule(b, &fp.Rules[i]) {
					continue
				}
				fp.Rules[i] = fileRule{}
				if json.Unmarshal(b, &fp.Rules[i]) != nil {
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	return !failed.Load()
}

func withFile(err error, file string) error {
	var pe *PolicyError
	if errors.As(err, &pe) {
		pe.File = file
	}
	return err
}

func parseRule(i int, fr fileRule, bad func(string, string, ...any) error, resolve func(string, string) ([]netip.Prefix, error)) (Rule, error) {
	f := func(name string) string { return fmt.Sprintf("rules[%d].%s", i, name) }
	r := Rule{Name: fr.Name, Priority: DefaultPriority, Proto: ProtoAny, ICMPType: -1, ICMPCode: -1, Fragments: fr.Fragments, Log: fr.Log}
	if r.Name == "" {
		r.Name = fmt.Sprintf("rule-%d", i)
	}
	if fr.Priority != nil {
		if *fr.Priority < 0 || *fr.Priority > 1<<30 {
			return r, bad(f("priority"), "priority %d: want 0..%d", *fr.Priority, 1<<30)
		}
		r.Priority = *fr.Priority
	}
	switch fr.Direction {
	case "", "both":
		r.Dirs = sdk.DirBoth
	case "from-vm":
		r.Dirs = sdk.DirFromVM
	case "to-vm":
		r.Dirs = sdk.DirToVM
	default:
		return r, bad(f("direction"), "direction %q: want from-vm, to-vm or both", fr.Direction)
	}
	var err error
	if r.Src, err = addrMatch(f, "src", fr.Src, fr.SrcGroups, bad, resolve); err != nil {
		return r, err
	}
	if r.Dst, err = addrMatch(f, "dst", fr.Dst, fr.DstGroups, bad, resolve); err != nil {
		return r, err
	}
	if len(fr.Proto) > 0 {
		if r.Proto, err = parseProto(fr.Proto); err != nil {
			return r, bad(f("proto"), "%v", err)
		}
	}
	ported := r.Proto == ProtoTCP || r.Proto == ProtoUDP
	icmp := r.Proto == ProtoICMP || r.Proto == ProtoICMPv6
	if fr.SrcPorts != nil || fr.DstPorts != nil {
		if !ported {
			return r, bad(f("proto"), "ports need proto tcp or udp")
		}
	}
	if fr.SrcPorts != nil {
		if r.SrcPorts, err = parsePorts(func() string { return f("src_ports") }, fr.SrcPorts, bad); err != nil {
			return r, err
		}
	}
	if fr.DstPorts != nil {
		if r.DstPorts, err = parsePorts(func() string { return f("dst_ports") }, fr.DstPorts, bad); err != nil {
			return r, err
		}
	}
	if fr.ICMPType != nil || fr.ICMPCode != nil {
		if !icmp {
			return r, bad(f("proto"), "icmp_type/icmp_code need proto icmp or icmpv6")
		}
	}
	if fr.ICMPType != nil {
		if *fr.ICMPType < 0 || *fr.ICMPType > 255 {
			return r, bad(f("icmp_type"), "icmp type %d: want 0..255", *fr.ICMPType)
		}
		r.ICMPType = *fr.ICMPType
	}
	if fr.ICMPCode != nil {
		if *fr.ICMPCode < 0 || *fr.ICMPCode > 255 {
			return r, bad(f("icmp_code"), "icmp code %d: want 0..255", *fr.ICMPCode)
		}
		if r.ICMPType < 0 {
			return r, bad(f("icmp_code"), "icmp_code needs icmp_type")
		}
		r.ICMPCode = *fr.ICMPCode
	}
	if r.Fragments && (r.SrcPorts != nil || r.DstPorts != nil || r.ICMPType >= 0) {
		return r, bad(f("fragments"), "a rule matching fragments cannot match ports or ICMP type (fragments after the first carry none)")
	}
	if fr.Action == "" {
		return r, bad(f("action"), "action missing: want allow, deny or reject")
	}
	if r.Action, err = parseAction(fr.Action); err != nil {
		return r, bad(f("action"), "%v", err)
	}
	return r, nil
}

// addrMatch parses one side of a rule: side is "src" or "dst", field
// names a field of the rule (called only for an error or a group, so a
// large policy does not format two field names per rule for nothing).
func addrMatch(field func(string) string, side string, cidrs, groups []string, bad func(string, string, ...any) error, resolve func(string, string) ([]netip.Prefix, error)) (AddrMatch, error) {
	if cidrs == nil && groups == nil {
		return AddrMatch{Any: true}, nil
	}
	m := AddrMatch{Prefixes: make([]netip.Prefix, 0, len(cidrs))}
	for i, c := range cidrs {
		p, err := parsePrefix(c)
		if err != nil {
			return m, bad(fmt.Sprintf("%s[%d]", field(side), i), "%v", err)
		}
		m.Prefixes = append(m.Prefixes, p)
	}
	for i, g := range groups {
		members, err := resolve(fmt.Sprintf("%s[%d]", field(side+"_groups"), i), g)
		if err != nil {
			return m, err
		}
		m.Prefixes = append(m.Prefixes, members...)
	}
	slices.SortFunc(m.Prefixes, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	m.Prefixes = slices.Compact(m.Prefixes)
	return m, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR prefix", s)
		}
		if p.Addr().Is4In6() {
			return netip.Prefix{}, fmt.Errorf("%q: write IPv4-mapped prefixes as IPv4", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix", s)
	}
	if a.Zone() != "" || a.Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q: no zones or IPv4-mapped addresses", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

var protoNames = map[string]int{"any": ProtoAny, "tcp": ProtoTCP, "udp": ProtoUDP, "icmp": ProtoICMP, "icmpv6": ProtoICMPv6}

// plainString is the value of a JSON string without escapes (false for
// anything else, which json.Unmarshal then decodes).
func plainString(raw json.RawMessage) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' || bytes.IndexByte(raw, '\\') >= 0 {
		return "", false
	}
	return string(raw[1 : len(raw)-1]), true
}

func parseProto(raw json.RawMessage) (int, error) {
	s, ok := plainString(raw)
	if ok {
		if p, ok := protoNames[s]; ok {
			return p, nil
		}
	} else if err := json.Unmarshal(raw, &s); err != nil {
		var n int
		if err := json.Unmarshal(raw, &n); err != nil {
			return 0, fmt.Errorf("proto %s: want tcp, udp, icmp, icmpv6, any or a number 0..255", raw)
		}
		s = strconv.Itoa(n)
	}
	if p, ok := protoNames[strings.ToLower(s)]; ok {
		return p, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 255 {
		return 0, fmt.Errorf("proto %q: want tcp, udp, icmp, icmpv6, any or a number 0..255", s)
	}
	return n, nil
}

// parsePorts parses a port list; field names it (called on errors only).
func parsePorts(field func() string, raw []json.RawMessage, bad func(string, string, ...any) error) ([]PortRange, error) {
	out := make([]PortRange, 0, len(raw))
	for i, r := range raw {
		f := func() string { return fmt.Sprintf("%s[%d]", field(), i) }
		if l, ok := plainPort(r); ok {
			// The common case, a bare number: no encoding/json round trip
			// (which, trying a string first, built an error per port).
			out = append(out, PortRange{l, l})
			continue
		}
		s, ok := plainString(r)
		if !ok {
			if err := json.Unmarshal(r, &s); err != nil {
				var n int
				if err := json.Unmarshal(r, &n); err != nil {
					return nil, bad(f(), "port %s: want a number or \"lo-hi\"", r)
				}
				s = strconv.Itoa(n)
			}
		}
		lo, hi, isRange := strings.Cut(s, "-")
		if !isRange {
			hi = lo
		}
		l, err1 := strconv.Atoi(strings.TrimSpace(lo))
		h, err2 := strconv.Atoi(strings.TrimSpace(hi))
		if err1 != nil || err2 != nil || l < 0 || h > 65535 || l > h {
			return nil, bad(f(), "port %q: want 0..65535 or \"lo-hi\" with lo <= hi", s)
		}
		out = append(out, PortRange{uint16(l), uint16(h)})
	}
	if len(out) == 0 {
		return nil, bad(field(), "empty port list (omit the field to match every port)")
	}
	return out, nil
}

// plainPort reads r when it is a bare decimal number of 0..65535 without
// a sign, exponent or leading zero (what encoding/json reads as the same
// int); anything else is left to the general path.
func plainPort(r json.RawMessage) (uint16, bool) {
	if len(r) == 0 || len(r) > 5 || (len(r) > 1 && r[0] == '0') {
		return 0, false
	}
	n := 0
	for _, c := range r {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	if n > 65535 {
		return 0, false
	}
	return uint16(n), true
}

// locations maps JSON paths (version, rules[3].dst_ports[1], groups.web) to
// the byte offset where their value starts, and remembers object keys so
// unknown ones are reported where they are.
type locations struct {
	data []byte
	at   map[string]int64
	// lazy: at is empty until a position is asked for, then filled by
	// locate (fastLocate records only what a policy that parses needs).
	lazy bool
	// ruleOffs and ruleEnds are where the elements of the top-level
	// "rules" start and end; top, where the top-level values lie
	// (fastLocate only).
	ruleOffs, ruleEnds []int64
	top                map[string]span
	keys               []keyAt // every object key, in order (locate only)
	// newlines are the offsets of every '\n', built at the first pos:
	// a line number is then a binary search, not a count from the start
	// (which made a 10,000-rule policy take 600 ms to parse).
	newlines []int64
}

type keyAt struct {
	parent, key string
	off         int64
}

// offset is where the value at path starts.
func (l *locations) offset(path string) (int64, bool) {
	if l.lazy {
		l.lazy = false
		if full, err := locate(l.data); err == nil {
			l.at = full.at
		}
	}
	off, ok := l.at[path]
	return off, ok
}

// ruleLine is the line rules[i] starts on (0 if unknown); on the fast
// path it needs neither the position map nor a path string.
func (l *locations) ruleLine(i int) int {
	if i < len(l.ruleOffs) {
		line, _ := l.lineColAt(l.ruleOffs[i])
		return line
	}
	line, _ := l.pos(fmt.Sprintf("rules[%d]", i))
	return line
}

func (l *locations) pos(path string) (int, int) {
	off, ok := l.offset(path)
	for !ok && path != "" {
		// Fall back to the closest enclosing value.
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
		off, ok = l.offset(path)
	}
	if !ok {
		return 0, 0
	}
	return l.lineColAt(off)
}

// lineColAt is lineCol with the newline index.
func (l *locations) lineColAt(off int64) (int, int) {
	if l.newlines == nil {
		l.newlines = make([]int64, 0, 1024)
		for i, c := range l.data {
			if c == '\n' {
				l.newlines = append(l.newlines, int64(i))
			}
		}
	}
	off = min(max(off, 0), int64(len(l.data)))
	n, _ := slices.BinarySearch(l.newlines, off) // newlines before off
	lineStart := int64(0)
	if n > 0 {
		lineStart = l.newlines[n-1] + 1
	}
	return n + 1, int(off-lineStart) + 1
}

func (l *locations) checkKeys() error {
	for _, k := range l.keys {
		var allowed []string
		switch {
		case k.parent == "":
			allowed = topKeys
		case k.parent == "defaults":
			allowed = defaultKeys
		case k.parent == "groups":
			continue
		case strings.HasPrefix(k.parent, "rules[") && !strings.ContainsAny(k.parent[len("rules["):], ".["):
			allowed = ruleKeys
		default:
			continue // values of the wrong type are reported by Unmarshal
		}
		if !slices.Contains(allowed, k.key) {
			line, col := lineCol(l.data, k.off)
			field := k.key
			if k.parent != "" {
				field = k.parent + "." + k.key
			}
			return &PolicyError{Line: line, Col: col, Field: field, Err: fmt.Errorf("unknown field %q (known: %s)", k.key, strings.Join(allowed, ", "))}
		}
	}
	return nil
}

// locate walks the document once with the token decoder.
func locate(data []byte) (*locations, error) {
	l := &locations{data: data, at: map[string]int64{}}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	fail := func(err error) error {
		off := dec.InputOffset()
		var se *json.SyntaxError
		if errors.As(err, &se) {
			off = se.Offset
		}
		line, col := lineCol(data, off)
		return &PolicyError{Line: line, Col: col, Err: err}
	}
	var walk func(path string, depth int) error
	walk = func(path string, depth int) error {
		if depth > 32 {
			return fail(errors.New("nested too deeply"))
		}
		l.at[path] = skipSpace(data, dec.InputOffset())
		tok, err := dec.Token()
		if err != nil {
			return fail(err)
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				koff := skipSpace(data, dec.InputOffset())
				kt, err := dec.Token()
				if err != nil {
					return fail(err)
				}
				key, _ := kt.(string)
				child := key
				if path != "" {
					child = path + "." + key
				}
				if seen[key] {
					line, col := lineCol(data, koff)
					return &PolicyError{Line: line, Col: col, Field: child, Err: errors.New("duplicate field")}
				}
				seen[key] = true
				l.keys = append(l.keys, keyAt{parent: path, key: key, off: koff})
				if err := walk(child, depth+1); err != nil {
					return err
				}
			}
			if _, err := dec.Token(); err != nil {
				return fail(err)
			}
		case json.Delim('['):
			for i := 0; dec.More(); i++ {
				if err := walk(fmt.Sprintf("%s[%d]", path, i), depth+1); err != nil {
					return err
				}
			}
			if _, err := dec.Token(); err != nil {
				return fail(err)
			}
		}
		return nil
	}
	if err := walk("", 0); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err == nil {
		return nil, fail(errors.New("trailing data after the policy object"))
	}
	if _, ok := l.at[""]; !ok || len(bytes.TrimSpace(data)) == 0 || bytes.TrimSpace(data)[0] != '{' {
		return nil, &PolicyError{Line: 1, Col: 1, Err: errors.New("a policy is a JSON object")}
	}
	return l, nil
}

// skipSpace moves off past whitespace, ':' and ',' to where a token starts.
func skipSpace(data []byte, off int64) int64 {
	for off < int64(len(data)) {
		switch data[off] {
		case ' ', '\t', '\r', '\n', ':', ',':
			off++
			continue
		}
		break
	}
	return off
}

// lineCol turns a byte offset into a 1-based line and column.
func lineCol(data []byte, off int64) (int, int) {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	if off < 0 {
		off = 0
	}
	before := data[:off]
	line := bytes.Count(before, []byte{'\n'}) + 1
	col := int(off) - (bytes.LastIndexByte(before, '\n') + 1) + 1
	return line, col
}

// Match is the reference semantics: the first rule (in order) matching pkt,
// or -1. Compiled.Classify must agree with it for every packet.
func (p *Policy) Match(pkt *Packet) int {
	for i := range p.Rules {
		if p.Rules[i].Matches(pkt) {
			return i
		}
	}
	return -1
}

// Matches reports whether r matches pkt (an IP packet that parsed).
func (r *Rule) Matches(pkt *Packet) bool {
	if !r.Dirs.Has(pkt.Dir) {
		return false
	}
	if r.Proto != ProtoAny && r.Proto != int(pkt.Proto) {
		return false
	}
	if pkt.Fragment && !r.Fragments {
		return false
	}
	if !r.Src.Contains(pkt.Src) || !r.Dst.Contains(pkt.Dst) {
		return false
	}
	if !inRanges(r.SrcPorts, pkt.P1) || !inRanges(r.DstPorts, pkt.P2) {
		return false
	}
	if r.ICMPType >= 0 && int(pkt.P1) != r.ICMPType {
		return false
	}
	if r.ICMPCode >= 0 && int(pkt.P2) != r.ICMPCode {
		return false
	}
	return true
}

func inRanges(rs []PortRange, v uint16) bool {
	if rs == nil {
		return true
	}
	for _, r := range rs {
		if v >= r.Lo && v <= r.Hi {
			return true
		}
	}
	return false
}
