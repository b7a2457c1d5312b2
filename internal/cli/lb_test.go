package cli

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/filters/dlb"
)

const lbFile = `{"services": [
  {"name": "web", "vip": "10.0.0.10", "port": 80, "protocol": "tcp", "table_size": 251,
   "backends": [{"addr": "10.0.1.11", "port": 8080}, {"addr": "10.0.1.12", "port": 8080, "weight": 2}]},
  {"vip": "fd00::10", "port": 53, "protocol": "udp", "backends": [{"addr": "fd00:1::20"}]}]}`

// TestLBEditOffline: with --file and no filterd, edits are checked,
// written and reported as not reloaded; refused edits leave the file
// byte for byte as it was.
func TestLBEditOffline(t *testing.T) {
	ctx := context.Background()
	sock := noDaemon(t)
	path := filepath.Join(t.TempDir(), "lb.json")
	if err := os.WriteFile(path, []byte(lbFile), 0o600); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		args []string
		code int
		want string // in stdout (success) or stderr
	}{
		{[]string{"lb", "add", "--file", path, "web", "10.0.1.13:8080", "--weight", "3"}, ExitOK, "service web: added 10.0.1.13:8080 (weight 3)"},
		{[]string{"lb", "add", "--file", path, "web", "10.0.1.13:8080"}, ExitBadInput, "has backend 10.0.1.13:8080 already"},
		{[]string{"lb", "add", "--file", path, "web", "fd00::5"}, ExitBadInput, "a backend must be of the VIP's address family"},
		{[]string{"lb", "add", "--file", path, "web", "10.0.1.300"}, ExitUsage, `backend "10.0.1.300"`},
		{[]string{"lb", "add", "--file", path, "api", "10.0.1.14"}, ExitNotFound, `no service "api" (services: web, 1)`},
		{[]string{"lb", "drain", "--file", path, "web", "10.0.1.11:8080"}, ExitOK, "backend 10.0.1.11:8080 drained, weight 1 -> 0"},
		{[]string{"lb", "weight", "--file", path, "web", "10.0.1.12:8080", "0"}, ExitOK, "weight 2 -> 0"},
		{[]string{"lb", "drain", "--file", path, "web", "10.0.1.13:8080"}, ExitBadInput, "empty pool"},
		{[]string{"lb", "weight", "--file", path, "web", "10.0.1.13:8080", "70000"}, ExitUsage, "want 0..65535"},
		{[]string{"lb", "rm", "--file", path, "web", "10.0.1.99"}, ExitNotFound, "service web has no backend 10.0.1.99"},
		{[]string{"lb", "rm", "--file", path, "1", "[fd00:1::20]:53"}, ExitBadInput, "empty pool"},
		{[]string{"lb", "add", "--file", path, "dns4", "--vip", "10.0.0.10", "--port", "53", "--protocol", "udp", "--affinity", "client", "10.0.1.20", "10.0.1.21"}, ExitOK, "added service dns4 10.0.0.10:53/udp with 2 backends"},
		{[]string{"lb", "add", "--file", path, "dup", "--vip", "10.0.0.10", "--port", "53", "--protocol", "udp", "10.0.1.20"}, ExitBadInput, "duplicate service 10.0.0.10:53/udp"},
		{[]string{"lb", "rm", "--file", path, "1"}, ExitOK, "removed service 1"},
		{[]string{"lb", "rm", "--file", path, "web", "10.0.1.11:8080", "10.0.1.12:8080"}, ExitOK, "service web: removed 10.0.1.11:8080, 10.0.1.12:8080"},
		{[]string{"lb", "show", "vnet3"}, ExitNoDaemon, "filterd is not running"},
		{[]string{"lb", "drain", "vnet3", "web", "10.0.1.13"}, ExitNoDaemon, "filterd is not running"},
		{[]string{"lb", "drain", "--file", path, "web"}, ExitUsage, "missing BACKEND"},
		{[]string{"lb", "drain", "--file", filepath.Join(t.TempDir(), "absent.json"), "web", "10.0.1.13"}, ExitNotFound, "no such file"},
	}
	for _, s := range steps {
		before, _ := os.ReadFile(path)
		r := vfctl(t, ctx, sock, s.args...)
		out := r.stdout
		if s.code != ExitOK {
			out = r.stderr
		}
		if r.code != s.code || !contains(out, s.want) {
			t.Errorf("%v: exit %d (want %d)\nstdout %s\nstderr %s\nwant %q", s.args, r.code, s.code, r.stdout, r.stderr, s.want)
		}
		after, _ := os.ReadFile(path)
		if s.code != ExitOK && string(after) != string(before) {
			t.Errorf("%v: refused, but the file changed:\n%s", s.args, after)
		}
		if s.code == ExitOK && strings.HasPrefix(s.args[1], "a") && !contains(r.stdout, "nothing reloaded: filterd is not running") {
			t.Errorf("%v: no word on the reload: %s", s.args, r.stdout)
		}
	}
	f, err := dlb.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Services) != 2 || f.Services[0].Name != "web" || len(f.Services[0].Backends) != 1 || f.Services[0].Backends[0].Weight != 3 ||
		f.Services[1].Name != "dns4" || f.Services[1].Affinity != dlb.AffinityClient {
		t.Errorf("final services %+v", f.Services)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v after the edits", st.Mode())
	}
	data, _ := os.ReadFile(path)
	t.Logf("final file:\n%s", data)
	r := vfctl(t, ctx, sock, "-o", "json", "lb", "weight", "--file", path, "web", "10.0.1.13:8080", "1")
	var res lbEditResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.File != path || res.NotReloaded == "" || !strings.Contains(res.Change, "3 -> 1") {
		t.Errorf("-o json: %v %+v\n%s", err, res, r.stdout)
	}
}
