package datapath

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// Parsing the embedded ELF costs more than loading it; parse once.
var dispatcherSpec = sync.OnceValues(loadDispatcher)

// DefaultRoot is the bpffs directory vnicfilter pins under.
const DefaultRoot = "/sys/fs/bpf/vnicfilter"

// infoMap is the pinned one-entry map recording who a vNIC directory
// belongs to, so a restarted filterd can tell a live datapath from one left
// by a device that was deleted and whose name was reused.
const infoMap = "vf_info"

type info struct {
	Ifindex uint32
	Mode    uint32
	ABI     uint32
	_       uint32
	Created uint64 // unix nanoseconds
}

// Options configure a Datapath. The zero value is the production default.
type Options struct {
	// Root is the bpffs directory to pin under; DefaultRoot if empty. It
	// must be on a bpf filesystem.
	Root string
	// Mode selects tcx or clsact; ModeAuto probes.
	Mode Mode
}

// Datapath creates, adopts and removes per-vNIC chains.
type Datapath struct {
	root string
	mode Mode
}

// New checks the bpffs root and resolves the attach mode.
func New(opts Options) (*Datapath, error) {
	root := opts.Root
	if root == "" {
		root = DefaultRoot
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("create bpffs directory %s: %w", root, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return nil, fmt.Errorf("statfs %s: %w", root, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return nil, fmt.Errorf("%s is not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf): %w", root, sdk.ErrNotSupported)
	}
	mode := opts.Mode
	if mode == ModeAuto {
		if HaveTCX() == nil {
			mode = ModeTCX
		} else {
			mode = ModeClsact
		}
	}
	return &Datapath{root: root, mode: mode}, nil
}

// Root is the bpffs directory in use.
func (d *Datapath) Root() string { return d.root }

// Mode is the attach mode new vNICs get.
func (d *Datapath) Mode() Mode { return d.mode }

// VNIC is the datapath of one protected device.
type VNIC struct {
	Name    string
	Ifindex int
	Mode    Mode
	// Generation counts chain replacements since this process adopted or
	// created the chain.
	Generation uint32

	dir    string
	chain  *ebpf.Map
	slots  *ebpf.Map
	stats  *ebpf.Map
	info   *ebpf.Map
	skip   *ebpf.Program
	links  [sdk.NumDirections]link.Link
	progs  [sdk.NumDirections]*ebpf.Program
	filled [sdk.MaxSlots]bool // slots holding a program (filter or skip)
}

// Maps returns the vNIC maps a filter instance's fast path is loaded with.
func (v *VNIC) Maps() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{sdk.MapChain: v.chain, sdk.MapSlots: v.slots, sdk.MapStats: v.stats}
}

// SlotDir is the bpffs directory of the instance in slot.
func (v *VNIC) SlotDir(slot int) string { return filepath.Join(v.dir, fmt.Sprintf("slot%d", slot)) }

// Dir is the vNIC's bpffs directory.
func (v *VNIC) Dir() string { return v.dir }

func validName(name string) error {
	if name == "" || len(name) >= unix.IFNAMSIZ || strings.ContainsAny(name, "/ \t\n") || name == "." || name == ".." {
		return fmt.Errorf("device name %q: %w", name, ErrNoSuchDevice)
	}
	return nil
}

// Create builds the datapath of device name: maps, then whatever prepare
// puts in the slots (filterd loads the chain there), then the dispatchers
// on both tc hooks. The hooks are attached last, so no frame crosses the
// device before the whole chain is in place. On error nothing is left.
func (d *Datapath) Create(name string, prepare func(*VNIC) error) (_ *VNIC, err error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	ifindex, err := IfindexByName(name)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", name, ErrNoSuchDevice)
	}
	if strings.HasPrefix(name, guardPrefix) {
		return nil, fmt.Errorf("device name %q: the prefix %q is reserved for drop-all guards: %w", name, guardPrefix, sdk.ErrNotSupported)
	}
	dir := filepath.Join(d.root, name)
	if _, err := os.Stat(filepath.Join(dir, infoMap)); err == nil {
		return nil, fmt.Errorf("%s: %w", name, ErrAlreadyAttached)
	}
	// A directory without vf_info is debris of an interrupted create.
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("clear %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	v := &VNIC{Name: name, Ifindex: ifindex, Mode: d.mode, dir: dir}
	defer func() {
		if err != nil {
			v.destroy()
		}
	}()
	spec, err := dispatcherSpec()
	if err != nil {
		return nil, err
	}
	if err := v.loadDispatcher(spec, nil); err != nil {
		return nil, err
	}
	for name, m := range map[string]*ebpf.Map{sdk.MapChain: v.chain, sdk.MapSlots: v.slots, sdk.MapStats: v.stats} {
		if err := m.Pin(filepath.Join(dir, name)); err != nil {
			return nil, fmt.Errorf("pin %s: %w", name, err)
		}
	}
	if prepare != nil {
		if err := prepare(v); err != nil {
			return nil, err
		}
	}
	if err := v.attach(); err != nil {
		return nil, err
	}
	// vf_info last: its presence marks a complete datapath.
	im, err := ebpf.NewMap(&ebpf.MapSpec{Name: infoMap, Type: ebpf.Array, KeySize: 4, ValueSize: 24, MaxEntries: 1})
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", infoMap, err)
	}
	v.info = im
	in := info{Ifindex: uint32(v.Ifindex), Mode: uint32(v.Mode), ABI: sdk.ABIVersion, Created: uint64(time.Now().UnixNano())}
	if err := im.Put(uint32(0), in); err != nil {
		return nil, fmt.Errorf("write %s: %w", infoMap, err)
	}
	if err := im.Pin(filepath.Join(dir, infoMap)); err != nil {
		return nil, fmt.Errorf("pin %s: %w", infoMap, err)
	}
	// The dispatchers run before a drop-all guard the hook may have
	// pinned (guard_linux.go), so it can go now: no frame passed
	// unfiltered in between. Best effort: failing the create here would
	// take the chain down with a half-removed guard; a guard left behind
	// the chain is never reached (or, tcx guard before a clsact chain,
	// keeps the device closed) and Detach or Remove retries.
	_ = removeGuardFor(d.root, name, ifindex)
	return v, nil
}

// loadDispatcher loads the dispatcher programs, creating the vNIC maps or
// reusing the given ones.
func (v *VNIC) loadDispatcher(spec *ebpf.CollectionSpec, maps map[string]*ebpf.Map) error {
	// Only the maps and the two hook programs: LoadAndAssign loads what
	// the struct asks for, and the pass-through program is rarely needed.
	var objs struct {
		dispatcherMaps
		FromVM *ebpf.Program `ebpf:"vf_from_vm"`
		ToVM   *ebpf.Program `ebpf:"vf_to_vm"`
	}
	opts := &ebpf.CollectionOptions{MapReplacements: maps}
	if err := spec.Copy().LoadAndAssign(&objs, opts); err != nil {
		return fmt.Errorf("load dispatcher for %s: %w", v.Name, err)
	}
	v.chain, v.slots, v.stats = objs.VfChain, objs.VfSlots, objs.VfStats
	v.progs[sdk.FromVM], v.progs[sdk.ToVM] = objs.FromVM, objs.ToVM
	return nil
}

// skipProgram loads the pass-through program on first use.
func (v *VNIC) skipProgram() (*ebpf.Program, error) {
	if v.skip != nil {
		return v.skip, nil
	}
	spec, err := dispatcherSpec()
	if err != nil {
		return nil, err
	}
	var objs struct {
		Skip *ebpf.Program `ebpf:"vf_skip"`
	}
	opts := &ebpf.CollectionOptions{MapReplacements: v.Maps()}
	if err := spec.Copy().LoadAndAssign(&objs, opts); err != nil {
		return nil, fmt.Errorf("load pass-through program for %s: %w", v.Name, err)
	}
	v.skip = objs.Skip
	return v.skip, nil
}

func (v *VNIC) linkPin(dir sdk.Direction) string {
	return filepath.Join(v.dir, "link_"+strings.ReplaceAll(dir.String(), "-", "_"))
}

// attach puts the dispatchers on both hooks, in the calling thread's
// network namespace (so: sequentially, on this thread). A tcx attach waits
// for an RCU grace period under the RTNL lock (~8 ms each here), which is
// most of the cost of creating a chain; parallel attaches do not help.
func (v *VNIC) attach() error {
	for _, dir := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
		if err := v.attachDir(dir); err != nil {
			return err
		}
	}
	return nil
}

func (v *VNIC) attachDir(dir sdk.Direction) error {
	switch v.Mode {
	case ModeTCX:
		at := ebpf.AttachTCXIngress
		if dir == sdk.ToVM {
			at = ebpf.AttachTCXEgress
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: v.Ifindex, Program: v.progs[dir], Attach: at, Anchor: link.Head()})
		if err != nil {
			return fmt.Errorf("attach dispatcher to %s %s (tcx): %w", v.Name, dir, err)
		}
		v.links[dir] = l
		if err := l.Pin(v.linkPin(dir)); err != nil {
			return fmt.Errorf("pin %s %s link: %w", v.Name, dir, err)
		}
	case ModeClsact:
		if err := attachClsact(v.Ifindex, v.Name, dir, v.progs[dir]); err != nil {
			return fmt.Errorf("attach dispatcher to %s %s (clsact): %w", v.Name, dir, err)
		}
	default:
		return fmt.Errorf("attach %s: unresolved mode %v", v.Name, v.Mode)
	}
	return nil
}

// Replace builds a complete new chain beside the running one and swaps it
// in: prepare fills the returned VNIC's slots (fresh vf_chain and vf_slots;
// vf_stats is shared, so counters continue), then new dispatchers referring
// to them replace the old ones on each hook in one operation (tcx link
// update, or cls_bpf replace), and the pins follow. A frame meets either
// the old chain or the new one, never a mix. On success the caller stops
// the old chain's instances and closes v; on error v is untouched.
func (v *VNIC) Replace(prepare func(next *VNIC) error) (_ *VNIC, err error) {
	next := &VNIC{Name: v.Name, Ifindex: v.Ifindex, Mode: v.Mode, dir: v.dir, Generation: v.Generation + 1}
	defer func() {
		if err != nil {
			// Close is nil-safe on maps and programs.
			for _, c := range []io.Closer{next.chain, next.slots, next.progs[0], next.progs[1], next.skip} {
				_ = c.Close()
			}
		}
	}()
	spec, err := dispatcherSpec()
	if err != nil {
		return nil, err
	}
	stats, err := v.stats.Clone()
	if err != nil {
		return nil, fmt.Errorf("share counters of %s: %w", v.Name, err)
	}
	if err := next.loadDispatcher(spec, map[string]*ebpf.Map{sdk.MapStats: stats}); err != nil {
		stats.Close()
		return nil, err
	}
	stats.Close() // the collection holds its own reference
	if prepare != nil {
		if err := prepare(next); err != nil {
			return nil, err
		}
	}
	// New pins under temporary names first, then renamed over the old
	// ones: a restart in between finds either chain complete.
	for name, m := range map[string]*ebpf.Map{sdk.MapChain: next.chain, sdk.MapSlots: next.slots} {
		tmp := filepath.Join(v.dir, "next_"+name)
		_ = os.Remove(tmp)
		if err := m.Pin(tmp); err != nil {
			return nil, fmt.Errorf("pin new %s of %s: %w", name, v.Name, err)
		}
	}
	for _, dir := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
		switch v.Mode {
		case ModeTCX:
			if err := v.links[dir].Update(next.progs[dir]); err != nil {
				return nil, fmt.Errorf("swap %s dispatcher of %s: %w", dir, v.Name, err)
			}
		case ModeClsact:
			if err := attachClsact(v.Ifindex, v.Name, dir, next.progs[dir]); err != nil {
				return nil, fmt.Errorf("swap %s dispatcher of %s: %w", dir, v.Name, err)
			}
		}
	}
	for _, name := range []string{sdk.MapChain, sdk.MapSlots} {
		if err := os.Rename(filepath.Join(v.dir, "next_"+name), filepath.Join(v.dir, name)); err != nil {
			return nil, fmt.Errorf("repin %s of %s: %w", name, v.Name, err)
		}
	}
	// The links, vf_stats and vf_info move to the new handle.
	next.links, v.links = v.links, [sdk.NumDirections]link.Link{}
	next.info, v.info = v.info, nil
	return next, nil
}

// Adopt re-opens the pinned datapath of device name after a filterd
// restart. The kernel objects are not touched: frames keep flowing through
// the chain as they did. It fails with ErrNotAttached if there is no
// complete datapath, and with ErrNoSuchDevice if the device it was built
// for is gone (call Remove to clear the pins).
func (d *Datapath) Adopt(name string) (_ *VNIC, err error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	dir := filepath.Join(d.root, name)
	im, err := ebpf.LoadPinnedMap(filepath.Join(dir, infoMap), nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, ErrNotAttached)
	}
	v := &VNIC{Name: name, dir: dir, info: im}
	defer func() {
		if err != nil {
			v.Close()
		}
	}()
	var in info
	if err := im.Lookup(uint32(0), &in); err != nil {
		return nil, fmt.Errorf("read %s of %s: %w", infoMap, name, err)
	}
	v.Ifindex, v.Mode = int(in.Ifindex), Mode(in.Mode)
	ifindex, err := IfindexByName(name)
	if err != nil || ifindex != v.Ifindex {
		return nil, fmt.Errorf("%s (ifindex %d): %w", name, v.Ifindex, ErrNoSuchDevice)
	}
	maps := map[string]*ebpf.Map{}
	defer func() {
		for _, m := range maps {
			m.Close()
		}
	}()
	for _, n := range []string{sdk.MapChain, sdk.MapSlots, sdk.MapStats} {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, n), nil)
		if err != nil {
			return nil, fmt.Errorf("open pinned %s of %s: %w", n, name, err)
		}
		maps[n] = m
	}
	// Nothing is loaded: the attached dispatchers stay as they are.
	v.chain, v.slots, v.stats = maps[sdk.MapChain], maps[sdk.MapSlots], maps[sdk.MapStats]
	maps = nil
	if v.Mode == ModeTCX {
		for _, dir := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
			l, err := link.LoadPinnedLink(v.linkPin(dir), nil)
			if err != nil {
				return nil, fmt.Errorf("open pinned %s link of %s: %w", dir, name, err)
			}
			v.links[dir] = l
		}
	} else if err := checkClsact(v.Ifindex); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	for i := range sdk.MaxSlots {
		var id uint32
		if err := v.chain.Lookup(sdk.ChainIndex(sdk.FromVM, i), &id); err == nil {
			v.filled[i] = true
		}
	}
	return v, nil
}

// Pinned lists the vNIC directories under the root (not the guard-*
// directories of drop-all guards).
func (d *Datapath) Pinned() ([]string, error) {
	ents, err := os.ReadDir(d.root)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), guardPrefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// Remove detaches and unpins the datapath of device name, whether or not
// the device still exists. Removing what is not there is not an error.
func (d *Datapath) Remove(name string) error {
	if err := validName(name); err != nil {
		return err
	}
	v, err := d.Adopt(name)
	if err == nil {
		return v.Detach()
	}
	// Device gone (its hooks went with it) or a partial datapath: unpin.
	if err := os.RemoveAll(filepath.Join(d.root, name)); err != nil {
		return fmt.Errorf("unpin %s: %w", name, err)
	}
	// A guard of a device now named name stays: it guards a new tap.
	return removeGuardFor(d.root, name, 0)
}

// Detach removes the vNIC's datapath from the kernel: hooks first (frames
// then pass unfiltered, as for any unprotected vNIC), then the pins, and a
// drop-all guard of the same device.
func (v *VNIC) Detach() error {
	root, name, ifindex := filepath.Dir(v.dir), v.Name, v.Ifindex
	v.destroy()
	return removeGuardFor(root, name, ifindex)
}

func (v *VNIC) destroy() {
	for dir, l := range v.links {
		if l != nil {
			_ = l.Unpin()
			_ = l.Close()
			v.links[dir] = nil
		}
	}
	if v.Mode == ModeClsact && v.Ifindex != 0 {
		for _, dir := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
			_ = detachClsact(v.Ifindex, v.Name, dir)
		}
		removeClsactIfEmpty(v.Ifindex, v.Name)
	}
	_ = os.RemoveAll(v.dir)
	v.Close()
}

// Close releases the process's handles; the pinned datapath stays.
func (v *VNIC) Close() error {
	// Close is nil-safe on maps and programs.
	for _, c := range []io.Closer{v.chain, v.slots, v.stats, v.info, v.skip, v.progs[0], v.progs[1]} {
		_ = c.Close()
	}
	for i, l := range v.links {
		if l != nil {
			_ = l.Close()
			v.links[i] = nil
		}
	}
	v.chain, v.slots, v.stats, v.info, v.skip = nil, nil, nil, nil, nil
	v.progs = [sdk.NumDirections]*ebpf.Program{}
	return nil
}

// Slot is the framework's view of one chain slot.
type Slot struct {
	// FailOpen passes frames when the slot cannot decide.
	FailOpen bool
	// Dirs the instance handles; punt and heartbeat apply to these.
	Dirs sdk.Directions
	// Punt is the slow path's punt device per direction (0: none).
	Punt [sdk.NumDirections]int
}

type slotValue struct {
	Flags       uint32
	PuntIfindex uint32
	AliveUntil  uint64
}

// SetSlot places prog in slot (both directions: the program itself passes
// frames of directions its instance does not handle). The slot's flags are
// written first, so a frame never meets the program without them.
func (v *VNIC) SetSlot(slot int, prog *ebpf.Program, s Slot) error {
	if slot < 0 || slot >= sdk.MaxSlots {
		return fmt.Errorf("slot %d out of range 0..%d", slot, sdk.MaxSlots-1)
	}
	if v.slots == nil {
		return fmt.Errorf("%s: %w", v.Name, ErrNotAttached)
	}
	flags := uint32(sdk.SlotPresent)
	if s.FailOpen {
		flags |= sdk.SlotFailOpen
	}
	for _, dir := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
		val := slotValue{Flags: flags, PuntIfindex: uint32(s.Punt[dir])}
		// A slow path already heartbeating for this punt device keeps
		// its lease: no frame meets a dead slot while it is alive.
		var old slotValue
		if err := v.slots.Lookup(sdk.ChainIndex(dir, slot), &old); err == nil && old.PuntIfindex == val.PuntIfindex && val.PuntIfindex != 0 {
			val.AliveUntil = old.AliveUntil
		}
		if err := v.slots.Put(sdk.ChainIndex(dir, slot), val); err != nil {
			return fmt.Errorf("write slot %d of %s: %w", slot, v.Name, err)
		}
	}
	for _, dir := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
		if err := v.chain.Put(sdk.ChainIndex(dir, slot), prog); err != nil {
			return fmt.Errorf("place program in slot %d of %s %s: %w", slot, v.Name, dir, err)
		}
	}
	v.filled[slot] = true
	return nil
}

// Heartbeat marks the slow path of slot in direction dir alive until
// deadline; past it the slot's failure mode applies.
func (v *VNIC) Heartbeat(slot int, dir sdk.Direction, punt int, deadline time.Time) error {
	if v.slots == nil {
		return fmt.Errorf("heartbeat %s slot %d: %w", v.Name, slot, ErrNotAttached)
	}
	var val slotValue
	key := sdk.ChainIndex(dir, slot)
	if err := v.slots.Lookup(key, &val); err != nil {
		return fmt.Errorf("read slot %d of %s: %w", slot, v.Name, err)
	}
	val.PuntIfindex = uint32(punt)
	val.AliveUntil = 0
	if !deadline.IsZero() {
		val.AliveUntil = sdk.KtimeNow() + uint64(max(time.Until(deadline), 0))
	}
	return v.slots.Put(key, val)
}

// ClearSlot empties slot. In the middle of the chain the pass-through
// program takes its place, so later slots keep running; at the tail the
// chain simply gets shorter.
func (v *VNIC) ClearSlot(slot int) error {
	if slot < 0 || slot >= sdk.MaxSlots {
		return fmt.Errorf("slot %d out of range 0..%d", slot, sdk.MaxSlots-1)
	}
	tail := true
	for i := slot + 1; i < sdk.MaxSlots; i++ {
		if v.filled[i] {
			tail = false
		}
	}
	for _, dir := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
		k := sdk.ChainIndex(dir, slot)
		var err error
		if tail {
			err = v.chain.Delete(k)
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				err = nil
			}
		} else {
			var skip *ebpf.Program
			if skip, err = v.skipProgram(); err == nil {
				err = v.chain.Put(k, skip)
			}
		}
		if err != nil {
			return fmt.Errorf("clear slot %d of %s %s: %w", slot, v.Name, dir, err)
		}
		if err := v.slots.Put(k, slotValue{}); err != nil {
			return fmt.Errorf("clear slot %d of %s: %w", slot, v.Name, err)
		}
	}
	v.filled[slot] = !tail
	if tail {
		// Trailing pass-throughs are no longer needed.
		for i := slot - 1; i >= 0 && v.filled[i]; i-- {
			var val slotValue
			if err := v.slots.Lookup(sdk.ChainIndex(sdk.FromVM, i), &val); err != nil || val.Flags&sdk.SlotPresent != 0 {
				break
			}
			for _, dir := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
				_ = v.chain.Delete(sdk.ChainIndex(dir, i))
			}
			v.filled[i] = false
		}
	}
	return nil
}

// Counter is a packets/bytes pair.
type Counter struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Stats holds every counter of a vNIC: [direction][slot][stat]; slot
// sdk.ChainSlot holds the chain-level counters.
type Stats [sdk.NumDirections][sdk.MaxSlots + 1][sdk.NumStats]Counter

// Stats reads the vNIC's counters, summed over CPUs.
func (v *VNIC) Stats() (*Stats, error) {
	var st Stats
	keys := make([]uint32, sdk.NumStatKeys)
	for i := range keys {
		keys[i] = uint32(i)
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, err
	}
	vals := make([]Counter, sdk.NumStatKeys*ncpu)
	var cursor ebpf.MapBatchCursor
	n, err := v.stats.BatchLookup(&cursor, keys, vals, nil)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, fmt.Errorf("read counters of %s: %w", v.Name, err)
	}
	for i := 0; i < n; i++ {
		k := keys[i]
		dir := k / ((sdk.MaxSlots + 1) * sdk.NumStats)
		slot := (k / sdk.NumStats) % (sdk.MaxSlots + 1)
		stat := k % sdk.NumStats
		c := &st[dir][slot][stat]
		for cpu := 0; cpu < ncpu; cpu++ {
			c.Packets += vals[i*ncpu+cpu].Packets
			c.Bytes += vals[i*ncpu+cpu].Bytes
		}
	}
	return &st, nil
}

// IfindexByName resolves a device name in the calling thread's network
// namespace with one ioctl (net.InterfaceByName dumps every link, which is
// slow on a host with hundreds of taps).
func IfindexByName(name string) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, err
	}
	return int(ifr.Uint32()), nil
}
