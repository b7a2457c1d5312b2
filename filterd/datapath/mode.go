package datapath

import "fmt"

// Mode is how dispatchers are attached to a vNIC's tc hooks.
type Mode uint8

const (
	// ModeAuto uses tcx where the kernel has it (6.6+), clsact otherwise.
	ModeAuto Mode = iota
	// ModeTCX attaches with tcx bpf_links (pinned).
	ModeTCX
	// ModeClsact attaches cls_bpf filters, direct-action, on a clsact qdisc.
	ModeClsact
)

func (m Mode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeTCX:
		return "tcx"
	case ModeClsact:
		return "clsact"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// ParseMode parses "auto", "tcx" or "clsact".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "auto", "":
		return ModeAuto, nil
	case "tcx":
		return ModeTCX, nil
	case "clsact":
		return ModeClsact, nil
	}
	return 0, fmt.Errorf("attach mode %q: want auto, tcx or clsact", s)
}
