package firewall

import (
	"math/rand/v2"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// TestCompiledMatchesLinear: the tables give the same first rule as the
// linear scan, for random policies and packets (no root needed).
func TestCompiledMatchesLinear(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	policies, packets := 200, 500
	if testing.Short() {
		policies = 40
	}
	checked := 0
	for i := range policies {
		p := randPolicy(t, rng, 1+rng.IntN(60))
		c, err := Compile(p)
		if err != nil {
			t.Fatalf("policy %d: %v", i, err)
		}
		g := &trafficGen{rng: rng}
		for range packets {
			frame, dir, what := g.next()
			pkt := ParseFrame(frame, dir)
			if pkt.Kind != KindIP {
				continue
			}
			checked++
			if got, want := c.Classify(&pkt), p.Match(&pkt); got != want {
				t.Fatalf("seed %d policy %d %s packet %+v: tables say rule %d, linear scan %d", seed, i, what, pkt, got, want)
			}
		}
	}
	t.Logf("%d packets over %d policies agree", checked, policies)
}

// TestCompileScale: 100,000 rules compile, and classification stays a
// fixed number of lookups (the tables hold the rules, not the path).
func TestCompileScale(t *testing.T) {
	if testing.Short() && os.Getenv("VNICFILTER_SOAK") == "" {
		t.Skip("short")
	}
	for _, n := range []int{1000, 10000, 100000} {
		p := scalePolicy(n)
		start := time.Now()
		c, err := Compile(p)
		if err != nil {
			t.Fatalf("%d rules: %v", n, err)
		}
		entries := 0
		for _, m := range c.Cross {
			entries += len(m)
		}
		t.Logf("%6d rules: compiled in %v, %d prefixes, %d cross entries, classes %v", n, time.Since(start).Round(time.Millisecond), len(c.Src)+len(c.Dst), entries, c.Classes)
	}
}

// TestCrossWildcardRows: rules that leave a dimension open do not
// multiply with the other dimension's classes. 2,000 TCP rules on
// distinct ports and 1,000 ICMP rules naming a type but no code: the
// ICMP rows of the l4 table hold a fallback entry each instead of one
// entry per port class (without the fallback: 20 × 2,001 more), and the
// tables still agree with the linear scan, also for the packets only a
// fallback entry decides.
func TestCrossWildcardRows(t *testing.T) {
	p := &Policy{Defaults: [sdk.NumDirections]Action{Allow, Deny}}
	for i := range 2000 {
		port := uint16(1000 + 7*i)
		p.Rules = append(p.Rules, Rule{Name: "tcp", Dirs: sdk.DirToVM, Proto: ProtoTCP, Src: AddrMatch{Any: true}, Dst: AddrMatch{Any: true},
			DstPorts: []PortRange{{port, port}}, ICMPType: -1, ICMPCode: -1, Action: Action(i % 2)})
	}
	for i := range 1000 {
		a := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(i % 4), 0}), 24)
		p.Rules = append(p.Rules, Rule{Name: "icmp", Dirs: sdk.DirToVM, Proto: ProtoICMP, Src: AddrMatch{Prefixes: []netip.Prefix{a}},
			Dst: AddrMatch{Any: true}, ICMPType: i % 20, ICMPCode: -1, Action: Deny})
	}
	c, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(c.Cross[crossL4]); n > 2100 {
		t.Errorf("l4 table has %d entries: wildcard rows multiplied with the port classes", n)
	}
	fallbacks := 0
	for k := range c.Cross[crossL4] {
		if k[1] == anyClass {
			fallbacks++
		}
	}
	if fallbacks == 0 {
		t.Error("no fallback entry in the l4 table")
	}
	for i := range 3000 {
		pkt := Packet{Kind: KindIP, Dir: sdk.ToVM, Family: 4, Proto: ProtoICMP, P1: uint16(i % 25), P2: uint16(i % 5),
			Src: netip.AddrFrom4([4]byte{10, 1, byte(i >> 8 & 3), byte(i)}), Dst: netip.AddrFrom4([4]byte{10, 77, 0, 1})}
		if i%2 == 1 {
			pkt.Proto, pkt.P1, pkt.P2 = ProtoTCP, 40000, uint16(1000+7*(i%2100))
		}
		if got, want := c.Classify(&pkt), p.Match(&pkt); got != want {
			t.Fatalf("packet %+v: tables say rule %d, linear scan %d", pkt, got, want)
		}
	}
	t.Logf("l4 table: %d entries, %d fallbacks; %+v", len(c.Cross[crossL4]), fallbacks, c.Stats())
}
