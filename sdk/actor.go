package sdk

import "context"

// Actor is an optional interface of a FastPath: the instance carries out a
// named operation on its live state that is neither a configuration
// reload nor a read — the encrypt filter's key rotation (`vfctl crypt
// rotate`) — for POST /v1/vnics/{vnic}/filters/{slot}/actions/{action}.
// args holds the request's URL query parameters, one value each. An
// action the filter does not know is an error wrapping ErrNotSupported; a
// bad argument one wrapping ErrInvalidParam. The result is marshalled to
// JSON as it is (give its fields json tags).
type Actor interface {
	Act(ctx context.Context, action string, args map[string]string) (any, error)
}
