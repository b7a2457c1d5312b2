package filterd

import (
	"fmt"
	"os"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// Record mode (--datapath=record, Config.Record): filterd answers the API
// as it does on a real host but, instead of loading filters and attaching
// chains, validates each chain request and records it. Validation is what
// happens before anything touches the kernel: the filter exists, its
// parameters fit its schema, and a "policy" parameter names a document the
// policy parser accepts. It exists so that a control-plane simulation can
// run many hosts' worth of filterd on one small machine; a host in record
// mode enforces nothing.

// recordedVNIC is a chain filterd validated and recorded in record mode.
type recordedVNIC struct {
	owner   string
	filters []api.FilterSpec // normalized
	// reloads counts policy-document changes that reached the chain.
	reloads int
}

// ModeRecord is the mode GET /v1/vnics reports for a recorded chain.
const ModeRecord = "record"

// errRecordOnly answers the operations record mode does not offer.
func errRecordOnly(what string) error {
	return fmt.Errorf("%w: %s: filterd runs with --datapath=record (set whole chains with PUT /v1/vnics/{vnic})", sdk.ErrNotSupported, what)
}

// recordChainLocked is SetChain in record mode.
func (d *Daemon) recordChainLocked(name string, req api.ChainRequest) (*api.VNIC, error) {
	old, exists := d.recorded[name]
	if exists && !req.Replace {
		return nil, fmt.Errorf("%s: %w (ask for replace to swap it)", name, datapath.ErrAlreadyAttached)
	}
	if name == "" || len(name) > 15 {
		return nil, fmt.Errorf("%w: device name %q: want 1 to 15 characters", ErrBadRequest, name)
	}
	if len(req.Filters) > sdk.MaxSlots {
		return nil, fmt.Errorf("%w: %d filters, a chain holds at most %d", ErrBadRequest, len(req.Filters), sdk.MaxSlots)
	}
	n := &recordedVNIC{owner: req.Owner}
	if exists {
		n.reloads = old.reloads
	}
	for i, f := range req.Filters {
		_, _, norm, err := resolve(f)
		if err != nil {
			return nil, fmt.Errorf("slot %d: %w", i, err)
		}
		if path := f.Params["policy"]; path != "" && d.cfg.PolicyCheck != nil && f.Name == d.cfg.PolicyFilter {
			doc, err := os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("slot %d: %w: policy: %v", i, sdk.ErrInvalidParam, err)
			}
			if err := d.cfg.PolicyCheck(doc, path, d.groups); err != nil {
				return nil, fmt.Errorf("slot %d: %w: %w", i, sdk.ErrInvalidParam, err)
			}
		}
		n.filters = append(n.filters, norm)
	}
	if setTA := req.Tags != nil || req.Addresses != nil; setTA || req.MAC != "" {
		l, err := d.requestedLabelsLocked(name, req.Tags, req.Addresses, setTA, req.MAC)
		if err != nil {
			return nil, err
		}
		d.propagateLocked(d.setLabelsLocked(name, l))
	}
	d.recorded[name] = n
	if err := d.saveLocked(); err != nil {
		return nil, err
	}
	return describeRecorded(name, n), nil
}

// detachRecordedLocked is Detach in record mode.
func (d *Daemon) detachRecordedLocked(name string) error {
	if _, ok := d.recorded[name]; !ok {
		return fmt.Errorf("%s: %w", name, datapath.ErrNotAttached)
	}
	delete(d.recorded, name)
	d.propagateLocked(d.setLabelsLocked(name, labels{}))
	return d.saveLocked()
}

func describeRecorded(name string, n *recordedVNIC) *api.VNIC {
	out := &api.VNIC{Name: name, Mode: ModeRecord, Owner: n.owner, Slots: []api.Slot{}}
	for i, f := range n.filters {
		out.Slots = append(out.Slots, api.Slot{Slot: i, Filter: f.Name, FailMode: f.FailMode, Directions: f.Directions, Params: f.Params})
	}
	return out
}

// reconcileRecorded loads the recorded chains of state.json.
func (d *Daemon) reconcileRecorded(st *state) error {
	for name, sv := range st.VNICs {
		n := &recordedVNIC{owner: sv.Owner}
		for _, ss := range sv.Slots {
			n.filters = append(n.filters, ss.Filter)
		}
		d.recorded[name] = n
	}
	d.log.Info("record mode: chains are validated and recorded, never attached", "recorded", len(d.recorded))
	return d.saveLocked()
}
