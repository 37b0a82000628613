//! The StatefulSet controller: pods named `NAME-0` … `NAME-(replicas-1)`, container or VM
//! pods alike. With `OrderedReady` a pod is made only once every lower ordinal runs and is
//! ready, and scaling down removes the highest first, one at a time; with `Parallel` all at
//! once. A deleted or failed pod comes back under its own name. A new template rolls from
//! the highest ordinal down to the partition, one pod at a time, each after the others are
//! ready (or waits for each pod's deletion with `OnDelete`).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use centaurus_client::{Api, Client, Recorder};
use centaurus_core::controller::{Cache, Controller, Informer, Reconciler, Requeue, Share};
use centaurus_core::model::{
    ObjectMeta, ObjectReference, Pod, Resource, StatefulSet, StatefulSetStatus,
};

use crate::daemonset::REVISION_HASH_LABEL;
use crate::replicaset::owned_pods;
use crate::{controller_ref, delete_owned, enqueue_controller, is_ready, split_key};

/// Label of a stateful set's pod: its own name.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// Label of a stateful set's pod: its ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// Reconciles stateful sets.
pub struct StatefulSetController {
    events: Recorder,
    pods: Api<Pod>,
    sets: Api<StatefulSet>,
    pod_cache: Cache<Pod>,
}

/// The revision of a stateful set's template: `NAME-HASH`.
pub fn revision(sts: &StatefulSet) -> String {
    let bytes = serde_json::to_vec(&sts.spec.template).expect("templates encode");
    format!(
        "{}-{:010x}",
        sts.metadata.name,
        centaurus_core::ring::stable_hash(&bytes) & 0xff_ffff_ffff
    )
}

/// The ordinal of a pod of the set named `set`, from its name.
fn ordinal(set: &str, pod: &Pod) -> Option<i32> {
    pod.metadata
        .name
        .strip_prefix(set)?
        .strip_prefix('-')?
        .parse()
        .ok()
        .filter(|o: &i32| *o >= 0)
}

impl StatefulSetController {
    /// Runs the controller through `client` until dropped, on its `share` of the sets.
    pub async fn run(client: Client, share: Share) {
        let controller =
            Controller::<StatefulSet>::new(client.api().source("/registry/statefulsets/"))
                .with_share(&share);
        let pod_informer = Arc::new(Informer::<Pod>::new(client.api().source("/registry/pods/")));
        let queue = controller.queue().clone();
        pod_informer.on_change(enqueue_controller::<StatefulSet, Pod>(queue));
        let reconciler = Self {
            events: Recorder::new(client.clone(), "statefulset-controller"),
            pods: client.api(),
            sets: client.api(),
            pod_cache: pod_informer.cache(),
        };
        let pods_task = tokio::spawn(pod_informer.clone().run());
        pod_informer.wait_synced().await;
        controller.run(reconciler).await;
        pods_task.abort();
    }

    /// Makes pod `ordinal`; false when its name is still held by a pod on its way out.
    async fn create_pod(&self, sts: &StatefulSet, ordinal: i32, rev: &str) -> Result<bool, String> {
        let m = &sts.metadata;
        let template = &sts.spec.template;
        let name = format!("{}-{ordinal}", m.name);
        let mut labels = template.metadata.labels.clone();
        labels.insert(REVISION_HASH_LABEL.into(), rev.into());
        labels.insert(POD_NAME_LABEL.into(), name.clone());
        labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
        let mut pod = Pod::typed(ObjectMeta {
            name: name.clone(),
            tenant: m.tenant_or_system().to_owned(),
            namespace: m.namespace.clone(),
            labels,
            annotations: template.metadata.annotations.clone(),
            owner_references: vec![controller_ref(sts)],
            ..Default::default()
        });
        pod.spec = template.spec.clone();
        match self.pods.create(pod).await {
            Ok(_) => {
                self.events.normal(
                    ObjectReference::to(sts),
                    "SuccessfulCreate",
                    format!("create Pod {name} in StatefulSet {} successful", m.name),
                );
                Ok(true)
            }
            // The old pod of that name is still being deleted: its removal requeues.
            Err(e) if e.is_already_exists() => Ok(false),
            Err(e) => {
                self.events.warning(
                    ObjectReference::to(sts),
                    "FailedCreate",
                    format!("create Pod {name} in StatefulSet {} failed: {e}", m.name),
                );
                Err(e.to_string())
            }
        }
    }

    async fn delete_pod(&self, sts: &StatefulSet, pod: &Pod) -> Result<(), String> {
        self.pods
            .delete(&pod.key(), None)
            .await
            .map_err(|e| e.to_string())?;
        self.events.normal(
            ObjectReference::to(sts),
            "SuccessfulDelete",
            format!(
                "delete Pod {} in StatefulSet {} successful",
                pod.metadata.name, sts.metadata.name
            ),
        );
        Ok(())
    }
}

#[async_trait]
impl Reconciler<StatefulSet> for StatefulSetController {
    async fn reconcile(&self, key: &str, sts: Option<StatefulSet>) -> Result<Requeue, String> {
        let Some(sts) = sts.filter(|s| s.metadata.deletion_timestamp.is_none()) else {
            if let Some((tenant, ns, name)) = split_key(key) {
                delete_owned(
                    &self.pods,
                    &self.pod_cache,
                    tenant,
                    ns,
                    StatefulSet::KIND,
                    name,
                )
                .await?;
            }
            return Ok(Requeue::Done);
        };
        let m = &sts.metadata;
        let spec = &sts.spec;
        let replicas = spec.replicas.unwrap_or(1).max(0);
        let ordered = spec.pod_management_policy.as_deref() != Some("Parallel");
        let rev = revision(&sts);
        let pods = owned_pods(&self.pod_cache, m.tenant_or_system(), &m.namespace, &m.uid);
        // Every pod by ordinal, those on their way out included (they still hold the name).
        let by_ordinal: BTreeMap<i32, &Pod> = pods
            .iter()
            .filter_map(|p| Some((ordinal(&m.name, p)?, p)))
            .collect();
        let live = |p: &Pod| p.metadata.deletion_timestamp.is_none();
        let healthy = |p: &Pod| live(p) && p.phase() == "Running" && is_ready(p);

        // Failed pods go, to come back under their names.
        for p in by_ordinal
            .values()
            .filter(|p| live(p) && p.phase() == "Failed")
        {
            self.delete_pod(&sts, p).await?;
        }
        let mut progressing = false;
        // Missing ordinals, lowest first; in order, each after its predecessors are ready.
        for o in 0..replicas {
            match by_ordinal.get(&o) {
                Some(p) if live(p) && p.phase() != "Failed" => {
                    if ordered && !healthy(p) {
                        progressing = true;
                        break;
                    }
                }
                Some(_) => {
                    // On its way out: its successor waits for the name.
                    progressing = true;
                    if ordered {
                        break;
                    }
                }
                None => {
                    self.create_pod(&sts, o, &rev).await?;
                    progressing = true;
                    if ordered {
                        break;
                    }
                }
            }
        }
        // Ordinals beyond the replicas go, highest first (one at a time when ordered, and
        // only once the others are settled).
        let condemned: Vec<&Pod> = by_ordinal
            .range(replicas..)
            .rev()
            .map(|(_, p)| *p)
            .filter(|p| live(p))
            .collect();
        if !(ordered && progressing) {
            for p in condemned.iter().take(if ordered { 1 } else { usize::MAX }) {
                self.delete_pod(&sts, p).await?;
                progressing = true;
            }
        }
        // A rolling update: the highest pod of an old revision at or above the partition
        // goes, once every pod is ready; it comes back with the new template.
        let partition = spec
            .update_strategy
            .rolling_update
            .as_ref()
            .and_then(|r| r.partition)
            .unwrap_or(0);
        let current = |p: &Pod| p.metadata.labels.get(REVISION_HASH_LABEL) == Some(&rev);
        let rolling = spec.update_strategy.type_.as_deref() != Some("OnDelete");
        let in_range: Vec<&Pod> = by_ordinal.range(..replicas).map(|(_, p)| *p).collect();
        if rolling
            && !progressing
            && in_range.iter().all(|p| healthy(p))
            && let Some(old) = by_ordinal
                .range(partition..replicas)
                .rev()
                .map(|(_, p)| *p)
                .find(|p| !current(p))
        {
            self.delete_pod(&sts, old).await?;
        }

        let ready = in_range.iter().filter(|p| healthy(p)).count() as i32;
        let updated = in_range.iter().filter(|p| current(p)).count() as i32;
        let old_revision = in_range
            .iter()
            .filter_map(|p| p.metadata.labels.get(REVISION_HASH_LABEL))
            .find(|r| **r != rev)
            .cloned();
        let status = StatefulSetStatus {
            replicas: by_ordinal.values().filter(|p| live(p)).count() as i32,
            ready_replicas: ready,
            available_replicas: ready,
            current_replicas: if old_revision.is_some() {
                in_range.len() as i32 - updated
            } else {
                updated
            },
            updated_replicas: updated,
            current_revision: old_revision.unwrap_or_else(|| rev.clone()),
            update_revision: rev,
            observed_generation: m.generation,
        };
        if sts.status.as_ref() != Some(&status) {
            self.sets
                .modify_status(key, |s| {
                    if s.metadata.uid != sts.metadata.uid || s.status.as_ref() == Some(&status) {
                        return false;
                    }
                    s.status = Some(status.clone());
                    true
                })
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(Requeue::Done)
    }
}
