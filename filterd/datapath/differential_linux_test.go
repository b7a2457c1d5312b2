package datapath_test

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/filters/count"
	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// diffChains is the number of random chain configurations; make soak
// (VNICFILTER_SOAK=1) runs the long version.
func diffChains() int {
	if os.Getenv("VNICFILTER_SOAK") != "" {
		return 5000
	}
	return 40
}

// Slot kinds the differential test places in the chain.
type slotKind int

const (
	kEmpty     slotKind = iota
	kCount              // count filter, both directions
	kCountFrom          // count filter, from-vm only
	kCountTo            // count filter, to-vm only
	kSkip               // the pass-through program
	kPunt               // vf_punt_all
	numKinds
)

type modelSlot struct {
	kind     slotKind
	present  bool
	failOpen bool
	punt     [sdk.NumDirections]uint32
	alive    [sdk.NumDirections]bool
}

// Go reference model of the chain (sdk/bpf/vnicfilter.h, dispatcher.c):
// returns the tc action and the counter deltas keyed by sdk.StatKey.
func model(chain []modelSlot, dir sdk.Direction, mark uint32, length uint64) (int32, map[uint32]datapath.Counter) {
	const (
		actOK       = 0
		actShot     = 2
		actRedirect = 7
	)
	delta := map[uint32]datapath.Counter{}
	count := func(slot int, st sdk.Stat) {
		k := sdk.StatKey(dir, slot, st)
		c := delta[k]
		c.Packets++
		c.Bytes += length
		delta[k] = c
	}
	slot := 0
	if mark&sdk.MarkMagicMask == sdk.MarkResume && sdk.Direction((mark>>8)&0xff) == dir {
		slot = int(mark & 0xff)
		if slot > sdk.MaxSlots {
			return actShot, delta
		}
	} else {
		count(sdk.ChainSlot, sdk.StatEnter)
	}
	var run func(slot int) int32
	run = func(slot int) int32 {
		var s modelSlot
		if slot < len(chain) {
			s = chain[slot]
		}
		if slot >= sdk.MaxSlots || s.kind == kEmpty {
			if slot < sdk.MaxSlots && s.present && !s.failOpen {
				count(slot, sdk.StatFailClosed)
				count(sdk.ChainSlot, sdk.StatDrop)
				return actShot
			}
			count(sdk.ChainSlot, sdk.StatContinue)
			return actOK
		}
		switch s.kind {
		case kSkip:
			return run(slot + 1)
		case kCountFrom, kCountTo:
			if (s.kind == kCountFrom) != (dir == sdk.FromVM) {
				return run(slot + 1)
			}
			fallthrough
		case kCount:
			count(slot, sdk.StatContinue)
			return run(slot + 1)
		case kPunt:
			if s.punt[dir] != 0 && s.alive[dir] {
				count(slot, sdk.StatPunt)
				return actRedirect
			}
			if s.failOpen {
				count(slot, sdk.StatFailOpen)
				return run(slot + 1)
			}
			count(slot, sdk.StatFailClosed)
			count(sdk.ChainSlot, sdk.StatDrop)
			return actShot
		}
		panic("unreachable")
	}
	return run(slot), delta
}

// TestDifferentialChain runs the real dispatcher and filters with
// BPF_PROG_TEST_RUN on random chains and frames and compares the action
// and every counter with the Go model.
func TestDifferentialChain(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	// The chain sits on a veth that stays down: no real frame may move
	// the counters between a test run and its check.
	host := testkit.NewHost(t)
	la := netlink.NewLinkAttrs()
	la.Name = "vfdiff0"
	if err := host.Handle().LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "vfdiff1"}); err != nil {
		t.Fatal(err)
	}
	root := newRoot(t)
	var v *datapath.VNIC
	if err := host.Do(func() error {
		dp, err := datapath.New(datapath.Options{Root: root})
		if err != nil {
			return err
		}
		v, err = dp.Create("vfdiff0", nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Detach() })
	progs := map[slotKind]*ebpf.Program{kSkip: v.SkipForTest()}
	for kind, dirs := range map[slotKind]sdk.Directions{kCount: sdk.DirBoth, kCountFrom: sdk.DirFromVM, kCountTo: sdk.DirToVM} {
		inst := sdk.Instance{VNIC: sdk.VNIC{Name: v.Name, Ifindex: v.Ifindex}, Directions: dirs}
		fp, err := count.Descriptor.FastPath(sdk.NewFastPathContext(inst, false, nil, v.Maps(), ""))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fp.Close() })
		progs[kind] = fp.Program()
	}
	pp, err := datapath.LoadPuntAll(sdk.NewFastPathContext(sdk.Instance{VNIC: sdk.VNIC{Name: v.Name, Ifindex: v.Ifindex}}, false, nil, v.Maps(), ""))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pp.Close() })
	progs[kPunt] = pp.Program()

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	seed := rng.Uint64()
	rng = rand.New(rand.NewPCG(seed, 2))
	t.Logf("seed %d", seed)
	runs := 0
	for c := 0; c < diffChains(); c++ {
		n := rng.IntN(7)
		chain := make([]modelSlot, sdk.MaxSlots)
		for i := range chain {
			s := modelSlot{}
			if i < n {
				s.kind = slotKind(rng.IntN(int(numKinds)))
			}
			s.present = rng.IntN(3) > 0
			s.failOpen = rng.IntN(2) == 0
			for d := range s.punt {
				if rng.IntN(4) > 0 {
					s.punt[d] = 1
				}
				s.alive[d] = rng.IntN(2) == 0
			}
			chain[i] = s
			now := sdk.KtimeNow()
			var alive [sdk.NumDirections]uint64
			for d := range alive {
				if s.alive[d] {
					alive[d] = now + uint64(time.Hour)
				} else if rng.IntN(2) == 0 {
					alive[d] = now - uint64(time.Second)
				}
			}
			var flags uint32
			if s.present {
				flags |= sdk.SlotPresent
			}
			if s.failOpen {
				flags |= sdk.SlotFailOpen
			}
			if err := v.SetRawSlotForTest(i, progs[s.kind], flags, s.punt, alive); err != nil {
				t.Fatal(err)
			}
		}
		for p := 0; p < 50; p++ {
			dir := sdk.Direction(rng.IntN(2))
			var mark uint32
			switch rng.IntN(4) {
			case 1:
				mark = sdk.MarkResume | uint32(rng.IntN(2))<<8 | uint32(rng.IntN(sdk.MaxSlots+3))
			case 2:
				mark = rng.Uint32()
			}
			frame := make([]byte, 14+rng.IntN(1500))
			for i := range frame {
				frame[i] = byte(rng.Uint32())
			}
			wantRet, wantDelta := model(chain, dir, mark, uint64(len(frame)))
			before, err := v.Stats()
			if err != nil {
				t.Fatal(err)
			}
			ctx := make([]byte, 192) // struct __sk_buff
			binary.NativeEndian.PutUint32(ctx[8:], mark)
			ret, err := v.DispatcherForTest(dir).Run(&ebpf.RunOptions{Data: frame, Context: ctx})
			if err != nil {
				t.Fatalf("test run: %v", err)
			}
			after, err := v.Stats()
			if err != nil {
				t.Fatal(err)
			}
			runs++
			desc := func() string {
				return fmt.Sprintf("seed %d chain %d frame %d: dir %s mark %#x len %d chain %+v", seed, c, p, dir, mark, len(frame), chain[:n+1])
			}
			if int32(ret) != wantRet {
				t.Fatalf("%s: action %d, model %d", desc(), int32(ret), wantRet)
			}
			for d := 0; d < sdk.NumDirections; d++ {
				for s := 0; s <= sdk.MaxSlots; s++ {
					for st := sdk.Stat(0); st < sdk.NumStats; st++ {
						got := datapath.Counter{
							Packets: after[d][s][st].Packets - before[d][s][st].Packets,
							Bytes:   after[d][s][st].Bytes - before[d][s][st].Bytes,
						}
						if want := wantDelta[sdk.StatKey(sdk.Direction(d), s, st)]; got != want {
							t.Fatalf("%s: counter %s slot %d %s moved %+v, model %+v", desc(), sdk.Direction(d), s, st, got, want)
						}
					}
				}
			}
		}
	}
	t.Logf("%d frames on %d chains agree with the model", runs, diffChains())
}
