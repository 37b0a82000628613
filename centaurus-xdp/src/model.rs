//! The userspace reference model of the XDP programs in `bpf/transit.c`: for one frame and
//! one host's state, the verdict the BPF code reaches, with the exact bytes it sends, step
//! for step in the same order (so the same frame is dropped for the same reason).
//!
//! - [`Host::agent_egress`]: the transit agent on the host side of an endpoint's veth. It
//!   answers ARP for any address with the [`GATEWAY_MAC`], translates a packet to a
//!   scaled endpoint to one of its backends (the one connection tracking holds for the
//!   flow, or the Maglev table's), delivers to endpoints of the same host, and
//!   encapsulates everything else in Geneve with the return-to-sender option: to the
//!   destination's learned host, or else to one of its subnet's bouncers chosen by the
//!   flow hash. Wherever a frame is delivered, a reply of a translated connection is
//!   translated back to its Service's address and port.
//! - NetworkPolicy ([`Host::police`]): a packet leaving an endpoint (after translation)
//!   and one delivered into an endpoint (before a reply is translated back) passes the
//!   endpoint's compiled rules, or is a reply of a connection they let through.
//! - [`Host::transit_ingress`]: the transit program on the substrate interface. It leaves
//!   frames that are not overlay traffic for this host to the kernel, decapsulates frames
//!   for local endpoints (learning the sender's host), forwards as bouncer or divider, and
//!   drops what is malformed or unknown.
//!
//! Forwarding decisions come from [`HostTables::egress`] and [`HostTables::transit`], the
//! functions `SimDataplane` forwards with, so the model and the simulation agree by
//! construction; the tests walk frames across hosts to check it, and run the BPF programs
//! on the same frames to check that they agree with the model.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use centaurus_vpc::maglev::{Backend, client_hash};
use centaurus_vpc::policy::{SCTP, Way};
pub use centaurus_vpc::tables::flow_hash;
use centaurus_vpc::tables::{
    DropReason, EndpointKey, HostTables, KeyMap, Location, ServiceKey, Step, TCP, UDP,
};

use crate::geneve::{
    BASE_LEN, ETH_BRIDGING, GENEVE_PORT, MAX_OPTIONS, OPT_RETURN_TO_SENDER, OPTION_CLASS,
    OUTER_LEN, Outer, flow_port, write_outer,
};

/// The MAC the agent answers ARP with and delivers frames from: the VPC's virtual gateway.
pub const GATEWAY_MAC: [u8; 6] = [0x02, 0xce, 0x47, 0x57, 0x00, 0x01];
/// How long a learned host is used without being heard from again.
pub const LEARN_TTL_NS: u64 = 30_000_000_000;
/// A learned entry is rewritten at most this often while it stays the same.
pub const LEARN_REFRESH_NS: u64 = 1_000_000_000;
/// Bytes the agent puts in front of a frame: outer headers, Geneve and return-to-sender.
pub const ENCAP_LEN: usize = OUTER_LEN + BASE_LEN + 16;

const ETH_IPV4: [u8; 2] = [0x08, 0x00];
const ETH_ARP: [u8; 2] = [0x08, 0x06];

/// A host's own substrate interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostInfo {
    /// Substrate address.
    pub ip: Ipv4Addr,
    /// Substrate MAC.
    pub mac: [u8; 6],
}

/// Why a frame is dropped; each reason has its counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Drop {
    /// The tables said so.
    Tables(DropReason),
    /// Not a frame the program accepts, and why.
    Malformed(&'static str),
    /// The next host's MAC is unknown.
    NoNeighbor(Ipv4Addr),
    /// The outer TTL ran out.
    TtlExpired,
    /// An endpoint sent something neither IPv4 nor ARP (IPv6, say), which VPCs do not
    /// carry.
    NotIpv4,
    /// To a scaled endpoint without backends.
    NoBackend,
}

impl Drop {
    /// Index of this reason in the programs' counters (`enum counter` in `bpf/maps.h`).
    pub fn counter(&self) -> u32 {
        match self {
            Drop::Malformed(_) => 0,
            Drop::Tables(DropReason::UnknownSource) => 1,
            Drop::Tables(DropReason::UnknownEndpoint) => 2,
            Drop::Tables(DropReason::NoRoute) => 3,
            Drop::Tables(DropReason::UnknownVni) => 4,
            Drop::Tables(DropReason::NoBouncer) => 5,
            Drop::Tables(DropReason::TooManyHops) | Drop::TtlExpired => 6,
            Drop::NoNeighbor(_) => 7,
            Drop::NotIpv4 => 8,
            Drop::NoBackend => 9,
            Drop::Tables(DropReason::Policy) => 10,
        }
    }
}

/// What a program does with a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Into a local endpoint's veth (XDP_REDIRECT), these bytes.
    Deliver {
        /// The host-side interface.
        veth: String,
        /// The frame, addressed from the gateway to the endpoint.
        frame: Vec<u8>,
    },
    /// Onto the substrate, to another host: the agent redirects it to the substrate
    /// interface, the transit program sends it back out (XDP_TX).
    Send {
        /// The overlay frame.
        frame: Vec<u8>,
    },
    /// An ARP reply, back out of the interface the request came in on (XDP_TX).
    Reply {
        /// The frame.
        frame: Vec<u8>,
    },
    /// Not overlay traffic for this host: left to the kernel (XDP_PASS).
    Pass,
    /// Dropped (XDP_DROP), counted by reason.
    Drop(Drop),
}

/// A remote endpoint's host, learned from return-to-sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Learned {
    /// The host's substrate address.
    pub host: Ipv4Addr,
    /// Its MAC.
    pub mac: [u8; 6],
    /// When it was last heard from (ns).
    pub seen_ns: u64,
}

/// What a connection tracking entry is for (`ct_key.dir`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Track {
    /// A flow to a scaled endpoint → its backend (peer = the VIP).
    Service,
    /// Replies from the backend → the VIP (peer = the backend).
    Reply,
    /// A packet an endpoint's NetworkPolicy let out (egress) or in (client = its sender,
    /// peer = its receiver), whose connection then passes both ways there; the value is
    /// unused.
    Policy(Way),
}

/// One direction of a connection, as connection tracking keys it (`struct ct_key`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Conn {
    /// The VPC's VNI.
    pub vni: u32,
    /// IP protocol.
    pub protocol: u8,
    /// The client's address and port.
    pub client: (Ipv4Addr, u16),
    /// The VIP and port (towards the Service), the backend's (a reply), or the
    /// receiver's (policy).
    pub peer: (Ipv4Addr, u16),
    /// What the entry is for.
    pub track: Track,
}

/// Everything one host's programs read and write.
#[derive(Clone, Debug)]
pub struct Host {
    /// The host's substrate interface.
    pub me: HostInfo,
    /// The tables the management plane programs.
    pub tables: HostTables,
    /// MACs of the other hosts (the `hosts` map).
    pub neighbors: HashMap<Ipv4Addr, [u8; 6]>,
    /// Remote endpoints' hosts (the `learned` map).
    pub learned: KeyMap<EndpointKey, Learned>,
    /// Connections through scaled endpoints (a flow's backend, or a reply's Service) and
    /// connections policies let through (the `conntrack` map).
    pub conntrack: HashMap<Conn, Backend>,
}

fn addr(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// What the programs read from an inner IPv4 packet (`ip` starts at its header, whose 20
/// bytes are present).
struct Inner {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    flow: u32,
}

fn inner(ip: &[u8]) -> Inner {
    let (src, dst) = (addr(&ip[12..16]), addr(&ip[16..20]));
    let proto = ip[9];
    let unfragmented = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff == 0;
    let l4 = usize::from(ip[0] & 0x0f) * 4;
    let ports = match ip.get(l4..l4 + 4) {
        Some(p) if (proto == 6 || proto == 17) && unfragmented => (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        ),
        _ => (0, 0),
    };
    Inner {
        src,
        dst,
        ttl: ip[8],
        flow: flow_hash(src, dst, proto, ports),
    }
}

fn valid_ipv4(ip: &[u8]) -> bool {
    ip[0] >> 4 == 4 && ip[0] & 0x0f >= 5
}

impl Host {
    /// A host with empty tables.
    pub fn new(me: HostInfo) -> Self {
        Self {
            me,
            tables: HostTables::default(),
            neighbors: HashMap::new(),
            learned: KeyMap::default(),
            conntrack: HashMap::new(),
        }
    }

    fn learned_host(&self, key: &EndpointKey, now_ns: u64) -> Option<&Learned> {
        self.learned
            .get(key)
            .filter(|l| now_ns.wrapping_sub(l.seen_ns) < LEARN_TTL_NS)
    }

    /// The frame rewritten for delivery into `key`'s veth (a reply of a translated
    /// connection from its Service), or why not.
    fn deliver(&mut self, key: EndpointKey, veth: String, mut frame: Vec<u8>) -> Verdict {
        let Some(Location::Local { mac, .. }) = self.tables.endpoints.get(&key) else {
            return Verdict::Drop(Drop::Tables(DropReason::UnknownEndpoint));
        };
        let mac = *mac;
        if !self.police(Way::Ingress, key.vni, &frame) {
            return Verdict::Drop(Drop::Tables(DropReason::Policy));
        }
        if let Some((l4, protocol)) = transport(&frame) {
            let ports = ports_at(&frame, l4);
            let reply = Conn {
                vni: key.vni,
                protocol,
                client: (addr(&frame[30..34]), ports.1),
                peer: (addr(&frame[26..30]), ports.0),
                track: Track::Reply,
            };
            if let Some(vip) = self.conntrack.get(&reply)
                && frame.len() >= l4 + check_at(protocol) + 2
            {
                nat(&mut frame, l4, protocol, false, *vip);
            }
        }
        if frame.len() < 14 {
            return Verdict::Drop(Drop::Malformed("short inner frame"));
        }
        frame[0..6].copy_from_slice(&mac);
        frame[6..12].copy_from_slice(&GATEWAY_MAC);
        Verdict::Deliver { veth, frame }
    }

    /// The NetworkPolicy step for `frame` (a valid IPv4 header behind the Ethernet header)
    /// of `vni` leaving (egress, from its source) or entering (ingress, to its destination)
    /// a local endpoint: true to let it through. An endpoint without a policy takes
    /// everything. With one, a packet its rules allow, or of a direction it does not
    /// isolate, passes and its connection is tracked, at this endpoint and in this
    /// direction; any other passes only as a packet of a connection tracked at this
    /// endpoint (either way).
    pub fn police(&mut self, way: Way, vni: u32, frame: &[u8]) -> bool {
        let (src, dst) = (addr(&frame[26..30]), addr(&frame[30..34]));
        let (local, peer) = match way {
            Way::Ingress => (dst, src),
            Way::Egress => (src, dst),
        };
        let Some(entry) = self.tables.policies.get(&EndpointKey::new(vni, local)) else {
            return true;
        };
        let protocol = frame[23];
        let ports = policy_ports(frame);
        let (sport, dport) = ports.unwrap_or((0, 0));
        let conn = Conn {
            vni,
            protocol,
            client: (src, sport),
            peer: (dst, dport),
            track: Track::Policy(way),
        };
        // A tracked connection's packets skip the rules.
        if self.conntrack.contains_key(&conn) {
            return true;
        }
        if entry
            .compiled
            .allows(way, peer, protocol, ports.map(|p| p.1))
        {
            (self.conntrack).insert(conn, Backend::new(Ipv4Addr::UNSPECIFIED, 0));
            return true;
        }
        let theirs = match way {
            Way::Ingress => Way::Egress,
            Way::Egress => Way::Ingress,
        };
        let reply = Conn {
            client: conn.peer,
            peer: conn.client,
            track: Track::Policy(theirs),
            ..conn
        };
        self.conntrack.contains_key(&reply)
    }

    /// The transit agent's verdict for `frame`, sent by local endpoint `src` at `now_ns`.
    pub fn agent_egress(&mut self, src: EndpointKey, frame: &[u8], now_ns: u64) -> Verdict {
        if !self.tables.agents.contains_key(&src) {
            return Verdict::Drop(Drop::Tables(DropReason::UnknownSource));
        }
        if frame.len() < 14 {
            return Verdict::Drop(Drop::Malformed("short frame"));
        }
        if frame[12..14] == ETH_ARP {
            return answer_arp(src, frame);
        }
        if frame[12..14] != ETH_IPV4 {
            return Verdict::Drop(Drop::NotIpv4);
        }
        if frame.len() < 34 || !valid_ipv4(&frame[14..]) {
            return Verdict::Drop(Drop::Malformed("bad IPv4 header"));
        }
        let mut ip = inner(&frame[14..]);
        if ip.src != src.ip {
            return Verdict::Drop(Drop::Tables(DropReason::UnknownSource));
        }
        let mut frame = frame.to_vec();
        match self.nat_to_backend(src.vni, &mut frame, ip.flow) {
            Ok(false) => {}
            Ok(true) => ip = inner(&frame[14..]),
            Err(d) => return Verdict::Drop(d),
        }
        if !self.police(Way::Egress, src.vni, &frame) {
            return Verdict::Drop(Drop::Tables(DropReason::Policy));
        }
        let frame = &frame[..];
        let dst = EndpointKey::new(src.vni, ip.dst);
        let flow = u64::from(ip.flow);
        let (to, to_mac) = match self.tables.egress(src, ip.dst, flow) {
            Step::Deliver { veth } => return self.deliver(dst, veth, frame.to_vec()),
            _ if self.learned_host(&dst, now_ns).is_some() => {
                let l = self.learned_host(&dst, now_ns).expect("checked");
                (l.host, l.mac)
            }
            Step::Drop(r) => return Verdict::Drop(Drop::Tables(r)),
            Step::Forward { host } => {
                // This host as the bouncer takes its hop here, not through the wire.
                let host = match host == self.me.ip {
                    false => host,
                    true => match self.tables.transit(host, src.vni, ip.dst, flow) {
                        Step::Deliver { veth } => return self.deliver(dst, veth, frame.to_vec()),
                        Step::Drop(r) => return Verdict::Drop(Drop::Tables(r)),
                        Step::Forward { host } => host,
                    },
                };
                match self.neighbors.get(&host) {
                    Some(mac) => (host, *mac),
                    None => return Verdict::Drop(Drop::NoNeighbor(host)),
                }
            }
        };
        if ip.ttl == 0 {
            return Verdict::Drop(Drop::TtlExpired);
        }
        let mut out = vec![0; ENCAP_LEN];
        out.extend_from_slice(frame);
        let outer = Outer {
            src_mac: self.me.mac,
            dst_mac: to_mac,
            src: self.me.ip,
            dst: to,
            ttl: ip.ttl,
            src_port: flow_port(ip.flow),
        };
        let len = out.len();
        write_outer(&mut out, &outer, len);
        let g = &mut out[OUTER_LEN..ENCAP_LEN];
        g[0] = 4; // options length in words: return-to-sender
        g[1] = 0;
        g[2..4].copy_from_slice(&ETH_BRIDGING.to_be_bytes());
        g[4..8].copy_from_slice(&(src.vni << 8).to_be_bytes());
        g[8..10].copy_from_slice(&OPTION_CLASS.to_be_bytes());
        g[10] = OPT_RETURN_TO_SENDER;
        g[11] = 3;
        g[12..16].copy_from_slice(&self.me.ip.octets());
        g[16..22].copy_from_slice(&self.me.mac);
        g[22..24].copy_from_slice(&[0, 0]);
        Verdict::Send { frame: out }
    }

    /// The agent's scaled-endpoint step for `frame` from an endpoint of `vni`, with flow
    /// hash `flow`: to a Service's VIP and port, the destination becomes the backend
    /// connection tracking holds for the flow while it still is one, or else the Maglev
    /// table's, which connection tracking then holds with the entry for the replies.
    /// Returns whether it translated.
    fn nat_to_backend(&mut self, vni: u32, frame: &mut [u8], flow: u32) -> Result<bool, Drop> {
        let Some((l4, protocol)) = transport(frame) else {
            return Ok(false);
        };
        let (sport, dport) = ports_at(frame, l4);
        let (client, vip) = (addr(&frame[26..30]), addr(&frame[30..34]));
        let key = ServiceKey {
            vni,
            vip,
            port: dport,
            protocol,
        };
        let Some(service) = self.tables.services.get(&key) else {
            return Ok(false);
        };
        if frame.len() < l4 + check_at(protocol) + 2 {
            return Err(Drop::Malformed("truncated transport header"));
        }
        let conn = Conn {
            vni,
            protocol,
            client: (client, sport),
            peer: (vip, dport),
            track: Track::Service,
        };
        let held = self.conntrack.get(&conn).copied();
        let backend = match held.filter(|b| service.table.backends().contains(b)) {
            Some(b) => b,
            None => {
                let hash = if service.affinity {
                    client_hash(client)
                } else {
                    flow
                };
                let Some(b) = service.table.pick(hash) else {
                    return Err(Drop::NoBackend);
                };
                self.conntrack.insert(conn, b);
                let reply = Conn {
                    peer: (b.ip, b.port),
                    track: Track::Reply,
                    ..conn
                };
                self.conntrack.insert(reply, Backend::new(vip, dport));
                b
            }
        };
        nat(frame, l4, protocol, true, backend);
        Ok(true)
    }

    /// The transit program's verdict for `frame` arriving on the substrate interface at
    /// `now_ns`; delivering a frame that carries return-to-sender learns the sender's host.
    pub fn transit_ingress(&mut self, frame: &[u8], now_ns: u64) -> Verdict {
        let len = frame.len();
        if len < 34 || frame[12..14] != ETH_IPV4 {
            return Verdict::Pass;
        }
        let ip = &frame[14..34];
        if ip[0] != 0x45 || ip[9] != 17 || u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
            return Verdict::Pass;
        }
        if len < OUTER_LEN
            || u16::from_be_bytes([frame[36], frame[37]]) != GENEVE_PORT
            || addr(&ip[16..20]) != self.me.ip
        {
            return Verdict::Pass;
        }
        let malformed = |why| Verdict::Drop(Drop::Malformed(why));
        if usize::from(u16::from_be_bytes([ip[2], ip[3]])) > len - 14 {
            return malformed("truncated outer IPv4 packet");
        }
        if len < OUTER_LEN + BASE_LEN {
            return malformed("truncated Geneve header");
        }
        let g = &frame[OUTER_LEN..];
        if g[0] >> 6 != 0 || g[2..4] != ETH_BRIDGING.to_be_bytes() {
            return malformed("Geneve version or protocol");
        }
        let opt_len = usize::from(g[0] & 0x3f) * 4;
        let opts_at = OUTER_LEN + BASE_LEN;
        let Some(opts) = frame.get(opts_at..opts_at + opt_len) else {
            return malformed("truncated Geneve options");
        };
        let mut rts = None;
        let mut off = 0;
        for _ in 0..MAX_OPTIONS {
            if off >= opt_len {
                break;
            }
            if off + 4 > opt_len {
                return malformed("Geneve option overruns");
            }
            let o = &opts[off..];
            let data_len = usize::from(o[3] & 0x1f) * 4;
            if off + 4 + data_len > opt_len {
                return malformed("Geneve option overruns");
            }
            if o[0..2] == OPTION_CLASS.to_be_bytes() && o[2] == OPT_RETURN_TO_SENDER {
                if data_len != 12 {
                    return malformed("return-to-sender length");
                }
                rts.get_or_insert((addr(&o[4..8]), <[u8; 6]>::try_from(&o[8..14]).unwrap()));
            } else if o[2] & 0x80 != 0 {
                return malformed("unknown critical Geneve option");
            }
            off += 4 + data_len;
        }
        if off < opt_len {
            return malformed("too many Geneve options");
        }
        let inner_at = opts_at + opt_len;
        if len < inner_at + 34
            || frame[inner_at + 12..inner_at + 14] != ETH_IPV4
            || !valid_ipv4(&frame[inner_at + 14..])
        {
            return malformed("inner frame is not IPv4");
        }
        let vni = u32::from_be_bytes([0, g[4], g[5], g[6]]);
        let pkt = inner(&frame[inner_at + 14..]);
        let ttl = frame[22].saturating_sub(1);
        match self
            .tables
            .transit(self.me.ip, vni, pkt.dst, u64::from(pkt.flow))
        {
            Step::Deliver { veth } => {
                if let Some((host, mac)) = rts {
                    let src = EndpointKey::new(vni, pkt.src);
                    let stale = self.learned.get(&src).is_none_or(|l| {
                        l.host != host || now_ns.wrapping_sub(l.seen_ns) > LEARN_REFRESH_NS
                    });
                    if stale {
                        let seen_ns = now_ns;
                        self.learned.insert(src, Learned { host, mac, seen_ns });
                    }
                }
                let key = EndpointKey::new(vni, pkt.dst);
                self.deliver(key, veth, frame[inner_at..].to_vec())
            }
            Step::Drop(r) => Verdict::Drop(Drop::Tables(r)),
            Step::Forward { host } => {
                if ttl == 0 {
                    return Verdict::Drop(Drop::TtlExpired);
                }
                let Some(mac) = self.neighbors.get(&host) else {
                    return Verdict::Drop(Drop::NoNeighbor(host));
                };
                let mut out = frame.to_vec();
                let outer = Outer {
                    src_mac: self.me.mac,
                    dst_mac: *mac,
                    src: self.me.ip,
                    dst: host,
                    ttl,
                    src_port: flow_port(pkt.flow),
                };
                write_outer(&mut out, &outer, len);
                Verdict::Send { frame: out }
            }
        }
    }
}

/// The agent's answer to an ARP request from endpoint `src`: the gateway MAC for any
/// address but the endpoint's own.
fn answer_arp(src: EndpointKey, frame: &[u8]) -> Verdict {
    let malformed = |why| Verdict::Drop(Drop::Malformed(why));
    if frame.len() < 14 + 28 {
        return malformed("truncated ARP");
    }
    let a = &frame[14..42];
    if a[0..2] != [0, 1] || a[2..4] != ETH_IPV4 || a[4] != 6 || a[5] != 4 || a[6..8] != [0, 1] {
        return malformed("not an IPv4 ARP request");
    }
    let (spa, tpa) = (addr(&a[14..18]), addr(&a[24..28]));
    if tpa == spa || tpa == src.ip {
        return malformed("ARP probe of the endpoint's own address");
    }
    let mut out = frame.to_vec();
    let requester: [u8; 6] = frame[6..12].try_into().unwrap();
    let sha: [u8; 6] = a[8..14].try_into().unwrap();
    out[0..6].copy_from_slice(&requester);
    out[6..12].copy_from_slice(&GATEWAY_MAC);
    let r = &mut out[14..42];
    r[6..8].copy_from_slice(&[0, 2]);
    r[8..14].copy_from_slice(&GATEWAY_MAC);
    r[14..18].copy_from_slice(&tpa.octets());
    r[18..24].copy_from_slice(&sha);
    r[24..28].copy_from_slice(&spa.octets());
    Verdict::Reply { frame: out }
}

/// The transport header's offset in an Ethernet frame holding a valid IPv4 header and an
/// unfragmented TCP or UDP packet whose ports are present, with the protocol.
fn transport(frame: &[u8]) -> Option<(usize, u8)> {
    let ip = frame.get(14..34)?;
    let protocol = ip[9];
    let unfragmented = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff == 0;
    let l4 = 14 + usize::from(ip[0] & 0x0f) * 4;
    ((protocol == TCP || protocol == UDP) && unfragmented && frame.len() >= l4 + 4)
        .then_some((l4, protocol))
}

/// The ports NetworkPolicy reads: of an unfragmented TCP, UDP or SCTP packet whose ports
/// are present.
fn policy_ports(frame: &[u8]) -> Option<(u16, u16)> {
    let ip = &frame[14..34];
    let unfragmented = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff == 0;
    let l4 = 14 + usize::from(ip[0] & 0x0f) * 4;
    let carries = [TCP, UDP, SCTP].contains(&ip[9]) && unfragmented;
    (carries && frame.len() >= l4 + 4).then(|| ports_at(frame, l4))
}

/// The source and destination ports of the transport header at `l4`.
fn ports_at(frame: &[u8], l4: usize) -> (u16, u16) {
    let p = &frame[l4..l4 + 4];
    (
        u16::from_be_bytes([p[0], p[1]]),
        u16::from_be_bytes([p[2], p[3]]),
    )
}

/// Where a transport header's checksum is.
fn check_at(protocol: u8) -> usize {
    if protocol == TCP { 16 } else { 6 }
}

/// One's complement addition with end-around carry (the kernel's `csum_add`).
fn csum_add(a: u32, b: u32) -> u32 {
    let (sum, carry) = a.overflowing_add(b);
    sum + u32::from(carry)
}

/// The kernel's `csum_fold`.
fn csum_fold(s: u32) -> u16 {
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// The checksum at `at` after a covered word changes from `from` to `to` (RFC 1624), as
/// the kernel's `csum_replace4` computes it: over words as the machine reads them, so the
/// bytes are the programs'.
fn csum_replace(frame: &mut [u8], at: usize, from: u32, to: u32) {
    let old = u32::from(u16::from_ne_bytes([frame[at], frame[at + 1]]));
    let new = csum_fold(csum_add(csum_add(!old, !from), to));
    frame[at..at + 2].copy_from_slice(&new.to_ne_bytes());
}

/// Rewrites the destination (`to_dst`) or source address and port of the TCP or UDP
/// packet whose transport header is at `l4` (its checksum present) to `to`, with both
/// checksums; a UDP packet without a checksum keeps none.
fn nat(frame: &mut [u8], l4: usize, protocol: u8, to_dst: bool, to: Backend) {
    let ip_at = if to_dst { 30 } else { 26 };
    let port_at = l4 + if to_dst { 2 } else { 0 };
    let word = |b: &[u8]| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
    let half = |b: &[u8]| u32::from(u16::from_ne_bytes([b[0], b[1]]));
    let (from_ip, new_ip) = (word(&frame[ip_at..]), word(&to.ip.octets()));
    let (from_port, new_port) = (half(&frame[port_at..]), half(&to.port.to_be_bytes()));
    let check = l4 + check_at(protocol);
    if protocol == TCP || frame[check..check + 2] != [0, 0] {
        // A UDP checksum that comes out 0 is written as 0xffff (0 means none), after
        // each step, as the kernel's helpers do.
        for (from, to) in [(from_ip, new_ip), (from_port, new_port)] {
            csum_replace(frame, check, from, to);
            if protocol == UDP && frame[check..check + 2] == [0, 0] {
                frame[check..check + 2].copy_from_slice(&[0xff, 0xff]);
            }
        }
    }
    csum_replace(frame, 24, from_ip, new_ip);
    frame[ip_at..ip_at + 4].copy_from_slice(&to.ip.octets());
    frame[port_at..port_at + 2].copy_from_slice(&to.port.to_be_bytes());
}
