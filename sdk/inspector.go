package sdk

import "context"

// Inspector is an optional interface of a FastPath: the instance describes
// its live state — the firewall's connection table, the load balancer's
// services, backends and their health — for
// GET /v1/vnics/{vnic}/filters/{slot}/inspect (`vfctl fw conns`,
// `vfctl lb show`). query holds the request's URL query parameters, one
// value each (e.g. "limit": "100"); an unknown or malformed one is an error
// wrapping ErrInvalidParam. The result is marshalled to JSON as it is, so
// give its fields json tags; it must be a snapshot the caller may keep.
//
// Inspect runs concurrently with the datapath and must not block it: read
// maps, never lock them against the fast path.
type Inspector interface {
	Inspect(ctx context.Context, query map[string]string) (any, error)
}
