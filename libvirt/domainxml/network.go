package domainxml

import (
	"encoding/xml"
	"fmt"

	"libvirt.org/go/libvirtxml"

	"github.com/vnicfilter/vnicfilter/filterd/api"
)

// PortgroupDefaults are the chains of interfaces that have no entry of
// their own, keyed by PortgroupKey(network, portgroup).
type PortgroupDefaults map[string][]api.FilterSpec

// PortgroupKey is the PortgroupDefaults key of a network's portgroup. An
// interface that names no portgroup uses the network's default portgroup,
// stored under PortgroupKey(network, "").
func PortgroupKey(network, portgroup string) string { return network + "/" + portgroup }

// ParseNetworkDefaults reads a libvirt network XML (`virsh net-dumpxml`,
// /etc/libvirt/qemu/networks/NAME.xml) and returns the portgroup defaults
// in its <metadata>:
//
//	<vnicfilter:filters xmlns:vnicfilter="https://vnicfilter.dev/xmlns/domain/1">
//	  <vnicfilter:portgroup name="web">
//	    <vnicfilter:filter name="count"/>
//	  </vnicfilter:portgroup>
//	</vnicfilter:filters>
//
// Each named portgroup must exist in the network. A network without
// vnicfilter metadata gives an empty map.
func ParseNetworkDefaults(networkXML []byte) (PortgroupDefaults, error) {
	var x libvirtxml.Network
	if err := xml.Unmarshal(networkXML, &x); err != nil {
		return nil, xmlError("network XML", err)
	}
	_, pgs, err := metadata(networkXML, "network", kindNetwork)
	if err != nil {
		return nil, err
	}
	out := PortgroupDefaults{}
	for _, pg := range pgs {
		var found *libvirtxml.NetworkPortGroup
		for i := range x.PortGroups {
			if x.PortGroups[i].Name == pg.name {
				found = &x.PortGroups[i]
			}
		}
		if found == nil {
			return nil, &Error{Line: pg.line, Msg: fmt.Sprintf("vnicfilter:portgroup name=%q: network %s has no such <portgroup>", pg.name, x.Name)}
		}
		out[PortgroupKey(x.Name, pg.name)] = pg.filters
		if found.Default == "yes" {
			out[PortgroupKey(x.Name, "")] = pg.filters
		}
	}
	return out, nil
}
