package encrypt

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// Per-peer counters (ENC_STAT_* in encrypt.c).
var statNames = []struct{ name, help string }{
	{"steered", "Packets the VM sent into the tunnel toward the peer."},
	{"down_dropped", "Protected packets dropped because the peer's tunnel was not up (never sent in clear)."},
	{"clear_dropped", "Packets from a protected source that arrived in clear, dropped before the VM."},
	{"no_peer_dropped", "Protected packets to a destination no peer carries (revoked or unknown host), dropped."},
	{"received", "Packets from a protected source that arrived through the tunnel."},
}

type fastPath struct {
	objs   encryptObjects
	tunnel *Tunnel
	vnic   string
	mode   Mode
	// stateDir is filterd's (FastPathContext.StateDir): peers=api and
	// policy=api resolve under it.
	stateDir string

	mu     sync.Mutex
	routes map[netip.Prefix]Route // what enc_routes holds
	pairs  map[netip.Prefix]Sides // what enc_pairs holds
	// What enc_config holds.
	tunIfindex uint32
	flags      uint32
}

var (
	_ sdk.GroupUser = (*fastPath)(nil)
	_ sdk.Actor     = (*fastPath)(nil)
	_ sdk.FastPath  = (*fastPath)(nil)
	_ sdk.Reloader  = (*fastPath)(nil)
	_ sdk.Inspector = (*fastPath)(nil)
)

var encSpec = sync.OnceValues(loadEncrypt)

func tunnelConfig(p sdk.Params, stateDir string) (TunnelConfig, error) {
	cfg := TunnelConfig{
		Name: p.String("tunnel"), KeyDir: p.String("key_dir"),
		PeersFile: p.String("peers"), PolicyFile: p.String("policy"),
		Keepalive: p.Duration("keepalive"), PeerTimeout: p.Duration("peer_timeout"),
		MTU: DefaultMTU,
	}
	if cfg.KeyDir == "" {
		// Under filterd, the key its API publishes before any tunnel runs.
		cfg.KeyDir = DefaultKeyDir
		if stateDir != "" {
			cfg.KeyDir = ManagedDir(stateDir)
		}
	}
	if cfg.PeersFile == PeersAPI {
		if stateDir == "" {
			return cfg, fmt.Errorf("%w: parameter \"peers\": %q is the peers document filterd's API manages, and this instance does not run under filterd (give a file)", sdk.ErrInvalidParam, PeersAPI)
		}
		cfg.PeersFile, cfg.ManagedPeers = ManagedPeersFile(stateDir), true
	}
	if cfg.PolicyFile == PolicyAPI {
		if stateDir == "" {
			return cfg, fmt.Errorf("%w: parameter \"policy\": %q is the policy document filterd's API manages, and this instance does not run under filterd (give a file)", sdk.ErrInvalidParam, PolicyAPI)
		}
		cfg.PolicyFile, cfg.ManagedPolicy = ManagedPolicyFile(stateDir), true
	}
	if cfg.Name == "" || len(cfg.Name) > 15 {
		return cfg, fmt.Errorf("%w: parameter \"tunnel\": %q is not a device name (1-15 characters)", sdk.ErrInvalidParam, cfg.Name)
	}
	if cfg.Keepalive < 1e9 || cfg.Keepalive%1e9 != 0 || cfg.Keepalive > 65535e9 {
		return cfg, fmt.Errorf("%w: parameter \"keepalive\": %v: want whole seconds, 1s to 65535s", sdk.ErrInvalidParam, cfg.Keepalive)
	}
	if cfg.PeerTimeout <= cfg.Keepalive {
		return cfg, fmt.Errorf("%w: parameter \"peer_timeout\": %v must be longer than keepalive %v", sdk.ErrInvalidParam, cfg.PeerTimeout, cfg.Keepalive)
	}
	return cfg, nil
}

func loadFastPath(ctx *sdk.FastPathContext) (sdk.FastPath, error) {
	params := ctx.Instance.Params
	cfg, err := tunnelConfig(params, ctx.StateDir)
	if err != nil {
		return nil, err
	}
	spec, err := encSpec()
	if err != nil {
		return nil, err
	}
	fp := &fastPath{vnic: ctx.Instance.VNIC.Name, mode: Mode(params.String("protect")), stateDir: ctx.StateDir}
	if fp.mode == "" {
		fp.mode = ProtectPolicy
	}
	// The tunnel first: a bad peers file must fail before anything loads.
	t, err := acquireTunnel(cfg, ctx.Logger, ctx.Groups)
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	if err := ctx.Load(spec, &fp.objs); err != nil {
		t.release()
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	fp.tunnel = t
	if err := t.attach(fp); err != nil {
		fp.Close()
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	return fp, nil
}

// attach registers an instance and fills its maps.
func (t *Tunnel) attach(fp *fastPath) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	// An adopted instance keeps its flags until its pairs are rewritten:
	// clearing PAIRS now would let pair-protected traffic out in clear.
	if err := fp.readConfig(); err != nil {
		return err
	}
	if err := fp.setTunnelIfindex(t.ifindex); err != nil {
		return err
	}
	// Leases start expired; the next tick renews the live ones.
	if err := fp.writeLeases(make([]uint64, MaxPeers)); err != nil {
		return err
	}
	// An adopted instance's pinned table holds the routes of the
	// configuration it ran with: known, so that those the current one
	// lacks are deleted (a stale unprotected entry could otherwise shadow
	// a protected prefix).
	if err := fp.readRoutes(); err != nil {
		return err
	}
	if err := fp.readPairs(); err != nil {
		return err
	}
	if err := fp.writeRoutesLocked(t.peers, t.policy, t.slots); err != nil {
		return err
	}
	if err := fp.writePairs(t.pairs.table); err != nil {
		return err
	}
	t.instances[fp] = struct{}{}
	return nil
}

func (t *Tunnel) detach(fp *fastPath) {
	t.mu.Lock()
	delete(t.instances, fp)
	t.mu.Unlock()
}

func (f *fastPath) setTunnelIfindex(ifindex int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tunIfindex = uint32(ifindex)
	return f.writeConfigLocked(f.flags)
}

// readConfig loads the flags enc_config holds (an adopted instance's).
func (f *fastPath) readConfig() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var c encryptEncCfg
	if err := f.objs.EncConfig.Lookup(uint32(0), &c); err != nil {
		return fmt.Errorf("read enc_config: %w", err)
	}
	f.flags = c.Flags
	return nil
}

func (f *fastPath) writeConfigLocked(flags uint32) error {
	if err := f.objs.EncConfig.Put(uint32(0), encryptEncCfg{TunIfindex: f.tunIfindex, Flags: flags}); err != nil {
		return fmt.Errorf("write enc_config: %w", err)
	}
	f.flags = flags
	return nil
}

// wantFlags are the enc_config flags the vNIC's routes and pairs call for.
func (f *fastPath) wantFlagsLocked() uint32 {
	var fl uint32
	if len(f.pairs) > 0 {
		fl |= cfgPairs | cfgGuard
	}
	for _, r := range f.routes {
		if r.Protected() {
			fl |= cfgGuard
			break
		}
	}
	return fl
}

var leaseKeys = func() []uint32 {
	k := make([]uint32, MaxPeers)
	for i := range k {
		k[i] = uint32(i)
	}
	return k
}()

func (f *fastPath) writeLeases(leases []uint64) error {
	vals := make([]encryptEncPeer, MaxPeers)
	for i, l := range leases {
		vals[i].LeaseUntil = l
	}
	if _, err := f.objs.EncPeers.BatchUpdate(leaseKeys, vals, nil); err != nil {
		return fmt.Errorf("write enc_peers: %w", err)
	}
	return nil
}

// revokeSlot ends a removed peer's lease and zeroes its counters.
func (f *fastPath) revokeSlot(slot uint32) error {
	if err := f.objs.EncPeers.Put(slot, encryptEncPeer{}); err != nil {
		return err
	}
	zero := make([]encryptVfCounter, ebpf.MustPossibleCPU())
	for s := range uint32(numStats) {
		if err := f.objs.EncStats.Put(slot*numStats+s, zero); err != nil {
			return err
		}
	}
	return nil
}

// readRoutes loads what enc_routes holds into f.routes.
func (f *fastPath) readRoutes() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes = map[netip.Prefix]Route{}
	var k encryptEncKey
	var v encryptEncRoute
	it := f.objs.EncRoutes.Iterate()
	for it.Next(&k, &v) {
		f.routes[keyPrefix(k)] = Route{Peer: v.Peer, Flags: v.Flags}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read enc_routes: %w", err)
	}
	return nil
}

func (f *fastPath) writeRoutes() error {
	if err := f.writeRoutesLocked(f.tunnel.peers, f.tunnel.policy, f.tunnel.slots); err != nil {
		return err
	}
	return f.writePairs(f.tunnel.pairs.table)
}

// readPairs loads what enc_pairs holds into f.pairs (an adopted instance).
func (f *fastPath) readPairs() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pairs = map[netip.Prefix]Sides{}
	var k encryptEncKey
	var v encryptEncSides
	it := f.objs.EncPairs.Iterate()
	for it.Next(&k, &v) {
		f.pairs[keyPrefix(k)] = Sides{A: v.A, B: v.B}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read enc_pairs: %w", err)
	}
	return nil
}

// writePairs makes enc_pairs hold want: new and changed entries first,
// with the flags of the old and the new table both on, then the stale
// entries deleted and the flags the new table needs. Each entry changes
// atomically; a pair both tables have keeps its bit (assignPairBits), so
// an address protected before and after is protected throughout.
func (f *fastPath) writePairs(want map[netip.Prefix]Sides) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	old := f.pairs
	for p, s := range want {
		if o, ok := old[p]; ok && o == s {
			continue
		}
		k := routeKey(p)
		if err := f.objs.EncPairs.Put(&k, encryptEncSides{A: s.A, B: s.B}); err != nil {
			return fmt.Errorf("write enc_pairs %s: %w", p, err)
		}
	}
	f.pairs = want
	if err := f.writeConfigLocked(f.flags | f.wantFlagsLocked()); err != nil {
		return err
	}
	for p := range old {
		if _, ok := want[p]; ok {
			continue
		}
		k := routeKey(p)
		if err := f.objs.EncPairs.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete enc_pairs %s: %w", p, err)
		}
	}
	return f.writeConfigLocked(f.wantFlagsLocked())
}

// keyPrefix is routeKey's inverse: an IPv4-mapped key is an IPv4 prefix.
func keyPrefix(k encryptEncKey) netip.Prefix {
	a, bits := netip.AddrFrom16(k.Addr), int(k.Prefixlen)
	if a.Is4In6() && bits >= 96 {
		a, bits = a.Unmap(), bits-96
	}
	return netip.PrefixFrom(a, bits)
}

func routeKey(p netip.Prefix) encryptEncKey {
	var k encryptEncKey
	a := p.Addr()
	bits := p.Bits()
	if a.Is4() {
		a = netip.AddrFrom16(a.As16())
		bits += 96
	}
	k.Prefixlen = uint32(bits)
	k.Addr = a.As16()
	return k
}

// writeRoutesLocked makes enc_routes hold the vNIC's routes: new and
// changed entries first, stale ones last, so a reader never sees a prefix
// the old and the new policy both protect unprotected.
func (f *fastPath) writeRoutesLocked(peers *Peers, pol *Policy, slots map[string]uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	want := Routes(peers, pol, f.mode, f.vnic, slots)
	for p, r := range want {
		if old, ok := f.routes[p]; ok && old == r {
			continue
		}
		k := routeKey(p)
		if err := f.objs.EncRoutes.Put(&k, encryptEncRoute{Peer: r.Peer, Flags: r.Flags}); err != nil {
			return fmt.Errorf("write enc_routes %s: %w", p, err)
		}
	}
	old := f.routes
	f.routes = want
	if err := f.writeConfigLocked(f.flags | f.wantFlagsLocked()); err != nil {
		return err
	}
	f.routes = old
	for p := range f.routes {
		if _, ok := want[p]; ok {
			continue
		}
		k := routeKey(p)
		if err := f.objs.EncRoutes.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete enc_routes %s: %w", p, err)
		}
	}
	f.routes = want
	return f.writeConfigLocked(f.wantFlagsLocked())
}

// Reload re-reads the peers and policy files for the whole host (every
// vNIC sharing the tunnel) and this vNIC's protect mode. An invalid file
// changes nothing.
func (f *fastPath) Reload(params sdk.Params) error {
	cfg, err := tunnelConfig(params, f.stateDir)
	if err != nil {
		return err
	}
	if cfg != f.tunnel.cfg {
		return fmt.Errorf("%w: encrypt: reload cannot change the tunnel's parameters (peers, policy, tunnel, key_dir, keepalive, peer_timeout); detach every vNIC of the host and attach again", sdk.ErrInvalidParam)
	}
	setMode := func(m Mode) (old Mode) {
		f.tunnel.mu.Lock()
		defer f.tunnel.mu.Unlock()
		f.mu.Lock()
		defer f.mu.Unlock()
		old, f.mode = f.mode, m
		return old
	}
	old := setMode(Mode(params.String("protect")))
	if err := f.tunnel.Reload(); err != nil {
		if errors.Is(err, sdk.ErrInvalidParam) {
			setMode(old)
		}
		return fmt.Errorf("encrypt: %w", err)
	}
	return nil
}

func (f *fastPath) Program() *ebpf.Program { return f.objs.VfEncrypt }

// GroupsUsed implements sdk.GroupUser: the host groups the policy's pairs
// name (the tunnel's, shared by the host's vNICs). When one changes,
// filterd reloads the instance, which re-resolves the pairs.
func (f *fastPath) GroupsUsed() []string {
	if f.tunnel == nil {
		return nil
	}
	return f.tunnel.GroupsUsed()
}

func (f *fastPath) Close() error {
	if f.tunnel != nil {
		f.tunnel.detach(f)
		f.tunnel.release()
		f.tunnel = nil
	}
	return f.objs.Close()
}

// stats sums enc_stats for slot: packets and bytes per statistic.
func (f *fastPath) stats(slot uint32) ([numStats][2]uint64, error) {
	var out [numStats][2]uint64
	for s := range uint32(numStats) {
		p, b, err := sdk.SumPerCPU(f.objs.EncStats, slot*numStats+s)
		if err != nil {
			return out, fmt.Errorf("read enc_stats: %w", err)
		}
		out[s] = [2]uint64{p, b}
	}
	return out, nil
}

// Counters reports per peer what this vNIC sent into the tunnel, what it
// dropped and why, and the peer's tunnel state (shared by the host's vNICs).
func (f *fastPath) Counters() ([]sdk.Counter, error) {
	if f.tunnel == nil {
		return nil, errors.New("encrypt: instance closed")
	}
	st := f.tunnel.Status()
	var out []sdk.Counter
	for _, p := range st.Peers {
		s, err := f.stats(p.Slot)
		if err != nil {
			return nil, err
		}
		l := map[string]string{"peer": p.Name}
		for i, n := range statNames {
			if i == 3 {
				continue // counted under no peer
			}
			out = append(out,
				sdk.Counter{Name: n.name + "_packets_total", Help: n.help, Labels: l, Value: float64(s[i][0])},
				sdk.Counter{Name: n.name + "_bytes_total", Help: n.help, Labels: l, Value: float64(s[i][1])})
		}
		up := 0.0
		if p.Up {
			up = 1
		}
		out = append(out,
			sdk.Counter{Name: "peer_up", Help: "1 while the peer's WireGuard session is alive.", Labels: l, Value: up, Gauge: true},
			sdk.Counter{Name: "peer_handshake_age_seconds", Help: "Age of the peer's last handshake (-1: none yet).", Labels: l, Value: p.HandshakeAgeSeconds, Gauge: true},
			sdk.Counter{Name: "peer_rx_bytes_total", Help: "Bytes received from the peer by the host's tunnel.", Labels: l, Value: float64(p.RxBytes)},
			sdk.Counter{Name: "peer_tx_bytes_total", Help: "Bytes sent to the peer by the host's tunnel.", Labels: l, Value: float64(p.TxBytes)})
	}
	s, err := f.stats(peerNone)
	if err != nil {
		return nil, err
	}
	out = append(out, sdk.Counter{Name: "no_peer_dropped_packets_total", Help: statNames[3].help, Value: float64(s[3][0])},
		sdk.Counter{Name: "clear_dropped_no_peer_packets_total", Help: "Packets from a protected prefix no peer carries that arrived in clear, dropped.", Value: float64(s[2][0])},
		sdk.Counter{Name: "unsafe_dropped_packets_total", Help: "Frames from the VM that could not be classified safely (IPv6 extension headers, a routing header toward a protected address, VLAN tag, truncated), dropped.", Value: float64(s[statUnsafe][0])})
	return out, nil
}

// Inspect describes the tunnel, its peers and this vNIC's routes and
// counters. It takes no query parameters.
func (f *fastPath) Inspect(_ context.Context, query map[string]string) (any, error) {
	for k := range query {
		return nil, fmt.Errorf("%w: unknown query parameter %q", sdk.ErrInvalidParam, k)
	}
	if f.tunnel == nil {
		return nil, errors.New("encrypt: instance closed")
	}
	st := f.tunnel.Status()
	names := map[uint32]string{}
	for _, p := range st.Peers {
		names[p.Slot] = p.Name
	}
	in := Inspection{Tunnel: st, VNIC: f.vnic, Protect: f.mode, Pairs: []string{}, Groups: f.tunnel.GroupsUsed()}
	if pol := f.tunnel.Policy(); pol != nil {
		for _, p := range pol.Pairs {
			in.Pairs = append(in.Pairs, p.String())
		}
	}
	f.mu.Lock()
	for p, r := range f.routes {
		in.Routes = append(in.Routes, RouteStatus{Prefix: p.String(), Peer: names[r.Peer], Protected: r.Protected(), NoPeer: r.Flags&flagNoPeer != 0})
	}
	f.mu.Unlock()
	sort.Slice(in.Routes, func(i, j int) bool { return in.Routes[i].Prefix < in.Routes[j].Prefix })
	for _, p := range st.Peers {
		s, err := f.stats(p.Slot)
		if err != nil {
			return nil, err
		}
		in.Counters = append(in.Counters, PeerCounters{Peer: p.Name, SteeredPackets: s[0][0], SteeredBytes: s[0][1], DownDropped: s[1][0], ClearDropped: s[2][0], ReceivedPackets: s[4][0]})
	}
	s, err := f.stats(peerNone)
	if err != nil {
		return nil, err
	}
	in.NoPeer = NoPeerCounters{Dropped: s[3][0], ClearDropped: s[2][0], UnsafeDropped: s[statUnsafe][0]}
	return in, nil
}

// Act implements sdk.Actor. "rotate" gives the host's tunnel (shared by
// every vNIC of the host) a new key pair (Tunnel.Rotate); it takes no
// arguments.
func (f *fastPath) Act(_ context.Context, action string, args map[string]string) (any, error) {
	if action != "rotate" {
		return nil, fmt.Errorf("%w: encrypt has no action %q (it has: rotate)", sdk.ErrNotSupported, action)
	}
	for k := range args {
		return nil, fmt.Errorf("%w: rotate takes no argument, got %q", sdk.ErrInvalidParam, k)
	}
	if f.tunnel == nil {
		return nil, errors.New("encrypt: instance closed")
	}
	old := f.tunnel.PublicKey()
	k, err := f.tunnel.Rotate()
	if err != nil {
		return nil, fmt.Errorf("encrypt: rotate: %w", err)
	}
	return Rotation{Tunnel: f.tunnel.cfg.Name, PublicKey: k.String(), PreviousPublicKey: old.String()}, nil
}
