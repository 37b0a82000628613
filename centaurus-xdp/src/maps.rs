//! The BPF maps' layouts, defined once in `bpf/maps.h` and mirrored here with
//! `#[repr(C)]`; a test compiles the header and compares sizes and offsets. Addresses are
//! stored in network byte order, as the programs read them from packets.
// aya::Pod is an unsafe marker trait: these structs are plain bytes with no padding holes
// the kernel could leak, and every bit pattern is a valid value.
#![allow(unsafe_code)]

use std::net::Ipv4Addr;

use centaurus_vpc::maglev::Backend;
use centaurus_vpc::tables::{EndpointKey, ServiceEntry, ServiceKey};

/// Most bouncers per subnet the maps hold.
pub const MAX_BOUNCERS: usize = 16;
/// Most dividers per VPC the maps hold.
pub const MAX_DIVIDERS: usize = 16;
/// `ep_value.flags`: the endpoint is behind a veth of this host.
pub const EP_LOCAL: u8 = 1;
/// `EP_TAP`: the local endpoint's interface is a tap (a VM guest's NIC), delivered to by
/// transmitting on it rather than into a veth's peer.
pub const EP_TAP: u8 = 2;
/// Most backends of one scaled endpoint the maps hold.
pub const MAX_BACKENDS: usize = centaurus_vpc::maglev::MAX_BACKENDS;
/// Slots of a `svc_value`'s Maglev table: [`centaurus_vpc::maglev::TABLE_SIZE`], padded
/// to a power of two.
pub const MAGLEV_SLOTS: usize = 4096;
/// `svc_value.flags`: `ClientIP` affinity.
pub const SVC_AFFINITY: u32 = 1;
/// `ct_key.dir`: the entry holding a flow's backend (peer = the VIP).
pub const CT_SERVICE: u8 = 0;
/// `ct_key.dir`: the entry turning replies back (peer = the backend).
pub const CT_REPLY: u8 = 1;
/// `ct_key.dir`: a packet an endpoint's NetworkPolicy let out (client = the sender); its
/// connection passes both ways there.
pub const CT_POLICY_OUT: u8 = 2;
/// `ct_key.dir`: a packet an endpoint's NetworkPolicy let in (client = the sender).
pub const CT_POLICY_IN: u8 = 3;
/// Words of a class bitmap (`struct policy_bits`).
pub const POLICY_WORDS: usize = centaurus_vpc::policy::WORDS;
/// `policy_peer_key.way` and the index of `policy_value.any_port`: into the endpoint.
pub const WAY_INGRESS: u8 = 0;
/// Out of the endpoint.
pub const WAY_EGRESS: u8 = 1;
/// `policy_value.flags`: ingress is isolated.
pub const POLICY_ISOLATE_INGRESS: u8 = 1;
/// `policy_value.flags`: egress is isolated.
pub const POLICY_ISOLATE_EGRESS: u8 = 2;
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
    /// [`EP_LOCAL`], [`EP_TAP`].
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

/// `struct svc_key`: a scaled endpoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SvcKey {
    /// VNI.
    pub vni: u32,
    /// The Service's address.
    pub vip: u32,
    /// Its port, in network byte order.
    pub port: u16,
    /// IP protocol.
    pub proto: u8,
    /// Padding.
    pub pad: u8,
}

impl From<ServiceKey> for SvcKey {
    fn from(k: ServiceKey) -> Self {
        Self {
            vni: k.vni,
            vip: be(k.vip),
            port: k.port.to_be(),
            proto: k.protocol,
            pad: 0,
        }
    }
}

/// `struct ipport`: an address and a port, both in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IpPort {
    /// Address.
    pub ip: u32,
    /// Port.
    pub port: u16,
    /// Padding.
    pub pad: u16,
}

impl From<Backend> for IpPort {
    fn from(b: Backend) -> Self {
        Self {
            ip: be(b.ip),
            port: b.port.to_be(),
            pad: 0,
        }
    }
}

impl From<IpPort> for Backend {
    fn from(p: IpPort) -> Self {
        Backend::new(ip(p.ip), u16::from_be(p.port))
    }
}

/// `struct svc_value`: a scaled endpoint's backends and Maglev table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SvcValue {
    /// [`SVC_AFFINITY`].
    pub flags: u32,
    /// Backends in use.
    pub count: u32,
    /// The backends, sorted by address, then port.
    pub backends: [IpPort; MAX_BACKENDS],
    /// Each slot's backend, as an index into `backends`.
    pub slots: [u16; MAGLEV_SLOTS],
}

impl SvcValue {
    /// The value of a host's entry for a scaled endpoint.
    pub fn new(entry: &ServiceEntry) -> Self {
        let mut v = Self {
            flags: if entry.affinity { SVC_AFFINITY } else { 0 },
            count: entry.table.backends().len() as u32,
            backends: [IpPort::default(); MAX_BACKENDS],
            slots: [0; MAGLEV_SLOTS],
        };
        for (slot, b) in v.backends.iter_mut().zip(entry.table.backends()) {
            *slot = IpPort::from(*b);
        }
        v.slots[..entry.table.slots().len()].copy_from_slice(entry.table.slots());
        v
    }
}

/// `struct ct_key`: one direction of a connection through a scaled endpoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    /// VNI.
    pub vni: u32,
    /// The client's address.
    pub client: u32,
    /// The VIP ([`CT_SERVICE`]), the backend ([`CT_REPLY`]) or the receiver (policy).
    pub peer: u32,
    /// The client's port, in network byte order.
    pub client_port: u16,
    /// The peer's port, in network byte order.
    pub peer_port: u16,
    /// IP protocol.
    pub proto: u8,
    /// [`CT_SERVICE`], [`CT_REPLY`], [`CT_POLICY_OUT`] or [`CT_POLICY_IN`].
    pub dir: u8,
    /// Padding.
    pub pad: [u8; 2],
}

/// `struct policy_bits`: a set of policy classes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyBits {
    /// The bitmap.
    pub w: [u64; POLICY_WORDS],
}

/// `struct policy_value`: a local endpoint's policy.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyValue {
    /// [`POLICY_ISOLATE_INGRESS`], [`POLICY_ISOLATE_EGRESS`].
    pub flags: u8,
    /// The generation its trie entries are written under (0 or 1).
    pub generation: u8,
    /// Padding.
    pub pad: [u8; 6],
    /// Per direction ([`WAY_INGRESS`], [`WAY_EGRESS`]), the classes taking any port.
    pub any_port: [PolicyBits; 2],
}

/// The data of a `struct policy_peer_key` (after its prefix length).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyPeerData {
    /// VNI.
    pub vni: u32,
    /// The local endpoint's address.
    pub ip: u32,
    /// [`WAY_INGRESS`] or [`WAY_EGRESS`].
    pub way: u8,
    /// Generation.
    pub generation: u8,
    /// Padding.
    pub pad: [u8; 2],
    /// The peer prefix's address.
    pub peer: u32,
}

/// The data of a `struct policy_port_key` (after its prefix length).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyPortData {
    /// VNI.
    pub vni: u32,
    /// The local endpoint's address.
    pub ip: u32,
    /// [`WAY_INGRESS`] or [`WAY_EGRESS`].
    pub way: u8,
    /// Generation.
    pub generation: u8,
    /// IP protocol.
    pub proto: u8,
    /// Padding.
    pub pad: u8,
    /// The port prefix's first port, in network byte order.
    pub port: u16,
    /// Padding.
    pub pad2: [u8; 2],
}

/// Bits of the fixed part of a policy peer key (VNI, endpoint, way, generation, padding).
pub const POLICY_PEER_FIXED_BITS: u32 = 96;
/// Bits of the fixed part of a policy port key (VNI, endpoint, way, generation, protocol,
/// padding).
pub const POLICY_PORT_FIXED_BITS: u32 = 96;

impl PolicyBits {
    /// From a class set.
    pub fn new(classes: &centaurus_vpc::policy::Classes) -> Self {
        Self { w: *classes }
    }
}

pod!(
    PolicyBits,
    PolicyValue,
    PolicyPeerData,
    PolicyPortData,
    SvcKey,
    IpPort,
    SvcValue,
    CtKey,
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
pub const COUNTER_NAMES: [&str; 17] = [
    "drop_malformed",
    "drop_unknown_source",
    "drop_unknown_endpoint",
    "drop_no_route",
    "drop_unknown_vni",
    "drop_no_bouncer",
    "drop_ttl",
    "drop_no_neighbor",
    "drop_not_ipv4",
    "drop_no_backend",
    "drop_policy",
    "delivered",
    "sent",
    "arp_answered",
    "passed",
    "nat",
    "reply_nat",
];

/// Number of counters.
pub const COUNTERS: u32 = COUNTER_NAMES.len() as u32;
