//! Service addresses, checked and allocated by the API server before a Service is written:
//!
//! - each tenant has its own service range ([`SERVICE_CIDR`]): two tenants may hold the
//!   same address, never two Services of one tenant;
//! - a Service created without `clusterIP` gets the lowest free address above the first
//!   [`STATIC_BAND`] addresses, which are left for addresses chosen by hand (the cluster
//!   DNS address among them);
//! - a requested address must lie in the range, not be its network or last address, and
//!   be free in the tenant;
//! - `clusterIP` never changes; an update that leaves it out keeps the old one (as
//!   `kubectl apply` of a manifest without it does).
//!
//! Admission is ordered by one lock per tenant and process: tenants never wait for each
//! other, and one tenant's Services are checked one after the other.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use centaurus_core::admission::{Admission, AdmitGuard};
use centaurus_core::model::{CLUSTER_IP_NONE, FieldError, Resource, SERVICE_CIDR, Service};
use centaurus_core::store::{Store, range_all};
use serde_json::{Value, json};

use crate::ipam::Ipv4Cidr;

/// Addresses at the start of each tenant's service range that are never allocated, only
/// requested (`.10` is the cluster DNS address by convention).
pub const STATIC_BAND: u32 = 16;

/// The admitter of Services' addresses.
#[derive(Clone, Default)]
pub struct ServiceAdmission {
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// What admission reads of another Service: its address.
#[derive(serde::Deserialize)]
struct Addressed {
    spec: AddressedSpec,
}

#[derive(serde::Deserialize)]
struct AddressedSpec {
    #[serde(default, rename = "clusterIP")]
    cluster_ip: String,
}

fn err(field: &str, message: impl Into<String>) -> Vec<FieldError> {
    vec![FieldError::new(field, message)]
}

/// The service range every tenant has.
pub fn service_range() -> Ipv4Cidr {
    SERVICE_CIDR.parse().expect("SERVICE_CIDR is a valid CIDR")
}

impl ServiceAdmission {
    /// An admitter with its own lock.
    pub fn new() -> Self {
        Self::default()
    }

    /// The addresses the tenant's other Services hold. The tenant's Services are read
    /// off the serving threads: a tenant with many makes only its own creates slower.
    async fn used(store: &dyn Store, svc: &Service) -> Result<BTreeSet<Ipv4Addr>, Vec<FieldError>> {
        let m = &svc.metadata;
        let prefix = format!("/registry/{}/{}/", Service::STORE, m.tenant_or_system());
        let page = range_all(store, &prefix)
            .await
            .map_err(|e| err("", format!("cannot read {prefix}: {e}")))?;
        let me = svc.key();
        tokio::task::spawn_blocking(move || {
            (page.kvs.iter())
                .filter(|kv| kv.key != me)
                .filter_map(|kv| serde_json::from_slice::<Addressed>(&kv.value).ok())
                .filter_map(|o| o.spec.cluster_ip.parse().ok())
                .collect()
        })
        .await
        .map_err(|e| err("", format!("reading the tenant's Services: {e}")))
    }

    async fn admit_service(
        &self,
        store: &dyn Store,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), Vec<FieldError>> {
        let svc: Service =
            serde_json::from_value(obj.clone()).map_err(|e| err("", e.to_string()))?;
        if let Some(old) = old {
            let old: Service =
                serde_json::from_value(old.clone()).map_err(|e| err("", e.to_string()))?;
            let kept = &old.spec.cluster_ip;
            if svc.spec.cluster_ip.is_empty() {
                obj["spec"]["clusterIP"] = json!(kept);
                obj["spec"]["clusterIPs"] = json!(old.spec.cluster_ips);
            } else if svc.spec.cluster_ip != *kept {
                return Err(err(
                    "spec.clusterIP",
                    format!("cannot change ({kept:?} → {:?})", svc.spec.cluster_ip),
                ));
            }
            return Ok(());
        }
        if svc.spec.cluster_ip == CLUSTER_IP_NONE {
            return Ok(());
        }
        let range = service_range();
        let used = Self::used(store, &svc).await?;
        let ip = match svc.spec.cluster_ip.as_str() {
            "" => (u32::from(range.network()) + STATIC_BAND..u32::from(range.last()))
                .map(Ipv4Addr::from)
                .find(|ip| !used.contains(ip))
                .ok_or_else(|| {
                    err(
                        "spec.clusterIP",
                        format!("every address of the tenant's service range {range} is in use"),
                    )
                })?,
            text => {
                let ip: Ipv4Addr = text.parse().map_err(|_| {
                    err("spec.clusterIP", format!("{text:?} is not an IPv4 address"))
                })?;
                if !range.contains_addr(ip) || ip == range.network() || ip == range.last() {
                    return Err(err(
                        "spec.clusterIP",
                        format!(
                            "{ip} is not a usable address of the tenant's service range {range}"
                        ),
                    ));
                }
                if used.contains(&ip) {
                    return Err(err(
                        "spec.clusterIP",
                        format!("{ip} is already allocated to another Service of the tenant"),
                    ));
                }
                ip
            }
        };
        obj["spec"]["clusterIP"] = json!(ip.to_string());
        obj["spec"]["clusterIPs"] = json!([ip.to_string()]);
        Ok(())
    }
}

#[async_trait]
impl Admission for ServiceAdmission {
    fn handles(&self, group: &str, plural: &str) -> bool {
        group.is_empty() && plural == Service::PLURAL
    }

    async fn admit(
        &self,
        store: &dyn Store,
        _: &str,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> Result<AdmitGuard, Vec<FieldError>> {
        let tenant = match obj.pointer("/metadata/tenant").and_then(Value::as_str) {
            None | Some("") => centaurus_core::model::SYSTEM_TENANT,
            Some(t) => t,
        };
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            // Locks nobody holds or waits for go, so the map follows the tenants in use.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(tenant.to_owned()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        self.admit_service(store, obj, old).await?;
        Ok(Some(guard))
    }
}
