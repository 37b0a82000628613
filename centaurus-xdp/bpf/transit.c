// SPDX-License-Identifier: Apache-2.0
/* The Mizar datapath, in XDP and in TC.
 *
 * Every program exists twice from one source: as an XDP program (the *_xdp hook) and as
 * a TC classifier (the *_tc hook, attached at ingress). Both make the same decision and
 * write the same bytes; they differ only in how they move headers and hand a frame on.
 * XDP frames carry no segmentation or checksum-offload state, so on a veth every
 * segment is copied into XDP's pages and the stack must segment and checksum before it;
 * TC keeps the socket buffer, and with it 64 KB GSO super-frames and offloaded checksums
 * (bpf_skb_adjust_room marks the encapsulation, so a real NIC segments it), and delivers
 * into an endpoint's namespace with bpf_redirect_peer. A host uses one hook for all its
 * programs; hosts with different hooks interoperate, as the wire format is the same.
 *
 * transit_agent: on the host side of each endpoint's veth (the endpoint's egress). Answers
 *   ARP for any address with the gateway MAC, so no ARP crosses the overlay; translates a
 *   packet to a scaled endpoint (a Service's VIP and port) to one of its backends, chosen
 *   by a Maglev table over the flow hash and then held by connection tracking; delivers to
 *   endpoints of the same host directly; encapsulates everything else in Geneve with the
 *   return-to-sender option, to the destination's learned host or else to one of its
 *   subnet's bouncers (by flow hash), and redirects it onto the substrate interface.
 *   Replies of translated connections are translated back where they are delivered (on
 *   the client's host, which holds the connection).
 * transit_xdp: on the substrate interface (ingress). Decapsulates overlay frames for local
 *   endpoints into their veth, learning the sender's host; as a bouncer rewrites the outer
 *   destination to the endpoint's host; as a divider forwards to one of the destination
 *   subnet's bouncers. Drops malformed overlay frames and counts why; leaves every other
 *   frame to the kernel.
 * xdp_pass: for the peer of a veth that XDP frames are redirected into.
 * xdp_tx: the benchmarks' traffic generator.
 *
 * All XDP programs but xdp_tx are multi-buffer programs (xdp.frags): a frame larger than a page (a
 * jumbo substrate's) arrives with its headers in the linear part and the rest in
 * fragments, so headers are read from ctx->data..data_end as before and lengths come from
 * bpf_xdp_get_buff_len. A veth keeps its peer's segmentation offloads and its full MTU
 * only when its program is multi-buffer.
 *
 * The userspace reference model (src/model.rs) decides exactly as this file does; the
 * differential tests hold them to the same verdicts and bytes. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "maps.h"

#define GENEVE_PORT 6081
#define ETH_P_BRIDGING 0x6558
#define OPTION_CLASS 0xfff0
#define OPT_RETURN_TO_SENDER 0x01
#define MAX_OPTIONS 8

/* Hides a value from the compiler, so a bounds mask after it stays for the verifier (which
 * does not track what a modulo implies). */
#define opaque(x) asm volatile("" : "+r"(x))

_Static_assert((MAX_BOUNCERS & (MAX_BOUNCERS - 1)) == 0, "a power of two");
_Static_assert((MAX_DIVIDERS & (MAX_DIVIDERS - 1)) == 0, "a power of two");
#define LEARN_TTL_NS (30ULL * 1000 * 1000 * 1000)

/* The MAC the agent answers ARP with and delivers frames from: the VPC's virtual gateway. */
static const __u8 gateway_mac[6] = {0x02, 0xce, 0x47, 0x57, 0x00, 0x01};

struct eth {
	__u8 dst[6];
	__u8 src[6];
	__be16 proto;
} __attribute__((packed));

struct ipv4 {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__u32 saddr;
	__u32 daddr;
} __attribute__((packed));

struct udp {
	__be16 source;
	__be16 dest;
	__be16 len;
	__u16 check;
} __attribute__((packed));

struct geneve {
	__u8 opt_len;  /* version (2 bits) and options length in words */
	__u8 flags;    /* O and C bits */
	__be16 proto;
	__u8 vni[3];
	__u8 reserved;
} __attribute__((packed));

struct rts_option {
	__be16 class;
	__u8 type;
	__u8 len;
	__u32 host;
	__u8 mac[6];
	__u8 pad[2];
} __attribute__((packed));

struct arp {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[6];
	__u32 spa;
	__u8 tha[6];
	__u32 tpa;
} __attribute__((packed));

/* Outer headers the datapath writes in front of the inner frame. */
struct overlay {
	struct eth eth;
	struct ipv4 ip;
	struct udp udp;
	struct geneve gn;
} __attribute__((packed));

#define ENCAP_LEN (sizeof(struct overlay) + sizeof(struct rts_option))

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct host_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ep_key);
	__type(value, struct ep_value);
} endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct net_key);
	__type(value, struct bounced_value);
} bounced SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct net_key);
	__type(value, struct net_value);
} divided SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct agent_value);
} agents SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ep_key);
	__type(value, struct learned_value);
} learned SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct host_mac);
} hosts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	/* 10 KB values, allocated as Services come: an update swaps a whole table in. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct svc_key);
	__type(value, struct svc_value);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ct_key);
	__type(value, struct ipport);
} conntrack SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ep_key);
	__type(value, struct policy_value);
} policy_eps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct policy_peer_key);
	__type(value, struct policy_bits);
} policy_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct policy_port_key);
	__type(value, struct policy_bits);
} policy_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline int count(__u32 what, int action)
{
	__u64 *n = bpf_map_lookup_elem(&counters, &what);
	if (n)
		*n += 1;
	return action;
}

/* The hook a program body is compiled for; every function below takes it as a constant,
 * so each program holds only its own hook's code. */
enum hook { XDP, TC };

/* The packet pointers, each made opaque once loaded: where paths that loaded them merge,
 * the compiler would otherwise merge the 32-bit fields and widen them again, arithmetic
 * on packet pointers that the verifier refuses. */
static __always_inline void *pkt_data(void *ctx, enum hook h)
{
	void *p;
	/* Nor may the compiler keep the field's address in a register across calls: the
	 * verifier refuses loads through a context pointer that was moved. */
	opaque(ctx);
	if (h == TC)
		p = (void *)(long)((struct __sk_buff *)ctx)->data;
	else
		p = (void *)(long)((struct xdp_md *)ctx)->data;
	opaque(p);
	return p;
}

static __always_inline void *pkt_end(void *ctx, enum hook h)
{
	void *p;
	opaque(ctx);
	if (h == TC)
		p = (void *)(long)((struct __sk_buff *)ctx)->data_end;
	else
		p = (void *)(long)((struct xdp_md *)ctx)->data_end;
	opaque(p);
	return p;
}

/* The whole frame's length, fragments included. */
static __always_inline __u32 pkt_len(void *ctx, enum hook h)
{
	if (h == TC)
		return ((struct __sk_buff *)ctx)->len;
	return bpf_xdp_get_buff_len(ctx);
}

/* The interface the frame arrived on. */
static __always_inline __u32 pkt_ifindex(void *ctx, enum hook h)
{
	if (h == TC)
		return ((struct __sk_buff *)ctx)->ifindex;
	return ((struct xdp_md *)ctx)->ingress_ifindex;
}

/* The transport header's bytes the programs read: the ports, and a TCP header's checksum. */
#define L4_HEADER 20
/* The headers the agent reads of a frame without IPv4 options: Ethernet, IPv4 and
 * transport. */
#define AGENT_HEADERS (14 + 20 + L4_HEADER)
/* The headers the transit program reads of an overlay frame with the return-to-sender
 * option only: the overlay's, the inner Ethernet, IPv4 and transport headers. */
#define TRANSIT_HEADERS (50 + 16 + 14 + 20 + L4_HEADER)

/* Makes the first `want` bytes of the frame (or all of it) directly readable where a
 * socket buffer holds fewer in its linear part. Packet pointers must be reloaded after. */
static __always_inline void pull_headers(void *ctx, enum hook h, __u32 want)
{
	if (h != TC || pkt_data(ctx, h) + want <= pkt_end(ctx, h))
		return;
	__u32 len = pkt_len(ctx, h);
	bpf_skb_pull_data(ctx, len < want ? len : want);
}

static __always_inline int act_drop(enum hook h)
{
	return h == TC ? TC_ACT_SHOT : XDP_DROP;
}

static __always_inline int act_pass(enum hook h)
{
	return h == TC ? TC_ACT_OK : XDP_PASS;
}

/* Back out of the interface the frame came in on. */
static __always_inline int act_tx(void *ctx, enum hook h)
{
	if (h == TC)
		return bpf_redirect(pkt_ifindex(ctx, h), 0);
	return XDP_TX;
}

/* Into the endpoint behind host-side veth `ifindex`: XDP transmits on the veth, TC
 * enters the endpoint's namespace directly at its interface's ingress. A tap (EP_TAP)
 * has no peer: both transmit on it, to the guest. */
static __always_inline int act_deliver(__u32 ifindex, __u8 flags, enum hook h)
{
	if (h == TC && !(flags & EP_TAP))
		return bpf_redirect_peer(ifindex, 0);
	return bpf_redirect(ifindex, 0);
}

#define DROP(reason) count(reason, act_drop(h))

#define ENCAP_FLAGS                                                                     \
	(BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 |                      \
	 BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH |                    \
	 BPF_F_ADJ_ROOM_ENCAP_L2(sizeof(struct eth)))

static __always_inline __u32 fnv(__u32 h, __u8 b)
{
	return (h ^ b) * 0x01000193;
}

static __always_inline __u32 fnv32(__u32 h, __u32 v)
{
	const __u8 *b = (const __u8 *)&v;
	h = fnv(h, b[0]);
	h = fnv(h, b[1]);
	h = fnv(h, b[2]);
	return fnv(h, b[3]);
}

/* The flow hash of an inner IPv4 packet: addresses, protocol and ports as they are on the
 * wire (ports only for unfragmented TCP and UDP whose header is present). */
static __always_inline __u32 flow_hash(struct ipv4 *ip, void *data_end)
{
	__u8 ports[4] = {0, 0, 0, 0};
	__u8 ihl = ip->ver_ihl & 0x0f;
	if ((ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) &&
	    (ip->frag_off & bpf_htons(0x3fff)) == 0) {
		__u8 *l4 = (__u8 *)ip + ihl * 4;
		if ((void *)(l4 + 4) <= data_end)
			__builtin_memcpy(ports, l4, 4);
	}
	__u32 h = 0x811c9dc5;
	h = fnv32(h, ip->saddr);
	h = fnv32(h, ip->daddr);
	h = fnv(h, ip->protocol);
	h = fnv(h, ports[0]);
	h = fnv(h, ports[1]);
	h = fnv(h, ports[2]);
	return fnv(h, ports[3]);
}

static __always_inline __u16 flow_port(__u32 hash)
{
	return 49152 | (hash & 0x3fff);
}

static __always_inline void ip_checksum(struct ipv4 *ip)
{
	__u16 *w = (__u16 *)ip;
	__u32 sum = 0;
	ip->check = 0;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	ip->check = ~sum;
}

/* Writes fresh outer Ethernet, IPv4 and UDP headers for a frame of `len` bytes. */
static __always_inline void write_outer(struct overlay *o, struct host_config *me,
					const __u8 *to_mac, __u32 to, __u8 ttl, __u32 flow,
					__u32 len)
{
	__builtin_memcpy(o->eth.dst, to_mac, 6);
	__builtin_memcpy(o->eth.src, me->mac, 6);
	o->eth.proto = bpf_htons(ETH_P_IP);
	o->ip.ver_ihl = 0x45;
	o->ip.tos = 0;
	o->ip.tot_len = bpf_htons(len - sizeof(struct eth));
	o->ip.id = 0;
	o->ip.frag_off = bpf_htons(0x4000); /* DF */
	o->ip.ttl = ttl;
	o->ip.protocol = IPPROTO_UDP;
	o->ip.saddr = me->ip;
	o->ip.daddr = to;
	ip_checksum(&o->ip);
	o->udp.source = bpf_htons(flow_port(flow));
	o->udp.dest = bpf_htons(GENEVE_PORT);
	o->udp.len = bpf_htons(len - sizeof(struct eth) - sizeof(struct ipv4));
	o->udp.check = 0;
}

/* One's complement arithmetic as the kernel's csum_add, csum_fold and csum_replace4 do it,
 * so XDP writes the same checksums as TC's helpers. */
static __always_inline __u32 csum_add(__u32 a, __u32 b)
{
	a += b;
	return a + (a < b);
}

static __always_inline __u16 csum_fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* The checksum at `sum` after a covered word changes from `from` to `to` (RFC 1624). */
static __always_inline void csum_replace(__u16 *sum, __u32 from, __u32 to)
{
	*sum = csum_fold(csum_add(csum_add(~(__u32)*sum, ~from), to));
}

/* The transport header's offset in a frame whose IPv4 header (at `ip`, valid) carries an
 * unfragmented TCP or UDP packet with its ports present; 0 for anything else. */
static __always_inline __u32 transport(struct ipv4 *ip, void *data, void *data_end)
{
	if ((ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP) ||
	    (ip->frag_off & bpf_htons(0x3fff)) != 0)
		return 0;
	__u32 l4 = sizeof(struct eth) + (ip->ver_ihl & 0x0f) * 4;
	if (data + l4 + 4 > data_end)
		return 0;
	return l4;
}

/* Where a transport header's checksum is. */
static __always_inline __u32 check_at(__u8 proto)
{
	return proto == IPPROTO_TCP ? 16 : 6;
}

/* Rewrites the destination (to_dst) or the source address and port of the TCP or UDP
 * packet whose transport header is `l4` bytes into the frame, with both checksums; a UDP
 * packet without a checksum keeps none. Packet pointers must be reloaded after. */
static __always_inline int nat(void *ctx, enum hook h, __u32 l4, __u8 proto, int to_dst,
			       struct ipport to)
{
	void *data = pkt_data(ctx, h);
	void *data_end = pkt_end(ctx, h);
	struct ipv4 *ip = data + sizeof(struct eth);
	l4 &= 0x7f; /* at most 14 + 60 */
	__u8 *tp = data + l4;
	if ((void *)(ip + 1) > data_end || (void *)(tp + check_at(proto) + 2) > data_end)
		return -1;
	__u32 ip_at = sizeof(struct eth) + (to_dst ? 16 : 12), port_at = l4 + (to_dst ? 2 : 0);
	__u32 from_ip = to_dst ? ip->daddr : ip->saddr;
	__u16 from_port = *(__u16 *)(tp + (to_dst ? 2 : 0));
	__u16 *check = (__u16 *)(tp + check_at(proto));
	if (h == TC) {
		__u64 mangled = proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
		__u32 check_off = l4 + check_at(proto);
		if (bpf_l4_csum_replace(ctx, check_off, from_ip, to.ip,
					BPF_F_PSEUDO_HDR | mangled | 4) ||
		    bpf_l4_csum_replace(ctx, check_off, from_port, to.port, mangled | 2) ||
		    bpf_l3_csum_replace(ctx, sizeof(struct eth) + 10, from_ip, to.ip, 4) ||
		    bpf_skb_store_bytes(ctx, ip_at, &to.ip, 4, 0) ||
		    bpf_skb_store_bytes(ctx, port_at, &to.port, 2, 0))
			return -1;
		return 0;
	}
	/* As the helpers with BPF_F_MARK_MANGLED_0 do for UDP, each step. */
	if (proto == IPPROTO_TCP || *check != 0) {
		csum_replace(check, from_ip, to.ip);
		if (proto == IPPROTO_UDP && *check == 0)
			*check = 0xffff;
		csum_replace(check, from_port, to.port);
		if (proto == IPPROTO_UDP && *check == 0)
			*check = 0xffff;
	}
	__u16 ip_check = ip->check;
	csum_replace(&ip_check, from_ip, to.ip);
	ip->check = ip_check;
	if (to_dst)
		ip->daddr = to.ip;
	else
		ip->saddr = to.ip;
	*(__u16 *)(tp + (to_dst ? 2 : 0)) = to.port;
	return 0;
}

/* Whether `b` is one of the scaled endpoint's backends (a binary search of the sorted
 * array: at most 9 steps over 256). */
static __always_inline int is_backend(struct svc_value *svc, struct ipport *b)
{
	__u32 lo = 0, hi = svc->count;
	if (hi > MAX_BACKENDS)
		return 0;
	__u64 want = (__u64)bpf_ntohl(b->ip) << 16 | bpf_ntohs(b->port);
	for (int i = 0; i < 9 && lo < hi; i++) {
		__u32 mid = (lo + hi) / 2;
		struct ipport *m = &svc->backends[mid & (MAX_BACKENDS - 1)];
		__u64 at = (__u64)bpf_ntohl(m->ip) << 16 | bpf_ntohs(m->port);
		if (at == want)
			return 1;
		if (at < want)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

enum nat { NAT_NONE, NAT_DONE, NAT_NO_BACKEND, NAT_MALFORMED };

/* The agent's scaled-endpoint step for a packet an endpoint of `vni` sends, with flow hash
 * `flow`: a packet to a Service's VIP and port goes to the backend connection tracking
 * holds for its flow, while that still is a backend, or else to the Maglev table's (by
 * the flow, or by the client's address under ClientIP affinity), which connection
 * tracking then holds, with the entry that translates the replies back. */
static __always_inline enum nat nat_to_backend(void *ctx, enum hook h, __u32 vni, __u32 flow)
{
	void *data = pkt_data(ctx, h);
	void *data_end = pkt_end(ctx, h);
	struct ipv4 *ip = data + sizeof(struct eth);
	if ((void *)(ip + 1) > data_end)
		return NAT_NONE;
	__u32 l4 = transport(ip, data, data_end);
	__be16 *ports = data + (l4 & 0x7f);
	if (!l4 || (void *)(ports + 2) > data_end)
		return NAT_NONE;
	__u8 proto = ip->protocol;
	struct svc_key sk = {.vni = vni, .vip = ip->daddr, .port = ports[1], .proto = proto};
	struct svc_value *svc = bpf_map_lookup_elem(&services, &sk);
	if (!svc)
		return NAT_NONE;
	if ((void *)ports + check_at(proto) + 2 > data_end)
		return NAT_MALFORMED;
	struct ct_key ck = {
		.vni = vni,
		.client = ip->saddr,
		.peer = ip->daddr,
		.client_port = ports[0],
		.peer_port = ports[1],
		.proto = proto,
		.dir = CT_SERVICE,
	};
	struct ipport to;
	struct ipport *held = bpf_map_lookup_elem(&conntrack, &ck);
	if (held && is_backend(svc, held)) {
		to = *held;
	} else {
		__u32 n = svc->count;
		if (n == 0 || n > MAX_BACKENDS)
			return NAT_NO_BACKEND;
		__u32 hash = (svc->flags & SVC_AFFINITY) ? fnv32(0x811c9dc5, ip->saddr) : flow;
		__u32 slot = hash % MAGLEV_SIZE;
		opaque(slot);
		__u32 i = svc->slots[slot & (MAGLEV_SLOTS - 1)];
		if (i >= n)
			return NAT_NO_BACKEND;
		to = svc->backends[i & (MAX_BACKENDS - 1)];
		bpf_map_update_elem(&conntrack, &ck, &to, BPF_ANY);
		struct ct_key rk = {
			.vni = vni,
			.client = ip->saddr,
			.peer = to.ip,
			.client_port = ports[0],
			.peer_port = to.port,
			.proto = proto,
			.dir = CT_REPLY,
		};
		struct ipport vip = {.ip = ip->daddr, .port = ports[1]};
		bpf_map_update_elem(&conntrack, &rk, &vip, BPF_ANY);
	}
	if (nat(ctx, h, l4, proto, 1, to))
		return NAT_MALFORMED;
	return NAT_DONE;
}

/* A reply of a translated connection, about to be delivered to its client (an endpoint of
 * `vni` on this host), comes from the Service's VIP and port again. */
static __always_inline int nat_to_service(void *ctx, enum hook h, __u32 vni)
{
	void *data = pkt_data(ctx, h);
	void *data_end = pkt_end(ctx, h);
	struct ipv4 *ip = data + sizeof(struct eth);
	if ((void *)(ip + 1) > data_end)
		return 0;
	__u32 l4 = transport(ip, data, data_end);
	__be16 *ports = data + (l4 & 0x7f);
	if (!l4 || (void *)(ports + 2) > data_end)
		return 0;
	__u8 proto = ip->protocol;
	struct ct_key rk = {
		.vni = vni,
		.client = ip->daddr,
		.peer = ip->saddr,
		.client_port = ports[1],
		.peer_port = ports[0],
		.proto = proto,
		.dir = CT_REPLY,
	};
	struct ipport *vip = bpf_map_lookup_elem(&conntrack, &rk);
	if (!vip || (void *)ports + check_at(proto) + 2 > data_end)
		return 0;
	if (nat(ctx, h, l4, proto, 0, *vip))
		return -1;
	count(COUNT_REPLY_NAT, 0);
	return 0;
}

/* Whether the classes of the peer and of the port share one: the rules of direction `way`
 * of the endpoint `k` (whose policy is `pv`) allow the packet. */
static __always_inline int policy_allows(struct policy_value *pv, struct ep_key *k, __u32 way,
					 __u32 peer, __u8 proto, int has_port, __be16 port)
{
	struct policy_peer_key pk = {
		.prefixlen = 96 + 32,
		.vni = k->vni,
		.ip = k->ip,
		.way = way,
		.generation = pv->generation,
		.peer = peer,
	};
	struct policy_bits *peers = bpf_map_lookup_elem(&policy_peers, &pk);
	if (!peers)
		return 0;
	struct policy_bits *ports = 0;
	if (has_port) {
		struct policy_port_key qk = {
			.prefixlen = 96 + 16,
			.vni = k->vni,
			.ip = k->ip,
			.way = way,
			.generation = pv->generation,
			.proto = proto,
			.port = port,
		};
		ports = bpf_map_lookup_elem(&policy_ports, &qk);
	}
	struct policy_bits *any = &pv->any_port[way & 1];
	__u64 hit = 0;
#pragma unroll
	for (int i = 0; i < POLICY_WORDS; i++)
		hit |= peers->w[i] & (any->w[i] | (ports ? ports->w[i] : 0));
	return hit != 0;
}

/* The NetworkPolicy step for a packet (a valid IPv4 header behind the Ethernet header) of
 * `vni` leaving (WAY_EGRESS, from its source) or entering (WAY_INGRESS, to its
 * destination) a local endpoint: 1 to let it through. An endpoint without a policy takes
 * everything. With one, a packet its rules allow, or of a direction it does not isolate,
 * is let through and its connection tracked, at this endpoint and in this direction; any
 * other passes only as a packet of a connection tracked at this endpoint (either way). */
static __always_inline int police(void *ctx, enum hook h, __u32 vni, __u32 way)
{
	void *data = pkt_data(ctx, h);
	void *data_end = pkt_end(ctx, h);
	struct ipv4 *ip = data + sizeof(struct eth);
	if ((void *)(ip + 1) > data_end)
		return 0;
	struct ep_key k = {.vni = vni, .ip = way == WAY_INGRESS ? ip->daddr : ip->saddr};
	struct policy_value *pv = bpf_map_lookup_elem(&policy_eps, &k);
	if (!pv)
		return 1;
	__u8 proto = ip->protocol;
	__be16 sport = 0, dport = 0;
	int has_port = 0;
	if ((proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP) &&
	    (ip->frag_off & bpf_htons(0x3fff)) == 0) {
		__be16 *ports = data + ((sizeof(struct eth) + (ip->ver_ihl & 0x0f) * 4) & 0x7f);
		if ((void *)(ports + 2) <= data_end) {
			sport = ports[0];
			dport = ports[1];
			has_port = 1;
		}
	}
	__u8 isolates = way == WAY_INGRESS ? POLICY_ISOLATE_INGRESS : POLICY_ISOLATE_EGRESS;
	__u32 peer = way == WAY_INGRESS ? ip->saddr : ip->daddr;
	struct ct_key ck = {
		.vni = vni,
		.client = ip->saddr,
		.peer = ip->daddr,
		.client_port = sport,
		.peer_port = dport,
		.proto = proto,
		.dir = way == WAY_INGRESS ? CT_POLICY_IN : CT_POLICY_OUT,
	};
	/* A tracked connection's packets skip the rules: one lookup once established. */
	if (bpf_map_lookup_elem(&conntrack, &ck))
		return 1;
	if (!(pv->flags & isolates) || policy_allows(pv, &k, way, peer, proto, has_port, dport)) {
		struct ipport none = {};
		bpf_map_update_elem(&conntrack, &ck, &none, BPF_ANY);
		return 1;
	}
	struct ct_key rk = {
		.vni = vni,
		.client = ck.peer,
		.peer = ck.client,
		.client_port = dport,
		.peer_port = sport,
		.proto = proto,
		.dir = way == WAY_INGRESS ? CT_POLICY_OUT : CT_POLICY_IN,
	};
	return bpf_map_lookup_elem(&conntrack, &rk) != 0;
}

/* Rewrites a frame delivered into a local endpoint of `vni`: from the gateway, to the
 * endpoint, a reply of a translated connection from its Service; unless the endpoint's
 * policy refuses it. */
static __always_inline int deliver(void *ctx, enum hook h, __u32 vni, struct ep_value *ep)
{
	if (h == TC) {
		/* IPv4 options put the ports further in. */
		struct ipv4 *ip = pkt_data(ctx, h) + sizeof(struct eth);
		if ((void *)(ip + 1) <= pkt_end(ctx, h) && (ip->ver_ihl & 0x0f) > 5)
			pull_headers(ctx, h,
				     sizeof(struct eth) + (ip->ver_ihl & 0x0f) * 4 + L4_HEADER);
	}
	if (!police(ctx, h, vni, WAY_INGRESS))
		return DROP(DROP_POLICY);
	if (nat_to_service(ctx, h, vni))
		return DROP(DROP_MALFORMED);
	void *data = pkt_data(ctx, h);
	void *data_end = pkt_end(ctx, h);
	struct eth *eth = data;
	if ((void *)(eth + 1) > data_end)
		return DROP(DROP_MALFORMED);
	__builtin_memcpy(eth->dst, ep->mac, 6);
	__builtin_memcpy(eth->src, gateway_mac, 6);
	count(COUNT_DELIVERED, 0);
	return act_deliver(ep->ifindex, ep->flags, h);
}

/* Makes room for the overlay's headers in front of the frame's IPv4 header, leaving the
 * frame's own Ethernet header behind them as the inner one. */
static __always_inline int push_overlay(void *ctx, enum hook h)
{
	if (h == XDP)
		return bpf_xdp_adjust_head(ctx, -(int)ENCAP_LEN);
	/* The room opens after the Ethernet header; the header moves to its end. */
	if (bpf_skb_adjust_room(ctx, ENCAP_LEN, BPF_ADJ_ROOM_MAC, ENCAP_FLAGS))
		return -1;
	void *data = pkt_data(ctx, h);
	if (data + ENCAP_LEN + sizeof(struct eth) > pkt_end(ctx, h))
		return -1;
	__builtin_memcpy(data + ENCAP_LEN, data, sizeof(struct eth));
	return 0;
}

/* Removes `len` bytes of overlay headers, inner Ethernet header included, from the front
 * of the frame, keeping an Ethernet header in front of the inner IPv4 header: the inner
 * one (XDP) or the outer one (TC); deliver() rewrites it either way. */
static __always_inline int pop_overlay(void *ctx, enum hook h, __u32 len)
{
	if (h == XDP)
		return bpf_xdp_adjust_head(ctx, (int)len);
	return bpf_skb_adjust_room(ctx, -(int)len, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO);
}

static __always_inline struct learned_value *learned_host(struct ep_key *key)
{
	struct learned_value *l = bpf_map_lookup_elem(&learned, key);
	if (l && bpf_ktime_get_ns() - l->seen_ns < LEARN_TTL_NS)
		return l;
	return 0;
}

enum hop { HOP_DROP, HOP_LOCAL, HOP_FORWARD };

/* The transit decision for a packet to (vni, dst) at this host, as HostTables::transit
 * makes it: a local endpoint (*ep), another host (*to), or a drop (*to holds the reason). */
static __always_inline enum hop transit_hop(struct host_config *me, __u32 vni, __u32 dst,
					    __u32 flow, struct ep_value **ep, __u32 *to)
{
	struct ep_key key = {.vni = vni, .ip = dst};
	*ep = bpf_map_lookup_elem(&endpoints, &key);
	if (*ep && ((*ep)->flags & EP_LOCAL))
		return HOP_LOCAL;
	if (*ep && (*ep)->host_ip != me->ip) {
		*to = (*ep)->host_ip;
		return HOP_FORWARD;
	}
	struct net_key net = {.prefixlen = 64, .vni = bpf_htonl(vni), .ip = dst};
	struct bounced_value *b = bpf_map_lookup_elem(&bounced, &net);
	*to = DROP_UNKNOWN_ENDPOINT; /* our subnet, no such endpoint */
	if (b && (b->flags & NET_SUBNET))
		return HOP_DROP;
	struct net_value *d = bpf_map_lookup_elem(&divided, &net);
	if (d) {
		*to = DROP_NO_ROUTE;
		if (!(d->flags & NET_SUBNET))
			return HOP_DROP;
		*to = DROP_UNKNOWN_ENDPOINT;
		__u32 n = d->count;
		if (n == 0 || n > MAX_BOUNCERS)
			return HOP_DROP;
		__u32 i = flow % n;
		opaque(i);
		i &= MAX_BOUNCERS - 1;
		if (d->hosts[i] == me->ip)
			return HOP_DROP;
		*to = d->hosts[i];
		return HOP_FORWARD;
	}
	if (b) {
		*to = DROP_NO_ROUTE;
		__u32 n = b->count;
		if (n == 0 || n > MAX_DIVIDERS)
			return HOP_DROP;
		__u32 i = flow % n;
		opaque(i);
		i &= MAX_DIVIDERS - 1;
		if (b->dividers[i] == me->ip)
			return HOP_DROP;
		*to = b->dividers[i];
		return HOP_FORWARD;
	}
	*to = DROP_UNKNOWN_VNI;
	return HOP_DROP;
}

static __always_inline int answer_arp(void *ctx, enum hook h, struct agent_value *agent)
{
	void *data = pkt_data(ctx, h);
	void *data_end = pkt_end(ctx, h);
	struct eth *eth = data;
	struct arp *arp = (void *)(eth + 1);
	if ((void *)(arp + 1) > data_end)
		return DROP(DROP_MALFORMED);
	if (arp->htype != bpf_htons(1) || arp->ptype != bpf_htons(ETH_P_IP) ||
	    arp->hlen != 6 || arp->plen != 4 || arp->op != bpf_htons(1))
		return DROP(DROP_MALFORMED);
	/* Probes and announcements of the endpoint's own address get no answer. */
	if (arp->tpa == arp->spa || arp->tpa == agent->ep.ip)
		return DROP(DROP_MALFORMED);
	__u32 target = arp->tpa;
	__builtin_memcpy(eth->dst, eth->src, 6);
	__builtin_memcpy(eth->src, gateway_mac, 6);
	arp->op = bpf_htons(2);
	__builtin_memcpy(arp->tha, arp->sha, 6);
	arp->tpa = arp->spa;
	__builtin_memcpy(arp->sha, gateway_mac, 6);
	arp->spa = target;
	return count(COUNT_ARP, act_tx(ctx, h));
}

static __always_inline int agent(void *ctx, enum hook h)
{
	__u32 ifindex = pkt_ifindex(ctx, h), zero = 0;
	struct agent_value *agent = bpf_map_lookup_elem(&agents, &ifindex);
	if (!agent)
		return DROP(DROP_UNKNOWN_SOURCE);
	struct host_config *me = bpf_map_lookup_elem(&config, &zero);
	if (!me)
		return DROP(DROP_MALFORMED);

	pull_headers(ctx, h, AGENT_HEADERS);
	void *data = pkt_data(ctx, h);
	void *data_end = pkt_end(ctx, h);
	struct eth *eth = data;
	if ((void *)(eth + 1) > data_end)
		return DROP(DROP_MALFORMED);
	if (eth->proto == bpf_htons(ETH_P_ARP))
		return answer_arp(ctx, h, agent);
	if (eth->proto != bpf_htons(ETH_P_IP))
		return DROP(DROP_NOT_IPV4);
	struct ipv4 *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return DROP(DROP_MALFORMED);
	if ((ip->ver_ihl >> 4) != 4 || (ip->ver_ihl & 0x0f) < 5)
		return DROP(DROP_MALFORMED);
	if (ip->saddr != agent->ep.ip)
		return DROP(DROP_UNKNOWN_SOURCE);
	if (h == TC && (ip->ver_ihl & 0x0f) > 5) {
		/* IPv4 options put the ports further in. */
		pull_headers(ctx, h, sizeof(struct eth) + (ip->ver_ihl & 0x0f) * 4 + L4_HEADER);
		data = pkt_data(ctx, h);
		data_end = pkt_end(ctx, h);
		ip = data + sizeof(struct eth);
		if ((void *)(ip + 1) > data_end)
			return DROP(DROP_MALFORMED);
	}

	__u32 flow = flow_hash(ip, data_end);
	switch (nat_to_backend(ctx, h, agent->ep.vni, flow)) {
	case NAT_NONE:
		break;
	case NAT_NO_BACKEND:
		return DROP(DROP_NO_BACKEND);
	case NAT_MALFORMED:
		return DROP(DROP_MALFORMED);
	case NAT_DONE:
		count(COUNT_NAT, 0);
		data = pkt_data(ctx, h);
		data_end = pkt_end(ctx, h);
		ip = data + sizeof(struct eth);
		if ((void *)(ip + 1) > data_end)
			return DROP(DROP_MALFORMED);
		flow = flow_hash(ip, data_end);
		break;
	}
	if (!police(ctx, h, agent->ep.vni, WAY_EGRESS))
		return DROP(DROP_POLICY);
	data = pkt_data(ctx, h);
	data_end = pkt_end(ctx, h);
	ip = data + sizeof(struct eth);
	if ((void *)(ip + 1) > data_end)
		return DROP(DROP_MALFORMED);
	__u8 ttl = ip->ttl;
	struct ep_key dst = {.vni = agent->ep.vni, .ip = ip->daddr};
	struct ep_value *ep = bpf_map_lookup_elem(&endpoints, &dst);
	if (ep && (ep->flags & EP_LOCAL))
		return deliver(ctx, h, dst.vni, ep);

	__u32 to;
	const __u8 *to_mac = 0;
	struct learned_value *l = learned_host(&dst);
	if (l) {
		to = l->host_ip;
		to_mac = l->host_mac;
	} else {
		__u32 n = agent->count;
		if (n == 0 || n > MAX_BOUNCERS)
			return DROP(DROP_NO_BOUNCER);
		__u32 i = flow % n;
		opaque(i);
		to = agent->bouncers[i & (MAX_BOUNCERS - 1)];
		if (to == me->ip) {
			/* This host is the bouncer: take its hop here, not through the wire. */
			switch (transit_hop(me, dst.vni, dst.ip, flow, &ep, &to)) {
			case HOP_LOCAL:
				return deliver(ctx, h, dst.vni, ep);
			case HOP_DROP:
				return DROP(to);
			case HOP_FORWARD:
				break;
			}
		}
		struct host_mac *hm = bpf_map_lookup_elem(&hosts, &to);
		if (!hm)
			return DROP(DROP_NO_NEIGHBOR);
		to_mac = hm->mac;
	}
	if (ttl == 0)
		return DROP(DROP_TTL);

	__u32 vni = agent->ep.vni;
	/* Map values stay valid across the head adjustment; packet pointers do not. */
	if (push_overlay(ctx, h))
		return DROP(DROP_MALFORMED);
	data = pkt_data(ctx, h);
	data_end = pkt_end(ctx, h);
	struct overlay *o = data;
	struct rts_option *rts = (void *)(o + 1);
	if ((void *)(rts + 1) > data_end)
		return DROP(DROP_MALFORMED);
	write_outer(o, me, to_mac, to, ttl, flow, pkt_len(ctx, h));
	o->gn.opt_len = sizeof(struct rts_option) / 4;
	o->gn.flags = 0;
	o->gn.proto = bpf_htons(ETH_P_BRIDGING);
	o->gn.vni[0] = vni >> 16;
	o->gn.vni[1] = vni >> 8;
	o->gn.vni[2] = vni;
	o->gn.reserved = 0;
	rts->class = bpf_htons(OPTION_CLASS);
	rts->type = OPT_RETURN_TO_SENDER;
	rts->len = 3;
	rts->host = me->ip;
	__builtin_memcpy(rts->mac, me->mac, 6);
	rts->pad[0] = 0;
	rts->pad[1] = 0;
	count(COUNT_SENT, 0);
	return bpf_redirect(me->ifindex, 0);
}

SEC("xdp.frags")
int transit_agent(struct xdp_md *ctx)
{
	return agent(ctx, XDP);
}

SEC("classifier")
int transit_agent_tc(struct __sk_buff *skb)
{
	return agent(skb, TC);
}

/* Sends an overlay frame on to `to` (bouncer and divider roles), out of the interface it
 * came in on. */
static __always_inline int forward(void *ctx, enum hook h, struct host_config *me, __u32 to,
				   __u8 ttl, __u32 flow)
{
	if (ttl == 0)
		return DROP(DROP_TTL);
	struct host_mac *hm = bpf_map_lookup_elem(&hosts, &to);
	if (!hm)
		return DROP(DROP_NO_NEIGHBOR);
	void *data = pkt_data(ctx, h);
	void *data_end = pkt_end(ctx, h);
	struct overlay *o = data;
	if ((void *)(o + 1) > data_end)
		return DROP(DROP_MALFORMED);
	write_outer(o, me, hm->mac, to, ttl, flow, pkt_len(ctx, h));
	return count(COUNT_SENT, act_tx(ctx, h));
}

static __always_inline int transit(void *ctx, enum hook h)
{
	__u32 zero = 0;
	struct host_config *me = bpf_map_lookup_elem(&config, &zero);
	if (!me)
		return count(COUNT_PASSED, act_pass(h));
	pull_headers(ctx, h, TRANSIT_HEADERS);
	void *data = pkt_data(ctx, h);
	void *data_end = pkt_end(ctx, h);

	/* Anything but IPv4/UDP to the Geneve port of this host is the kernel's. */
	struct overlay *o = data;
	if ((void *)(&o->ip + 1) > data_end || o->eth.proto != bpf_htons(ETH_P_IP))
		return count(COUNT_PASSED, act_pass(h));
	if (o->ip.ver_ihl != 0x45 || o->ip.protocol != IPPROTO_UDP ||
	    (o->ip.frag_off & bpf_htons(0x3fff)) != 0)
		return count(COUNT_PASSED, act_pass(h));
	if ((void *)(&o->udp + 1) > data_end || o->udp.dest != bpf_htons(GENEVE_PORT) ||
	    o->ip.daddr != me->ip)
		return count(COUNT_PASSED, act_pass(h));

	/* Ours from here: anything malformed is dropped. */
	if (bpf_ntohs(o->ip.tot_len) > pkt_len(ctx, h) - sizeof(struct eth))
		return DROP(DROP_MALFORMED);
	if ((void *)(o + 1) > data_end)
		return DROP(DROP_MALFORMED);
	if ((o->gn.opt_len >> 6) != 0 || o->gn.proto != bpf_htons(ETH_P_BRIDGING))
		return DROP(DROP_MALFORMED);
	__u32 opt_len = (o->gn.opt_len & 0x3f) * 4;
	if (h == TC && opt_len > sizeof(struct rts_option)) {
		/* More options put the inner headers further in. */
		pull_headers(ctx, h, TRANSIT_HEADERS - sizeof(struct rts_option) + opt_len);
		data = pkt_data(ctx, h);
		data_end = pkt_end(ctx, h);
		o = data;
		if ((void *)(o + 1) > data_end)
			return DROP(DROP_MALFORMED);
	}
	__u8 *opts = (void *)(o + 1);
	if ((void *)(opts + opt_len) > data_end)
		return DROP(DROP_MALFORMED);

	struct rts_option *rts = 0;
	__u32 off = 0;
	for (int i = 0; i < MAX_OPTIONS; i++) {
		if (off >= opt_len)
			break;
		if (off + 4 > opt_len)
			return DROP(DROP_MALFORMED);
		__u8 *opt = opts + (off & 0xff);
		if ((void *)(opt + 4) > data_end)
			return DROP(DROP_MALFORMED);
		__u32 len = (opt[3] & 0x1f) * 4;
		if (off + 4 + len > opt_len)
			return DROP(DROP_MALFORMED);
		if (opt[0] == (OPTION_CLASS >> 8) && opt[1] == (OPTION_CLASS & 0xff) &&
		    opt[2] == OPT_RETURN_TO_SENDER) {
			if (len != 12)
				return DROP(DROP_MALFORMED);
			if ((void *)(opt + sizeof(struct rts_option)) > data_end)
				return DROP(DROP_MALFORMED);
			if (!rts)
				rts = (struct rts_option *)opt;
		} else if (opt[2] & 0x80) {
			return DROP(DROP_MALFORMED); /* a critical option we do not know */
		}
		off += 4 + len;
	}
	if (off < opt_len)
		return DROP(DROP_MALFORMED); /* more options than we walk */

	struct eth *ieth = (void *)(opts + opt_len);
	struct ipv4 *iip = (void *)(ieth + 1);
	if ((void *)(iip + 1) > data_end || ieth->proto != bpf_htons(ETH_P_IP) ||
	    (iip->ver_ihl >> 4) != 4 || (iip->ver_ihl & 0x0f) < 5)
		return DROP(DROP_MALFORMED);

	__u32 vni = (__u32)o->gn.vni[0] << 16 | (__u32)o->gn.vni[1] << 8 | o->gn.vni[2];
	__u32 flow = flow_hash(iip, data_end);
	__u8 ttl = o->ip.ttl > 0 ? o->ip.ttl - 1 : 0;
	struct ep_value *ep;
	__u32 to;
	switch (transit_hop(me, vni, iip->daddr, flow, &ep, &to)) {
	case HOP_DROP:
		return DROP(to);
	case HOP_FORWARD:
		return forward(ctx, h, me, to, ttl, flow);
	case HOP_LOCAL:
		break;
	}
	if (rts) {
		struct ep_key src = {.vni = vni, .ip = iip->saddr};
		struct learned_value *l = bpf_map_lookup_elem(&learned, &src);
		__u64 now = bpf_ktime_get_ns();
		/* Rewritten only when it changes, or at most once a second. */
		if (!l || l->host_ip != rts->host || now - l->seen_ns > 1000000000ULL) {
			struct learned_value v = {.host_ip = rts->host, .seen_ns = now};
			__builtin_memcpy(v.host_mac, rts->mac, 6);
			bpf_map_update_elem(&learned, &src, &v, BPF_ANY);
		}
	}
	if (pop_overlay(ctx, h, sizeof(struct overlay) + opt_len))
		return DROP(DROP_MALFORMED);
	return deliver(ctx, h, vni, ep);
}

SEC("xdp.frags")
int transit_xdp(struct xdp_md *ctx)
{
	return transit(ctx, XDP);
}

SEC("classifier")
int transit_tc(struct __sk_buff *skb)
{
	return transit(skb, TC);
}

SEC("xdp.frags")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

/* Sends every frame back out: with BPF_PROG_TEST_RUN on live frames, a traffic generator
 * that outruns any socket (the datapath benchmark's sender). */
SEC("xdp")
int xdp_tx(struct xdp_md *ctx)
{
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
