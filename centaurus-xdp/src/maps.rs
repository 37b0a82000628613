//! The BPF maps' layouts, defined once in `bpf/maps.h` and mirrored here with
//! `#[repr(C)]`; a test compiles the header and compares sizes and offsets. Addresses are
//! stored in network byte order, as the programs read them from packets.

use std::net::Ipv4Addr;

use centaurus_vpc::tables::{DropReason, EndpointKey};

/// Most bouncers per subnet the maps hold.
pub const MAX_BOUNCERS: usize = 16;
/// Most dividers per VPC the maps hold.
pub const MAX_DIVIDERS: usize = 16;
/// `ep_value.flags`: the endpoint is behind a veth of this host.
pub const EP_LOCAL: u8 = 1;

/// An address as the maps store it.
pub fn be(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// `struct ep_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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

/// `struct net_key` (an LPM trie key: 32 VNI bits plus the prefix).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetKey {
    /// 32 + the subnet's prefix length.
    pub prefixlen: u32,
    /// VNI (in network byte order, as the trie compares bytes).
    pub vni: u32,
    /// The subnet's address.
    pub ip: u32,
}

/// `struct net_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetValue {
    /// Hosts in use.
    pub count: u32,
    /// The subnet's bouncers.
    pub hosts: [u32; MAX_BOUNCERS],
}

/// `struct bounced_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BouncedValue {
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
    /// This host's substrate address.
    pub host_ip: u32,
    /// This host's substrate MAC.
    pub host_mac: [u8; 6],
    /// Padding.
    pub pad: [u8; 2],
    /// Bouncers in use.
    pub count: u32,
    /// The subnet's bouncers.
    pub bouncers: [u32; MAX_BOUNCERS],
}

/// Index of a drop reason in the counters (`enum drop_reason`); malformed frames are 0.
pub fn drop_index(reason: Option<DropReason>) -> u32 {
    match reason {
        None => 0,
        Some(DropReason::UnknownSource) => 1,
        Some(DropReason::UnknownEndpoint) => 2,
        Some(DropReason::NoRoute) => 3,
        Some(DropReason::UnknownVni) => 4,
        Some(DropReason::NoBouncer) => 5,
        Some(DropReason::TooManyHops) => 6,
    }
}

/// Number of drop counters.
pub const DROP_REASONS: u32 = 7;
