package dlb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// Fast-path counters (dlb_stats).
var statNames = []string{
	"new_flows_total", "established_packets_total", "reverse_nat_packets_total",
	"table_full_total", "no_backend_total",
}

type fastPath struct {
	objs         dlbObjects
	tableEntries int

	// groups resolves pool_group (filterd's host group table);
	// usedGroups are those the live services use (guarded by mu).
	groups     sdk.Groups
	usedGroups []string

	log *slog.Logger

	mu   sync.Mutex
	cfg  *Config // as parsed from the services file
	live *Tables // the live generation
	// liveCfg is what live was compiled from: cfg with the weights of
	// backends that are down at 0 (same services, same order).
	liveCfg *Config
	// ids numbers services for dlb_svc_stats, stable across reloads.
	ids map[svcIdent]uint16
	// flowBase holds the new flows counted by generations that are no
	// longer live, so backend_new_flows_total survives swaps.
	flowBase map[backendIdent]uint64
	// checks are the health checkers cfg uses, held until the next
	// Update or Close; healthKick hears of their state changes.
	checks      map[checkKey]*checker
	healthKick  chan struct{}
	stopHealth  func()
	healthError error // the last failed health-driven swap

	tcpTimeout, udpTimeout, closeTimeout time.Duration
	stopGC                               func() // ends the connection-table sweep

	// pinsDropped counts imported pins whose backend is not in this
	// host's pool (state_linux.go).
	pinsDropped atomic.Uint64
}

// gcInterval is how often idle flows are swept.
const gcInterval = 10 * time.Second

var (
	_ sdk.FastPath  = (*fastPath)(nil)
	_ sdk.Reloader  = (*fastPath)(nil)
	_ sdk.Inspector = (*fastPath)(nil)
	_ sdk.GroupUser = (*fastPath)(nil)
)

var dlbSpec = sync.OnceValues(loadDlb)

func loadFastPath(ctx *sdk.FastPathContext) (sdk.FastPath, error) {
	params := ctx.Instance.Params
	cfg, used, err := LoadConfigGroups(params.String("services"), ctx.Groups)
	if err != nil {
		return nil, fmt.Errorf("%w: dlb: %w", sdk.ErrInvalidParam, err)
	}
	base, err := dlbSpec()
	if err != nil {
		return nil, err
	}
	spec := base.Copy()
	ct := DefaultConntrackSize
	if params.Has("conntrack_size") {
		ct = int(params.Int("conntrack_size"))
	}
	te := DefaultTableEntries
	if params.Has("table_entries") {
		te = int(params.Int("table_entries"))
	}
	spec.Maps["dlb_ct"].MaxEntries = uint32(2 * ct)
	spec.Maps["dlb_maglev"].MaxEntries = uint32(te)
	spec.Maps["dlb_backends"].MaxEntries = 2 * MaxBackends
	spec.Maps["dlb_backend_flows"].MaxEntries = 2 * MaxBackends
	spec.Maps["dlb_services"].MaxEntries = 2 * MaxServices
	spec.Maps["dlb_svc_stats"].MaxEntries = 2 * maxServiceIDs
	fp := &fastPath{groups: ctx.Groups, usedGroups: used, log: ctx.Logger, flowBase: map[backendIdent]uint64{}, healthKick: make(chan struct{}, 1), tableEntries: te, tcpTimeout: params.Duration("tcp_timeout"), udpTimeout: params.Duration("udp_timeout"), closeTimeout: params.Duration("tcp_close_timeout")}
	if err := ctx.Load(spec, &fp.objs); err != nil {
		return nil, fmt.Errorf("dlb: %w", err)
	}
	fp.stopGC = sdk.Periodic(gcInterval, func() { _, _ = fp.gc(sdk.KtimeNow()) })
	fp.stopHealth = fp.followHealth()
	if err := fp.Update(cfg); err != nil {
		fp.Close()
		return nil, fmt.Errorf("dlb: load services %s: %w", params.String("services"), err)
	}
	return fp, nil
}

// Reload re-reads the services file and swaps it in atomically; pinned
// flows keep their backends. A bad file leaves the live services untouched.
func (f *fastPath) Reload(params sdk.Params) error {
	cfg, used, err := LoadConfigGroups(params.String("services"), f.groups)
	if err != nil {
		return fmt.Errorf("%w: dlb: %w", sdk.ErrInvalidParam, err)
	}
	if err := f.Update(cfg); err != nil {
		if errors.Is(err, ErrInvalidConfig) {
			return fmt.Errorf("%w: dlb: %w", sdk.ErrInvalidParam, err)
		}
		return fmt.Errorf("dlb: %w", err)
	}
	f.mu.Lock()
	f.usedGroups = used
	f.mu.Unlock()
	return nil
}

// GroupsUsed implements sdk.GroupUser: the pool groups of the live
// services, whose membership changes reload them.
func (f *fastPath) GroupsUsed() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.usedGroups)
}

// Update makes cfg the instance's services: it starts (or shares) the
// health checkers cfg asks for, compiles cfg with the backends that are
// down left out into the idle generation and flips dlb_config[0]. The
// checkers of the previous services that cfg does not use stop.
func (f *fastPath) Update(cfg *Config) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	checks := map[checkKey]*checker{}
	for _, s := range cfg.Services {
		if s.Health == nil {
			continue
		}
		for _, b := range s.Backends {
			k := checkKeyOf(b, s.Health)
			if _, ok := checks[k]; !ok {
				checks[k] = acquireChecker(k, f.healthKick)
			}
		}
	}
	if err := f.swap(cfg, checks); err != nil {
		f.releaseChecks(checks)
		return err
	}
	old := f.checks
	f.cfg, f.checks = cfg, checks
	f.releaseChecks(old)
	return nil
}

func (f *fastPath) releaseChecks(m map[checkKey]*checker) {
	for _, c := range m {
		releaseChecker(c, f.healthKick)
	}
}

// followHealth re-applies the services whenever a checker the instance
// uses changes state, until the returned stop is called.
func (f *fastPath) followHealth() (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			case <-f.healthKick:
			}
			f.mu.Lock()
			if f.cfg != nil {
				f.healthError = f.swap(f.cfg, f.checks)
				if f.healthError != nil {
					f.log.Error("dlb: apply a backend health change", "err", f.healthError)
				}
			}
			f.mu.Unlock()
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}

// effective is cfg as the fast path gets it: a backend whose health check
// says down gets weight 0 (no new flows; pinned flows stay).
func effective(cfg *Config, checks map[checkKey]*checker) *Config {
	out := &Config{Services: make([]Service, len(cfg.Services))}
	for i, s := range cfg.Services {
		out.Services[i] = s
		if s.Health == nil {
			continue
		}
		bs := make([]Backend, len(s.Backends))
		for j, b := range s.Backends {
			bs[j] = b
			if c := checks[checkKeyOf(b, s.Health)]; c != nil {
				if h, _, _ := c.status(); h == Down {
					bs[j].Weight = 0
				}
			}
		}
		out.Services[i].Backends = bs
	}
	return out
}

// maxServiceIDs is the number of service ids (dlb_svc_stats holds two
// entries per id).
const maxServiceIDs = 2 * MaxServices

// assignIDs gives every service of cfg its id: the one its VIP, port and
// protocol had before, or the lowest free one (its counters zeroed).
// Ids of services gone from the file are kept, so flows still pinned to
// them count where they did, until ids run out; then those are recycled.
// f.mu is held.
func (f *fastPath) assignIDs(cfg *Config) error {
	if f.ids == nil {
		// An adopted instance: the ids its pinned flows carry.
		f.ids = map[svcIdent]uint16{}
		var k dlbDlbSvcKey
		var v dlbDlbSvc
		it := f.objs.DlbServices.Iterate()
		for it.Next(&k, &v) {
			f.ids[svcIdent{addrFromWords(k.Vip, k.Family), portWord(k.Port), k.Proto}] = v.Id
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("read dlb_services: %w", err)
		}
	}
	want := map[svcIdent]bool{}
	missing := 0
	for _, s := range cfg.Services {
		want[identOf(s)] = true
		if _, ok := f.ids[identOf(s)]; !ok {
			missing++
		}
	}
	if len(f.ids)+missing > maxServiceIDs {
		for id := range f.ids {
			if !want[id] {
				delete(f.ids, id)
			}
		}
	}
	used := map[uint16]bool{}
	for _, id := range f.ids {
		used[id] = true
	}
	zero := make([]dlbDlbTraffic, ebpf.MustPossibleCPU())
	next := uint16(0)
	for i := range cfg.Services {
		s := &cfg.Services[i]
		id, ok := f.ids[identOf(*s)]
		if !ok {
			for used[next] {
				next++
			}
			id = next
			used[id] = true
			f.ids[identOf(*s)] = id
			for dir := range uint32(2) {
				if err := f.objs.DlbSvcStats.Put(uint32(id)*2+dir, zero); err != nil {
					return fmt.Errorf("reset dlb_svc_stats: %w", err)
				}
			}
		}
		s.ID = id
	}
	return nil
}

// swap compiles cfg (with the health of checks) into the idle generation
// and flips dlb_config[0]. f.mu is held.
func (f *fastPath) swap(cfg *Config, checks map[checkKey]*checker) error {
	if err := f.assignIDs(cfg); err != nil {
		return err
	}
	eff := effective(cfg, checks)
	var live uint32
	if err := f.objs.DlbConfig.Lookup(uint32(0), &live); err != nil {
		return fmt.Errorf("read dlb_config: %w", err)
	}
	// The idle half is rewritten whole (its services purged first), so an
	// adopted instance needs no knowledge of what it held.
	next := (live + 1) & 1
	t, err := Compile(eff, next, f.tableEntries)
	if err != nil {
		return err
	}
	// Purge the idle generation's services.
	var k dlbDlbSvcKey
	var v dlbDlbSvc
	var stale []dlbDlbSvcKey
	it := f.objs.DlbServices.Iterate()
	for it.Next(&k, &v) {
		if uint32(k.Gen) == next {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate dlb_services: %w", err)
	}
	for _, k := range stale {
		if err := f.objs.DlbServices.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("purge dlb_services: %w", err)
		}
	}
	// New-flow counts of the idle half restart with its new backends
	// (indexes past them are never read, and zeroed when a pool grows).
	zero := make([]uint64, ebpf.MustPossibleCPU())
	for i := range uint32(len(t.Backends)) {
		if err := f.objs.DlbBackendFlows.Put(t.BackendBase+i, zero); err != nil {
			return fmt.Errorf("reset dlb_backend_flows: %w", err)
		}
	}
	if n := len(t.Backends); n > 0 {
		keys := make([]uint32, n)
		vals := make([]dlbDlbTarget, n)
		for i, b := range t.Backends {
			keys[i] = t.BackendBase + uint32(i)
			vals[i] = dlbDlbTarget{Addr: b.Addr, Port: b.Port, Mac: b.MAC, Flags: b.Flags}
		}
		if _, err := f.objs.DlbBackends.BatchUpdate(keys, vals, nil); err != nil {
			return fmt.Errorf("write dlb_backends: %w", err)
		}
	}
	if n := len(t.Maglev); n > 0 {
		keys := make([]uint32, n)
		for i := range keys {
			keys[i] = t.MaglevBase + uint32(i)
		}
		if _, err := f.objs.DlbMaglev.BatchUpdate(keys, t.Maglev, nil); err != nil {
			return fmt.Errorf("write dlb_maglev: %w", err)
		}
	}
	for k, v := range t.Services {
		key := dlbDlbSvcKey{Vip: k.VIP, Port: k.Port, Proto: k.Proto, Gen: k.Gen, Family: k.Family}
		val := dlbDlbSvc{Base: v.Base, Size: v.Size, Id: v.ID, Flags: v.Flags}
		if err := f.objs.DlbServices.Put(&key, &val); err != nil {
			return fmt.Errorf("write dlb_services: %w", err)
		}
	}
	if err := f.objs.DlbConfig.Put(uint32(0), next); err != nil {
		return fmt.Errorf("flip generation: %w", err)
	}
	// The old generation takes no new flows now: keep its counts.
	if f.live != nil {
		old, err := f.backendFlows(f.live, f.liveCfg)
		if err != nil {
			f.log.Warn("dlb: new-flow counts of the previous services are lost", "err", err)
		}
		for k, n := range old {
			f.flowBase[k] += n
		}
	}
	f.live, f.liveCfg = t, eff
	return nil
}

func (f *fastPath) Program() *ebpf.Program { return f.objs.VfDlb }

func (f *fastPath) Close() error {
	if f.stopGC != nil {
		f.stopGC()
		f.stopGC = nil
	}
	if f.stopHealth != nil {
		f.stopHealth()
		f.stopHealth = nil
	}
	f.mu.Lock()
	f.releaseChecks(f.checks)
	f.checks = nil
	f.mu.Unlock()
	return f.objs.Close()
}

// gc forgets the flows idle at now (monotonic ns) in both directions
// longer than their protocol's timeout, and returns how many. A forward
// entry goes with its reverse entry (when that still points back at the
// flow's VIP); a reverse entry whose forward entry is gone goes alone once
// idle. Candidates are looked up again right before deletion, so a flow
// the datapath just touched is spared.
func (f *fastPath) gc(now uint64) (int, error) {
	const chunk = 4096
	keys := make([]dlbDlbCtKey, chunk)
	vals := make([]dlbDlbCtVal, chunk)
	all := map[dlbDlbCtKey]dlbDlbCtVal{}
	var cursor ebpf.MapBatchCursor
	for {
		n, err := f.objs.DlbCt.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			all[keys[i]] = vals[i]
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("sweep dlb_ct: %w", err)
		}
	}
	timeout := func(proto uint8, closing bool) uint64 {
		switch {
		case proto != ProtoTCP:
			return uint64(f.udpTimeout)
		case closing:
			return uint64(f.closeTimeout)
		}
		return uint64(f.tcpTimeout)
	}
	// idle re-reads k: gone, or idle for tmo at now.
	idle := func(k dlbDlbCtKey, tmo uint64) bool {
		var v dlbDlbCtVal
		if err := f.objs.DlbCt.Lookup(&k, &v); err != nil {
			return true
		}
		return v.Seen+tmo <= now
	}
	deleted := 0
	for k, v := range all {
		switch k.Kind {
		case 0:
			rk := dlbDlbCtKey{Saddr: v.T.Addr, Daddr: k.Saddr, Sport: v.T.Port, Dport: k.Sport, Proto: k.Proto, Kind: 1, Family: k.Family}
			rv, hasRev := all[rk]
			if hasRev && (rv.T.Addr != k.Daddr || rv.T.Port != k.Dport) {
				hasRev = false // taken over by another flow
			}
			closing := v.T.Flags&flagClosing != 0 || (hasRev && rv.T.Flags&flagClosing != 0)
			tmo := timeout(k.Proto, closing)
			if v.Seen+tmo > now || (hasRev && rv.Seen+tmo > now) {
				continue
			}
			if !idle(k, tmo) || (hasRev && !idle(rk, tmo)) {
				continue
			}
			if err := f.objs.DlbCt.Delete(&k); err == nil {
				deleted++
			}
			if hasRev {
				_ = f.objs.DlbCt.Delete(&rk)
			}
		case 1:
			fk := dlbDlbCtKey{Saddr: k.Daddr, Daddr: v.T.Addr, Sport: k.Dport, Dport: v.T.Port, Proto: k.Proto, Family: k.Family}
			if _, ok := all[fk]; ok {
				continue // goes with its forward entry
			}
			tmo := timeout(k.Proto, v.T.Flags&flagClosing != 0)
			if v.Seen+tmo <= now && idle(k, tmo) {
				_ = f.objs.DlbCt.Delete(&k)
			}
		}
	}
	return deleted, nil
}

func (f *fastPath) stats() ([]uint64, error) {
	out := make([]uint64, len(statNames))
	for i := range statNames {
		var vals []uint64
		if err := f.objs.DlbStats.Lookup(uint32(i), &vals); err != nil {
			return nil, fmt.Errorf("read dlb_stats: %w", err)
		}
		for _, v := range vals {
			out[i] += v
		}
	}
	return out, nil
}

// backendFlows reads the new flows per backend counted in t's
// generation (cfg is what t was compiled from).
func (f *fastPath) backendFlows(t *Tables, cfg *Config) (map[backendIdent]uint64, error) {
	out := map[backendIdent]uint64{}
	idx := t.BackendBase
	for _, s := range cfg.Services {
		for _, b := range s.Backends {
			var vals []uint64
			if err := f.objs.DlbBackendFlows.Lookup(idx, &vals); err != nil {
				return out, fmt.Errorf("read dlb_backend_flows: %w", err)
			}
			var sum uint64
			for _, v := range vals {
				sum += v
			}
			out[backendIdent{identOf(s), b.Key()}] += sum
			idx++
		}
	}
	return out, nil
}

// pinnedFlows counts the flows pinned per backend: one pass over the
// connection table (its forward entries), batched.
func (f *fastPath) pinnedFlows() (map[backendIdent]uint64, error) {
	const chunk = 4096
	keys := make([]dlbDlbCtKey, chunk)
	vals := make([]dlbDlbCtVal, chunk)
	out := map[backendIdent]uint64{}
	var cursor ebpf.MapBatchCursor
	for {
		n, err := f.objs.DlbCt.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			k, v := keys[i], vals[i]
			if k.Kind != 0 {
				continue
			}
			svc := svcIdent{addrFromWords(k.Daddr, k.Family), portWord(k.Dport), k.Proto}
			be := netip.AddrPortFrom(addrFromWords(v.T.Addr, k.Family), portWord(v.T.Port)).String()
			out[backendIdent{svc, be}]++
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("scan dlb_ct: %w", err)
		}
	}
}

// state describes the live services: configuration, health, traffic and
// flows.
func (f *fastPath) state() (*State, error) {
	pinned, err := f.pinnedFlows() // outside the lock: the longest part
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	st := &State{Services: []ServiceState{}}
	if f.healthError != nil {
		st.HealthError = f.healthError.Error()
	}
	if f.cfg == nil || f.live == nil {
		return st, nil
	}
	flows, err := f.backendFlows(f.live, f.liveCfg)
	if err != nil {
		return nil, err
	}
	for _, s := range f.cfg.Services {
		ss := ServiceState{Name: s.Name, VIP: s.VIP, Port: s.Port, Protocol: protocolName(s.Proto), Affinity: s.Affinity, TableSize: s.TableSize, Health: healthState(s.Health), Backends: []BackendState{}}
		for dir, t := range []*Traffic{&ss.FromVM, &ss.ToVM} {
			var vals []dlbDlbTraffic
			if err := f.objs.DlbSvcStats.Lookup(uint32(s.ID)*2+uint32(dir), &vals); err != nil {
				return nil, fmt.Errorf("read dlb_svc_stats: %w", err)
			}
			for _, v := range vals {
				t.Packets += v.Packets
				t.Bytes += v.Bytes
			}
		}
		for _, b := range s.Backends {
			id := backendIdent{identOf(s), b.Key()}
			bs := BackendState{Addr: b.Addr, Port: b.Port, Weight: b.Weight, Health: Unchecked.String(), NewFlows: f.flowBase[id] + flows[id], PinnedFlows: pinned[id]}
			if b.MAC != nil {
				bs.MAC = b.MAC.String()
			}
			if s.Health != nil {
				if c := f.checks[checkKeyOf(b, s.Health)]; c != nil {
					h, since, last := c.status()
					bs.Health, bs.LastError = h.String(), last
					if h != Unchecked {
						bs.Since = since.UTC().Round(0)
					}
				}
			}
			ss.Backends = append(ss.Backends, bs)
		}
		st.Services = append(st.Services, ss)
	}
	return st, nil
}

// Inspect returns the live services as a *State: configuration, health
// per backend, traffic per service, new and pinned flows per backend. It
// takes no query parameters.
func (f *fastPath) Inspect(_ context.Context, query map[string]string) (any, error) {
	for k := range query {
		return nil, fmt.Errorf("%w: dlb inspect takes no query parameters (got %q)", sdk.ErrInvalidParam, k)
	}
	return f.state()
}

// Counters reports the fast path's counters, and per service and backend
// the traffic, new and pinned flows and health (labels service, backend,
// direction).
func (f *fastPath) Counters() ([]sdk.Counter, error) {
	s, err := f.stats()
	if err != nil {
		return nil, err
	}
	var out []sdk.Counter
	for i, n := range statNames {
		out = append(out, sdk.Counter{Name: n, Help: "DLB " + n + ".", Value: float64(s[i])})
	}
	st, err := f.state()
	if err != nil {
		return nil, err
	}
	out = append(out, sdk.Counter{Name: "services", Help: "Services configured.", Value: float64(len(st.Services)), Gauge: true})
	out = append(out, sdk.Counter{Name: "state_pins_dropped_total", Help: "Pinned flows imported from another host (a VM move) and dropped: their service or backend is not configured here.", Value: float64(f.pinsDropped.Load())})
	for _, s := range st.Services {
		for _, d := range []struct {
			dir string
			t   Traffic
		}{{sdk.FromVM.String(), s.FromVM}, {sdk.ToVM.String(), s.ToVM}} {
			l := map[string]string{"service": s.Name, "direction": d.dir}
			out = append(out,
				sdk.Counter{Name: "service_packets_total", Help: "Packets of a service's flows (from-vm: to the VIP, DNATed; to-vm: replies, reverse-NATed).", Labels: l, Value: float64(d.t.Packets)},
				sdk.Counter{Name: "service_bytes_total", Help: "Bytes of a service's flows, by direction.", Labels: l, Value: float64(d.t.Bytes)})
		}
		for _, b := range s.Backends {
			l := map[string]string{"service": s.Name, "backend": netip.AddrPortFrom(b.Addr, b.Port).String()}
			healthy := 1.0
			if b.Health == Down.String() {
				healthy = 0
			}
			out = append(out,
				sdk.Counter{Name: "backend_new_flows_total", Help: "New flows given to a backend.", Labels: l, Value: float64(b.NewFlows)},
				sdk.Counter{Name: "backend_pinned_flows", Help: "Flows pinned to a backend now.", Labels: l, Value: float64(b.PinnedFlows), Gauge: true},
				sdk.Counter{Name: "backend_healthy", Help: "1 when a backend's health check lets it take new flows (up or unchecked), 0 when down.", Labels: l, Value: healthy, Gauge: true})
		}
	}
	return out, nil
}
