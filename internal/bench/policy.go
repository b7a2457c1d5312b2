package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// Ports inside VM B. The namespaces are private, so fixed ports are safe.
const (
	iperfPort = 5201
	udpPort   = 9000
	rrPort    = 9001
	connPort  = 9002
	swapPort  = 9003
)

// The benchmark's flows, all from VM A to VM B (or to the VIP, whose
// backends live in B): no generated rule may match them before the
// allowing rule.
var benchFlows = []testFlow{
	{"udp", netip.MustParseAddr("10.77.0.2"), udpPort},
	{"tcp", netip.MustParseAddr("10.77.0.2"), iperfPort},
	{"tcp", netip.MustParseAddr("10.77.0.2"), rrPort},
	{"tcp", netip.MustParseAddr("10.77.0.2"), connPort},
	{"udp", netip.MustParseAddr("10.77.0.2"), swapPort},
}

// allowRule admits everything A sends into its own subnet: the one rule
// of fw-1, and the rule the longer policies hide near their end.
var allowRule = genRule{name: "allow-bench", local: netip.MustParsePrefix("10.77.0.1/32"),
	remote: netip.MustParsePrefix("10.77.0.0/24"), proto: "any", allow: true}

// policyTail is how many rules follow the allowing rule.
const policyTail = 5

// genRule is one rule of a generated firewall policy, in a form that renders
// both as the firewall's JSON (docs/firewall.md) and as one nftables line.
type genRule struct {
	name string
	// toVM: the rule judges what the VM receives (src = remote, dst = VM);
	// else what it sends (src = VM, dst = remote).
	toVM bool
	// local is the protected VM's address, remote the other side: a
	// prefix, or the zero Prefix for "any remote".
	local, remote netip.Prefix
	// proto is "tcp", "udp", "icmp", "icmpv6" or "any".
	proto string
	// lo..hi is the destination port range (tcp/udp; hi == 0: any port),
	// or for ICMP the type (lo) and code (hi).
	lo, hi uint16
	allow  bool
}

// policyGen draws firewall policies the way an operator's rule base looks:
// mostly single hosts and subnets talking to well-known service ports,
// both directions, a mix of allow and deny, some IPv6, a few port ranges
// and ICMP rules. The protected VM's own address is written on its side of
// every rule (as a central policy names the destination of "to-vm" rules
// and the source of "from-vm" ones).
//
// Remote prefixes never nest: hosts come from 10.0.0.0/10 and 10.128.0.0/10,
// subnets (/24) from 10.64.0.0/10 — all outside the benchmark's 10.77.0.0/24
// — and IPv6 /64s and /128s from fd00:1000::/24. The compiler's cross
// products grow with the number of prefixes that cover one another
// (docs/firewall.md, "Classification"); nested prefixes are allowed by the
// policy language but make 100,000-rule policies exceed its table budget
// (ErrTooComplex), and a policy it refuses cannot be measured.
type policyGen struct {
	rng   *rand.Rand
	vm4   netip.Addr
	vm6   netip.Addr
	flows []testFlow
	// appPorts are the non-standard ports the rule base's applications
	// use: a pool, not a fresh random port per rule.
	appPorts []uint16
}

// testFlow is a flow the benchmark sends from the protected VM: no generated
// rule may match it ahead of the allowing rule.
type testFlow struct {
	proto string // tcp or udp
	dst   netip.Addr
	port  uint16
}

// appPortPool is how many distinct application ports a generated rule
// base uses besides the well-known ones.
const appPortPool = 2000

// wellKnown are the service ports rules most often name.
var wellKnown = []uint16{22, 25, 53, 80, 110, 123, 143, 389, 443, 445, 465, 587, 636, 993, 995,
	1433, 1521, 2049, 2379, 3306, 3389, 5432, 5672, 6379, 6443, 8000, 8080, 8443, 8888,
	9090, 9092, 9200, 9300, 10250, 11211, 27017}

func newPolicyGen(seed uint64, vm4, vm6 netip.Addr, flows []testFlow) *policyGen {
	g := &policyGen{rng: rand.New(rand.NewPCG(seed, 0x766e6963)), vm4: vm4, vm6: vm6, flows: flows}
	for range appPortPool {
		g.appPorts = append(g.appPorts, uint16(1024+g.rng.IntN(64000)))
	}
	return g
}

// randomRule draws one rule that matches none of the test flows.
func (g *policyGen) randomRule(i int) genRule {
	for {
		r := g.draw(i)
		if !g.hitsTestFlow(r) {
			return r
		}
	}
}

func (g *policyGen) draw(i int) genRule {
	rng := g.rng
	r := genRule{name: fmt.Sprintf("r%d", i), toVM: rng.IntN(100) < 60, allow: rng.IntN(100) < 70}
	v6 := rng.IntN(100) < 10
	switch x := rng.IntN(100); {
	case x < 55: // a single host, sometimes with several rules
		if v6 {
			r.remote = netip.PrefixFrom(g.v6host(), 128)
		} else {
			r.remote = netip.PrefixFrom(g.v4host(), 32)
		}
	default: // a subnet
		if v6 {
			a := [16]byte{0xfd, 0x00, 0x10}
			a[3], a[4], a[5], a[6], a[7] = byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256)), 0x01
			r.remote = netip.PrefixFrom(netip.AddrFrom16(a), 64)
		} else {
			b := byte(64 + rng.IntN(63))
			if b >= 77 {
				b++ // never 10.77.x.0/24, the benchmark's own subnet
			}
			r.remote = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, b, byte(rng.IntN(256)), 0}), 24)
		}
	}
	if v6 {
		r.local = netip.PrefixFrom(g.vm6, 128)
	} else {
		r.local = netip.PrefixFrom(g.vm4, 32)
	}
	switch x := rng.IntN(100); {
	case x < 62:
		r.proto = "tcp"
	case x < 92:
		r.proto = "udp"
	default:
		// Type and code: a rule naming the type alone is a wildcard in
		// the compiler's second port dimension and multiplies with every
		// port interval of the other rules (see the type comment).
		r.proto = "icmp"
		t := [][2]uint16{{8, 0}, {0, 0}, {3, 4}, {11, 0}}[rng.IntN(4)]
		if v6 {
			r.proto = "icmpv6"
			t = [][2]uint16{{128, 0}, {129, 0}, {2, 0}, {1, 4}}[rng.IntN(4)]
		}
		r.lo, r.hi = t[0], t[1]
		return r
	}
	switch x := rng.IntN(100); {
	case x < 60:
		r.lo = wellKnown[rng.IntN(len(wellKnown))]
		r.hi = r.lo
	case x < 95: // an application port from the rule base's own pool
		r.lo = g.appPorts[rng.IntN(len(g.appPorts))]
		r.hi = r.lo
	default: // a narrow range
		r.lo = uint16(1024 + rng.IntN(64000))
		r.hi = r.lo + uint16(1+rng.IntN(9))
	}
	return r
}

// v4host is a distinct-enough host address in 10.0.0.0/10 or 10.128.0.0/10.
func (g *policyGen) v4host() netip.Addr {
	// Reuse an earlier host now and then, as a rule base names the same
	// server for several services.
	n := g.rng.Uint32N(1 << 22)
	if g.rng.IntN(100) < 20 {
		n = g.rng.Uint32N(1 << 10) // a small pool of popular hosts
	}
	hi := byte(0)
	if g.rng.IntN(2) == 1 {
		hi = 128
	}
	return netip.AddrFrom4([4]byte{10, hi + byte(n>>16), byte(n >> 8), byte(n)})
}

func (g *policyGen) v6host() netip.Addr {
	a := [16]byte{0xfd, 0x00, 0x10, 0xff}
	n := g.rng.Uint64()
	for i := range 8 {
		a[8+i] = byte(n >> (8 * i))
	}
	return netip.AddrFrom16(a)
}

// hitsTestFlow reports whether r would match one of the benchmark's flows.
func (g *policyGen) hitsTestFlow(r genRule) bool {
	for _, f := range g.flows {
		if r.toVM || r.proto != f.proto && r.proto != "any" {
			continue
		}
		if r.remote.IsValid() && !r.remote.Contains(f.dst) {
			continue
		}
		if r.hi != 0 && (f.port < r.lo || f.port > r.hi) {
			continue
		}
		return true
	}
	return false
}

// genPolicy returns an n-rule policy (n >= 1) whose rules match none of
// the test flows except allow, placed `tail` rules before the end (or at the
// end when the policy is shorter): a rule-by-rule evaluator walks past
// n-tail-1 rules before it admits the benchmark's traffic. Both defaults
// deny, so the flows' replies pass only through the connection table.
func genPolicy(n, tail int, seed uint64, vm4, vm6 netip.Addr, flows []testFlow, allow genRule) []genRule {
	g := newPolicyGen(seed, vm4, vm6, flows)
	at := max(0, n-1-tail)
	rules := make([]genRule, 0, n)
	for i := range n {
		if i == at {
			rules = append(rules, allow)
			continue
		}
		rules = append(rules, g.randomRule(i))
	}
	return rules
}

// fwPolicyJSON renders rules as a firewall policy file: version 1, both
// defaults deny, one priority (so file order decides, as in a linear list).
func fwPolicyJSON(rules []genRule, desc string) ([]byte, error) {
	type jrule struct {
		Name      string   `json:"name"`
		Priority  int      `json:"priority"`
		Direction string   `json:"direction"`
		Src       []string `json:"src,omitempty"`
		Dst       []string `json:"dst,omitempty"`
		Proto     string   `json:"proto"`
		DstPorts  []string `json:"dst_ports,omitempty"`
		ICMPType  *int     `json:"icmp_type,omitempty"`
		ICMPCode  *int     `json:"icmp_code,omitempty"`
		Action    string   `json:"action"`
	}
	out := struct {
		Version     int
		Description string
		Defaults    map[string]string
		NonIP       string
		Rules       []jrule
	}{Version: 1, Description: desc, Defaults: map[string]string{"from-vm": "deny", "to-vm": "deny"}, NonIP: "allow"}
	for _, r := range rules {
		j := jrule{Name: r.name, Priority: 100, Direction: "from-vm", Proto: r.proto, Action: "deny"}
		if r.allow {
			j.Action = "allow"
		}
		local, remote := prefixList(r.local), prefixList(r.remote)
		if r.toVM {
			j.Direction, j.Src, j.Dst = "to-vm", remote, local
		} else {
			j.Src, j.Dst = local, remote
		}
		switch r.proto {
		case "tcp", "udp":
			if r.hi != 0 {
				p := fmt.Sprint(r.lo)
				if r.hi != r.lo {
					p = fmt.Sprintf("%d-%d", r.lo, r.hi)
				}
				j.DstPorts = []string{p}
			}
		case "icmp", "icmpv6":
			t, c := int(r.lo), int(r.hi)
			j.ICMPType, j.ICMPCode = &t, &c
		}
		out.Rules = append(out.Rules, j)
	}
	// One rule per line, as a person (or a tool) would write the file. The
	// policy parser computes line:column positions; a 100,000-rule file on
	// a single line made that quadratic (minutes).
	head, err := json.Marshal(struct {
		Version     int               `json:"version"`
		Description string            `json:"description"`
		Defaults    map[string]string `json:"defaults"`
		NonIP       string            `json:"non_ip"`
	}{out.Version, out.Description, out.Defaults, out.NonIP})
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Write(head[:len(head)-1])
	b.WriteString(",\n\"rules\": [\n")
	for i, j := range out.Rules {
		line, err := json.Marshal(j)
		if err != nil {
			return nil, err
		}
		b.Write(line)
		if i < len(out.Rules)-1 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	b.WriteString("]}\n")
	return b.Bytes(), nil
}

func prefixList(p netip.Prefix) []string {
	if !p.IsValid() {
		return nil
	}
	if p.IsSingleIP() {
		return []string{p.Addr().String()}
	}
	return []string{p.String()}
}

// nftLinear renders rules as an nftables table `inet <table>` with one
// forward chain, one rule per line in the same order, for the bridged
// traffic br_netfilter hands to the inet hooks. Direction is expressed by
// the VM's address on its side, as the firewall's rules are written. With
// established, a first rule accepts packets of known connections (the
// usual stateful rule base); without it every packet walks the list.
func nftLinear(table string, rules []genRule, established bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n\tchain vfb_forward {\n\t\ttype filter hook forward priority filter; policy drop;\n", table)
	if established {
		b.WriteString("\t\tct state established,related accept\n")
	}
	for _, r := range rules {
		b.WriteString("\t\t")
		b.WriteString(nftRule(r))
		b.WriteByte('\n')
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// nftRule is one rule as an nftables statement line.
func nftRule(r genRule) string {
	fam := "ip"
	if r.local.Addr().Is6() {
		fam = "ip6"
	}
	src, dst := r.local, r.remote
	if r.toVM {
		src, dst = r.remote, r.local
	}
	var f []string
	if src.IsValid() {
		f = append(f, fam+" saddr "+nftPrefix(src))
	} else {
		f = append(f, "meta nfproto "+map[string]string{"ip": "ipv4", "ip6": "ipv6"}[fam])
	}
	if dst.IsValid() {
		f = append(f, fam+" daddr "+nftPrefix(dst))
	}
	switch r.proto {
	case "tcp", "udp":
		if r.hi == 0 {
			f = append(f, "meta l4proto "+r.proto)
		} else if r.hi == r.lo {
			f = append(f, fmt.Sprintf("%s dport %d", r.proto, r.lo))
		} else {
			f = append(f, fmt.Sprintf("%s dport %d-%d", r.proto, r.lo, r.hi))
		}
	case "icmp", "icmpv6":
		f = append(f, fmt.Sprintf("%s type %d %s code %d", r.proto, r.lo, r.proto, r.hi))
	}
	if r.allow {
		f = append(f, "accept")
	} else {
		f = append(f, "drop")
	}
	return strings.Join(f, " ")
}

func nftPrefix(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// nftDNAT is the do-it-yourself load balancer: DNAT of vip, for each match
// (e.g. "tcp dport 80"), to the backends in turn (numgen inc), in the
// prerouting hook where br_netfilter hands bridged IPv4 to conntrack.
// Replies are reverse-NATed by conntrack.
func nftDNAT(table string, vip net.IP, backends []string, matches []string) string {
	var m strings.Builder
	for i, b := range backends {
		if i > 0 {
			m.WriteString(", ")
		}
		fmt.Fprintf(&m, "%d : %s", i, b)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n\tchain vfb_prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n", table)
	for _, match := range matches {
		fmt.Fprintf(&b, "\t\tip daddr %s %s dnat ip to numgen inc mod %d map { %s }\n", vip, match, len(backends), m.String())
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// nftSets renders rules the way a careful nftables user would: after
// "ct state established,related accept", one lookup per family in a
// verdict map keyed by the concatenation source . destination . protocol .
// destination port (intervals: prefixes and port ranges) for TCP and UDP,
// one keyed by source . destination . type . code for ICMP and ICMPv6,
// and the few rules that match any protocol as lines. A packet costs a
// handful of set lookups whatever the rule count (nft's pipapo
// concatenated-range sets), like the firewall's classifier.
//
// First match wins in the policy; a map cannot hold overlapping
// elements, so for each (source, destination, protocol) the port line is
// split where the rules' ranges begin and end and each piece gets the
// verdict of the first rule covering it (adjacent pieces with the same
// verdict merged). Different address pairs never overlap in generated
// policies (their remote prefixes do not nest: policyGen), which is what
// lets the maps ignore the order between them; nftSets returns an error if
// two address pairs of one map overlap.
func nftSets(table string, rules []genRule, established bool) (string, error) {
	type pairKey struct {
		fam              string
		src, dst         netip.Prefix
		proto            string
		icmpType, icmpCd uint16
	}
	type piece struct {
		lo, hi uint16
		allow  bool
	}
	var order []pairKey
	ports := map[pairKey][]genRule{}
	var icmp []pairKey
	icmpVerdict := map[pairKey]bool{}
	var anyLines []string
	for _, r := range rules {
		fam := "ip"
		if r.local.Addr().Is6() {
			fam = "ip6"
		}
		src, dst := r.local, r.remote
		if r.toVM {
			src, dst = r.remote, r.local
		}
		if !src.IsValid() || !dst.IsValid() {
			anyLines = append(anyLines, nftRule(r))
			continue
		}
		switch r.proto {
		case "tcp", "udp":
			k := pairKey{fam: fam, src: src, dst: dst, proto: r.proto}
			if _, ok := ports[k]; !ok {
				order = append(order, k)
			}
			ports[k] = append(ports[k], r)
		case "icmp", "icmpv6":
			k := pairKey{fam: fam, src: src, dst: dst, proto: r.proto, icmpType: r.lo, icmpCd: r.hi}
			if _, ok := icmpVerdict[k]; !ok {
				icmp = append(icmp, k)
				icmpVerdict[k] = r.allow // first match wins
			}
		default:
			anyLines = append(anyLines, nftRule(r))
		}
	}
	// Overlapping address pairs would make the maps' order matter.
	seen := map[[2]netip.Prefix]bool{}
	var pairs [][2]netip.Prefix
	for _, k := range append(append([]pairKey{}, order...), icmp...) {
		p := [2]netip.Prefix{k.src, k.dst}
		if !seen[p] {
			seen[p] = true
			pairs = append(pairs, p)
		}
	}
	byDst := map[netip.Prefix][]netip.Prefix{}
	for _, p := range pairs {
		byDst[p[1]] = append(byDst[p[1]], p[0])
	}
	for dst, srcs := range byDst {
		slices.SortFunc(srcs, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
		for i := 1; i < len(srcs); i++ {
			if srcs[i-1].Overlaps(srcs[i]) {
				return "", fmt.Errorf("nft sets: %s and %s overlap (to %s)", srcs[i-1], srcs[i], dst)
			}
		}
	}
	verdict := func(allow bool) string {
		if allow {
			return "accept"
		}
		return "drop"
	}
	elems := map[string][]string{} // map name → elements
	for _, k := range order {
		var bounds []int
		for _, r := range ports[k] {
			lo, hi := int(r.lo), int(r.hi)
			if r.hi == 0 {
				lo, hi = 0, 65535
			}
			bounds = append(bounds, lo, hi+1)
		}
		slices.Sort(bounds)
		bounds = slices.Compact(bounds)
		var ps []piece
		for i := 0; i+1 < len(bounds); i++ {
			lo, hi := bounds[i], bounds[i+1]-1
			for _, r := range ports[k] {
				rlo, rhi := int(r.lo), int(r.hi)
				if r.hi == 0 {
					rlo, rhi = 0, 65535
				}
				if rlo <= lo && hi <= rhi {
					if n := len(ps); n > 0 && ps[n-1].allow == r.allow && int(ps[n-1].hi)+1 == lo {
						ps[n-1].hi = uint16(hi)
					} else {
						ps = append(ps, piece{uint16(lo), uint16(hi), r.allow})
					}
					break
				}
			}
		}
		name := k.fam + "_ports"
		for _, p := range ps {
			port := fmt.Sprint(p.lo)
			if p.hi != p.lo {
				port = fmt.Sprintf("%d-%d", p.lo, p.hi)
			}
			elems[name] = append(elems[name], fmt.Sprintf("%s . %s . %s . %s : %s", nftPrefix(k.src), nftPrefix(k.dst), k.proto, port, verdict(p.allow)))
		}
	}
	for _, k := range icmp {
		name := k.fam + "_icmp"
		elems[name] = append(elems[name], fmt.Sprintf("%s . %s . %d . %d : %s", nftPrefix(k.src), nftPrefix(k.dst), k.icmpType, k.icmpCd, verdict(icmpVerdict[k])))
	}
	type vmap struct{ name, typ, match string }
	maps := []vmap{
		{"ip_ports", "ipv4_addr . ipv4_addr . inet_proto . inet_service", "ip saddr . ip daddr . meta l4proto . th dport"},
		{"ip6_ports", "ipv6_addr . ipv6_addr . inet_proto . inet_service", "ip6 saddr . ip6 daddr . meta l4proto . th dport"},
		{"ip_icmp", "ipv4_addr . ipv4_addr . icmp_type . icmp_code", "ip saddr . ip daddr . icmp type . icmp code"},
		{"ip6_icmp", "ipv6_addr . ipv6_addr . icmpv6_type . icmpv6_code", "ip6 saddr . ip6 daddr . icmpv6 type . icmpv6 code"},
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", table)
	for _, m := range maps {
		if len(elems[m.name]) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\tmap %s {\n\t\ttype %s : verdict\n\t\tflags interval\n\t\telements = {\n", m.name, m.typ)
		for i, e := range elems[m.name] {
			b.WriteString("\t\t\t")
			b.WriteString(e)
			if i < len(elems[m.name])-1 {
				b.WriteByte(',')
			}
			b.WriteByte('\n')
		}
		b.WriteString("\t\t}\n\t}\n")
	}
	b.WriteString("\tchain vfb_forward {\n\t\ttype filter hook forward priority filter; policy drop;\n")
	if established {
		b.WriteString("\t\tct state established,related accept\n")
	}
	for _, m := range maps {
		if len(elems[m.name]) > 0 {
			fmt.Fprintf(&b, "\t\t%s vmap @%s\n", m.match, m.name)
		}
	}
	for _, l := range anyLines {
		fmt.Fprintf(&b, "\t\t%s\n", l)
	}
	b.WriteString("\t}\n}\n")
	return b.String(), nil
}
