package firewall

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// ParsePacket parses a packet description for `vfctl fw explain`:
//
//	DIR PROTO SRC[:PORT] -> DST[:PORT] [flags=syn,ack] [type=N] [code=N] [fragment]
//
// DIR is from-vm or to-vm; PROTO tcp, udp, icmp, icmpv6 or a number;
// IPv6 addresses with a port are bracketed ([fd00::1]:80); "to" may
// replace "->". A TCP packet
// without flags is a SYN (the first packet of a connection, the one the
// rules judge).
func ParsePacket(s string) (*Packet, error) {
	f := strings.Fields(strings.ReplaceAll(s, "->", " -> "))
	if len(f) >= 4 && f[3] == "to" {
		f[3] = "->"
	}
	if len(f) < 5 || f[3] != "->" {
		return nil, fmt.Errorf("packet %q: want DIR PROTO SRC[:PORT] -> DST[:PORT] [flags=...] [type=N] [code=N] [fragment]", s)
	}
	p := &Packet{Kind: KindIP}
	switch f[0] {
	case "from-vm":
		p.Dir = sdk.FromVM
	case "to-vm":
		p.Dir = sdk.ToVM
	default:
		return nil, fmt.Errorf("direction %q: want from-vm or to-vm", f[0])
	}
	switch strings.ToLower(f[1]) {
	case "tcp":
		p.Proto = ProtoTCP
	case "udp":
		p.Proto = ProtoUDP
	case "icmp":
		p.Proto = ProtoICMP
	case "icmpv6", "ipv6-icmp":
		p.Proto = ProtoICMPv6
	default:
		n, err := strconv.ParseUint(f[1], 10, 8)
		if err != nil {
			return nil, fmt.Errorf("protocol %q: want tcp, udp, icmp, icmpv6 or 0-255", f[1])
		}
		p.Proto = uint8(n)
	}
	ports := p.Proto == ProtoTCP || p.Proto == ProtoUDP
	var err error
	if p.Src, p.P1, err = parseEndpoint(f[2], ports); err != nil {
		return nil, err
	}
	if p.Dst, p.P2, err = parseEndpoint(f[4], ports); err != nil {
		return nil, err
	}
	if p.Src.Is4() != p.Dst.Is4() {
		return nil, fmt.Errorf("%s and %s: mixed address families", p.Src, p.Dst)
	}
	p.Family = 6
	if p.Src.Is4() {
		p.Family = 4
	}
	if p.Proto == ProtoTCP {
		p.TCPFlags = tcpSYN
	}
	icmp := p.Proto == ProtoICMP || p.Proto == ProtoICMPv6
	for _, opt := range f[5:] {
		k, v, _ := strings.Cut(opt, "=")
		switch {
		case k == "fragment" && v == "":
			p.Fragment = true
		case k == "flags" && p.Proto == ProtoTCP:
			p.TCPFlags = 0
			for _, fl := range strings.Split(strings.ToLower(v), ",") {
				switch fl {
				case "syn":
					p.TCPFlags |= tcpSYN
				case "ack":
					p.TCPFlags |= tcpACK
				case "fin":
					p.TCPFlags |= tcpFIN
				case "rst":
					p.TCPFlags |= tcpRST
				case "psh":
					p.TCPFlags |= 0x08
				default:
					return nil, fmt.Errorf("tcp flag %q: want syn, ack, fin, rst, psh", fl)
				}
			}
		case (k == "type" || k == "code") && icmp:
			n, err := strconv.ParseUint(v, 10, 8)
			if err != nil {
				return nil, fmt.Errorf("icmp %s %q: want 0-255", k, v)
			}
			if k == "type" {
				p.P1 = uint16(n)
			} else {
				p.P2 = uint16(n)
			}
		default:
			return nil, fmt.Errorf("option %q: want flags=... (tcp), type=N / code=N (icmp) or fragment", opt)
		}
	}
	if p.Fragment {
		p.P1, p.P2, p.TCPFlags = 0, 0, 0
	}
	return p, nil
}

func parseEndpoint(s string, ports bool) (netip.Addr, uint16, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if !ports {
			return netip.Addr{}, 0, fmt.Errorf("%s: only tcp and udp have ports", s)
		}
		return ap.Addr().Unmap(), ap.Port(), nil
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("%q is not an address or address:port", s)
	}
	return a.Unmap(), 0, nil
}

// Explanation says how the firewall decides a packet of a new flow.
type Explanation struct {
	Packet string `json:"packet"`
	// Verdict is allow, deny, reject or drop (never classified).
	Verdict string `json:"verdict"`
	// Rule is the index of the deciding rule, -1 for the default.
	Rule     int    `json:"rule"`
	RuleName string `json:"rule_name,omitempty"`
	// RuleLine is the rule's line in its file (0 unknown).
	RuleLine int `json:"rule_line,omitempty"`
	// Why lists what the deciding rule matched on (or why no rule did).
	Why []string `json:"why"`
	// Skipped lists earlier rules of the same direction that came close
	// (one condition off), with that condition.
	Skipped []string `json:"skipped,omitempty"`
	// Notes on what happens after this packet (conntrack).
	Notes []string `json:"notes,omitempty"`
}

// Explain classifies pkt as the first packet of a flow against p, as the
// model and the kernel do, and says why.
func (p *Policy) Explain(pkt *Packet) *Explanation {
	e := &Explanation{Packet: pkt.String(), Rule: -1}
	switch {
	case pkt.isND():
		e.Verdict, e.Why = "allow", []string{"IPv6 neighbour discovery (ICMPv6 133-136) always passes, like ARP"}
		return e
	case pkt.Proto == ProtoTCP && !pkt.Fragment && !validTCPFlags(pkt.TCPFlags):
		e.Verdict, e.Why = "drop", []string{fmt.Sprintf("TCP flags %#02x are not a combination a stack sends: dropped as invalid", pkt.TCPFlags)}
		return e
	}
	r := p.Match(pkt)
	for i := range p.Rules {
		if r >= 0 && i >= r {
			break
		}
		rule := &p.Rules[i]
		if !rule.Dirs.Has(pkt.Dir) {
			continue
		}
		if ok, why := rule.explain(pkt); !ok && len(why) == 1 && len(e.Skipped) < 5 {
			e.Skipped = append(e.Skipped, fmt.Sprintf("rule %d %q (%s, line %d): %s", i, rule.Name, rule.Action, rule.Line, why[0]))
		}
	}
	if r >= 0 {
		rule := &p.Rules[r]
		e.Rule, e.RuleName, e.RuleLine, e.Verdict = r, rule.Name, rule.Line, rule.Action.String()
		_, e.Why = rule.explain(pkt)
		e.Why = append([]string{fmt.Sprintf("first match in order (priority %d, then file order) among %d rules", rule.Priority, len(p.Rules))}, e.Why...)
		if rule.Log {
			e.Notes = append(e.Notes, "the rule is log-flagged (logged_total)")
		}
	} else if pkt.Fragment {
		e.Verdict = "drop"
		e.Why = []string{"a non-first fragment no rule with \"fragments\": true matches is dropped, whatever the default"}
		return e
	} else {
		e.Verdict = p.Defaults[pkt.Dir].String()
		e.Why = []string{fmt.Sprintf("no rule matches: the %s default", pkt.Dir)}
	}
	if pkt.isICMPError() {
		e.Notes = append(e.Notes, "an ICMP error quoting a packet of a tracked flow passes as related, before any rule; this verdict is for one that quotes no tracked flow")
	}
	if e.Verdict == "reject" {
		e.Notes = append(e.Notes, rejectNote(pkt))
	}
	if e.Verdict == "allow" && !pkt.Fragment && (pkt.tracked()) {
		e.Notes = append(e.Notes, "the flow is entered in the connection table: its later packets and the replies pass without classification (if the table is full, the slot's failure mode decides instead)")
	}
	return e
}

// explain checks r against pkt field by field: ok, and the reasons (what
// matched if ok, what did not otherwise).
func (r *Rule) explain(pkt *Packet) (bool, []string) {
	var yes, no []string
	check := func(ok bool, y, n string) {
		if ok {
			yes = append(yes, y)
		} else {
			no = append(no, n)
		}
	}
	check(r.Dirs.Has(pkt.Dir), "direction "+r.Dirs.String(), fmt.Sprintf("direction is %s, not %s", r.Dirs, pkt.Dir))
	if r.Proto == ProtoAny {
		yes = append(yes, "any protocol")
	} else {
		check(r.Proto == int(pkt.Proto), "proto "+protoName(r.Proto), fmt.Sprintf("proto %s, packet is %s", protoName(r.Proto), protoName(int(pkt.Proto))))
	}
	if pkt.Fragment {
		check(r.Fragments, "matches non-first fragments", "does not match non-first fragments")
	}
	check(r.Src.Contains(pkt.Src), "src "+r.Src.describe(pkt.Src), fmt.Sprintf("src %s not in %s", pkt.Src, r.Src.describe(netip.Addr{})))
	check(r.Dst.Contains(pkt.Dst), "dst "+r.Dst.describe(pkt.Dst), fmt.Sprintf("dst %s not in %s", pkt.Dst, r.Dst.describe(netip.Addr{})))
	if r.SrcPorts != nil {
		check(inRanges(r.SrcPorts, pkt.P1), fmt.Sprintf("src port %d in %s", pkt.P1, rangesString(r.SrcPorts)), fmt.Sprintf("src port %d not in %s", pkt.P1, rangesString(r.SrcPorts)))
	}
	if r.DstPorts != nil {
		check(inRanges(r.DstPorts, pkt.P2), fmt.Sprintf("dst port %d in %s", pkt.P2, rangesString(r.DstPorts)), fmt.Sprintf("dst port %d not in %s", pkt.P2, rangesString(r.DstPorts)))
	}
	if r.ICMPType >= 0 {
		check(int(pkt.P1) == r.ICMPType, fmt.Sprintf("icmp type %d", r.ICMPType), fmt.Sprintf("icmp type %d, packet has %d", r.ICMPType, pkt.P1))
	}
	if r.ICMPCode >= 0 {
		check(int(pkt.P2) == r.ICMPCode, fmt.Sprintf("icmp code %d", r.ICMPCode), fmt.Sprintf("icmp code %d, packet has %d", r.ICMPCode, pkt.P2))
	}
	if len(no) > 0 {
		return false, no
	}
	return true, yes
}

// describe names the prefixes of a side (the one containing a, if valid).
func (a AddrMatch) describe(addr netip.Addr) string {
	if a.Any {
		return "any"
	}
	if addr.IsValid() {
		for _, p := range a.Prefixes {
			if p.Contains(addr) {
				return fmt.Sprintf("%s in %s", addr, p)
			}
		}
	}
	if len(a.Prefixes) == 0 {
		return "(nothing: empty group)"
	}
	var s []string
	for i, p := range a.Prefixes {
		if i == 4 {
			s = append(s, fmt.Sprintf("… %d more", len(a.Prefixes)-4))
			break
		}
		s = append(s, p.String())
	}
	return "[" + strings.Join(s, " ") + "]"
}

func rangesString(rs []PortRange) string {
	var s []string
	for _, r := range rs {
		if r.Lo == r.Hi {
			s = append(s, strconv.Itoa(int(r.Lo)))
		} else {
			s = append(s, fmt.Sprintf("%d-%d", r.Lo, r.Hi))
		}
	}
	return "[" + strings.Join(s, " ") + "]"
}

func protoName(p int) string {
	switch p {
	case ProtoAny:
		return "any"
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoICMP:
		return "icmp"
	case ProtoICMPv6:
		return "icmpv6"
	}
	return strconv.Itoa(p)
}

// String describes p in ParsePacket's syntax.
func (p *Packet) String() string {
	ep := func(a netip.Addr, port uint16) string {
		if p.Proto == ProtoTCP || p.Proto == ProtoUDP {
			return netip.AddrPortFrom(a, port).String()
		}
		return a.String()
	}
	s := fmt.Sprintf("%s %s %s -> %s", p.Dir, protoName(int(p.Proto)), ep(p.Src, p.P1), ep(p.Dst, p.P2))
	switch {
	case p.Fragment:
		s += " fragment"
	case p.Proto == ProtoTCP:
		var fl []string
		for _, f := range []struct {
			bit  uint8
			name string
		}{{tcpSYN, "syn"}, {tcpACK, "ack"}, {tcpFIN, "fin"}, {tcpRST, "rst"}, {0x08, "psh"}} {
			if p.TCPFlags&f.bit != 0 {
				fl = append(fl, f.name)
			}
		}
		s += " flags=" + strings.Join(fl, ",")
	case p.Proto == ProtoICMP || p.Proto == ProtoICMPv6:
		s += fmt.Sprintf(" type=%d code=%d", p.P1, p.P2)
	}
	return s
}

// RuleChange is one rule's difference between two policies, by name.
type RuleChange struct {
	Name string `json:"name"`
	// Index in the old and new policy's evaluation order (-1: absent).
	Old int `json:"old_index"`
	New int `json:"new_index"`
	// Fields that differ (changed rules only).
	Fields []string `json:"fields,omitempty"`
}

// PolicyDiff lists what changed between two policies. Rules are matched
// by name (their id); a rule whose fields are equal but whose position
// relative to the other common rules moved is reported with field
// "order".
type PolicyDiff struct {
	Added    []RuleChange `json:"added"`
	Removed  []RuleChange `json:"removed"`
	Changed  []RuleChange `json:"changed"`
	Defaults []string     `json:"defaults,omitempty"`
}

// Empty reports whether the policies are equivalent rule by rule.
func (d *PolicyDiff) Empty() bool {
	return len(d.Added)+len(d.Removed)+len(d.Changed)+len(d.Defaults) == 0
}

// DiffPolicies compares old and new rule by rule (by name).
func DiffPolicies(old, new *Policy) (*PolicyDiff, error) {
	index := func(p *Policy, which string) (map[string]int, error) {
		m := map[string]int{}
		for i, r := range p.Rules {
			if _, dup := m[r.Name]; dup {
				return nil, fmt.Errorf("%s policy: rule name %q used twice: rules are compared by name", which, r.Name)
			}
			m[r.Name] = i
		}
		return m, nil
	}
	om, err := index(old, "old")
	if err != nil {
		return nil, err
	}
	nm, err := index(new, "new")
	if err != nil {
		return nil, err
	}
	d := &PolicyDiff{Added: []RuleChange{}, Removed: []RuleChange{}, Changed: []RuleChange{}}
	for dir := sdk.Direction(0); dir < sdk.NumDirections; dir++ {
		if old.Defaults[dir] != new.Defaults[dir] {
			d.Defaults = append(d.Defaults, fmt.Sprintf("default %s: %s -> %s", dir, old.Defaults[dir], new.Defaults[dir]))
		}
	}
	if old.NonIP != new.NonIP {
		d.Defaults = append(d.Defaults, fmt.Sprintf("non_ip: %s -> %s", old.NonIP, new.NonIP))
	}
	// A rule "moved" when it is not in the longest run of common rules
	// that kept their relative order (a longest increasing subsequence of
	// new positions taken in old order): one rule moved to the front
	// reports that rule only.
	var seq []int
	var names []string
	for _, r := range old.Rules {
		if j, ok := nm[r.Name]; ok {
			seq = append(seq, j)
			names = append(names, r.Name)
		}
	}
	moved := map[string]bool{}
	for _, n := range names {
		moved[n] = true
	}
	for _, k := range lis(seq) {
		delete(moved, names[k])
	}
	for i, r := range old.Rules {
		j, ok := nm[r.Name]
		if !ok {
			d.Removed = append(d.Removed, RuleChange{Name: r.Name, Old: i, New: -1})
			continue
		}
		fields := ruleFieldsDiff(&r, &new.Rules[j])
		if moved[r.Name] && !slices.Contains(fields, "priority") {
			fields = append(fields, "order")
		}
		if len(fields) > 0 {
			d.Changed = append(d.Changed, RuleChange{Name: r.Name, Old: i, New: j, Fields: fields})
		}
	}
	for j, r := range new.Rules {
		if _, ok := om[r.Name]; !ok {
			d.Added = append(d.Added, RuleChange{Name: r.Name, Old: -1, New: j})
		}
	}
	return d, nil
}

func ruleFieldsDiff(a, b *Rule) []string {
	var out []string
	add := func(eq bool, name string) {
		if !eq {
			out = append(out, name)
		}
	}
	addrEq := func(x, y AddrMatch) bool { return x.Any == y.Any && slices.Equal(x.Prefixes, y.Prefixes) }
	add(a.Priority == b.Priority, "priority")
	add(a.Dirs == b.Dirs, "direction")
	add(addrEq(a.Src, b.Src), "src")
	add(addrEq(a.Dst, b.Dst), "dst")
	add(a.Proto == b.Proto, "proto")
	add(slices.Equal(a.SrcPorts, b.SrcPorts) && (a.SrcPorts == nil) == (b.SrcPorts == nil), "src_ports")
	add(slices.Equal(a.DstPorts, b.DstPorts) && (a.DstPorts == nil) == (b.DstPorts == nil), "dst_ports")
	add(a.ICMPType == b.ICMPType, "icmp_type")
	add(a.ICMPCode == b.ICMPCode, "icmp_code")
	add(a.Fragments == b.Fragments, "fragments")
	add(a.Action == b.Action, "action")
	add(a.Log == b.Log, "log")
	return out
}

// Stats summarises a compiled policy for `vfctl fw check`.
type CompileStats struct {
	Rules int `json:"rules"`
	// SrcPrefixes and DstPrefixes are the LPM trie entries.
	SrcPrefixes int `json:"src_prefixes"`
	DstPrefixes int `json:"dst_prefixes"`
	// Cross are the entries of the four cross-product tables.
	CrossProtoP1 int `json:"cross_proto_p1"`
	CrossL4      int `json:"cross_l4"`
	CrossAddr    int `json:"cross_addr"`
	CrossFinal   int `json:"cross_final"`
	CrossTotal   int `json:"cross_total"`
	// Classes per dimension: src, dst, proto, p1, p2, proto×p1, l4, addr.
	Classes [8]int `json:"classes"`
}

// Stats reports the table sizes of c.
func (c *Compiled) Stats() CompileStats {
	s := CompileStats{Rules: len(c.Policy.Rules), SrcPrefixes: len(c.Src), DstPrefixes: len(c.Dst), Classes: c.Classes,
		CrossProtoP1: len(c.Cross[crossProtoP1]), CrossL4: len(c.Cross[crossL4]), CrossAddr: len(c.Cross[crossAddr]), CrossFinal: len(c.Cross[crossFinal])}
	s.CrossTotal = s.CrossProtoP1 + s.CrossL4 + s.CrossAddr + s.CrossFinal
	return s
}

// lis returns the indexes of a longest strictly increasing subsequence of
// seq (O(n log n)).
func lis(seq []int) []int {
	tails := []int{} // index into seq of the smallest tail of each length
	prev := make([]int, len(seq))
	for i, v := range seq {
		lo, hi := 0, len(tails)
		for lo < hi {
			m := (lo + hi) / 2
			if seq[tails[m]] < v {
				lo = m + 1
			} else {
				hi = m
			}
		}
		prev[i] = -1
		if lo > 0 {
			prev[i] = tails[lo-1]
		}
		if lo == len(tails) {
			tails = append(tails, i)
		} else {
			tails[lo] = i
		}
	}
	if len(tails) == 0 {
		return nil
	}
	out := make([]int, len(tails))
	for k, i := len(tails)-1, tails[len(tails)-1]; k >= 0; k, i = k-1, prev[i] {
		out[k] = i
	}
	return out
}

// rejectNote says what answers a rejected packet (docs/firewall.md,
// "Reject"); the checks on the frame itself (VLAN tags, extension
// headers) are not visible in an explained packet.
func rejectNote(p *Packet) string {
	back := "back to the VM"
	if p.Dir == sdk.ToVM {
		back = "back to the sender"
	}
	switch {
	case p.Fragment || p.isICMPError() || (p.Proto == ProtoTCP && p.TCPFlags&tcpRST != 0):
		return "reject: this packet gets no answer (a non-first fragment, an ICMP error or a RST): dropped like deny"
	case p.Proto == ProtoTCP:
		return "reject: the packet is dropped and answered with a TCP RST sent " + back + " (at most reject_rate answers per second)"
	case p.Proto == ProtoUDP:
		return "reject: the packet is dropped and answered with an ICMP port unreachable sent " + back + " (at most reject_rate per second)"
	}
	return "reject: the packet is dropped and answered with an ICMP administratively prohibited sent " + back + " (at most reject_rate per second)"
}
