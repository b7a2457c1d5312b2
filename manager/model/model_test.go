package model

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/filters/firewall"
	"github.com/vnicfilter/vnicfilter/manager/api"
)

func rules(t *testing.T, js ...string) []json.RawMessage {
	var out []json.RawMessage
	for _, j := range js {
		if !json.Valid([]byte(j)) {
			t.Fatalf("bad test rule %s", j)
		}
		out = append(out, json.RawMessage(j))
	}
	return out
}

// lab: web1 (h1), db1 (h2), other (h2); groups by tag; db-in allows web
// to db on 5432.
func lab(t *testing.T) *Config {
	c := New()
	c.Hosts["h1"] = api.Host{Name: "h1"}
	c.Hosts["h2"] = api.Host{Name: "h2"}
	c.Inventory["h1"] = api.Inventory{VMs: []api.VM{{Name: "web1", VNICs: []api.VNIC{{Name: "vnet0", IPs: []string{"10.0.0.1"}}}}}}
	c.Inventory["h2"] = api.Inventory{VMs: []api.VM{
		{Name: "db1", VNICs: []api.VNIC{{Name: "vnet0", IPs: []string{"10.0.0.2", "fd00::2"}}}},
		{Name: "other", VNICs: []api.VNIC{{Name: "vnet1", IPs: []string{"10.0.0.3"}}}},
	}}
	c.Tags["web1"] = api.Tags{"tier": "web"}
	c.Tags["db1"] = api.Tags{"tier": "db"}
	c.Groups["web"] = api.Group{Name: "web", Selector: map[string]string{"tier": "web"}}
	c.Groups["db"] = api.Group{Name: "db", Selector: map[string]string{"tier": "db"}}
	c.Groups["all"] = api.Group{Name: "all", Include: []string{"web", "db"}, NameGlob: "oth*"}
	c.Policies["db-in"] = api.Policy{Name: "db-in", Defaults: map[string]string{"to-vm": "deny"},
		Rules: rules(t, `{"name":"pg","direction":"to-vm","src_groups":["web"],"proto":"tcp","dst_ports":[5432],"action":"allow"}`)}
	c.Assignments["db-in-db"] = api.Assignment{Name: "db-in-db", Policy: "db-in", Group: "db"}
	if err := c.Validate(); err != nil {
		t.Fatalf("lab config: %v", err)
	}
	return c
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(c *Config)
		want   string
	}{
		{"dangling include", func(c *Config) { c.Groups["x"] = api.Group{Name: "x", Include: []string{"nope"}} }, `group x: include[0]: unknown group "nope"`},
		{"cycle", func(c *Config) {
			c.Groups["a"] = api.Group{Name: "a", Include: []string{"b"}}
			c.Groups["b"] = api.Group{Name: "b", Include: []string{"c"}}
			c.Groups["c"] = api.Group{Name: "c", Include: []string{"a"}}
		}, "group include cycle: a -> b -> c -> a"},
		{"self include", func(c *Config) { c.Groups["s"] = api.Group{Name: "s", Include: []string{"s"}} }, "cycle: s -> s"},
		{"empty group", func(c *Config) { c.Groups["e"] = api.Group{Name: "e"} }, "group e: no members"},
		{"bad glob", func(c *Config) { c.Groups["g"] = api.Group{Name: "g", NameGlob: "web["} }, `name_glob "web["`},
		{"unknown group in rule", func(c *Config) {
			c.Policies["p"] = api.Policy{Name: "p", Rules: rules(t, `{"src_groups":["nope"],"action":"allow"}`)}
		}, `policy p: rules[0].src_groups[0]: unknown address group "nope"`},
		{"bad rule", func(c *Config) {
			c.Policies["p"] = api.Policy{Name: "p", Rules: rules(t, `{"proto":"tcp","dst_ports":[70000],"action":"allow"}`)}
		}, "policy p: rules[0].dst_ports[0]"},
		{"unknown rule field", func(c *Config) {
			c.Policies["p"] = api.Policy{Name: "p", Rules: rules(t, `{"dport":22,"action":"allow"}`)}
		}, `unknown field "dport"`},
		{"bad default", func(c *Config) {
			c.Policies["p"] = api.Policy{Name: "p", Defaults: map[string]string{"to-vm": "maybe"}}
		}, "policy p: defaults.to-vm"},
		{"assignment to unknown group", func(c *Config) {
			c.Assignments["x"] = api.Assignment{Name: "x", Policy: "db-in", Group: "nope"}
		}, `assignment x: unknown group "nope"`},
		{"assignment of unknown policy", func(c *Config) {
			c.Assignments["x"] = api.Assignment{Name: "x", Policy: "nope", Group: "db"}
		}, `assignment x: unknown policy "nope"`},
		{"bad name", func(c *Config) { c.Groups["-x"] = api.Group{Name: "-x", VMs: []string{"a"}} }, `group name "-x"`},
		{"bad tag", func(c *Config) { c.Tags["web1"] = api.Tags{"tier": "*"} }, `VM web1: invalid: tag tier value "*"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := lab(t).Clone()
			tc.change(c)
			err := c.Validate()
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want ErrInvalid containing %q", err, tc.want)
			}
		})
	}
}

func TestMembersAndDesired(t *testing.T) {
	c := lab(t)
	r := c.Resolve()
	if got := strings.Join(r.GroupsOf("other"), ","); got != "all" {
		t.Errorf("groups of other = %s, want all (by name pattern)", got)
	}
	if got := strings.Join(r.Addresses("all"), " "); got != "10.0.0.1/32 10.0.0.2/32 10.0.0.3/32 fd00::2/128" {
		t.Errorf("addresses of all = %s", got)
	}
	if refs := strings.Join(c.Referrers("group", "web"), ", "); refs != "group all, policy db-in" {
		t.Errorf("referrers of web = %q", refs)
	}
	d := c.Desired()
	h2 := d["h2"]
	if len(h2.VNICs) != 2 || len(d["h1"].VNICs) != 1 {
		t.Fatalf("desired %+v", d)
	}
	db := h2.VNICs[0]
	if db.VM != "db1" || len(db.Chain) != 1 || db.Chain[0].Filter != "firewall" || db.Error != "" {
		t.Fatalf("db1's vNIC: %+v", db)
	}
	if len(h2.VNICs[1].Chain) != 0 || len(d["h1"].VNICs[0].Chain) != 0 {
		t.Errorf("VMs in no assigned group got a chain")
	}
	// The merged document is a firewall policy allowing web1 -> db1:5432.
	pol, err := firewall.ParsePolicy(h2.Document(db.Chain[0]), firewall.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pol.Rules) != 1 || pol.Rules[0].Name != "db-in/pg" || !strings.Contains(string(h2.Document(db.Chain[0])), `"web":["10.0.0.1/32"]`) {
		t.Fatalf("merged policy %s", h2.Document(db.Chain[0]))
	}
	// Retag other as web: db1's policy changes (one more source), h1
	// does not change.
	before := map[string]string{"h1": StateHash(d["h1"]), "h2": StateHash(h2)}
	c2 := c.Clone()
	c2.Tags["other"] = api.Tags{"tier": "web"}
	d2 := c2.Desired()
	if StateHash(d2["h1"]) != before["h1"] {
		t.Error("h1 changed though nothing of it depends on the retag")
	}
	h2b := d2["h2"]
	if StateHash(h2b) == before["h2"] || !strings.Contains(string(h2b.Document(h2b.VNICs[0].Chain[0])), `"web":["10.0.0.1/32","10.0.0.3/32"]`) {
		t.Errorf("h2 did not pick up the new web member: %s", h2b.Document(h2b.VNICs[0].Chain[0]))
	}
}

func TestMergeStrictestDefault(t *testing.T) {
	a := api.Policy{Name: "a", Defaults: map[string]string{"from-vm": "allow"}, Rules: rules(t, `{"priority":10,"action":"allow"}`)}
	b := api.Policy{Name: "b", Defaults: map[string]string{"from-vm": "deny"}, NonIP: "deny", Rules: rules(t, `{"name":"x","priority":10,"action":"deny"}`)}
	doc, err := merge([]api.Policy{a, b}, func(string) []string { return nil })
	if err != nil {
		t.Fatal(err)
	}
	p, err := firewall.ParsePolicy(doc, firewall.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Defaults[0] != firewall.Deny || p.NonIP != firewall.Deny || p.Rules[0].Name != "a/rule-0" || p.Rules[1].Name != "b/x" {
		t.Fatalf("merged %s -> %+v", doc, p)
	}
}
