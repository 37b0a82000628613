//! The tenant gate: may this caller do this to that tenant's space?

use std::sync::Arc;

use async_trait::async_trait;
use centaurus_core::controller::{Cache, Informer};
use centaurus_core::model::{Resource, Scope};
use centaurus_core::store::{Store, range_all};

use crate::{Grant, Identity, Role};

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
}

/// The default authorizer. System users may do anything. Other users reach only their own
/// tenant's space, as the [`Role`]s of that space allow, and another tenant's space only as
/// a [`Grant`] there names their tenant; cluster-scoped kinds are reserved to the system
/// tenant, except that a user may read its own tenant object.
///
/// A gate made with [`TenantGate::cached`] decides from informer caches of roles and grants
/// and confirms every refusal against the store, so a policy written a moment ago is never
/// missed; one made with [`TenantGate::new`] reads the store for every decision.
#[derive(Clone)]
pub struct TenantGate {
    store: Arc<dyn Store>,
    caches: Option<(Cache<Role>, Cache<Grant>)>,
}

impl TenantGate {
    /// A gate that reads roles and grants from `store` for every decision.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            caches: None,
        }
    }

    /// A gate that keeps roles and grants in informer caches (started here, on the current
    /// tokio runtime) and returns once both are loaded.
    pub async fn cached(store: Arc<dyn Store>) -> Self {
        let roles = Arc::new(Informer::<Role>::from_store(
            store.clone(),
            format!("/registry/{}/", Role::PLURAL),
        ));
        let grants = Arc::new(Informer::<Grant>::from_store(
            store.clone(),
            format!("/registry/{}/", Grant::PLURAL),
        ));
        let caches = (roles.cache(), grants.cache());
        tokio::spawn(roles.clone().run());
        tokio::spawn(grants.clone().run());
        roles.wait_synced().await;
        grants.wait_synced().await;
        Self {
            store,
            caches: Some(caches),
        }
    }

    fn decide(
        caller: &Identity,
        req: &Attributes<'_>,
        tenant: &str,
        roles: &[Role],
        grants: &[Grant],
    ) -> bool {
        let verb = req.verb.as_str();
        if tenant == caller.tenant {
            return roles
                .iter()
                .filter(|r| {
                    r.spec.users.contains(&caller.user)
                        || r.spec.groups.iter().any(|g| caller.groups.contains(g))
                })
                .flat_map(|r| &r.spec.rules)
                .any(|rule| rule.allows(verb, req.resource));
        }
        grants.iter().any(|g| {
            g.spec.grantee == caller.tenant
                && (g.spec.namespaces.is_empty()
                    || req
                        .namespace
                        .is_some_and(|ns| g.spec.namespaces.iter().any(|n| n == ns)))
                && g.spec.rules.iter().any(|r| r.allows(verb, req.resource))
        })
    }

    async fn objects<R: Resource>(&self, tenant: &str) -> Result<Vec<R>, Denied> {
        let prefix = format!("/registry/{}/{tenant}/", R::PLURAL);
        let all = range_all(&*self.store, &prefix)
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
        let own = tenant == caller.tenant;
        if let Some((roles, grants)) = &self.caches {
            let (r, g) = if own {
                (
                    roles.list_prefix(&format!("/registry/{}/{tenant}/", Role::PLURAL)),
                    vec![],
                )
            } else {
                (
                    vec![],
                    grants.list_prefix(&format!("/registry/{}/{tenant}/", Grant::PLURAL)),
                )
            };
            if Self::decide(caller, req, tenant, &r, &g) {
                return Ok(());
            }
        }
        // No cache, or the cache said no: decide from the store itself.
        let (r, g) = if own {
            (self.objects::<Role>(tenant).await?, vec![])
        } else {
            (vec![], self.objects::<Grant>(tenant).await?)
        };
        if Self::decide(caller, req, tenant, &r, &g) {
            Ok(())
        } else if own {
            Err(Denied(format!(
                "{} of tenant {tenant:?} holds no role that allows {verb} on {}",
                caller.user, req.resource
            )))
        } else {
            Err(Denied(format!(
                "{} of tenant {:?} cannot {verb} {} in tenant {tenant:?}: no grant of that tenant allows it",
                caller.user, caller.tenant, req.resource
            )))
        }
    }
}
