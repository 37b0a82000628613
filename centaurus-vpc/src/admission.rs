//! The checks of VPCs, subnets and endpoints against each other, run by the API server
//! before a write (and by the network controller for the objects it creates):
//!
//! - a VPC's VNI is unique in the region; a VPC created without one gets the lowest free
//!   VNI from [`FIRST_VNI`];
//! - a subnet's VPC exists in its tenant, the subnet lies inside it, subnets of one VPC
//!   never overlap, and no subnet takes addresses of the service range (`10.96.0.0/16`),
//!   which the datapath translates as Services';
//! - an endpoint's subnet exists, its `vpc` is the subnet's, and a requested address is a
//!   usable address of the subnet that no other endpoint of the VPC holds;
//! - CIDRs, VNIs, and an endpoint's subnet, droplet and address do not change.
//!
//! Two tenants may use the same CIDRs and addresses. Admission is ordered by one lock per
//! process; a region with several API servers relies on the operators' own checks, which
//! fail an object that slipped through (the operator never double-allocates).

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use centaurus_core::admission::{Admission, AdmitGuard};
use centaurus_core::model::{FieldError, Resource};
use centaurus_core::objects::{ObjectError, Objects};
use centaurus_core::store::{Store, range_all};
use serde_json::{Value, json};

use crate::ipam::{Ipv4Cidr, MAX_VNI};
use crate::kinds::{Endpoint, Subnet, Vpc};

/// The first VNI handed to VPCs created without one.
pub const FIRST_VNI: u32 = 1000;

/// Where a tenant partition keeps the VNIs of VPCs that moved to another partition with
/// their tenant (`{prefix}{vni}`), so that it never hands them out again.
pub const RETIRED_VNIS: &str = "/centaurus/retired-vnis/";

/// The Mizar kinds' admission.
#[derive(Clone, Default)]
pub struct NetworkAdmission {
    lock: Arc<tokio::sync::Mutex<()>>,
    /// The VNIs this partition hands out (None: the whole region's, from [`FIRST_VNI`]).
    vnis: Option<(u32, u32)>,
}

fn err(field: &str, message: impl Into<String>) -> Vec<FieldError> {
    vec![FieldError::new(field, message)]
}

fn decode<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, Vec<FieldError>> {
    serde_json::from_value(v.clone()).map_err(|e| err("", e.to_string()))
}

async fn list<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    prefix: &str,
) -> Result<Vec<T>, Vec<FieldError>> {
    let page = range_all(store, prefix)
        .await
        .map_err(|e| err("", format!("cannot read {prefix}: {e}")))?;
    Ok(page
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect())
}

async fn get<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<T>, Vec<FieldError>> {
    match store.get(key).await {
        Ok(Some(kv)) => serde_json::from_slice(&kv.value)
            .map(Some)
            .map_err(|e| err("", format!("{key}: {e}"))),
        Ok(None) => Ok(None),
        Err(e) => Err(err("", format!("cannot read {key}: {e}"))),
    }
}

fn unchanged(field: &str, new: &str, old: Option<&str>) -> Result<(), Vec<FieldError>> {
    match old {
        Some(old) if old != new => Err(err(field, format!("cannot change ({old:?} → {new:?})"))),
        _ => Ok(()),
    }
}

impl NetworkAdmission {
    /// An admitter with its own lock.
    pub fn new() -> Self {
        Self::default()
    }

    /// An admitter of one tenant partition, which hands out and accepts only the VNIs
    /// `first..=last` (tenant partitions have disjoint ranges, so two VPCs of tenants in
    /// different partitions never share a VNI on a host).
    pub fn with_vnis(first: u32, last: u32) -> Self {
        Self {
            vnis: Some((first.max(1), last.min(MAX_VNI))),
            ..Self::default()
        }
    }

    async fn vpc(
        &self,
        store: &dyn Store,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), Vec<FieldError>> {
        let mut vpc: Vpc = decode(obj)?;
        if let Some(old) = old {
            let old: Vpc = decode(old)?;
            unchanged("spec.cidr", &vpc.spec.cidr, Some(&old.spec.cidr))?;
            if vpc.spec.vni == 0 {
                vpc.spec.vni = old.spec.vni;
            }
            unchanged(
                "spec.vni",
                &vpc.spec.vni.to_string(),
                Some(&old.spec.vni.to_string()),
            )?;
            obj["spec"]["vni"] = json!(vpc.spec.vni);
            return Ok(());
        }
        let me = (vpc.metadata.tenant.as_str(), vpc.metadata.name.as_str());
        let mut used: BTreeSet<u32> = list::<Vpc>(store, "/registry/vpcs/")
            .await?
            .iter()
            .filter(|v| (v.metadata.tenant.as_str(), v.metadata.name.as_str()) != me)
            .map(|v| v.spec.vni)
            .collect();
        let retired = range_all(store, RETIRED_VNIS)
            .await
            .map_err(|e| err("", format!("cannot read {RETIRED_VNIS}: {e}")))?;
        used.extend(
            retired
                .kvs
                .iter()
                .filter_map(|kv| kv.key.strip_prefix(RETIRED_VNIS)?.parse::<u32>().ok()),
        );
        let (first, last) = self.vnis.unwrap_or((FIRST_VNI, MAX_VNI));
        if vpc.spec.vni == 0 {
            vpc.spec.vni = (first..=last)
                .find(|v| !used.contains(v))
                .ok_or_else(|| err("spec.vni", "every VNI is in use"))?;
            obj["spec"]["vni"] = json!(vpc.spec.vni);
        } else if self.vnis.is_some() && !(first..=last).contains(&vpc.spec.vni) {
            return Err(err(
                "spec.vni",
                format!("this tenant partition hands out VNIs {first}-{last} only"),
            ));
        } else if used.contains(&vpc.spec.vni) {
            return Err(err(
                "spec.vni",
                format!("{} is already used by another vpc", vpc.spec.vni),
            ));
        }
        Ok(())
    }

    async fn subnet(
        &self,
        store: &dyn Store,
        obj: &Value,
        old: Option<&Value>,
    ) -> Result<(), Vec<FieldError>> {
        let s: Subnet = decode(obj)?;
        if let Some(old) = old {
            let old: Subnet = decode(old)?;
            unchanged("spec.cidr", &s.spec.cidr, Some(&old.spec.cidr))?;
            return unchanged("spec.vpc", &s.spec.vpc, Some(&old.spec.vpc));
        }
        let tenant = &s.metadata.tenant;
        let cidr: Ipv4Cidr = s
            .spec
            .cidr
            .parse()
            .map_err(|e: crate::ipam::IpamError| err("spec.cidr", e.to_string()))?;
        let services = crate::services::service_range();
        if cidr.overlaps(&services) {
            return Err(err(
                "spec.cidr",
                format!(
                    "{cidr} overlaps the service range {services}: its addresses are the \
                     tenant's Services'"
                ),
            ));
        }
        let vpc: Vpc = get(store, &format!("/registry/vpcs/{tenant}/{}", s.spec.vpc))
            .await?
            .ok_or_else(|| {
                err(
                    "spec.vpc",
                    format!("vpc {:?} does not exist in tenant {tenant:?}", s.spec.vpc),
                )
            })?;
        let vpc_cidr: Ipv4Cidr = vpc
            .spec
            .cidr
            .parse()
            .map_err(|_| err("spec.vpc", "the vpc's cidr is invalid"))?;
        if !vpc_cidr.contains(&cidr) {
            return Err(err(
                "spec.cidr",
                format!("{cidr} is not inside vpc {:?} ({vpc_cidr})", s.spec.vpc),
            ));
        }
        for other in list::<Subnet>(store, &format!("/registry/subnets/{tenant}/")).await? {
            if other.spec.vpc == s.spec.vpc
                && other.metadata.name != s.metadata.name
                && other
                    .spec
                    .cidr
                    .parse::<Ipv4Cidr>()
                    .is_ok_and(|c| c.overlaps(&cidr))
            {
                return Err(err(
                    "spec.cidr",
                    format!(
                        "{cidr} overlaps subnet {:?} ({}) of the same vpc",
                        other.metadata.name, other.spec.cidr
                    ),
                ));
            }
        }
        Ok(())
    }

    async fn endpoint(
        &self,
        store: &dyn Store,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), Vec<FieldError>> {
        let ep: Endpoint = decode(obj)?;
        let tenant = ep.metadata.tenant.clone();
        let subnet: Subnet = get(
            store,
            &format!("/registry/subnets/{tenant}/{}", ep.spec.subnet),
        )
        .await?
        .ok_or_else(|| {
            err(
                "spec.subnet",
                format!(
                    "subnet {:?} does not exist in tenant {tenant:?}",
                    ep.spec.subnet
                ),
            )
        })?;
        match ep.spec.vpc.as_str() {
            "" => obj["spec"]["vpc"] = json!(subnet.spec.vpc),
            v if v != subnet.spec.vpc => {
                return Err(err(
                    "spec.vpc",
                    format!(
                        "subnet {:?} is in vpc {:?}, not {v:?}",
                        ep.spec.subnet, subnet.spec.vpc
                    ),
                ));
            }
            _ => {}
        }
        if let Some(old) = old {
            let old: Endpoint = decode(old)?;
            unchanged("spec.subnet", &ep.spec.subnet, Some(&old.spec.subnet))?;
            unchanged("spec.droplet", &ep.spec.droplet, Some(&old.spec.droplet))?;
            return unchanged("spec.ip", &ep.spec.ip, Some(&old.spec.ip));
        }
        if ep.spec.ip.is_empty() {
            return Ok(());
        }
        let ip: std::net::Ipv4Addr = ep
            .spec
            .ip
            .parse()
            .map_err(|_| err("spec.ip", "not an IPv4 address"))?;
        let pool = crate::ipam::SubnetPool::new(
            subnet
                .spec
                .cidr
                .parse()
                .map_err(|_| err("spec.subnet", "the subnet's cidr is invalid"))?,
        );
        pool.reserve(ip)
            .map_err(|e| err("spec.ip", e.to_string()))?;
        for other in list::<Endpoint>(store, &format!("/registry/endpoints/{tenant}/")).await? {
            let same = other.metadata.namespace == ep.metadata.namespace
                && other.metadata.name == ep.metadata.name;
            let other_vpc = if other.spec.vpc.is_empty() {
                &subnet.spec.vpc
            } else {
                &other.spec.vpc
            };
            let other_ip = other
                .status
                .as_ref()
                .map(|s| s.ip.as_str())
                .filter(|s| !s.is_empty())
                .unwrap_or(&other.spec.ip);
            if !same && *other_vpc == subnet.spec.vpc && other_ip == ep.spec.ip {
                return Err(err(
                    "spec.ip",
                    format!(
                        "{ip} is held by endpoint {}/{} in the same vpc",
                        other.metadata.namespace, other.metadata.name
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Why [`NetworkAdmission::create`] did not create an object.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// Admission refused it.
    #[error("invalid: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The store refused it.
    #[error(transparent)]
    Object(#[from] ObjectError),
}

impl NetworkAdmission {
    /// Creates `obj` beside the API (controllers), with the same checks and ordering as
    /// the API's writes through this admitter.
    pub async fn create<R: Resource>(
        &self,
        store: &Arc<dyn Store>,
        obj: R,
    ) -> Result<R, CreateError> {
        let mut value =
            serde_json::to_value(&obj).map_err(|e| CreateError::Invalid(err("", e.to_string())))?;
        let _guard = self
            .admit(store.as_ref(), R::PLURAL, &mut value, None)
            .await
            .map_err(CreateError::Invalid)?;
        let obj: R = serde_json::from_value(value)
            .map_err(|e| CreateError::Invalid(err("", e.to_string())))?;
        Ok(Objects::<R>::new(store.clone()).create(obj).await?)
    }
}

#[async_trait]
impl Admission for NetworkAdmission {
    fn handles(&self, group: &str, plural: &str) -> bool {
        group == crate::kinds::GROUP && matches!(plural, "vpcs" | "subnets" | "endpoints")
    }

    async fn admit(
        &self,
        store: &dyn Store,
        plural: &str,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> Result<AdmitGuard, Vec<FieldError>> {
        let guard = self.lock.clone().lock_owned().await;
        match plural {
            "vpcs" => self.vpc(store, obj, old).await?,
            "subnets" => self.subnet(store, obj, old).await?,
            "endpoints" => self.endpoint(store, obj, old).await?,
            _ => return Ok(None),
        }
        Ok(Some(guard))
    }
}
