package firewall

import (
	"math/rand/v2"
	"os"
	"testing"
	"time"
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
