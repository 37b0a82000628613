//! The [`Dataplane`] interface the operators program hosts through, and [`SimDataplane`],
//! an in-memory region of hosts that forwards packets from their tables as the XDP
//! datapath does, so the management plane is testable without root.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::maglev::Backend;
use crate::policy::Way;
use crate::tables::{
    DropReason, EndpointKey, HostTables, ServiceKey, Step, TableUpdate, flow_hash,
};

/// Why programming a host failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("host {host}: {message}")]
pub struct DataplaneError {
    /// The host's substrate address.
    pub host: Ipv4Addr,
    /// What went wrong.
    pub message: String,
}

/// Programs the transit tables of the region's hosts (in production, each host's transit
/// daemon). Updates to one host apply in order; applying an update twice is harmless.
#[async_trait]
pub trait Dataplane: Send + Sync + 'static {
    /// Applies `updates` to the tables of the host at `host`.
    async fn program(&self, host: Ipv4Addr, updates: &[TableUpdate]) -> Result<(), DataplaneError>;
}

#[derive(Default)]
struct Hosts {
    tables: BTreeMap<Ipv4Addr, HostTables>,
    calls: BTreeMap<Ipv4Addr, u64>,
    updates: u64,
    down: HashSet<Ipv4Addr>,
    /// Connection tracking of each sender's host: a flow to a scaled endpoint → its
    /// backend.
    conntrack: HashMap<(EndpointKey, u16, ServiceKey), Backend>,
}

/// Every host's tables in memory, with counts of the programming each host received.
#[derive(Default)]
pub struct SimDataplane {
    hosts: Mutex<Hosts>,
}

/// Where a packet went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Delivered into `veth` on `host`, or dropped at `host` for a reason.
    pub outcome: Outcome,
    /// Hosts the packet visited, the sender's first.
    pub path: Vec<Ipv4Addr>,
}

impl Delivery {
    /// Substrate crossings (encapsulated hops between hosts).
    pub fn hops(&self) -> usize {
        self.path.len().saturating_sub(1)
    }
}

/// The end of a packet's path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Into a local endpoint's veth.
    Delivered {
        /// The host.
        host: Ipv4Addr,
        /// The host-side interface of the endpoint.
        veth: String,
    },
    /// Dropped.
    Dropped {
        /// Where.
        host: Ipv4Addr,
        /// Why.
        reason: DropReason,
    },
}

/// No path in the design crosses more hosts than sender → bouncer → divider → bouncer →
/// host; anything longer is a loop.
const MAX_HOPS: usize = 6;

impl SimDataplane {
    /// An empty region.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Hosts> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes programming `host` fail (`down`) or succeed again.
    pub fn set_down(&self, host: Ipv4Addr, down: bool) {
        let mut h = self.lock();
        if down {
            h.down.insert(host);
        } else {
            h.down.remove(&host);
        }
    }

    /// Programming calls per host since the last [`SimDataplane::reset_counts`].
    pub fn calls(&self) -> BTreeMap<Ipv4Addr, u64> {
        self.lock().calls.clone()
    }

    /// Table updates applied since the last [`SimDataplane::reset_counts`].
    pub fn updates(&self) -> u64 {
        self.lock().updates
    }

    /// Forgets the call and update counts.
    pub fn reset_counts(&self) {
        let mut h = self.lock();
        h.calls.clear();
        h.updates = 0;
    }

    /// Runs `f` over one host's tables (empty tables for a host never programmed).
    pub fn with_tables<T>(&self, host: Ipv4Addr, f: impl FnOnce(&HostTables) -> T) -> T {
        let h = self.lock();
        match h.tables.get(&host) {
            Some(t) => f(t),
            None => f(&HostTables::default()),
        }
    }

    /// Entries over every host's tables.
    pub fn total_entries(&self) -> usize {
        self.lock().tables.values().map(HostTables::len).sum()
    }

    /// Sends a packet of a flow from endpoint `src`, port `sport`, to `dst`:`dport` over
    /// `protocol` and follows it. To a scaled endpoint of the sender's host, the agent
    /// translates the destination to a backend: the one connection tracking holds for the
    /// flow while it still is a backend, else the Maglev table's (which connection
    /// tracking then holds). The sender's and the receiver's NetworkPolicies (if any) must
    /// allow the packet (statelessly: replies are not told apart). Returns the backend
    /// chosen, if any, and where the packet went.
    pub fn send(
        &self,
        src: EndpointKey,
        sport: u16,
        dst: Ipv4Addr,
        dport: u16,
        protocol: u8,
    ) -> (Option<Backend>, Delivery) {
        let flow = flow_hash(src.ip, dst, protocol, (sport, dport));
        let backend = {
            let mut h = self.lock();
            let key = ServiceKey {
                vni: src.vni,
                vip: dst,
                port: dport,
                protocol,
            };
            let here = h.tables.values().find(|t| t.agents.contains_key(&src));
            let entry = here.and_then(|t| t.services.get(&key));
            match entry {
                None => None,
                Some(s) => {
                    let tracked = h.conntrack.get(&(src, sport, key)).copied();
                    let chosen = tracked
                        .filter(|b| s.table.backends().contains(b))
                        .or_else(|| here?.service_backend(&key, src.ip, flow));
                    match chosen {
                        Some(b) => h.conntrack.insert((src, sport, key), b),
                        None => h.conntrack.remove(&(src, sport, key)),
                    };
                    chosen
                }
            }
        };
        let (to, port) = backend.map_or((dst, dport), |b| (b.ip, b.port));
        let refused = |host: Ipv4Addr, path: Vec<Ipv4Addr>| Delivery {
            outcome: Outcome::Dropped {
                host,
                reason: DropReason::Policy,
            },
            path,
        };
        // NetworkPolicy, without connection tracking: the sender's egress rules, then the
        // receiver's ingress rules where it is delivered.
        let allows = |host: Option<Ipv4Addr>, ep: EndpointKey, way: Way, peer: Ipv4Addr| {
            let h = self.lock();
            let tables = match host {
                Some(host) => h.tables.get(&host),
                None => h.tables.values().find(|t| t.agents.contains_key(&ep)),
            };
            let policy = tables.and_then(|t| t.policies.get(&ep));
            policy.is_none_or(|p| p.compiled.allows(way, peer, protocol, Some(port)))
        };
        if !allows(None, src, Way::Egress, to) {
            let host = self.host_of(src);
            return (backend, refused(host, vec![host]));
        }
        let d = self.deliver(src, to, u64::from(flow));
        if let Outcome::Delivered { host, .. } = &d.outcome
            && !allows(
                Some(*host),
                EndpointKey::new(src.vni, to),
                Way::Ingress,
                src.ip,
            )
        {
            return (backend, refused(*host, d.path));
        }
        (backend, d)
    }

    /// The host with the agent of endpoint `ep` (unspecified if none).
    fn host_of(&self, ep: EndpointKey) -> Ipv4Addr {
        let h = self.lock();
        (h.tables.iter())
            .find(|(_, t)| t.agents.contains_key(&ep))
            .map_or(Ipv4Addr::UNSPECIFIED, |(ip, _)| *ip)
    }

    /// Sends a packet from endpoint `src` to `dst` in the same VNI, with flow hash `flow`,
    /// and follows it: the agent on the sender's host, then the transit program of each
    /// host it reaches, until it is delivered or dropped.
    pub fn deliver(&self, src: EndpointKey, dst: Ipv4Addr, flow: u64) -> Delivery {
        let h = self.lock();
        let Some((&first, tables)) = h.tables.iter().find(|(_, t)| t.agents.contains_key(&src))
        else {
            return Delivery {
                outcome: Outcome::Dropped {
                    host: Ipv4Addr::UNSPECIFIED,
                    reason: DropReason::UnknownSource,
                },
                path: Vec::new(),
            };
        };
        let mut path = vec![first];
        let mut step = tables.egress(src, dst, flow);
        loop {
            let here = *path.last().expect("the path starts with the sender");
            match step {
                Step::Deliver { veth } => {
                    return Delivery {
                        outcome: Outcome::Delivered { host: here, veth },
                        path,
                    };
                }
                Step::Drop(reason) => {
                    return Delivery {
                        outcome: Outcome::Dropped { host: here, reason },
                        path,
                    };
                }
                Step::Forward { host } => {
                    path.push(host);
                    if path.len() > MAX_HOPS {
                        return Delivery {
                            outcome: Outcome::Dropped {
                                host,
                                reason: DropReason::TooManyHops,
                            },
                            path,
                        };
                    }
                    step = match h.tables.get(&host) {
                        Some(t) => t.transit(host, src.vni, dst, flow),
                        None => Step::Drop(DropReason::UnknownVni),
                    };
                }
            }
        }
    }
}

#[async_trait]
impl Dataplane for SimDataplane {
    async fn program(&self, host: Ipv4Addr, updates: &[TableUpdate]) -> Result<(), DataplaneError> {
        let mut h = self.lock();
        if h.down.contains(&host) {
            return Err(DataplaneError {
                host,
                message: "transit daemon unreachable".into(),
            });
        }
        *h.calls.entry(host).or_default() += 1;
        h.updates += updates.len() as u64;
        let tables = h.tables.entry(host).or_default();
        for u in updates {
            tables.apply(u);
        }
        Ok(())
    }
}
