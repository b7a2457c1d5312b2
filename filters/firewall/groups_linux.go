package firewall

import (
	"slices"

	"github.com/vnicfilter/vnicfilter/sdk"
)

var _ sdk.GroupUser = (*fastPath)(nil)

// GroupsUsed implements sdk.GroupUser: the host groups the live policy
// resolved.
func (f *fastPath) GroupsUsed() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.usedGroups)
}

func (f *fastPath) setUsedGroups(names []string) {
	f.mu.Lock()
	f.usedGroups = names
	f.mu.Unlock()
}
