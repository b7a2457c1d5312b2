package slowpath

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// Parsing the embedded ELF costs more than loading it; parse once.
var reinjectSpec = sync.OnceValues(loadReinject)

// haveTCX probes once per process.
var haveTCX = sync.OnceValue(datapath.HaveTCX)

// reinjector is the re-injection program attached to one punt tap.
type reinjector struct {
	prog *ebpf.Program
	link link.Link // nil on clsact: the filter goes with the tap
}

// attachReinject loads vf_reinject for (vnic, dir, resume slot) and puts it
// on tc ingress of the punt tap: tcx where the kernel has it, cls_bpf on
// clsact otherwise. Runs in the tap's network namespace.
func attachReinject(tap, vnic int, dir sdk.Direction, resume int) (*reinjector, error) {
	spec, err := reinjectSpec()
	if err != nil {
		return nil, fmt.Errorf("parse reinject program: %w", err)
	}
	spec = spec.Copy()
	for name, val := range map[string]uint32{"target_ifindex": uint32(vnic), "target_dir": uint32(dir), "resume_slot": uint32(resume)} {
		if err := spec.Variables[name].Set(val); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}
	// Only the program: the SDK maps the header declares are unused here.
	var progs reinjectPrograms
	if err := spec.LoadAndAssign(&progs, nil); err != nil {
		return nil, fmt.Errorf("load reinject program: %w", err)
	}
	r := &reinjector{prog: progs.VfReinject}
	if haveTCX() == nil {
		l, err := link.AttachTCX(link.TCXOptions{Interface: tap, Program: r.prog, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			r.prog.Close()
			return nil, fmt.Errorf("attach reinject program (tcx): %w", err)
		}
		r.link = l
		return r, nil
	}
	if err := attachClsactIngress(tap, r.prog); err != nil {
		r.prog.Close()
		return nil, fmt.Errorf("attach reinject program (clsact): %w", err)
	}
	return r, nil
}

func (r *reinjector) Close() error {
	var err error
	if r.link != nil {
		err = r.link.Close()
	}
	return errors.Join(err, r.prog.Close())
}

// attachClsactIngress puts prog, direct-action, on a new clsact qdisc of
// the tap. Nothing to undo: the tap is ours and takes both along.
func attachClsactIngress(ifindex int, prog *ebpf.Program) error {
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc: %w", err)
	}
	return netlink.FilterAdd(&netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    netlink.HANDLE_MIN_INGRESS,
			Priority:  1,
			Protocol:  unix.ETH_P_ALL,
		},
		Name:         "vf_reinject",
		DirectAction: true,
		Fd:           prog.FD(),
	})
}
