//! `centaurus up`: the all-in-one region: the embedded store, the multi-tenant API server
//! over HTTPS, the scheduler, the controllers, a node agent for this host with the real
//! runtimes (as root, with runc and QEMU present) and any number of hollow nodes.
//!
//! With `--droplets N` the region runs on N hosts made on this machine: network
//! namespaces on a substrate bridge ([`centaurus_xdp::testbed`]), each with its own node
//! agent and transit daemon, and the VPC plane programs their BPF datapath (TC hook)
//! instead of the simulated one, so pods on different droplets reach each other through it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use centaurus_api::agent_link::{AgentEndpoint, NodePods};
use centaurus_api::region::{self, Region, RegionOptions};
use centaurus_api::streams::{Conn, Session, StreamRequest};
use centaurus_api::{ApiConfig, PodStreams, StreamError};
use centaurus_client::Client;
use centaurus_client::kubeconfig::{Kubeconfig, User as KubeUser};
use centaurus_controllers::NodeLifecycleConfig;
use centaurus_core::controller::Share;
use centaurus_core::model::{self, Pod, Quantity, ResourceList};
use centaurus_core::remote::NodeUsage;
use centaurus_core::store::Store;
use centaurus_tenancy::identity;

use crate::components::StoreArg;
use centaurus_runtime::agent::hostname;
use centaurus_runtime::{
    AgentConfig, AttachmentLedger, Fleet, HollowRuntime, HostLocalNetwork, NetworkPlugin,
    NoNetwork, NodeAgent, QemuRuntime, RuncRuntime, Runtime, RuntimeError, Wiring,
};
use centaurus_sched::{Scheduler, SchedulerConfig};
use centaurus_vpc::Dataplane;
use centaurus_xdp::loader::Hook;
use centaurus_xdp::testbed::{Testbed, endpoint_mtu};
use std::net::Ipv4Addr;

/// What runs pods in the region.
pub struct Compute {
    /// Simulated nodes to start.
    pub hollow_nodes: usize,
    /// Zones the hollow nodes are spread over.
    pub zones: usize,
    /// Whether to start a node agent for this host.
    pub local_agent: bool,
    /// Droplets to make on this machine, each a node with its own transit daemon (0: the
    /// VPC plane programs the simulated dataplane).
    pub droplets: usize,
    /// How long a node stays NotReady before its pods are evicted and replaced.
    pub eviction_timeout: Duration,
}

/// Runs the region until Ctrl-C or SIGTERM (or until ready, with `exit_when_ready`). A
/// clean stop also stops the workloads of the local node; its pods start again with the
/// next `up`.
pub async fn run(
    data_dir: &Path,
    store_arg: Option<&StoreArg>,
    listen: SocketAddr,
    exit_when_ready: bool,
    compute: Option<Compute>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir).context("creating the data directory")?;
    // Resolved once: runc, QEMU, transitd and the kubeconfig all see the same absolute path,
    // whatever their working directory.
    let data_dir = &std::fs::canonicalize(data_dir).context("resolving the data directory")?;
    let store_arg = store_arg
        .cloned()
        .unwrap_or_else(|| StoreArg::Redb(data_dir.join("store.redb")));
    let store: Arc<dyn Store> = store_arg.open_served().await?;
    let db = match &store_arg {
        StoreArg::Redb(path) => path.display().to_string(),
        StoreArg::Etcd(urls) => format!("etcd:{}", urls.join(",")),
    };
    let created = region::bootstrap(&*store).await?;
    let registry = region::registry();
    let mut counts = Vec::new();
    for info in registry.kinds() {
        let n = store
            .range(&info.prefix(None, None), Default::default())
            .await?
            .kvs
            .len();
        if n > 0 {
            counts.push(format!("{n} {}", info.plural));
        }
    }
    let revision = store.revision().await?;
    println!(
        "centaurus: store {db} at revision {revision} ({}): {}",
        if created { "initialized" } else { "reopened" },
        counts.join(", "),
    );
    let region = Region::start(
        store.clone(),
        RegionOptions {
            data_dir: data_dir.to_owned(),
            listen,
            config: ApiConfig::default(),
            compact_every: Duration::from_secs(300),
        },
    )
    .await?;
    println!(
        "centaurus: API server listening on https://{} ({} kinds)",
        region.addr,
        registry.kinds().count()
    );
    println!(
        "centaurus: admin kubeconfig (system tenant) at {}",
        region.admin_kubeconfig.display()
    );
    // Held until the region stops: dropping it stops the transit daemons and removes the
    // droplets.
    let mut testbed = None;
    let mut cluster_dns = None;
    let (fleet, tasks) = match &compute {
        Some(c) => {
            if c.droplets > 0 {
                testbed = Some(start_droplets(data_dir, c.droplets)?);
            }
            let (fleet, mut tasks) = start_compute(&region, data_dir, c, testbed.as_ref()).await?;
            let dataplane: (Arc<dyn Dataplane>, _) = match &testbed {
                Some(bed) => (Arc::new(bed.dataplane()), "BPF (TC hook)"),
                None => (Arc::new(centaurus_vpc::SimDataplane::new()), "simulated"),
            };
            let clients = |c: identity::Component| region.client(c.identity());
            tasks.extend(start_network(
                &clients,
                None,
                data_dir,
                dataplane,
                ("vpc-operator-0", Share::all()),
            )?);
            if let Some(bed) = &testbed {
                let client = region.client(identity::CLUSTER_DNS.identity());
                cluster_dns = Some(crate::cluster_dns::ClusterDns::start(
                    client,
                    droplet_wiring(bed, 0)?,
                    "droplet-0".into(),
                ));
                println!(
                    "centaurus: cluster DNS at {} in every tenant's VPC (kube-system/kube-dns, on droplet-0)",
                    crate::cluster_dns::DNS_IP
                );
            }
            region
                .api
                .set_pod_streams(Arc::new(FleetStreams(vec![fleet.clone()])));
            (Some(fleet), tasks)
        }
        None => {
            println!("centaurus: API only: no scheduler, controllers or node agents");
            (None, Vec::new())
        }
    };
    println!(
        "centaurus: region ready; try: kubectl --kubeconfig {} get tenants",
        region.admin_kubeconfig.display()
    );
    if !exit_when_ready {
        crate::components::until_stopped().await?;
    }
    println!("centaurus: stopping");
    if let Some(fleet) = fleet {
        fleet.shutdown().await;
    }
    for t in tasks {
        t.abort();
    }
    if let Some(dns) = cluster_dns {
        dns.stop().await;
    }
    region.stop().await;
    drop(testbed);
    println!("centaurus: stopped");
    Ok(())
}

/// Makes `count` droplets (named after the data directory, so regions of different
/// directories do not collide; what a killed region left is removed first) and starts
/// their transit daemons, this binary's `transitd`.
fn start_droplets(data_dir: &Path, count: usize) -> anyhow::Result<Testbed> {
    if !RuncRuntime::available() {
        anyhow::bail!("--droplets needs root and runc (scripts/setup.sh)");
    }
    let dir = data_dir.join("droplets");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let prefix = format!(
        "cent-r{:06x}",
        centaurus_core::ring::stable_hash(dir.as_os_str().as_encoded_bytes()) & 0xff_ffff
    );
    Testbed::sweep(&prefix).context("removing droplets left by an earlier region")?;
    let mut bed = Testbed::new(&prefix, count, &dir).context("making the droplets")?;
    let exe = std::env::current_exe().context("finding this binary")?;
    bed.start_transit_daemons(&exe, &["transitd"])
        .context("starting the transit daemons")?;
    println!(
        "centaurus: {count} droplets ({prefix}-d0..) on a substrate of MTU {}, each with its transit daemon",
        bed.mtu
    );
    Ok(bed)
}

/// Starts the VPC plane: an operator replica `name` programming `dataplane` (the
/// droplets' BPF datapath, or the simulated one, as its name says) and the network
/// controller, each on its `share` of the objects. In a tenant partition, `hosts` are the
/// resource partitions (their droplets; their network controllers make them).
pub(crate) fn start_network(
    clients: &dyn Fn(identity::Component) -> Client,
    hosts: Option<Vec<Client>>,
    data_dir: &Path,
    (dataplane, kind): (Arc<dyn Dataplane>, &str),
    (name, share): (&str, Share),
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let client = clients(identity::VPC_OPERATOR);
    let network = clients(identity::NETWORK_CONTROLLER);
    let partitioned = hosts.is_some();
    let operator = centaurus_vpc::operator::Operator::across(
        client.clone(),
        hosts.unwrap_or_else(|| vec![client]),
        dataplane,
        centaurus_vpc::operator::OperatorConfig {
            name: name.into(),
            ownership: share.ownership.clone(),
            state_file: data_dir.join("vpc-operator.redb"),
            // Each reconcile is a few round trips to the API: enough of them in flight
            // to keep up with a scheduler binding hundreds of pods a second.
            workers: 16,
            resync: Duration::from_secs(5),
        },
    )
    .context("starting the vpc operator")?;
    println!("centaurus: vpc plane: operator {name} on the {kind} dataplane, network controller");
    let network = if partitioned {
        tokio::spawn(centaurus_vpc::network::run_tenants(network, share))
    } else {
        tokio::spawn(centaurus_vpc::network::run(network, share))
    };
    Ok(vec![tokio::spawn(operator.run()), network])
}

/// Pod logs and sessions from the node agents of this process' fleets: `up`'s in-process
/// shortcut ([`PodStreams`]), and what an agent process serves on its endpoint
/// ([`NodePods`]).
struct FleetStreams(Vec<Arc<Fleet>>);

/// A runtime's failure as the API reports it: what the client asked wrongly, or what is
/// unavailable.
fn stream_error(e: RuntimeError) -> StreamError {
    match e {
        RuntimeError::NotFound(_) | RuntimeError::Unsupported(_) | RuntimeError::NotReady(_) => {
            StreamError::BadRequest(e.to_string())
        }
        other => StreamError::Unavailable(other.to_string()),
    }
}

impl FleetStreams {
    fn fleet(&self, pod: &Pod) -> Result<&Arc<Fleet>, StreamError> {
        self.0
            .iter()
            .find(|f| f.nodes().contains(&pod.spec.node_name))
            .ok_or_else(|| {
                StreamError::BadRequest(format!(
                    "pod {} is not running on a node of this agent",
                    pod.metadata.name
                ))
            })
    }

    fn pod(&self, tenant: &str, namespace: &str, name: &str) -> Result<Pod, StreamError> {
        self.0
            .iter()
            .find_map(|f| f.pod(tenant, namespace, name))
            .ok_or_else(|| {
                StreamError::BadRequest(format!(
                    "pod {tenant}/{namespace}/{name} is not bound to a node of this agent"
                ))
            })
    }
}

#[async_trait::async_trait]
impl PodStreams for FleetStreams {
    async fn logs(&self, pod: &Pod, container: Option<&str>) -> Result<Vec<u8>, StreamError> {
        self.fleet(pod)?
            .logs(pod, container)
            .await
            .map_err(stream_error)
    }

    async fn exec(&self, pod: &Pod, request: &StreamRequest) -> Result<Session, StreamError> {
        self.fleet(pod)?
            .exec(pod, request)
            .await
            .map_err(stream_error)
    }

    async fn usage(&self, node: &str) -> Result<NodeUsage, StreamError> {
        let fleet = self
            .0
            .iter()
            .find(|f| f.nodes().iter().any(|n| n == node))
            .ok_or_else(|| {
                StreamError::Unavailable(format!("node {node} is not one of this agent's"))
            })?;
        fleet.usage(node).await.map_err(stream_error)
    }

    async fn port_forward(&self, pod: &Pod, port: u16) -> Result<Conn, StreamError> {
        let conn = self
            .fleet(pod)?
            .port_forward(pod, port)
            .await
            .map_err(stream_error)?;
        Ok(Box::pin(conn))
    }
}

#[async_trait::async_trait]
impl NodePods for FleetStreams {
    async fn logs(
        &self,
        tenant: &str,
        namespace: &str,
        name: &str,
        container: Option<&str>,
    ) -> Result<Vec<u8>, StreamError> {
        let pod = self.pod(tenant, namespace, name)?;
        PodStreams::logs(self, &pod, container).await
    }

    async fn exec(
        &self,
        tenant: &str,
        namespace: &str,
        name: &str,
        request: &StreamRequest,
    ) -> Result<Session, StreamError> {
        let pod = self.pod(tenant, namespace, name)?;
        PodStreams::exec(self, &pod, request).await
    }

    async fn port_forward(
        &self,
        tenant: &str,
        namespace: &str,
        name: &str,
        port: u16,
    ) -> Result<Conn, StreamError> {
        let pod = self.pod(tenant, namespace, name)?;
        PodStreams::port_forward(self, &pod, port).await
    }

    async fn usage(&self, node: &str) -> Result<NodeUsage, StreamError> {
        PodStreams::usage(self, node).await
    }
}

/// Starts the scheduler, the controllers and the node agents (one per droplet of
/// `droplets`).
async fn start_compute(
    region: &Region,
    data_dir: &Path,
    compute: &Compute,
    droplets: Option<&Testbed>,
) -> anyhow::Result<(Arc<Fleet>, Vec<tokio::task::JoinHandle<()>>)> {
    let scheduler = Arc::new(Scheduler::new(
        region.client(identity::SCHEDULER.identity()),
        SchedulerConfig::default(),
    ));
    let mut tasks = vec![
        tokio::spawn(scheduler.run()),
        tokio::spawn(centaurus_controllers::run_all(
            region.client(identity::CONTROLLERS.identity()),
            NodeLifecycleConfig {
                eviction_timeout: compute.eviction_timeout,
                ..Default::default()
            },
            Share::all(),
        )),
    ];
    let agents = region.client(identity::NODE_FLEET.identity());
    let fleet = Fleet::new(agents.clone());
    tasks.push(tokio::spawn(fleet.clone().run()));
    fleet.wait_synced().await;
    if compute.local_agent {
        match local_agent(&data_dir.join("node"), vec![agents.clone()]) {
            Some((agent, what)) => {
                let name = agent.name().to_owned();
                fleet.add(agent).await?;
                println!("centaurus: node {name} runs {what}");
            }
            None => println!(
                "centaurus: no local node agent: real pods need root and runc (scripts/setup.sh); hollow nodes only"
            ),
        }
    }
    if let Some(bed) = droplets {
        for agent in droplet_agents(data_dir, bed, agents.clone())? {
            let name = agent.name().to_owned();
            fleet.add(agent).await?;
            let what = if QemuRuntime::available(None) {
                "container pods (runc) and VM pods (QEMU)"
            } else {
                "container pods (runc)"
            };
            println!("centaurus: node {name} runs {what} on its droplet");
        }
    }
    if compute.hollow_nodes > 0 {
        for agent in hollow_agents(
            "hollow",
            compute.hollow_nodes,
            Zones::named(compute.zones),
            Duration::from_secs(10),
            vec![agents.clone()],
        ) {
            fleet.add(agent).await?;
        }
        println!(
            "centaurus: {} hollow nodes over {} zones",
            compute.hollow_nodes,
            compute.zones.max(1)
        );
    }
    Ok((fleet, tasks))
}

fn list(pairs: &[(&str, String)]) -> ResourceList {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity::new(v.clone())))
        .collect()
}

/// A runtime of this host's node agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RuntimeKind {
    /// Container pods under runc.
    Runc,
    /// VM pods under QEMU.
    Qemu,
}

/// The node agent of this host with the real runtimes (runc, and QEMU when present) and
/// what it runs; None without root or runc.
pub(crate) fn local_agent(root: &Path, vpc: Vec<Client>) -> Option<(NodeAgent, String)> {
    if !QemuRuntime::available(None) {
        let (agent, what) = local_agent_with(root, vpc, &[RuntimeKind::Runc]).ok()?;
        return Some((
            agent,
            format!("{what}; VM pods need qemu-system-x86 and the kernel from scripts/setup.sh"),
        ));
    }
    local_agent_with(root, vpc, &[RuntimeKind::Runc, RuntimeKind::Qemu]).ok()
}

/// The node agent of this host with `runtimes`, and what it runs; an error names a runtime
/// this host cannot run.
pub(crate) fn local_agent_with(
    root: &Path,
    vpc: Vec<Client>,
    runtimes: &[RuntimeKind],
) -> anyhow::Result<(NodeAgent, String)> {
    let runc = runtimes.contains(&RuntimeKind::Runc);
    if runc && !RuncRuntime::available() {
        anyhow::bail!("container pods need root and runc (scripts/setup.sh)");
    }
    let qemu = if runtimes.contains(&RuntimeKind::Qemu) {
        if !QemuRuntime::available(None) {
            anyhow::bail!(
                "VM pods need qemu-system-x86 and the kernel from scripts/setup.sh, as root"
            );
        }
        Some(Arc::new(QemuRuntime::new(root, None)))
    } else {
        None
    };
    if !runc && qemu.is_none() {
        anyhow::bail!("a node agent needs a runtime: runc, qemu or both");
    }
    if let Some(q) = qemu.clone() {
        // Probe the accelerator now, not when the first VM pod arrives.
        tokio::spawn(async move {
            println!("centaurus: VM pods run under {}", q.accel().await.arg());
        });
    }
    let what = match (runc, qemu.is_some()) {
        (true, true) => "container pods (runc) and VM pods (QEMU)",
        (true, false) => "container pods (runc)",
        (false, _) => "VM pods (QEMU)",
    };
    let vms = if qemu.is_some() { 4 } else { 0 };
    let agent = NodeAgent::new(
        real_node(hostname(), "local", "127.0.0.1".into(), vms),
        runc.then(|| Arc::new(RuncRuntime::new(root)) as Arc<dyn Runtime>),
        qemu.map(|q| q as Arc<dyn Runtime>),
        gated(
            Arc::new(host_bridge(&root.join("network").join("flat"))),
            vpc,
            Some((Wiring::default(), root.join("network").join("vpc"))),
        ),
    );
    Ok((agent, what.into()))
}

/// The configuration of a node with this machine's CPUs, 8 GiB, 110 pods and `vms` VM
/// slots.
fn real_node(name: String, zone: &str, address: String, vms: u32) -> AgentConfig {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    AgentConfig {
        node_name: name,
        zone: zone.into(),
        labels: Default::default(),
        capacity: list(&[
            ("cpu", cpus.to_string()),
            ("memory", "8Gi".into()),
            ("pods", "110".into()),
            ("vm", vms.to_string()),
        ]),
        address,
        heartbeat: Duration::from_secs(10),
        lease_seconds: 40,
    }
}

/// A node agent per droplet (`droplet-{i}`, container pods under runc, and VM pods under
/// QEMU when this machine has it), whose pods' veths (VM guests' taps) have their host
/// side in the droplet, at the droplet's endpoint MTU (with `xdp_pass` on a container
/// pod's side when the droplets run XDP). Pods on flat networks share this machine's
/// bridge.
fn droplet_agents(
    data_dir: &Path,
    bed: &Testbed,
    client: Client,
) -> anyhow::Result<Vec<NodeAgent>> {
    let flat: Arc<dyn NetworkPlugin> =
        Arc::new(host_bridge(&data_dir.join("droplets").join("network-flat")));
    let vms = QemuRuntime::available(None);
    bed.droplets
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let name = format!("droplet-{i}");
            let wiring = droplet_wiring(bed, i)?;
            let root = data_dir.join("droplets").join(&name);
            let ledger = root.join("network");
            Ok(NodeAgent::new(
                real_node(
                    name,
                    "droplets",
                    d.host.ip.to_string(),
                    if vms { 2 } else { 0 },
                ),
                Some(Arc::new(RuncRuntime::new(&root))),
                vms.then(|| Arc::new(QemuRuntime::new(&root, None)) as Arc<dyn Runtime>),
                gated(flat.clone(), vec![client.clone()], Some((wiring, ledger))),
            )
            .with_cluster_dns(crate::cluster_dns::DNS_IP))
        })
        .collect()
}

/// How endpoints on droplet `i` are wired: the host side of their veths in the droplet,
/// at its endpoint MTU, with `xdp_pass` on the endpoint's side when the droplets run XDP.
fn droplet_wiring(bed: &Testbed, i: usize) -> anyhow::Result<Wiring> {
    /// `xdp_pass`, loaded once.
    static PASS: std::sync::OnceLock<Result<Arc<std::os::fd::OwnedFd>, String>> =
        std::sync::OnceLock::new();
    let pod_xdp = if bed.hook == Hook::Xdp {
        let pass = PASS.get_or_init(|| {
            centaurus_xdp::loader::Transit::pass_program()
                .map(Arc::new)
                .map_err(|e| e.to_string())
        });
        Some(pass.clone().map_err(anyhow::Error::msg)?)
    } else {
        None
    };
    Ok(Wiring {
        host_netns: Some(bed.droplets[i].netns.clone()),
        mtu: Some(endpoint_mtu(bed.mtu)),
        pod_xdp,
    })
}

/// The host bridge `cent0` (10.88.0.0/16), recording what it makes under `ledger`.
fn host_bridge(ledger: &Path) -> HostLocalNetwork {
    let net = HostLocalNetwork::new("cent0", Ipv4Addr::new(10, 88, 0, 1));
    match opened(ledger) {
        Some(l) => net.with_ledger(l),
        None => net,
    }
}

/// The attachment ledger at `dir`, or None (with a warning) when it cannot be made.
fn opened(dir: &Path) -> Option<AttachmentLedger> {
    AttachmentLedger::open(dir)
        .map_err(|e| tracing::warn!(dir = %dir.display(), error = %e, "no network ledger: a killed agent's pod networks stay behind"))
        .ok()
}

/// `flat` behind the VPC readiness gate when `vpc` (a client of the region) is given: pods on
/// `vpc` networks start once their endpoint is provisioned, with its address, wired by
/// the wiring given (real nodes), which records what it makes in the ledger beside it.
/// How long a pod waits for its endpoint at a time (then its agent reports why and tries
/// again).
const GATE_TIMEOUT: Duration = Duration::from_secs(60);

fn gated(
    flat: Arc<dyn NetworkPlugin>,
    vpc: Vec<Client>,
    wiring: Option<(Wiring, std::path::PathBuf)>,
) -> Arc<dyn NetworkPlugin> {
    if vpc.is_empty() {
        return flat;
    }
    let (wiring, ledger) = match wiring {
        Some((w, dir)) => (Some(w), opened(&dir)),
        None => (None, None),
    };
    let net = centaurus_runtime::VpcNetwork::across(vpc, flat, wiring, GATE_TIMEOUT);
    Arc::new(match ledger {
        Some(l) => net.with_ledger(l),
        None => net,
    })
}

/// `count` simulated nodes (`{prefix}-{i}`, 32 CPUs, 128 GiB, 110 pods, 8 VMs each) over
/// `zones` zones, renewing their leases every `heartbeat`, reading their pods' endpoints
/// through `vpc` (none: no VPC plane).
pub(crate) fn hollow_agents(
    prefix: &str,
    count: usize,
    zones: Zones<'_>,
    heartbeat: Duration,
    vpc: Vec<Client>,
) -> Vec<NodeAgent> {
    let runtime: Arc<dyn Runtime> = Arc::new(HollowRuntime::default());
    // The fleet's identity may watch every endpoint: its pods wait on that watch.
    let network: Arc<dyn NetworkPlugin> = if vpc.is_empty() {
        Arc::new(NoNetwork::new(Ipv4Addr::new(10, 244, 0, 0)))
    } else {
        Arc::new(
            centaurus_runtime::VpcNetwork::across(
                vpc,
                Arc::new(NoNetwork::new(Ipv4Addr::new(10, 244, 0, 0))),
                None,
                GATE_TIMEOUT,
            )
            .watching_endpoints(),
        )
    };
    (0..count)
        .map(|i| hollow_agent(prefix, i, zones, heartbeat, &runtime, network.clone()))
        .collect()
}

/// The name of hollow node `i` of `prefix`.
pub(crate) fn hollow_name(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i}")
}

/// The zones hollow nodes are spread over: `{prefix}-a`, `{prefix}-b`, ...
#[derive(Clone, Copy, Debug)]
pub(crate) struct Zones<'a> {
    /// How many.
    pub count: usize,
    /// Their names' prefix (`zone`; a resource partition's name, say).
    pub prefix: &'a str,
}

impl Zones<'_> {
    /// The `count` zones named `zone-a`, `zone-b`, ...
    pub(crate) fn named(count: usize) -> Zones<'static> {
        Zones {
            count,
            prefix: "zone",
        }
    }

    /// The zone of node `i`.
    fn of(&self, i: usize) -> String {
        format!(
            "{}-{}",
            self.prefix,
            (b'a' + (i % self.count.max(1)) as u8) as char
        )
    }
}

/// How long a lease renewed every `heartbeat` stays valid: four heartbeats, as a
/// kubelet's 40 s lease renewed every 10 s.
fn lease_seconds(heartbeat: Duration) -> i32 {
    i32::try_from(heartbeat.as_secs().saturating_mul(4)).unwrap_or(i32::MAX)
}

/// Hollow node `i` of `prefix` (see [`hollow_agents`]).
fn hollow_agent(
    prefix: &str,
    i: usize,
    zones: Zones<'_>,
    heartbeat: Duration,
    runtime: &Arc<dyn Runtime>,
    network: Arc<dyn NetworkPlugin>,
) -> NodeAgent {
    // Fleets of other prefixes get other addresses (in 198.18.0.0/15).
    let block = if prefix == "hollow" {
        0
    } else {
        1 + centaurus_core::ring::stable_hash(prefix.as_bytes()) as usize % 250
    };
    NodeAgent::new(
        AgentConfig {
            node_name: hollow_name(prefix, i),
            zone: zones.of(i),
            labels: [(model::LABEL_HOLLOW.to_string(), "true".to_string())].into(),
            capacity: list(&[
                ("cpu", "32".into()),
                ("memory", "128Gi".into()),
                ("pods", "110".into()),
                ("vm", "8".into()),
            ]),
            address: format!(
                "198.{}.{}.{}",
                18 + (block + i / 250) / 256,
                (block + i / 250) % 256,
                i % 250 + 1
            ),
            heartbeat,
            lease_seconds: lease_seconds(heartbeat),
        },
        Some(runtime.clone()),
        Some(runtime.clone()),
        network,
    )
}

/// What `centaurus agent` runs: this host's node and/or hollow nodes, and the endpoint
/// the API servers fetch their pods' logs from.
pub(crate) struct AgentProcess<'a> {
    /// How the nodes authenticate.
    pub credentials: AgentCredentials,
    /// Simulated nodes.
    pub hollow: usize,
    /// Zones they are spread over.
    pub zones: Zones<'a>,
    /// Their name prefix.
    pub prefix: &'a str,
    /// How often the hollow nodes renew their leases (valid for four of these).
    pub heartbeat: Duration,
    /// This host's node, with its workloads under this directory, and its runtimes (none:
    /// runc, and QEMU when present).
    pub local: Option<(&'a Path, &'a [RuntimeKind])>,
    /// Where the endpoint listens.
    pub serve: std::net::SocketAddr,
    /// The address the API servers reach it at when `serve` is unspecified (`0.0.0.0`).
    pub advertise: &'a str,
    /// In a partitioned region, where the pods are: the servers and CA of each tenant
    /// partition (the nodes use their own identity there); empty, with the Nodes.
    pub tenants: Vec<Kubeconfig>,
}

/// Clients of the tenant partitions `tenants` as `user`.
fn tenant_clients(tenants: &[Kubeconfig], user: &KubeUser) -> anyhow::Result<Vec<Client>> {
    tenants
        .iter()
        .map(|k| {
            let mut k = k.clone();
            for u in &mut k.users {
                u.user = user.clone();
            }
            Ok(Client::new(k.connection()?)?)
        })
        .collect()
}

/// The identities of an agent process' nodes.
pub(crate) enum AgentCredentials {
    /// One kubeconfig: this host's node alone (`system:node:NAME`), or a fleet identity
    /// for every node; its client and its user.
    Shared(Client, KubeUser),
    /// Each node joins with this bootstrap kubeconfig and runs as its own identity; this
    /// host's node keeps its credentials in the file.
    Join {
        bootstrap: Kubeconfig,
        local_kubeconfig: PathBuf,
    },
}

/// Hollow nodes of one agent process that join (or register) at once.
const CONCURRENT_JOINS: usize = 32;

/// `centaurus agent`: node agents as clients of the API: `hollow` simulated nodes named
/// `{prefix}-{i}` over `zones`, and this host's agent with the real runtimes when `local`
/// names its root, with the endpoint their logs are read from. Runs until Ctrl-C or
/// SIGTERM, then stops the workloads of this host (its pods stay bound and start again
/// with the next agent).
pub(crate) async fn agents(region_ca: &[u8], a: AgentProcess<'_>) -> anyhow::Result<()> {
    let endpoint = AgentEndpoint::bind(a.serve, a.advertise, region_ca).await?;
    let published = endpoint.published();
    let mut fleets: Vec<Arc<Fleet>> = Vec::new();
    let mut tasks = Vec::new();
    // A fleet of its own for each node that has its own identity.
    let start = |client: Client, user: &KubeUser, node: Option<&str>| {
        let fleet = match (node, a.tenants.is_empty()) {
            (Some(n), true) => Fleet::for_node(client, n),
            (None, true) => Fleet::new(client),
            (node, false) => Fleet::partitioned(client, tenant_clients(&a.tenants, user)?, node),
        };
        fleet.publish_endpoint(published.clone());
        anyhow::Ok(fleet)
    };
    let local = match a.local {
        Some((root, runtimes)) => {
            std::fs::create_dir_all(root)?;
            let root = std::fs::canonicalize(root)?;
            let (client, user) = match &a.credentials {
                AgentCredentials::Shared(c, user) => (c.clone(), user.clone()),
                AgentCredentials::Join {
                    bootstrap,
                    local_kubeconfig,
                } => {
                    let client =
                        crate::components::joined(bootstrap, &hostname(), local_kubeconfig).await?;
                    let user = Kubeconfig::load(local_kubeconfig)?.users[0].user.clone();
                    (client, user)
                }
            };
            // Pods' endpoints are where their tenants are.
            let vpc = if a.tenants.is_empty() {
                vec![client.clone()]
            } else {
                tenant_clients(&a.tenants, &user)?
            };
            let (agent, what) = if runtimes.is_empty() {
                local_agent(&root, vpc)
                    .context("this host's agent needs root and runc (scripts/setup.sh)")?
            } else {
                local_agent_with(&root, vpc, runtimes)?
            };
            Some((client, user, agent, what))
        }
        None => None,
    };
    let shared = match &a.credentials {
        AgentCredentials::Shared(c, user) if a.hollow > 0 => Some(start(c.clone(), user, None)?),
        _ => None,
    };
    if let Some((client, user, agent, what)) = local {
        // This host's agent alone runs as its node; beside hollow nodes, with the fleet.
        let fleet = match &shared {
            Some(f) => f.clone(),
            None => start(client, &user, Some(&hostname()))?,
        };
        tasks.push(tokio::spawn(fleet.clone().run()));
        fleet.wait_synced().await;
        let name = agent.name().to_owned();
        fleet.add(agent).await?;
        println!("centaurus agent: node {name} runs {what}");
        if shared.is_none() {
            fleets.push(fleet);
        }
    }
    if let Some(fleet) = &shared {
        if a.local.is_none() {
            tasks.push(tokio::spawn(fleet.clone().run()));
            fleet.wait_synced().await;
        }
        fleets.push(fleet.clone());
    }
    let heartbeat = a.heartbeat;
    let identities = if shared.is_some() {
        "the fleet's identity"
    } else {
        "an identity each"
    };
    match (&shared, &a.credentials) {
        (Some(fleet), AgentCredentials::Shared(client, user)) => {
            let vpc = if a.tenants.is_empty() {
                vec![client.clone()]
            } else {
                tenant_clients(&a.tenants, user)?
            };
            use futures::StreamExt as _;
            // Registering a node is a few round trips: a few nodes at a time.
            let mut adding =
                futures::stream::iter(hollow_agents(a.prefix, a.hollow, a.zones, heartbeat, vpc))
                    .map(|agent| fleet.add(agent))
                    .buffer_unordered(CONCURRENT_JOINS);
            while let Some(added) = adding.next().await {
                added?;
            }
        }
        (_, AgentCredentials::Join { bootstrap, .. }) => {
            use futures::StreamExt as _;
            let runtime: Arc<dyn Runtime> = Arc::new(HollowRuntime::default());
            let process = &a;
            let join = |i: usize| {
                let (runtime, start, a) = (runtime.clone(), &start, process);
                async move {
                    let name = hollow_name(a.prefix, i);
                    let config = crate::components::join_kubeconfig(bootstrap, &name).await?;
                    let client = Client::new(config.connection()?)?;
                    let vpc = if a.tenants.is_empty() {
                        vec![client.clone()]
                    } else {
                        tenant_clients(&a.tenants, &config.users[0].user)?
                    };
                    let network = gated(
                        Arc::new(NoNetwork::new(Ipv4Addr::new(10, 244, 0, 0))),
                        vpc,
                        None,
                    );
                    let fleet = start(client, &config.users[0].user, Some(&name))?;
                    let task = tokio::spawn(fleet.clone().run());
                    fleet.wait_synced().await;
                    fleet
                        .add(hollow_agent(
                            a.prefix, i, a.zones, heartbeat, &runtime, network,
                        ))
                        .await?;
                    anyhow::Ok((fleet, task))
                }
            };
            // Nodes join a few at a time: each join is a round trip and a store write.
            let mut joining = futures::stream::iter(0..a.hollow)
                .map(join)
                .buffer_unordered(CONCURRENT_JOINS);
            while let Some(joined) = joining.next().await {
                let (fleet, task) = joined?;
                tasks.push(task);
                fleets.push(fleet);
            }
        }
        (None, AgentCredentials::Shared(..)) => {}
    }
    if a.hollow > 0 {
        println!(
            "centaurus agent: {} hollow nodes {}-0.. over {} zones, with {identities}",
            a.hollow,
            a.prefix,
            a.zones.count.max(1)
        );
    }
    let served = tokio::spawn(endpoint.serve(
        Arc::new(FleetStreams(fleets.clone())),
        std::future::pending(),
    ));
    println!("centaurus agent: serving pod logs at {}", published.url);
    let stopped = crate::components::until_stopped().await;
    for f in &fleets {
        f.shutdown().await;
    }
    for t in tasks {
        t.abort();
    }
    served.abort();
    stopped
}
