//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The per-vNIC dispatcher: entry points attached to the tap's tc hooks.
 *
 * vf_from_vm (tc ingress) and vf_to_vm (tc egress) zero the chain metadata
 * in skb->cb and tail-call slot 0 of their direction through vf_chain. A
 * frame re-injected by a slow path carries VF_MARK_RESUME in skb->mark and
 * resumes at the slot after the one that punted it.
 *
 * vf_skip fills a slot left empty in the middle of a chain: it passes every
 * frame to the next slot.
 *
 * Maps: vf_chain, vf_slots, vf_stats (sdk/bpf/vnicfilter.h), one set per
 * vNIC. Verdicts: whatever the chain decides; an empty chain passes.
 */
#include "vnicfilter.h"

static __always_inline int vf_dispatch(struct __sk_buff *skb, __u32 dir)
{
	__u32 mark = skb->mark;
	__u32 slot = 0;

	skb->cb[1] = 0;
	skb->cb[2] = 0;
	skb->cb[3] = 0;
	skb->cb[4] = 0;
	if ((mark & VF_MARK_MAGIC_MASK) == VF_MARK_RESUME &&
	    ((mark >> 8) & 0xff) == dir) {
		skb->mark = 0;
		slot = mark & 0xff;
		if (slot > VF_MAX_SLOTS)
			return TC_ACT_SHOT;
	} else {
		vf_count(skb, dir, VF_CHAIN_SLOT, VF_STAT_ENTER);
	}
	return vf_run_slot(skb, dir, slot);
}

SEC("tc")
int vf_from_vm(struct __sk_buff *skb)
{
	return vf_dispatch(skb, VF_DIR_FROM_VM);
}

SEC("tc")
int vf_to_vm(struct __sk_buff *skb)
{
	return vf_dispatch(skb, VF_DIR_TO_VM);
}

SEC("tc")
int vf_skip(struct __sk_buff *skb)
{
	return vf_run_slot(skb, vf_dir(skb), vf_cur_slot(skb) + 1);
}

char __license[] SEC("license") = "Dual BSD/GPL";
