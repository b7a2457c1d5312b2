package filterd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/filterd/slowpath"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// Daemon is filterd: the registry of protected vNICs and their chains.
type Daemon struct {
	cfg Config
	log *slog.Logger
	dp  *datapath.Datapath

	// ctx bounds the slow-path runners: they live until Close, not for
	// the API request that started them.
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	vnics    map[string]*vnic
	external map[string]*externalFilter // external_linux.go
	groups   *groupTable                // host address groups (groups_linux.go)
	hidden   *hidden                    // the hidden bridge, nil if not configured
	recorded map[string]*recordedVNIC   // record mode's chains (record_linux.go)
	mig      *migrator                  // state transfers between hosts, nil until served (migrate_linux.go)
}

type vnic struct {
	dp    *datapath.VNIC
	owner string
	slots [sdk.MaxSlots]*instance
	// capture: the chain was created for a capture and goes with it.
	capture bool
}

// instance is one filter in one slot.
type instance struct {
	desc *sdk.Descriptor
	spec api.FilterSpec // normalized: failmode and directions explicit
	inst sdk.Instance
	fast sdk.FastPath
	slow sdk.SlowPath
	punt *slowpath.Punt
	// capture: a capture's temporary mirror (capture_linux.go).
	capture bool
}

func (in *instance) close() {
	if in.punt != nil {
		_ = in.punt.Stop()
		in.punt = nil
	}
	if in.slow != nil {
		_ = in.slow.Close()
		in.slow = nil
	}
	if in.fast != nil {
		_ = in.fast.Close()
		in.fast = nil
	}
}

// New opens the datapath and reconciles it with the saved desired state:
// chains found pinned are adopted as they are (no frame is dropped), chains
// whose device is gone are removed, and chains whose pins are missing are
// rebuilt.
func New(ctx context.Context, cfg Config) (*Daemon, error) {
	cfg = cfg.withDefaults()
	var hb *hidden
	if cfg.Hidden.Bridge != "" {
		hc := cfg.Hidden.withDefaults()
		if err := hc.validate(); err != nil {
			return nil, err
		}
		hb = &hidden{cfg: hc, log: cfg.Logger.With("component", "hidden-bridge")}
	}
	dp, err := datapath.New(datapath.Options{Root: cfg.BPFFSRoot, Mode: cfg.Mode})
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	d := &Daemon{cfg: cfg, log: cfg.Logger, dp: dp, vnics: map[string]*vnic{}, groups: newGroupTable(), hidden: hb, recorded: map[string]*recordedVNIC{}}
	d.ctx, d.cancel = context.WithCancel(context.WithoutCancel(ctx))
	d.loadExternalFilters() // before reconcile: chains may use them
	// Before reconcile: adopted encap chains keep the pushed table.
	if err := d.openEncapFDB(); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.reconcile(ctx); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// Datapath returns the daemon's datapath (attach mode, bpffs root).
func (d *Daemon) Datapath() *datapath.Datapath { return d.dp }

func (d *Daemon) reconcile(ctx context.Context) error {
	st, err := loadState(d.statePath())
	if err != nil {
		return err
	}
	// Groups first: adopted policies resolve them.
	for n, ms := range st.Groups {
		d.groups.pushed[n] = ms
	}
	for n, l := range st.Labels {
		d.groups.vnics[n] = l
	}
	if d.cfg.Record {
		return d.reconcileRecorded(st)
	}
	for _, name := range sortedKeys(st.VNICs) {
		sv := st.VNICs[name]
		if sv.Capture {
			// A chain made only for a capture whose client went away
			// with the old daemon.
			d.log.Info("removing the chain of an interrupted capture", "vnic", name)
			if err := d.dp.Remove(name); err != nil {
				d.log.Error("remove capture chain", "vnic", name, "err", err)
			}
			continue
		}
		v, err := d.dp.Adopt(name)
		switch {
		case err == nil:
			n := &vnic{dp: v, owner: sv.Owner}
			for _, ss := range sv.Slots {
				if ss.Capture {
					d.log.Info("clearing the slot of an interrupted capture", "vnic", name, "slot", ss.Slot)
					if err := v.ClearSlot(ss.Slot); err != nil {
						d.log.Error("clear capture slot", "vnic", name, "slot", ss.Slot, "err", err)
					}
					_ = os.RemoveAll(v.SlotDir(ss.Slot))
					continue
				}
				in, err := d.newInstance(ctx, v, ss.Slot, ss.Filter, true, sv.Owner)
				if err != nil {
					// The old program stays in the slot and keeps
					// enforcing; only its management is lost.
					d.log.Error("adopt filter instance", "vnic", name, "slot", ss.Slot, "filter", ss.Filter.Name, "err", err)
					continue
				}
				n.slots[ss.Slot] = in
			}
			d.vnics[name] = n
			d.log.Info("adopted chain", "vnic", name, "mode", v.Mode, "filters", len(sv.Slots))
		case errors.Is(err, datapath.ErrNoSuchDevice):
			d.log.Info("device gone, removing its chain", "vnic", name)
			delete(d.groups.vnics, name) // its VM left its tag groups
			if err := d.dp.Remove(name); err != nil {
				d.log.Error("remove chain", "vnic", name, "err", err)
			}
		default:
			d.log.Warn("chain not found pinned, rebuilding", "vnic", name, "err", err)
			_ = d.dp.Remove(name)
			req := api.ChainRequest{Owner: sv.Owner}
			for _, ss := range sv.Slots {
				if !ss.Capture { // captures are always the last slot
					req.Filters = append(req.Filters, ss.Filter)
				}
			}
			if _, err := d.setChainLocked(ctx, name, req); err != nil {
				d.log.Error("rebuild chain", "vnic", name, "err", err)
			}
		}
	}
	// Drop-all guards a libvirt hook pinned while filterd was down stay
	// until a chain replaces them; those whose device is gone are debris.
	if gone, err := datapath.RemoveStaleGuards(d.dp.Root()); err != nil {
		d.log.Warn("remove stale guards", "err", err)
	} else if len(gone) > 0 {
		d.log.Info("removed guards of devices that are gone", "taps", gone)
	}
	pinned, err := d.dp.Pinned()
	if err != nil {
		return fmt.Errorf("list pinned chains: %w", err)
	}
	for _, name := range pinned {
		if _, ok := d.vnics[name]; ok {
			continue
		}
		if _, inState := st.VNICs[name]; inState {
			continue
		}
		// Unknown to the state file: keep enforcing, but say so.
		d.log.Warn("pinned chain not in state file; left in place (vfctl detach removes it)", "vnic", name)
	}
	return d.saveLocked()
}

// Close stops slow paths and releases handles. The datapath stays pinned and
// keeps enforcing (slow-path slots apply their failure mode).
func (d *Daemon) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, n := range d.vnics {
		for _, in := range n.slots {
			if in != nil {
				in.close()
			}
		}
		n.dp.Close()
	}
	d.vnics = map[string]*vnic{}
	for _, ef := range d.external {
		if ef.sup != nil {
			ef.sup.Stop()
		}
	}
	d.cancel()
	return nil
}

// resolve checks a filter spec and fills its defaults.
func resolve(spec api.FilterSpec) (*sdk.Descriptor, sdk.Instance, api.FilterSpec, error) {
	desc, err := sdk.Lookup(spec.Name)
	if err != nil {
		return nil, sdk.Instance{}, spec, err
	}
	params, err := sdk.ValidateParams(desc.Params, spec.Params)
	if err != nil {
		return nil, sdk.Instance{}, spec, fmt.Errorf("filter %s: %w", desc.Name, err)
	}
	inst := sdk.Instance{Params: params, FailMode: desc.FailMode, Directions: desc.Dirs()}
	if spec.FailMode != "" {
		fm, err := sdk.ParseFailMode(spec.FailMode)
		if err != nil {
			return nil, inst, spec, fmt.Errorf("filter %s: %w: %v", desc.Name, sdk.ErrInvalidParam, err)
		}
		inst.FailMode = fm
	}
	if spec.Directions != "" {
		ds, err := sdk.ParseDirections(spec.Directions)
		if err != nil {
			return nil, inst, spec, fmt.Errorf("filter %s: %w: %v", desc.Name, sdk.ErrInvalidParam, err)
		}
		if ds&^desc.Dirs() != 0 {
			return nil, inst, spec, fmt.Errorf("filter %s: %w: it handles %s only", desc.Name, sdk.ErrInvalidParam, desc.Dirs())
		}
		inst.Directions = ds
	}
	norm := api.FilterSpec{Name: desc.Name, Params: spec.Params, FailMode: inst.FailMode.String(), Directions: inst.Directions.String()}
	return desc, inst, norm, nil
}

// newInstance loads the filter in spec into slot of v. With adopt, the
// instance's pinned maps are reused and the slot's program is left as it
// is; otherwise the program is placed in the slot.
func (d *Daemon) newInstance(ctx context.Context, v *datapath.VNIC, slot int, spec api.FilterSpec, adopt bool, owner string) (_ *instance, err error) {
	desc, inst, norm, err := resolve(spec)
	if err != nil {
		return nil, err
	}
	inst.VNIC = sdk.VNIC{Name: v.Name, Ifindex: v.Ifindex}
	inst.Owner = owner
	inst.Slot = slot
	in := &instance{desc: desc, spec: norm, inst: inst}
	defer func() {
		if err != nil {
			in.close()
		}
	}()
	log := d.log.With("vnic", v.Name, "slot", slot, "filter", desc.Name)
	fctx := sdk.NewFastPathContext(inst, adopt, log, v.Maps(), v.SlotDir(slot))
	fctx.Groups = d.groups
	fctx.StateDir = d.cfg.StateDir
	if desc.FastPath != nil {
		in.fast, err = desc.FastPath(fctx)
	} else {
		in.fast, err = datapath.LoadPuntAll(fctx)
	}
	if err != nil {
		return nil, fmt.Errorf("load %s into %s slot %d: %w", desc.Name, v.Name, slot, err)
	}
	var punts [sdk.NumDirections]int
	if ef := d.external[desc.Name]; ef != nil && ef.sup != nil {
		in.punt, err = slowpath.StartExternal(d.ctx, inst.VNIC, slot, inst.Directions, ef.sup, inst.Params.Map(), v, slowpath.Options{Logger: log, FailMode: inst.FailMode, Generation: v.Generation})
		if err != nil {
			return nil, fmt.Errorf("start punt path of %s on %s slot %d: %w", desc.Name, v.Name, slot, err)
		}
		for _, dir := range inst.Directions.List() {
			punts[dir] = in.punt.Ifindex(dir)
		}
	} else if desc.SlowPath != nil {
		in.slow, err = desc.SlowPath(&sdk.SlowPathContext{Instance: inst, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("start slow path of %s on %s slot %d: %w", desc.Name, v.Name, slot, err)
		}
		in.punt, err = slowpath.Start(d.ctx, inst.VNIC, slot, inst.Directions, in.slow, v, slowpath.Options{Logger: log, FailMode: inst.FailMode, Generation: v.Generation})
		if err != nil {
			return nil, fmt.Errorf("start punt path of %s on %s slot %d: %w", desc.Name, v.Name, slot, err)
		}
		for _, dir := range inst.Directions.List() {
			punts[dir] = in.punt.Ifindex(dir)
		}
	}
	if !adopt {
		s := datapath.Slot{FailOpen: inst.FailMode == sdk.FailOpen, Dirs: inst.Directions, Punt: punts}
		if err := v.SetSlot(slot, in.fast.Program(), s); err != nil {
			return nil, err
		}
	}
	return in, nil
}

// SetChain creates the chain of device name with all its filters. The
// dispatchers are attached only once every filter is in place.
func (d *Daemon) SetChain(ctx context.Context, name string, req api.ChainRequest) (_ *api.VNIC, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cfg.Record {
		return d.recordChainLocked(name, req)
	}
	old, exists := d.vnics[name]
	if exists && !req.Replace {
		return nil, fmt.Errorf("%s: %w (ask for replace to swap it)", name, datapath.ErrAlreadyAttached)
	}
	if len(req.Filters) > sdk.MaxSlots {
		return nil, fmt.Errorf("%w: %d filters, a chain holds at most %d", ErrBadRequest, len(req.Filters), sdk.MaxSlots)
	}
	for i, f := range req.Filters {
		if _, _, _, err := resolve(f); err != nil {
			return nil, fmt.Errorf("slot %d: %w", i, err)
		}
	}
	// The VM's labels first, so a policy naming its own tag group sees
	// it; put back if the chain fails. Once it is in place, the filters
	// of other vNICs using the tag groups it joined or left reload.
	var changed []string
	if setTA := req.Tags != nil || req.Addresses != nil; setTA || req.MAC != "" {
		l, err := d.requestedLabelsLocked(name, req.Tags, req.Addresses, setTA, req.MAC)
		if err != nil {
			return nil, err
		}
		d.groups.mu.RLock()
		prev := d.groups.vnics[name]
		d.groups.mu.RUnlock()
		changed = d.setLabelsLocked(name, l)
		defer func() {
			if err != nil {
				d.setLabelsLocked(name, prev)
			} else if len(changed) > 0 {
				d.propagateLocked(changed)
			}
		}()
	}
	start := time.Now()
	if exists {
		if err := d.replaceChainLocked(ctx, old, req); err != nil {
			return nil, err
		}
		if err := d.saveLocked(); err != nil {
			return nil, err
		}
		d.log.Info("chain replaced", "vnic", name, "filters", len(req.Filters), "generation", old.dp.Generation, "took", time.Since(start))
		return d.describe(name, old, false), nil
	}
	n, err := d.setChainLocked(ctx, name, req)
	if err != nil {
		return nil, err
	}
	attached := time.Now()
	if err := d.saveLocked(); err != nil {
		return nil, err
	}
	d.log.Debug("chain set", "vnic", name, "filters", len(req.Filters), "attach", attached.Sub(start), "save", time.Since(attached))
	return d.describe(name, n, false), nil
}

func (d *Daemon) setChainLocked(ctx context.Context, name string, req api.ChainRequest) (*vnic, error) {
	n := &vnic{owner: req.Owner}
	v, err := d.dp.Create(name, func(v *datapath.VNIC) error {
		for i, f := range req.Filters {
			in, err := d.newInstance(ctx, v, i, f, false, req.Owner)
			if err != nil {
				for _, in := range n.slots {
					if in != nil {
						in.close()
					}
				}
				return fmt.Errorf("slot %d: %w", i, err)
			}
			n.slots[i] = in
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	n.dp = v
	d.vnics[name] = n
	return n, nil
}

// replaceChainLocked swaps n's chain for req's (see datapath.VNIC.Replace).
// A slot keeping its filter and parameters keeps its pinned maps (state);
// any other slot starts fresh. Nothing changes if it fails.
func (d *Daemon) replaceChainLocked(ctx context.Context, n *vnic, req api.ChainRequest) error {
	var next [sdk.MaxSlots]*instance
	closeNext := func() {
		for _, in := range next {
			if in != nil {
				in.close()
			}
		}
	}
	nv, err := n.dp.Replace(func(v *datapath.VNIC) error {
		for i, f := range req.Filters {
			_, _, norm, err := resolve(f)
			if err != nil {
				return fmt.Errorf("slot %d: %w", i, err)
			}
			if o := n.slots[i]; o == nil || !sameInstance(o.spec, norm) {
				// New state for a new filter: the old instance's maps
				// stay alive through its program until the swap.
				if err := os.RemoveAll(v.SlotDir(i)); err != nil {
					return err
				}
			}
			in, err := d.newInstance(ctx, v, i, f, false, req.Owner)
			if err != nil {
				return fmt.Errorf("slot %d: %w", i, err)
			}
			next[i] = in
		}
		return nil
	})
	if err != nil {
		closeNext()
		return err
	}
	for i, in := range n.slots {
		if in != nil {
			in.close()
			if i >= len(req.Filters) {
				_ = os.RemoveAll(nv.SlotDir(i))
			}
		}
	}
	n.dp.Close()
	n.dp, n.slots, n.owner = nv, next, req.Owner
	return nil
}

func sameInstance(a, b api.FilterSpec) bool {
	return a.Name == b.Name && a.FailMode == b.FailMode && a.Directions == b.Directions && maps.Equal(a.Params, b.Params)
}

// Attach adds one filter to the chain of device name, creating the chain
// if there is none. Nothing changes if it fails.
func (d *Daemon) Attach(ctx context.Context, name string, req api.AttachRequest) (*api.VNIC, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cfg.Record {
		return nil, errRecordOnly("attach one filter")
	}
	if _, _, _, err := resolve(req.Filter); err != nil {
		return nil, err
	}
	n, ok := d.vnics[name]
	if !ok {
		if req.Slot != nil && *req.Slot != 0 {
			return nil, fmt.Errorf("%w: %s has no chain yet, so the first filter goes in slot 0, not %d", ErrBadRequest, name, *req.Slot)
		}
		n, err := d.setChainLocked(ctx, name, api.ChainRequest{Filters: []api.FilterSpec{req.Filter}})
		if err != nil {
			return nil, err
		}
		if err := d.saveLocked(); err != nil {
			return nil, err
		}
		return d.describe(name, n, false), nil
	}
	last := -1
	for i, in := range n.slots {
		if in != nil {
			last = i
		}
	}
	slot := last + 1
	if req.Slot != nil {
		slot = *req.Slot
		switch {
		case slot < 0 || slot >= sdk.MaxSlots:
			return nil, fmt.Errorf("%w: slot %d out of range 0..%d", ErrBadRequest, slot, sdk.MaxSlots-1)
		case n.slots[slot] != nil:
			return nil, fmt.Errorf("%w: slot %d of %s holds %s (detach it first)", ErrSlotTaken, slot, name, n.slots[slot].desc.Name)
		case slot > last+1:
			return nil, fmt.Errorf("%w: slot %d would leave a gap; the next free slot of %s is %d", ErrBadRequest, slot, name, last+1)
		}
	}
	if slot >= sdk.MaxSlots {
		return nil, fmt.Errorf("%w: the chain of %s is full (%d slots)", ErrSlotTaken, name, sdk.MaxSlots)
	}
	in, err := d.newInstance(ctx, n.dp, slot, req.Filter, false, n.owner)
	if err != nil {
		return nil, err
	}
	n.slots[slot] = in
	if err := d.saveLocked(); err != nil {
		return nil, err
	}
	return d.describe(name, n, false), nil
}

// DetachSlot removes the filter in slot of name's chain. A slot in the
// middle becomes a pass-through, so the filters after it keep running.
func (d *Daemon) DetachSlot(ctx context.Context, name string, slot int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	in, err := d.slotLocked(name, slot)
	if err != nil {
		return err
	}
	n := d.vnics[name]
	if err := n.dp.ClearSlot(slot); err != nil {
		return err
	}
	in.close()
	n.slots[slot] = nil
	_ = os.RemoveAll(n.dp.SlotDir(slot))
	return d.saveLocked()
}

// Detach removes the whole chain of name; the device is then unprotected.
func (d *Daemon) Detach(ctx context.Context, name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cfg.Record {
		return d.detachRecordedLocked(name)
	}
	n, ok := d.vnics[name]
	if !ok {
		// Not managed, but pins may be there (state file lost).
		if _, err := os.Stat(filepath.Join(d.dp.Root(), name)); err == nil {
			return d.dp.Remove(name)
		}
		return fmt.Errorf("%s: %w", name, datapath.ErrNotAttached)
	}
	// Slow paths first, while the maps are open to end their leases, then
	// the hooks and pins; the frames in between meet each slot's failure
	// mode, never a half-removed chain.
	for _, in := range n.slots {
		if in != nil {
			in.close()
		}
	}
	if err := n.dp.Detach(); err != nil {
		return err
	}
	delete(d.vnics, name)
	// The VM is gone from this vNIC: it leaves its tag groups.
	d.propagateLocked(d.setLabelsLocked(name, labels{}))
	return d.saveLocked()
}

// VNICs lists the protected vNICs without counters.
func (d *Daemon) VNICs() []api.VNIC {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]api.VNIC, 0, len(d.vnics)+len(d.recorded))
	for _, name := range sortedKeys(d.vnics) {
		out = append(out, *d.describe(name, d.vnics[name], false))
	}
	for _, name := range sortedKeys(d.recorded) {
		out = append(out, *describeRecorded(name, d.recorded[name]))
	}
	return out
}

// VNIC describes one vNIC with its counters.
func (d *Daemon) VNIC(name string) (*api.VNIC, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok := d.vnics[name]
	if !ok {
		if r, ok := d.recorded[name]; ok {
			return describeRecorded(name, r), nil
		}
		return nil, fmt.Errorf("%s: %w", name, datapath.ErrNotAttached)
	}
	return d.describe(name, n, true), nil
}

func (d *Daemon) describe(name string, n *vnic, counters bool) *api.VNIC {
	out := &api.VNIC{Name: name, Ifindex: n.dp.Ifindex, Mode: n.dp.Mode.String(), Owner: n.owner, Slots: []api.Slot{}}
	var st *datapath.Stats
	if counters {
		var err error
		if st, err = n.dp.Stats(); err != nil {
			d.log.Warn("read counters", "vnic", name, "err", err)
		}
	}
	for i, in := range n.slots {
		if in == nil {
			continue
		}
		s := api.Slot{
			Slot: i, Filter: in.desc.Name, Version: in.desc.Version,
			FailMode: in.spec.FailMode, Directions: in.spec.Directions, Params: in.inst.Params.Map(),
			FastPath: in.desc.FastPath != nil, SlowPath: in.desc.SlowPath != nil,
		}
		if in.punt != nil {
			s.SlowPathState = in.punt.State().String()
		}
		if st != nil {
			s.Verdicts = map[string]api.Verdicts{}
			for _, dir := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
				c := st[dir][i]
				s.Verdicts[dir.String()] = api.Verdicts{
					Continue: ac(c[sdk.StatContinue]), Drop: ac(c[sdk.StatDrop]), Punt: ac(c[sdk.StatPunt]),
					Redirect: ac(c[sdk.StatRedirect]), Consumed: ac(c[sdk.StatConsumed]),
					FailClosed: ac(c[sdk.StatFailClosed]), FailOpen: ac(c[sdk.StatFailOpen]),
				}
			}
			if in.fast != nil {
				if cs, err := in.fast.Counters(); err == nil {
					s.Counters = append(s.Counters, cs...)
				}
			}
			if in.punt != nil && in.slow == nil {
				s.Counters = append(s.Counters, in.punt.ExternalCounters()...)
			} else if sc, ok := in.slow.(sdk.SlowCounters); ok {
				s.Counters = append(s.Counters, sc.Counters()...)
			}
		}
		out.Slots = append(out.Slots, s)
	}
	if st != nil {
		out.Chain = map[string]api.ChainCounters{}
		for _, dir := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
			c := st[dir][sdk.ChainSlot]
			out.Chain[dir.String()] = api.ChainCounters{Entered: ac(c[sdk.StatEnter]), Passed: ac(c[sdk.StatContinue]), Dropped: ac(c[sdk.StatDrop])}
		}
	}
	return out
}

func ac(c datapath.Counter) api.Counter { return api.Counter{Packets: c.Packets, Bytes: c.Bytes} }

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
