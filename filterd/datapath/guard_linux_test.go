package datapath_test

import (
	"os"
	"slices"
	"testing"

	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// TestGuard: a drop-all guard stops a VM's ping; Create over it puts the
// chain in front and removes it (ping works); a guard pinned behind a chain
// is never reached; Remove clears chain and guard; a guard of a live device
// survives Remove of a stale chain of the same name; RemoveStaleGuards
// clears the guard of a deleted device. For every combination of guard and
// chain modes (a tcx guard in front of a clsact chain closes the device until
// Create removes it).
func TestGuard(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	type combo struct{ guard, chain datapath.Mode }
	for _, c := range []combo{
		{datapath.ModeTCX, datapath.ModeTCX},
		{datapath.ModeClsact, datapath.ModeClsact},
		{datapath.ModeTCX, datapath.ModeClsact},
		{datapath.ModeClsact, datapath.ModeTCX},
	} {
		t.Run("guard="+c.guard.String()+",chain="+c.chain.String(), func(t *testing.T) {
			if c.guard == datapath.ModeTCX || c.chain == datapath.ModeTCX {
				testkit.Need(t, testkit.TCX)
			}
			host := testkit.NewHost(t)
			a, b := host.AddVM(t, "a"), host.AddVM(t, "b")
			root := newRoot(t)
			var dp *datapath.Datapath
			do := func(what string, fn func() error) {
				t.Helper()
				if err := host.Do(fn); err != nil {
					t.Fatalf("%s: %v", what, err)
				}
			}
			do("new", func() (err error) {
				dp, err = datapath.New(datapath.Options{Root: root, Mode: c.chain})
				return err
			})
			guarded := func() bool { return datapath.HasGuard(root, a.TapName) }

			// Guard: nothing passes.
			do("pin guard", func() error { return datapath.PinGuardModeForTest(root, a.TapName, c.guard) })
			do("pin guard again", func() error { return datapath.PinGuardModeForTest(root, a.TapName, c.guard) })
			if err := a.Ping(t, b.IPv4.IP, 2); err == nil {
				t.Fatal("ping passed the drop-all guard")
			}
			if err := b.Ping(t, a.IPv4.IP, 2); err == nil {
				t.Fatal("ping to the VM passed the drop-all guard")
			}
			if !guarded() {
				t.Fatal("no guard pinned")
			}
			do("pinned", func() error {
				names, err := dp.Pinned()
				if err == nil && len(names) != 0 {
					t.Errorf("Pinned() = %q, want no chains (guards are not chains)", names)
				}
				return err
			})

			// Create over the guard: chain in front, guard gone.
			var v *datapath.VNIC
			do("create", func() (err error) { v, err = dp.Create(a.TapName, nil); return err })
			if guarded() {
				t.Error("guard left after Create")
			}
			if _, err := os.Stat(datapath.GuardDir(root, a.TapName)); !os.IsNotExist(err) {
				t.Errorf("guard directory left after Create (%v)", err)
			}
			// Up to 10 requests: the VMs' ARP entries failed behind the guard.
			if err := a.Ping(t, b.IPv4.IP, 10); err != nil {
				t.Fatalf("ping through the chain that replaced the guard: %v", err)
			}
			st, err := v.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if st[sdk.FromVM][sdk.ChainSlot][sdk.StatEnter].Packets == 0 {
				t.Error("the chain saw no frame")
			}

			// A guard behind a chain is never reached (same mode only: a
			// tcx guard runs before a clsact chain, by design).
			if c.guard == c.chain {
				do("pin guard behind the chain", func() error { return datapath.PinGuardModeForTest(root, a.TapName, c.guard) })
				if err := a.Ping(t, b.IPv4.IP, 3); err != nil {
					t.Fatalf("ping with the guard behind the chain: %v", err)
				}
				do("detach", v.Detach)
				if guarded() {
					t.Error("guard left after Detach")
				}
				do("create again", func() (err error) { v, err = dp.Create(a.TapName, nil); return err })
			}
			v.Close()

			// Remove clears both.
			do("pin guard for remove", func() error { return datapath.PinGuardModeForTest(root, a.TapName, c.guard) })
			do("remove", func() error { return dp.Remove(a.TapName) })
			if guarded() {
				t.Error("guard left after Remove")
			}
			if _, err := os.Stat(root + "/" + a.TapName); !os.IsNotExist(err) {
				t.Errorf("chain pins left after Remove (%v)", err)
			}
			if err := a.Ping(t, b.IPv4.IP, 10); err != nil {
				t.Fatalf("ping after Remove: %v", err)
			}

			// Remove without a chain (a stale one of the name) keeps the
			// guard of the live device; RemoveGuard removes it.
			do("pin guard, no chain", func() error { return datapath.PinGuardModeForTest(root, a.TapName, c.guard) })
			do("remove, no chain", func() error { return dp.Remove(a.TapName) })
			if !guarded() {
				t.Error("Remove of a name without a chain removed the guard of the live device")
			}
			do("remove guard", func() error { return datapath.RemoveGuard(root, a.TapName) })
			if guarded() {
				t.Error("guard left after RemoveGuard")
			}
			if err := a.Ping(t, b.IPv4.IP, 10); err != nil {
				t.Fatalf("ping after RemoveGuard: %v", err)
			}

			// Stale: the device goes, RemoveStaleGuards clears its guard
			// and keeps the live one.
			do("pin guards", func() error {
				if err := datapath.PinGuardModeForTest(root, a.TapName, c.guard); err != nil {
					return err
				}
				return datapath.PinGuardModeForTest(root, b.TapName, c.guard)
			})
			do("delete tap", func() error {
				l, err := host.Handle().LinkByName(a.TapName)
				if err != nil {
					return err
				}
				return host.Handle().LinkDel(l)
			})
			do("remove stale", func() error {
				removed, err := datapath.RemoveStaleGuards(root)
				if !slices.Equal(removed, []string{a.TapName}) {
					t.Errorf("RemoveStaleGuards removed %q, want [%s]", removed, a.TapName)
				}
				return err
			})
			if guarded() || !datapath.HasGuard(root, b.TapName) {
				t.Errorf("after RemoveStaleGuards: guard of %s %v (want gone), of %s %v (want kept)",
					a.TapName, guarded(), b.TapName, datapath.HasGuard(root, b.TapName))
			}
			do("remove guard b", func() error { return datapath.RemoveGuard(root, b.TapName) })
		})
	}
}
