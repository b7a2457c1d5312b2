package dlb

import (
	"context"
	"fmt"
	"net"

	"github.com/vishvananda/netns"

	"github.com/vnicfilter/vnicfilter/internal/nsutil"
)

// dialIn connects to addr from the network namespace at nsPath (filterd's
// own when empty): a locked OS thread enters the namespace, dials and
// returns; the socket stays in the namespace.
func dialIn(ctx context.Context, nsPath, addr string) (net.Conn, error) {
	if nsPath == "" {
		return dialDirect(ctx, addr)
	}
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	defer ns.Close()
	var c net.Conn
	err = nsutil.Do(ns, nsPath, func() (err error) {
		c, err = dialDirect(ctx, addr)
		return err
	})
	return c, err
}
