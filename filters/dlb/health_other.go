//go:build !linux

package dlb

import (
	"context"
	"net"

	"github.com/vnicfilter/vnicfilter/sdk"
)

func dialIn(ctx context.Context, nsPath, addr string) (net.Conn, error) {
	if nsPath == "" {
		return dialDirect(ctx, addr)
	}
	return nil, sdk.ErrNotSupported
}
