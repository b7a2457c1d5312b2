//go:build !linux

package slowproc

import (
	"errors"
	"log/slog"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// Filter is what an external slow-path filter process serves (see the
// Linux build for the fields' meaning).
type Filter struct {
	Name    string
	Version string
	Params  []sdk.ParamSpec
	New     func(*sdk.SlowPathContext) (sdk.SlowPath, error)
	Logger  *slog.Logger
}

// Serve is Linux only: punt taps and filterd exist nowhere else.
func Serve(Filter) error { return errors.New("slowproc: external slow-path filters run on Linux only") }
