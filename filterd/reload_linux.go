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
	slot, _, err := slotRequest(r)
	if err != nil {
		replyErr(w, err)
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
	in, err := d.slotLocked(name, slot)
	if err != nil {
		return nil, err
	}
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
	slot, q, err := slotRequest(r)
	if err != nil {
		replyErr(w, err)
		return
	}
	out, err := d.Inspect(r.Context(), r.PathValue("vnic"), slot, q)
	respond(w, out, err)
}

// Inspect asks the filter in slot of name's chain to describe its live
// state (sdk.Inspector). Filters without Inspector answer
// sdk.ErrNotSupported. The daemon lock is held only to find the instance:
// a slow Inspect never holds up attaches.
func (d *Daemon) Inspect(ctx context.Context, name string, slot int, query map[string]string) (*api.InspectResult, error) {
	in, err := d.slot(name, slot)
	if err != nil {
		return nil, err
	}
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

// slotRequest reads the {slot} of a .../filters/{slot}/... request and its
// query, each parameter given once.
func slotRequest(r *http.Request) (int, map[string]string, error) {
	slot, err := strconv.Atoi(r.PathValue("slot"))
	if err != nil {
		return 0, nil, fmt.Errorf("%w: slot %q is not a number", ErrBadRequest, r.PathValue("slot"))
	}
	q := make(map[string]string)
	for k, v := range r.URL.Query() {
		if len(v) != 1 {
			return 0, nil, fmt.Errorf("%w: query parameter %q given %d times", ErrBadRequest, k, len(v))
		}
		q[k] = v[0]
	}
	return slot, q, nil
}

// slotLocked returns the instance in slot of name's chain; d.mu is held.
func (d *Daemon) slotLocked(name string, slot int) (*instance, error) {
	n, ok := d.vnics[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, datapath.ErrNotAttached)
	}
	if slot < 0 || slot >= sdk.MaxSlots || n.slots[slot] == nil {
		return nil, fmt.Errorf("%w: %s has no filter in slot %d", ErrNoSuchSlot, name, slot)
	}
	return n.slots[slot], nil
}

// slot is slotLocked taking the daemon lock only to find the instance: a
// slow filter call after it never holds up attaches.
func (d *Daemon) slot(name string, slot int) (*instance, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.slotLocked(name, slot)
}
