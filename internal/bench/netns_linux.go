package bench

import (
	"fmt"

	"github.com/vishvananda/netns"

	"github.com/vnicfilter/vnicfilter/internal/nsutil"
)

// namedNS is a network namespace bind-mounted at /run/netns/<name>, so an
// operator can `ip netns exec` into a running benchmark to look around.
type namedNS struct {
	name   string
	path   string
	handle netns.NsHandle
}

// newNamedNS creates a network namespace and bind-mounts it at
// /run/netns/<name>, like `ip netns add`, so nsenter --net=<path> reaches it.
func newNamedNS(name string) (*namedNS, error) {
	path, err := nsutil.CreateNamed(name)
	if err != nil {
		return nil, err
	}
	h, err := netns.GetFromPath(path)
	if err != nil {
		_ = nsutil.DeleteNamed(path)
		return nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	return &namedNS{name: name, path: path, handle: h}, nil
}

// Close unmounts the namespace; the kernel frees it, with its devices, once
// no process or socket refers to it any more.
func (n *namedNS) Close() error {
	if n.handle >= 0 {
		n.handle.Close()
		n.handle = -1
	}
	return nsutil.DeleteNamed(n.path)
}

// Do runs fn on a locked OS thread switched into the namespace; the caller's
// thread never changes namespace.
func (n *namedNS) Do(fn func() error) error {
	return nsutil.Do(n.handle, n.name, fn)
}
