package testkit

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/filterd/slowpath"
	"github.com/vnicfilter/vnicfilter/internal/nsutil"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// Chain is one filter instance attached alone, in slot 0, in front of a
// VM's tap with the real datapath.
type Chain struct {
	VNIC     *datapath.VNIC
	FastPath sdk.FastPath
	// Punt runs the slow path (AttachSlowPath only).
	Punt *slowpath.Punt
}

// AttachFilter attaches desc, with params checked against its schema, as
// the only slot of a chain on the VM's tap: the datapath filterd uses,
// pinned under a private bpffs root, in the host namespace. The instance
// gets the filter's own directions and failure mode. The chain, its pins
// and the instance are removed at cleanup.
func (v *VM) AttachFilter(t testing.TB, desc *sdk.Descriptor, params map[string]string) *Chain {
	t.Helper()
	if desc.FastPath == nil {
		t.Fatalf("attach %s: no fast path (a slow-path-only filter attaches with AttachSlowPath)", desc.Name)
	}
	p, err := sdk.ValidateParams(desc.Params, params)
	if err != nil {
		t.Fatalf("parameters of %s: %v", desc.Name, err)
	}
	return v.attachSlot0(t, desc.Name, func(c *Chain, vn *datapath.VNIC) error {
		inst := sdk.Instance{VNIC: sdk.VNIC{Name: vn.Name, Ifindex: vn.Ifindex}, Directions: desc.Dirs(), FailMode: desc.FailMode, Params: p}
		var err error
		if c.FastPath, err = desc.FastPath(sdk.NewFastPathContext(inst, false, nil, vn.Maps(), vn.SlotDir(0))); err != nil {
			return err
		}
		return vn.SetSlot(0, c.FastPath.Program(), datapath.Slot{FailOpen: desc.FailMode == sdk.FailOpen, Dirs: inst.Directions})
	})
}

// AttachSlowPath attaches a slow-path-only filter as the only slot of a
// chain on the VM's tap, as filterd runs it: the punt-all fast path sends
// every frame of the given directions to h through a punt tap, and passed
// frames go back into the chain. Third-party slow paths (package
// sdk/slowproc) test their handler with it on real traffic. The chain,
// the taps and the pins are removed at cleanup; h is closed too.
func (v *VM) AttachSlowPath(t testing.TB, h sdk.SlowPath, dirs sdk.Directions, mode sdk.FailMode) *Chain {
	t.Helper()
	t.Cleanup(func() { _ = h.Close() }) // runs after the chain's cleanup
	return v.attachSlot0(t, "slow path", func(c *Chain, vn *datapath.VNIC) error {
		inst := sdk.Instance{VNIC: sdk.VNIC{Name: vn.Name, Ifindex: vn.Ifindex}, Directions: dirs, FailMode: mode}
		var err error
		if c.FastPath, err = datapath.LoadPuntAll(sdk.NewFastPathContext(inst, false, nil, vn.Maps(), vn.SlotDir(0))); err != nil {
			return err
		}
		if c.Punt, err = slowpath.Start(context.Background(), inst.VNIC, 0, dirs, h, vn, slowpath.Options{FailMode: mode}); err != nil {
			return err
		}
		var punts [sdk.NumDirections]int
		for _, d := range dirs.List() {
			punts[d] = c.Punt.Ifindex(d)
		}
		return vn.SetSlot(0, c.FastPath.Program(), datapath.Slot{FailOpen: mode == sdk.FailOpen, Dirs: dirs, Punt: punts})
	})
}

// attachSlot0 creates a chain on the VM's tap under a private bpffs root,
// in the host namespace, with fill placing slot 0; everything is removed
// at cleanup (or at once if fill fails).
func (v *VM) attachSlot0(t testing.TB, what string, fill func(*Chain, *datapath.VNIC) error) *Chain {
	t.Helper()
	name, err := nsutil.RandomName("vftest-")
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join("/sys/fs/bpf", name)
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	c := &Chain{}
	release := func() {
		if c.Punt != nil {
			_ = c.Punt.Stop()
		}
		if c.FastPath != nil {
			c.FastPath.Close()
		}
	}
	err = v.host.Do(func() error {
		dp, err := datapath.New(datapath.Options{Root: root})
		if err != nil {
			return err
		}
		c.VNIC, err = dp.Create(v.TapName, func(vn *datapath.VNIC) error { return fill(c, vn) })
		return err
	})
	if err != nil {
		release()
		t.Fatalf("attach %s to %s: %v", what, v.TapName, err)
	}
	t.Cleanup(func() {
		if c.Punt != nil {
			_ = c.Punt.Stop()
		}
		_ = v.host.Do(c.VNIC.Detach)
		c.FastPath.Close()
	})
	return c
}
