// Package punt is a slow-path-only filter that passes every frame: the
// smallest complete Go slow path, the template for slow-path filters, and
// the benchmark's "slow-path punt" case. Every frame of the vNIC crosses the
// punt tap to Go and back, so it measures the slow path's own cost.
package punt

import (
	"sync/atomic"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// Name is the filter's registered name.
const Name = "punt"

// Descriptor registers the punt filter.
var Descriptor = &sdk.Descriptor{
	Name:    Name,
	Version: "1.0.0",
	Summary: "send every frame through the Go slow path and pass it (template, benchmark)",
	Params: []sdk.ParamSpec{
		{Name: "verdict", Type: sdk.String, Enum: []string{"pass", "drop"}, Default: "pass", Doc: "what the slow path answers for every frame"},
	},
	SlowPath: newSlowPath,
}

func init() { sdk.Register(Descriptor) }

type slowPath struct {
	verdict sdk.SlowVerdict
	frames  [sdk.NumDirections]atomic.Uint64
}

var (
	_ sdk.SlowPath     = (*slowPath)(nil)
	_ sdk.SlowCounters = (*slowPath)(nil)
)

func newSlowPath(ctx *sdk.SlowPathContext) (sdk.SlowPath, error) {
	s := &slowPath{}
	if ctx.Instance.Params.String("verdict") == "drop" {
		s.verdict = sdk.Drop
	}
	return s, nil
}

func (s *slowPath) Process(f *sdk.Frame) sdk.SlowVerdict {
	s.frames[f.Direction].Add(1)
	return s.verdict
}

func (s *slowPath) Counters() []sdk.Counter {
	var out []sdk.Counter
	for _, d := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
		out = append(out, sdk.Counter{Name: "frames_total", Help: "Frames the punt slow path decided on.", Labels: map[string]string{"direction": d.String()}, Value: float64(s.frames[d].Load())})
	}
	return out
}

func (s *slowPath) Close() error { return nil }
