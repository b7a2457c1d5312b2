package filterd

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// handleReload serves POST /v1/vnics/{vnic}/filters/{slot}/reload.
func (d *Daemon) handleReload(w http.ResponseWriter, r *http.Request) {
	slot, err := strconv.Atoi(r.PathValue("slot"))
	if err != nil {
		replyErr(w, fmt.Errorf("%w: slot %q is not a number", ErrBadRequest, r.PathValue("slot")))
		return
	}
	out, err := d.Reload(r.Context(), r.PathValue("vnic"), slot)
	respond(w, out, err)
}

// Reload asks the filter in slot of name's chain to re-read its
// configuration (sdk.Reloader): the instance, its program and its state
// stay; only what the filter swaps changes. Filters without Reloader
// answer sdk.ErrNotSupported; a bad new configuration leaves the running
// one in place.
func (d *Daemon) Reload(ctx context.Context, name string, slot int) (*api.ReloadResult, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok := d.vnics[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, datapath.ErrNotAttached)
	}
	if slot < 0 || slot >= sdk.MaxSlots || n.slots[slot] == nil {
		return nil, fmt.Errorf("%w: %s has no filter in slot %d", ErrNoSuchSlot, name, slot)
	}
	in := n.slots[slot]
	rl, ok := in.fast.(sdk.Reloader)
	if !ok {
		return nil, fmt.Errorf("%w: filter %s (slot %d of %s) cannot reload its configuration", sdk.ErrNotSupported, in.desc.Name, slot, name)
	}
	start := time.Now()
	if err := rl.Reload(in.inst.Params); err != nil {
		return nil, err
	}
	took := time.Since(start)
	d.log.Info("reloaded", "vnic", name, "slot", slot, "filter", in.desc.Name, "took", took)
	return &api.ReloadResult{VNIC: name, Slot: slot, Filter: in.desc.Name, Seconds: took.Seconds()}, nil
}

// handleInspect serves GET /v1/vnics/{vnic}/filters/{slot}/inspect.
func (d *Daemon) handleInspect(w http.ResponseWriter, r *http.Request) {
	slot, err := strconv.Atoi(r.PathValue("slot"))
	if err != nil {
		replyErr(w, fmt.Errorf("%w: slot %q is not a number", ErrBadRequest, r.PathValue("slot")))
		return
	}
	q := make(map[string]string)
	for k, v := range r.URL.Query() {
		if len(v) != 1 {
			replyErr(w, fmt.Errorf("%w: query parameter %q given %d times", ErrBadRequest, k, len(v)))
			return
		}
		q[k] = v[0]
	}
	out, err := d.Inspect(r.Context(), r.PathValue("vnic"), slot, q)
	respond(w, out, err)
}

// Inspect asks the filter in slot of name's chain to describe its live
// state (sdk.Inspector). Filters without Inspector answer
// sdk.ErrNotSupported. The daemon lock is held only to find the instance:
// a slow Inspect never holds up attaches.
func (d *Daemon) Inspect(ctx context.Context, name string, slot int, query map[string]string) (*api.InspectResult, error) {
	d.mu.Lock()
	n, ok := d.vnics[name]
	if !ok {
		d.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", name, datapath.ErrNotAttached)
	}
	if slot < 0 || slot >= sdk.MaxSlots || n.slots[slot] == nil {
		d.mu.Unlock()
		return nil, fmt.Errorf("%w: %s has no filter in slot %d", ErrNoSuchSlot, name, slot)
	}
	in := n.slots[slot]
	d.mu.Unlock()
	is, ok := in.fast.(sdk.Inspector)
	if !ok {
		return nil, fmt.Errorf("%w: filter %s (slot %d of %s) has nothing to inspect", sdk.ErrNotSupported, in.desc.Name, slot, name)
	}
	state, err := is.Inspect(ctx, query)
	if err != nil {
		return nil, err
	}
	return &api.InspectResult{VNIC: name, Slot: slot, Filter: in.desc.Name, State: state}, nil
}
