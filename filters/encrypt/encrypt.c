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
 *   enc_pairs   LPM_TRIE  prefix -> struct enc_sides: the policy's group
 *               pairs each address belongs to (bit masks per side)
 *   enc_config  ARRAY [0] -> struct enc_cfg: the tunnel's ifindex, flags
 *   enc_stats   PERCPU_ARRAY [peer * ENC_NUM_STATS + stat] -> packets, bytes
 *
 * from-vm: an IP packet whose destination is protected is redirected into
 *   the tunnel device (VF_REDIRECT; the kernel strips the Ethernet header
 *   on an L2 -> L3 redirect). If the peer's lease has expired, the tunnel
 *   is gone or no peer carries the prefix, it is dropped and counted
 *   (VF_DROP): protected traffic never leaves in clear. Everything else
 *   continues. A pair of the policy (from-group <-> to-group) protects a
 *   packet whose source is on one side and destination on the other.
 *   From a vNIC with protected destinations, a frame that cannot be
 *   classified safely is dropped: IPv6 whose extension headers cannot be
 *   walked or whose routing header names a protected address, IPv4 with
 *   a source-route option, a VLAN-tagged or truncated IP frame.
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
/* Slot ENC_PEER_NONE only: a frame from the VM this program cannot
 * classify safely (IPv6 extension headers, VLAN tag, truncated), dropped. */
#define ENC_STAT_UNSAFE ENC_STAT_DOWN
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
	__u32 flags; /* ENC_CFG_* */
};

/* enc_cfg.flags */
#define ENC_CFG_PAIRS 1 /* enc_pairs holds group pairs: look them up */
#define ENC_CFG_GUARD 2 /* the vNIC has protected destinations: drop
			 * what cannot be classified safely */

/* enc_pairs value: the policy pairs an address belongs to, as the "from"
 * side (bit i of a) and the "to" side (bit i of b) of pair i. The Go side
 * writes every prefix with the union of the masks of the prefixes that
 * contain it, so the longest match alone is the answer. */
struct enc_sides {
	__u64 a;
	__u64 b;
};

/* IPv6 extension headers walked before giving up (unsafe). */
#define ENC_V6_MAX_EXT 8
/* Addresses of a routing header checked (more: unsafe). */
#define ENC_V6_MAX_SEGS 8

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct enc_key);
	__type(value, struct enc_route);
} enc_routes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct enc_key);
	__type(value, struct enc_sides);
} enc_pairs SEC(".maps");

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

/* The packet's addresses: src and dst as LPM keys, 0 on success, -1 for a
 * frame that is not IPv4/IPv6, -2 for one that says IPv4/IPv6 but is too
 * short to hold the header, -3 for a VLAN-tagged frame. *l4 is the offset
 * after the fixed IP header, *nexthdr IPv6's next header. */
#define ENC_NOT_IP -1
#define ENC_SHORT -2
#define ENC_TAGGED -3
static __always_inline int addresses(struct __sk_buff *skb, struct enc_key *src,
				     struct enc_key *dst, __u8 *nexthdr,
				     __u32 *l4, __u32 *v4end)
{
	__u16 proto;
	__u8 vihl;

	if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &proto,
			       sizeof(proto)))
		return ENC_NOT_IP;
	src->prefixlen = 128;
	dst->prefixlen = 128;
	if (proto == bpf_htons(ETH_P_IP)) {
		src->addr[10] = 0xff;
		src->addr[11] = 0xff;
		dst->addr[10] = 0xff;
		dst->addr[11] = 0xff;
		if (bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, saddr),
				       &src->addr[12], 4) ||
		    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, daddr),
				       &dst->addr[12], 4) ||
		    bpf_skb_load_bytes(skb, ETH_HLEN, &vihl, 1))
			return ENC_SHORT;
		*v4end = ETH_HLEN + (vihl & 0xf) * 4;
		return 0;
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, saddr),
				       src->addr, 16) ||
		    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, daddr),
				       dst->addr, 16) ||
		    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, nexthdr),
				       nexthdr, 1))
			return ENC_SHORT;
		*l4 = ETH_HLEN + sizeof(struct ipv6hdr);
		return 0;
	}
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD))
		return ENC_TAGGED;
	return ENC_NOT_IP;
}

/* pair_match: does a policy pair protect traffic between x and y (either
 * way: pairs are symmetric)? */
static __always_inline int pair_match(struct enc_key *x, struct enc_key *y)
{
	struct enc_sides *sx = bpf_map_lookup_elem(&enc_pairs, x);
	struct enc_sides *sy;

	if (!sx)
		return 0;
	sy = bpf_map_lookup_elem(&enc_pairs, y);
	if (!sy)
		return 0;
	return ((sx->a & sy->b) | (sx->b & sy->a)) != 0;
}

/* protected_dst: is dst protected for this vNIC (a protected route, or a
 * pair with src)? */
static __always_inline int protected_dst(struct enc_key *src,
					 struct enc_key *dst, __u32 flags)
{
	struct enc_route *r = bpf_map_lookup_elem(&enc_routes, dst);

	if (r && (r->flags & ENC_PROTECT))
		return 1;
	return (flags & ENC_CFG_PAIRS) && pair_match(src, dst);
}

/* v6_safe checks the extension headers of an IPv6 packet from the VM whose
 * destination address is not protected: the packet may still be bound for
 * a protected address through a routing header (its destination address is
 * only the next hop). Returns 1 if no address the packet may reach is
 * protected; 0 if one is, or the chain cannot be walked (truncated, too
 * long, a routing header of a type not understood, an extension header
 * this program does not know). Extension headers after a fragment header
 * belong to the fragmentable part and cannot reroute the packet. */
static __always_inline int v6_safe(struct __sk_buff *skb, struct enc_key *src,
				   __u8 nexthdr, __u32 off, __u32 flags)
{
	__u8 h[4];
	int i, j;

	for (i = 0; i < ENC_V6_MAX_EXT; i++) {
		switch (nexthdr) {
		case 0:  /* hop-by-hop options */
		case 60: /* destination options */
			if (bpf_skb_load_bytes(skb, off, h, 2))
				return 0;
			nexthdr = h[0];
			off += ((__u32)h[1] + 1) * 8;
			continue;
		case 51: /* AH */
			if (bpf_skb_load_bytes(skb, off, h, 2))
				return 0;
			nexthdr = h[0];
			off += ((__u32)h[1] + 2) * 4;
			continue;
		case 43: { /* routing */
			__u32 n;

			if (bpf_skb_load_bytes(skb, off, h, 4))
				return 0;
			/* Types 0 (deprecated), 2 (Mobile IPv6) and 4 (segment
			 * routing) carry full addresses from byte 8. */
			if (h[2] != 0 && h[2] != 2 && h[2] != 4)
				return 0;
			n = h[1] / 2;
			if (n > ENC_V6_MAX_SEGS)
				return 0;
			for (j = 0; j < ENC_V6_MAX_SEGS; j++) {
				struct enc_key seg = {.prefixlen = 128};

				if (j >= n)
					break;
				if (bpf_skb_load_bytes(skb, off + 8 + j * 16,
						       seg.addr, 16))
					return 0;
				if (protected_dst(src, &seg, flags))
					return 0;
			}
			nexthdr = h[0];
			off += ((__u32)h[1] + 1) * 8;
			continue;
		}
		case 44: /* fragment: the rest is fragmentable */
		case 50: /* ESP */
		case 59: /* no next header */
			return 1;
		case 135: /* mobility */
		case 139: /* HIP */
		case 140: /* shim6 */
		case 253: /* experimental */
		case 254:
			return 0;
		default: /* an upper-layer protocol */
			return 1;
		}
	}
	return 0;
}

/* v4_safe checks the options of an IPv4 packet from the VM whose
 * destination is not protected: loose or strict source routing (131, 137)
 * makes the destination address only the first hop, as an IPv6 routing
 * header does, so such a packet is unsafe; so is a malformed option list.
 * end is where the header ends (ETH_HLEN + IHL * 4). */
#define ENC_V4_MAX_OPTS 20
static __always_inline int v4_safe(struct __sk_buff *skb, __u32 end)
{
	__u32 off = ETH_HLEN + sizeof(struct iphdr);
	__u8 o[2];
	int i;

	if (end < off)
		return 0; /* IHL below 5 */
	for (i = 0; i < ENC_V4_MAX_OPTS; i++) {
		if (off >= end)
			return 1;
		if (bpf_skb_load_bytes(skb, off, o, 1))
			return 0;
		if (o[0] == 0) /* end of options */
			return 1;
		if (o[0] == 1) { /* no-op */
			off++;
			continue;
		}
		if (o[0] == 131 || o[0] == 137)
			return 0;
		if (bpf_skb_load_bytes(skb, off + 1, &o[1], 1) || o[1] < 2)
			return 0;
		off += o[1];
	}
	return off >= end;
}

/* unsafe counts a from-vm frame this program cannot classify safely and
 * drops it when the vNIC has protected destinations. */
static __always_inline int unsafe(struct __sk_buff *skb, struct enc_cfg *cfg)
{
	if (!cfg || !(cfg->flags & ENC_CFG_GUARD))
		return VF_CONTINUE;
	enc_count(skb, ENC_PEER_NONE, ENC_STAT_UNSAFE);
	return VF_DROP;
}

VF_FILTER(vf_encrypt)
{
	struct enc_key src = {}, dst = {};
	struct enc_route *r;
	struct enc_peer *p;
	struct enc_cfg *cfg;
	__u32 zero = 0, peer, flags = 0, l4 = 0, v4end = 0;
	__u8 nexthdr = 0;
	int err, pair = 0;

	cfg = bpf_map_lookup_elem(&enc_config, &zero);
	if (cfg)
		flags = cfg->flags;
	err = addresses(skb, &src, &dst, &nexthdr, &l4, &v4end);
	if (err) {
		if (err != ENC_NOT_IP && dir == VF_DIR_FROM_VM)
			return unsafe(skb, cfg);
		return VF_CONTINUE;
	}

	if (dir == VF_DIR_TO_VM) {
		r = bpf_map_lookup_elem(&enc_routes, &src);
		if (!r || !(r->flags & ENC_PROTECT)) {
			if (!(flags & ENC_CFG_PAIRS) || !pair_match(&src, &dst))
				return VF_CONTINUE;
			/* A pair: local sources stay local. */
			if (r && r->peer >= ENC_PEER_NONE && !(r->flags & ENC_NO_PEER))
				return VF_CONTINUE;
		}
		peer = r ? r->peer : ENC_PEER_NONE;
		if (cfg && cfg->tun_ifindex &&
		    skb->ingress_ifindex == cfg->tun_ifindex) {
			enc_count(skb, peer, ENC_STAT_RECEIVED);
			return VF_CONTINUE;
		}
		enc_count(skb, peer, ENC_STAT_CLEAR);
		return VF_DROP;
	}

	r = bpf_map_lookup_elem(&enc_routes, &dst);
	if (!r || !(r->flags & ENC_PROTECT)) {
		if ((flags & ENC_CFG_PAIRS) && pair_match(&src, &dst)) {
			pair = 1;
		} else {
			if (l4 && !v6_safe(skb, &src, nexthdr, l4, flags))
				return unsafe(skb, cfg);
			if (v4end && v4end != ETH_HLEN + sizeof(struct iphdr) &&
			    !v4_safe(skb, v4end))
				return unsafe(skb, cfg);
			return VF_CONTINUE;
		}
	}
	if (pair) {
		/* Protected by a pair: local destinations stay local; one no
		 * peer carries is dropped. */
		if (!r || (r->flags & ENC_NO_PEER)) {
			enc_count(skb, ENC_PEER_NONE, ENC_STAT_NO_PEER);
			return VF_DROP;
		}
		if (r->peer >= ENC_PEER_NONE)
			return VF_CONTINUE;
	}
	peer = r->peer;

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
