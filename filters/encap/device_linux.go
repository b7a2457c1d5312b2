package encap

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// DefaultStateRoot is where the host-wide state of each VXLAN device is
// pinned: beside filterd's root, not under it (filterd takes every
// directory under its root for a vNIC).
const DefaultStateRoot = "/sys/fs/bpf/vnicfilter-encap"

// ErrConflict is returned when a vNIC claims a (segment, MAC) another live
// vNIC of the host holds.
var ErrConflict = errors.New("encap: MAC already attached in the segment")

// Pins in a device's state directory.
const (
	pinPorts  = "encap_ports"
	pinFlood  = "encap_flood"
	pinStats  = "encap_rx_stats"
	pinRxLink = "rx_link"
)

// Device is the host side of the overlay: the collect-metadata VXLAN
// device, its receive program, and the registry of local vNICs by
// segment and MAC that the receive program and every instance share.
type Device struct {
	// Name and Ifindex of the VXLAN device.
	Name    string
	Ifindex int
	// Dir is the bpffs directory of the device's state.
	Dir string

	ports, flood, stats   *ebpf.Map
	rxMembers, memberSets *ebpf.Map
}

// DeviceOptions tune AttachDevice. The zero value is the default.
type DeviceOptions struct {
	// StateRoot is the bpffs directory holding every device's state;
	// DefaultStateRoot when empty.
	StateRoot string
}

var rxSpec = sync.OnceValues(loadRx)

// stateDir names a device's state by its network namespace (the cookie
// the kernel never reuses while it runs) and name, so hosts simulated in
// namespaces sharing one bpffs keep theirs apart.
func stateDir(root, dev string) (string, error) {
	if root == "" {
		root = DefaultStateRoot
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("socket for the netns cookie: %w", err)
	}
	defer unix.Close(fd)
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return "", fmt.Errorf("netns cookie (Linux 5.14+): %w", err)
	}
	// bpffs names cannot hold '.', interface names can.
	return filepath.Join(root, fmt.Sprintf("netns%d-%s", cookie, strings.ReplaceAll(dev, ".", "_"))), nil
}

// checkDevice refuses anything but an up collect-metadata VXLAN device with
// the gbp flag, naming the fix.
func checkDevice(name string) (int, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return 0, fmt.Errorf("vxlan device %s: %w (create it: ip link add %s type vxlan external gbp dstport 4789 && ip link set %s up)", name, err, name, name)
	}
	vx, ok := l.(*netlink.Vxlan)
	switch {
	case !ok:
		return 0, fmt.Errorf("device %s is a %s, not a vxlan device", name, l.Type())
	case !vx.FlowBased:
		return 0, fmt.Errorf("vxlan device %s is not in collect-metadata mode: recreate it with `external`", name)
	case !vx.GBP:
		return 0, fmt.Errorf("vxlan device %s does not carry the group policy extension: recreate it with `gbp`", name)
	}
	return l.Attrs().Index, nil
}

// AttachDevice makes the VXLAN device name (in the calling thread's
// network namespace) ready for encap: its state maps exist (pinned, so
// they outlive the process) and the receive program sits on its tc
// ingress through a pinned tcx link. It is idempotent; the first encap
// instance of a host calls it, as does every reload (a recreated device
// gets its program back). Close the Device when done; the attachment
// stays until DetachDevice.
func AttachDevice(name string, opts DeviceOptions) (*Device, error) {
	ifindex, err := checkDevice(name)
	if err != nil {
		return nil, err
	}
	dir, err := stateDir(opts.StateRoot, name)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	defer unlock()

	spec, err := rxSpec()
	if err != nil {
		return nil, err
	}
	spec = spec.Copy()
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinByName
	}
	var objs rxObjects
	if err := spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: dir}}); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load encap receive program: %w (verifier log: %+v)", err, ve)
		}
		return nil, fmt.Errorf("load encap receive program: %w", err)
	}
	defer objs.VfEncapRx.Close()
	d := &Device{Name: name, Ifindex: ifindex, Dir: dir, ports: objs.EncapPorts, flood: objs.EncapFlood, stats: objs.EncapRxStats,
		rxMembers: objs.EncapRxMembers, memberSets: objs.EncapMemberSets}

	linkPin := filepath.Join(dir, pinRxLink)
	if l, err := link.LoadPinnedLink(linkPin, nil); err == nil {
		info, ierr := l.Info()
		var tcx *link.TCXInfo
		if ierr == nil {
			tcx = info.TCX()
		}
		if tcx != nil && int(tcx.Ifindex) == ifindex {
			l.Close()
			return d, nil // attached already
		}
		// The device was recreated: the old link is defunct.
		_ = l.Unpin()
		l.Close()
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: objs.VfEncapRx, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		d.Close()
		if errors.Is(err, ebpf.ErrNotSupported) {
			return nil, fmt.Errorf("attach encap receive program to %s: %w: needs tcx links (Linux 6.6+)", name, err)
		}
		return nil, fmt.Errorf("attach encap receive program to %s: %w", name, err)
	}
	defer l.Close()
	if err := l.Pin(linkPin); err != nil {
		_ = l.Close()
		d.Close()
		return nil, fmt.Errorf("pin encap receive link: %w", err)
	}
	return d, nil
}

// ensure checks that the device still is what the instance attached to
// and its receive program still sits on it, and attaches it again if the
// device was recreated. It returns the device's ifindex.
func (d *Device) ensure() (int, error) {
	ifindex, err := checkDevice(d.Name)
	if err != nil {
		return 0, err
	}
	if ifindex == d.Ifindex {
		if l, err := link.LoadPinnedLink(filepath.Join(d.Dir, pinRxLink), nil); err == nil {
			info, ierr := l.Info()
			l.Close()
			if ierr == nil && info.TCX() != nil && int(info.TCX().Ifindex) == ifindex {
				return ifindex, nil
			}
		}
	}
	nd, err := AttachDevice(d.Name, DeviceOptions{StateRoot: filepath.Dir(d.Dir)})
	if err != nil {
		return 0, err
	}
	defer nd.Close()
	d.Ifindex = nd.Ifindex
	return nd.Ifindex, nil
}

// DetachDevice removes the receive program from the VXLAN device name and
// the device's state (the registry of local vNICs). Instances still
// running lose their local deliveries; detach them first.
func DetachDevice(name string, opts DeviceOptions) error {
	dir, err := stateDir(opts.StateRoot, name)
	if err != nil {
		return err
	}
	if l, err := link.LoadPinnedLink(filepath.Join(dir, pinRxLink), nil); err == nil {
		_ = l.Unpin()
		_ = l.Close()
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	_ = os.Remove(filepath.Dir(dir)) // the root too, once no device is left
	return nil
}

// Close releases the process's handles; the device state stays pinned.
func (d *Device) Close() error {
	for _, m := range []*ebpf.Map{d.ports, d.flood, d.stats, d.rxMembers, d.memberSets} {
		_ = m.Close()
	}
	return nil
}

func lockDir(dir string) (func(), error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

func newOwner() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:]) | 1
}

// register enters p in the host's registry: frames of its segment for its
// MAC are delivered to its vNIC from now on. A (segment, MAC) held by
// another vNIC that still exists is a conflict; one whose vNIC is gone
// (a stale entry) is taken over. Call in the namespace of the vNICs.
func (d *Device) register(p Port) error {
	unlock, err := lockDir(d.Dir)
	if err != nil {
		return err
	}
	defer unlock()
	key := rxEncapPortKey{Vni: p.VNI, Mac: p.MAC}
	var old rxEncapPort
	if err := d.ports.Lookup(&key, &old); err == nil && int(old.Ifindex) != p.Ifindex {
		if l, err := netlink.LinkByIndex(int(old.Ifindex)); err == nil {
			return fmt.Errorf("%w: %s in segment %d is on vNIC %s", ErrConflict, macString(p.MAC), p.VNI, l.Attrs().Name)
		}
	}
	val := rxEncapPort{Ifindex: uint32(p.Ifindex), Group: uint32(p.Group), Owner: p.owner}
	if err := d.ports.Put(&key, &val); err != nil {
		return fmt.Errorf("register vNIC in %s: %w", pinPorts, err)
	}
	if err := d.rebuildFlood(p.VNI); err != nil {
		_ = d.ports.Delete(&key)
		_ = d.rebuildFlood(p.VNI)
		return err
	}
	return nil
}

// unregister removes every entry owner put in the registry.
func (d *Device) unregister(owner uint64) error {
	unlock, err := lockDir(d.Dir)
	if err != nil {
		return err
	}
	defer unlock()
	var k rxEncapPortKey
	var v rxEncapPort
	var mine []rxEncapPortKey
	it := d.ports.Iterate()
	for it.Next(&k, &v) {
		if v.Owner == owner {
			mine = append(mine, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate %s: %w", pinPorts, err)
	}
	for _, k := range mine {
		if err := d.ports.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("unregister vNIC: %w", err)
		}
		if err := d.rebuildFlood(k.Vni); err != nil {
			return err
		}
	}
	var sk rxEncapMemberSetKey
	var sv rxEncapMemberSet
	var sets []rxEncapMemberSetKey
	sit := d.memberSets.Iterate()
	for sit.Next(&sk, &sv) {
		if sk.Owner == owner {
			sets = append(sets, sk)
		}
	}
	if err := sit.Err(); err != nil {
		return fmt.Errorf("iterate encap_member_sets: %w", err)
	}
	for _, k := range sets {
		if err := d.memberSets.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove member list: %w", err)
		}
		if err := d.rebuildRxMembers(k.Vni); err != nil {
			return err
		}
	}
	return nil
}

// setMembers records owner's member hosts of segment vni: the host then
// accepts frames of the segment from the union of its instances' lists.
func (d *Device) setMembers(vni uint32, owner uint64, hosts []netip.Addr) error {
	unlock, err := lockDir(d.Dir)
	if err != nil {
		return err
	}
	defer unlock()
	if len(hosts) > MaxMembers {
		return fmt.Errorf("segment %d: %d member hosts, at most %d", vni, len(hosts), MaxMembers)
	}
	k := rxEncapMemberSetKey{Vni: vni, Owner: owner}
	var v rxEncapMemberSet
	v.N = uint32(len(hosts))
	for i, h := range hosts {
		v.Hosts[i] = rxHost(h)
	}
	if err := d.memberSets.Put(&k, &v); err != nil {
		return fmt.Errorf("write encap_member_sets: %w", err)
	}
	return d.rebuildRxMembers(vni)
}

func rxHost(a netip.Addr) rxEncapHost {
	h := hostAddr(a)
	return rxEncapHost{V6: h.V6, Addr: h.Addr}
}

// rebuildRxMembers makes encap_rx_members hold, for segment vni, exactly
// the union of the instances' member lists: additions first, so a host in
// both the old and the new union is never refused in between.
func (d *Device) rebuildRxMembers(vni uint32) error {
	want := map[rxEncapHost]bool{}
	var sk rxEncapMemberSetKey
	var sv rxEncapMemberSet
	it := d.memberSets.Iterate()
	for it.Next(&sk, &sv) {
		if sk.Vni == vni {
			for _, h := range sv.Hosts[:min(int(sv.N), len(sv.Hosts))] {
				want[h] = true
			}
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate encap_member_sets: %w", err)
	}
	one := uint32(1)
	for h := range want {
		k := rxEncapRxMemberKey{Vni: vni, Host: h}
		if err := d.rxMembers.Put(&k, &one); err != nil {
			return fmt.Errorf("write encap_rx_members: %w", err)
		}
	}
	var mk rxEncapRxMemberKey
	var mv uint32
	var stale []rxEncapRxMemberKey
	mit := d.rxMembers.Iterate()
	for mit.Next(&mk, &mv) {
		if mk.Vni == vni && !want[mk.Host] {
			stale = append(stale, mk)
		}
	}
	if err := mit.Err(); err != nil {
		return fmt.Errorf("iterate encap_rx_members: %w", err)
	}
	for _, k := range stale {
		if err := d.rxMembers.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("update encap_rx_members: %w", err)
		}
	}
	return nil
}

// Accepts reports the hosts the receive program accepts frames of segment
// vni from.
func (d *Device) Accepts(vni uint32) ([]netip.Addr, error) {
	var mk rxEncapRxMemberKey
	var mv uint32
	var out []netip.Addr
	it := d.rxMembers.Iterate()
	for it.Next(&mk, &mv) {
		if mk.Vni == vni {
			out = append(out, hostFromRx(mk.Host))
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate encap_rx_members: %w", err)
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out, nil
}

func hostFromRx(h rxEncapHost) netip.Addr {
	if h.V6 == 0 {
		a := h.Addr[0]
		return netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
	}
	var b [16]byte
	for i, w := range h.Addr {
		b[4*i], b[4*i+1], b[4*i+2], b[4*i+3] = byte(w), byte(w>>8), byte(w>>16), byte(w>>24)
	}
	return netip.AddrFrom16(b)
}

// Ports lists the registry.
func (d *Device) Ports() ([]Port, error) {
	var k rxEncapPortKey
	var v rxEncapPort
	var out []Port
	it := d.ports.Iterate()
	for it.Next(&k, &v) {
		out = append(out, Port{VNI: k.Vni, MAC: k.Mac, Ifindex: int(v.Ifindex), Group: uint16(v.Group), owner: v.Owner})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate %s: %w", pinPorts, err)
	}
	return out, nil
}

// rebuildFlood recomputes segment vni's flood list from the registry.
func (d *Device) rebuildFlood(vni uint32) error {
	ports, err := d.Ports()
	if err != nil {
		return err
	}
	list := FloodList(ports, vni)
	if len(list) == 0 {
		if err := d.flood.Delete(vni); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("update %s: %w", pinFlood, err)
		}
		return nil
	}
	if len(list) > MaxLocal {
		return fmt.Errorf("segment %d would have %d vNICs on this host, at most %d", vni, len(list), MaxLocal)
	}
	var v rxEncapFloodList
	v.N = uint32(len(list))
	for i, ifindex := range list {
		v.Ifindex[i] = uint32(ifindex)
	}
	if err := d.flood.Put(vni, &v); err != nil {
		return fmt.Errorf("update %s: %w", pinFlood, err)
	}
	return nil
}

// Receive-side counters (encap_rx_stats).
var rxStatNames = []string{
	"rx_unicast_total", "rx_flood_total", "rx_flood_copies_total",
	"rx_no_port_total", "rx_no_tunnel_total", "rx_errors_total",
	"rx_not_member_total",
}

// Counters reads the receive program's counters: packets per outcome.
func (d *Device) Counters() (map[string]uint64, error) {
	out := map[string]uint64{}
	for i, n := range rxStatNames {
		p, _, err := sdk.SumPerCPU(d.stats, uint32(i))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", pinStats, err)
		}
		out[n] = p
	}
	return out, nil
}

func macString(m [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}
