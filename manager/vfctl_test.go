package manager_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/manager/api"
)

// vfctl runs the real vfctl binary against m with token and returns
// stdout, stderr and the exit code.
func (m *mgr) vfctl(t *testing.T, token string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "vfctl"), append([]string{"mgr"}, args...)...)
	cmd.Env = append(os.Environ(), "VFMANAGER_SERVER="+m.addr, "VFMANAGER_CA="+filepath.Join(m.dataDir, "ca.crt"), "VFMANAGER_TOKEN="+token)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// vfctl mgr drives the whole configuration and maps the manager's
// answers to vfctl's exit codes.
func TestVfctlMgr(t *testing.T) {
	m := startManager(t, filepath.Join(t.TempDir(), "mgr"))
	pol := filepath.Join(t.TempDir(), "db-in.json")
	os.WriteFile(pol, []byte(`{"description": "web to postgres", "defaults": {"to-vm": "deny"},
  "rules": [{"name": "pg", "direction": "to-vm", "src_groups": ["web"], "proto": "tcp", "dst_ports": [5432], "action": "allow"}]}`), 0o644)
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"rules": [{"src_groups": ["nope"], "action": "allow"}]}`), 0o644)

	ok := func(args ...string) string {
		t.Helper()
		out, errOut, code := m.vfctl(t, m.token, args...)
		if code != 0 {
			t.Fatalf("vfctl mgr %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	ok("groups", "set", "web", "--selector", "tier=web")
	ok("groups", "set", "db", "--vms", "db1,db2", "--description", "postgres")
	ok("policies", "set", "db-in", pol)
	if out := ok("assign", "db-in", "db"); !strings.Contains(out, "assignment db-in-db: policy db-in -> group db") {
		t.Errorf("assign printed %q", out)
	}
	ok("tags", "web1", "tier=web", "env=prod")
	if out := ok("tags", "web1"); out != "env=prod\ntier=web\n" {
		t.Errorf("tags web1 printed %q", out)
	}
	if out := ok("groups"); !strings.Contains(out, "db     vms db1,db2") || !strings.Contains(out, "selector tier=web") {
		t.Errorf("groups printed\n%s", out)
	}
	if out := ok("groups", "get", "web"); !strings.Contains(out, "members: web1") {
		t.Errorf("groups get web printed\n%s", out)
	}
	var ps []api.Policy
	if err := json.Unmarshal([]byte(ok("policies", "-o", "json")), &ps); err != nil || len(ps) != 1 || len(ps[0].Rules) != 1 {
		t.Errorf("policies -o json: %v %+v", err, ps)
	}
	// A join token from vfctl enrolls a host.
	join := strings.TrimSpace(ok("token", "create", "--role", "join", "--host", "h1"))
	if _, err := api.Enroll(ctxT(t), m.addr, m.ca, join, "h1"); err != nil {
		t.Fatalf("enroll with vfctl's join token: %v", err)
	}
	if out := ok("hosts"); !strings.Contains(out, "h1") {
		t.Errorf("hosts printed\n%s", out)
	}
	ro := strings.TrimSpace(ok("token", "create", "--role", "read-only"))

	for _, tc := range []struct {
		token string
		args  []string
		code  int
		msg   string
	}{
		{m.token, []string{"policies", "set", "p2", bad}, 5, `unknown address group "nope"`},
		{m.token, []string{"groups", "delete", "web"}, 5, "group web is used by policy db-in"},
		{m.token, []string{"groups", "get", "ghost"}, 4, `no group "ghost"`},
		{ro, []string{"groups", "set", "x", "--vms", "a"}, 1, "needs an admin token"},
		{ro, []string{"groups"}, 0, ""},
		{"", []string{"hosts"}, 1, "no bearer token"},
		{m.token, []string{"tags", "web1", "notapair"}, 2, "want KEY=VALUE"},
	} {
		_, errOut, code := m.vfctl(t, tc.token, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.msg) {
			t.Errorf("vfctl mgr %s: exit %d %q, want %d with %q", strings.Join(tc.args, " "), code, errOut, tc.code, tc.msg)
		}
	}
	// Unreachable manager: exit 3.
	addr := m.addr
	m.stop(9)
	m.addr = addr
	if _, errOut, code := m.vfctl(t, m.token, "hosts"); code != 3 || !strings.Contains(errOut, "unreachable") {
		t.Errorf("stopped manager: exit %d %q, want 3", code, errOut)
	}
}

// vfctl mgr segment(s) and encryption(s), and the host documents in
// vfctl mgr status.
func TestVfctlMgrNet(t *testing.T) {
	m := startManager(t, filepath.Join(t.TempDir(), "mgr"))
	ok := func(args ...string) string {
		t.Helper()
		out, errOut, code := m.vfctl(t, m.token, args...)
		if code != 0 {
			t.Fatalf("vfctl mgr %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	ok("groups", "set", "web", "--selector", "tier=web")
	ok("groups", "set", "db", "--vms", "db1")
	if out := ok("segment", "set", "blue", "--vni", "100", "--group", "web", "--gbp", "10", "--underlay-mtu", "9000", "--description", "web overlay"); !strings.Contains(out, "segment blue: vni 100, group web (revision ") {
		t.Errorf("segment set printed %q", out)
	}
	ok("segment", "set", "red", "--vni", "200", "--group", "db")
	if out := ok("encryption", "set", "pci", "--from", "db", "--to", "web"); !strings.Contains(out, "encryption pci: db <-> web (revision ") {
		t.Errorf("encryption set printed %q", out)
	}
	out := ok("segments")
	for _, want := range []string{"SEGMENT  VNI  GROUP  GBP  UNDERLAY-MTU    REVISION  DESCRIPTION", "blue     100  web    10   9000", "red      200  db     -    1500 (default)"} {
		if !strings.Contains(out, want) {
			t.Errorf("segments printed\n%s\nwant a line with %q", out, want)
		}
	}
	if out := ok("segment", "get", "blue"); !strings.Contains(out, "segment blue: vni 100, group web, gbp 10, underlay mtu 9000\ndescription: web overlay\nrevision: ") {
		t.Errorf("segment get printed\n%s", out)
	}
	var seg api.Segment
	if err := json.Unmarshal([]byte(ok("segment", "get", "blue", "-o", "json")), &seg); err != nil || seg.VNI != 100 || seg.UnderlayMTU != 9000 || seg.Revision == 0 {
		t.Errorf("segment get -o json: %v %+v", err, seg)
	}
	var segs []api.Segment
	if err := json.Unmarshal([]byte(ok("segment", "list", "-o", "json")), &segs); err != nil || len(segs) != 2 {
		t.Errorf("segment list -o json: %v %+v", err, segs)
	}
	if out := ok("encryptions"); !strings.Contains(out, "pci         db <-> web") {
		t.Errorf("encryptions printed\n%s", out)
	}
	var enc api.Encryption
	if err := json.Unmarshal([]byte(ok("encryption", "get", "pci", "-o", "json")), &enc); err != nil || enc.From != "db" || enc.To != "web" {
		t.Errorf("encryption get -o json: %v %+v", err, enc)
	}
	ro := strings.TrimSpace(ok("token", "create", "--role", "read-only"))
	for _, tc := range []struct {
		token string
		args  []string
		code  int
		msg   string
	}{
		{m.token, []string{"segment", "set", "green", "--vni", "100", "--group", "db"}, 5, "segment green: vni 100 is already segment blue's"},
		{m.token, []string{"segment", "set", "green", "--vni", "300", "--group", "ghost"}, 5, `segment green: unknown group "ghost"`},
		{m.token, []string{"segment", "set", "green", "--vni", "300", "--group", "db", "--gbp", "65536"}, 5, "gbp 65536 out of range"},
		{m.token, []string{"segment", "set", "green", "--group", "db"}, 2, `required flag(s) "vni" not set`},
		{m.token, []string{"segment", "set", "green", "--vni", "x", "--group", "db"}, 2, `invalid argument "x" for "--vni"`},
		{m.token, []string{"segment", "set", "--vni", "300", "--group", "db"}, 2, "missing NAME"},
		{m.token, []string{"segment", "get", "ghost"}, 4, `no segment "ghost"`},
		{m.token, []string{"segment", "delete", "ghost"}, 4, `no segment "ghost"`},
		{m.token, []string{"encryption", "set", "e", "--from", "ghost", "--to", "db"}, 5, `encryption e: from: unknown group "ghost"`},
		{m.token, []string{"encryption", "set", "e", "--from", "db"}, 2, `required flag(s) "to" not set`},
		{m.token, []string{"encryption", "get", "ghost"}, 4, `no encryption "ghost"`},
		{m.token, []string{"groups", "delete", "web"}, 5, "group web is used by segment blue, encryption pci"},
		{ro, []string{"segment", "set", "green", "--vni", "300", "--group", "db"}, 1, "needs an admin token"},
		{ro, []string{"encryption", "delete", "pci"}, 1, "needs an admin token"},
		{ro, []string{"segments"}, 0, ""},
		{ro, []string{"encryptions"}, 0, ""},
	} {
		_, errOut, code := m.vfctl(t, tc.token, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.msg) {
			t.Errorf("vfctl mgr %s: exit %d %q, want %d with %q", strings.Join(tc.args, " "), code, errOut, tc.code, tc.msg)
		}
	}

	// status: a host that reports a document the manager does not manage
	// on it shows a document line.
	a := m.enroll(t, "h1")
	report(t, a, "x1", "10.0.0.9")
	d, err := m.admin.Desired(ctxT(t), "h1")
	if err != nil {
		t.Fatal(err)
	}
	rz := api.Realized{Version: d.Version, Docs: []api.RealizedDoc{{Name: "encrypt_policy-old", Hash: "0123456789abcdef"}}}
	for _, v := range d.VNICs {
		rz.VNICs = append(rz.VNICs, api.RealizedVNIC{VNIC: v.VNIC, Hash: v.Hash})
	}
	for name, doc := range d.HostDocs.Docs() {
		rz.Docs = append(rz.Docs, api.RealizedDoc{Name: name, Hash: doc.Hash})
	}
	if err := a.c.PutRealized(ctxT(t), rz); err != nil {
		t.Fatal(err)
	}
	out = ok("status", "h1")
	var lines []string // the lines with single spaces: column widths depend on the desired documents
	for _, l := range strings.Split(out, "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	if !slices.Contains(lines, "DOCUMENT DESIRED REALIZED IN-SYNC ERROR") || !slices.Contains(lines, "encrypt_policy-old (not managed) 0123456789abcdef true -") {
		t.Errorf("status printed\n%s\nwant the document lines", out)
	}
	for name, doc := range d.HostDocs.Docs() {
		if doc.Error == "" && !slices.Contains(lines, strings.Join([]string{name, doc.Hash, doc.Hash, "true", "-"}, " ")) {
			t.Errorf("status printed\n%s\nwant document %s in sync", out, name)
		}
	}
	var st api.HostStatus
	if err := json.Unmarshal([]byte(ok("status", "h1", "-o", "json")), &st); err != nil || len(st.Docs) == 0 {
		t.Errorf("status -o json: %v %+v", err, st)
	}

	ok("segment", "delete", "blue")
	ok("encryption", "delete", "pci")
	if _, errOut, code := m.vfctl(t, m.token, "segment", "get", "blue"); code != 4 {
		t.Errorf("segment get after delete: exit %d %q, want 4", code, errOut)
	}
	ok("groups", "delete", "web")
}
