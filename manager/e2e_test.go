package manager_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/manager/api"
)

// TLS material is created with safe permissions, the API refuses
// requests without a valid credential (401) and writes by a read-only
// token (403), and agent endpoints want the enrollment certificate.
func TestAuthz(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mgr")
	m := startManager(t, dir)
	for name, want := range map[string]os.FileMode{"": 0o700, "ca.key": 0o600, "server.key": 0o600, "admin.token": 0o600, "store.db": 0o600, "ca.crt": 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", filepath.Join(dir, name), got, want)
		}
	}
	ctx := ctxT(t)
	ro, err := m.admin.CreateToken(ctx, api.TokenRequest{Role: api.RoleReadOnly, Name: "auditor"})
	if err != nil {
		t.Fatal(err)
	}
	group := `{"vms":["a"]}`
	for _, tc := range []struct {
		method, path, token, body string
		want                      int
	}{
		{"GET", "/v1/hosts", "", "", 401},
		{"GET", "/v1/hosts", "vfm_0123456789abcdef_wrong", "", 401},
		{"GET", "/v1/hosts", "garbage", "", 401},
		{"GET", "/v1/hosts", ro.Secret, "", 200},
		{"GET", "/v1/groups", ro.Secret, "", 200},
		{"PUT", "/v1/groups/g", "", group, 401},
		{"PUT", "/v1/groups/g", ro.Secret, group, 403},
		{"POST", "/v1/tokens", ro.Secret, `{"role":"admin"}`, 403},
		{"GET", "/v1/tokens", ro.Secret, "", 403},
		{"PUT", "/v1/vms/a/tags", ro.Secret, `{"tier":"web"}`, 403},
		{"PUT", "/v1/groups/g", m.token, group, 200},
		{"DELETE", "/v1/groups/g", ro.Secret, "", 403},
		// Agent endpoints: a bearer token, even admin, is no certificate.
		{"PUT", "/v1/agent/inventory", m.token, `{"vms":[]}`, 401},
		{"GET", "/v1/agent/desired", "", "", 401},
		{"POST", "/v1/enroll", "", `{"token":"vfj_0123456789abcdef_x","host":"h","csr":""}`, 401},
		{"GET", "/v1/openapi.yaml", "", "", 200},
	} {
		if got := m.raw(tc.method, tc.path, tc.token, tc.body); got != tc.want {
			t.Errorf("%s %s (token %.8q): HTTP %d, want %d", tc.method, tc.path, tc.token, got, tc.want)
		}
	}
	// The group written by the admin is there, the read-only attempts
	// changed nothing.
	groups, err := m.client(ro.Secret).Groups(ctx)
	if err != nil || len(groups) != 1 || groups[0].Name != "g" {
		t.Fatalf("groups %+v %v", groups, err)
	}
	// A revoked token stops working.
	if err := m.admin.DeleteToken(ctx, ro.ID); err != nil {
		t.Fatal(err)
	}
	if got := m.raw("GET", "/v1/hosts", ro.Secret, ""); got != 401 {
		t.Errorf("revoked token: HTTP %d, want 401", got)
	}
	// A client that does not trust the manager CA does not talk to it.
	other, err := api.NewClient(api.ClientOptions{Server: m.addr, Token: m.token, CA: otherCA(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Hosts(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("client trusting another CA: %v, want a certificate error", err)
	}
}

// otherCA is a CA unrelated to the manager's.
func otherCA(t *testing.T) []byte {
	dir := t.TempDir()
	m := startManager(t, dir)
	m.stop(9)
	return m.ca
}

// Bad requests answer 4xx with a clear message and leave the stored
// state exactly as it was (same revision, same objects).
func TestTransactionalValidation(t *testing.T) {
	m := startManager(t, filepath.Join(t.TempDir(), "mgr"))
	ctx := ctxT(t)
	seed(t, m)
	rev0, err := m.admin.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := dump(t, m)
	rule := func(r string) []json.RawMessage { return []json.RawMessage{json.RawMessage(r)} }
	for _, tc := range []struct {
		name   string
		do     func() error
		status int
		msg    string
	}{
		{"policy naming an unknown group", func() error {
			_, err := m.admin.PutPolicy(ctx, api.Policy{Name: "p", Rules: rule(`{"src_groups":["nope"],"action":"allow"}`)})
			return err
		}, 422, `policy p: rules[0].src_groups[0]: unknown address group "nope"`},
		{"invalid rule", func() error {
			_, err := m.admin.PutPolicy(ctx, api.Policy{Name: "db-in", Rules: rule(`{"proto":"tcp","dst_ports":["5432-80"],"action":"allow"}`)})
			return err
		}, 422, "policy db-in: rules[0].dst_ports[0]"},
		{"unknown rule field", func() error {
			_, err := m.admin.PutPolicy(ctx, api.Policy{Name: "db-in", Rules: rule(`{"dport":5432,"action":"allow"}`)})
			return err
		}, 422, `unknown field "dport"`},
		{"include cycle", func() error {
			_, err := m.admin.PutGroup(ctx, api.Group{Name: "web", Include: []string{"all"}})
			return err
		}, 422, "group include cycle: all -> web -> all"},
		{"dangling include", func() error {
			_, err := m.admin.PutGroup(ctx, api.Group{Name: "x", Include: []string{"ghost"}})
			return err
		}, 422, `group x: include[0]: unknown group "ghost"`},
		{"assignment to an unknown group", func() error {
			_, err := m.admin.PutAssignment(ctx, api.Assignment{Name: "a2", Policy: "db-in", Group: "ghost"})
			return err
		}, 422, `assignment a2: unknown group "ghost"`},
		{"delete a group in use", func() error { return m.admin.DeleteGroup(ctx, "web") }, 409,
			"group web is used by group all, policy db-in: remove or change those first"},
		{"delete a policy in use", func() error { return m.admin.DeletePolicy(ctx, "db-in") }, 409, "assignment db-in-db"},
		{"delete a missing group", func() error { return m.admin.DeleteGroup(ctx, "ghost") }, 404, `no group "ghost"`},
		{"bad tag", func() error { _, err := m.admin.SetTags(ctx, "web1", api.Tags{"tier": "*"}); return err }, 422, `tag tier value "*"`},
		{"unknown body field", func() error {
			return m.admin.Do(ctx, "PUT", "/v1/groups/y", rawJSON(`{"vms":["a"],"membrs":["b"]}`), nil)
		}, 400, `unknown field "membrs"`},
		{"name mismatch", func() error {
			return m.admin.Do(ctx, "PUT", "/v1/groups/y", api.Group{Name: "z", VMs: []string{"a"}}, nil)
		}, 400, `group name "z" in the body differs from "y"`},
		{"bad name", func() error { _, err := m.admin.PutGroup(ctx, api.Group{Name: "-bad", VMs: []string{"a"}}); return err }, 422, `group name "-bad"`},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			wantStatus(t, tc.name, tc.do(), tc.status, tc.msg)
		})
	}
	if status, body := m.rawBody("PUT", "/v1/groups/y", m.token, `{"vms":`); status != 400 || !strings.Contains(body, "unexpected EOF") {
		t.Errorf("malformed body: HTTP %d %s, want 400", status, body)
	}
	rev1, err := m.admin.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rev1 != rev0 {
		t.Errorf("refused requests moved the revision %d -> %d", rev0, rev1)
	}
	if after := dump(t, m); after != before {
		t.Errorf("refused requests changed the state:\nbefore %s\nafter  %s", before, after)
	}
}

// seed: groups web (tier=web), db (tier=db), all (web+db), policy db-in
// (web -> db tcp/5432) assigned to db.
func seed(t *testing.T, m *mgr) {
	ctx := ctxT(t)
	for _, g := range []api.Group{
		{Name: "web", Selector: map[string]string{"tier": "web"}},
		{Name: "db", Selector: map[string]string{"tier": "db"}},
		{Name: "all", Include: []string{"web", "db"}},
	} {
		if _, err := m.admin.PutGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	_, err := m.admin.PutPolicy(ctx, api.Policy{Name: "db-in", Description: "web to postgres",
		Defaults: map[string]string{"to-vm": "deny", "from-vm": "allow"},
		Rules:    []json.RawMessage{json.RawMessage(`{"name":"pg","direction":"to-vm","src_groups":["web"],"proto":"tcp","dst_ports":[5432],"action":"allow"}`)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.admin.PutAssignment(ctx, api.Assignment{Name: "db-in-db", Policy: "db-in", Group: "db"}); err != nil {
		t.Fatal(err)
	}
	for vm, tier := range map[string]string{"web1": "web", "db1": "db"} {
		if _, err := m.admin.SetTags(ctx, vm, api.Tags{"tier": tier}); err != nil {
			t.Fatal(err)
		}
	}
}

// dump is every configuration object, for before/after comparisons.
func dump(t *testing.T, m *mgr) string {
	ctx := ctxT(t)
	var b strings.Builder
	for _, path := range []string{"/v1/groups", "/v1/policies", "/v1/assignments", "/v1/segments", "/v1/encryptions", "/v1/vms", "/v1/hosts", "/v1/vms/web1/tags"} {
		var v any
		if err := m.admin.Do(ctx, "GET", path, nil, &v); err != nil {
			t.Fatal(err)
		}
		data, _ := json.Marshal(v)
		b.WriteString(path + "=" + string(data) + "\n")
	}
	return b.String()
}

// inventory reports one VM per host with one vNIC.
func report(t *testing.T, a *agent, vm, ip string) {
	if _, err := a.c.PutInventory(ctxT(t), api.Inventory{VMs: []api.VM{{Name: vm, VNICs: []api.VNIC{{Name: "vnet0", MAC: "52:54:00:00:00:01", IPs: []string{ip}}}}}}); err != nil {
		t.Fatalf("inventory of %s: %v", a.host, err)
	}
}

// Three hosts: h1 runs db1, h2 runs web1, h3 runs x1 (untagged). Their
// agents stream desired state. Retagging x1 as web changes db1's policy
// (one more allowed source) and so h1's desired state only; h1 reports
// it realized and the status shows it in sync.
func TestRetagReachesOnlyAffectedHost(t *testing.T) {
	m := startManager(t, filepath.Join(t.TempDir(), "mgr"))
	ctx := ctxT(t)
	seed(t, m)
	hosts := map[string]*agent{}
	for i, h := range []struct{ host, vm, ip string }{{"h1", "db1", "10.0.0.2"}, {"h2", "web1", "10.0.0.1"}, {"h3", "x1", "10.0.0.3"}} {
		a := m.enroll(t, h.host)
		report(t, a, h.vm, h.ip)
		hosts[h.host] = a
		_ = i
	}
	streams := map[string]<-chan api.WatchEvent{}
	for h, a := range hosts {
		s, err := a.c.Watch(ctx, "", -1)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		streams[h] = events(s)
		first := nextEvent(t, h, streams[h])
		if first.Type != api.EventState || first.State == nil || first.State.Host != h || len(first.State.VNICs) != 1 {
			t.Fatalf("%s: first event %+v, want its full state", h, first)
		}
		if h == "h1" {
			pol := string(first.State.Document(first.State.VNICs[0].Chain[0]))
			if !strings.Contains(pol, `"web":["10.0.0.1/32"]`) {
				t.Fatalf("h1 policy %s: want web = web1's address", pol)
			}
			// h1 applies it and reports.
			if err := a.c.PutRealized(ctx, api.Realized{Version: first.Version, VNICs: []api.RealizedVNIC{{VNIC: "vnet0", Hash: first.State.VNICs[0].Hash}}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	st, err := m.admin.Status(ctx, "h1")
	if err != nil || !st.InSync || !st.Connected {
		t.Fatalf("h1 status %+v %v, want in sync and connected", st, err)
	}

	if _, err := m.admin.SetTags(ctx, "x1", api.Tags{"tier": "web"}); err != nil {
		t.Fatal(err)
	}
	ev := nextEvent(t, "h1 after retag", streams["h1"])
	if ev.Type != api.EventChanges || len(ev.Upsert) != 1 || len(ev.Remove) != 0 || !strings.Contains(string(ev.Documents[ev.Upsert[0].Chain[0].PolicyRef]), `"web":["10.0.0.1/32","10.0.0.3/32"]`) {
		t.Fatalf("h1 event %+v, want db1's vNIC with web = web1 + x1", ev)
	}
	// The others get nothing: the same view update would have sent their
	// events together with h1's.
	time.Sleep(300 * time.Millisecond)
	for _, h := range []string{"h2", "h3"} {
		select {
		case ev := <-streams[h]:
			t.Errorf("%s got %+v, though its desired state does not depend on x1's tags", h, ev)
		default:
		}
	}
	st, err = m.admin.Status(ctx, "h1")
	if err != nil || st.InSync || st.DesiredVersion != ev.Version || st.VNICs[0].InSync {
		t.Fatalf("h1 status after retag %+v %v, want out of sync at version %d", st, err, ev.Version)
	}
	// Retag x1 as db: x1 gets the policy (h3 changes) and leaves web (h1
	// changes back).
	if _, err := m.admin.SetTags(ctx, "x1", api.Tags{"tier": "db"}); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, "h3", streams["h3"]); ev.Type != api.EventChanges || len(ev.Upsert[0].Chain) != 1 || !slices.Equal(ev.Upsert[0].Policies, []string{"db-in"}) {
		t.Fatalf("h3 event %+v, want x1 protected by db-in", ev)
	}
	if ev := nextEvent(t, "h1", streams["h1"]); !strings.Contains(string(ev.Documents[ev.Upsert[0].Chain[0].PolicyRef]), `"web":["10.0.0.1/32"]`) {
		t.Fatalf("h1 event %+v, want web = web1 again", ev)
	}
	// A VM leaving a host's inventory is removed from its stream.
	if _, err := hosts["h3"].c.PutInventory(ctx, api.Inventory{VMs: []api.VM{}}); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, "h3 empty", streams["h3"]); ev.Type != api.EventChanges || !slices.Equal(ev.Remove, []string{"vnet0"}) {
		t.Fatalf("h3 event %+v, want vnet0 removed", ev)
	}
	// Removing a host ends its stream and revokes its certificate.
	if err := m.admin.DeleteHost(ctx, "h3"); err != nil {
		t.Fatal(err)
	}
	select {
	case ev, open := <-streams["h3"]:
		if open {
			t.Fatalf("h3's stream delivered %+v after the host was removed", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("h3's stream still open 10 s after the host was removed")
	}
	if _, err := hosts["h3"].c.Watch(ctx, "", -1); err == nil {
		t.Fatal("removed host opened a new stream")
	}
}

// Enrollment tokens are single-use, even when two agents race with the
// same one; a host-bound token enrolls only that host; a certificate
// stops working when its host is removed.
func TestEnrollmentSingleUse(t *testing.T) {
	m := startManager(t, filepath.Join(t.TempDir(), "mgr"))
	ctx := ctxT(t)
	tok, err := m.admin.CreateToken(ctx, api.TokenRequest{Role: api.RoleJoin, Name: "race"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok.Secret, "vfj_") || tok.ExpiresAt.IsZero() {
		t.Fatalf("join token %+v", tok)
	}
	var wg sync.WaitGroup
	results := make([]error, 8)
	enrolled := make([]*api.Enrolled, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			enrolled[i], results[i] = api.Enroll(ctx, m.addr, m.ca, tok.Secret, "racer")
		}()
	}
	wg.Wait()
	ok := 0
	var winner *api.Enrolled
	for i, err := range results {
		if err == nil {
			ok++
			winner = enrolled[i]
			continue
		}
		wantStatus(t, "losing enrollment", err, 401, "already used")
	}
	if ok != 1 {
		t.Fatalf("%d enrollments succeeded with one token, want exactly 1", ok)
	}
	// Used again later: refused.
	_, err = api.Enroll(ctx, m.addr, m.ca, tok.Secret, "racer2")
	wantStatus(t, "reuse", err, 401, "already used")
	// The winner's certificate works on agent endpoints.
	a := m.agentClient(t, "racer", winner)
	report(t, a, "vm1", "10.0.0.9")
	hosts, err := m.admin.Hosts(ctx)
	if err != nil || len(hosts) != 1 || hosts[0].Name != "racer" || hosts[0].VNICs != 1 {
		t.Fatalf("hosts %+v %v", hosts, err)
	}
	// A token bound to h1 does not enroll h2.
	bound, err := m.admin.CreateToken(ctx, api.TokenRequest{Role: api.RoleJoin, Host: "h1"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = api.Enroll(ctx, m.addr, m.ca, bound.Secret, "h2")
	wantStatus(t, "bound token, other host", err, 403, `for host "h1"`)
	// A join token is no API credential.
	if got := m.raw("GET", "/v1/hosts", bound.Secret, ""); got != 401 {
		t.Errorf("join token as bearer: HTTP %d, want 401", got)
	}
	// Removing the host revokes its certificate.
	if err := m.admin.DeleteHost(ctx, "racer"); err != nil {
		t.Fatal(err)
	}
	_, err = a.c.PutInventory(ctx, api.Inventory{})
	wantStatus(t, "removed host's certificate", err, 401, "not current")
}

// Acknowledged writes survive a SIGKILL of the manager; an agent that was
// disconnected resumes from its last version: "current" when nothing
// changed (versions survive the restart), the new state when something
// did.
func TestRestartAndResume(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mgr")
	m := startManager(t, dir)
	ctx := ctxT(t)
	seed(t, m)
	join, err := m.admin.CreateToken(ctx, api.TokenRequest{Role: api.RoleJoin, Host: "h1"})
	if err != nil {
		t.Fatal(err)
	}
	e, err := api.Enroll(ctx, m.addr, m.ca, join.Secret, "h1")
	if err != nil {
		t.Fatal(err)
	}
	a := m.agentClient(t, "h1", e)
	report(t, a, "db1", "10.0.0.2")
	// Many acknowledged writes, then kill -9.
	for i := range 40 {
		if _, err := m.admin.SetTags(ctx, "vm"+string(rune('a'+i%26))+string(rune('a'+i/26)), api.Tags{"n": "v"}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := a.c.Watch(ctx, "", -1)
	if err != nil {
		t.Fatal(err)
	}
	first := nextEvent(t, "h1", events(s))
	s.Close()
	v1 := first.Version
	before := dump(t, m)
	rev, err := m.admin.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}

	m.restart()
	a = m.agentClient(t, "h1", e) // same certificate, new address
	if after := dump(t, m); after != before {
		t.Fatalf("state changed across restart:\nbefore %s\nafter  %s", before, after)
	}
	if rev2, err := m.admin.Revision(ctx); err != nil || rev2 < rev {
		t.Fatalf("revision after restart %d (%v), want >= %d", rev2, err, rev)
	}
	tags, err := m.admin.Tags(ctx, "vmnb")
	if err != nil || tags["n"] != "v" {
		t.Fatalf("last tag write lost: %v %v", tags, err)
	}
	// Nothing changed for h1: resuming from v1 says so.
	s, err = a.c.Watch(ctx, "", v1)
	if err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, "resume", events(s)); ev.Type != api.EventCurrent || ev.Version != v1 {
		t.Fatalf("resume from %d after restart: %+v, want current", v1, ev)
	}
	s.Close()
	// While h1 is away, web1 appears on another host with tier=web: db1's
	// policy changes. h1 resumes from v1 and gets the new state.
	h2 := m.enroll(t, "h2")
	report(t, h2, "web1", "10.0.0.1")
	s, err = a.c.Watch(ctx, "", v1)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ev := nextEvent(t, "resume after change", events(s))
	if ev.Type != api.EventState || ev.Version <= v1 || !strings.Contains(string(ev.State.Document(ev.State.VNICs[0].Chain[0])), `"web":["10.0.0.1/32"]`) {
		t.Fatalf("resume from %d: %+v, want the new state", v1, ev)
	}
	if !strings.Contains(m.log.String(), "vfmanager listening") {
		t.Errorf("log lacks the listening line")
	}
	_ = http.StatusOK
}

// SIGTERM stops the manager cleanly (exit 0) even while an agent holds a
// stream open; the stream ends.
func TestGracefulStop(t *testing.T) {
	m := startManager(t, filepath.Join(t.TempDir(), "mgr"))
	a := m.enroll(t, "h1")
	s, err := a.c.Watch(ctxT(t), "", -1)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	evs := events(s)
	nextEvent(t, "first", evs)
	cmd := m.cmd
	m.stop(syscall.SIGTERM)
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	select {
	case _, open := <-evs:
		if open {
			t.Error("stream still delivering after the manager stopped")
		}
	case <-time.After(10 * time.Second):
		t.Error("stream did not end within 10 s of the manager stopping")
	}
}
