//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * count: per-vNIC packet and byte counters by direction.
 *
 * Map: count_by_dir, PERCPU_ARRAY[VF_NUM_DIRS] of struct vf_counter, private
 * to the instance (so to the vNIC). Verdict: always VF_CONTINUE.
 */
#include "vnicfilter.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VF_NUM_DIRS);
	__type(key, __u32);
	__type(value, struct vf_counter);
} count_by_dir SEC(".maps");

VF_FILTER(vf_count_filter)
{
	struct vf_counter *c = bpf_map_lookup_elem(&count_by_dir, &dir);

	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
	return VF_CONTINUE;
}

char __license[] SEC("license") = "Dual BSD/GPL";
