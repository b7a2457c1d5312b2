package filterd

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// groupUsersLocked lists "vnic slot N" for every instance using group.
func (d *Daemon) groupUsersLocked(group string) []string {
	var out []string
	for _, name := range sortedKeys(d.vnics) {
		for i, in := range d.vnics[name].slots {
			if in == nil {
				continue
			}
			if gu, ok := in.fast.(sdk.GroupUser); ok && slices.Contains(gu.GroupsUsed(), group) {
				out = append(out, fmt.Sprintf("%s slot %d", name, i))
			}
		}
	}
	return out
}

// propagateLocked reloads every instance whose configuration uses one of
// the changed groups, so new membership is swapped in atomically, as a
// policy update. An instance that cannot take it keeps its live policy;
// the failure is reported.
func (d *Daemon) propagateLocked(changed []string) api.GroupChange {
	out := api.GroupChange{Groups: changed, Reloaded: []api.Reloaded{}}
	if len(changed) == 0 {
		return out
	}
	for _, name := range sortedKeys(d.vnics) {
		for i, in := range d.vnics[name].slots {
			if in == nil {
				continue
			}
			gu, ok := in.fast.(sdk.GroupUser)
			rl, ok2 := in.fast.(sdk.Reloader)
			if !ok || !ok2 || !slices.ContainsFunc(gu.GroupsUsed(), func(g string) bool { return slices.Contains(changed, g) }) {
				continue
			}
			start := time.Now()
			r := api.Reloaded{VNIC: name, Slot: i, Filter: in.desc.Name}
			if err := rl.Reload(in.inst.Params); err != nil {
				r.Error = err.Error()
				d.log.Error("group change: reload failed; the live configuration stays", "vnic", name, "slot", i, "groups", changed, "err", err)
			}
			r.Seconds = time.Since(start).Seconds()
			out.Reloaded = append(out.Reloaded, r)
		}
	}
	d.log.Info("groups changed", "groups", changed, "reloaded", len(out.Reloaded))
	return out
}

// setLabelsLocked replaces name's labels and returns the groups whose
// membership changed.
func (d *Daemon) setLabelsLocked(name string, l labels) []string {
	g := d.groups
	g.mu.Lock()
	old, had := g.vnics[name]
	if l.empty() {
		delete(g.vnics, name)
	} else {
		g.vnics[name] = l
	}
	g.mu.Unlock()
	if !had && len(l.Tags) == 0 {
		return nil
	}
	sameAddrs := slices.Equal(old.Addresses, l.Addresses)
	set := map[string]bool{}
	for _, t := range old.Tags {
		if !sameAddrs || !slices.Contains(l.Tags, t) {
			set[TagPrefix+t] = true
		}
	}
	for _, t := range l.Tags {
		if !sameAddrs || !slices.Contains(old.Tags, t) {
			set[TagPrefix+t] = true
		}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func toLabels(tags, addrs []string) (labels, error) {
	if err := checkTags(tags); err != nil {
		return labels{}, err
	}
	ps, err := parseMembers(addrs)
	if err != nil {
		return labels{}, fmt.Errorf("addresses: %w", err)
	}
	t := slices.Clone(tags)
	slices.Sort(t)
	slices.SortFunc(ps, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return labels{Tags: slices.Compact(t), Addresses: slices.Compact(ps)}, nil
}

// requestedLabelsLocked is what a request leaves name's labels as: with
// setTA, tags and addresses replace the old ones (else they stay); a MAC
// replaces the old one, an empty mac leaves it. Nothing is changed yet.
func (d *Daemon) requestedLabelsLocked(name string, tags, addrs []string, setTA bool, mac string) (labels, error) {
	d.groups.mu.RLock()
	l := d.groups.vnics[name]
	d.groups.mu.RUnlock()
	if setTA {
		n, err := toLabels(tags, addrs)
		if err != nil {
			return labels{}, err
		}
		l.Tags, l.Addresses = n.Tags, n.Addresses
	}
	if mac != "" {
		m, err := parseMAC(mac)
		if err != nil {
			return labels{}, err
		}
		l.MAC = m
	}
	return l, nil
}

// SetLabels sets the tags and addresses of vNIC name (attached or not),
// and its guest MAC when req has one, and reloads the filters using the
// tag groups it joins or leaves.
func (d *Daemon) SetLabels(name string, req api.Labels) (*api.GroupChange, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	l, err := d.requestedLabelsLocked(name, req.Tags, req.Addresses, true, req.MAC)
	if err != nil {
		return nil, err
	}
	ch := d.propagateLocked(d.setLabelsLocked(name, l))
	if err := d.saveLocked(); err != nil {
		return nil, err
	}
	return &ch, nil
}

// SetGroup replaces the pushed members of group and reloads its users.
func (d *Daemon) SetGroup(name string, req api.GroupRequest) (*api.GroupChange, error) {
	if err := checkGroupName(name); err != nil {
		return nil, err
	}
	ms, err := parseMembers(req.Members)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.groups.mu.Lock()
	d.groups.pushed[name] = ms
	d.groups.mu.Unlock()
	ch := d.propagateLocked([]string{name})
	if err := d.saveLocked(); err != nil {
		return nil, err
	}
	return &ch, nil
}

// DeleteGroup forgets a pushed group; refused while a filter uses it
// (unless it is a tag group, which stays defined by its tag).
func (d *Daemon) DeleteGroup(name string) (*api.GroupChange, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.groups.mu.RLock()
	_, ok := d.groups.pushed[name]
	d.groups.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: group %q", ErrNoSuchGroup, name)
	}
	if users := d.groupUsersLocked(name); len(users) > 0 && !strings.HasPrefix(name, TagPrefix) {
		return nil, fmt.Errorf("%w: group %s is used by %s (change their policies first)", sdk.ErrFilterInUse, name, strings.Join(users, ", "))
	}
	d.groups.mu.Lock()
	delete(d.groups.pushed, name)
	d.groups.mu.Unlock()
	ch := d.propagateLocked([]string{name})
	if err := d.saveLocked(); err != nil {
		return nil, err
	}
	return &ch, nil
}

// Groups describes every group with its members and users.
func (d *Daemon) Groups() []api.Group {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := []api.Group{}
	for _, n := range d.groups.names() {
		out = append(out, d.describeGroupLocked(n))
	}
	return out
}

// Group describes one group.
func (d *Daemon) Group(name string) (*api.Group, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := d.groups.Members(name); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoSuchGroup, err)
	}
	g := d.describeGroupLocked(name)
	return &g, nil
}

func (d *Daemon) describeGroupLocked(name string) api.Group {
	g := api.Group{Name: name, Members: []string{}, Pushed: []string{}, VNICs: []string{}, UsedBy: d.groupUsersLocked(name)}
	ms, _ := d.groups.Members(name)
	for _, m := range ms {
		g.Members = append(g.Members, m.String())
	}
	d.groups.mu.RLock()
	for _, m := range d.groups.pushed[name] {
		g.Pushed = append(g.Pushed, m.String())
	}
	if tag, ok := strings.CutPrefix(name, TagPrefix); ok {
		for _, v := range sortedKeys(d.groups.vnics) {
			if slices.Contains(d.groups.vnics[v].Tags, tag) {
				g.VNICs = append(g.VNICs, v)
			}
		}
	}
	d.groups.mu.RUnlock()
	if g.UsedBy == nil {
		g.UsedBy = []string{}
	}
	return g
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 16<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: request body: %v", ErrBadRequest, err)
	}
	return nil
}

func (d *Daemon) handleSetGroup(w http.ResponseWriter, r *http.Request) {
	var req api.GroupRequest
	if err := decodeBody(r, &req); err != nil {
		replyErr(w, err)
		return
	}
	out, err := d.SetGroup(r.PathValue("name"), req)
	respond(w, out, err)
}

func (d *Daemon) handleDeleteGroup(w http.ResponseWriter, r *http.Request) {
	out, err := d.DeleteGroup(r.PathValue("name"))
	respond(w, out, err)
}

func (d *Daemon) handleGroup(w http.ResponseWriter, r *http.Request) {
	out, err := d.Group(r.PathValue("name"))
	respond(w, out, err)
}

func (d *Daemon) handleSetLabels(w http.ResponseWriter, r *http.Request) {
	var req api.Labels
	if err := decodeBody(r, &req); err != nil {
		replyErr(w, err)
		return
	}
	out, err := d.SetLabels(r.PathValue("vnic"), req)
	respond(w, out, err)
}
