//! Tenant and namespace lifecycle: a new tenant gets its `default` namespace and `admin`
//! role; deleting a tenant (or namespace) marks it `Terminating` and then removes its whole
//! space before the object itself.

use std::sync::Arc;

use bytes::Bytes;
use centaurus_core::model::{self, Registry, Scope};
use centaurus_core::store::{RangeOptions, Store, StoreError, range_all};
use serde_json::{Value, json};

/// Keys a space deletion reads and deletes at once.
const DELETE_PAGE: usize = 500;

/// Server-set metadata of a new object: uid, hashKey, creationTimestamp, generation.
pub(crate) fn stamp(meta: &mut serde_json::Map<String, Value>) {
    let uid = model::new_uid();
    meta.insert("hashKey".into(), json!(model::hash_key_of(&uid)));
    meta.insert("uid".into(), json!(uid));
    meta.insert("creationTimestamp".into(), json!(model::now()));
    meta.insert("generation".into(), json!(1));
}

/// Runs the lifecycle side effects of tenant and namespace writes.
#[derive(Clone)]
pub(crate) struct Lifecycle {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
}

impl Lifecycle {
    pub(crate) fn new(store: Arc<dyn Store>, registry: Arc<Registry>) -> Self {
        Self { store, registry }
    }

    async fn ensure(&self, key: String, mut obj: Value) {
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            stamp(meta);
        }
        let bytes = Bytes::from(obj.to_string());
        match self.store.create(&key, bytes).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => tracing::error!(%key, error = %e, "tenant space setup failed"),
        }
    }

    /// Creates a new tenant's `default` namespace and `admin` role.
    pub(crate) async fn tenant_created(&self, tenant: &str) {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "default", "tenant": tenant}, "spec": {}, "status": {"phase": "Active"}});
        self.ensure(
            model::object_key("namespaces", Scope::Tenant, tenant, "", "default"),
            ns,
        )
        .await;
        if self
            .registry
            .by_plural(centaurus_tenancy::kinds::GROUP, "v1", "roles")
            .is_some()
        {
            let role = serde_json::to_value(centaurus_tenancy::kinds::admin_role(tenant))
                .expect("roles encode");
            self.ensure(
                model::object_key("roles", Scope::Tenant, tenant, "", "admin"),
                role,
            )
            .await;
        }
    }

    /// Deletes everything in a terminating tenant's or namespace's space, then the object at
    /// `key`, in the background.
    pub(crate) fn delete_space(&self, plural: &str, key: &str, obj: &Value) {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let tenant = obj
            .pointer("/metadata/tenant")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let prefixes: Vec<String> = self
            .registry
            .kinds()
            .filter_map(|k| match (plural, k.scope) {
                ("tenants", Scope::Tenant | Scope::Namespaced) => Some(k.prefix(Some(&name), None)),
                ("namespaces", Scope::Namespaced) => Some(k.prefix(Some(&tenant), Some(&name))),
                _ => None,
            })
            .collect();
        let this = self.clone();
        let key = key.to_owned();
        tokio::spawn(async move {
            for prefix in prefixes {
                if let Err(e) = this.delete_prefix(&prefix).await {
                    tracing::error!(%prefix, error = %e, "space deletion stopped; it resumes at the next start");
                    return;
                }
            }
            match this.store.delete(&key, None).await {
                Ok(_) | Err(StoreError::NotFound { .. }) => tracing::info!(%key, "space deleted"),
                Err(e) => tracing::error!(%key, error = %e, "space deletion failed"),
            }
        });
    }

    /// Deletes every key under `prefix`, a page of [`DELETE_PAGE`] at a time. A page's
    /// deletes are in flight together, so the store commits them in a few transactions
    /// (redb's group commit takes up to a batch of them in one) instead of one each.
    async fn delete_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        loop {
            let page = self
                .store
                .range(
                    prefix,
                    RangeOptions {
                        limit: DELETE_PAGE,
                        ..Default::default()
                    },
                )
                .await?;
            let mut deletes = tokio::task::JoinSet::new();
            for kv in page.kvs {
                let store = self.store.clone();
                deletes.spawn(async move { store.delete(&kv.key, None).await });
            }
            while let Some(done) = deletes.join_next().await {
                match done.map_err(|e| StoreError::Backend(e.to_string()))? {
                    Ok(_) | Err(StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            if !page.more {
                return Ok(());
            }
        }
    }

    /// Resumes the deletion of every tenant and namespace left `Terminating` by a stop.
    pub async fn resume(&self) -> Result<usize, StoreError> {
        let mut resumed = 0;
        for plural in ["tenants", "namespaces"] {
            for kv in range_all(&*self.store, &format!("/registry/{plural}/"))
                .await?
                .kvs
            {
                if let Ok(obj) = serde_json::from_slice::<Value>(&kv.value)
                    && obj.pointer("/metadata/deletionTimestamp").is_some()
                {
                    self.delete_space(plural, &kv.key, &obj);
                    resumed += 1;
                }
            }
        }
        Ok(resumed)
    }
}
