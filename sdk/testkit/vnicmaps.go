package testkit

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// VNICMaps creates stand-ins for the vNIC maps filterd gives every slot
// program (vf_chain, vf_slots, vf_stats), from their definitions in a
// filter's spec, for loading a filter outside a chain: with
// sdk.NewFastPathContext(inst, false, nil, testkit.VNICMaps(t, spec), "")
// and then running its program with BPF_PROG_TEST_RUN. Closed at cleanup.
func VNICMaps(t testing.TB, spec *ebpf.CollectionSpec) map[string]*ebpf.Map {
	t.Helper()
	maps := map[string]*ebpf.Map{}
	for _, name := range []string{sdk.MapChain, sdk.MapSlots, sdk.MapStats} {
		ms, ok := spec.Maps[name]
		if !ok {
			t.Fatalf("spec has no %s: was the program built against sdk/bpf/vnicfilter.h?", name)
		}
		m, err := ebpf.NewMap(ms.Copy())
		if err != nil {
			t.Fatalf("create stand-in %s: %v", name, err)
		}
		t.Cleanup(func() { m.Close() })
		maps[name] = m
	}
	return maps
}
