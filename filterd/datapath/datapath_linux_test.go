package datapath_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/filters/count"
	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// newRoot returns a private bpffs root, removed at cleanup.
func newRoot(t *testing.T) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	root := filepath.Join("/sys/fs/bpf", "vftest-"+hex.EncodeToString(b[:]))
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	return root
}

func loadCount(t *testing.T, v *datapath.VNIC, slot int, adopt bool) sdk.FastPath {
	t.Helper()
	inst := sdk.Instance{VNIC: sdk.VNIC{Name: v.Name, Ifindex: v.Ifindex}, Slot: slot}
	fp, err := count.Descriptor.FastPath(sdk.NewFastPathContext(inst, adopt, nil, v.Maps(), v.SlotDir(slot)))
	if err != nil {
		t.Fatalf("load count: %v", err)
	}
	t.Cleanup(func() { fp.Close() })
	return fp
}

func TestChainCountsAndSurvivesClose(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	for _, mode := range []datapath.Mode{datapath.ModeTCX, datapath.ModeClsact} {
		t.Run(mode.String(), func(t *testing.T) {
			if mode == datapath.ModeTCX {
				testkit.Need(t, testkit.TCX)
			}
			host := testkit.NewHost(t)
			a, b := host.AddVM(t, "a"), host.AddVM(t, "b")
			root := newRoot(t)
			var v *datapath.VNIC
			err := host.Do(func() error {
				dp, err := datapath.New(datapath.Options{Root: root, Mode: mode})
				if err != nil {
					return err
				}
				v, err = dp.Create(a.TapName, func(v *datapath.VNIC) error {
					for slot := 0; slot < 2; slot++ {
						fp := loadCount(t, v, slot, false)
						if err := v.SetSlot(slot, fp.Program(), datapath.Slot{}); err != nil {
							return err
						}
					}
					return nil
				})
				return err
			})
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			if err := a.Ping(t, b.IPv4.IP, 3); err != nil {
				t.Fatalf("ping through chain: %v", err)
			}
			st, err := v.Stats()
			if err != nil {
				t.Fatal(err)
			}
			for _, dir := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
				if st[dir][sdk.ChainSlot][sdk.StatEnter].Packets < 1 {
					t.Errorf("%s: chain entered %d frames, want >= 1", dir, st[dir][sdk.ChainSlot][sdk.StatEnter].Packets)
				}
				if st[dir][1][sdk.StatContinue].Packets < 1 {
					t.Errorf("%s: slot 1 continued %d frames, want >= 1", dir, st[dir][1][sdk.StatContinue].Packets)
				}
				if st[dir][sdk.ChainSlot][sdk.StatContinue] != st[dir][sdk.ChainSlot][sdk.StatEnter] {
					t.Errorf("%s: passed %v != entered %v", dir, st[dir][sdk.ChainSlot][sdk.StatContinue], st[dir][sdk.ChainSlot][sdk.StatEnter])
				}
			}

			// Close the handles: the pinned chain keeps running.
			v.Close()
			if err := a.Ping(t, b.IPv4.IP, 2); err != nil {
				t.Fatalf("ping after close: %v", err)
			}
			var v2 *datapath.VNIC
			err = host.Do(func() error {
				dp, err := datapath.New(datapath.Options{Root: root, Mode: mode})
				if err != nil {
					return err
				}
				if _, err := dp.Create(a.TapName, nil); !errors.Is(err, datapath.ErrAlreadyAttached) {
					t.Errorf("second create: got %v, want ErrAlreadyAttached", err)
				}
				if _, err := dp.Create("nosuchdev0", nil); !errors.Is(err, datapath.ErrNoSuchDevice) {
					t.Errorf("create on missing device: got %v, want ErrNoSuchDevice", err)
				}
				v2, err = dp.Adopt(a.TapName)
				return err
			})
			if err != nil {
				t.Fatalf("adopt: %v", err)
			}
			st2, err := v2.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if got, before := st2[sdk.FromVM][sdk.ChainSlot][sdk.StatEnter].Packets, st[sdk.FromVM][sdk.ChainSlot][sdk.StatEnter].Packets; got <= before {
				t.Errorf("adopted counters %d, want > %d (kept across close)", got, before)
			}
			fp := loadCount(t, v2, 1, true)
			cs, err := fp.Counters()
			if err != nil || len(cs) == 0 || cs[0].Value < float64(st2[sdk.FromVM][1][sdk.StatContinue].Packets) {
				t.Errorf("adopted instance counters = %v, %v; want from-vm packets >= slot 1's", cs, err)
			}

			// Clearing slot 0 (middle) leaves a pass-through: slot 1 still counts.
			if err := v2.ClearSlot(0); err != nil {
				t.Fatal(err)
			}
			if err := a.Ping(t, b.IPv4.IP, 1); err != nil {
				t.Fatalf("ping with pass-through slot: %v", err)
			}
			st3, _ := v2.Stats()
			if st3[sdk.FromVM][1][sdk.StatContinue].Packets <= st2[sdk.FromVM][1][sdk.StatContinue].Packets {
				t.Errorf("slot 1 stopped counting after slot 0 was cleared")
			}
			if err := host.Do(v2.Detach); err != nil {
				t.Fatal(err)
			}
			if mode == datapath.ModeClsact {
				out, _ := host.Command(context.Background(), "tc", "qdisc", "show", "dev", a.TapName).CombinedOutput()
				if strings.Contains(string(out), "clsact") {
					t.Errorf("clsact qdisc left after detach: %s", out)
				}
			}
			if _, err := os.Stat(filepath.Join(root, a.TapName)); !os.IsNotExist(err) {
				t.Errorf("pins left after detach: %v", err)
			}
			if err := a.Ping(t, b.IPv4.IP, 1); err != nil {
				t.Fatalf("ping after detach: %v", err)
			}
		})
	}
}

// A slot marked present whose program is missing fails closed; fail-open
// passes. Both are counted.
func TestMissingProgramFailMode(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	host := testkit.NewHost(t)
	a, b := host.AddVM(t, "a"), host.AddVM(t, "b")
	root := newRoot(t)
	var dp *datapath.Datapath
	var v *datapath.VNIC
	err := host.Do(func() error {
		var err error
		if dp, err = datapath.New(datapath.Options{Root: root}); err != nil {
			return err
		}
		v, err = dp.Create(a.TapName, func(v *datapath.VNIC) error {
			fp := loadCount(t, v, 0, false)
			if err := v.SetSlot(0, fp.Program(), datapath.Slot{}); err != nil {
				return err
			}
			// Slot 1: present, fail-closed, but its program is the one
			// we remove right after.
			fp1 := loadCount(t, v, 1, false)
			return v.SetSlot(1, fp1.Program(), datapath.Slot{})
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Do(v.Detach) })
	if err := v.RemoveProgramForTest(1); err != nil {
		t.Fatal(err)
	}
	if err := a.Ping(t, b.IPv4.IP, 2); err == nil {
		t.Fatal("ping passed a fail-closed slot with no program")
	}
	st, _ := v.Stats()
	if st[sdk.FromVM][1][sdk.StatFailClosed].Packets == 0 {
		t.Error("fail_closed not counted")
	}
	fp1 := loadCount(t, v, 1, true)
	if err := v.SetSlot(1, fp1.Program(), datapath.Slot{FailOpen: true}); err != nil {
		t.Fatal(err)
	}
	if err := v.RemoveProgramForTest(1); err != nil {
		t.Fatal(err)
	}
	if err := a.Ping(t, b.IPv4.IP, 2); err != nil {
		t.Fatalf("fail-open slot with no program blocked ping: %v", err)
	}
}

func TestReplaceSwapsWholeChain(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	for _, mode := range []datapath.Mode{datapath.ModeTCX, datapath.ModeClsact} {
		t.Run(mode.String(), func(t *testing.T) {
			host := testkit.NewHost(t)
			a, b := host.AddVM(t, "a"), host.AddVM(t, "b")
			root := newRoot(t)
			var dp *datapath.Datapath
			var v *datapath.VNIC
			if err := host.Do(func() (err error) {
				if dp, err = datapath.New(datapath.Options{Root: root, Mode: mode}); err != nil {
					return err
				}
				v, err = dp.Create(a.TapName, func(v *datapath.VNIC) error {
					return v.SetSlot(0, loadCount(t, v, 0, false).Program(), datapath.Slot{})
				})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if err := a.Ping(t, b.IPv4.IP, 1); err != nil {
				t.Fatal(err)
			}
			st0, _ := v.Stats()
			var next *datapath.VNIC
			err := host.Do(func() (err error) {
				next, err = v.Replace(func(n *datapath.VNIC) error {
					for slot := 0; slot < 3; slot++ {
						if err := n.SetSlot(slot, loadCount(t, n, slot, false).Program(), datapath.Slot{}); err != nil {
							return err
						}
					}
					return nil
				})
				return err
			})
			if err != nil {
				t.Fatalf("replace: %v", err)
			}
			v.Close()
			t.Cleanup(func() { host.Do(next.Detach) })
			if err := a.Ping(t, b.IPv4.IP, 1); err != nil {
				t.Fatalf("ping after replace: %v", err)
			}
			st, _ := next.Stats()
			if st[sdk.FromVM][2][sdk.StatContinue].Packets == 0 {
				t.Error("slot 2 of the new chain saw nothing")
			}
			if st[sdk.FromVM][sdk.ChainSlot][sdk.StatEnter].Packets <= st0[sdk.FromVM][sdk.ChainSlot][sdk.StatEnter].Packets {
				t.Error("chain counters did not carry over")
			}
			// The pins name the new chain: a restarted filterd adopts it.
			var adopted *datapath.VNIC
			if err := host.Do(func() (err error) { adopted, err = dp.Adopt(a.TapName); return err }); err != nil {
				t.Fatalf("adopt after replace: %v", err)
			}
			defer adopted.Close()
			if err := a.Ping(t, b.IPv4.IP, 1); err != nil {
				t.Fatal(err)
			}
			st2, _ := adopted.Stats()
			if st2[sdk.FromVM][2][sdk.StatContinue].Packets <= st[sdk.FromVM][2][sdk.StatContinue].Packets {
				t.Error("adopted handles do not see the running chain")
			}
		})
	}
}
