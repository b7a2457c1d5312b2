package sdk

import "errors"

// Sentinel errors callers branch on with errors.Is. filterd and vfctl
// re-export these; they are never copied.
var (
	// ErrUnknownFilter: no filter of that name is registered.
	ErrUnknownFilter = errors.New("unknown filter")
	// ErrInvalidParam: a parameter is unknown, missing or out of range.
	ErrInvalidParam = errors.New("invalid parameter")
	// ErrNotSupported: the kernel lacks a feature the operation needs.
	ErrNotSupported = errors.New("not supported by this kernel")
	// ErrABIMismatch: a filter was built for another slot ABI version.
	ErrABIMismatch = errors.New("slot ABI version mismatch")
)
