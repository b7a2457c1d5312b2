package filterd

import (
	"context"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/libvirt/watch"
)

// WatchLibvirt keeps the chains owned by "libvirt:<domain>" equal to what
// the running domains of Config.LibvirtURI ask for in their XML, until ctx
// is done (package libvirt/watch): it reconciles at once, then on every
// lifecycle, device-added/removed and metadata-change event, and after
// every reconnect. It returns nil at once when LibvirtURI is empty. Call
// it after New and let it return before Close.
func (d *Daemon) WatchLibvirt(ctx context.Context) error {
	if d.cfg.LibvirtURI == "" {
		return nil
	}
	w, err := watch.New(libvirtChains{d}, watch.Options{URI: d.cfg.LibvirtURI, Logger: d.log.With("component", "libvirt"),
		OnMigrationPaused: func(domain string) { d.handoffPaused(ctx, domain) }})
	if err != nil {
		return err
	}
	err = w.Run(ctx)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// libvirtChains lets the watcher drive the daemon in process, with the
// errors the API would return.
type libvirtChains struct{ d *Daemon }

var _ watch.Chains = libvirtChains{}

func (c libvirtChains) Filters(context.Context) ([]api.FilterInfo, error) {
	return c.d.FilterInfos(), nil
}

func (c libvirtChains) VNICs(context.Context) ([]api.VNIC, error) { return c.d.VNICs(), nil }

func (c libvirtChains) SetChain(ctx context.Context, vnic string, req api.ChainRequest) (*api.VNIC, error) {
	v, err := c.d.SetChain(ctx, vnic, req)
	return v, apiError(err)
}

func (c libvirtChains) Attach(ctx context.Context, vnic string, req api.AttachRequest) (*api.VNIC, error) {
	v, err := c.d.Attach(ctx, vnic, req)
	return v, apiError(err)
}

func (c libvirtChains) Detach(ctx context.Context, vnic string) error {
	return apiError(c.d.Detach(ctx, vnic))
}

func (c libvirtChains) DetachSlot(ctx context.Context, vnic string, slot int) error {
	return apiError(c.d.DetachSlot(ctx, vnic, slot))
}

// apiError gives err the code the HTTP API would answer with.
func apiError(err error) error {
	if err == nil {
		return nil
	}
	_, code := errorCode(err)
	return &api.Error{Code: code, Message: err.Error()}
}
