package testlab

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

// NewBridge creates a bridge "vfbr<hex>" in the host's network namespace —
// where libvirt creates QEMU's taps — up, with no address, no uplink and
// IPv6 disabled on it, so the host puts nothing on the wire (no router
// solicitations, no DAD) and all traffic on it is between its guests. t's
// cleanup deletes it. Give it an address with netlink if a test needs the
// host on the segment.
func NewBridge(t testing.TB) string {
	t.Helper()
	need(t, needRoot)
	reapStaleBridges(t.Logf)
	name := bridgePrefix + randomHex(4)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := netlink.LinkAdd(br); err != nil {
		t.Fatalf("create bridge %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := netlink.LinkDel(br); err != nil {
			t.Errorf("delete bridge %s: %v", name, err)
		}
	})
	if owner, err := ownerTag(); err == nil {
		_ = netlink.LinkSetAlias(br, bridgeAliasPrefix+owner)
	}
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0o644); err != nil && !os.IsNotExist(err) {
		t.Fatalf("disable IPv6 on bridge %s: %v", name, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		t.Fatalf("bring bridge %s up: %v", name, err)
	}
	return name
}

// BridgePorts lists the interfaces enslaved to bridge.
func BridgePorts(bridge string) ([]string, error) {
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return nil, err
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	var ports []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			ports = append(ports, l.Attrs().Name)
		}
	}
	return ports, nil
}

const (
	bridgePrefix = "vfbr"
	// bridgeAliasPrefix starts the ifalias of every bridge NewBridge makes,
	// followed by the owner tag, so a later run can delete the bridges of a
	// test binary that was killed before its cleanup ran.
	bridgeAliasPrefix = "vnicfilter-testlab owner="
)

// reapStaleBridges deletes bridges made by NewBridge in test processes
// that are gone; those of live processes are left alone.
func reapStaleBridges(logf func(string, ...any)) {
	links, err := netlink.LinkList()
	if err != nil {
		return
	}
	for _, l := range links {
		a := l.Attrs()
		owner, ok := strings.CutPrefix(a.Alias, bridgeAliasPrefix)
		if !ok || !strings.HasPrefix(a.Name, bridgePrefix) || l.Type() != "bridge" || ownerAlive(owner) {
			continue
		}
		logf("deleting bridge %s of dead test process (%s)", a.Name, owner)
		_ = netlink.LinkDel(l)
	}
}

// ownerTag identifies this process across pid reuse: "PID:STARTTIME".
func ownerTag() (string, error) {
	st, err := procStartTime(os.Getpid())
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d:%s", os.Getpid(), st), nil
}

// ownerAlive reports whether the process an owner tag names still runs.
// A tag that does not parse counts as alive: never reap what is unclear.
func ownerAlive(tag string) bool {
	var pid int
	var start string
	if _, err := fmt.Sscanf(strings.Replace(tag, ":", " ", 1), "%d %s", &pid, &start); err != nil {
		return true
	}
	st, err := procStartTime(pid)
	return err == nil && st == start
}
