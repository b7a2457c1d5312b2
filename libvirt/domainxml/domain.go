package domainxml

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"libvirt.org/go/libvirtxml"

	"github.com/vnicfilter/vnicfilter/filterd/api"
)

// Domain is what vnicfilter needs from a libvirt domain XML.
type Domain struct {
	// Name and UUID of the domain.
	Name string
	UUID string
	// Interfaces in document order.
	Interfaces []Interface
	// Config is the vnicfilter metadata; nil when the domain has none.
	Config *Config
}

// Interface is one <interface> of a domain.
type Interface struct {
	// Type is libvirt's interface type: "network", "bridge", "ethernet" …
	Type string
	// MAC is <mac address=…>; nil if absent (libvirt fills it in on define).
	MAC net.HardwareAddr
	// Alias is <alias name=…>: "ua-…" when the user set one, "net0" …
	// when libvirt assigned it (live XML only).
	Alias string
	// Tap is <target dev=…>, the host-side device: empty at the prepare
	// phase, set from the start phase on (see DESIGN.md).
	Tap string
	// Network and Portgroup are the source of a type="network" interface.
	Network   string
	Portgroup string
	// Bridge is the source bridge (type="bridge", or the bridge libvirt
	// resolved a network to in the live XML).
	Bridge string
}

// String names the interface for messages: its MAC, then its tap if known.
func (i Interface) String() string {
	s := i.Alias
	if i.MAC != nil {
		s = i.MAC.String()
	}
	if i.Tap != "" {
		s += " (" + i.Tap + ")"
	}
	return s
}

// hasTap reports whether libvirt gives the interface a host-side tap that
// filterd can attach to.
func (i Interface) hasTap() bool {
	switch i.Type {
	case "network", "bridge", "ethernet":
		return true
	}
	return false
}

// Chain is the filter chain to build on one interface's tap.
type Chain struct {
	// Tap is the host-side device; empty before the start phase.
	Tap string
	// MAC and Alias identify the interface.
	MAC   net.HardwareAddr
	Alias string
	// Filters in chain order.
	Filters []api.FilterSpec
}

// Interface names the chain's interface for messages.
func (c Chain) Interface() string {
	return Interface{MAC: c.MAC, Alias: c.Alias, Tap: c.Tap}.String()
}

// Parse reads a domain XML (as libvirt passes it to hooks, or as
// `virsh dumpxml` prints it) and the vnicfilter element in its <metadata>.
func Parse(domainXML []byte) (*Domain, error) {
	var x libvirtxml.Domain
	if err := xml.Unmarshal(domainXML, &x); err != nil {
		return nil, xmlError("domain XML", err)
	}
	d := &Domain{Name: x.Name, UUID: x.UUID}
	if x.Devices != nil {
		for i, xi := range x.Devices.Interfaces {
			in, err := iface(xi)
			if err != nil {
				return nil, &Error{Msg: fmt.Sprintf("<interface> %d", i), Err: err}
			}
			d.Interfaces = append(d.Interfaces, in)
		}
	}
	cfg, _, err := metadata(domainXML, "domain", kindDomain)
	if err != nil {
		return nil, err
	}
	d.Config = cfg
	return d, nil
}

// xmlError turns an encoding/xml error into an *Error with its line.
func xmlError(what string, err error) error {
	var se *xml.SyntaxError
	if errors.As(err, &se) {
		return &Error{Line: se.Line, Msg: "malformed " + what + ": " + se.Msg}
	}
	return &Error{Msg: "malformed " + what, Err: err}
}

func iface(xi libvirtxml.DomainInterface) (Interface, error) {
	var in Interface
	if xi.MAC != nil && xi.MAC.Address != "" {
		mac, err := net.ParseMAC(xi.MAC.Address)
		if err != nil || len(mac) != 6 {
			return in, fmt.Errorf("mac address %q is not a MAC-48 address", xi.MAC.Address)
		}
		in.MAC = mac
	}
	if xi.Alias != nil {
		in.Alias = xi.Alias.Name
	}
	if xi.Target != nil {
		in.Tap = xi.Target.Dev
	}
	if s := xi.Source; s != nil {
		switch {
		case s.Network != nil:
			in.Type, in.Network, in.Portgroup, in.Bridge = "network", s.Network.Network, s.Network.PortGroup, s.Network.Bridge
		case s.Bridge != nil:
			in.Type, in.Bridge = "bridge", s.Bridge.Bridge
		case s.Ethernet != nil:
			in.Type = "ethernet"
		case s.Direct != nil:
			in.Type = "direct"
		case s.Hostdev != nil:
			in.Type = "hostdev"
		case s.User != nil:
			in.Type = "user"
		case s.VHostUser != nil:
			in.Type = "vhostuser"
		case s.VDPA != nil:
			in.Type = "vdpa"
		default:
			in.Type = "other"
		}
	}
	return in, nil
}

// metadata finds vnicfilter's element among the children of
// <root><metadata> and parses it. A document without one gives nil, nil.
func metadata(doc []byte, root string, k kind) (*Config, []portgroupConfig, error) {
	d := xml.NewDecoder(bytes.NewReader(doc))
	p := &parser{d: d}
	depth, inMeta := 0, false
	var (
		cfg   *Config
		pgs   []portgroupConfig
		found int
	)
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return cfg, pgs, nil
		}
		if err != nil {
			return nil, nil, xmlError(root+" XML", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			switch {
			case depth == 2 && t.Name.Local == "metadata" && t.Name.Space == "":
				inMeta = true
			case depth == 3 && inMeta && isOurs(t.Name):
				if found > 0 {
					return nil, nil, p.errorf("a second vnicfilter:filters element in <metadata> (first on line %d): libvirt keeps one element per namespace", found)
				}
				found = p.line()
				if cfg, pgs, err = p.root(t, k); err != nil {
					return nil, nil, err
				}
				depth--
			case depth >= 2:
				if err := d.Skip(); err != nil {
					return nil, nil, xmlError(root+" XML", err)
				}
				depth--
			}
		case xml.EndElement:
			depth--
			if depth == 1 {
				inMeta = false
			}
		}
	}
}

// isOurs reports whether an element in <metadata> is meant as vnicfilter's:
// in our namespace, or using our prefix without declaring it (p.root then
// names the missing declaration).
func isOurs(n xml.Name) bool {
	return n.Space == Namespace || n.Space == Prefix
}

// Chains matches the configured interfaces to the domain's interfaces
// (by MAC, case-insensitively, or by alias) and adds the portgroup
// defaults for type="network" interfaces without their own entry. Chains
// are returned in the domain's interface order. Interfaces with neither
// are left out (selective protection), as are interfaces whose entry
// lists no filters (an explicit opt-out of the portgroup default).
//
// It is an error for an entry to match no interface or an interface
// without a host-side tap (e.g. type="direct" or "hostdev"), or for two
// entries to match one interface.
func (d *Domain) Chains(defaults PortgroupDefaults) ([]Chain, error) {
	var entries []InterfaceConfig
	if d.Config != nil {
		entries = d.Config.Interfaces
	}
	matchedBy := make([]int, len(d.Interfaces)) // entry index + 1
	for e, ic := range entries {
		hit := -1
		for i, in := range d.Interfaces {
			if (ic.MAC != nil && bytes.Equal(ic.MAC, in.MAC)) || (ic.Alias != "" && ic.Alias == in.Alias) {
				hit = i
				break
			}
		}
		if hit < 0 {
			return nil, &Error{Line: ic.line, Msg: fmt.Sprintf("vnicfilter:interface %s: the domain has no interface with this %s", ic, strings.Fields(ic.String())[0])}
		}
		if prev := matchedBy[hit]; prev != 0 {
			return nil, &Error{Line: ic.line, Msg: fmt.Sprintf("vnicfilter:interface %s: interface %s is already configured by vnicfilter:interface %s", ic, d.Interfaces[hit], entries[prev-1])}
		}
		if in := d.Interfaces[hit]; !in.hasTap() && len(ic.Filters) > 0 {
			return nil, &Error{Line: ic.line, Msg: fmt.Sprintf("vnicfilter:interface %s: interface type %q has no host-side tap to filter (supported: network, bridge, ethernet)", ic, in.Type)}
		}
		matchedBy[hit] = e + 1
	}
	var chains []Chain
	for i, in := range d.Interfaces {
		var filters []api.FilterSpec
		if e := matchedBy[i]; e != 0 {
			filters = entries[e-1].Filters
		} else if in.Type == "network" {
			filters = defaults[PortgroupKey(in.Network, in.Portgroup)]
		}
		if len(filters) == 0 {
			continue
		}
		chains = append(chains, Chain{Tap: in.Tap, MAC: in.MAC, Alias: in.Alias, Filters: filters})
	}
	return chains, nil
}
