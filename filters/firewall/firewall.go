package firewall

import (
	"time"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// Name is the filter's registered name.
const Name = "firewall"

// DefaultConntrackSize is the default number of flows tracked per vNIC.
const DefaultConntrackSize = 65536

// Descriptor registers the firewall filter.
var Descriptor = &sdk.Descriptor{
	Name:       Name,
	Version:    "0.2.0", // 0.2: fw_conntrack is a HASH (was LRU_HASH): instances pinned by 0.1 must be re-attached
	Summary:    "stateful firewall: ordered rules, per-vNIC conntrack, constant-cost classification",
	Directions: sdk.DirBoth,
	FailMode:   sdk.FailClosed, // a firewall that cannot decide must not pass traffic
	Params: []sdk.ParamSpec{
		{Name: "policy", Type: sdk.String, Required: true, Doc: "path of the JSON policy file (docs/firewall.md)"},
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
