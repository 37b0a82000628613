//! Binding a pod to a node with optimistic concurrency, through the API.
//!
//! [`PodBinder`] posts a `Binding` (the `pods/binding` subresource), which the API server
//! applies only to an unbound pod of the same UID: enough for one scheduler.
//! [`LedgerBinder`] first books the pod's requests in the node's [`NodeLedger`], guarded by
//! its `resourceVersion`, so several schedulers sharing the nodes never overcommit one: of
//! two bookings on one node from the same state, the second conflicts, re-reads the
//! ledger and books only if the pod still fits.

use async_trait::async_trait;
use centaurus_client::{Api, Client, ClientError};
use centaurus_core::model::{NodeLedger, ObjectMeta, Pod, Resource};
use http::Method;
use serde_json::json;

use crate::cluster::{NodeState, PodInfo};
use crate::resources::Resources;

/// Why a binding did not happen.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Someone else changed the ledger first; schedule the pod again.
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
    /// The API failed or refused.
    #[error("api: {0}")]
    Api(String),
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

fn api_err(e: impl std::fmt::Display) -> BindError {
    BindError::Api(e.to_string())
}

/// Binds by posting a `Binding` for the pod's UID: the API server sets `spec.nodeName` and
/// the `PodScheduled` condition in one write, and refuses a pod bound meanwhile.
pub struct PodBinder {
    pods: Api<Pod>,
}

impl PodBinder {
    /// A binder through `client`.
    pub fn new(client: Client) -> Self {
        Self { pods: client.api() }
    }
}

#[async_trait]
impl Binder for PodBinder {
    async fn bind(&self, info: &PodInfo, node: &NodeState) -> Result<(), BindError> {
        let pod = &info.pod.metadata;
        let path = format!(
            "{}/binding",
            Api::<Pod>::path_of(&info.key).map_err(api_err)?
        );
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node.name},
        });
        match self
            .pods
            .client()
            .send_json(Method::POST, &path, &binding)
            .await
            .and_then(|r| r.success())
        {
            Ok(_) => Ok(()),
            // Deleted, re-created under another UID, or bound by someone else.
            Err(e) if e.is_not_found() || e.is_conflict() => Err(BindError::Gone),
            Err(e) => Err(api_err(e)),
        }
    }

    async fn release(&self, _: &str, _: &str) -> Result<(), BindError> {
        Ok(())
    }
}

/// The key of a node's ledger.
pub fn ledger_key(node: &str) -> String {
    format!("/registry/{}/{node}", NodeLedger::PLURAL)
}

/// Books each pod in its node's [`NodeLedger`] before binding it, so that schedulers
/// running side by side never overcommit a node.
pub struct LedgerBinder {
    ledgers: Api<NodeLedger>,
    pods: PodBinder,
    /// What a booking's key starts with: `PARTITION/` for a tenant partition's, so each
    /// partition knows its own bookings; empty in a region of one partition.
    tag: String,
}

impl LedgerBinder {
    /// A binder through `client`.
    pub fn new(client: Client) -> Self {
        Self {
            ledgers: client.api(),
            pods: PodBinder::new(client),
            tag: String::new(),
        }
    }

    /// A binder that binds pods through `pods` (tenant partition `partition`) and books
    /// them, as `PARTITION/UID`, in the ledgers of `ledgers` (the nodes' resource
    /// partition).
    pub fn split(partition: &str, pods: Client, ledgers: Client) -> Self {
        Self {
            ledgers: ledgers.api(),
            pods: PodBinder::new(pods),
            tag: booking_tag(partition),
        }
    }

    fn booking(&self, uid: &str) -> String {
        format!("{}{uid}", self.tag)
    }

    /// A node's ledger (empty and unwritten when it has none yet).
    pub async fn ledger(&self, node: &str) -> Result<NodeLedger, BindError> {
        Ok(self
            .ledgers
            .get(&ledger_key(node))
            .await
            .map_err(api_err)?
            .unwrap_or_else(|| NodeLedger::typed(ObjectMeta::named(node))))
    }

    /// Applies `change` to a node's ledger with compare-and-swap, re-reading on conflict.
    async fn edit(
        &self,
        node: &str,
        mut change: impl FnMut(&mut NodeLedger) -> Result<bool, BindError>,
    ) -> Result<(), BindError> {
        loop {
            let mut ledger = self.ledger(node).await?;
            if !change(&mut ledger)? {
                return Ok(());
            }
            let written: Result<(), ClientError> = if ledger.metadata.resource_version.is_empty() {
                self.ledgers.create(ledger).await.map(drop)
            } else if ledger.spec.pods.is_empty() {
                let rv = ledger.metadata.resource_version.parse().ok();
                self.ledgers.delete(&ledger_key(node), rv).await
            } else {
                self.ledgers.update(&ledger).await.map(drop)
            };
            match written {
                Ok(()) => return Ok(()),
                Err(e) if e.is_conflict() || e.is_already_exists() || e.is_not_found() => continue,
                Err(e) => return Err(api_err(e)),
            }
        }
    }
}

pub use centaurus_core::model::booking_tag;

/// The sum of a ledger's bookings.
pub fn booked(ledger: &NodeLedger) -> Resources {
    ledger
        .spec
        .pods
        .values()
        .fold(Resources::default(), |acc, r| {
            acc.plus(Resources {
                cpu_milli: r[0],
                memory: r[1],
                pods: 1,
                vms: r[2],
            })
        })
}

#[async_trait]
impl Binder for LedgerBinder {
    async fn bind(&self, info: &PodInfo, node: &NodeState) -> Result<(), BindError> {
        let uid = info.pod.metadata.uid.clone();
        let booking = self.booking(&uid);
        let r = info.request;
        self.edit(&node.name, |ledger| {
            if ledger.spec.pods.contains_key(&booking) {
                return Ok(false);
            }
            let over = booked(ledger).plus(r).exceeding(&node.allocatable);
            if !over.is_empty() {
                return Err(BindError::NodeFull {
                    node: node.name.clone(),
                    resources: over.join(", "),
                });
            }
            ledger
                .spec
                .pods
                .insert(booking.clone(), [r.cpu_milli, r.memory, r.vms]);
            Ok(true)
        })
        .await?;
        let bound = self.pods.bind(info, node).await;
        if bound.is_err() {
            // Another scheduler may have bound the pod to this very node, booking it under
            // the same UID: keep the booking then.
            let fresh = self.pods.pods.get(&info.key).await.map_err(api_err)?;
            let here =
                fresh.is_some_and(|p| p.metadata.uid == uid && p.spec.node_name == node.name);
            if !here {
                self.release(&uid, &node.name).await?;
            }
        }
        bound
    }

    async fn release(&self, pod_uid: &str, node: &str) -> Result<(), BindError> {
        let booking = self.booking(pod_uid);
        self.edit(node, |ledger| {
            Ok(ledger.spec.pods.remove(&booking).is_some())
        })
        .await
    }
}

/// Binds the pods of one tenant partition to nodes of several resource partitions: each
/// pod is booked in its node's ledger in that node's partition ([`NodeState::partition`]),
/// where every tenant partition's scheduler books, so none overcommits a node.
pub struct PartitionBinder {
    partitions: Vec<LedgerBinder>,
    /// Node → the partition it was last bound in (releases after a restart try each).
    homes: std::sync::RwLock<std::collections::HashMap<String, usize>>,
}

impl PartitionBinder {
    /// Binds through `tenant` (tenant partition `partition`) and books through
    /// `resources[i]` for the nodes of resource partition `i`.
    pub fn new(partition: &str, tenant: &Client, resources: &[Client]) -> Self {
        Self {
            partitions: resources
                .iter()
                .map(|r| LedgerBinder::split(partition, tenant.clone(), r.clone()))
                .collect(),
            homes: Default::default(),
        }
    }
}

#[async_trait]
impl Binder for PartitionBinder {
    async fn bind(&self, info: &PodInfo, node: &NodeState) -> Result<(), BindError> {
        let partition = self.partitions.get(node.partition).ok_or_else(|| {
            BindError::Api(format!(
                "node {} is in unknown resource partition {}",
                node.name, node.partition
            ))
        })?;
        self.homes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.name.clone(), node.partition);
        partition.bind(info, node).await
    }

    async fn release(&self, pod_uid: &str, node: &str) -> Result<(), BindError> {
        let home = self
            .homes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .copied();
        match home.and_then(|i| self.partitions.get(i)) {
            Some(p) => p.release(pod_uid, node).await,
            None => {
                for p in &self.partitions {
                    p.release(pod_uid, node).await?;
                }
                Ok(())
            }
        }
    }
}
