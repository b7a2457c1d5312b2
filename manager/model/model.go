// Package model is the manager's object model held in memory: the whole
// configuration at one store revision (hosts, their inventories, tags,
// groups, policies, assignments, segments, encryptions), its validation, group resolution, and
// the desired state it implies for each host.
//
// It has no I/O: the server loads a Config from the store, applies a
// change to a copy, validates the copy as a whole, and only then writes;
// a refused change never reaches the store.
package model

import (
	"errors"
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/vnicfilter/vnicfilter/manager/api"
)

// Errors callers branch on (the server maps them to HTTP statuses).
var (
	// ErrInvalid: the object or the configuration it would produce is
	// refused (422).
	ErrInvalid = errors.New("invalid")
	// ErrInUse: the object is referenced by others (409).
	ErrInUse = errors.New("in use")
	// ErrNotFound: no such object (404).
	ErrNotFound = errors.New("not found")
)

// Config is the configuration at one revision. Maps are keyed by name
// (Inventory by host, Tags by VM name).
type Config struct {
	Rev         int64
	Hosts       map[string]api.Host
	Inventory   map[string]api.Inventory
	Tags        map[string]api.Tags
	Groups      map[string]api.Group
	Policies    map[string]api.Policy
	Assignments map[string]api.Assignment
	Segments    map[string]api.Segment
	Encryptions map[string]api.Encryption
}

// New returns an empty Config.
func New() *Config {
	return &Config{
		Hosts: map[string]api.Host{}, Inventory: map[string]api.Inventory{}, Tags: map[string]api.Tags{},
		Groups: map[string]api.Group{}, Policies: map[string]api.Policy{}, Assignments: map[string]api.Assignment{},
		Segments: map[string]api.Segment{}, Encryptions: map[string]api.Encryption{},
	}
}

// Clone returns a copy whose maps may be changed without touching c (the
// objects themselves are shared and must be replaced, not edited).
func (c *Config) Clone() *Config {
	return &Config{
		Rev: c.Rev, Hosts: maps.Clone(c.Hosts), Inventory: maps.Clone(c.Inventory), Tags: maps.Clone(c.Tags),
		Groups: maps.Clone(c.Groups), Policies: maps.Clone(c.Policies), Assignments: maps.Clone(c.Assignments),
		Segments: maps.Clone(c.Segments), Encryptions: maps.Clone(c.Encryptions),
	}
}

var (
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	tagKeyRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$`)
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// CheckName validates an object name (host, group, policy, assignment,
// segment, encryption):
// 1–63 of letters, digits, '.', '_', '-', starting with a letter or digit.
func CheckName(kind, name string) error {
	if !nameRE.MatchString(name) {
		return invalid("%s name %q: want 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", kind, name)
	}
	return nil
}

// CheckVMName validates a VM name: what libvirt allows, minus '/' and
// control characters, at most 255 bytes.
func CheckVMName(name string) error {
	if name == "" || len(name) > 255 || strings.ContainsAny(name, "/") || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return invalid("VM name %q: want 1-255 bytes without '/' or control characters", name)
	}
	return nil
}

// CheckTags validates a VM's tags.
func CheckTags(tags api.Tags) error {
	for k, v := range tags {
		if !tagKeyRE.MatchString(k) {
			return invalid("tag key %q: want 1-63 letters, digits, '.', '_', '/' or '-'", k)
		}
		if len(v) > 63 || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) || v == "*" {
			return invalid("tag %s value %q: want at most 63 printable characters, not \"*\"", k, v)
		}
	}
	return nil
}

// Validate checks the whole configuration: every reference resolves,
// groups include no cycle, every policy parses as a firewall policy,
// segments have valid and distinct VNIs (validate_net.go).
// The first problem is returned, wrapping ErrInvalid, naming the object
// and field.
func (c *Config) Validate() error {
	for _, name := range slices.Sorted(maps.Keys(c.Groups)) {
		if err := c.validateGroup(c.Groups[name]); err != nil {
			return err
		}
	}
	if err := c.checkCycles(); err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(c.Policies)) {
		if err := c.ValidatePolicy(c.Policies[name]); err != nil {
			return err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.Assignments)) {
		a := c.Assignments[name]
		if err := CheckName("assignment", a.Name); err != nil {
			return err
		}
		if _, ok := c.Policies[a.Policy]; !ok {
			return invalid("assignment %s: unknown policy %q", a.Name, a.Policy)
		}
		if _, ok := c.Groups[a.Group]; !ok {
			return invalid("assignment %s: unknown group %q", a.Name, a.Group)
		}
	}
	if err := c.validateSegments(); err != nil {
		return err
	}
	if err := c.validateEncryptions(); err != nil {
		return err
	}
	for vm, tags := range c.Tags {
		if err := CheckVMName(vm); err != nil {
			return err
		}
		if err := CheckTags(tags); err != nil {
			return fmt.Errorf("VM %s: %w", vm, err)
		}
	}
	return nil
}

func (c *Config) validateGroup(g api.Group) error {
	if err := CheckName("group", g.Name); err != nil {
		return err
	}
	if len(g.VMs) == 0 && len(g.Selector) == 0 && g.NameGlob == "" && len(g.Include) == 0 {
		return invalid("group %s: no members: give vms, selector, name_glob or include", g.Name)
	}
	for i, vm := range g.VMs {
		if err := CheckVMName(vm); err != nil {
			return fmt.Errorf("group %s: vms[%d]: %w", g.Name, i, err)
		}
	}
	for k, v := range g.Selector {
		if !tagKeyRE.MatchString(k) {
			return invalid("group %s: selector key %q: want 1-63 letters, digits, '.', '_', '/' or '-'", g.Name, k)
		}
		if v == "" {
			return invalid("group %s: selector %s: empty value (use \"*\" for any value)", g.Name, k)
		}
	}
	if g.NameGlob != "" {
		if _, err := path.Match(g.NameGlob, ""); err != nil {
			return invalid("group %s: name_glob %q: %v", g.Name, g.NameGlob, err)
		}
	}
	for i, inc := range g.Include {
		if _, ok := c.Groups[inc]; !ok {
			return invalid("group %s: include[%d]: unknown group %q", g.Name, i, inc)
		}
	}
	return nil
}

// checkCycles refuses include cycles, naming one: "a -> b -> a".
func (c *Config) checkCycles() error {
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []string
	var visit func(string) error
	visit = func(n string) error {
		color[n] = grey
		stack = append(stack, n)
		for _, m := range c.Groups[n].Include {
			switch color[m] {
			case grey:
				i := slices.Index(stack, m)
				return invalid("group include cycle: %s -> %s", strings.Join(stack[i:], " -> "), m)
			case white:
				if err := visit(m); err != nil {
					return err
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[n] = black
		return nil
	}
	for _, n := range slices.Sorted(maps.Keys(c.Groups)) {
		if color[n] == white {
			if err := visit(n); err != nil {
				return err
			}
		}
	}
	return nil
}

// Referrers lists what refers to group or policy name (kind "group" or
// "policy"), as "policy db-in", "assignment a1", "group all",
// "segment blue", "encryption pci".
func (c *Config) Referrers(kind, name string) []string {
	var refs []string
	switch kind {
	case "group":
		for _, g := range sortedValues(c.Groups) {
			if slices.Contains(g.Include, name) {
				refs = append(refs, "group "+g.Name)
			}
		}
		for _, p := range sortedValues(c.Policies) {
			if groups, err := policyGroups(p); err == nil && slices.Contains(groups, name) {
				refs = append(refs, "policy "+p.Name)
			}
		}
		for _, a := range sortedValues(c.Assignments) {
			if a.Group == name {
				refs = append(refs, "assignment "+a.Name)
			}
		}
		refs = append(refs, c.netReferrers(name)...)
	case "policy":
		for _, a := range sortedValues(c.Assignments) {
			if a.Policy == name {
				refs = append(refs, "assignment "+a.Name)
			}
		}
	}
	return refs
}

func sortedValues[V any](m map[string]V) []V {
	out := make([]V, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[k])
	}
	return out
}
