// Package bench is vfbench: it measures the cost of vnicfilter's datapath
// between two network-namespace "VMs" as ratios to an unfiltered baseline
// measured in the same run, and it times chain attachment at scale.
//
// Absolute throughput on the shared build machines swings by 3x from run to
// run (DESIGN.md), so a figure is only meaningful next to a baseline taken
// minutes before and after it on the same kernel. Run therefore interleaves
// the baseline with every filtered case — baseline, case 1, baseline,
// case 2, …, baseline — and compares each case with the mean of the two
// baselines around it, repetition by repetition, before taking medians.
//
// The topology, built with netlink in fresh namespaces:
//
//	 VM A (client)                host netns                 VM B (server)
//	eth0 10.77.0.1 ── vnetA-xxxxxx ── bridge ── vnetB-xxxxxx ── eth0 10.77.0.2
//	     fd77::1       ^ filtered vNIC                              fd77::2
//
// filterd runs as a subprocess inside the host namespace with a private
// socket, bpffs root and state directory, and the cases are set through its
// API exactly as the libvirt hook would set them. Everything — namespaces,
// devices, pinned objects, processes — is removed when Run returns, also on
// error and when ctx is cancelled by SIGINT/SIGTERM.
package bench
