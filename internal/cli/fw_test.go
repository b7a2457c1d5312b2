package cli

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/vnicfilter/vnicfilter/filterd/api"
)

const fwExample = "../../filters/firewall/testdata/example.json"

func TestFwOffline(t *testing.T) {
	ctx := context.Background()
	sock := noDaemon(t) // explain, check and diff never talk to filterd
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte("{\"version\": 1,\n \"rules\": [{\"action\": \"allow\", \"dport\": 5}]}"), 0o644)
	newer := filepath.Join(dir, "new.json")
	os.WriteFile(newer, []byte(`{"version": 1, "defaults": {"from-vm": "deny", "to-vm": "deny"}, "non_ip": "deny", "groups": {"admins": ["10.0.99.0/24", "fd00:99::/64"], "db": ["10.0.2.10", "10.0.2.11"]},
 "rules": [
  {"name": "https-in", "priority": 100, "direction": "to-vm", "proto": "tcp", "dst_ports": [443], "action": "allow"},
  {"name": "ssh-admins", "priority": 100, "direction": "to-vm", "src_groups": ["admins"], "proto": "tcp", "dst_ports": [22], "action": "allow", "log": true},
  {"name": "pg", "priority": 50, "direction": "from-vm", "dst_groups": ["db"], "proto": "tcp", "dst_ports": [5432], "action": "allow"}
 ]}`), 0o644)

	for _, tc := range []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"fw", "explain", fwExample, "to-vm tcp 10.0.99.3:1234 -> 10.0.0.1:22"}, ExitOK,
			[]string{`verdict: allow by rule 2 "ssh-admins", line 12`, "src 10.0.99.3 in 10.0.99.0/24", "dst port 22 in [22]", `rule 1 "https-in"`}},
		{[]string{"fw", "explain", fwExample, "--", "from-vm", "tcp", "10.0.0.1:1234", "->", "10.0.2.10:5433"}, ExitOK,
			[]string{`verdict: reject by rule 0 "no-db-except-pg"`, "answered with a TCP RST sent back to the VM"}},
		{[]string{"fw", "explain", fwExample, "to-vm tcp 1.2.3.4:53 -> 10.0.0.1:5353"}, ExitOK,
			[]string{"verdict: deny", "no rule matches: the to-vm default"}},
		{[]string{"fw", "explain", fwExample, "to-vm udp 1.2.3.4 -> 10.0.0.1 fragment"}, ExitOK,
			[]string{`verdict: allow by rule 4 "udp-fragments"`}},
		{[]string{"fw", "explain", fwExample, "to-vm", "tcp", "1.2.3.4:1", "to", "10.0.0.1:443"}, ExitOK, []string{`verdict: allow by rule 1 "https-in"`}},
		{[]string{"-o", "json", "fw", "explain", fwExample, "to-vm icmp 1.2.3.4 -> 10.0.0.1 type=8"}, ExitOK, []string{`"rule_name": "ping-in"`}},
		{[]string{"fw", "explain", fwExample, "sideways tcp 1.2.3.4 -> 10.0.0.1"}, ExitBadInput, nil},
		{[]string{"fw", "explain", bad, "to-vm tcp 1.2.3.4 -> 10.0.0.1"}, ExitBadInput, nil},
		{[]string{"fw", "explain", filepath.Join(dir, "absent.json"), "to-vm tcp 1.2.3.4 -> 10.0.0.1"}, ExitNotFound, nil},
		{[]string{"fw", "explain", "vnet3", "to-vm tcp 1.2.3.4 -> 10.0.0.1"}, ExitNoDaemon, nil},
		{[]string{"fw", "check", fwExample}, ExitOK, []string{"ok, 5 rules, compiled in", "fw_cross total"}},
		{[]string{"fw", "check", bad}, ExitBadInput, nil},
		{[]string{"fw", "check", filepath.Join(dir, "absent.json")}, ExitNotFound, nil},
		{[]string{"fw", "diff", fwExample, newer}, ExitOK, []string{"~ default from-vm: allow -> deny", "- no-db-except-pg", "- ping-in", "- udp-fragments", "+ pg", "~ https-in (rule 1 -> 1): dst_ports", "1 added, 3 removed, 1 changed"}},
		{[]string{"fw", "diff", fwExample, fwExample}, ExitOK, []string{"no differences"}},
		{[]string{"fw", "explain", fwExample}, ExitUsage, nil},
	} {
		r := vfctl(t, ctx, sock, tc.args...)
		if r.code != tc.code {
			t.Errorf("%v: exit %d, want %d\nstdout %s\nstderr %s", tc.args, r.code, tc.code, r.stdout, r.stderr)
			continue
		}
		for _, w := range tc.want {
			if !contains(r.stdout, w) {
				t.Errorf("%v: output lacks %q:\n%s", tc.args, w, r.stdout)
			}
		}
	}
	r := vfctl(t, ctx, sock, "fw", "check", bad)
	if !contains(r.stderr, "bad.json:2:32: rules[0].dport: unknown field") {
		t.Errorf("check error lacks line:col: %s", r.stderr)
	}
	r = vfctl(t, ctx, sock, "-o", "json", "fw", "check", fwExample)
	var rep map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || rep["rules"] != float64(5) {
		t.Errorf("check -o json: %v\n%s", err, r.stdout)
	}
}

func TestFwExplainLive(t *testing.T) {
	ctx := context.Background()
	abs, err := filepath.Abs(fwExample)
	if err != nil {
		t.Fatal(err)
	}
	withFW := cannedVNIC()
	withFW.Slots = append(withFW.Slots, api.Slot{Slot: 3, Filter: "firewall", Params: map[string]string{"policy": abs}})
	f := newFakeDaemon(t, map[string]cannedReply{
		"GET /v1/vnics/vnet3": {body: withFW},
		"GET /v1/vnics/vnet4": {body: cannedVNIC()},
		"GET /v1/vnics/vnet9": apiError(404, api.CodeNotAttached, "vnet9: not attached"),
	})
	r := vfctl(t, ctx, f.socket, "fw", "explain", "vnet3", "to-vm tcp 10.0.99.3:1234 -> 10.0.0.1:22")
	if r.code != ExitOK || !contains(r.stdout, "(firewall of vnet3)") || !contains(r.stdout, `rule 2 "ssh-admins"`) {
		t.Errorf("live explain: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, vnic := range []string{"vnet4", "vnet9"} {
		if r := vfctl(t, ctx, f.socket, "fw", "explain", vnic, "to-vm tcp 10.0.99.3:1234 -> 10.0.0.1:22"); r.code != ExitNotFound {
			t.Errorf("%s: exit %d, want %d: %s", vnic, r.code, ExitNotFound, r.stderr)
		}
	}
}

func TestFwLoad(t *testing.T) {
	ctx := context.Background()
	f := newFakeDaemon(t, map[string]cannedReply{
		"POST /v1/vnics/vnet3/filters/0/reload": {body: api.ReloadResult{VNIC: "vnet3", Slot: 0, Filter: "firewall", Seconds: 0.012}},
		"POST /v1/vnics/vnet3/filters/1/reload": apiError(501, api.CodeNotSupported, "filter count cannot reload"),
		"POST /v1/vnics/vnet9/filters/0/reload": apiError(404, api.CodeNotAttached, "vnet9: not attached"),
		"POST /v1/vnics/vnet3/filters/2/reload": apiError(400, api.CodeInvalidParam, "web.json:3:4: bad"),
	})
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"fw", "load", "vnet3", "0"}, ExitOK, "vnet3 slot 0 (firewall): policy reloaded in 12ms"},
		{[]string{"fw", "load", "vnet3", "1"}, ExitFailure, ""},
		{[]string{"fw", "load", "vnet9", "0"}, ExitNotFound, ""},
		{[]string{"fw", "load", "vnet3", "2"}, ExitBadInput, ""},
		{[]string{"fw", "load", "vnet3", "x"}, ExitUsage, ""},
	} {
		r := vfctl(t, ctx, f.socket, tc.args...)
		if r.code != tc.code || !contains(r.stdout, tc.want) {
			t.Errorf("%v: exit %d (want %d), stdout %q, stderr %q", tc.args, r.code, tc.code, r.stdout, r.stderr)
		}
	}
}
