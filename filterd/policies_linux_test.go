package filterd_test

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// pgOnly lets web (10.99.0.1) reach the db VM on 5432 and nothing else.
const pgOnly = `{
  "version": 1,
  "defaults": {"from-vm": "allow", "to-vm": "deny"},
  "groups": {"web": ["10.99.0.1/32"]},
  "rules": [{"name": "pg", "direction": "to-vm", "src_groups": ["web"], "proto": "tcp", "dst_ports": [5432], "action": "allow"}]
}`

// TestPolicyDocuments: a policy document put through the API (as the
// control VM's agent does) is checked by the firewall's parser, stored
// 0600 under the state directory, used by a chain through its path, and a
// new version reloads that chain: traffic follows. A bad document is
// refused with the parser's position and changes nothing; a document in
// use cannot be deleted.
func TestPolicyDocuments(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	t.Parallel()
	host := testkit.NewHost(t)
	web, other, db := host.AddVM(t, "web"), host.AddVM(t, "other"), host.AddVM(t, "db")
	d := newDaemon(t, host)
	ctx := context.Background()
	db.ServeTCP(t, 5432, nil)
	pg := net.JoinHostPort(db.IPv4.IP.String(), "5432")

	ch, err := d.client.PutPolicy(ctx, "db-in", []byte(pgOnly))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(ch.Policy.Path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("stored document %s: %v %v, want mode 0600", ch.Policy.Path, st.Mode(), err)
	}
	if !strings.HasPrefix(ch.Policy.Path, d.dir) {
		t.Errorf("document stored at %s, outside the state directory", ch.Policy.Path)
	}
	if _, err := d.client.SetChain(ctx, db.TapName, api.ChainRequest{Filters: []api.FilterSpec{{Name: "firewall", Params: map[string]string{"policy": ch.Policy.Path}}}}); err != nil {
		t.Fatal(err)
	}
	if !canConnect(t, web, pg) || canConnect(t, other, pg) {
		t.Fatal("web must reach db:5432, other must not")
	}

	// A bad document: 400 with the parser's line, column and field; the
	// stored one and the running policy are untouched.
	bad := strings.Replace(pgOnly, `"dst_ports": [5432]`, `"dst_ports": [99999]`, 1)
	_, err = d.client.PutPolicy(ctx, "db-in", []byte(bad))
	if !api.IsCode(err, api.CodeInvalidParam) || !strings.Contains(err.Error(), "policy db-in:5:") || !strings.Contains(err.Error(), "rules[0].dst_ports[0]") {
		t.Fatalf("bad document: %v, want invalid_param naming policy db-in:5:…: rules[0].dst_ports[0]", err)
	}
	if got, err := d.client.Policy(ctx, "db-in"); err != nil || string(got) != pgOnly {
		t.Fatalf("after a refused document the stored one is %q (%v)", got, err)
	}
	if _, err := d.client.PutPolicy(ctx, "../x", []byte(pgOnly)); !api.IsCode(err, api.CodeBadRequest) {
		t.Errorf("policy name ../x: %v, want bad_request", err)
	}

	// The same document again reloads nothing; a new one reloads the
	// chain using it and traffic follows.
	if ch, err := d.client.PutPolicy(ctx, "db-in", []byte(pgOnly)); err != nil || !ch.Unchanged || len(ch.Reloaded) != 0 {
		t.Errorf("same document: %+v %v, want unchanged", ch, err)
	}
	both := strings.Replace(pgOnly, `["10.99.0.1/32"]`, `["10.99.0.1/32", "10.99.0.2/32"]`, 1)
	ch, err = d.client.PutPolicy(ctx, "db-in", []byte(both))
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.Reloaded) != 1 || ch.Reloaded[0].VNIC != db.TapName || ch.Reloaded[0].Error != "" {
		t.Fatalf("reloaded %+v, want the db chain", ch.Reloaded)
	}
	if !canConnect(t, other, pg) {
		t.Fatal("after the new document other must reach db:5432")
	}
	if infos, err := d.client.Policies(ctx); err != nil || len(infos) != 1 || len(infos[0].UsedBy) != 1 {
		t.Errorf("policies: %+v %v", infos, err)
	}
	if err := d.client.DeletePolicy(ctx, "db-in"); !api.IsCode(err, api.CodeFilterInUse) {
		t.Errorf("delete a document in use: %v, want filter_in_use", err)
	}
	if err := d.client.Detach(ctx, db.TapName); err != nil {
		t.Fatal(err)
	}
	if err := d.client.DeletePolicy(ctx, "db-in"); err != nil {
		t.Errorf("delete an unused document: %v", err)
	}
	if _, err := d.client.Policy(ctx, "db-in"); !api.IsCode(err, api.CodeNotAttached) {
		t.Errorf("deleted document: %v, want not found", err)
	}
}

// TestRecordMode: with --datapath=record filterd validates a chain
// (filter, parameters, policy document) and records it without touching
// the kernel; it survives a restart; policy documents reach it.
func TestRecordMode(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	t.Parallel()
	host := testkit.NewHost(t)
	d := newDaemon(t, host, "--datapath", "record")
	ctx := context.Background()
	ch, err := d.client.PutPolicy(ctx, "p", []byte(pgOnly))
	if err != nil {
		t.Fatal(err)
	}
	fw := api.FilterSpec{Name: "firewall", Params: map[string]string{"policy": ch.Policy.Path}}
	// No such device is needed: nothing is attached.
	if _, err := d.client.SetChain(ctx, "vnet77", api.ChainRequest{Owner: "libvirt:vm77", Filters: []api.FilterSpec{fw}, Addresses: []string{"10.1.0.7"}, MAC: "52:54:00:00:00:4D"}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.client.SetChain(ctx, "vnet78", api.ChainRequest{Filters: []api.FilterSpec{{Name: "firewall", Params: map[string]string{"policy": "/nonexistent"}}}}); !api.IsCode(err, api.CodeInvalidParam) {
		t.Errorf("a chain naming a missing policy: %v, want invalid_param", err)
	}
	if _, err := d.client.SetChain(ctx, "vnet78", api.ChainRequest{Filters: []api.FilterSpec{{Name: "nosuch"}}}); !api.IsCode(err, api.CodeUnknownFilter) {
		t.Errorf("an unknown filter: %v, want unknown_filter", err)
	}
	if _, err := d.client.SetChain(ctx, "vnet78", api.ChainRequest{Filters: []api.FilterSpec{{Name: "count"}}, MAC: "00:00:00:00:00:00"}); !api.IsCode(err, api.CodeBadRequest) || !strings.Contains(err.Error(), "mac: ") {
		t.Errorf("an all-zero MAC: %v, want bad_request naming mac", err)
	}
	if _, err := d.client.Attach(ctx, "vnet77", api.AttachRequest{Filter: api.FilterSpec{Name: "count"}}); !api.IsCode(err, api.CodeNotSupported) {
		t.Errorf("attach one filter in record mode: %v, want not_supported", err)
	}
	ch, err = d.client.PutPolicy(ctx, "p", []byte(strings.Replace(pgOnly, "10.99.0.1/32", "10.99.0.9/32", 1)))
	if err != nil || len(ch.Reloaded) != 1 || ch.Reloaded[0].VNIC != "vnet77" {
		t.Fatalf("policy change in record mode: %+v %v", ch, err)
	}
	if err := host.Do(func() error {
		_, err := net.InterfaceByName("vnet77")
		return err
	}); err == nil {
		t.Fatal("record mode created a device")
	}
	d.kill()
	d.start("--datapath", "record")
	vs, err := d.client.VNICs(ctx)
	if err != nil || len(vs) != 1 || vs[0].Name != "vnet77" || vs[0].Mode != "record" || vs[0].Owner != "libvirt:vm77" || len(vs[0].Slots) != 1 {
		t.Fatalf("recorded chains after restart: %+v %v", vs, err)
	}
	ls, err := d.client.Labels(ctx)
	if err != nil || len(ls) != 1 || !ls[0].Chain || len(ls[0].Addresses) != 1 || ls[0].Addresses[0] != "10.1.0.7" || ls[0].MAC != "52:54:00:00:00:4d" {
		t.Errorf("labels: %+v %v", ls, err)
	}
	if err := d.client.Detach(ctx, "vnet77"); err != nil {
		t.Fatal(err)
	}
}
