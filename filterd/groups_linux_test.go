package filterd_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// dbPolicy: the db VM takes postgres from the web tier and from admins,
// nothing else; both groups live in filterd, not in the file.
const dbPolicy = `{
  "version": 1,
  "defaults": {"from-vm": "allow", "to-vm": "deny"},
  "rules": [
    {"name": "web-to-pg", "direction": "to-vm", "src_groups": ["tag:web"], "proto": "tcp", "dst_ports": [5432], "action": "allow"},
    {"name": "admins-ssh", "direction": "to-vm", "src_groups": ["admins"], "proto": "tcp", "dst_ports": [22], "action": "allow"}
  ]
}`

// canConnect reports whether vm completes a TCP handshake with addr.
func canConnect(t *testing.T, vm *testkit.VM, addr string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	c, err := vm.DialTCP(ctx, addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// TestDynamicGroups: a firewall policy naming tag:web follows the tags:
// web1 tagged web reaches db:5432, web2 untagged does not; retagging moves
// them, and the policy on db follows without being touched. A pushed group
// (admins) works the same; deleting it while used is refused.
func TestDynamicGroups(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	t.Parallel()
	host := testkit.NewHost(t)
	web1, web2, db := host.AddVM(t, "web1"), host.AddVM(t, "web2"), host.AddVM(t, "db")
	d := newDaemon(t, host)
	ctx := context.Background()
	policy := filepath.Join(t.TempDir(), "db.json")
	if err := os.WriteFile(policy, []byte(dbPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, port := range []string{"5432", "22"} {
		ln, err := db.ListenTCP(net.JoinHostPort(db.IPv4.IP.String(), port))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	pg, ssh := net.JoinHostPort(db.IPv4.IP.String(), "5432"), net.JoinHostPort(db.IPv4.IP.String(), "22")

	chain := api.ChainRequest{Filters: []api.FilterSpec{{Name: "firewall", Params: map[string]string{"policy": policy}}}}
	// admins is not defined yet: the attach is refused naming it.
	if _, err := d.client.SetChain(ctx, db.TapName, chain); !api.IsCode(err, api.CodeInvalidParam) || !strings.Contains(err.Error(), `"admins"`) {
		t.Fatalf("attach with an undefined group: %v", err)
	}
	if _, err := d.client.SetGroup(ctx, "admins", []string{"10.0.99.0/24"}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.client.SetGroup(ctx, "admins", []string{"10.0.99.300"}); !api.IsCode(err, api.CodeBadRequest) {
		t.Errorf("bad member: %v", err)
	}
	// web1 is labelled through its own chain request, web2 not at all.
	if _, err := d.client.SetChain(ctx, web1.TapName, api.ChainRequest{Filters: []api.FilterSpec{{Name: "count"}}, Tags: []string{"web"}, Addresses: []string{web1.IPv4.IP.String()}}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.client.SetChain(ctx, db.TapName, chain); err != nil {
		t.Fatal(err)
	}
	if !canConnect(t, web1, pg) {
		t.Fatal("web1 (tag web) cannot reach db:5432")
	}
	if canConnect(t, web2, pg) || canConnect(t, web1, ssh) {
		t.Fatal("an untagged VM reached db:5432, or web reached ssh")
	}

	// Retag: web2 joins, web1 leaves. db's policy follows at once.
	start := time.Now()
	ch, err := d.client.SetLabels(ctx, web2.TapName, api.Labels{Tags: []string{"web"}, Addresses: []string{web2.IPv4.IP.String()}})
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.Reloaded) != 1 || ch.Reloaded[0].VNIC != db.TapName || ch.Reloaded[0].Error != "" {
		t.Fatalf("label change reloaded %+v, want db's firewall", ch.Reloaded)
	}
	if !canConnect(t, web2, pg) {
		t.Fatalf("web2 tagged web %v ago still cannot reach db:5432", time.Since(start))
	}
	t.Logf("tagging web2 reached db's policy in %.1f ms (reload %.1f ms)", float64(time.Since(start).Microseconds())/1000, ch.Reloaded[0].Seconds*1000)
	if _, err := d.client.SetLabels(ctx, web1.TapName, api.Labels{}); err != nil {
		t.Fatal(err)
	}
	if canConnect(t, web1, pg) {
		t.Error("web1 untagged still reaches db:5432")
	}
	g, err := d.client.Group(ctx, "tag:web")
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Members) != 1 || g.Members[0] != web2.IPv4.IP.String()+"/32" || len(g.UsedBy) != 1 {
		t.Errorf("tag:web = %+v", g)
	}
	if out, err := d.vfctl("group", "show", "tag:web"); err != nil || !strings.Contains(out, web2.TapName) {
		t.Errorf("vfctl group show: %v\n%s", err, out)
	}

	// Pushed group: admins gains web1's address, so web1 reaches ssh.
	if _, err := d.client.SetGroup(ctx, "admins", []string{web1.IPv4.IP.String()}); err != nil {
		t.Fatal(err)
	}
	if !canConnect(t, web1, ssh) {
		t.Error("web1 pushed into admins cannot reach db:22")
	}
	if _, err := d.client.DeleteGroup(ctx, "admins"); !api.IsCode(err, api.CodeFilterInUse) {
		t.Errorf("delete a group in use: %v", err)
	}

	// Groups and labels survive a filterd restart (and db's adopted policy
	// still resolves them).
	d.kill()
	d.start()
	if !canConnect(t, web2, pg) || canConnect(t, web1, pg) {
		t.Error("after restart the policy no longer follows the tags")
	}
	if gs, err := d.client.Groups(ctx); err != nil || len(gs) != 2 {
		t.Errorf("groups after restart: %+v %v", gs, err)
	}
}
