package cli

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filters/firewall"
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
	old := cannedVNIC()
	old.Name = "vnet5"
	old.Slots = append(old.Slots, api.Slot{Slot: 1, Filter: "firewall", Params: map[string]string{"policy": abs}})
	// What runs on vnet3 is not the file as it is now.
	running := `{"version": 1, "defaults": {"from-vm": "allow", "to-vm": "deny"}, "rules": [
		{"name": "ssh-all", "direction": "to-vm", "proto": "tcp", "dst_ports": [22], "action": "allow"}]}`
	f := newFakeDaemon(t, map[string]cannedReply{
		"GET /v1/vnics/vnet3": {body: withFW},
		"GET /v1/vnics/vnet3/filters/3/inspect": {body: api.InspectResult{VNIC: "vnet3", Slot: 3, Filter: "firewall", State: firewall.PolicyView{
			View: "policy", Generation: 7, File: abs, SHA256: "00", Rules: 1, Source: running, LoadedAt: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}}},
		"GET /v1/vnics/vnet5":                   {body: old},
		"GET /v1/vnics/vnet5/filters/1/inspect": apiError(501, api.CodeNotSupported, "filter firewall has no inspector"),
		"GET /v1/vnics/vnet4":                   {body: cannedVNIC()},
		"GET /v1/vnics/vnet9":                   apiError(404, api.CodeNotAttached, "vnet9: not attached"),
	})
	r := vfctl(t, ctx, f.socket, "fw", "explain", "vnet3", "to-vm tcp 10.0.99.3:1234 -> 10.0.0.1:22")
	if r.code != ExitOK || !contains(r.stdout, "running on vnet3 slot 3, generation 7") || !contains(r.stdout, `rule 0 "ssh-all"`) ||
		!contains(r.stdout, "the file has changed since") {
		t.Errorf("live explain: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if q := f.query("GET /v1/vnics/vnet3/filters/3/inspect"); q != "source=true&view=policy" {
		t.Errorf("explain asked inspect?%s", q)
	}
	// A filterd without the policy view: the file, as it is now.
	r = vfctl(t, ctx, f.socket, "fw", "explain", "vnet5", "to-vm tcp 10.0.99.3:1234 -> 10.0.0.1:22")
	if r.code != ExitOK || !contains(r.stdout, "(firewall of vnet5, the file as it is now)") || !contains(r.stdout, `rule 2 "ssh-admins"`) {
		t.Errorf("live explain, fallback: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, vnic := range []string{"vnet4", "vnet9"} {
		if r := vfctl(t, ctx, f.socket, "fw", "explain", vnic, "to-vm tcp 10.0.99.3:1234 -> 10.0.0.1:22"); r.code != ExitNotFound {
			t.Errorf("%s: exit %d, want %d: %s", vnic, r.code, ExitNotFound, r.stderr)
		}
	}
}

func TestFwConnsTop(t *testing.T) {
	ctx := context.Background()
	withFW := cannedVNIC()
	withFW.Slots = append(withFW.Slots, api.Slot{Slot: 2, Filter: "firewall"})
	zero := 0
	conns := []firewall.Conn{
		{Proto: "tcp", Family: 4, VM: "10.99.0.2", VMPort: 5001, Remote: "10.99.0.1", RemotePort: 40000, Dir: "to-vm", State: "established",
			AgeSeconds: 65, IdleSeconds: 0.2, ExpiresInSeconds: 432000, Packets: 1234, Bytes: 5 << 20, Rule: "a-to-5001", RuleIndex: &zero},
		{Proto: "icmp", Family: 4, VM: "10.99.0.2", VMPort: 77, Remote: "10.99.0.9", Dir: "from-vm", State: "other", AgeSeconds: 3, Packets: 2, Bytes: 196},
		{Proto: "udp", Family: 6, VM: "fd99::2", VMPort: 5353, Remote: "fd99::1", RemotePort: 53, Dir: "from-vm", State: "udp", Packets: 1, Bytes: 80},
	}
	inspect := "GET /v1/vnics/vnet3/filters/2/inspect"
	f := newFakeDaemon(t, map[string]cannedReply{
		"GET /v1/vnics/vnet3": {body: withFW},
		inspect:               {body: api.InspectResult{VNIC: "vnet3", Slot: 2, Filter: "firewall", State: firewall.ConnsView{View: "conns", Flows: 3, Expired: 1, Capacity: 4096, Conns: conns}}},
		"GET /v1/vnics/vnet4": {body: cannedVNIC()},
	})
	r := vfctl(t, ctx, f.socket, "fw", "conns", "vnet3")
	for _, w := range []string{"vnet3 slot 2: 3 flows, 1 expired awaiting the sweep, table size 4096", "10.99.0.2:5001", "10.99.0.1:40000",
		"established", "1m5s", "1.23k", "5.00 MiB", "a-to-5001", "10.99.0.2 id=77", "[fd99::2]:5353"} {
		if r.code != ExitOK || !contains(r.stdout, w) {
			t.Errorf("fw conns: exit %d, output lacks %q:\n%s%s", r.code, w, r.stdout, r.stderr)
		}
	}
	if q := f.query(inspect); q != "limit=100&view=conns" {
		t.Errorf("fw conns asked inspect?%s", q)
	}
	r = vfctl(t, ctx, f.socket, "-o", "json", "fw", "conns", "vnet3", "--limit", "5")
	var v firewall.ConnsView
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || len(v.Conns) != 3 || v.Conns[0].Bytes != 5<<20 {
		t.Errorf("fw conns -o json: %v\n%s", err, r.stdout)
	}
	if q := f.query(inspect); q != "limit=5&view=conns" {
		t.Errorf("fw conns --limit 5 asked inspect?%s", q)
	}

	g := newFakeDaemon(t, map[string]cannedReply{
		"GET /v1/vnics/vnet3": {body: withFW},
		inspect: {body: api.InspectResult{VNIC: "vnet3", Slot: 2, Filter: "firewall", State: firewall.TopView{View: "top", By: "rules",
			Rules: []firewall.RuleHits{{Index: 4, Name: "web", Action: "allow", Hits: 900}, {Index: 0, Name: "ssh", Action: "reject", Hits: 12}}}}},
	})
	r = vfctl(t, ctx, g.socket, "fw", "top", "vnet3", "--by", "rules")
	if r.code != ExitOK || !contains(r.stdout, "RULE") || !contains(r.stdout, "web") || !contains(r.stdout, "900") {
		t.Errorf("fw top --by rules: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if q := g.query(inspect); q != "by=rules&limit=10&view=top" {
		t.Errorf("fw top asked inspect?%s", q)
	}
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"fw", "conns", "vnet4"}, ExitNotFound},
		{[]string{"fw", "conns", "vnet3", "--slot", "1"}, ExitNotFound},
		{[]string{"fw", "conns", "vnet3", "--limit", "0"}, ExitUsage},
		{[]string{"fw", "top", "vnet3", "--by", "color"}, ExitUsage},
	} {
		if r := vfctl(t, ctx, f.socket, tc.args...); r.code != tc.code {
			t.Errorf("%v: exit %d, want %d: %s", tc.args, r.code, tc.code, r.stderr)
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
