package filterd

import "errors"

var (
	// ErrSlotTaken: the slot already holds a filter, or the chain is full.
	ErrSlotTaken = errors.New("slot taken")
	// ErrNoSuchSlot: the chain has no filter in that slot.
	ErrNoSuchSlot = errors.New("no such slot")
	// ErrBadRequest: the request is malformed.
	ErrBadRequest = errors.New("bad request")
)
