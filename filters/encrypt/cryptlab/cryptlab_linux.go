package cryptlab

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// Mesh is a few simulated hypervisors on one underlay: each host is a
// testkit.Host (its own namespace, bridge br0 for its VMs) with an
// underlay interface ul0 (192.168.77.<i>/24 and fd77::<i>/64, MTU 1600)
// plugged into the underlay namespace's bridge. Hosts route their VMs'
// subnets (10.99.<i>.0/24 and fd99:<i>::/64, gateway .254 and ::fe on br0)
// to each other over the underlay, so unprotected traffic crosses in clear
// as on a routed hypervisor network.
type Mesh struct {
	Underlay *testkit.Host
	Hosts    []*Host
	Dir      string
	filter   Filter
	t        testing.TB
}

// Filter is what the lab needs of the encrypt package, handed in so that
// encrypt's own tests can use the lab too (cryptlab does not import it):
//
//	cryptlab.Filter{Descriptor: encrypt.Descriptor, HostKey: encrypt.HostPublicKey}
type Filter struct {
	// Descriptor is attached by Protect.
	Descriptor *sdk.Descriptor
	// HostKey creates a host's key pair in keyDir for tunnel (once) and
	// returns the public key.
	HostKey func(keyDir, tunnel string) (string, error)
}

// Tunnel is the tunnel device name, ListenPort its UDP port (encrypt's
// defaults).
const (
	Tunnel     = "vfwg0"
	ListenPort = 51820
)

// Host is one simulated hypervisor.
type Host struct {
	// I numbers the host from 1; its peer name is Name().
	I int
	H *testkit.Host
	// UnderlayIP is its underlay address (IPv4; the tunnel's endpoint).
	UnderlayIP netip.Addr
	// KeyDir holds its private key; PublicKey is the key's public half,
	// as the peers file writes it (base64). Set it to the new key after a
	// rotation before WritePeers.
	KeyDir    string
	PublicKey string
	// PeersFile and PolicyFile are the host's encrypt files.
	PeersFile, PolicyFile string
	vms                   int
}

// UnderlayMTU leaves room for WireGuard's 60-80 bytes around a VM's
// 1500-byte packet.
const UnderlayMTU = 1600

// Name is the host's name in the other hosts' peers files.
func (h *Host) Name() string { return HostName(h.I) }

// HostName is host i's peer name.
func HostName(i int) string { return fmt.Sprintf("host-%d", i) }

// Prefixes are the VM subnets behind host i.
func Prefixes(i int) []string {
	return []string{fmt.Sprintf("10.99.%d.0/24", i), fmt.Sprintf("fd99:%x::/64", i)}
}

// New builds n hosts on an underlay, writes every host's peers file
// (listing all the others) and an empty policy. Everything is removed at
// t's cleanup. It needs root, eBPF and /dev/net/tun.
func New(t testing.TB, n int, f Filter) *Mesh {
	t.Helper()
	testkit.Need(t, testkit.Root, testkit.BPF)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Fatalf("no TUN device: %v", err)
	}
	m := &Mesh{t: t, filter: f, Underlay: testkit.NewHost(t), Dir: t.TempDir()}
	uns, err := netns.GetFromPath(m.Underlay.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer uns.Close()
	uh := m.Underlay.Handle()
	ubr, err := uh.LinkByName(m.Underlay.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		h := &Host{I: i, H: testkit.NewHost(t), UnderlayIP: netip.AddrFrom4([4]byte{192, 168, 77, byte(i)})}
		h.KeyDir = filepath.Join(m.Dir, fmt.Sprintf("keys%d", i))
		h.PeersFile = filepath.Join(m.Dir, fmt.Sprintf("peers%d.json", i))
		h.PolicyFile = filepath.Join(m.Dir, fmt.Sprintf("policy%d.json", i))
		hh := h.H.Handle()
		veth := &netlink.Veth{LinkAttrs: netlink.NewLinkAttrs(), PeerName: fmt.Sprintf("ul%d", i), PeerNamespace: netlink.NsFd(uns)}
		veth.Name, veth.MTU = "ul0", UnderlayMTU
		if err := hh.LinkAdd(veth); err != nil {
			t.Fatalf("host %d: add underlay veth: %v", i, err)
		}
		port, err := uh.LinkByName(veth.PeerName)
		if err != nil {
			t.Fatal(err)
		}
		for _, err := range []error{uh.LinkSetMTU(port, UnderlayMTU), uh.LinkSetMaster(port, ubr), uh.LinkSetUp(port)} {
			if err != nil {
				t.Fatalf("underlay port of host %d: %v", i, err)
			}
		}
		err = h.H.Do(func() error {
			for k, v := range map[string]string{
				"net/ipv4/ip_forward":            "1",
				"net/ipv6/conf/all/forwarding":   "1",
				"net/ipv6/conf/ul0/disable_ipv6": "0",
				"net/ipv6/conf/br0/disable_ipv6": "0",
				// Strict for new devices, as distributions ship it: the
				// tunnel turns it off on its own device; "all" must be 0.
				"net/ipv4/conf/all/rp_filter":     "0",
				"net/ipv4/conf/default/rp_filter": "1",
			} {
				if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("host %d: %v", i, err)
		}
		ul, err := hh.LinkByName("ul0")
		if err != nil {
			t.Fatal(err)
		}
		br, err := hh.LinkByName(h.H.Bridge)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range []struct {
			l netlink.Link
			s string
		}{{ul, h.UnderlayIP.String() + "/24"}, {ul, fmt.Sprintf("fd77::%x/64", i)}, {br, fmt.Sprintf("10.99.%d.254/24", i)}, {br, fmt.Sprintf("fd99:%x::fe/64", i)}} {
			addr, err := netlink.ParseAddr(a.s)
			if err == nil {
				addr.Flags = unix.IFA_F_NODAD
				err = hh.AddrAdd(a.l, addr)
			}
			if err != nil {
				t.Fatalf("host %d: address %s: %v", i, a.s, err)
			}
		}
		if err := hh.LinkSetUp(ul); err != nil {
			t.Fatal(err)
		}
		if h.PublicKey, err = f.HostKey(h.KeyDir, Tunnel); err != nil {
			t.Fatal(err)
		}
		m.Hosts = append(m.Hosts, h)
	}
	for _, a := range m.Hosts {
		for _, b := range m.Hosts {
			if a == b {
				continue
			}
			for _, r := range []struct{ dst, gw string }{
				{fmt.Sprintf("10.99.%d.0/24", b.I), b.UnderlayIP.String()},
				{fmt.Sprintf("fd99:%x::/64", b.I), fmt.Sprintf("fd77::%x", b.I)},
			} {
				_, dst, _ := net.ParseCIDR(r.dst)
				if err := a.H.Handle().RouteAdd(&netlink.Route{Dst: dst, Gw: net.ParseIP(r.gw)}); err != nil {
					t.Fatalf("host %d: route to %s: %v", a.I, dst, err)
				}
			}
		}
	}
	for _, h := range m.Hosts {
		m.WritePeers(h, m.Hosts)
		m.WritePolicy(h, map[string]any{})
	}
	return m
}

// PeersJSON is a peers file.
type PeersJSON struct {
	ListenPort int        `json:"listen_port"`
	Prefixes   []string   `json:"prefixes"`
	Peers      []PeerJSON `json:"peers"`
}

// PeerJSON is one peer of a peers file.
type PeerJSON struct {
	Name      string   `json:"name"`
	PublicKey string   `json:"public_key"`
	Endpoint  string   `json:"endpoint"`
	Prefixes  []string `json:"prefixes"`
}

// WritePeers writes h's peers file listing the hosts of others (h itself
// skipped), as the control plane would.
func (m *Mesh) WritePeers(h *Host, others []*Host) {
	m.t.Helper()
	pf := PeersJSON{ListenPort: ListenPort, Prefixes: Prefixes(h.I), Peers: []PeerJSON{}}
	for _, o := range others {
		if o == h {
			continue
		}
		pf.Peers = append(pf.Peers, PeerJSON{Name: o.Name(), PublicKey: o.PublicKey,
			Endpoint: netip.AddrPortFrom(o.UnderlayIP, ListenPort).String(), Prefixes: Prefixes(o.I)})
	}
	m.WriteJSON(h.PeersFile, pf)
}

// WritePolicy writes h's policy file (docs/encrypt.md: space, vnics, pairs).
func (m *Mesh) WritePolicy(h *Host, policy map[string]any) {
	m.t.Helper()
	m.WriteJSON(h.PolicyFile, policy)
}

// WriteJSON replaces path with v as JSON (a temporary file renamed over
// it: a reader never sees half a file).
func (m *Mesh) WriteJSON(path string, v any) {
	m.t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		m.t.Fatal(err)
	}
	if err := os.WriteFile(path+".tmp", b, 0o600); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		m.t.Fatal(err)
	}
}

// AddVM adds a VM to h, addressed 10.99.<i>.<k>/24 and fd99:<i>::<k>/64
// with h's bridge as its gateway; the VM's IPv4 and IPv6 fields hold them.
func (m *Mesh) AddVM(h *Host, label string) *testkit.VM {
	m.t.Helper()
	v := h.H.AddVM(m.t, label)
	h.vms++
	vh := v.Handle()
	eth, err := vh.LinkByName("eth0")
	if err != nil {
		m.t.Fatal(err)
	}
	for _, a := range []net.IPNet{v.IPv4, v.IPv6} {
		if err := vh.AddrDel(eth, &netlink.Addr{IPNet: &a}); err != nil {
			m.t.Fatalf("vm %s: %v", label, err)
		}
	}
	v.IPv4 = net.IPNet{IP: net.IPv4(10, 99, byte(h.I), byte(h.vms)).To4(), Mask: net.CIDRMask(24, 32)}
	v.IPv6 = net.IPNet{IP: net.ParseIP(fmt.Sprintf("fd99:%x::%x", h.I, h.vms)), Mask: net.CIDRMask(64, 128)}
	for _, a := range []net.IPNet{v.IPv4, v.IPv6} {
		if err := vh.AddrAdd(eth, &netlink.Addr{IPNet: &a, Flags: unix.IFA_F_NODAD}); err != nil {
			m.t.Fatalf("vm %s: %v", label, err)
		}
	}
	for _, gw := range []net.IP{net.IPv4(10, 99, byte(h.I), 254), net.ParseIP(fmt.Sprintf("fd99:%x::fe", h.I))} {
		if err := vh.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw}); err != nil {
			m.t.Fatalf("vm %s: default route via %s: %v", label, gw, err)
		}
	}
	return v
}

// Params are the encrypt parameters of a vNIC on h (protect=all unless
// extra says otherwise). The short keepalive and peer timeout make
// outages show within seconds.
func (m *Mesh) Params(h *Host, extra map[string]string) map[string]string {
	p := map[string]string{"peers": h.PeersFile, "policy": h.PolicyFile, "protect": "all", "key_dir": h.KeyDir, "keepalive": "1s", "peer_timeout": "4s"}
	for k, v := range extra {
		p[k] = v
	}
	return p
}

// Protect attaches the encrypt filter in-process (testkit's datapath) to
// v's vNIC on h.
func (m *Mesh) Protect(h *Host, v *testkit.VM, extra map[string]string) sdk.FastPath {
	m.t.Helper()
	return v.AttachFilter(m.t, m.filter.Descriptor, m.Params(h, extra)).FastPath
}

// WaitUp waits until the instance fp reports every named peer up.
func WaitUp(t testing.TB, fp sdk.FastPath, peers ...string) {
	t.Helper()
	in, ok := fp.(sdk.Inspector)
	if !ok {
		t.Fatalf("%T is not an encrypt instance", fp)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := in.Inspect(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		// The inspection's JSON, as the API gives it (the lab does not
		// import encrypt).
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		var in struct {
			Tunnel struct {
				Device string `json:"device"`
				Peers  []struct {
					Name string `json:"name"`
					Up   bool   `json:"up"`
				} `json:"peers"`
			} `json:"tunnel"`
		}
		if err := json.Unmarshal(b, &in); err != nil {
			t.Fatal(err)
		}
		tun := in.Tunnel
		up := map[string]bool{}
		for _, p := range tun.Peers {
			up[p.Name] = p.Up
		}
		all := true
		for _, p := range peers {
			all = all && up[p]
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("tunnel %s: peers %v not up after 20s: %+v", tun.Device, peers, tun.Peers)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
