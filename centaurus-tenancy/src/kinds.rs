//! The kinds tenancy adds to the registry: grants across tenants (and, from
//! [`crate::rbac`], Kubernetes' RBAC inside a tenant).

use centaurus_core::model::validation::{self, Errors};
use centaurus_core::model::{FieldError, Registry, RegistryError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of [`Grant`].
pub const GROUP: &str = "tenancy.centaurus.io";

/// Verbs a rule may name; `*` means all of them.
pub const VERBS: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];

/// What a rule allows: verbs on resources (plurals, `pods/status` for a subresource, `*`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyRule {
    /// Allowed verbs.
    #[serde(default)]
    pub verbs: Vec<String>,
    /// Resource plurals the verbs apply to.
    #[serde(default)]
    pub resources: Vec<String>,
}

impl PolicyRule {
    /// True when the rule allows `verb` on `resource` (a plural, or `plural/sub`).
    pub fn allows(&self, verb: &str, resource: &str) -> bool {
        let verb_ok = self.verbs.iter().any(|v| v == "*" || v == verb);
        let base = resource.split('/').next().unwrap_or(resource);
        let res_ok = self
            .resources
            .iter()
            .any(|r| r == "*" || r == resource || (r == base && !resource.contains('/')));
        verb_ok && res_ok
    }
}

fn validate_rules(e: &mut Errors, field: &str, rules: &[PolicyRule]) {
    for (i, rule) in rules.iter().enumerate() {
        for (j, verb) in rule.verbs.iter().enumerate() {
            if verb != "*" && !VERBS.contains(&verb.as_str()) {
                e.push(
                    format!("{field}[{i}].verbs[{j}]"),
                    format!("unknown verb {verb:?}; one of {VERBS:?} or *"),
                );
            }
        }
        if rule.resources.is_empty() {
            e.push(
                format!("{field}[{i}].resources"),
                "must name a resource or *",
            );
        }
    }
}

/// An explicit cross-tenant grant: the tenant whose space holds it lets `grantee`'s users
/// use `rules` on its objects (optionally only in `namespaces`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GrantSpec {
    /// The tenant that receives access.
    pub grantee: String,
    /// What the grantee may do.
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
    /// Namespaces the grant covers; empty means all of the granting tenant's namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

centaurus_core::define_object!(
    /// A cross-tenant grant (see [`GrantSpec`]).
    pub struct Grant {
        spec: GrantSpec,
    }
);

centaurus_core::impl_resource!(
    Grant,
    kind = "Grant",
    group = "tenancy.centaurus.io",
    version = "v1",
    plural = "grants",
    scope = Tenant,
    validate = validate_grant
);

fn validate_grant(g: &Grant) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    e.check("spec.grantee", validation::dns_label(&g.spec.grantee));
    if g.spec.grantee == g.metadata.tenant {
        e.push("spec.grantee", "a tenant does not grant to itself");
    }
    validate_rules(&mut e, "spec.rules", &g.spec.rules);
    for (i, ns) in g.spec.namespaces.iter().enumerate() {
        e.check(format!("spec.namespaces[{i}]"), validation::dns_label(ns));
    }
    e.into_result()
}

/// Adds [`Grant`] and the RBAC kinds ([`crate::rbac`]) to a registry.
pub fn register_kinds(registry: &mut Registry) -> Result<(), RegistryError> {
    registry.register::<Grant>()?;
    crate::rbac::register_kinds(registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_verbs_and_resources() {
        let r = PolicyRule {
            verbs: vec!["get".into(), "list".into()],
            resources: vec!["pods".into()],
        };
        assert!(r.allows("get", "pods"));
        assert!(!r.allows("delete", "pods"));
        assert!(!r.allows("get", "pods/status"));
        assert!(!r.allows("get", "deployments"));
    }

    #[test]
    fn grants_validate() {
        let mut registry = Registry::builtin();
        register_kinds(&mut registry).unwrap();
        let grants = registry.resolve_name("grants").unwrap();
        let bad = serde_json::json!({"apiVersion": "tenancy.centaurus.io/v1", "kind": "Grant",
            "metadata": {"name": "g", "tenant": "acme"},
            "spec": {"grantee": "acme", "rules": [{"verbs": ["steal"], "resources": []}]}});
        let errs = grants.validate(&bad).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.grantee",
                "spec.rules[0].verbs[0]",
                "spec.rules[0].resources"
            ]
        );
    }
}
