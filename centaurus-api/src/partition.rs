//! Partitions of a region (Arktos' scale-out): an API server serves the whole region, or
//! one *tenant partition* (tenants' spaces and workloads, for the tenants it holds) or one
//! *resource partition* (the nodes of, usually, one availability zone: Nodes, their Leases
//! and ledgers, Droplets). Each partition has its own store; no partition is special.

use async_trait::async_trait;
use centaurus_core::admission::{Admission, AdmitGuard};
use centaurus_core::model::{self, FieldError, Registry, ResourceInfo};
use centaurus_core::store::Store;
use serde_json::Value;

/// The kinds only resource partitions serve: the hosts and what node lifecycle needs.
const HOST_KINDS: [&str; 3] = ["nodes", "nodeledgers", "droplets"];

/// The kinds a resource partition serves beside [`HOST_KINDS`]: node heartbeats (Leases)
/// live in the `system` tenant's `kube-node-lease` namespace, and controllers' membership
/// Leases in its `kube-system`; events about its nodes in its `default`.
const RESOURCE_SUPPORT: [&str; 4] = ["tenants", "namespaces", "leases", "events"];

/// What part of the region an API server serves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Partition {
    /// The whole region on one store (`centaurus up`, one region of separate processes).
    #[default]
    Whole,
    /// A tenant partition: every kind but the hosts'.
    Tenant(String),
    /// A resource partition: the hosts' kinds, and only the `system` tenant.
    Resource(String),
}

impl std::str::FromStr for Partition {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected tenant:NAME or resource:NAME, not {s:?}");
        let (role, name) = s.split_once(':').ok_or_else(bad)?;
        if model::validation::dns_label(name).is_err() {
            return Err(format!(
                "a partition's name is a DNS label (lower-case letters, digits, '-'), not {name:?}"
            ));
        }
        match role {
            "tenant" => Ok(Self::Tenant(name.into())),
            "resource" => Ok(Self::Resource(name.into())),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Whole => f.write_str("the whole region"),
            Self::Tenant(n) => write!(f, "tenant partition {n}"),
            Self::Resource(n) => write!(f, "resource partition {n}"),
        }
    }
}

impl Partition {
    /// True when this partition serves the kind with `plural`.
    pub fn serves(&self, plural: &str) -> bool {
        match self {
            Self::Whole => true,
            Self::Tenant(_) => !HOST_KINDS.contains(&plural),
            Self::Resource(_) => HOST_KINDS.contains(&plural) || RESOURCE_SUPPORT.contains(&plural),
        }
    }

    /// The kinds of `all` this partition serves: what its discovery, OpenAPI documents and
    /// routes offer (a kind it does not serve is a 404, as for an unknown kind).
    pub fn registry(&self, all: &Registry) -> Registry {
        all.filtered(|i: &ResourceInfo| self.serves(i.plural))
    }

    /// The admitters the partition adds: a resource partition holds only the `system`
    /// tenant.
    pub fn admission(&self) -> Option<std::sync::Arc<dyn Admission>> {
        match self {
            Self::Resource(name) => Some(std::sync::Arc::new(SystemTenantOnly(name.clone()))),
            _ => None,
        }
    }
}

/// Refuses tenants other than `system` in a resource partition.
struct SystemTenantOnly(String);

#[async_trait]
impl Admission for SystemTenantOnly {
    fn handles(&self, group: &str, plural: &str) -> bool {
        group.is_empty() && plural == "tenants"
    }

    async fn admit(
        &self,
        _: &dyn Store,
        _: &str,
        obj: &mut Value,
        _: Option<&Value>,
    ) -> Result<AdmitGuard, Vec<FieldError>> {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if name == model::SYSTEM_TENANT {
            return Ok(None);
        }
        Err(vec![FieldError::new(
            "metadata.name",
            format!(
                "resource partition {} holds nodes only: create tenant {name:?} in a tenant partition",
                self.0
            ),
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_split_the_kinds_with_leases_in_both() {
        let all = crate::region::registry();
        let tp = Partition::Tenant("a".into()).registry(&all);
        let rp = Partition::Resource("b".into()).registry(&all);
        let names = |r: &Registry| r.kinds().map(|k| k.plural).collect::<Vec<_>>();
        assert!(names(&tp).contains(&"pods") && !names(&tp).contains(&"nodes"));
        assert!(names(&rp).contains(&"nodes") && !names(&rp).contains(&"pods"));
        for shared in ["leases", "namespaces", "tenants"] {
            assert!(names(&tp).contains(&shared) && names(&rp).contains(&shared));
        }
        // Every kind is served by some partition.
        for k in all.kinds() {
            assert!(
                names(&tp).contains(&k.plural) || names(&rp).contains(&k.plural),
                "{} is served nowhere",
                k.plural
            );
        }
        assert_eq!(names(&Partition::Whole.registry(&all)), names(&all));
    }

    #[test]
    fn parses_roles_and_refuses_the_rest() {
        assert_eq!(
            "tenant:tp-1".parse::<Partition>(),
            Ok(Partition::Tenant("tp-1".into()))
        );
        assert_eq!(
            "resource:az-1".parse::<Partition>(),
            Ok(Partition::Resource("az-1".into()))
        );
        for bad in ["tenant", "tenant:", "zone:a", "tenant:A_B", "resource:a/b"] {
            assert!(bad.parse::<Partition>().is_err(), "{bad}");
        }
    }
}
