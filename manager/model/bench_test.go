package model

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/vnicfilter/vnicfilter/manager/api"
)

// scaleConfig: hosts × vmsPerHost VMs with one vNIC each, tiers by tag
// (web, app, db, in turn), three tier groups, three policies naming them.
func scaleConfig(hosts, vmsPerHost int) *Config {
	c := New()
	tiers := []string{"web", "app", "db"}
	for h := range hosts {
		name := fmt.Sprintf("h%03d", h)
		c.Hosts[name] = api.Host{Name: name}
		var inv api.Inventory
		for v := range vmsPerHost {
			vm := fmt.Sprintf("vm-%03d-%03d", h, v)
			inv.VMs = append(inv.VMs, api.VM{Name: vm, VNICs: []api.VNIC{{Name: fmt.Sprintf("vnet%d", v), IPs: []string{fmt.Sprintf("10.%d.%d.%d", h/250, h%250, v+1)}}}})
			c.Tags[vm] = api.Tags{"tier": tiers[(h*vmsPerHost+v)%3]}
		}
		c.Inventory[name] = inv
	}
	for i, t := range tiers {
		c.Groups[t] = api.Group{Name: t, Selector: map[string]string{"tier": t}}
		if i == 0 {
			continue
		}
		p := t + "-in"
		c.Policies[p] = api.Policy{Name: p, Defaults: map[string]string{"to-vm": "deny"}, Rules: []json.RawMessage{
			json.RawMessage(fmt.Sprintf(`{"direction":"to-vm","src_groups":[%q],"proto":"tcp","dst_ports":[%d],"action":"allow"}`, tiers[i-1], 8000+i)),
		}}
		c.Assignments[p] = api.Assignment{Name: p, Policy: p, Group: t}
	}
	return c
}

// BenchmarkDesired: every host's desired state for 50 hosts × 100 vNICs,
// what the manager recomputes on each configuration change.
func BenchmarkDesired(b *testing.B) {
	c := scaleConfig(50, 100)
	if err := c.Validate(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		d := c.Desired()
		if len(d) != 50 {
			b.Fatal(len(d))
		}
	}
}
