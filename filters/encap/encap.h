/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Definitions shared by the encap filter's two programs: the per-vNIC
 * instance (encap.c) and the per-host receive program on the VXLAN device
 * (encap_rx.c). The host-wide maps are declared here once so that the
 * instance's map-in-map templates match the maps the receive program
 * creates (the kernel compares type, key and value size and max_entries).
 */
#ifndef __ENCAP_H
#define __ENCAP_H

#include <linux/bpf.h>

/* Local vNICs of one segment on one host (flood list length). */
#define ENCAP_MAX_LOCAL 64
/* Local vNICs on one host over all segments. */
#define ENCAP_MAX_PORTS 4096

/* skb->mark of a frame the encap filter delivers to a vNIC (from the
 * tunnel, from a local vNIC of the segment, or an ARP/ND reply it built):
 * ENCAP_MARK | the sender's VXLAN-GBP group policy id. The to-vm half of
 * the filter delivers only frames carrying it. */
#define ENCAP_MARK 0x7e6c0000
#define ENCAP_MARK_MASK 0xffff0000
#define ENCAP_GROUP_MASK 0x0000ffff

#define ENCAP_VNI_MASK 0x00ffffff

/* (segment, underlay host) pairs the host accepts frames from: the union
 * of the member lists of its vNICs' segments. */
#define ENCAP_MAX_RX_MEMBERS 65536
/* Member lists, one per instance and segment (as many as local vNICs). */
#define ENCAP_MEMBER_LIST_LEN 64

/* A local vNIC: segment and MAC of its VM. */
struct encap_port_key {
	__u32 vni;
	__u8 mac[6];
	__u16 pad;
};

struct encap_port {
	__u32 ifindex;
	__u32 group;
	__u64 owner; /* random cookie of the instance that registered it */
};

/* The local vNICs of a segment, for broadcast and unknown unicast. */
struct encap_flood_list {
	__u32 n;
	__u32 ifindex[ENCAP_MAX_LOCAL];
};

/* An underlay address: v4 in bpf_tunnel_key.remote_ipv4's host byte order
 * in addr[0], v6 as the 16 address bytes (as remote_ipv6). */
struct encap_host {
	__u32 v6;
	__u32 addr[4];
};

struct encap_rx_member_key {
	__u32 vni;
	struct encap_host host;
};

/* One instance's member list for its segment, kept so the host can
 * rebuild the union when an instance changes or leaves. */
struct encap_member_set_key {
	__u32 vni;
	__u32 pad;
	__u64 owner;
};

struct encap_member_set {
	__u32 n;
	__u32 pad;
	struct encap_host hosts[ENCAP_MEMBER_LIST_LEN];
};

/* VXLAN tunnel option as the kernel's vxlan driver reads and writes it
 * (struct vxlan_metadata): the GBP word, host byte order. */
struct encap_vxlan_md {
	__u32 gbp;
};

#define ENCAP_HOST_PORTS_DEF                             \
	{                                                \
		__uint(type, BPF_MAP_TYPE_HASH);         \
		__uint(max_entries, ENCAP_MAX_PORTS);    \
		__type(key, struct encap_port_key);      \
		__type(value, struct encap_port);        \
	}

#define ENCAP_HOST_FLOOD_DEF                             \
	{                                                \
		__uint(type, BPF_MAP_TYPE_HASH);         \
		__uint(max_entries, ENCAP_MAX_PORTS);    \
		__type(key, __u32);                      \
		__type(value, struct encap_flood_list);       \
	}

/* The same maps as seen from an instance, through map-in-map: sizes only,
 * since clang emits the key and value structs of a nested definition as
 * forward declarations. */
#define ENCAP_HOST_PORTS_INNER                                          \
	{                                                               \
		__uint(type, BPF_MAP_TYPE_HASH);                        \
		__uint(max_entries, ENCAP_MAX_PORTS);                   \
		__uint(key_size, sizeof(struct encap_port_key));        \
		__uint(value_size, sizeof(struct encap_port));          \
	}

#define ENCAP_HOST_FLOOD_INNER                                          \
	{                                                               \
		__uint(type, BPF_MAP_TYPE_HASH);                        \
		__uint(max_entries, ENCAP_MAX_PORTS);                   \
		__uint(key_size, sizeof(__u32));                        \
		__uint(value_size, sizeof(struct encap_flood_list));         \
	}

static __always_inline int encap_mac_eq(const __u8 *a, const volatile __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] &&
	       a[4] == b[4] && a[5] == b[5];
}

#endif /* __ENCAP_H */
