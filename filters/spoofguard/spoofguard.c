//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * spoofguard fast path: drop frames a VM sends with a source identity that
 * is not its own (NSX SpoofGuard, libvirt nwfilter clean-traffic).
 *
 * From-vm only. Per instance (so per vNIC):
 *   sg_mac, sg_vlan_allow, sg_other_allow   constants set at load
 *   sg_ipv4, sg_ipv6   LPM tries of the vNIC's addresses/prefixes
 *   sg_drops           PERCPU_ARRAY[SG_NUM_REASONS] of struct vf_counter
 *
 * Every byte is read with bpf_skb_load_bytes, so non-linear frames are
 * checked like linear ones and a header that is not there is a drop, never a
 * pass. The Go reference model (model.go) states the same rules; the
 * differential test keeps the two equal.
 */
#include "vnicfilter.h"

#define SG_R_MAC 0
#define SG_R_VLAN 1
#define SG_R_ETHERTYPE 2
#define SG_R_MALFORMED 3
#define SG_R_IPV4 4
#define SG_R_ARP 5
#define SG_R_IPV6 6
#define SG_R_ND 7
#define SG_NUM_REASONS 8

#define SG_MAX_VLAN_TAGS 2
#define SG_MAX_EXT_HDRS 8
#define SG_MAX_ND_OPTS 8
#define SG_MAX_ADDRS 512

struct sg_lpm4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct sg_lpm6 {
	__u32 prefixlen;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, SG_MAX_ADDRS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sg_lpm4);
	__type(value, __u8);
} sg_ipv4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, SG_MAX_ADDRS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sg_lpm6);
	__type(value, __u8);
} sg_ipv6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SG_NUM_REASONS);
	__type(key, __u32);
	__type(value, struct vf_counter);
} sg_drops SEC(".maps");

/* Set by the loader from the instance's parameters. */
volatile const __u8 sg_mac[6] = {};
volatile const __u32 sg_vlan_allow = 0;
volatile const __u32 sg_other_allow = 0;

static __always_inline int sg_drop(struct __sk_buff *skb, __u32 reason)
{
	struct vf_counter *c = bpf_map_lookup_elem(&sg_drops, &reason);

	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
	return VF_DROP;
}

static __always_inline int sg_mac_eq(const __u8 *a)
{
	return a[0] == sg_mac[0] && a[1] == sg_mac[1] && a[2] == sg_mac[2] &&
	       a[3] == sg_mac[3] && a[4] == sg_mac[4] && a[5] == sg_mac[5];
}

static __always_inline int sg_is_vlan(__u16 proto)
{
	return proto == 0x8100 || proto == 0x88a8 || proto == 0x9100;
}

static __always_inline int sg_own4(const __u8 *a)
{
	struct sg_lpm4 k = { .prefixlen = 32 };

	__builtin_memcpy(k.addr, a, 4);
	return bpf_map_lookup_elem(&sg_ipv4, &k) != 0;
}

static __always_inline int sg_own6(const __u8 *a)
{
	struct sg_lpm6 k = { .prefixlen = 128 };

	__builtin_memcpy(k.addr, a, 16);
	return bpf_map_lookup_elem(&sg_ipv6, &k) != 0;
}

/* IPv4: the source is one of the vNIC's addresses, or 0.0.0.0 in an
 * unfragmented DHCP client datagram (UDP 68 -> 67). */
static __always_inline int sg_ipv4_check(struct __sk_buff *skb, __u32 off)
{
	__u8 h[20], p[4];
	__u32 ihl;

	if (bpf_skb_load_bytes(skb, off, h, sizeof(h)) < 0)
		return sg_drop(skb, SG_R_MALFORMED);
	ihl = h[0] & 0xf;
	if ((h[0] >> 4) != 4 || ihl < 5)
		return sg_drop(skb, SG_R_MALFORMED);
	if (sg_own4(&h[12]))
		return VF_CONTINUE;
	if (h[12] | h[13] | h[14] | h[15])
		return sg_drop(skb, SG_R_IPV4);
	if (h[9] != 17 || (h[6] & 0x3f) || h[7])
		return sg_drop(skb, SG_R_IPV4);
	if (bpf_skb_load_bytes(skb, off + ihl * 4, p, sizeof(p)) < 0)
		return sg_drop(skb, SG_R_IPV4);
	if (p[0] == 0 && p[1] == 68 && p[2] == 0 && p[3] == 67)
		return VF_CONTINUE;
	return sg_drop(skb, SG_R_IPV4);
}

/* ARP: Ethernet/IPv4, request or reply, sender MAC the vNIC's, sender IP
 * one of its addresses - or 0.0.0.0 in a request probing one of them
 * (RFC 5227 ARP probe). */
static __always_inline int sg_arp_check(struct __sk_buff *skb, __u32 off)
{
	__u8 a[28];

	if (bpf_skb_load_bytes(skb, off, a, sizeof(a)) < 0)
		return sg_drop(skb, SG_R_MALFORMED);
	if (a[0] != 0 || a[1] != 1 || a[2] != 0x08 || a[3] != 0 || a[4] != 6 ||
	    a[5] != 4 || a[6] != 0 || (a[7] != 1 && a[7] != 2))
		return sg_drop(skb, SG_R_ARP);
	if (!sg_mac_eq(&a[8]))
		return sg_drop(skb, SG_R_ARP);
	if (sg_own4(&a[14]))
		return VF_CONTINUE;
	if (a[7] == 1 && !(a[14] | a[15] | a[16] | a[17]) && sg_own4(&a[24]))
		return VF_CONTINUE;
	return sg_drop(skb, SG_R_ARP);
}

/* ND options of an NS/NA from p to end: well-formed, at most
 * SG_MAX_ND_OPTS, every source/target link-layer address option the vNIC's
 * MAC, and no source link-layer option when the source is :: (DAD). */
static __always_inline int sg_nd_opts(struct __sk_buff *skb, __u32 p,
				      __u32 end, int unspec)
{
	__u8 o[8];
	__u32 l;
	int i;

	for (i = 0; i < SG_MAX_ND_OPTS; i++) {
		if (p >= end)
			return VF_CONTINUE;
		if (end - p < 2)
			return sg_drop(skb, SG_R_ND);
		if (bpf_skb_load_bytes(skb, p, o, 2) < 0)
			return sg_drop(skb, SG_R_ND);
		l = (__u32)o[1] * 8;
		if (l == 0 || p + l > end)
			return sg_drop(skb, SG_R_ND);
		if (o[0] == 1 || o[0] == 2) {
			if (o[1] != 1 || (unspec && o[0] == 1))
				return sg_drop(skb, SG_R_ND);
			if (bpf_skb_load_bytes(skb, p, o, 8) < 0)
				return sg_drop(skb, SG_R_ND);
			if (!sg_mac_eq(&o[2]))
				return sg_drop(skb, SG_R_ND);
		}
		p += l;
	}
	if (p >= end)
		return VF_CONTINUE;
	return sg_drop(skb, SG_R_ND);
}

/* IPv6: the source is one of the vNIC's addresses (fe80::/64 included when
 * allow_link_local), or :: in a DAD neighbour solicitation for one of them.
 * Extension headers are walked to find ICMPv6; NS/NA are checked (target,
 * link-layer options); fragmented ND is dropped (RFC 6980). */
static __always_inline int sg_ipv6_check(struct __sk_buff *skb, __u32 off)
{
	__u8 h[40], e[8], ic[24];
	__u32 pos, end, plen;
	int unspec, frag = 0, i;
	__u8 nh;

	if (bpf_skb_load_bytes(skb, off, h, sizeof(h)) < 0)
		return sg_drop(skb, SG_R_MALFORMED);
	if ((h[0] >> 4) != 6)
		return sg_drop(skb, SG_R_MALFORMED);
	unspec = !(h[8] | h[9] | h[10] | h[11] | h[12] | h[13] | h[14] | h[15] |
		   h[16] | h[17] | h[18] | h[19] | h[20] | h[21] | h[22] | h[23]);
	if (!unspec && !sg_own6(&h[8]))
		return sg_drop(skb, SG_R_IPV6);

	pos = off + 40;
	plen = ((__u32)h[4] << 8) | h[5];
	end = pos + plen;
	if (end > skb->len)
		end = skb->len;
	nh = h[6];
	for (i = 0; i < SG_MAX_EXT_HDRS; i++) {
		if (nh == 0 || nh == 43 || nh == 60) {
			if (bpf_skb_load_bytes(skb, pos, e, 2) < 0)
				return sg_drop(skb, SG_R_MALFORMED);
			nh = e[0];
			pos += ((__u32)e[1] + 1) * 8;
		} else if (nh == 51) {
			if (bpf_skb_load_bytes(skb, pos, e, 2) < 0)
				return sg_drop(skb, SG_R_MALFORMED);
			nh = e[0];
			pos += ((__u32)e[1] + 2) * 4;
		} else if (nh == 44) {
			if (bpf_skb_load_bytes(skb, pos, e, 8) < 0)
				return sg_drop(skb, SG_R_MALFORMED);
			nh = e[0];
			pos += 8;
			frag = 1;
			if ((e[2] << 8 | e[3]) & 0xfff8) /* not the first fragment */
				return unspec ? sg_drop(skb, SG_R_IPV6) : VF_CONTINUE;
		} else {
			break;
		}
	}
	if (nh == 0 || nh == 43 || nh == 60 || nh == 51 || nh == 44)
		return sg_drop(skb, SG_R_MALFORMED);
	if (nh != 58)
		return unspec ? sg_drop(skb, SG_R_IPV6) : VF_CONTINUE;

	if (bpf_skb_load_bytes(skb, pos, ic, 4) < 0)
		return sg_drop(skb, SG_R_MALFORMED);
	if (frag && ic[0] >= 133 && ic[0] <= 137)
		return sg_drop(skb, SG_R_ND);
	if (ic[0] != 135 && ic[0] != 136)
		return unspec ? sg_drop(skb, SG_R_IPV6) : VF_CONTINUE;
	if (unspec && ic[0] == 136)
		return sg_drop(skb, SG_R_IPV6);
	if (pos + 24 > end)
		return sg_drop(skb, SG_R_ND);
	if (bpf_skb_load_bytes(skb, pos, ic, sizeof(ic)) < 0)
		return sg_drop(skb, SG_R_ND);
	if ((ic[0] == 136 || unspec) && !sg_own6(&ic[8]))
		return sg_drop(skb, SG_R_ND);
	return sg_nd_opts(skb, pos + 24, end, unspec);
}

VF_FILTER(vf_spoofguard)
{
	__u8 eth[14], tag[4];
	__u32 off = 14, tags = 0;
	__u16 proto;
	int i;

	if (bpf_skb_load_bytes(skb, 0, eth, sizeof(eth)) < 0)
		return sg_drop(skb, SG_R_MALFORMED);
	if (!sg_mac_eq(&eth[6]))
		return sg_drop(skb, SG_R_MAC);
	proto = (__u16)eth[12] << 8 | eth[13];
	/* A tag the kernel already took out of the frame counts as one. */
	if (skb->vlan_present) {
		if (!sg_vlan_allow)
			return sg_drop(skb, SG_R_VLAN);
		tags = 1;
	}
	for (i = 0; i <= SG_MAX_VLAN_TAGS; i++) {
		if (!sg_is_vlan(proto))
			break;
		if (!sg_vlan_allow || tags >= SG_MAX_VLAN_TAGS)
			return sg_drop(skb, SG_R_VLAN);
		if (bpf_skb_load_bytes(skb, off, tag, sizeof(tag)) < 0)
			return sg_drop(skb, SG_R_MALFORMED);
		proto = (__u16)tag[2] << 8 | tag[3];
		off += 4;
		tags++;
	}

	switch (proto) {
	case 0x0800:
		return sg_ipv4_check(skb, off);
	case 0x86dd:
		return sg_ipv6_check(skb, off);
	case 0x0806:
		return sg_arp_check(skb, off);
	}
	if (sg_other_allow)
		return VF_CONTINUE;
	return sg_drop(skb, SG_R_ETHERTYPE);
}

char __license[] SEC("license") = "Dual BSD/GPL";
