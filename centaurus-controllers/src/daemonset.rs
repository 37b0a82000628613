//! The DaemonSet controller: one pod of the set on each node its template fits (node
//! selector, taints, container or VM nodes), hollow nodes included; new nodes get theirs,
//! pods of nodes that no longer fit go, and a new template rolls over the nodes at most
//! `maxUnavailable` at a time (or waits for each pod's deletion with `OnDelete`).
//!
//! Pods are placed through the scheduler, so their requests are booked as every pod's
//! are: each carries a `nodeSelector` on its node's `kubernetes.io/hostname` and the
//! tolerations Kubernetes gives daemon pods (not-ready, unreachable, unschedulable, ...).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use centaurus_client::{Api, Client, Recorder};
use centaurus_core::controller::{Cache, Controller, Informer, Reconciler, Requeue, Share};
use centaurus_core::model::{
    DaemonSet, DaemonSetStatus, IntOrString, LABEL_HOSTNAME, Node, ObjectMeta, ObjectReference,
    Pod, Resource, Toleration,
};

use crate::expectations::Expectations;
use crate::replicaset::owned_pods;
use crate::{controller_ref, delete_owned, enqueue_controller, is_ready, split_key};

/// The label holding the hash of the template a daemon pod was made from.
pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";

/// Taints every daemon pod tolerates, as Kubernetes adds them: a daemon belongs on its node
/// whatever the node's troubles.
const DAEMON_TOLERATIONS: [(&str, &str); 7] = [
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ("node.kubernetes.io/network-unavailable", "NoSchedule"),
];

/// Reconciles daemon sets.
pub struct DaemonSetController {
    events: Recorder,
    pods: Api<Pod>,
    sets: Api<DaemonSet>,
    pod_cache: Cache<Pod>,
    node_cache: Cache<Node>,
    expectations: Expectations,
}

/// A short stable hash of a daemon set's pod template.
pub fn template_hash(ds: &DaemonSet) -> String {
    let bytes = serde_json::to_vec(&ds.spec.template).expect("templates encode");
    format!(
        "{:010x}",
        centaurus_core::ring::stable_hash(&bytes) & 0xff_ffff_ffff
    )
}

/// The tolerations of a daemon set's pods: its template's and Kubernetes' daemon ones.
fn tolerations(ds: &DaemonSet) -> Vec<Toleration> {
    let mut all = ds.spec.template.spec.tolerations.clone();
    for (key, effect) in DAEMON_TOLERATIONS {
        if !all.iter().any(|t| t.tolerates(key, "", effect)) {
            all.push(Toleration {
                key: key.into(),
                operator: Some("Exists".into()),
                effect: effect.into(),
                ..Default::default()
            });
        }
    }
    all
}

/// Whether the daemon set's pod belongs on `node`: a new one (every `NoSchedule` and
/// `NoExecute` taint tolerated), or one already there (only `NoExecute` counts), as
/// Kubernetes decides.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fit {
    Run,
    Continue,
    No,
}

fn fit(ds: &DaemonSet, tolerated: &[Toleration], node: &Node) -> Fit {
    let spec = &ds.spec.template.spec;
    let labels = &node.metadata.labels;
    let types = node
        .status
        .as_ref()
        .map(|s| s.node_info.workload_types.clone())
        .unwrap_or_default();
    let runs = if spec.virtual_machine.is_some() {
        types.iter().any(|t| t == "vm")
    } else {
        types.is_empty() || types.iter().any(|t| t == "container")
    };
    if !runs
        || node.metadata.deletion_timestamp.is_some()
        || !spec
            .node_selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    {
        return Fit::No;
    }
    let untolerated = |effect: &str| {
        node.spec.taints.iter().any(|taint| {
            taint.effect == effect
                && !tolerated
                    .iter()
                    .any(|t| t.tolerates(&taint.key, &taint.value, &taint.effect))
        })
    };
    if untolerated("NoExecute") {
        Fit::No
    } else if untolerated("NoSchedule") {
        Fit::Continue
    } else {
        Fit::Run
    }
}

/// The node a daemon pod is for: where it runs, or where its node selector sends it.
fn node_of(pod: &Pod) -> &str {
    if pod.spec.node_name.is_empty() {
        pod.spec
            .node_selector
            .get(LABEL_HOSTNAME)
            .map_or("", String::as_str)
    } else {
        &pod.spec.node_name
    }
}

impl DaemonSetController {
    /// Runs the controller through `client` until dropped, on its `share` of the sets.
    pub async fn run(client: Client, share: Share) {
        let controller = Controller::<DaemonSet>::new(client.api().source("/registry/daemonsets/"))
            .with_share(&share);
        let pod_informer = Arc::new(Informer::<Pod>::new(client.api().source("/registry/pods/")));
        let node_informer = Arc::new(Informer::<Node>::new(
            client.api().source("/registry/nodes/"),
        ));
        let queue = controller.queue().clone();
        pod_informer.on_change(enqueue_controller::<DaemonSet, Pod>(queue));
        // A node's arrival, change or departure concerns every set.
        let (queue, sets) = (controller.queue().clone(), controller.informer().cache());
        node_informer.on_change(move |_| {
            for ds in sets.list() {
                queue.add(&ds.key());
            }
        });
        let reconciler = Self {
            events: Recorder::new(client.clone(), "daemonset-controller"),
            pods: client.api(),
            sets: client.api(),
            pod_cache: pod_informer.cache(),
            node_cache: node_informer.cache(),
            expectations: Expectations::default(),
        };
        let pods_task = tokio::spawn(pod_informer.clone().run());
        let nodes_task = tokio::spawn(node_informer.clone().run());
        pod_informer.wait_synced().await;
        node_informer.wait_synced().await;
        controller.run(reconciler).await;
        pods_task.abort();
        nodes_task.abort();
    }

    async fn create_pod(
        &self,
        key: &str,
        ds: &DaemonSet,
        node: &str,
        hash: &str,
    ) -> Result<(), String> {
        let m = &ds.metadata;
        let template = &ds.spec.template;
        let mut labels = template.metadata.labels.clone();
        labels.insert(REVISION_HASH_LABEL.into(), hash.into());
        let mut pod = Pod::typed(ObjectMeta {
            generate_name: format!("{}-", m.name),
            tenant: m.tenant_or_system().to_owned(),
            namespace: m.namespace.clone(),
            labels,
            annotations: template.metadata.annotations.clone(),
            owner_references: vec![controller_ref(ds)],
            ..Default::default()
        });
        pod.spec = template.spec.clone();
        pod.spec
            .node_selector
            .insert(LABEL_HOSTNAME.into(), node.into());
        pod.spec.tolerations = tolerations(ds);
        match self.pods.create(pod).await {
            Ok(created) => {
                self.events.normal(
                    ObjectReference::to(ds),
                    "SuccessfulCreate",
                    format!("Created pod: {}", created.metadata.name),
                );
                self.expectations.created(key, created.key());
                Ok(())
            }
            Err(e) => {
                self.events.warning(
                    ObjectReference::to(ds),
                    "FailedCreate",
                    format!("Error creating: {e}"),
                );
                Err(e.to_string())
            }
        }
    }

    async fn delete_pod(&self, key: &str, ds: &DaemonSet, pod: &Pod) -> Result<(), String> {
        self.pods
            .delete(&pod.key(), None)
            .await
            .map_err(|e| e.to_string())?;
        self.events.normal(
            ObjectReference::to(ds),
            "SuccessfulDelete",
            format!("Deleted pod: {}", pod.metadata.name),
        );
        self.expectations.deleted(key, pod.key());
        Ok(())
    }
}

#[async_trait]
impl Reconciler<DaemonSet> for DaemonSetController {
    async fn reconcile(&self, key: &str, ds: Option<DaemonSet>) -> Result<Requeue, String> {
        let Some(ds) = ds.filter(|d| d.metadata.deletion_timestamp.is_none()) else {
            if let Some((tenant, ns, name)) = split_key(key) {
                delete_owned(
                    &self.pods,
                    &self.pod_cache,
                    tenant,
                    ns,
                    DaemonSet::KIND,
                    name,
                )
                .await?;
            }
            self.expectations.forget(key);
            return Ok(Requeue::Done);
        };
        let m = &ds.metadata;
        let pods = owned_pods(&self.pod_cache, m.tenant_or_system(), &m.namespace, &m.uid);
        let present: HashSet<String> = pods.iter().map(Resource::key).collect();
        let unseen = self.expectations.unseen(key, &present);
        if unseen.created > 0 {
            // Its watch events requeue the set once the creations are seen.
            return Ok(Requeue::Done);
        }
        let hash = template_hash(&ds);
        let tolerated = tolerations(&ds);
        let fits: BTreeMap<String, Fit> = self
            .node_cache
            .list()
            .iter()
            .map(|n| (n.metadata.name.clone(), fit(&ds, &tolerated, n)))
            .filter(|(_, f)| *f != Fit::No)
            .collect();
        let wanted = |node: &str| fits.get(node) == Some(&Fit::Run);
        let mut by_node: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
        for p in &pods {
            if p.metadata.deletion_timestamp.is_none() && !unseen.deleted.contains(&p.key()) {
                by_node.entry(node_of(p)).or_default().push(p);
            }
        }

        let misscheduled = by_node.keys().filter(|n| !fits.contains_key(**n)).count();
        // Failed pods, pods of nodes that no longer fit, and extra pods on a node go.
        let mut doomed: Vec<&Pod> = Vec::new();
        let mut kept: BTreeMap<&str, &Pod> = BTreeMap::new();
        for (node, mut on_node) in by_node {
            on_node.sort_by_key(|p| (p.phase() == "Failed", p.metadata.creation_timestamp));
            for (i, p) in on_node.into_iter().enumerate() {
                if i > 0 || p.phase() == "Failed" || !fits.contains_key(node) {
                    doomed.push(p);
                } else {
                    kept.insert(node, p);
                }
            }
        }
        for p in &doomed {
            self.delete_pod(key, &ds, p).await?;
        }
        for node in fits.keys().filter(|n| wanted(n)) {
            if !kept.contains_key(node.as_str()) {
                self.create_pod(key, &ds, node, &hash).await?;
            }
        }

        // A rolling update: old pods go while the unavailable stay within bounds.
        let current = |p: &Pod| p.metadata.labels.get(REVISION_HASH_LABEL) == Some(&hash);
        let on_wanted: Vec<&Pod> = kept.values().copied().collect();
        let desired = fits.len() as i32;
        let rolling = ds.spec.update_strategy.type_.as_deref() != Some("OnDelete");
        if rolling {
            let max_unavailable = ds
                .spec
                .update_strategy
                .rolling_update
                .as_ref()
                .and_then(|r| r.max_unavailable.clone())
                .unwrap_or(IntOrString::Int(1))
                .resolve(desired, true)
                .unwrap_or(1)
                .max(1);
            let unavailable = desired - on_wanted.iter().filter(|p| is_ready(p)).count() as i32;
            let mut budget = max_unavailable - unavailable;
            // Not-ready old pods first: replacing them costs no availability.
            let mut old: Vec<&Pod> = on_wanted.iter().copied().filter(|p| !current(p)).collect();
            old.sort_by_key(|p| is_ready(p));
            for p in old {
                if is_ready(p) {
                    if budget <= 0 {
                        break;
                    }
                    budget -= 1;
                }
                self.delete_pod(key, &ds, p).await?;
            }
        }

        let ready = on_wanted.iter().filter(|p| is_ready(p)).count() as i32;
        let status = DaemonSetStatus {
            current_number_scheduled: on_wanted
                .iter()
                .filter(|p| !p.spec.node_name.is_empty())
                .count() as i32,
            number_misscheduled: misscheduled as i32,
            desired_number_scheduled: desired,
            number_ready: ready,
            updated_number_scheduled: on_wanted.iter().filter(|p| current(p)).count() as i32,
            number_available: ready,
            number_unavailable: desired - ready,
            observed_generation: m.generation,
        };
        if ds.status.as_ref() != Some(&status) {
            self.sets
                .modify_status(key, |d| {
                    if d.metadata.uid != ds.metadata.uid || d.status.as_ref() == Some(&status) {
                        return false;
                    }
                    d.status = Some(status.clone());
                    true
                })
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(Requeue::Done)
    }
}
