// Package watch is filterd's libvirt watcher: it keeps a go-libvirt
// connection to libvirtd, subscribes to the domain events that can change
// which chains should exist (lifecycle, device added/removed, metadata
// change), and reconciles filterd's chains owned by "libvirt:<domain>"
// with what every running domain's live XML asks for — on connect, on
// every reconnect (libvirtd restarted: exponential backoff), on every
// event, and every Options.Resync.
//
// The hook (package hooks) is the trigger that puts a chain in place
// before QEMU runs; the watcher is the truth afterwards: it attaches the
// chains of hot-plugged NICs, applies a changed configuration of a running
// domain, removes the chains of domains that stopped while the hook could
// not reach filterd, and repairs drift.
//
// The watcher only touches chains whose owner starts with "libvirt:".
// A domain whose live configuration is invalid keeps its chains as they
// are until it is fixed. A changed chain is swapped atomically with
// filterd's replace (PUT with "replace": true).
package watch
