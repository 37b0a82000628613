//! Node lifecycle: a node whose Lease expires goes NotReady and is tainted `unreachable`
//! (so nothing new lands there); after the eviction timeout its pods are deleted, and their
//! controllers replace them on healthy nodes — in other zones when a whole zone is lost.
//! A node whose lease is renewed again comes back Ready. Pods bound to a node that does not
//! exist (it was deleted) are evicted the same way once it has been missing for
//! `orphan_grace`, unless its agent registers it again first.
//!
//! In a partitioned region the work splits ([`LifecycleScope`]): a resource partition's
//! controllers mark its nodes (they have no pods), and each tenant partition's evict its
//! own pods from the nodes of every resource partition that were NotReady too long.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use centaurus_client::{Api, Client, Recorder};
use centaurus_core::controller::{Cache, Change, Informer, Ownership};
use centaurus_core::model::{
    self, Condition, Lease, Node, ObjectReference, Pod, Resource, Taint, Time,
};

/// The taint key of a node that stopped renewing its lease.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";

/// Timing of the node lifecycle controller.
#[derive(Clone, Debug)]
pub struct NodeLifecycleConfig {
    /// How often nodes are checked.
    pub period: Duration,
    /// How long a node stays NotReady before its pods are evicted (Kubernetes: 5 min).
    pub eviction_timeout: Duration,
    /// How long pods may stay bound to a node that does not exist before they are evicted
    /// (Kubernetes' pod garbage collector waits 40 s), so a node deleted while its agent runs
    /// has the time to register again.
    pub orphan_grace: Duration,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        Self {
            period: Duration::from_secs(2),
            eviction_timeout: Duration::from_secs(60),
            orphan_grace: Duration::from_secs(40),
        }
    }
}

/// Node name → keys of the pods bound to it, kept from the pod informer, so finding pods of
/// missing nodes costs the number of nodes with pods, not of pods.
type BoundPods = Arc<Mutex<HashMap<String, HashSet<String>>>>;

/// What a node lifecycle controller looks after.
#[derive(Clone)]
pub enum LifecycleScope {
    /// The region's nodes and pods, through one client.
    Region,
    /// A resource partition: its nodes' readiness and taints (it holds no pods).
    Nodes,
    /// A tenant partition: its pods bound to lost nodes of these resource partitions.
    Pods(Vec<Client>),
}

/// Watches node leases and acts on expired ones.
pub struct NodeLifecycleController {
    config: NodeLifecycleConfig,
    /// Where readiness is marked: the nodes' own partition (None: elsewhere).
    nodes: Option<Api<Node>>,
    /// Where pods are evicted (None: a partition without pods).
    pods: Option<Api<Pod>>,
    bound: BoundPods,
    /// Nodes with bound pods that were missing at a check, and since when.
    missing_since: Mutex<HashMap<String, Time>>,
    /// The nodes this instance looks after.
    ownership: Arc<dyn Ownership>,
    /// `NodeNotReady`, `NodeReady` and eviction events.
    events: Recorder,
}

/// Keeps `bound` equal to the pods' bindings.
fn track_bindings(bound: &BoundPods, change: &Change<Pod>) {
    let mut bound = bound.lock().unwrap_or_else(|e| e.into_inner());
    let mut unbind = |pod: &Pod| {
        if let Some(keys) = bound.get_mut(&pod.spec.node_name) {
            keys.remove(&pod.key());
            if keys.is_empty() {
                bound.remove(&pod.spec.node_name);
            }
        }
    };
    match change {
        Change::Deleted(old) | Change::Modified { old, .. } => unbind(old),
        Change::Added(_) => {}
    }
    if let Change::Added(pod) | Change::Modified { new: pod, .. } = change
        && !pod.spec.node_name.is_empty()
    {
        bound
            .entry(pod.spec.node_name.clone())
            .or_default()
            .insert(pod.key());
    }
}

fn ready(node: &Node) -> Option<&Condition> {
    node.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
}

impl NodeLifecycleController {
    /// Runs through `client` until dropped, for the nodes `ownership` gives it.
    pub async fn run(client: Client, config: NodeLifecycleConfig, ownership: Arc<dyn Ownership>) {
        Self::run_in(client, LifecycleScope::Region, config, ownership).await
    }

    /// Runs through `client` (of the region, or of the partition `scope` says) until
    /// dropped, for the nodes `ownership` gives it.
    pub async fn run_in(
        client: Client,
        scope: LifecycleScope,
        config: NodeLifecycleConfig,
        ownership: Arc<dyn Ownership>,
    ) {
        let node_sources = match &scope {
            LifecycleScope::Pods(resources) => resources.clone(),
            _ => vec![client.clone()],
        };
        let nodes: Vec<_> = node_sources
            .iter()
            .map(|c| Arc::new(Informer::<Node>::new(c.api().source("/registry/nodes/"))))
            .collect();
        let marks = !matches!(scope, LifecycleScope::Pods(_));
        let leases = marks.then(|| {
            Arc::new(Informer::<Lease>::new(client.api().source(format!(
                "/registry/leases/{}/{}/",
                model::SYSTEM_TENANT,
                model::NODE_LEASE_NAMESPACE
            ))))
        });
        let evicts = !matches!(scope, LifecycleScope::Nodes);
        let pods =
            evicts.then(|| Arc::new(Informer::<Pod>::new(client.api().source("/registry/pods/"))));
        let bound = BoundPods::default();
        if let Some(pods) = &pods {
            let b = bound.clone();
            pods.on_change(move |change| track_bindings(&b, change));
        }
        let mut tasks = tokio::task::JoinSet::new();
        for n in &nodes {
            tasks.spawn(n.clone().run());
        }
        if let Some(l) = &leases {
            tasks.spawn(l.clone().run());
        }
        if let Some(p) = &pods {
            tasks.spawn(p.clone().run());
        }
        for n in &nodes {
            n.wait_synced().await;
        }
        if let Some(l) = &leases {
            l.wait_synced().await;
        }
        if let Some(p) = &pods {
            p.wait_synced().await;
        }
        let this = Self {
            config,
            nodes: marks.then(|| client.api()),
            pods: evicts.then(|| client.api()),
            bound,
            missing_since: Mutex::default(),
            ownership,
            events: Recorder::new(client.clone(), "node-controller"),
        };
        let node_caches: Vec<_> = nodes.iter().map(|n| n.cache()).collect();
        let lease_cache = leases.map(|l| l.cache());
        let pod_cache = pods.map(|p| p.cache());
        let mut tick = tokio::time::interval(this.config.period);
        loop {
            tick.tick().await;
            this.check(&node_caches, lease_cache.as_ref(), pod_cache.as_ref())
                .await;
        }
    }

    /// Marks readiness from `leases` (where they are watched) and evicts the pods of
    /// `pods` (where they are) from nodes lost for the eviction timeout.
    async fn check(
        &self,
        nodes: &[Cache<Node>],
        leases: Option<&Cache<Lease>>,
        pods: Option<&Cache<Pod>>,
    ) {
        let now = model::now();
        let lease_prefix = format!(
            "/registry/leases/{}/{}/",
            model::SYSTEM_TENANT,
            model::NODE_LEASE_NAMESPACE
        );
        // Whether a node's lease is valid (None: leases are not watched here).
        let alive = |node: &Node| {
            leases.map(|leases| {
                leases
                    .read(&format!("{lease_prefix}{}", node.metadata.name), |l| {
                        l.is_valid_at(now)
                    })
                    // A node that never had a lease gets the default lease time from
                    // creation.
                    .unwrap_or_else(|| {
                        node.metadata
                            .creation_timestamp
                            .is_some_and(|t| now < t + chrono::Duration::seconds(40))
                    })
            })
        };
        let lost_long = |node: &Node| {
            ready(node)
                .and_then(|c| c.last_transition_time)
                .is_some_and(|t| expired(t, now, self.config.eviction_timeout))
        };
        // Only the nodes that need something are copied out of the caches: a region's
        // nodes are many, and nearly all of them are well.
        let needs_care = |node: &Node| {
            if !self.ownership.owns(node.metadata.ring_position()) {
                return false;
            }
            let is_ready = ready(node).is_some_and(|c| c.status == "True");
            match alive(node) {
                None => !is_ready && lost_long(node),
                Some(alive) => alive != is_ready || (!alive && lost_long(node)),
            }
        };
        let mut lost = Vec::new();
        for node in nodes.iter().flat_map(|c| c.select(needs_care)) {
            let name = &node.metadata.name;
            let is_ready = ready(&node).is_some_and(|c| c.status == "True");
            let Some(alive) = alive(&node) else {
                // Readiness is marked in the node's own partition: act on what it says.
                if !is_ready && lost_long(&node) {
                    lost.push(name.clone());
                }
                continue;
            };
            if alive && !is_ready {
                self.set_ready(name, true).await;
                self.events.normal(
                    ObjectReference::to(&node),
                    "NodeReady",
                    format!("Node {name} status is now: NodeReady"),
                );
            } else if !alive && is_ready {
                tracing::warn!(node = name, "node lease expired; marking the node NotReady");
                self.set_ready(name, false).await;
                self.events.warning(
                    ObjectReference::to(&node),
                    "NodeNotReady",
                    format!("Node {name} status is now: NodeNotReady (its lease expired)"),
                );
            } else if !alive && lost_long(&node) {
                lost.push(name.clone());
            }
        }
        let (Some(pods), Some(evict)) = (pods, &self.pods) else {
            return;
        };
        // A node that does not exist has no hashKey: its name places it on the ring.
        let missing: Vec<String> = self
            .missing_nodes(nodes, now)
            .into_iter()
            .filter(|n| {
                self.ownership
                    .owns(centaurus_core::ring::stable_hash(n.as_bytes()))
            })
            .collect();
        lost.extend(missing.iter().cloned());
        let keys: Vec<String> = {
            let bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
            lost.iter()
                .filter_map(|n| bound.get(n))
                .flatten()
                .cloned()
                .collect()
        };
        for pod in keys.iter().filter_map(|k| pods.get(k)) {
            // Pods that tolerate a lost node for good (daemon pods) stay on a node that
            // still exists.
            let stays = !missing.contains(&pod.spec.node_name)
                && pod.spec.tolerations.iter().any(|t| {
                    t.toleration_seconds.is_none()
                        && t.tolerates(UNREACHABLE_TAINT, "", "NoExecute")
                });
            if pod.metadata.deletion_timestamp.is_none() && !stays {
                tracing::info!(
                    pod = pod.metadata.name,
                    node = pod.spec.node_name,
                    "evicting a pod from a lost node"
                );
                match evict.delete(&pod.key(), None).await {
                    Ok(()) => self.events.normal(
                        ObjectReference::to(&pod),
                        "TaintManagerEviction",
                        format!("Deleting pod: node {} is lost", pod.spec.node_name),
                    ),
                    Err(e) => {
                        tracing::warn!(pod = pod.metadata.name, error = %e, "eviction failed")
                    }
                }
            }
        }
    }

    /// The nodes that pods are bound to and that have not existed for `orphan_grace`.
    fn missing_nodes(&self, nodes: &[Cache<Node>], now: Time) -> Vec<String> {
        let with_pods: Vec<String> = self
            .bound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        let mut missing = self.missing_since.lock().unwrap_or_else(|e| e.into_inner());
        let absent: HashSet<&String> = with_pods
            .iter()
            .filter(|n| {
                let key = model::object_key(Node::PLURAL, Node::SCOPE, "", "", n);
                nodes.iter().all(|c| !c.contains(&key))
            })
            .collect();
        missing.retain(|n, _| absent.contains(n));
        let mut gone = Vec::new();
        for name in absent {
            let since = *missing.entry(name.clone()).or_insert_with(|| {
                tracing::warn!(node = %name, "pods are bound to a node that does not exist");
                now
            });
            if expired(since, now, self.config.orphan_grace) {
                gone.push(name.clone());
            }
        }
        gone
    }

    /// Marks a node Ready or not (its status) and taints it unreachable or not (its spec),
    /// in that order.
    async fn set_ready(&self, name: &str, up: bool) {
        let Some(nodes) = &self.nodes else { return };
        let key = model::object_key(Node::PLURAL, Node::SCOPE, "", "", name);
        let status = nodes
            .modify_status(&key, |n| {
                let status = n.status.get_or_insert_with(Default::default);
                status.conditions.retain(|c| c.type_ != "Ready");
                status.conditions.push(if up {
                    model::node_ready_condition(
                        "True",
                        "NodeLeaseRenewed",
                        "the node agent renews its lease",
                    )
                } else {
                    model::node_ready_condition(
                        "Unknown",
                        "NodeStatusUnknown",
                        "the node agent stopped renewing its lease",
                    )
                });
                true
            })
            .await;
        let taints = nodes
            .modify(&key, |n| {
                let tainted = n.spec.taints.iter().any(|t| t.key == UNREACHABLE_TAINT);
                if tainted != up {
                    return false;
                }
                n.spec.taints.retain(|t| t.key != UNREACHABLE_TAINT);
                if !up {
                    for effect in ["NoSchedule", "NoExecute"] {
                        n.spec.taints.push(Taint {
                            key: UNREACHABLE_TAINT.into(),
                            value: String::new(),
                            effect: effect.into(),
                            time_added: Some(model::now()),
                        });
                    }
                }
                true
            })
            .await;
        if let Err(e) = status.and(taints) {
            tracing::warn!(node = name, error = %e, "cannot update the node's readiness");
        }
    }
}

fn expired(since: Time, now: Time, timeout: Duration) -> bool {
    now >= since + chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX)
}
