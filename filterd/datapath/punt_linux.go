package datapath

import (
	"fmt"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// puntAll is the fast path of a filter that has only a slow path.
type puntAll struct{ objs puntObjects }

var _ sdk.FastPath = (*puntAll)(nil)

var puntSpec = sync.OnceValues(loadPunt)

// LoadPuntAll loads vf_punt_all (punt.c) for one instance: the fast path
// filterd gives a filter with only a slow path.
func LoadPuntAll(ctx *sdk.FastPathContext) (sdk.FastPath, error) {
	spec, err := puntSpec()
	if err != nil {
		return nil, err
	}
	p := &puntAll{}
	if err := ctx.Load(spec, &p.objs); err != nil {
		return nil, fmt.Errorf("punt-all: %w", err)
	}
	return p, nil
}

func (p *puntAll) Program() *ebpf.Program           { return p.objs.VfPuntAll }
func (p *puntAll) Counters() ([]sdk.Counter, error) { return nil, nil }
func (p *puntAll) Close() error                     { return p.objs.Close() }
