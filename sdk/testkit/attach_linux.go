package testkit

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/internal/nsutil"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// Chain is one filter instance attached alone, in slot 0, in front of a
// VM's tap with the real datapath.
type Chain struct {
	VNIC     *datapath.VNIC
	FastPath sdk.FastPath
}

// AttachFilter attaches desc, with params checked against its schema, as
// the only slot of a chain on the VM's tap: the datapath filterd uses,
// pinned under a private bpffs root, in the host namespace. The instance
// gets the filter's own directions and failure mode. The chain, its pins
// and the instance are removed at cleanup.
func (v *VM) AttachFilter(t testing.TB, desc *sdk.Descriptor, params map[string]string) *Chain {
	t.Helper()
	p, err := sdk.ValidateParams(desc.Params, params)
	if err != nil {
		t.Fatalf("parameters of %s: %v", desc.Name, err)
	}
	name, err := nsutil.RandomName("vftest-")
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join("/sys/fs/bpf", name)
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	c := &Chain{}
	err = v.host.Do(func() error {
		dp, err := datapath.New(datapath.Options{Root: root})
		if err != nil {
			return err
		}
		c.VNIC, err = dp.Create(v.TapName, func(vn *datapath.VNIC) error {
			inst := sdk.Instance{VNIC: sdk.VNIC{Name: vn.Name, Ifindex: vn.Ifindex}, Directions: desc.Dirs(), FailMode: desc.FailMode, Params: p}
			var err error
			if c.FastPath, err = desc.FastPath(sdk.NewFastPathContext(inst, false, nil, vn.Maps(), vn.SlotDir(0))); err != nil {
				return err
			}
			return vn.SetSlot(0, c.FastPath.Program(), datapath.Slot{FailOpen: desc.FailMode == sdk.FailOpen, Dirs: inst.Directions})
		})
		return err
	})
	if err != nil {
		if c.FastPath != nil {
			c.FastPath.Close()
		}
		t.Fatalf("attach %s to %s: %v", desc.Name, v.TapName, err)
	}
	t.Cleanup(func() {
		_ = v.host.Do(c.VNIC.Detach)
		c.FastPath.Close()
	})
	return c
}
