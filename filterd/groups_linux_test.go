package filterd_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"reflect"
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
	db.ServeTCP(t, 5432, nil)
	db.ServeTCP(t, 22, nil)
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
	if _, err := d.client.SetChain(ctx, web1.TapName, api.ChainRequest{Filters: []api.FilterSpec{{Name: "count"}}, Tags: []string{"web"}, Addresses: []string{web1.IPv4.IP.String()}, MAC: web1.MAC.String()}); err != nil {
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
	// web1's guest MAC too (untagging left it).
	ls, err := d.client.Labels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	macs := map[string]string{}
	for _, l := range ls {
		macs[l.VNIC] = l.MAC
	}
	if macs[web1.TapName] != web1.MAC.String() || macs[web2.TapName] != "" {
		t.Errorf("guest MACs after restart: %v, want %s on %s only", macs, web1.MAC, web1.TapName)
	}
}

// TestLabelsMAC: a vNIC's guest MAC is a label. A chain request records
// it (any case, reported lower case); alone it changes nothing else, and
// a request without one leaves it. A bad MAC is refused naming the field
// and changes nothing (neither the labels nor the chain). PUT labels and
// vfctl label --mac set it, vfctl labels shows it; it survives a filterd
// restart and goes with the chain.
func TestLabelsMAC(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	t.Parallel()
	host := testkit.NewHost(t)
	vm := host.AddVM(t, "web")
	d := newDaemon(t, host)
	ctx := context.Background()
	addr, mac := vm.IPv4.IP.String(), vm.MAC.String()
	const other = "52:54:00:0a:0b:0c"
	want := func(step string, w api.VNICLabels) {
		t.Helper()
		ls, err := d.client.Labels(ctx)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		got := api.VNICLabels{VNIC: vm.TapName, Tags: []string{}, Addresses: []string{}} // not listed
		for _, l := range ls {
			if l.VNIC == vm.TapName {
				got = l
			}
		}
		w.VNIC = vm.TapName
		if w.Tags == nil {
			w.Tags = []string{}
		}
		if w.Addresses == nil {
			w.Addresses = []string{}
		}
		if !reflect.DeepEqual(got, w) {
			t.Errorf("%s: labels %+v, want %+v", step, got, w)
		}
	}
	count := []api.FilterSpec{{Name: "count"}}
	const owner = "libvirt:web"

	if _, err := d.client.SetChain(ctx, vm.TapName, api.ChainRequest{Owner: owner, Filters: count,
		Tags: []string{"web"}, Addresses: []string{addr}, MAC: strings.ToUpper(mac)}); err != nil {
		t.Fatal(err)
	}
	want("chain request", api.VNICLabels{Owner: owner, Chain: true, Tags: []string{"web"}, Addresses: []string{addr}, MAC: mac})
	if _, err := d.client.SetChain(ctx, vm.TapName, api.ChainRequest{Owner: owner, Filters: count, MAC: "52-54-00-0A-0B-0C", Replace: true}); err != nil {
		t.Fatal(err)
	}
	want("MAC only", api.VNICLabels{Owner: owner, Chain: true, Tags: []string{"web"}, Addresses: []string{addr}, MAC: other})
	if _, err := d.client.SetChain(ctx, vm.TapName, api.ChainRequest{Owner: owner, Filters: count, Tags: []string{"db"}, Addresses: []string{addr}, Replace: true}); err != nil {
		t.Fatal(err)
	}
	want("tags without MAC", api.VNICLabels{Owner: owner, Chain: true, Tags: []string{"db"}, Addresses: []string{addr}, MAC: other})

	for _, bad := range []string{"01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "52:54:00:0a:0b", "52:54:00:0a:0b:0c:0d:0e", "web"} {
		_, err := d.client.SetChain(ctx, vm.TapName, api.ChainRequest{Owner: owner, Filters: []api.FilterSpec{{Name: "count"}, {Name: "count"}},
			Tags: []string{"web"}, MAC: bad, Replace: true})
		if !api.IsCode(err, api.CodeBadRequest) || !strings.Contains(err.Error(), "mac: ") {
			t.Errorf("chain request with MAC %q: %v, want bad_request naming mac", bad, err)
		}
		_, err = d.client.SetLabels(ctx, vm.TapName, api.Labels{Tags: []string{"web"}, MAC: bad})
		if !api.IsCode(err, api.CodeBadRequest) || !strings.Contains(err.Error(), "mac: ") {
			t.Errorf("PUT labels with MAC %q: %v, want bad_request naming mac", bad, err)
		}
	}
	want("bad MACs", api.VNICLabels{Owner: owner, Chain: true, Tags: []string{"db"}, Addresses: []string{addr}, MAC: other})
	if v, err := d.client.VNIC(ctx, vm.TapName); err != nil || len(v.Slots) != 1 {
		t.Errorf("a refused chain request changed the chain: %+v %v", v, err)
	}

	ch, err := d.client.SetLabels(ctx, vm.TapName, api.Labels{Tags: []string{"db"}, Addresses: []string{addr}, MAC: mac})
	if err != nil || len(ch.Groups) != 0 {
		t.Fatalf("PUT labels, a new MAC only: %+v %v (no group changes)", ch, err)
	}
	want("PUT labels", api.VNICLabels{Owner: owner, Chain: true, Tags: []string{"db"}, Addresses: []string{addr}, MAC: mac})
	if out, err := d.vfctl("label", vm.TapName, "--tag", "web", "--mac", strings.ToUpper(other)); err != nil {
		t.Fatalf("vfctl label --mac: %v\n%s", err, out)
	}
	want("vfctl label --mac", api.VNICLabels{Owner: owner, Chain: true, Tags: []string{"web"}, MAC: other})
	if out, err := d.vfctl("label", vm.TapName, "--mac", "01:00:5e:00:00:01"); err == nil || !strings.Contains(out, "mac: ") {
		t.Errorf("vfctl label with a multicast MAC: %v\n%s", err, out)
	}
	if out, err := d.vfctl("labels"); err != nil || !strings.Contains(out, other) {
		t.Errorf("vfctl labels does not show the MAC: %v\n%s", err, out)
	}

	d.kill()
	d.start()
	want("after restart", api.VNICLabels{Owner: owner, Chain: true, Tags: []string{"web"}, MAC: other})
	if err := d.client.Detach(ctx, vm.TapName); err != nil {
		t.Fatal(err)
	}
	want("after detach", api.VNICLabels{})
}
