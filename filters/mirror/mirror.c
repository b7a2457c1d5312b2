//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * mirror: copy (a sample of) the vNIC's frames into a ring buffer for the
 * Go side, which writes pcapng or sends ERSPAN. The frame itself is never
 * modified: every path ends in VF_CONTINUE.
 *
 * Per frame: optional match (IP protocol, TCP/UDP port, IPv4 CIDR), then
 * sampling (1 in mirror_sample), then a token bucket (mirror_cost_ns of
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
volatile const __u32 mirror_proto = 0;    /* 0: any IP protocol */
volatile const __u32 mirror_port = 0;     /* 0: any port (host order) */
volatile const __u32 mirror_net = 0;      /* IPv4 network (network order) */
volatile const __u32 mirror_mask = 0;     /* 0: any address */
volatile const __u32 mirror_match = 0;    /* 1: some match is set */
volatile const __u32 mirror_span = 0;     /* ifindex of a monitor vNIC: clone there instead of the ring */

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

static __always_inline int port_match(struct __sk_buff *skb, __u32 off)
{
	__u16 ports[2];

	if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)))
		return 0;
	return bpf_ntohs(ports[0]) == mirror_port ||
	       bpf_ntohs(ports[1]) == mirror_port;
}

/* matches reports whether the frame passes the optional match. */
static __always_inline int matches(struct __sk_buff *skb)
{
	__u16 proto = bpf_ntohs(skb->protocol);
	__u32 l4off, ipproto;

	if (proto == ETH_P_IP) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)))
			return 0;
		if (mirror_mask && (ip.saddr & mirror_mask) != mirror_net &&
		    (ip.daddr & mirror_mask) != mirror_net)
			return 0;
		ipproto = ip.protocol;
		l4off = ETH_HLEN + ip.ihl * 4;
		if (ip.frag_off & bpf_htons(0x1fff)) /* later fragment */
			return !mirror_port &&
			       (!mirror_proto || ipproto == mirror_proto);
	} else if (proto == ETH_P_IPV6) {
		struct ipv6hdr ip6;

		if (mirror_mask) /* IPv4 CIDR match */
			return 0;
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)))
			return 0;
		ipproto = ip6.nexthdr;
		l4off = ETH_HLEN + sizeof(ip6);
	} else {
		return 0;
	}
	if (mirror_proto && ipproto != mirror_proto)
		return 0;
	if (mirror_port) {
		if (ipproto != IPPROTO_TCP && ipproto != IPPROTO_UDP)
			return 0;
		return port_match(skb, l4off);
	}
	return 1;
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
		credit = st->credit_ns + (now - st->last_ns);
		if (credit > NSEC_PER_SEC || st->last_ns == 0)
			credit = NSEC_PER_SEC; /* burst: one second's worth */
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
