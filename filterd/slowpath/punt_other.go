//go:build !linux

package slowpath

import (
	"context"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// Punt runs one filter instance's slow path. Linux only.
type Punt struct{}

// Start is Linux only: it returns sdk.ErrNotSupported elsewhere.
func Start(ctx context.Context, vnic sdk.VNIC, slot int, dirs sdk.Directions, h sdk.SlowPath, hb Heartbeater, opts Options) (*Punt, error) {
	return nil, sdk.ErrNotSupported
}

// Ifindex is always 0.
func (p *Punt) Ifindex(dir sdk.Direction) int { return 0 }

// State is always Down.
func (p *Punt) State() State { return Down }

// Stats are always zero.
func (p *Punt) Stats(dir sdk.Direction) Stats { return Stats{} }

// Stop does nothing.
func (p *Punt) Stop() error { return nil }
