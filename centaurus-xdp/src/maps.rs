//! The BPF maps' layouts, defined once in `bpf/maps.h` and mirrored here with
//! `#[repr(C)]`; a test compiles the header and compares sizes and offsets. Addresses are
//! stored in network byte order, as the programs read them from packets.
// aya::Pod is an unsafe marker trait: these structs are plain bytes with no padding holes
// the kernel could leak, and every bit pattern is a valid value.
#![allow(unsafe_code)]

use std::net::Ipv4Addr;

use centaurus_vpc::tables::EndpointKey;

/// Most bouncers per subnet the maps hold.
pub const MAX_BOUNCERS: usize = 16;
/// Most dividers per VPC the maps hold.
pub const MAX_DIVIDERS: usize = 16;
/// `ep_value.flags`: the endpoint is behind a veth of this host.
pub const EP_LOCAL: u8 = 1;
/// `net_value.flags` and `bounced_value.flags`: a subnet entry, not the VNI's own.
pub const NET_SUBNET: u32 = 1;

/// An address as the maps store it.
pub fn be(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// An address from the maps.
pub fn ip(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(be.to_ne_bytes())
}

macro_rules! pod {
    ($($t:ty),*) => {$(
        // SAFETY: #[repr(C)] structs of integers and byte arrays, padded explicitly.
        unsafe impl aya::Pod for $t {}
    )*};
}

/// `struct host_config`: this host's substrate interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// Substrate address.
    pub ip: u32,
    /// Substrate MAC.
    pub mac: [u8; 6],
    /// Padding.
    pub pad: [u8; 2],
    /// The substrate interface's index.
    pub ifindex: u32,
}

/// `struct ep_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EpKey {
    /// VNI.
    pub vni: u32,
    /// Address.
    pub ip: u32,
}

impl From<EndpointKey> for EpKey {
    fn from(k: EndpointKey) -> Self {
        Self {
            vni: k.vni,
            ip: be(k.ip),
        }
    }
}

impl From<EpKey> for EndpointKey {
    fn from(k: EpKey) -> Self {
        EndpointKey::new(k.vni, ip(k.ip))
    }
}

/// `struct ep_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EpValue {
    /// The endpoint's host.
    pub host_ip: u32,
    /// The host-side veth.
    pub ifindex: u32,
    /// The endpoint's MAC.
    pub mac: [u8; 6],
    /// [`EP_LOCAL`].
    pub flags: u8,
    /// Padding.
    pub pad: u8,
}

/// `struct net_key`, without the prefix length aya's LPM key adds: the VNI (big-endian,
/// as the trie compares bytes) and the subnet's address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NetData {
    /// VNI in network byte order.
    pub vni: u32,
    /// The subnet's address.
    pub ip: u32,
}

/// `struct net_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetValue {
    /// [`NET_SUBNET`].
    pub flags: u32,
    /// Hosts in use.
    pub count: u32,
    /// The subnet's bouncers.
    pub hosts: [u32; MAX_BOUNCERS],
}

/// `struct bounced_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BouncedValue {
    /// [`NET_SUBNET`].
    pub flags: u32,
    /// Dividers in use.
    pub count: u32,
    /// The VPC's dividers.
    pub dividers: [u32; MAX_DIVIDERS],
}

/// `struct agent_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentValue {
    /// The local endpoint.
    pub ep: EpKey,
    /// Bouncers in use.
    pub count: u32,
    /// The subnet's bouncers.
    pub bouncers: [u32; MAX_BOUNCERS],
}

/// `struct learned_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LearnedValue {
    /// The remote endpoint's host.
    pub host_ip: u32,
    /// That host's MAC.
    pub host_mac: [u8; 6],
    /// Padding.
    pub pad: [u8; 2],
    /// When it was last heard from (CLOCK_MONOTONIC, ns).
    pub seen_ns: u64,
}

/// `struct host_mac`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostMac {
    /// The host's substrate MAC.
    pub mac: [u8; 6],
    /// Padding.
    pub pad: [u8; 2],
}

pod!(
    HostConfig,
    EpKey,
    EpValue,
    NetData,
    NetValue,
    BouncedValue,
    AgentValue,
    LearnedValue,
    HostMac
);

/// Packs up to `N` addresses into a count and an array.
pub fn hosts_array<const N: usize>(hosts: &[Ipv4Addr]) -> (u32, [u32; N]) {
    let mut out = [0; N];
    for (slot, h) in out.iter_mut().zip(hosts) {
        *slot = be(*h);
    }
    (hosts.len().min(N) as u32, out)
}

/// The per-CPU counters (`enum counter`): drops by reason, then what was sent.
pub const COUNTER_NAMES: [&str; 13] = [
    "drop_malformed",
    "drop_unknown_source",
    "drop_unknown_endpoint",
    "drop_no_route",
    "drop_unknown_vni",
    "drop_no_bouncer",
    "drop_ttl",
    "drop_no_neighbor",
    "drop_not_ipv4",
    "delivered",
    "sent",
    "arp_answered",
    "passed",
];

/// Number of counters.
pub const COUNTERS: u32 = COUNTER_NAMES.len() as u32;
