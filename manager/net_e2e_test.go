package manager_test

import (
	"encoding/base64"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/manager/api"
)

// Segments and encryptions through the API: stored with their revision,
// read back (also with a read-only token, which may not write), listed,
// replaced, deleted; every refusal answers its status with the model's
// message and leaves the store as it was; a group they name cannot be
// deleted; they survive a restart.
func TestSegmentsAndEncryptions(t *testing.T) {
	m := startManager(t, filepath.Join(t.TempDir(), "mgr"))
	ctx := ctxT(t)
	seed(t, m)
	blue, err := m.admin.PutSegment(ctx, api.Segment{Name: "blue", VNI: 100, Group: "web", GBP: 10, UnderlayMTU: 9000, Description: "web overlay"})
	if err != nil {
		t.Fatal(err)
	}
	if blue.Revision == 0 || blue.VNI != 100 || blue.Group != "web" {
		t.Fatalf("stored segment %+v", blue)
	}
	pci, err := m.admin.PutEncryption(ctx, api.Encryption{Name: "pci", From: "db", To: "db"})
	if err != nil {
		t.Fatal(err)
	}
	if pci.Revision <= blue.Revision {
		t.Fatalf("encryption revision %d, segment's %d: want a later one", pci.Revision, blue.Revision)
	}
	ro, err := m.admin.CreateToken(ctx, api.TokenRequest{Role: api.RoleReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	reader := m.client(ro.Secret)
	if got, err := reader.Segment(ctx, "blue"); err != nil || got != blue {
		t.Fatalf("segment blue read back %+v %v, want %+v", got, err, blue)
	}
	if got, err := reader.Encryption(ctx, "pci"); err != nil || !reflect.DeepEqual(got, pci) {
		t.Fatalf("encryption pci read back %+v %v, want %+v", got, err, pci)
	}
	_, err = reader.PutSegment(ctx, api.Segment{Name: "red", VNI: 200, Group: "db"})
	wantStatus(t, "read-only PUT segment", err, 403, "needs an admin token")
	wantStatus(t, "read-only DELETE encryption", reader.DeleteEncryption(ctx, "pci"), 403, "needs an admin token")

	rev0, err := m.admin.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := dump(t, m)
	for _, tc := range []struct {
		name   string
		do     func() error
		status int
		msg    string
	}{
		{"vni taken", func() error {
			_, err := m.admin.PutSegment(ctx, api.Segment{Name: "red", VNI: 100, Group: "db"})
			return err
		}, 422, "segment red: vni 100 is already segment blue's"},
		{"vni out of range", func() error {
			_, err := m.admin.PutSegment(ctx, api.Segment{Name: "red", VNI: 1 << 24, Group: "db"})
			return err
		}, 422, "segment red: vni 16777216 out of range 1-16777215"},
		{"segment of an unknown group", func() error {
			_, err := m.admin.PutSegment(ctx, api.Segment{Name: "red", VNI: 200, Group: "ghost"})
			return err
		}, 422, `segment red: unknown group "ghost"`},
		{"gbp out of range", func() error {
			_, err := m.admin.PutSegment(ctx, api.Segment{Name: "red", VNI: 200, Group: "db", GBP: 70000})
			return err
		}, 422, "segment red: gbp 70000 out of range 0-65535"},
		{"underlay mtu out of range", func() error {
			_, err := m.admin.PutSegment(ctx, api.Segment{Name: "blue", VNI: 100, Group: "web", UnderlayMTU: 500})
			return err
		}, 422, "segment blue: underlay_mtu 500 out of range 576-65535"},
		{"bad segment name", func() error {
			_, err := m.admin.PutSegment(ctx, api.Segment{Name: "-red", VNI: 200, Group: "db"})
			return err
		}, 422, `segment name "-red"`},
		{"segment name mismatch", func() error {
			return m.admin.Do(ctx, "PUT", "/v1/segments/red", api.Segment{Name: "green", VNI: 200, Group: "db"}, nil)
		}, 400, `segment name "green" in the body differs from "red"`},
		{"unknown segment field", func() error {
			return m.admin.Do(ctx, "PUT", "/v1/segments/red", rawJSON(`{"vni":200,"group":"db","mtu":9000}`), nil)
		}, 400, `unknown field "mtu"`},
		{"encryption from an unknown group", func() error {
			_, err := m.admin.PutEncryption(ctx, api.Encryption{Name: "e", From: "ghost", To: "db"})
			return err
		}, 422, `encryption e: from: unknown group "ghost"`},
		{"encryption to an unknown group", func() error {
			_, err := m.admin.PutEncryption(ctx, api.Encryption{Name: "e", From: "web", To: "ghost"})
			return err
		}, 422, `encryption e: to: unknown group "ghost"`},
		{"encryption without to", func() error {
			_, err := m.admin.PutEncryption(ctx, api.Encryption{Name: "e", From: "web"})
			return err
		}, 422, "encryption e: to: missing"},
		{"encryption name mismatch", func() error {
			return m.admin.Do(ctx, "PUT", "/v1/encryptions/e", api.Encryption{Name: "f", From: "web", To: "db"}, nil)
		}, 400, `encryption name "f" in the body differs from "e"`},
		{"delete a group a segment names", func() error { return m.admin.DeleteGroup(ctx, "web") }, 409,
			"group web is used by group all, policy db-in, segment blue"},
		{"delete a group an encryption names", func() error { return m.admin.DeleteGroup(ctx, "db") }, 409, "group db is used by group all, assignment db-in-db, encryption pci"},
		{"get a missing segment", func() error { _, err := m.admin.Segment(ctx, "ghost"); return err }, 404, `no segment "ghost"`},
		{"delete a missing segment", func() error { return m.admin.DeleteSegment(ctx, "ghost") }, 404, `no segment "ghost"`},
		{"get a missing encryption", func() error { _, err := m.admin.Encryption(ctx, "ghost"); return err }, 404, `no encryption "ghost"`},
		{"delete a missing encryption", func() error { return m.admin.DeleteEncryption(ctx, "ghost") }, 404, `no encryption "ghost"`},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			wantStatus(t, tc.name, tc.do(), tc.status, tc.msg)
		})
	}
	if rev1, err := m.admin.Revision(ctx); err != nil || rev1 != rev0 {
		t.Errorf("refused requests moved the revision %d -> %d (%v)", rev0, rev1, err)
	}
	if after := dump(t, m); after != before {
		t.Errorf("refused requests changed the state:\nbefore %s\nafter  %s", before, after)
	}

	// Replace, list, survive a restart.
	blue2, err := m.admin.PutSegment(ctx, api.Segment{Name: "blue", VNI: 101, Group: "all"})
	if err != nil {
		t.Fatal(err)
	}
	if blue2.Revision <= blue.Revision || blue2.GBP != 0 || blue2.Description != "" {
		t.Fatalf("replaced segment %+v: want it whole, at a later revision", blue2)
	}
	if _, err := m.admin.PutSegment(ctx, api.Segment{Name: "red", VNI: 100, Group: "db"}); err != nil {
		t.Fatalf("VNI 100 freed by blue's change: %v", err)
	}
	webdb, err := m.admin.PutEncryption(ctx, api.Encryption{Name: "web-db", From: "web", To: "db"})
	if err != nil {
		t.Fatal(err)
	}
	m.restart()
	segs, err := m.admin.Segments(ctx)
	if err != nil || len(segs) != 2 || segs[0] != blue2 || segs[1].Name != "red" {
		t.Fatalf("segments after restart %+v %v, want blue (%+v) and red", segs, err, blue2)
	}
	encs, err := m.admin.Encryptions(ctx)
	if err != nil || !reflect.DeepEqual(encs, []api.Encryption{pci, webdb}) {
		t.Fatalf("encryptions after restart %+v %v, want pci and web-db", encs, err)
	}
	// Deleted, they free their groups.
	for _, del := range []func() error{
		func() error { return m.admin.DeleteSegment(ctx, "blue") },
		func() error { return m.admin.DeleteSegment(ctx, "red") },
		func() error { return m.admin.DeleteEncryption(ctx, "pci") },
		func() error { return m.admin.DeleteEncryption(ctx, "web-db") },
		func() error { return m.admin.DeleteGroup(ctx, "all") }, // blue's group
	} {
		if err := del(); err != nil {
			t.Fatal(err)
		}
	}
	wantStatus(t, "delete web", m.admin.DeleteGroup(ctx, "web"), 409, "group web is used by policy db-in: remove")
	if segs, err := m.admin.Segments(ctx); err != nil || len(segs) != 0 {
		t.Fatalf("segments after deletes %+v %v, want []", segs, err)
	}
	if encs, err := m.admin.Encryptions(ctx); err != nil || len(encs) != 0 {
		t.Fatalf("encryptions after deletes %+v %v, want []", encs, err)
	}
}

// An agent's inventory with a bad underlay address or tunnel is refused
// (422, naming the field) and the previous report stays; a good one is
// stored.
func TestInventoryUnderlayAndTunnel(t *testing.T) {
	m := startManager(t, filepath.Join(t.TempDir(), "mgr"))
	ctx := ctxT(t)
	a := m.enroll(t, "h1")
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	vms := []api.VM{{Name: "web1", VNICs: []api.VNIC{{Name: "vnet0", MAC: "52:54:00:00:00:01", IPs: []string{"10.0.0.1"}}}}}
	if _, err := a.c.PutInventory(ctx, api.Inventory{VMs: vms, Underlay: "192.0.2.1", Tunnel: &api.Tunnel{PublicKey: key, Endpoint: "192.0.2.1:51820"}}); err != nil {
		t.Fatalf("good inventory refused: %v", err)
	}
	// The accepted report changes h1's desired state, whose version the
	// manager stores in the background: wait for the store to settle.
	rev0, err := m.admin.Revision(ctx)
	for deadline := time.Now().Add(10 * time.Second); err == nil && time.Now().Before(deadline); {
		time.Sleep(300 * time.Millisecond)
		var r int64
		if r, err = m.admin.Revision(ctx); r == rev0 {
			break
		}
		rev0 = r
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		inv  api.Inventory
		want string
	}{
		{api.Inventory{Underlay: "host1"}, `underlay: "host1" is not an IP address`},
		{api.Inventory{Underlay: "224.0.0.1"}, `underlay: "224.0.0.1" is not a unicast address`},
		{api.Inventory{Tunnel: &api.Tunnel{PublicKey: "AAAA", Endpoint: "192.0.2.1:51820"}}, "tunnel.public_key: 3 bytes, want 32"},
		{api.Inventory{Tunnel: &api.Tunnel{PublicKey: key, Endpoint: "192.0.2.1"}}, `tunnel.endpoint: "192.0.2.1": want ip:port`},
	} {
		_, err := a.c.PutInventory(ctx, tc.inv)
		wantStatus(t, "inventory "+tc.want, err, 422, tc.want)
	}
	if rev1, err := m.admin.Revision(ctx); err != nil || rev1 != rev0 {
		t.Errorf("refused inventories moved the revision %d -> %d (%v)", rev0, rev1, err)
	}
	if vms, err := m.admin.VMs(ctx); err != nil || len(vms) != 1 || vms[0].Host != "h1" {
		t.Errorf("VMs after refused reports %+v %v: want the good report's web1 on h1", vms, err)
	}
}

// The status compares the host documents: each desired one against the
// realized report by name (in sync only with the desired hash and no
// error); documents realized but not managed by the manager are listed;
// the host is in sync only when every vNIC and every document is.
func TestStatusHostDocs(t *testing.T) {
	m := startManager(t, filepath.Join(t.TempDir(), "mgr"))
	ctx := ctxT(t)
	seed(t, m)
	a := m.enroll(t, "h1")
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	if _, err := a.c.PutInventory(ctx, api.Inventory{
		VMs:      []api.VM{{Name: "web1", VNICs: []api.VNIC{{Name: "vnet0", MAC: "52:54:00:00:00:01", IPs: []string{"10.0.0.1"}}}}},
		Underlay: "192.0.2.1", Tunnel: &api.Tunnel{PublicKey: key, Endpoint: "192.0.2.1:51820"},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.admin.PutSegment(ctx, api.Segment{Name: "blue", VNI: 100, Group: "web"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.admin.PutEncryption(ctx, api.Encryption{Name: "web-web", From: "web", To: "web"}); err != nil {
		t.Fatal(err)
	}
	d, err := m.admin.Desired(ctx, "h1")
	if err != nil {
		t.Fatal(err)
	}
	var vnics []api.RealizedVNIC
	for _, v := range d.VNICs {
		vnics = append(vnics, api.RealizedVNIC{VNIC: v.VNIC, Hash: v.Hash})
	}
	want := d.HostDocs.Docs()
	// What the agent reports for the documents the manager wants, with
	// hash(name) as their hash, plus a document the manager does not
	// manage on this host.
	realize := func(hash func(name string, d *api.HostDoc) string, extra ...api.RealizedDoc) api.HostStatus {
		t.Helper()
		docs := slices.Clone(extra)
		for name, doc := range want {
			docs = append(docs, api.RealizedDoc{Name: name, Hash: hash(name, doc)})
		}
		if err := a.c.PutRealized(ctx, api.Realized{Version: d.Version, VNICs: vnics, Docs: docs}); err != nil {
			t.Fatal(err)
		}
		st, err := m.admin.Status(ctx, "h1")
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	var unmanaged []api.RealizedDoc
	for _, name := range []string{api.DocEncap, api.DocEncryptPeers, api.DocEncryptPolicy} {
		if want[name] == nil {
			unmanaged = append(unmanaged, api.RealizedDoc{Name: name, Hash: "0123456789abcdef"})
		}
	}
	t.Logf("desired documents of h1: %d managed, %d not", len(want), len(unmanaged))

	st := realize(func(_ string, d *api.HostDoc) string { return d.Hash }, unmanaged...)
	if len(st.Docs) != 3 {
		t.Fatalf("status lists %d documents, want 3: %+v", len(st.Docs), st.Docs)
	}
	allGood := true
	for _, ds := range st.Docs {
		w := want[ds.Name]
		switch {
		case w == nil:
			if !ds.InSync || ds.DesiredHash != "" || ds.RealizedHash != "0123456789abcdef" || ds.Error != "" {
				t.Errorf("unmanaged document %+v: want in sync, its realized hash, no error", ds)
			}
		case w.Error != "":
			allGood = false
			if ds.InSync || ds.Error != w.Error {
				t.Errorf("document %+v: the manager could not build it (%s): want not in sync with that error", ds, w.Error)
			}
		default:
			if !ds.InSync || ds.DesiredHash != w.Hash || ds.RealizedHash != w.Hash {
				t.Errorf("document %+v: realized with the desired hash, want in sync", ds)
			}
		}
	}
	if st.InSync != allGood {
		t.Errorf("host in sync %v, want %v: %+v", st.InSync, allGood, st)
	}
	// A realized hash that is not the desired one is not in sync.
	if len(want) > 0 {
		st = realize(func(string, *api.HostDoc) string { return "ffffffffffffffff" })
		for _, ds := range st.Docs {
			if ds.InSync {
				t.Errorf("document %+v with an old hash in sync", ds)
			}
		}
		if st.InSync {
			t.Errorf("host in sync with old documents: %+v", st)
		}
	}
	// An unmanaged document that failed puts the host out of sync.
	st = realize(func(_ string, d *api.HostDoc) string { return d.Hash }, api.RealizedDoc{Name: "encap-old", Hash: "0123456789abcdef", Error: "filterd refused it"})
	i := slices.IndexFunc(st.Docs, func(ds api.DocStatus) bool { return ds.Name == "encap-old" })
	if i < 0 || st.Docs[i].InSync || st.Docs[i].Error != "filterd refused it" || st.InSync {
		t.Errorf("status %+v: want encap-old listed with its error, host out of sync", st)
	}
	// Without any document reported, the unmanaged ones vanish and the
	// managed ones are "not reported".
	if err := a.c.PutRealized(ctx, api.Realized{Version: d.Version, VNICs: vnics}); err != nil {
		t.Fatal(err)
	}
	st, err = m.admin.Status(ctx, "h1")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Docs) != len(want) {
		t.Errorf("status lists %+v, want only the %d desired documents", st.Docs, len(want))
	}
	for _, ds := range st.Docs {
		if ds.InSync || (want[ds.Name].Error == "" && ds.Error != "not reported by the host") {
			t.Errorf("document %+v not reported: want not in sync", ds)
		}
	}
	if len(want) == 0 && !st.InSync {
		t.Errorf("no documents desired nor reported, vNICs realized: want in sync: %+v", st)
	}
}
