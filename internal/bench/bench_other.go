//go:build !linux

package bench

import (
	"context"
	"errors"
)

// ErrNotSupported: vfbench needs Linux network namespaces and eBPF.
var ErrNotSupported = errors.New("vfbench runs on Linux only")

// ErrMeasurementFailed is returned by Run, after the results are printed,
// when a figure could not be measured.
var ErrMeasurementFailed = errors.New("some measurements failed")

// Run is not supported off Linux.
func Run(context.Context, Options) error { return ErrNotSupported }

// RunAttach is not supported off Linux.
func RunAttach(context.Context, AttachOptions) error { return ErrNotSupported }
