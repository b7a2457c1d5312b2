// Package dlb is the distributed load balancer filter (docs/dlb.md): a
// VM's connections to a virtual IP are spread over a pool of backends by
// Maglev consistent hashing and DNATed at the VM's own vNIC; a per-vNIC
// connection table pins every flow to its backend and reverse-NATs the
// replies, so the VM only ever sees the VIP.
package dlb

import "github.com/vnicfilter/vnicfilter/sdk"

// Name is the filter's registered name.
const Name = "dlb"

// Defaults and limits of this increment.
const (
	DefaultConntrackSize = 65536
	DefaultTableSize     = 65537
	// DefaultTableEntries is the default size of the Maglev array (both
	// generations): half of it holds the live tables.
	DefaultTableEntries = 1 << 20
	// MaxBackends is the number of backends over all services per
	// generation.
	MaxBackends = 4096
	// MaxServices is the number of services per generation.
	MaxServices = 1024
	// MaxTableSize bounds one service's Maglev table.
	MaxTableSize = 1 << 22
)

// Descriptor registers the dlb filter.
var Descriptor = &sdk.Descriptor{
	Name:       Name,
	Version:    "0.1.0",
	Summary:    "distributed load balancer: Maglev backend selection, DNAT at the client vNIC, reverse NAT of replies",
	Directions: sdk.DirBoth,
	FailMode:   sdk.FailClosed,
	Params: []sdk.ParamSpec{
		{Name: "services", Type: sdk.String, Required: true, Doc: "path of the JSON services file (docs/dlb.md)"},
		{Name: "conntrack_size", Type: sdk.Int, Default: "65536", Min: sdk.Bound(16), Max: sdk.Bound(1 << 23), Doc: "flows pinned per vNIC; when full, new flows to a VIP follow the failure mode"},
		{Name: "tcp_timeout", Type: sdk.Duration, Default: "1h", Doc: "a pinned TCP flow idle this long (both directions) is forgotten"},
		{Name: "tcp_close_timeout", Type: sdk.Duration, Default: "30s", Doc: "a pinned TCP flow that saw a FIN or RST is forgotten after this long idle"},
		{Name: "udp_timeout", Type: sdk.Duration, Default: "2m", Doc: "a pinned UDP flow idle this long (both directions) is forgotten"},
		{Name: "table_entries", Type: sdk.Int, Default: "1048576", Min: sdk.Bound(64), Max: sdk.Bound(1 << 25), Doc: "Maglev slots over all services, both generations (half is live)"},
	},
	FastPath: loadFastPath,
}

func init() { sdk.Register(Descriptor) }
