package firewall

import (
	"time"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// Name is the filter's registered name.
const Name = "firewall"

// DefaultConntrackSize is the default number of flows tracked per vNIC.
const DefaultConntrackSize = 65536

// DefaultRejectRate is the default number of reject answers per second
// and vNIC.
const DefaultRejectRate = 100

// Descriptor registers the firewall filter.
var Descriptor = &sdk.Descriptor{
	Name:       Name,
	Version:    "0.3.0", // 0.3: new maps (fw_limits) and fw_config entries; 0.2: fw_conntrack is a HASH. Pinned instances of older versions must be re-attached
	Summary:    "stateful firewall: ordered rules, per-vNIC conntrack, constant-cost classification",
	Directions: sdk.DirBoth,
	FailMode:   sdk.FailClosed, // a firewall that cannot decide must not pass traffic
	Params: []sdk.ParamSpec{
		{Name: "policy", Type: sdk.String, Required: true, Doc: "path of the JSON policy file (docs/firewall.md)"},
		{Name: "reject_rate", Type: sdk.Int, Default: "100", Min: sdk.Bound(0), Max: sdk.Bound(1 << 24), Doc: "TCP RST / ICMP unreachable answers to rejected packets per second (per vNIC, both directions); over it, or 0, reject drops like deny"},
		{Name: "flow_log", Type: sdk.String, Doc: "file the flow log is appended to as JSON lines, or ipfix://HOST:PORT to export it as IPFIX over UDP (docs/firewall.md, \"Flow log\"); empty: no flow log"},
		{Name: "flow_log_rate", Type: sdk.Int, Default: "1000", Min: sdk.Bound(1), Max: sdk.Bound(1 << 24), Doc: "flow-log events per second and vNIC; the rest are counted, not logged"},
		{Name: "flow_log_all", Type: sdk.Bool, Default: "false", Doc: "log every new flow, not only those of rules with \"log\": true (denials are always logged)"},
		{Name: "conntrack_size", Type: sdk.Int, Default: "65536", Min: sdk.Bound(16), Max: sdk.Bound(1 << 24), Doc: "flows tracked per vNIC; when full, new flows follow the failure mode"},
	},
	FastPath: loadFastPath,
}

func init() { sdk.Register(Descriptor) }

// Updater is implemented by the firewall's fast path: it swaps in a new
// policy atomically (one generation flip) and reports how long filling
// the idle generation took.
type Updater interface {
	UpdatePolicy(p *Policy) (time.Duration, error)
}
