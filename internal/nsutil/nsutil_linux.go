// Package nsutil creates, enters and removes network namespaces the way
// `ip netns` does, with the OS-thread discipline Go needs: a thread that
// switched namespace is either switched back or discarded, never reused.
// sdk/testkit, vfbench and filterd's kernel probe share it.
package nsutil

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Dir is where named namespaces live, as `ip netns` keeps them, so
// `ip netns exec` and `ip netns list` see ours too.
const Dir = "/run/netns"

// RandomName returns prefix followed by 8 random hex digits: 32 bits keep
// names of namespaces created by parallel test binaries apart.
func RandomName(prefix string) (string, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random name: %w", err)
	}
	return prefix + hex.EncodeToString(b[:]), nil
}

var dirOnce = sync.OnceValue(prepareDir)

// prepareDir makes /run/netns a shared mount point, exactly as
// `ip netns add` does. Without it, a later `ip netns add` (which bind-mounts
// the directory onto itself) would stack a copy of our namespace mounts that
// our unmount cannot reach, leaking the namespaces. A flock on the directory
// keeps concurrent test binaries from stacking bind mounts themselves.
func prepareDir() error {
	if err := os.MkdirAll(Dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", Dir, err)
	}
	dir, err := os.Open(Dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", Dir, err)
	}
	defer dir.Close()
	if err := unix.Flock(int(dir.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", Dir, err)
	}
	defer unix.Flock(int(dir.Fd()), unix.LOCK_UN)

	err = unix.Mount("", Dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) { // not a mount point yet
		if err := unix.Mount(Dir, Dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mount %s on itself: %w", Dir, err)
		}
		err = unix.Mount("", Dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("make %s a shared mount: %w", Dir, err)
	}
	return nil
}

// CreateNamed creates a network namespace and bind-mounts it at
// /run/netns/<name>, like `ip netns add <name>`. The namespace lives as long
// as the mount; DeleteNamed ends it.
func CreateNamed(name string) (path string, err error) {
	if err := dirOnce(); err != nil {
		return "", err
	}
	path = filepath.Join(Dir, name)
	// O_EXCL: never adopt a namespace another test created under the same name.
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return "", fmt.Errorf("create mount point for netns %s: %w", name, err)
	}
	f.Close()

	errc := make(chan error, 1)
	go func() {
		// The thread is unshared into the new namespace and never unlocked,
		// so the runtime discards it when this goroutine returns: no other
		// goroutine ever runs in a namespace it did not ask for.
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
		return "", err
	}
	return path, nil
}

// CreateAnonymous creates a network namespace that lives only as long as
// the returned handle: for probes that must not touch any real namespace.
func CreateAnonymous() (netns.NsHandle, error) {
	type result struct {
		ns  netns.NsHandle
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is discarded
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- result{err: fmt.Errorf("unshare netns: %w", err)}
			return
		}
		ns, err := netns.Get()
		if err != nil {
			err = fmt.Errorf("open new netns: %w", err)
		}
		done <- result{ns, err}
	}()
	res := <-done
	return res.ns, res.err
}

// DeleteNamed undoes CreateNamed: the namespace goes away once the mount
// is gone and no process, socket or handle refers to it any more.
func DeleteNamed(path string) error {
	err := unix.Unmount(path, unix.MNT_DETACH)
	// EINVAL: not mounted (creation failed halfway); ENOENT: already removed.
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns mount point %s: %w", path, err)
	}
	return nil
}

// Do runs fn on a locked OS thread switched into ns. The caller's own
// thread never changes namespace. If the thread cannot be switched back, it
// stays locked and the runtime discards it with the goroutine, rather than
// letting a later goroutine run in the wrong namespace.
//
// Sockets fn creates belong to ns and may be used from any goroutine
// afterwards; goroutines fn starts do not run in ns.
func Do(ns netns.NsHandle, name string, fn func() error) error {
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
		if err := netns.Set(ns); err != nil {
			done <- result{err: fmt.Errorf("enter netns %s: %w", name, err)}
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
