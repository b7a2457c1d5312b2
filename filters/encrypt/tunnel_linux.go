package encrypt

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/vnicfilter/vnicfilter/internal/nsutil"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// WireGuard's protocol constants the liveness check relies on.
const (
	// rejectAfterTime: a session older than this is unusable.
	rejectAfterTime = 180 * time.Second
	// tickInterval is how often peer state is read and leases renewed.
	tickInterval = 250 * time.Millisecond
	// leaseDuration is how long a renewed lease lets protected traffic
	// into the tunnel: if this process stalls or dies, the fast path drops
	// within this time.
	leaseDuration = time.Second
	// tunGoneTimeout bounds the wait for a closed tunnel's device to go.
	tunGoneTimeout = 3 * time.Second
)

// TunnelConfig is the host-wide part of an instance's parameters: every
// vNIC of a host must agree on it.
type TunnelConfig struct {
	// Name of the TUN device.
	Name string
	// KeyDir holds the private key.
	KeyDir string
	// PeersFile and PolicyFile (optional) are reloaded together.
	PeersFile, PolicyFile string
	// ManagedPeers: PeersFile is filterd's API-managed document
	// (peers=api); while no control plane has written it, it is empty.
	ManagedPeers bool
	// ManagedPolicy: PolicyFile is filterd's API-managed document
	// (policy=api); while no control plane has written it, it is the
	// empty policy.
	ManagedPolicy bool
	// Keepalive is WireGuard's persistent keepalive toward every peer.
	Keepalive time.Duration
	// PeerTimeout: a peer silent this long is down.
	PeerTimeout time.Duration
	// MTU of the TUN device.
	MTU int
}

// Tunnel is one host's end of the mesh: a wireguard-go device on a TUN
// device in the host's network namespace, the peers, and the vNIC
// instances steering traffic into it.
type Tunnel struct {
	cfg TunnelConfig
	ns  netns.NsHandle // the namespace the TUN and the UDP sockets live in
	key string         // registry key
	log *slog.Logger

	mu        sync.Mutex
	dev       *device.Device
	tdev      tun.Device
	ifindex   int
	running   bool
	priv      Key
	peers     *Peers
	policy    *Policy
	groups    sdk.Groups        // filterd's host groups (nil: none)
	pairs     *resolvedPairs    // the policy's pairs, resolved
	pairBits  map[string]int    // Pair.id -> bit in enc_sides
	slots     map[string]uint32 // peer name -> enc_peers index
	state     map[string]*peerState
	instances map[*fastPath]struct{}
	refs      int
	stopTick  func()
	logLimit  logLimiter
}

// logLimiter lets one wireguard-go error per format through every
// logInterval: a peer that stays unreachable would otherwise log each
// handshake attempt.
type logLimiter struct {
	mu   sync.Mutex
	last map[string]time.Time
}

const logInterval = time.Minute

func (l *logLimiter) allow(format string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if l.last == nil {
		l.last = map[string]time.Time{}
	}
	if t, ok := l.last[format]; ok && now.Sub(t) < logInterval {
		return false
	}
	l.last[format] = now
	return true
}

// peerState is what the monitor knows about one peer.
type peerState struct {
	key        Key
	configured time.Time // peer (re)configured: a grace period to handshake
	rx, tx     uint64
	lastRx     time.Time // rx last grew
	handshake  time.Time
	lastPoke   time.Time
	// keepaliveAt: when to activate the peer (its prefixes and
	// persistent keepalive) at the latest; zero once active. See
	// newPeerState.
	keepaliveAt time.Time
	up          bool
}

// debugWG prints wireguard-go's verbose log to stderr (VF_WG_DEBUG=1).
var debugWG = os.Getenv("VF_WG_DEBUG") == "1"

var (
	registryMu sync.Mutex
	registry   = map[string]*Tunnel{}
)

// acquireTunnel returns the tunnel named cfg.Name in the calling thread's
// network namespace, starting it on first use. Every caller must agree on
// cfg.
func acquireTunnel(cfg TunnelConfig, log *slog.Logger, groups sdk.Groups) (*Tunnel, error) {
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("current network namespace: %w", err)
	}
	key := ns.UniqueId() + "/" + cfg.Name
	registryMu.Lock()
	defer registryMu.Unlock()
	if t := registry[key]; t != nil {
		ns.Close()
		if t.cfg != cfg {
			return nil, fmt.Errorf("%w: tunnel %s already runs with %+v; every vNIC of a host must give it the same peers, policy, key_dir, keepalive and peer_timeout", sdk.ErrInvalidParam, cfg.Name, t.cfg)
		}
		t.refs++
		return t, nil
	}
	t := &Tunnel{cfg: cfg, ns: ns, key: key, log: log, groups: groups, slots: map[string]uint32{}, state: map[string]*peerState{}, instances: map[*fastPath]struct{}{}, refs: 1}
	peers, pol, pairs, bits, err := loadConfig(cfg, groups, nil)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("%w: %w", sdk.ErrInvalidParam, err)
	}
	if t.priv, err = (KeyStore{Dir: cfg.KeyDir, Name: cfg.Name}).LoadOrCreate(); err != nil {
		ns.Close()
		return nil, err
	}
	for _, p := range peers.Peers {
		if p.PublicKey == t.priv.Public() {
			ns.Close()
			return nil, fmt.Errorf("%w: peers file %s: peer %q has this host's own public key", sdk.ErrInvalidParam, cfg.PeersFile, p.Name)
		}
	}
	t.assignSlots(peers)
	t.peers, t.policy, t.pairs, t.pairBits = peers, pol, pairs, bits
	t.mu.Lock()
	err = t.startLocked()
	t.mu.Unlock()
	if err != nil {
		ns.Close()
		return nil, err
	}
	t.stopTick = sdk.Periodic(tickInterval, t.tick)
	registry[key] = t
	return t, nil
}

// release drops one reference; the last one stops the tunnel.
func (t *Tunnel) release() {
	registryMu.Lock()
	defer registryMu.Unlock()
	if t.refs--; t.refs > 0 {
		return
	}
	delete(registry, t.key)
	t.stopTick()
	t.mu.Lock()
	t.stopLocked()
	t.mu.Unlock()
	t.ns.Close()
}

// loadConfig reads the peers and policy files and resolves the policy's
// pairs through groups; oldBits is the running pair bit assignment.
func loadConfig(cfg TunnelConfig, groups sdk.Groups, oldBits map[string]int) (*Peers, *Policy, *resolvedPairs, map[string]int, error) {
	peers, err := loadPeersFile(cfg.PeersFile, cfg.ManagedPeers)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	var pol *Policy
	if cfg.PolicyFile != "" {
		if pol, err = loadPolicyFile(cfg.PolicyFile, cfg.ManagedPolicy); err != nil {
			return nil, nil, nil, nil, err
		}
		if err := pol.Check(cfg.PolicyFile, peers); err != nil {
			return nil, nil, nil, nil, err
		}
	}
	bits := assignPairBits(oldBits, pol)
	pairs, err := resolvePairs(cfg.PolicyFile, pol, peers, groups, bits)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	return peers, pol, pairs, bits, nil
}

// Policy is the live policy (nil: none).
func (t *Tunnel) Policy() *Policy {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.policy
}

// CheckPolicy checks a policy document against the tunnel's live peers
// and host groups, as a reload with it would (CheckPolicy), without
// applying it.
func (t *Tunnel) CheckPolicy(data []byte) (*Policy, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return CheckPolicy(data, t.peers, t.groups)
}

// GroupsUsed names the host groups the live policy's pairs resolved.
func (t *Tunnel) GroupsUsed() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.pairs.groups)
}

// nsBind opens wireguard-go's UDP sockets in the tunnel's namespace,
// whichever goroutine (and so OS thread) brings the device up: wireguard-go
// reopens them from its own goroutines when the TUN goes up.
type nsBind struct {
	conn.Bind
	t *Tunnel
}

func (b nsBind) Open(port uint16) (fns []conn.ReceiveFunc, actual uint16, err error) {
	err = nsutil.Do(b.t.ns, "tunnel "+b.t.cfg.Name, func() error {
		var err error
		fns, actual, err = b.Bind.Open(port)
		return err
	})
	return fns, actual, err
}

// startLocked creates the TUN device and the WireGuard device on it.
func (t *Tunnel) startLocked() error {
	if t.running {
		return nil
	}
	err := nsutil.Do(t.ns, "tunnel "+t.cfg.Name, func() error {
		// The device of a tunnel just closed goes away once wireguard-go's
		// reader has let go of it: wait for the name to be free.
		for start := time.Now(); time.Since(start) < tunGoneTimeout; time.Sleep(10 * time.Millisecond) {
			if _, err := netlink.LinkByName(t.cfg.Name); err != nil {
				break
			}
		}
		td, err := tun.CreateTUN(t.cfg.Name, t.cfg.MTU)
		if err != nil {
			return fmt.Errorf("create tunnel device %s: %w", t.cfg.Name, err)
		}
		t.tdev = td
		l, err := netlink.LinkByName(t.cfg.Name)
		if err == nil {
			t.ifindex = l.Attrs().Index
			err = netlink.LinkSetUp(l)
		}
		if err == nil {
			err = rpFilterOff(t.cfg.Name)
		}
		if err == nil {
			err = ipv6On(t.cfg.Name)
		}
		if err != nil {
			td.Close()
			return fmt.Errorf("tunnel device %s: %w", t.cfg.Name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	logger := &device.Logger{
		Verbosef: func(format string, args ...any) {
			if debugWG {
				fmt.Fprintf(os.Stderr, "wg(%s): "+format+"\n", append([]any{t.cfg.Name}, args...)...)
			}
		},
		Errorf: func(format string, args ...any) {
			if t.logLimit.allow(format) {
				t.log.Warn("wireguard: "+fmt.Sprintf(format, args...), "tunnel", t.cfg.Name)
			}
		},
	}
	t.dev = device.NewDevice(t.tdev, nsBind{Bind: conn.NewDefaultBind(), t: t}, logger)
	var b strings.Builder
	fmt.Fprintf(&b, "private_key=%s\nlisten_port=%d\nreplace_peers=true\n", t.priv.hex(), t.peers.ListenPort)
	for _, p := range t.peers.Peers {
		writePeer(&b, p, 0, false) // activated by tick
	}
	if err := t.dev.IpcSet(b.String()); err != nil {
		t.dev.Close()
		return fmt.Errorf("configure tunnel %s: %w", t.cfg.Name, err)
	}
	if err := t.dev.Up(); err != nil {
		t.dev.Close()
		return fmt.Errorf("bring tunnel %s up: %w", t.cfg.Name, err)
	}
	now := time.Now()
	for _, p := range t.peers.Peers {
		t.state[p.Name] = newPeerState(p, now)
	}
	t.running = true
	for fp := range t.instances {
		fp.setTunnelIfindex(t.ifindex)
	}
	return nil
}

// rpFilterOff turns reverse-path filtering off on the tunnel device. A
// decrypted packet's source is routed via the underlay, not the tunnel,
// and the device has no address: the kernel's check drops such packets in
// strict and in loose mode alike. It applies max(all, device), so "all"
// must be 0 too; per-device settings keep other interfaces filtered.
func rpFilterOff(dev string) error {
	all, err := os.ReadFile("/proc/sys/net/ipv4/conf/all/rp_filter")
	if err != nil {
		return fmt.Errorf("read net.ipv4.conf.all.rp_filter: %w", err)
	}
	if v := strings.TrimSpace(string(all)); v != "0" {
		return fmt.Errorf("net.ipv4.conf.all.rp_filter is %s: every decrypted packet arriving on %s would fail the reverse-path check (set it to 0 and filter per device with net.ipv4.conf.<device>.rp_filter)", v, dev)
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+dev+"/rp_filter", []byte("0"), 0o644); err != nil {
		return fmt.Errorf("set net.ipv4.conf.%s.rp_filter=0: %w", dev, err)
	}
	return nil
}

// ipv6On enables IPv6 on the tunnel device, which a host whose
// net.ipv6.conf.default.disable_ipv6 is 1 creates without: decrypted IPv6
// packets would be dropped on arrival. A kernel without IPv6 has nothing
// to enable.
func ipv6On(dev string) error {
	path := "/proc/sys/net/ipv6/conf/" + dev + "/disable_ipv6"
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	if err := os.WriteFile(path, []byte("0"), 0o644); err != nil {
		return fmt.Errorf("set net.ipv6.conf.%s.disable_ipv6=0: %w", dev, err)
	}
	return nil
}

// stopLocked closes the WireGuard device; the TUN device goes with it.
// Protected traffic is dropped from now on.
func (t *Tunnel) stopLocked() {
	if !t.running {
		return
	}
	t.running = false
	for fp := range t.instances {
		fp.setTunnelIfindex(0)
		_ = fp.writeLeases(make([]uint64, MaxPeers))
	}
	t.dev.Close()
	t.dev, t.tdev, t.ifindex = nil, nil, 0
}

// Stop stops the host's tunnel (as if its process died): protected
// traffic is dropped and counted until Start.
func (t *Tunnel) Stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stopLocked()
}

// Start restarts a stopped tunnel with the same key and peers.
func (t *Tunnel) Start() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.startLocked()
}

// newPeerState is the state of a peer just configured. wireguard-go gets
// it without prefixes (AllowedIPs) and without persistent keepalive: it
// answers the peer's handshakes but starts none of its own. tick
// activates it — prefixes and keepalive, after which it initiates — as
// soon as a handshake exists or at a random moment 100-500 ms later.
// When both ends configure each other at once (a key rotation pushed
// within a round trip, two hosts restarting together) and both initiate,
// the handshakes cross, each side drops the other's response and the
// session waits for WireGuard's 5 s retry (seen in
// TestKeyRotationDuringTransfer). Keepalive alone does not prevent that:
// packets the fast path queued in the TUN device before the reload, or any
// traffic, make wireguard-go initiate for a peer that has prefixes; hence
// no prefixes, and no lease, until activation.
func newPeerState(p Peer, now time.Time) *peerState {
	jitter := time.Duration(rand.Int64N(int64(keepaliveJitter)))
	return &peerState{key: p.PublicKey, configured: now, keepaliveAt: now.Add(keepaliveDelay + jitter)}
}

// When a new peer's persistent keepalive goes on: after keepaliveDelay
// plus up to keepaliveJitter.
const (
	keepaliveDelay  = 100 * time.Millisecond
	keepaliveJitter = 400 * time.Millisecond
)

// writePeer writes p's UAPI configuration: with its prefixes and
// keepalive when active, else without either.
func writePeer(b *strings.Builder, p Peer, keepalive time.Duration, active bool) {
	fmt.Fprintf(b, "public_key=%s\nendpoint=%s\n", p.PublicKey.hex(), p.Endpoint)
	if active {
		activeLines(b, p, keepalive)
		return
	}
	b.WriteString("persistent_keepalive_interval=0\nreplace_allowed_ips=true\n")
}

// activate gives a peer its prefixes and its persistent keepalive.
func activate(b *strings.Builder, p Peer, keepalive time.Duration) {
	fmt.Fprintf(b, "public_key=%s\n", p.PublicKey.hex())
	activeLines(b, p, keepalive)
}

func activeLines(b *strings.Builder, p Peer, keepalive time.Duration) {
	b.WriteString("replace_allowed_ips=true\n")
	for _, pr := range p.Prefixes {
		fmt.Fprintf(b, "allowed_ip=%s\n", pr)
	}
	fmt.Fprintf(b, "persistent_keepalive_interval=%d\n", int(keepalive/time.Second))
}

// PublicKey is the host's public key, for the control plane.
func (t *Tunnel) PublicKey() Key {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.priv.Public()
}

// assignSlots gives every peer of peers an enc_peers index: a peer keeps
// its index across reloads (by name); new peers take the lowest free one.
func (t *Tunnel) assignSlots(peers *Peers) (freed []uint32) {
	keep := map[string]bool{}
	for _, p := range peers.Peers {
		keep[p.Name] = true
	}
	for name, s := range t.slots {
		if !keep[name] {
			freed = append(freed, s)
			delete(t.slots, name)
		}
	}
	used := map[uint32]bool{}
	for _, s := range t.slots {
		used[s] = true
	}
	next := uint32(0)
	for _, p := range peers.Peers {
		if _, ok := t.slots[p.Name]; ok {
			continue
		}
		for used[next] || slices.Contains(freed, next) {
			next++
		}
		t.slots[p.Name] = next
		used[next] = true
	}
	return freed
}

// Reload re-reads the peers and policy files and applies them: removed
// peers are revoked (their traffic dropped from the first step on), peers
// whose key changed are re-keyed, established sessions of unchanged peers
// are kept. An invalid file changes nothing.
func (t *Tunnel) Reload() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	peers, pol, pairs, bits, err := loadConfig(t.cfg, t.groups, t.pairBits)
	if err != nil {
		return fmt.Errorf("%w: %w", sdk.ErrInvalidParam, err)
	}
	for _, p := range peers.Peers {
		if p.PublicKey == t.priv.Public() {
			return fmt.Errorf("%w: peers file %s: peer %q has this host's own public key", sdk.ErrInvalidParam, t.cfg.PeersFile, p.Name)
		}
	}
	old := t.peers
	freed := t.assignSlots(peers)
	// Revoke first: a removed peer's lease goes now, its counters restart
	// for whoever takes the slot later.
	for _, s := range freed {
		for fp := range t.instances {
			_ = fp.revokeSlot(s)
		}
	}
	// A re-keyed peer loses its lease at once: its old sessions are about
	// to go, and traffic would make wireguard-go initiate a handshake
	// before newPeerState's delay.
	for _, p := range peers.Peers {
		if op := old.Peer(p.Name); op != nil && op.PublicKey != p.PublicKey {
			for fp := range t.instances {
				_ = fp.objs.EncPeers.Put(t.slots[p.Name], encryptEncPeer{})
			}
		}
	}
	t.peers, t.policy, t.pairs, t.pairBits = peers, pol, pairs, bits
	var errs []error
	for fp := range t.instances {
		if err := fp.writeRoutes(); err != nil {
			errs = append(errs, err)
		}
	}
	if !t.running {
		t.syncState(old, peers)
		return errors.Join(errs...)
	}
	var b strings.Builder
	if old.ListenPort != peers.ListenPort {
		fmt.Fprintf(&b, "listen_port=%d\n", peers.ListenPort)
	}
	for _, p := range old.Peers {
		if np := peers.Peer(p.Name); np == nil || np.PublicKey != p.PublicKey {
			fmt.Fprintf(&b, "public_key=%s\nremove=true\n", p.PublicKey.hex())
		}
	}
	for _, p := range peers.Peers {
		switch op := old.Peer(p.Name); {
		case op == nil || op.PublicKey != p.PublicKey:
			writePeer(&b, p, 0, false) // activated by tick
		case !peerEqual(*op, p):
			st := t.state[p.Name]
			writePeer(&b, p, t.cfg.Keepalive, st == nil || st.keepaliveAt.IsZero())
		}
	}
	if b.Len() > 0 {
		if err := t.dev.IpcSet(b.String()); err != nil {
			errs = append(errs, fmt.Errorf("configure tunnel %s: %w", t.cfg.Name, err))
		}
	}
	t.syncState(old, peers)
	return errors.Join(errs...)
}

func (t *Tunnel) syncState(old, peers *Peers) {
	now := time.Now()
	for name := range t.state {
		if peers.Peer(name) == nil {
			delete(t.state, name)
		}
	}
	for _, p := range peers.Peers {
		if st := t.state[p.Name]; st == nil || st.key != p.PublicKey {
			t.state[p.Name] = newPeerState(p, now)
		}
	}
}

func peerEqual(a, b Peer) bool {
	return a.Name == b.Name && a.PublicKey == b.PublicKey && a.Endpoint == b.Endpoint && slices.Equal(a.Prefixes, b.Prefixes)
}

// Rotate gives the host a new key pair: stored first, then applied. Every
// session is re-keyed with the new key as soon as the peers know the new
// public key (the control plane pushes it; docs/encrypt.md); until then
// packets wait in WireGuard's queue or are retransmitted by TCP, never sent
// in clear. It returns the new public key.
func (t *Tunnel) Rotate() (Key, error) {
	k, err := NewPrivateKey()
	if err != nil {
		return Key{}, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := (KeyStore{Dir: t.cfg.KeyDir, Name: t.cfg.Name}).Store(k); err != nil {
		return Key{}, err
	}
	t.priv = k
	if t.running {
		if err := t.dev.IpcSet("private_key=" + k.hex() + "\n"); err != nil {
			return Key{}, fmt.Errorf("apply new key to tunnel %s: %w", t.cfg.Name, err)
		}
	}
	return k.Public(), nil
}

// tick reads every peer's WireGuard state, decides which are up and renews
// their leases in every instance. A peer is up when its session is fresh
// (handshake within WireGuard's reject-after time) and it was heard from
// within peer_timeout (keepalives guarantee that much while it lives). A
// newly configured peer gets peer_timeout to complete its first handshake:
// meanwhile its traffic enters the tunnel, where WireGuard holds it until
// the session exists.
func (t *Tunnel) tick() {
	t.mu.Lock()
	defer t.mu.Unlock()
	leases := make([]uint64, MaxPeers)
	if t.running {
		now, kt := time.Now(), sdk.KtimeNow()
		var stats map[Key]wgPeer
		if s, err := t.dev.IpcGet(); err == nil {
			stats = parseIpcGet(s)
		}
		var poke strings.Builder
		for name, st := range t.state {
			s := stats[st.key]
			if s.rx != st.rx {
				st.rx, st.lastRx = s.rx, now
			}
			st.tx, st.handshake = s.tx, s.handshake
			st.up = !st.handshake.IsZero() && now.Sub(st.handshake) < rejectAfterTime && now.Sub(st.lastRx) < t.cfg.PeerTimeout
			// The grace period of a new peer starts with its keepalive:
			// before that its traffic would make wireguard-go initiate
			// as surely as a keepalive (see newPeerState).
			if st.up || st.keepaliveAt.IsZero() && now.Sub(st.configured) < t.cfg.PeerTimeout {
				leases[t.slots[name]] = kt + uint64(leaseDuration)
			}
			// WireGuard gives up handshaking after 90 s without an answer
			// and only tries again when there is something to send; a
			// down peer is poked every keepalive interval so the tunnel
			// comes back by itself when the peer or the underlay does.
			if !st.keepaliveAt.IsZero() {
				if now.Before(st.keepaliveAt) && st.handshake.IsZero() {
					continue
				}
				st.keepaliveAt, st.lastPoke = time.Time{}, now
				if p := t.peers.Peer(name); p != nil {
					activate(&poke, *p, t.cfg.Keepalive)
				}
				continue
			}
			if !st.up && now.Sub(st.lastPoke) >= t.cfg.Keepalive {
				st.lastPoke = now
				fmt.Fprintf(&poke, "public_key=%s\npersistent_keepalive_interval=0\npublic_key=%s\npersistent_keepalive_interval=%d\n",
					st.key.hex(), st.key.hex(), int(t.cfg.Keepalive/time.Second))
			}
		}
		if poke.Len() > 0 {
			_ = t.dev.IpcSet(poke.String())
		}
	}
	for fp := range t.instances {
		if err := fp.writeLeases(leases); err != nil {
			t.log.Warn("renew leases", "vnic", fp.vnic, "err", err)
		}
	}
}

// Status returns a snapshot of the tunnel and its peers.
func (t *Tunnel) Status() TunnelStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	s := TunnelStatus{Device: t.cfg.Name, Ifindex: t.ifindex, Running: t.running, PublicKey: t.priv.Public().String(), ListenPort: t.peers.ListenPort, Prefixes: prefixStrings(t.peers.Prefixes)}
	for _, p := range t.peers.Peers {
		ps := PeerStatus{Name: p.Name, PublicKey: p.PublicKey.String(), Endpoint: p.Endpoint.String(), Prefixes: prefixStrings(p.Prefixes), Slot: t.slots[p.Name], HandshakeAgeSeconds: -1}
		if st := t.state[p.Name]; st != nil {
			ps.Up, ps.RxBytes, ps.TxBytes = st.up && t.running, st.rx, st.tx
			if !st.handshake.IsZero() {
				ps.HandshakeAgeSeconds = now.Sub(st.handshake).Seconds()
			}
		}
		s.Peers = append(s.Peers, ps)
	}
	return s
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}
