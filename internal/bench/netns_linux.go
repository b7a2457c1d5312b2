package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named namespaces live, as `ip netns` keeps them, so an
// operator can `ip netns exec` into a running benchmark to look around.
const netnsDir = "/run/netns"

// prepareNetnsDir makes /run/netns a shared mount point, as `ip netns add`
// does; otherwise a later `ip netns add` stacks a copy of our mounts that our
// unmount cannot reach, leaking the namespace. The flock keeps concurrent
// programs from stacking bind mounts themselves.
func prepareNetnsDir() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", netnsDir, err)
	}
	dir, err := os.Open(netnsDir)
	if err != nil {
		return fmt.Errorf("open %s: %w", netnsDir, err)
	}
	defer dir.Close()
	if err := unix.Flock(int(dir.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", netnsDir, err)
	}
	defer unix.Flock(int(dir.Fd()), unix.LOCK_UN)
	err = unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) { // not a mount point yet
		if err := unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mount %s on itself: %w", netnsDir, err)
		}
		err = unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("make %s a shared mount: %w", netnsDir, err)
	}
	return nil
}

// namedNS is a network namespace bind-mounted at /run/netns/<name>.
type namedNS struct {
	name   string
	path   string
	handle netns.NsHandle
}

// newNamedNS creates a network namespace and bind-mounts it at
// /run/netns/<name>, like `ip netns add`, so nsenter --net=<path> reaches it.
func newNamedNS(name string) (*namedNS, error) {
	path := filepath.Join(netnsDir, name)
	// O_EXCL: never adopt a namespace somebody else created under this name.
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return nil, fmt.Errorf("create mount point for netns %s: %w", name, err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		// Locked and never unlocked: the runtime discards this thread when
		// the goroutine returns, so no other goroutine inherits the namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare netns %s: %w", name, err)
			return
		}
		src := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind-mount netns %s at %s: %w", name, path, err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return nil, err
	}
	h, err := netns.GetFromPath(path)
	if err != nil {
		n := &namedNS{name: name, path: path, handle: -1}
		n.Close()
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
	err := unix.Unmount(n.path, unix.MNT_DETACH)
	// EINVAL: not mounted; ENOENT: already gone.
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %s: %w", n.name, err)
	}
	if err := os.Remove(n.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns mount point %s: %w", n.path, err)
	}
	return nil
}

// Do runs fn on a locked OS thread switched into the namespace; the caller's
// thread never changes namespace. Sockets fn creates belong to the namespace
// and stay usable from any thread. If the thread cannot be switched back it
// stays locked, and the runtime discards it with the goroutine.
func (n *namedNS) Do(fn func() error) error {
	type result struct {
		err      error
		panicked any
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- result{err: fmt.Errorf("get current netns: %w", err)}
			return
		}
		defer orig.Close()
		if err := netns.Set(n.handle); err != nil {
			done <- result{err: fmt.Errorf("enter netns %s: %w", n.name, err)}
			return
		}
		var res result
		func() {
			defer func() { res.panicked = recover() }()
			res.err = fn()
		}()
		if err := netns.Set(orig); err == nil {
			runtime.UnlockOSThread()
		}
		done <- res
	}()
	res := <-done
	if res.panicked != nil {
		panic(res.panicked)
	}
	return res.err
}
