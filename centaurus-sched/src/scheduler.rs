//! The scheduler: watches nodes and pods, takes unbound pods from the queue by priority,
//! picks a node with the plugins, assumes the placement at once and binds in the
//! background, so the next pod is placed while earlier bindings are written.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use centaurus_client::{Client, Recorder};
use centaurus_core::controller::{Change, Informer, OwnAll, Ownership};
use centaurus_core::model::{Node, NodeLedger, ObjectReference, Pod, Resource};
use tokio::sync::Semaphore;

use crate::binder::{BindError, Binder, PartitionBinder, PodBinder, booked};
use crate::cluster::{ClusterState, PodInfo};
use crate::plugins::{FilterPlugin, ScorePlugin, default_filters, default_scores};
use crate::queue::SchedulingQueue;

/// The scheduler name pods get by default.
pub const DEFAULT_SCHEDULER: &str = centaurus_core::model::DEFAULT_SCHEDULER_NAME;

/// How a scheduler runs.
pub struct SchedulerConfig {
    /// Pods whose `schedulerName` is this (or empty, for the default name) are ours.
    pub name: String,
    /// Stop searching once this many nodes passed the filters. A fixed number, unlike
    /// kube-scheduler's percentage, keeps the cost of a decision independent of the
    /// region's size.
    pub feasible_nodes: usize,
    /// Bindings written at once.
    pub bind_concurrency: usize,
    /// Which pods this instance schedules, when several run side by side.
    pub ownership: Arc<dyn Ownership>,
    /// The filters.
    pub filters: Vec<Arc<dyn FilterPlugin>>,
    /// The scores and their weights.
    pub scores: Vec<(Arc<dyn ScorePlugin>, u32)>,
    /// Record `Scheduled` and `FailedScheduling` events about pods.
    pub events: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            name: DEFAULT_SCHEDULER.into(),
            feasible_nodes: 128,
            bind_concurrency: 64,
            ownership: Arc::new(OwnAll),
            filters: default_filters(),
            scores: default_scores(),
            events: true,
        }
    }
}

/// Counters a scheduler keeps.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    /// Pods bound.
    pub bound: AtomicU64,
    /// Scheduling attempts that found no node.
    pub unschedulable: AtomicU64,
    /// Bindings that conflicted and were retried.
    pub conflicts: AtomicU64,
    /// Time spent choosing nodes, in nanoseconds.
    pub decide_nanos: AtomicU64,
    /// Decisions made.
    pub decisions: AtomicU64,
}

/// One scheduler instance.
pub struct Scheduler {
    client: Client,
    config: SchedulerConfig,
    binder: Arc<dyn Binder>,
    cluster: Arc<Mutex<ClusterState>>,
    queue: Arc<SchedulingQueue>,
    pods: Arc<Informer<Pod>>,
    /// The nodes of each resource partition (one, the region's, unless partitioned).
    nodes: Vec<Arc<Informer<Node>>>,
    /// The node ledgers of each resource partition, when the region is partitioned: what
    /// other tenant partitions booked counts against a node.
    ledgers: Vec<Arc<Informer<NodeLedger>>>,
    /// What this tenant partition's bookings start with (others' are foreign).
    tag: String,
    stats: Arc<SchedulerStats>,
    events: Recorder,
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(pod.phase(), "Succeeded" | "Failed")
}

impl Scheduler {
    /// A scheduler through `client`, binding with [`PodBinder`].
    pub fn new(client: Client, config: SchedulerConfig) -> Self {
        let binder = Arc::new(PodBinder::new(client.clone()));
        Self::with_binder(client, config, binder)
    }

    /// A scheduler with its own binder (a [`crate::LedgerBinder`] when several run).
    pub fn with_binder(client: Client, config: SchedulerConfig, binder: Arc<dyn Binder>) -> Self {
        let nodes = vec![Arc::new(Informer::new(
            client.api().source("/registry/nodes/"),
        ))];
        Self::assemble(client, nodes, Vec::new(), config, binder)
    }

    /// The scheduler of tenant partition `partition`: its pods come from `tenant`, and it
    /// places them on the nodes of every resource partition of `resources`, booking each
    /// in its node's ledger there ([`PartitionBinder`]) and counting what the other tenant
    /// partitions booked. At start it releases its bookings of pods that are gone.
    pub fn partitioned(
        partition: &str,
        tenant: Client,
        resources: &[Client],
        config: SchedulerConfig,
    ) -> Self {
        let binder = Arc::new(PartitionBinder::new(partition, &tenant, resources));
        let source = |c: &Client, prefix: &str| Arc::new(Informer::new(c.api().source(prefix)));
        let nodes = resources
            .iter()
            .map(|c| source(c, "/registry/nodes/"))
            .collect();
        let ledgers = resources
            .iter()
            .map(|c| Arc::new(Informer::new(c.api().source("/registry/nodeledgers/"))))
            .collect();
        let mut s = Self::assemble(tenant, nodes, ledgers, config, binder);
        s.tag = crate::binder::booking_tag(partition);
        s
    }

    fn assemble(
        client: Client,
        nodes: Vec<Arc<Informer<Node>>>,
        ledgers: Vec<Arc<Informer<NodeLedger>>>,
        config: SchedulerConfig,
        binder: Arc<dyn Binder>,
    ) -> Self {
        let events = if config.events {
            Recorder::new(client.clone(), config.name.clone())
        } else {
            Recorder::disabled()
        };
        Self {
            events,
            pods: Arc::new(Informer::new(client.api().source("/registry/pods/"))),
            nodes,
            ledgers,
            tag: String::new(),
            client,
            config,
            binder,
            cluster: Arc::default(),
            queue: Arc::new(SchedulingQueue::default()),
            stats: Arc::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> Arc<SchedulerStats> {
        self.stats.clone()
    }

    /// The queue.
    pub fn queue(&self) -> Arc<SchedulingQueue> {
        self.queue.clone()
    }

    /// The region as this scheduler sees it.
    pub fn cluster(&self) -> Arc<Mutex<ClusterState>> {
        self.cluster.clone()
    }

    fn ours(&self, pod: &Pod) -> bool {
        let name = &pod.spec.scheduler_name;
        (name.is_empty() && self.config.name == DEFAULT_SCHEDULER) || *name == self.config.name
    }

    fn wire(self: &Arc<Self>) {
        for (partition, nodes) in self.nodes.iter().enumerate() {
            let this = self.clone();
            nodes.on_change(move |change| {
                let mut cluster = this.cluster.lock().unwrap_or_else(|e| e.into_inner());
                match change {
                    Change::Deleted(n) => cluster.remove_node(&n.metadata.name),
                    Change::Added(n) | Change::Modified { new: n, .. } => {
                        let name = n.metadata.name.clone();
                        let known = cluster.node(&name).is_some();
                        cluster.upsert_node_of(partition, n.clone());
                        if !known && let Some(ledgers) = this.ledgers.get(partition) {
                            let ledger = ledgers.cache().get(&crate::binder::ledger_key(&name));
                            let foreign = ledger.map(|l| this.foreign(&l)).unwrap_or_default();
                            cluster.set_foreign(&name, foreign);
                        }
                    }
                }
                drop(cluster);
                this.queue.region_changed();
            });
        }
        for ledgers in &self.ledgers {
            let this = self.clone();
            ledgers.on_change(move |change| {
                let ledger = change.object();
                let foreign = match change {
                    Change::Deleted(_) => Default::default(),
                    _ => this.foreign(ledger),
                };
                this.cluster
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .set_foreign(&ledger.metadata.name, foreign);
                this.queue.region_changed();
            });
        }
        let this = self.clone();
        self.pods.on_change(move |change| this.pod_changed(change));
    }

    /// What a ledger books for pods of other tenant partitions.
    fn foreign(&self, ledger: &NodeLedger) -> crate::Resources {
        let mut others = ledger.clone();
        others
            .spec
            .pods
            .retain(|key, _| !key.starts_with(&self.tag));
        booked(&others)
    }

    /// Releases this partition's bookings whose pods are gone (deleted while no scheduler
    /// of the partition ran).
    fn release_stale_bookings(&self) {
        let pods: std::collections::HashSet<String> = self
            .pods
            .cache()
            .list()
            .into_iter()
            .map(|p| p.metadata.uid)
            .collect();
        let stale: Vec<(String, String)> = self
            .ledgers
            .iter()
            .flat_map(|l| l.cache().list())
            .flat_map(|ledger| {
                let node = ledger.metadata.name.clone();
                ledger
                    .spec
                    .pods
                    .into_keys()
                    .filter_map(|k| k.strip_prefix(&self.tag).map(str::to_owned))
                    .filter(|uid| !pods.contains(uid))
                    .map(move |uid| (uid, node.clone()))
            })
            .collect();
        if !stale.is_empty() {
            tracing::info!(
                bookings = stale.len(),
                "releasing bookings of pods deleted while no scheduler ran"
            );
        }
        for (uid, node) in stale {
            let binder = self.binder.clone();
            tokio::spawn(async move {
                if let Err(e) = binder.release(&uid, &node).await {
                    tracing::warn!(%uid, node, error = %e, "releasing a stale booking failed");
                }
            });
        }
    }

    fn pod_changed(&self, change: &Change<Pod>) {
        let pod = change.object();
        let key = pod.key();
        let gone = matches!(change, Change::Deleted(_)) || is_terminal(pod);
        if gone {
            self.queue.done(&key);
            let left = self
                .cluster
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .unplace(&key);
            if let Some(node) = left {
                self.release(pod, node);
                self.queue.region_changed();
            }
            return;
        }
        if !pod.spec.node_name.is_empty() {
            self.queue.done(&key);
            let mut cluster = self.cluster.lock().unwrap_or_else(|e| e.into_inner());
            let before = cluster.placement(&key).map(str::to_owned);
            cluster.place(&PodInfo::new(pod.clone()), &pod.spec.node_name);
            drop(cluster);
            // An assumption this scheduler made on another node is void now.
            if let Some(node) = before.filter(|n| *n != pod.spec.node_name) {
                self.release(pod, node);
            }
            return;
        }
        if pod.metadata.deletion_timestamp.is_none()
            && self.ours(pod)
            && self.config.ownership.owns(pod.metadata.ring_position())
        {
            self.queue.add(&key, pod.spec.priority.unwrap_or(0));
        }
    }

    fn release(&self, pod: &Pod, node: String) {
        if !self.config.ownership.owns(pod.metadata.ring_position()) {
            return;
        }
        let binder = self.binder.clone();
        let uid = pod.metadata.uid.clone();
        tokio::spawn(async move {
            if let Err(e) = binder.release(&uid, &node).await {
                tracing::warn!(%uid, node, error = %e, "releasing a booking failed");
            }
        });
    }

    /// Runs until the returned future is dropped.
    pub async fn run(self: Arc<Self>) {
        self.wire();
        let mut tasks = tokio::task::JoinSet::new();
        for nodes in &self.nodes {
            tasks.spawn(nodes.clone().run());
        }
        for ledgers in &self.ledgers {
            tasks.spawn(ledgers.clone().run());
        }
        tasks.spawn(self.pods.clone().run());
        self.pods.wait_synced().await;
        for nodes in &self.nodes {
            nodes.wait_synced().await;
        }
        for ledgers in &self.ledgers {
            ledgers.wait_synced().await;
        }
        if !self.ledgers.is_empty() {
            self.release_stale_bookings();
        }
        tracing::info!(
            name = self.config.name,
            nodes = self
                .cluster
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .node_count(),
            queued = self.queue.len(),
            "scheduler ready"
        );
        let binds = Arc::new(Semaphore::new(self.config.bind_concurrency.max(1)));
        let pod_cache = self.pods.cache();
        while let Some(key) = self.queue.pop().await {
            let Some(pod) = pod_cache.get(&key) else {
                self.queue.done(&key);
                continue;
            };
            if !pod.spec.node_name.is_empty() || pod.metadata.deletion_timestamp.is_some() {
                self.queue.done(&key);
                continue;
            }
            let info = PodInfo::new(pod);
            let started = Instant::now();
            let chosen = {
                let mut cluster = self.cluster.lock().unwrap_or_else(|e| e.into_inner());
                let chosen = cluster.select(
                    &info,
                    &self.config.filters,
                    &self.config.scores,
                    self.config.feasible_nodes,
                );
                if let Ok(node) = &chosen {
                    cluster.place(&info, node);
                }
                chosen.map(|n| cluster.node(&n).cloned().expect("chosen nodes exist"))
            };
            self.stats
                .decide_nanos
                .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            self.stats.decisions.fetch_add(1, Ordering::Relaxed);
            let node = match chosen {
                Ok(node) => node,
                Err(why) => {
                    self.stats.unschedulable.fetch_add(1, Ordering::Relaxed);
                    self.queue.unschedulable(&key);
                    self.events.warning(
                        ObjectReference::to(&*info.pod),
                        "FailedScheduling",
                        why.to_string(),
                    );
                    let this = self.clone();
                    tokio::spawn(
                        async move { this.report_unschedulable(&info, why.to_string()).await },
                    );
                    continue;
                }
            };
            let permit = binds
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let this = self.clone();
            tasks.spawn(async move {
                let result = this.binder.bind(&info, &node).await;
                drop(permit);
                this.bound(&info, &node.name, result);
            });
            while tasks.try_join_next().is_some() {}
        }
    }

    fn bound(&self, info: &PodInfo, node: &str, result: Result<(), BindError>) {
        match result {
            Ok(()) => {
                self.stats.bound.fetch_add(1, Ordering::Relaxed);
                self.queue.done(&info.key);
                let m = &info.pod.metadata;
                self.events.normal(
                    ObjectReference::to(&*info.pod),
                    "Scheduled",
                    format!("Successfully assigned {}/{} to {node}", m.namespace, m.name),
                );
            }
            Err(e) => {
                {
                    let mut cluster = self.cluster.lock().unwrap_or_else(|e| e.into_inner());
                    if cluster.placement(&info.key) == Some(node) {
                        cluster.unplace(&info.key);
                    }
                }
                match e {
                    BindError::Gone => self.queue.done(&info.key),
                    e => {
                        tracing::debug!(pod = info.key, node, error = %e, "binding failed; retrying");
                        self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                        self.queue.retry(&info.key);
                    }
                }
            }
        }
    }

    /// Records why the pod waits in its `PodScheduled` condition, as kube-scheduler does,
    /// when the message changed.
    async fn report_unschedulable(&self, info: &PodInfo, message: String) {
        let result = self
            .client
            .api::<Pod>()
            .modify_status(&info.key, |pod| {
                if !pod.spec.node_name.is_empty() || pod.metadata.uid != info.pod.metadata.uid {
                    return false;
                }
                let already = pod.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "PodScheduled" && c.message == message)
                });
                if already {
                    return false;
                }
                centaurus_core::model::set_pod_scheduled(pod, "False", "Unschedulable", &message);
                true
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(pod = info.key, error = %e, "cannot record why the pod waits");
        }
    }
}

/// Average time to choose a node, from the counters.
pub fn mean_decision(stats: &SchedulerStats) -> Duration {
    let n = stats.decisions.load(Ordering::Relaxed).max(1);
    Duration::from_nanos(stats.decide_nanos.load(Ordering::Relaxed) / n)
}
