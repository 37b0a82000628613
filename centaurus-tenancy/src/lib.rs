//! Tenant spaces: who a caller is, which tenant's space a request addresses, and whether
//! the caller may reach it.
//!
//! The traits here are the plug-in points; the API server composes them. Implementations
//! (token files, client certificates, the tenant gate, quota) come with the API server work.

use async_trait::async_trait;
pub use centaurus_core::model::SYSTEM_TENANT;

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// User name.
    pub user: String,
    /// The tenant the user belongs to; `system` for cluster administrators.
    pub tenant: String,
    /// Groups, for authorization.
    pub groups: Vec<String>,
}

impl Identity {
    /// True for users of the `system` tenant, who may reach every space.
    pub fn is_system(&self) -> bool {
        self.tenant == SYSTEM_TENANT
    }
}

/// The credentials a request carried.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// A bearer token from the `Authorization` header.
    pub bearer_token: Option<String>,
    /// Subject of a verified client certificate: common name and organizations.
    pub client_cert: Option<(String, Vec<String>)>,
}

/// Turns credentials into an identity.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// `Ok(None)` when these credentials are not this authenticator's to judge.
    async fn authenticate(&self, credentials: &Credentials) -> Result<Option<Identity>, String>;
}

/// Decides the tenant whose space a request addresses.
pub trait SpaceResolver: Send + Sync + 'static {
    /// The tenant for a request by `caller` that named `path_tenant` (None for the short
    /// Kubernetes paths).
    fn resolve(&self, caller: &Identity, path_tenant: Option<&str>) -> String;
}
