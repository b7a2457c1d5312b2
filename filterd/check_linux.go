package filterd

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/internal/nsutil"
)

// Check probes the kernel for everything vnicfilter uses. Probes that need
// a network device run in a throwaway network namespace, so the host's
// devices are never touched.
func Check(mode datapath.Mode) api.CheckReport {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	r := api.CheckReport{Kernel: unix.ByteSliceToString(uts.Release[:]), Mode: mode.String()}
	add := func(name string, required bool, err error, okDetail string) {
		f := api.Feature{Name: name, Required: required, OK: err == nil, Detail: okDetail}
		if err != nil {
			f.Detail = err.Error()
		}
		r.Features = append(r.Features, f)
	}
	add("bpf: tc (sched_cls) programs", true, features.HaveProgramType(ebpf.SchedCLS), "")
	add("bpf: program arrays (tail calls)", true, features.HaveMapType(ebpf.ProgramArray), "")
	add("bpf: per-CPU arrays", true, features.HaveMapType(ebpf.PerCPUArray), "")
	add("bpf: bpf_redirect", true, features.HaveProgramHelper(ebpf.SchedCLS, asm.FnRedirect), "")
	add("bpf: bpf_ktime_get_ns", true, features.HaveProgramHelper(ebpf.SchedCLS, asm.FnKtimeGetNs), "")
	add("bpffs mounted at /sys/fs/bpf", true, haveBPFFS("/sys/fs/bpf"), "")
	tcx := datapath.HaveTCX()
	add("tcx links (Linux 6.6+)", false, tcx, "preferred attach mode")
	clsact := inThrowawayNetns(probeClsact)
	add("clsact qdisc + cls_bpf", tcx != nil, clsact, "fallback attach mode")
	add("TUN/TAP with IFF_VNET_HDR", false, inThrowawayNetns(probeTap), "slow-path punt device")
	add("BTF (/sys/kernel/btf/vmlinux)", false, fileExists("/sys/kernel/btf/vmlinux"), "")
	add("BPF JIT enabled", false, jitEnabled(), "without it the fast path is several times slower")
	return r
}

// Missing returns the names of required features the report lacks.
func Missing(r api.CheckReport) []string {
	var out []string
	for _, f := range r.Features {
		if f.Required && !f.OK {
			out = append(out, f.Name)
		}
	}
	return out
}

func haveBPFFS(path string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return err
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return errors.New("not a bpf filesystem: mount -t bpf bpf " + path)
	}
	return nil
}

func fileExists(p string) error {
	_, err := os.Stat(p)
	return err
}

func jitEnabled() error {
	b, err := os.ReadFile("/proc/sys/net/core/bpf_jit_enable")
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(b)) == "0" {
		return errors.New("net.core.bpf_jit_enable = 0")
	}
	return nil
}

// inThrowawayNetns runs fn on a locked thread inside a new network
// namespace that disappears afterwards with everything fn made in it.
func inThrowawayNetns(fn func() error) error {
	ns, err := nsutil.CreateAnonymous()
	if err != nil {
		return fmt.Errorf("create probe namespace: %w", err)
	}
	defer ns.Close()
	return nsutil.Do(ns, "probe", fn)
}

func probeClsact() error {
	la := netlink.NewLinkAttrs()
	la.Name = "vfprobe0"
	veth := &netlink.Veth{LinkAttrs: la, PeerName: "vfprobe1"}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("create probe veth: %w", err)
	}
	l, err := netlink.LinkByName("vfprobe0")
	if err != nil {
		return err
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}})
	if err != nil {
		return err
	}
	defer prog.Close()
	q := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
	if err := netlink.QdiscAdd(q); err != nil {
		return fmt.Errorf("clsact qdisc: %w", err)
	}
	f := &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: l.Attrs().Index, Parent: netlink.HANDLE_MIN_INGRESS, Handle: 1, Priority: 1, Protocol: unix.ETH_P_ALL}, Fd: prog.FD(), Name: "probe", DirectAction: true}
	if err := netlink.FilterAdd(f); err != nil {
		return fmt.Errorf("cls_bpf filter: %w", err)
	}
	return nil
}

func probeTap() error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/net/tun: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("vfprobetap")
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("TUNSETIFF: %w", err)
	}
	return nil
}
