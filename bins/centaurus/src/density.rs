//! `centaurus density`: pod startup latency and scheduling throughput of an in-process
//! region (embedded store, scheduler, node agents), and the cost of node heartbeats.
//!
//! Every component is a client of an in-process API server (the in-process transport, as
//! in `centaurus up`), and pods are created through it as a controller would create them
//! (the cost of HTTPS is what `centaurusctl load` measures). Startup latency runs from just before a pod's create to
//! the moment a watch sees it `Ready` (with `--no-agents`: bound to a node). Two phases:
//! *saturation* creates every pod at once and reports pods per second; *latency* creates
//! pods at `--rate` per second and reports p50/p99, as Kubernetes' density tests do.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use centaurus_api::region;
use centaurus_client::{Api, Client};
use centaurus_core::controller::WatchEvent;
use centaurus_core::model::{
    Container, LABEL_ZONE, Node, NodeInfo, NodeStatus, ObjectMeta, Pod, PodSpec, Quantity,
    Resource, ResourceRequirements, VirtualMachine, node_ready_condition,
};
use centaurus_core::store::{RedbStore, Store};
use centaurus_runtime::Fleet;
use centaurus_sched::scheduler::mean_decision;
use centaurus_sched::{Scheduler, SchedulerConfig};
use centaurus_tenancy::{Identity, identity};
use futures::StreamExt;

/// What runs the pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Hollow nodes: pods go Running at once.
    Hollow,
    /// Container pods under runc on this host's node agent.
    Container,
    /// VM pods under QEMU on this host's node agent.
    Vm,
}

/// A density run.
#[derive(clap::Args)]
pub struct Density {
    /// Nodes: hollow agents, or Node objects only with --no-agents.
    #[arg(long, default_value_t = 1_000)]
    pub nodes: usize,
    /// Availability zones.
    #[arg(long, default_value_t = 3)]
    pub zones: usize,
    /// Pods created at once (saturation phase; 0 skips it).
    #[arg(long, default_value_t = 10_000)]
    pub pods: usize,
    /// Pods created at --rate (latency phase; 0 skips it).
    #[arg(long, default_value_t = 2_000)]
    pub latency_pods: usize,
    /// Creation rate of the latency phase, pods per second.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// hollow, container (runc) or vm (QEMU); real workloads run on this host's agent.
    #[arg(long, value_enum, default_value = "hollow")]
    pub workload: Workload,
    /// Register Node objects without agents: creation → bound measures the scheduler.
    #[arg(long)]
    pub no_agents: bool,
    /// Node heartbeat period, seconds.
    #[arg(long, default_value_t = 10)]
    pub heartbeat: u64,
    /// Before the pods, measure the heartbeat cost for this many seconds.
    #[arg(long)]
    pub soak: Option<u64>,
    /// Record no events (the scheduler's and the agents'), to measure what they cost.
    #[arg(long)]
    pub no_events: bool,
    /// Run the VPC plane as `up` does (the operator on the simulated dataplane and the
    /// network controller): each hollow pod starts once its Endpoint is provisioned.
    #[arg(long)]
    pub vpc: bool,
}

/// Creation instants and startup latencies of the pods of one phase.
#[derive(Default)]
struct Tracker {
    begin: Option<Instant>,
    created: HashMap<String, Instant>,
    started: HashMap<String, Duration>,
    last: Option<Instant>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// CPU time (user + system) of this process.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn pod(name: &str, workload: Workload) -> Pod {
    pod_in("system", "density", name, workload)
}

/// A pod of the benchmarks, `name` in `tenant`'s `namespace`, with small requests.
pub(crate) fn pod_in(tenant: &str, namespace: &str, name: &str, workload: Workload) -> Pod {
    let mut p = Pod::typed(ObjectMeta::namespaced(tenant, namespace, name));
    p.metadata.labels.insert("app".into(), "density".into());
    let requests = |cpu: &str, mem: &str| ResourceRequirements {
        requests: [
            ("cpu".to_string(), Quantity::new(cpu)),
            ("memory".to_string(), Quantity::new(mem)),
        ]
        .into(),
        ..Default::default()
    };
    p.spec = match workload {
        Workload::Vm => PodSpec {
            virtual_machine: Some(VirtualMachine {
                name: "vm".into(),
                image: "tiny".into(),
                resources: requests("100m", "128Mi"),
                ..Default::default()
            }),
            ..Default::default()
        },
        _ => PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: "busybox".into(),
                command: vec!["sleep".into(), "3600".into()],
                resources: requests("10m", "16Mi"),
                ..Default::default()
            }],
            ..Default::default()
        },
    };
    p
}

/// A Ready node object with no agent behind it.
fn bare_node(i: usize, zones: usize) -> Node {
    let mut n = Node::typed(ObjectMeta::named(format!("bare-{i}")));
    n.metadata
        .labels
        .insert(LABEL_ZONE.into(), format!("zone-{}", i % zones.max(1)));
    n.status = Some(NodeStatus {
        allocatable: [
            ("cpu", "32"),
            ("memory", "128Gi"),
            ("pods", "110"),
            ("vm", "8"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity::new(*v)))
        .collect(),
        conditions: vec![node_ready_condition(
            "True",
            "Bare",
            "a node object without an agent",
        )],
        node_info: NodeInfo {
            workload_types: vec!["container".into(), "vm".into()],
            ..Default::default()
        },
        ..Default::default()
    });
    n
}

/// Whether the pod counts as started.
pub(crate) fn started(p: &Pod, bound_only: bool) -> bool {
    if bound_only {
        return !p.spec.node_name.is_empty();
    }
    p.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// Runs the benchmark in `dir` (a fresh store) and prints its figures.
pub async fn run(dir: &Path, d: Density) -> anyhow::Result<()> {
    let store: Arc<dyn Store> =
        Arc::new(RedbStore::open(dir.join("store.redb")).context("opening the density store")?);
    let local = region::LocalRegion::start(store.clone(), dir).await?;
    local
        .space(centaurus_core::model::SYSTEM_TENANT, "density")
        .await?;
    let client = |id: Identity| local.client(id);
    let admin = local.admin();
    let scheduler = Arc::new(Scheduler::new(
        client(identity::SCHEDULER.identity()),
        SchedulerConfig {
            events: !d.no_events,
            ..SchedulerConfig::default()
        },
    ));
    let (stats, cluster) = (scheduler.stats(), scheduler.cluster());
    let mut tasks = vec![tokio::spawn(scheduler.run())];
    let agents = client(identity::NODE_FLEET.identity());
    let fleet = Fleet::new(agents.clone());
    if d.no_events {
        fleet.disable_events();
    }
    tasks.push(tokio::spawn(fleet.clone().run()));
    fleet.wait_synced().await;

    if d.vpc {
        tasks.extend(crate::up::start_network(
            &|c: identity::Component| client(c.identity()),
            None,
            dir,
            (Arc::new(centaurus_vpc::SimDataplane::new()), "simulated"),
            ("vpc-operator-0", centaurus_core::controller::Share::all()),
        )?);
    }
    let registering = Instant::now();
    let rss0 = rss_mib();
    match (d.workload, d.no_agents) {
        (Workload::Hollow, true) => {
            let nodes = admin.api::<Node>();
            let sem = Arc::new(tokio::sync::Semaphore::new(64));
            let mut set = tokio::task::JoinSet::new();
            for i in 0..d.nodes {
                let (nodes, permit) = (nodes.clone(), sem.clone().acquire_owned().await?);
                let node = bare_node(i, d.zones);
                set.spawn(async move {
                    let r = nodes.create(node).await;
                    drop(permit);
                    r
                });
            }
            while let Some(r) = set.join_next().await {
                r??;
            }
        }
        (Workload::Hollow, false) => {
            let vpc = if d.vpc { vec![agents.clone()] } else { vec![] };
            for agent in crate::up::hollow_agents(
                "hollow",
                d.nodes,
                crate::up::Zones::named(d.zones),
                Duration::from_secs(d.heartbeat),
                vpc,
            ) {
                fleet.add(agent).await?;
            }
        }
        (_, true) => anyhow::bail!("--no-agents applies to hollow pods only"),
        (_, false) => {
            let (agent, what) = crate::up::local_agent(&dir.join("node"), vec![]).context(
                "real pods need root and runc (and QEMU and the VM kernel for VM pods): run scripts/setup.sh as root",
            )?;
            println!("density: node {} runs {what}", agent.name());
            fleet.add(agent).await?;
        }
    }
    let nodes_registered = registering.elapsed();
    println!(
        "density: {} nodes registered in {:.2} s ({}; {:.0} MiB -> {:.0} MiB RSS)",
        if d.workload == Workload::Hollow {
            d.nodes
        } else {
            1
        },
        nodes_registered.as_secs_f64(),
        if d.no_agents {
            "Node objects, no agents"
        } else {
            "agents with leases"
        },
        rss0,
        rss_mib()
    );
    // Let the scheduler see every node.
    let expected = if d.workload == Workload::Hollow {
        d.nodes
    } else {
        1
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen = cluster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .node_count();
        if seen >= expected || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    if let Some(soak) = d.soak.map(Duration::from_secs) {
        let (cpu_before, rss_before, t0) = (cpu_time(), rss_mib(), Instant::now());
        let rev0 = store.revision().await?;
        tokio::time::sleep(soak).await;
        let wall = t0.elapsed();
        let cpu = cpu_time().saturating_sub(cpu_before);
        let writes = store.revision().await? - rev0;
        println!(
            "heartbeat: {} nodes every {}s for {:.0} s: {:.1}% of one core ({:.3} ms CPU per renewal), {:.0} store writes/s, RSS {:.0} MiB (+{:.0} MiB)",
            d.nodes,
            d.heartbeat,
            wall.as_secs_f64(),
            cpu.as_secs_f64() / wall.as_secs_f64() * 100.0,
            cpu.as_secs_f64() * 1e3 / (writes.max(1) as f64),
            writes as f64 / wall.as_secs_f64(),
            rss_mib(),
            rss_mib() - rss_before,
        );
    }

    if d.pods > 0 {
        let t = phase(&admin, &d, "saturation", d.pods, None).await?;
        report(&t, "saturation", d.pods);
    }
    if d.latency_pods > 0 {
        let t = phase(&admin, &d, "latency", d.latency_pods, Some(d.rate)).await?;
        report(&t, &format!("latency at {} pods/s", d.rate), d.latency_pods);
    }
    println!(
        "scheduler: {} bound, {} conflicts, {} unschedulable attempts, mean decision {:.1} µs",
        stats.bound.load(Ordering::Relaxed),
        stats.conflicts.load(Ordering::Relaxed),
        stats.unschedulable.load(Ordering::Relaxed),
        mean_decision(&stats).as_secs_f64() * 1e6
    );
    report_store(&*store, d.pods + d.latency_pods).await?;
    // Real workloads stop with the run.
    if d.workload != Workload::Hollow {
        let pods = admin.api::<Pod>();
        for p in pods.list("/registry/pods/").await? {
            let _ = pods.delete(&p.key(), None).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    fleet.shutdown().await;
    for t in tasks {
        t.abort();
    }
    Ok(())
}

/// Creates `count` pods (all at once, or at `rate` per second) and waits until each started.
async fn phase(
    client: &Client,
    d: &Density,
    name: &str,
    count: usize,
    rate: Option<f64>,
) -> anyhow::Result<Tracker> {
    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let bound_only = d.no_agents;
    let pods: Api<Pod> = client.api();
    let now = pods.list_page("/registry/pods/", 1, None).await?.revision;
    let watcher = {
        let (tracker, pods) = (tracker.clone(), pods.clone());
        tokio::spawn(async move {
            let seen = |p: &Pod| {
                if !started(p, bound_only) {
                    return;
                }
                let now = Instant::now();
                let mut t = tracker.lock().unwrap_or_else(|e| e.into_inner());
                if t.started.contains_key(&p.metadata.name) {
                    return;
                }
                if let Some(c) = t.created.get(&p.metadata.name).copied() {
                    t.started.insert(p.metadata.name.clone(), now - c);
                    t.last = Some(now);
                }
            };
            let mut from = now;
            loop {
                if let Ok(mut events) = pods.watch("/registry/pods/", from).await {
                    while let Some(Ok(ev)) = events.next().await {
                        if let WatchEvent::Put(p) = ev {
                            seen(&p);
                        }
                    }
                }
                // The watch ended (it fell behind, say): list what started meanwhile, as
                // an informer would, and watch on from there.
                let mut next = None;
                loop {
                    let Ok(page) = pods.list_page("/registry/pods/", 1000, next).await else {
                        break;
                    };
                    page.items.iter().for_each(&seen);
                    from = page.revision;
                    match page.next {
                        Some(n) => next = Some(n),
                        None => break,
                    }
                }
            }
        })
    };
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut set = tokio::task::JoinSet::new();
    let begin = Instant::now();
    for i in 0..count {
        if let Some(r) = rate {
            let due = begin + Duration::from_secs_f64(i as f64 / r);
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = sem.clone().acquire_owned().await?;
        let (pods, tracker) = (pods.clone(), tracker.clone());
        let p = pod(&format!("{name}-{i}"), d.workload);
        set.spawn(async move {
            tracker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .created
                .insert(p.metadata.name.clone(), Instant::now());
            let r = pods.create(p).await;
            drop(permit);
            r
        });
        while let Some(r) = set.try_join_next() {
            r??;
        }
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let timeout = Duration::from_secs(60) + Duration::from_millis(count as u64 * 20);
    wait_for(name, "started", count, timeout, || {
        tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .started
            .len()
    })
    .await;
    watcher.abort();
    let mut t = std::mem::take(&mut *tracker.lock().unwrap_or_else(|e| e.into_inner()));
    t.begin = Some(begin);
    Ok(t)
}

/// Waits until `count()` pods reached `want` (looking every 50 ms), or says how many did
/// within `timeout`.
pub(crate) async fn wait_for(
    phase: &str,
    what: &str,
    want: usize,
    timeout: Duration,
    count: impl Fn() -> usize,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let n = count();
        if n >= want {
            return;
        }
        if Instant::now() > deadline {
            println!("{phase}: only {n} of {want} pods {what} within {timeout:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the pods and their events take in the store: objects and bytes, per pod.
async fn report_store(store: &dyn Store, pods: usize) -> anyhow::Result<()> {
    // Events are written in the background: let the last ones land.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let per_pod = |n: usize| n as f64 / pods.max(1) as f64;
    let mut line = String::from("store:");
    for plural in ["pods", "events"] {
        let kvs = centaurus_core::store::range_all(store, &format!("/registry/{plural}/"))
            .await?
            .kvs;
        let bytes: usize = kvs.iter().map(|kv| kv.key.len() + kv.value.len()).sum();
        line.push_str(&format!(
            " {} {plural} ({:.2} per pod, {:.0} B per pod);",
            kvs.len(),
            per_pod(kvs.len()),
            per_pod(bytes)
        ));
    }
    println!("{}", line.trim_end_matches(';'));
    Ok(())
}

fn report(t: &Tracker, phase: &str, count: usize) {
    let begin = t.begin.unwrap_or_else(Instant::now);
    let mut lat: Vec<Duration> = t.started.values().copied().collect();
    lat.sort();
    let span = t
        .last
        .map_or(Duration::ZERO, |l| l.saturating_duration_since(begin));
    println!(
        "{phase}: {} of {count} pods started {}",
        lat.len(),
        startup_figures(&lat, span)
    );
}

/// `in S s (R pods/s); startup p50 .. p90 .. p99 .. max ..` of the sorted startup
/// latencies `sorted` of pods that started within `span`.
pub(crate) fn startup_figures(sorted: &[Duration], span: Duration) -> String {
    format!(
        "in {:.2} s ({:.0} pods/s); startup p50 {} p90 {} p99 {} max {}",
        span.as_secs_f64(),
        sorted.len() as f64 / span.as_secs_f64().max(1e-9),
        ms(percentile(sorted, 0.50)),
        ms(percentile(sorted, 0.90)),
        ms(percentile(sorted, 0.99)),
        ms(sorted.last().copied().unwrap_or_default()),
    )
}
