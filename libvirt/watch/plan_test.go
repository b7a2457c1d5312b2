package watch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/libvirt/domainxml"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// fakeChains models filterd's slots closely enough for the planner; the
// libvirt/e2e tests drive the real filterd.
type fakeChains struct {
	vnics map[string]*api.VNIC
	calls []string
}

func (f *fakeChains) Filters(context.Context) ([]api.FilterInfo, error) {
	return []api.FilterInfo{
		{Name: "count", Directions: "both", FailMode: "open"},
		{Name: "punt", Directions: "both", FailMode: "closed", Params: []sdk.ParamSpec{{Name: "verdict", Type: sdk.String, Enum: []string{"pass", "drop"}, Default: "pass"}}},
	}, nil
}

func (f *fakeChains) VNICs(context.Context) ([]api.VNIC, error) {
	var out []api.VNIC
	for _, v := range f.vnics {
		out = append(out, *v)
	}
	slices.SortFunc(out, func(a, b api.VNIC) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func slot(i int, spec api.FilterSpec) api.Slot {
	fi, _ := (&fakeChains{}).Filters(context.Background())
	byName := map[string]api.FilterInfo{}
	for _, f := range fi {
		byName[f.Name] = f
	}
	n, err := normalize(spec, byName)
	if err != nil {
		panic(err)
	}
	return api.Slot{Slot: i, Filter: n.Name, FailMode: n.FailMode, Directions: n.Directions, Params: n.Params}
}

func (f *fakeChains) SetChain(_ context.Context, vnic string, req api.ChainRequest) (*api.VNIC, error) {
	verb := "SetChain"
	if req.Replace {
		verb = "ReplaceChain"
	}
	call := fmt.Sprintf("%s %s %s %s", verb, vnic, names(req.Filters), req.Owner)
	if req.MAC != "" {
		call += " mac " + req.MAC
	}
	f.calls = append(f.calls, call)
	if _, ok := f.vnics[vnic]; ok && !req.Replace {
		return nil, &api.Error{Code: api.CodeAlreadyExists, Message: "exists"}
	}
	v := &api.VNIC{Name: vnic, Owner: req.Owner}
	for i, s := range req.Filters {
		v.Slots = append(v.Slots, slot(i, s))
	}
	f.vnics[vnic] = v
	return v, nil
}

func (f *fakeChains) Attach(_ context.Context, vnic string, req api.AttachRequest) (*api.VNIC, error) {
	f.calls = append(f.calls, fmt.Sprintf("Attach %s %d %s", vnic, *req.Slot, req.Filter.Name))
	v := f.vnics[vnic]
	v.Slots = append(v.Slots, slot(*req.Slot, req.Filter))
	return v, nil
}

func (f *fakeChains) Detach(_ context.Context, vnic string) error {
	f.calls = append(f.calls, "Detach "+vnic)
	if _, ok := f.vnics[vnic]; !ok {
		return &api.Error{Code: api.CodeNotAttached, Message: "no chain"}
	}
	delete(f.vnics, vnic)
	return nil
}

func (f *fakeChains) DetachSlot(_ context.Context, vnic string, s int) error {
	f.calls = append(f.calls, fmt.Sprintf("DetachSlot %s %d", vnic, s))
	v := f.vnics[vnic]
	v.Slots = slices.DeleteFunc(v.Slots, func(x api.Slot) bool { return x.Slot == s })
	return nil
}

var (
	count = api.FilterSpec{Name: "count"}
	drop  = api.FilterSpec{Name: "punt", Params: map[string]string{"verdict": "drop"}}
	pass  = api.FilterSpec{Name: "punt"}
)

func chain(name, owner string, first int, specs ...api.FilterSpec) *api.VNIC {
	v := &api.VNIC{Name: name, Owner: owner}
	for i, s := range specs {
		v.Slots = append(v.Slots, slot(first+i, s))
	}
	return v
}

func TestApply(t *testing.T) {
	sixteen := make([]api.FilterSpec, 15)
	for i := range sixteen {
		sixteen[i] = count
	}
	for _, tc := range []struct {
		name    string
		have    []*api.VNIC
		running []Running
		calls   []string
		errs    int
	}{
		{name: "attach missing",
			running: []Running{{Name: "a", Chains: []Desired{{Tap: "vnet1", Owner: "libvirt:a", Filters: []api.FilterSpec{count, drop}, MAC: "52:54:00:aa:00:01"}}}},
			calls:   []string{"SetChain vnet1 count,punt libvirt:a mac 52:54:00:aa:00:01"}},
		{name: "attach missing, MAC unknown",
			running: []Running{{Name: "a", Chains: []Desired{{Tap: "vnet1", Owner: "libvirt:a", Filters: []api.FilterSpec{count, drop}}}}},
			calls:   []string{"SetChain vnet1 count,punt libvirt:a"}},
		{name: "keep equal, defaults filled",
			have:    []*api.VNIC{chain("vnet1", "libvirt:a", 0, count, api.FilterSpec{Name: "punt", FailMode: "closed", Params: map[string]string{"verdict": "pass"}})},
			running: []Running{{Name: "a", Chains: []Desired{{Tap: "vnet1", Owner: "libvirt:a", Filters: []api.FilterSpec{count, pass}}}}}},
		{name: "replace: changed chain swapped atomically",
			have:    []*api.VNIC{chain("vnet1", "libvirt:a", 0, count)},
			running: []Running{{Name: "a", Chains: []Desired{{Tap: "vnet1", Owner: "libvirt:a", Filters: []api.FilterSpec{count, drop}, MAC: "52:54:00:aa:00:01"}}}},
			calls:   []string{"ReplaceChain vnet1 count,punt libvirt:a mac 52:54:00:aa:00:01"}},
		{name: "replace: chain left at high slots by an older filterd",
			have:    []*api.VNIC{chain("vnet1", "libvirt:a", 14, count, count)},
			running: []Running{{Name: "a", Chains: []Desired{{Tap: "vnet1", Owner: "libvirt:a", Filters: []api.FilterSpec{drop}}}}},
			calls:   []string{"ReplaceChain vnet1 punt libvirt:a"}},
		{name: "replace: full chain",
			have:    []*api.VNIC{chain("vnet1", "libvirt:a", 0, sixteen...)},
			running: []Running{{Name: "a", Chains: []Desired{{Tap: "vnet1", Owner: "libvirt:a", Filters: []api.FilterSpec{drop, drop}}}}},
			calls:   []string{"ReplaceChain vnet1 punt,punt libvirt:a"}},
		{name: "replace: other domain's stale chain on a reused tap",
			have:    []*api.VNIC{chain("vnet1", "libvirt:old", 0, count)},
			running: []Running{{Name: "a", Chains: []Desired{{Tap: "vnet1", Owner: "libvirt:a", Filters: []api.FilterSpec{count}, MAC: "52:54:00:aa:00:01"}}}},
			calls:   []string{"ReplaceChain vnet1 count libvirt:a mac 52:54:00:aa:00:01"}},
		{name: "detach stale, leave other owners",
			have:    []*api.VNIC{chain("vnet1", "libvirt:gone", 0, count), chain("vnet2", "vfctl", 0, count), chain("vnet3", "", 0, count)},
			running: nil,
			calls:   []string{"Detach vnet1"}},
		{name: "broken config: hands off",
			have:    []*api.VNIC{chain("vnet1", "libvirt:a", 0, count)},
			running: []Running{{Name: "a", Err: errors.New("line 3: bad")}},
			errs:    1},
		{name: "unknown filter: hands off the whole domain",
			have: []*api.VNIC{chain("vnet1", "libvirt:a", 0, count), chain("vnet2", "libvirt:a", 0, count)},
			running: []Running{{Name: "a", Chains: []Desired{
				{Tap: "vnet1", Owner: "libvirt:a", Filters: []api.FilterSpec{{Name: "nosuch"}}},
				{Tap: "vnet2", Owner: "libvirt:a", Filters: []api.FilterSpec{drop}}}}},
			errs: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeChains{vnics: map[string]*api.VNIC{}}
			for _, v := range tc.have {
				f.vnics[v.Name] = v
			}
			actual, _ := f.VNICs(context.Background())
			res := Apply(context.Background(), f, slog.New(slog.DiscardHandler), actual, tc.running)
			if !slices.Equal(f.calls, tc.calls) {
				t.Errorf("calls\n got %q\nwant %q", f.calls, tc.calls)
			}
			if len(res.Errors) != tc.errs {
				t.Errorf("errors %v, want %d", res.Errors, tc.errs)
			}
			// Whatever it did, a second pass changes nothing.
			if tc.errs == 0 {
				f.calls = nil
				actual, _ := f.VNICs(context.Background())
				Apply(context.Background(), f, slog.New(slog.DiscardHandler), actual, tc.running)
				if len(f.calls) != 0 {
					t.Errorf("second pass not idempotent: %q", f.calls)
				}
			}
		})
	}
}

func TestDesiredChains(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "testdata", "domains", "web01-start.xml"))
	if err != nil {
		t.Fatal(err)
	}
	// An entry for a NIC not plugged yet is pending, not an error.
	doc := strings.Replace(string(b), "<vnicfilter:interface ", `<vnicfilter:interface mac="52:54:00:ff:ff:ff"><vnicfilter:filter name="count"/></vnicfilter:interface><vnicfilter:interface `, 1)
	d, err := domainxml.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Chains(nil); err == nil {
		t.Fatal("the hook's strict Chains accepted the pending entry; the test proves nothing")
	}
	got, err := DesiredChains(d, nil)
	if err != nil {
		t.Fatal(err)
	}
	var taps []string
	for _, c := range got {
		taps = append(taps, c.Tap+" "+c.Owner+" "+names(c.Filters)+" "+c.MAC)
	}
	if want := []string{"vnet8 libvirt:web01 count 52:54:00:aa:00:02", "vnet9 libvirt:web01 dnslog,count 52:54:00:aa:00:03"}; !slices.Equal(taps, want) {
		t.Errorf("chains %q, want %q", taps, want)
	}
}
