//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * dlb: distributed load balancer (docs/dlb.md).
 *
 * from-vm: an IPv4 or IPv6 TCP/UDP packet whose flow is pinned in dlb_ct is DNATed
 * to its backend; otherwise, if its destination is a service
 * (dlb_services, live generation), the 5-tuple hash picks a Maglev slot,
 * the slot a backend, the flow is pinned (forward and reverse entries)
 * and the packet DNATed. A full dlb_ct returns VF_FAIL.
 * to-vm: a packet matching a reverse entry gets the VIP back as source.
 * Everything else (non-IP, IPv4 fragments, IPv6 extension headers, other protocols, runts, non-VIP
 * destinations) continues untouched.
 *
 * All reads go through bpf_skb_load_bytes; checksums are updated with
 * bpf_l3_csum_replace / bpf_l4_csum_replace (BPF_F_PSEUDO_HDR for the
 * address, which also keeps CHECKSUM_PARTIAL frames from VMs right).
 */
#include "vnicfilter.h"
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>

#define DLB_CT_FWD 0
#define DLB_CT_REV 1
#define DLB_HAS_MAC 1 /* dlb_target.flags: rewrite the destination MAC */
#define DLB_CLOSING 2 /* dlb_ct entries: a FIN or RST was seen */

#define DLB_STAT_NEW 0
#define DLB_STAT_EST 1
#define DLB_STAT_REV 2
#define DLB_STAT_FULL 3
#define DLB_STAT_NOBACKEND 4
#define DLB_NUM_STATS 5

/* Addresses are 4 words: an IPv4 address in the first, the others zero;
 * family (4 or 6) tells them apart. All in network byte order. */
struct dlb_svc_key {
	__u32 vip[4];
	__u16 port;
	__u8 proto;
	__u8 gen;
	__u8 family;
	__u8 pad[3];
};

#define DLB_SVC_AFFINITY 1 /* dlb_svc.flags: hash the client address, not its port */

struct dlb_svc {
	__u32 base; /* first slot in dlb_maglev */
	__u32 size; /* prime; 0: no backend up (new flows fail) */
	__u16 id;
	__u8 flags;
	__u8 pad;
};

struct dlb_target {
	__u32 addr[4];
	__u16 port;
	__u8 mac[6];
	__u8 flags;
	__u8 pad;
	__u16 svc; /* dlb_ct entries: the flow's service id (dlb_svc.id) */
};

/* Per-service traffic, per direction (dlb_svc_stats[id * 2 + dir]). */
struct dlb_traffic {
	__u64 packets;
	__u64 bytes;
};

/* A pinned flow: forward entries hold the backend, reverse entries the
 * VIP; seen is the monotonic clock (ns) at the last packet, refreshed at
 * most once a second from the coarse clock (filterd's sweep expires idle
 * flows). */
struct dlb_ct_val {
	struct dlb_target t;
	__u64 seen;
};

struct dlb_ct_key {
	__u32 saddr[4];
	__u32 daddr[4];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 kind;
	__u8 family;
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2048);
	__type(key, struct dlb_svc_key);
	__type(value, struct dlb_svc);
} dlb_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1048576); /* param table_entries */
	__type(key, __u32);
	__type(value, __u32); /* index into dlb_backends */
} dlb_maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8192); /* 2 generations × MaxBackends */
	__type(key, __u32);
	__type(value, struct dlb_target);
} dlb_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072); /* 2 × param conntrack_size */
	__type(key, struct dlb_ct_key);
	__type(value, struct dlb_ct_val);
} dlb_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32); /* live generation */
} dlb_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DLB_NUM_STATS);
	__type(key, __u32);
	__type(value, __u64);
} dlb_stats SEC(".maps");

/* New flows per backend (index as in dlb_backends); userspace zeroes a
 * generation's range before filling it. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, __u64);
} dlb_backend_flows SEC(".maps");

/* Packets and bytes per service id and direction; userspace keeps ids
 * stable across reloads and zeroes an id's slots before reusing it. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4096); /* 2 × 2 × MaxServices */
	__type(key, __u32);
	__type(value, struct dlb_traffic);
} dlb_svc_stats SEC(".maps");

static __always_inline void svc_count(struct __sk_buff *skb, __u16 id, __u32 dir)
{
	__u32 i = (__u32)id * 2 + dir;
	struct dlb_traffic *c = bpf_map_lookup_elem(&dlb_svc_stats, &i);

	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
}

static __always_inline void dlb_stat(__u32 s)
{
	__u64 *c = bpf_map_lookup_elem(&dlb_stats, &s);

	if (c)
		(*c)++;
}

/* touch refreshes an entry's last-seen time (at most once a second) and
 * marks it closing on a TCP FIN or RST, so the sweep forgets it after
 * tcp_close_timeout instead of tcp_timeout. */
static __always_inline void touch(struct __sk_buff *skb, struct dlb_ct_val *v,
				  __u8 proto, __u32 l4)
{
	/* The coarse clock (same base, a tick's resolution) is plenty for a
	 * once-a-second refresh and cheaper per frame. */
	__u64 now = bpf_ktime_get_coarse_ns();
	__u8 tcpflags;

	if (now > v->seen && now - v->seen > 1000000000ULL)
		v->seen = now;
	if (proto == IPPROTO_TCP && !(v->t.flags & DLB_CLOSING) &&
	    !bpf_skb_load_bytes(skb, l4 + 13, &tcpflags, 1) &&
	    (tcpflags & 0x05)) /* FIN | RST */
		v->t.flags |= DLB_CLOSING;
}

static __always_inline __u32 rotl32(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

static __always_inline __u32 murmur_mix(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51;
	k = rotl32(k, 15);
	k *= 0x1b873593;
	h ^= k;
	h = rotl32(h, 13);
	return h * 5 + 0xe6546b64;
}

/* flow_hash must equal dlb.FlowHash / dlb.FlowHash6. */
static __always_inline __u32 flow_hash(const struct dlb_ct_key *k)
{
	__u32 h = 0x5bd1e995, n = 16;

	if (k->family == 6) {
		for (int i = 0; i < 4; i++)
			h = murmur_mix(h, k->saddr[i]);
		for (int i = 0; i < 4; i++)
			h = murmur_mix(h, k->daddr[i]);
		n = 40;
	} else {
		h = murmur_mix(h, k->saddr[0]);
		h = murmur_mix(h, k->daddr[0]);
	}
	h = murmur_mix(h, (__u32)k->sport | (__u32)k->dport << 16);
	h = murmur_mix(h, k->proto);
	h ^= n;
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* rewrite replaces the address at addr_off and the port at port_off by
 * t's, fixing the L4 checksum (and IPv4's header checksum); with
 * DLB_HAS_MAC, the destination MAC too. */
static __always_inline int rewrite(struct __sk_buff *skb, int v6, __u32 l4,
				   __u8 proto, __u32 addr_off, __u32 port_off,
				   const __u32 *old_addr, __u16 old_port,
				   const struct dlb_target *t)
{
	__u32 csum_off = l4 + (proto == IPPROTO_TCP ? 16 : 6);
	__u64 flags = proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	struct dlb_target nt = *t;

	if (v6) {
		for (int i = 0; i < 4; i++)
			if (bpf_l4_csum_replace(skb, csum_off, old_addr[i],
						nt.addr[i],
						flags | BPF_F_PSEUDO_HDR | 4))
				return -1;
	} else if (bpf_l4_csum_replace(skb, csum_off, old_addr[0], nt.addr[0],
				       flags | BPF_F_PSEUDO_HDR | 4)) {
		return -1;
	}
	/* A backend on the VIP's own port (the usual case) leaves the port
	 * and its share of the checksum alone: two helper calls a frame. */
	if (nt.port != old_port &&
	    bpf_l4_csum_replace(skb, csum_off, old_port, nt.port, flags | 2))
		return -1;
	if (v6) {
		if (bpf_skb_store_bytes(skb, addr_off, nt.addr, 16, 0))
			return -1;
	} else {
		if (bpf_l3_csum_replace(skb, ETH_HLEN + 10, old_addr[0],
					nt.addr[0], 4))
			return -1;
		if (bpf_skb_store_bytes(skb, addr_off, nt.addr, 4, 0))
			return -1;
	}
	if (nt.port != old_port &&
	    bpf_skb_store_bytes(skb, port_off, &nt.port, 2, 0))
		return -1;
	if (nt.flags & DLB_HAS_MAC) {
		if (bpf_skb_store_bytes(skb, 0, nt.mac, 6, 0))
			return -1;
	}
	return 0;
}

VF_FILTER(vf_dlb)
{
	struct ethhdr eth;
	__u16 ports[2];
	__u32 l4, need, saddr_off, daddr_off;
	struct dlb_ct_key k = {};
	struct dlb_ct_val *t;
	int v6;

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)))
		return VF_CONTINUE;
	if (eth.h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) ||
		    ip.version != 4 || ip.ihl < 5)
			return VF_CONTINUE;
		if (ip.frag_off & bpf_htons(0x3fff)) /* MF or an offset */
			return VF_CONTINUE;
		v6 = 0;
		k.family = 4;
		k.proto = ip.protocol;
		k.saddr[0] = ip.saddr;
		k.daddr[0] = ip.daddr;
		l4 = ETH_HLEN + ip.ihl * 4;
		saddr_off = ETH_HLEN + 12;
		daddr_off = ETH_HLEN + 16;
	} else if (eth.h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) ||
		    ip6.version != 6)
			return VF_CONTINUE;
		/* Extension headers (and so fragments) are not followed. */
		v6 = 1;
		k.family = 6;
		k.proto = ip6.nexthdr;
		__builtin_memcpy(k.saddr, &ip6.saddr, 16);
		__builtin_memcpy(k.daddr, &ip6.daddr, 16);
		l4 = ETH_HLEN + sizeof(ip6);
		saddr_off = ETH_HLEN + 8;
		daddr_off = ETH_HLEN + 24;
	} else {
		return VF_CONTINUE;
	}
	if (k.proto != IPPROTO_TCP && k.proto != IPPROTO_UDP)
		return VF_CONTINUE;
	need = k.proto == IPPROTO_TCP ? 20 : 8;
	if (skb->len < l4 + need)
		return VF_CONTINUE;
	if (bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)))
		return VF_CONTINUE;
	k.sport = ports[0];
	k.dport = ports[1];

	if (dir == VF_DIR_TO_VM) {
		k.kind = DLB_CT_REV;
		t = bpf_map_lookup_elem(&dlb_ct, &k);
		if (!t)
			return VF_CONTINUE;
		struct dlb_target rt = t->t;

		touch(skb, t, k.proto, l4);
		rt.flags = 0;
		dlb_stat(DLB_STAT_REV);
		svc_count(skb, rt.svc, 1);
		if (rewrite(skb, v6, l4, k.proto, saddr_off, l4, k.saddr,
			    k.sport, &rt))
			return VF_DROP;
		return VF_CONTINUE;
	}

	k.kind = DLB_CT_FWD;
	t = bpf_map_lookup_elem(&dlb_ct, &k);
	if (t && k.proto == IPPROTO_TCP && (t->t.flags & DLB_CLOSING)) {
		__u8 tcpflags = 0;

		bpf_skb_load_bytes(skb, l4 + 13, &tcpflags, 1);
		if ((tcpflags & 0x12) == 0x02) {
			/* A SYN reusing the 5-tuple of a closing flow: a new
			 * connection, chosen afresh. Its reverse entry goes
			 * too, unless another flow has taken it over. */
			struct dlb_ct_key ork = {
				.sport = t->t.port, .dport = k.sport,
				.proto = k.proto, .kind = DLB_CT_REV,
				.family = k.family,
			};
			struct dlb_ct_val *orv;

			__builtin_memcpy(ork.saddr, t->t.addr, 16);
			__builtin_memcpy(ork.daddr, k.saddr, 16);
			orv = bpf_map_lookup_elem(&dlb_ct, &ork);
			if (orv && orv->t.port == k.dport &&
			    orv->t.addr[0] == k.daddr[0] &&
			    orv->t.addr[1] == k.daddr[1] &&
			    orv->t.addr[2] == k.daddr[2] &&
			    orv->t.addr[3] == k.daddr[3])
				bpf_map_delete_elem(&dlb_ct, &ork);
			bpf_map_delete_elem(&dlb_ct, &k);
			t = NULL;
		}
	}
	if (t) {
		struct dlb_target ft = t->t;

		touch(skb, t, k.proto, l4);
		dlb_stat(DLB_STAT_EST);
		svc_count(skb, ft.svc, 0);
		if (rewrite(skb, v6, l4, k.proto, daddr_off, l4 + 2, k.daddr,
			    k.dport, &ft))
			return VF_DROP;
		return VF_CONTINUE;
	}

	__u32 zero = 0, *gen = bpf_map_lookup_elem(&dlb_config, &zero);
	if (!gen)
		return VF_CONTINUE;
	struct dlb_svc_key sk = {
		.port = k.dport, .proto = k.proto, .gen = *gen & 1,
		.family = k.family,
	};
	__builtin_memcpy(sk.vip, k.daddr, 16);
	struct dlb_svc *svc = bpf_map_lookup_elem(&dlb_services, &sk);
	if (!svc)
		return VF_CONTINUE;
	if (svc->size == 0) {
		dlb_stat(DLB_STAT_NOBACKEND);
		return VF_FAIL;
	}
	/* Session affinity: every connection of a client address to the
	 * service hashes alike (the source port is left out). */
	struct dlb_ct_key hk = k;

	if (svc->flags & DLB_SVC_AFFINITY)
		hk.sport = 0;
	__u32 slot = svc->base + flow_hash(&hk) % svc->size;
	__u32 *bi = bpf_map_lookup_elem(&dlb_maglev, &slot);
	if (!bi) {
		dlb_stat(DLB_STAT_NOBACKEND);
		return VF_FAIL;
	}
	__u32 bidx = *bi;
	struct dlb_target *b = bpf_map_lookup_elem(&dlb_backends, &bidx);
	if (!b || !b->port) {
		dlb_stat(DLB_STAT_NOBACKEND);
		return VF_FAIL;
	}
	__u64 now = bpf_ktime_get_ns();
	struct dlb_ct_val fv = { .t = *b, .seen = now };
	struct dlb_ct_key rk = {
		.sport = fv.t.port, .dport = k.sport, .proto = k.proto,
		.kind = DLB_CT_REV, .family = k.family,
	};
	struct dlb_ct_val rv = { .t = { .port = k.dport, .svc = svc->id },
				 .seen = now };

	__builtin_memcpy(rk.saddr, fv.t.addr, 16);
	__builtin_memcpy(rk.daddr, k.saddr, 16);
	__builtin_memcpy(rv.t.addr, k.daddr, 16);
	fv.t.svc = svc->id;
	if (bpf_map_update_elem(&dlb_ct, &k, &fv, BPF_NOEXIST)) {
		dlb_stat(DLB_STAT_FULL);
		return VF_FAIL;
	}
	if (bpf_map_update_elem(&dlb_ct, &rk, &rv, BPF_ANY)) {
		bpf_map_delete_elem(&dlb_ct, &k);
		dlb_stat(DLB_STAT_FULL);
		return VF_FAIL;
	}
	dlb_stat(DLB_STAT_NEW);
	svc_count(skb, svc->id, 0);
	__u64 *bf = bpf_map_lookup_elem(&dlb_backend_flows, &bidx);
	if (bf)
		(*bf)++;
	if (rewrite(skb, v6, l4, k.proto, daddr_off, l4 + 2, k.daddr, k.dport,
		    &fv.t))
		return VF_DROP;
	return VF_CONTINUE;
}

char _license[] SEC("license") = "Dual BSD/GPL";
