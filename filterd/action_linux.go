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

// handleAction serves POST /v1/vnics/{vnic}/filters/{slot}/actions/{action}.
func (d *Daemon) handleAction(w http.ResponseWriter, r *http.Request) {
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
	out, err := d.Act(r.Context(), r.PathValue("vnic"), slot, r.PathValue("action"), q)
	respond(w, out, err)
}

// Act asks the filter in slot of name's chain to carry out action
// (sdk.Actor). Filters without Actor answer sdk.ErrNotSupported. The
// daemon lock is held only to find the instance.
func (d *Daemon) Act(ctx context.Context, name string, slot int, action string, args map[string]string) (*api.ActionResult, error) {
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
	ac, ok := in.fast.(sdk.Actor)
	if !ok {
		return nil, fmt.Errorf("%w: filter %s (slot %d of %s) has no actions", sdk.ErrNotSupported, in.desc.Name, slot, name)
	}
	start := time.Now()
	res, err := ac.Act(ctx, action, args)
	if err != nil {
		return nil, err
	}
	d.log.Info("filter action", "vnic", name, "slot", slot, "filter", in.desc.Name, "action", action, "took", time.Since(start))
	return &api.ActionResult{VNIC: name, Slot: slot, Filter: in.desc.Name, Action: action, Result: res}, nil
}
