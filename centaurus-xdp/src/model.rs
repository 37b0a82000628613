//! The userspace reference model of the two XDP programs: for one frame and one host's
//! tables, the verdict the BPF code must reach, with the exact bytes it must send.
//!
//! - [`agent_egress`]: the transit agent on the host side of an endpoint's veth. ARP for a
//!   known endpoint is answered in place; an IPv4 frame to a local endpoint is redirected
//!   into its veth; anything else is Geneve-encapsulated to one of the subnet's bouncers,
//!   chosen by the flow hash, with the return-to-sender option.
//! - [`transit_ingress`]: the transit program on the substrate interface. It decapsulates
//!   frames for local endpoints, forwards as bouncer or divider, and drops what is
//!   malformed or unknown.
//!
//! Both decide with [`HostTables::egress`] and [`HostTables::transit`], the same functions
//! `SimDataplane` forwards with, so the model and the simulation agree by construction;
//! the tests walk frames across hosts to check it.

use std::net::Ipv4Addr;

use centaurus_vpc::tables::{DropReason, EndpointKey, HostTables, Location, Step};
use etherparse::{
    ArpOperation, ArpPacket, EtherType, Ethernet2Header, LinkSlice, NetSlice, SlicedPacket,
    TransportSlice,
};

use crate::geneve::{Geneve, GeneveOption, Outer, decapsulate, encapsulate, flow_port};

/// A host's own substrate interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostInfo {
    /// Substrate address.
    pub ip: Ipv4Addr,
    /// Substrate MAC.
    pub mac: [u8; 6],
}

/// Why the model drops a frame, beyond the tables' own reasons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Drop {
    /// The tables said so.
    Tables(DropReason),
    /// Not a frame the program handles (with the parser's reason).
    Malformed(String),
    /// The next host's MAC is unknown.
    NoNeighbor(Ipv4Addr),
    /// The outer TTL ran out.
    TtlExpired,
}

/// What a program does with a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Into a local endpoint's veth (XDP_REDIRECT), these bytes.
    Redirect {
        /// The host-side interface.
        veth: String,
        /// The frame.
        frame: Vec<u8>,
    },
    /// Out of the interface it came in on (XDP_TX): an overlay frame or an ARP reply.
    Transmit {
        /// The frame.
        frame: Vec<u8>,
    },
    /// Dropped (XDP_DROP), counted by reason.
    Drop(Drop),
}

/// The flow hash of an inner IPv4 frame: addresses, protocol and ports (FNV-1a), so one
/// flow keeps one path.
pub fn flow_hash(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ports: (u16, u16)) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let bytes = src
        .octets()
        .into_iter()
        .chain(dst.octets())
        .chain([proto])
        .chain(ports.0.to_be_bytes())
        .chain(ports.1.to_be_bytes());
    for b in bytes {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h
}

/// Inner IPv4 facts the programs use.
struct Inner {
    dst: Ipv4Addr,
    ttl: u8,
    flow: u32,
}

fn inner_ipv4(frame: &[u8]) -> Result<Option<Inner>, Drop> {
    let p = SlicedPacket::from_ethernet(frame).map_err(|e| Drop::Malformed(e.to_string()))?;
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        return Ok(None);
    };
    let h = ip.header();
    let ports = match &p.transport {
        Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
        Some(TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
        _ => (0, 0),
    };
    let (src, dst) = (Ipv4Addr::from(h.source()), Ipv4Addr::from(h.destination()));
    Ok(Some(Inner {
        dst,
        ttl: h.ttl(),
        flow: flow_hash(src, dst, h.protocol().0, ports),
    }))
}

/// The ARP reply for a request about an endpoint the tables know, if `frame` is one.
fn arp_reply(tables: &HostTables, vni: u32, frame: &[u8]) -> Option<Result<Vec<u8>, Drop>> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(NetSlice::Arp(arp)) = &p.net else {
        return None;
    };
    let Some(LinkSlice::Ethernet2(eth)) = &p.link else {
        return None;
    };
    if arp.operation() != ArpOperation::REQUEST || arp.target_protocol_addr().len() != 4 {
        return Some(Err(Drop::Malformed("not an IPv4 ARP request".into())));
    }
    let t = arp.target_protocol_addr();
    let target = Ipv4Addr::new(t[0], t[1], t[2], t[3]);
    let mac = match tables.endpoints.get(&EndpointKey::new(vni, target)) {
        Some(Location::Local { mac, .. } | Location::Remote { mac, .. }) => *mac,
        None => return Some(Err(Drop::Tables(DropReason::UnknownEndpoint))),
    };
    let reply = ArpPacket::new(
        arp.hw_addr_type(),
        arp.proto_addr_type(),
        ArpOperation::REPLY,
        &mac,
        arp.target_protocol_addr(),
        arp.sender_hw_addr(),
        arp.sender_protocol_addr(),
    )
    .ok()?;
    let eth = Ethernet2Header {
        source: mac,
        destination: eth.source(),
        ether_type: EtherType::ARP,
    };
    let mut out = eth.to_bytes().to_vec();
    out.extend_from_slice(&reply.to_bytes());
    Some(Ok(out))
}

/// The transit agent's verdict for `frame`, sent by local endpoint `src` on host `me`.
/// `neighbor` gives the MAC of another host on the substrate.
pub fn agent_egress(
    tables: &HostTables,
    me: HostInfo,
    src: EndpointKey,
    frame: &[u8],
    neighbor: &dyn Fn(Ipv4Addr) -> Option<[u8; 6]>,
) -> Verdict {
    if !tables.agents.contains_key(&src) {
        return Verdict::Drop(Drop::Tables(DropReason::UnknownSource));
    }
    if let Some(reply) = arp_reply(tables, src.vni, frame) {
        return match reply {
            Ok(frame) => Verdict::Redirect {
                veth: local_veth(tables, src),
                frame,
            },
            Err(d) => Verdict::Drop(d),
        };
    }
    let inner = match inner_ipv4(frame) {
        Ok(Some(i)) => i,
        Ok(None) => return Verdict::Drop(Drop::Malformed("neither IPv4 nor ARP".into())),
        Err(d) => return Verdict::Drop(d),
    };
    match tables.egress(src, inner.dst, u64::from(inner.flow)) {
        Step::Deliver { veth } => Verdict::Redirect {
            veth,
            frame: frame.to_vec(),
        },
        Step::Drop(r) => Verdict::Drop(Drop::Tables(r)),
        Step::Forward { host } => {
            let mut g = Geneve::new(src.vni);
            g.options.push(GeneveOption::ReturnToSender {
                host: me.ip,
                mac: me.mac,
            });
            send(me, host, inner.ttl, inner.flow, &g, frame, neighbor)
        }
    }
}

fn local_veth(tables: &HostTables, key: EndpointKey) -> String {
    match tables.endpoints.get(&key) {
        Some(Location::Local { veth, .. }) => veth.clone(),
        _ => String::new(),
    }
}

fn send(
    me: HostInfo,
    to: Ipv4Addr,
    ttl: u8,
    flow: u32,
    g: &Geneve,
    inner: &[u8],
    neighbor: &dyn Fn(Ipv4Addr) -> Option<[u8; 6]>,
) -> Verdict {
    if ttl == 0 {
        return Verdict::Drop(Drop::TtlExpired);
    }
    let Some(dst_mac) = neighbor(to) else {
        return Verdict::Drop(Drop::NoNeighbor(to));
    };
    let outer = Outer {
        src_mac: me.mac,
        dst_mac,
        src: me.ip,
        dst: to,
        ttl,
        src_port: flow_port(flow),
    };
    match encapsulate(&outer, g, inner) {
        Ok(frame) => Verdict::Transmit { frame },
        Err(e) => Verdict::Drop(Drop::Malformed(e.to_string())),
    }
}

/// The transit program's verdict for `frame` arriving on the substrate interface of `me`.
pub fn transit_ingress(
    tables: &HostTables,
    me: HostInfo,
    frame: &[u8],
    neighbor: &dyn Fn(Ipv4Addr) -> Option<[u8; 6]>,
) -> Verdict {
    let (outer, g, inner_frame) = match decapsulate(frame) {
        Ok(x) => x,
        Err(e) => return Verdict::Drop(Drop::Malformed(e.to_string())),
    };
    if outer.dst != me.ip {
        return Verdict::Drop(Drop::Malformed(format!(
            "outer destination {} is not this host",
            outer.dst
        )));
    }
    let inner = match inner_ipv4(inner_frame) {
        Ok(Some(i)) => i,
        Ok(None) => return Verdict::Drop(Drop::Malformed("inner frame is not IPv4".into())),
        Err(d) => return Verdict::Drop(d),
    };
    match tables.transit(me.ip, g.vni, inner.dst, u64::from(inner.flow)) {
        Step::Deliver { veth } => Verdict::Redirect {
            veth,
            frame: inner_frame.to_vec(),
        },
        Step::Drop(r) => Verdict::Drop(Drop::Tables(r)),
        Step::Forward { host } => send(
            me,
            host,
            outer.ttl.saturating_sub(1),
            inner.flow,
            &g,
            inner_frame,
            neighbor,
        ),
    }
}
