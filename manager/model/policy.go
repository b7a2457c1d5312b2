package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/vnicfilter/vnicfilter/filters/firewall"
	"github.com/vnicfilter/vnicfilter/manager/api"
)

// fwDoc is filters/firewall's policy file (docs/firewall.md).
type fwDoc struct {
	Version     int                 `json:"version"`
	Description string              `json:"description,omitempty"`
	Defaults    map[string]string   `json:"defaults,omitempty"`
	NonIP       string              `json:"non_ip,omitempty"`
	Groups      map[string][]string `json:"groups,omitempty"`
	Rules       []json.RawMessage   `json:"rules"`
}

// groupNames is a firewall.GroupResolver that knows which manager groups
// exist (with no addresses): enough to validate references.
type groupNames map[string]struct{}

func (g groupNames) Members(name string) ([]netip.Prefix, error) {
	if _, ok := g[name]; !ok {
		return nil, fmt.Errorf("%w %q (no manager group of that name)", firewall.ErrUnknownGroup, name)
	}
	return nil, nil
}

// ValidatePolicy checks p as the firewall will: every field, every rule,
// every group it names must be a manager group.
func (c *Config) ValidatePolicy(p api.Policy) error {
	if err := CheckName("policy", p.Name); err != nil {
		return err
	}
	doc := fwDoc{Version: 1, Defaults: p.Defaults, NonIP: p.NonIP, Rules: p.Rules}
	if doc.Rules == nil {
		doc.Rules = []json.RawMessage{}
	}
	data, err := json.Marshal(doc)
	if err != nil {
		return invalid("policy %s: %v", p.Name, err)
	}
	names := groupNames{}
	for n := range c.Groups {
		names[n] = struct{}{}
	}
	if _, err := firewall.ParsePolicy(data, firewall.ParseOptions{Groups: names}); err != nil {
		return invalid("policy %s: %s", p.Name, policyErr(err))
	}
	return nil
}

// policyErr drops the line and column of a firewall.PolicyError: they
// point into a document the manager assembled, not into what the user
// sent; the JSON path is what locates the problem.
func policyErr(err error) string {
	var pe *firewall.PolicyError
	if errors.As(err, &pe) {
		if pe.Field != "" {
			return pe.Field + ": " + pe.Err.Error()
		}
		return pe.Err.Error()
	}
	return err.Error()
}

// ruleFields is what the manager reads of a rule.
type ruleFields struct {
	Name      string   `json:"name"`
	SrcGroups []string `json:"src_groups"`
	DstGroups []string `json:"dst_groups"`
}

// policyGroups lists the groups p's rules name.
func policyGroups(p api.Policy) ([]string, error) {
	var out []string
	for _, raw := range p.Rules {
		var r ruleFields
		if err := json.Unmarshal(raw, &r); err != nil {
			return nil, err
		}
		for _, g := range append(r.SrcGroups, r.DstGroups...) {
			if !slices.Contains(out, g) {
				out = append(out, g)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// actionRank orders actions by strictness for merging defaults.
func actionRank(a string) int {
	switch a {
	case "deny":
		return 2
	case "reject":
		return 1
	}
	return 0
}

// merge assembles the firewall document enforcing every policy of ps
// (sorted by name) with group addresses from addrs:
//   - rules are concatenated in policy order, each renamed
//     "<policy>/<rule>"; the firewall sorts them stably by priority, so
//     equal priorities keep policy order;
//   - each default (and non_ip) is the strictest of the policies' (deny >
//     reject > allow), a policy that leaves one out counting with the
//     firewall's default (from-vm allow, to-vm deny, non_ip allow);
//   - every group a rule names is defined under "groups" with its
//     members' addresses (an empty group matches nothing).
func merge(ps []api.Policy, addrs func(group string) []string) ([]byte, error) {
	doc := fwDoc{Version: 1, Defaults: map[string]string{"from-vm": "allow", "to-vm": "deny"}, NonIP: "allow", Groups: map[string][]string{}, Rules: []json.RawMessage{}}
	var names []string
	for i, p := range ps {
		names = append(names, p.Name)
		for _, dir := range []string{"from-vm", "to-vm"} {
			a, ok := p.Defaults[dir]
			if !ok {
				a = map[string]string{"from-vm": "allow", "to-vm": "deny"}[dir]
			}
			if i == 0 || actionRank(a) > actionRank(doc.Defaults[dir]) {
				doc.Defaults[dir] = a
			}
		}
		nonIP := p.NonIP
		if nonIP == "" {
			nonIP = "allow"
		}
		if i == 0 || actionRank(nonIP) > actionRank(doc.NonIP) {
			doc.NonIP = nonIP
		}
		for j, raw := range p.Rules {
			var fields map[string]json.RawMessage
			if err := json.Unmarshal(raw, &fields); err != nil {
				return nil, fmt.Errorf("policy %s: rules[%d]: %w", p.Name, j, err)
			}
			var r ruleFields
			if err := json.Unmarshal(raw, &r); err != nil {
				return nil, fmt.Errorf("policy %s: rules[%d]: %w", p.Name, j, err)
			}
			name := r.Name
			if name == "" {
				name = fmt.Sprintf("rule-%d", j)
			}
			fields["name"], _ = json.Marshal(p.Name + "/" + name)
			for _, g := range append(r.SrcGroups, r.DstGroups...) {
				if _, ok := doc.Groups[g]; !ok {
					doc.Groups[g] = append([]string{}, addrs(g)...)
				}
			}
			out, err := json.Marshal(fields)
			if err != nil {
				return nil, err
			}
			doc.Rules = append(doc.Rules, out)
		}
	}
	doc.Description = "vfmanager: " + strings.Join(names, ", ")
	return json.Marshal(doc)
}
