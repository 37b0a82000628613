//! Cluster DNS for every tenant: `NAME.NAMESPACE.svc.cluster.local` names of a tenant's
//! Services, answered only to that tenant.
//!
//! - [`zone`]: the names, kept from the Services and EndpointSlices the API serves, and
//!   the answer to one question;
//! - [`server`]: hickory-server's UDP and TCP handling around a zone, one listener per
//!   tenant (the listener a query arrives on says who asks).

pub mod server;
pub mod zone;

pub use server::{TenantHandler, serve};
pub use zone::{Answer, CLUSTER_DOMAIN, ServiceRecord, Zone, record_of};
