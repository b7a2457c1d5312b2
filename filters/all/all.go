// Package all links every built-in filter into a binary: import it for its
// side effect (each filter registers itself with the SDK registry).
package all

import (
	_ "github.com/vnicfilter/vnicfilter/filters/count"
	_ "github.com/vnicfilter/vnicfilter/filters/dlb"
	_ "github.com/vnicfilter/vnicfilter/filters/dnslog"
	_ "github.com/vnicfilter/vnicfilter/filters/encap"
	_ "github.com/vnicfilter/vnicfilter/filters/encrypt"
	_ "github.com/vnicfilter/vnicfilter/filters/firewall"
	_ "github.com/vnicfilter/vnicfilter/filters/mirror"
	_ "github.com/vnicfilter/vnicfilter/filters/punt"
	_ "github.com/vnicfilter/vnicfilter/filters/spoofguard"
)
