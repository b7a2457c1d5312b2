package datapath

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// HaveTCX reports whether the kernel has tcx (Linux 6.6+): nil if it has,
// an error wrapping sdk.ErrNotSupported if not. The probe attaches a
// trivial program to ifindex 0, which a tcx kernel refuses with ENODEV and
// an older one with EINVAL; nothing is attached anywhere. The kernel is
// probed once per process.
func HaveTCX() error { return haveTCX() }

var haveTCX = sync.OnceValue(probeTCX)

func probeTCX() error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SchedCLS,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
	})
	if err != nil {
		return fmt.Errorf("load probe program: %w", err)
	}
	defer prog.Close()
	l, err := link.AttachTCX(link.TCXOptions{Interface: 1 << 30, Program: prog, Attach: ebpf.AttachTCXIngress})
	if err == nil {
		l.Close()
		return nil
	}
	if errors.Is(err, unix.ENODEV) {
		return nil
	}
	return fmt.Errorf("tcx (Linux 6.6+): %w", sdk.ErrNotSupported)
}
