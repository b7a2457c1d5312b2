//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * mirror: copy (a sample of) the vNIC's frames into a ring buffer for the
 * Go side, which writes pcapng or sends ERSPAN. The frame itself is never
 * modified: every path ends in VF_CONTINUE.
 *
 * Per frame: optional match (source / destination / either prefix, IPv4 or
 * IPv6; IP protocol, after IPv6 extension headers; source / destination /
 * either TCP/UDP port range; optionally both directions), then sampling (1 in mirror_sample), then a token bucket (mirror_cost_ns of
 * credit per frame, at most one second of credit banked), then the frame,
 * truncated to mirror_snaplen, is copied with struct mirror_hdr into
 * mirror_events.
 */
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include "vnicfilter.h"
#include <bpf/bpf_endian.h>

#define MIRROR_MAX_SNAP 9216 /* jumbo frame */
#define NSEC_PER_SEC 1000000000ULL

/* Set by the Go loader. */
volatile const __u32 mirror_snaplen = MIRROR_MAX_SNAP;
volatile const __u32 mirror_sample = 1;   /* 1 in N */
volatile const __u64 mirror_cost_ns = 0;  /* 0: no rate limit */
volatile const __u32 mirror_match = 0;    /* MM_* bits: the match's terms; 0: every frame */
volatile const __u32 mirror_family = 0;   /* 4 or 6: the address terms' family */
/* Address terms: network and mask as four network-order words (IPv4: the
 * first word, the others zero). */
volatile const __u32 mirror_src_net[4] = {}, mirror_src_mask[4] = {};
volatile const __u32 mirror_dst_net[4] = {}, mirror_dst_mask[4] = {};
volatile const __u32 mirror_host_net[4] = {}, mirror_host_mask[4] = {};
volatile const __u32 mirror_proto = 0;    /* MM_PROTO: the IP protocol */
/* Port ranges, inclusive, host order. */
volatile const __u32 mirror_sport_lo = 0, mirror_sport_hi = 0;
volatile const __u32 mirror_dport_lo = 0, mirror_dport_hi = 0;
volatile const __u32 mirror_port_lo = 0, mirror_port_hi = 0;
volatile const __u32 mirror_span = 0;     /* ifindex of a monitor vNIC: clone there instead of the ring */

/* mirror_match bits (match.go builds them). */
#define MM_SRC (1 << 0)
#define MM_DST (1 << 1)
#define MM_HOST (1 << 2)   /* source or destination */
#define MM_PROTO (1 << 3)
#define MM_SPORT (1 << 4)
#define MM_DPORT (1 << 5)
#define MM_PORT (1 << 6)   /* source or destination port */
#define MM_BIDIR (1 << 7)  /* also the reverse direction */
#define MM_ADDR (MM_SRC | MM_DST | MM_HOST)
#define MM_PORTS (MM_SPORT | MM_DPORT | MM_PORT)

/* IPv6 extension headers skipped to find the transport protocol, at most
 * MIRROR_MAX_EXT of them (maxExtHeaders in match.go). */
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_DEST 60
#define MIRROR_MAX_EXT 6
#define IP_FRAG_OFFSET 0x1fff
#define IP6_FRAG_OFFSET 0xfff8

/* Counters (mirror_stats keys). */
#define MS_MIRRORED 0
#define MS_SAMPLED_OUT 1
#define MS_RATE_LIMITED 2
#define MS_RING_FULL 3
#define MS_UNMATCHED 4
#define MS_SPAN_FAILED 5 /* bpf_clone_redirect to the monitor vNIC failed */
#define MS_NUM 6

struct mirror_hdr {
	__u64 tstamp;   /* bpf_ktime_get_ns() */
	__u32 seq;      /* per instance, after sampling and rate limit */
	__u32 ifindex;
	__u32 orig_len; /* skb->len */
	__u16 cap_len;  /* bytes that follow */
	__u8 dir;       /* VF_DIR_* */
	__u8 pad;
};

struct mirror_rec {
	struct mirror_hdr h;
	__u8 data[MIRROR_MAX_SNAP];
};

struct mirror_state {
	struct bpf_spin_lock lock;
	__u32 seq;
	__u64 credit_ns; /* token bucket, in ns of credit */
	__u64 last_ns;
	__u64 sample_ctr;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} mirror_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mirror_rec);
} mirror_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mirror_state);
} mirror_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MS_NUM);
	__type(key, __u32);
	__type(value, struct vf_counter);
} mirror_stats SEC(".maps");

static __always_inline void mcount(struct __sk_buff *skb, __u32 k)
{
	struct vf_counter *c = bpf_map_lookup_elem(&mirror_stats, &k);

	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
}

/* What the match reads from a frame. */
struct mpkt {
	__u32 src[4], dst[4]; /* network order; IPv4 in word 0 */
	__u16 sport, dport;   /* host order, when ports */
	__u8 v6, proto, ports, pad;
};

static __always_inline int is_ext(__u8 nh)
{
	return nh == NEXTHDR_HOP || nh == NEXTHDR_ROUTING ||
	       nh == NEXTHDR_FRAGMENT || nh == NEXTHDR_DEST;
}

/* parse fills p; 0 when the frame cannot be read as far as the match
 * needs (not IP, cut short, bad version or header length, too many IPv6
 * extension headers): such a frame is not mirrored. */
static __always_inline int parse(struct __sk_buff *skb, struct mpkt *p)
{
	__u16 eth = bpf_ntohs(skb->protocol);
	__u32 off;
	int later = 0;

	if (eth == ETH_P_IP) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)))
			return 0;
		if (ip.version != 4 || ip.ihl < 5)
			return 0;
		p->src[0] = ip.saddr;
		p->dst[0] = ip.daddr;
		p->proto = ip.protocol;
		off = ETH_HLEN + ip.ihl * 4;
		later = (ip.frag_off & bpf_htons(IP_FRAG_OFFSET)) != 0;
	} else if (eth == ETH_P_IPV6) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)))
			return 0;
		if (ip6.version != 6)
			return 0;
		p->v6 = 1;
		__builtin_memcpy(p->src, &ip6.saddr, 16);
		__builtin_memcpy(p->dst, &ip6.daddr, 16);
		p->proto = ip6.nexthdr;
		off = ETH_HLEN + sizeof(ip6);
		if (mirror_match & (MM_PROTO | MM_PORTS)) {
			int i;

			for (i = 0; i < MIRROR_MAX_EXT; i++) {
				__u8 h[8];

				if (!is_ext(p->proto))
					break;
				/* Every extension header is at least 8 bytes. */
				if (bpf_skb_load_bytes(skb, off, h, sizeof(h)))
					return 0;
				if (p->proto == NEXTHDR_FRAGMENT) {
					later = (((__u16)h[2] << 8 | h[3]) & IP6_FRAG_OFFSET) != 0;
					off += 8;
				} else {
					off += ((__u32)h[1] + 1) * 8;
				}
				p->proto = h[0];
				if (later)
					break;
			}
			if (!later && is_ext(p->proto))
				return 0;
		}
	} else {
		return 0;
	}
	if ((mirror_match & MM_PORTS) && !later &&
	    (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP)) {
		__u16 ports[2];

		if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)))
			return 0;
		p->ports = 1;
		p->sport = bpf_ntohs(ports[0]);
		p->dport = bpf_ntohs(ports[1]);
	}
	return 1;
}

static __always_inline int in_prefix(const __u32 *a, const volatile __u32 *net,
				     const volatile __u32 *mask)
{
	return (a[0] & mask[0]) == net[0] && (a[1] & mask[1]) == net[1] &&
	       (a[2] & mask[2]) == net[2] && (a[3] & mask[3]) == net[3];
}

static __always_inline int in_range(__u16 v, __u32 lo, __u32 hi)
{
	return v >= lo && v <= hi;
}

/* terms applies the match to a packet with these addresses and ports. */
static __always_inline int terms(const struct mpkt *p, const __u32 *src,
				 const __u32 *dst, __u16 sport, __u16 dport)
{
	if ((mirror_match & MM_SRC) && !in_prefix(src, mirror_src_net, mirror_src_mask))
		return 0;
	if ((mirror_match & MM_DST) && !in_prefix(dst, mirror_dst_net, mirror_dst_mask))
		return 0;
	if ((mirror_match & MM_HOST) &&
	    !in_prefix(src, mirror_host_net, mirror_host_mask) &&
	    !in_prefix(dst, mirror_host_net, mirror_host_mask))
		return 0;
	if ((mirror_match & MM_PORTS) && !p->ports)
		return 0;
	if ((mirror_match & MM_SPORT) && !in_range(sport, mirror_sport_lo, mirror_sport_hi))
		return 0;
	if ((mirror_match & MM_DPORT) && !in_range(dport, mirror_dport_lo, mirror_dport_hi))
		return 0;
	if ((mirror_match & MM_PORT) && !in_range(sport, mirror_port_lo, mirror_port_hi) &&
	    !in_range(dport, mirror_port_lo, mirror_port_hi))
		return 0;
	return 1;
}

/* matches reports whether the frame passes the match (Match.Matches in
 * match.go is its model). */
static __always_inline int matches(struct __sk_buff *skb)
{
	struct mpkt p = {};

	if (!parse(skb, &p))
		return 0;
	if ((mirror_match & MM_ADDR) && p.v6 != (mirror_family == 6))
		return 0;
	if ((mirror_match & MM_PROTO) && p.proto != mirror_proto)
		return 0;
	if (terms(&p, p.src, p.dst, p.sport, p.dport))
		return 1;
	return (mirror_match & MM_BIDIR) &&
	       terms(&p, p.dst, p.src, p.dport, p.sport);
}

VF_FILTER(vf_mirror)
{
	__u32 zero = 0, seq;
	__u64 caplen;
	struct mirror_state *st;
	struct mirror_rec *rec;
	__u64 now, credit;

	if (mirror_match && !matches(skb)) {
		mcount(skb, MS_UNMATCHED);
		return VF_CONTINUE;
	}
	st = bpf_map_lookup_elem(&mirror_state, &zero);
	if (!st)
		return VF_CONTINUE;
	if (mirror_sample > 1 &&
	    __sync_fetch_and_add(&st->sample_ctr, 1) % mirror_sample) {
		mcount(skb, MS_SAMPLED_OUT);
		return VF_CONTINUE;
	}
	now = bpf_ktime_get_ns();
	bpf_spin_lock(&st->lock);
	if (mirror_cost_ns) {
		/* now was read before the lock: another CPU may have moved
		 * last_ns past it. Such a frame brings no new credit (an
		 * unsigned now - last_ns would wrap and refill the bucket). */
		credit = st->credit_ns;
		if (now > st->last_ns)
			credit += now - st->last_ns;
		if (credit > NSEC_PER_SEC || st->last_ns == 0)
			credit = NSEC_PER_SEC; /* burst: one second's worth */
		if (now > st->last_ns)
			st->last_ns = now;
		if (credit < mirror_cost_ns) {
			st->credit_ns = credit;
			bpf_spin_unlock(&st->lock);
			mcount(skb, MS_RATE_LIMITED);
			return VF_CONTINUE;
		}
		st->credit_ns = credit - mirror_cost_ns;
	}
	seq = st->seq++;
	bpf_spin_unlock(&st->lock);

	if (mirror_span) {
		/* SPAN: a clone of the whole frame leaves through the monitor
		 * vNIC (its egress: delivered to the monitoring VM). The
		 * original is untouched and continues the chain. */
		if (bpf_clone_redirect(skb, mirror_span, 0)) {
			mcount(skb, MS_SPAN_FAILED);
			return VF_CONTINUE;
		}
		mcount(skb, MS_MIRRORED);
		return VF_CONTINUE;
	}

	rec = bpf_map_lookup_elem(&mirror_scratch, &zero);
	if (!rec)
		return VF_CONTINUE;
	caplen = skb->len;
	if (caplen > mirror_snaplen)
		caplen = mirror_snaplen;
	/* Bound caplen to [1, MIRROR_MAX_SNAP] on the register passed to the
	 * helper: the empty asm keeps clang from merging the two checks into
	 * one on a copy, which the verifier cannot follow. */
	asm volatile("" : "+r"(caplen));
	if (caplen > MIRROR_MAX_SNAP)
		return VF_CONTINUE;
	asm volatile("" : "+r"(caplen));
	if (caplen < 1)
		return VF_CONTINUE;
	if (bpf_skb_load_bytes(skb, 0, rec->data, caplen))
		return VF_CONTINUE;
	rec->h.tstamp = now;
	rec->h.seq = seq;
	rec->h.ifindex = vf_ifindex;
	rec->h.orig_len = skb->len;
	rec->h.cap_len = caplen;
	rec->h.dir = dir;
	rec->h.pad = 0;
	if (bpf_ringbuf_output(&mirror_events, rec,
			       sizeof(rec->h) + caplen, 0)) {
		mcount(skb, MS_RING_FULL);
		return VF_CONTINUE;
	}
	mcount(skb, MS_MIRRORED);
	return VF_CONTINUE;
}

char __license[] SEC("license") = "Dual BSD/GPL";
