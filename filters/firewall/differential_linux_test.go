package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// TC actions the program returns under BPF_PROG_TEST_RUN.
const (
	tcActOK       = 0
	tcActShot     = 2
	tcActRedirect = 7
)

// diffSize: rulesets × packets each. make soak (VNICFILTER_SOAK=1) runs
// 1,000,000+ packets over 200 rulesets.
func diffSize() (rulesets, packets int) {
	if os.Getenv("VNICFILTER_SOAK") != "" {
		return 200, 5200
	}
	return 40, 2500
}

// testInstance loads the firewall with stand-in vNIC maps and a policy.
func testInstance(t *testing.T, policyJSON []byte, conntrack string) *fastPath {
	t.Helper()
	fp, _ := testInstanceMaps(t, policyJSON, conntrack)
	return fp
}

// testInstanceMaps is testInstance that also returns the stand-in vNIC
// maps (vf_slots sets the failure mode, vf_stats counts it).
func testInstanceMaps(t *testing.T, policyJSON []byte, conntrack string) (*fastPath, map[string]*ebpf.Map) {
	t.Helper()
	// Answers to rejects are compared with the model, which has no rate
	// limit: one the tests never reach.
	raw := map[string]string{"reject_rate": "16777216"}
	if conntrack != "" {
		raw["conntrack_size"] = conntrack
	}
	return testInstanceParams(t, policyJSON, raw)
}

// testInstanceParams loads the firewall with the policy and parameters.
func testInstanceParams(t *testing.T, policyJSON []byte, raw map[string]string) (*fastPath, map[string]*ebpf.Map) {
	t.Helper()
	testkit.Need(t, testkit.Root, testkit.BPF)
	spec, err := firewallSpec()
	if err != nil {
		t.Fatal(err)
	}
	maps := testkit.VNICMaps(t, spec)
	path := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(path, policyJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	raw["policy"] = path
	params, err := sdk.ValidateParams(Descriptor.Params, raw)
	if err != nil {
		t.Fatal(err)
	}
	inst := sdk.Instance{VNIC: sdk.VNIC{Name: "test", Ifindex: 1}, Directions: sdk.DirBoth, Params: params}
	fp, err := loadFastPath(sdk.NewFastPathContext(inst, false, nil, maps, ""))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fp.Close() })
	return fp.(*fastPath), maps
}

// run passes frame through the program in dir: pass is true when it
// passes; ok is false when the test harness itself refuses the frame
// (BPF_PROG_TEST_RUN wants a whole IPv4/IPv6 header behind those
// ethertypes), so the program never saw it. A frame turned into a reject
// answer does not pass.
func run(t testing.TB, prog *ebpf.Program, frame []byte, dir sdk.Direction) (pass, ok bool) {
	pass, _, ok = runAnswer(t, prog, frame, dir)
	return pass, ok
}

// runAnswer is run that also returns the frame the program redirected
// (a reject answer), nil if none.
func runAnswer(t testing.TB, prog *ebpf.Program, frame []byte, dir sdk.Direction) (pass bool, answer []byte, ok bool) {
	ctx := make([]byte, 192)                                // struct __sk_buff
	binary.NativeEndian.PutUint32(ctx[48:], uint32(dir)<<8) // cb[0] = dir << 8 | slot 0
	opts := &ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256), Context: ctx}
	ret, err := prog.Run(opts)
	if errors.Is(err, unix.EINVAL) && len(frame) < 14+40 {
		return false, nil, false
	}
	if err != nil {
		t.Fatalf("test run of %x: %v", frame, err)
	}
	switch ret {
	case tcActOK:
		return true, nil, true
	case tcActShot:
		return false, nil, true
	case tcActRedirect:
		return false, opts.DataOut, true // cut to the output's size
	}
	t.Fatalf("unexpected tc action %d", ret)
	return false, nil, false
}

// sameAnswer fails the test when the kernel's answer to a reject (nil:
// none) differs from the model's.
func sameAnswer(t testing.TB, got, want []byte, context string) {
	t.Helper()
	if (got == nil) != (want == nil) || string(got) != string(want) {
		t.Fatalf("%s: reject answer differs\nkernel %x\nmodel  %x", context, got, want)
	}
}

func (f *fastPath) statsForTest(t testing.TB) [NumStats]uint64 {
	var out [NumStats]uint64
	for s := range out {
		var vals []uint64
		if err := f.objs.FwStats.Lookup(uint32(s), &vals); err != nil {
			t.Fatal(err)
		}
		for _, v := range vals {
			out[s] += v
		}
	}
	return out
}

// TestDifferentialFirewall runs firewall.c (BPF_PROG_TEST_RUN) and the Go
// model on the same random rulesets and packet streams and requires the
// same verdict for every packet, the same counters after every ruleset,
// and the same per-rule hits. Rulesets are swapped in with UpdatePolicy
// while flows stay tracked, so generation swaps and flow revalidation are
// exercised too. Conntrack time is kept out: the model's clock stands
// still and both tables are flushed before the kernel's could expire.
func TestDifferentialFirewall(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("VF_SEED"); s != "" {
		var err error
		if seed, err = parseUint(s); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seed %d (rerun with VF_SEED)", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	rulesets, per := diffSize()
	first := randPolicyJSON(rng, 10)
	fp := testInstance(t, first, "262144")
	p0, err := ParsePolicy(first, ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	model := NewModel(p0)
	model.Capacity = 262144
	model.Now = func() uint64 { return 1 }
	prog := fp.Program()
	lastFlush := time.Now()
	total, drops, refused, tooComplex, answered := 0, 0, 0, 0, 0
	start := time.Now()
	for rs := range rulesets {
		n := 1 + rng.IntN(80)
		if rs%10 == 9 {
			n = 100 + rng.IntN(100)
		}
		p := randPolicy(t, rng, n)
		for {
			_, err := fp.UpdatePolicy(p)
			if err == nil {
				break
			}
			if !errors.Is(err, ErrTooComplex) {
				t.Fatalf("ruleset %d: %v", rs, err)
			}
			// Dense random overlap can exceed the cross-product budget
			// (docs/firewall.md, "Limits"): the live policy stays, and
			// we try a smaller one.
			tooComplex++
			p = randPolicy(t, rng, max(1, len(p.Rules)/2))
		}
		model.SetPolicy(p)
		if time.Since(lastFlush) > 4*time.Second || model.Flows() > 50000 {
			if err := fp.flushFlows(); err != nil {
				t.Fatal(err)
			}
			model.Flush()
			lastFlush = time.Now()
		}
		g := &trafficGen{rng: rng}
		for i := range per {
			frame, dir, what := g.next()
			got, ans, ok := runAnswer(t, prog, frame, dir)
			if !ok {
				refused++
				continue
			}
			want := model.Process(frame, dir)
			total++
			if want.Drop {
				drops++
			}
			if got == want.Drop {
				pkt := ParseFrame(frame, dir)
				t.Fatalf("seed %d ruleset %d packet %d (%s, %s): kernel passes=%v, model %v\npacket %+v\nframe %x", seed, rs, i, what, dir, got, want, pkt, frame)
			}
			if want.Answer != nil {
				answered++
			}
			sameAnswer(t, ans, want.Answer, fmt.Sprintf("seed %d ruleset %d packet %d (%s, %s, %v) frame %x", seed, rs, i, what, dir, want, frame))
		}
		if got := fp.statsForTest(t); got != model.Stats {
			t.Fatalf("seed %d ruleset %d: kernel counters %v, model %v", seed, rs, got, model.Stats)
		}
		hits, err := fp.ruleHits(len(p.Rules))
		if err != nil {
			t.Fatal(err)
		}
		for i := range hits {
			if hits[i] != model.RuleHits[i] {
				t.Fatalf("seed %d ruleset %d: rule %d hit %d times in the kernel, %d in the model", seed, rs, i, hits[i], model.RuleHits[i])
			}
		}
	}
	t.Logf("%d packets over %d rulesets in %v: identical verdicts (%d dropped, %d answered with identical bytes), counters and rule hits; %d runts refused by the harness; %d rulesets too complex; stats %v", total, rulesets, time.Since(start).Round(time.Millisecond), drops, answered, refused, tooComplex, model.Stats)
}

func parseUint(s string) (uint64, error) {
	var v uint64
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, os.ErrInvalid
		}
		v = v*10 + uint64(c-'0')
	}
	return v, nil
}
