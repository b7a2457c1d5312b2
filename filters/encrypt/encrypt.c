//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * encrypt: per-VM encryption between hosts by policy (docs/encrypt.md).
 *
 * The host runs one WireGuard tunnel (wireguard-go on a TUN device); this
 * program, one instance per vNIC, decides which of the VM's packets go into
 * it.
 *
 * Maps (all the instance's own; the Go side keeps them current):
 *   enc_routes  LPM_TRIE  prefix (IPv4 as ::ffff:a.b.c.d) -> struct enc_route
 *               the prefixes behind each peer host; ENC_PROTECT marks those
 *               this VM's policy protects, ENC_NO_PEER protected prefixes
 *               no peer carries (a revoked host's, or not yet announced)
 *   enc_peers   ARRAY [peer] -> struct enc_peer: lease (bpf_ktime_get_ns
 *               deadline) the Go side renews while the peer's WireGuard
 *               session is alive
 *   enc_config  ARRAY [0] -> struct enc_cfg: the tunnel's ifindex
 *   enc_stats   PERCPU_ARRAY [peer * ENC_NUM_STATS + stat] -> packets, bytes
 *
 * from-vm: an IP packet whose destination is protected is redirected into
 *   the tunnel device (VF_REDIRECT; the kernel strips the Ethernet header
 *   on an L2 -> L3 redirect). If the peer's lease has expired, the tunnel
 *   is gone or no peer carries the prefix, it is dropped and counted
 *   (VF_DROP): protected traffic never leaves in clear. Everything else
 *   continues.
 * to-vm: an IP packet whose source is protected must have entered the host
 *   through the tunnel (skb->ingress_ifindex is the tunnel's): otherwise it
 *   came in clear and is dropped and counted.
 */
#include "vnicfilter.h"
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>

#define ENC_MAX_PEERS 1024
#define ENC_PEER_NONE ENC_MAX_PEERS /* stats slot of prefixes without a peer */

/* enc_route.flags */
#define ENC_PROTECT 1 /* the policy protects this prefix */
#define ENC_NO_PEER 2 /* protected but no peer carries it: drop */

/* Per-peer counters. */
#define ENC_STAT_STEERED 0   /* redirected into the tunnel */
#define ENC_STAT_DOWN 1      /* dropped: peer not up / no tunnel */
#define ENC_STAT_CLEAR 2     /* to-vm: protected source arrived in clear */
#define ENC_STAT_NO_PEER 3   /* dropped: protected prefix without a peer */
#define ENC_STAT_RECEIVED 4  /* to-vm: protected source, via the tunnel */
#define ENC_NUM_STATS 5

struct enc_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct enc_route {
	__u32 peer;
	__u32 flags;
};

struct enc_peer {
	__u64 lease_until;
};

struct enc_cfg {
	__u32 tun_ifindex;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct enc_key);
	__type(value, struct enc_route);
} enc_routes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ENC_MAX_PEERS);
	__type(key, __u32);
	__type(value, struct enc_peer);
} enc_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct enc_cfg);
} enc_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, (ENC_MAX_PEERS + 1) * ENC_NUM_STATS);
	__type(key, __u32);
	__type(value, struct vf_counter);
} enc_stats SEC(".maps");

static __always_inline void enc_count(struct __sk_buff *skb, __u32 peer,
				      __u32 stat)
{
	__u32 key;
	struct vf_counter *c;

	if (peer > ENC_PEER_NONE)
		peer = ENC_PEER_NONE;
	key = peer * ENC_NUM_STATS + stat;
	c = bpf_map_lookup_elem(&enc_stats, &key);
	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
}

/* lookup finds the route of the packet's destination (from-vm) or source
 * (to-vm) address; NULL for non-IP frames and addresses behind no peer. */
static __always_inline struct enc_route *lookup(struct __sk_buff *skb,
						__u32 dir)
{
	struct enc_key k = {};
	__u16 proto;

	if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &proto,
			       sizeof(proto)))
		return NULL;
	if (proto == bpf_htons(ETH_P_IP)) {
		__u32 off = ETH_HLEN + (dir == VF_DIR_FROM_VM ?
					offsetof(struct iphdr, daddr) :
					offsetof(struct iphdr, saddr));

		k.prefixlen = 128;
		k.addr[10] = 0xff;
		k.addr[11] = 0xff;
		if (bpf_skb_load_bytes(skb, off, &k.addr[12], 4))
			return NULL;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		__u32 off = ETH_HLEN + (dir == VF_DIR_FROM_VM ?
					offsetof(struct ipv6hdr, daddr) :
					offsetof(struct ipv6hdr, saddr));

		k.prefixlen = 128;
		if (bpf_skb_load_bytes(skb, off, k.addr, 16))
			return NULL;
	} else {
		return NULL;
	}
	return bpf_map_lookup_elem(&enc_routes, &k);
}

VF_FILTER(vf_encrypt)
{
	struct enc_route *r = lookup(skb, dir);
	struct enc_peer *p;
	struct enc_cfg *cfg;
	__u32 zero = 0, peer;

	if (!r || !(r->flags & ENC_PROTECT))
		return VF_CONTINUE;
	peer = r->peer;
	cfg = bpf_map_lookup_elem(&enc_config, &zero);

	if (dir == VF_DIR_TO_VM) {
		if (cfg && cfg->tun_ifindex &&
		    skb->ingress_ifindex == cfg->tun_ifindex) {
			enc_count(skb, peer, ENC_STAT_RECEIVED);
			return VF_CONTINUE;
		}
		enc_count(skb, peer, ENC_STAT_CLEAR);
		return VF_DROP;
	}

	if (r->flags & ENC_NO_PEER) {
		enc_count(skb, ENC_PEER_NONE, ENC_STAT_NO_PEER);
		return VF_DROP;
	}
	p = bpf_map_lookup_elem(&enc_peers, &peer);
	if (!p || !cfg || !cfg->tun_ifindex ||
	    bpf_ktime_get_ns() >= p->lease_until) {
		enc_count(skb, peer, ENC_STAT_DOWN);
		return VF_DROP;
	}
	enc_count(skb, peer, ENC_STAT_STEERED);
	*redirect_ret = bpf_redirect(cfg->tun_ifindex, 0);
	return VF_REDIRECT;
}

char _license[] SEC("license") = "Dual BSD/GPL";
