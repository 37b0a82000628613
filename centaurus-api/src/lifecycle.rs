//! Tenant and namespace lifecycle: a new tenant gets its `default` namespace and its
//! default RBAC objects; deleting a tenant (or namespace) marks it `Terminating` and then removes its whole
//! space before the object itself.

use std::sync::Arc;

use bytes::Bytes;
use centaurus_core::model::{self, Registry, Resource, Scope};
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

    /// Creates a new tenant's `default` namespace and default RBAC objects.
    pub(crate) async fn tenant_created(&self, tenant: &str) {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "default", "tenant": tenant}, "spec": {}, "status": {"phase": "Active"}});
        self.ensure(
            model::object_key("namespaces", Scope::Tenant, tenant, "", "default"),
            ns,
        )
        .await;
        self.tenant_rbac(tenant).await;
    }

    /// Creates the tenant's default ClusterRoles and its administrators' binding
    /// ([`centaurus_tenancy::rbac::tenant_defaults`]) where they are missing.
    async fn tenant_rbac(&self, tenant: &str) {
        use centaurus_tenancy::rbac::{self, ClusterRole, ClusterRoleBinding};
        if self
            .registry
            .by_plural(rbac::GROUP, "v1", ClusterRole::PLURAL)
            .is_none()
        {
            return;
        }
        let (roles, bindings) = rbac::tenant_defaults(tenant, &self.registry);
        for r in roles {
            let key = model::object_key(
                ClusterRole::PLURAL,
                Scope::Tenant,
                tenant,
                "",
                &r.metadata.name,
            );
            self.ensure(key, serde_json::to_value(r).expect("roles encode"))
                .await;
        }
        for b in bindings {
            let key = model::object_key(
                ClusterRoleBinding::PLURAL,
                Scope::Tenant,
                tenant,
                "",
                &b.metadata.name,
            );
            self.ensure(key, serde_json::to_value(b).expect("bindings encode"))
                .await;
        }
    }

    /// Moves the tenant-scoped `tenancy.centaurus.io/v1` Roles of earlier releases (kept
    /// under `/registry/roles/TENANT/NAME`, where RBAC's namespaced Roles now live) to a
    /// ClusterRole and a ClusterRoleBinding of the same name each, and gives their tenants
    /// the default RBAC objects. Returns how many it moved.
    async fn migrate_tenancy_roles(&self) -> Result<usize, StoreError> {
        use centaurus_tenancy::rbac::{
            self, ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject,
        };
        let mut moved = 0;
        for kv in range_all(&*self.store, "/registry/roles/").await?.kvs {
            let Ok(old) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            if old.get("apiVersion").and_then(Value::as_str) != Some("tenancy.centaurus.io/v1") {
                continue;
            }
            let text = |p: &str| {
                old.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            let (tenant, name) = (text("/metadata/tenant"), text("/metadata/name"));
            let names = |p: &str| -> Vec<String> {
                old.pointer(p)
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let rules = old
                .pointer("/spec/rules")
                .and_then(Value::as_array)
                .map(|rules| {
                    rules
                        .iter()
                        .map(|r| PolicyRule {
                            verbs: serde_json::from_value(r["verbs"].clone()).unwrap_or_default(),
                            api_groups: vec!["*".into()],
                            resources: serde_json::from_value(r["resources"].clone())
                                .unwrap_or_default(),
                            ..Default::default()
                        })
                        .collect()
                })
                .unwrap_or_default();
            let meta = model::ObjectMeta {
                name: name.clone(),
                tenant: tenant.clone(),
                ..Default::default()
            };
            let role = ClusterRole {
                api_version: ClusterRole::api_version(),
                kind: ClusterRole::KIND.into(),
                metadata: meta.clone(),
                rules,
                aggregation_rule: None,
            };
            let subject = |kind: &str, name: String| Subject {
                kind: kind.into(),
                api_group: rbac::GROUP.into(),
                name,
                namespace: String::new(),
            };
            let binding = ClusterRoleBinding {
                api_version: ClusterRoleBinding::api_version(),
                kind: ClusterRoleBinding::KIND.into(),
                metadata: meta,
                subjects: names("/spec/users")
                    .into_iter()
                    .map(|u| subject("User", u))
                    .chain(
                        names("/spec/groups")
                            .into_iter()
                            .map(|g| subject("Group", g)),
                    )
                    .collect(),
                role_ref: RoleRef {
                    api_group: rbac::GROUP.into(),
                    kind: "ClusterRole".into(),
                    name: name.clone(),
                },
            };
            let key = |plural| model::object_key(plural, Scope::Tenant, &tenant, "", &name);
            self.ensure(
                key(ClusterRole::PLURAL),
                serde_json::to_value(role).expect("roles encode"),
            )
            .await;
            self.ensure(
                key(ClusterRoleBinding::PLURAL),
                serde_json::to_value(binding).expect("bindings encode"),
            )
            .await;
            self.tenant_rbac(&tenant).await;
            match self.store.delete(&kv.key, Some(kv.mod_revision)).await {
                Ok(_) | Err(StoreError::NotFound { .. }) => moved += 1,
                Err(e) => return Err(e),
            }
        }
        if moved > 0 {
            tracing::info!(
                moved,
                "tenancy roles moved to RBAC ClusterRoles and bindings"
            );
        }
        Ok(moved)
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

    /// Resumes the deletion of every tenant and namespace left `Terminating` by a stop (and
    /// moves roles of earlier releases to RBAC).
    pub async fn resume(&self) -> Result<usize, StoreError> {
        if self
            .registry
            .by_plural(centaurus_tenancy::rbac::GROUP, "v1", "roles")
            .is_some()
        {
            self.migrate_tenancy_roles().await?;
        }
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
