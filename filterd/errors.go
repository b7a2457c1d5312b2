package filterd

import "errors"

var (
	// ErrSlotTaken: the slot already holds a filter, or the chain is full.
	ErrSlotTaken = errors.New("slot taken")
	// ErrNoSuchSlot: the chain has no filter in that slot.
	ErrNoSuchSlot = errors.New("no such slot")
	// ErrNoSuchGroup: no host address group of that name.
	ErrNoSuchGroup = errors.New("no such group")
	// ErrNoSuchPolicy: no stored policy document of that name.
	ErrNoSuchPolicy = errors.New("no such policy document")
	// ErrBadRequest: the request is malformed.
	ErrBadRequest = errors.New("bad request")
)
