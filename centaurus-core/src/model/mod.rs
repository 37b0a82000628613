//! The object model: Kubernetes-shaped kinds plus the Arktos multi-tenancy fields, the
//! [`Resource`] trait every kind implements, and the [`Registry`] the API serves from.

mod account;
mod batch;
mod cluster;
mod config;
mod event;
mod meta;
mod pod;
mod policy;
mod quantity;
pub mod quota;
mod registry;
mod service;
pub mod validation;
mod volume;
mod workload;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use account::*;
pub use batch::*;
pub use cluster::*;
pub use config::*;
pub use event::*;
pub use meta::*;

/// The Kubernetes minor version whose API the region speaks (`1.37`).
pub const KUBERNETES_MINOR: &str = "37";
pub use pod::*;
pub use policy::*;
pub use quantity::{Quantity, QuantityError};
pub use quota::{LimitRange, ResourceQuota};
pub use registry::{DecodeError, Decoded, Registry, RegistryError, ResourceInfo};
pub use service::*;
pub use validation::FieldError;
pub use volume::*;
pub use workload::*;

/// Where objects of a kind live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// One per region (`Tenant`, `Node`): `/registry/{plural}/{name}`.
    Cluster,
    /// One per tenant space (`Namespace`, `Network`): `/registry/{plural}/{tenant}/{name}`.
    Tenant,
    /// One per namespace of a tenant (`Pod`): `/registry/{plural}/{tenant}/{namespace}/{name}`.
    Namespaced,
}

/// A stored object: type, metadata, desired state and observed state.
///
/// Every built-in kind is an `Object` with its own spec and status types (`Pod` is
/// `Object<PodSpec, PodStatus>`), so metadata handling is written once.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(bound = "S: JsonSchema + Default + Serialize, St: JsonSchema")]
pub struct Object<S, St = NoStatus> {
    /// `group/version` of the kind.
    #[serde(default)]
    pub api_version: String,
    /// The kind's name.
    #[serde(default)]
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Desired state, written by users.
    #[serde(default)]
    pub spec: S,
    /// Observed state, written by controllers through the `status` subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<St>,
}

/// The status of kinds that have none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NoStatus {}

/// A kind the API serves and the store holds. Implemented by the built-in kinds here and by
/// other crates for theirs (`Vpc`, `Subnet`, …); [`Registry::register`] makes it servable.
pub trait Resource:
    Clone + Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static
{
    /// CamelCase kind, `Pod`.
    const KIND: &'static str;
    /// API group; empty for the core group.
    const GROUP: &'static str;
    /// API version within the group, `v1`.
    const VERSION: &'static str;
    /// Lower-case plural used in paths, `pods`.
    const PLURAL: &'static str;
    /// The store key range's name, `/registry/{STORE}/`: the plural, unless two groups
    /// serve the same plural (core `endpoints` and Mizar's), when one is stored apart.
    const STORE: &'static str = Self::PLURAL;
    /// Where objects of the kind live.
    const SCOPE: Scope;
    /// Abbreviations clients accept, `po`.
    const SHORT_NAMES: &'static [&'static str] = &[];

    /// The object's metadata.
    fn meta(&self) -> &ObjectMeta;
    /// The object's metadata, mutable.
    fn meta_mut(&mut self) -> &mut ObjectMeta;

    /// Kind-specific checks beyond what decoding enforces. Names and labels are checked for
    /// every kind by [`Registry`]; this adds the rest.
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        Ok(())
    }

    /// Fills in the fields Kubernetes defaults (a pod's `restartPolicy`, …), so stored
    /// objects carry them as clients expect. [`Registry`] runs it before validation.
    fn set_defaults(&mut self) {}

    /// The object as Kubernetes clients are shown it, where that differs from how it is
    /// kept (a VM pod's VM shown as its one container, as tools index `containers`). The
    /// API server applies it to every object it serves.
    fn served(_value: &mut serde_json::Value) {}

    /// Undoes [`Resource::served`]: an object a client sends back, or a component reads,
    /// in the form it is kept in; `None` when it already is. Decoding by the API server
    /// and by clients applies it.
    fn unserved(_value: &serde_json::Value) -> Option<serde_json::Value> {
        None
    }

    /// True when the kind has rules an update must keep ([`Resource::validate_update`]);
    /// the API decodes the stored object for them only then.
    const UPDATE_RULES: bool = false;

    /// Rules an update from `old` must keep beyond those of any object (fields fixed at
    /// creation, immutable data). Runs after [`Resource::validate`] on both.
    fn validate_update(&self, _old: &Self) -> Result<(), Vec<FieldError>> {
        Ok(())
    }

    /// `group/version`, or `version` for the core group.
    fn api_version() -> String {
        if Self::GROUP.is_empty() {
            Self::VERSION.to_owned()
        } else {
            format!("{}/{}", Self::GROUP, Self::VERSION)
        }
    }

    /// A new object of this kind with `apiVersion` and `kind` filled in.
    fn typed(metadata: ObjectMeta) -> Self
    where
        Self: Default,
    {
        let mut obj = Self::default();
        *obj.meta_mut() = metadata;
        obj.set_type_meta();
        obj
    }

    /// Fills in `apiVersion` and `kind` (decoders leave them as sent).
    fn set_type_meta(&mut self);

    /// The object's store key (see [`object_key`]).
    fn key(&self) -> String {
        let m = self.meta();
        object_key(
            Self::STORE,
            Self::SCOPE,
            m.tenant_or_system(),
            &m.namespace,
            &m.name,
        )
    }
}

/// The store key of an object of the kind stored under `store` (its [`Resource::STORE`],
/// the plural for all but a few). Keys put the tenant first so that a tenant's data is one
/// contiguous range: `/registry/{store}/{name}` (cluster scope),
/// `/registry/{store}/{tenant}/{name}` (tenant scope) and
/// `/registry/{store}/{tenant}/{namespace}/{name}` (namespaced). `tenant` is ignored for
/// cluster-scoped kinds and `namespace` for all but namespaced kinds.
pub fn object_key(store: &str, scope: Scope, tenant: &str, namespace: &str, name: &str) -> String {
    match scope {
        Scope::Cluster => format!("/registry/{store}/{name}"),
        Scope::Tenant => format!("/registry/{store}/{tenant}/{name}"),
        Scope::Namespaced => format!("/registry/{store}/{tenant}/{namespace}/{name}"),
    }
}

/// Defines a kind's object type in another crate, with the same shape and encoding as
/// [`Object`] (`apiVersion`, `kind`, `metadata`, `spec`, optional `status`). Other crates
/// cannot implement [`Resource`] for `Object<TheirSpec>` (Rust's orphan rule), so they
/// declare their kinds with this and then [`impl_resource!`]. The expansion names this
/// crate as `centaurus_core`, so depend on it under that name.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
/// pub struct WidgetSpec { pub size: u32 }
/// centaurus_core::define_object!(
///     /// A widget.
///     pub struct Widget { spec: WidgetSpec }
/// );
/// centaurus_core::impl_resource!(Widget, kind = "Widget", group = "example.com",
///     version = "v1", plural = "widgets", scope = Namespaced);
/// ```
#[macro_export]
macro_rules! define_object {
    ($(#[$m:meta])* $vis:vis struct $name:ident { spec: $spec:ty $(, status: $status:ty)? $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Debug, Default, PartialEq, $crate::__private::serde::Serialize,
            $crate::__private::serde::Deserialize, $crate::__private::schemars::JsonSchema)]
        #[serde(crate = "centaurus_core::__private::serde", rename_all = "camelCase")]
        #[schemars(crate = "centaurus_core::__private::schemars")]
        $vis struct $name {
            /// `group/version` of the kind.
            #[serde(default)]
            pub api_version: String,
            /// The kind's name.
            #[serde(default)]
            pub kind: String,
            /// Metadata.
            #[serde(default)]
            pub metadata: $crate::model::ObjectMeta,
            /// Desired state.
            #[serde(default)]
            pub spec: $spec,
            $(
            /// Observed state, written through the `status` subresource.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub status: Option<$status>,
            )?
        }
    };
}

/// Implements [`Resource`] for an [`Object`] instantiation (or a [`define_object!`] type).
#[macro_export]
macro_rules! impl_resource {
    ($ty:ty, kind = $kind:literal, group = $group:literal, version = $version:literal,
     plural = $plural:literal, scope = $scope:ident $(, store = $store:literal)?
     $(, short = [$($short:literal),*])? $(, validate = $validate:path)?
     $(, defaults = $defaults:path)? $(, update = $update:path)?
     $(, view = ($served:path, $unserved:path))?) => {
        impl $crate::model::Resource for $ty {
            const KIND: &'static str = $kind;
            const GROUP: &'static str = $group;
            const VERSION: &'static str = $version;
            const PLURAL: &'static str = $plural;
            const SCOPE: $crate::model::Scope = $crate::model::Scope::$scope;
            $(const STORE: &'static str = $store;)?
            $(const SHORT_NAMES: &'static [&'static str] = &[$($short),*];)?

            fn meta(&self) -> &$crate::model::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut $crate::model::ObjectMeta {
                &mut self.metadata
            }
            fn set_type_meta(&mut self) {
                self.api_version = <Self as $crate::model::Resource>::api_version();
                self.kind = $kind.to_owned();
            }
            $(fn validate(&self) -> Result<(), Vec<$crate::model::FieldError>> {
                $validate(self)
            })?
            $(fn set_defaults(&mut self) {
                $defaults(self)
            })?
            $(const UPDATE_RULES: bool = true;
            fn validate_update(&self, old: &Self) -> Result<(), Vec<$crate::model::FieldError>> {
                $update(self, old)
            })?
            $(fn served(value: &mut serde_json::Value) {
                $served(value)
            }
            fn unserved(value: &serde_json::Value) -> Option<serde_json::Value> {
                $unserved(value)
            })?
        }
    };
}

#[cfg(test)]
mod tests;
