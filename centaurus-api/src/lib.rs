//! The Centaurus API server: every registered kind served under Kubernetes-compatible paths
//! (`/api/v1/namespaces/{ns}/pods`) and Arktos tenant paths
//! (`/api/v1/tenants/{t}/namespaces/{ns}/pods`), with watch, discovery and admission.
//!
//! Not built yet: this crate is filled by the multi-tenant API server work. It reads and
//! writes through `centaurus_core::store::Store` and serves the kinds of a
//! `centaurus_core::model::Registry`.
