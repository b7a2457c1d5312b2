package encap

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"

	"github.com/vnicfilter/vnicfilter/internal/fsutil"
)

// Errors of HostFDB changes besides ErrInvalidFIB.
var (
	// ErrNoTable: no table was pushed (the instances use their fib files).
	ErrNoTable = errors.New("no forwarding table pushed through the API")
	// ErrStaleGeneration: the change was made against another
	// generation, or a pushed table's generation is not above the live one.
	ErrStaleGeneration = errors.New("stale generation")
	// ErrNoEntry: no such entry or segment in the table.
	ErrNoEntry = errors.New("no such entry")
)

// HostFDB is the host's forwarding table when the control plane pushes it
// (filterd's /v1/encap/fdb, later the manager) rather than writing files.
// Once it holds a table, every encap instance of the process compiles from
// it instead of its fib file: at attach, at reload, and at every change,
// which is written into the live maps of each instance in place. Every
// change is checked against the whole table and against every live
// instance first (segment, local_ip, fib_size); a refused change leaves
// the table and every map as they were.
//
// One HostFDB serves a process (UseHostFDB): filterd is one per host.
type HostFDB struct {
	mu    sync.Mutex
	fib   *FIB   // nil until a table is pushed
	path  string // persisted here when set
	insts map[*fastPath]struct{}
}

var hostFDB atomic.Pointer[HostFDB]

// OpenHostFDB returns a HostFDB persisted at path ("" : in memory only),
// holding the table saved there if the file exists.
func OpenHostFDB(path string) (*HostFDB, error) {
	h := &HostFDB{path: path, insts: map[*fastPath]struct{}{}}
	if path == "" {
		return h, nil
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return h, nil
	}
	f, err := LoadFIB(path)
	if err != nil {
		return nil, fmt.Errorf("pushed encap forwarding table: %w", err)
	}
	h.fib = f
	return h, nil
}

// UseHostFDB makes h the process's table: instances attached or reloaded
// from now on compile from it once it holds a table. filterd calls it at
// start, before it re-adopts running chains, so that they keep the pushed
// table across a restart. nil: back to the files.
func UseHostFDB(h *HostFDB) { hostFDB.Store(h) }

// CurrentHostFDB returns the process's HostFDB, or nil.
func CurrentHostFDB() *HostFDB { return hostFDB.Load() }

// FDBChange reports an accepted change.
type FDBChange struct {
	Generation uint64 `json:"generation"`
	// Updated are the encap instances whose maps were written, as
	// "vNIC (segment N)", in order.
	Updated []string `json:"updated"`
	// Seconds the change took, checks and map writes included.
	Seconds float64 `json:"seconds"`
}

// Table returns the pushed table, only segment vni when vni is not 0.
func (h *HostFDB) Table(vni uint32) (Table, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fib == nil {
		return Table{}, fmt.Errorf("%w: the encap instances use their fib files (push one with PUT /v1/encap/fdb)", ErrNoTable)
	}
	t := h.fib.Table()
	if vni == 0 {
		return t, nil
	}
	out := Table{Generation: t.Generation, Segments: []TableSegment{}, Entries: []TableEntry{}}
	for _, s := range t.Segments {
		if s.VNI == int64(vni) {
			out.Segments = append(out.Segments, s)
		}
	}
	if len(out.Segments) == 0 {
		return Table{}, fmt.Errorf("%w: segment %d is not in the table (generation %d)", ErrNoEntry, vni, t.Generation)
	}
	for _, e := range t.Entries {
		if e.VNI == int64(vni) {
			out.Entries = append(out.Entries, e)
		}
	}
	return out, nil
}

// Replace swaps in a whole table (from ParseFIB or ParseTable).
// f.Generation 0 takes the next generation; otherwise it must be above
// the live one. ifGeneration, when not 0, must be the live generation.
func (h *HostFDB) Replace(f *FIB, ifGeneration uint64) (*FDBChange, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f = f.clone()
	cur := h.generationLocked()
	if ifGeneration != 0 && ifGeneration != cur {
		return nil, fmt.Errorf("%w: the table was made against generation %d, the live one is %d", ErrStaleGeneration, ifGeneration, cur)
	}
	switch {
	case f.Generation == 0:
		f.Generation = cur + 1
	case f.Generation <= cur:
		return nil, fmt.Errorf("%w: table generation %d is not above the live generation %d", ErrStaleGeneration, f.Generation, cur)
	}
	return h.commitLocked(f)
}

// Merge adds or replaces the segments (by VNI) and entries (by segment
// and MAC) of t in the pushed table: a VM that moved is an entry with
// its new host. ifGeneration, when not 0, must be the live generation.
// Errors name the request's fields (entries[1].host).
func (h *HostFDB) Merge(t Table, ifGeneration uint64) (*FDBChange, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.checkLocked(ifGeneration); err != nil {
		return nil, err
	}
	base := h.fib.Table()
	// The merged table: kept rows first, then the request's, so that
	// an error in a request row can be named by its request index.
	var merged Table
	segFrom := map[int]string{}
	for _, s := range base.Segments {
		if !slices.ContainsFunc(t.Segments, func(n TableSegment) bool { return n.VNI == s.VNI }) {
			segFrom[len(merged.Segments)] = fmt.Sprintf("segment %d", s.VNI)
			merged.Segments = append(merged.Segments, s)
		}
	}
	for i, s := range t.Segments {
		segFrom[len(merged.Segments)] = fmt.Sprintf("segments[%d]", i)
		merged.Segments = append(merged.Segments, s)
	}
	type key struct {
		vni int64
		mac string
	}
	norm := func(e TableEntry) key {
		if m, err := net.ParseMAC(e.MAC); err == nil {
			return key{e.VNI, m.String()}
		}
		return key{e.VNI, e.MAC}
	}
	replaced := map[key]bool{}
	for _, e := range t.Entries {
		replaced[norm(e)] = true
	}
	entFrom := map[int]string{}
	for _, e := range base.Entries {
		if !replaced[norm(e)] {
			entFrom[len(merged.Entries)] = fmt.Sprintf("entry (vni %d, mac %s)", e.VNI, e.MAC)
			merged.Entries = append(merged.Entries, e)
		}
	}
	for i, e := range t.Entries {
		entFrom[len(merged.Entries)] = fmt.Sprintf("entries[%d]", i)
		merged.Entries = append(merged.Entries, e)
	}
	// Name fields as the request or the table has them.
	rename := func(field string) string {
		for _, kind := range []struct {
			prefix string
			from   map[int]string
		}{{"segments[", segFrom}, {"entries[", entFrom}} {
			if !strings.HasPrefix(field, kind.prefix) {
				continue
			}
			end := strings.IndexByte(field, ']')
			var n int
			if _, err := fmt.Sscanf(field[len(kind.prefix):end], "%d", &n); err == nil {
				if name, ok := kind.from[n]; ok {
					return name + field[end+1:]
				}
			}
		}
		return field
	}
	fail := func(field, format string, args ...any) error {
		// Conflict messages name the other field: rename it too.
		msg := entryRef.ReplaceAllStringFunc(fmt.Sprintf(format, args...), rename)
		return &FIBError{Field: rename(field), Err: errors.New(msg)}
	}
	f, err := build(&merged, func(string) bool { return true }, fail, func(field string) string { return field })
	if err != nil {
		return nil, err
	}
	f.Generation = h.fib.Generation + 1
	return h.commitLocked(f)
}

// entryRef is a field path of a table row inside a message.
var entryRef = regexp.MustCompile(`(segments|entries)\[[0-9]+\]`)

// DeleteEntry removes the entry of mac in segment vni.
func (h *HostFDB) DeleteEntry(vni uint32, mac [6]byte, ifGeneration uint64) (*FDBChange, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.checkLocked(ifGeneration); err != nil {
		return nil, err
	}
	f := h.fib.clone()
	s := f.Segment(vni)
	i := -1
	if s != nil {
		i = slices.IndexFunc(s.Entries, func(e Entry) bool { return e.MAC == mac })
	}
	if i < 0 {
		return nil, fmt.Errorf("%w: no entry for %s in segment %d", ErrNoEntry, net.HardwareAddr(mac[:]), vni)
	}
	s.Entries = slices.Delete(s.Entries, i, i+1)
	f.Generation++
	return h.commitLocked(f)
}

// DeleteSegment removes segment vni, which must have no entries left and
// no vNIC of this host in it.
func (h *HostFDB) DeleteSegment(vni uint32, ifGeneration uint64) (*FDBChange, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.checkLocked(ifGeneration); err != nil {
		return nil, err
	}
	f := h.fib.clone()
	i := slices.IndexFunc(f.Segments, func(s *Segment) bool { return s.VNI == vni })
	if i < 0 {
		return nil, fmt.Errorf("%w: segment %d is not in the table", ErrNoEntry, vni)
	}
	if n := len(f.Segments[i].Entries); n > 0 {
		return nil, fmt.Errorf("%w: segment %d still has %d entries: delete them first", ErrInvalidFIB, vni, n)
	}
	f.Segments = slices.Delete(f.Segments, i, i+1)
	f.Generation++
	return h.commitLocked(f)
}

// Drop forgets the pushed table: every instance goes back to the file
// its fib parameter names, and the saved copy is removed. The files are
// read and compiled for every instance first: an instance without a fib
// file, or whose file does not compile, refuses the drop and nothing
// changes.
func (h *HostFDB) Drop(ifGeneration uint64) (*FDBChange, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.checkLocked(ifGeneration); err != nil {
		return nil, err
	}
	start := time.Now()
	insts := slices.SortedFunc(maps.Keys(h.insts), func(a, b *fastPath) int { return strings.Compare(a.label(), b.label()) })
	compiled := make([]*Tables, len(insts))
	for i, fp := range insts {
		t, err := fp.params.compile(nil)
		if err != nil {
			return nil, fmt.Errorf("%w: vNIC %s cannot go back to a file: %w", ErrInvalidFIB, fp.label(), err)
		}
		compiled[i] = t
	}
	if h.path != "" {
		if err := os.Remove(h.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove the saved forwarding table: %w", err)
		}
	}
	h.fib = nil
	out := &FDBChange{Updated: []string{}}
	var errs []error
	for i, fp := range insts {
		if err := fp.apply(compiled[i]); err != nil {
			errs = append(errs, fmt.Errorf("vNIC %s: %w", fp.label(), err))
			continue
		}
		out.Updated = append(out.Updated, fp.label())
	}
	out.Seconds = time.Since(start).Seconds()
	if len(errs) > 0 {
		return out, fmt.Errorf("encap: table dropped, but not every instance went back to its file: %w", errors.Join(errs...))
	}
	return out, nil
}

func (h *HostFDB) generationLocked() uint64 {
	if h.fib == nil {
		return 0
	}
	return h.fib.Generation
}

func (h *HostFDB) checkLocked(ifGeneration uint64) error {
	if h.fib == nil {
		return fmt.Errorf("%w: push a whole table first (PUT /v1/encap/fdb); the encap instances use their fib files", ErrNoTable)
	}
	if ifGeneration != 0 && ifGeneration != h.fib.Generation {
		return fmt.Errorf("%w: the change was made against generation %d, the live one is %d", ErrStaleGeneration, ifGeneration, h.fib.Generation)
	}
	return nil
}

func (f *FIB) clone() *FIB {
	out := &FIB{Generation: f.Generation}
	for _, s := range f.Segments {
		c := *s
		c.Hosts = slices.Clone(s.Hosts)
		c.Entries = slices.Clone(s.Entries)
		out.Segments = append(out.Segments, &c)
	}
	return out
}

// commitLocked checks f against every live instance, saves it, and
// writes it into the instances' maps. Nothing changes when a check fails.
func (h *HostFDB) commitLocked(f *FIB) (*FDBChange, error) {
	start := time.Now()
	insts := slices.SortedFunc(maps.Keys(h.insts), func(a, b *fastPath) int { return strings.Compare(a.label(), b.label()) })
	compiled := make([]*Tables, len(insts))
	for i, fp := range insts {
		t, err := Compile(f, fp.params.vni, fp.params.local, fp.params.fibSize)
		if err != nil {
			return nil, fmt.Errorf("%w: vNIC %s: %s", ErrInvalidFIB, fp.label(), strings.TrimPrefix(err.Error(), ErrInvalidFIB.Error()+": "))
		}
		compiled[i] = t
	}
	if h.path != "" {
		if err := saveTable(h.path, f); err != nil {
			return nil, err
		}
	}
	h.fib = f
	out := &FDBChange{Generation: f.Generation, Updated: []string{}}
	var errs []error
	for i, fp := range insts {
		if err := fp.apply(compiled[i]); err != nil {
			errs = append(errs, fmt.Errorf("vNIC %s: %w", fp.label(), err))
			continue
		}
		out.Updated = append(out.Updated, fp.label())
	}
	out.Seconds = time.Since(start).Seconds()
	if len(errs) > 0 {
		return out, fmt.Errorf("encap: table generation %d saved, but not written everywhere: %w", f.Generation, errors.Join(errs...))
	}
	return out, nil
}

func saveTable(path string, f *FIB) error {
	b, err := jsonIndent(f.Table())
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save forwarding table: %w", err)
	}
	if err := fsutil.WriteFileAtomic(path, b, 0o600); err != nil {
		return fmt.Errorf("save forwarding table: %w", err)
	}
	return nil
}

// lockFor returns the process's HostFDB locked (the caller unlocks it),
// or nil: an instance compiles from it (or from its file while it holds
// no table) and joins it, without a change slipping in between. Instances
// join even before a table is pushed, so that the first push reaches them.
func lockFor() *HostFDB {
	h := hostFDB.Load()
	if h == nil {
		return nil
	}
	h.mu.Lock()
	return h
}

// join adds fp to the instances changes are written to (h locked).
func (h *HostFDB) joinLocked(fp *fastPath) {
	h.insts[fp] = struct{}{}
	fp.host.Store(h)
}

// leave removes fp.
func (h *HostFDB) leave(fp *fastPath) {
	h.mu.Lock()
	delete(h.insts, fp)
	h.mu.Unlock()
}

func (f *fastPath) label() string {
	return fmt.Sprintf("%s (segment %d)", f.vnic, f.params.vni)
}

// apply writes t into the live generation of the instance's maps entry by
// entry (each lookup sees an entry's old or new value, never a mix), or,
// when the member hosts change, through the idle generation and a flip
// (update), the member list being one array value.
func (f *fastPath) apply(t *Tables) error {
	f.mu.Lock()
	if f.dev == nil {
		f.mu.Unlock()
		return errClosed
	}
	old := f.tables
	if old == nil || !slices.Equal(old.Members, t.Members) {
		f.mu.Unlock()
		return f.update(t, 0)
	}
	defer f.mu.Unlock()
	var cfg encapEncapCfg
	if err := f.objs.EncapConfig.Lookup(uint32(0), &cfg); err != nil {
		return fmt.Errorf("read encap_config: %w", err)
	}
	gen := cfg.Gen
	// New and moved MACs first, then their addresses; addresses that
	// went away before their MACs.
	for _, mac := range sortedMACs(t.Remote) {
		host := t.Remote[mac]
		if prev, ok := old.Remote[mac]; ok && prev == host {
			continue
		}
		k, v := encapEncapFibKey{Gen: gen, Mac: mac}, hostAddr(host)
		if err := f.objs.EncapFib.Put(&k, &v); err != nil {
			return fmt.Errorf("write encap_fib: %w", err)
		}
	}
	for ip, mac := range t.Neigh {
		if prev, ok := old.Neigh[ip]; ok && prev == mac {
			continue
		}
		k, v := neighKey(gen, ip), encapEncapNeighEntry{Mac: mac}
		if err := f.objs.EncapNeigh.Put(&k, &v); err != nil {
			return fmt.Errorf("write encap_neigh: %w", err)
		}
	}
	for ip := range old.Neigh {
		if _, ok := t.Neigh[ip]; !ok {
			k := neighKey(gen, ip)
			if err := f.objs.EncapNeigh.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("delete from encap_neigh: %w", err)
			}
		}
	}
	for mac := range old.Remote {
		if _, ok := t.Remote[mac]; !ok {
			k := encapEncapFibKey{Gen: gen, Mac: mac}
			if err := f.objs.EncapFib.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("delete from encap_fib: %w", err)
			}
		}
	}
	f.tables = t
	return nil
}

func sortedMACs(m map[[6]byte]netip.Addr) [][6]byte {
	out := slices.Collect(maps.Keys(m))
	sort.Slice(out, func(i, j int) bool { return string(out[i][:]) < string(out[j][:]) })
	return out
}

func jsonIndent(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	return append(b, '\n'), err
}
