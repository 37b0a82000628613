//! The unified node agent: registers its Node, renews its Lease as heartbeat, runs the
//! pods bound to it through the runtime for their type (containers or a VM), reports their
//! status, restarts workloads by `restartPolicy`, carries out VM actions and serves logs.
//!
//! A [`Fleet`] runs any number of agents in one process over one pod watch: one agent for
//! a real host, or thousands of hollow ones for scale tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use centaurus_client::{Client, ClientError, Recorder};
use centaurus_core::controller::{Change, Informer, WatchEvent};
use centaurus_core::model::{
    self, Action, ActionStatus, Condition, ContainerState, ContainerStatus, LABEL_HOSTNAME,
    LABEL_ZONE, Lease, LeaseSpec, Node, NodeAddress, NodeInfo, NodeStatus, ObjectMeta,
    ObjectReference, Pod, PodStatus, Resource, ResourceList, StateReason, StateRunning,
    StateTerminated, Time, VirtualMachineStatus,
};
use centaurus_core::remote::{NodeUsage, PodUsage, Session, StreamRequest, Usage};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::network::NetworkPlugin;
use crate::podconfig::{self, VolumeContent};
use crate::{Runtime, RuntimeError, WorkloadState, WorkloadStatus, workload_names};

/// How one node presents itself.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The Node's name (a host's hostname).
    pub node_name: String,
    /// Its availability zone.
    pub zone: String,
    /// Extra labels.
    pub labels: BTreeMap<String, String>,
    /// `cpu`, `memory`, `pods` and `vm` capacity.
    pub capacity: ResourceList,
    /// The node's address.
    pub address: String,
    /// How often the lease is renewed.
    pub heartbeat: Duration,
    /// How long a renewal is valid.
    pub lease_seconds: i32,
}

/// How long the host has been up.
fn host_uptime() -> Duration {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs_f64)
}

/// What this host tells of itself in a Node's `status.nodeInfo`.
fn host_info() -> NodeInfo {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let os_image = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_default();
    NodeInfo {
        kernel_version: read("/proc/sys/kernel/osrelease"),
        operating_system: "linux".into(),
        // Kubernetes names architectures as Go does.
        architecture: match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        }
        .into(),
        kubelet_version: format!(
            "v1.{}.0-centaurus.{}",
            model::KUBERNETES_MINOR,
            env!("CARGO_PKG_VERSION")
        ),
        os_image,
        machine_id: read("/etc/machine-id"),
        system_uuid: read("/sys/class/dmi/id/product_uuid"),
        boot_id: read("/proc/sys/kernel/random/boot_id"),
        ..Default::default()
    }
}

/// The hostname of this machine, as the node agent names its Node.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The running worker of one pod, as the fleet reaches it.
struct Worker {
    /// The pod's latest state; None stops it.
    tx: watch::Sender<Option<Pod>>,
    /// The tenant partition that holds the pod (it changes when its tenant moves).
    home: Arc<AtomicUsize>,
    /// The partition the pod's tenant moved away from, whose copy is being drained.
    left: Option<usize>,
}

/// How long a pod whose tenant moved away keeps running while its node agent waits to see
/// it in the tenant's new partition.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether `pod` is the old copy of a pod whose tenant moved to another partition.
fn moving_away(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .contains_key(model::ANNOTATION_MOVING_TO)
}

/// One node: its runtimes and network, and the pods it runs.
pub struct NodeAgent {
    config: AgentConfig,
    containers: Option<Arc<dyn Runtime>>,
    vms: Option<Arc<dyn Runtime>>,
    network: Arc<dyn NetworkPlugin>,
    workers: Mutex<HashMap<String, Worker>>,
    stopped: AtomicBool,
    /// A hollow node powered off for a drill ([`model::LABEL_POWER`]).
    powered_off: AtomicBool,
    /// The host's CPU rate, for the node's usage.
    host_rate: crate::usage::Rates,
    /// The cluster DNS its pods ask first (kubelet's `clusterDNS`).
    cluster_dns: Option<std::net::Ipv4Addr>,
    /// The lease as this agent last wrote it: the next renewal is one write guarded by
    /// its `resourceVersion`, without reading it first (as the kubelet renews).
    lease: Mutex<Option<Lease>>,
}

impl NodeAgent {
    /// An agent with a container runtime, a VM runtime, or both.
    pub fn new(
        config: AgentConfig,
        containers: Option<Arc<dyn Runtime>>,
        vms: Option<Arc<dyn Runtime>>,
        network: Arc<dyn NetworkPlugin>,
    ) -> Self {
        Self {
            config,
            containers,
            vms,
            network,
            workers: Mutex::default(),
            stopped: AtomicBool::new(false),
            powered_off: AtomicBool::new(false),
            lease: Mutex::default(),
            host_rate: Default::default(),
            cluster_dns: None,
        }
    }

    /// Pods of DNS policy `ClusterFirst` get `dns` as their nameserver, with the
    /// Kubernetes search path ([`podconfig::resolve_dns`]).
    pub fn with_cluster_dns(mut self, dns: std::net::Ipv4Addr) -> Self {
        self.cluster_dns = Some(dns);
        self
    }

    /// What the node and its running pods use now. A hollow node's figures are its
    /// simulated pods' and a simulated base; a real node's are the host's.
    pub async fn usage(&self) -> NodeUsage {
        let pods: Vec<Pod> = self
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter_map(|w| w.tx.borrow().clone())
            .collect();
        let mut out = NodeUsage {
            node: self.name().to_owned(),
            timestamp: model::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            window_seconds: 10,
            ..Default::default()
        };
        for pod in pods {
            let Ok(rt) = self.runtime_for(&pod) else {
                continue;
            };
            let mut workloads = Vec::new();
            for name in workload_names(&pod) {
                if let Ok(Some(u)) = rt.usage(&pod.metadata.uid, &name).await {
                    workloads.push((name, u));
                }
            }
            if workloads.is_empty() {
                continue;
            }
            let m = &pod.metadata;
            out.pods.push(PodUsage {
                tenant: m.tenant.clone(),
                namespace: m.namespace.clone(),
                name: m.name.clone(),
                workloads,
            });
        }
        out.usage = if self.is_hollow() {
            let base = crate::usage::simulated(self.name());
            out.pods
                .iter()
                .flat_map(|p| &p.workloads)
                .fold(base, |acc, (_, u)| Usage {
                    cpu_nanocores: acc.cpu_nanocores + u.cpu_nanocores,
                    memory_bytes: acc.memory_bytes + u.memory_bytes,
                })
        } else {
            crate::usage::host().map_or_else(Usage::default, |(cpu, memory)| Usage {
                cpu_nanocores: self.host_rate.rate("host", cpu, host_uptime()),
                memory_bytes: memory,
            })
        };
        out
    }

    fn is_hollow(&self) -> bool {
        self.config
            .labels
            .get(model::LABEL_HOLLOW)
            .is_some_and(|v| v == "true")
    }

    /// The Node's name.
    pub fn name(&self) -> &str {
        &self.config.node_name
    }

    fn runtimes(&self) -> impl Iterator<Item = &Arc<dyn Runtime>> {
        self.containers.iter().chain(&self.vms)
    }

    fn runtime_for(&self, pod: &Pod) -> Result<&Arc<dyn Runtime>, String> {
        let (rt, what) = if pod.is_vm() {
            (&self.vms, "VM")
        } else {
            (&self.containers, "container")
        };
        rt.as_ref()
            .ok_or_else(|| format!("node {} does not run {what} pods", self.name()))
    }

    fn node_object(&self) -> Node {
        let mut node = Node::typed(ObjectMeta::named(self.config.node_name.clone()));
        let labels = &mut node.metadata.labels;
        labels.extend(self.config.labels.clone());
        labels.insert(LABEL_HOSTNAME.into(), self.config.node_name.clone());
        if !self.config.zone.is_empty() {
            labels.insert(LABEL_ZONE.into(), self.config.zone.clone());
        }
        let mut types = Vec::new();
        if self.containers.is_some() {
            types.push("container".to_string());
        }
        if self.vms.is_some() {
            types.push("vm".to_string());
        }
        let runtimes: Vec<&str> = [&self.containers, &self.vms]
            .into_iter()
            .flatten()
            .map(|r| r.name())
            .collect();
        node.status = Some(NodeStatus {
            capacity: self.config.capacity.clone(),
            allocatable: self.config.capacity.clone(),
            conditions: vec![model::node_ready_condition(
                "True",
                "AgentReady",
                "the node agent is posting ready status",
            )],
            addresses: vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: self.config.address.clone(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: self.config.node_name.clone(),
                },
            ],
            node_info: if self.is_hollow() {
                NodeInfo {
                    os_image: "hollow".into(),
                    kernel_version: "hollow".into(),
                    machine_id: format!("{:016x}", model::hash_key_of(&self.config.node_name)),
                    system_uuid: uuid::Uuid::from_u64_pair(
                        model::hash_key_of(&self.config.node_name) as u64,
                        0,
                    )
                    .to_string(),
                    ..host_info()
                }
            } else {
                host_info()
            },
            agent_endpoint: None,
        });
        let info = &mut node.status.as_mut().expect("set above").node_info;
        info.container_runtime_version = runtimes.join(",");
        info.workload_types = types;
        node
    }
}

/// How many heartbeats apart an agent checks that its Node still exists.
const NODE_CHECK_EVERY: u64 = 6;

/// The pods and actions of one tenant partition (or of the whole region) bound to a
/// fleet's nodes, and the client their status is reported through.
struct Workloads {
    client: Client,
    pods: Arc<Informer<Pod>>,
    actions: Arc<Informer<Action>>,
}

/// Node agents sharing one process and one pod watch per tenant partition.
pub struct Fleet {
    /// Where the Nodes and their Leases live: the region, or the nodes' resource partition.
    client: Client,
    agents: RwLock<HashMap<String, Arc<NodeAgent>>>,
    /// Where the pods bound to the nodes live: the region, or each tenant partition.
    workloads: Vec<Workloads>,
    /// Each tenant partition's pods, where pod workers report.
    pod_apis: Arc<[centaurus_client::Api<Pod>]>,
    /// The one node of a fleet that runs as that node's identity.
    node: Option<String>,
    /// The endpoint the fleet serves pod logs on, published in each of its Nodes.
    endpoint: RwLock<Option<model::AgentEndpoint>>,
    /// Each tenant partition's event recorder (the kubelet's events about its pods).
    events: RwLock<Arc<[Recorder]>>,
}

impl Fleet {
    /// A fleet of any number of nodes that reads and reports through `client` (an identity
    /// that may see every node's pods), with no agents yet.
    pub fn new(client: Client) -> Arc<Self> {
        Self::make(client.clone(), vec![client], None)
    }

    /// The fleet of the one node `node`, whose `client` is that node's identity
    /// (`system:node:NODE`): it watches only the pods and actions bound to the node.
    pub fn for_node(client: Client, node: &str) -> Arc<Self> {
        Self::make(client.clone(), vec![client], Some(node.to_owned()))
    }

    /// The fleet of a partitioned region: its Nodes and Leases live in their resource
    /// partition (`nodes`), the pods bound to them in any of the tenant partitions
    /// (`tenants`), whose status is reported to the partition that holds each pod. With
    /// `node`, the clients are that node's identity and watch only its pods.
    pub fn partitioned(nodes: Client, tenants: Vec<Client>, node: Option<&str>) -> Arc<Self> {
        Self::make(nodes, tenants, node.map(str::to_owned))
    }

    fn make(client: Client, tenants: Vec<Client>, node: Option<String>) -> Arc<Self> {
        let workloads: Vec<Workloads> = tenants
            .into_iter()
            .map(|c| {
                let (pods, actions) = match &node {
                    Some(n) => {
                        let fields = format!("spec.nodeName={n}");
                        (
                            c.api().with_fields(fields.clone()),
                            c.api().with_fields(fields),
                        )
                    }
                    None => (c.api(), c.api()),
                };
                Workloads {
                    pods: Arc::new(Informer::new(pods.source("/registry/pods/"))),
                    actions: Arc::new(Informer::new(actions.source("/registry/actions/"))),
                    client: c,
                }
            })
            .collect();
        let pod_apis = workloads
            .iter()
            .map(|w| w.client.api())
            .collect::<Vec<_>>()
            .into();
        let events = workloads
            .iter()
            .map(|w| Recorder::new(w.client.clone(), KUBELET))
            .collect::<Vec<_>>()
            .into();
        let fleet = Arc::new(Self {
            pod_apis,
            events: RwLock::new(events),
            workloads,
            client,
            agents: RwLock::default(),
            node,
            endpoint: RwLock::default(),
        });
        for (partition, w) in fleet.workloads.iter().enumerate() {
            let f = fleet.clone();
            w.pods
                .on_change(move |change| f.pod_changed(partition, change));
            let f = fleet.clone();
            w.actions.on_change(move |change| {
                if let Change::Added(a) | Change::Modified { new: a, .. } = change {
                    f.action_seen(partition, a.clone());
                }
            });
        }
        fleet
    }

    fn agent(&self, node: &str) -> Option<Arc<NodeAgent>> {
        self.agents
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .cloned()
    }

    /// Stops recording events about pods (for measuring what they cost).
    pub fn disable_events(&self) {
        let off = vec![Recorder::disabled(); self.workloads.len()].into();
        *self.events.write().unwrap_or_else(|e| e.into_inner()) = off;
    }

    /// Publishes `endpoint` in the Nodes the fleet registers from now on.
    pub fn publish_endpoint(&self, endpoint: model::AgentEndpoint) {
        *self.endpoint.write().unwrap_or_else(|e| e.into_inner()) = Some(endpoint);
    }

    /// The pod `tenant/namespace/name` as the fleet last saw it, if it is bound to one of
    /// the fleet's nodes.
    pub fn pod(&self, tenant: &str, namespace: &str, name: &str) -> Option<Pod> {
        let key = model::object_key(Pod::PLURAL, Pod::SCOPE, tenant, namespace, name);
        self.workloads
            .iter()
            .find_map(|w| w.pods.cache().get(&key))
            .filter(|p| self.agent(&p.spec.node_name).is_some())
    }

    /// Node names of the running agents.
    pub fn nodes(&self) -> Vec<String> {
        self.agents
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Registers the agent's Node (updating capacity, labels and status of an existing
    /// one, keeping its taints) and starts its heartbeat.
    pub async fn add(self: &Arc<Self>, agent: NodeAgent) -> Result<(), ClientError> {
        if let Some(node) = self.node.as_deref().filter(|n| *n != agent.name()) {
            return Err(ClientError::Request(format!(
                "the fleet of node {node} cannot run node {}",
                agent.name()
            )));
        }
        let agent = Arc::new(agent);
        self.register(&agent).await?;
        for rt in agent.runtimes() {
            match rt.reset().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    node = agent.name(),
                    runtime = rt.name(),
                    stopped = n,
                    "stopped workloads a previous agent left running"
                ),
                Err(e) => {
                    tracing::warn!(node = agent.name(), runtime = rt.name(), error = %e, "cannot stop left-over workloads")
                }
            }
        }
        let reaped = agent.network.reap().await;
        if reaped > 0 {
            tracing::info!(
                node = agent.name(),
                reaped,
                "removed pod networks a previous agent left"
            );
        }
        self.renew_lease(&agent).await?;
        self.agents
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(agent.name().to_owned(), agent.clone());
        // Pods already bound to the node (a restart) are picked up.
        for (partition, w) in self.workloads.iter().enumerate() {
            for pod in w.pods.cache().list() {
                if pod.spec.node_name == agent.name() {
                    self.dispatch(partition, &agent, pod);
                }
            }
        }
        let fleet = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(agent.config.heartbeat);
            tick.tick().await;
            for beat in 1u64.. {
                tick.tick().await;
                if agent.stopped.load(Ordering::Relaxed) {
                    return;
                }
                if agent.powered_off.load(Ordering::Relaxed) {
                    continue;
                }
                if let Err(e) = fleet.renew_lease(&agent).await {
                    tracing::warn!(node = agent.name(), error = %e, "heartbeat failed");
                }
                if beat % NODE_CHECK_EVERY == 0
                    && let Err(e) = fleet.register_if_missing(&agent).await
                {
                    tracing::warn!(node = agent.name(), error = %e, "cannot register the node again");
                }
            }
        });
        Ok(())
    }

    /// Registers the agent's Node, or updates capacity, labels and status of an existing one
    /// (keeping its taints).
    async fn register(&self, agent: &NodeAgent) -> Result<(), ClientError> {
        let nodes = self.client.api::<Node>();
        let mut fresh = agent.node_object();
        if let Some(status) = fresh.status.as_mut() {
            status
                .agent_endpoint
                .clone_from(&self.endpoint.read().unwrap_or_else(|e| e.into_inner()));
        }
        let key = fresh.key();
        let labelled = nodes
            .modify(&key, |n| {
                let before = n.metadata.labels.clone();
                n.metadata.labels.extend(fresh.metadata.labels.clone());
                n.metadata.labels != before
            })
            .await?;
        if labelled.is_none() {
            match nodes.create(fresh.clone()).await {
                Ok(_) => {}
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(e),
            }
        }
        nodes
            .modify_status(&key, |n| {
                n.status = fresh.status.clone();
                true
            })
            .await?;
        Ok(())
    }

    /// Registers the agent's Node again when it was deleted while the agent runs.
    async fn register_if_missing(&self, agent: &NodeAgent) -> Result<(), ClientError> {
        let nodes = self.client.api::<Node>();
        let key = model::object_key(Node::PLURAL, Node::SCOPE, "", "", agent.name());
        if nodes.get(&key).await?.is_none() {
            tracing::warn!(
                node = agent.name(),
                "the node was deleted; registering it again"
            );
            self.register(agent).await?;
        }
        Ok(())
    }

    async fn renew_lease(&self, agent: &NodeAgent) -> Result<(), ClientError> {
        let leases = self.client.api::<Lease>();
        let now = model::now();
        let last = agent.lease.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut lease) = last {
            lease.spec.renew_time = Some(now);
            lease.spec.lease_duration_seconds = Some(agent.config.lease_seconds);
            match leases.update(&lease).await {
                Ok(written) => {
                    *agent.lease.lock().unwrap_or_else(|e| e.into_inner()) = Some(written);
                    return Ok(());
                }
                // Someone else wrote it, or it was deleted: read it again.
                Err(e) if e.is_conflict() || e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        let mut lease = Lease::typed(ObjectMeta::namespaced(
            model::SYSTEM_TENANT,
            model::NODE_LEASE_NAMESPACE,
            agent.name(),
        ));
        let key = lease.key();
        let renewed = leases
            .modify(&key, |l| {
                l.spec.renew_time = Some(now);
                l.spec.lease_duration_seconds = Some(agent.config.lease_seconds);
                true
            })
            .await?;
        if renewed.is_none() {
            lease.spec = LeaseSpec {
                holder_identity: Some(agent.name().to_owned()),
                lease_duration_seconds: Some(agent.config.lease_seconds),
                acquire_time: Some(now),
                renew_time: Some(now),
                lease_transitions: Some(0),
            };
            match leases.create(lease).await {
                Ok(written) => {
                    *agent.lease.lock().unwrap_or_else(|e| e.into_inner()) = Some(written);
                }
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(e),
            }
        } else {
            *agent.lease.lock().unwrap_or_else(|e| e.into_inner()) = renewed;
        }
        Ok(())
    }

    /// Stops a node's agent as if its host failed: no more heartbeats, its pods are left
    /// alone (and their hollow workloads forgotten). For failure drills and tests.
    pub fn stop_node(&self, name: &str) {
        if let Some(agent) = self
            .agents
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
        {
            agent.stopped.store(true, Ordering::Relaxed);
            agent
                .workers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        }
    }

    /// Stops every agent and the workloads of their runtimes, and releases their pods'
    /// networks (a clean stop of the process that hosts them); the pods stay bound and
    /// start again with the next agent.
    pub async fn shutdown(&self) {
        let agents: Vec<_> = self
            .agents
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, a)| a)
            .collect();
        for agent in &agents {
            agent.stopped.store(true, Ordering::Relaxed);
        }
        let mut seen: Vec<*const ()> = Vec::new();
        for rt in agents.iter().flat_map(|a| a.runtimes()) {
            let id = Arc::as_ptr(rt).cast::<()>();
            if seen.contains(&id) {
                continue;
            }
            seen.push(id);
            if let Err(e) = rt.reset().await {
                tracing::warn!(runtime = rt.name(), error = %e, "cannot stop workloads");
            }
        }
        for agent in &agents {
            agent.network.release_all().await;
        }
    }

    /// Runs the fleet's watches until dropped.
    pub async fn run(self: Arc<Self>) {
        let mut tasks = tokio::task::JoinSet::new();
        for w in &self.workloads {
            tasks.spawn(w.pods.clone().run());
            tasks.spawn(w.actions.clone().run());
        }
        if self.node.is_none() {
            tasks.spawn(self.clone().follow_power());
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Powers the fleet's hollow nodes off and on as their [`model::LABEL_POWER`] label says:
    /// a list of the nodes, then a watch of them (no cache: only the label matters).
    async fn follow_power(self: Arc<Self>) {
        use futures::StreamExt as _;
        let nodes = self.client.api::<Node>();
        let prefix = format!("/registry/{}/", Node::PLURAL);
        loop {
            let mut next = None;
            let mut revision = None;
            loop {
                match nodes.list_page(&prefix, 500, next.take()).await {
                    Ok(page) => {
                        revision.get_or_insert(page.revision);
                        page.items.iter().for_each(|n| self.power(n));
                        match page.next {
                            Some(t) => next = Some(t),
                            None => break,
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot list nodes for power drills");
                        revision = None;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                }
            }
            let Some(revision) = revision else { continue };
            let Ok(mut events) = nodes.watch(&prefix, revision).await else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            while let Some(Ok(event)) = events.next().await {
                if let WatchEvent::Put(node) = event {
                    self.power(&node);
                }
            }
        }
    }

    fn power(&self, node: &Node) {
        let Some(agent) = self.agent(&node.metadata.name).filter(|a| a.is_hollow()) else {
            return;
        };
        let off = node
            .metadata
            .labels
            .get(model::LABEL_POWER)
            .is_some_and(|v| v == "off");
        if agent.powered_off.swap(off, Ordering::Relaxed) != off {
            tracing::info!(node = agent.name(), off, "hollow node power drill");
        }
    }

    /// Waits until the fleet has seen every pod once.
    pub async fn wait_synced(&self) {
        for w in &self.workloads {
            w.pods.wait_synced().await;
        }
    }

    fn pod_changed(self: &Arc<Self>, partition: usize, change: &Change<Pod>) {
        let pod = change.object();
        if pod.spec.node_name.is_empty() {
            return;
        }
        let Some(agent) = self.agent(&pod.spec.node_name) else {
            return;
        };
        match change {
            Change::Deleted(p) => self.deleted(partition, &agent, p),
            _ => self.dispatch(partition, &agent, pod.clone()),
        }
    }

    /// Stops the worker of a pod deleted from the partition that holds it. The old copy of
    /// a pod whose tenant moved keeps its worker: the pod runs on, and the worker follows
    /// it to the new partition (or stops after [`FOLLOW_TIMEOUT`] if it never shows there).
    fn deleted(&self, partition: usize, agent: &Arc<NodeAgent>, pod: &Pod) {
        let uid = &pod.metadata.uid;
        let mut workers = agent.workers.lock().unwrap_or_else(|e| e.into_inner());
        let Some(w) = workers.get_mut(uid) else {
            return;
        };
        if w.home.load(Ordering::Relaxed) != partition {
            if w.left == Some(partition) {
                w.left = None;
            }
            return;
        }
        if moving_away(pod) {
            let (agent, uid) = (agent.clone(), uid.clone());
            tokio::spawn(async move {
                tokio::time::sleep(FOLLOW_TIMEOUT).await;
                let mut workers = agent.workers.lock().unwrap_or_else(|e| e.into_inner());
                if workers
                    .get(&uid)
                    .is_some_and(|w| w.home.load(Ordering::Relaxed) == partition)
                    && let Some(w) = workers.remove(&uid)
                {
                    tracing::warn!(
                        uid,
                        "a moved pod never showed in its new partition: stopped"
                    );
                    let _ = w.tx.send(None);
                }
            });
            return;
        }
        if let Some(w) = workers.remove(uid) {
            let _ = w.tx.send(None);
        }
    }

    /// Hands the pod's latest state to its worker, starting one for a new pod. A pod seen
    /// in another partition than the one holding it has moved there with its tenant: its
    /// worker follows it (reports go there), and the old copy is ignored from then on.
    fn dispatch(self: &Arc<Self>, partition: usize, agent: &Arc<NodeAgent>, pod: Pod) {
        let mut workers = agent.workers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = workers.get_mut(&pod.metadata.uid) {
            let home = w.home.load(Ordering::Relaxed);
            if home != partition {
                if w.left == Some(partition) || moving_away(&pod) {
                    return;
                }
                tracing::info!(
                    pod = pod.key(),
                    from = home,
                    to = partition,
                    "pod followed its tenant to another partition"
                );
                w.home.store(partition, Ordering::Relaxed);
                w.left = Some(home);
            }
            let _ = w.tx.send(Some(pod));
            return;
        }
        if matches!(pod.phase(), "Succeeded" | "Failed") || moving_away(&pod) {
            return;
        }
        let (tx, rx) = watch::channel(Some(pod.clone()));
        let home = Arc::new(AtomicUsize::new(partition));
        workers.insert(
            pod.metadata.uid.clone(),
            Worker {
                tx,
                home: home.clone(),
                left: None,
            },
        );
        let node = &pod.spec.node_name;
        let events = self
            .events
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|r| r.on_host(node))
            .collect();
        let worker = PodWorker {
            events,
            account_token: tokio::sync::Mutex::default(),
            partitions: self.pod_apis.clone(),
            home,
            agent: agent.clone(),
            key: pod.key(),
            uid: pod.metadata.uid.clone(),
        };
        tokio::spawn(worker.run(pod, rx));
    }

    fn action_seen(self: &Arc<Self>, partition: usize, action: Action) {
        if action.status.as_ref().is_some_and(|s| s.complete) {
            return;
        }
        let Some(pa) = action.spec.pod_action.clone() else {
            return;
        };
        let pod_key = model::object_key(
            Pod::PLURAL,
            Pod::SCOPE,
            action.metadata.tenant_or_system(),
            &action.metadata.namespace,
            &pa.pod_name,
        );
        let workloads = &self.workloads[partition];
        let Some(pod) = workloads.pods.cache().get(&pod_key) else {
            return;
        };
        let Some(agent) = self.agent(&pod.spec.node_name) else {
            return;
        };
        let actions = workloads.client.api::<Action>();
        let events = self.events.read().unwrap_or_else(|e| e.into_inner())[partition]
            .on_host(&pod.spec.node_name);
        tokio::spawn(async move {
            let result = match (agent.runtime_for(&pod), &pod.spec.virtual_machine) {
                (Ok(rt), Some(vm)) => rt
                    .vm_action(&pod.metadata.uid, &vm.name, &pa)
                    .await
                    .map_err(|e| e.to_string()),
                (Err(e), _) => Err(e),
                (_, None) => Err(format!("pod {} is not a VM pod", pa.pod_name)),
            };
            let regarding = ObjectReference::to(&pod).with_field_path("spec.virtualMachine");
            let what = match (&pa.reboot_action, &pa.snapshot_action) {
                (Some(_), _) => "reboot",
                (_, Some(_)) => "snapshot",
                _ => "restore",
            };
            match &result {
                Ok(m) => events.normal(regarding, "ActionSucceeded", format!("{what}: {m}")),
                Err(m) => events.warning(regarding, "ActionFailed", format!("{what}: {m}")),
            }
            let status = match result {
                Ok(message) => ActionStatus {
                    complete: true,
                    state: "Succeeded".into(),
                    message,
                },
                Err(message) => ActionStatus {
                    complete: true,
                    state: "Failed".into(),
                    message,
                },
            };
            // The result first: once it is complete, no later event of the action (the
            // node name's write among them) starts it again.
            let node = &pod.spec.node_name;
            let written = actions
                .modify_status(&action.key(), |a| {
                    if a.status.as_ref().is_some_and(|s| s.complete) {
                        return false;
                    }
                    a.status = Some(status.clone());
                    true
                })
                .await;
            let written = written.and(
                actions
                    .modify(&action.key(), |a| {
                        let changed = a.spec.node_name != *node;
                        a.spec.node_name.clone_from(node);
                        changed
                    })
                    .await,
            );
            if let Err(e) = written {
                tracing::warn!(action = action.metadata.name, error = %e, "cannot record the action's result");
            }
        });
    }

    /// The runtime of a pod bound to one of the fleet's nodes and the name of its
    /// workload `workload` (may be omitted for a pod with one).
    fn workload_of(
        &self,
        pod: &Pod,
        workload: Option<&str>,
    ) -> Result<(Arc<dyn Runtime>, String), RuntimeError> {
        let agent = self.agent(&pod.spec.node_name).ok_or_else(|| {
            RuntimeError::NotFound(format!(
                "pod {} is not running on a node of this agent",
                pod.metadata.name
            ))
        })?;
        let names = workload_names(pod);
        let name = match workload {
            Some(w) if names.iter().any(|n| n == w) => w.to_owned(),
            Some(w) => {
                return Err(RuntimeError::NotFound(format!(
                    "container {w} in pod {}",
                    pod.metadata.name
                )));
            }
            None if names.len() == 1 => names[0].clone(),
            None => {
                return Err(RuntimeError::Unsupported(format!(
                    "a container name must be specified for pod {}, choose one of: [{}]",
                    pod.metadata.name,
                    names.join(" ")
                )));
            }
        };
        let rt = agent.runtime_for(pod).map_err(RuntimeError::Unsupported)?;
        Ok((rt.clone(), name))
    }

    /// What a workload of a pod bound to one of the fleet's nodes wrote: a container's
    /// output or a VM's serial console. `workload` may be omitted for a pod with one.
    pub async fn logs(&self, pod: &Pod, workload: Option<&str>) -> Result<Vec<u8>, RuntimeError> {
        let (rt, name) = self.workload_of(pod, workload)?;
        rt.logs(&pod.metadata.uid, &name).await
    }

    /// A session with a workload of a pod bound to one of the fleet's nodes: a command
    /// run in a container, or (an empty command) an attach to its output or a VM's
    /// console.
    pub async fn exec(&self, pod: &Pod, request: &StreamRequest) -> Result<Session, RuntimeError> {
        let (rt, name) = self.workload_of(pod, request.container.as_deref())?;
        let uid = &pod.metadata.uid;
        let process = if request.command.is_empty() {
            rt.attach(uid, &name, request.stdin).await?
        } else {
            rt.exec(uid, &name, &request.command, request.tty, request.stdin)
                .await?
        };
        Ok(crate::session::session_of(process, request))
    }

    /// What the fleet's node `node` and its pods use now.
    pub async fn usage(&self, node: &str) -> Result<NodeUsage, RuntimeError> {
        let agent = self
            .agent(node)
            .ok_or_else(|| RuntimeError::NotFound(format!("node {node} in this agent")))?;
        Ok(agent.usage().await)
    }

    /// A connection to `port` in the network namespace of a pod bound to one of the
    /// fleet's nodes.
    pub async fn port_forward(&self, pod: &Pod, port: u16) -> Result<TcpStream, RuntimeError> {
        let agent = self.agent(&pod.spec.node_name).ok_or_else(|| {
            RuntimeError::NotFound(format!(
                "pod {} is not running on a node of this agent",
                pod.metadata.name
            ))
        })?;
        let rt = agent.runtime_for(pod).map_err(RuntimeError::Unsupported)?;
        rt.port_forward(&pod.metadata.uid, port).await
    }
}

/// Why a pod did not start.
enum StartError {
    /// Something it needs is not ready yet: it waits and tries again.
    NotReady(String),
    /// It cannot start: it fails.
    Failed(String),
}

/// How often a running pod's ConfigMap and Secret volumes are read again (the kubelet's
/// sync period is a minute; this is what an update takes at most to reach the files).
const VOLUME_REFRESH: Duration = Duration::from_secs(10);

/// The condition that says whether a pod's sandbox and network are ready for its
/// containers (Kubernetes' name).
const READY_TO_START: &str = "PodReadyToStartContainers";

/// The component name node agents report events as (Kubernetes' `source.component`).
pub const KUBELET: &str = "kubelet";

/// Runs one pod on one node until it is deleted.
struct PodWorker {
    /// Each tenant partition's event recorder, reporting from the pod's node.
    events: Arc<[Recorder]>,
    /// The pod's ServiceAccount token and when to ask for a new one.
    account_token: tokio::sync::Mutex<Option<(String, tokio::time::Instant)>>,
    /// The pods of each tenant partition.
    partitions: Arc<[centaurus_client::Api<Pod>]>,
    /// The one that holds the pod.
    home: Arc<AtomicUsize>,
    agent: Arc<NodeAgent>,
    key: String,
    uid: String,
}

/// What the worker knows about one workload beyond the runtime's state.
#[derive(Clone, Debug, Default)]
struct Tracked {
    restarts: i32,
    next_restart: Option<tokio::time::Instant>,
}

impl PodWorker {
    async fn run(self, pod: Pod, mut rx: watch::Receiver<Option<Pod>>) {
        let mut waiting_for = String::new();
        let rt = loop {
            match self.start(&pod).await {
                Ok(rt) => break rt,
                Err(StartError::NotReady(reason)) => {
                    if reason != waiting_for {
                        self.event(&pod, "", true, "FailedStart", &reason);
                        waiting_for.clone_from(&reason);
                    }
                    // The pod waits, Pending with the reason in a condition, and tries
                    // again (the network plugin waits between tries, so this pause only
                    // looks for a deletion): a slow network plane never fails it.
                    tracing::debug!(pod = self.key, %reason, "pod waits to start");
                    self.report_waiting(&reason).await;
                    match tokio::time::timeout(Duration::from_millis(100), rx.changed()).await {
                        Ok(Err(_)) => return,
                        Ok(Ok(())) if rx.borrow().is_none() => {
                            self.teardown(&pod).await;
                            return;
                        }
                        _ => {}
                    }
                }
                Err(StartError::Failed(reason)) => {
                    tracing::warn!(pod = self.key, error = %reason, "pod failed to start");
                    self.event(&pod, "", true, "Failed", &format!("Error: {reason}"));
                    self.report_failed(&reason).await;
                    // Wait for the deletion, then clean up what may exist.
                    while rx.changed().await.is_ok() {
                        if rx.borrow().is_none() {
                            break;
                        }
                    }
                    self.teardown(&pod).await;
                    return;
                }
            }
        };
        let start_time = model::now();
        let mut tracked: HashMap<String, Tracked> = HashMap::new();
        let mut last: Option<PodStatus> = None;
        let poll = rt.poll_interval();
        let mut current = pod;
        let mut home = self.home.load(Ordering::Relaxed);
        let mut next_refresh = tokio::time::Instant::now() + VOLUME_REFRESH;
        loop {
            let projected = podconfig::has_projected_volumes(&current)
                || (rt.projects_files() && podconfig::wants_account_token(&current));
            if projected && tokio::time::Instant::now() >= next_refresh {
                self.refresh_volumes(&rt, &current).await;
                next_refresh = tokio::time::Instant::now() + VOLUME_REFRESH;
            }
            let status = self.observe(&rt, &current, start_time, &mut tracked).await;
            // A pod that moved partitions is reported to its new one in full.
            let now_home = self.home.load(Ordering::Relaxed);
            if now_home != home {
                (home, last) = (now_home, None);
            }
            let mut retry = None;
            if last.as_ref() != Some(&status) {
                if self.report(&status).await {
                    last = Some(status.clone());
                } else {
                    retry = Some(Duration::from_secs(1));
                }
            }
            let changed = match retry.or(poll) {
                Some(every) => tokio::time::timeout(every, rx.changed()).await.ok(),
                None => Some(rx.changed().await),
            };
            match changed {
                Some(Err(_)) => break,
                Some(Ok(())) => {
                    let next = rx.borrow_and_update().clone();
                    match next {
                        Some(p) => current = p,
                        None => break,
                    }
                }
                None => {}
            }
        }
        if !self.agent.stopped.load(Ordering::Relaxed) {
            self.teardown(&current).await;
        }
    }

    /// Attaches the network, makes the sandbox and starts every workload.
    async fn start(&self, pod: &Pod) -> Result<Arc<dyn Runtime>, StartError> {
        let rt = self
            .agent
            .runtime_for(pod)
            .map_err(StartError::Failed)?
            .clone();
        let net = self.agent.network.attach(pod).await.map_err(|e| match e {
            RuntimeError::NotReady(why) => StartError::NotReady(why),
            e => StartError::Failed(format!("network: {e}")),
        })?;
        let failed = StartError::Failed;
        let (resolved, volumes) = self.config(&rt, pod, &net.ip).await?;
        rt.create_sandbox(pod, &net)
            .await
            .map_err(|e| failed(format!("sandbox: {e}")))?;
        rt.write_volumes(&self.uid, &volumes)
            .await
            .map_err(|e| failed(format!("volumes: {e}")))?;
        let what = what_runs(pod);
        for name in workload_names(pod) {
            rt.create_workload(&resolved, &name)
                .await
                .map_err(|e| failed(e.to_string()))?;
            self.event(
                pod,
                &name,
                false,
                "Created",
                &format!("Created {what} {name}"),
            );
            rt.start_workload(&self.uid, &name)
                .await
                .map_err(|e| failed(e.to_string()))?;
            self.event(
                pod,
                &name,
                false,
                "Started",
                &format!("Started {what} {name}"),
            );
        }
        // The pod's address is reported with the first status.
        self.set_ip(&net.ip).await;
        Ok(rt)
    }

    /// The pod with its environment resolved, and its volumes' contents, from the
    /// ConfigMaps and Secrets of its partition; NotReady while one it needs is missing.
    async fn config(
        &self,
        rt: &Arc<dyn Runtime>,
        pod: &Pod,
        ip: &str,
    ) -> Result<(Pod, BTreeMap<String, VolumeContent>), StartError> {
        let (mut resolved, mut volumes) =
            podconfig::resolve(self.pods().client(), pod, ip, &self.agent.config.address)
                .await
                .map_err(StartError::NotReady)?;
        podconfig::resolve_dns(&mut resolved, self.agent.cluster_dns);
        if rt.projects_files()
            && podconfig::wants_account_token(pod)
            && let Some(token) = self.account_token(pod).await
        {
            podconfig::project_account_token(&mut resolved, &mut volumes, &token);
        }
        Ok((resolved, volumes))
    }

    /// A token of the pod's ServiceAccount bound to the pod, asked for again once 80% of
    /// its life is over. None (the pod starts without one, with a warning event) when it
    /// cannot be had: the account does not exist, say.
    async fn account_token(&self, pod: &Pod) -> Option<String> {
        const LIFE: u64 = 3600;
        let mut cached = self.account_token.lock().await;
        if let Some((token, renew)) = cached.as_ref()
            && tokio::time::Instant::now() < *renew
        {
            return Some(token.clone());
        }
        let m = &pod.metadata;
        let account = match pod.spec.service_account_name.as_str() {
            "" => model::DEFAULT_SERVICE_ACCOUNT,
            a => a,
        };
        // The account may say its pods get no token, unless a pod asks for one.
        if pod.spec.automount_service_account_token.is_none() {
            let key = model::object_key(
                "serviceaccounts",
                model::Scope::Namespaced,
                m.tenant_or_system(),
                &m.namespace,
                account,
            );
            let sa = self
                .pods()
                .client()
                .api::<model::ServiceAccount>()
                .get(&key)
                .await;
            if let Ok(Some(sa)) = sa
                && sa.automount_service_account_token == Some(false)
            {
                return None;
            }
        }
        let path = format!(
            "/api/v1/tenants/{}/namespaces/{}/serviceaccounts/{account}/token",
            m.tenant_or_system(),
            m.namespace
        );
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": LIFE,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": m.name, "uid": m.uid},
            },
        });
        let answer = self
            .pods()
            .client()
            .send_json(http::Method::POST, &path, &body)
            .await
            .and_then(|r| r.ok());
        match answer.as_ref().map(|a| {
            a.pointer("/status/token")
                .and_then(serde_json::Value::as_str)
        }) {
            Ok(Some(token)) => {
                let renew = tokio::time::Instant::now() + Duration::from_secs(LIFE * 4 / 5);
                *cached = Some((token.to_owned(), renew));
                Some(token.to_owned())
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(pod = self.key, error = %e, "no ServiceAccount token");
                self.event(
                    pod,
                    "",
                    true,
                    "FailedMount",
                    &format!("no token of ServiceAccount {account:?}: {e}"),
                );
                None
            }
        }
    }

    /// Rewrites the pod's ConfigMap and Secret volumes from what they project now, so a
    /// change reaches the running containers' files.
    async fn refresh_volumes(&self, rt: &Arc<dyn Runtime>, pod: &Pod) {
        let ip = pod.status.as_ref().map_or("", |s| s.pod_ip.as_str());
        match self.config(rt, pod, ip).await {
            Ok((_, volumes)) => {
                if let Err(e) = rt.write_volumes(&self.uid, &volumes).await {
                    tracing::warn!(pod = self.key, error = %e, "cannot refresh volumes");
                }
            }
            Err(StartError::NotReady(why) | StartError::Failed(why)) => {
                tracing::debug!(pod = self.key, %why, "volumes keep their last contents");
            }
        }
    }

    async fn set_ip(&self, ip: &str) {
        let pods = self.pods();
        let host_ip = self.agent.config.address.clone();
        let uid = self.uid.clone();
        let _ = pods
            .modify_status(&self.key, |p| {
                if p.metadata.uid != uid {
                    return false;
                }
                let s = p.status.get_or_insert_with(PodStatus::default);
                s.pod_ip = ip.to_owned();
                s.host_ip.clone_from(&host_ip);
                true
            })
            .await;
    }

    /// Reads workload states, restarts by policy, and composes the pod's status.
    async fn observe(
        &self,
        rt: &Arc<dyn Runtime>,
        pod: &Pod,
        start_time: Time,
        tracked: &mut HashMap<String, Tracked>,
    ) -> PodStatus {
        let policy = pod.spec.restart_policy.as_deref().unwrap_or("Always");
        let mut statuses = Vec::new();
        for name in workload_names(pod) {
            let st = match rt.workload_status(&self.uid, &name).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(pod = self.key, workload = name, error = %e, "workload status unavailable");
                    WorkloadStatus {
                        name: name.clone(),
                        state: WorkloadState::Exited {
                            code: -1,
                            reason: "Unknown".into(),
                            started_at: None,
                            finished_at: model::now(),
                        },
                        id: String::new(),
                        ready: false,
                        reboots: 0,
                    }
                }
            };
            let t = tracked.entry(name.clone()).or_default();
            if let WorkloadState::Exited { code, .. } = &st.state {
                let restart = match policy {
                    "Never" => false,
                    "OnFailure" => *code != 0,
                    _ => true,
                };
                if restart && !self.agent.stopped.load(Ordering::Relaxed) {
                    let now = tokio::time::Instant::now();
                    match t.next_restart {
                        None => {
                            self.event(
                                pod,
                                &name,
                                true,
                                "BackOff",
                                &format!(
                                    "Back-off restarting failed {} {name} in pod {}",
                                    what_runs(pod),
                                    pod.metadata.name
                                ),
                            );
                            // Back off 1 s, doubling to 30 s, as the kubelet's CrashLoopBackOff.
                            let delay = Duration::from_secs(1 << t.restarts.clamp(0, 5) as u32)
                                .min(Duration::from_secs(30));
                            t.next_restart = Some(now + delay);
                        }
                        Some(at) if at <= now => {
                            t.next_restart = None;
                            match rt.start_workload(&self.uid, &name).await {
                                Ok(()) => t.restarts += 1,
                                Err(e) => {
                                    tracing::warn!(pod = self.key, workload = name, error = %e, "restart failed")
                                }
                            }
                        }
                        Some(_) => {}
                    }
                }
            }
            statuses.push((st, t.restarts));
        }
        compose_status(pod, policy, start_time, &statuses)
    }

    /// Records an event about the pod (about its workload `workload`, when named) in the
    /// partition that holds it.
    fn event(&self, pod: &Pod, workload: &str, warning: bool, reason: &str, message: &str) {
        let mut regarding = ObjectReference::to(pod);
        if !workload.is_empty() {
            regarding = regarding.with_field_path(match pod.spec.virtual_machine {
                Some(_) => "spec.virtualMachine".to_owned(),
                None => format!("spec.containers{{{workload}}}"),
            });
        }
        let recorder = &self.events[self.home.load(Ordering::Relaxed)];
        if warning {
            recorder.warning(regarding, reason, message);
        } else {
            recorder.normal(regarding, reason, message);
        }
    }

    /// The pods of the partition that holds the pod now.
    fn pods(&self) -> &centaurus_client::Api<Pod> {
        &self.partitions[self.home.load(Ordering::Relaxed)]
    }

    /// Writes the pod's status; false when it could not.
    async fn report(&self, status: &PodStatus) -> bool {
        let uid = self.uid.clone();
        let result = self
            .pods()
            .modify_status(&self.key, |p| {
                if p.metadata.uid != uid {
                    return false;
                }
                let old = p.status.take().unwrap_or_default();
                let mut next = status.clone();
                next.pod_ip = old.pod_ip;
                next.host_ip = old.host_ip;
                // Keep conditions others own (PodScheduled) and replace the agent's, with
                // the time of the last change of each.
                let now = model::now();
                for c in &mut next.conditions {
                    c.last_transition_time = old
                        .conditions
                        .iter()
                        .find(|o| o.type_ == c.type_ && o.status == c.status)
                        .and_then(|o| o.last_transition_time)
                        .or(Some(now));
                }
                let mut conditions: Vec<Condition> = old
                    .conditions
                    .into_iter()
                    .filter(|c| !status.conditions.iter().any(|n| n.type_ == c.type_))
                    .collect();
                conditions.append(&mut next.conditions);
                next.conditions = conditions;
                p.status = Some(next);
                true
            })
            .await;
        if let Err(e) = &result {
            tracing::warn!(pod = self.key, error = %e, "cannot report the pod's status");
        }
        result.is_ok()
    }

    /// Reports a pod that waits to start: Pending, with `PodReadyToStartContainers` False
    /// saying why.
    async fn report_waiting(&self, reason: &str) {
        let status = PodStatus {
            phase: "Pending".into(),
            conditions: vec![Condition {
                type_: READY_TO_START.into(),
                status: "False".into(),
                reason: "NetworkNotReady".into(),
                message: reason.to_owned(),
                ..Default::default()
            }],
            ..Default::default()
        };
        self.report(&status).await;
    }

    async fn report_failed(&self, reason: &str) {
        let status = PodStatus {
            phase: "Failed".into(),
            reason: "StartError".into(),
            message: reason.to_owned(),
            ..Default::default()
        };
        self.report(&status).await;
    }

    async fn teardown(&self, pod: &Pod) {
        if let Ok(rt) = self.agent.runtime_for(pod) {
            let grace = Duration::from_secs(
                pod.spec
                    .termination_grace_period_seconds
                    .unwrap_or(5)
                    .clamp(0, 30) as u64,
            );
            let what = what_runs(pod);
            for name in workload_names(pod) {
                self.event(
                    pod,
                    &name,
                    false,
                    "Killing",
                    &format!("Stopping {what} {name}"),
                );
                let _ = rt.stop_workload(&self.uid, &name, grace).await;
                let _ = rt.remove_workload(&self.uid, &name).await;
            }
            if let Err(e) = rt.remove_sandbox(&self.uid).await {
                tracing::warn!(pod = self.key, error = %e, "removing the sandbox failed");
            }
        }
        if let Err(e) = self.agent.network.detach(pod).await {
            tracing::warn!(pod = self.key, error = %e, "detaching the network failed");
        }
    }
}

/// What a pod's workloads are, in events: containers, or a virtual machine.
fn what_runs(pod: &Pod) -> &'static str {
    if pod.spec.virtual_machine.is_some() {
        "virtual machine"
    } else {
        "container"
    }
}

/// The pod status the workload states add up to, Kubernetes' way: `Running` while any
/// runs or will be restarted, `Succeeded` when all exited 0 and none restarts, `Failed`
/// when one exited non-zero and will not restart.
fn compose_status(
    pod: &Pod,
    policy: &str,
    start_time: Time,
    statuses: &[(WorkloadStatus, i32)],
) -> PodStatus {
    let restarts = |code: i32| match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    };
    let mut all_exited = true;
    let mut any_failed_for_good = false;
    let mut ready = true;
    for (s, _) in statuses {
        match &s.state {
            WorkloadState::Exited { code, .. } => {
                ready = false;
                if restarts(*code) {
                    all_exited = false;
                } else if *code != 0 {
                    any_failed_for_good = true;
                }
            }
            WorkloadState::Running { .. } => {
                all_exited = false;
                ready &= s.ready || !pod.is_vm();
            }
            WorkloadState::Created => {
                all_exited = false;
                ready = false;
            }
        }
    }
    let phase = if all_exited && any_failed_for_good {
        "Failed"
    } else if all_exited {
        "Succeeded"
    } else {
        "Running"
    };
    let container_state = |s: &WorkloadStatus| match &s.state {
        WorkloadState::Created => ContainerState {
            waiting: Some(StateReason {
                reason: "ContainerCreating".into(),
                message: String::new(),
            }),
            ..Default::default()
        },
        WorkloadState::Running { started_at } => ContainerState {
            running: Some(StateRunning {
                started_at: Some(*started_at),
            }),
            ..Default::default()
        },
        // Exited, to be started again: waiting out its back-off, as the kubelet says.
        WorkloadState::Exited { code, .. } if restarts(*code) => ContainerState {
            waiting: Some(StateReason {
                reason: "CrashLoopBackOff".into(),
                message: format!("back-off restarting the container, which exited with {code}"),
            }),
            ..Default::default()
        },
        WorkloadState::Exited {
            code,
            reason,
            started_at,
            finished_at,
        } => ContainerState {
            terminated: Some(StateTerminated {
                exit_code: *code,
                reason: reason.clone(),
                message: String::new(),
                started_at: *started_at,
                finished_at: Some(*finished_at),
            }),
            ..Default::default()
        },
    };
    let mut status = PodStatus {
        phase: phase.into(),
        start_time: Some(start_time),
        conditions: vec![
            Condition {
                type_: READY_TO_START.into(),
                status: "True".into(),
                ..Default::default()
            },
            Condition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    match &pod.spec.virtual_machine {
        Some(vm) => {
            if let Some((s, restarts)) = statuses.first() {
                status.virtual_machine_status = Some(VirtualMachineStatus {
                    name: vm.name.clone(),
                    image: vm.image.clone(),
                    state: match &s.state {
                        WorkloadState::Created => "Pending",
                        WorkloadState::Running { .. } => "Running",
                        WorkloadState::Exited { code: 0, .. } => "Stopped",
                        WorkloadState::Exited { .. } => "Failed",
                    }
                    .into(),
                    power_state: match &s.state {
                        WorkloadState::Running { .. } => "Running",
                        _ => "Shutdown",
                    }
                    .into(),
                    ready: s.ready,
                    restart_count: restarts + s.reboots,
                    vm_id: s.id.clone(),
                    message: String::new(),
                });
            }
        }
        None => {
            status.container_statuses = statuses
                .iter()
                .map(|(s, restarts)| {
                    let image = pod
                        .spec
                        .containers
                        .iter()
                        .find(|c| c.name == s.name)
                        .map(|c| c.image.clone())
                        .unwrap_or_default();
                    let running = matches!(s.state, WorkloadState::Running { .. });
                    ContainerStatus {
                        name: s.name.clone(),
                        ready: running,
                        state: container_state(s),
                        restart_count: *restarts,
                        image_id: format!("centaurus://{image}"),
                        image,
                        container_id: s.id.clone(),
                        started: Some(running),
                    }
                })
                .collect();
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use centaurus_core::model::{Container, ObjectMeta, PodSpec};

    fn exited(code: i32) -> (WorkloadStatus, i32) {
        let now = model::now();
        let status = WorkloadStatus {
            name: "c".into(),
            state: WorkloadState::Exited {
                code,
                reason: "Error".into(),
                started_at: Some(now),
                finished_at: now,
            },
            id: "hollow://c".into(),
            ready: false,
            reboots: 0,
        };
        (status, 2)
    }

    #[test]
    fn a_container_that_restarts_waits_in_crash_loop_back_off() {
        let mut pod = Pod::typed(ObjectMeta::namespaced("t", "ns", "p"));
        pod.spec = PodSpec {
            containers: vec![Container {
                name: "c".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let state = |policy: &str| {
            let s = compose_status(&pod, policy, model::now(), &[exited(1)]);
            (s.phase.clone(), s.container_statuses[0].state.clone())
        };
        let (phase, waiting) = state("Always");
        assert_eq!(phase, "Running");
        assert_eq!(waiting.waiting.unwrap().reason, "CrashLoopBackOff");
        let (phase, terminated) = state("Never");
        assert_eq!(phase, "Failed");
        assert_eq!(terminated.terminated.unwrap().exit_code, 1);
    }
}
