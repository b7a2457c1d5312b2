// Package enclab builds simulated multi-host overlays in network
// namespaces: an underlay (a bridge in its own namespace) that hosts plug
// into, each with an uplink address and the collect-metadata VXLAN device
// the encap filter uses, and the two setups encap is compared with (plain
// routing over the underlay, and a Linux bridge with a learning VXLAN
// device). The encap tests, filterd's encap tests and vfbench's encap
// suite share it; it creates only what it is asked to, in namespaces the
// caller owns, and never touches the caller's own namespace.
package enclab

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/internal/nsutil"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// Names and numbers of the lab.
const (
	// VXLANDev is each host's collect-metadata VXLAN device (external,
	// gbp), as docs/encap.md sets it up.
	VXLANDev = "vxlan0"
	// VXLANPort is its UDP port.
	VXLANPort = 4789
	// Bridge is the underlay's bridge; Uplink each host's port to it.
	Bridge = "ulbr"
	Uplink = "ul0"
	// DIYDev and DIYPort are the learning VXLAN device of BridgeVXLAN
	// (another port, so both kinds can live on one host).
	DIYDev  = "vxlan100"
	DIYPort = 4790
	// DIYVNI is its segment.
	DIYVNI = 100
)

// Underlay is a namespace with a bridge that every simulated host's
// uplink is a port of.
type Underlay struct {
	Name, Path string
	NS         netns.NsHandle
	Handle     *netlink.Handle
}

// NewUnderlay creates the underlay namespace (bind-mounted at
// /run/netns/vful-<random>) with its bridge up. Close removes it.
func NewUnderlay() (_ *Underlay, err error) {
	name, err := nsutil.RandomName("vful-")
	if err != nil {
		return nil, err
	}
	path, err := nsutil.CreateNamed(name)
	if err != nil {
		return nil, fmt.Errorf("create underlay: %w", err)
	}
	u := &Underlay{Name: name, Path: path, NS: -1}
	defer func() {
		if err != nil {
			_ = u.Close()
		}
	}()
	if u.NS, err = netns.GetFromPath(path); err != nil {
		return nil, err
	}
	if u.Handle, err = netlink.NewHandleAt(u.NS); err != nil {
		return nil, err
	}
	br := &netlink.Bridge{LinkAttrs: netlink.NewLinkAttrs()}
	br.Name = Bridge
	if err := u.Handle.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("add underlay bridge: %w", err)
	}
	for _, n := range []string{"lo", Bridge} {
		if err := setUp(u.Handle, n); err != nil {
			return nil, fmt.Errorf("underlay %s up: %w", n, err)
		}
	}
	return u, nil
}

// Close removes the underlay namespace and with it the hosts' veth peers.
func (u *Underlay) Close() error {
	if u.Handle != nil {
		u.Handle.Close()
		u.Handle = nil
	}
	if u.NS >= 0 {
		u.NS.Close()
		u.NS = -1
	}
	if u.Path == "" {
		return nil
	}
	err := nsutil.DeleteNamed(u.Path)
	u.Path = ""
	return err
}

// Plug connects host namespace ns (label names it in errors) as port i
// (1-based): a veth ul-<i> in the underlay bridge whose peer is the host's
// Uplink with address ip (/24, or /64 for IPv6) and MTU mtu; and creates
// the host's VXLANDev (external, gbp, no learning) and brings it up.
func (u *Underlay) Plug(ns netns.NsHandle, label string, i int, ip netip.Addr, mtu int) error {
	hl, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer hl.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.NewLinkAttrs(), PeerName: Uplink, PeerNamespace: netlink.NsFd(ns)}
	veth.Name = fmt.Sprintf("ul-%d", i)
	veth.MTU = mtu
	if err := u.Handle.LinkAdd(veth); err != nil {
		return fmt.Errorf("add underlay veth for %s: %w", label, err)
	}
	port, err := u.Handle.LinkByName(veth.Name)
	if err != nil {
		return err
	}
	br, err := u.Handle.LinkByName(Bridge)
	if err != nil {
		return err
	}
	if err := u.Handle.LinkSetMaster(port, br); err != nil {
		return err
	}
	if err := u.Handle.LinkSetUp(port); err != nil {
		return err
	}
	up, err := hl.LinkByName(Uplink)
	if err != nil {
		return err
	}
	bits := 24
	if ip.Is6() {
		bits = 64
		// Namespaces made by testkit have IPv6 off by default.
		if err := nsutil.Do(ns, label, func() error { return WriteSysctl("net/ipv6/conf/"+Uplink+"/disable_ipv6", "0") }); err != nil {
			return err
		}
	}
	if err := hl.AddrAdd(up, &netlink.Addr{IPNet: PrefixNet(netip.PrefixFrom(ip, bits)), Flags: unix.IFA_F_NODAD}); err != nil {
		return fmt.Errorf("address %s on %s: %w", ip, label, err)
	}
	if err := hl.LinkSetMTU(up, mtu); err != nil {
		return err
	}
	if err := hl.LinkSetUp(up); err != nil {
		return err
	}
	if err := WaitUp(hl, Uplink); err != nil {
		return fmt.Errorf("%s: %w", label, err)
	}
	return AddVXLAN(ns, label)
}

// AddVXLAN creates host namespace ns's VXLANDev (external, gbp, no
// learning), as docs/encap.md's host setup does, and waits until it is up.
func AddVXLAN(ns netns.NsHandle, label string) error {
	hl, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer hl.Close()
	vx := &netlink.Vxlan{LinkAttrs: netlink.NewLinkAttrs(), FlowBased: true, GBP: true, Port: VXLANPort, Learning: false}
	vx.Name = VXLANDev
	if err := hl.LinkAdd(vx); err != nil {
		return fmt.Errorf("add %s on %s: %w", VXLANDev, label, err)
	}
	if err := setUp(hl, VXLANDev); err != nil {
		return err
	}
	if err := WaitUp(hl, VXLANDev); err != nil {
		return fmt.Errorf("%s: %w", label, err)
	}
	return nil
}

// Routed makes host ns a router for the subnet behind its bridge: gw (an
// address with its prefix) on the bridge, a route to remote via the
// other host's underlay address, IPv4 forwarding on. The plain-routing
// case the overlay is compared with.
func Routed(ns netns.NsHandle, label, bridge string, gw, remote netip.Prefix, via netip.Addr) error {
	hl, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer hl.Close()
	br, err := hl.LinkByName(bridge)
	if err != nil {
		return err
	}
	if err := hl.AddrAdd(br, &netlink.Addr{IPNet: PrefixNet(gw)}); err != nil {
		return fmt.Errorf("%s: gateway %s: %w", label, gw, err)
	}
	if err := hl.RouteAdd(&netlink.Route{Dst: PrefixNet(remote.Masked()), Gw: via.AsSlice()}); err != nil {
		return fmt.Errorf("%s: route to %s: %w", label, remote, err)
	}
	return nsutil.Do(ns, label, func() error { return WriteSysctl("net/ipv4/ip_forward", "1") })
}

// BridgeVXLAN is the do-it-yourself overlay on host ns: a VXLAN device
// (DIYDev, VNI DIYVNI, learning) on the host's bridge, MTU mtu, flooding
// to peer (head-end replication); MACs are learnt from what arrives.
func BridgeVXLAN(ns netns.NsHandle, label, bridge string, self, peer netip.Addr, mtu int) error {
	hl, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer hl.Close()
	vx := &netlink.Vxlan{LinkAttrs: netlink.NewLinkAttrs(), VxlanId: DIYVNI, Port: DIYPort, Learning: true, SrcAddr: self.AsSlice()}
	vx.Name = DIYDev
	vx.MTU = mtu
	if err := hl.LinkAdd(vx); err != nil {
		return fmt.Errorf("%s: add %s: %w", label, DIYDev, err)
	}
	l, err := hl.LinkByName(vx.Name)
	if err != nil {
		return err
	}
	br, err := hl.LinkByName(bridge)
	if err != nil {
		return err
	}
	if err := hl.LinkSetMaster(l, br); err != nil {
		return err
	}
	if err := hl.LinkSetUp(l); err != nil {
		return err
	}
	fdb := &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT,
		HardwareAddr: make(net.HardwareAddr, 6), IP: peer.AsSlice()}
	if err := hl.NeighAppend(fdb); err != nil {
		return fmt.Errorf("%s: flood entry to %s: %w", label, peer, err)
	}
	return nil
}

// GuestMTU is the MTU that lets a guest's frames fit an underlay of MTU
// mtu once encapsulated (docs/encap.md, MTU).
func GuestMTU(underlay netip.Addr, mtu int) int {
	if underlay.Is4() {
		return mtu - 50
	}
	return mtu - 70
}

// PrefixNet converts p for netlink.
func PrefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// WriteSysctl writes /proc/sys/<key> in the calling thread's namespace.
func WriteSysctl(key, value string) error {
	return os.WriteFile("/proc/sys/"+key, []byte(value), 0o644)
}

func setUp(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return err
	}
	return h.LinkSetUp(l)
}

// WaitUp waits (5 s at most) for device name to be operationally up.
func WaitUp(h *netlink.Handle, name string) error {
	for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		l, err := h.LinkByName(name)
		if err != nil {
			return err
		}
		// A vxlan device reports "unknown" while working.
		if s := l.Attrs().OperState; s == netlink.OperUp || s == netlink.OperUnknown {
			return nil
		}
		if time.Since(start) > 5*time.Second {
			return errors.New(name + " still " + l.Attrs().OperState.String())
		}
	}
}

// SegmentIdentity gives VM v the identity of a segment member: MAC mac on
// its eth0, IPv4 address ip4/24 instead of testkit's, and MTU mtu (see
// GuestMTU). Two segments may give their VMs the same MAC and address.
func SegmentIdentity(v *testkit.VM, mac string, ip4 netip.Addr, mtu int) error {
	hl := v.Handle()
	l, err := hl.LinkByName("eth0")
	if err != nil {
		return err
	}
	addrs, err := hl.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if err := hl.AddrDel(l, &a); err != nil {
			return err
		}
	}
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return err
	}
	if err := hl.LinkSetHardwareAddr(l, hw); err != nil {
		return err
	}
	if err := hl.LinkSetMTU(l, mtu); err != nil {
		return err
	}
	return hl.AddrAdd(l, &netlink.Addr{IPNet: PrefixNet(netip.PrefixFrom(ip4, 24)), Flags: unix.IFA_F_NODAD})
}

// EchoPort is the UDP port TagEcho answers on.
const EchoPort = 7007

// TagEcho answers every UDP datagram to VM v's EchoPort with tag, until
// the returned closer is closed: which VM answers tells a test which
// segment a frame reached.
func TagEcho(v *testkit.VM, tag string) (io.Closer, error) {
	c, err := v.ListenUDP(fmt.Sprintf(":%d", EchoPort))
	if err != nil {
		return nil, err
	}
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteToUDP([]byte(tag), from)
		}
	}()
	return c, nil
}
