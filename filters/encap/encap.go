// Package encap is the overlay encapsulation filter (docs/encap.md): it
// puts a vNIC into a segment (a VXLAN network identifier) that spans
// hosts, in the manner of vCDNI. Frames a VM sends are encapsulated at its
// tap by eBPF toward the host that holds the destination MAC, with the
// sender's group in the VXLAN Group Policy extension, and delivered only to
// vNICs of the same segment; two segments may use the same MAC and IP
// addresses. The control plane distributes the forwarding table (no
// flooding and learning on the underlay): pushed to filterd's API
// (HostFDB, Table) or written as a file; ARP and IPv6 neighbour discovery
// for addresses in it are answered by the filter itself.
package encap

import "github.com/vnicfilter/vnicfilter/sdk"

// Name is the filter's registered name.
const Name = "encap"

// Parameter names.
const (
	ParamVNI         = "vni"
	ParamGroup       = "group"
	ParamMAC         = "mac"
	ParamFIB         = "fib"
	ParamVXLANDev    = "vxlan_dev"
	ParamLocalIP     = "local_ip"
	ParamUnderlayMTU = "underlay_mtu"
	ParamFIBSize     = "fib_size"
	ParamClampMSS    = "clamp_mss"
)

// Limits of this increment.
const (
	// MaxVNI is the largest VXLAN network identifier (24 bits).
	MaxVNI = 1<<24 - 1
	// MaxGroup is the largest VXLAN-GBP group policy id (16 bits).
	MaxGroup = 1<<16 - 1
	// MaxMembers is the number of hosts a segment may span (the eBPF
	// replication loop's bound).
	MaxMembers = 64
	// MaxLocal is the number of vNICs of one segment on one host.
	MaxLocal = 64
	// MaxPorts is the number of encap vNICs on one host.
	MaxPorts = 4096
	// DefaultFIBSize bounds the MACs and the addresses of one segment.
	DefaultFIBSize = 16384
)

// Encapsulation overhead on the underlay: the inner Ethernet header, VXLAN
// (8), UDP (8) and the outer IP header.
const (
	OverheadIPv4 = 14 + 8 + 8 + 20 // 50
	OverheadIPv6 = 14 + 8 + 8 + 40 // 70
)

// Descriptor registers the encap filter.
var Descriptor = &sdk.Descriptor{
	Name:       Name,
	Version:    "0.1.0",
	Summary:    "overlay segments across hosts: VXLAN with the sender's group (GBP), no flood-and-learn, local ARP/ND",
	Directions: sdk.DirBoth,
	FailMode:   sdk.FailClosed,
	Params: []sdk.ParamSpec{
		{Name: ParamVNI, Type: sdk.Int, Required: true, Min: sdk.Bound(1), Max: sdk.Bound(MaxVNI), Doc: "segment (VXLAN network identifier) of the vNIC"},
		{Name: ParamGroup, Type: sdk.Int, Default: "0", Min: sdk.Bound(0), Max: sdk.Bound(MaxGroup), Doc: "VXLAN-GBP group policy id sent with the VM's frames (0: none)"},
		{Name: ParamMAC, Type: sdk.String, Required: true, Doc: "the VM's MAC address; frames with another source MAC are dropped"},
		{Name: ParamFIB, Type: sdk.String, Doc: "path of the JSON forwarding table (segments, their hosts, MAC -> host); reloadable. Not read (and optional) once a table is pushed to filterd (PUT /v1/encap/fdb)"},
		{Name: ParamVXLANDev, Type: sdk.String, Default: "vxlan0", Doc: "the host's collect-metadata VXLAN device with gbp (ip link add vxlan0 type vxlan external gbp dstport 4789)"},
		{Name: ParamLocalIP, Type: sdk.String, Required: true, Doc: "this host's underlay address (source of the tunnel, a member of the segment in the table)"},
		{Name: ParamUnderlayMTU, Type: sdk.Int, Default: "1500", Min: sdk.Bound(576), Max: sdk.Bound(65535), Doc: "MTU of the underlay; larger encapsulated frames are dropped and counted"},
		{Name: ParamClampMSS, Type: sdk.Bool, Default: "true", Doc: "lower the MSS option of TCP SYNs (both directions) so segments fit the underlay whatever the guest MTU"},
		{Name: ParamFIBSize, Type: sdk.Int, Default: "16384", Min: sdk.Bound(16), Max: sdk.Bound(1 << 20), Doc: "MACs and addresses of the segment the vNIC's table holds"},
	},
	FastPath: loadFastPath,
}

func init() { sdk.Register(Descriptor) }
