//! The tenant gate: may this caller do this to that tenant's space?

use std::sync::Arc;

use async_trait::async_trait;
use centaurus_core::controller::{Cache, Informer};
use centaurus_core::model::{Resource, Scope};
use centaurus_core::store::{Store, range_all};

use crate::rbac::{self, ClusterRole, ClusterRoleBinding, Policy, RoleBinding};
use crate::{Grant, Identity};

/// What a request does, in Kubernetes' verbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    /// Read one object.
    Get,
    /// Read a collection.
    List,
    /// Stream changes of a collection.
    Watch,
    /// Make an object.
    Create,
    /// Replace an object.
    Update,
    /// Change part of an object.
    Patch,
    /// Remove an object.
    Delete,
}

impl Verb {
    /// The verb's lower-case name, as rules write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }

    /// True for verbs that change state.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Verb::Create | Verb::Update | Verb::Patch | Verb::Delete
        )
    }
}

/// The authorization-relevant facts of a request.
#[derive(Clone, Copy, Debug)]
pub struct Attributes<'a> {
    /// The verb.
    pub verb: Verb,
    /// The API group of the kind (`""` for the core group).
    pub group: &'a str,
    /// The resource plural, with `/subresource` when one is addressed.
    pub resource: &'a str,
    /// Where objects of the kind live.
    pub scope: Scope,
    /// The tenant whose space is addressed; None for cluster-scoped kinds and for the
    /// `all` tenant.
    pub tenant: Option<&'a str>,
    /// The namespace, when the request names one.
    pub namespace: Option<&'a str>,
    /// The object's name, when the request names one.
    pub name: Option<&'a str>,
    /// The equalities a list's or watch's field selector requires (`spec.nodeName`, `n1`):
    /// what it can at most return.
    pub fields: &'a [(String, String)],
}

impl Attributes<'_> {
    /// The value the field selector requires of `path`, if any.
    pub fn field(&self, path: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request was refused (HTTP 403).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

/// Decides whether a caller may make a request.
#[async_trait]
pub trait Authorizer: Send + Sync + 'static {
    /// `Ok` to allow; `Denied` with a reason a person can act on.
    async fn authorize(&self, caller: &Identity, request: &Attributes<'_>) -> Result<(), Denied>;

    /// Whether `caller`, a user outside the `system` tenant, may write `obj`, an RBAC
    /// object of kind `plural` in `tenant`'s space, beyond being allowed the write itself:
    /// what a role allows, or a binding grants, must be what the caller may do there
    /// itself. This default refuses: an authorizer that knows no RBAC cannot tell.
    async fn confirm_rbac(
        &self,
        caller: &Identity,
        tenant: &str,
        plural: &str,
        obj: &serde_json::Value,
    ) -> Result<(), Denied> {
        let _ = (tenant, obj);
        Err(Denied(format!(
            "{} cannot write {plural}: this region's authorizer does not confirm RBAC grants",
            caller.user
        )))
    }
}

/// The default authorizer. System users may do anything. Other users reach only their own
/// tenant's space, as the RBAC bindings of that space allow ([`rbac::Policy`]), and another
/// tenant's space only as a [`Grant`] there names their tenant; cluster-scoped kinds are
/// reserved to the system tenant, except that a user may read its own tenant object.
///
/// A gate made with [`TenantGate::cached`] decides from informer caches of the RBAC kinds
/// and grants and confirms every refusal against the store, so a policy written a moment
/// ago is never missed; one made with [`TenantGate::new`] reads the store for every
/// decision.
#[derive(Clone)]
pub struct TenantGate {
    store: Arc<dyn Store>,
    caches: Option<Caches>,
}

/// Informer caches of the policy kinds.
#[derive(Clone)]
struct Caches {
    roles: Cache<rbac::Role>,
    bindings: Cache<RoleBinding>,
    cluster_roles: Cache<ClusterRole>,
    cluster_bindings: Cache<ClusterRoleBinding>,
    grants: Cache<Grant>,
}

/// Starts an informer of `R` on the current runtime; its cache, once loaded.
async fn cached<R: Resource>(store: &Arc<dyn Store>) -> Cache<R> {
    let informer = Arc::new(Informer::<R>::from_store(
        store.clone(),
        format!("/registry/{}/", R::PLURAL),
    ));
    let cache = informer.cache();
    tokio::spawn(informer.clone().run());
    informer.wait_synced().await;
    cache
}

/// The key prefix of a tenant's (and namespace's) objects of `R`.
fn prefix<R: Resource>(tenant: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("/registry/{}/{tenant}/{ns}/", R::PLURAL),
        None => format!("/registry/{}/{tenant}/", R::PLURAL),
    }
}

impl TenantGate {
    /// A gate that reads roles and grants from `store` for every decision.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            caches: None,
        }
    }

    /// A gate that keeps the policy kinds in informer caches (started here, on the current
    /// tokio runtime) and returns once all are loaded.
    pub async fn cached(store: Arc<dyn Store>) -> Self {
        let caches = Caches {
            roles: cached(&store).await,
            bindings: cached(&store).await,
            cluster_roles: cached(&store).await,
            cluster_bindings: cached(&store).await,
            grants: cached(&store).await,
        };
        Self {
            store,
            caches: Some(caches),
        }
    }

    fn rbac_request<'a>(req: &'a Attributes<'a>) -> rbac::Request<'a> {
        rbac::Request {
            verb: req.verb.as_str(),
            group: req.group,
            resource: req.resource,
            namespace: req.namespace.filter(|_| req.scope == Scope::Namespaced),
            name: req.name,
        }
    }

    fn granted(caller: &Identity, req: &Attributes<'_>, grants: &[Grant]) -> bool {
        let verb = req.verb.as_str();
        grants.iter().any(|g| {
            g.spec.grantee == caller.tenant
                && (g.spec.namespaces.is_empty()
                    || req
                        .namespace
                        .is_some_and(|ns| g.spec.namespaces.iter().any(|n| n == ns)))
                && g.spec.rules.iter().any(|r| r.allows(verb, req.resource))
        })
    }

    /// The tenant's policy for a request in `namespace`, from the caches.
    fn cached_policy(c: &Caches, tenant: &str, namespace: Option<&str>) -> Policy {
        Policy {
            cluster_roles: c
                .cluster_roles
                .list_prefix(&prefix::<ClusterRole>(tenant, None)),
            cluster_bindings: c
                .cluster_bindings
                .list_prefix(&prefix::<ClusterRoleBinding>(tenant, None)),
            roles: namespace.map_or_else(Vec::new, |ns| {
                c.roles.list_prefix(&prefix::<rbac::Role>(tenant, Some(ns)))
            }),
            bindings: namespace.map_or_else(Vec::new, |ns| {
                c.bindings
                    .list_prefix(&prefix::<RoleBinding>(tenant, Some(ns)))
            }),
        }
    }

    /// The tenant's policy for a request in `namespace`, from the store.
    async fn stored_policy(&self, tenant: &str, namespace: Option<&str>) -> Result<Policy, Denied> {
        let mut policy = Policy {
            cluster_roles: self.objects(&prefix::<ClusterRole>(tenant, None)).await?,
            cluster_bindings: self
                .objects(&prefix::<ClusterRoleBinding>(tenant, None))
                .await?,
            ..Default::default()
        };
        if let Some(ns) = namespace {
            policy.roles = self
                .objects(&prefix::<rbac::Role>(tenant, Some(ns)))
                .await?;
            policy.bindings = self
                .objects(&prefix::<RoleBinding>(tenant, Some(ns)))
                .await?;
        }
        Ok(policy)
    }

    async fn objects<R: Resource>(&self, prefix: &str) -> Result<Vec<R>, Denied> {
        let all = range_all(&*self.store, prefix)
            .await
            .map_err(|e| Denied(format!("authorization unavailable: {e}")))?;
        Ok(all
            .kvs
            .iter()
            .filter_map(|kv| match serde_json::from_slice::<R>(&kv.value) {
                Ok(obj) => Some(obj),
                Err(e) => {
                    tracing::warn!(key = %kv.key, error = %e, "undecodable policy object");
                    None
                }
            })
            .collect())
    }
}

#[async_trait]
impl Authorizer for TenantGate {
    async fn authorize(&self, caller: &Identity, req: &Attributes<'_>) -> Result<(), Denied> {
        if caller.is_system() {
            return Ok(());
        }
        let verb = req.verb.as_str();
        if req.scope == Scope::Cluster {
            let own_tenant = req.resource == "tenants"
                && req.verb == Verb::Get
                && req.name == Some(caller.tenant.as_str());
            return if own_tenant {
                Ok(())
            } else {
                Err(Denied(format!(
                    "{} of tenant {:?} cannot {verb} {}: cluster-scoped kinds are reserved to the system tenant",
                    caller.user, caller.tenant, req.resource
                )))
            };
        }
        let Some(tenant) = req.tenant else {
            return Err(Denied(format!(
                "{} of tenant {:?} cannot {verb} {} across all tenants: the tenant \"all\" is reserved to system users",
                caller.user, caller.tenant, req.resource
            )));
        };
        if tenant == caller.tenant {
            let rreq = Self::rbac_request(req);
            if let Some(c) = &self.caches
                && Self::cached_policy(c, tenant, rreq.namespace).allows(caller, &rreq)
            {
                return Ok(());
            }
            // No cache, or the cache said no: decide from the store itself.
            if self
                .stored_policy(tenant, rreq.namespace)
                .await?
                .allows(caller, &rreq)
            {
                return Ok(());
            }
            return Err(Denied(format!(
                "{} of tenant {tenant:?} cannot {verb} {}{}: no role binding of the tenant allows it",
                caller.user,
                req.resource,
                rreq.namespace
                    .map(|ns| format!(" in namespace {ns:?}"))
                    .unwrap_or_default()
            )));
        }
        let grants_prefix = prefix::<Grant>(tenant, None);
        if let Some(c) = &self.caches
            && Self::granted(caller, req, &c.grants.list_prefix(&grants_prefix))
        {
            return Ok(());
        }
        if Self::granted(caller, req, &self.objects(&grants_prefix).await?) {
            Ok(())
        } else {
            Err(Denied(format!(
                "{} of tenant {:?} cannot {verb} {} in tenant {tenant:?}: no grant of that tenant allows it",
                caller.user, caller.tenant, req.resource
            )))
        }
    }

    async fn confirm_rbac(
        &self,
        caller: &Identity,
        tenant: &str,
        plural: &str,
        obj: &serde_json::Value,
    ) -> Result<(), Denied> {
        if caller.is_system() {
            return Ok(());
        }
        if tenant != caller.tenant {
            return Err(Denied(format!(
                "{} of tenant {:?} cannot write {plural} of tenant {tenant:?}: roles and bindings are written by their own tenant's users",
                caller.user, caller.tenant
            )));
        }
        let namespace = obj
            .pointer("/metadata/namespace")
            .and_then(serde_json::Value::as_str)
            .filter(|ns| !ns.is_empty() && matches!(plural, "roles" | "rolebindings"));
        let policy = self.stored_policy(tenant, namespace).await?;
        let decode = |e: serde_json::Error| Denied(format!("undecodable {plural}: {e}"));
        let rules = match plural {
            "roles" => {
                serde_json::from_value::<rbac::Role>(obj.clone())
                    .map_err(decode)?
                    .rules
            }
            "clusterroles" => policy.cluster_role_rules(
                &serde_json::from_value::<ClusterRole>(obj.clone()).map_err(decode)?,
            ),
            "rolebindings" | "clusterrolebindings" => {
                let role_ref: rbac::RoleRef =
                    serde_json::from_value(obj.get("roleRef").cloned().unwrap_or_default())
                        .map_err(decode)?;
                policy.role_rules(&role_ref, namespace)
            }
            _ => return Ok(()),
        };
        policy.covers(caller, namespace, &rules).map_err(Denied)
    }
}
