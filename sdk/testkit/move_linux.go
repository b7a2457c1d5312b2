package testkit

import (
	"errors"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Replug gives the VM a second vNIC, as a move to another host does from
// the filters' point of view: a new tap on the host's bridge (up; its name
// is returned, "vnet<k>m") and, inside the VM, a down interface with
// eth0's MAC. Attach the destination chain (and import the state) on the
// new tap, then call Cutover. The new tap is removed at cleanup.
func (v *VM) Replug(t testing.TB) string {
	t.Helper()
	h := v.host
	name := v.TapName + "m"
	veth := &netlink.Veth{LinkAttrs: netlink.NewLinkAttrs(), PeerName: "eth1", PeerHardwareAddr: v.MAC, PeerNamespace: netlink.NsFd(v.ns)}
	veth.Name = name
	if err := h.handle.LinkAdd(veth); err != nil {
		t.Fatalf("replug vm %q: add veth %s: %v", v.Label, name, err)
	}
	t.Cleanup(func() {
		l, err := h.handle.LinkByName(name)
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return
		}
		if err == nil {
			err = h.handle.LinkDel(l)
		}
		if err != nil {
			t.Errorf("delete tap %s of vm %q: %v", name, v.Label, err)
		}
	})
	tap, err := h.handle.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	br, err := h.handle.LinkByName(h.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.handle.LinkSetMasterByIndex(tap, br.Attrs().Index); err != nil {
		t.Fatalf("replug vm %q: enslave %s: %v", v.Label, name, err)
	}
	if err := h.handle.LinkSetUp(tap); err != nil {
		t.Fatalf("replug vm %q: set %s up: %v", v.Label, name, err)
	}
	return name
}

// Cutover moves the VM onto the tap Replug made, the way it resumes on
// the destination: eth0 and its old tap are deleted, the new interface
// becomes eth0 with the same MAC and addresses and comes up. The bridge
// forgot the MAC with the old port, so frames to the VM flood until it
// sends. TapName and TapIndex name the new tap afterwards.
func (v *VM) Cutover(t testing.TB) {
	t.Helper()
	fail := func(format string, a ...any) {
		t.Helper()
		t.Fatalf("cut vm %q over: "+format, append([]any{v.Label}, a...)...)
	}
	old, err := v.handle.LinkByName(vmIfName)
	if err != nil {
		fail("%v", err)
	}
	if err := v.handle.LinkDel(old); err != nil {
		fail("delete %s: %v", vmIfName, err)
	}
	eth, err := v.handle.LinkByName("eth1")
	if err != nil {
		fail("no replugged interface (call Replug first): %v", err)
	}
	if err := v.handle.LinkSetName(eth, vmIfName); err != nil {
		fail("rename: %v", err)
	}
	if err := v.Do(func() error { return writeSysctl("net/ipv6/conf/"+vmIfName+"/accept_dad", "0") }); err != nil {
		fail("%v", err)
	}
	for _, a := range []*netlink.Addr{{IPNet: &v.IPv4}, {IPNet: &v.IPv6, Flags: unix.IFA_F_NODAD}} {
		if err := v.handle.AddrAdd(eth, a); err != nil {
			fail("address %s: %v", a.IPNet, err)
		}
	}
	if err := v.handle.LinkSetUp(eth); err != nil {
		fail("up: %v", err)
	}
	v.TapName += "m"
	tap, err := v.host.handle.LinkByName(v.TapName)
	if err != nil {
		fail("%v", err)
	}
	v.TapIndex = tap.Attrs().Index
}
