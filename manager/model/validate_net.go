package model

import (
	"maps"
	"net/netip"
	"slices"

	"github.com/vnicfilter/vnicfilter/manager/api"
)

// Limits of segment fields, as filters/encap checks its parameters
// (docs/encap.md): a segment the manager accepts must make chains the
// datapath accepts.
const (
	// MaxVNI is the largest VXLAN network identifier (24 bits).
	MaxVNI = 1<<24 - 1
	// MaxGBP is the largest VXLAN-GBP group policy id (16 bits).
	MaxGBP = 1<<16 - 1
	// MinUnderlayMTU is the smallest underlay MTU encap accepts (IPv4's
	// minimum datagram size every link must carry).
	MinUnderlayMTU = 576
	// MaxUnderlayMTU is the largest underlay MTU encap accepts.
	MaxUnderlayMTU = 65535
)

// validateSegments checks every segment, and that no two share a VNI:
// a VNI is the segment on the wire, so two segments with one VNI would
// be one.
func (c *Config) validateSegments() error {
	byVNI := map[int64]string{}
	for _, name := range slices.Sorted(maps.Keys(c.Segments)) {
		s := c.Segments[name]
		if err := c.validateSegment(s); err != nil {
			return err
		}
		if other, ok := byVNI[s.VNI]; ok {
			return invalid("segment %s: vni %d is already segment %s's: a VNI identifies one segment", s.Name, s.VNI, other)
		}
		byVNI[s.VNI] = s.Name
	}
	return nil
}

func (c *Config) validateSegment(s api.Segment) error {
	if err := CheckName("segment", s.Name); err != nil {
		return err
	}
	if s.VNI < 1 || s.VNI > MaxVNI {
		return invalid("segment %s: vni %d out of range 1-%d", s.Name, s.VNI, MaxVNI)
	}
	if s.Group == "" {
		return invalid("segment %s: group: missing (the group whose VMs are the members)", s.Name)
	}
	if _, ok := c.Groups[s.Group]; !ok {
		return invalid("segment %s: unknown group %q", s.Name, s.Group)
	}
	if s.GBP < 0 || s.GBP > MaxGBP {
		return invalid("segment %s: gbp %d out of range 0-%d (0: no group policy id)", s.Name, s.GBP, MaxGBP)
	}
	if s.UnderlayMTU != 0 && (s.UnderlayMTU < MinUnderlayMTU || s.UnderlayMTU > MaxUnderlayMTU) {
		return invalid("segment %s: underlay_mtu %d out of range %d-%d (0: the default, 1500)", s.Name, s.UnderlayMTU, MinUnderlayMTU, MaxUnderlayMTU)
	}
	return nil
}

// validateEncryptions checks every encryption: a valid name and two
// existing groups.
func (c *Config) validateEncryptions() error {
	for _, name := range slices.Sorted(maps.Keys(c.Encryptions)) {
		e := c.Encryptions[name]
		if err := CheckName("encryption", e.Name); err != nil {
			return err
		}
		for _, end := range []struct{ field, group string }{{"from", e.From}, {"to", e.To}} {
			if end.group == "" {
				return invalid("encryption %s: %s: missing (a group name)", e.Name, end.field)
			}
			if _, ok := c.Groups[end.group]; !ok {
				return invalid("encryption %s: %s: unknown group %q", e.Name, end.field, end.group)
			}
		}
		for i, sp := range e.Space {
			p, err := netip.ParsePrefix(sp)
			switch {
			case err != nil:
				return invalid("encryption %s: space[%d]: %q is not a prefix such as 10.99.0.0/16", e.Name, i, sp)
			case p != p.Masked():
				return invalid("encryption %s: space[%d]: %s has host bits set (did you mean %s?)", e.Name, i, sp, p.Masked())
			case p.Bits() == 0:
				return invalid("encryption %s: space[%d]: %s is every address: name the members' prefixes", e.Name, i, sp)
			}
		}
	}
	return nil
}

// netReferrers lists the segments and encryptions that name group.
func (c *Config) netReferrers(group string) []string {
	var refs []string
	for _, s := range sortedValues(c.Segments) {
		if s.Group == group {
			refs = append(refs, "segment "+s.Name)
		}
	}
	for _, e := range sortedValues(c.Encryptions) {
		if e.From == group || e.To == group {
			refs = append(refs, "encryption "+e.Name)
		}
	}
	return refs
}
