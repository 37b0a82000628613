//! The ReplicaSet controller: keeps `replicas` pods of the template, container or VM pods
//! alike, and reports how many are ready.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use centaurus_client::{Api, Client, Recorder};
use centaurus_core::controller::{Cache, Controller, Reconciler, Requeue, Share};
use centaurus_core::model::{
    self, ObjectMeta, ObjectReference, Pod, ReplicaSet, ReplicaSetStatus, Resource,
};

use crate::expectations::Expectations;
use crate::{controller_ref, delete_owned, enqueue_controller, is_ready, split_key};

/// Reconciles replica sets.
pub struct ReplicaSetController {
    events: Recorder,
    pods: Api<Pod>,
    sets: Api<ReplicaSet>,
    pod_cache: Cache<Pod>,
    expectations: Expectations,
}

/// The pods a replica set controls, from the cache: live ones first.
pub(crate) fn owned_pods(cache: &Cache<Pod>, tenant: &str, ns: &str, uid: &str) -> Vec<Pod> {
    cache
        .list_prefix(&format!("/registry/pods/{tenant}/{ns}/"))
        .into_iter()
        .filter(|p| p.metadata.controller_ref().is_some_and(|r| r.uid == uid))
        .collect()
}

impl ReplicaSetController {
    /// Runs the controller through `client` until dropped, on its `share` of the replica
    /// sets; `workers` reconcile at once.
    pub async fn run(client: Client, workers: usize, share: Share) {
        let controller =
            Controller::<ReplicaSet>::new(client.api().source("/registry/replicasets/"))
                .with_workers(workers)
                .with_share(&share);
        let pod_informer = Arc::new(centaurus_core::controller::Informer::<Pod>::new(
            client.api().source("/registry/pods/"),
        ));
        let queue = controller.queue().clone();
        pod_informer.on_change(enqueue_controller::<ReplicaSet, Pod>(queue));
        let reconciler = Self {
            events: Recorder::new(client.clone(), "replicaset-controller"),
            pods: client.api(),
            sets: client.api(),
            pod_cache: pod_informer.cache(),
            expectations: Expectations::default(),
        };
        let pods_task = tokio::spawn(pod_informer.clone().run());
        pod_informer.wait_synced().await;
        controller.run(reconciler).await;
        pods_task.abort();
    }

    /// Live pods leaving out deletions not yet seen, and creations not yet seen.
    fn live(&self, rs_key: &str, cached: &[Pod]) -> (Vec<Pod>, usize) {
        let present: HashSet<String> = cached.iter().map(Resource::key).collect();
        let unseen = self.expectations.unseen(rs_key, &present);
        let live: Vec<Pod> = cached
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && !matches!(p.phase(), "Succeeded" | "Failed")
                    && !unseen.deleted.contains(&p.key())
            })
            .cloned()
            .collect();
        (live, unseen.created)
    }
}

/// Which pods go first when scaling down: unscheduled, then not running, then not
/// ready, then the newest.
fn deletion_rank(p: &Pod) -> (u8, u8, u8, std::cmp::Reverse<Option<model::Time>>) {
    (
        u8::from(!p.spec.node_name.is_empty()),
        u8::from(p.phase() == "Running"),
        u8::from(is_ready(p)),
        std::cmp::Reverse(p.metadata.creation_timestamp),
    )
}

#[async_trait]
impl Reconciler<ReplicaSet> for ReplicaSetController {
    async fn reconcile(&self, key: &str, rs: Option<ReplicaSet>) -> Result<Requeue, String> {
        let Some(rs) = rs.filter(|r| r.metadata.deletion_timestamp.is_none()) else {
            // Gone: its pods go too (garbage collection by owner).
            if let Some((tenant, ns, name)) = split_key(key) {
                delete_owned(
                    &self.pods,
                    &self.pod_cache,
                    tenant,
                    ns,
                    ReplicaSet::KIND,
                    name,
                )
                .await?;
            }
            self.expectations.forget(key);
            return Ok(Requeue::Done);
        };
        let m = &rs.metadata;
        let tenant = m.tenant_or_system().to_owned();
        let cached = owned_pods(&self.pod_cache, &tenant, &m.namespace, &m.uid);
        let (live, pending) = self.live(key, &cached);
        let want = rs.spec.replicas.unwrap_or(1).max(0) as usize;
        let have = live.len() + pending;
        if have < want {
            for _ in have..want {
                let mut pod = Pod::typed(ObjectMeta {
                    generate_name: format!("{}-", m.name),
                    tenant: tenant.clone(),
                    namespace: m.namespace.clone(),
                    labels: rs.spec.template.metadata.labels.clone(),
                    annotations: rs.spec.template.metadata.annotations.clone(),
                    owner_references: vec![controller_ref(&rs)],
                    ..Default::default()
                });
                pod.spec = rs.spec.template.spec.clone();
                let created = match self.pods.create(pod).await {
                    Ok(created) => created,
                    Err(e) => {
                        self.events.warning(
                            ObjectReference::to(&rs),
                            "FailedCreate",
                            format!("Error creating: {e}"),
                        );
                        return Err(e.to_string());
                    }
                };
                self.events.normal(
                    ObjectReference::to(&rs),
                    "SuccessfulCreate",
                    format!("Created pod: {}", created.metadata.name),
                );
                self.expectations.created(key, created.key());
            }
        } else if live.len() > want && pending == 0 {
            let mut victims = live.clone();
            victims.sort_by_key(deletion_rank);
            for p in victims.iter().take(live.len() - want) {
                self.pods
                    .delete(&p.key(), None)
                    .await
                    .map_err(|e| e.to_string())?;
                self.events.normal(
                    ObjectReference::to(&rs),
                    "SuccessfulDelete",
                    format!("Deleted pod: {}", p.metadata.name),
                );
                self.expectations.deleted(key, p.key());
            }
        }
        let ready = live.iter().filter(|p| is_ready(p)).count() as i32;
        let status = ReplicaSetStatus {
            replicas: live.len() as i32,
            fully_labeled_replicas: live.len() as i32,
            ready_replicas: ready,
            available_replicas: ready,
            observed_generation: m.generation,
        };
        if rs.status.as_ref() != Some(&status) {
            self.sets
                .modify_status(key, |r| {
                    if r.metadata.uid != rs.metadata.uid || r.status.as_ref() == Some(&status) {
                        return false;
                    }
                    r.status = Some(status.clone());
                    true
                })
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(Requeue::Done)
    }
}
