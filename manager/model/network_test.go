package model

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/filters/encap"
	"github.com/vnicfilter/vnicfilter/filters/encrypt"
	"github.com/vnicfilter/vnicfilter/manager/api"
)

func testKey(t *testing.T) string {
	t.Helper()
	k, err := encrypt.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.Public().String()
}

// netLab: three hosts with underlay addresses and tunnels; tenants a and
// b use the same MACs and addresses in two segments; pci VMs on h1 and h3
// are paired for encryption.
func netLab(t *testing.T) *Config {
	c := New()
	now := time.Now()
	vm := func(name, nic, mac string, ips ...string) api.VM {
		return api.VM{Name: name, VNICs: []api.VNIC{{Name: nic, MAC: mac, IPs: ips}}}
	}
	for i, h := range []string{"h1", "h2", "h3"} {
		c.Hosts[h] = api.Host{Name: h}
		c.Inventory[h] = api.Inventory{Underlay: "192.0.2." + string(rune('1'+i)), ReportedAt: now,
			Tunnel: &api.Tunnel{PublicKey: testKey(t), Endpoint: "192.0.2." + string(rune('1'+i)) + ":51820"}}
	}
	set := func(h string, vms ...api.VM) {
		inv := c.Inventory[h]
		inv.VMs = vms
		c.Inventory[h] = inv
	}
	set("h1", vm("a1", "vnet0", "02:00:00:00:00:01", "10.0.0.1"), vm("b1", "vnet1", "02:00:00:00:00:01", "10.0.0.1"),
		vm("pci1", "vnet2", "02:00:00:00:01:01", "10.99.0.1"))
	set("h2", vm("a2", "vnet0", "02:00:00:00:00:02", "10.0.0.2"))
	set("h3", vm("b2", "vnet0", "02:00:00:00:00:02", "10.0.0.2"), vm("pci2", "vnet1", "02:00:00:00:01:02", "10.99.0.2"),
		vm("plain", "vnet2", "02:00:00:00:01:03", "10.99.0.3"))
	c.Groups["tenant-a"] = api.Group{Name: "tenant-a", NameGlob: "a*"}
	c.Groups["tenant-b"] = api.Group{Name: "tenant-b", NameGlob: "b*"}
	c.Groups["pci"] = api.Group{Name: "pci", NameGlob: "pci*"}
	c.Segments["a"] = api.Segment{Name: "a", VNI: 100, Group: "tenant-a", GBP: 7}
	c.Segments["b"] = api.Segment{Name: "b", VNI: 200, Group: "tenant-b"}
	c.Encryptions["pci"] = api.Encryption{Name: "pci", From: "pci", To: "pci"}
	if err := c.Validate(); err != nil {
		t.Fatalf("net lab: %v", err)
	}
	return c
}

func vnicOf(t *testing.T, d api.HostDesired, name string) api.DesiredVNIC {
	t.Helper()
	for _, v := range d.VNICs {
		if v.VNIC == name {
			return v
		}
	}
	t.Fatalf("host %s: no vNIC %s in %+v", d.Host, name, d.VNICs)
	return api.DesiredVNIC{}
}

func TestSegmentsDesired(t *testing.T) {
	c := netLab(t)
	d := c.Desired()
	a1 := vnicOf(t, d["h1"], "vnet0")
	if a1.Error != "" || len(a1.Chain) != 1 || a1.Chain[0].Filter != "encap" {
		t.Fatalf("a1: %+v", a1)
	}
	want := map[string]string{"vni": "100", "mac": "02:00:00:00:00:01", "local_ip": "192.0.2.1", "group": "7"}
	for k, v := range want {
		if a1.Chain[0].Params[k] != v {
			t.Errorf("a1 encap %s = %q, want %q (%v)", k, a1.Chain[0].Params[k], v, a1.Chain[0].Params)
		}
	}
	if b1 := vnicOf(t, d["h1"], "vnet1"); b1.Chain[0].Params["vni"] != "200" || b1.Chain[0].Params["group"] != "" {
		t.Errorf("b1: %+v", b1.Chain)
	}
	// h1's table: both its segments, each with its members only; the
	// same MAC and address in both segments.
	var tab encap.Table
	if err := json.Unmarshal(d["h1"].HostDocs.Encap.Document, &tab); err != nil {
		t.Fatal(err)
	}
	if len(tab.Segments) != 2 || tab.Segments[0].VNI != 100 || !slices.Equal(tab.Segments[0].Hosts, []string{"192.0.2.1", "192.0.2.2"}) ||
		tab.Segments[1].VNI != 200 || !slices.Equal(tab.Segments[1].Hosts, []string{"192.0.2.1", "192.0.2.3"}) {
		t.Errorf("h1 segments: %+v", tab.Segments)
	}
	if len(tab.Entries) != 4 {
		t.Errorf("h1 entries: %+v", tab.Entries)
	}
	if _, err := encap.ParseTable(tab); err != nil {
		t.Errorf("h1 table does not parse: %v", err)
	}
	// h2 only has segment 100.
	var tab2 encap.Table
	_ = json.Unmarshal(d["h2"].HostDocs.Encap.Document, &tab2)
	if len(tab2.Segments) != 1 || tab2.Segments[0].VNI != 100 || len(tab2.Entries) != 2 {
		t.Errorf("h2 table: %+v", tab2)
	}

	// Moving a2 to h3: h2 leaves segment 100, h3 joins it; the entry
	// follows.
	c2 := c.Clone()
	inv2, inv3 := c2.Inventory["h2"], c2.Inventory["h3"]
	a2 := inv2.VMs[0]
	inv2.VMs = nil
	inv3.VMs = append(slices.Clone(inv3.VMs), a2)
	c2.Inventory["h2"], c2.Inventory["h3"] = inv2, inv3
	d2 := c2.Desired()
	var moved encap.Table
	_ = json.Unmarshal(d2["h1"].HostDocs.Encap.Document, &moved)
	if !slices.Equal(moved.Segments[0].Hosts, []string{"192.0.2.1", "192.0.2.3"}) {
		t.Errorf("after the move, segment 100 hosts %v", moved.Segments[0].Hosts)
	}
	for _, e := range moved.Entries {
		if e.MAC == "02:00:00:00:00:02" && e.VNI == 100 && e.Host != "192.0.2.3" {
			t.Errorf("a2's entry still on %s", e.Host)
		}
	}
	if d2["h2"].HostDocs.Encap == nil || strings.Contains(string(d2["h2"].HostDocs.Encap.Document), "192.0.2.2") {
		t.Errorf("h2 after the move: %s", d2["h2"].HostDocs.Encap.Document)
	}
	if StateHash(d2["h1"]) == StateHash(d["h1"]) {
		t.Error("h1's state hash did not change with its table")
	}

	// A VM in both segments, a host without an underlay, a vNIC without
	// a MAC: the vNIC says why; the rest is unaffected.
	c3 := c.Clone()
	c3.Groups["both"] = api.Group{Name: "both", VMs: []string{"a1", "b1"}}
	c3.Segments["c"] = api.Segment{Name: "c", VNI: 300, Group: "both"}
	inv := c3.Inventory["h2"]
	inv.Underlay = ""
	c3.Inventory["h2"] = inv
	d3 := c3.Desired()
	if e := vnicOf(t, d3["h1"], "vnet0").Error; !strings.Contains(e, "VM a1 is in 2 segments, a (VNI 100) and c (VNI 300)") {
		t.Errorf("a1 in two segments: %q", e)
	}
	if e := vnicOf(t, d3["h2"], "vnet0").Error; !strings.Contains(e, "host h2 reported no underlay address") {
		t.Errorf("h2 without underlay: %q", e)
	}
	if d3["h2"].HostDocs.Encap != nil {
		t.Errorf("h2 without underlay gets a table")
	}
}

func TestEncryptionDesired(t *testing.T) {
	c := netLab(t)
	d := c.Desired()
	p1 := vnicOf(t, d["h1"], "vnet2")
	if p1.Error != "" || len(p1.Chain) != 1 || p1.Chain[0].Filter != "encrypt" || p1.Chain[0].Params["policy"] != "api" {
		t.Fatalf("pci1: %+v", p1)
	}
	if plain := vnicOf(t, d["h3"], "vnet2"); len(plain.Chain) != 0 {
		t.Errorf("plain VM gets %+v", plain.Chain)
	}
	peersOf := func(h string) *encrypt.Peers {
		t.Helper()
		doc := d[h].HostDocs.EncryptPeers
		if doc == nil || doc.Error != "" {
			t.Fatalf("%s peers: %+v", h, doc)
		}
		p, err := encrypt.ParsePeers(doc.Document)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := peersOf("h1")
	if len(p.Peers) != 2 || p.Peers[0].Name != "h2" || p.Peers[1].Name != "h3" || len(p.Prefixes) != 1 || p.Prefixes[0].String() != "10.99.0.1/32" {
		t.Fatalf("h1 peers: %+v", p)
	}
	if len(p.Peers[1].Prefixes) != 1 || p.Peers[1].Prefixes[0].String() != "10.99.0.2/32" || p.Peers[1].Endpoint.String() != "192.0.2.3:51820" {
		t.Errorf("h1's view of h3: %+v", p.Peers[1])
	}
	if k := p.Peers[1].PublicKey.String(); k != c.Inventory["h3"].Tunnel.PublicKey {
		t.Errorf("h3's key %s, want %s", k, c.Inventory["h3"].Tunnel.PublicKey)
	}
	pol, err := encrypt.ParsePolicy(d["h1"].HostDocs.EncryptPolicy.Document)
	if err != nil {
		t.Fatal(err)
	}
	if ds := pol.VNICs["vnet2"]; len(ds) != 1 || ds[0].Prefix.String() != "10.99.0.2/32" {
		t.Errorf("h1 policy: %+v", pol.VNICs)
	}

	// Rotation on h3: every other host's document changes, h3's own
	// does not (its peers did not change).
	c2 := c.Clone()
	inv := c2.Inventory["h3"]
	inv.Tunnel = &api.Tunnel{PublicKey: testKey(t), Endpoint: inv.Tunnel.Endpoint}
	c2.Inventory["h3"] = inv
	d2 := c2.Desired()
	if d2["h1"].HostDocs.EncryptPeers.Hash == d["h1"].HostDocs.EncryptPeers.Hash || d2["h2"].HostDocs.EncryptPeers.Hash == d["h2"].HostDocs.EncryptPeers.Hash {
		t.Error("h3's new key did not reach h1 and h2")
	}
	if d2["h3"].HostDocs.EncryptPeers.Hash != d["h3"].HostDocs.EncryptPeers.Hash {
		t.Error("h3's own document changed with its key")
	}

	// Removing h3 revokes it: gone from every document.
	c3 := c.Clone()
	delete(c3.Hosts, "h3")
	delete(c3.Inventory, "h3")
	d3 := c3.Desired()
	for _, h := range []string{"h1", "h2"} {
		if strings.Contains(string(d3[h].HostDocs.EncryptPeers.Document), c.Inventory["h3"].Tunnel.PublicKey) {
			t.Errorf("%s still lists h3's key", h)
		}
	}

	// A space: protected as a whole beside the members' addresses.
	c6 := c.Clone()
	c6.Encryptions["pci"] = api.Encryption{Name: "pci", From: "pci", To: "pci", Space: []string{"10.99.0.0/16"}}
	d6 := c6.Desired()
	if doc := d6["h1"].HostDocs.EncryptPolicy; doc.Error != "" {
		t.Fatalf("policy with a space: %s", doc.Error)
	} else if pol, err := encrypt.ParsePolicy(doc.Document); err != nil {
		t.Fatal(err)
	} else if ds := pol.VNICs["vnet2"]; len(ds) != 2 || ds[0].Prefix.String() != "10.99.0.0/16" || ds[1].Prefix.String() != "10.99.0.2/32" {
		t.Errorf("pci1's destinations with a space: %v", ds)
	}

	// A VM both in a segment and encrypted is refused on its vNIC.
	c4 := c.Clone()
	c4.Encryptions["ab"] = api.Encryption{Name: "ab", From: "tenant-a", To: "pci"}
	d4 := c4.Desired()
	if e := vnicOf(t, d4["h1"], "vnet0").Error; !strings.Contains(e, "VM a1 is in segment a and protected by encryption ab") {
		t.Errorf("a1 in a segment and encrypted: %q", e)
	}
	// A host without a tunnel: its protected vNICs say so, no documents.
	c5 := c.Clone()
	inv5 := c5.Inventory["h3"]
	inv5.Tunnel = nil
	c5.Inventory["h3"] = inv5
	d5 := c5.Desired()
	if e := vnicOf(t, d5["h3"], "vnet1").Error; !strings.Contains(e, "host h3 reported no tunnel key") {
		t.Errorf("h3 without tunnel: %q", e)
	}
	if d5["h3"].HostDocs.EncryptPeers != nil || strings.Contains(string(d5["h1"].HostDocs.EncryptPeers.Document), "192.0.2.3") {
		t.Errorf("a host without tunnel is a peer")
	}
}
