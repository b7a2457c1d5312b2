package bench

import (
	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/slowproc"
)

// ServeExtPunt is the process of the slow-ext case: vfbench started by
// filterd with the filter socket (slowproc.FDEnv) serves a slow path that
// passes every frame. cmd/vfbench calls it when that variable is set.
func ServeExtPunt() error {
	return slowproc.Serve(slowproc.Filter{
		Name: ExtPuntFilter, Version: "1.0.0",
		New: func(*sdk.SlowPathContext) (sdk.SlowPath, error) { return passAll{}, nil },
	})
}

type passAll struct{}

func (passAll) Process(*sdk.Frame) sdk.SlowVerdict { return sdk.Pass }
func (passAll) Close() error                       { return nil }
