package sdk

import (
	"fmt"
	"regexp"
	"strings"
)

// Descriptor tells filterd what a filter is and how to run it.
type Descriptor struct {
	// Name identifies the filter in chains, the domain XML and the CLI:
	// lower case letters, digits and dashes.
	Name string
	// Version is the filter's own version (semantic versioning advised).
	Version string
	// Summary is one line for `vfctl filters`.
	Summary string
	// ABI is the slot ABI the filter was written for; zero means
	// ABIVersion (the one it was compiled with).
	ABI int
	// Directions the filter handles; zero means both.
	Directions Directions
	// FailMode is the default failure mode; operators may override it per
	// instance. The zero value is FailClosed.
	FailMode FailMode
	// Params is the parameter schema.
	Params []ParamSpec
	// FastPath loads the filter's eBPF program for one instance. Nil if
	// the filter has only a slow path: filterd then punts every frame.
	FastPath func(*FastPathContext) (FastPath, error)
	// SlowPath creates the Go handler of one instance. Nil if the filter
	// has only a fast path (which then must never return VF_PUNT: a punt
	// without a slow path follows the failure mode).
	SlowPath func(*SlowPathContext) (SlowPath, error)
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}$`)

// Validate checks the descriptor itself (not an instance's parameters).
func (d *Descriptor) Validate() error {
	if !nameRE.MatchString(d.Name) {
		return fmt.Errorf("filter name %q: want lower case letters, digits and dashes, at most 31", d.Name)
	}
	if d.ABI != 0 && d.ABI != ABIVersion {
		return fmt.Errorf("filter %s: %w: built for ABI %d, this is %d", d.Name, ErrABIMismatch, d.ABI, ABIVersion)
	}
	if d.FastPath == nil && d.SlowPath == nil {
		return fmt.Errorf("filter %s: has neither a fast path nor a slow path", d.Name)
	}
	seen := map[string]bool{}
	for _, p := range d.Params {
		if p.Name == "" || seen[p.Name] {
			return fmt.Errorf("filter %s: parameter name %q empty or repeated", d.Name, p.Name)
		}
		seen[p.Name] = true
		if p.Default != "" {
			if err := p.check(p.Default); err != nil {
				return fmt.Errorf("filter %s: default of parameter %q: %v", d.Name, p.Name, err)
			}
		}
	}
	return nil
}

// Dirs returns the directions the filter handles (both when unset).
func (d *Descriptor) Dirs() Directions {
	if d.Directions == 0 {
		return DirBoth
	}
	return d.Directions
}

// VNIC identifies the device a filter instance sits in front of.
type VNIC struct {
	// Name is the host-side device name (e.g. vnet3).
	Name string `json:"name"`
	// Ifindex is its interface index in filterd's network namespace.
	Ifindex int `json:"ifindex"`
}

// Instance identifies one filter instance: a filter in one slot of one
// vNIC's chain.
type Instance struct {
	VNIC VNIC
	// Slot is the position in the chain, 0 first.
	Slot int
	// Directions the instance is attached in.
	Directions Directions
	// FailMode in force for this instance.
	FailMode FailMode
	// Params are the validated parameters.
	Params Params
	// Owner says who asked for the chain: "libvirt:<domain>" for chains
	// the libvirt integration keeps (so filters can name the VM in what
	// they report), free text otherwise; may be empty.
	Owner string
}

// VMName is the VM behind the instance's vNIC as far as filterd knows:
// the libvirt domain of a "libvirt:<domain>" owner, else the owner itself.
func (i Instance) VMName() string {
	if d, ok := strings.CutPrefix(i.Owner, "libvirt:"); ok {
		return d
	}
	return i.Owner
}
