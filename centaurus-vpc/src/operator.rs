//! The VPC operator: one replica of the active-active operators that take VPCs, subnets
//! and endpoints from `Init` to `Provisioned`.
//!
//! Replicas split the work by VPC over the core hash ring: a replica handles the VPCs the
//! ring gives it, with their subnets and endpoints, so one VPC's addresses are allocated in
//! one place. Each runs the pipeline of [`crate::plane`] in memory, programs hosts through
//! a [`Dataplane`], writes only final states to the store, and records its decisions in a
//! local redb store ([`LocalStore`]) before it programs hosts. A replaced replica resumes
//! from the store and its local records: `Provisioned` objects are adopted without being
//! programmed or written again, stalled ones are finished with the decisions recorded.
//! When the ring changes, a replica drops the VPCs it lost (without touching hosts) and
//! adopts the ones it gained.
//!
//! Services are their VPC's too: the tenant's network named by the Service's
//! [`crate::network::NETWORK_LABEL`] (`default` without one). A replica keeps each
//! Service's scaled endpoints, one per port, with the ready addresses of its
//! EndpointSlices as backends, programmed on the hosts with endpoints of the VPC; a
//! headless or deleted Service has none. Nothing about them is recorded: a replaced
//! replica programs them again (the same updates).
//!
//! NetworkPolicies are resolved per VPC: when a tenant's policies, pods' labels,
//! namespaces or endpoints change, the replica owning each of its VPCs resolves the
//! tenant's policies against the VPC's endpoints ([`crate::policy`], off the async
//! workers) and programs each endpoint whose rules changed on its own host only.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use centaurus_client::Client;
use centaurus_core::controller::{Backoff, Change, Informer, Ownership, WorkQueue};
use centaurus_core::model::{
    self, EndpointSlice, Namespace, Network, NetworkPolicy, Pod, Resource, SERVICE_NAME_LABEL,
    Service,
};
use centaurus_core::ring::stable_hash;

use crate::dataplane::Dataplane;
use crate::ipam::{Ipv4Cidr, format_mac, parse_mac};
use crate::kinds::{
    Bouncer, Divider, Droplet, Endpoint, EndpointStatus, FAILED, PROVISIONED, Progress, Role,
    Subnet, SubnetStatus, Vpc, VpcStatus,
};
use crate::local::{LocalStore, Record};
use crate::maglev::Backend;
use crate::plane::{DropletInfo, Plane, PlaneError, Programming, ScaledEndpoint, merge};
use crate::policy::{Member, Resolver, endpoint_policies, protocol_number};
use crate::tables::{TCP, UDP};

/// How a replica runs.
#[derive(Clone)]
pub struct OperatorConfig {
    /// This replica's name (in logs).
    pub name: String,
    /// Which VPCs are this replica's, by the ring position of `tenant/vpc`: a shared ring
    /// ([`centaurus_core::controller::RingOwnership`]), Lease membership across processes,
    /// or [`centaurus_core::controller::OwnAll`] for a lone replica.
    pub ownership: Arc<dyn Ownership>,
    /// The local redb file.
    pub state_file: PathBuf,
    /// Concurrent reconciles (of distinct objects).
    pub workers: usize,
    /// How often owned objects are looked at again (ring changes, missed events).
    pub resync: Duration,
}

/// Counts a replica keeps.
#[derive(Debug, Default)]
pub struct OperatorStats {
    /// Objects this replica moved to `Provisioned` in the store.
    pub provisioned: AtomicU64,
    /// Objects adopted as already `Provisioned` (resume, ring change).
    pub adopted: AtomicU64,
    /// Programming calls to hosts.
    pub host_calls: AtomicU64,
}

/// One operator replica.
pub struct Operator {
    client: Client,
    dataplane: Arc<dyn Dataplane>,
    cfg: OperatorConfig,
    plane: Mutex<Plane>,
    local: LocalStore,
    vpc_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pending: Mutex<HashMap<String, Programming>>,
    queue: WorkQueue,
    /// Where the droplets are: the region, or each resource partition.
    hosts: Vec<Client>,
    /// The droplets of each of `hosts`.
    droplets: Vec<Arc<Informer<Droplet>>>,
    /// Droplet name → the index of the host partition that has it.
    droplet_homes: Mutex<HashMap<String, usize>>,
    vpcs: Arc<Informer<Vpc>>,
    subnets: Arc<Informer<Subnet>>,
    endpoints: Arc<Informer<Endpoint>>,
    networks: Arc<Informer<Network>>,
    services: Arc<Informer<Service>>,
    slices: Arc<Informer<EndpointSlice>>,
    policies: Arc<Informer<NetworkPolicy>>,
    pods: Arc<Informer<Pod>>,
    namespaces: Arc<Informer<Namespace>>,
    stats: OperatorStats,
}

/// The work key of a VPC's NetworkPolicies.
const POLICIES: &str = "vpc-policies";
/// How long policy changes gather before a VPC's policies are resolved again.
const POLICY_BATCH: Duration = Duration::from_millis(100);

/// `/registry/{plural}/{id}` → `(plural, id)`.
fn split(key: &str) -> (&str, &str) {
    let rest = key.strip_prefix("/registry/").unwrap_or(key);
    rest.split_once('/').unwrap_or((rest, ""))
}

fn now_delay(meta: &model::ObjectMeta) -> Option<f64> {
    let created = meta.creation_timestamp?;
    Some(((model::now() - created).num_microseconds()? as f64 / 1e6).max(0.0))
}

impl Operator {
    /// A replica that reads and writes through `client`, programming hosts through
    /// `dataplane`.
    pub fn new(
        client: Client,
        dataplane: Arc<dyn Dataplane>,
        cfg: OperatorConfig,
    ) -> Result<Arc<Self>, crate::local::LocalError> {
        Self::across(client.clone(), vec![client], dataplane, cfg)
    }

    /// A replica of a partitioned region: VPCs, subnets and endpoints through `client`
    /// (its tenant partition), the droplets of every resource partition through `hosts`.
    pub fn across(
        client: Client,
        hosts: Vec<Client>,
        dataplane: Arc<dyn Dataplane>,
        cfg: OperatorConfig,
    ) -> Result<Arc<Self>, crate::local::LocalError> {
        let local = LocalStore::open(&cfg.state_file)?;
        Ok(Arc::new(Self {
            droplets: hosts
                .iter()
                .map(|h| Arc::new(Informer::new(h.api().source("/registry/droplets/"))))
                .collect(),
            hosts,
            droplet_homes: Mutex::default(),
            vpcs: Arc::new(Informer::new(client.api().source("/registry/vpcs/"))),
            subnets: Arc::new(Informer::new(client.api().source("/registry/subnets/"))),
            endpoints: Arc::new(Informer::new(client.api().source("/registry/endpoints/"))),
            networks: Arc::new(Informer::new(client.api().source("/registry/networks/"))),
            services: Arc::new(Informer::new(client.api().source("/registry/services/"))),
            slices: Arc::new(Informer::new(
                client.api().source("/registry/endpointslices/"),
            )),
            policies: Arc::new(Informer::new(
                client.api().source("/registry/networkpolicies/"),
            )),
            pods: Arc::new(Informer::new(client.api().source("/registry/pods/"))),
            namespaces: Arc::new(Informer::new(client.api().source("/registry/namespaces/"))),
            client,
            dataplane,
            cfg,
            plane: Mutex::new(Plane::new()),
            local,
            vpc_locks: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            queue: WorkQueue::new(Backoff::new(
                Duration::from_millis(50),
                Duration::from_secs(5),
            )),
            stats: OperatorStats::default(),
        }))
    }

    /// The replica's counters.
    pub fn stats(&self) -> &OperatorStats {
        &self.stats
    }

    fn plane(&self) -> std::sync::MutexGuard<'_, Plane> {
        self.plane.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers of VPCs, subnets and endpoints this replica holds.
    pub fn counts(&self) -> (usize, usize, usize) {
        self.plane().counts()
    }

    fn owns(&self, tenant: &str, vpc: &str) -> bool {
        let pos = stable_hash(format!("{tenant}/{vpc}").as_bytes());
        self.cfg.ownership.owns(pos)
    }

    /// The VPC (`tenant/name`) an object belongs to.
    fn vpc_of(&self, plural: &str, key: &str) -> Option<String> {
        let (_, id) = split(key);
        let tenant = id.split('/').next()?;
        match plural {
            "vpcs" => Some(id.to_owned()),
            "subnets" => self
                .subnets
                .cache()
                .get(key)
                .map(|s| format!("{tenant}/{}", s.spec.vpc)),
            "endpoints" => self.endpoints.cache().get(key).and_then(|e| {
                let vpc = if e.spec.vpc.is_empty() {
                    self.subnets
                        .cache()
                        .get(&format!("/registry/subnets/{tenant}/{}", e.spec.subnet))?
                        .spec
                        .vpc
                } else {
                    e.spec.vpc
                };
                Some(format!("{tenant}/{vpc}"))
            }),
            POLICIES => Some(id.to_owned()),
            "services" => {
                let s = self.services.cache().get(key)?;
                let network = s
                    .metadata
                    .labels
                    .get(crate::network::NETWORK_LABEL)
                    .map_or("default", String::as_str);
                let net = self
                    .networks
                    .cache()
                    .get(&format!("/registry/networks/{tenant}/{network}"))?;
                (net.spec.type_ == "vpc").then(|| format!("{tenant}/{}", net.spec.vpc_id))
            }
            _ => None,
        }
    }

    fn owns_key(&self, key: &str) -> bool {
        let (plural, _) = split(key);
        self.vpc_of(plural, key).is_some_and(|v| {
            let (t, n) = v.split_once('/').unwrap_or(("", ""));
            self.owns(t, n)
        })
    }

    fn enqueue_changes<R: Resource>(self: &Arc<Self>, informer: &Informer<R>) {
        let me = Arc::downgrade(self);
        informer.on_change(move |change| {
            let Some(op) = me.upgrade() else { return };
            let key = change.object().key();
            if let Change::Deleted(o) = change
                && o.meta()
                    .annotations
                    .contains_key(model::ANNOTATION_MOVING_TO)
            {
                // Its tenant moved to another partition, whose replica adopts it as it is
                // programmed: this one forgets it without touching hosts.
                if R::PLURAL == Vpc::PLURAL {
                    op.plane().forget_vpc(split(&key).1);
                }
                return;
            }
            if matches!(change, Change::Deleted(_)) || op.owns_key(&key) {
                op.queue.add(&key);
            }
        });
    }

    /// Runs the replica until the future is dropped.
    pub async fn run(self: Arc<Self>) {
        for (home, droplets) in self.droplets.iter().enumerate() {
            let me = Arc::downgrade(&self);
            droplets.on_change(move |change| {
                let Some(op) = me.upgrade() else { return };
                op.droplet_changed(home, change);
            });
        }
        self.enqueue_changes(&self.vpcs);
        self.enqueue_changes(&self.subnets);
        self.enqueue_changes(&self.endpoints);
        self.enqueue_changes(&self.services);
        {
            // A slice's change is its Service's.
            let me = Arc::downgrade(&self);
            self.slices.on_change(move |change| {
                let Some(op) = me.upgrade() else { return };
                let m = change.object().meta();
                if let Some(name) = m.labels.get(SERVICE_NAME_LABEL) {
                    let key = format!(
                        "/registry/services/{}/{}/{name}",
                        m.tenant_or_system(),
                        m.namespace
                    );
                    if op.owns_key(&key) || op.plane().has_service(split(&key).1) {
                        op.queue.add(&key);
                    }
                }
            });
        }
        self.watch_policy_inputs();
        let mut tasks = tokio::task::JoinSet::new();
        for droplets in &self.droplets {
            tasks.spawn(droplets.clone().run());
        }
        for droplets in &self.droplets {
            droplets.wait_synced().await;
        }
        tasks.spawn(self.vpcs.clone().run());
        tasks.spawn(self.subnets.clone().run());
        tasks.spawn(self.endpoints.clone().run());
        tasks.spawn(self.networks.clone().run());
        tasks.spawn(self.services.clone().run());
        tasks.spawn(self.slices.clone().run());
        tasks.spawn(self.policies.clone().run());
        tasks.spawn(self.pods.clone().run());
        tasks.spawn(self.namespaces.clone().run());
        self.vpcs.wait_synced().await;
        self.subnets.wait_synced().await;
        self.endpoints.wait_synced().await;
        self.networks.wait_synced().await;
        self.services.wait_synced().await;
        self.slices.wait_synced().await;
        self.policies.wait_synced().await;
        self.pods.wait_synced().await;
        self.namespaces.wait_synced().await;
        for _ in 0..self.cfg.workers.max(1) {
            let op = self.clone();
            tasks.spawn(async move {
                while let Some(key) = op.queue.next().await {
                    match op.reconcile(&key).await {
                        Ok(None) => op.queue.forget(&key),
                        Ok(Some(after)) => {
                            op.queue.forget(&key);
                            op.queue.add_after(&key, after);
                        }
                        Err(e) => {
                            let delay = op.queue.retry(&key);
                            tracing::warn!(key, error = %e, ?delay, "vpc operator: retrying");
                        }
                    }
                    op.queue.done(&key);
                }
            });
        }
        let op = self.clone();
        tasks.spawn(async move {
            loop {
                op.rebalance();
                tokio::time::sleep(op.cfg.resync).await;
            }
        });
        while tasks.join_next().await.is_some() {}
    }

    /// Drops the VPCs the ring no longer gives this replica (without touching hosts) and
    /// queues every owned object that is not provisioned here.
    pub fn rebalance(&self) {
        let lost: Vec<String> = self
            .plane()
            .vpc_ids()
            .into_iter()
            .filter(|id| {
                let (t, n) = id.split_once('/').unwrap_or(("", ""));
                !self.owns(t, n)
            })
            .collect();
        for id in lost {
            tracing::info!(
                vpc = id,
                replica = self.cfg.name,
                "vpc moved to another replica"
            );
            self.plane().forget_vpc(&id);
        }
        for key in self.vpcs.cache().list().iter().map(Resource::key) {
            let (_, id) = split(&key);
            if self.owns_key(&key) && !self.plane().has_vpc(id) {
                self.queue.add(&key);
            }
        }
        for s in self.subnets.cache().list() {
            let key = s.key();
            if self.owns_key(&key) && !self.plane().has_subnet(split(&key).1) {
                self.queue.add(&key);
            }
        }
        for e in self.endpoints.cache().list() {
            let key = e.key();
            if self.owns_key(&key) && !self.plane().has_endpoint(split(&key).1) {
                self.queue.add(&key);
            }
        }
        for s in self.services.cache().list() {
            let key = s.key();
            if self.owns_key(&key) && !self.plane().has_service(split(&key).1) {
                self.queue.add(&key);
            }
        }
    }

    fn droplet_changed(&self, home: usize, change: &Change<Droplet>) {
        let d = change.object();
        let name = d.metadata.name.clone();
        {
            let mut homes = self.droplet_homes.lock().unwrap_or_else(|e| e.into_inner());
            match change {
                // Another partition's droplet of that name is not this one.
                Change::Deleted(_) if homes.get(&name) != Some(&home) => return,
                Change::Deleted(_) => {
                    homes.remove(&name);
                }
                _ => {
                    homes.insert(name.clone(), home);
                }
            }
        }
        if let Change::Deleted(_) = change {
            let (vpcs, subnets) = self.plane().remove_droplet(&name);
            for v in vpcs {
                self.queue.add(&format!("/registry/vpcs/{v}"));
            }
            for s in subnets {
                self.queue.add(&format!("/registry/subnets/{s}"));
            }
            return;
        }
        let (Ok(ip), Some(mac)) = (d.spec.ip.parse::<Ipv4Addr>(), parse_mac(&d.spec.mac)) else {
            return;
        };
        self.plane().set_droplet(&name, DropletInfo { ip, mac });
        let ours = self.cfg.ownership.owns(stable_hash(name.as_bytes()));
        if ours && d.status.as_ref().is_none_or(|s| s.phase != PROVISIONED) {
            self.queue.add(&d.key());
        }
        // Objects waiting for droplets can go on.
        self.queue
            .add_after("retry-waiting", Duration::from_millis(10));
    }

    async fn vpc_lock(&self, vpc: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .vpc_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(vpc.to_owned())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// Programs hosts, all at once; what fails is kept for the next attempt of `key`.
    async fn apply(&self, key: &str, prog: Programming) -> Result<(), String> {
        if prog.is_empty() {
            return Ok(());
        }
        self.stats
            .host_calls
            .fetch_add(prog.len() as u64, Ordering::Relaxed);
        let calls = prog.iter().map(|(host, updates)| async move {
            (*host, updates, self.dataplane.program(*host, updates).await)
        });
        let mut failed = Programming::new();
        let mut first_error = None;
        for (host, updates, result) in futures::future::join_all(calls).await {
            if let Err(e) = result {
                failed.insert(host, updates.clone());
                first_error.get_or_insert(e.to_string());
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => {
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                merge(pending.entry(key.to_owned()).or_default(), failed);
                Err(e)
            }
        }
    }

    async fn flush_pending(&self, key: &str) -> Result<(), String> {
        let prog = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        match prog {
            Some(p) => self.apply(key, p).await,
            None => Ok(()),
        }
    }

    async fn reconcile(self: &Arc<Self>, key: &str) -> Result<Option<Duration>, String> {
        if key == "retry-waiting" {
            self.rebalance();
            return Ok(None);
        }
        let (plural, _) = split(key);
        let Some(vpc) = self
            .vpc_of(plural, key)
            .or_else(|| self.planned_vpc(plural, key))
        else {
            if plural == "droplets" {
                return self.reconcile_droplet(key).await;
            }
            return Ok(None);
        };
        let _guard = self.vpc_lock(&vpc).await;
        self.flush_pending(key).await?;
        match plural {
            "vpcs" => self.reconcile_vpc(key).await,
            "subnets" => self.reconcile_subnet(key, &vpc).await,
            "endpoints" => self.reconcile_endpoint(key).await,
            "services" => self.reconcile_service(key, &vpc).await,
            POLICIES => self.reconcile_policies(key, &vpc).await,
            _ => Ok(None),
        }
    }

    /// Resolves the NetworkPolicies of a tenant again in its VPCs this replica owns when
    /// its policies change, or (once it has any) its pods' labels, its namespaces or its
    /// endpoints.
    fn watch_policy_inputs(self: &Arc<Self>) {
        fn relevant<R: Resource>(change: &Change<R>, labels_only: bool) -> bool {
            match change {
                Change::Modified { old, new } if labels_only => {
                    old.meta().labels != new.meta().labels
                }
                _ => true,
            }
        }
        let me = Arc::downgrade(self);
        self.policies.on_change(move |change| {
            if let Some(op) = me.upgrade() {
                op.policies_changed(change.object().meta().tenant_or_system(), true);
            }
        });
        let me = Arc::downgrade(self);
        self.pods.on_change(move |change| {
            if let Some(op) = me.upgrade()
                && relevant(change, true)
            {
                op.policies_changed(change.object().meta().tenant_or_system(), false);
            }
        });
        let me = Arc::downgrade(self);
        self.namespaces.on_change(move |change| {
            if let Some(op) = me.upgrade()
                && relevant(change, true)
            {
                op.policies_changed(change.object().meta().tenant_or_system(), false);
            }
        });
        let me = Arc::downgrade(self);
        self.endpoints.on_change(move |change| {
            if let Some(op) = me.upgrade() {
                op.policies_changed(change.object().meta().tenant_or_system(), false);
            }
        });
    }

    /// Queues the policies of `tenant`'s owned VPCs: always when `force`, otherwise only
    /// if the tenant has policies or had some programmed.
    fn policies_changed(&self, tenant: &str, force: bool) {
        let prefix = format!("{tenant}/");
        let vpcs: Vec<String> = self
            .plane()
            .vpc_ids()
            .into_iter()
            .filter(|v| v.starts_with(&prefix))
            .collect();
        let wanted = force
            || (self.policies.cache()).has_prefix(&format!("/registry/networkpolicies/{prefix}"))
            || vpcs.iter().any(|v| self.plane().has_policies(v));
        if !wanted {
            return;
        }
        for vpc in vpcs {
            let (t, n) = vpc.split_once('/').unwrap_or(("", ""));
            if self.owns(t, n) {
                self.queue
                    .add_after(&format!("/registry/{POLICIES}/{vpc}"), POLICY_BATCH);
            }
        }
    }

    /// The endpoints of VPC `vpc` (`tenant/name`) as policies see them.
    fn members(&self, vpc: &str) -> Vec<Member> {
        let (tenant, name) = vpc.split_once('/').unwrap_or(("", vpc));
        let pods = self.pods.cache();
        (self.endpoints.cache())
            .list_prefix(&format!("/registry/endpoints/{tenant}/"))
            .into_iter()
            .filter_map(|e| {
                let status = e.status.as_ref()?;
                let of_vpc = status.vpc == name || (status.vpc.is_empty() && e.spec.vpc == name);
                if !of_vpc || status.progress.phase != PROVISIONED {
                    return None;
                }
                let m = &e.metadata;
                let pod = (!e.spec.pod.is_empty())
                    .then(|| {
                        pods.get(&format!(
                            "/registry/pods/{tenant}/{}/{}",
                            m.namespace, e.spec.pod
                        ))
                    })
                    .flatten();
                let named_ports = (pod.iter())
                    .flat_map(|p| &p.spec.containers)
                    .flat_map(|c| &c.ports)
                    .filter(|p| !p.name.is_empty())
                    .filter_map(|p| {
                        let protocol = protocol_number(p.protocol.as_deref().unwrap_or("TCP"))?;
                        Some((
                            p.name.clone(),
                            protocol,
                            u16::try_from(p.container_port).ok()?,
                        ))
                    })
                    .collect();
                Some(Member {
                    namespace: m.namespace.clone(),
                    // A pod's labels; an endpoint without one (the cluster DNS) its own.
                    labels: pod.map_or_else(|| m.labels.clone(), |p| p.metadata.labels),
                    ip: status.ip.parse().ok()?,
                    named_ports,
                })
            })
            .collect()
    }

    /// Resolves the tenant's NetworkPolicies against VPC `vpc`'s endpoints and programs
    /// the endpoints whose rules changed.
    async fn reconcile_policies(&self, key: &str, vpc: &str) -> Result<Option<Duration>, String> {
        if !self.plane().has_vpc(vpc) {
            // Not provisioned here (yet, or any more): it comes back with the VPC.
            return Ok(None);
        }
        let (tenant, _) = vpc.split_once('/').unwrap_or(("", vpc));
        let policies: Vec<NetworkPolicy> = (self.policies.cache())
            .list_prefix(&format!("/registry/networkpolicies/{tenant}/"))
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let namespaces: Vec<(String, std::collections::BTreeMap<String, String>)> =
            (self.namespaces.cache())
                .list_prefix(&format!("/registry/namespaces/{tenant}/"))
                .into_iter()
                .map(|n| (n.metadata.name, n.metadata.labels))
                .collect();
        let members = self.members(vpc);
        // Every pod against every policy: off the async workers.
        let want = tokio::task::spawn_blocking(move || {
            let resolver = Resolver::new(namespaces.iter().map(|(n, l)| (n.as_str(), l)), &members);
            endpoint_policies(&policies, &resolver)
        })
        .await
        .map_err(|e| format!("resolving policies: {e}"))?;
        let prog = self
            .plane()
            .provision_policies(vpc, want)
            .map_err(|e| e.to_string())?;
        self.apply(key, prog).await?;
        Ok(None)
    }

    /// Programs a Service's scaled endpoints (or takes them away).
    async fn reconcile_service(&self, key: &str, vpc: &str) -> Result<Option<Duration>, String> {
        let (_, id) = split(key);
        let live = self
            .services
            .cache()
            .get(key)
            .filter(|s| s.metadata.deletion_timestamp.is_none());
        let ports = live
            .and_then(|s| Some((s.virtual_ip()?, s)))
            .map(|(vip, s)| {
                let m = &s.metadata;
                let slices: Vec<EndpointSlice> = self
                    .slices
                    .cache()
                    .list_prefix(&format!(
                        "/registry/endpointslices/{}/{}/",
                        m.tenant_or_system(),
                        m.namespace
                    ))
                    .into_iter()
                    .filter(|sl| sl.metadata.labels.get(SERVICE_NAME_LABEL) == Some(&m.name))
                    .collect();
                scaled_endpoints(&s, vip, &slices)
            });
        let prog = {
            let mut plane = self.plane();
            match ports {
                Some(ports) if plane.has_vpc(vpc) => plane
                    .provision_service(id, vpc, ports)
                    .map_err(|e| e.to_string())?,
                // Its VPC is not provisioned here yet: it comes back with the VPC.
                Some(_) => return Ok(Some(Duration::from_millis(500))),
                None => plane.delete_service(id, vpc),
            }
        };
        self.apply(key, prog).await?;
        Ok(None)
    }

    /// The VPC of a deleted object the plane still holds.
    fn planned_vpc(&self, plural: &str, key: &str) -> Option<String> {
        let (_, id) = split(key);
        let plane = self.plane();
        match plural {
            "subnets" if plane.has_subnet(id) => plane.subnet_vpc(id),
            "endpoints" if plane.has_endpoint(id) => plane.endpoint_vpc(id),
            "services" => plane.service_vpc(id),
            _ => None,
        }
    }

    async fn reconcile_droplet(&self, key: &str) -> Result<Option<Duration>, String> {
        let (_, name) = split(key);
        let home = self
            .droplet_homes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied();
        let Some(home) = home else {
            return Ok(None);
        };
        self.hosts[home]
            .api::<Droplet>()
            .modify_status(key, |d| {
                let s = d.status.get_or_insert_with(Default::default);
                if s.phase == PROVISIONED {
                    return false;
                }
                s.phase = PROVISIONED.into();
                s.provision_delay = now_delay(&d.metadata);
                true
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(None)
    }

    fn record(&self, key: &str, uid: &str) -> Option<Record> {
        self.local.get(key).ok().flatten().filter(|r| r.uid == uid)
    }

    /// Records a decision on disk before hosts are programmed with it.
    async fn decided(&self, key: &str, record: Record) -> Result<(), String> {
        self.local
            .put_durable(key, &record)
            .await
            .map_err(|e| e.to_string())
    }

    /// Programs a VPC's dividers or a subnet's bouncers at `now`, recording the placement
    /// first, unless the object is being adopted where it already is (`placed`).
    async fn place(
        &self,
        key: &str,
        uid: &str,
        adopting: bool,
        placed: &[String],
        now: &[String],
        prog: Programming,
    ) -> Result<(), String> {
        if adopting && now == placed {
            self.stats.adopted.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let record = Record {
            uid: uid.to_owned(),
            placed: now.to_vec(),
            ..Default::default()
        };
        self.decided(key, record).await?;
        self.apply(key, prog).await
    }

    /// Records that the final state is in the store (which holds it too, so this need not
    /// wait for the disk).
    fn finished(&self, key: &str, record: Record) -> Result<(), String> {
        self.local.put(key, &record).map_err(|e| e.to_string())
    }

    /// Writes a final status once: `change` returns false when the stored one is current.
    async fn finish<R: Resource>(
        &self,
        key: &str,
        provisioned: bool,
        change: impl FnMut(&mut R) -> bool,
    ) -> Result<(), String> {
        let wrote = Arc::new(AtomicU64::new(0));
        let mut change = change;
        let w = wrote.clone();
        self.client
            .api::<R>()
            .modify_status(key, move |o| {
                let changed = change(o);
                if changed {
                    w.fetch_add(1, Ordering::Relaxed);
                }
                changed
            })
            .await
            .map_err(|e| e.to_string())?;
        if provisioned && wrote.load(Ordering::Relaxed) > 0 {
            self.stats.provisioned.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn fail<R: Resource>(
        &self,
        key: &str,
        message: String,
        progress: impl Fn(&mut R) -> &mut Progress + Send,
    ) -> Result<Option<Duration>, String> {
        tracing::info!(key, %message, "vpc operator: failed");
        self.finish::<R>(key, false, |o| {
            let p = progress(o);
            if p.phase == FAILED && p.message == message {
                return false;
            }
            p.phase = FAILED.into();
            p.message = message.clone();
            true
        })
        .await?;
        Ok(None)
    }

    /// Creates the role objects of `owner` on the droplets in `now` and not in `had`, and
    /// deletes those on the droplets in `had` and not in `now`.
    async fn sync_roles<R: Role>(
        &self,
        (tenant, vpc, owner, vni): (&str, &str, &str, u32),
        had: &[String],
        now: &[String],
    ) -> Result<(), String> {
        let objects = self.client.api::<R>();
        for d in now.iter().filter(|d| !had.contains(d)) {
            let want = R::of(tenant, vpc, owner, vni, d);
            match objects.create(want.clone()).await {
                // Role objects are born provisioned; the status goes in its own write.
                Ok(created) => {
                    let mut want = want;
                    *want.meta_mut() = created.meta().clone();
                    objects
                        .update_status(&want)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        for d in had.iter().filter(|d| !now.contains(d)) {
            let key = format!("/registry/{}/{}", R::PLURAL, R::name(tenant, owner, d));
            objects
                .delete(&key, None)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn reconcile_vpc(self: &Arc<Self>, key: &str) -> Result<Option<Duration>, String> {
        let (_, id) = split(key);
        let (tenant, name) = id.split_once('/').unwrap_or(("", id));
        let Some(v) = self.vpcs.cache().get(key) else {
            let dividers = self.plane().vpc_dividers(id).unwrap_or_default();
            let prog = self.plane().delete_vpc(id);
            self.apply(key, prog).await?;
            self.sync_roles::<Divider>((tenant, name, name, 0), &dividers, &[])
                .await?;
            self.local.remove(key).map_err(|e| e.to_string())?;
            return Ok(None);
        };
        let uid = v.metadata.uid.clone();
        let status = v.status.clone().unwrap_or_default();
        let cidr: Ipv4Cidr = match v.spec.cidr.parse() {
            Ok(c) => c,
            Err(e) => {
                return self
                    .fail::<Vpc>(key, format!("spec.cidr: {e}"), vpc_progress)
                    .await;
            }
        };
        if v.spec.vni == 0 {
            return self
                .fail::<Vpc>(
                    key,
                    "spec.vni: no VNI (create VPCs through the API, which assigns one)".into(),
                    vpc_progress,
                )
                .await;
        }
        let was = status.progress.phase == PROVISIONED;
        let record = self.record(key, &uid);
        let placed = if was {
            status.dividers.clone()
        } else {
            record.map(|r| r.placed).unwrap_or_default()
        };
        let adopting = !self.plane().has_vpc(id) && was;
        let result =
            self.plane()
                .provision_vpc(id, cidr, v.spec.vni, v.spec.dividers as usize, &placed);
        let (out, prog) = match result {
            Ok(x) => x,
            Err(PlaneError::NoDroplets(_)) => return Ok(Some(Duration::from_secs(1))),
            Err(e) => return self.fail::<Vpc>(key, e.to_string(), vpc_progress).await,
        };
        self.place(key, &uid, adopting, &placed, &out.dividers, prog)
            .await?;
        let vni = out.vni;
        self.sync_roles::<Divider>(
            (tenant, name, name, vni),
            if was { &status.dividers } else { &[] },
            &out.dividers,
        )
        .await?;
        let dividers = out.dividers.clone();
        self.finish::<Vpc>(key, !was, |o| {
            let meta = o.metadata.clone();
            let s = o.status.get_or_insert_with(Default::default);
            if s.progress.phase == PROVISIONED && s.vni == vni && s.dividers == dividers {
                return false;
            }
            if s.progress.phase != PROVISIONED {
                s.progress.provision_delay = now_delay(&meta);
            }
            *s = VpcStatus {
                progress: Progress {
                    phase: PROVISIONED.into(),
                    message: String::new(),
                    provision_delay: s.progress.provision_delay,
                },
                vni,
                dividers: dividers.clone(),
            };
            true
        })
        .await?;
        self.finished(
            key,
            Record {
                uid,
                provisioned: true,
                placed: out.dividers,
                ..Default::default()
            },
        )?;
        tracing::debug!(vpc = id, phase = PROVISIONED, "vpc");
        // Subnets that waited for the VPC.
        for s in self
            .subnets
            .cache()
            .list_prefix(&format!("/registry/subnets/{tenant}/"))
        {
            if s.spec.vpc == name && !self.plane().has_subnet(split(&s.key()).1) {
                self.queue.add(&s.key());
            }
        }
        // Its endpoints' policies (adopted after a restart or a ring change too).
        self.queue
            .add_after(&format!("/registry/{POLICIES}/{id}"), POLICY_BATCH);
        Ok(None)
    }

    async fn reconcile_subnet(
        self: &Arc<Self>,
        key: &str,
        vpc: &str,
    ) -> Result<Option<Duration>, String> {
        let (_, id) = split(key);
        let (tenant, name) = id.split_once('/').unwrap_or(("", id));
        let Some(s) = self.subnets.cache().get(key) else {
            let bouncers = self.plane().subnet_bouncers(id).unwrap_or_default();
            let prog = self.plane().delete_subnet(id);
            self.apply(key, prog).await?;
            self.sync_roles::<Bouncer>((tenant, "", name, 0), &bouncers, &[])
                .await?;
            self.local.remove(key).map_err(|e| e.to_string())?;
            return Ok(None);
        };
        let uid = s.metadata.uid.clone();
        let status = s.status.clone().unwrap_or_default();
        let cidr: Ipv4Cidr = match s.spec.cidr.parse() {
            Ok(c) => c,
            Err(e) => {
                return self
                    .fail::<Subnet>(key, format!("spec.cidr: {e}"), subnet_progress)
                    .await;
            }
        };
        let was = status.progress.phase == PROVISIONED;
        let placed = if was {
            status.bouncers.clone()
        } else {
            self.record(key, &uid).map(|r| r.placed).unwrap_or_default()
        };
        let adopting = !self.plane().has_subnet(id) && was;
        let result =
            self.plane()
                .provision_subnet(id, vpc, cidr, s.spec.bouncers as usize, &placed);
        let (out, prog) = match result {
            Ok(x) => x,
            Err(PlaneError::NoDroplets(_) | PlaneError::UnknownVpc(_)) => {
                return Ok(Some(Duration::from_millis(200)));
            }
            Err(e) => {
                return self
                    .fail::<Subnet>(key, e.to_string(), subnet_progress)
                    .await;
            }
        };
        self.place(key, &uid, adopting, &placed, &out.bouncers, prog)
            .await?;
        let vni = out.vni;
        let vpc_name = s.spec.vpc.clone();
        self.sync_roles::<Bouncer>(
            (tenant, &vpc_name, name, vni),
            if was { &status.bouncers } else { &[] },
            &out.bouncers,
        )
        .await?;
        let (bouncers, gateway) = (out.bouncers.clone(), out.gateway.to_string());
        self.finish::<Subnet>(key, !was, |o| {
            let meta = o.metadata.clone();
            let s = o.status.get_or_insert_with(Default::default);
            if s.progress.phase == PROVISIONED && s.bouncers == bouncers && s.vni == vni {
                return false;
            }
            let delay = if s.progress.phase == PROVISIONED {
                s.progress.provision_delay
            } else {
                now_delay(&meta)
            };
            *s = SubnetStatus {
                progress: Progress {
                    phase: PROVISIONED.into(),
                    message: String::new(),
                    provision_delay: delay,
                },
                vni,
                gateway: gateway.clone(),
                bouncers: bouncers.clone(),
            };
            true
        })
        .await?;
        self.finished(
            key,
            Record {
                uid,
                provisioned: true,
                placed: out.bouncers,
                ..Default::default()
            },
        )?;
        // Endpoints that waited for the subnet.
        for e in self
            .endpoints
            .cache()
            .list_prefix(&format!("/registry/endpoints/{tenant}/"))
        {
            if e.spec.subnet == name && !self.plane().has_endpoint(split(&e.key()).1) {
                self.queue.add(&e.key());
            }
        }
        Ok(None)
    }

    /// Adopts every endpoint of a subnet that was provisioned (or given an address) before
    /// this replica held the subnet, so no fresh allocation takes one of their addresses.
    fn prime(&self, tenant: &str, name: &str, subnet: &str) {
        if !self.plane().has_subnet(subnet) {
            return;
        }
        let eps = self
            .endpoints
            .cache()
            .list_prefix(&format!("/registry/endpoints/{tenant}/"));
        for e in eps.iter().filter(|e| e.spec.subnet == name) {
            let key = e.key();
            let id = split(&key).1;
            let status = e.status.as_ref();
            let ip = match status.filter(|s| s.progress.phase == PROVISIONED) {
                Some(s) => s.ip.clone(),
                None => self
                    .record(&key, &e.metadata.uid)
                    .map(|r| r.ip)
                    .unwrap_or_default(),
            };
            let Ok(ip) = ip.parse::<Ipv4Addr>() else {
                continue;
            };
            let mut plane = self.plane();
            if plane.has_endpoint(id) {
                continue;
            }
            if let Err(err) = plane.provision_endpoint(id, subnet, &e.spec.droplet, Some(ip)) {
                tracing::warn!(endpoint = id, %err, "cannot adopt endpoint");
            } else if status.is_some_and(|s| s.progress.phase == PROVISIONED) {
                self.stats.adopted.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.plane().set_primed(subnet);
    }

    async fn reconcile_endpoint(self: &Arc<Self>, key: &str) -> Result<Option<Duration>, String> {
        let (_, id) = split(key);
        let Some(ep) = self.endpoints.cache().get(key) else {
            let prog = self.plane().delete_endpoint(id);
            self.apply(key, prog).await?;
            self.local.remove(key).map_err(|e| e.to_string())?;
            return Ok(None);
        };
        let tenant = id.split('/').next().unwrap_or("");
        let uid = ep.metadata.uid.clone();
        let status = ep.status.clone().unwrap_or_default();
        let was = status.progress.phase == PROVISIONED;
        let earlier = if was {
            status.ip.clone()
        } else {
            self.record(key, &uid).map(|r| r.ip).unwrap_or_default()
        };
        let want = if earlier.is_empty() {
            ep.spec.ip.clone()
        } else {
            earlier
        };
        let ip = match want.as_str() {
            "" => None,
            w => match w.parse::<Ipv4Addr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    return self
                        .fail::<Endpoint>(
                            key,
                            format!("spec.ip: {w:?} is not an IPv4 address"),
                            endpoint_progress,
                        )
                        .await;
                }
            },
        };
        let subnet = format!("{tenant}/{}", ep.spec.subnet);
        if !self.plane().is_primed(&subnet) {
            self.prime(tenant, &ep.spec.subnet, &subnet);
        }
        let result = self
            .plane()
            .provision_endpoint(id, &subnet, &ep.spec.droplet, ip);
        let (out, prog) = match result {
            Ok(x) => x,
            Err(PlaneError::UnknownSubnet(_) | PlaneError::UnknownDroplet(_)) => {
                return Ok(Some(Duration::from_millis(200)));
            }
            Err(e) => {
                return self
                    .fail::<Endpoint>(key, e.to_string(), endpoint_progress)
                    .await;
            }
        };
        // Provisioned as the plane has it (adopted, or our own status write coming back):
        // the hosts are programmed already.
        let current = was
            && status.ip == out.ip.to_string()
            && status.host_ip == out.host.ip.to_string()
            && status.bouncers
                == out
                    .bouncers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>();
        if !current {
            self.decided(
                key,
                Record {
                    uid: uid.clone(),
                    ip: out.ip.to_string(),
                    ..Default::default()
                },
            )
            .await?;
            self.apply(key, prog).await?;
        }
        let vpc = self
            .vpc_of("endpoints", key)
            .and_then(|v| v.split_once('/').map(|(_, n)| n.to_owned()))
            .unwrap_or_default();
        let next = EndpointStatus {
            progress: Progress {
                phase: PROVISIONED.into(),
                ..Default::default()
            },
            ip: out.ip.to_string(),
            prefix_len: out.prefix_len,
            mac: format_mac(out.mac),
            gateway: out.gateway.to_string(),
            vni: out.vni,
            vpc,
            host_ip: out.host.ip.to_string(),
            host_mac: format_mac(out.host.mac),
            netns: format!("cent-{}", &out.veth[2..]),
            veth: out.veth.clone(),
            bouncers: out.bouncers.iter().map(ToString::to_string).collect(),
        };
        self.finish::<Endpoint>(key, !was, |o| {
            let meta = o.metadata.clone();
            let s = o.status.get_or_insert_with(Default::default);
            let mut want = next.clone();
            want.progress.provision_delay = s.progress.provision_delay;
            if *s == want {
                return false;
            }
            if s.progress.phase != PROVISIONED {
                want.progress.provision_delay = now_delay(&meta);
            }
            *s = want;
            true
        })
        .await?;
        if !current {
            self.finished(
                key,
                Record {
                    uid,
                    provisioned: true,
                    ip: out.ip.to_string(),
                    ..Default::default()
                },
            )?;
        }
        Ok(None)
    }
}

/// A Service's scaled endpoints, one per port: the ready addresses of its slices, at the
/// slice port of the same name and protocol.
fn scaled_endpoints(svc: &Service, vip: Ipv4Addr, slices: &[EndpointSlice]) -> Vec<ScaledEndpoint> {
    svc.spec
        .ports
        .iter()
        .filter_map(|sp| {
            let protocol = match sp.protocol() {
                "TCP" => TCP,
                "UDP" => UDP,
                _ => return None,
            };
            let mut backends: Vec<Backend> = slices
                .iter()
                .flat_map(|sl| {
                    let port = sl
                        .ports
                        .iter()
                        .find(|p| p.name == sp.name && p.protocol.as_str() == sp.protocol())
                        .and_then(|p| u16::try_from(p.port).ok());
                    sl.endpoints
                        .iter()
                        .filter(|e| e.conditions.ready != Some(false))
                        .flat_map(|e| &e.addresses)
                        .filter_map(move |a| Some(Backend::new(a.parse().ok()?, port?)))
                })
                .collect();
            backends.sort();
            backends.dedup();
            Some(ScaledEndpoint {
                vip,
                port: u16::try_from(sp.port).ok()?,
                protocol,
                backends,
                affinity: svc.spec.session_affinity == "ClientIP",
            })
        })
        .collect()
}

fn vpc_progress(v: &mut Vpc) -> &mut Progress {
    &mut v.status.get_or_insert_with(Default::default).progress
}
fn subnet_progress(s: &mut Subnet) -> &mut Progress {
    &mut s.status.get_or_insert_with(Default::default).progress
}
fn endpoint_progress(e: &mut Endpoint) -> &mut Progress {
    &mut e.status.get_or_insert_with(Default::default).progress
}
