// Package count is the smallest fast-path filter: per-vNIC packet and byte
// counters by direction, kept in the instance's own per-CPU map. It shows a
// filter author the whole SDK surface in a few lines and serves as the
// benchmark's "one fast-path filter".
package count

import (
	"fmt"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// Name is the filter's registered name.
const Name = "count"

// Descriptor registers the count filter.
var Descriptor = &sdk.Descriptor{
	Name:     Name,
	Version:  "1.0.0",
	Summary:  "count packets and bytes per direction (fast path, never drops)",
	FailMode: sdk.FailOpen, // counting must never block traffic
	FastPath: load,
}

func init() { sdk.Register(Descriptor) }

type fastPath struct {
	objs countObjects
}

var _ sdk.FastPath = (*fastPath)(nil)

// The spec is parsed once; FastPathContext.Load copies it per instance.
var countSpec = sync.OnceValues(loadCount)

func load(ctx *sdk.FastPathContext) (sdk.FastPath, error) {
	spec, err := countSpec()
	if err != nil {
		return nil, err
	}
	fp := &fastPath{}
	if err := ctx.Load(spec, &fp.objs); err != nil {
		return nil, fmt.Errorf("count: %w", err)
	}
	return fp, nil
}

func (f *fastPath) Program() *ebpf.Program { return f.objs.VfCountFilter }

// Counters reports packets_total and bytes_total per direction.
func (f *fastPath) Counters() ([]sdk.Counter, error) {
	var out []sdk.Counter
	for _, dir := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
		p, b, err := sdk.SumPerCPU(f.objs.CountByDir, uint32(dir))
		if err != nil {
			return nil, fmt.Errorf("read count_by_dir: %w", err)
		}
		labels := map[string]string{"direction": dir.String()}
		out = append(out,
			sdk.Counter{Name: "packets_total", Help: "Packets seen by the count filter.", Labels: labels, Value: float64(p)},
			sdk.Counter{Name: "bytes_total", Help: "Bytes seen by the count filter.", Labels: labels, Value: float64(b)})
	}
	return out, nil
}

func (f *fastPath) Close() error { return f.objs.Close() }
