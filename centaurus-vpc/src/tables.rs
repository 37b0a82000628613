//! One host's transit tables, as the XDP programs hold them, and the updates that program
//! them. The same tables serve every role a host plays:
//!
//! - **endpoints** `(vni, ip) → where`: a local endpoint's veth, or (on a bouncer) the host
//!   of a remote endpoint;
//! - **bounced subnets** `(vni, cidr) → dividers`: the subnets this host is a bouncer of,
//!   and where traffic leaving them goes;
//! - **divided subnets** `vni → [(cidr, bouncers)]`: on a divider, every subnet of the VPC;
//! - **agents** `(vni, ip) → bouncers`: the transit agent's metadata on a local endpoint's
//!   veth, naming its subnet's bouncers;
//! - **services** `(vni, vip, port, protocol) → backends`: the scaled endpoints of the
//!   VPCs this host has endpoints of, each with its Maglev table;
//! - **policies** `(vni, ip) → rules`: the NetworkPolicy of a local endpoint, compiled.
//!
//! [`HostTables::transit`] and [`HostTables::egress`] decide a packet's next step from the
//! tables alone, as the BPF programs will.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::ipam::Ipv4Cidr;
use crate::maglev::{Backend, Table};
use crate::policy::{CompiledPolicy, EndpointPolicy};

/// IP protocol numbers of the transports scaled endpoints carry.
pub const TCP: u8 = 6;
/// UDP.
pub const UDP: u8 = 17;

/// The flow hash of an IPv4 packet (FNV-1a over addresses, protocol and ports), so one
/// flow keeps one path and one backend; the XDP programs compute the same.
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

/// A scaled endpoint: a Service's address and port in a VPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceKey {
    /// VNI of the VPC.
    pub vni: u32,
    /// The Service's address.
    pub vip: Ipv4Addr,
    /// Its port.
    pub port: u16,
    /// [`TCP`] or [`UDP`].
    pub protocol: u8,
}

/// A scaled endpoint's backends, as a host holds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    /// The Maglev table over the backends.
    pub table: Table,
    /// True for `ClientIP` affinity: the backend follows the client's address only.
    pub affinity: bool,
}

/// The key of an endpoint in every table: its VPC's VNI and its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EndpointKey {
    /// VNI of the endpoint's VPC.
    pub vni: u32,
    /// The endpoint's address.
    pub ip: Ipv4Addr,
}

impl EndpointKey {
    /// The key of `ip` in `vni`.
    pub fn new(vni: u32, ip: Ipv4Addr) -> Self {
        Self { vni, ip }
    }
}

/// Where an endpoint is, as a host's table says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Location {
    /// On this host, behind the host side of a veth pair.
    Local {
        /// The host-side interface.
        veth: String,
        /// The endpoint's MAC.
        mac: [u8; 6],
    },
    /// On another host (bouncer role).
    Remote {
        /// The host's substrate address.
        host: Ipv4Addr,
        /// The endpoint's MAC.
        mac: [u8; 6],
    },
}

/// One change to one host's tables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TableUpdate {
    /// Adds or replaces an endpoint entry.
    PutEndpoint {
        /// The endpoint.
        key: EndpointKey,
        /// Where it is.
        location: Location,
    },
    /// Removes an endpoint entry.
    DeleteEndpoint {
        /// The endpoint.
        key: EndpointKey,
    },
    /// Makes this host a bouncer of a subnet, sending traffic that leaves it to `dividers`.
    PutBouncedSubnet {
        /// The VPC's VNI.
        vni: u32,
        /// The subnet's range.
        cidr: Ipv4Cidr,
        /// Substrate addresses of the VPC's dividers.
        dividers: Vec<Ipv4Addr>,
    },
    /// This host is no longer a bouncer of the subnet.
    DeleteBouncedSubnet {
        /// The VPC's VNI.
        vni: u32,
        /// The subnet's range.
        cidr: Ipv4Cidr,
    },
    /// Makes this host a divider for a subnet of a VPC: traffic to `cidr` goes to `bouncers`.
    PutDividedSubnet {
        /// The VPC's VNI.
        vni: u32,
        /// The subnet's range.
        cidr: Ipv4Cidr,
        /// Substrate addresses of the subnet's bouncers.
        bouncers: Vec<Ipv4Addr>,
    },
    /// Removes a subnet from this host's divider table.
    DeleteDividedSubnet {
        /// The VPC's VNI.
        vni: u32,
        /// The subnet's range.
        cidr: Ipv4Cidr,
    },
    /// The transit agent's metadata for a local endpoint: its subnet's bouncers.
    PutAgent {
        /// The endpoint.
        key: EndpointKey,
        /// Substrate addresses of its subnet's bouncers.
        bouncers: Vec<Ipv4Addr>,
    },
    /// Removes a local endpoint's agent metadata.
    DeleteAgent {
        /// The endpoint.
        key: EndpointKey,
    },
    /// Adds or replaces a scaled endpoint; the host builds its Maglev table.
    PutService {
        /// The Service's address and port.
        key: ServiceKey,
        /// Its backends.
        backends: Vec<Backend>,
        /// `ClientIP` affinity.
        affinity: bool,
    },
    /// Removes a scaled endpoint.
    DeleteService {
        /// The Service's address and port.
        key: ServiceKey,
    },
    /// Adds or replaces a local endpoint's NetworkPolicy; the host compiles it.
    PutPolicy {
        /// The endpoint.
        key: EndpointKey,
        /// What the policies selecting it allow.
        policy: EndpointPolicy,
    },
    /// The endpoint is selected by no policy any more.
    DeletePolicy {
        /// The endpoint.
        key: EndpointKey,
    },
}

/// A local endpoint's policy as a host holds it: as sent, and compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyEntry {
    /// The rules.
    pub policy: EndpointPolicy,
    /// Their compiled form.
    pub compiled: CompiledPolicy,
}

/// A fast hasher for the fixed-size keys of the tables (the BPF maps hash with jhash; any
/// well-mixed function will do).
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        // Murmur3's finaliser.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Hash maps keyed like the BPF maps.
pub type KeyMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

impl Hash for EndpointKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64(u64::from(self.vni) << 32 | u64::from(u32::from(self.ip)));
    }
}

/// A subnet this host bounces for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BouncedSubnet {
    /// The subnet's range.
    pub cidr: Ipv4Cidr,
    /// The VPC's dividers.
    pub dividers: Vec<Ipv4Addr>,
}

/// A subnet in this host's divider table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DividedSubnet {
    /// The subnet's range.
    pub cidr: Ipv4Cidr,
    /// The subnet's bouncers.
    pub bouncers: Vec<Ipv4Addr>,
}

/// One host's transit tables.
#[derive(Clone, Debug, Default)]
pub struct HostTables {
    /// `(vni, ip) → location`.
    pub endpoints: KeyMap<EndpointKey, Location>,
    /// `vni → subnets bounced here`.
    pub bounced: KeyMap<u32, Vec<BouncedSubnet>>,
    /// `vni → subnets divided here`, longest prefix first.
    pub divided: KeyMap<u32, Vec<DividedSubnet>>,
    /// `(vni, ip) → the local endpoint's bouncers`.
    pub agents: KeyMap<EndpointKey, Vec<Ipv4Addr>>,
    /// `(vni, vip, port, protocol) → backends`.
    pub services: HashMap<ServiceKey, ServiceEntry>,
    /// `(vni, ip) → the local endpoint's policy`.
    pub policies: KeyMap<EndpointKey, PolicyEntry>,
}

/// Why a packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DropReason {
    /// The sender is not an endpoint this host has an agent for.
    UnknownSource,
    /// No endpoint with that address in the VNI, where the tables say it would be.
    UnknownEndpoint,
    /// No subnet of the VPC holds the address.
    NoRoute,
    /// This host holds nothing for the VNI.
    UnknownVni,
    /// The agent has no bouncer to send to.
    NoBouncer,
    /// The packet went around more hosts than any path needs.
    TooManyHops,
    /// The sender's or the receiver's NetworkPolicy refused it.
    Policy,
}

/// A host's decision for a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Into the local endpoint behind `veth`.
    Deliver {
        /// The host-side interface.
        veth: String,
    },
    /// Encapsulated to another host.
    Forward {
        /// The next host's substrate address.
        host: Ipv4Addr,
    },
    /// Dropped.
    Drop(DropReason),
}

fn pick(hosts: &[Ipv4Addr], flow: u64) -> Option<Ipv4Addr> {
    (!hosts.is_empty()).then(|| hosts[(flow % hosts.len() as u64) as usize])
}

impl HostTables {
    /// The updates that build these tables from empty tables (a snapshot to replay).
    pub fn updates(&self) -> Vec<TableUpdate> {
        let mut out: Vec<TableUpdate> = self
            .endpoints
            .iter()
            .map(|(key, location)| TableUpdate::PutEndpoint {
                key: *key,
                location: location.clone(),
            })
            .collect();
        for (vni, nets) in &self.bounced {
            // In their order: the first carries the VNI's own entry.
            out.extend(nets.iter().map(|n| TableUpdate::PutBouncedSubnet {
                vni: *vni,
                cidr: n.cidr,
                dividers: n.dividers.clone(),
            }));
        }
        for (vni, nets) in &self.divided {
            out.extend(nets.iter().map(|n| TableUpdate::PutDividedSubnet {
                vni: *vni,
                cidr: n.cidr,
                bouncers: n.bouncers.clone(),
            }));
        }
        out.extend(self.agents.iter().map(|(key, b)| TableUpdate::PutAgent {
            key: *key,
            bouncers: b.clone(),
        }));
        out.extend(
            self.services
                .iter()
                .map(|(key, s)| TableUpdate::PutService {
                    key: *key,
                    backends: s.table.backends().to_vec(),
                    affinity: s.affinity,
                }),
        );
        out.extend(self.policies.iter().map(|(key, p)| TableUpdate::PutPolicy {
            key: *key,
            policy: p.policy.clone(),
        }));
        out
    }

    /// Applies one update.
    pub fn apply(&mut self, update: &TableUpdate) {
        match update {
            TableUpdate::PutEndpoint { key, location } => {
                self.endpoints.insert(*key, location.clone());
            }
            TableUpdate::DeleteEndpoint { key } => {
                self.endpoints.remove(key);
            }
            TableUpdate::PutBouncedSubnet {
                vni,
                cidr,
                dividers,
            } => {
                let nets = self.bounced.entry(*vni).or_default();
                nets.retain(|n| n.cidr != *cidr);
                nets.push(BouncedSubnet {
                    cidr: *cidr,
                    dividers: dividers.clone(),
                });
            }
            TableUpdate::DeleteBouncedSubnet { vni, cidr } => {
                if let Some(nets) = self.bounced.get_mut(vni) {
                    nets.retain(|n| n.cidr != *cidr);
                    if nets.is_empty() {
                        self.bounced.remove(vni);
                    }
                }
            }
            TableUpdate::PutDividedSubnet {
                vni,
                cidr,
                bouncers,
            } => {
                let nets = self.divided.entry(*vni).or_default();
                nets.retain(|n| n.cidr != *cidr);
                nets.push(DividedSubnet {
                    cidr: *cidr,
                    bouncers: bouncers.clone(),
                });
                nets.sort_by_key(|n| std::cmp::Reverse(n.cidr.prefix_len()));
            }
            TableUpdate::DeleteDividedSubnet { vni, cidr } => {
                if let Some(nets) = self.divided.get_mut(vni) {
                    nets.retain(|n| n.cidr != *cidr);
                    if nets.is_empty() {
                        self.divided.remove(vni);
                    }
                }
            }
            TableUpdate::PutAgent { key, bouncers } => {
                self.agents.insert(*key, bouncers.clone());
            }
            TableUpdate::DeleteAgent { key } => {
                self.agents.remove(key);
            }
            TableUpdate::PutService {
                key,
                backends,
                affinity,
            } => {
                self.services.insert(
                    *key,
                    ServiceEntry {
                        table: Table::new(backends),
                        affinity: *affinity,
                    },
                );
            }
            TableUpdate::DeleteService { key } => {
                self.services.remove(key);
            }
            TableUpdate::PutPolicy { key, policy } => {
                let compiled = policy.compile();
                let policy = policy.clone();
                self.policies.insert(*key, PolicyEntry { policy, compiled });
            }
            TableUpdate::DeletePolicy { key } => {
                self.policies.remove(key);
            }
        }
    }

    /// The backend of a new flow to scaled endpoint `key` from `client`, with flow hash
    /// `flow`: by the flow, or by the client's address alone under `ClientIP` affinity.
    /// None when `key` is no scaled endpoint here, or it has no backends.
    pub fn service_backend(
        &self,
        key: &ServiceKey,
        client: Ipv4Addr,
        flow: u32,
    ) -> Option<Backend> {
        let s = self.services.get(key)?;
        let hash = if s.affinity {
            crate::maglev::client_hash(client)
        } else {
            flow
        };
        s.table.pick(hash)
    }

    /// The transit agent's decision for a packet a local endpoint `src` sends to `dst`:
    /// same-host endpoints directly, everything else to one of the subnet's bouncers.
    pub fn egress(&self, src: EndpointKey, dst: Ipv4Addr, flow: u64) -> Step {
        let Some(bouncers) = self.agents.get(&src) else {
            return Step::Drop(DropReason::UnknownSource);
        };
        if let Some(Location::Local { veth, .. }) =
            self.endpoints.get(&EndpointKey::new(src.vni, dst))
        {
            return Step::Deliver { veth: veth.clone() };
        }
        match pick(bouncers, flow) {
            Some(host) => Step::Forward { host },
            None => Step::Drop(DropReason::NoBouncer),
        }
    }

    /// The transit XDP program's decision for an encapsulated packet to `(vni, dst)`
    /// arriving at this host (`me`).
    pub fn transit(&self, me: Ipv4Addr, vni: u32, dst: Ipv4Addr, flow: u64) -> Step {
        match self.endpoints.get(&EndpointKey::new(vni, dst)) {
            Some(Location::Local { veth, .. }) => return Step::Deliver { veth: veth.clone() },
            Some(Location::Remote { host, .. }) if *host != me => {
                return Step::Forward { host: *host };
            }
            _ => {}
        }
        let bounced = self.bounced.get(&vni);
        if bounced.is_some_and(|nets| nets.iter().any(|n| n.cidr.contains_addr(dst))) {
            // This host is the subnet's bouncer and does not know the endpoint.
            return Step::Drop(DropReason::UnknownEndpoint);
        }
        if let Some(nets) = self.divided.get(&vni) {
            return match nets.iter().find(|n| n.cidr.contains_addr(dst)) {
                Some(n) => match pick(&n.bouncers, flow) {
                    Some(host) if host != me => Step::Forward { host },
                    _ => Step::Drop(DropReason::UnknownEndpoint),
                },
                None => Step::Drop(DropReason::NoRoute),
            };
        }
        if let Some(nets) = bounced {
            // Leaving the subnet: to one of the VPC's dividers.
            return match nets.first().and_then(|n| pick(&n.dividers, flow)) {
                Some(host) if host != me => Step::Forward { host },
                _ => Step::Drop(DropReason::NoRoute),
            };
        }
        Step::Drop(DropReason::UnknownVni)
    }

    /// The number of entries over all tables.
    pub fn len(&self) -> usize {
        self.endpoints.len()
            + self.bounced.values().map(Vec::len).sum::<usize>()
            + self.divided.values().map(Vec::len).sum::<usize>()
            + self.agents.len()
            + self.services.len()
            + self.policies.len()
    }

    /// True when every table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(vni: u32, last: u8) -> EndpointKey {
        EndpointKey {
            vni,
            ip: Ipv4Addr::new(10, 0, 0, last),
        }
    }

    #[test]
    fn a_snapshot_rebuilds_the_same_tables() {
        let host = |i: u8| Ipv4Addr::new(192, 168, 0, i);
        let mut t = HostTables::default();
        for u in [
            TableUpdate::PutEndpoint {
                key: ep(7, 2),
                location: Location::Remote {
                    host: host(2),
                    mac: [2, 0, 0, 0, 0, 2],
                },
            },
            TableUpdate::PutEndpoint {
                key: ep(7, 3),
                location: Location::Local {
                    veth: "ve0".into(),
                    mac: [2, 0, 0, 0, 0, 3],
                },
            },
            TableUpdate::PutBouncedSubnet {
                vni: 7,
                cidr: "10.0.0.0/24".parse().unwrap(),
                dividers: vec![host(4)],
            },
            TableUpdate::PutBouncedSubnet {
                vni: 7,
                cidr: "10.0.1.0/24".parse().unwrap(),
                dividers: vec![host(5)],
            },
            TableUpdate::PutDividedSubnet {
                vni: 7,
                cidr: "10.0.0.0/16".parse().unwrap(),
                bouncers: vec![host(1), host(3)],
            },
            TableUpdate::PutDividedSubnet {
                vni: 7,
                cidr: "10.0.2.0/24".parse().unwrap(),
                bouncers: vec![host(6)],
            },
            TableUpdate::PutAgent {
                key: ep(7, 3),
                bouncers: vec![host(1)],
            },
            TableUpdate::DeleteEndpoint { key: ep(7, 2) },
        ] {
            t.apply(&u);
        }
        let mut rebuilt = HostTables::default();
        for u in t.updates() {
            rebuilt.apply(&u);
        }
        let sorted = |t: &HostTables| {
            let mut v: Vec<String> = t.updates().iter().map(|u| format!("{u:?}")).collect();
            v.sort();
            v
        };
        assert_eq!(sorted(&rebuilt), sorted(&t));
        assert_eq!(rebuilt.endpoints.len(), 1);
        let order =
            |t: &HostTables| -> Vec<Ipv4Cidr> { t.bounced[&7].iter().map(|n| n.cidr).collect() };
        assert_eq!(
            order(&rebuilt),
            order(&t),
            "bounced subnets keep their order"
        );
        let divided: Vec<u8> = rebuilt.divided[&7]
            .iter()
            .map(|n| n.cidr.prefix_len())
            .collect();
        assert_eq!(divided, [24, 16], "longest prefix first");
    }
}
