package manager

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vnicfilter/vnicfilter/manager/api"
	"github.com/vnicfilter/vnicfilter/manager/model"
	"github.com/vnicfilter/vnicfilter/manager/store"
)

// maxBody bounds request bodies (an inventory of a large host fits).
const maxBody = 16 << 20

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// Who may call a route.
type access int

const (
	// accessRead: any valid bearer token.
	accessRead access = iota
	// accessAdmin: an admin bearer token.
	accessAdmin
	// accessAgent: the client certificate of an enrolled host.
	accessAgent
	// accessPublic: no credential (enrollment checks its join token).
	accessPublic
)

// route is one API operation; the table is the API (openapi.yaml
// describes the same set: a test holds them together).
type route struct {
	method, path string
	access       access
	h            handlerFunc
}

func (s *Server) routes() []route {
	return []route{
		{"GET", "/v1/openapi.yaml", accessPublic, func(w http.ResponseWriter, _ *http.Request) error {
			w.Header().Set("Content-Type", "application/yaml")
			_, err := w.Write(OpenAPI)
			return err
		}},
		{"GET", "/v1/revision", accessRead, s.getRevision},
		{"GET", "/metrics", accessRead, s.serveMetrics},
		{"GET", "/v1/hosts", accessRead, s.listHosts},
		{"GET", "/v1/hosts/{host}", accessRead, s.getHost},
		{"DELETE", "/v1/hosts/{host}", accessAdmin, s.deleteHost},
		{"GET", "/v1/hosts/{host}/desired", accessRead, func(w http.ResponseWriter, r *http.Request) error {
			return s.desired(w, r, r.PathValue("host"))
		}},
		{"GET", "/v1/hosts/{host}/status", accessRead, s.hostStatus},
		{"GET", "/v1/hosts/{host}/counters", accessRead, s.hostCounters},
		{"GET", "/v1/vms", accessRead, s.listVMs},
		{"GET", "/v1/vms/{vm}", accessRead, s.getVM},
		{"GET", "/v1/vms/{vm}/tags", accessRead, s.getTags},
		{"PUT", "/v1/vms/{vm}/tags", accessAdmin, s.putTags},
		{"GET", "/v1/groups", accessRead, s.listGroups},
		{"GET", "/v1/groups/{name}", accessRead, s.getGroup},
		{"PUT", "/v1/groups/{name}", accessAdmin, s.putGroup},
		{"DELETE", "/v1/groups/{name}", accessAdmin, s.deleteGroup},
		{"GET", "/v1/groups/{name}/members", accessRead, s.groupMembers},
		{"GET", "/v1/policies", accessRead, s.listPolicies},
		{"GET", "/v1/policies/{name}", accessRead, s.getPolicy},
		{"PUT", "/v1/policies/{name}", accessAdmin, s.putPolicy},
		{"DELETE", "/v1/policies/{name}", accessAdmin, s.deletePolicy},
		{"GET", "/v1/assignments", accessRead, s.listAssignments},
		{"GET", "/v1/assignments/{name}", accessRead, s.getAssignment},
		{"PUT", "/v1/assignments/{name}", accessAdmin, s.putAssignment},
		{"DELETE", "/v1/assignments/{name}", accessAdmin, s.deleteAssignment},
		{"GET", "/v1/segments", accessRead, s.listSegments},
		{"GET", "/v1/segments/{name}", accessRead, s.getSegment},
		{"PUT", "/v1/segments/{name}", accessAdmin, s.putSegment},
		{"DELETE", "/v1/segments/{name}", accessAdmin, s.deleteSegment},
		{"GET", "/v1/encryptions", accessRead, s.listEncryptions},
		{"GET", "/v1/encryptions/{name}", accessRead, s.getEncryption},
		{"PUT", "/v1/encryptions/{name}", accessAdmin, s.putEncryption},
		{"DELETE", "/v1/encryptions/{name}", accessAdmin, s.deleteEncryption},
		// Token administration is for admins only, reads included: token
		// names say who holds access.
		{"GET", "/v1/tokens", accessAdmin, s.listTokens},
		{"POST", "/v1/tokens", accessAdmin, s.createToken},
		{"DELETE", "/v1/tokens/{id}", accessAdmin, s.deleteToken},
		{"POST", "/v1/enroll", accessPublic, s.postEnroll},
		{"PUT", "/v1/agent/inventory", accessAgent, s.putInventory},
		{"GET", "/v1/agent/desired", accessAgent, func(w http.ResponseWriter, r *http.Request) error {
			return s.desired(w, r, agentOf(r))
		}},
		{"PUT", "/v1/agent/realized", accessAgent, s.putRealized},
		{"PUT", "/v1/agent/counters", accessAgent, s.putCounters},
	}
}

// Handler returns the API: user routes need a bearer token (writes an
// admin one), /v1/agent/* the client certificate of an enrolled host,
// /v1/enroll a join token in its body; /v1/openapi.yaml is public.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		var h http.Handler
		switch rt.access {
		case accessRead:
			h = s.user(false, rt.h)
		case accessAdmin:
			h = s.user(true, rt.h)
		case accessAgent:
			h = s.agent(rt.h)
		case accessPublic:
			h = s.public(rt.h)
		}
		mux.Handle(rt.method+" "+rt.path, h)
	}
	mux.Handle("/", s.public(func(w http.ResponseWriter, r *http.Request) error {
		return &api.Error{Status: http.StatusNotFound, Code: api.CodeNotFound, Message: fmt.Sprintf("no route %s %s (see /v1/openapi.yaml)", r.Method, r.URL.Path)}
	}))
	return s.metrics.instrument(mux)
}

func (s *Server) user(write bool, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, aerr := s.authenticate(r)
		if aerr != nil {
			s.writeError(w, r, aerr)
			return
		}
		if write && p.role != api.RoleAdmin {
			s.writeError(w, r, &api.Error{Status: http.StatusForbidden, Code: api.CodeForbidden, Message: fmt.Sprintf("token %q is %s: %s %s needs an admin token", p.name, p.role, r.Method, r.URL.Path)})
			return
		}
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

type agentKey struct{}

func agentOf(r *http.Request) string { return r.Context().Value(agentKey{}).(string) }

func (s *Server) agent(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, aerr := s.agentHost(r)
		if aerr != nil {
			s.writeError(w, r, aerr)
			return
		}
		if err := h(w, r.WithContext(context.WithValue(r.Context(), agentKey{}, host))); err != nil {
			s.writeError(w, r, err)
		}
	})
}

func (s *Server) public(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

func badRequest(format string, args ...any) *api.Error {
	return &api.Error{Status: http.StatusBadRequest, Code: api.CodeBadRequest, Message: fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) *api.Error {
	return &api.Error{Status: http.StatusNotFound, Code: api.CodeNotFound, Message: fmt.Sprintf(format, args...)}
}

// writeError answers err with its status and an api.Error body.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *api.Error
	switch {
	case errors.As(err, &ae):
	case errors.Is(err, model.ErrInvalid):
		ae = &api.Error{Status: http.StatusUnprocessableEntity, Code: api.CodeInvalid, Message: err.Error()}
	case errors.Is(err, model.ErrInUse), errors.Is(err, store.ErrConflict):
		ae = &api.Error{Status: http.StatusConflict, Code: api.CodeConflict, Message: err.Error()}
	case errors.Is(err, model.ErrNotFound):
		ae = &api.Error{Status: http.StatusNotFound, Code: api.CodeNotFound, Message: err.Error()}
	default:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		ae = &api.Error{Status: http.StatusInternalServerError, Code: api.CodeInternal, Message: err.Error()}
	}
	if ae.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="vfmanager"`)
	}
	writeJSON(w, ae.Status, ae)
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, err = w.Write(append(data, '\n'))
	return err
}

// decode reads one JSON value into v, refusing unknown fields (a typo
// must not silently drop a setting) and trailing data.
func decode(r *http.Request, v any) error {
	data, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBody))
	if err != nil {
		return badRequest("read body: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("body: %v", err)
	}
	if dec.More() {
		return badRequest("body: data after the JSON value")
	}
	return nil
}

// update applies a configuration change transactionally: fn edits a copy
// of the current configuration and returns the store writes; the whole
// resulting configuration is validated, and the writes commit only if no
// other change landed since the copy was taken (every change writes
// keyGuard, and the transaction is conditional on its revision), so two
// manager instances cannot interleave half-validated changes. It returns
// once this instance's view has applied the change.
func (s *Server) update(ctx context.Context, fn func(c *model.Config) ([]store.Op, error)) (int64, error) {
	for attempt := 0; ; attempt++ {
		snap := s.view.snapshot()
		next := snap.cfg.Clone()
		ops, err := fn(next)
		if err != nil {
			return 0, err
		}
		if err := next.Validate(); err != nil {
			return 0, err
		}
		ops = append(ops, store.Put(keyGuard, []byte(time.Now().UTC().Format(time.RFC3339Nano))))
		rev, err := s.st.Txn(ctx, []store.Cond{{Key: keyGuard, ModRev: snap.guardRev}}, ops)
		if errors.Is(err, store.ErrConflict) && attempt < 20 {
			// Another change landed (maybe on another instance): wait for
			// the view to see it and try again on the new state.
			_, _, cur, gerr := s.st.Get(ctx, keyGuard)
			if gerr != nil {
				return 0, gerr
			}
			if err := s.view.waitRev(ctx, cur); err != nil {
				return 0, err
			}
			continue
		}
		if err != nil {
			return 0, err
		}
		return rev, s.view.waitRev(ctx, rev)
	}
}

func mustJSON(v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return data
}

// pathName checks the {name} of the path against the body's name.
func pathName(r *http.Request, kind, bodyName string) (string, error) {
	name := r.PathValue("name")
	if err := model.CheckName(kind, name); err != nil {
		return "", err
	}
	if bodyName != "" && bodyName != name {
		return "", badRequest("%s name %q in the body differs from %q in the path", kind, bodyName, name)
	}
	return name, nil
}

func (s *Server) getRevision(w http.ResponseWriter, _ *http.Request) error {
	return writeJSON(w, http.StatusOK, api.Revision{Revision: s.view.snapshot().rev})
}

// --- hosts ---

func (s *Server) hostView(snap snapshot, h api.Host) api.Host {
	for _, vm := range snap.cfg.Inventory[h.Name].VMs {
		h.VMs++
		h.VNICs += len(vm.VNICs)
	}
	h.DesiredVersion = snap.desired[h.Name].Version
	h.RealizedVersion = s.realized(h.Name).Version
	h.Connected = s.connected(h.Name)
	return h
}

func (s *Server) realized(host string) api.Realized {
	var rz api.Realized
	if kv, ok := s.view.get(prefixRealized + host); ok {
		_ = json.Unmarshal(kv.Value, &rz)
	}
	return rz
}

func (s *Server) listHosts(w http.ResponseWriter, _ *http.Request) error {
	snap := s.view.snapshot()
	out := []api.Host{}
	for _, name := range slices.Sorted(maps.Keys(snap.cfg.Hosts)) {
		out = append(out, s.hostView(snap, snap.cfg.Hosts[name]))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) getHost(w http.ResponseWriter, r *http.Request) error {
	snap := s.view.snapshot()
	h, ok := snap.cfg.Hosts[r.PathValue("host")]
	if !ok {
		return notFound("no host %q", r.PathValue("host"))
	}
	return writeJSON(w, http.StatusOK, s.hostView(snap, h))
}

func (s *Server) deleteHost(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("host")
	_, err := s.update(r.Context(), func(c *model.Config) ([]store.Op, error) {
		if _, ok := c.Hosts[name]; !ok {
			return nil, notFound("no host %q", name)
		}
		delete(c.Hosts, name)
		delete(c.Inventory, name)
		return []store.Op{store.Delete(prefixHosts + name), store.Delete(prefixInventory + name),
			store.Delete(prefixRealized + name), store.Delete(prefixDesiredVer + name)}, nil
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) hostStatus(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("host")
	snap := s.view.snapshot()
	if _, ok := snap.cfg.Hosts[name]; !ok {
		return notFound("no host %q", name)
	}
	d := snap.desired[name]
	rz := s.realized(name)
	st := api.HostStatus{Host: name, DesiredVersion: d.Version, RealizedVersion: rz.Version, ReportedAt: rz.ReportedAt, Connected: s.connected(name), VNICs: []api.VNICStatus{}}
	got := map[string]api.RealizedVNIC{}
	for _, v := range rz.VNICs {
		got[v.VNIC] = v
	}
	st.InSync = rz.Version == d.Version
	for _, dv := range d.VNICs {
		rv, ok := got[dv.VNIC]
		delete(got, dv.VNIC)
		vs := api.VNICStatus{VNIC: dv.VNIC, VM: dv.VM, Policies: dv.Policies, DesiredHash: dv.Hash, RealizedHash: rv.Hash, Error: rv.Error}
		vs.InSync = ok && rv.Hash == dv.Hash && rv.Error == ""
		if !ok {
			vs.Error = "not reported by the host"
		}
		st.InSync = st.InSync && vs.InSync
		st.VNICs = append(st.VNICs, vs)
	}
	for _, name := range slices.Sorted(maps.Keys(got)) {
		rv := got[name]
		st.VNICs = append(st.VNICs, api.VNICStatus{VNIC: name, RealizedHash: rv.Hash, Error: "enforced but not desired"})
		st.InSync = false
	}
	docs, docsInSync := docStatus(d.HostDocs, rz.Docs)
	st.Docs = docs
	st.InSync = st.InSync && docsInSync
	return writeJSON(w, http.StatusOK, st)
}

// --- VMs and tags ---

func (s *Server) vms(snap snapshot) []api.VM {
	out := []api.VM{}
	for _, host := range slices.Sorted(maps.Keys(snap.cfg.Inventory)) {
		for _, vm := range snap.cfg.Inventory[host].VMs {
			vm.Host = host
			vm.Tags = snap.cfg.Tags[vm.Name]
			vm.Groups = snap.resolver.GroupsOf(vm.Name)
			out = append(out, vm)
		}
	}
	slices.SortStableFunc(out, func(a, b api.VM) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (s *Server) listVMs(w http.ResponseWriter, _ *http.Request) error {
	return writeJSON(w, http.StatusOK, s.vms(s.view.snapshot()))
}

func (s *Server) getVM(w http.ResponseWriter, r *http.Request) error {
	snap := s.view.snapshot()
	name := r.PathValue("vm")
	for _, vm := range s.vms(snap) {
		if vm.Name == name {
			return writeJSON(w, http.StatusOK, vm)
		}
	}
	if tags, ok := snap.cfg.Tags[name]; ok {
		return writeJSON(w, http.StatusOK, api.VM{Name: name, VNICs: []api.VNIC{}, Tags: tags, Groups: snap.resolver.GroupsOf(name)})
	}
	return notFound("no VM %q reported by any host, and no tags set for it", name)
}

func (s *Server) getTags(w http.ResponseWriter, r *http.Request) error {
	tags := s.view.snapshot().cfg.Tags[r.PathValue("vm")]
	if tags == nil {
		tags = api.Tags{}
	}
	return writeJSON(w, http.StatusOK, tags)
}

// putTags replaces a VM's tags (an empty object removes them). The VM
// need not be reported yet: tags may be set ahead of its start.
func (s *Server) putTags(w http.ResponseWriter, r *http.Request) error {
	vm := r.PathValue("vm")
	if err := model.CheckVMName(vm); err != nil {
		return err
	}
	var tags api.Tags
	if err := decode(r, &tags); err != nil {
		return err
	}
	_, err := s.update(r.Context(), func(c *model.Config) ([]store.Op, error) {
		if len(tags) == 0 {
			delete(c.Tags, vm)
			return []store.Op{store.Delete(prefixTags + vm)}, nil
		}
		c.Tags[vm] = tags
		return []store.Op{store.Put(prefixTags+vm, mustJSON(tags))}, nil
	})
	if err != nil {
		return err
	}
	if tags == nil {
		tags = api.Tags{}
	}
	return writeJSON(w, http.StatusOK, tags)
}

// --- groups, policies, assignments ---

func (s *Server) listGroups(w http.ResponseWriter, _ *http.Request) error {
	snap := s.view.snapshot()
	return writeJSON(w, http.StatusOK, valuesOf(snap.cfg.Groups))
}

func valuesOf[V any](m map[string]V) []V {
	out := []V{}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[k])
	}
	return out
}

func (s *Server) getGroup(w http.ResponseWriter, r *http.Request) error {
	g, ok := s.view.snapshot().cfg.Groups[r.PathValue("name")]
	if !ok {
		return notFound("no group %q", r.PathValue("name"))
	}
	return writeJSON(w, http.StatusOK, g)
}

func (s *Server) groupMembers(w http.ResponseWriter, r *http.Request) error {
	snap := s.view.snapshot()
	name := r.PathValue("name")
	if _, ok := snap.cfg.Groups[name]; !ok {
		return notFound("no group %q", name)
	}
	m := api.GroupMembers{Group: name, VMs: slices.Sorted(maps.Keys(snap.resolver.Members(name))), Addresses: snap.resolver.Addresses(name)}
	if m.VMs == nil {
		m.VMs = []string{}
	}
	return writeJSON(w, http.StatusOK, m)
}

func (s *Server) putGroup(w http.ResponseWriter, r *http.Request) error {
	var g api.Group
	if err := decode(r, &g); err != nil {
		return err
	}
	name, err := pathName(r, "group", g.Name)
	if err != nil {
		return err
	}
	g.Name, g.Revision = name, 0
	rev, err := s.update(r.Context(), func(c *model.Config) ([]store.Op, error) {
		c.Groups[name] = g
		return []store.Op{store.Put(prefixGroups+name, mustJSON(g))}, nil
	})
	if err != nil {
		return err
	}
	g.Revision = rev
	return writeJSON(w, http.StatusOK, g)
}

// deleteObject removes an object nothing refers to.
func (s *Server) deleteObject(w http.ResponseWriter, r *http.Request, kind, prefix string, objects func(c *model.Config) map[string]bool, remove func(c *model.Config, name string)) error {
	name := r.PathValue("name")
	_, err := s.update(r.Context(), func(c *model.Config) ([]store.Op, error) {
		if !objects(c)[name] {
			return nil, notFound("no %s %q", kind, name)
		}
		if refs := c.Referrers(kind, name); len(refs) > 0 {
			return nil, fmt.Errorf("%w: %s %s is used by %s: remove or change those first", model.ErrInUse, kind, name, strings.Join(refs, ", "))
		}
		remove(c, name)
		return []store.Op{store.Delete(prefix + name)}, nil
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func keysOf[V any](m map[string]V) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

func (s *Server) deleteGroup(w http.ResponseWriter, r *http.Request) error {
	return s.deleteObject(w, r, "group", prefixGroups,
		func(c *model.Config) map[string]bool { return keysOf(c.Groups) },
		func(c *model.Config, n string) { delete(c.Groups, n) })
}

func (s *Server) listPolicies(w http.ResponseWriter, _ *http.Request) error {
	return writeJSON(w, http.StatusOK, valuesOf(s.view.snapshot().cfg.Policies))
}

func (s *Server) getPolicy(w http.ResponseWriter, r *http.Request) error {
	p, ok := s.view.snapshot().cfg.Policies[r.PathValue("name")]
	if !ok {
		return notFound("no policy %q", r.PathValue("name"))
	}
	return writeJSON(w, http.StatusOK, p)
}

func (s *Server) putPolicy(w http.ResponseWriter, r *http.Request) error {
	var p api.Policy
	if err := decode(r, &p); err != nil {
		return err
	}
	name, err := pathName(r, "policy", p.Name)
	if err != nil {
		return err
	}
	p.Name, p.Revision = name, 0
	if p.Rules == nil {
		p.Rules = []json.RawMessage{}
	}
	rev, err := s.update(r.Context(), func(c *model.Config) ([]store.Op, error) {
		c.Policies[name] = p
		return []store.Op{store.Put(prefixPolicies+name, mustJSON(p))}, nil
	})
	if err != nil {
		return err
	}
	p.Revision = rev
	return writeJSON(w, http.StatusOK, p)
}

func (s *Server) deletePolicy(w http.ResponseWriter, r *http.Request) error {
	return s.deleteObject(w, r, "policy", prefixPolicies,
		func(c *model.Config) map[string]bool { return keysOf(c.Policies) },
		func(c *model.Config, n string) { delete(c.Policies, n) })
}

func (s *Server) listAssignments(w http.ResponseWriter, _ *http.Request) error {
	return writeJSON(w, http.StatusOK, valuesOf(s.view.snapshot().cfg.Assignments))
}

func (s *Server) getAssignment(w http.ResponseWriter, r *http.Request) error {
	a, ok := s.view.snapshot().cfg.Assignments[r.PathValue("name")]
	if !ok {
		return notFound("no assignment %q", r.PathValue("name"))
	}
	return writeJSON(w, http.StatusOK, a)
}

func (s *Server) putAssignment(w http.ResponseWriter, r *http.Request) error {
	var a api.Assignment
	if err := decode(r, &a); err != nil {
		return err
	}
	name, err := pathName(r, "assignment", a.Name)
	if err != nil {
		return err
	}
	a.Name, a.Revision = name, 0
	rev, err := s.update(r.Context(), func(c *model.Config) ([]store.Op, error) {
		c.Assignments[name] = a
		return []store.Op{store.Put(prefixAssignments+name, mustJSON(a))}, nil
	})
	if err != nil {
		return err
	}
	a.Revision = rev
	return writeJSON(w, http.StatusOK, a)
}

func (s *Server) deleteAssignment(w http.ResponseWriter, r *http.Request) error {
	return s.deleteObject(w, r, "assignment", prefixAssignments,
		func(c *model.Config) map[string]bool { return keysOf(c.Assignments) },
		func(c *model.Config, n string) { delete(c.Assignments, n) })
}

// --- tokens and enrollment ---

func (s *Server) listTokens(w http.ResponseWriter, _ *http.Request) error {
	out := []api.Token{}
	for _, p := range []string{prefixTokens, prefixJoin} {
		for _, kv := range s.view.list(p) {
			var rec tokenRecord
			if json.Unmarshal(kv.Value, &rec) == nil {
				out = append(out, rec.Token)
			}
		}
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) error {
	var req api.TokenRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	t, err := s.mintToken(r.Context(), req)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, t)
}

func (s *Server) deleteToken(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	for _, p := range []string{prefixTokens, prefixJoin} {
		if _, ok := s.view.get(p + id); ok {
			rev, err := s.st.Txn(r.Context(), nil, []store.Op{store.Delete(p + id)})
			if err != nil {
				return err
			}
			if err := s.view.waitRev(r.Context(), rev); err != nil {
				return err
			}
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
	}
	return notFound("no token %q", id)
}

func (s *Server) postEnroll(w http.ResponseWriter, r *http.Request) error {
	var req api.EnrollRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	resp, err := s.enroll(r.Context(), req)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, resp)
}

// --- agent ---

// checkInventory validates an agent's report.
func checkInventory(inv api.Inventory) error {
	seenVM, seenNIC := map[string]bool{}, map[string]bool{}
	for i, vm := range inv.VMs {
		if err := model.CheckVMName(vm.Name); err != nil {
			return fmt.Errorf("vms[%d]: %w", i, err)
		}
		if seenVM[vm.Name] {
			return fmt.Errorf("%w: vms[%d]: VM %q reported twice", model.ErrInvalid, i, vm.Name)
		}
		seenVM[vm.Name] = true
		if len(vm.Tags) > 0 || len(vm.Groups) > 0 || vm.Host != "" {
			return fmt.Errorf("%w: vms[%d]: host, tags and groups are the manager's, not the agent's", model.ErrInvalid, i)
		}
		for j, nic := range vm.VNICs {
			field := fmt.Sprintf("vms[%d].vnics[%d]", i, j)
			if nic.Name == "" || len(nic.Name) > 15 || strings.ContainsAny(nic.Name, "/ \t\n") {
				return fmt.Errorf("%w: %s: name %q is not an interface name", model.ErrInvalid, field, nic.Name)
			}
			if seenNIC[nic.Name] {
				return fmt.Errorf("%w: %s: vNIC %q reported twice", model.ErrInvalid, field, nic.Name)
			}
			seenNIC[nic.Name] = true
			if nic.MAC != "" {
				if _, err := net.ParseMAC(nic.MAC); err != nil {
					return fmt.Errorf("%w: %s.mac: %v", model.ErrInvalid, field, err)
				}
			}
			for k, ip := range nic.IPs {
				if _, err := netip.ParseAddr(ip); err != nil {
					return fmt.Errorf("%w: %s.ips[%d]: %q is not an IP address", model.ErrInvalid, field, k, ip)
				}
			}
		}
	}
	return checkInventoryNet(inv)
}

func (s *Server) putInventory(w http.ResponseWriter, r *http.Request) error {
	host := agentOf(r)
	var inv api.Inventory
	if err := decode(r, &inv); err != nil {
		return err
	}
	if inv.VMs == nil {
		inv.VMs = []api.VM{}
	}
	if err := checkInventory(inv); err != nil {
		return err
	}
	inv.ReportedAt = time.Now().UTC()
	// Inventory is the host's own fact: it needs no validation against
	// the rest of the configuration, so it does not take the guard.
	rev, err := s.st.Txn(r.Context(), nil, []store.Op{store.Put(prefixInventory+host, mustJSON(inv))})
	if err != nil {
		return err
	}
	if err := s.view.waitRev(r.Context(), rev); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, api.Revision{Revision: rev})
}

func (s *Server) putRealized(w http.ResponseWriter, r *http.Request) error {
	host := agentOf(r)
	var rz api.Realized
	if err := decode(r, &rz); err != nil {
		return err
	}
	rz.ReportedAt = time.Now().UTC()
	if rz.VNICs == nil {
		rz.VNICs = []api.RealizedVNIC{}
	}
	rev, err := s.st.Txn(r.Context(), nil, []store.Op{store.Put(prefixRealized+host, mustJSON(rz))})
	if err != nil {
		return err
	}
	if err := s.view.waitRev(r.Context(), rev); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, api.Revision{Revision: rev})
}

// putCounters stores the agent's counters: the host's own fact, like
// realized state, outside the configuration (no guard, no recompute).
func (s *Server) putCounters(w http.ResponseWriter, r *http.Request) error {
	host := agentOf(r)
	var cs api.Counters
	if err := decode(r, &cs); err != nil {
		return err
	}
	cs.ReportedAt = time.Now().UTC()
	if cs.VNICs == nil {
		cs.VNICs = []api.VNICCounters{}
	}
	rev, err := s.st.Txn(r.Context(), nil, []store.Op{store.Put(prefixCounters+host, mustJSON(cs))})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, api.Revision{Revision: rev})
}

func (s *Server) hostCounters(w http.ResponseWriter, r *http.Request) error {
	host := r.PathValue("host")
	if _, ok := s.view.snapshot().cfg.Hosts[host]; !ok {
		return notFound("no host %q", host)
	}
	cs := api.Counters{VNICs: []api.VNICCounters{}}
	kv, ok, _, err := s.st.Get(r.Context(), prefixCounters+host)
	if err != nil {
		return err
	}
	if ok {
		_ = json.Unmarshal(kv.Value, &cs)
	}
	return writeJSON(w, http.StatusOK, cs)
}
