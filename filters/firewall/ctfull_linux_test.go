package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// setFailMode writes slot 0 of both directions into vf_slots: present,
// fail-open or fail-closed (sdk/bpf/vnicfilter.h struct vf_slot).
func setFailMode(t testing.TB, slots *ebpf.Map, open bool) {
	t.Helper()
	flags := uint32(1) // VF_SLOT_PRESENT
	if open {
		flags |= 2 // VF_SLOT_FAIL_OPEN
	}
	v := make([]byte, 16)
	binary.NativeEndian.PutUint32(v, flags)
	for _, k := range []uint32{0, 16} { // dir * VF_MAX_SLOTS + slot 0
		if err := slots.Put(k, v); err != nil {
			t.Fatal(err)
		}
	}
}

// slotStat reads vf_stats[VF_STAT_KEY(dir, 0, stat)] (packets, all CPUs).
func slotStat(t testing.TB, stats *ebpf.Map, dir sdk.Direction, stat uint32) uint64 {
	t.Helper()
	var vals [][16]byte
	if err := stats.Lookup((uint32(dir)*17)*8+stat, &vals); err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, v := range vals {
		n += binary.NativeEndian.Uint64(v[:8])
	}
	return n
}

const (
	statFailClosed = 5 // VF_STAT_FAIL_CLOSED
	statFailOpen   = 6 // VF_STAT_FAIL_OPEN
)

// TestConntrackFull: with conntrack_size=16, 16 flows fill the table; the
// 17th new flow follows the slot's failure mode (fail-closed: dropped,
// fail-open: passed untracked) and is counted, while the 16 established
// flows keep working both ways. A sweep of expired flows frees the table.
func TestConntrackFull(t *testing.T) {
	policy := []byte(`{"version": 1, "defaults": {"from-vm": "allow", "to-vm": "deny"}}`)
	vm := netip.MustParseAddr("10.0.0.1")
	remote := netip.MustParseAddr("10.0.0.2")
	for _, open := range []bool{false, true} {
		fp, maps := testInstanceMaps(t, policy, "16")
		setFailMode(t, maps[sdk.MapSlots], open)
		prog := fp.Program()
		flows := make([]flow, 17)
		for i := range flows {
			flows[i] = flow{vm: vm, remote: remote, proto: ProtoUDP, vmPort: uint16(30000 + i), remotePort: 53}
			if i%2 == 0 {
				flows[i].proto = ProtoTCP
			}
		}
		send := func(f flow, dir sdk.Direction, flags uint8) bool {
			s := f.spec(dir)
			s.flags = flags
			pass, ok := run(t, prog, s.build(), dir)
			if !ok {
				t.Fatal("harness refused a frame")
			}
			return pass
		}
		for i := range 16 {
			if !send(flows[i], sdk.FromVM, tcpSYN) {
				t.Fatalf("open=%v: flow %d dropped while the table has room", open, i)
			}
		}
		// The 17th flow: the table is full.
		if got := send(flows[16], sdk.FromVM, tcpSYN); got != open {
			t.Fatalf("open=%v: 17th flow passes=%v, want the failure mode", open, got)
		}
		// Its reply has no flow: the to-vm default (deny) drops it.
		if send(flows[16], sdk.ToVM, tcpSYN|tcpACK) {
			t.Fatalf("open=%v: reply of the untracked 17th flow passed", open)
		}
		// Established flows are untouched, both ways.
		for i := range 16 {
			if !send(flows[i], sdk.ToVM, tcpSYN|tcpACK) || !send(flows[i], sdk.FromVM, tcpACK) {
				t.Fatalf("open=%v: established flow %d lost with the table full", open, i)
			}
		}
		st := fp.statsForTest(t)
		if st[StatCTFull] != 1 || st[StatNewFlows] != 16 || st[StatEstablished] != 32 {
			t.Fatalf("open=%v: counters %v", open, st)
		}
		fc := slotStat(t, maps[sdk.MapStats], sdk.FromVM, statFailClosed)
		fo := slotStat(t, maps[sdk.MapStats], sdk.FromVM, statFailOpen)
		if (open && (fo != 1 || fc != 0)) || (!open && (fc != 1 || fo != 0)) {
			t.Fatalf("open=%v: fail_closed=%d fail_open=%d", open, fc, fo)
		}
		c, err := fp.Counters()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, x := range c {
			if x.Name == "conntrack_full_total" && x.Value == 1 {
				found = true
			}
		}
		if !found {
			t.Fatalf("conntrack_full_total not reported: %v", c)
		}
		// Nothing has expired: a sweep now keeps every flow.
		if n, err := fp.gc(sdk.KtimeNow()); err != nil || n != 0 {
			t.Fatalf("sweep now: %d, %v", n, err)
		}
		// Sweeping as if 6 days had passed reclaims all 16; the 17th
		// flow is then admitted.
		if n, err := fp.gc(sdk.KtimeNow() + uint64(6*24*time.Hour)); err != nil || n != 16 {
			t.Fatalf("sweep later: %d, %v", n, err)
		}
		if !send(flows[16], sdk.FromVM, tcpSYN) || !send(flows[16], sdk.ToVM, tcpSYN|tcpACK) {
			t.Fatalf("open=%v: 17th flow refused after the sweep", open)
		}
	}
}

// TestDifferentialConntrackFull is the differential test with tiny tables
// (16–64 flows) that stay full: new flows hit VF_FAIL under both failure
// modes, flows are reopened in place (SYN after RST/FIN), swept (GC), and
// cut by policy swaps. The model's clock is the kernel's (nothing expires
// during the test; the sweep is asked to run 15 s ahead, which reclaims
// exactly the CLOSED flows on both sides).
func TestDifferentialConntrackFull(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("VF_SEED"); s != "" {
		var err error
		if seed, err = parseUint(s); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seed %d (rerun with VF_SEED)", seed)
	rng := rand.New(rand.NewPCG(seed, 11))
	rulesets, per := 12, 2000
	if os.Getenv("VNICFILTER_SOAK") != "" {
		rulesets = 60
	}
	total, fails := 0, 0
	for rs := range rulesets {
		size := 16 + rng.IntN(49)
		first := randPolicyJSON(rng, 1+rng.IntN(40))
		fp, maps := testInstanceMaps(t, first, itoa(size))
		p0, err := ParsePolicy(first, ParseOptions{})
		if err != nil {
			t.Fatal(err)
		}
		open := rng.IntN(2) == 0
		setFailMode(t, maps[sdk.MapSlots], open)
		model := NewModel(p0)
		model.Capacity = size
		model.Now = sdk.KtimeNow
		prog := fp.Program()
		g := &trafficGen{rng: rng}
		for i := range per {
			switch {
			case i%500 == 499:
				p := randPolicy(t, rng, 1+rng.IntN(40))
				if _, err := fp.UpdatePolicy(p); err != nil {
					if errors.Is(err, ErrTooComplex) {
						break
					}
					t.Fatal(err)
				}
				model.SetPolicy(p)
			case i%200 == 199:
				ahead := sdk.KtimeNow() + uint64(15*time.Second)
				n, err := fp.gc(ahead)
				if err != nil {
					t.Fatal(err)
				}
				if m := model.GC(ahead); m != n {
					t.Fatalf("seed %d ruleset %d: sweep reclaimed %d flows in the kernel, %d in the model", seed, rs, n, m)
				}
			}
			frame, dir, what := g.next()
			got, ans, ok := runAnswer(t, prog, frame, dir)
			if !ok {
				continue
			}
			want := model.Process(frame, dir)
			sameAnswer(t, ans, want.Answer, fmt.Sprintf("seed %d ruleset %d packet %d (%s, %s)", seed, rs, i, what, dir))
			total++
			wantPass := !want.Drop && (!want.Fail || open)
			if want.Fail {
				fails++
			}
			if got != wantPass {
				t.Fatalf("seed %d ruleset %d (size %d, fail-open %v) packet %d (%s, %s): kernel passes=%v, model %v\npacket %+v\nframe %x", seed, rs, size, open, i, what, dir, got, want, ParseFrame(frame, dir), frame)
			}
		}
		if got := fp.statsForTest(t); got != model.Stats {
			t.Fatalf("seed %d ruleset %d: kernel counters %v, model %v", seed, rs, got, model.Stats)
		}
		var fo, fc uint64
		for _, d := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
			fo += slotStat(t, maps[sdk.MapStats], d, statFailOpen)
			fc += slotStat(t, maps[sdk.MapStats], d, statFailClosed)
		}
		if fo+fc != model.Stats[StatCTFull] || (open && fc != 0) || (!open && fo != 0) {
			t.Fatalf("seed %d ruleset %d: fail_open %d fail_closed %d, conntrack full %d", seed, rs, fo, fc, model.Stats[StatCTFull])
		}
		if err := fp.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if fails == 0 {
		t.Fatal("no packet met a full table")
	}
	t.Logf("%d packets over %d rulesets: identical verdicts, %d new flows met a full table", total, rulesets, fails)
}

func itoa(n int) string {
	b := []byte{}
	for {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
		if n == 0 {
			return string(b)
		}
	}
}
