//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * firewall: stateful per-vNIC firewall (docs/firewall.md).
 *
 * Per packet: parse (Ethernet, up to two VLAN tags, IPv4 with options,
 * IPv6 with up to FW_MAX_EXTHDRS extension headers, TCP/UDP/ICMP/ICMPv6,
 * all through bpf_skb_load_bytes so every read is bounds-checked); look the
 * flow up in the connection table (one lookup for an established flow);
 * otherwise classify it against the compiled policy with a fixed number of
 * lookups (2 LPM, 3 array, 4 hash) whatever the rule count, and remember
 * allowed flows.
 *
 * Maps (all private to the instance, pinned by the SDK):
 *   fw_conntrack  HASH      fw_ct_key -> fw_ct_val (size: param conntrack_size;
 *                           new flows are inserted with BPF_NOEXIST, so a
 *                           full table never evicts a live flow: the new
 *                           flow gets VF_FAIL and the slot's failure mode)
 *   fw_src/fw_dst LPM_TRIE  {gen, family, addr} -> address class
 *   fw_dims       ARRAY     [gen][proto | p1 | p2] -> class
 *   fw_cross      HASH      {gen<<2|table, class, class} -> class / verdict
 *   fw_config     ARRAY     [0] policy epoch (its low bit: live generation),
 *                           [1+gen] defaults
 *   fw_rule_hits  ARRAY     [rule] -> hits (atomic adds: one copy, not per CPU)
 *   fw_stats      PERCPU_ARRAY [FW_STAT_*] -> count
 *
 * Verdicts: VF_CONTINUE (allowed), VF_DROP (denied, rejected, invalid),
 * VF_FAIL (an allowed new flow the full connection table cannot take).
 * Every table is keyed by a generation bit: userspace fills the idle
 * generation and flips fw_config[0], so a packet (which reads the
 * generation once) never sees half a policy. Flows remember the generation
 * that allowed them and are re-checked once after a swap.
 */
#include "vnicfilter.h"
#include <linux/if_ether.h>
#include <bpf/bpf_endian.h>

#define FW_MAX_VLANS 2
#define FW_MAX_EXTHDRS 8
#define FW_MAX_RULES (1 << 17)
#define FW_LPM_MAX (2 * (1 << 18) + 4)
#define FW_CROSS_MAX (1 << 20)

/* fw_dims layout per generation (compile.go dim*). */
#define FW_DIM_P1 1024
#define FW_DIM_P2 66560
#define FW_DIMS_PER_GEN (FW_DIM_P2 + 65536)

/* fw_cross tables. */
#define FW_X_PROTO_P1 0
#define FW_X_L4 1
#define FW_X_ADDR 2
#define FW_X_FINAL 3

/* A final verdict: rule + 1 in the low 24 bits, action, log flag. */
#define FW_FINAL_RULE_MASK 0xffffff
#define FW_FINAL_ACTION_SHIFT 24
#define FW_FINAL_LOG (1 << 26)

/* fw_config[1 + gen]: default from-vm | to-vm << 8 | non-ip << 16 | valid */
#define FW_CONF_VALID (1 << 24)

#define FW_ALLOW 0

/* Parse results (packet.go Kind). */
#define FW_KIND_IP 0
#define FW_KIND_ARP 1
#define FW_KIND_NON_IP 2
#define FW_KIND_INVALID 3

#define PROTO_ICMP 1
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_ICMPV6 58

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

/* Flow states and timeouts (conntrack.go). */
#define CT_SYN_SENT 1
#define CT_SYN_RECV 2
#define CT_ESTABLISHED 3
#define CT_FIN_WAIT 4
#define CT_TIME_WAIT 5
#define CT_CLOSED 6
#define CT_UDP 7
#define CT_OTHER 8
#define NSEC_PER_SEC 1000000000ULL

/* fw_stats (model.go Stat). */
#define FW_STAT_ESTABLISHED 0
#define FW_STAT_NEW_FLOWS 1
#define FW_STAT_DEFAULT_FROM_VM 2 /* + dir */
#define FW_STAT_INVALID 4
#define FW_STAT_FRAGMENT_DROP 5
#define FW_STAT_NON_IP 6
#define FW_STAT_LOGGED 7
#define FW_STAT_REVALIDATED 8
#define FW_STAT_CUT 9
#define FW_STAT_CT_FULL 10
#define FW_STAT_ND 11
#define FW_STAT_RELATED 12
#define FW_NUM_STATS 13

struct fw_lpm_key {
	__u32 prefixlen; /* 16 + prefix length: gen and family always match */
	__u8 gen;
	__u8 family;
	__u8 addr[16];
	__u8 pad[2];
};

struct fw_cross_key {
	__u32 tag; /* gen << 2 | table */
	__u32 a;
	__u32 b;
};

struct fw_ct_key {
	__u8 local[16]; /* the VM's side, whatever the direction */
	__u8 remote[16];
	__u16 local_port; /* echo identifier for ICMP echo */
	__u16 remote_port;
	__u8 proto;
	__u8 family;
	__u8 pad[2];
};

struct fw_ct_val {
	__u64 expires; /* bpf_ktime_get_ns() */
	__u32 gen; /* policy epoch that last allowed the flow */
	__u16 p1, p2; /* of the packet that opened the flow */
	__u8 state;
	__u8 orig_dir;
	__u8 fins; /* bit 0: originator sent FIN, bit 1: responder */
	__u8 pad[5];
};

struct fw_pkt {
	__u8 src[16];
	__u8 dst[16];
	__u16 p1, p2, echo_id;
	__u8 proto, family, frag, tcp_flags;
	__u8 related; /* an ICMP error whose embedded header parsed into rk */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct fw_ct_key);
	__type(value, struct fw_ct_val);
} fw_conntrack SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, FW_LPM_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fw_lpm_key);
	__type(value, __u32);
} fw_src SEC(".maps"), fw_dst SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * FW_DIMS_PER_GEN);
	__type(key, __u32);
	__type(value, __u32);
} fw_dims SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FW_CROSS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fw_cross_key);
	__type(value, __u32);
} fw_cross SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u32);
} fw_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FW_MAX_RULES);
	__type(key, __u32);
	__type(value, __u64);
} fw_rule_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FW_NUM_STATS);
	__type(key, __u32);
	__type(value, __u64);
} fw_stats SEC(".maps");

static __always_inline void fw_count(__u32 stat)
{
	__u64 *c = bpf_map_lookup_elem(&fw_stats, &stat);

	if (c)
		(*c)++;
}

static __always_inline __u16 ld16(const __u8 *b)
{
	return (__u16)b[0] << 8 | b[1];
}


/* is_icmp_error: ICMP destination unreachable, time exceeded, parameter
 * problem; ICMPv6 types 1-4. */
static __always_inline int is_icmp_error(const struct fw_pkt *p)
{
	if (p->family == 4 && p->proto == PROTO_ICMP)
		return p->p1 == 3 || p->p1 == 11 || p->p1 == 12;
	if (p->family == 6 && p->proto == PROTO_ICMPV6)
		return p->p1 >= 1 && p->p1 <= 4;
	return 0;
}

/* fw_parse_inner reads the packet embedded in an ICMP error at off (the
 * original packet, sent the other way) into rk, the key of the flow it
 * belongs to; returns 1 if it names a trackable flow. Mirrors packet.go
 * parseInner: no inner fragments, no inner IPv6 extension headers, inner
 * ICMP only for echo. */
static __always_inline int fw_parse_inner(struct __sk_buff *skb, __u32 off,
					  const struct fw_pkt *p, __u32 dir,
					  struct fw_ct_key *rk)
{
	__u8 b[40];
	__u8 proto;
	__u32 l4;
	int inner_from_vm = dir != VF_DIR_FROM_VM;
	__u16 sp = 0, dp = 0;

	if (p->family == 4) {
		__u32 ihl;

		if (bpf_skb_load_bytes(skb, off, b, 20) < 0 || b[0] >> 4 != 4)
			return 0;
		ihl = (b[0] & 0xf) * 4;
		if (ihl < 20 || (ld16(b + 6) & 0x1fff))
			return 0;
		proto = b[9];
		if (inner_from_vm) {
			__builtin_memcpy(rk->local, b + 12, 4);
			__builtin_memcpy(rk->remote, b + 16, 4);
		} else {
			__builtin_memcpy(rk->local, b + 16, 4);
			__builtin_memcpy(rk->remote, b + 12, 4);
		}
		l4 = off + ihl;
	} else {
		if (bpf_skb_load_bytes(skb, off, b, 40) < 0 || b[0] >> 4 != 6)
			return 0;
		proto = b[6];
		if (proto == 0 || proto == 43 || proto == 60 || proto == 51 ||
		    proto == 44)
			return 0;
		if (inner_from_vm) {
			__builtin_memcpy(rk->local, b + 8, 16);
			__builtin_memcpy(rk->remote, b + 24, 16);
		} else {
			__builtin_memcpy(rk->local, b + 24, 16);
			__builtin_memcpy(rk->remote, b + 8, 16);
		}
		l4 = off + 40;
	}
	rk->proto = proto;
	rk->family = p->family;
	switch (proto) {
	case PROTO_TCP:
	case PROTO_UDP:
		if (bpf_skb_load_bytes(skb, l4, b, 8) < 0)
			return 0;
		sp = ld16(b);
		dp = ld16(b + 2);
		rk->local_port = inner_from_vm ? sp : dp;
		rk->remote_port = inner_from_vm ? dp : sp;
		break;
	case PROTO_ICMP:
	case PROTO_ICMPV6:
		if (bpf_skb_load_bytes(skb, l4, b, 8) < 0)
			return 0;
		if (!(proto == PROTO_ICMP ? (b[0] == 8 || b[0] == 0) :
					    (b[0] == 128 || b[0] == 129)))
			return 0;
		rk->local_port = ld16(b + 4);
		break;
	}
	return 1;
}

/* fw_parse fills p and returns a FW_KIND_*; mirrors packet.go ParseFrame.
 * For an ICMP error it also fills rk with the embedded packet's flow. */
static __always_inline int fw_parse(struct __sk_buff *skb, struct fw_pkt *p,
				    __u32 dir, struct fw_ct_key *rk)
{
	__u8 b[40];
	__u32 off = ETH_HLEN, l4;
	__u16 et;
	int i;

	if (bpf_skb_load_bytes(skb, 0, b, ETH_HLEN) < 0)
		return FW_KIND_INVALID;
	et = ld16(b + 12);
#pragma unroll
	for (i = 0; i < FW_MAX_VLANS; i++) {
		if (et != ETH_P_8021Q && et != ETH_P_8021AD)
			break;
		if (bpf_skb_load_bytes(skb, off, b, 4) < 0)
			return FW_KIND_INVALID;
		et = ld16(b + 2);
		off += 4;
	}
	if (et == ETH_P_ARP)
		return FW_KIND_ARP;
	if (et == ETH_P_IP) {
		__u32 ihl;

		if (bpf_skb_load_bytes(skb, off, b, 20) < 0 || b[0] >> 4 != 4)
			return FW_KIND_INVALID;
		ihl = (b[0] & 0xf) * 4;
		if (ihl < 20)
			return FW_KIND_INVALID;
		if (ihl > 20 && bpf_skb_load_bytes(skb, off + ihl - 1, b + 20, 1) < 0)
			return FW_KIND_INVALID;
		p->family = 4;
		p->proto = b[9];
		__builtin_memcpy(p->src, b + 12, 4);
		__builtin_memcpy(p->dst, b + 16, 4);
		if (ld16(b + 6) & 0x1fff) {
			p->frag = 1;
			return FW_KIND_IP;
		}
		l4 = off + ihl;
	} else if (et == ETH_P_IPV6) {
		__u8 nh;
		int done = 0;

		if (bpf_skb_load_bytes(skb, off, b, 40) < 0 || b[0] >> 4 != 6)
			return FW_KIND_INVALID;
		p->family = 6;
		__builtin_memcpy(p->src, b + 8, 16);
		__builtin_memcpy(p->dst, b + 24, 16);
		nh = b[6];
		l4 = off + 40;
#pragma unroll
		for (i = 0; i < FW_MAX_EXTHDRS; i++) {
			switch (nh) {
			case 0:  /* hop-by-hop */
			case 43: /* routing */
			case 60: /* destination options */
				if (bpf_skb_load_bytes(skb, l4, b, 2) < 0)
					return FW_KIND_INVALID;
				nh = b[0];
				l4 += ((__u32)b[1] + 1) * 8;
				break;
			case 51: /* authentication header */
				if (bpf_skb_load_bytes(skb, l4, b, 2) < 0)
					return FW_KIND_INVALID;
				nh = b[0];
				l4 += ((__u32)b[1] + 2) * 4;
				break;
			case 44: /* fragment */
				if (bpf_skb_load_bytes(skb, l4, b, 8) < 0)
					return FW_KIND_INVALID;
				nh = b[0];
				l4 += 8;
				if (ld16(b + 2) & 0xfff8) {
					p->proto = nh;
					p->frag = 1;
					return FW_KIND_IP;
				}
				break;
			default:
				done = 1;
			}
			if (done)
				break;
		}
		if (!done && (nh == 0 || nh == 43 || nh == 60 || nh == 51 || nh == 44))
			return FW_KIND_INVALID;
		p->proto = nh;
	} else {
		return FW_KIND_NON_IP;
	}
	switch (p->proto) {
	case PROTO_TCP:
		if (bpf_skb_load_bytes(skb, l4, b, 20) < 0 || b[12] >> 4 < 5)
			return FW_KIND_INVALID;
		p->p1 = ld16(b);
		p->p2 = ld16(b + 2);
		p->tcp_flags = b[13];
		break;
	case PROTO_UDP:
		if (bpf_skb_load_bytes(skb, l4, b, 8) < 0)
			return FW_KIND_INVALID;
		p->p1 = ld16(b);
		p->p2 = ld16(b + 2);
		break;
	case PROTO_ICMP:
	case PROTO_ICMPV6:
		if (bpf_skb_load_bytes(skb, l4, b, 8) < 0)
			return FW_KIND_INVALID;
		p->p1 = b[0];
		p->p2 = b[1];
		p->echo_id = ld16(b + 4);
		if (is_icmp_error(p))
			p->related = fw_parse_inner(skb, l4 + 8, p, dir, rk);
		break;
	}
	return FW_KIND_IP;
}

static __always_inline int valid_tcp_flags(__u8 f)
{
	switch (f & (TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK)) {
	case TCP_SYN:
	case TCP_SYN | TCP_ACK:
	case TCP_RST:
	case TCP_RST | TCP_ACK:
	case TCP_FIN | TCP_ACK:
	case TCP_ACK:
		return 1;
	}
	return 0;
}

static __always_inline int is_echo(const struct fw_pkt *p)
{
	if (p->frag)
		return 0;
	if (p->proto == PROTO_ICMP)
		return p->p1 == 8 || p->p1 == 0;
	if (p->proto == PROTO_ICMPV6)
		return p->p1 == 128 || p->p1 == 129;
	return 0;
}

static __always_inline __u64 ct_timeout(__u8 state)
{
	switch (state) {
	case CT_SYN_SENT:
	case CT_SYN_RECV:
		return 60 * NSEC_PER_SEC;
	case CT_ESTABLISHED:
		return 5 * 24 * 3600 * NSEC_PER_SEC;
	case CT_FIN_WAIT:
	case CT_TIME_WAIT:
		return 120 * NSEC_PER_SEC;
	case CT_CLOSED:
		return 10 * NSEC_PER_SEC;
	case CT_UDP:
		return 60 * NSEC_PER_SEC;
	}
	return 30 * NSEC_PER_SEC;
}

static __always_inline __u32 *lookup_dim(__u32 gen, __u32 idx)
{
	__u32 k = gen * FW_DIMS_PER_GEN + idx;

	return bpf_map_lookup_elem(&fw_dims, &k);
}

static __always_inline __u32 cross(__u32 gen, __u32 table, __u32 a, __u32 b)
{
	struct fw_cross_key k = {.tag = gen << 2 | table, .a = a, .b = b};
	__u32 *v;

	if (!a || !b)
		return 0;
	v = bpf_map_lookup_elem(&fw_cross, &k);
	return v ? *v : 0;
}

/* fw_classify returns the final verdict word of the first rule matching p
 * in direction dir, or 0: a fixed sequence of lookups (compile.go). */
static __always_inline __u32 fw_classify(const struct fw_pkt *p, __u32 dir,
					 __u32 gen)
{
	struct fw_lpm_key k = {.gen = gen, .family = p->family};
	__u32 *src, *dst, *pc, *c1, *c2, a, b, idx, x, l4;

	k.prefixlen = 16 + (p->family == 4 ? 32 : 128);
	__builtin_memcpy(k.addr, p->src, 16);
	src = bpf_map_lookup_elem(&fw_src, &k);
	__builtin_memcpy(k.addr, p->dst, 16);
	dst = bpf_map_lookup_elem(&fw_dst, &k);
	if (!src || !dst)
		return 0;
	a = *src;
	b = *dst;
	idx = dir << 8 | p->proto;
	if (p->frag)
		idx |= 1 << 9;
	pc = lookup_dim(gen, idx);
	c1 = lookup_dim(gen, FW_DIM_P1 + p->p1);
	c2 = lookup_dim(gen, FW_DIM_P2 + p->p2);
	if (!pc || !c1 || !c2)
		return 0;
	x = cross(gen, FW_X_PROTO_P1, *pc, *c1);
	l4 = cross(gen, FW_X_L4, x, *c2);
	return cross(gen, FW_X_FINAL, cross(gen, FW_X_ADDR, a, b), l4);
}

static __always_inline __u32 action_of(__u32 fv, __u32 conf, __u32 dir)
{
	if (!fv)
		return (conf >> (8 * dir)) & 0xff;
	return (fv >> FW_FINAL_ACTION_SHIFT) & 3;
}

static __always_inline void advance(struct fw_ct_val *v, const struct fw_pkt *p,
				    __u32 dir)
{
	int orig = dir == v->orig_dir;
	__u8 f = p->tcp_flags;

	if (p->proto != PROTO_TCP || v->state == CT_CLOSED)
		return;
	if (f & TCP_RST) {
		v->state = CT_CLOSED;
	} else if (f & TCP_FIN) {
		v->fins |= orig ? 1 : 2;
		v->state = v->fins == 3 ? CT_TIME_WAIT : CT_FIN_WAIT;
	} else if (v->state == CT_SYN_SENT && !orig &&
		   (f & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK)) {
		v->state = CT_SYN_RECV;
	} else if (v->state == CT_SYN_RECV && orig &&
		   (f & (TCP_SYN | TCP_ACK)) == TCP_ACK) {
		v->state = CT_ESTABLISHED;
	}
}

/* revalidate checks a flow allowed by an older generation against the
 * current one, rebuilding its first packet from the key. */
static __always_inline int revalidate(const struct fw_ct_key *k,
				      const struct fw_ct_val *v, __u32 gen,
				      __u32 conf)
{
	struct fw_pkt op = {.proto = k->proto, .family = k->family,
			    .p1 = v->p1, .p2 = v->p2};

	if (v->orig_dir == VF_DIR_FROM_VM) {
		__builtin_memcpy(op.src, k->local, 16);
		__builtin_memcpy(op.dst, k->remote, 16);
	} else {
		__builtin_memcpy(op.src, k->remote, 16);
		__builtin_memcpy(op.dst, k->local, 16);
	}
	return action_of(fw_classify(&op, v->orig_dir & 1, gen), conf,
			 v->orig_dir & 1) == FW_ALLOW;
}

VF_FILTER(vf_firewall)
{
	struct fw_pkt p = {};
	struct fw_ct_key key = {};
	struct fw_ct_val *v = NULL;
	__u32 zero = 0, gidx, gen, epoch, conf, fv, action;
	__u32 *cp;
	int kind, tracked;
	__u64 now;

	kind = fw_parse(skb, &p, dir, &key);
	cp = bpf_map_lookup_elem(&fw_config, &zero);
	if (!cp)
		return VF_DROP;
	epoch = *cp; /* counts swaps; flows remember it */
	gen = epoch & 1; /* which half of every table is live */
	gidx = 1 + gen;
	cp = bpf_map_lookup_elem(&fw_config, &gidx);
	if (!cp || !(*cp & FW_CONF_VALID))
		return VF_DROP; /* no policy yet: fail closed */
	conf = *cp;

	switch (kind) {
	case FW_KIND_INVALID:
		fw_count(FW_STAT_INVALID);
		return VF_DROP;
	case FW_KIND_ARP:
		fw_count(FW_STAT_NON_IP);
		return VF_CONTINUE;
	case FW_KIND_NON_IP:
		fw_count(FW_STAT_NON_IP);
		return ((conf >> 16) & 0xff) == FW_ALLOW ? VF_CONTINUE : VF_DROP;
	}
	if (p.proto == PROTO_ICMPV6 && !p.frag && p.p1 >= 133 && p.p1 <= 136) {
		fw_count(FW_STAT_ND);
		return VF_CONTINUE;
	}
	if (p.proto == PROTO_TCP && !p.frag && !valid_tcp_flags(p.tcp_flags)) {
		fw_count(FW_STAT_INVALID);
		return VF_DROP;
	}

	now = bpf_ktime_get_ns();
	if (p.related) {
		/* An ICMP error about a live flow passes (related); about no
		 * flow, it is an ordinary ICMP packet for the rules. */
		v = bpf_map_lookup_elem(&fw_conntrack, &key);
		if (v && v->expires > now) {
			fw_count(FW_STAT_RELATED);
			return VF_CONTINUE;
		}
		v = NULL;
	}
	tracked = !p.frag && ((p.proto != PROTO_ICMP && p.proto != PROTO_ICMPV6) || is_echo(&p));
	if (tracked) {
		key.proto = p.proto;
		key.family = p.family;
		if (dir == VF_DIR_FROM_VM) {
			__builtin_memcpy(key.local, p.src, 16);
			__builtin_memcpy(key.remote, p.dst, 16);
		} else {
			__builtin_memcpy(key.local, p.dst, 16);
			__builtin_memcpy(key.remote, p.src, 16);
		}
		if (p.proto == PROTO_TCP || p.proto == PROTO_UDP) {
			key.local_port = dir == VF_DIR_FROM_VM ? p.p1 : p.p2;
			key.remote_port = dir == VF_DIR_FROM_VM ? p.p2 : p.p1;
		} else if (is_echo(&p)) {
			key.local_port = p.echo_id;
		}
		v = bpf_map_lookup_elem(&fw_conntrack, &key);
		if (v && v->expires > now &&
		    !(p.proto == PROTO_TCP &&
		      (v->state == CT_CLOSED || v->state == CT_TIME_WAIT) &&
		      (p.tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN)) {
			if (v->gen != epoch) {
				fw_count(FW_STAT_REVALIDATED);
				if (!revalidate(&key, v, gen, conf)) {
					fw_count(FW_STAT_CUT);
					bpf_map_delete_elem(&fw_conntrack, &key);
					return VF_DROP;
				}
				v->gen = epoch;
			}
			advance(v, &p, dir);
			v->expires = now + ct_timeout(v->state);
			fw_count(FW_STAT_ESTABLISHED);
			return VF_CONTINUE;
		}
	}

	fv = fw_classify(&p, dir, gen);
	if (fv) {
		__u32 rule = (fv & FW_FINAL_RULE_MASK) - 1;
		__u64 *hits = bpf_map_lookup_elem(&fw_rule_hits, &rule);

		if (hits)
			__sync_fetch_and_add(hits, 1);
		if (fv & FW_FINAL_LOG)
			fw_count(FW_STAT_LOGGED);
	} else if (p.frag) {
		fw_count(FW_STAT_FRAGMENT_DROP);
		return VF_DROP;
	} else {
		fw_count(FW_STAT_DEFAULT_FROM_VM + dir);
	}
	action = action_of(fv, conf, dir);
	if (action != FW_ALLOW)
		return VF_DROP;
	if (tracked) {
		struct fw_ct_val nv = {.gen = epoch, .p1 = p.p1, .p2 = p.p2,
				       .orig_dir = dir};

		if (p.proto == PROTO_TCP) {
			if (p.tcp_flags & TCP_RST)
				return VF_CONTINUE;
			nv.state = (p.tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN ?
					   CT_SYN_SENT : CT_ESTABLISHED;
		} else {
			nv.state = p.proto == PROTO_UDP ? CT_UDP : CT_OTHER;
		}
		nv.expires = now + ct_timeout(nv.state);
		/* An expired or closed entry of the same key is reused in
		 * place; a new key must find a free slot (BPF_NOEXIST never
		 * evicts anything). A full table sends the flow to the
		 * slot's failure mode. */
		if (v) {
			*v = nv;
		} else {
			long err = bpf_map_update_elem(&fw_conntrack, &key, &nv,
						       BPF_NOEXIST);
			if (err == -17 /* EEXIST: another CPU raced us */)
				return VF_CONTINUE;
			if (err < 0) {
				fw_count(FW_STAT_CT_FULL);
				return VF_FAIL;
			}
		}
		fw_count(FW_STAT_NEW_FLOWS);
	}
	return VF_CONTINUE;
}

char __license[] SEC("license") = "Dual BSD/GPL";
