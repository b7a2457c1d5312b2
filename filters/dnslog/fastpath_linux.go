package dnslog

import (
	"fmt"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/vnicfilter/vnicfilter/sdk"
)

type fastPath struct{ objs dnslogObjects }

var _ sdk.FastPath = (*fastPath)(nil)

// The spec is parsed once; FastPathContext.Load copies it per instance.
var dnslogSpec = sync.OnceValues(loadDnslog)

func loadFastPath(ctx *sdk.FastPathContext) (sdk.FastPath, error) {
	spec, err := dnslogSpec()
	if err != nil {
		return nil, err
	}
	fp := &fastPath{}
	if err := ctx.Load(spec, &fp.objs); err != nil {
		return nil, fmt.Errorf("dnslog: %w", err)
	}
	return fp, nil
}

func (f *fastPath) Program() *ebpf.Program { return f.objs.VfDnslog }

// Counters: the slot's punt/continue counters already say how much is DNS.
func (f *fastPath) Counters() ([]sdk.Counter, error) { return nil, nil }

func (f *fastPath) Close() error { return f.objs.Close() }
