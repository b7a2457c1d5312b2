package bench

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Addresses of the two VMs. The subnet is unlikely to meet a real one, and
// the traffic never leaves the benchmark's namespaces anyway.
var (
	vmAIPv4 = mustCIDR("10.77.0.1/24")
	vmBIPv4 = mustCIDR("10.77.0.2/24")
	vmAIPv6 = mustCIDR("fd77::1/64")
	vmBIPv6 = mustCIDR("fd77::2/64")
	// The monitoring VM (mirror-span's destination).
	monIPv4 = mustCIDR("10.77.0.9/24")
	monIPv6 = mustCIDR("fd77::9/64")
	// vmBExtra are B's further addresses: the dlb suite's VIP has three
	// backends, 10.77.0.2-4, all served by B.
	vmBExtra = []*net.IPNet{mustCIDR("10.77.0.3/24"), mustCIDR("10.77.0.4/24")}
	// vipIPv4 is the dlb suite's virtual IP. Nothing owns it: A has a
	// static neighbour entry sending it to B's MAC, as a VIP behind a
	// gateway would be.
	vipIPv4 = net.IPv4(10, 77, 0, 100).To4()
)

func mustCIDR(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}

// vmIfName is the VM side of each veth, as a guest's first NIC.
const vmIfName = "eth0"

// host is the "hypervisor" namespace: a bridge and the host ends of the VMs'
// veths, which play the taps filterd protects. filterd runs inside it.
type host struct {
	ns     *namedNS
	handle *netlink.Handle
	bridge string
}

// vm is a "guest" namespace with one interface, eth0, whose veth peer (Tap)
// is a port of the host's bridge.
type vm struct {
	ns  *namedNS
	tap string // host-side veth name, the vNIC filterd attaches to
	ip4 *net.IPNet
	ip6 *net.IPNet
}

// topology is the whole benchmark network: host, client VM A, server VM B.
// Close removes all of it; it is safe on a half-built topology.
type topology struct {
	suffix string
	host   *host
	a, b   *vm
	// mon is a monitoring VM: the destination of the mirror-span case.
	mon *vm
}

// newHost creates the host namespace with lo and a bridge up.
func newHost(suffix string) (_ *host, err error) {
	ns, err := newNamedNS("vfb-host-" + suffix)
	if err != nil {
		return nil, err
	}
	h := &host{ns: ns, bridge: "vfbr-" + suffix}
	defer func() {
		if err != nil {
			h.Close()
		}
	}()
	h.handle, err = netlink.NewHandleAt(ns.handle)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", ns.name, err)
	}
	if err := setUp(h.handle, "lo"); err != nil {
		return nil, err
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: h.bridge}}
	if err := h.handle.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("create bridge %s: %w", h.bridge, err)
	}
	if err := setUp(h.handle, h.bridge); err != nil {
		return nil, err
	}
	return h, nil
}

// Close deletes the host namespace and with it the bridge and all veths.
func (h *host) Close() error {
	if h.handle != nil {
		h.handle.Close()
	}
	return h.ns.Close()
}

// newTopology builds host, bridge and the two VMs.
func newTopology() (_ *topology, err error) {
	t := &topology{suffix: randomHex(3)}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	if t.host, err = newHost(t.suffix); err != nil {
		return nil, err
	}
	if t.a, err = t.addVM("a", "vnetA-"+t.suffix, vmAIPv4, vmAIPv6); err != nil {
		return nil, err
	}
	if t.b, err = t.addVM("b", "vnetB-"+t.suffix, vmBIPv4, vmBIPv6, vmBExtra...); err != nil {
		return nil, err
	}
	if t.mon, err = t.addVM("m", "vnetM-"+t.suffix, monIPv4, monIPv6); err != nil {
		return nil, err
	}
	if err := t.routeVIP(); err != nil {
		return nil, err
	}
	return t, nil
}

// routeVIP gives A a permanent neighbour entry for the VIP with B's MAC.
func (t *topology) routeVIP() error {
	var mac net.HardwareAddr
	err := t.b.ns.Do(func() error {
		l, err := netlink.LinkByName(vmIfName)
		if err == nil {
			mac = l.Attrs().HardwareAddr
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", vmIfName, t.b.ns.name, err)
	}
	ah, err := netlink.NewHandleAt(t.a.ns.handle)
	if err != nil {
		return fmt.Errorf("netlink handle in %s: %w", t.a.ns.name, err)
	}
	defer ah.Close()
	eth, err := ah.LinkByName(vmIfName)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", vmIfName, t.a.ns.name, err)
	}
	n := &netlink.Neigh{LinkIndex: eth.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: vipIPv4, HardwareAddr: mac}
	if err := ah.NeighAdd(n); err != nil {
		return fmt.Errorf("neighbour %s -> %s in %s: %w", vipIPv4, mac, t.a.ns.name, err)
	}
	return nil
}

// addVM creates a VM namespace and a veth between it and the bridge. The
// peer is created directly in the VM namespace so no name is ever taken in
// the host namespace by a VM-side device.
func (t *topology) addVM(label, tap string, ip4, ip6 *net.IPNet, extra ...*net.IPNet) (_ *vm, err error) {
	ns, err := newNamedNS("vfb-vm" + label + "-" + t.suffix)
	if err != nil {
		return nil, err
	}
	v := &vm{ns: ns, tap: tap, ip4: ip4, ip6: ip6}
	defer func() {
		if err != nil {
			ns.Close()
		}
	}()
	br, err := t.host.handle.LinkByName(t.host.bridge)
	if err != nil {
		return nil, fmt.Errorf("find bridge %s: %w", t.host.bridge, err)
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: tap, MasterIndex: br.Attrs().Index},
		PeerName:      vmIfName,
		PeerNamespace: netlink.NsFd(ns.handle),
	}
	if err := t.host.handle.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("create veth %s for vm %s: %w", tap, label, err)
	}
	if err := setUp(t.host.handle, tap); err != nil {
		return nil, err
	}
	vh, err := netlink.NewHandleAt(ns.handle)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", ns.name, err)
	}
	defer vh.Close()
	eth, err := vh.LinkByName(vmIfName)
	if err != nil {
		return nil, fmt.Errorf("find %s in %s: %w", vmIfName, ns.name, err)
	}
	addrs := []*netlink.Addr{
		{IPNet: ip4},
		// NODAD: usable at once, not after ~2 s of duplicate detection.
		{IPNet: ip6, Flags: unix.IFA_F_NODAD},
	}
	for _, x := range extra {
		addrs = append(addrs, &netlink.Addr{IPNet: x})
	}
	for _, a := range addrs {
		if err := vh.AddrAdd(eth, a); err != nil {
			return nil, fmt.Errorf("add %s to %s in %s: %w", a.IPNet, vmIfName, ns.name, err)
		}
	}
	for _, name := range []string{"lo", vmIfName} {
		if err := setUp(vh, name); err != nil {
			return nil, err
		}
	}
	return v, nil
}

func setUp(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

// Close removes the VMs, then the host: each namespace takes its devices
// with it. It reports every error, not only the first.
func (t *topology) Close() error {
	var errs []error
	for _, v := range []*vm{t.a, t.b, t.mon} {
		if v != nil {
			errs = append(errs, v.ns.Close())
		}
	}
	if t.host != nil {
		errs = append(errs, t.host.Close())
	}
	return errors.Join(errs...)
}
