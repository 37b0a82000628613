//! Centaurus core: the pieces every other crate stands on.
//!
//! - [`model`]: Kubernetes-shaped kinds with the Arktos tenant fields, the [`model::Resource`]
//!   trait and the [`model::Registry`] of servable kinds.
//! - [`store`]: the revisioned [`store::Store`] with etcd semantics — [`store::RedbStore`]
//!   embedded and durable, `EtcdStore` behind the `etcd` feature — and the
//!   [`store::WatchCache`] fan-out.
//! - [`ring`]: consistent hashing for active-active controllers and replica placement.
//! - [`controller`]: informers and reconcile loops.
//! - [`admission`]: checks of an object against others before the API writes it.
//! - [`objects`]: typed reads and compare-and-swap writes of one kind, for components that
//!   run beside the store.
//!
//! The crate has no server dependencies: a vendor can embed just the model, the ring or
//! the store.

pub mod admission;
pub mod controller;
pub mod model;
pub mod objects;
pub mod remote;
pub mod ring;
pub mod store;

/// Re-exports the macros of this crate expand to; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use schemars;
    pub use serde;
}
