package bench

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/filters/firewall"
)

var (
	testVM4 = netip.MustParseAddr("10.77.0.1")
	testVM6 = netip.MustParseAddr("fd77::1")
)

// TestGenPolicy checks the generated policies against the firewall's own
// parser, compiler and reference semantics: they load, they fit the
// compiler's tables, and every flow of the benchmark is decided by the
// allowing rule — which a rule-by-rule evaluator reaches only after all
// but policyTail of the others.
func TestGenPolicy(t *testing.T) { checkGenPolicy(t, 1, 10, 10000) }

// TestGenPolicySoak does the same for the 100,000-rule policy (make soak,
// or VNICFILTER_SOAK=1): ~25 s, most of it in the firewall's parser.
func TestGenPolicySoak(t *testing.T) {
	if os.Getenv("VNICFILTER_SOAK") == "" {
		t.Skip("set VNICFILTER_SOAK=1 (make soak) to check the 100,000-rule policy (~25 s)")
	}
	checkGenPolicy(t, 100000)
}

func checkGenPolicy(t *testing.T, sizes ...int) {
	for _, n := range sizes {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			rules := genPolicy(n, policyTail, uint64(n), testVM4, testVM6, benchFlows, allowRule)
			if len(rules) != n {
				t.Fatalf("%d rules, want %d", len(rules), n)
			}
			at := max(0, n-1-policyTail)
			if rules[at].name != allowRule.name {
				t.Fatalf("rule %d is %q, want the allowing rule", at, rules[at].name)
			}
			b, err := fwPolicyJSON(rules, "test")
			if err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			p, err := firewall.ParsePolicy(b, firewall.ParseOptions{})
			if err != nil {
				t.Fatalf("the firewall refuses the generated policy: %v", err)
			}
			t1 := time.Now()
			c, err := firewall.Compile(p)
			if err != nil {
				t.Fatalf("the firewall cannot compile the generated policy: %v", err)
			}
			if n >= 10000 {
				t.Logf("%d rules (%d bytes): parse %v, compile %v; %+v", n, len(b), t1.Sub(t0).Round(time.Millisecond), time.Since(t1).Round(time.Millisecond), c.Stats())
			}
			for _, f := range benchFlows {
				pkt, err := firewall.ParsePacket(fmt.Sprintf("from-vm %s %s:40000 -> %s:%d", f.proto, testVM4, f.dst, f.port))
				if err != nil {
					t.Fatal(err)
				}
				if got := p.Match(pkt); got != at {
					t.Errorf("%s/%d: decided by rule %d, want the allowing rule %d", f.proto, f.port, got, at)
				}
				if got := c.Classify(pkt); got != at {
					t.Errorf("%s/%d: compiled tables say rule %d, want %d", f.proto, f.port, got, at)
				}
			}
		})
	}
}

// TestGenPolicyShape checks the mix the generator promises and that it
// is reproducible.
func TestGenPolicyShape(t *testing.T) {
	a := genPolicy(10000, policyTail, 7, testVM4, testVM6, benchFlows, allowRule)
	b := genPolicy(10000, policyTail, 7, testVM4, testVM6, benchFlows, allowRule)
	c := genPolicy(10000, policyTail, 8, testVM4, testVM6, benchFlows, allowRule)
	same, differ := true, false
	count := map[string]int{}
	for i := range a {
		same = same && a[i] == b[i]
		differ = differ || a[i] != c[i]
		r := a[i]
		if r.toVM {
			count["to-vm"]++
		}
		if r.allow {
			count["allow"]++
		}
		if r.local.Addr().Is6() {
			count["ipv6"]++
		}
		count[r.proto]++
		if r.remote.IsValid() && r.remote.Bits() < r.remote.Addr().BitLen() {
			count["subnet"]++
		}
		if r.hi > r.lo && (r.proto == "tcp" || r.proto == "udp") {
			count["range"]++
		}
		if r.name != allowRule.name && r.remote.Overlaps(netip.MustParsePrefix("10.77.0.0/16")) {
			t.Errorf("rule %d (%s) names the benchmark's own addresses", i, nftRule(r))
		}
	}
	if !same || !differ {
		t.Errorf("same seed same policy: %v; other seed other policy: %v", same, differ)
	}
	for k, lim := range map[string][2]int{
		"to-vm": {5500, 6500}, "allow": {6500, 7500}, "ipv6": {800, 1200}, "tcp": {5700, 6700},
		"udp": {2500, 3500}, "subnet": {4000, 5000}, "range": {300, 600},
	} {
		if count[k] < lim[0] || count[k] > lim[1] {
			t.Errorf("%s: %d of 10,000 rules, want %d..%d", k, count[k], lim[0], lim[1])
		}
	}
	if count["icmp"]+count["icmpv6"] < 400 {
		t.Errorf("only %d ICMP rules", count["icmp"]+count["icmpv6"])
	}
}

func TestNftRule(t *testing.T) {
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		r    genRule
		want string
	}{
		{genRule{local: p("10.77.0.1/32"), remote: p("10.1.2.0/24"), proto: "tcp", lo: 443, hi: 443, allow: true},
			"ip saddr 10.77.0.1 ip daddr 10.1.2.0/24 tcp dport 443 accept"},
		{genRule{toVM: true, local: p("10.77.0.1/32"), remote: p("10.9.9.9/32"), proto: "udp", lo: 5000, hi: 5009},
			"ip saddr 10.9.9.9 ip daddr 10.77.0.1 udp dport 5000-5009 drop"},
		{genRule{toVM: true, local: p("fd77::1/128"), remote: p("fd00:1000::/64"), proto: "icmpv6", lo: 128, hi: 0, allow: true},
			"ip6 saddr fd00:1000::/64 ip6 daddr fd77::1 icmpv6 type 128 icmpv6 code 0 accept"},
		{allowRule, "ip saddr 10.77.0.1 ip daddr 10.77.0.0/24 accept"},
	} {
		if got := nftRule(tc.r); got != tc.want {
			t.Errorf("nftRule = %q\nwant      %q", got, tc.want)
		}
	}
	rules := genPolicy(100, 5, 1, testVM4, testVM6, benchFlows, allowRule)
	for _, ct := range []bool{false, true} {
		s := nftLinear("t", rules, ct)
		lines := strings.Count(s, "\n")
		want := 100 + 5 // table, chain, hook, rules, two braces
		if ct {
			want++
		}
		if lines != want || !strings.Contains(s, "hook forward") || strings.Contains(s, "ct state") != ct {
			t.Errorf("nftLinear(ct=%v): %d lines, want %d:\n%s", ct, lines, want, s[:min(len(s), 400)])
		}
	}
}

// TestNftSets: first match wins inside a map (overlapping port ranges of
// one address pair are split, each piece with the first rule's verdict),
// rules for any protocol stay lines after the maps, conntrack comes first,
// and overlapping address pairs are refused rather than reordered.
func TestNftSets(t *testing.T) {
	p := netip.MustParsePrefix
	vm, host := p("10.77.0.1/32"), p("10.9.9.9/32")
	rules := []genRule{
		{toVM: true, local: vm, remote: host, proto: "tcp", lo: 100, hi: 200, allow: true},
		{toVM: true, local: vm, remote: host, proto: "tcp", lo: 150, hi: 300},
		{toVM: true, local: vm, remote: host, proto: "tcp", lo: 301, hi: 301},
		{toVM: true, local: vm, remote: host, proto: "udp", lo: 53, hi: 53, allow: true},
		{toVM: true, local: vm, remote: host, proto: "icmp", lo: 8, hi: 0, allow: true},
		{toVM: true, local: vm, remote: host, proto: "icmp", lo: 8, hi: 0},
		{local: p("fd77::1/128"), remote: p("fd00:1000::/64"), proto: "udp", lo: 9, hi: 9},
		allowRule,
	}
	s, err := nftSets("t", rules, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"10.9.9.9 . 10.77.0.1 . tcp . 100-200 : accept,",
		"10.9.9.9 . 10.77.0.1 . tcp . 201-301 : drop,", // 201-300 and 301 merged
		"10.9.9.9 . 10.77.0.1 . udp . 53 : accept",
		"10.9.9.9 . 10.77.0.1 . 8 . 0 : accept", // the second icmp rule never matches
		"fd77::1 . fd00:1000::/64 . udp . 9 : drop",
		"ct state established,related accept\n\t\tip saddr . ip daddr . meta l4proto . th dport vmap @ip_ports\n",
		"vmap @ip6_ports\n\t\tip saddr . ip daddr . icmp type . icmp code vmap @ip_icmp\n\t\tip saddr 10.77.0.1 ip daddr 10.77.0.0/24 accept\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("nftSets lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "8 . 0 : drop") || strings.Contains(s, "ip6_icmp") {
		t.Errorf("nftSets:\n%s", s)
	}
	nested := append(rules, genRule{toVM: true, local: vm, remote: p("10.9.9.0/24"), proto: "tcp", lo: 1, hi: 1})
	if _, err := nftSets("t", nested, true); err == nil {
		t.Error("nftSets accepted overlapping address pairs")
	}
	if _, err := nftSets("t", genPolicy(2000, 5, 7, testVM4, testVM6, benchFlows, allowRule), true); err != nil {
		t.Errorf("generated policy: %v", err)
	}
}

func TestNftDNAT(t *testing.T) {
	got := nftDNAT("t", net.IPv4(10, 77, 0, 100), []string{"10.77.0.2", "10.77.0.3"}, []string{"tcp dport { 80, 443 }", "udp dport 53"})
	for _, want := range []string{
		"type nat hook prerouting priority dstnat",
		"ip daddr 10.77.0.100 tcp dport { 80, 443 } dnat ip to numgen inc mod 2 map { 0 : 10.77.0.2, 1 : 10.77.0.3 }",
		"ip daddr 10.77.0.100 udp dport 53 dnat ip to numgen inc mod 2 map { 0 : 10.77.0.2, 1 : 10.77.0.3 }",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("lacks %q:\n%s", want, got)
		}
	}
}
