//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * encap receive program: one per host, on tc ingress of the collect-metadata
 * VXLAN device (docs/encap.md). A decapsulated frame carries its tunnel
 * metadata: the VNI picks the segment, the VXLAN-GBP option the sender's
 * group. A frame from a host that is not a member of the segment (by the
 * tables of this host's vNICs of that segment) is dropped. The frame goes
 * only to local vNICs of that segment:
 *   unicast   -> the vNIC registered for (VNI, destination MAC), else drop
 *   broadcast, multicast -> a copy to every local vNIC of the segment
 * Delivered frames carry skb->mark = ENCAP_MARK | group, which the vNIC's
 * encap instance (to-vm) requires and turns into vf_meta.identity.
 *
 * Maps (per host, pinned beside the attach link):
 *   encap_ports     HASH  (VNI, MAC) -> local vNIC, written by the instances
 *   encap_flood     HASH  VNI -> local vNICs of the segment
 *   encap_rx_members   HASH  (VNI, host) the host accepts frames from
 *   encap_member_sets  HASH  (VNI, instance) -> that instance's member list,
 *                      from which Go rebuilds encap_rx_members (unused here)
 *   encap_rx_stats  PERCPU_ARRAY[ENCAP_RX_NUM_STATS] of {packets, bytes}
 */
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "encap.h"

#define ENCAP_RX_UNICAST 0   /* delivered to the vNIC of the destination */
#define ENCAP_RX_FLOOD 1     /* broadcast/multicast frames received */
#define ENCAP_RX_FLOOD_COPY 2 /* their copies to local vNICs */
#define ENCAP_RX_NO_PORT 3   /* no local vNIC of the segment: dropped */
#define ENCAP_RX_NO_TUNNEL 4 /* no tunnel metadata: dropped */
#define ENCAP_RX_ERROR 5     /* a helper failed */
#define ENCAP_RX_NOT_MEMBER 6 /* sender not a member of the segment: dropped */
#define ENCAP_RX_NUM_STATS 7

struct rx_counter {
	__u64 packets;
	__u64 bytes;
};

struct ENCAP_HOST_PORTS_DEF encap_ports SEC(".maps");
struct ENCAP_HOST_FLOOD_DEF encap_flood SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ENCAP_MAX_RX_MEMBERS);
	__type(key, struct encap_rx_member_key);
	__type(value, __u32);
} encap_rx_members SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ENCAP_MAX_PORTS);
	__type(key, struct encap_member_set_key);
	__type(value, struct encap_member_set);
} encap_member_sets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ENCAP_RX_NUM_STATS);
	__type(key, __u32);
	__type(value, struct rx_counter);
} encap_rx_stats SEC(".maps");

static __always_inline void rx_stat(struct __sk_buff *skb, __u32 s)
{
	struct rx_counter *c = bpf_map_lookup_elem(&encap_rx_stats, &s);

	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
}

SEC("tc")
int vf_encap_rx(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = {};
	struct encap_rx_member_key mk = {};
	struct encap_vxlan_md md = {};
	struct encap_port_key pk = {};
	struct encap_flood_list *fl;
	struct encap_port *p;
	struct ethhdr eth;
	__u32 vni, group = 0;

	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) == 0) {
		mk.host.addr[0] = key.remote_ipv4;
	} else if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), BPF_F_TUNINFO_IPV6) == 0) {
		mk.host.v6 = 1;
		for (int i = 0; i < 4; i++)
			mk.host.addr[i] = key.remote_ipv6[i];
	} else {
		rx_stat(skb, ENCAP_RX_NO_TUNNEL);
		return TC_ACT_SHOT;
	}
	vni = key.tunnel_id & ENCAP_VNI_MASK;
	mk.vni = vni;
	if (!bpf_map_lookup_elem(&encap_rx_members, &mk)) {
		rx_stat(skb, ENCAP_RX_NOT_MEMBER);
		return TC_ACT_SHOT;
	}
	if (bpf_skb_get_tunnel_opt(skb, &md, sizeof(md)) == sizeof(md))
		group = md.gbp & ENCAP_GROUP_MASK;
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth))) {
		rx_stat(skb, ENCAP_RX_ERROR);
		return TC_ACT_SHOT;
	}
	skb->mark = ENCAP_MARK | group;

	if (!(eth.h_dest[0] & 1)) {
		pk.vni = vni;
		__builtin_memcpy(pk.mac, eth.h_dest, 6);
		p = bpf_map_lookup_elem(&encap_ports, &pk);
		if (!p) {
			rx_stat(skb, ENCAP_RX_NO_PORT);
			return TC_ACT_SHOT;
		}
		rx_stat(skb, ENCAP_RX_UNICAST);
		return bpf_redirect(p->ifindex, 0);
	}

	fl = bpf_map_lookup_elem(&encap_flood, &vni);
	if (!fl) {
		rx_stat(skb, ENCAP_RX_NO_PORT);
		return TC_ACT_SHOT;
	}
	rx_stat(skb, ENCAP_RX_FLOOD);
	for (int i = 0; i < ENCAP_MAX_LOCAL; i++) {
		if (i >= fl->n)
			break;
		if (bpf_clone_redirect(skb, fl->ifindex[i], 0) == 0)
			rx_stat(skb, ENCAP_RX_FLOOD_COPY);
		else
			rx_stat(skb, ENCAP_RX_ERROR);
	}
	return TC_ACT_STOLEN;
}

char __license[] SEC("license") = "Dual BSD/GPL";
