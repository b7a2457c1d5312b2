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
 * lookups (2 LPM, 3 array, 4 hash) whatever the rule count, remember
 * allowed flows, answer rejected packets (RST / ICMP unreachable, rate
 * limited) and write denials and logged flows to the flow-log ring buffer.
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
 *                           [1+gen] defaults and flow-log bits,
 *                           [3] reject answers per second,
 *                           [4] flow-log events per second
 *   fw_limits     ARRAY     [FW_LIMIT_*] -> per-second window of a rate limit
 *   fw_events     RINGBUF   struct fw_event: the flow log, read by Go
 *   fw_rule_hits  ARRAY     [rule] -> hits (atomic adds: one copy, not per CPU)
 *   fw_stats      PERCPU_ARRAY [FW_STAT_*] -> count
 *
 * Verdicts: VF_CONTINUE (allowed), VF_DROP (denied, invalid, rejected
 * without an answer), VF_REDIRECT (rejected: the frame was rewritten into
 * a TCP RST or ICMP unreachable and sent back where it came from),
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
/* fw_cross_key.b of a row's fallback entry */
#define FW_CLASS_ANY 0xffffffff

/* A final verdict: rule + 1 in the low 24 bits, action, log flag. */
#define FW_FINAL_RULE_MASK 0xffffff
#define FW_FINAL_ACTION_SHIFT 24
#define FW_FINAL_LOG (1 << 26)

/* fw_config[1 + gen]: default from-vm | to-vm << 8 | non-ip << 16 | valid */
#define FW_CONF_VALID (1 << 24)
#define FW_CONF_LOG (1 << 25)     /* flow log on */
#define FW_CONF_LOG_ALL (1 << 26) /* log every new flow */

#define FW_ALLOW 0
#define FW_REJECT 2

/* fw_config indexes. */
#define FW_CONF_EPOCH 0
#define FW_CONF_REJECT_RATE 3
#define FW_CONF_LOG_RATE 4
#define FW_CONF_ENTRIES 5

/* fw_event.kind (flowlog.go) */
#define FW_EV_ALLOW 1
#define FW_EV_DENY 2
#define FW_EV_REJECT 3
#define FW_EV_CUT 4

/* fw_ct_val.flags */
#define FW_CT_LOGGED 1 /* its opening was logged: the sweep logs its end */

/* fw_limits indexes. */
#define FW_LIMIT_REJECT 0
#define FW_LIMIT_LOG 1
#define FW_NUM_LIMITS 2

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
#define FW_STAT_REJECTED 13 /* answers sent */
#define FW_STAT_REJECT_LIMITED 14 /* rejects over reject_rate: dropped */
#define FW_STAT_REJECT_SKIPPED 15 /* rejects that get no answer: dropped */
#define FW_STAT_LOG_EVENTS 16	  /* flow-log events written to fw_events */
#define FW_STAT_LOG_LIMITED 17	  /* not logged: over the flow-log rate */
#define FW_STAT_LOG_LOST 18	  /* not logged: fw_events full */
#define FW_NUM_STATS 19

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
	__u64 created; /* bpf_ktime_get_ns() of the first packet */
	__u64 packets, bytes; /* both ways; plain adds (CPUs may race: approximate) */
	__u32 gen; /* policy epoch that last allowed the flow */
	__u16 p1, p2; /* of the packet that opened the flow */
	__u8 state;
	__u8 orig_dir;
	__u8 fins; /* bit 0: originator sent FIN, bit 1: responder */
	__u8 flags; /* FW_CT_* */
	__u32 rule; /* rule + 1 that allowed it (in generation gen), 0: default */
};

/* A flow-log event (flowlog.go decodes it). */
struct fw_event {
	__u64 ts; /* bpf_ktime_get_ns() */
	__u8 src[16];
	__u8 dst[16];
	__u16 p1, p2; /* ports, or ICMP type and code */
	__u8 family, proto, dir, kind; /* kind: FW_EV_* */
	__u32 rule; /* rule + 1, 0: the default */
	__u32 len; /* frame length */
	__u8 tcp_flags;
	__u8 answered; /* reject: an answer was sent */
	__u8 pad[2];
};

struct fw_pkt {
	__u8 src[16];
	__u8 dst[16];
	__u16 p1, p2, echo_id;
	__u8 proto, family, frag, tcp_flags;
	__u8 related; /* an ICMP error whose embedded header parsed into rk */
	__u8 l2group; /* sent to an Ethernet multicast or broadcast address */
	__u16 l3off, l4off; /* of the IP and (not for fragments) L4 headers */
	__u32 iplen; /* IPv4 total length, IPv6 40 + payload length */
};

struct fw_limit {
	__u64 window; /* bpf_ktime_get_ns() the current second began */
	__u64 count;  /* events in it */
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
	__uint(max_entries, FW_CONF_ENTRIES);
	__type(key, __u32);
	__type(value, __u32);
} fw_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 18); /* set at load: 4096 when the log is off */
} fw_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FW_NUM_LIMITS);
	__type(key, __u32);
	__type(value, struct fw_limit);
} fw_limits SEC(".maps");

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
	p->l2group = b[0] & 1;
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
		p->l3off = off;
		p->iplen = ld16(b + 2);
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
		p->l3off = off;
		p->iplen = 40 + (__u32)ld16(b + 4);
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
	p->l4off = l4;
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

/* cross looks up (a, b) in one cross-product table; without an entry,
 * the row's fallback (a, FW_CLASS_ANY): the rules of a that are in every
 * class of b's dimension (compile.go cross). */
static __always_inline __u32 cross(__u32 gen, __u32 table, __u32 a, __u32 b)
{
	struct fw_cross_key k = {.tag = gen << 2 | table, .a = a, .b = b};
	__u32 *v;

	if (!a || !b)
		return 0;
	v = bpf_map_lookup_elem(&fw_cross, &k);
	if (!v) {
		k.b = FW_CLASS_ANY;
		v = bpf_map_lookup_elem(&fw_cross, &k);
	}
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
				      struct fw_ct_val *v, __u32 gen,
				      __u32 conf)
{
	__u32 fv;

	struct fw_pkt op = {.proto = k->proto, .family = k->family,
			    .p1 = v->p1, .p2 = v->p2};

	if (v->orig_dir == VF_DIR_FROM_VM) {
		__builtin_memcpy(op.src, k->local, 16);
		__builtin_memcpy(op.dst, k->remote, 16);
	} else {
		__builtin_memcpy(op.src, k->remote, 16);
		__builtin_memcpy(op.dst, k->local, 16);
	}
	fv = fw_classify(&op, v->orig_dir & 1, gen);
	v->rule = fv & FW_FINAL_RULE_MASK;
	return action_of(fv, conf, v->orig_dir & 1) == FW_ALLOW;
}

/*
 * Reject answers (docs/firewall.md, "Reject"): the rejected frame itself is
 * rewritten into the answer and redirected back where it came from: a TCP
 * RST for TCP, an ICMP/ICMPv6 destination unreachable (port unreachable
 * for UDP, administratively prohibited otherwise) for the rest.
 *
 * Checksums must be right whatever the frame's checksum state, which a tc
 * program cannot read or reset: a frame a VM (or a local socket) sends
 * with checksum offload is CHECKSUM_PARTIAL (whoever completes it adds the
 * sum of [csum_start, end) into the field at csum_start + csum_offset; the
 * field holds the pseudo-header sum), any other frame must carry the whole
 * checksum. Nothing is moved relative to csum_start, so it still points at
 * the L4 header the frame came with:
 *   - TCP RST: same L3 header length (IPv4 options become NOPs), so the
 *     RST's checksum field is the one csum_start/csum_offset name. The
 *     field is written with two bpf_l4_csum_replace() diffs: the header's
 *     sum (applied only when not CHECKSUM_PARTIAL) and the pseudo-header's
 *     (always): the full checksum, or the pseudo-header sum, as the state
 *     wants.
 *   - ICMP: room for the new IP + ICMP headers is opened in front of the
 *     original IP header (BPF_ADJ_ROOM_MAC keeps L3 onwards in place), so
 *     csum_start now names the quoted L4 header. A probe (a non-pseudo
 *     diff on the zeroed ICMP checksum field changes it unless the frame is
 *     CHECKSUM_PARTIAL) tells the states apart; when partial, the quote is
 *     UDP (else no answer) and its checksum field gets the one value that
 *     completing the checksum over the 8 quoted bytes leaves unchanged. The
 *     ICMP checksum is then computed over the final bytes.
 */
#define FW_TTL 64
#define FW_IP_DF 0x40 /* high byte of the fragment field */
#define FW_ICMP_UNREACH 3
#define FW_ICMP_PORT_UNREACH 3
#define FW_ICMP_ADMIN_PROHIB 13
#define FW_ICMP6_UNREACH 1
#define FW_ICMP6_ADMIN_PROHIB 1
#define FW_ICMP6_PORT_UNREACH 4
#define FW_IPV4_MAX_HDR 60
#define FW_QUOTE_MAX (FW_IPV4_MAX_HDR + 8) /* IPv4 header + 64 bits */
#define FW_QUOTE6 48			   /* IPv6 header + 64 bits */
#define FW_TCP_CSUM 16
#define FW_UDP_CSUM 6

static __always_inline void st16(__u8 *b, __u16 v)
{
	b[0] = v >> 8;
	b[1] = v;
}

static __always_inline void st32(__u8 *b, __u32 v)
{
	b[0] = v >> 24;
	b[1] = v >> 16;
	b[2] = v >> 8;
	b[3] = v;
}

static __always_inline __u32 ld32(const __u8 *b)
{
	return (__u32)b[0] << 24 | (__u32)b[1] << 16 | (__u32)b[2] << 8 | b[3];
}

/* fold16 folds a 32-bit one's complement sum to 16 bits. */
static __always_inline __u32 fold16(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return s;
}

/* st_csum stores the checksum of a bpf_csum_diff() sum, which adds
 * native-order 16-bit words: stored natively, the bytes are right. */
static __always_inline void st_csum(__u8 *b, __u64 sum)
{
	__u16 c = ~fold16(sum);

	__builtin_memcpy(b, &c, 2);
}

/* fw_rate_ok counts an event against limit idx (rate per second). */
static __always_inline int fw_rate_ok(__u32 idx, __u32 rate, __u64 now)
{
	struct fw_limit *l = bpf_map_lookup_elem(&fw_limits, &idx);

	if (!l || !rate)
		return 0;
	if (now - l->window >= NSEC_PER_SEC) {
		/* A new second. CPUs racing here reset it twice: harmless. */
		l->window = now;
		l->count = 0;
	}
	__sync_fetch_and_add(&l->count, 1);
	return l->count <= rate;
}

/* fw_can_answer: never answer a non-first fragment, an ICMP error, a RST,
 * a frame sent to an Ethernet multicast or broadcast address, a packet
 * from an unspecified, multicast or broadcast source or to a multicast or
 * broadcast destination (IPv4: 224/3 covers multicast, reserved and the
 * limited broadcast), or an IPv6 packet with extension headers. Mirrors
 * reject.go canAnswer. */
static __always_inline int fw_can_answer(const struct fw_pkt *p)
{
	__u64 s0, s1;

	if (p->frag || p->l2group || is_icmp_error(p))
		return 0;
	if (p->proto == PROTO_TCP && (p->tcp_flags & TCP_RST))
		return 0;
	if (p->family == 4)
		return p->src[0] < 224 && p->dst[0] < 224 &&
		       (p->src[0] | p->src[1] | p->src[2] | p->src[3]);
	__builtin_memcpy(&s0, p->src, 8);
	__builtin_memcpy(&s1, p->src + 8, 8);
	return p->src[0] != 0xff && p->dst[0] != 0xff && (s0 | s1) &&
	       p->l4off == p->l3off + 40;
}

/* fw_answer_tcp rewrites a TCP segment into the RST answering it. */
static __always_inline int fw_answer_tcp(struct __sk_buff *skb,
					 const struct fw_pkt *p)
{
	__u8 mac[12], th[20], ip[FW_IPV4_MAX_HDR], ps[40] = {};
	__u32 l3 = p->l3off, l4 = p->l4off, hl = l4 - l3, seg, psz, i;
	__s64 dsum, psum;

	if (bpf_skb_load_bytes(skb, 0, mac, 12) < 0 ||
	    bpf_skb_load_bytes(skb, l4, th, 20) < 0)
		return 0;
	seg = p->iplen - hl - (th[12] >> 4) * 4;
	seg += !!(th[13] & TCP_SYN) + !!(th[13] & TCP_FIN);
	/* th becomes the RST: ports swapped, no options, no window. */
	if (th[13] & TCP_ACK) {
		__builtin_memcpy(th + 4, th + 8, 4); /* seq = their ack */
		__builtin_memset(th + 8, 0, 4);
		th[13] = TCP_RST;
	} else {
		st32(th + 8, ld32(th + 4) + seg); /* ack what they sent */
		__builtin_memset(th + 4, 0, 4);
		th[13] = TCP_RST | TCP_ACK;
	}
	i = ld16(th);
	th[0] = th[2];
	th[1] = th[3];
	st16(th + 2, i);
	th[12] = 5 << 4;
	__builtin_memset(th + 14, 0, 6); /* window, checksum, urgent */

	if (p->family == 4) {
		if (hl < 20 || hl > FW_IPV4_MAX_HDR)
			return 0;
		__builtin_memset(ip, 1, sizeof(ip)); /* options: NOPs */
		__builtin_memset(ip, 0, 20);
		ip[0] = 0x40 | hl / 4;
		st16(ip + 2, hl + 20);
		ip[6] = FW_IP_DF;
		ip[8] = FW_TTL;
		ip[9] = PROTO_TCP;
		__builtin_memcpy(ip + 12, p->dst, 4);
		__builtin_memcpy(ip + 16, p->src, 4);
		st_csum(ip + 10, bpf_csum_diff(NULL, 0, (void *)ip, hl, 0));
		__builtin_memcpy(ps, p->dst, 4);
		__builtin_memcpy(ps + 4, p->src, 4);
		ps[9] = PROTO_TCP;
		ps[11] = 20;
		psz = 12;
	} else {
		hl = 40;
		__builtin_memset(ip, 0, 40);
		ip[0] = 0x60;
		ip[5] = 20;
		ip[6] = PROTO_TCP;
		ip[7] = FW_TTL;
		__builtin_memcpy(ip + 8, p->dst, 16);
		__builtin_memcpy(ip + 24, p->src, 16);
		__builtin_memcpy(ps, p->dst, 16);
		__builtin_memcpy(ps + 16, p->src, 16);
		ps[35] = 20;
		ps[39] = PROTO_TCP;
		psz = 40;
	}
	if (bpf_skb_change_tail(skb, l4 + 20, 0) < 0)
		return 0;
	/* Swapped MACs; VLAN tags and the ethertype stay. */
	{
		__u8 m[12];

		__builtin_memcpy(m, mac + 6, 6);
		__builtin_memcpy(m + 6, mac, 6);
		if (bpf_skb_store_bytes(skb, 0, m, 12, 0) < 0)
			return 0;
	}
	if (bpf_skb_store_bytes(skb, l3, ip, hl, 0) < 0 ||
	    bpf_skb_store_bytes(skb, l4, th, 20, 0) < 0)
		return 0;
	dsum = bpf_csum_diff(NULL, 0, (void *)th, 20, 0);
	psum = bpf_csum_diff(NULL, 0, (void *)ps, psz, 0);
	if (dsum < 0 || psum < 0 ||
	    bpf_l4_csum_replace(skb, l4 + FW_TCP_CSUM, 0, (__u32)dsum, 0) < 0 ||
	    bpf_l4_csum_replace(skb, l4 + FW_TCP_CSUM, 0, (__u32)psum,
				BPF_F_PSEUDO_HDR) < 0)
		return 0;
	return 1;
}

/* fw_partial_fixpoint returns the value v for the checksum field of an
 * 8-byte UDP header (other words summing to s) such that completing the
 * checksum over the header (field = ~fold(s + v), 0 written as 0xffff)
 * writes v again: 2v = -s (mod 0xffff). */
static __always_inline __u16 fw_partial_fixpoint(__u32 s)
{
	__u32 neg = 0xffff - fold16(s), v;

	v = (neg * 32768ULL) % 0xffff;
	return v ? v : 0xffff;
}

/* fw_answer_icmp rewrites an untagged packet into the ICMP or ICMPv6
 * destination unreachable quoting it. */
static __always_inline int fw_answer_icmp(struct __sk_buff *skb,
					  const struct fw_pkt *p)
{
	__u8 h[ETH_HLEN + 40 + 8] = {}, q[FW_QUOTE_MAX] = {};
	__u32 iph = p->family == 4 ? 20 : 40, grow = iph + 8, uoff;
	__u64 qlen, qr; /* 64-bit: the bounds checked are the ones passed */
	__u32 csum_off = ETH_HLEN + iph + 2;
	__u64 sum;
	__s64 c;
	__u16 probe = 0;

	if (p->l3off != ETH_HLEN)
		return 0;
	qlen = p->family == 4 ? (__u32)(p->l4off - p->l3off) + 8 : FW_QUOTE6;
	if (qlen > skb->len - ETH_HLEN)
		qlen = skb->len - ETH_HLEN;
	if (bpf_skb_load_bytes(skb, 0, h + 6, 6) < 0 || /* their MAC: ours */
	    bpf_skb_load_bytes(skb, 6, h, 6) < 0 ||
	    bpf_skb_load_bytes(skb, 12, h + 12, 2) < 0)
		return 0;
	if (bpf_skb_adjust_room(skb, grow, BPF_ADJ_ROOM_MAC, 0) < 0 ||
	    bpf_skb_change_tail(skb, ETH_HLEN + grow + qlen, 0) < 0)
		return 0;
	/* Checksum state probe, on the (zeroed) ICMP checksum field. */
	if (bpf_skb_store_bytes(skb, csum_off, &probe, 2, 0) < 0 ||
	    bpf_l4_csum_replace(skb, csum_off, 0, 1, 0) < 0 ||
	    bpf_skb_load_bytes(skb, csum_off, &probe, 2) < 0)
		return 0;
	if (!probe) { /* CHECKSUM_PARTIAL: csum_start names the quoted L4 */
		__u8 u[8];

		if (p->proto != PROTO_UDP)
			return 0;
		uoff = ETH_HLEN + grow + p->l4off - p->l3off;
		if (bpf_skb_load_bytes(skb, uoff, u, 8) < 0)
			return 0;
		st16(u + FW_UDP_CSUM, fw_partial_fixpoint(ld16(u) + ld16(u + 2) + ld16(u + 4)));
		if (bpf_skb_store_bytes(skb, uoff + FW_UDP_CSUM, u + FW_UDP_CSUM, 2, 0) < 0)
			return 0;
	}
	barrier_var(qlen);
	if (qlen < 1 || qlen > FW_QUOTE_MAX)
		return 0;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + grow, q, qlen) < 0)
		return 0;
	qr = (qlen + 3) & ~3U; /* zero padding: the checksum's own rule */
	barrier_var(qr);
	if (qr > FW_QUOTE_MAX)
		return 0;

	if (p->family == 4) {
		__u8 *ip = h + ETH_HLEN, *ic = ip + 20;

		ip[0] = 0x45;
		st16(ip + 2, 28 + qlen);
		ip[6] = FW_IP_DF;
		ip[8] = FW_TTL;
		ip[9] = PROTO_ICMP;
		__builtin_memcpy(ip + 12, p->dst, 4);
		__builtin_memcpy(ip + 16, p->src, 4);
		st_csum(ip + 10, bpf_csum_diff(NULL, 0, (void *)ip, 20, 0));
		ic[0] = FW_ICMP_UNREACH;
		ic[1] = p->proto == PROTO_UDP ? FW_ICMP_PORT_UNREACH : FW_ICMP_ADMIN_PROHIB;
		c = bpf_csum_diff(NULL, 0, (void *)ic, 8, 0);
		if (c < 0)
			return 0;
		c = bpf_csum_diff(NULL, 0, (void *)q, qr, c);
		if (c < 0)
			return 0;
		st_csum(ic + 2, c);
		return bpf_skb_store_bytes(skb, 0, h, ETH_HLEN + 28, 0) == 0;
	} else {
		__u8 *ip = h + ETH_HLEN, *ic = ip + 40;

		ip[0] = 0x60;
		st16(ip + 4, 8 + qlen);
		ip[6] = PROTO_ICMPV6;
		ip[7] = FW_TTL;
		__builtin_memcpy(ip + 8, p->dst, 16);
		__builtin_memcpy(ip + 24, p->src, 16);
		ic[0] = FW_ICMP6_UNREACH;
		ic[1] = p->proto == PROTO_UDP ? FW_ICMP6_PORT_UNREACH : FW_ICMP6_ADMIN_PROHIB;
		/* Pseudo-header: the addresses (in ip), length, next header. */
		sum = bpf_htons(8 + qlen) + bpf_htons(PROTO_ICMPV6);
		c = bpf_csum_diff(NULL, 0, (void *)(ip + 8), 32, 0);
		if (c < 0)
			return 0;
		c = bpf_csum_diff(NULL, 0, (void *)ic, 8, c);
		if (c < 0)
			return 0;
		c = bpf_csum_diff(NULL, 0, (void *)q, qr, c);
		if (c < 0)
			return 0;
		st_csum(ic + 2, (__u64)(__u32)c + sum);
		return bpf_skb_store_bytes(skb, 0, h, ETH_HLEN + 48, 0) == 0;
	}
}

/* fw_reject answers a rejected packet when it may and the rate allows;
 * the answer resumes the other direction's chain after this slot (so the
 * firewall does not judge its own answer). */
static __always_inline int fw_reject(struct __sk_buff *skb,
				     const struct fw_pkt *p, __u32 dir,
				     __u64 now, int *redirect_ret)
{
	__u32 k = FW_CONF_REJECT_RATE, *rate;
	int ok;

	if (!fw_can_answer(p)) {
		fw_count(FW_STAT_REJECT_SKIPPED);
		return VF_DROP;
	}
	rate = bpf_map_lookup_elem(&fw_config, &k);
	if (!rate || !fw_rate_ok(FW_LIMIT_REJECT, *rate, now)) {
		fw_count(FW_STAT_REJECT_LIMITED);
		return VF_DROP;
	}
	ok = p->proto == PROTO_TCP ? fw_answer_tcp(skb, p) : fw_answer_icmp(skb, p);
	if (!ok) {
		fw_count(FW_STAT_REJECT_SKIPPED);
		return VF_DROP;
	}
	fw_count(FW_STAT_REJECTED);
	skb->mark = VF_MARK_RESUME | (dir ^ 1) << 8 | (vf_cur_slot(skb) + 1);
	*redirect_ret = bpf_redirect(vf_ifindex, dir == VF_DIR_FROM_VM ? 0 : BPF_F_INGRESS);
	return VF_REDIRECT;
}

/* fw_log writes one flow-log event, within the flow-log rate; 1 if
 * written. */
static __always_inline int fw_log(struct __sk_buff *skb, const struct fw_pkt *p,
				  __u32 dir, __u32 kind, __u32 rule,
				  __u32 answered, __u64 now)
{
	__u32 k = FW_CONF_LOG_RATE, *rate;
	struct fw_event *e;

	rate = bpf_map_lookup_elem(&fw_config, &k);
	if (!rate || !fw_rate_ok(FW_LIMIT_LOG, *rate, now)) {
		fw_count(FW_STAT_LOG_LIMITED);
		return 0;
	}
	e = bpf_ringbuf_reserve(&fw_events, sizeof(*e), 0);
	if (!e) {
		fw_count(FW_STAT_LOG_LOST);
		return 0;
	}
	e->ts = now;
	__builtin_memcpy(e->src, p->src, 16);
	__builtin_memcpy(e->dst, p->dst, 16);
	e->p1 = p->p1;
	e->p2 = p->p2;
	e->family = p->family;
	e->proto = p->proto;
	e->dir = dir;
	e->kind = kind;
	e->rule = rule;
	e->len = skb->len;
	e->tcp_flags = p->tcp_flags;
	e->answered = answered;
	e->pad[0] = e->pad[1] = 0;
	bpf_ringbuf_submit(e, 0);
	fw_count(FW_STAT_LOG_EVENTS);
	return 1;
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
					if (v->flags & FW_CT_LOGGED)
						fw_log(skb, &p, dir, FW_EV_CUT, v->rule, 0, now);
					bpf_map_delete_elem(&fw_conntrack, &key);
					return VF_DROP;
				}
				v->gen = epoch;
			}
			advance(v, &p, dir);
			v->expires = now + ct_timeout(v->state);
			v->packets++;
			v->bytes += skb->len;
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
	if (action != FW_ALLOW) {
		int verdict = VF_DROP;

		if (action == FW_REJECT)
			verdict = fw_reject(skb, &p, dir, now, redirect_ret);
		if (conf & FW_CONF_LOG)
			fw_log(skb, &p, dir, action == FW_REJECT ? FW_EV_REJECT : FW_EV_DENY,
			       fv & FW_FINAL_RULE_MASK, verdict == VF_REDIRECT, now);
		return verdict;
	}
	if (tracked) {
		struct fw_ct_val nv = {.gen = epoch, .p1 = p.p1, .p2 = p.p2,
				       .orig_dir = dir, .created = now,
				       .packets = 1, .bytes = skb->len,
				       .rule = fv & FW_FINAL_RULE_MASK};

		if (p.proto == PROTO_TCP) {
			if (p.tcp_flags & TCP_RST)
				return VF_CONTINUE;
			nv.state = (p.tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN ?
					   CT_SYN_SENT : CT_ESTABLISHED;
		} else {
			nv.state = p.proto == PROTO_UDP ? CT_UDP : CT_OTHER;
		}
		nv.expires = now + ct_timeout(nv.state);
		if ((conf & FW_CONF_LOG) && ((fv & FW_FINAL_LOG) || (conf & FW_CONF_LOG_ALL)))
			nv.flags = FW_CT_LOGGED;
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
		if (nv.flags & FW_CT_LOGGED)
			fw_log(skb, &p, dir, FW_EV_ALLOW, nv.rule, 0, now);
	}
	return VF_CONTINUE;
}

char __license[] SEC("license") = "Dual BSD/GPL";
