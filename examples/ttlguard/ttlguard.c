//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * ttlguard: an out-of-tree fast-path filter. Drops IPv4 frames the VM sends
 * whose TTL is below the parameter min_ttl, and counts them in ttl_drops.
 */
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>
#include "vnicfilter.h"

/* Parameter min_ttl (manifest "params"), set by filterd at load time. */
volatile const __u32 param_min_ttl = 2;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vf_counter);
} ttl_drops SEC(".maps");

VF_FILTER(vf_ttlguard)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	__u32 zero = 0;
	struct vf_counter *c;

	if (dir != VF_DIR_FROM_VM)
		return VF_CONTINUE;
	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return VF_CONTINUE;
	if (ip->ttl >= param_min_ttl)
		return VF_CONTINUE;
	c = bpf_map_lookup_elem(&ttl_drops, &zero);
	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
	return VF_DROP;
}

char __license[] SEC("license") = "Dual BSD/GPL";
