package sdk

import "io"

// StateMover is an optional interface of a FastPath: the per-vNIC state
// that must follow the VM when it moves to another host (the firewall's
// connection table, the load balancer's pinned flows), so a default-deny
// policy never cuts a live session.
//
// filterd frames each slot's payload (filter name and version, the
// filter's own format number, length, CRC-32C) in a versioned bundle
// (GET/PUT /v1/vnics/{vnic}/state, `vfctl vnic export|import`) and checks
// the frame before ImportState sees a byte: a filter reads only payloads
// its own ExportState wrote, intact.
type StateMover interface {
	// StateFormat numbers the payload layout ExportState writes; bump it
	// whenever the layout changes. ImportState is only handed payloads
	// of this format.
	StateFormat() uint32
	// ExportState writes the movable state. Times are written relative
	// (remaining lifetime), never as this host's clock.
	ExportState(w io.Writer) error
	// ImportState adds the entries of a payload written by ExportState of
	// the same filter on another host, returning how many it took. The
	// destination re-validates them against its own configuration (an
	// entry the local policy would not allow must not pass because it was
	// imported). A malformed payload is an error wrapping
	// ErrInvalidParam, and nothing already running may be lost.
	ImportState(r io.Reader) (int, error)
}
