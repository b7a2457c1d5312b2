package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// fw_config[1+gen] flag: the generation holds a complete policy.
const confValid = 1 << 24

// fw_config indexes (firewall.c FW_CONF_*) and flags.
const (
	confRejectRate = 3
	confLogRate    = 4
	confLog        = 1 << 25 // FW_CONF_LOG, in fw_config[1+gen]
	confLogAll     = 1 << 26 // FW_CONF_LOG_ALL
	ctLogged       = 1       // FW_CT_LOGGED
)

// Ring buffer sizes: fw_events holds ~4,000 events when the flow log is
// on (4 s at the default rate if the reader stalls); one page when off.
const (
	eventsSize    = 1 << 18
	eventsSizeOff = 4096
)

type fastPath struct {
	objs firewallObjects

	mu     sync.Mutex // serialises policy updates
	policy *Policy    // the live policy, for counter labels
	// written[gen] lists the keys this process wrote into each half, so
	// they are purged without walking the maps (an adopted instance walks
	// them once); an empty genKeys is an empty half, nil an unknown one.
	written [2]*genKeys
	// purging reports the background purge of half purgingGen, retired
	// by the last flip (nil: none running). Guarded by mu.
	purging    chan error
	purgingGen uint32
	// dims is fw_dims mapped into memory (nil: written by batch
	// update); unmapped by Close, so the map goes with its descriptor.
	dims []byte

	stopGC func() // ends the connection-table sweep; called by Close

	// hostGroups resolves groups the policy file does not define
	// (filterd's table); usedGroups are those the live policy took from
	// it (guarded by mu).
	hostGroups sdk.Groups
	usedGroups []string

	// logBits go into every generation's fw_config word (flow log on,
	// all flows); fixed at load.
	logBits uint32

	vnic     string
	vm       string // sdk.Instance.VMName
	log      *slog.Logger
	loadedAt time.Time // of the live policy

	// The flow log (nil when off): the ring buffer reader and the file.
	events      *ringbuf.Reader
	flowLog     *flowLog
	eventsDone  chan struct{}
	monoToUnix  int64 // bpf_ktime_get_ns() + monoToUnix = Unix ns
	logged      atomic.Uint64
	logErrors   atomic.Uint64
	closeOnce   sync.Once
	closeResult error
}

// gcInterval is how often the connection table is swept for expired
// flows; gcChunk bounds each batch read of the sweep.
const (
	gcInterval = 10 * time.Second
	gcChunk    = 4096
)

type genKeys struct {
	src, dst []firewallFwLpmKey
	cross    []firewallFwCrossKey
}

var (
	_ sdk.FastPath = (*fastPath)(nil)
	_ Updater      = (*fastPath)(nil)
	_ sdk.Reloader = (*fastPath)(nil)
)

// Reload re-reads the policy file named by params and swaps it in
// atomically (UpdatePolicy). A policy that does not parse or compile
// leaves the live one untouched and is reported as sdk.ErrInvalidParam.
func (f *fastPath) Reload(params sdk.Params) error {
	rec := &recordingGroups{inner: f.hostGroups}
	p, err := LoadPolicy(params.String("policy"), rec)
	if err != nil {
		return fmt.Errorf("%w: firewall: %w", sdk.ErrInvalidParam, err)
	}
	if _, err := f.UpdatePolicy(p); err != nil {
		if errors.Is(err, ErrTooComplex) {
			return fmt.Errorf("%w: firewall: policy %s: %w", sdk.ErrInvalidParam, params.String("policy"), err)
		}
		return fmt.Errorf("firewall: swap in %s: %w", params.String("policy"), err)
	}
	f.setUsedGroups(rec.names())
	return nil
}

// The spec is parsed once; each instance copies it.
var firewallSpec = sync.OnceValues(loadFirewall)

func loadFastPath(ctx *sdk.FastPathContext) (sdk.FastPath, error) {
	params := ctx.Instance.Params
	rec := &recordingGroups{inner: ctx.Groups}
	policy, err := LoadPolicy(params.String("policy"), rec)
	if err != nil {
		if errors.Is(err, ErrUnknownGroup) || errors.Is(err, ErrInvalidPolicy) {
			return nil, fmt.Errorf("%w: firewall: %w", sdk.ErrInvalidParam, err)
		}
		return nil, fmt.Errorf("firewall: %w", err)
	}
	base, err := firewallSpec()
	if err != nil {
		return nil, err
	}
	spec := base.Copy()
	size := uint32(DefaultConntrackSize)
	if params.Has("conntrack_size") {
		size = uint32(params.Int("conntrack_size"))
	}
	spec.Maps["fw_conntrack"].MaxEntries = size
	// Policy updates copy the dimension array into its memory instead of
	// a 132,096-entry batch update (writeDims).
	spec.Maps["fw_dims"].Flags |= unix.BPF_F_MMAPABLE
	fp := &fastPath{hostGroups: ctx.Groups, usedGroups: rec.names(), vnic: ctx.Instance.VNIC.Name, vm: ctx.Instance.VMName(), log: ctx.Logger}
	if fp.log == nil {
		fp.log = slog.Default()
	}
	logPath := params.String("flow_log")
	spec.Maps["fw_events"].MaxEntries = eventsSizeOff
	if logPath != "" {
		spec.Maps["fw_events"].MaxEntries = eventsSize
		if fp.flowLog, err = openFlowLog(logPath); err != nil {
			return nil, fmt.Errorf("%w: firewall: %w", sdk.ErrInvalidParam, err)
		}
	}
	if err := ctx.Load(spec, &fp.objs); err != nil {
		if fp.flowLog != nil {
			fp.flowLog.close()
		}
		return nil, fmt.Errorf("firewall: %w", err)
	}
	if fp.objs.FwDims.Flags()&unix.BPF_F_MMAPABLE != 0 {
		size := int(fp.objs.FwDims.MaxEntries()) * dimStride
		if fp.dims, err = unix.Mmap(fp.objs.FwDims.FD(), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
			fp.dims = nil
			fp.Close()
			return nil, fmt.Errorf("firewall: map fw_dims into memory: %w", err)
		}
	}
	if err := fp.startFlowLog(params); err != nil {
		fp.Close()
		return nil, fmt.Errorf("firewall: %w", err)
	}
	rate := uint32(DefaultRejectRate)
	if params.Has("reject_rate") {
		rate = uint32(params.Int("reject_rate"))
	}
	if err := fp.objs.FwConfig.Put(uint32(confRejectRate), rate); err != nil {
		fp.Close()
		return nil, fmt.Errorf("firewall: write fw_config: %w", err)
	}
	if !ctx.Reused("fw_src") && !ctx.Reused("fw_dst") && !ctx.Reused("fw_cross") {
		// Tables created just now: both halves are known to be empty, so
		// neither the first update nor the purge after it walks them (a
		// walk of 100,000 rules' entries is a second of system time).
		fp.written = [2]*genKeys{{}, {}}
	}
	fp.stopGC = sdk.Periodic(gcInterval, func() { _, _ = fp.gc(sdk.KtimeNow()) })
	// Adopting a running instance swaps the (possibly edited) policy in
	// atomically, like any update.
	if _, err := fp.UpdatePolicy(policy); err != nil {
		fp.Close()
		return nil, fmt.Errorf("firewall: load policy %s: %w", params.String("policy"), err)
	}
	return fp, nil
}

// flushFlows deletes every tracked flow.
func (f *fastPath) flushFlows() error {
	var k firewallFwCtKey
	var v firewallFwCtVal
	var keys []firewallFwCtKey
	it := f.objs.FwConntrack.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate fw_conntrack: %w", err)
	}
	for _, k := range keys {
		if err := f.objs.FwConntrack.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("flush fw_conntrack: %w", err)
		}
	}
	return nil
}

func (f *fastPath) Program() *ebpf.Program { return f.objs.VfFirewall }

// Close stops the sweep and the flow-log reader, flushes the flow log and
// closes the objects. Later calls return the first call's result.
func (f *fastPath) Close() error {
	f.closeOnce.Do(func() {
		f.mu.Lock()
		f.waitPurge()
		f.mu.Unlock()
		if f.stopGC != nil {
			f.stopGC()
		}
		var errs []error
		if f.events != nil {
			errs = append(errs, f.events.Close())
			<-f.eventsDone
		}
		if f.flowLog != nil {
			errs = append(errs, f.flowLog.close())
		}
		if f.dims != nil {
			errs = append(errs, unix.Munmap(f.dims))
			f.dims = nil
		}
		errs = append(errs, f.objs.Close())
		f.closeResult = errors.Join(errs...)
	})
	return f.closeResult
}

// startFlowLog writes the flow-log settings into fw_config and, when the
// log is on, starts the ring buffer reader. The on/off bits travel in the
// generation word each packet reads anyway (UpdatePolicy writes them): off,
// the log costs the datapath nothing. Must run before the first
// UpdatePolicy.
func (f *fastPath) startFlowLog(params sdk.Params) error {
	var rate uint32
	if f.flowLog != nil {
		rate = 1000
		if params.Has("flow_log_rate") {
			rate = uint32(params.Int("flow_log_rate"))
		}
		f.logBits = confLog
		if params.Bool("flow_log_all") {
			f.logBits |= confLogAll
		}
	}
	if err := f.objs.FwConfig.Put(uint32(confLogRate), rate); err != nil {
		return fmt.Errorf("write fw_config: %w", err)
	}
	if f.flowLog == nil {
		return nil
	}
	rd, err := ringbuf.NewReader(f.objs.FwEvents)
	if err != nil {
		return fmt.Errorf("flow log: ring buffer reader: %w", err)
	}
	f.events = rd
	f.eventsDone = make(chan struct{})
	f.monoToUnix = time.Now().UnixNano() - int64(sdk.KtimeNow())
	go f.readEvents()
	return nil
}

// readEvents writes flow-log events as JSON lines until the reader is
// closed, flushing whenever the ring buffer is drained.
func (f *fastPath) readEvents() {
	defer close(f.eventsDone)
	var rec ringbuf.Record
	for {
		if err := f.events.ReadInto(&rec); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			f.logError("read ring buffer", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		e, err := decodeEvent(rec.RawSample, f.vnic, f.monoToUnix, f.ruleName)
		e.VM = f.vm
		if err == nil {
			err = f.flowLog.write(&e)
		}
		if err != nil {
			f.logError("write", err)
			continue
		}
		f.logged.Add(1)
		if rec.Remaining == 0 {
			if err := f.flowLog.flush(); err != nil {
				f.logError("flush", err)
			}
		}
	}
}

// logError counts a flow-log error and reports the first.
func (f *fastPath) logError(what string, err error) {
	if f.logErrors.Add(1) == 1 {
		f.log.Warn("firewall: flow log: "+what, "vnic", f.vnic, "err", err)
	}
}

// ruleName names rule i of the live policy ("" if it has none).
func (f *fastPath) ruleName(i int) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.policy == nil || i < 0 || i >= len(f.policy.Rules) {
		return ""
	}
	return f.policy.Rules[i].Name
}

// logEnd writes the "end" line of a logged flow the sweep deletes.
func (f *fastPath) logEnd(k *firewallFwCtKey, v *firewallFwCtVal, now uint64) {
	local, remote := addrOf(k.Family, k.Local[:]), addrOf(k.Family, k.Remote[:])
	src, dst, sp, dp := local, remote, k.LocalPort, k.RemotePort
	if sdk.Direction(v.OrigDir&1) == sdk.ToVM {
		src, dst, sp, dp = remote, local, k.RemotePort, k.LocalPort
	}
	e := FlowEvent{
		Time: time.Unix(0, int64(now)+f.monoToUnix).UTC(), VNIC: f.vnic, VM: f.vm, Event: "end",
		Dir: sdk.Direction(v.OrigDir & 1).String(), Proto: protoName(int(k.Proto)), Src: src.String(), Dst: dst.String(),
		Packets: v.Packets, Bytes: v.Bytes, Seconds: float64(ctLastSeen(v.Expires, v.State)-v.Created) / 1e9, State: ctStateName(v.State),
	}
	switch k.Proto {
	case ProtoTCP, ProtoUDP:
		e.setPorts(k.Proto, sp, dp)
	}
	if v.Rule > 0 {
		r := int(v.Rule) - 1
		e.RuleIndex, e.Rule = &r, f.ruleName(r)
	}
	if err := f.flowLog.write(&e); err != nil {
		f.logError("write", err)
		return
	}
	f.logged.Add(1)
}

// gc deletes the flows expired at now (monotonic ns) and returns how many.
// The table is read in batches of gcChunk; each candidate is looked up
// again right before its deletion so a flow the datapath just revived in
// place (same key, new packet) is spared. (A packet landing between that
// check and the delete loses its entry: its next packet is classified
// again, as after a flush.)
func (f *fastPath) gc(now uint64) (int, error) {
	keys := make([]firewallFwCtKey, gcChunk)
	vals := make([]firewallFwCtVal, gcChunk)
	var expired []firewallFwCtKey
	var cursor ebpf.MapBatchCursor
	for {
		n, err := f.objs.FwConntrack.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			if vals[i].Expires <= now {
				expired = append(expired, keys[i])
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("sweep fw_conntrack: %w", err)
		}
	}
	deleted := 0
	for _, k := range expired {
		var v firewallFwCtVal
		if err := f.objs.FwConntrack.Lookup(&k, &v); err != nil || v.Expires > now {
			continue
		}
		if err := f.objs.FwConntrack.Delete(&k); err == nil {
			deleted++
			if f.flowLog != nil && v.Flags&ctLogged != 0 {
				f.logEnd(&k, &v, now)
			}
		}
	}
	if f.flowLog != nil && deleted > 0 {
		if err := f.flowLog.flush(); err != nil {
			f.logError("flush", err)
		}
	}
	return deleted, nil
}

// UpdatePolicy compiles p, writes it into the idle generation and flips
// fw_config[0]. A compile error leaves the live policy untouched.
//
// What stays on the caller's clock (docs/firewall.md, "Policy updates"):
// compile, the dimension array (a copy into the map's memory), the two
// tries and the cross-product hash written concurrently, the flip. The
// generation the flip retired is purged afterwards in the background;
// the next update waits for that purge before it writes the half again.
func (f *fastPath) UpdatePolicy(p *Policy) (time.Duration, error) {
	start := time.Now()
	c, err := Compile(p)
	if err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.waitPurge()
	var epoch uint32
	if err := f.objs.FwConfig.Lookup(uint32(0), &epoch); err != nil {
		return 0, fmt.Errorf("read fw_config: %w", err)
	}
	// The epoch counts swaps (flows remember the one that allowed them);
	// its low bit selects the live half of every table.
	epoch++
	next := epoch & 1
	// Normally a no-op: the background purge emptied the half. After a
	// failed purge, or in an adopted instance, the maps are walked.
	if err := f.purge(next); err != nil {
		return 0, err
	}
	wrote, err := f.writeGen(next, c)
	if err != nil {
		// The half may hold part of p: the next update walks it.
		f.written[next] = nil
		return 0, err
	}
	conf := uint32(p.Defaults[sdk.FromVM]) | uint32(p.Defaults[sdk.ToVM])<<8 | uint32(p.NonIP)<<16 | confValid | f.logBits
	if err := f.objs.FwConfig.Put(1+next, conf); err != nil {
		f.written[next] = wrote
		return 0, fmt.Errorf("write fw_config: %w", err)
	}
	// The swap: one word, read once per packet.
	if err := f.objs.FwConfig.Put(uint32(0), epoch); err != nil {
		f.written[next] = wrote
		return 0, fmt.Errorf("flip generation: %w", err)
	}
	f.written[next] = wrote
	// Rule indexes now mean the new policy's rules: restart their counts.
	old := 0
	if f.policy != nil {
		old = len(f.policy.Rules)
	}
	if n := max(old, len(p.Rules)); n > 0 {
		zk, zv := make([]uint32, n), make([]uint64, n)
		for i := range zk {
			zk[i] = uint32(i)
		}
		if _, err := f.objs.FwRuleHits.BatchUpdate(zk, zv, nil); err != nil {
			return 0, fmt.Errorf("reset fw_rule_hits: %w", err)
		}
	}
	f.policy = p
	f.loadedAt = time.Now()
	f.startPurge(next ^ 1)
	return time.Since(start), nil
}

// writeGen writes c into the (empty) half gen of every table and returns
// the keys it wrote. The dimension array is copied into the map's memory
// (BPF_F_MMAPABLE; one batch update where the map is not mapped); the
// tries, which have no batch operations, are written one entry per call,
// source and destination concurrently with each other and with the
// cross-product hash's batch updates.
func (f *fastPath) writeGen(gen uint32, c *Compiled) (*genKeys, error) {
	wrote := &genKeys{src: make([]firewallFwLpmKey, len(c.Src)), dst: make([]firewallFwLpmKey, len(c.Dst))}
	for i, e := range c.Src {
		wrote.src[i] = lpmKey(gen, e)
	}
	for i, e := range c.Dst {
		wrote.dst[i] = lpmKey(gen, e)
	}
	n := 0
	for _, m := range c.Cross {
		n += len(m)
	}
	ck, cv := make([]firewallFwCrossKey, 0, n), make([]uint32, 0, n)
	for table, m := range c.Cross {
		for k, v := range m {
			ck = append(ck, firewallFwCrossKey{Tag: gen<<2 | uint32(table), A: k[0], B: k[1]})
			cv = append(cv, v)
		}
	}
	wrote.cross = ck

	var wg sync.WaitGroup
	errs := make([]error, 5)
	putAll := func(slot int, m *ebpf.Map, keys []firewallFwLpmKey, entries []LPMEntry) {
		defer wg.Done()
		if len(keys) == 0 {
			return
		}
		vals := make([]uint32, len(entries))
		for i, e := range entries {
			vals[i] = e.Class
		}
		// Tries take batch updates since Linux 6.x (generic batch ops);
		// before, one update per entry.
		_, err := m.BatchUpdate(keys, vals, nil)
		if errors.Is(err, ebpf.ErrNotSupported) {
			for i := range keys {
				if err = m.Put(&keys[i], vals[i]); err != nil {
					break
				}
			}
		}
		if err != nil {
			errs[slot] = fmt.Errorf("write %v: %w", m, err)
		}
	}
	batch := func(slot int, k []firewallFwCrossKey, v []uint32) {
		defer wg.Done()
		if len(k) == 0 {
			return
		}
		if _, err := f.objs.FwCross.BatchUpdate(k, v, nil); err != nil {
			errs[slot] = fmt.Errorf("write fw_cross: %w", err)
		}
	}
	wg.Add(4)
	go putAll(0, f.objs.FwSrc, wrote.src, c.Src)
	go putAll(1, f.objs.FwDst, wrote.dst, c.Dst)
	half := len(ck) / 2
	go batch(2, ck[:half], cv[:half])
	go batch(3, ck[half:], cv[half:])
	errs[4] = f.writeDims(gen, c.Dims)
	wg.Wait()
	return wrote, errors.Join(errs...)
}

// dimStride is the distance between fw_dims values in the map's memory
// (the kernel rounds an array's value size up to 8).
const dimStride = 8

// writeDims writes half gen of fw_dims.
func (f *fastPath) writeDims(gen uint32, dims []uint32) error {
	if f.dims != nil {
		// An array map lays its values out 8-byte aligned: each u32 in
		// its own 8-byte slot. The half is idle: no program reads it.
		b := f.dims[int(gen)*dimStride*dimsPerGen:]
		for i, v := range dims {
			binary.NativeEndian.PutUint32(b[dimStride*i:], v)
		}
		return nil
	}
	keys := make([]uint32, dimsPerGen)
	for i := range keys {
		keys[i] = gen*dimsPerGen + uint32(i)
	}
	if _, err := f.objs.FwDims.BatchUpdate(keys, dims, nil); err != nil {
		return fmt.Errorf("write fw_dims: %w", err)
	}
	return nil
}

// startPurge empties half gen, which the flip just retired, in the
// background: first an RCU grace period (every packet that read the old
// epoch has finished with the half), then the deletions. f.mu is held.
func (f *fastPath) startPurge(gen uint32) {
	w := f.written[gen]
	f.written[gen] = nil // unknown until the purge reports
	done := make(chan error, 1)
	f.purging, f.purgingGen = done, gen
	go func() {
		synchronizeRCU()
		done <- f.purgeHalf(gen, w)
	}()
}

// waitPurge waits for the background purge, if any, and records its
// outcome: an empty half, or (after an error) one the next update walks.
// f.mu is held (or the instance is closing).
func (f *fastPath) waitPurge() {
	if f.purging == nil {
		return
	}
	if err := <-f.purging; err != nil {
		f.log.Warn("firewall: purge the retired policy generation (the next update walks the maps)", "vnic", f.vnic, "err", err)
	} else {
		f.written[f.purgingGen] = &genKeys{}
	}
	f.purging = nil
}

func lpmKey(gen uint32, e LPMEntry) firewallFwLpmKey {
	k := firewallFwLpmKey{Prefixlen: 16 + uint32(e.Prefix.Bits()), Gen: uint8(gen), Family: 6}
	if e.Prefix.Addr().Is4() {
		k.Family = 4
		a := e.Prefix.Addr().As4()
		copy(k.Addr[:], a[:])
	} else {
		a := e.Prefix.Addr().As16()
		copy(k.Addr[:], a[:])
	}
	return k
}

// purge deletes generation gen's entries from the tries and the
// cross-product map: those this process wrote there, or, when it does not
// know them (an adopted instance, a failed purge or write), every entry
// of that generation, found by walking the maps.
func (f *fastPath) purge(gen uint32) error {
	if err := f.purgeHalf(gen, f.written[gen]); err != nil {
		return err
	}
	f.written[gen] = &genKeys{}
	return nil
}

// purgeHalf deletes the keys of w from half gen, or every key of the half
// when w is nil.
func (f *fastPath) purgeHalf(gen uint32, w *genKeys) error {
	if w != nil {
		return f.purgeKeys(w)
	}
	for _, m := range []*ebpf.Map{f.objs.FwSrc, f.objs.FwDst} {
		var k firewallFwLpmKey
		var stale []firewallFwLpmKey
		it := m.Iterate()
		var v uint32
		for it.Next(&k, &v) {
			if uint32(k.Gen) == gen {
				stale = append(stale, k)
			}
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("iterate %v: %w", m, err)
		}
		for _, k := range stale {
			if err := m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("purge %v: %w", m, err)
			}
		}
	}
	// The cross-product hash is read in batches (thousands of entries a
	// call, not two calls an entry).
	var stale []firewallFwCrossKey
	keys := make([]firewallFwCrossKey, 4096)
	vals := make([]uint32, 4096)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := f.objs.FwCross.BatchLookup(&cursor, keys, vals, nil)
		for _, k := range keys[:n] {
			if k.Tag>>2 == gen {
				stale = append(stale, k)
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return fmt.Errorf("read fw_cross: %w", err)
		}
	}
	if len(stale) > 0 {
		if _, err := f.objs.FwCross.BatchDelete(stale, nil); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("purge fw_cross: %w", err)
		}
	}
	return nil
}

// purgeKeys deletes the keys of w.
func (f *fastPath) purgeKeys(w *genKeys) error {
	for _, t := range []struct {
		m    *ebpf.Map
		keys []firewallFwLpmKey
	}{{f.objs.FwSrc, w.src}, {f.objs.FwDst, w.dst}} {
		if len(t.keys) == 0 {
			continue
		}
		if _, err := t.m.BatchDelete(t.keys, nil); err == nil {
			continue
		} else if !errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("purge %v: %w", t.m, err)
		}
		for _, k := range t.keys {
			if err := t.m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("purge %v: %w", t.m, err)
			}
		}
	}
	if len(w.cross) > 0 {
		if _, err := f.objs.FwCross.BatchDelete(w.cross, nil); err != nil {
			return fmt.Errorf("purge fw_cross: %w", err)
		}
	}
	return nil
}

// Counters: the firewall's own counters and per-rule hits (rules with at
// least one hit, labelled by name and position).
func (f *fastPath) Counters() ([]sdk.Counter, error) {
	var out []sdk.Counter
	for s := Stat(0); s < NumStats; s++ {
		var vals []uint64
		if err := f.objs.FwStats.Lookup(uint32(s), &vals); err != nil {
			return nil, fmt.Errorf("read fw_stats: %w", err)
		}
		var sum uint64
		for _, v := range vals {
			sum += v
		}
		out = append(out, sdk.Counter{Name: s.String(), Help: "Firewall " + s.String() + ".", Value: float64(sum)})
	}
	if f.flowLog != nil {
		out = append(out,
			sdk.Counter{Name: "flow_log_written_total", Help: "Flow-log lines written (events read from the ring buffer, and flow ends).", Value: float64(f.logged.Load())},
			sdk.Counter{Name: "flow_log_errors_total", Help: "Flow-log events that could not be read, decoded or written.", Value: float64(f.logErrors.Load())})
	}
	f.mu.Lock()
	p := f.policy
	f.mu.Unlock()
	if p == nil {
		return out, nil
	}
	hits, err := f.ruleHits(len(p.Rules))
	if err != nil {
		return nil, err
	}
	for i, h := range hits {
		if h == 0 {
			continue
		}
		out = append(out, sdk.Counter{Name: "rule_hits_total", Help: "New flows and denied packets decided by a rule.",
			Labels: map[string]string{"rule": p.Rules[i].Name, "index": strconv.Itoa(i)}, Value: float64(h)})
	}
	return out, nil
}

// ruleHits reads the first n per-rule counters.
func (f *fastPath) ruleHits(n int) ([]uint64, error) {
	out := make([]uint64, 0, n)
	const chunk = 4096
	keys := make([]uint32, chunk)
	vals := make([]uint64, chunk)
	var cursor ebpf.MapBatchCursor
	for len(out) < n {
		c, err := f.objs.FwRuleHits.BatchLookup(&cursor, keys, vals, nil)
		out = append(out, vals[:c]...)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read fw_rule_hits: %w", err)
		}
	}
	if len(out) > n {
		out = out[:n]
	}
	return out, nil
}
