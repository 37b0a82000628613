//! A client of the Centaurus API, usable on its own (compare kube-rs's `kube-client`).
//!
//! - [`kubeconfig`]: kubeconfig files (client certificate or bearer token, the CA, several
//!   servers through [`kubeconfig::SERVERS_EXTENSION`]).
//! - [`Transport`]: how requests travel. [`HttpsTransport`] speaks HTTP/2 over TLS with one
//!   multiplexed connection and fails over between servers; `centaurus-api` provides the
//!   in-process transport, which calls the server's handler with a given identity.
//! - [`Client`]: raw requests and watches; [`Api`]: typed get, list (paged), create,
//!   update, status update, patch (merge, JSON, strategic), delete and watch of any
//!   [`centaurus_core::model::Resource`]; [`DynamicApi`]: the same verbs with JSON objects
//!   for any kind a registry describes ([`KindRef::from_info`]); [`Api::source`] feeds an informer, which
//!   resumes from the last `resourceVersion`, follows bookmarks and lists again on 410.
//! - [`Recorder`]: events about objects, queued and written in the background, repeats
//!   counted.
//! - Kubernetes `Status` answers become [`ClientError::Api`]; [`metrics`] counts requests.
//! - [`ctl`], [`manifest`] and [`load`]: what `centaurusctl` does, as a library.

pub mod api;
pub mod client;
pub mod ctl;
pub mod error;
pub mod events;
pub mod kubeconfig;
pub mod load;
pub mod manifest;
pub mod metrics;
pub mod transport;

pub use api::{Api, DynamicApi, KindRef, Patch};
pub use client::{Client, Reply};
pub use error::{ClientError, Status};
pub use events::Recorder;
pub use transport::{Body, HttpsTransport, Transport};
