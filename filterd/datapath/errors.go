package datapath

import "errors"

var (
	// ErrNoSuchDevice: the named network device does not exist.
	ErrNoSuchDevice = errors.New("no such network device")
	// ErrNotAttached: the vNIC has no vnicfilter datapath.
	ErrNotAttached = errors.New("no chain attached")
	// ErrAlreadyAttached: the vNIC already has a vnicfilter datapath.
	ErrAlreadyAttached = errors.New("chain already attached")
)
