package filterd

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// handleAction serves POST /v1/vnics/{vnic}/filters/{slot}/actions/{action}.
func (d *Daemon) handleAction(w http.ResponseWriter, r *http.Request) {
	slot, q, err := slotRequest(r)
	if err != nil {
		replyErr(w, err)
		return
	}
	out, err := d.Act(r.Context(), r.PathValue("vnic"), slot, r.PathValue("action"), q)
	respond(w, out, err)
}

// Act asks the filter in slot of name's chain to carry out action
// (sdk.Actor). Filters without Actor answer sdk.ErrNotSupported. The
// daemon lock is held only to find the instance.
func (d *Daemon) Act(ctx context.Context, name string, slot int, action string, args map[string]string) (*api.ActionResult, error) {
	in, err := d.slot(name, slot)
	if err != nil {
		return nil, err
	}
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
