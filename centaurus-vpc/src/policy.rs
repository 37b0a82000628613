//! NetworkPolicy in the VPC, in three steps:
//!
//! 1. [`endpoint_policies`] resolves a tenant's policies against its pods and namespaces:
//!    for every endpoint some policy selects, the rules that apply to it in each direction,
//!    with pods turned into their addresses and named ports into numbers
//!    ([`EndpointPolicy`], what the management plane sends the endpoint's host).
//! 2. [`Classified::new`] compiles one direction's rules into what the datapath looks up:
//!    rules with the same ports become one *class* (one bit, at most [`CLASSES`]); an LPM
//!    table of peer prefixes gives the classes whose peers hold an address, an LPM table of
//!    `(protocol, port prefix)` the classes whose ports hold a port, and the classes that
//!    take any port are one bitmap. A packet is allowed when the two bitmaps share a bit:
//!    two longest-prefix lookups and a 256-bit AND, however many policies there are.
//! 3. [`EndpointPolicy::allows`] is the rules read directly, the reference the compiled
//!    form is checked against (unit and property tests here, the BPF programs in
//!    `centaurus-xdp`).
//!
//! Every prefix a peer's set starts or stops at is in the table (blocks and their
//! exceptions), so the longest prefix holding an address determines each class's verdict:
//! a class holds the address exactly when one of its blocks holds that whole prefix and
//! none of the block's exceptions does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use centaurus_core::model::{
    IntOrString, LabelSelector, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, POLICY_EGRESS,
    POLICY_INGRESS,
};
use serde::{Deserialize, Serialize};

use crate::ipam::Ipv4Cidr;
use crate::tables::{TCP, UDP};

/// SCTP's protocol number.
pub const SCTP: u8 = 132;
/// The most classes (distinct port sets) one direction of an endpoint holds; past it, the
/// direction denies everything but replies (fails closed) and says so.
pub const CLASSES: usize = 256;
/// Words of a class bitmap.
pub const WORDS: usize = CLASSES / 64;
/// The most peer prefixes, and the most port prefixes, one direction of an endpoint holds
/// (so one endpoint's rules cannot take its host's tables); past it, the direction fails
/// closed as with too many classes.
pub const MAX_PREFIXES: usize = 8192;
/// A set of classes.
pub type Classes = [u64; WORDS];

/// The label every namespace carries with its own name, as Kubernetes sets it.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A direction of traffic, seen from the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Way {
    /// Into the endpoint; the peer is the source.
    Ingress,
    /// Out of the endpoint; the peer is the destination.
    Egress,
}

/// An address block without some of its sub-ranges.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Block {
    /// The block.
    pub cidr: Ipv4Cidr,
    /// Prefixes inside it that are not part of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<Ipv4Cidr>,
}

impl Block {
    /// A block of one address (a pod).
    pub fn host(ip: Ipv4Addr) -> Self {
        Self {
            cidr: Ipv4Cidr::covering(ip, 32),
            except: Vec::new(),
        }
    }

    /// Every address.
    pub fn any() -> Self {
        Self {
            cidr: Ipv4Cidr::covering(Ipv4Addr::UNSPECIFIED, 0),
            except: Vec::new(),
        }
    }

    /// True when `ip` is in the block.
    pub fn holds(&self, ip: Ipv4Addr) -> bool {
        self.cidr.contains_addr(ip) && !self.except.iter().any(|e| e.contains_addr(ip))
    }
}

/// Ports `first..=last` of one protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRange {
    /// [`TCP`], [`UDP`] or [`SCTP`].
    pub protocol: u8,
    /// The first port.
    pub first: u16,
    /// The last port.
    pub last: u16,
}

impl PortRange {
    fn holds(&self, protocol: u8, port: u16) -> bool {
        self.protocol == protocol && (self.first..=self.last).contains(&port)
    }
}

/// One rule as the datapath applies it: a peer in one of `peers`, to a port in one of
/// `ports` (any port of any protocol when empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Rule {
    /// The peers.
    pub peers: Vec<Block>,
    /// The destination ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortRange>,
}

impl Rule {
    fn allows(&self, peer: Ipv4Addr, protocol: u8, port: Option<u16>) -> bool {
        self.peers.iter().any(|b| b.holds(peer))
            && (self.ports.is_empty()
                || port.is_some_and(|p| self.ports.iter().any(|r| r.holds(protocol, p))))
    }
}

/// What the policies selecting one endpoint allow it, direction by direction; `None` where
/// no policy isolates the direction.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointPolicy {
    /// Rules for traffic in, if isolated.
    pub ingress: Option<Vec<Rule>>,
    /// Rules for traffic out, if isolated.
    pub egress: Option<Vec<Rule>>,
}

impl EndpointPolicy {
    /// The rules of `way`, if it is isolated.
    pub fn rules(&self, way: Way) -> Option<&[Rule]> {
        match way {
            Way::Ingress => self.ingress.as_deref(),
            Way::Egress => self.egress.as_deref(),
        }
    }

    /// True when a packet of `way` with this peer, protocol and destination port (None
    /// for a packet without one: not TCP, UDP or SCTP, or a fragment) is allowed by the
    /// rules, not counting replies.
    pub fn allows(&self, way: Way, peer: Ipv4Addr, protocol: u8, port: Option<u16>) -> bool {
        self.rules(way)
            .is_none_or(|rules| rules.iter().any(|r| r.allows(peer, protocol, port)))
    }

    /// The compiled form.
    pub fn compile(&self) -> CompiledPolicy {
        CompiledPolicy {
            ingress: self.ingress.as_deref().map(Classified::new),
            egress: self.egress.as_deref().map(Classified::new),
        }
    }
}

/// Both directions of an endpoint's policy, compiled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompiledPolicy {
    /// Traffic in, if isolated.
    pub ingress: Option<Classified>,
    /// Traffic out, if isolated.
    pub egress: Option<Classified>,
}

impl CompiledPolicy {
    /// The compiled rules of `way`, if it is isolated.
    pub fn way(&self, way: Way) -> Option<&Classified> {
        match way {
            Way::Ingress => self.ingress.as_ref(),
            Way::Egress => self.egress.as_ref(),
        }
    }

    /// [`EndpointPolicy::allows`], from the compiled form.
    pub fn allows(&self, way: Way, peer: Ipv4Addr, protocol: u8, port: Option<u16>) -> bool {
        self.way(way).is_none_or(|c| c.allows(peer, protocol, port))
    }
}

/// A prefix of port numbers: `value` with its top `len` bits significant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortPrefix {
    /// The protocol.
    pub protocol: u8,
    /// The first port of the prefix.
    pub value: u16,
    /// Significant bits (0–16).
    pub len: u8,
}

impl PortPrefix {
    fn last(&self) -> u16 {
        self.value | (u16::MAX.checked_shr(u32::from(self.len)).unwrap_or(0))
    }

    fn covering(protocol: u8, port: u16, len: u8) -> Self {
        let mask = u16::MAX.checked_shl(16 - u32::from(len)).unwrap_or(0);
        Self {
            protocol,
            value: port & mask,
            len,
        }
    }
}

/// One direction's rules in the datapath's form.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Classified {
    /// Peer prefix → the classes whose peers hold it.
    pub peers: BTreeMap<Ipv4Cidr, Classes>,
    /// Port prefix → the classes whose ports hold it.
    pub ports: BTreeMap<PortPrefix, Classes>,
    /// The classes that take any port of any protocol.
    pub any_port: Classes,
    /// True when the rules needed more than [`CLASSES`] classes or [`MAX_PREFIXES`]
    /// prefixes: the direction allows nothing (but replies).
    pub overflow: bool,
}

fn set(c: &mut Classes, i: usize) {
    c[i / 64] |= 1 << (i % 64);
}

/// The minimal prefixes covering `first..=last`.
fn port_prefixes(protocol: u8, first: u16, last: u16) -> Vec<PortPrefix> {
    let (mut at, end) = (u32::from(first), u32::from(last));
    let mut out = Vec::new();
    while at <= end {
        let mut size_bits = at.trailing_zeros().min(16);
        while at + (1 << size_bits) - 1 > end {
            size_bits -= 1;
        }
        out.push(PortPrefix {
            protocol,
            value: at as u16,
            len: 16 - size_bits as u8,
        });
        at += 1 << size_bits;
    }
    out
}

/// Sorted, with overlapping and adjacent ranges of a protocol merged.
fn normalize(ports: &[PortRange]) -> Vec<PortRange> {
    let mut sorted = ports.to_vec();
    sorted.sort();
    let mut out: Vec<PortRange> = Vec::new();
    for r in sorted {
        match out.last_mut() {
            Some(l) if l.protocol == r.protocol && u32::from(r.first) <= u32::from(l.last) + 1 => {
                l.last = l.last.max(r.last);
            }
            _ => out.push(r),
        }
    }
    out
}

impl Classified {
    /// Compiles the rules of one isolated direction.
    pub fn new(rules: &[Rule]) -> Self {
        // Rules with the same ports are one class.
        let mut by_ports: BTreeMap<Vec<PortRange>, BTreeSet<Block>> = BTreeMap::new();
        for r in rules {
            by_ports
                .entry(normalize(&r.ports))
                .or_default()
                .extend(r.peers.iter().cloned());
        }
        if by_ports.len() > CLASSES {
            return Self {
                overflow: true,
                ..Self::default()
            };
        }
        let mut out = Self::default();
        let mut owners: HashMap<Ipv4Cidr, Vec<(usize, &[Ipv4Cidr])>> = HashMap::new();
        let mut prefixes = BTreeSet::new();
        for (class, (ports, peers)) in by_ports.iter().enumerate() {
            if ports.is_empty() {
                set(&mut out.any_port, class);
            }
            for b in peers {
                owners
                    .entry(b.cidr)
                    .or_default()
                    .push((class, b.except.as_slice()));
                prefixes.insert(b.cidr);
                prefixes.extend(b.except.iter().copied());
            }
        }
        if prefixes.len() > MAX_PREFIXES {
            return Self {
                overflow: true,
                ..Self::default()
            };
        }
        for p in prefixes {
            let mut classes = Classes::default();
            for len in 0..=p.prefix_len() {
                let outer = Ipv4Cidr::covering(p.network(), len);
                for (class, except) in owners.get(&outer).into_iter().flatten() {
                    if !except.iter().any(|e| e.contains(&p)) {
                        set(&mut classes, *class);
                    }
                }
            }
            out.peers.insert(p, classes);
        }
        let ranges: Vec<(usize, &PortRange)> = (by_ports.keys().enumerate())
            .flat_map(|(class, ports)| ports.iter().map(move |r| (class, r)))
            .collect();
        let port_prefixes: BTreeSet<PortPrefix> = ranges
            .iter()
            .flat_map(|(_, r)| port_prefixes(r.protocol, r.first, r.last))
            .collect();
        for p in port_prefixes {
            let mut classes = Classes::default();
            for (class, r) in &ranges {
                if r.protocol == p.protocol && r.first <= p.value && p.last() <= r.last {
                    set(&mut classes, *class);
                }
            }
            out.ports.insert(p, classes);
        }
        if out.peers.len() > MAX_PREFIXES || out.ports.len() > MAX_PREFIXES {
            return Self {
                overflow: true,
                ..Self::default()
            };
        }
        out
    }

    /// The classes whose peers hold `ip` (the longest prefix's).
    pub fn peer_classes(&self, ip: Ipv4Addr) -> Classes {
        (0..=32)
            .rev()
            .find_map(|len| self.peers.get(&Ipv4Cidr::covering(ip, len)))
            .copied()
            .unwrap_or_default()
    }

    /// The classes whose ports hold `port` of `protocol` (any-port classes included).
    pub fn port_classes(&self, protocol: u8, port: Option<u16>) -> Classes {
        let mut classes = self.any_port;
        if let Some(port) = port {
            let found = (0..=16)
                .rev()
                .find_map(|len| self.ports.get(&PortPrefix::covering(protocol, port, len)));
            if let Some(c) = found {
                for (w, x) in classes.iter_mut().zip(c) {
                    *w |= x;
                }
            }
        }
        classes
    }

    /// True when some class holds both the peer and the port.
    pub fn allows(&self, peer: Ipv4Addr, protocol: u8, port: Option<u16>) -> bool {
        let (a, b) = (self.peer_classes(peer), self.port_classes(protocol, port));
        a.iter().zip(b).any(|(x, y)| x & y != 0)
    }
}

/// An endpoint of a VPC as policies see it: its pod's namespace, labels and named ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The namespace.
    pub namespace: String,
    /// The pod's labels (an endpoint without a pod: the endpoint's own).
    pub labels: BTreeMap<String, String>,
    /// The endpoint's address.
    pub ip: Ipv4Addr,
    /// The pod's named container ports: name, protocol, number.
    pub named_ports: Vec<(String, u8, u16)>,
}

/// A protocol's number by its name in a policy.
pub fn protocol_number(name: &str) -> Option<u8> {
    match name {
        "TCP" => Some(TCP),
        "UDP" => Some(UDP),
        "SCTP" => Some(SCTP),
        _ => None,
    }
}

/// A tenant's policies resolved against its pods and namespaces.
pub struct Resolver<'a> {
    namespaces: HashMap<&'a str, BTreeMap<String, String>>,
    members: &'a [Member],
}

impl<'a> Resolver<'a> {
    /// Resolves against `members` (a VPC's endpoints) and the namespaces' labels (every
    /// namespace also carries [`NAMESPACE_NAME_LABEL`]).
    pub fn new(
        namespaces: impl IntoIterator<Item = (&'a str, &'a BTreeMap<String, String>)>,
        members: &'a [Member],
    ) -> Self {
        let namespaces = namespaces
            .into_iter()
            .map(|(name, labels)| {
                let mut labels = labels.clone();
                labels.insert(NAMESPACE_NAME_LABEL.into(), name.into());
                (name, labels)
            })
            .collect();
        Self {
            namespaces,
            members,
        }
    }

    /// True when namespace `name`'s labels satisfy `selector` (a namespace not listed has
    /// only its name label).
    fn namespace_matches(&self, selector: &LabelSelector, name: &str) -> bool {
        match self.namespaces.get(name) {
            Some(labels) => selector.matches(labels),
            None => selector.matches(&BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_owned(),
                name.to_owned(),
            )])),
        }
    }

    /// The members a pod/namespace peer selects, for a policy in `namespace`.
    fn selected(&self, namespace: &str, peer: &NetworkPolicyPeer) -> Vec<&'a Member> {
        self.members
            .iter()
            .filter(|m| match &peer.namespace_selector {
                None => m.namespace == namespace,
                Some(s) => self.namespace_matches(s, &m.namespace),
            })
            .filter(|m| {
                peer.pod_selector
                    .as_ref()
                    .is_none_or(|s| s.matches(&m.labels))
            })
            .collect()
    }

    /// One rule of a policy in `namespace`, for `target`: usually one [`Rule`]; a named
    /// port of an egress rule is resolved on each destination pod, so it adds one rule per
    /// number it resolves to.
    fn rules(
        &self,
        way: Way,
        namespace: &str,
        target: &Member,
        peers: &[NetworkPolicyPeer],
        ports: &[NetworkPolicyPort],
    ) -> Vec<Rule> {
        let mut pods: Vec<&Member> = Vec::new();
        let mut blocks: Vec<Block> = Vec::new();
        for p in peers {
            match &p.ip_block {
                Some(b) => blocks.extend(parse_block(&b.cidr, &b.except)),
                None => pods.extend(self.selected(namespace, p)),
            }
        }
        let mut all: Vec<Block> = pods.iter().map(|m| Block::host(m.ip)).collect();
        all.extend(blocks.iter().cloned());
        if peers.is_empty() {
            all = vec![Block::any()];
        }
        let mut numeric = Vec::new();
        let mut named = Vec::new();
        for p in ports {
            let Some(protocol) = protocol_number(p.protocol()) else {
                continue;
            };
            match &p.port {
                None => numeric.push(PortRange {
                    protocol,
                    first: 0,
                    last: u16::MAX,
                }),
                Some(IntOrString::Int(n)) => {
                    let first = u16::try_from(*n).unwrap_or(0);
                    let last = p.end_port.and_then(|e| u16::try_from(e).ok());
                    numeric.push(PortRange {
                        protocol,
                        first,
                        last: last.unwrap_or(first).max(first),
                    });
                }
                Some(IntOrString::String(name)) => named.push((name.as_str(), protocol)),
            }
        }
        let resolve = |m: &Member, name: &str, protocol: u8| {
            (m.named_ports.iter())
                .find(|(n, p, _)| n == name && *p == protocol)
                .map(|(_, _, port)| *port)
        };
        let mut out = Vec::new();
        match way {
            Way::Ingress => {
                // The port is the target's own.
                for (name, protocol) in &named {
                    if let Some(port) = resolve(target, name, *protocol) {
                        numeric.push(PortRange {
                            protocol: *protocol,
                            first: port,
                            last: port,
                        });
                    }
                }
            }
            Way::Egress if !named.is_empty() => {
                // The port is each destination pod's: pods the rule selects, or that lie
                // in its blocks (every pod of the VPC when it names no peers).
                let destinations = self.members.iter().filter(|m| {
                    peers.is_empty()
                        || pods.iter().any(|p| p.ip == m.ip)
                        || blocks.iter().any(|b| b.holds(m.ip))
                });
                let mut by_port: BTreeMap<PortRange, Vec<Block>> = BTreeMap::new();
                for m in destinations {
                    for (name, protocol) in &named {
                        if let Some(port) = resolve(m, name, *protocol) {
                            let range = PortRange {
                                protocol: *protocol,
                                first: port,
                                last: port,
                            };
                            by_port.entry(range).or_default().push(Block::host(m.ip));
                        }
                    }
                }
                out.extend(by_port.into_iter().map(|(range, peers)| Rule {
                    peers,
                    ports: vec![range],
                }));
            }
            Way::Egress => {}
        }
        if ports.is_empty() || !numeric.is_empty() {
            out.push(Rule {
                peers: all,
                ports: numeric,
            });
        }
        out
    }
}

fn parse_block(cidr: &str, except: &[String]) -> Option<Block> {
    Some(Block {
        cidr: cidr.parse().ok()?,
        except: except.iter().filter_map(|e| e.parse().ok()).collect(),
    })
}

/// For every member some policy selects, its rules in each direction a selecting policy
/// isolates (policies are checked by admission; what still does not parse allows nothing).
pub fn endpoint_policies(
    policies: &[NetworkPolicy],
    resolver: &Resolver<'_>,
) -> BTreeMap<Ipv4Addr, EndpointPolicy> {
    let mut out: BTreeMap<Ipv4Addr, EndpointPolicy> = BTreeMap::new();
    for target in resolver.members {
        for p in policies {
            let ns = p.metadata.namespace.as_str();
            if target.namespace != ns || !p.spec.pod_selector.matches(&target.labels) {
                continue;
            }
            let entry = out.entry(target.ip).or_default();
            let types = &p.spec.policy_types;
            if types.iter().any(|t| t == POLICY_INGRESS) {
                let rules = entry.ingress.get_or_insert_with(Vec::new);
                for r in &p.spec.ingress {
                    rules.extend(resolver.rules(Way::Ingress, ns, target, &r.from, &r.ports));
                }
            }
            if types.iter().any(|t| t == POLICY_EGRESS) {
                let rules = entry.egress.get_or_insert_with(Vec::new);
                for r in &p.spec.egress {
                    rules.extend(resolver.rules(Way::Egress, ns, target, &r.to, &r.ports));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use centaurus_core::model::Resource;
    use proptest::prelude::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn port_prefixes_cover_ranges_exactly() {
        let p = port_prefixes(TCP, 80, 90);
        let covered: Vec<u16> = p.iter().flat_map(|p| p.value..=p.last()).collect();
        assert_eq!(covered, (80..=90).collect::<Vec<_>>());
        assert_eq!(p.len(), 3); // 80-87, 88-89, 90
        assert_eq!(port_prefixes(UDP, 0, u16::MAX).len(), 1);
        assert_eq!(port_prefixes(UDP, 0, u16::MAX)[0].len, 0);
        assert_eq!(port_prefixes(UDP, 65535, 65535)[0].len, 16);
    }

    #[test]
    fn exceptions_and_shared_prefixes_classify_as_the_rules_read() {
        let rules = vec![
            Rule {
                peers: vec![Block {
                    cidr: cidr("10.0.0.0/8"),
                    except: vec![cidr("10.1.0.0/16")],
                }],
                ports: vec![PortRange {
                    protocol: TCP,
                    first: 80,
                    last: 80,
                }],
            },
            Rule {
                peers: vec![Block::host(ip("10.1.2.3"))],
                ports: vec![],
            },
            Rule {
                peers: vec![Block {
                    cidr: cidr("10.1.2.0/24"),
                    except: vec![],
                }],
                ports: vec![PortRange {
                    protocol: UDP,
                    first: 53,
                    last: 60,
                }],
            },
        ];
        let policy = EndpointPolicy {
            ingress: Some(rules),
            egress: None,
        };
        let c = policy.compile();
        for (peer, proto, port, want) in [
            ("10.9.9.9", TCP, Some(80), true),
            ("10.9.9.9", TCP, Some(81), false),
            ("10.1.0.1", TCP, Some(80), false),
            ("10.1.2.3", 1, None, true),
            ("10.1.2.4", UDP, Some(55), true),
            ("10.1.2.4", TCP, Some(80), false),
            ("11.0.0.1", TCP, Some(80), false),
        ] {
            let peer = ip(peer);
            assert_eq!(
                policy.allows(Way::Ingress, peer, proto, port),
                want,
                "{peer} {port:?}"
            );
            assert_eq!(
                c.allows(Way::Ingress, peer, proto, port),
                want,
                "{peer} {port:?}"
            );
        }
        assert!(
            c.allows(Way::Egress, ip("1.2.3.4"), TCP, Some(1)),
            "egress is open"
        );
    }

    #[test]
    fn too_many_port_sets_or_prefixes_fail_closed() {
        let rules: Vec<Rule> = (0..=CLASSES as u16)
            .map(|i| Rule {
                peers: vec![Block::any()],
                ports: vec![PortRange {
                    protocol: TCP,
                    first: 1000 + 2 * i,
                    last: 1000 + 2 * i,
                }],
            })
            .collect();
        let c = Classified::new(&rules);
        assert!(c.overflow);
        assert!(!c.allows(ip("1.1.1.1"), TCP, Some(1000)));
        assert!(!Classified::new(&rules[..CLASSES]).overflow);
        let many = Rule {
            peers: (0..=MAX_PREFIXES as u32)
                .map(|i| Block::host(Ipv4Addr::from(0x0a00_0000 + i)))
                .collect(),
            ports: Vec::new(),
        };
        let c = Classified::new(std::slice::from_ref(&many));
        assert!(c.overflow && c.peers.is_empty());
        assert!(!c.allows(ip("10.0.0.1"), TCP, Some(80)));
    }

    fn policy(ns: &str, json: serde_json::Value) -> NetworkPolicy {
        let mut p: NetworkPolicy = serde_json::from_value(json).unwrap();
        p.metadata.namespace = ns.into();
        p.set_defaults();
        p.validate().unwrap();
        p
    }

    fn member(ns: &str, app: &str, last: u8) -> Member {
        Member {
            namespace: ns.into(),
            labels: BTreeMap::from([("app".into(), app.into())]),
            ip: Ipv4Addr::new(10, 0, 0, last),
            named_ports: vec![("http".into(), TCP, 8000 + u16::from(last))],
        }
    }

    #[test]
    fn selectors_resolve_to_addresses_and_named_ports_to_numbers() {
        let members = vec![
            member("shop", "web", 1),
            member("shop", "db", 2),
            member("ops", "probe", 3),
            member("other", "web", 4),
        ];
        let ops = BTreeMap::from([("team".to_owned(), "ops".to_owned())]);
        let none = BTreeMap::new();
        let resolver = Resolver::new([("shop", &none), ("ops", &ops), ("other", &none)], &members);
        let policies = vec![
            // Default deny in shop.
            policy(
                "shop",
                serde_json::json!({"metadata": {"name": "deny"}, "spec": {}}),
            ),
            // db takes web on its named port, and the ops namespace on any port.
            policy(
                "shop",
                serde_json::json!({"metadata": {"name": "db"}, "spec": {
                    "podSelector": {"matchLabels": {"app": "db"}},
                    "ingress": [
                        {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                         "ports": [{"port": "http"}]},
                        {"from": [{"namespaceSelector": {"matchLabels": {"team": "ops"}}}]}
                    ]
                }}),
            ),
            // web may only send to http ports of pods and to 1.2.3.0/24 on 443.
            policy(
                "shop",
                serde_json::json!({"metadata": {"name": "web"}, "spec": {
                    "podSelector": {"matchLabels": {"app": "web"}},
                    "policyTypes": ["Egress"],
                    "egress": [
                        {"ports": [{"port": "http"}]},
                        {"to": [{"ipBlock": {"cidr": "1.2.3.0/24"}}], "ports": [{"port": 443}]}
                    ]
                }}),
            ),
        ];
        let eps = endpoint_policies(&policies, &resolver);
        assert_eq!(eps.len(), 2, "only shop's pods are selected");
        let web = &eps[&ip("10.0.0.1")];
        let db = &eps[&ip("10.0.0.2")];
        assert_eq!(web.ingress.as_deref(), Some(&[][..]), "deny-all ingress");
        assert!(db.egress.is_none());
        for (policy, way, peer, port, want) in [
            (db, Way::Ingress, "10.0.0.1", 8002, true), // web → db's http
            (db, Way::Ingress, "10.0.0.1", 8001, false), // not db's http
            (db, Way::Ingress, "10.0.0.4", 8002, false), // web of another namespace
            (db, Way::Ingress, "10.0.0.3", 9999, true), // ops, any port
            (web, Way::Egress, "10.0.0.2", 8002, true), // db's http
            (web, Way::Egress, "10.0.0.3", 8003, true), // probe's http
            (web, Way::Egress, "10.0.0.3", 8002, false), // db's number at probe
            (web, Way::Egress, "1.2.3.4", 443, true),
            (web, Way::Egress, "1.2.4.4", 443, false),
        ] {
            let c = policy.compile();
            assert_eq!(
                policy.allows(way, ip(peer), TCP, Some(port)),
                want,
                "{peer}:{port}"
            );
            assert_eq!(
                c.allows(way, ip(peer), TCP, Some(port)),
                want,
                "{peer}:{port}"
            );
        }
    }

    fn any_cidr() -> impl Strategy<Value = Ipv4Cidr> {
        // Few distinct networks, so prefixes nest and collide.
        (0u32..4, 0u8..=32).prop_map(|(net, len)| {
            Ipv4Cidr::covering(Ipv4Addr::from(0x0a00_0000 | net << 14 | net), len.max(8))
        })
    }

    fn any_rule() -> impl Strategy<Value = Rule> {
        let block =
            (any_cidr(), prop::collection::vec(any_cidr(), 0..3)).prop_map(|(c, ex)| Block {
                cidr: c,
                except: ex
                    .into_iter()
                    .filter(|e| c.contains(e) && *e != c)
                    .collect(),
            });
        let range = (
            prop::sample::select(vec![TCP, UDP, SCTP]),
            0u16..40,
            0u16..20,
        )
            .prop_map(|(protocol, first, n)| PortRange {
                protocol,
                first: 70 + first,
                last: 70 + first + n,
            });
        (
            prop::collection::vec(block, 0..4),
            prop::collection::vec(range, 0..3),
        )
            .prop_map(|(peers, ports)| Rule { peers, ports })
    }

    proptest! {
        /// The compiled form gives the rules' own verdict for every packet.
        #[test]
        fn classified_verdicts_are_the_rules(
            rules in prop::collection::vec(any_rule(), 0..12),
            packets in prop::collection::vec(
                (any_cidr(), 0u32..1 << 16, prop::sample::select(vec![TCP, UDP, SCTP, 1]),
                 prop::option::of(60u16..140)),
                64,
            ),
        ) {
            let policy = EndpointPolicy { ingress: None, egress: Some(rules) };
            let c = policy.compile();
            for (net, low, protocol, port) in packets {
                let peer = Ipv4Addr::from(u32::from(net.network()) | low);
                let port = port.filter(|_| protocol != 1);
                prop_assert_eq!(
                    c.allows(Way::Egress, peer, protocol, port),
                    policy.allows(Way::Egress, peer, protocol, port),
                    "{} {} {:?}", peer, protocol, port
                );
            }
        }
    }
}
