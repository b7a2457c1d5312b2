package manager_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
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
