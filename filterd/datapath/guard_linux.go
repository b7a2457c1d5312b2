package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// A drop-all guard holds a device closed while it has no chain: the libvirt
// hook pins one on a tap when filterd is down, and Create replaces it with
// the real chain without a frame passing in between.
//
// Layout: <root>/guard-<tap>/ with vf_guard (the device's ifindex and the
// attach mode, pinned first) and, with tcx, link_from_vm and link_to_vm. A
// separate directory, so Create's clearing of <root>/<tap> never touches it;
// Pinned skips it.
//
// Ordering. tcx: the guard is attached at the tail, a chain's dispatchers at
// the head; a tcx chain stops at the first program that returns anything but
// TCX_NEXT (-1), and the dispatcher only returns terminal verdicts (OK, SHOT,
// STOLEN, REDIRECT), so with a dispatcher in place the guard is never
// reached. clsact: the guard is the cls_bpf filter at priority 2 behind the
// chain's priority 1, and direct-action classification stops at the first
// verdict other than TC_ACT_UNSPEC. Mixed (tcx guard, clsact chain): tcx runs
// before the clsact hook, so the device stays closed until Create removes the
// guard — closed, never open.
const (
	guardPrefix = "guard-"
	guardInfo   = "vf_guard"

	clsactGuardPrio   = 2
	clsactGuardHandle = 0x7f5b
)

type guardValue struct {
	Ifindex uint32
	Mode    uint32
}

// GuardDir is the bpffs directory of tap's guard under root.
func GuardDir(root, tap string) string {
	if root == "" {
		root = DefaultRoot
	}
	return filepath.Join(root, guardPrefix+tap)
}

func guardLinkPin(dir string, d sdk.Direction) string {
	return filepath.Join(dir, "link_"+strings.ReplaceAll(d.String(), "-", "_"))
}

func guardProgram() (*ebpf.Program, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "vf_guard",
		Type:         ebpf.SchedCLS,
		License:      "Dual BSD/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2 /* TC_ACT_SHOT */), asm.Return()},
	})
	if err != nil {
		return nil, fmt.Errorf("load drop-all guard: %w", err)
	}
	return prog, nil
}

func clsactGuardFilter(ifindex int, d sdk.Direction, prog *ebpf.Program) *netlink.BpfFilter {
	f := clsactFilter(ifindex, d, prog)
	f.Handle, f.Priority = clsactGuardHandle, clsactGuardPrio
	f.Name = "vnicfilter_guard_" + d.String()
	return f
}

// readGuard returns what a guard directory records.
func readGuard(dir string) (guardValue, error) {
	var g guardValue
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, guardInfo), nil)
	if err != nil {
		return g, err
	}
	defer m.Close()
	err = m.Lookup(uint32(0), &g)
	return g, err
}

// HasGuard reports whether tap has a guard pinned under root (for the
// device now named tap or an earlier one).
func HasGuard(root, tap string) bool {
	_, err := readGuard(GuardDir(root, tap))
	return err == nil
}

// PinGuard attaches a drop-all program (r0 = TC_ACT_SHOT; exit) to both tc
// hooks of tap — tcx links pinned under GuardDir(root, tap), or cls_bpf
// filters when the kernel has no tcx — so nothing crosses the device until
// Create puts a chain in front and removes the guard. An existing guard of
// the same device is kept. On error nothing is left.
func PinGuard(root, tap string) error { return pinGuard(root, tap, ModeAuto) }

func pinGuard(root, tap string, mode Mode) (err error) {
	if err := validName(tap); err != nil {
		return err
	}
	if root == "" {
		root = DefaultRoot
	}
	ifindex, err := IfindexByName(tap)
	if err != nil {
		return fmt.Errorf("device %s: %w", tap, ErrNoSuchDevice)
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return fmt.Errorf("create bpffs directory %s: %w", root, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", root, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return fmt.Errorf("%s is not on a bpf filesystem: %w", root, sdk.ErrNotSupported)
	}
	dir := GuardDir(root, tap)
	if g, err := readGuard(dir); err == nil && int(g.Ifindex) == ifindex && guardAttached(dir, tap, g) {
		return nil
	}
	if err := removeGuard(dir, tap); err != nil {
		return err
	}
	if mode == ModeAuto {
		mode = ModeClsact
		if HaveTCX() == nil {
			mode = ModeTCX
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			_ = removeGuard(dir, tap)
		}
	}()
	im, err := ebpf.NewMap(&ebpf.MapSpec{Name: guardInfo, Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		return fmt.Errorf("create %s: %w", guardInfo, err)
	}
	defer im.Close()
	if err := im.Put(uint32(0), guardValue{Ifindex: uint32(ifindex), Mode: uint32(mode)}); err != nil {
		return fmt.Errorf("write %s: %w", guardInfo, err)
	}
	if err := im.Pin(filepath.Join(dir, guardInfo)); err != nil {
		return fmt.Errorf("pin %s: %w", guardInfo, err)
	}
	prog, err := guardProgram()
	if err != nil {
		return err
	}
	defer prog.Close()
	for _, d := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
		if mode == ModeClsact {
			if err := checkDevice(ifindex, tap); err != nil {
				return err
			}
			if err := ensureClsact(ifindex); err != nil {
				return fmt.Errorf("guard %s %s: %w", tap, d, err)
			}
			if err := netlink.FilterReplace(clsactGuardFilter(ifindex, d, prog)); err != nil {
				return fmt.Errorf("attach guard to %s %s (clsact): %w", tap, d, err)
			}
			continue
		}
		at := ebpf.AttachTCXIngress
		if d == sdk.ToVM {
			at = ebpf.AttachTCXEgress
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: at, Anchor: link.Tail()})
		if err != nil {
			return fmt.Errorf("attach guard to %s %s (tcx): %w", tap, d, err)
		}
		err = l.Pin(guardLinkPin(dir, d))
		l.Close() // the pin holds it
		if err != nil {
			return fmt.Errorf("pin guard link of %s %s: %w", tap, d, err)
		}
	}
	return nil
}

// guardAttached reports whether the guard recorded in dir is still on both
// hooks of the device.
func guardAttached(dir, tap string, g guardValue) bool {
	if Mode(g.Mode) == ModeClsact {
		l, err := netlink.LinkByIndex(int(g.Ifindex))
		if err != nil || l.Attrs().Name != tap {
			return false
		}
		for _, d := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
			fs, err := netlink.FilterList(l, clsactParent(d))
			if err != nil {
				return false
			}
			found := false
			for _, f := range fs {
				if bf, ok := f.(*netlink.BpfFilter); ok && bf.Handle == clsactGuardHandle && bf.Priority == clsactGuardPrio {
					found = true
				}
			}
			if !found {
				return false
			}
		}
		return true
	}
	for _, d := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
		l, err := link.LoadPinnedLink(guardLinkPin(dir, d), nil)
		if err != nil {
			return false
		}
		info, err := l.Info()
		l.Close()
		if err != nil || info.TCX() == nil || info.TCX().Ifindex != g.Ifindex {
			return false
		}
	}
	return true
}

// removeGuard detaches and unpins the guard in dir, whatever its state.
func removeGuard(dir, tap string) error {
	g, gerr := readGuard(dir)
	for _, d := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
		if l, err := link.LoadPinnedLink(guardLinkPin(dir, d), nil); err == nil {
			_ = l.Detach() // defunct once the device is gone: nothing to do
			_ = l.Unpin()
			_ = l.Close()
		}
	}
	if gerr == nil && Mode(g.Mode) == ModeClsact && checkDevice(int(g.Ifindex), tap) == nil {
		for _, d := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
			err := netlink.FilterDel(clsactGuardFilter(int(g.Ifindex), d, nil))
			if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("detach guard of %s %s: %w", tap, d, err)
			}
		}
		removeClsactIfEmpty(int(g.Ifindex), tap)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("unpin guard of %s: %w", tap, err)
	}
	return nil
}

// RemoveGuard detaches and unpins tap's guard under root; removing what is
// not there is not an error.
func RemoveGuard(root, tap string) error {
	if err := validName(tap); err != nil {
		return err
	}
	return removeGuard(GuardDir(root, tap), tap)
}

// removeGuardFor removes tap's guard if it guards the device ifindex, or if
// it is stale (its device is gone or the name now belongs to another one). A
// guard of a live device other than ifindex stays: it protects a new tap
// that reused the name. ifindex 0 removes stale guards only.
func removeGuardFor(root, tap string, ifindex int) error {
	dir := GuardDir(root, tap)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if g, err := readGuard(dir); err == nil && int(g.Ifindex) != ifindex {
		if cur, err := IfindexByName(tap); err == nil && cur == int(g.Ifindex) {
			return nil
		}
	}
	return removeGuard(dir, tap)
}

// RemoveStaleGuards removes the guards under root whose device is gone (or
// whose name now belongs to another device) and returns their taps. filterd
// calls it when it reconciles; the hook at stopped and release.
func RemoveStaleGuards(root string) ([]string, error) {
	if root == "" {
		root = DefaultRoot
	}
	ents, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		tap, ok := strings.CutPrefix(e.Name(), guardPrefix)
		if !e.IsDir() || !ok || validName(tap) != nil {
			continue
		}
		g, err := readGuard(filepath.Join(root, e.Name()))
		if err != nil {
			continue // being pinned right now, or debris Create clears
		}
		if cur, err := IfindexByName(tap); err == nil && cur == int(g.Ifindex) {
			continue
		}
		if err := removeGuard(filepath.Join(root, e.Name()), tap); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, tap)
	}
	return removed, errors.Join(errs...)
}
