package testkit

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// Requirement is something a privileged test needs from the machine it runs
// on. [Need] probes it and skips (or, under CI, fails) the test when it is
// missing.
type Requirement int

const (
	// Root: the test runs with effective uid 0, as creating network
	// namespaces, veths and eBPF programs requires.
	Root Requirement = iota
	// BPF: bpffs is mounted at /sys/fs/bpf (Need mounts it when running as
	// root and it is missing) and the bpf() syscall loads a program.
	BPF
	// TCX: the kernel attaches eBPF programs through tcx links (Linux 6.6+),
	// proven by a real attach to a veth in a throwaway namespace.
	TCX
	// Iperf3: an iperf3 binary is on PATH.
	Iperf3
	// Tshark: a tshark binary is on PATH.
	Tshark
	// Nft: the nft binary (package nftables) is on PATH.
	Nft
)

var requirementNames = [...]string{
	Root:   "root",
	BPF:    "bpf",
	TCX:    "tcx",
	Iperf3: "iperf3",
	Tshark: "tshark",
	Nft:    "nft",
}

// String names the requirement as it appears in skip messages.
func (r Requirement) String() string {
	if r >= 0 && int(r) < len(requirementNames) {
		return requirementNames[r]
	}
	return fmt.Sprintf("Requirement(%d)", int(r))
}

// Need skips t, naming every unmet requirement and why, unless the
// environment variable CI is "true": there a missing requirement means the
// CI machine is misconfigured and the test fails instead of passing silently.
//
// Requirements are probed in order; probes that mutate the machine (mounting
// bpffs) only run as root.
func Need(t testing.TB, reqs ...Requirement) {
	t.Helper()
	var unmet []string
	for _, r := range reqs {
		if reason := probe(r); reason != "" {
			unmet = append(unmet, fmt.Sprintf("%s: %s", r, reason))
		}
	}
	skip, fail := decide(os.Getenv("CI") == "true", len(unmet) == 0)
	msg := "unmet test requirements: " + strings.Join(unmet, "; ")
	switch {
	case fail:
		t.Fatalf("%s (CI=true: a CI machine must provide them)", msg)
	case skip:
		t.Skip(msg)
	}
}

// decide turns "are the requirements met" into the test's fate: run when
// met, skip when not, fail when not and running under CI.
func decide(ci, met bool) (skip, fail bool) {
	if met {
		return false, false
	}
	if ci {
		return false, true
	}
	return true, false
}
