//! The operators' pipeline in one process (Mizar's "simple function calls" mode): the VPC,
//! subnet, endpoint, bouncer and divider operators as functions over one in-memory
//! [`Plane`], each step computing the table updates of the hosts it touches.
//!
//! The plane is pure: it decides placements, addresses and [`Programming`]; the
//! [`crate::operator`] applies the programming through a [`crate::Dataplane`] and writes
//! the final states to the store. Intermediate phases are logged at debug level.
//!
//! Bouncers and dividers are placed by rendezvous hashing over the droplets: a subnet's
//! bouncers are the `n` droplets that score highest for it, so they are spread, distinct
//! whenever there are `n` droplets, the same in every replica, and scaling `n` adds or
//! removes only the tail.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use centaurus_core::ring::stable_hash;

use crate::ipam::{IpamError, Ipv4Cidr, SubnetPool, endpoint_mac};
use crate::maglev::Backend;
use crate::policy::EndpointPolicy;
use crate::tables::{EndpointKey, Location, ServiceKey, TableUpdate};

/// Ordered table updates per host.
pub type Programming = BTreeMap<Ipv4Addr, Vec<TableUpdate>>;

/// Why the plane refused an object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaneError {
    /// The VPC is not (yet) provisioned here.
    #[error("vpc {0:?} is not provisioned")]
    UnknownVpc(String),
    /// The subnet is not (yet) provisioned here.
    #[error("subnet {0:?} is not provisioned")]
    UnknownSubnet(String),
    /// No droplet with that name.
    #[error("droplet {0:?} does not exist")]
    UnknownDroplet(String),
    /// Bouncers and dividers need droplets.
    #[error("the region has no droplets to place {0} on")]
    NoDroplets(&'static str),
    /// A subnet outside its VPC, or overlapping a sibling.
    #[error("{0}")]
    Cidr(String),
    /// The spec changed a field that cannot change.
    #[error("{0} cannot change once provisioned")]
    Immutable(&'static str),
    /// Address or VNI allocation failed.
    #[error(transparent)]
    Ipam(#[from] IpamError),
}

/// A host's substrate interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropletInfo {
    /// Substrate address.
    pub ip: Ipv4Addr,
    /// Substrate MAC.
    pub mac: [u8; 6],
}

#[derive(Debug)]
struct VpcState {
    cidr: Ipv4Cidr,
    vni: u32,
    dividers: Vec<String>,
    subnets: BTreeSet<String>,
    /// Droplets with endpoints of the VPC, and how many: the hosts its Services are
    /// programmed on.
    hosts: BTreeMap<String, usize>,
    /// Services by id: their scaled endpoints.
    services: BTreeMap<String, Vec<ScaledEndpoint>>,
    /// The NetworkPolicy of each endpoint some policy selects, as programmed.
    policies: BTreeMap<Ipv4Addr, EndpointPolicy>,
}

/// One port of a Service in a VPC: its scaled endpoint and backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaledEndpoint {
    /// The Service's address, port and protocol (the VNI is the VPC's).
    pub vip: Ipv4Addr,
    /// The port.
    pub port: u16,
    /// [`crate::tables::TCP`] or [`crate::tables::UDP`].
    pub protocol: u8,
    /// The pods' addresses and ports.
    pub backends: Vec<Backend>,
    /// `ClientIP` affinity.
    pub affinity: bool,
}

impl ScaledEndpoint {
    fn key(&self, vni: u32) -> ServiceKey {
        ServiceKey {
            vni,
            vip: self.vip,
            port: self.port,
            protocol: self.protocol,
        }
    }

    fn put(&self, vni: u32) -> TableUpdate {
        TableUpdate::PutService {
            key: self.key(vni),
            backends: self.backends.clone(),
            affinity: self.affinity,
        }
    }
}

#[derive(Debug)]
struct SubnetState {
    vpc: String,
    pool: SubnetPool,
    bouncers: Vec<String>,
    endpoints: BTreeMap<Ipv4Addr, String>,
    /// True once the endpoints provisioned before this plane held the subnet are adopted.
    primed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct EndpointState {
    subnet: String,
    ip: Ipv4Addr,
    droplet: String,
    veth: String,
}

/// What provisioning a VPC decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VpcPlaced {
    /// The VNI.
    pub vni: u32,
    /// Droplets of its dividers.
    pub dividers: Vec<String>,
}

/// What provisioning a subnet decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetPlaced {
    /// The VPC's VNI.
    pub vni: u32,
    /// The gateway address.
    pub gateway: Ipv4Addr,
    /// Droplets of its bouncers.
    pub bouncers: Vec<String>,
}

/// What provisioning an endpoint decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointPlaced {
    /// The address.
    pub ip: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix_len: u8,
    /// The MAC.
    pub mac: [u8; 6],
    /// The subnet's gateway.
    pub gateway: Ipv4Addr,
    /// The VPC's VNI.
    pub vni: u32,
    /// The droplet's substrate address and MAC.
    pub host: DropletInfo,
    /// The host side of the veth pair.
    pub veth: String,
    /// Substrate addresses of the subnet's bouncers.
    pub bouncers: Vec<Ipv4Addr>,
}

/// The host-side interface name of an endpoint: stable, at most 15 characters.
pub fn veth_name(endpoint: &str) -> String {
    format!(
        "ve{:012x}",
        stable_hash(endpoint.as_bytes()) & 0xffff_ffff_ffff
    )
}

/// The network state one operator replica owns, and the programming each change needs.
#[derive(Debug, Default)]
pub struct Plane {
    droplets: BTreeMap<String, DropletInfo>,
    vpcs: HashMap<String, VpcState>,
    subnets: HashMap<String, SubnetState>,
    endpoints: HashMap<String, EndpointState>,
    /// The VPC of each Service held.
    service_vpcs: HashMap<String, String>,
}

fn put(p: &mut Programming, host: Ipv4Addr, u: TableUpdate) {
    p.entry(host).or_default().push(u);
}

impl Plane {
    /// An empty plane.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or updates a droplet. Existing placements stay where they are.
    pub fn set_droplet(&mut self, name: &str, info: DropletInfo) {
        self.droplets.insert(name.to_owned(), info);
    }

    /// The droplets known.
    pub fn droplets(&self) -> &BTreeMap<String, DropletInfo> {
        &self.droplets
    }

    /// Removes a droplet; returns the VPCs and subnets that had a divider or bouncer on it,
    /// to be provisioned again so their roles move elsewhere.
    pub fn remove_droplet(&mut self, name: &str) -> (Vec<String>, Vec<String>) {
        self.droplets.remove(name);
        let vpcs = self
            .vpcs
            .iter()
            .filter(|(_, v)| v.dividers.iter().any(|d| d == name))
            .map(|(k, _)| k.clone())
            .collect();
        let subnets = self
            .subnets
            .iter()
            .filter(|(_, s)| s.bouncers.iter().any(|b| b == name))
            .map(|(k, _)| k.clone())
            .collect();
        (vpcs, subnets)
    }

    /// The `n` droplets ranked first for `key`, keeping those of `current` that still
    /// exist and rank within the first `n` among them.
    fn place(&self, key: &str, n: usize, current: &[String]) -> Vec<String> {
        let score = |d: &str| stable_hash(format!("{key}/{d}").as_bytes());
        let mut kept: Vec<&String> = current
            .iter()
            .filter(|d| self.droplets.contains_key(*d))
            .collect();
        kept.sort_by_key(|d| std::cmp::Reverse(score(d)));
        kept.truncate(n);
        let mut out: Vec<String> = kept.into_iter().cloned().collect();
        if out.len() < n {
            let mut ranked: Vec<(u64, &String)> = self
                .droplets
                .keys()
                .filter(|d| !out.contains(d))
                .map(|d| (score(d), d))
                .collect();
            ranked.sort_unstable_by(|a, b| b.cmp(a));
            out.extend(
                ranked
                    .into_iter()
                    .take(n - out.len())
                    .map(|(_, d)| d.clone()),
            );
        }
        out
    }

    fn ips(&self, droplets: &[String]) -> Vec<Ipv4Addr> {
        droplets
            .iter()
            .filter_map(|d| self.droplets.get(d))
            .map(|d| d.ip)
            .collect()
    }

    fn host_of(&self, droplet: &str) -> Result<&DropletInfo, PlaneError> {
        self.droplets
            .get(droplet)
            .ok_or_else(|| PlaneError::UnknownDroplet(droplet.to_owned()))
    }

    /// True when the VPC is provisioned here.
    pub fn has_vpc(&self, id: &str) -> bool {
        self.vpcs.contains_key(id)
    }

    /// True when the subnet is provisioned here.
    pub fn has_subnet(&self, id: &str) -> bool {
        self.subnets.contains_key(id)
    }

    /// True when the endpoint is provisioned here.
    pub fn has_endpoint(&self, id: &str) -> bool {
        self.endpoints.contains_key(id)
    }

    /// The VPC of a held subnet.
    pub fn subnet_vpc(&self, id: &str) -> Option<String> {
        self.subnets.get(id).map(|s| s.vpc.clone())
    }

    /// The VPC of a held endpoint.
    pub fn endpoint_vpc(&self, id: &str) -> Option<String> {
        self.subnet_vpc(&self.endpoints.get(id)?.subnet)
    }

    /// Droplets of a held VPC's dividers.
    pub fn vpc_dividers(&self, id: &str) -> Option<Vec<String>> {
        self.vpcs.get(id).map(|v| v.dividers.clone())
    }

    /// Droplets of a held subnet's bouncers.
    pub fn subnet_bouncers(&self, id: &str) -> Option<Vec<String>> {
        self.subnets.get(id).map(|s| s.bouncers.clone())
    }

    /// True once [`Plane::set_primed`] was called for the held subnet.
    pub fn is_primed(&self, id: &str) -> bool {
        self.subnets.get(id).is_some_and(|s| s.primed)
    }

    /// Marks a held subnet's earlier endpoints as adopted: from now on, fresh addresses
    /// cannot collide with addresses handed out before.
    pub fn set_primed(&mut self, id: &str) {
        if let Some(s) = self.subnets.get_mut(id) {
            s.primed = true;
        }
    }

    /// Numbers of VPCs, subnets and endpoints held.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.vpcs.len(), self.subnets.len(), self.endpoints.len())
    }

    /// Provisions VPC `id` (`tenant/name`), or brings it to a new divider count. `placed`
    /// keeps an earlier placement (resume). Programs the dividers with every subnet, and
    /// the subnets' bouncers when the dividers changed.
    pub fn provision_vpc(
        &mut self,
        id: &str,
        cidr: Ipv4Cidr,
        vni: u32,
        dividers: usize,
        placed: &[String],
    ) -> Result<(VpcPlaced, Programming), PlaneError> {
        if self.droplets.is_empty() {
            return Err(PlaneError::NoDroplets("dividers"));
        }
        let mut prog = Programming::new();
        let old = match self.vpcs.get(id) {
            Some(v) if v.cidr != cidr => return Err(PlaneError::Immutable("spec.cidr")),
            Some(v) if v.vni != vni => return Err(PlaneError::Immutable("spec.vni")),
            Some(v) => v.dividers.clone(),
            None => {
                tracing::debug!(vpc = id, vni, phase = "Allocated", "vpc");
                placed.to_vec()
            }
        };
        let new = self.place(id, dividers, &old);
        tracing::debug!(vpc = id, dividers = ?new, phase = "Placed", "vpc");
        let state = self.vpcs.entry(id.to_owned()).or_insert_with(|| VpcState {
            cidr,
            vni,
            dividers: Vec::new(),
            subnets: BTreeSet::new(),
            hosts: BTreeMap::new(),
            services: BTreeMap::new(),
            policies: BTreeMap::new(),
        });
        let had = std::mem::replace(&mut state.dividers, new.clone());
        let subnets: Vec<String> = state.subnets.iter().cloned().collect();
        if had != new {
            let new_ips = self.ips(&new);
            for s in &subnets {
                let sub = &self.subnets[s];
                let cidr = sub.pool.cidr();
                for d in new.iter().filter(|d| !had.contains(d)) {
                    let bouncers = self.ips(&sub.bouncers);
                    put(
                        &mut prog,
                        self.droplets[d].ip,
                        TableUpdate::PutDividedSubnet {
                            vni,
                            cidr,
                            bouncers,
                        },
                    );
                }
                for d in had.iter().filter(|d| !new.contains(d)) {
                    if let Some(info) = self.droplets.get(d) {
                        put(
                            &mut prog,
                            info.ip,
                            TableUpdate::DeleteDividedSubnet { vni, cidr },
                        );
                    }
                }
                for b in self.ips(&sub.bouncers) {
                    put(
                        &mut prog,
                        b,
                        TableUpdate::PutBouncedSubnet {
                            vni,
                            cidr,
                            dividers: new_ips.clone(),
                        },
                    );
                }
            }
        }
        Ok((VpcPlaced { vni, dividers: new }, prog))
    }

    /// Provisions subnet `id` of VPC `vpc`, or brings it to a new bouncer count: the
    /// bouncers get the subnet and its endpoints, the dividers the bouncers, and the
    /// endpoints' hosts the new bouncer list.
    pub fn provision_subnet(
        &mut self,
        id: &str,
        vpc: &str,
        cidr: Ipv4Cidr,
        bouncers: usize,
        placed: &[String],
    ) -> Result<(SubnetPlaced, Programming), PlaneError> {
        if self.droplets.is_empty() {
            return Err(PlaneError::NoDroplets("bouncers"));
        }
        let v = self
            .vpcs
            .get(vpc)
            .ok_or_else(|| PlaneError::UnknownVpc(vpc.to_owned()))?;
        let vni = v.vni;
        let old = match self.subnets.get(id) {
            Some(s) if s.pool.cidr() != cidr => return Err(PlaneError::Immutable("spec.cidr")),
            Some(s) if s.vpc != vpc => return Err(PlaneError::Immutable("spec.vpc")),
            Some(s) => s.bouncers.clone(),
            None => {
                if !v.cidr.contains(&cidr) {
                    return Err(PlaneError::Cidr(format!(
                        "{cidr} is not inside the vpc's {}",
                        v.cidr
                    )));
                }
                if let Some(other) = v
                    .subnets
                    .iter()
                    .find(|o| self.subnets[*o].pool.cidr().overlaps(&cidr))
                {
                    return Err(PlaneError::Cidr(format!(
                        "{cidr} overlaps subnet {other} ({})",
                        self.subnets[other].pool.cidr()
                    )));
                }
                placed.to_vec()
            }
        };
        let new = self.place(id, bouncers, &old);
        tracing::debug!(subnet = id, bouncers = ?new, phase = "Placed", "subnet");
        let dividers = self.ips(&self.vpcs[vpc].dividers);
        self.vpcs
            .get_mut(vpc)
            .expect("checked above")
            .subnets
            .insert(id.to_owned());
        let state = self
            .subnets
            .entry(id.to_owned())
            .or_insert_with(|| SubnetState {
                vpc: vpc.to_owned(),
                pool: SubnetPool::new(cidr),
                bouncers: Vec::new(),
                endpoints: BTreeMap::new(),
                primed: false,
            });
        let gateway = state.pool.gateway();
        let had = std::mem::replace(&mut state.bouncers, new.clone());
        let mut prog = Programming::new();
        if had != new {
            let state = &self.subnets[id];
            let new_ips = self.ips(&new);
            for b in new.iter().filter(|b| !had.contains(b)) {
                let host = self.droplets[b].ip;
                put(
                    &mut prog,
                    host,
                    TableUpdate::PutBouncedSubnet {
                        vni,
                        cidr,
                        dividers: dividers.clone(),
                    },
                );
                for ep in state.endpoints.values() {
                    let e = &self.endpoints[ep];
                    put(&mut prog, host, self.endpoint_entry(vni, e, host));
                }
            }
            for b in had.iter().filter(|b| !new.contains(b)) {
                let Some(info) = self.droplets.get(b) else {
                    continue;
                };
                put(
                    &mut prog,
                    info.ip,
                    TableUpdate::DeleteBouncedSubnet { vni, cidr },
                );
                for ep in state.endpoints.values() {
                    let e = &self.endpoints[ep];
                    if self
                        .droplets
                        .get(&e.droplet)
                        .is_none_or(|d| d.ip != info.ip)
                    {
                        put(
                            &mut prog,
                            info.ip,
                            TableUpdate::DeleteEndpoint {
                                key: EndpointKey::new(vni, e.ip),
                            },
                        );
                    }
                }
            }
            for d in &dividers {
                put(
                    &mut prog,
                    *d,
                    TableUpdate::PutDividedSubnet {
                        vni,
                        cidr,
                        bouncers: new_ips.clone(),
                    },
                );
            }
            for ep in state.endpoints.values() {
                let e = &self.endpoints[ep];
                if let Some(h) = self.droplets.get(&e.droplet) {
                    put(
                        &mut prog,
                        h.ip,
                        TableUpdate::PutAgent {
                            key: EndpointKey::new(vni, e.ip),
                            bouncers: new_ips.clone(),
                        },
                    );
                }
            }
            tracing::debug!(
                subnet = id,
                hosts = prog.len(),
                phase = "Programmed",
                "subnet"
            );
        }
        Ok((
            SubnetPlaced {
                vni,
                gateway,
                bouncers: new,
            },
            prog,
        ))
    }

    /// The entry for endpoint `e` in the table of `host`: local when it lives there.
    fn endpoint_entry(&self, vni: u32, e: &EndpointState, host: Ipv4Addr) -> TableUpdate {
        let key = EndpointKey::new(vni, e.ip);
        let mac = endpoint_mac(vni, e.ip);
        let home = self.droplets.get(&e.droplet).map(|d| d.ip);
        let location = if home == Some(host) {
            Location::Local {
                veth: e.veth.clone(),
                mac,
            }
        } else {
            Location::Remote {
                host: home.unwrap_or(Ipv4Addr::UNSPECIFIED),
                mac,
            }
        };
        TableUpdate::PutEndpoint { key, location }
    }

    /// Provisions endpoint `id` on subnet `subnet` and droplet `droplet`, with `ip` when
    /// given (a requested or earlier address) or the next free one. Programs only the
    /// subnet's bouncers and the endpoint's own host.
    pub fn provision_endpoint(
        &mut self,
        id: &str,
        subnet: &str,
        droplet: &str,
        ip: Option<Ipv4Addr>,
    ) -> Result<(EndpointPlaced, Programming), PlaneError> {
        let host = self.host_of(droplet)?.clone();
        let s = self
            .subnets
            .get(subnet)
            .ok_or_else(|| PlaneError::UnknownSubnet(subnet.to_owned()))?;
        if let Some(e) = self.endpoints.get(id) {
            if e.subnet != subnet {
                return Err(PlaneError::Immutable("spec.subnet"));
            }
            if e.droplet != droplet {
                return Err(PlaneError::Immutable("spec.droplet"));
            }
            if ip.is_some_and(|ip| ip != e.ip) {
                return Err(PlaneError::Immutable("spec.ip"));
            }
        } else {
            let ip = match ip {
                Some(ip) => s.pool.reserve(ip).map(|()| ip)?,
                None => s.pool.allocate()?,
            };
            tracing::debug!(endpoint = id, %ip, phase = "Allocated", "endpoint");
            let e = EndpointState {
                subnet: subnet.to_owned(),
                ip,
                droplet: droplet.to_owned(),
                veth: veth_name(id),
            };
            let s = self.subnets.get_mut(subnet).expect("checked above");
            s.endpoints.insert(ip, id.to_owned());
            let vpc = s.vpc.clone();
            self.endpoints.insert(id.to_owned(), e);
            if let Some(v) = self.vpcs.get_mut(&vpc) {
                *v.hosts.entry(droplet.to_owned()).or_default() += 1;
            }
        }
        let s = &self.subnets[subnet];
        let e = &self.endpoints[id];
        let vni = self.vpcs[&s.vpc].vni;
        let key = EndpointKey::new(vni, e.ip);
        let bouncers = self.ips(&s.bouncers);
        let mut prog = Programming::new();
        for b in &bouncers {
            put(&mut prog, *b, self.endpoint_entry(vni, e, *b));
        }
        if !bouncers.contains(&host.ip) {
            put(&mut prog, host.ip, self.endpoint_entry(vni, e, host.ip));
        }
        put(
            &mut prog,
            host.ip,
            TableUpdate::PutAgent {
                key,
                bouncers: bouncers.clone(),
            },
        );
        // The first endpoint of the VPC on its host brings the VPC's Services there.
        let v = &self.vpcs[&s.vpc];
        if v.hosts.get(droplet) == Some(&1) {
            for se in v.services.values().flatten() {
                put(&mut prog, host.ip, se.put(vni));
            }
        }
        if let Some(policy) = v.policies.get(&e.ip) {
            let policy = policy.clone();
            put(&mut prog, host.ip, TableUpdate::PutPolicy { key, policy });
        }
        tracing::debug!(
            endpoint = id,
            hosts = prog.len(),
            phase = "Programmed",
            "endpoint"
        );
        let placed = EndpointPlaced {
            ip: e.ip,
            prefix_len: s.pool.cidr().prefix_len(),
            mac: endpoint_mac(vni, e.ip),
            gateway: s.pool.gateway(),
            vni,
            host,
            veth: e.veth.clone(),
            bouncers,
        };
        Ok((placed, prog))
    }

    /// Removes endpoint `id` from its bouncers and its host, and frees its address.
    pub fn delete_endpoint(&mut self, id: &str) -> Programming {
        let mut prog = Programming::new();
        let Some(e) = self.endpoints.remove(id) else {
            return prog;
        };
        let Some(s) = self.subnets.get_mut(&e.subnet) else {
            return prog;
        };
        s.endpoints.remove(&e.ip);
        s.pool.release(e.ip);
        let key = EndpointKey::new(self.vpcs[&s.vpc].vni, e.ip);
        // The last endpoint of the VPC on its host takes the VPC's Services away.
        let v = self
            .vpcs
            .get_mut(&s.vpc)
            .expect("a held subnet's vpc is held");
        let last = match v.hosts.get_mut(&e.droplet) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => v.hosts.remove(&e.droplet).is_some(),
            None => false,
        };
        let had_policy = v.policies.remove(&e.ip).is_some();
        if had_policy && let Some(h) = self.droplets.get(&e.droplet) {
            put(&mut prog, h.ip, TableUpdate::DeletePolicy { key });
        }
        if last && let Some(h) = self.droplets.get(&e.droplet) {
            for se in v.services.values().flatten() {
                put(
                    &mut prog,
                    h.ip,
                    TableUpdate::DeleteService { key: se.key(v.vni) },
                );
            }
        }
        let s = &self.subnets[&e.subnet];
        for b in self.ips(&s.bouncers) {
            put(&mut prog, b, TableUpdate::DeleteEndpoint { key });
        }
        if let Some(h) = self.droplets.get(&e.droplet) {
            if !s.bouncers.contains(&e.droplet) {
                put(&mut prog, h.ip, TableUpdate::DeleteEndpoint { key });
            }
            put(&mut prog, h.ip, TableUpdate::DeleteAgent { key });
        }
        prog
    }

    /// Removes subnet `id`, its bouncers' tables and its dividers' route, and every
    /// endpoint still on it.
    pub fn delete_subnet(&mut self, id: &str) -> Programming {
        let mut prog = Programming::new();
        let eps: Vec<String> = match self.subnets.get(id) {
            Some(s) => s.endpoints.values().cloned().collect(),
            None => return prog,
        };
        for ep in eps {
            merge(&mut prog, self.delete_endpoint(&ep));
        }
        let s = self.subnets.remove(id).expect("checked above");
        let Some(v) = self.vpcs.get_mut(&s.vpc) else {
            return prog;
        };
        v.subnets.remove(id);
        let (vni, cidr) = (v.vni, s.pool.cidr());
        let dividers = v.dividers.clone();
        for b in self.ips(&s.bouncers) {
            put(&mut prog, b, TableUpdate::DeleteBouncedSubnet { vni, cidr });
        }
        for d in self.ips(&dividers) {
            put(&mut prog, d, TableUpdate::DeleteDividedSubnet { vni, cidr });
        }
        prog
    }

    /// Removes VPC `id` and everything in it.
    pub fn delete_vpc(&mut self, id: &str) -> Programming {
        let mut prog = Programming::new();
        let subnets: Vec<String> = match self.vpcs.get(id) {
            Some(v) => v.subnets.iter().cloned().collect(),
            None => return prog,
        };
        for s in subnets {
            merge(&mut prog, self.delete_subnet(&s));
        }
        // Its hosts lost its Services with their last endpoints.
        if let Some(v) = self.vpcs.remove(id) {
            for svc in v.services.keys() {
                self.service_vpcs.remove(svc);
            }
        }
        prog
    }

    /// Drops VPC `id` and what is in it from this plane without touching any host: another
    /// replica owns it now.
    pub fn forget_vpc(&mut self, id: &str) {
        let Some(v) = self.vpcs.remove(id) else {
            return;
        };
        for svc in v.services.keys() {
            self.service_vpcs.remove(svc);
        }
        for s in v.subnets {
            if let Some(s) = self.subnets.remove(&s) {
                for ep in s.endpoints.values() {
                    self.endpoints.remove(ep);
                }
            }
        }
    }

    /// Provisions Service `id` (`tenant/namespace/name`) in VPC `vpc` with one scaled
    /// endpoint per port, or brings it to new ports and backends (or moves it from the VPC
    /// it was in). Programs the hosts that have endpoints of the VPC, and on each only the
    /// scaled endpoints that changed: a change of backends touches those hosts, not every
    /// host of the region.
    pub fn provision_service(
        &mut self,
        id: &str,
        vpc: &str,
        ports: Vec<ScaledEndpoint>,
    ) -> Result<Programming, PlaneError> {
        if !self.vpcs.contains_key(vpc) {
            return Err(PlaneError::UnknownVpc(vpc.to_owned()));
        }
        let mut prog = match self.service_vpcs.get(id).filter(|v| *v != vpc).cloned() {
            Some(was) => self.delete_service(id, &was),
            None => Programming::new(),
        };
        let v = self.vpcs.get_mut(vpc).expect("checked above");
        let old = v
            .services
            .insert(id.to_owned(), ports.clone())
            .unwrap_or_default();
        self.service_vpcs.insert(id.to_owned(), vpc.to_owned());
        let vni = v.vni;
        let mut updates: Vec<TableUpdate> = old
            .iter()
            .filter(|o| !ports.iter().any(|p| p.key(vni) == o.key(vni)))
            .map(|o| TableUpdate::DeleteService { key: o.key(vni) })
            .collect();
        updates.extend(
            ports
                .iter()
                .filter(|p| !old.contains(p))
                .map(|p| p.put(vni)),
        );
        if updates.is_empty() {
            return Ok(prog);
        }
        let hosts: Vec<String> = v.hosts.keys().cloned().collect();
        for h in self.ips(&hosts) {
            prog.entry(h).or_default().extend(updates.iter().cloned());
        }
        tracing::debug!(
            service = id,
            hosts = prog.len(),
            phase = "Programmed",
            "service"
        );
        Ok(prog)
    }

    /// Removes Service `id` of VPC `vpc` from the hosts that hold it.
    pub fn delete_service(&mut self, id: &str, vpc: &str) -> Programming {
        let mut prog = Programming::new();
        let Some(v) = self.vpcs.get_mut(vpc) else {
            return prog;
        };
        let Some(old) = v.services.remove(id) else {
            return prog;
        };
        self.service_vpcs.remove(id);
        let updates: Vec<TableUpdate> = old
            .iter()
            .map(|o| TableUpdate::DeleteService { key: o.key(v.vni) })
            .collect();
        let hosts: Vec<String> = v.hosts.keys().cloned().collect();
        for h in self.ips(&hosts) {
            prog.insert(h, updates.clone());
        }
        prog
    }

    /// The host of the endpoint of VPC `vpc` at `ip`, if it is held.
    fn endpoint_host(&self, vpc: &VpcState, ip: Ipv4Addr) -> Option<Ipv4Addr> {
        let id = (vpc.subnets.iter()).find_map(|s| self.subnets.get(s)?.endpoints.get(&ip))?;
        let droplet = &self.endpoints.get(id)?.droplet;
        self.droplets.get(droplet).map(|d| d.ip)
    }

    /// Brings the NetworkPolicies of VPC `vpc`'s endpoints to `want` (by address; an
    /// endpoint no policy selects is absent). Programs only the hosts of the endpoints
    /// whose policy changed, each with its own endpoint's; an address with no endpoint
    /// held yet is programmed when its endpoint is.
    pub fn provision_policies(
        &mut self,
        vpc: &str,
        mut want: BTreeMap<Ipv4Addr, EndpointPolicy>,
    ) -> Result<Programming, PlaneError> {
        let v = self
            .vpcs
            .get(vpc)
            .ok_or_else(|| PlaneError::UnknownVpc(vpc.to_owned()))?;
        let mut prog = Programming::new();
        let gone: Vec<Ipv4Addr> = (v.policies.keys())
            .filter(|ip| !want.contains_key(ip))
            .copied()
            .collect();
        for ip in &gone {
            if let Some(host) = self.endpoint_host(v, *ip) {
                let key = EndpointKey::new(v.vni, *ip);
                put(&mut prog, host, TableUpdate::DeletePolicy { key });
            }
        }
        want.retain(|ip, p| v.policies.get(ip) != Some(p));
        for (ip, policy) in &want {
            if let Some(host) = self.endpoint_host(v, *ip) {
                let key = EndpointKey::new(v.vni, *ip);
                let policy = policy.clone();
                put(&mut prog, host, TableUpdate::PutPolicy { key, policy });
            }
        }
        let v = self.vpcs.get_mut(vpc).expect("checked above");
        for ip in &gone {
            v.policies.remove(ip);
        }
        v.policies.extend(want);
        tracing::debug!(vpc, hosts = prog.len(), phase = "Programmed", "policies");
        Ok(prog)
    }

    /// True when some endpoint of VPC `vpc` has a policy programmed.
    pub fn has_policies(&self, vpc: &str) -> bool {
        self.vpcs.get(vpc).is_some_and(|v| !v.policies.is_empty())
    }

    /// True when the Service is held here.
    pub fn has_service(&self, id: &str) -> bool {
        self.service_vpcs.contains_key(id)
    }

    /// The VPC of a held Service.
    pub fn service_vpc(&self, id: &str) -> Option<String> {
        self.service_vpcs.get(id).cloned()
    }

    /// Substrate addresses of the hosts a Service of VPC `vpc` is programmed on.
    pub fn service_hosts(&self, vpc: &str) -> Vec<Ipv4Addr> {
        self.vpcs.get(vpc).map_or_else(Vec::new, |v| {
            self.ips(&v.hosts.keys().cloned().collect::<Vec<_>>())
        })
    }

    /// The VPC each held subnet and endpoint belongs to, for ownership checks.
    pub fn vpc_ids(&self) -> Vec<String> {
        self.vpcs.keys().cloned().collect()
    }
}

/// Appends `more` to `prog`, host by host.
pub fn merge(prog: &mut Programming, more: Programming) {
    for (host, updates) in more {
        prog.entry(host).or_default().extend(updates);
    }
}
