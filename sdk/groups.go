package sdk

import (
	"errors"
	"net/netip"
)

// ErrUnknownGroup: a configuration names an address group nobody defines.
var ErrUnknownGroup = errors.New("unknown address group")

// Groups resolves named address groups that the host keeps rather than a
// filter's own configuration file: groups pushed through filterd's API
// (PUT /v1/groups/NAME, by an operator or the control plane) and dynamic
// groups "tag:<tag>" — the addresses of every vNIC whose VM carries the tag
// (the vNIC's labels), plus members the control plane pushes for the same
// name from other hosts. filterd hands its table to filters in
// FastPathContext.Groups.
type Groups interface {
	// Members returns the group's current members, or an error wrapping
	// ErrUnknownGroup.
	Members(group string) ([]netip.Prefix, error)
}

// GroupUser is an optional interface of a FastPath whose configuration
// resolves groups through FastPathContext.Groups. When a group it uses
// changes (members set, a vNIC tagged or untagged), filterd calls its
// Reloader so the new membership is swapped in as a policy update is.
type GroupUser interface {
	// GroupsUsed names the host groups the live configuration resolved.
	GroupsUsed() []string
}
