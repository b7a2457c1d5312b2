package firewall

import (
	"net/netip"
	"slices"
	"sync"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// recordingGroups resolves groups through the host's table and remembers
// which it was asked for: the policy's host groups, whose changes must
// reload it (sdk.GroupUser).
type recordingGroups struct {
	inner sdk.Groups
	mu    sync.Mutex
	asked []string
}

func (r *recordingGroups) Members(group string) ([]netip.Prefix, error) {
	r.mu.Lock()
	if !slices.Contains(r.asked, group) {
		r.asked = append(r.asked, group)
	}
	r.mu.Unlock()
	if r.inner == nil {
		return nil, StaticGroups(nil).unknown(group)
	}
	return r.inner.Members(group)
}

func (r *recordingGroups) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(r.asked)
	slices.Sort(out)
	return out
}
