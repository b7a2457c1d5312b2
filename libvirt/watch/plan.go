package watch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/libvirt/domainxml"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// OwnerPrefix starts the owner of every chain the hook and the watcher
// attach: "libvirt:<domain>". Chains of other owners (vfctl, tests) are
// never touched.
const OwnerPrefix = "libvirt:"

// maxSlots is the number of slots of a chain (sdk.MaxSlots).
const maxSlots = sdk.MaxSlots

// Chains is the part of filterd the watcher drives. Errors carrying an
// API code are *api.Error (as *api.Client returns them, and filterd's
// in-process adapter too), so the watcher tells "not attached" apart with
// api.IsCode.
type Chains interface {
	Filters(ctx context.Context) ([]api.FilterInfo, error)
	VNICs(ctx context.Context) ([]api.VNIC, error)
	SetChain(ctx context.Context, vnic string, req api.ChainRequest) (*api.VNIC, error)
	Attach(ctx context.Context, vnic string, req api.AttachRequest) (*api.VNIC, error)
	Detach(ctx context.Context, vnic string) error
	DetachSlot(ctx context.Context, vnic string, slot int) error
}

var _ Chains = (*api.Client)(nil)

// Desired is the chain one tap of a running domain should carry.
type Desired struct {
	Tap     string
	Owner   string // OwnerPrefix + domain name
	Filters []api.FilterSpec
	// MAC is the guest MAC of the tap's interface (lower case; empty when
	// unknown), recorded by filterd as the vNIC's label with the chain.
	MAC string
}

// Running is what the watcher read from libvirt about one running domain.
type Running struct {
	// Name of the domain.
	Name string
	// Chains it asks for; meaningful only when Err is nil.
	Chains []Desired
	// Err: the domain's configuration could not be read or is invalid.
	// Its chains are then left exactly as they are (neither attached nor
	// detached): fail-safe until the operator fixes the XML.
	Err error
}

// DesiredChains returns the chains a running domain's live XML asks for.
// Unlike the hook, it skips entries that match no interface of the domain
// (yet): an operator adds the entry before `virsh attach-device`, so the
// hot-plugged NIC is filtered as soon as libvirt reports it. Interfaces
// without a tap yet (the domain is still being prepared) are skipped too:
// the hook attaches those at start.
func DesiredChains(d *domainxml.Domain, defaults domainxml.PortgroupDefaults) ([]Desired, error) {
	if d.Config != nil {
		cfg := *d.Config
		cfg.Interfaces = slices.DeleteFunc(slices.Clone(cfg.Interfaces), func(ic domainxml.InterfaceConfig) bool {
			return !slices.ContainsFunc(d.Interfaces, func(in domainxml.Interface) bool {
				return (ic.MAC != nil && bytes.Equal(ic.MAC, in.MAC)) || (ic.Alias != "" && ic.Alias == in.Alias)
			})
		})
		dd := *d
		dd.Config = &cfg
		d = &dd
	}
	chains, err := d.Chains(defaults)
	if err != nil {
		return nil, err
	}
	var out []Desired
	for _, c := range chains {
		if c.Tap == "" {
			continue
		}
		w := Desired{Tap: c.Tap, Owner: OwnerPrefix + d.Name, Filters: c.Filters}
		if len(c.MAC) > 0 {
			w.MAC = c.MAC.String()
		}
		out = append(out, w)
	}
	return out, nil
}

// Result counts what one reconcile did.
type Result struct {
	Attached, Replaced, Detached, Kept int
	// Errors of individual chains; the others were still reconciled.
	Errors []error
}

func (r Result) String() string {
	return fmt.Sprintf("attached %d, replaced %d, detached %d, kept %d, errors %d",
		r.Attached, r.Replaced, r.Detached, r.Kept, len(r.Errors))
}

// Apply makes filterd's libvirt-owned chains match running: it attaches
// missing chains, replaces changed ones and detaches those of domains that
// no longer run or no longer ask for them. actual must have been listed
// before running was read from libvirt: a chain the hook attaches in
// between is then absent from actual and cannot be mistaken for a stale
// one.
func Apply(ctx context.Context, c Chains, log *slog.Logger, actual []api.VNIC, running []Running) Result {
	var res Result
	infos, err := c.Filters(ctx)
	if err != nil {
		res.Errors = append(res.Errors, fmt.Errorf("list filters: %w", err))
		return res
	}
	byName := map[string]api.FilterInfo{}
	for _, fi := range infos {
		byName[fi.Name] = fi
	}
	have := map[string]api.VNIC{}
	for _, v := range actual {
		have[v.Name] = v
	}
	want := map[string]Desired{}
	frozen := map[string]bool{} // owners whose config is broken: hands off
	for _, r := range running {
		if r.Err != nil {
			frozen[OwnerPrefix+r.Name] = true
			res.Errors = append(res.Errors, fmt.Errorf("domain %s: %w (its chains are left as they are)", r.Name, r.Err))
			continue
		}
		for _, d := range r.Chains {
			if err := validate(d.Filters, byName); err != nil {
				frozen[d.Owner] = true
				res.Errors = append(res.Errors, fmt.Errorf("domain %s: %s: %w (its chains are left as they are)", r.Name, d.Tap, err))
				continue
			}
			want[d.Tap] = d
		}
	}
	for _, tap := range slices.Sorted(maps.Keys(want)) {
		d := want[tap]
		if frozen[d.Owner] {
			continue
		}
		v, ok := have[tap]
		switch {
		case !ok:
			_, err := c.SetChain(ctx, tap, api.ChainRequest{Filters: d.Filters, Owner: d.Owner, MAC: d.MAC})
			if err != nil {
				res.Errors = append(res.Errors, fmt.Errorf("attach %s for %s: %w", tap, d.Owner, err))
				continue
			}
			log.Info("attached chain", "vnic", tap, "owner", d.Owner, "filters", names(d.Filters))
			res.Attached++
		case !strings.HasPrefix(v.Owner, OwnerPrefix):
			log.Warn("tap carries a chain not owned by libvirt; left alone", "vnic", tap, "owner", v.Owner, "want", d.Owner)
			res.Kept++
		case v.Owner == d.Owner && sameChain(v.Slots, d.Filters, byName):
			res.Kept++
		default:
			_, err := c.SetChain(ctx, tap, api.ChainRequest{Filters: d.Filters, Owner: d.Owner, MAC: d.MAC, Replace: true})
			if err != nil {
				res.Errors = append(res.Errors, fmt.Errorf("replace chain of %s for %s: %w", tap, d.Owner, err))
				continue
			}
			log.Info("replaced chain", "vnic", tap, "owner", d.Owner, "filters", names(d.Filters))
			res.Replaced++
		}
	}
	for _, v := range actual {
		if !strings.HasPrefix(v.Owner, OwnerPrefix) || frozen[v.Owner] {
			continue
		}
		if _, ok := want[v.Name]; ok {
			continue
		}
		err := c.Detach(ctx, v.Name)
		if err != nil && !api.IsCode(err, api.CodeNotAttached) {
			res.Errors = append(res.Errors, fmt.Errorf("detach stale chain of %s (%s): %w", v.Name, v.Owner, err))
			continue
		}
		log.Info("detached stale chain", "vnic", v.Name, "owner", v.Owner)
		res.Detached++
	}
	return res
}

// validate checks filters against filterd's registered filters, as the
// hook does at prepare.
func validate(filters []api.FilterSpec, byName map[string]api.FilterInfo) error {
	return domainxml.ValidateFilters(filters, func(name string) (*sdk.Descriptor, error) {
		fi, ok := byName[name]
		if !ok {
			return nil, fmt.Errorf("%w %q", sdk.ErrUnknownFilter, name)
		}
		dirs, err := sdk.ParseDirections(fi.Directions)
		if err != nil {
			dirs = sdk.DirBoth
		}
		return &sdk.Descriptor{Name: fi.Name, Version: fi.Version, Directions: dirs, Params: fi.Params}, nil
	})
}

// sameChain reports whether the chain's slots, in order, are exactly the
// filters asked for, once defaults are filled in as filterd fills them.
func sameChain(slots []api.Slot, filters []api.FilterSpec, byName map[string]api.FilterInfo) bool {
	slots = slices.Clone(slots)
	slices.SortFunc(slots, func(a, b api.Slot) int { return a.Slot - b.Slot })
	if len(slots) != len(filters) {
		return false
	}
	for i, f := range filters {
		n, err := normalize(f, byName)
		if err != nil {
			return false
		}
		s := slots[i]
		if s.Filter != n.Name || s.FailMode != n.FailMode || s.Directions != n.Directions || !maps.Equal(nonNil(s.Params), nonNil(n.Params)) {
			return false
		}
	}
	return true
}

// normalize fills a spec's defaults from the filter's schema.
func normalize(f api.FilterSpec, byName map[string]api.FilterInfo) (api.FilterSpec, error) {
	fi, ok := byName[f.Name]
	if !ok {
		return f, errors.New("unknown filter " + f.Name)
	}
	p, err := sdk.ValidateParams(fi.Params, f.Params)
	if err != nil {
		return f, err
	}
	n := api.FilterSpec{Name: f.Name, Params: p.Map(), FailMode: f.FailMode, Directions: f.Directions}
	if n.FailMode == "" {
		n.FailMode = fi.FailMode
	}
	if n.Directions == "" {
		n.Directions = fi.Directions
	}
	return n, nil
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func names(fs []api.FilterSpec) string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.Name
	}
	return strings.Join(out, ",")
}
