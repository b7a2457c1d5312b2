package dlb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// The load balancer's pinned flows move with the VM (sdk.StateMover): a
// connection keeps its backend on the destination host, as across a
// reload, whatever Maglev would pick there.
var (
	_ sdk.StateMover         = (*fastPath)(nil)
	_ sdk.StateDeltaExporter = (*fastPath)(nil)
)

// pinFormat 1: a header {u32 key size, u32 value size, u64 count}, then
// count × (dlb_ct_key, dlb_ct_val), forward and reverse entries alike,
// little-endian field by field; each value's seen is the entry's idle time
// in ns, its svc 0 (service ids are the source instance's own).
const pinFormat = 1

const (
	pinKeySize = 40
	pinValSize = 40
	pinEntry   = pinKeySize + pinValSize
)

// StateFormat implements sdk.StateMover.
func (f *fastPath) StateFormat() uint32 { return pinFormat }

// ExportState writes every pinned flow (sdk.StateMover).
func (f *fastPath) ExportState(w io.Writer) error { return f.export(w, 0) }

// ExportStateSince writes the pins with a packet within the last age
// (sdk.StateDeltaExporter; seen is refreshed at most once a second, which
// the caller's margin covers).
func (f *fastPath) ExportStateSince(w io.Writer, age time.Duration) error {
	return f.export(w, age)
}

func (f *fastPath) export(w io.Writer, age time.Duration) error {
	now := sdk.KtimeNow()
	const chunk = 4096
	keys := make([]dlbDlbCtKey, chunk)
	vals := make([]dlbDlbCtVal, chunk)
	out := make([]byte, sdk.StateTableHeaderLen, sdk.StateTableHeaderLen+pinEntry*64)
	count := 0
	var zero [pinEntry]byte
	var cursor ebpf.MapBatchCursor
	for {
		n, err := f.objs.DlbCt.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			v := vals[i]
			v.Seen = now - min(v.Seen, now) // idle time
			if age > 0 && v.Seen > uint64(age) {
				continue
			}
			v.T.Svc = 0
			out = append(out, zero[:]...)
			putPin(out[len(out)-pinEntry:], &keys[i], &v)
			count++
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return fmt.Errorf("read dlb_ct: %w", err)
		}
	}
	sdk.PutStateTableHeader(out, pinKeySize, pinValSize, count)
	_, err := w.Write(out)
	return err
}

// ImportState adds pinned flows exported on another host (sdk.StateMover),
// re-validated against this instance's services: a pin whose service
// (VIP, port, protocol) is not configured here, or whose backend is not in
// that service's pool here, is dropped and counted
// (state_pins_dropped_total); the others take this host's service id and
// the backend's MAC as configured here. It returns the entries written.
func (f *fastPath) ImportState(r io.Reader) (int, error) {
	raw, count, err := sdk.ReadStateTable(r, "dlb", "entry", "entries", pinKeySize, pinValSize, uint64(f.objs.DlbCt.MaxEntries()))
	if err != nil {
		return 0, err
	}
	keys := make([]dlbDlbCtKey, 0, count)
	vals := make([]dlbDlbCtVal, 0, count)
	f.mu.Lock()
	pools := f.pools()
	f.mu.Unlock()
	now := sdk.KtimeNow()
	dropped := 0
	for i := range count {
		var k dlbDlbCtKey
		var v dlbDlbCtVal
		getPin(raw[i*pinEntry:(i+1)*pinEntry], &k, &v)
		if (k.Family != 4 && k.Family != 6) || k.Kind > 1 || (k.Proto != ProtoTCP && k.Proto != ProtoUDP) {
			return 0, fmt.Errorf("%w: dlb state: entry %d: family %d kind %d proto %d", sdk.ErrInvalidParam, i, k.Family, k.Kind, k.Proto)
		}
		// A forward entry (client → VIP) holds the backend; a reverse one
		// (backend → client) holds the VIP.
		svc := svcIdent{addrFromWords(k.Daddr, k.Family), portWord(k.Dport), k.Proto}
		backend := netip.AddrPortFrom(addrFromWords(v.T.Addr, k.Family), portWord(v.T.Port))
		if k.Kind == 1 {
			svc = svcIdent{addrFromWords(v.T.Addr, k.Family), portWord(v.T.Port), k.Proto}
			backend = netip.AddrPortFrom(addrFromWords(k.Saddr, k.Family), portWord(k.Sport))
		}
		pool, ok := pools[svc]
		b, inPool := pool.backends[backend]
		if !ok || !inPool {
			if k.Kind == 0 {
				dropped++
			}
			continue
		}
		closing := v.T.Flags & flagClosing
		if k.Kind == 0 {
			t := targetOf(b)
			v.T.Mac, v.T.Flags = t.MAC, t.Flags|closing
		} else {
			v.T.Flags = closing
		}
		v.T.Svc = pool.id
		v.Seen = now - min(v.Seen, now)
		keys, vals = append(keys, k), append(vals, v)
	}
	if dropped > 0 {
		f.pinsDropped.Add(uint64(dropped))
		f.log.Warn("dlb: imported pins dropped: their backend is not in this host's pool", "dropped", dropped)
	}
	done := 0
	for done < len(keys) {
		end := min(done+4096, len(keys))
		n, err := f.objs.DlbCt.BatchUpdate(keys[done:end], vals[done:end], nil)
		done += n
		if err != nil {
			return done, fmt.Errorf("dlb state: imported %d of %d entries: %w", done, len(keys), err)
		}
	}
	return done, nil
}

// pool is what a service configured here accepts from imported pins.
type pool struct {
	id       uint16
	backends map[netip.AddrPort]Backend
}

// pools indexes the configured services (f.cfg, ids assigned) by VIP,
// port and protocol. f.mu is held.
func (f *fastPath) pools() map[svcIdent]pool {
	out := map[svcIdent]pool{}
	if f.cfg == nil {
		return out
	}
	for _, s := range f.cfg.Services {
		p := pool{id: s.ID, backends: map[netip.AddrPort]Backend{}}
		for _, b := range s.Backends {
			p.backends[netip.AddrPortFrom(b.Addr, b.Port)] = b
		}
		out[identOf(s)] = p
	}
	return out
}

// putPin and getPin encode one entry little-endian, field by field.
func putPin(b []byte, k *dlbDlbCtKey, v *dlbDlbCtVal) {
	le := binary.LittleEndian
	for i := range 4 {
		le.PutUint32(b[4*i:], k.Saddr[i])
		le.PutUint32(b[16+4*i:], k.Daddr[i])
	}
	le.PutUint16(b[32:], k.Sport)
	le.PutUint16(b[34:], k.Dport)
	b[36], b[37], b[38], b[39] = k.Proto, k.Kind, k.Family, 0
	w := b[pinKeySize:]
	for i := range 4 {
		le.PutUint32(w[4*i:], v.T.Addr[i])
	}
	le.PutUint16(w[16:], v.T.Port)
	copy(w[18:24], v.T.Mac[:])
	w[24], w[25] = v.T.Flags, 0
	le.PutUint16(w[26:], v.T.Svc)
	le.PutUint32(w[28:], 0)
	le.PutUint64(w[32:], v.Seen)
}

func getPin(b []byte, k *dlbDlbCtKey, v *dlbDlbCtVal) {
	le := binary.LittleEndian
	for i := range 4 {
		k.Saddr[i] = le.Uint32(b[4*i:])
		k.Daddr[i] = le.Uint32(b[16+4*i:])
	}
	k.Sport, k.Dport = le.Uint16(b[32:]), le.Uint16(b[34:])
	k.Proto, k.Kind, k.Family = b[36], b[37], b[38]
	w := b[pinKeySize:]
	for i := range 4 {
		v.T.Addr[i] = le.Uint32(w[4*i:])
	}
	v.T.Port = le.Uint16(w[16:])
	copy(v.T.Mac[:], w[18:24])
	v.T.Flags = w[24]
	v.T.Svc = le.Uint16(w[26:])
	v.Seen = le.Uint64(w[32:])
}
