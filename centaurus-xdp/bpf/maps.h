/* Map layouts shared by the transit XDP program, the transit agent and the loader.
 * The Rust side (src/maps.rs) mirrors every struct with #[repr(C)]; a test compiles this
 * header and checks sizes and offsets against it. Addresses are in network byte order. */
#ifndef CENTAURUS_MAPS_H
#define CENTAURUS_MAPS_H

#include <linux/types.h>

#define MAX_BOUNCERS 16
#define MAX_DIVIDERS 16

/* endpoints: (vni, ip) -> where the endpoint is. */
struct ep_key {
	__u32 vni;
	__u32 ip;
};

#define EP_LOCAL 1 /* behind a veth of this host */

struct ep_value {
	__u32 host_ip;     /* the endpoint's host (remote entries) */
	__u32 ifindex;     /* the host-side veth (local entries) */
	__u8 mac[6];       /* the endpoint's MAC */
	__u8 flags;        /* EP_LOCAL */
	__u8 pad;
};

/* bounced and divided subnets: an LPM trie keyed by (vni, address). prefixlen counts the
 * 32 VNI bits plus the subnet's prefix length. */
struct net_key {
	__u32 prefixlen;
	__u32 vni;
	__u32 ip;
};

/* divided subnets: where a subnet's traffic goes. */
struct net_value {
	__u32 count;
	__u32 hosts[MAX_BOUNCERS];
};

/* bounced subnets: where traffic leaving the subnet goes. */
struct bounced_value {
	__u32 count;
	__u32 dividers[MAX_DIVIDERS];
};

/* transit agent metadata, keyed by the veth's ifindex. */
struct agent_value {
	struct ep_key ep;
	__u32 host_ip;
	__u8 host_mac[6];
	__u8 pad[2];
	__u32 count;
	__u32 bouncers[MAX_BOUNCERS];
};

/* per-CPU drop counters, indexed by reason. */
enum drop_reason {
	DROP_MALFORMED = 0,
	DROP_UNKNOWN_SOURCE,
	DROP_UNKNOWN_ENDPOINT,
	DROP_NO_ROUTE,
	DROP_UNKNOWN_VNI,
	DROP_NO_BOUNCER,
	DROP_TTL,
	DROP_REASONS,
};

#endif
