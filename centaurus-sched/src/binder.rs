//! Binding a pod to a node with optimistic concurrency.
//!
//! [`PodBinder`] writes `spec.nodeName` guarded by the pod's revision: enough for one
//! scheduler. [`LedgerBinder`] first books the pod's requests in a per-node ledger, also
//! guarded by revision, so several schedulers sharing the nodes never overcommit one: of two
//! bookings on one node from the same state, the second conflicts, re-reads the ledger and
//! books only if the pod still fits.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use centaurus_core::model::{self, Condition, Pod, PodStatus};
use centaurus_core::objects::Objects;
use centaurus_core::store::{Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::cluster::{NodeState, PodInfo};
use crate::resources::Resources;

/// Why a binding did not happen.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Someone else changed the pod or the node first; schedule the pod again.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The node no longer has room (seen in its ledger); schedule the pod again.
    #[error("node {node} is full: insufficient {resources}")]
    NodeFull {
        /// The node.
        node: String,
        /// What ran out.
        resources: String,
    },
    /// The pod was deleted or bound by someone else: nothing to do.
    #[error("pod is gone or already bound")]
    Gone,
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
}

/// Writes bindings.
#[async_trait]
pub trait Binder: Send + Sync + 'static {
    /// Binds `pod` to `node`.
    async fn bind(&self, pod: &PodInfo, node: &NodeState) -> Result<(), BindError>;
    /// Forgets the booking of a pod that left `node` (deleted, finished, or bound
    /// elsewhere).
    async fn release(&self, pod_uid: &str, node: &str) -> Result<(), BindError>;
}

fn store_err(e: impl std::fmt::Display) -> BindError {
    BindError::Store(e.to_string())
}

/// Binds by writing the pod's `spec.nodeName` and its `PodScheduled` condition, guarded
/// by the pod's revision as the scheduler saw it.
pub struct PodBinder {
    pods: Objects<Pod>,
}

impl PodBinder {
    /// A binder over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            pods: Objects::new(store),
        }
    }
}

/// Sets the pod's `PodScheduled` condition (and phase `Pending` when it has none).
pub(crate) fn set_scheduled(pod: &mut Pod, status: &str, reason: &str, message: &str) {
    let st = pod.status.get_or_insert_with(PodStatus::default);
    if st.phase.is_empty() {
        st.phase = "Pending".into();
    }
    st.conditions.retain(|c| c.type_ != "PodScheduled");
    st.conditions.push(Condition {
        type_: "PodScheduled".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Some(model::now()),
        ..Default::default()
    });
}

/// Marks a pod bound to `node`.
fn set_bound(pod: &mut Pod, node: &str) {
    pod.spec.node_name = node.to_owned();
    set_scheduled(pod, "True", "", "");
}

#[async_trait]
impl Binder for PodBinder {
    async fn bind(&self, info: &PodInfo, node: &NodeState) -> Result<(), BindError> {
        let mut pod = (*info.pod).clone();
        set_bound(&mut pod, &node.name);
        match self.pods.update(&pod).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_not_found() => return Err(BindError::Gone),
            Err(e) if !e.is_conflict() => return Err(store_err(e)),
            Err(_) => {}
        }
        // The pod changed since the scheduler saw it: bind the new state if it is the same
        // pod, still unbound, with the same requests.
        let Some(mut fresh) = self.pods.get(&info.key).await.map_err(store_err)? else {
            return Err(BindError::Gone);
        };
        if fresh.metadata.uid != info.pod.metadata.uid || !fresh.spec.node_name.is_empty() {
            return Err(BindError::Gone);
        }
        if Resources::of_pod(&fresh.spec) != info.request {
            return Err(BindError::Conflict("the pod's requests changed".into()));
        }
        set_bound(&mut fresh, &node.name);
        match self.pods.update(&fresh).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Err(BindError::Gone),
            Err(e) if e.is_conflict() => Err(BindError::Conflict(e.to_string())),
            Err(e) => Err(store_err(e)),
        }
    }

    async fn release(&self, _: &str, _: &str) -> Result<(), BindError> {
        Ok(())
    }
}

/// The bookings on one node: pod UID → its requests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Requests as `[cpu millicores, memory bytes, vm slots]`.
    pub pods: BTreeMap<String, [i64; 3]>,
}

impl Ledger {
    /// The sum of the bookings.
    pub fn total(&self) -> Resources {
        self.pods.values().fold(Resources::default(), |acc, r| {
            acc.plus(Resources {
                cpu_milli: r[0],
                memory: r[1],
                pods: 1,
                vms: r[2],
            })
        })
    }
}

/// The store key of a node's ledger. It lives outside `/registry`, so the API never
/// serves it.
pub fn ledger_key(node: &str) -> String {
    format!("/centaurus/scheduler/ledger/{node}")
}

/// Books each pod in its node's ledger before binding it, so that schedulers running side
/// by side never overcommit a node.
pub struct LedgerBinder {
    store: Arc<dyn Store>,
    pods: PodBinder,
}

impl LedgerBinder {
    /// A binder over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            pods: PodBinder::new(store.clone()),
            store,
        }
    }

    /// Reads a node's ledger and its revision (0 when it has none yet).
    pub async fn ledger(&self, node: &str) -> Result<(Ledger, i64), BindError> {
        match self.store.get(&ledger_key(node)).await.map_err(store_err)? {
            Some(kv) => Ok((
                serde_json::from_slice(&kv.value).map_err(store_err)?,
                kv.mod_revision,
            )),
            None => Ok((Ledger::default(), 0)),
        }
    }

    /// Applies `change` to a node's ledger with compare-and-swap, re-reading on conflict.
    async fn edit(
        &self,
        node: &str,
        mut change: impl FnMut(&mut Ledger) -> Result<bool, BindError>,
    ) -> Result<(), BindError> {
        let key = ledger_key(node);
        loop {
            let (mut ledger, rev) = self.ledger(node).await?;
            if !change(&mut ledger)? {
                return Ok(());
            }
            let value = Bytes::from(serde_json::to_vec(&ledger).map_err(store_err)?);
            let written = if rev == 0 {
                self.store.create(&key, value).await
            } else if ledger.pods.is_empty() {
                self.store.delete(&key, Some(rev)).await
            } else {
                self.store.update(&key, value, rev).await
            };
            match written {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. } | StoreError::AlreadyExists { .. }) => continue,
                Err(StoreError::NotFound { .. }) => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
    }
}

#[async_trait]
impl Binder for LedgerBinder {
    async fn bind(&self, info: &PodInfo, node: &NodeState) -> Result<(), BindError> {
        let uid = info.pod.metadata.uid.clone();
        let r = info.request;
        self.edit(&node.name, |ledger| {
            if ledger.pods.contains_key(&uid) {
                return Ok(false);
            }
            let over = ledger.total().plus(r).exceeding(&node.allocatable);
            if !over.is_empty() {
                return Err(BindError::NodeFull {
                    node: node.name.clone(),
                    resources: over.join(", "),
                });
            }
            ledger
                .pods
                .insert(uid.clone(), [r.cpu_milli, r.memory, r.vms]);
            Ok(true)
        })
        .await?;
        let bound = self.pods.bind(info, node).await;
        if bound.is_err() {
            // Another scheduler may have bound the pod to this very node, booking it under
            // the same UID: keep the booking then.
            let fresh = self.pods.pods.get(&info.key).await.map_err(store_err)?;
            let here =
                fresh.is_some_and(|p| p.metadata.uid == uid && p.spec.node_name == node.name);
            if !here {
                self.release(&uid, &node.name).await?;
            }
        }
        bound
    }

    async fn release(&self, pod_uid: &str, node: &str) -> Result<(), BindError> {
        self.edit(node, |ledger| Ok(ledger.pods.remove(pod_uid).is_some()))
            .await
    }
}
