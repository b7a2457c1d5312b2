/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * vnicfilter slot ABI, version 1.
 *
 * A filter's fast path is one tc (SCHED_CLS) program, written as
 *
 *     VF_FILTER(my_filter)
 *     {
 *             ...               // skb and ctx are in scope
 *             return VF_CONTINUE;
 *     }
 *
 * filterd loads one copy of the program per filter instance (one per vNIC
 * and chain slot), so every map the filter declares is private to that vNIC:
 * one VM's table can never starve another's.
 *
 * The chain. Each protected vNIC (the host side of a VM's tap) has one
 * dispatcher program on tc ingress ("from-vm": frames the VM sends) and one
 * on tc egress ("to-vm": frames delivered to the VM). The dispatcher records
 * the direction and slot in skb->cb and tail-calls slot 0 of that
 * direction through the vNIC's program array vf_chain. A filter returning
 * VF_CONTINUE tail-calls the next slot; past the last slot the frame passes.
 *
 * Maps provided by filterd (declared here, replaced at load time by the
 * vNIC's own maps; a filter must not declare maps with these names):
 *   vf_chain  PROG_ARRAY  [dir * VF_MAX_SLOTS + slot] -> slot program
 *   vf_slots  ARRAY       [dir * VF_MAX_SLOTS + slot] -> struct vf_slot
 *   vf_stats  PERCPU_ARRAY [VF_STAT_KEY(dir, slot, stat)] -> struct vf_counter
 *
 * Verdicts a filter returns:
 *   VF_CONTINUE  run the next slot (the frame passes after the last one)
 *   VF_DROP      drop the frame
 *   VF_PUNT      hand the frame to this slot's Go slow path; the chain
 *                resumes at the next slot once the slow path passes it. If
 *                the slow path is not running, the slot's failure mode
 *                decides: fail-closed drops, fail-open continues.
 *   VF_REDIRECT  the filter called bpf_redirect*(); return its result
 *   VF_CONSUMED  the filter took the frame (e.g. cloned and rewrote it);
 *                the original is stolen
 *   VF_FAIL      the filter cannot decide (e.g. its connection table is
 *                full): fail-closed drops, fail-open continues; counted as
 *                fail_closed / fail_open
 *
 * A slot may hold no filter, only a pass-through (a detached filter in the
 * middle of the chain leaves one, so the slots after it keep running).
 *
 * Per-packet metadata shared along the chain lives in skb->cb[2..4]
 * (struct vf_meta): zeroed by the dispatcher, readable and writable by every
 * slot, gone when the frame leaves the hook.
 */
#ifndef __VNICFILTER_H
#define __VNICFILTER_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#define VF_ABI_VERSION 1

/* Directions, seen from the VM. from-vm is tc ingress on the tap,
 * to-vm is tc egress on the tap. */
#define VF_DIR_FROM_VM 0
#define VF_DIR_TO_VM 1
#define VF_NUM_DIRS 2

/* Slots per direction. The chain-level counters use slot VF_MAX_SLOTS. */
#define VF_MAX_SLOTS 16
#define VF_CHAIN_LEN (VF_NUM_DIRS * VF_MAX_SLOTS)

/* Filter verdicts. */
#define VF_CONTINUE 0
#define VF_DROP 1
#define VF_PUNT 2
#define VF_REDIRECT 3
#define VF_CONSUMED 4
#define VF_FAIL 5 /* the filter cannot decide: the slot's failure mode does */

/* Counters kept per (direction, slot): the five verdicts above, then what
 * the framework decided on the filter's behalf. */
#define VF_STAT_FAIL_CLOSED 5 /* dropped: slot unavailable, fail-closed */
#define VF_STAT_FAIL_OPEN 6   /* passed on: slot unavailable, fail-open */
#define VF_STAT_ENTER 7       /* chain level only: frames entering */
#define VF_NUM_STATS 8

/* A slot's counters add up to the frames it saw: one update per frame and
 * slot. Chain-level counters live at slot VF_MAX_SLOTS: ENTER (frames seen
 * by the dispatcher, resumed punts not counted again), CONTINUE (frames
 * that passed the whole chain), DROP (frames any slot or the framework
 * dropped). */
#define VF_CHAIN_SLOT VF_MAX_SLOTS
#define VF_STAT_KEY(dir, slot, stat) \
	(((dir) * (VF_MAX_SLOTS + 1) + (slot)) * VF_NUM_STATS + (stat))
#define VF_NUM_STAT_KEYS (VF_NUM_DIRS * (VF_MAX_SLOTS + 1) * VF_NUM_STATS)

/* skb->mark value the slow path's re-injection program sets so that the
 * dispatcher resumes the chain at a given slot instead of slot 0:
 * VF_MARK_RESUME | dir << 8 | slot. The dispatcher clears it. */
#define VF_MARK_MAGIC_MASK 0xffff0000
#define VF_MARK_RESUME 0x7f5a0000

/* vf_slot.flags */
#define VF_SLOT_PRESENT 1   /* a filter occupies the slot */
#define VF_SLOT_FAIL_OPEN 2 /* failure mode: open (default closed) */

struct vf_slot {
	__u32 flags;
	__u32 punt_ifindex; /* slow-path punt device, 0 if none */
	__u64 alive_until;  /* bpf_ktime_get_ns() deadline of the slow
			     * path's last heartbeat */
};

struct vf_counter {
	__u64 packets;
	__u64 bytes;
};

/* Per-packet metadata shared along the chain (skb->cb[2..4]). */
struct vf_meta {
	__u32 flags;
	__u32 identity; /* sender identity / group id, if a slot set one */
	__u32 user;     /* free for filters that agree on a meaning */
};

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, VF_CHAIN_LEN);
	__type(key, __u32);
	__type(value, __u32);
} vf_chain SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, VF_CHAIN_LEN);
	__type(key, __u32);
	__type(value, struct vf_slot);
} vf_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VF_NUM_STAT_KEYS);
	__type(key, __u32);
	__type(value, struct vf_counter);
} vf_stats SEC(".maps");

/* Set by filterd at load time: the vNIC's interface index, and the
 * directions this instance handles (bit 1 << VF_DIR_*). In a direction it
 * does not handle, a slot passes frames straight to the next slot. */
volatile const __u32 vf_ifindex = 0;
volatile const __u32 vf_dirs = (1 << VF_DIR_FROM_VM) | (1 << VF_DIR_TO_VM);

/* skb->cb[0] = dir << 8 | slot; cb[1] reserved; cb[2..4] = struct vf_meta. */
static __always_inline __u32 vf_dir(const struct __sk_buff *skb)
{
	return (skb->cb[0] >> 8) & 1;
}

static __always_inline __u32 vf_cur_slot(const struct __sk_buff *skb)
{
	return skb->cb[0] & 0xff;
}

static __always_inline void vf_count(const struct __sk_buff *skb, __u32 dir,
				     __u32 slot, __u32 stat)
{
	__u32 key = VF_STAT_KEY(dir, slot, stat);
	struct vf_counter *c = bpf_map_lookup_elem(&vf_stats, &key);

	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
}

static __always_inline __u32 vf_meta_identity(const struct __sk_buff *skb)
{
	return skb->cb[3];
}

static __always_inline void vf_meta_set_identity(struct __sk_buff *skb,
						 __u32 id)
{
	skb->cb[3] = id;
}

/* vf_run_slot tail-calls slot "slot" of direction "dir". It returns only if
 * no program sits there: then the frame has passed the chain, unless filterd
 * marked the slot present (a filter being replaced, or one that failed to
 * load) and fail-closed. */
static __always_inline int vf_run_slot(struct __sk_buff *skb, __u32 dir,
				       __u32 slot)
{
	__u32 idx = dir * VF_MAX_SLOTS + slot;
	struct vf_slot *s;

	if (slot < VF_MAX_SLOTS) {
		skb->cb[0] = (dir << 8) | slot;
		bpf_tail_call(skb, &vf_chain, idx);
		s = bpf_map_lookup_elem(&vf_slots, &idx);
		if (s && (s->flags & VF_SLOT_PRESENT) &&
		    !(s->flags & VF_SLOT_FAIL_OPEN)) {
			vf_count(skb, dir, slot, VF_STAT_FAIL_CLOSED);
			vf_count(skb, dir, VF_CHAIN_SLOT, VF_DROP);
			return TC_ACT_SHOT;
		}
	}
	vf_count(skb, dir, VF_CHAIN_SLOT, VF_CONTINUE);
	return TC_ACT_OK;
}

/* vf_punt sends the frame to the slot's slow path, or applies the slot's
 * failure mode when the slow path is not alive. */
static __always_inline int vf_punt(struct __sk_buff *skb, __u32 dir,
				   __u32 slot)
{
	__u32 idx = dir * VF_MAX_SLOTS + slot;
	struct vf_slot *s = bpf_map_lookup_elem(&vf_slots, &idx);

	if (s && s->punt_ifindex && bpf_ktime_get_ns() < s->alive_until) {
		vf_count(skb, dir, slot, VF_PUNT);
		return bpf_redirect(s->punt_ifindex, 0);
	}
	if (s && (s->flags & VF_SLOT_FAIL_OPEN)) {
		vf_count(skb, dir, slot, VF_STAT_FAIL_OPEN);
		return vf_run_slot(skb, dir, slot + 1);
	}
	vf_count(skb, dir, slot, VF_STAT_FAIL_CLOSED);
	vf_count(skb, dir, VF_CHAIN_SLOT, VF_DROP);
	return TC_ACT_SHOT;
}

/* vf_fail applies the slot's failure mode to a frame its filter could not
 * decide. */
static __always_inline int vf_fail(struct __sk_buff *skb, __u32 dir,
				   __u32 slot)
{
	__u32 idx = dir * VF_MAX_SLOTS + slot;
	struct vf_slot *s = bpf_map_lookup_elem(&vf_slots, &idx);

	if (s && (s->flags & VF_SLOT_FAIL_OPEN)) {
		vf_count(skb, dir, slot, VF_STAT_FAIL_OPEN);
		return vf_run_slot(skb, dir, slot + 1);
	}
	vf_count(skb, dir, slot, VF_STAT_FAIL_CLOSED);
	vf_count(skb, dir, VF_CHAIN_SLOT, VF_DROP);
	return TC_ACT_SHOT;
}

/* vf_verdict turns a filter verdict into the tc action, counting it. */
static __always_inline int vf_verdict(struct __sk_buff *skb, int verdict,
				      int redirect_ret)
{
	__u32 dir = vf_dir(skb), slot = vf_cur_slot(skb);

	if (slot >= VF_MAX_SLOTS)
		return TC_ACT_SHOT;
	switch (verdict) {
	case VF_CONTINUE:
		vf_count(skb, dir, slot, VF_CONTINUE);
		return vf_run_slot(skb, dir, slot + 1);
	case VF_PUNT:
		return vf_punt(skb, dir, slot);
	case VF_REDIRECT:
		vf_count(skb, dir, slot, VF_REDIRECT);
		return redirect_ret;
	case VF_CONSUMED:
		vf_count(skb, dir, slot, VF_CONSUMED);
		return TC_ACT_STOLEN;
	case VF_FAIL:
		return vf_fail(skb, dir, slot);
	default:
		vf_count(skb, dir, slot, VF_DROP);
		vf_count(skb, dir, VF_CHAIN_SLOT, VF_DROP);
		return TC_ACT_SHOT;
	}
}

/* VF_FILTER(name) defines the entry program "name" of a filter. The body
 * sees "skb" (struct __sk_buff *) and "dir" (VF_DIR_*), and returns a
 * VF_* verdict. A body that redirects stores bpf_redirect*()'s result in
 * *redirect_ret and returns VF_REDIRECT. */
#define VF_FILTER(name)                                                     \
	static __always_inline int name##_body(struct __sk_buff *skb,        \
					       __u32 dir, int *redirect_ret); \
	SEC("tc") int name(struct __sk_buff *skb)                            \
	{                                                                    \
		int redirect_ret = TC_ACT_SHOT;                              \
		int v;                                                       \
		if (!(vf_dirs & (1u << vf_dir(skb))))                        \
			return vf_run_slot(skb, vf_dir(skb),                 \
					   vf_cur_slot(skb) + 1);            \
		v = name##_body(skb, vf_dir(skb), &redirect_ret);            \
		return vf_verdict(skb, v, redirect_ret);                     \
	}                                                                    \
	static __always_inline int name##_body(struct __sk_buff *skb,        \
					       __u32 dir, int *redirect_ret)

#endif /* __VNICFILTER_H */
