package encap

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// Fast-path counters (encap_stats), in the order of the ENCAP_S_* indexes.
var statNames = []string{
	"tx_remote_total", "tx_local_total", "tx_flood_total",
	"flood_remote_copies_total", "flood_local_copies_total",
	"arp_replies_total", "nd_replies_total",
	"drop_oversize_total", "drop_src_mac_total",
	"rx_total", "drop_foreign_total", "errors_total", "drop_self_total",
	"mss_clamped_total",
}

var statHelp = []string{
	"Unicast frames tunnelled to the member host of their destination MAC.",
	"Unicast frames delivered to a local vNIC of the segment.",
	"Broadcast, multicast and unknown unicast frames replicated.",
	"Copies of replicated frames tunnelled to member hosts.",
	"Copies of replicated frames delivered to local vNICs of the segment.",
	"ARP requests answered by the filter.",
	"IPv6 neighbour solicitations answered by the filter.",
	"Frames dropped because their encapsulation exceeds the underlay MTU.",
	"Frames dropped because their source MAC is not the VM's.",
	"Frames delivered to the VM by the filter (tunnel, local vNIC, ARP/ND reply).",
	"Frames to the VM dropped because they did not come through the segment.",
	"Frames dropped because a kernel helper failed.",
	"Unicast frames to the VM's own MAC, dropped.",
	"TCP SYNs whose MSS option was lowered to fit the underlay.",
}

type fastPath struct {
	objs   encapObjects
	dev    *Device
	owner  uint64
	params params
	vnic   string
	// host is the HostFDB the instance compiles from, if any.
	host atomic.Pointer[HostFDB]

	mu     sync.Mutex
	tables *Tables
}

var (
	_ sdk.FastPath = (*fastPath)(nil)
	_ sdk.Reloader = (*fastPath)(nil)
)

var encapSpec = sync.OnceValues(loadEncap)

var errClosed = errors.New("encap: instance closed")

// params are an instance's checked parameters.
type params struct {
	vni     uint32
	group   uint16
	mac     [6]byte
	fib     string
	dev     string
	local   netip.Addr
	mtu     int
	fibSize int
	clamp   bool
}

func parseParams(p sdk.Params) (params, error) {
	out := params{
		vni: uint32(p.Int(ParamVNI)), group: uint16(p.Int(ParamGroup)),
		fib: p.String(ParamFIB), dev: p.String(ParamVXLANDev),
		mtu: int(p.Int(ParamUnderlayMTU)), fibSize: int(p.Int(ParamFIBSize)),
		clamp: p.Bool(ParamClampMSS),
	}
	mac, err := net.ParseMAC(p.String(ParamMAC))
	if err != nil || len(mac) != 6 || mac[0]&1 != 0 {
		return out, fmt.Errorf("%w: parameter %q: %q is not a unicast Ethernet address", sdk.ErrInvalidParam, ParamMAC, p.String(ParamMAC))
	}
	copy(out.mac[:], mac)
	out.local, err = parseHost(p.String(ParamLocalIP))
	if err != nil {
		return out, fmt.Errorf("%w: parameter %q: %v", sdk.ErrInvalidParam, ParamLocalIP, err)
	}
	if out.fibSize == 0 {
		out.fibSize = DefaultFIBSize
	}
	return out, nil
}

// maxFrame is the largest frame (Ethernet header included) whose
// encapsulation fits the underlay MTU.
func (p params) maxFrame() int {
	if p.local.Is4() {
		return p.mtu - (OverheadIPv4 - 14)
	}
	return p.mtu - (OverheadIPv6 - 14)
}

// mss returns the largest TCP MSS whose segments (20-byte TCP header, no
// options: the MSS excludes them) fit, for IPv4 and IPv6 inner packets; 0
// when clamping is off.
func (p params) mss() (v4, v6 uint32) {
	if !p.clamp {
		return 0, 0
	}
	return uint32(p.maxFrame() - 14 - 20 - 20), uint32(p.maxFrame() - 14 - 40 - 20)
}

// compile selects the instance's segment from the pushed table of h
// (locked) when there is one, else from the fib file.
func (p params) compile(h *HostFDB) (*Tables, error) {
	if h != nil && h.fib != nil {
		t, err := Compile(h.fib, p.vni, p.local, p.fibSize)
		if err != nil {
			return nil, fmt.Errorf("%w: encap: pushed table (generation %d): %w", sdk.ErrInvalidParam, h.fib.Generation, err)
		}
		return t, nil
	}
	if p.fib == "" {
		return nil, fmt.Errorf("%w: encap: no forwarding table: give parameter %q (a file) or push one to filterd (PUT /v1/encap/fdb, vfctl encap fdb set)", sdk.ErrInvalidParam, ParamFIB)
	}
	fib, err := LoadFIB(p.fib)
	if err != nil {
		return nil, fmt.Errorf("%w: encap: %w", sdk.ErrInvalidParam, err)
	}
	t, err := Compile(fib, p.vni, p.local, p.fibSize)
	if err != nil {
		return nil, fmt.Errorf("%w: encap: %s: %w", sdk.ErrInvalidParam, p.fib, err)
	}
	return t, nil
}

func loadFastPath(ctx *sdk.FastPathContext) (sdk.FastPath, error) {
	if d := ctx.Instance.Directions; d != 0 && d != sdk.DirBoth {
		return nil, fmt.Errorf("%w: encap runs in both directions, not %s only: its to-vm half is what keeps other segments' frames out", sdk.ErrInvalidParam, d)
	}
	p, err := parseParams(ctx.Instance.Params)
	if err != nil {
		return nil, err
	}
	// A pushed table stays locked until the instance has joined it, so
	// that no change slips in between.
	h := lockFor()
	if h != nil {
		defer h.mu.Unlock()
	}
	t, err := p.compile(h)
	if err != nil {
		return nil, err
	}
	base, err := encapSpec()
	if err != nil {
		return nil, err
	}
	spec := base.Copy()
	mss4, mss6 := p.mss()
	for name, v := range map[string]any{
		"encap_mss4":    mss4,
		"encap_mss6":    mss6,
		"encap_vni":     p.vni,
		"encap_group":   uint32(p.group),
		"encap_mac":     p.mac,
		"encap_local":   hostAddr(p.local).Addr,
		"encap_max_len": uint32(p.maxFrame()),
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("encap: set %s: %w", name, err)
		}
	}
	spec.Maps["encap_fib"].MaxEntries = uint32(2 * p.fibSize)
	spec.Maps["encap_neigh"].MaxEntries = uint32(2 * p.fibSize)

	dev, err := AttachDevice(p.dev, DeviceOptions{})
	if err != nil {
		return nil, fmt.Errorf("encap: %w", err)
	}
	fp := &fastPath{dev: dev, owner: newOwner(), params: p, vnic: ctx.Instance.VNIC.Name}
	if err := ctx.Load(spec, &fp.objs); err != nil {
		dev.Close()
		return nil, fmt.Errorf("encap: %w", err)
	}
	if err := fp.objs.EncapHostPorts.Put(uint32(0), dev.ports); err != nil {
		fp.Close()
		return nil, fmt.Errorf("encap: link host port map: %w", err)
	}
	if err := fp.objs.EncapHostFlood.Put(uint32(0), dev.flood); err != nil {
		fp.Close()
		return nil, fmt.Errorf("encap: link host flood map: %w", err)
	}
	if err := fp.update(t, dev.Ifindex); err != nil {
		fp.Close()
		return nil, fmt.Errorf("encap: load table %s: %w", p.fib, err)
	}
	err = dev.register(Port{VNI: p.vni, MAC: p.mac, Ifindex: ctx.Instance.VNIC.Ifindex, Group: p.group, owner: fp.owner})
	if err != nil {
		fp.Close()
		if errors.Is(err, ErrConflict) {
			return nil, fmt.Errorf("%w: %w", sdk.ErrInvalidParam, err)
		}
		return nil, fmt.Errorf("encap: %w", err)
	}
	if h != nil {
		h.joinLocked(fp)
	}
	return fp, nil
}

// Reload re-reads the forwarding table and swaps it in at once (each frame
// sees the old table or the new one), and re-checks the VXLAN device,
// re-attaching its receive program if the device was recreated. A bad
// table leaves everything as it was. The parameters are the instance's
// own (filterd reloads the instance when they change), so the ones it was
// loaded with are used.
//
// With a pushed table (HostFDB), the instance compiles from it, not from
// the file, and joins it if it had not yet.
func (f *fastPath) Reload(sdk.Params) error {
	h := lockFor()
	if h != nil {
		defer h.mu.Unlock()
	}
	t, err := f.params.compile(h)
	if err != nil {
		return err
	}
	f.mu.Lock()
	dev := f.dev
	f.mu.Unlock()
	if dev == nil {
		return errClosed
	}
	ifindex, err := dev.ensure()
	if err != nil {
		return fmt.Errorf("encap: %w", err)
	}
	if err := f.update(t, ifindex); err != nil {
		return fmt.Errorf("encap: %w", err)
	}
	if h != nil && f.host.Load() != h {
		h.joinLocked(f)
	}
	return nil
}

func hostAddr(a netip.Addr) encapEncapHost {
	var h encapEncapHost
	if a.Is4() {
		b := a.As4()
		h.Addr[0] = uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		return h
	}
	h.V6 = 1
	b := a.As16()
	for i := range 4 {
		// remote_ipv6 is copied as bytes: keep memory order.
		h.Addr[i] = uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24
	}
	return h
}

func neighKey(gen uint32, a netip.Addr) encapEncapNeighKey {
	k := encapEncapNeighKey{Gen: gen, Family: 6}
	if a.Is4() {
		k.Family = 4
		b := a.As4()
		copy(k.Ip[:], b[:])
	} else {
		b := a.As16()
		copy(k.Ip[:], b[:])
	}
	return k
}

// update writes t into the idle generation and flips encap_config to it.
// vxlanIfindex 0 keeps the device's.
func (f *fastPath) update(t *Tables, vxlanIfindex int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var cfg encapEncapCfg
	if err := f.objs.EncapConfig.Lookup(uint32(0), &cfg); err != nil {
		return fmt.Errorf("read encap_config: %w", err)
	}
	if vxlanIfindex == 0 {
		vxlanIfindex = int(cfg.VxlanIfindex)
	}
	next := (cfg.Gen + 1) & 1

	// Empty the idle generation: an adopted instance does not know what
	// it held.
	var fk encapEncapFibKey
	var fv encapEncapHost
	var staleFib []encapEncapFibKey
	it := f.objs.EncapFib.Iterate()
	for it.Next(&fk, &fv) {
		if fk.Gen == next {
			staleFib = append(staleFib, fk)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate encap_fib: %w", err)
	}
	for _, k := range staleFib {
		if err := f.objs.EncapFib.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("purge encap_fib: %w", err)
		}
	}
	var nk encapEncapNeighKey
	var nv encapEncapNeighEntry
	var staleNeigh []encapEncapNeighKey
	it = f.objs.EncapNeigh.Iterate()
	for it.Next(&nk, &nv) {
		if nk.Gen == next {
			staleNeigh = append(staleNeigh, nk)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate encap_neigh: %w", err)
	}
	for _, k := range staleNeigh {
		if err := f.objs.EncapNeigh.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("purge encap_neigh: %w", err)
		}
	}

	for mac, host := range t.Remote {
		k := encapEncapFibKey{Gen: next, Mac: mac}
		v := hostAddr(host)
		if err := f.objs.EncapFib.Put(&k, &v); err != nil {
			return fmt.Errorf("write encap_fib: %w", err)
		}
	}
	for ip, mac := range t.Neigh {
		k := neighKey(next, ip)
		v := encapEncapNeighEntry{Mac: mac}
		if err := f.objs.EncapNeigh.Put(&k, &v); err != nil {
			return fmt.Errorf("write encap_neigh: %w", err)
		}
	}
	var m encapEncapMemberList
	m.N = uint32(len(t.Members))
	for i, h := range t.Members {
		m.Hosts[i] = hostAddr(h)
	}
	if err := f.objs.EncapMembers.Put(next, &m); err != nil {
		return fmt.Errorf("write encap_members: %w", err)
	}
	// The receive side accepts the new members before the send side
	// uses them.
	if err := f.dev.setMembers(f.params.vni, f.owner, t.Members); err != nil {
		return err
	}
	cfg = encapEncapCfg{Gen: next, VxlanIfindex: uint32(vxlanIfindex)}
	if err := f.objs.EncapConfig.Put(uint32(0), &cfg); err != nil {
		return fmt.Errorf("flip generation: %w", err)
	}
	f.tables = t
	return nil
}

func (f *fastPath) Program() *ebpf.Program { return f.objs.VfEncap }

// Close unregisters the vNIC from the host (frames of its segment are no
// longer delivered to it) and releases the instance.
func (f *fastPath) Close() error {
	if h := f.host.Swap(nil); h != nil {
		h.leave(f) // before f.mu: a change holds h.mu, then f.mu
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dev == nil {
		return nil // closed already
	}
	err := f.dev.unregister(f.owner)
	f.dev.Close()
	f.dev = nil
	return errors.Join(err, f.objs.Close())
}

// Counters reports the fast path's counters.
func (f *fastPath) Counters() ([]sdk.Counter, error) {
	var out []sdk.Counter
	for i, n := range statNames {
		p, _, err := sdk.SumPerCPU(f.objs.EncapStats, uint32(i))
		if err != nil {
			return nil, fmt.Errorf("read encap_stats: %w", err)
		}
		out = append(out, sdk.Counter{Name: n, Help: statHelp[i], Value: float64(p)})
	}
	f.mu.Lock()
	t := f.tables
	f.mu.Unlock()
	if t != nil {
		out = append(out,
			sdk.Counter{Name: "remote_macs", Help: "MACs of the segment on other hosts in the live table.", Value: float64(len(t.Remote)), Gauge: true},
			sdk.Counter{Name: "member_hosts", Help: "Other hosts of the segment (replication targets).", Value: float64(len(t.Members)), Gauge: true})
	}
	return out, nil
}
