package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// The cls_bpf filter vnicfilter owns on a clsact hook: first priority and
// a fixed handle, so a restarted filterd finds it and other tc users' filters
// run after ours.
const (
	clsactPrio   = 1
	clsactHandle = 0x7f5a
)

func clsactParent(dir sdk.Direction) uint32 {
	if dir == sdk.ToVM {
		return netlink.HANDLE_MIN_EGRESS
	}
	return netlink.HANDLE_MIN_INGRESS
}

func ensureClsact(ifindex int) error {
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc: %w", err)
	}
	return nil
}

func clsactFilter(ifindex int, dir sdk.Direction, prog *ebpf.Program) *netlink.BpfFilter {
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    clsactParent(dir),
			Handle:    clsactHandle,
			Priority:  clsactPrio,
			Protocol:  unix.ETH_P_ALL,
		},
		Name:         "vnicfilter_" + dir.String(),
		DirectAction: true,
		Fd:           -1,
	}
	if prog != nil {
		f.Fd = prog.FD()
	}
	return f
}

// checkDevice makes sure ifindex is still the device name in the calling
// thread's network namespace: netlink requests go to whatever namespace
// the thread is in, and the same ifindex there may be another device.
func checkDevice(ifindex int, name string) error {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil || l.Attrs().Name != name {
		return fmt.Errorf("device %s (ifindex %d) not in this network namespace: %w", name, ifindex, ErrNoSuchDevice)
	}
	return nil
}

// attachClsact puts prog on the clsact hook of dir. The kernel keeps the
// filter (and so the program) after filterd exits.
func attachClsact(ifindex int, name string, dir sdk.Direction, prog *ebpf.Program) error {
	if err := checkDevice(ifindex, name); err != nil {
		return err
	}
	if err := ensureClsact(ifindex); err != nil {
		return err
	}
	return netlink.FilterReplace(clsactFilter(ifindex, dir, prog))
}

func detachClsact(ifindex int, name string, dir sdk.Direction) error {
	if err := checkDevice(ifindex, name); err != nil {
		return nil // gone: its hooks went with it
	}
	err := netlink.FilterDel(clsactFilter(ifindex, dir, nil))
	if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.EINVAL) {
		return err
	}
	return nil
}

// checkClsact verifies both of our cls_bpf filters are still on the device.
func checkClsact(ifindex int) error {
	link, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return fmt.Errorf("ifindex %d: %w", ifindex, ErrNoSuchDevice)
	}
	for _, dir := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
		fs, err := netlink.FilterList(link, clsactParent(dir))
		if err != nil {
			return fmt.Errorf("list %s filters: %w", dir, err)
		}
		found := false
		for _, f := range fs {
			if bf, ok := f.(*netlink.BpfFilter); ok && bf.Handle == clsactHandle && bf.Priority == clsactPrio {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("clsact %s filter missing: %w", dir, ErrNotAttached)
		}
	}
	return nil
}

// removeClsactIfEmpty deletes the clsact qdisc once no filter is left on
// either of its hooks: ours are gone and nobody else uses it.
func removeClsactIfEmpty(ifindex int, name string) {
	if checkDevice(ifindex, name) != nil {
		return
	}
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return
	}
	for _, dir := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
		fs, err := netlink.FilterList(l, clsactParent(dir))
		if err != nil || len(fs) > 0 {
			return
		}
	}
	_ = netlink.QdiscDel(&netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	})
}

// AttachIngress puts prog at the head of tc ingress of device name (ifindex
// in the calling thread's namespace): a tcx link where the kernel has tcx,
// returned (closing it detaches), else a cls_bpf filter on clsact, which
// stays until the device goes (nil link). The slow path uses it for its
// re-injection program on the punt taps it owns.
func AttachIngress(ifindex int, name string, prog *ebpf.Program) (link.Link, error) {
	if HaveTCX() == nil {
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: ebpf.AttachTCXIngress, Anchor: link.Head()})
		if err != nil {
			return nil, fmt.Errorf("attach to %s ingress (tcx): %w", name, err)
		}
		return l, nil
	}
	if err := attachClsact(ifindex, name, sdk.FromVM, prog); err != nil {
		return nil, fmt.Errorf("attach to %s ingress (clsact): %w", name, err)
	}
	return nil, nil
}
