//! The Deployment controller: one ReplicaSet per pod template, rolled from the old ones to
//! the new one within `maxSurge` and `maxUnavailable` (or all at once with `Recreate`),
//! for container and VM templates alike.

use std::sync::Arc;

use async_trait::async_trait;
use centaurus_client::{Api, Client, Recorder};
use centaurus_core::controller::{Cache, Controller, Informer, Reconciler, Requeue, Share};
use centaurus_core::model::{
    self, Condition, Deployment, DeploymentStatus, IntOrString, ObjectMeta, ObjectReference,
    ReplicaSet, ReplicaSetSpec, Resource,
};

use crate::{controller_ref, split_key};

/// The label holding the hash of the template a replica set was made from.
pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// The annotation numbering a Deployment's templates (on its replica sets and on the
/// Deployment, its current one), as `kubectl rollout history` reads them.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// The annotation a user records why a Deployment changed in; its replica sets keep it.
pub const CHANGE_CAUSE_ANNOTATION: &str = "kubernetes.io/change-cause";

/// The revision a replica set or a Deployment carries (0: none).
pub fn revision(meta: &ObjectMeta) -> u64 {
    meta.annotations
        .get(REVISION_ANNOTATION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Reconciles deployments.
pub struct DeploymentController {
    events: Recorder,
    sets: Api<ReplicaSet>,
    deployments: Api<Deployment>,
    set_cache: Cache<ReplicaSet>,
}

/// The Deployment's change cause, as a replica set made from it keeps it.
fn change_cause(d: &Deployment) -> std::collections::BTreeMap<String, String> {
    d.metadata
        .annotations
        .get(CHANGE_CAUSE_ANNOTATION)
        .map(|c| (CHANGE_CAUSE_ANNOTATION.to_owned(), c.clone()))
        .into_iter()
        .collect()
}

/// A short stable hash of a pod template.
pub fn template_hash(d: &Deployment) -> String {
    let bytes = serde_json::to_vec(&d.spec.template).expect("templates encode");
    format!(
        "{:010x}",
        centaurus_core::ring::stable_hash(&bytes) & 0xff_ffff_ffff
    )
}

impl DeploymentController {
    /// Runs the controller through `client` until dropped, on its `share` of the
    /// deployments.
    pub async fn run(client: Client, workers: usize, share: Share) {
        let controller =
            Controller::<Deployment>::new(client.api().source("/registry/deployments/"))
                .with_workers(workers)
                .with_share(&share);
        let sets = Arc::new(Informer::<ReplicaSet>::new(
            client.api().source("/registry/replicasets/"),
        ));
        let queue = controller.queue().clone();
        sets.on_change(move |change| {
            let rs = change.object();
            if let Some(owner) = rs.metadata.controller_ref()
                && owner.kind == Deployment::KIND
            {
                queue.add(&model::object_key(
                    Deployment::PLURAL,
                    Deployment::SCOPE,
                    rs.metadata.tenant_or_system(),
                    &rs.metadata.namespace,
                    &owner.name,
                ));
            }
        });
        let reconciler = Self {
            events: Recorder::new(client.clone(), "deployment-controller"),
            sets: client.api(),
            deployments: client.api(),
            set_cache: sets.cache(),
        };
        let task = tokio::spawn(sets.clone().run());
        sets.wait_synced().await;
        controller.run(reconciler).await;
        task.abort();
    }

    /// Gives `rs` revision `revision` and the Deployment's change cause.
    async fn annotate(
        &self,
        rs: &ReplicaSet,
        revision: u64,
        d: &Deployment,
    ) -> Result<ReplicaSet, String> {
        let uid = rs.metadata.uid.clone();
        let cause = change_cause(d);
        let written = self
            .sets
            .modify(&rs.key(), |r| {
                if r.metadata.uid != uid {
                    return false;
                }
                r.metadata
                    .annotations
                    .retain(|k, _| k != CHANGE_CAUSE_ANNOTATION);
                r.metadata.annotations.extend(cause.clone());
                r.metadata
                    .annotations
                    .insert(REVISION_ANNOTATION.into(), revision.to_string());
                true
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(written.unwrap_or_else(|| rs.clone()))
    }

    async fn scale(&self, d: &Deployment, rs: &ReplicaSet, replicas: i32) -> Result<(), String> {
        let from = rs.spec.replicas.unwrap_or(1);
        if from == replicas {
            return Ok(());
        }
        let uid = rs.metadata.uid.clone();
        self.sets
            .modify(&rs.key(), |r| {
                if r.metadata.uid != uid {
                    return false;
                }
                r.spec.replicas = Some(replicas);
                r.metadata.generation += 1;
                true
            })
            .await
            .map_err(|e| e.to_string())?;
        let way = if replicas > from { "up" } else { "down" };
        self.events.normal(
            ObjectReference::to(d),
            "ScalingReplicaSet",
            format!(
                "Scaled {way} replica set {} from {from} to {replicas}",
                rs.metadata.name
            ),
        );
        Ok(())
    }
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(1)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.available_replicas)
}

#[async_trait]
impl Reconciler<Deployment> for DeploymentController {
    async fn reconcile(&self, key: &str, d: Option<Deployment>) -> Result<Requeue, String> {
        let Some(d) = d.filter(|d| d.metadata.deletion_timestamp.is_none()) else {
            if let Some((tenant, ns, name)) = split_key(key) {
                for rs in self
                    .set_cache
                    .list_prefix(&format!("/registry/replicasets/{tenant}/{ns}/"))
                {
                    if rs
                        .metadata
                        .controller_ref()
                        .is_some_and(|r| r.kind == Deployment::KIND && r.name == name)
                    {
                        self.sets
                            .delete(&rs.key(), None)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                }
            }
            return Ok(Requeue::Done);
        };
        let m = &d.metadata;
        let tenant = m.tenant_or_system().to_owned();
        let mut owned: Vec<ReplicaSet> = self
            .set_cache
            .list_prefix(&format!("/registry/replicasets/{tenant}/{}/", m.namespace))
            .into_iter()
            .filter(|rs| rs.metadata.controller_ref().is_some_and(|r| r.uid == m.uid))
            .collect();
        owned.sort_by_key(|rs| rs.metadata.creation_timestamp);
        let hash = template_hash(&d);
        let newest_other = |current: Option<&str>| {
            owned
                .iter()
                .filter(|rs| Some(rs.metadata.name.as_str()) != current)
                .map(|rs| revision(&rs.metadata))
                .max()
                .unwrap_or(0)
        };
        let want = d.spec.replicas.unwrap_or(1).max(0);
        let current = owned
            .iter()
            .position(|rs| rs.metadata.labels.get(TEMPLATE_HASH_LABEL) == Some(&hash));
        let new_rs = match current {
            Some(i) => {
                // A template used again (a rollback) becomes the newest revision.
                let newest = newest_other(Some(&owned[i].metadata.name));
                let rs = owned.remove(i);
                if revision(&rs.metadata) <= newest {
                    self.annotate(&rs, newest + 1, &d).await?
                } else {
                    rs
                }
            }
            None if d.spec.paused => return Ok(Requeue::Done),
            None => {
                let mut template = d.spec.template.clone();
                template
                    .metadata
                    .labels
                    .insert(TEMPLATE_HASH_LABEL.into(), hash.clone());
                let mut selector = d.spec.selector.clone();
                selector
                    .match_labels
                    .insert(TEMPLATE_HASH_LABEL.into(), hash.clone());
                let mut labels = template.metadata.labels.clone();
                labels.insert(TEMPLATE_HASH_LABEL.into(), hash.clone());
                let mut annotations = change_cause(&d);
                annotations.insert(
                    REVISION_ANNOTATION.into(),
                    (newest_other(None) + 1).to_string(),
                );
                let mut rs = ReplicaSet::typed(ObjectMeta {
                    name: format!("{}-{hash}", m.name),
                    tenant: tenant.clone(),
                    namespace: m.namespace.clone(),
                    labels,
                    annotations,
                    owner_references: vec![controller_ref(&d)],
                    ..Default::default()
                });
                // The first replica set starts at full size; later ones grow as old shrink.
                let start = if owned.is_empty() { want } else { 0 };
                rs.spec = ReplicaSetSpec {
                    replicas: Some(start),
                    selector,
                    template,
                    min_ready_seconds: d.spec.min_ready_seconds,
                };
                match self.sets.create(rs).await {
                    Ok(rs) => {
                        if start > 0 {
                            self.events.normal(
                                ObjectReference::to(&d),
                                "ScalingReplicaSet",
                                format!(
                                    "Scaled up replica set {} from 0 to {start}",
                                    rs.metadata.name
                                ),
                            );
                        }
                        rs
                    }
                    Err(e) if e.is_already_exists() => {
                        // Made by an earlier pass whose write we have not seen yet.
                        return Ok(Requeue::After(std::time::Duration::from_millis(200)));
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
        };
        let old = owned;
        let current_revision = revision(&new_rs.metadata);
        if revision(&d.metadata) != current_revision {
            let uid = m.uid.clone();
            self.deployments
                .modify(key, |x| {
                    if x.metadata.uid != uid || revision(&x.metadata) == current_revision {
                        return false;
                    }
                    x.metadata
                        .annotations
                        .insert(REVISION_ANNOTATION.into(), current_revision.to_string());
                    true
                })
                .await
                .map_err(|e| e.to_string())?;
        }
        if !d.spec.paused {
            let recreate = d.spec.strategy.type_.as_deref() == Some("Recreate");
            if recreate {
                for rs in &old {
                    self.scale(&d, rs, 0).await?;
                }
                let old_pods: i32 = old
                    .iter()
                    .map(|rs| rs.status.as_ref().map_or(0, |s| s.replicas))
                    .sum();
                if old_pods == 0 {
                    self.scale(&d, &new_rs, want).await?;
                }
            } else {
                let ru = d.spec.strategy.rolling_update.clone().unwrap_or_default();
                let pct = IntOrString::String("25%".into());
                let surge = ru.max_surge.as_ref().unwrap_or(&pct).resolve(want, true)?;
                let max_unavailable = ru
                    .max_unavailable
                    .as_ref()
                    .unwrap_or(&pct)
                    .resolve(want, false)?;
                let (surge, max_unavailable) = if surge == 0 && max_unavailable == 0 {
                    (1, 0)
                } else {
                    (surge, max_unavailable)
                };
                let total: i32 = replicas(&new_rs) + old.iter().map(replicas).sum::<i32>();
                // Grow the new set within the surge.
                let room = want + surge - total;
                let target = if old.iter().all(|rs| replicas(rs) == 0) {
                    want
                } else {
                    (replicas(&new_rs) + room.max(0)).min(want)
                };
                self.scale(&d, &new_rs, target.max(0)).await?;
                // Shrink the old sets as far as availability allows.
                let available_now: i32 =
                    available(&new_rs) + old.iter().map(available).sum::<i32>();
                let mut can_remove = available_now - (want - max_unavailable);
                // Old pods that are not available cost no availability: remove them first.
                for rs in &old {
                    let unavailable = (replicas(rs) - available(rs)).max(0);
                    let cut = unavailable.min(replicas(rs));
                    let keep = replicas(rs) - cut;
                    let extra = can_remove.clamp(0, keep);
                    can_remove -= extra;
                    self.scale(&d, rs, keep - extra).await?;
                }
            }
        }
        // Old sets at zero beyond the history limit are removed.
        let limit = d.spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let idle: Vec<&ReplicaSet> = old.iter().filter(|rs| replicas(rs) == 0).collect();
        if idle.len() > limit {
            for rs in &idle[..idle.len() - limit] {
                self.sets
                    .delete(&rs.key(), None)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        let sum = |f: &dyn Fn(&ReplicaSet) -> i32| f(&new_rs) + old.iter().map(f).sum::<i32>();
        let st = |rs: &ReplicaSet| rs.status.clone().unwrap_or_default();
        let ready = sum(&|rs| st(rs).ready_replicas);
        let avail = sum(&|rs| st(rs).available_replicas);
        let updated = st(&new_rs).replicas;
        let is_available = avail
            >= want - {
                let pct = IntOrString::String("25%".into());
                d.spec
                    .strategy
                    .rolling_update
                    .as_ref()
                    .and_then(|r| r.max_unavailable.clone())
                    .unwrap_or(pct)
                    .resolve(want, false)
                    .unwrap_or(0)
            };
        let status = DeploymentStatus {
            replicas: sum(&|rs| st(rs).replicas),
            updated_replicas: updated,
            ready_replicas: ready,
            available_replicas: avail,
            unavailable_replicas: (want - avail).max(0),
            observed_generation: m.generation,
            conditions: vec![Condition {
                type_: "Available".into(),
                status: if is_available { "True" } else { "False" }.into(),
                reason: if is_available {
                    "MinimumReplicasAvailable"
                } else {
                    "MinimumReplicasUnavailable"
                }
                .into(),
                ..Default::default()
            }],
        };
        if d.status.as_ref() != Some(&status) {
            let uid = m.uid.clone();
            self.deployments
                .modify_status(key, |x| {
                    if x.metadata.uid != uid || x.status.as_ref() == Some(&status) {
                        return false;
                    }
                    x.status = Some(status.clone());
                    true
                })
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(Requeue::Done)
    }
}
