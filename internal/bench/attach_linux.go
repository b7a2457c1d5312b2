package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vnicfilter/vnicfilter/filterd/api"
)

// RunAttach times attaching a one-filter chain to o.N vNICs, one PUT after
// another, through a private filterd, and prints the results to o.Out. The
// vNICs are veths in a fresh host namespace (no VMs: attach cost does not
// depend on traffic); they, the chains and the namespace are removed before
// it returns.
func RunAttach(ctx context.Context, o AttachOptions) (err error) {
	o = o.withDefaults()
	if o.N > maxAttachN {
		return fmt.Errorf("--attach %d: at most %d", o.N, maxAttachN)
	}
	if err := preflight(nil, nil); err != nil {
		return err
	}
	bin, err := findFilterd(o.Filterd)
	if err != nil {
		return err
	}
	suffix := randomHex(3)
	h, err := newHost(suffix)
	if err != nil {
		return fmt.Errorf("build host namespace: %w", err)
	}
	defer func() { err = errors.Join(err, wrapErr("remove host namespace", h.Close())) }()

	names := make([]string, o.N)
	logf(o.Log, "creating %d veths in %s", o.N, h.ns.name)
	for i := range names {
		names[i] = "vfa" + suffix + "-" + strconv.Itoa(i)
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: names[i]}, PeerName: "vfp" + suffix + "-" + strconv.Itoa(i)}
		if err := h.handle.LinkAdd(v); err != nil {
			return fmt.Errorf("create veth %s: %w", names[i], err)
		}
		if err := setUp(h.handle, names[i]); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	// Deleting one end deletes the pair; the namespace would take them
	// anyway, but a long-lived host namespace is how the daemon lives.
	defer func() {
		var errs []error
		for _, n := range names {
			if l, lerr := h.handle.LinkByName(n); lerr == nil {
				errs = append(errs, h.handle.LinkDel(l))
			}
		}
		err = errors.Join(err, wrapErr("delete veths", errors.Join(errs...)))
	}()

	d, err := startDaemon(ctx, bin, h)
	if err != nil {
		return err
	}
	defer func() {
		err = errors.Join(err, wrapErr("stop filterd", d.close(err != nil && !errors.Is(err, context.Canceled))))
	}()
	mode := "?"
	if v, verr := d.client.Version(ctx); verr == nil {
		mode = v.AttachMode
	}

	req := api.ChainRequest{Filters: []api.FilterSpec{{Name: "count"}}, Owner: "vfbench"}
	lat := make([]time.Duration, 0, o.N)
	start := time.Now()
	for _, n := range names {
		t0 := time.Now()
		if _, err := d.client.SetChain(ctx, n, req); err != nil {
			return fmt.Errorf("attach %s (after %d): %w", n, len(lat), err)
		}
		lat = append(lat, time.Since(t0))
		d.attached[n] = true
	}
	total := time.Since(start)
	logf(o.Log, "attached %d chains in %v; detaching", o.N, total.Round(time.Millisecond))

	start = time.Now()
	for _, n := range names {
		if err := d.detach(ctx, n); err != nil {
			return err
		}
	}
	detach := time.Since(start)

	rs := summarizeAttach(lat, total, detach)
	if o.JSON {
		return writeJSON(o.Out, rs)
	}
	return writeTable(o.Out, attachTitle(o.N, mode), rs)
}
