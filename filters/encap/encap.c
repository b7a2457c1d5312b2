//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * encap instance: puts one vNIC into an overlay segment (docs/encap.md).
 *
 * from-vm (tc ingress of the tap): every frame ends here, none reaches the
 * host bridge.
 *   - source MAC not the VM's           -> drop (SRC_MAC)
 *   - larger than the underlay carries  -> drop (OVERSIZE), never fragmented
 *   - ARP request / IPv6 neighbour solicitation for an address of the
 *     segment's table -> reply built in place, sent back to the VM
 *   - unicast to a local vNIC of the segment -> redirect to its tap
 *   - unicast to a MAC of the segment on another host -> tunnel key (host,
 *     VNI, GBP group) and redirect to the collect-metadata VXLAN device
 *   - broadcast, multicast, unknown unicast -> one copy to every other
 *     local vNIC of the segment and one per member host; original consumed
 * Both directions lower the MSS option of TCP SYNs to what fits (MSS_CLAMPED).
 * to-vm (tc egress of the tap): only frames the filter itself delivered
 * (skb->mark ENCAP_MARK | group) pass, with the sender's group copied into
 * the chain metadata (vf_meta.identity); any other frame is dropped
 * (FOREIGN).
 *
 * Maps (per instance unless noted):
 *   encap_config      ARRAY[1]  live table generation, VXLAN ifindex
 *   encap_fib         HASH      (gen, MAC) -> remote host
 *   encap_members     ARRAY[2]  per generation: the segment's other hosts
 *   encap_neigh       HASH      (gen, family, IP) -> MAC, for ARP/ND replies
 *   encap_host_ports  ARRAY_OF_MAPS[1] -> the host's port map (encap_rx.c)
 *   encap_host_flood  ARRAY_OF_MAPS[1] -> the host's flood lists
 *   encap_stats       PERCPU_ARRAY[ENCAP_NUM_STATS] of struct vf_counter
 * Constants set at load: VNI, group, the VM's MAC, the local underlay
 * address, the largest frame the underlay carries.
 */
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include "vnicfilter.h"
#include "encap.h"

#define ENCAP_MAX_MEMBERS ENCAP_MEMBER_LIST_LEN /* member hosts of a segment */
#define ENCAP_TTL 64	     /* outer IPv4 TTL / IPv6 hop limit */

#define ENCAP_S_TX_REMOTE 0	 /* unicast tunnelled to a member host */
#define ENCAP_S_TX_LOCAL 1	 /* unicast to a local vNIC of the segment */
#define ENCAP_S_TX_FLOOD 2	 /* broadcast/multicast/unknown frames */
#define ENCAP_S_FLOOD_REMOTE 3	 /* their copies to member hosts */
#define ENCAP_S_FLOOD_LOCAL 4	 /* their copies to local vNICs */
#define ENCAP_S_ARP_REPLY 5	 /* ARP requests answered */
#define ENCAP_S_ND_REPLY 6	 /* neighbour solicitations answered */
#define ENCAP_S_DROP_OVERSIZE 7	 /* too large for the underlay */
#define ENCAP_S_DROP_SRC_MAC 8	 /* source MAC not the VM's */
#define ENCAP_S_RX 9		 /* to-vm frames delivered by the filter */
#define ENCAP_S_DROP_FOREIGN 10	 /* to-vm frames from outside the segment */
#define ENCAP_S_ERROR 11	 /* a helper failed; frame dropped */
#define ENCAP_S_DROP_SELF 12	 /* unicast to the VM's own MAC */
#define ENCAP_S_MSS_CLAMPED 13	 /* TCP SYNs whose MSS option was lowered */
#define ENCAP_NUM_STATS 14

#define TCP_OPT_EOL 0
#define TCP_OPT_NOP 1
#define TCP_OPT_MSS 2
#define TCP_MAX_OPTS 40 /* option bytes a TCP header can carry */
#define TCP_FLAG_SYN 0x02
#define IPV4_FRAG_MASK 0x3fff /* MF and offset */

#define ENCAP_FAM_V4 4
#define ENCAP_FAM_V6 6

#define ARPHRD_ETHER_ 1
#define ARPOP_REQUEST_ 1
#define ARPOP_REPLY_ 2
#define ICMPV6_NS 135
#define ICMPV6_NA 136
#define ND_OPT_SLLA 1
#define ND_OPT_TLLA 2
#define ND_NA_FLAGS_SO 0x60000000 /* solicited, override */
#define ND_HOP_LIMIT 255

struct encap_cfg {
	__u32 gen;
	__u32 vxlan_ifindex;
};

struct encap_fib_key {
	__u32 gen;
	__u8 mac[6];
	__u16 pad;
};

struct encap_member_list {
	__u32 n;
	__u32 pad;
	struct encap_host hosts[ENCAP_MAX_MEMBERS];
};

struct encap_neigh_key {
	__u32 gen;
	__u32 family;
	__u8 ip[16];
};

struct encap_neigh_entry {
	__u8 mac[6];
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct encap_cfg);
} encap_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * 16384); /* set by the loader: 2 x fib_size */
	__type(key, struct encap_fib_key);
	__type(value, struct encap_host);
} encap_fib SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct encap_member_list);
} encap_members SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * 16384); /* set by the loader: 2 x fib_size */
	__type(key, struct encap_neigh_key);
	__type(value, struct encap_neigh_entry);
} encap_neigh SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct ENCAP_HOST_PORTS_INNER);
} encap_host_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct ENCAP_HOST_FLOOD_INNER);
} encap_host_flood SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ENCAP_NUM_STATS);
	__type(key, __u32);
	__type(value, struct vf_counter);
} encap_stats SEC(".maps");

/* Set by the loader from the instance's parameters. */
volatile const __u32 encap_vni = 0;
volatile const __u32 encap_group = 0;
volatile const __u8 encap_mac[6] = {};
volatile const __u32 encap_local[4] = {};
/* Largest frame (skb->len, Ethernet header included) whose encapsulation
 * fits the underlay MTU. */
volatile const __u32 encap_max_len = 1514;
/* Largest TCP MSS whose segments fit (IPv4, IPv6 inner packets); 0: no
 * clamping. */
volatile const __u32 encap_mss4 = 0;
volatile const __u32 encap_mss6 = 0;

struct arp_frame {
	struct ethhdr eth;
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[6];
	__u8 spa[4];
	__u8 tha[6];
	__u8 tpa[4];
} __attribute__((packed));

/* A neighbour solicitation with exactly one option (the source link-layer
 * address), as Linux and every common guest send it; the advertisement
 * answering it has the same size. */
struct nd_frame {
	struct ethhdr eth;
	struct ipv6hdr ip6;
	__u8 type;
	__u8 code;
	__u16 csum;
	__be32 flags;
	__u8 target[16];
	__u8 opt_type;
	__u8 opt_len;
	__u8 opt_mac[6];
} __attribute__((packed));

/* Offsets in struct nd_frame: source and destination address, ICMPv6. */
#define ND_ADDRS_OFF (ETH_HLEN + 8)
#define ND_ICMP_OFF (ETH_HLEN + 40)

static __always_inline void stat(struct __sk_buff *skb, __u32 s)
{
	struct vf_counter *c = bpf_map_lookup_elem(&encap_stats, &s);

	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
}

static __always_inline void copy_mac(__u8 *dst, const __u8 *src)
{
	__builtin_memcpy(dst, src, 6);
}

/* oversize reports whether the frame's encapsulation (or, for a GSO frame,
 * that of each of its segments) would exceed the underlay MTU. */
static __always_inline int oversize(struct __sk_buff *skb, __u16 proto)
{
	__u32 len = skb->len + (skb->vlan_present ? 4 : 0);
	__u32 hdr = ETH_HLEN + sizeof(struct ipv6hdr) + 20; /* smallest guess */
	__u8 b[2];

	if (!skb->gso_size)
		return len > encap_max_len;
	/* A GSO frame is cut into segments of gso_size payload bytes plus
	 * its headers: find their length. */
	if (proto == bpf_htons(ETH_P_IP)) {
		__u8 ihl, l4;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ihl, 1) ||
		    bpf_skb_load_bytes(skb, ETH_HLEN + 9, &l4, 1))
			return 1;
		hdr = ETH_HLEN + (ihl & 0xf) * 4;
		if (l4 == IPPROTO_TCP) {
			if (bpf_skb_load_bytes(skb, hdr + 12, b, 1))
				return 1;
			hdr += (b[0] >> 4) * 4;
		} else {
			hdr += 8;
		}
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		__u8 l4;

		if (bpf_skb_load_bytes(skb, ETH_HLEN + 6, &l4, 1))
			return 1;
		hdr = ETH_HLEN + sizeof(struct ipv6hdr);
		if (l4 == IPPROTO_TCP) {
			if (bpf_skb_load_bytes(skb, hdr + 12, b, 1))
				return 1;
			hdr += (b[0] >> 4) * 4;
		} else {
			hdr += 8;
		}
	}
	return hdr + skb->gso_size > encap_max_len;
}

static __always_inline int set_tunnel(struct __sk_buff *skb,
				      const struct encap_host *h)
{
	struct bpf_tunnel_key key = {};
	struct encap_vxlan_md md = {.gbp = encap_group};
	__u64 flags;
	int r;

	key.tunnel_id = encap_vni;
	key.tunnel_ttl = ENCAP_TTL;
	if (h->v6) {
		for (int i = 0; i < 4; i++) {
			key.remote_ipv6[i] = h->addr[i];
			key.local_ipv6[i] = encap_local[i];
		}
		flags = BPF_F_TUNINFO_IPV6;
	} else {
		key.remote_ipv4 = h->addr[0];
		key.local_ipv4 = encap_local[0];
		flags = BPF_F_DONT_FRAGMENT;
	}
	r = bpf_skb_set_tunnel_key(skb, &key, sizeof(key), flags);
	if (r < 0 || !encap_group)
		return r;
	/* The vxlan driver writes the GBP header (G bit, group policy id)
	 * from this option when the device has the gbp flag. */
	return bpf_skb_set_tunnel_opt(skb, &md, sizeof(md));
}

/* mark_delivery marks a frame for a local vNIC: the receiving instance's
 * to-vm half accepts it and learns the sender's group. */
static __always_inline void mark_delivery(struct __sk_buff *skb, __u32 group)
{
	skb->mark = ENCAP_MARK | (group & ENCAP_GROUP_MASK);
}

/* arp_reply answers an ARP request for an address of the segment. It
 * returns a verdict, or -1 when the frame is not one it answers. */
static __always_inline int arp_reply(struct __sk_buff *skb, __u32 gen,
				     int *redirect_ret)
{
	struct encap_neigh_key k = {.gen = gen, .family = ENCAP_FAM_V4};
	struct arp_frame f;
	struct encap_neigh_entry *n;
	__u8 ip[4];

	if (bpf_skb_load_bytes(skb, 0, &f, sizeof(f)))
		return -1;
	if (f.htype != bpf_htons(ARPHRD_ETHER_) ||
	    f.ptype != bpf_htons(ETH_P_IP) || f.hlen != 6 || f.plen != 4 ||
	    f.op != bpf_htons(ARPOP_REQUEST_))
		return -1;
	__builtin_memcpy(k.ip, f.tpa, 4);
	n = bpf_map_lookup_elem(&encap_neigh, &k);
	/* Never answer for the asker's own address (a duplicate address
	 * probe would see a conflict) nor a gratuitous ARP. */
	if (!n || encap_mac_eq(n->mac, encap_mac) ||
	    __builtin_memcmp(f.spa, f.tpa, 4) == 0)
		return -1;
	__builtin_memcpy(ip, f.tpa, 4);
	copy_mac(f.eth.h_dest, f.eth.h_source);
	copy_mac(f.eth.h_source, n->mac);
	f.op = bpf_htons(ARPOP_REPLY_);
	copy_mac(f.tha, f.sha);
	__builtin_memcpy(f.tpa, f.spa, 4);
	copy_mac(f.sha, n->mac);
	__builtin_memcpy(f.spa, ip, 4);
	if (bpf_skb_store_bytes(skb, 0, &f, sizeof(f), 0)) {
		stat(skb, ENCAP_S_ERROR);
		return VF_DROP;
	}
	stat(skb, ENCAP_S_ARP_REPLY);
	mark_delivery(skb, 0);
	*redirect_ret = bpf_redirect(vf_ifindex, 0);
	return VF_REDIRECT;
}

static __always_inline __u16 csum_fold(__s64 s)
{
	__u32 c = (__u32)s;

	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	return (__u16)~c;
}

/* nd_reply answers a neighbour solicitation for an address of the
 * segment with a solicited, override advertisement. -1: not answered. */
static __always_inline int nd_reply(struct __sk_buff *skb, __u32 gen,
				    int *redirect_ret)
{
	struct encap_neigh_key k = {.gen = gen, .family = ENCAP_FAM_V6};
	struct nd_frame f;
	struct encap_neigh_entry *n;
	__be32 pseudo[2];
	__s64 sum;
	__u8 any = 0;

	if (skb->len != sizeof(f) || bpf_skb_load_bytes(skb, 0, &f, sizeof(f)))
		return -1;
	if (f.ip6.nexthdr != IPPROTO_ICMPV6 || f.ip6.hop_limit != ND_HOP_LIMIT ||
	    f.ip6.payload_len != bpf_htons(sizeof(f) - ETH_HLEN - sizeof(struct ipv6hdr)) ||
	    f.type != ICMPV6_NS || f.code != 0 || f.opt_type != ND_OPT_SLLA ||
	    f.opt_len != 1)
		return -1;
	for (int i = 0; i < 16; i++)
		any |= f.ip6.saddr.in6_u.u6_addr8[i];
	if (!any) /* duplicate address detection: leave it to the segment */
		return -1;
	__builtin_memcpy(k.ip, f.target, 16);
	n = bpf_map_lookup_elem(&encap_neigh, &k);
	if (!n || encap_mac_eq(n->mac, encap_mac))
		return -1;
	copy_mac(f.eth.h_dest, f.eth.h_source);
	copy_mac(f.eth.h_source, n->mac);
	f.ip6.daddr = f.ip6.saddr;
	__builtin_memcpy(&f.ip6.saddr, f.target, 16);
	f.type = ICMPV6_NA;
	f.csum = 0;
	f.flags = bpf_htonl(ND_NA_FLAGS_SO);
	f.opt_type = ND_OPT_TLLA;
	copy_mac(f.opt_mac, n->mac);
	/* ICMPv6 checksum: pseudo-header (addresses, length, next header)
	 * and the 32-byte message. */
	pseudo[0] = bpf_htonl(sizeof(f) - ETH_HLEN - sizeof(struct ipv6hdr));
	pseudo[1] = bpf_htonl(IPPROTO_ICMPV6);
	sum = bpf_csum_diff(NULL, 0, (void *)&f + ND_ADDRS_OFF, 32, 0);
	sum = bpf_csum_diff(NULL, 0, pseudo, sizeof(pseudo), sum);
	sum = bpf_csum_diff(NULL, 0, (void *)&f + ND_ICMP_OFF, 32, sum);
	f.csum = csum_fold(sum);
	if (bpf_skb_store_bytes(skb, 0, &f, sizeof(f), 0)) {
		stat(skb, ENCAP_S_ERROR);
		return VF_DROP;
	}
	stat(skb, ENCAP_S_ND_REPLY);
	mark_delivery(skb, 0);
	*redirect_ret = bpf_redirect(vf_ifindex, 0);
	return VF_REDIRECT;
}

/* flood sends one copy to each other local vNIC of the segment and one to
 * each member host, then consumes the original. */
static __always_inline int flood(struct __sk_buff *skb, __u32 gen,
				 const struct encap_cfg *cfg)
{
	__u32 zero = 0, vni = encap_vni, vxlan = cfg->vxlan_ifindex;
	struct encap_member_list *m;
	struct encap_flood_list *fl;
	void *ports;

	stat(skb, ENCAP_S_TX_FLOOD);
	ports = bpf_map_lookup_elem(&encap_host_flood, &zero);
	fl = ports ? bpf_map_lookup_elem(ports, &vni) : NULL;
	if (fl) {
		mark_delivery(skb, encap_group);
		for (int i = 0; i < ENCAP_MAX_LOCAL; i++) {
			__u32 ifindex;

			if (i >= fl->n)
				break;
			ifindex = fl->ifindex[i];
			if (ifindex == vf_ifindex)
				continue;
			if (bpf_clone_redirect(skb, ifindex, 0) == 0)
				stat(skb, ENCAP_S_FLOOD_LOCAL);
			else
				stat(skb, ENCAP_S_ERROR);
		}
		skb->mark = 0;
	}
	m = bpf_map_lookup_elem(&encap_members, &gen);
	if (m) {
		for (int i = 0; i < ENCAP_MAX_MEMBERS; i++) {
			if (i >= m->n)
				break;
			if (set_tunnel(skb, &m->hosts[i]) < 0 ||
			    bpf_clone_redirect(skb, vxlan, 0) != 0) {
				stat(skb, ENCAP_S_ERROR);
				continue;
			}
			stat(skb, ENCAP_S_FLOOD_REMOTE);
		}
	}
	return VF_CONSUMED;
}

/* clamp_mss lowers the MSS option of a TCP SYN (or SYN-ACK) to what the
 * overlay carries, so both ends size their segments to fit whatever MTU the
 * guest has. The checksum is updated (not for CHECKSUM_PARTIAL frames,
 * whose checksum the kernel computes later over the rewritten bytes). */
static __always_inline void clamp_mss(struct __sk_buff *skb, __u16 proto)
{
	__u32 l4off, optlen, limit;
	__u8 doff, flags;

	if (proto == bpf_htons(ETH_P_IP)) {
		__u8 vihl, l4;
		__be16 frag;

		if (!encap_mss4 || bpf_skb_load_bytes(skb, ETH_HLEN, &vihl, 1) ||
		    bpf_skb_load_bytes(skb, ETH_HLEN + 6, &frag, 2) ||
		    bpf_skb_load_bytes(skb, ETH_HLEN + 9, &l4, 1))
			return;
		if (l4 != IPPROTO_TCP || (frag & bpf_htons(IPV4_FRAG_MASK)))
			return;
		l4off = ETH_HLEN + (vihl & 0xf) * 4;
		limit = encap_mss4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		__u8 l4;

		if (!encap_mss6 || bpf_skb_load_bytes(skb, ETH_HLEN + 6, &l4, 1) ||
		    l4 != IPPROTO_TCP)
			return;
		l4off = ETH_HLEN + sizeof(struct ipv6hdr);
		limit = encap_mss6;
	} else {
		return;
	}
	if (bpf_skb_load_bytes(skb, l4off + 12, &doff, 1) ||
	    bpf_skb_load_bytes(skb, l4off + 13, &flags, 1) ||
	    !(flags & TCP_FLAG_SYN))
		return;
	optlen = (doff >> 4) * 4;
	if (optlen <= 20)
		return;
	optlen -= 20;
	if (optlen > TCP_MAX_OPTS)
		return;
	/* Options are read one by one with bpf_skb_load_bytes: a variable
	 * offset into a stack copy is refused by the verifier. */
	for (__u32 i = 0; i < TCP_MAX_OPTS - 3; i++) {
		__be16 old, new;
		__u8 kl[2];
		__u16 mss;

		if (i >= optlen || bpf_skb_load_bytes(skb, l4off + 20 + i, kl, 2) ||
		    kl[0] == TCP_OPT_EOL)
			return;
		if (kl[0] == TCP_OPT_NOP)
			continue;
		if (kl[0] != TCP_OPT_MSS) {
			/* skip the option: len - 1 more bytes */
			if (kl[1] < 2)
				return;
			i += kl[1] - 1;
			continue;
		}
		if (kl[1] != 4 || bpf_skb_load_bytes(skb, l4off + 20 + i + 2, &old, 2))
			return;
		mss = bpf_ntohs(old);
		if (mss <= limit)
			return;
		new = bpf_htons(limit);
		if (bpf_skb_store_bytes(skb, l4off + 20 + i + 2, &new, 2, BPF_F_RECOMPUTE_CSUM) ||
		    bpf_l4_csum_replace(skb, l4off + 16, old, new, 2)) {
			stat(skb, ENCAP_S_ERROR);
			return;
		}
		stat(skb, ENCAP_S_MSS_CLAMPED);
		return;
	}
}

static __always_inline int to_vm(struct __sk_buff *skb)
{
	if ((skb->mark & ENCAP_MARK_MASK) != ENCAP_MARK) {
		stat(skb, ENCAP_S_DROP_FOREIGN);
		return VF_DROP;
	}
	vf_meta_set_identity(skb, skb->mark & ENCAP_GROUP_MASK);
	stat(skb, ENCAP_S_RX);
	{
		__be16 proto;

		if (!bpf_skb_load_bytes(skb, 12, &proto, 2))
			clamp_mss(skb, proto);
	}
	return VF_CONTINUE;
}

VF_FILTER(vf_encap)
{
	__u32 zero = 0, gen;
	struct encap_port_key pk = {.vni = encap_vni};
	struct encap_fib_key fk = {};
	struct encap_host *h;
	struct encap_port *p;
	struct encap_cfg *cfg;
	struct ethhdr eth;
	void *ports;
	int v;

	if (dir == VF_DIR_TO_VM)
		return to_vm(skb);
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)))
		return VF_DROP;
	if (!encap_mac_eq(eth.h_source, encap_mac)) {
		stat(skb, ENCAP_S_DROP_SRC_MAC);
		return VF_DROP;
	}
	clamp_mss(skb, eth.h_proto);
	if (oversize(skb, eth.h_proto)) {
		stat(skb, ENCAP_S_DROP_OVERSIZE);
		return VF_DROP;
	}
	cfg = bpf_map_lookup_elem(&encap_config, &zero);
	if (!cfg)
		return VF_FAIL;
	gen = cfg->gen & 1;

	if (eth.h_proto == bpf_htons(ETH_P_ARP)) {
		v = arp_reply(skb, gen, redirect_ret);
		if (v >= 0)
			return v;
	} else if (eth.h_proto == bpf_htons(ETH_P_IPV6)) {
		v = nd_reply(skb, gen, redirect_ret);
		if (v >= 0)
			return v;
	}

	if (!(eth.h_dest[0] & 1)) {
		if (encap_mac_eq(eth.h_dest, encap_mac)) {
			stat(skb, ENCAP_S_DROP_SELF);
			return VF_DROP;
		}
		copy_mac(pk.mac, eth.h_dest);
		ports = bpf_map_lookup_elem(&encap_host_ports, &zero);
		p = ports ? bpf_map_lookup_elem(ports, &pk) : NULL;
		if (p) {
			stat(skb, ENCAP_S_TX_LOCAL);
			mark_delivery(skb, encap_group);
			*redirect_ret = bpf_redirect(p->ifindex, 0);
			return VF_REDIRECT;
		}
		fk.gen = gen;
		copy_mac(fk.mac, eth.h_dest);
		h = bpf_map_lookup_elem(&encap_fib, &fk);
		if (h) {
			if (set_tunnel(skb, h) < 0) {
				stat(skb, ENCAP_S_ERROR);
				return VF_DROP;
			}
			stat(skb, ENCAP_S_TX_REMOTE);
			*redirect_ret = bpf_redirect(cfg->vxlan_ifindex, 0);
			return VF_REDIRECT;
		}
	}
	return flood(skb, gen, cfg);
}

char __license[] SEC("license") = "Dual BSD/GPL";
