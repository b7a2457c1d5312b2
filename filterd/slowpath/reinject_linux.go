package slowpath

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// Parsing the embedded ELF costs more than loading it; parse once.
var reinjectSpec = sync.OnceValues(loadReinject)

// reinjector is the re-injection program attached to one punt tap.
type reinjector struct {
	prog *ebpf.Program
	link link.Link // nil on clsact: the filter goes with the tap
}

// attachReinject loads vf_reinject for (vnic, dir, resume slot) and puts it
// on tc ingress of the punt tap: tcx where the kernel has it, cls_bpf on
// clsact otherwise (datapath.AttachIngress). Runs in the tap's network
// namespace.
func attachReinject(tap int, tapName string, vnic int, dir sdk.Direction, resume int) (*reinjector, error) {
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
	if r.link, err = datapath.AttachIngress(tap, tapName, r.prog); err != nil {
		r.prog.Close()
		return nil, fmt.Errorf("attach reinject program: %w", err)
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
