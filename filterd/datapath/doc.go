// Package datapath owns the kernel side of vnicfilter's per-vNIC chains:
// the pinned maps (vf_chain, vf_slots, vf_stats, vf_info), the dispatcher
// programs on the tap's tc hooks (tcx links, or cls_bpf on clsact where
// tcx is missing), and the bpffs layout
//
//	<root>/<vnic>/vf_chain, vf_slots, vf_stats, vf_info   the vNIC's maps
//	<root>/<vnic>/link_from_vm, link_to_vm                tcx links
//	<root>/<vnic>/slot<N>/<map>                           a filter instance's maps
//	<root>/guard-<tap>/vf_guard, link_from_vm, link_to_vm  a drop-all guard (PinGuard)
//
// Everything is pinned, so the datapath outlives filterd: a restarted
// daemon adopts what it finds (Adopt) instead of rebuilding it, and no frame
// of an established flow is lost.
package datapath
