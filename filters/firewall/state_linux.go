package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"

	"github.com/vnicfilter/vnicfilter/sdk"
)

var (
	_ sdk.StateMover         = (*fastPath)(nil)
	_ sdk.StateDeltaExporter = (*fastPath)(nil)
)

// stateFormat 2: a header {u32 key size, u32 value size, u64 count}, then
// count × (fw_ct_key, fw_ct_val) little-endian, each value's expires the
// remaining lifetime in ns, its created the flow's age in ns, its gen and
// rule zero (both belong to the source's policy). Format 1 (before the
// flow counters) is not read.
const stateFormat = 2

// StateFormat implements sdk.StateMover.
func (f *fastPath) StateFormat() uint32 { return stateFormat }

// ExportState writes the connection table (sdk.StateMover): every flow
// not yet expired, with its remaining lifetime. Entries are encoded
// straight from each batch lookup into one buffer, written at once.
func (f *fastPath) ExportState(w io.Writer) error { return f.export(w, 0) }

// ExportStateSince writes the flows that saw a packet within the last age
// (sdk.StateDeltaExporter): new flows and every flow whose state, lifetime
// or counters moved, found by their last packet (expires minus the
// state's timeout).
func (f *fastPath) ExportStateSince(w io.Writer, age time.Duration) error {
	return f.export(w, age)
}

// export writes the live flows; with age > 0 only those whose last packet
// is at most age old.
func (f *fastPath) export(w io.Writer, age time.Duration) error {
	now := sdk.KtimeNow()
	keys := make([]firewallFwCtKey, exportChunk)
	vals := make([]firewallFwCtVal, exportChunk)
	const entry = ctKeySize + ctValSize
	// The whole table fits without growing; a delta starts small.
	room := int(f.objs.FwConntrack.MaxEntries())
	if age > 0 {
		room = min(room, 1024)
	}
	out := make([]byte, sdk.StateTableHeaderLen, sdk.StateTableHeaderLen+room*entry)
	count := 0
	var cursor ebpf.MapBatchCursor
	for {
		n, err := f.objs.FwConntrack.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			v := &vals[i]
			if v.Expires <= now {
				continue
			}
			if age > 0 && int(v.State) < len(ctTimeouts) {
				lastSeen := int64(v.Expires) - int64(ctTimeouts[v.State])
				if lastSeen < int64(now)-int64(age) {
					continue // idle since before age: the destination has it
				}
			}
			v.Expires -= now
			v.Created = now - min(v.Created, now) // age
			v.Gen, v.Rule = 0, 0
			out = slices.Grow(out, entry)[:len(out)+entry]
			putCtEntry(out[len(out)-entry:], &keys[i], v)
			count++
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return fmt.Errorf("read fw_conntrack: %w", err)
		}
	}
	sdk.PutStateTableHeader(out, ctKeySize, ctValSize, count)
	_, err := w.Write(out)
	return err
}

// exportChunk and importChunk are the entries per batch syscall: larger
// batches cost fewer syscalls, and the kernel's work per entry is the same.
const (
	exportChunk = 16384
	importChunk = 8192
)

// ImportState adds exported flows to the connection table
// (sdk.StateMover). Each is stamped with a policy epoch that is not the
// live one, so its first packet here re-validates it against this
// vNIC's policy (as after a policy swap): a flow the local policy does not
// allow is cut there, whatever the source host allowed.
func (f *fastPath) ImportState(r io.Reader) (int, error) {
	const entry = ctKeySize + ctValSize
	raw, count, err := sdk.ReadStateTable(r, "firewall", "flow", "flows", ctKeySize, ctValSize, uint64(f.objs.FwConntrack.MaxEntries()))
	if err != nil {
		return 0, err
	}
	keys := make([]firewallFwCtKey, count)
	vals := make([]firewallFwCtVal, count)
	for i := range keys {
		getCtEntry(raw[i*entry:(i+1)*entry], &keys[i], &vals[i])
		if k := keys[i]; (k.Family != 4 && k.Family != 6) || k.Proto == 0 {
			return 0, fmt.Errorf("%w: firewall state: flow %d: family %d proto %d", sdk.ErrInvalidParam, i, k.Family, k.Proto)
		}
	}
	var epoch uint32
	if err := f.objs.FwConfig.Lookup(uint32(0), &epoch); err != nil {
		return 0, fmt.Errorf("read policy epoch: %w", err)
	}
	now := sdk.KtimeNow()
	for i := range vals {
		vals[i].Expires += now
		vals[i].Created = now - min(vals[i].Created, now)
		vals[i].Gen = epoch ^ 1<<31 // never the live epoch: re-validate
	}
	return f.updateFlows(keys, vals)
}

// updateFlows writes flows into the connection table in batches, two
// writers at a time when there are two CPUs: the kernel's hash map takes
// concurrent updates (per-bucket locks), and an update costs far more in
// the kernel than in Go.
func (f *fastPath) updateFlows(keys []firewallFwCtKey, vals []firewallFwCtVal) (int, error) {
	workers := min(runtime.GOMAXPROCS(0), 4, (len(keys)+importChunk-1)/importChunk)
	if workers <= 1 {
		done := 0
		for done < len(keys) {
			end := min(done+importChunk, len(keys))
			n, err := f.objs.FwConntrack.BatchUpdate(keys[done:end], vals[done:end], nil)
			done += n
			if err != nil {
				return done, fmt.Errorf("firewall state: imported %d of %d flows: %w", done, len(keys), err)
			}
		}
		return done, nil
	}
	var (
		next  atomic.Int64
		done  atomic.Int64
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				start := int(next.Add(importChunk)) - importChunk
				if start >= len(keys) {
					return
				}
				end := min(start+importChunk, len(keys))
				n, err := f.objs.FwConntrack.BatchUpdate(keys[start:end], vals[start:end], nil)
				done.Add(int64(n))
				if err != nil {
					errMu.Lock()
					if first == nil {
						first = err
					}
					errMu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return int(done.Load()), fmt.Errorf("firewall state: imported %d of %d flows: %w", done.Load(), len(keys), first)
	}
	return int(done.Load()), nil
}

// The connection table's entry layout (struct fw_ct_key, fw_ct_val);
// TestCtLayout fails when firewall.c changes it, so the codec below and
// stateFormat are updated together.
const (
	ctKeySize = 40
	ctValSize = 48
)

// putCtEntry encodes one flow little-endian, field by field (reflection
// would cost more than the map operations themselves).
func putCtEntry(b []byte, k *firewallFwCtKey, v *firewallFwCtVal) {
	le := binary.LittleEndian
	copy(b[0:16], k.Local[:])
	copy(b[16:32], k.Remote[:])
	le.PutUint16(b[32:], k.LocalPort)
	le.PutUint16(b[34:], k.RemotePort)
	b[36], b[37], b[38], b[39] = k.Proto, k.Family, 0, 0
	w := b[ctKeySize:]
	le.PutUint64(w[0:], v.Expires)
	le.PutUint64(w[8:], v.Created)
	le.PutUint64(w[16:], v.Packets)
	le.PutUint64(w[24:], v.Bytes)
	le.PutUint32(w[32:], v.Gen)
	le.PutUint16(w[36:], v.P1)
	le.PutUint16(w[38:], v.P2)
	w[40], w[41], w[42], w[43] = v.State, v.OrigDir, v.Fins, v.Flags
	le.PutUint32(w[44:], v.Rule)
}

func getCtEntry(b []byte, k *firewallFwCtKey, v *firewallFwCtVal) {
	le := binary.LittleEndian
	copy(k.Local[:], b[0:16])
	copy(k.Remote[:], b[16:32])
	k.LocalPort, k.RemotePort = le.Uint16(b[32:]), le.Uint16(b[34:])
	k.Proto, k.Family = b[36], b[37]
	w := b[ctKeySize:]
	v.Expires, v.Created = le.Uint64(w[0:]), le.Uint64(w[8:])
	v.Packets, v.Bytes = le.Uint64(w[16:]), le.Uint64(w[24:])
	v.Gen, v.P1, v.P2 = le.Uint32(w[32:]), le.Uint16(w[36:]), le.Uint16(w[38:])
	v.State, v.OrigDir, v.Fins, v.Flags = w[40], w[41], w[42], w[43]
	v.Rule = le.Uint32(w[44:])
}
