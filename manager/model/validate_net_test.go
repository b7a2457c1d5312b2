package model

import (
	"errors"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/manager/api"
)

// validNetLab is lab with segment blue (vni 100, web) and encryption pci
// (db <-> db).
func validNetLab(t *testing.T) *Config {
	c := lab(t).Clone()
	c.Segments["blue"] = api.Segment{Name: "blue", VNI: 100, Group: "web", GBP: 10, UnderlayMTU: 9000}
	c.Encryptions["pci"] = api.Encryption{Name: "pci", From: "db", To: "db"}
	if err := c.Validate(); err != nil {
		t.Fatalf("net lab config: %v", err)
	}
	return c
}

func TestValidateNet(t *testing.T) {
	seg := func(s api.Segment) func(c *Config) { return func(c *Config) { c.Segments[s.Name] = s } }
	enc := func(e api.Encryption) func(c *Config) { return func(c *Config) { c.Encryptions[e.Name] = e } }
	for _, tc := range []struct {
		name   string
		change func(c *Config)
		want   string
	}{
		{"segment name", seg(api.Segment{Name: "-red", VNI: 200, Group: "db"}), `segment name "-red"`},
		{"vni 0", seg(api.Segment{Name: "red", VNI: 0, Group: "db"}), "segment red: vni 0 out of range 1-16777215"},
		{"vni too large", seg(api.Segment{Name: "red", VNI: 1 << 24, Group: "db"}), "segment red: vni 16777216 out of range 1-16777215"},
		{"vni negative", seg(api.Segment{Name: "red", VNI: -1, Group: "db"}), "segment red: vni -1 out of range"},
		// Sorted order: blue is checked first, so red is the one refused.
		{"vni taken", seg(api.Segment{Name: "red", VNI: 100, Group: "db"}), "segment red: vni 100 is already segment blue's"},
		{"vni taken, earlier name", seg(api.Segment{Name: "azure", VNI: 100, Group: "db"}), "segment blue: vni 100 is already segment azure's"},
		{"no group", seg(api.Segment{Name: "red", VNI: 200}), "segment red: group: missing"},
		{"unknown group", seg(api.Segment{Name: "red", VNI: 200, Group: "nope"}), `segment red: unknown group "nope"`},
		{"space not a prefix", func(c *Config) {
			c.Encryptions["sp"] = api.Encryption{Name: "sp", From: "db", To: "db", Space: []string{"10.99.0.0/16", "nope"}}
		}, `encryption sp: space[1]: "nope" is not a prefix`},
		{"space host bits", func(c *Config) {
			c.Encryptions["sp"] = api.Encryption{Name: "sp", From: "db", To: "db", Space: []string{"10.99.1.1/16"}}
		}, "encryption sp: space[0]: 10.99.1.1/16 has host bits set (did you mean 10.99.0.0/16?)"},
		{"space everything", func(c *Config) {
			c.Encryptions["sp"] = api.Encryption{Name: "sp", From: "db", To: "db", Space: []string{"0.0.0.0/0"}}
		}, "encryption sp: space[0]: 0.0.0.0/0 is every address"},
		{"gbp negative", seg(api.Segment{Name: "red", VNI: 200, Group: "db", GBP: -1}), "segment red: gbp -1 out of range 0-65535"},
		{"gbp too large", seg(api.Segment{Name: "red", VNI: 200, Group: "db", GBP: 65536}), "segment red: gbp 65536 out of range 0-65535"},
		{"mtu too small", seg(api.Segment{Name: "red", VNI: 200, Group: "db", UnderlayMTU: 575}), "segment red: underlay_mtu 575 out of range 576-65535"},
		{"mtu too large", seg(api.Segment{Name: "red", VNI: 200, Group: "db", UnderlayMTU: 65536}), "segment red: underlay_mtu 65536 out of range 576-65535"},
		{"mtu negative", seg(api.Segment{Name: "red", VNI: 200, Group: "db", UnderlayMTU: -1}), "segment red: underlay_mtu -1 out of range"},
		{"encryption name", enc(api.Encryption{Name: "a b", From: "web", To: "db"}), `encryption name "a b"`},
		{"no from", enc(api.Encryption{Name: "e", To: "db"}), "encryption e: from: missing"},
		{"no to", enc(api.Encryption{Name: "e", From: "db"}), "encryption e: to: missing"},
		{"unknown from", enc(api.Encryption{Name: "e", From: "nope", To: "db"}), `encryption e: from: unknown group "nope"`},
		{"unknown to", enc(api.Encryption{Name: "e", From: "web", To: "nope"}), `encryption e: to: unknown group "nope"`},
		{"group of a segment removed", func(c *Config) {
			delete(c.Groups, "web")
			delete(c.Groups, "all")
			c.Policies = map[string]api.Policy{}
			c.Assignments = map[string]api.Assignment{}
		},
			`segment blue: unknown group "web"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validNetLab(t).Clone()
			tc.change(c)
			err := c.Validate()
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want ErrInvalid containing %q", err, tc.want)
			}
		})
	}
}

// Limits are inclusive, and the optional fields may be left out.
func TestValidateNetAccepts(t *testing.T) {
	c := validNetLab(t).Clone()
	c.Segments["min"] = api.Segment{Name: "min", VNI: 1, Group: "db", UnderlayMTU: 576}
	c.Segments["max"] = api.Segment{Name: "max", VNI: 16777215, Group: "all", GBP: 65535, UnderlayMTU: 65535}
	c.Segments["plain"] = api.Segment{Name: "plain", VNI: 2, Group: "db"}
	c.Encryptions["web-db"] = api.Encryption{Name: "web-db", From: "web", To: "db", Description: "app tier"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

// A group a segment or an encryption names is in use: the server refuses
// to delete it, naming them.
func TestReferrersNet(t *testing.T) {
	c := validNetLab(t)
	for group, want := range map[string]string{
		"web": "group all, policy db-in, segment blue",
		"db":  "group all, assignment db-in-db, encryption pci",
	} {
		if got := strings.Join(c.Referrers("group", group), ", "); got != want {
			t.Errorf("referrers of %s = %q, want %q", group, got, want)
		}
	}
	c2 := c.Clone()
	c2.Encryptions["web-db"] = api.Encryption{Name: "web-db", From: "web", To: "db"}
	if got := strings.Join(c2.Referrers("group", "web"), ", "); got != "group all, policy db-in, segment blue, encryption web-db" {
		t.Errorf("referrers of web = %q", got)
	}
	if got := c.Referrers("policy", "db-in"); len(got) != 1 {
		t.Errorf("referrers of policy db-in = %q: segments and encryptions name no policy", got)
	}
}
