//! `centaurus region-density`: the figures of a running partitioned region (`centaurus
//! region`), taken from outside as its users see it. Pods are created through the front
//! door in tenants it placed on the tenant partitions, and followed by a watch at each
//! tenant partition. Three phases:
//! - *front door*: GETs through the front door and straight at a tenant partition,
//!   alternately, one at a time: the front door's added latency;
//! - *saturation*: pods created at once: scheduling throughput per tenant partition;
//! - *latency*: pods created at `--rate`: pod startup p50/p99 and the API calls' p99
//!   meanwhile (the creates, and GETs beside them).
//!
//! It ends with the resident memory of every process of the region, per node.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use centaurus_client::kubeconfig::Kubeconfig;
use centaurus_client::load::VerbStats;
use centaurus_client::{Api, Client};
use centaurus_core::controller::WatchEvent;
use centaurus_core::model::{self, Namespace, Node, ObjectMeta, Pod, Resource, Tenant};
use futures::StreamExt;

use crate::density::{Workload, pod_in, started, startup_figures, wait_for};
use crate::region::RegionFile;

/// A density run against a running region.
#[derive(clap::Args)]
pub struct RegionDensity {
    /// The region's directory (`centaurus region --data-dir`): its `region.json`.
    #[arg(long, default_value = "./centaurus-region")]
    pub data_dir: PathBuf,
    /// Tenants the pods are spread over, created through the front door (which places
    /// each on the tenant partition holding the fewest).
    #[arg(long, default_value_t = 2)]
    pub tenants: usize,
    /// GETs of the front door phase (as many again straight at a tenant partition).
    #[arg(long, default_value_t = 2_000)]
    pub requests: usize,
    /// Pods created at once (saturation phase; 0 skips it).
    #[arg(long, default_value_t = 10_000)]
    pub pods: usize,
    /// Pods created at --rate (latency phase; 0 skips it).
    #[arg(long, default_value_t = 20_000)]
    pub latency_pods: usize,
    /// Creation rate of the latency phase, pods per second.
    #[arg(long, default_value_t = 300.0)]
    pub rate: f64,
    /// Creates in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Keep the tenants (and their pods) afterwards.
    #[arg(long)]
    pub keep: bool,
}

fn client_of(kubeconfig: &std::path::Path) -> anyhow::Result<Client> {
    let config = Kubeconfig::load(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    Ok(Client::new(config.connection()?)?)
}

/// What was seen of one pod.
struct Seen {
    created: Instant,
    bound: Option<(Instant, usize)>,
    ready: Option<Instant>,
}

/// The pods of the run, by `tenant/name`.
#[derive(Default)]
struct Tracker {
    pods: HashMap<String, Seen>,
}

impl Tracker {
    fn saw(&mut self, p: &Pod, partition: usize) {
        let key = format!("{}/{}", p.metadata.tenant, p.metadata.name);
        let Some(seen) = self.pods.get_mut(&key) else {
            return;
        };
        let now = Instant::now();
        if seen.bound.is_none() && started(p, true) {
            seen.bound = Some((now, partition));
        }
        if seen.ready.is_none() && started(p, false) {
            seen.ready = Some(now);
        }
    }
}

/// Follows the pods of `tenants` in one tenant partition into `tracker`, listing again
/// whenever the watch ends.
fn follow(
    pods: Api<Pod>,
    partition: usize,
    tenants: Arc<HashSet<String>>,
    tracker: Arc<Mutex<Tracker>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let see = |p: &Pod| {
            if tenants.contains(&p.metadata.tenant) {
                tracker
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .saw(p, partition);
            }
        };
        loop {
            let mut from = None;
            let mut next = None;
            loop {
                let Ok(page) = pods.list_page("/registry/pods/", 1000, next).await else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                };
                page.items.iter().for_each(see);
                from.get_or_insert(page.revision);
                match page.next {
                    Some(n) => next = Some(n),
                    None => break,
                }
            }
            let Some(from) = from else { continue };
            if let Ok(mut events) = pods.watch("/registry/pods/", from).await {
                while let Some(Ok(ev)) = events.next().await {
                    if let WatchEvent::Put(p) = ev {
                        see(&p);
                    }
                }
            }
        }
    })
}

/// The resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

/// Runs the phases against the region in `d.data_dir` and prints their figures.
pub async fn run(d: RegionDensity) -> anyhow::Result<()> {
    anyhow::ensure!(d.tenants > 0, "--tenants must be at least 1");
    let region = RegionFile::load(&d.data_dir)?;
    let door = client_of(&region.gateway.admin_kubeconfig)?;
    let mut tps = Vec::new();
    let mut nodes = 0;
    for p in &region.partitions {
        let client = client_of(&p.admin_kubeconfig)?;
        match p.role.as_str() {
            "tenant" => tps.push((p.name.clone(), client)),
            _ => {
                let (all, ready) = count_nodes(&client.api::<Node>()).await?;
                println!("{}: {all} nodes, {ready} Ready", p.name);
                nodes += all;
            }
        }
    }
    anyhow::ensure!(!tps.is_empty(), "the region has no tenant partition");

    // Tenants through the front door; where each landed.
    // Names of this run, so runs on one region do not collide.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() % 100_000);
    let tenants: Vec<String> = (0..d.tenants)
        .map(|i| format!("density-{run}-{i}"))
        .collect();
    let mut home = HashMap::new();
    for t in &tenants {
        door.api::<Tenant>()
            .create(Tenant::typed(ObjectMeta::named(t)))
            .await
            .with_context(|| format!("creating tenant {t} through the front door"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let key = model::object_key("namespaces", Namespace::SCOPE, t, "", "default");
        let at = loop {
            let mut found = None;
            for (i, (_, c)) in tps.iter().enumerate() {
                if c.api::<Namespace>().get(&key).await?.is_some() {
                    found = Some(i);
                }
            }
            match found {
                Some(i) => break i,
                None if Instant::now() > deadline => {
                    anyhow::bail!("tenant {t} has no default namespace after 30 s")
                }
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        println!("tenant {t} is on {}", tps[at].0);
        home.insert(t.clone(), at);
    }

    if d.requests > 0 {
        front_door(&door, &tps[home[&tenants[0]]], &tenants[0], d.requests).await?;
    }

    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let watched = Arc::new(tenants.iter().cloned().collect::<HashSet<_>>());
    let watchers: Vec<_> = tps
        .iter()
        .enumerate()
        .map(|(i, (_, c))| follow(c.api(), i, watched.clone(), tracker.clone()))
        .collect();
    let names: Vec<&str> = tps.iter().map(|(n, _)| n.as_str()).collect();
    let phases = [
        ("saturation", d.pods, None),
        ("latency", d.latency_pods, Some(d.rate)),
    ];
    for (name, count, rate) in phases {
        if count > 0 {
            phase(&door, &d, &tenants, &tracker, &names, name, count, rate).await?;
        }
    }
    for w in watchers {
        w.abort();
    }

    let mut total = 0;
    println!("resident memory ({nodes} nodes):");
    for p in &region.processes {
        let Some(bytes) = rss(p.pid) else {
            println!("  {:<24} gone", p.name);
            continue;
        };
        total += bytes;
        println!("  {:<24} {:>8.1} MiB", p.name, bytes as f64 / 1048576.0);
    }
    println!(
        "  {:<24} {:>8.1} MiB ({:.1} KiB per node)",
        "all",
        total as f64 / 1048576.0,
        total as f64 / 1024.0 / nodes.max(1) as f64
    );
    if !d.keep {
        for t in &tenants {
            let key = model::object_key("tenants", Tenant::SCOPE, "", "", t);
            if let Err(e) = door.api::<Tenant>().delete(&key, None).await {
                println!("tenant {t} not deleted: {e}");
            }
        }
    }
    Ok(())
}

/// The nodes of a resource partition, and how many of them are Ready.
async fn count_nodes(nodes: &Api<Node>) -> anyhow::Result<(usize, usize)> {
    let (mut all, mut ready, mut next) = (0, 0, None);
    loop {
        let page = nodes.list_page("/registry/nodes/", 5000, next).await?;
        all += page.items.len();
        ready += page
            .items
            .iter()
            .filter(|n| {
                n.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count();
        match page.next {
            Some(n) => next = Some(n),
            None => return Ok((all, ready)),
        }
    }
}

/// GETs of `tenant`'s default namespace through the front door and straight at its
/// tenant partition, alternately, one at a time.
async fn front_door(
    door: &Client,
    (tp, direct): &(String, Client),
    tenant: &str,
    requests: usize,
) -> anyhow::Result<()> {
    let key = model::object_key("namespaces", Namespace::SCOPE, tenant, "", "default");
    let (mut via, mut straight) = (Vec::new(), Vec::new());
    let (mut via_errors, mut straight_errors) = (0, 0);
    let begin = Instant::now();
    for _ in 0..requests {
        for (client, lat, errors) in [
            (door, &mut via, &mut via_errors),
            (direct, &mut straight, &mut straight_errors),
        ] {
            let t = Instant::now();
            match client.api::<Namespace>().get(&key).await {
                Ok(Some(_)) => lat.push(t.elapsed()),
                _ => *errors += 1,
            }
        }
    }
    let elapsed = begin.elapsed();
    let via = VerbStats::of("door", via, via_errors, elapsed);
    let straight = VerbStats::of(format!("at {tp}"), straight, straight_errors, elapsed);
    println!("front door: {requests} GETs each way, one at a time");
    println!("  {via}");
    println!("  {straight}");
    let added = |a: Duration, b: Duration| (a.as_secs_f64() - b.as_secs_f64()) * 1e3;
    println!(
        "  added by the front door: p50 {:+.2} ms p99 {:+.2} ms",
        added(via.p50, straight.p50),
        added(via.p99, straight.p99)
    );
    Ok(())
}

/// Creates `count` pods over the tenants through the front door (all at once, or at
/// `rate` per second), with a GET beside them every 50 ms, waits until each is Ready, and
/// prints the figures.
#[allow(clippy::too_many_arguments)]
async fn phase(
    door: &Client,
    d: &RegionDensity,
    tenants: &[String],
    tracker: &Arc<Mutex<Tracker>>,
    partitions: &[&str],
    name: &str,
    count: usize,
    rate: Option<f64>,
) -> anyhow::Result<()> {
    let pods: Api<Pod> = door.api();
    let sem = Arc::new(tokio::sync::Semaphore::new(d.concurrency.max(1)));
    let creates = Arc::new(Mutex::new((Vec::with_capacity(count), 0usize)));
    let mut set = tokio::task::JoinSet::new();
    // Reads beside the creates, until the phase ends: a created pod, through the front door.
    let reading = Arc::new(AtomicBool::new(true));
    let reader = {
        let (pods, tenants, reading) = (pods.clone(), tenants.to_vec(), reading.clone());
        let name = name.to_owned();
        tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0);
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            for i in 0usize.. {
                tick.tick().await;
                if !reading.load(Ordering::Relaxed) {
                    break;
                }
                let key = model::object_key(
                    "pods",
                    Pod::SCOPE,
                    &tenants[i % tenants.len()],
                    "default",
                    &format!("{name}-{}", i % tenants.len()),
                );
                let t = Instant::now();
                match pods.get(&key).await {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        })
    };
    let begin = Instant::now();
    for i in 0..count {
        if let Some(r) = rate {
            let due = begin + Duration::from_secs_f64(i as f64 / r);
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = sem.clone().acquire_owned().await?;
        let tenant = &tenants[i % tenants.len()];
        let p = pod_in(tenant, "default", &format!("{name}-{i}"), Workload::Hollow);
        let (pods, tracker, creates) = (pods.clone(), tracker.clone(), creates.clone());
        let name = name.to_owned();
        set.spawn(async move {
            let t = Instant::now();
            tracker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pods
                .insert(
                    format!("{}/{}", p.metadata.tenant, p.metadata.name),
                    Seen {
                        created: t,
                        bound: None,
                        ready: None,
                    },
                );
            let r = pods.create(p).await;
            drop(permit);
            let mut c = creates.lock().unwrap_or_else(|e| e.into_inner());
            match r {
                Ok(_) => c.0.push(t.elapsed()),
                Err(e) => {
                    c.1 += 1;
                    if c.1 <= 3 {
                        println!("{name}: a create failed: {e}");
                    }
                }
            }
        });
        while set.try_join_next().is_some() {}
    }
    while set.join_next().await.is_some() {}
    let created_in = begin.elapsed();
    let timeout = Duration::from_secs(60) + Duration::from_millis(count as u64 * 20);
    let prefix = format!("{name}-");
    let ready_count = || {
        tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pods
            .iter()
            .filter(|(k, s)| s.ready.is_some() && k.contains(&prefix))
            .count()
    };
    let created = count - creates.lock().unwrap_or_else(|e| e.into_inner()).1;
    wait_for(name, "Ready", created, timeout, ready_count).await;
    reading.store(false, Ordering::Relaxed);
    let read_for = begin.elapsed();
    let reads = reader.await.ok();

    let t = tracker.lock().unwrap_or_else(|e| e.into_inner());
    let ours: Vec<&Seen> = t
        .pods
        .iter()
        .filter(|(k, _)| k.contains(&prefix))
        .map(|(_, s)| s)
        .collect();
    let (lat, errors) = std::mem::take(&mut *creates.lock().unwrap_or_else(|e| e.into_inner()));
    let mut startup: Vec<Duration> = ours
        .iter()
        .filter_map(|s| Some(s.ready? - s.created))
        .collect();
    startup.sort();
    let last_ready = ours.iter().filter_map(|s| s.ready).max();
    let span = last_ready.map_or(Duration::ZERO, |l| l - begin);
    println!(
        "{name}: {count} pods{} over {} tenants; created in {:.2} s",
        rate.map_or(String::new(), |r| format!(" at {r} pods/s")),
        tenants.len(),
        created_in.as_secs_f64()
    );
    println!("  {}", VerbStats::of("create", lat, errors, created_in));
    if let Some((lat, errors)) = reads {
        println!("  {}", VerbStats::of("get", lat, errors, read_for));
    }
    println!(
        "  Ready: {} {}",
        startup.len(),
        startup_figures(&startup, span)
    );
    // Scheduling throughput: pods bound per second from the first create to the last
    // binding, per tenant partition and in all.
    let mut all = 0;
    let mut last_all = begin;
    for (i, tp) in partitions.iter().enumerate() {
        let bound: Vec<Instant> = ours
            .iter()
            .filter_map(|s| s.bound.filter(|(_, p)| *p == i).map(|(t, _)| t))
            .collect();
        let Some(last) = bound.iter().max().copied() else {
            continue;
        };
        last_all = last_all.max(last);
        all += bound.len();
        println!(
            "  bound at {tp}: {} in {:.2} s ({:.0} pods/s)",
            bound.len(),
            (last - begin).as_secs_f64(),
            bound.len() as f64 / (last - begin).as_secs_f64().max(1e-9)
        );
    }
    println!(
        "  bound in all: {all} in {:.2} s ({:.0} pods/s)",
        (last_all - begin).as_secs_f64(),
        all as f64 / (last_all - begin).as_secs_f64().max(1e-9)
    );
    Ok(())
}
