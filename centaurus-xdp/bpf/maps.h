/* Map layouts shared by the transit XDP program, the transit agent and the loader.
 * The Rust side (src/maps.rs) mirrors every struct with #[repr(C)]; a test compiles this
 * header and checks sizes and offsets against it. Addresses are in network byte order. */
#ifndef CENTAURUS_MAPS_H
#define CENTAURUS_MAPS_H

#include <linux/types.h>

#define MAX_BOUNCERS 16
#define MAX_DIVIDERS 16

/* config[0]: this host's substrate interface. */
struct host_config {
	__u32 ip;
	__u8 mac[6];
	__u8 pad[2];
	__u32 ifindex;
};

/* endpoints: (vni, ip) -> where the endpoint is. */
struct ep_key {
	__u32 vni;
	__u32 ip;
};

#define EP_LOCAL 1 /* behind a veth of this host */
#define EP_TAP 2   /* ... that is a tap: a VM guest's NIC, delivered to by transmitting on it */

struct ep_value {
	__u32 host_ip;     /* the endpoint's host (remote entries) */
	__u32 ifindex;     /* the host-side veth (local entries) */
	__u8 mac[6];       /* the endpoint's MAC */
	__u8 flags;        /* EP_LOCAL, EP_TAP */
	__u8 pad;
};

/* bounced and divided subnets: LPM tries keyed by (vni, address). prefixlen counts the
 * 32 VNI bits plus the subnet's prefix length. Each trie also holds one entry of
 * prefixlen 32 per VNI (flags without NET_SUBNET): "this host bounces (divides) for the
 * VPC", which matches any address of the VNI that no subnet entry matches. */
struct net_key {
	__u32 prefixlen;
	__u32 vni;
	__u32 ip;
};

#define NET_SUBNET 1 /* a subnet entry, not the VNI's own entry */

/* divided subnets: where a subnet's traffic goes (its bouncers). */
struct net_value {
	__u32 flags;
	__u32 count;
	__u32 hosts[MAX_BOUNCERS];
};

/* bounced subnets: where traffic leaving the subnet goes (the VPC's dividers). */
struct bounced_value {
	__u32 flags;
	__u32 count;
	__u32 dividers[MAX_DIVIDERS];
};

/* transit agent metadata, keyed by the host-side veth's ifindex. */
struct agent_value {
	struct ep_key ep;
	__u32 count;
	__u32 bouncers[MAX_BOUNCERS];
};

/* learned: (vni, ip) of a remote endpoint -> its host, from return-to-sender options. */
struct learned_value {
	__u32 host_ip;
	__u8 host_mac[6];
	__u8 pad[2];
	__u64 seen_ns;
};

/* hosts: substrate address -> MAC of the other hosts this one sends to. */
struct host_mac {
	__u8 mac[6];
	__u8 pad[2];
};

/* services: a scaled endpoint (vni, vip, port, protocol) -> its backends and Maglev table.
 * Every host builds the same table from the same backends (src/maglev.rs in
 * centaurus-vpc), so any host picks the same backend for a flow. */
#define MAX_BACKENDS 256
#define MAGLEV_SIZE 4093
#define MAGLEV_SLOTS 4096 /* MAGLEV_SIZE, padded to a power of two for the bounds mask */

struct svc_key {
	__u32 vni;
	__u32 vip;
	__u16 port; /* network byte order */
	__u8 proto; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

/* An address and a port (both in network byte order). */
struct ipport {
	__u32 ip;
	__u16 port;
	__u16 pad;
};

#define SVC_AFFINITY 1 /* ClientIP: the backend follows the client's address alone */

struct svc_value {
	__u32 flags;
	__u32 count;                          /* backends in use */
	struct ipport backends[MAX_BACKENDS]; /* sorted by address, then port */
	__u16 slots[MAGLEV_SLOTS];            /* slot -> index into backends */
};

/* conntrack: connections through scaled endpoints, kept on the client's host. A new flow
 * gets two entries: CT_SERVICE (peer = the VIP) -> its backend, which holds the flow on
 * it while it stays a backend; CT_REPLY (peer = the backend) -> the VIP, which turns the
 * replies back into the Service's. CT_POLICY_OUT and CT_POLICY_IN (client = the sender,
 * peer = the receiver, value unused): a packet that left (came into) an endpoint with a
 * NetworkPolicy that let it, whose connection then passes both ways there. */
#define CT_SERVICE 0
#define CT_REPLY 1
#define CT_POLICY_OUT 2
#define CT_POLICY_IN 3

struct ct_key {
	__u32 vni;
	__u32 client;
	__u32 peer;
	__u16 client_port;
	__u16 peer_port;
	__u8 proto;
	__u8 dir;
	__u8 pad[2];
};

/* NetworkPolicy, compiled (centaurus-vpc's policy.rs). Each direction of an endpoint's
 * rules is a set of classes (rules with the same ports): a packet is allowed when the
 * classes holding its peer and those holding its destination port share one. */
#define POLICY_WORDS 4 /* 256 classes */
#define WAY_INGRESS 0
#define WAY_EGRESS 1
#define POLICY_ISOLATE_INGRESS 1
#define POLICY_ISOLATE_EGRESS 2

struct policy_bits {
	__u64 w[POLICY_WORDS];
};

/* policy_eps: a local endpoint (ep_key) with a policy -> which directions it isolates, the
 * generation its trie entries are written under (a new policy is written under the other
 * one, then switched to here, so a packet never mixes two), and per direction the classes
 * that take any port. */
struct policy_value {
	__u8 flags;
	__u8 generation;
	__u8 pad[6];
	struct policy_bits any_port[2];
};

/* policy_peers: LPM (vni, endpoint, way, generation, peer): prefixlen is 96 plus the peer prefix's
 * length -> the classes whose peers hold the prefix. */
struct policy_peer_key {
	__u32 prefixlen;
	__u32 vni;
	__u32 ip;
	__u8 way;
	__u8 generation;
	__u8 pad[2];
	__u32 peer;
};

/* policy_ports: LPM (vni, endpoint, way, generation, protocol, port): prefixlen is 96 plus the
 * port prefix's length -> the classes whose ports hold the prefix. */
struct policy_port_key {
	__u32 prefixlen;
	__u32 vni;
	__u32 ip;
	__u8 way;
	__u8 generation;
	__u8 proto;
	__u8 pad;
	__u16 port; /* network byte order */
	__u8 pad2[2];
};

/* per-CPU counters: drops by reason, then what was sent. */
enum counter {
	DROP_MALFORMED = 0,
	DROP_UNKNOWN_SOURCE,
	DROP_UNKNOWN_ENDPOINT,
	DROP_NO_ROUTE,
	DROP_UNKNOWN_VNI,
	DROP_NO_BOUNCER,
	DROP_TTL,
	DROP_NO_NEIGHBOR,
	DROP_NOT_IPV4,   /* from an endpoint, neither IPv4 nor ARP (IPv6, say) */
	DROP_NO_BACKEND, /* to a scaled endpoint without backends */
	DROP_POLICY,     /* refused by the endpoint's NetworkPolicy */
	COUNT_DELIVERED, /* redirected into a local endpoint */
	COUNT_SENT,      /* encapsulated or forwarded onto the substrate */
	COUNT_ARP,       /* ARP requests answered */
	COUNT_PASSED,    /* not overlay traffic: left to the kernel */
	COUNT_NAT,       /* sent to a scaled endpoint, translated to its backend */
	COUNT_REPLY_NAT, /* a backend's reply, translated back to its scaled endpoint */
	COUNTERS,
};

#endif
