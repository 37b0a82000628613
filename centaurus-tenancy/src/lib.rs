//! Tenant spaces: who a caller is, which tenant's space a request addresses, and whether
//! the caller may reach it.
//!
//! - [`authn`]: bearer tokens from a token file (the Kubernetes CSV format with a tenant
//!   column) and client certificates (`O=tenant:NAME`), composed into an [`AuthnLayer`].
//! - [`accounts`]: ServiceAccount tokens, signed JWTs accepted as users of their
//!   account's tenant.
//! - [`tokens`]: the tokens the API servers issue, kept (as digests) in the region's store
//!   so that every API server of the region accepts them.
//! - [`SpaceResolver`]: the short Kubernetes paths resolve to the caller's own tenant.
//! - [`gate`]: the tenant gate. A user outside the `system` tenant reaches only its own
//!   space, as the [`rbac`] bindings of that space allow, or another tenant's space through
//!   an explicit [`Grant`].

pub mod accounts;
pub mod authn;
pub mod confine;
pub mod gate;
pub mod identity;
pub mod kinds;
pub mod rbac;
pub mod tokens;

pub use authn::{
    Authenticator, AuthenticatorChain, AuthnLayer, ClientCert, ClientCertAuthenticator,
    Credentials, FrontDoor, InProcessCaller, TenantBound, TokenFile,
};
pub use centaurus_core::model::SYSTEM_TENANT;
pub use gate::{Attributes, Authorizer, Denied, TenantGate, Verb};
pub use kinds::{Grant, GrantSpec, PolicyRule, register_kinds};
pub use tokens::StoredTokens;

/// The group every token issued for a tenant administrator carries; the tenant's
/// `cluster-admin` ClusterRoleBinding names it.
pub const TENANT_ADMINS_GROUP: &str = "system:tenant-admins";

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// User name.
    pub user: String,
    /// The tenant the user belongs to; `system` for cluster administrators.
    pub tenant: String,
    /// Groups, for authorization.
    pub groups: Vec<String>,
    /// The UID of the tenant the credential was issued for. A credential opens only that
    /// incarnation of its tenant, never a tenant re-created under the same name
    /// ([`authn::TenantBound`]). None for the `system` tenant, which cannot be deleted.
    pub tenant_uid: Option<String>,
}

impl Identity {
    /// True for users of the `system` tenant, who may reach every space.
    pub fn is_system(&self) -> bool {
        self.tenant == SYSTEM_TENANT
    }
}

/// Decides the tenant whose space a request addresses.
pub trait SpaceResolver: Send + Sync + 'static {
    /// The tenant for a request by `caller` that named `path_tenant` (None for the short
    /// Kubernetes paths).
    fn resolve(&self, caller: &Identity, path_tenant: Option<&str>) -> String;
}

/// Arktos' rule: a short path means the caller's own tenant; an explicit one is taken as
/// written (the gate decides whether the caller may reach it).
#[derive(Clone, Copy, Debug, Default)]
pub struct CallerSpace;

impl SpaceResolver for CallerSpace {
    fn resolve(&self, caller: &Identity, path_tenant: Option<&str>) -> String {
        path_tenant.unwrap_or(&caller.tenant).to_owned()
    }
}
