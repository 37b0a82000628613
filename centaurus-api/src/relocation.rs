//! Moving a tenant from one tenant partition to another, with its objects, its tokens and
//! its pods' node bookings, while its workloads keep running and its watches carry on.
//!
//! The move works on the partitions' stores (as an operator's tool, beside the running API
//! servers, which follow their stores):
//!
//! 1. **Freeze**: the tenant becomes [`TENANT_MOVING`] where it is; its API servers refuse
//!    writes into its space with 503 and `Retry-After` (stock clients wait and retry), and
//!    the move waits `settle` for writes admitted just before to commit.
//! 2. **Copy**: the Tenant (same UID, so its credentials stay valid) as [`TENANT_ARRIVING`]
//!    first, then every object of its space byte for byte (UIDs, owners, status), the
//!    bouncers and dividers of its VPCs, and the digests of its tokens.
//! 3. **Rebook**: each bound pod's booking in its node's ledger (in whichever resource
//!    partition holds the node) passes from the source partition's tag to the target's, in
//!    one write per ledger, so no scheduler ever sees the node's capacity free.
//! 4. **Switch**: the copy becomes `Active` with [`ANNOTATION_ARRIVED_AT`] (the target's
//!    revision after the copy, where the front door resumes the tenant's watches), then the
//!    source [`TENANT_MOVED`]; the front door now routes the tenant to the target.
//! 5. **Drain**, after `settle` again (for watches and node agents to follow): each source
//!    object is marked with [`ANNOTATION_MOVING_TO`] (so node agents keep its pods running
//!    and follow them to the target, and its VPC operator forgets its VPCs without
//!    unprogramming hosts), its VPCs' VNIs are retired there
//!    ([`centaurus_vpc::admission::RETIRED_VNIS`]), then its objects, its tokens and the
//!    Tenant are deleted there.
//!
//! Every step can be run again: a move interrupted anywhere is resumed by moving again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use centaurus_core::model::Resource;
use centaurus_core::model::{
    self, ANNOTATION_ARRIVED_AT, ANNOTATION_MOVED_FROM, ANNOTATION_MOVING_TO, Registry, Scope,
    TENANT_ARRIVING, TENANT_MOVED, TENANT_MOVING,
};
use centaurus_core::store::{KeyValue, Revision, Store, StoreError, range_all};
use centaurus_vpc::kinds::{Bouncer, Divider};
use serde_json::{Value, json};

/// One tenant partition as a move sees it.
#[derive(Clone)]
pub struct PartitionStore {
    /// The partition's name (its bookings are tagged with it).
    pub name: String,
    /// Its store.
    pub store: Arc<dyn Store>,
}

/// A tenant's move.
pub struct TenantMove {
    /// The tenant.
    pub tenant: String,
    /// Where it is.
    pub from: PartitionStore,
    /// Where it goes.
    pub to: PartitionStore,
    /// The stores of the resource partitions (the nodes' ledgers).
    pub resources: Vec<Arc<dyn Store>>,
    /// The kinds the tenant partitions serve.
    pub registry: Arc<Registry>,
    /// How long the move gives writes admitted before the freeze, and watches and node
    /// agents after the switch, to catch up.
    pub settle: Duration,
}

/// What a move did.
#[derive(Clone, Debug, Default)]
pub struct Moved {
    /// Objects copied (the Tenant included).
    pub objects: usize,
    /// Token digests copied.
    pub tokens: usize,
    /// Pod bookings passed to the target partition.
    pub bookings: usize,
    /// The target's revision once the copy was complete.
    pub arrived_at: Revision,
    /// How long the tenant's space took no writes (freeze to switch).
    pub frozen_for: Duration,
    /// Keys deleted from the source.
    pub drained: usize,
}

/// Why a move failed or was refused.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// The move cannot be done as asked.
    #[error("{0}")]
    Refused(String),
    /// A store failed; moving again resumes.
    #[error("{what}: {source}; moving again resumes the move")]
    Store {
        /// What the move was doing.
        what: String,
        /// The store's error.
        source: StoreError,
    },
}

fn store_err(what: impl Into<String>) -> impl FnOnce(StoreError) -> MoveError {
    let what = what.into();
    move |source| MoveError::Store { what, source }
}

/// Writes done at once.
const BATCH: usize = 256;

fn tenant_key(tenant: &str) -> String {
    model::object_key("tenants", Scope::Cluster, "", "", tenant)
}

fn phase(v: &Value) -> &str {
    v.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn annotation<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v.pointer("/metadata/annotations")
        .and_then(|a| a.get(name))
        .and_then(Value::as_str)
}

fn set_annotation(v: &mut Value, name: &str, value: Option<&str>) {
    let meta = &mut v["metadata"];
    if !meta["annotations"].is_object() {
        meta["annotations"] = json!({});
    }
    let annotations = meta["annotations"].as_object_mut().expect("an object");
    match value {
        Some(value) => {
            annotations.insert(name.to_owned(), json!(value));
        }
        None => {
            annotations.remove(name);
        }
    }
    if annotations.is_empty()
        && let Some(m) = meta.as_object_mut()
    {
        m.remove("annotations");
    }
}

fn decode(kv: &KeyValue) -> Result<Value, MoveError> {
    let mut v: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| MoveError::Refused(format!("{} is corrupt: {e}", kv.key)))?;
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    Ok(v)
}

fn encode(v: &Value) -> Bytes {
    Bytes::from(v.to_string())
}

/// Writes `value` at `key`, creating it or replacing what is there.
async fn put(store: &dyn Store, key: &str, value: Bytes) -> Result<KeyValue, StoreError> {
    loop {
        match store.create(key, value.clone()).await {
            Err(StoreError::AlreadyExists { .. }) => {}
            done => return done,
        }
        let Some(kv) = store.get(key).await? else {
            continue;
        };
        match store.update(key, value.clone(), kv.mod_revision).await {
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => continue,
            done => return done,
        }
    }
}

/// Rewrites the object at `key` with `change` (which says whether it changed anything),
/// retrying on conflicts. Returns false when the key does not exist.
async fn modify(
    store: &dyn Store,
    key: &str,
    mut change: impl FnMut(&mut Value) -> bool,
) -> Result<bool, MoveError> {
    loop {
        let Some(kv) = store
            .get(key)
            .await
            .map_err(store_err(format!("reading {key}")))?
        else {
            return Ok(false);
        };
        let mut v = decode(&kv)?;
        if !change(&mut v) {
            return Ok(true);
        }
        match store.update(key, encode(&v), kv.mod_revision).await {
            Ok(_) => return Ok(true),
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(store_err(format!("writing {key}"))(e)),
        }
    }
}

/// Runs `work` over `items`, [`BATCH`] at a time in flight.
async fn batched<T: Send + 'static>(
    items: Vec<T>,
    work: impl Fn(T) -> futures::future::BoxFuture<'static, Result<(), MoveError>>,
) -> Result<(), MoveError> {
    let mut it = items.into_iter().peekable();
    while it.peek().is_some() {
        let mut set = tokio::task::JoinSet::new();
        for item in it.by_ref().take(BATCH) {
            set.spawn(work(item));
        }
        while let Some(done) = set.join_next().await {
            done.map_err(|e| MoveError::Refused(format!("a copy task failed: {e}")))??;
        }
    }
    Ok(())
}

impl TenantMove {
    /// The key prefixes of the tenant's space.
    fn space(&self) -> Vec<String> {
        self.registry
            .kinds()
            .filter(|k| k.scope != Scope::Cluster)
            .map(|k| k.prefix(Some(&self.tenant), None))
            .collect()
    }

    /// The region-scoped objects that belong to the tenant: the bouncers and dividers of
    /// its VPCs (`spec.tenant`).
    async fn owned(&self, store: &dyn Store) -> Result<Vec<KeyValue>, MoveError> {
        let mut owned = Vec::new();
        for plural in [Bouncer::PLURAL, Divider::PLURAL] {
            let prefix = format!("/registry/{plural}/{}", self.tenant);
            let page = range_all(store, &prefix)
                .await
                .map_err(store_err(format!("reading {prefix}")))?;
            owned.extend(page.kvs.into_iter().filter(|kv| {
                serde_json::from_slice::<Value>(&kv.value)
                    .is_ok_and(|v| v["spec"]["tenant"].as_str() == Some(self.tenant.as_str()))
            }));
        }
        Ok(owned)
    }

    /// Every object of the tenant in `store`: its space and what it owns beyond it.
    async fn objects(&self, store: &dyn Store) -> Result<Vec<KeyValue>, MoveError> {
        let mut kvs = Vec::new();
        for prefix in self.space() {
            let page = range_all(store, &prefix)
                .await
                .map_err(store_err(format!("reading {prefix}")))?;
            kvs.extend(page.kvs);
        }
        kvs.extend(self.owned(store).await?);
        Ok(kvs)
    }

    /// The tenant's token digests in `store`.
    async fn tokens(&self, store: &dyn Store) -> Result<Vec<KeyValue>, MoveError> {
        let all = range_all(store, centaurus_tenancy::tokens::PREFIX)
            .await
            .map_err(store_err("listing tokens"))?;
        Ok(all
            .kvs
            .into_iter()
            .filter(|kv| {
                serde_json::from_slice::<Value>(&kv.value)
                    .is_ok_and(|v| v["tenant"].as_str() == Some(self.tenant.as_str()))
            })
            .collect())
    }

    /// Moves the tenant, telling `progress` each step.
    pub async fn run(&self, progress: impl Fn(&str)) -> Result<Moved, MoveError> {
        let (from, to) = (&*self.from.store, &*self.to.store);
        let key = tenant_key(&self.tenant);
        if self.tenant == model::SYSTEM_TENANT {
            return Err(MoveError::Refused(
                "the system tenant lives in every partition: it does not move".into(),
            ));
        }
        if self.from.name == self.to.name {
            return Err(MoveError::Refused(format!(
                "tenant {} is already in {}",
                self.tenant, self.to.name
            )));
        }
        let source = from
            .get(&key)
            .await
            .map_err(store_err("reading the tenant"))?
            .ok_or_else(|| {
                MoveError::Refused(format!(
                    "tenant {} is not in {}",
                    self.tenant, self.from.name
                ))
            })?;
        let mut tenant = decode(&source)?;
        if tenant.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(MoveError::Refused(format!(
                "tenant {} is being deleted",
                self.tenant
            )));
        }
        let going = annotation(&tenant, ANNOTATION_MOVING_TO).map(str::to_owned);
        if going.as_deref().is_some_and(|g| g != self.to.name) {
            return Err(MoveError::Refused(format!(
                "tenant {} is being moved to {}: move it there first",
                self.tenant,
                going.unwrap_or_default()
            )));
        }
        if let Some(there) = to
            .get(&key)
            .await
            .map_err(store_err("reading the target"))?
        {
            let there = decode(&there)?;
            // Only the copy of this very move, when resuming it.
            let ours = going.as_deref() == Some(self.to.name.as_str())
                && annotation(&there, ANNOTATION_MOVED_FROM) == Some(self.from.name.as_str());
            if !ours {
                return Err(MoveError::Refused(format!(
                    "{} already holds a tenant {}",
                    self.to.name, self.tenant
                )));
            }
        }
        let mut moved = Moved::default();
        let started = Instant::now();
        if phase(&tenant) != TENANT_MOVED {
            if phase(&tenant) != TENANT_MOVING {
                progress("freezing the tenant's space");
                tenant["status"]["phase"] = json!(TENANT_MOVING);
                set_annotation(&mut tenant, ANNOTATION_MOVING_TO, Some(&self.to.name));
                from.update(&key, encode(&tenant), source.mod_revision)
                    .await
                    .map_err(store_err("freezing the tenant"))?;
                tokio::time::sleep(self.settle).await;
            }
            self.copy(&tenant, &mut moved, &progress).await?;
            progress("switching the tenant to its new partition");
            let arrived = moved.arrived_at.to_string();
            modify(to, &key, |t| {
                t["status"]["phase"] = json!("Active");
                set_annotation(t, ANNOTATION_ARRIVED_AT, Some(&arrived));
                true
            })
            .await?;
            modify(from, &key, |t| {
                t["status"]["phase"] = json!(TENANT_MOVED);
                true
            })
            .await?;
            moved.frozen_for = started.elapsed();
            tokio::time::sleep(self.settle).await;
        }
        progress("draining the old partition");
        moved.drained = self.drain().await?;
        Ok(moved)
    }

    /// Copies the Tenant, its space and its tokens; passes its pods' bookings.
    async fn copy(
        &self,
        tenant: &Value,
        moved: &mut Moved,
        progress: &impl Fn(&str),
    ) -> Result<(), MoveError> {
        let (from, to) = (self.from.store.clone(), self.to.store.clone());
        let key = tenant_key(&self.tenant);
        let mut arriving = tenant.clone();
        arriving["status"]["phase"] = json!(TENANT_ARRIVING);
        set_annotation(&mut arriving, ANNOTATION_MOVING_TO, None);
        set_annotation(&mut arriving, ANNOTATION_ARRIVED_AT, None);
        set_annotation(&mut arriving, ANNOTATION_MOVED_FROM, Some(&self.from.name));
        put(&*to, &key, encode(&arriving))
            .await
            .map_err(store_err("writing the tenant's copy"))?;
        moved.objects += 1;
        // Nothing writes into the space now: what is read is one state of it.
        let kvs = self.objects(&*from).await?;
        let tokens = self.tokens(&*from).await?;
        progress(&format!(
            "copying {} objects and {} tokens",
            kvs.len(),
            tokens.len()
        ));
        moved.objects += kvs.len();
        moved.tokens = tokens.len();
        let pods: Vec<Value> = kvs
            .iter()
            .filter(|kv| kv.key.starts_with("/registry/pods/"))
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect();
        let copies: Vec<KeyValue> = kvs.into_iter().chain(tokens).collect();
        batched(copies, |kv| {
            let to = to.clone();
            Box::pin(async move {
                put(&*to, &kv.key, kv.value)
                    .await
                    .map(drop)
                    .map_err(store_err(format!("copying {}", kv.key)))
            })
        })
        .await?;
        moved.bookings = self.rebook(&pods).await?;
        moved.arrived_at = to
            .revision()
            .await
            .map_err(store_err("reading the target's revision"))?;
        Ok(())
    }

    /// Passes the bookings of `pods` from the source partition to the target, per ledger.
    async fn rebook(&self, pods: &[Value]) -> Result<usize, MoveError> {
        let mut by_node: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for p in pods {
            let (Some(node), Some(uid)) = (
                p.pointer("/spec/nodeName").and_then(Value::as_str),
                p.pointer("/metadata/uid").and_then(Value::as_str),
            ) else {
                continue;
            };
            if !node.is_empty() {
                by_node.entry(node).or_default().push(uid);
            }
        }
        let (old, new) = (
            model::booking_tag(&self.from.name),
            model::booking_tag(&self.to.name),
        );
        let mut passed = 0;
        for (node, uids) in by_node {
            let key = model::object_key("nodeledgers", Scope::Cluster, "", "", node);
            for rp in &self.resources {
                let mut count = 0;
                let found = modify(&**rp, &key, |ledger| {
                    count = 0;
                    let Some(bookings) = ledger
                        .pointer_mut("/spec/pods")
                        .and_then(Value::as_object_mut)
                    else {
                        return false;
                    };
                    for uid in &uids {
                        if let Some(b) = bookings.remove(&format!("{old}{uid}")) {
                            bookings.insert(format!("{new}{uid}"), b);
                            count += 1;
                        }
                    }
                    count > 0
                })
                .await?;
                if found {
                    passed += count;
                    break;
                }
            }
        }
        Ok(passed)
    }

    /// Deletes the tenant's objects, tokens and Tenant from the source, each object marked
    /// first, so that what acts on their deletion can tell it is a move (node agents keep
    /// the pods running, VPC operators leave the hosts programmed), and the VNIs of its VPCs
    /// retired there, so the source never hands them out again.
    async fn drain(&self) -> Result<usize, MoveError> {
        let from = self.from.store.clone();
        let to_name = self.to.name.clone();
        let objects = self.objects(&*from).await?;
        for kv in objects
            .iter()
            .filter(|kv| kv.key.starts_with("/registry/vpcs/"))
        {
            let vni = serde_json::from_slice::<Value>(&kv.value)
                .ok()
                .and_then(|v| v["spec"]["vni"].as_u64());
            if let Some(vni) = vni.filter(|v| *v > 0) {
                let key = format!("{}{vni}", centaurus_vpc::admission::RETIRED_VNIS);
                let why = json!({"tenant": self.tenant, "vpc": kv.key, "movedTo": to_name});
                put(&*from, &key, encode(&why))
                    .await
                    .map_err(store_err(format!("retiring VNI {vni}")))?;
            }
        }
        let keys: Vec<String> = objects.into_iter().map(|kv| kv.key).collect();
        batched(keys.clone(), |key| {
            let (from, to_name) = (from.clone(), to_name.clone());
            Box::pin(async move {
                modify(&*from, &key, |p| {
                    let marked = annotation(p, ANNOTATION_MOVING_TO) == Some(to_name.as_str());
                    set_annotation(p, ANNOTATION_MOVING_TO, Some(&to_name));
                    !marked
                })
                .await
                .map(drop)
            })
        })
        .await?;
        let mut keys = keys;
        keys.extend(self.tokens(&*from).await?.into_iter().map(|kv| kv.key));
        let drained = keys.len() + 1;
        keys.push(tenant_key(&self.tenant));
        // The Tenant last: while it is there, the partition refuses writes into the space.
        let last = keys.pop().expect("the tenant's key");
        batched(keys, |key| {
            let from = from.clone();
            Box::pin(async move { delete(&*from, &key).await })
        })
        .await?;
        delete(&*from, &last).await?;
        Ok(drained)
    }
}

async fn delete(store: &dyn Store, key: &str) -> Result<(), MoveError> {
    match store.delete(key, None).await {
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(store_err(format!("deleting {key}"))(e)),
    }
}
