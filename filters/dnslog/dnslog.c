//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * dnslog fast path: punt DNS, continue everything else, so only DNS frames
 * pay for the Go slow path that logs them.
 *
 * A frame is DNS when it is IPv4 or IPv6 (no extension headers), UDP or
 * TCP, with source or destination port 53. IPv4 fragments after the first
 * carry no ports and continue. No maps of its own. Verdicts: VF_PUNT for
 * DNS, VF_CONTINUE otherwise; the filter is fail-open, so a dead slow path
 * never blocks DNS.
 */
#include "vnicfilter.h"
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>

#define DNS_PORT 53
#define IP_FRAG_OFFSET 0x1fff
#define IPV4_MIN_HLEN 20
#define L4_PORTS_LEN 4
/* Ethernet, the longest IPv4 header, the L4 ports: what must be linear. */
#define HDR_PULL_LEN (ETH_HLEN + 60 + L4_PORTS_LEN)

/* dns_port reports whether the UDP/TCP header at l4 has port 53 on either
 * side (both headers start with the two ports). */
static __always_inline int dns_port(void *l4, void *end)
{
	__be16 *ports = l4;

	if ((void *)(ports + 2) > end)
		return 0;
	return ports[0] == bpf_htons(DNS_PORT) || ports[1] == bpf_htons(DNS_PORT);
}

static __always_inline int is_dns(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return 0;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		__u32 hlen;

		if ((void *)(ip + 1) > end)
			return 0;
		if (ip->protocol != IPPROTO_UDP && ip->protocol != IPPROTO_TCP)
			return 0;
		if (ip->frag_off & bpf_htons(IP_FRAG_OFFSET))
			return 0;
		hlen = ip->ihl * 4;
		if (hlen < IPV4_MIN_HLEN)
			return 0;
		return dns_port((void *)ip + hlen, end);
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end)
			return 0;
		if (ip6->nexthdr != IPPROTO_UDP && ip6->nexthdr != IPPROTO_TCP)
			return 0;
		return dns_port(ip6 + 1, end);
	}
	return 0;
}

VF_FILTER(vf_dnslog)
{
	__u32 linear = skb->data_end - skb->data;

	/* Headers in paged data (rare on taps): make them linear once. */
	if (linear < HDR_PULL_LEN && linear < skb->len)
		bpf_skb_pull_data(skb, skb->len < HDR_PULL_LEN ? skb->len : HDR_PULL_LEN);
	return is_dns(skb) ? VF_PUNT : VF_CONTINUE;
}

char __license[] SEC("license") = "Dual BSD/GPL";
