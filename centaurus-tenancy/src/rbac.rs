//! Kubernetes RBAC (`rbac.authorization.k8s.io/v1`) inside a tenant's space.
//!
//! `Role` and `RoleBinding` live in a namespace of a tenant and reach only that namespace.
//! `ClusterRole` and `ClusterRoleBinding` live in the tenant itself (they are tenant-scoped
//! here, where Kubernetes has them cluster-scoped): they reach every namespace and every
//! tenant-scoped kind *of that tenant*, never another tenant's space and never the region's
//! cluster-scoped kinds, which the gate keeps for the `system` tenant. Cross-tenant access
//! stays with [`crate::Grant`]s.
//!
//! [`Policy::allows`] is the decision; [`tenant_defaults`] are the roles every tenant gets.

use std::collections::BTreeMap;

use centaurus_core::model::validation::{self, Errors};
use centaurus_core::model::{
    FieldError, LabelSelector, ObjectMeta, Registry, RegistryError, Resource, Scope,
    service_account_user,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Identity;

/// The API group of the RBAC kinds.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// The most verb × group × resource × name combinations a role or binding a user writes
/// may name, so that confirming them stays cheap.
pub const MAX_GRANTS: usize = 10_000;

/// The ClusterRole every tenant gets with every verb on everything in its space.
pub const CLUSTER_ADMIN: &str = "cluster-admin";

const READ: &str = "get,list,watch";

/// The subresources of the default roles (their objects' rules decide the rest).
const SUBRESOURCES: &str = "*/status,*/scale,*/log,*/exec,*/attach,*/portforward,*/action";

/// What a rule allows: `verbs` on `resources` of `apiGroups` (each may be `*`), optionally
/// only the objects named in `resourceNames`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// Verbs (`get`, `list`, ..., or `*`).
    #[serde(default)]
    pub verbs: Vec<String>,
    /// API groups (`""` for the core group, or `*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    /// Resource plurals, `plural/subresource`, `*/subresource` or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// When not empty, only these objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    /// Paths outside the object API (ClusterRoles only; this region serves its open
    /// paths to every caller, so these are kept, not enforced).
    #[serde(
        default,
        rename = "nonResourceURLs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
}

impl PolicyRule {
    /// A rule of `verbs` on `resources` in `groups` (each comma-separated).
    pub fn new(verbs: &str, groups: &str, resources: &str) -> Self {
        let list = |s: &str| s.split(',').map(str::to_owned).collect();
        Self {
            verbs: list(verbs),
            api_groups: list(groups),
            resources: list(resources),
            ..Default::default()
        }
    }

    /// True when the rule allows `req`.
    pub fn allows(&self, req: &Request<'_>) -> bool {
        let any = |list: &[String], want: &str| list.iter().any(|x| x == "*" || x == want);
        let resource_ok = self.resources.iter().any(|r| {
            r == "*"
                || r == req.resource
                || req
                    .resource
                    .split_once('/')
                    .is_some_and(|(_, sub)| r.strip_prefix("*/") == Some(sub))
        });
        any(&self.verbs, req.verb)
            && any(&self.api_groups, req.group)
            && resource_ok
            && (self.resource_names.is_empty()
                || req
                    .name
                    .is_some_and(|n| self.resource_names.iter().any(|r| r == n)))
    }
}

/// The facts of a request RBAC decides on.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The verb.
    pub verb: &'a str,
    /// The API group of the kind.
    pub group: &'a str,
    /// The plural, with `/subresource` when one is addressed.
    pub resource: &'a str,
    /// The namespace of a namespaced request; None across namespaces or for tenant-scoped
    /// kinds, where only ClusterRoleBindings count.
    pub namespace: Option<&'a str>,
    /// The object's name, when the request names one.
    pub name: Option<&'a str>,
}

/// Which role a binding grants.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleRef {
    /// `rbac.authorization.k8s.io`.
    #[serde(default)]
    pub api_group: String,
    /// `Role` or `ClusterRole`.
    pub kind: String,
    /// The role's name.
    pub name: String,
}

/// Who a binding grants a role to: a `User`, a `Group` or a `ServiceAccount` of the tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    /// `User`, `Group` or `ServiceAccount`.
    pub kind: String,
    /// `rbac.authorization.k8s.io` for users and groups, empty for service accounts.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    /// The user's, group's or account's name.
    pub name: String,
    /// A service account's namespace (a RoleBinding's own when empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

impl Subject {
    /// True when the subject names `caller`; `namespace` is the binding's own.
    pub fn names(&self, caller: &Identity, namespace: &str) -> bool {
        match self.kind.as_str() {
            "User" => self.name == caller.user,
            "Group" => caller.groups.contains(&self.name),
            "ServiceAccount" => {
                let ns = if self.namespace.is_empty() {
                    namespace
                } else {
                    &self.namespace
                };
                caller.user == service_account_user(ns, &self.name)
            }
            _ => false,
        }
    }
}

/// Rules that a ClusterRole gathers from the tenant's other ClusterRoles by label.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AggregationRule {
    /// The ClusterRoles whose rules are added (any selector matching is enough).
    #[serde(default)]
    pub cluster_role_selectors: Vec<LabelSelector>,
}

/// Rules inside one namespace of a tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    /// `rbac.authorization.k8s.io/v1`.
    #[serde(default)]
    pub api_version: String,
    /// `Role`.
    #[serde(default)]
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What the role allows.
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
}
centaurus_core::impl_resource!(
    Role,
    kind = "Role",
    group = "rbac.authorization.k8s.io",
    version = "v1",
    plural = "roles",
    scope = Namespaced,
    validate = validate_role
);

/// Rules across a whole tenant (every namespace and the tenant-scoped kinds), or for a
/// RoleBinding to grant in its namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRole {
    /// `rbac.authorization.k8s.io/v1`.
    #[serde(default)]
    pub api_version: String,
    /// `ClusterRole`.
    #[serde(default)]
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What the role allows.
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
    /// When set, the role also holds the rules of the tenant's ClusterRoles it selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation_rule: Option<AggregationRule>,
}
centaurus_core::impl_resource!(
    ClusterRole,
    kind = "ClusterRole",
    group = "rbac.authorization.k8s.io",
    version = "v1",
    plural = "clusterroles",
    scope = Tenant,
    validate = validate_cluster_role
);

/// Grants a Role of its namespace, or a ClusterRole, to subjects in its namespace only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleBinding {
    /// `rbac.authorization.k8s.io/v1`.
    #[serde(default)]
    pub api_version: String,
    /// `RoleBinding`.
    #[serde(default)]
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Who holds the role here.
    #[serde(default)]
    pub subjects: Vec<Subject>,
    /// The role; it never changes.
    #[serde(default)]
    pub role_ref: RoleRef,
}
centaurus_core::impl_resource!(
    RoleBinding,
    kind = "RoleBinding",
    group = "rbac.authorization.k8s.io",
    version = "v1",
    plural = "rolebindings",
    scope = Namespaced,
    validate = validate_role_binding,
    update = role_ref_unchanged
);

/// Grants a ClusterRole across the whole tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRoleBinding {
    /// `rbac.authorization.k8s.io/v1`.
    #[serde(default)]
    pub api_version: String,
    /// `ClusterRoleBinding`.
    #[serde(default)]
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Who holds the role in the tenant.
    #[serde(default)]
    pub subjects: Vec<Subject>,
    /// The ClusterRole; it never changes.
    #[serde(default)]
    pub role_ref: RoleRef,
}
centaurus_core::impl_resource!(
    ClusterRoleBinding,
    kind = "ClusterRoleBinding",
    group = "rbac.authorization.k8s.io",
    version = "v1",
    plural = "clusterrolebindings",
    scope = Tenant,
    validate = validate_cluster_role_binding,
    update = role_ref_unchanged
);

fn validate_rules(e: &mut Errors, rules: &[PolicyRule], cluster: bool) {
    for (i, r) in rules.iter().enumerate() {
        let field = |f: &str| format!("rules[{i}].{f}");
        if r.verbs.is_empty() {
            e.push(field("verbs"), "must name a verb or *");
        }
        match (r.resources.is_empty(), r.non_resource_urls.is_empty()) {
            (true, true) => e.push(
                field("resources"),
                "a rule names resources or nonResourceURLs",
            ),
            (false, false) => e.push(
                field("nonResourceURLs"),
                "a rule names resources or nonResourceURLs, not both",
            ),
            (false, true) if r.api_groups.is_empty() => e.push(
                field("apiGroups"),
                "a resource rule names at least one API group (\"\" is the core group)",
            ),
            (true, false) if !cluster => e.push(
                field("nonResourceURLs"),
                "only ClusterRoles hold nonResourceURLs",
            ),
            _ => {}
        }
    }
}

fn validate_role(r: &Role) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    validate_rules(&mut e, &r.rules, false);
    e.into_result()
}

fn validate_cluster_role(r: &ClusterRole) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    validate_rules(&mut e, &r.rules, true);
    e.into_result()
}

fn validate_binding(e: &mut Errors, subjects: &[Subject], role_ref: &RoleRef, cluster: bool) {
    if role_ref.api_group != GROUP {
        e.push("roleRef.apiGroup", format!("must be {GROUP:?}"));
    }
    match role_ref.kind.as_str() {
        "ClusterRole" => {}
        "Role" if !cluster => {}
        k => e.push(
            "roleRef.kind",
            format!(
                "{k:?} is not a kind this binding grants; {}",
                if cluster {
                    "ClusterRole"
                } else {
                    "Role or ClusterRole"
                }
            ),
        ),
    }
    e.check("roleRef.name", validation::path_segment(&role_ref.name));
    for (i, s) in subjects.iter().enumerate() {
        let field = |f: &str| format!("subjects[{i}].{f}");
        if s.name.is_empty() {
            e.push(field("name"), "is required");
        }
        match s.kind.as_str() {
            "User" | "Group" => {
                if !s.api_group.is_empty() && s.api_group != GROUP {
                    e.push(field("apiGroup"), format!("must be {GROUP:?}"));
                }
            }
            "ServiceAccount" => {
                if !s.api_group.is_empty() {
                    e.push(field("apiGroup"), "must be empty for a ServiceAccount");
                }
                if cluster && s.namespace.is_empty() {
                    e.push(
                        field("namespace"),
                        "a ServiceAccount subject names its namespace",
                    );
                }
                if !s.namespace.is_empty() {
                    e.check(field("namespace"), validation::dns_label(&s.namespace));
                }
            }
            k => e.push(
                field("kind"),
                format!("{k:?} is not User, Group or ServiceAccount"),
            ),
        }
    }
}

/// A kind that binds a role.
trait Binding {
    fn role_ref(&self) -> &RoleRef;
}

impl Binding for RoleBinding {
    fn role_ref(&self) -> &RoleRef {
        &self.role_ref
    }
}

impl Binding for ClusterRoleBinding {
    fn role_ref(&self) -> &RoleRef {
        &self.role_ref
    }
}

fn validate_role_binding(b: &RoleBinding) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    validate_binding(&mut e, &b.subjects, &b.role_ref, false);
    e.into_result()
}

fn validate_cluster_role_binding(b: &ClusterRoleBinding) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    validate_binding(&mut e, &b.subjects, &b.role_ref, true);
    e.into_result()
}

fn role_ref_unchanged<B: Binding>(new: &B, old: &B) -> Result<(), Vec<FieldError>> {
    if new.role_ref() == old.role_ref() {
        Ok(())
    } else {
        Err(vec![FieldError::new(
            "roleRef",
            "cannot change; delete the binding and make a new one",
        )])
    }
}

/// Adds the four RBAC kinds to a registry.
pub fn register_kinds(registry: &mut Registry) -> Result<(), RegistryError> {
    registry.register::<Role>()?;
    registry.register::<RoleBinding>()?;
    registry.register::<ClusterRole>()?;
    registry.register::<ClusterRoleBinding>()?;
    Ok(())
}

/// The RBAC objects of one tenant that can bear on a request in `namespace` (None: only
/// the tenant-wide ones).
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// The tenant's ClusterRoles.
    pub cluster_roles: Vec<ClusterRole>,
    /// The tenant's ClusterRoleBindings.
    pub cluster_bindings: Vec<ClusterRoleBinding>,
    /// The Roles of the request's namespace.
    pub roles: Vec<Role>,
    /// The RoleBindings of the request's namespace.
    pub bindings: Vec<RoleBinding>,
}

impl Policy {
    /// The rules of ClusterRole `name`, with those it aggregates.
    fn cluster_rules<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a PolicyRule> + 'a {
        let role = self.cluster_roles.iter().find(|r| r.metadata.name == name);
        let selectors = role
            .and_then(|r| r.aggregation_rule.as_ref())
            .map(|a| a.cluster_role_selectors.as_slice())
            .unwrap_or_default();
        let aggregated = self.cluster_roles.iter().filter(move |r| {
            r.metadata.name != name && selectors.iter().any(|s| s.matches(&r.metadata.labels))
        });
        role.into_iter()
            .chain(aggregated)
            .flat_map(|r| r.rules.iter())
    }

    /// True when a binding of this tenant grants `caller` a rule that allows `req`.
    pub fn allows(&self, caller: &Identity, req: &Request<'_>) -> bool {
        let tenant_wide = self
            .cluster_bindings
            .iter()
            .filter(|b| b.role_ref.kind == "ClusterRole")
            .filter(|b| b.subjects.iter().any(|s| s.names(caller, "")))
            .any(|b| self.cluster_rules(&b.role_ref.name).any(|r| r.allows(req)));
        if tenant_wide {
            return true;
        }
        let Some(ns) = req.namespace else {
            return false;
        };
        self.bindings
            .iter()
            .filter(|b| b.metadata.namespace == ns)
            .filter(|b| b.subjects.iter().any(|s| s.names(caller, ns)))
            .any(|b| match b.role_ref.kind.as_str() {
                "Role" => self
                    .roles
                    .iter()
                    .filter(|r| r.metadata.namespace == ns && r.metadata.name == b.role_ref.name)
                    .flat_map(|r| &r.rules)
                    .any(|r| r.allows(req)),
                "ClusterRole" => self.cluster_rules(&b.role_ref.name).any(|r| r.allows(req)),
                _ => false,
            })
    }
}

impl Policy {
    /// The rules `role_ref` names, as a binding in `namespace` (None for a
    /// ClusterRoleBinding) would grant them; none for a role that does not exist.
    pub fn role_rules(&self, role_ref: &RoleRef, namespace: Option<&str>) -> Vec<PolicyRule> {
        match (role_ref.kind.as_str(), namespace) {
            ("ClusterRole", _) => self.cluster_rules(&role_ref.name).cloned().collect(),
            ("Role", Some(ns)) => self
                .roles
                .iter()
                .filter(|r| r.metadata.namespace == ns && r.metadata.name == role_ref.name)
                .flat_map(|r| r.rules.iter().cloned())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The rules a ClusterRole being written would hold: its own and those it aggregates.
    pub fn cluster_role_rules(&self, role: &ClusterRole) -> Vec<PolicyRule> {
        let selectors = role
            .aggregation_rule
            .as_ref()
            .map(|a| a.cluster_role_selectors.as_slice())
            .unwrap_or_default();
        let aggregated = self.cluster_roles.iter().filter(|r| {
            r.metadata.name != role.metadata.name
                && selectors.iter().any(|s| s.matches(&r.metadata.labels))
        });
        role.rules
            .iter()
            .chain(aggregated.flat_map(|r| &r.rules))
            .cloned()
            .collect()
    }

    /// `Ok` when `caller` itself holds every permission of `rules` in `namespace` (None:
    /// tenant-wide), so that writing or binding them escalates nothing. A wildcard in
    /// `rules` is covered only by the same wildcard; rules of `nonResourceURLs` are not
    /// enforced here and need nothing. Rules that name more than [`MAX_GRANTS`]
    /// verb × group × resource × name combinations together are refused rather than
    /// checked one by one.
    pub fn covers(
        &self,
        caller: &Identity,
        namespace: Option<&str>,
        rules: &[PolicyRule],
    ) -> Result<(), String> {
        let rules: Vec<&PolicyRule> = rules.iter().filter(|r| !r.resources.is_empty()).collect();
        let combinations = rules.iter().fold(0usize, |n, r| {
            n.saturating_add(
                [
                    r.verbs.len(),
                    r.api_groups.len(),
                    r.resources.len(),
                    r.resource_names.len().max(1),
                ]
                .into_iter()
                .fold(1usize, usize::saturating_mul),
            )
        });
        if combinations > MAX_GRANTS {
            return Err(format!(
                "{} cannot grant {combinations} verb, group, resource and name combinations at once (at most {MAX_GRANTS}); use wildcards or split the role",
                caller.user
            ));
        }
        for rule in rules {
            let names: Vec<Option<&str>> = if rule.resource_names.is_empty() {
                vec![None]
            } else {
                rule.resource_names
                    .iter()
                    .map(|n| Some(n.as_str()))
                    .collect()
            };
            for verb in &rule.verbs {
                for group in &rule.api_groups {
                    for resource in &rule.resources {
                        for name in &names {
                            let req = Request {
                                verb,
                                group,
                                resource,
                                namespace,
                                name: *name,
                            };
                            if !self.allows(caller, &req) {
                                return Err(format!(
                                    "{} cannot grant {verb} on {resource:?} of group {group:?}{}{}: it does not hold that permission itself",
                                    caller.user,
                                    name.map(|n| format!(" named {n:?}")).unwrap_or_default(),
                                    namespace
                                        .map(|n| format!(" in namespace {n:?}"))
                                        .unwrap_or_default(),
                                ));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn object_meta(tenant: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: name.into(),
        tenant: tenant.into(),
        labels: BTreeMap::from([(
            "kubernetes.io/bootstrapping".to_owned(),
            "rbac-defaults".to_owned(),
        )]),
        ..Default::default()
    }
}

/// The ClusterRoles and the ClusterRoleBinding every tenant gets at creation, as
/// Kubernetes' defaults: `cluster-admin` (everything in the tenant's space, bound to
/// [`crate::TENANT_ADMINS_GROUP`]), and for RoleBindings to grant in a namespace: `admin`
/// (every namespaced kind of `registry`, but only reads quotas and limit ranges), `edit`
/// (as `admin`, without the RBAC kinds) and `view` (reads every namespaced kind but Secrets
/// and the RBAC kinds).
pub fn tenant_defaults(
    tenant: &str,
    registry: &Registry,
) -> (Vec<ClusterRole>, Vec<ClusterRoleBinding>) {
    let namespaced: Vec<_> = registry
        .kinds()
        .filter(|k| k.scope == Scope::Namespaced)
        .collect();
    let guarded = |group: &str, plural: &str| {
        group == GROUP || matches!(plural, "resourcequotas" | "limitranges")
    };
    let mut edit = Vec::new();
    let mut view = Vec::new();
    for k in &namespaced {
        let rule = |verbs: &str| PolicyRule::new(verbs, k.group, k.plural);
        if !guarded(k.group, k.plural) {
            edit.push(rule("*"));
        } else if k.group != GROUP {
            edit.push(rule(READ));
        }
        if k.group != GROUP && k.plural != "secrets" {
            view.push(rule(READ));
        }
    }
    edit.push(PolicyRule::new("*", "*", SUBRESOURCES));
    view.push(PolicyRule::new(READ, "*", "*/status,*/scale,*/log"));
    // Quotas are the tenant administrator's to set: a namespace admin only reads them.
    let mut admin: Vec<PolicyRule> = namespaced
        .iter()
        .map(|k| {
            let verbs = if guarded("", k.plural) { READ } else { "*" };
            PolicyRule::new(verbs, k.group, k.plural)
        })
        .collect();
    admin.push(PolicyRule::new("*", "*", SUBRESOURCES));
    let role = |name: &str, rules: Vec<PolicyRule>| ClusterRole {
        api_version: ClusterRole::api_version(),
        kind: ClusterRole::KIND.into(),
        metadata: object_meta(tenant, name),
        rules,
        aggregation_rule: None,
    };
    let roles = vec![
        role(CLUSTER_ADMIN, vec![PolicyRule::new("*", "*", "*")]),
        role("admin", admin),
        role("edit", edit),
        role("view", view),
    ];
    let binding = ClusterRoleBinding {
        api_version: ClusterRoleBinding::api_version(),
        kind: ClusterRoleBinding::KIND.into(),
        metadata: object_meta(tenant, CLUSTER_ADMIN),
        subjects: vec![Subject {
            kind: "Group".into(),
            api_group: GROUP.into(),
            name: crate::TENANT_ADMINS_GROUP.into(),
            namespace: String::new(),
        }],
        role_ref: RoleRef {
            api_group: GROUP.into(),
            kind: "ClusterRole".into(),
            name: CLUSTER_ADMIN.into(),
        },
    };
    (roles, vec![binding])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(verb: &'a str, group: &'a str, resource: &'a str) -> Request<'a> {
        Request {
            verb,
            group,
            resource,
            namespace: Some("dev"),
            name: None,
        }
    }

    fn caller(user: &str) -> Identity {
        Identity {
            user: user.into(),
            tenant: "acme".into(),
            groups: vec!["team".into()],
            tenant_uid: None,
        }
    }

    #[test]
    fn rules_match_as_kubernetes_matches_them() {
        let r = PolicyRule::new("get,list", "", "pods,*/scale");
        assert!(r.allows(&req("get", "", "pods")));
        assert!(!r.allows(&req("get", "apps", "pods")), "another group");
        assert!(!r.allows(&req("delete", "", "pods")));
        assert!(
            !r.allows(&req("get", "", "pods/status")),
            "a subresource is named"
        );
        assert!(r.allows(&req("get", "", "deployments/scale")));
        let named = PolicyRule {
            resource_names: vec!["web".into()],
            ..r.clone()
        };
        assert!(
            !named.allows(&req("list", "", "pods")),
            "a list names nothing"
        );
        assert!(named.allows(&Request {
            name: Some("web"),
            ..req("get", "", "pods")
        }));
        assert!(PolicyRule::new("*", "*", "*").allows(&req("delete", "apps", "pods/exec")));
    }

    #[test]
    fn bindings_grant_in_their_namespace_and_coverage_is_literal() {
        let meta = |ns: &str, name: &str| ObjectMeta {
            name: name.into(),
            namespace: ns.into(),
            tenant: "acme".into(),
            ..Default::default()
        };
        let policy = Policy {
            roles: vec![Role {
                metadata: meta("dev", "reader"),
                rules: vec![PolicyRule::new("get,list", "", "pods")],
                ..Default::default()
            }],
            bindings: vec![RoleBinding {
                metadata: meta("dev", "team-reads"),
                subjects: vec![Subject {
                    kind: "Group".into(),
                    name: "team".into(),
                    ..Default::default()
                }],
                role_ref: RoleRef {
                    api_group: GROUP.into(),
                    kind: "Role".into(),
                    name: "reader".into(),
                },
                ..Default::default()
            }],
            ..Default::default()
        };
        let me = caller("ann");
        assert!(policy.allows(&me, &req("list", "", "pods")));
        assert!(!policy.allows(
            &me,
            &Request {
                namespace: Some("prod"),
                ..req("list", "", "pods")
            }
        ));
        assert!(!policy.allows(
            &me,
            &Request {
                namespace: None,
                ..req("list", "", "pods")
            }
        ));
        assert!(
            policy
                .covers(&me, Some("dev"), &[PolicyRule::new("get", "", "pods")])
                .is_ok()
        );
        for wider in [
            PolicyRule::new("*", "", "pods"),
            PolicyRule::new("get", "*", "pods"),
            PolicyRule::new("get", "", "*"),
            PolicyRule::new("delete", "", "pods"),
        ] {
            assert!(
                policy
                    .covers(&me, Some("dev"), std::slice::from_ref(&wider))
                    .is_err(),
                "{wider:?}"
            );
        }
        assert!(
            policy
                .covers(&me, None, &[PolicyRule::new("get", "", "pods")])
                .is_err()
        );
    }

    #[test]
    fn default_roles_bind_the_administrators_and_view_reads_no_secrets() {
        let mut registry = Registry::builtin();
        register_kinds(&mut registry).unwrap();
        let (roles, bindings) = tenant_defaults("acme", &registry);
        let policy = Policy {
            cluster_roles: roles,
            cluster_bindings: bindings,
            ..Default::default()
        };
        let admin = Identity {
            groups: vec![crate::TENANT_ADMINS_GROUP.into()],
            ..caller("root")
        };
        assert!(policy.allows(&admin, &req("delete", "", "namespaces")));
        assert!(!policy.allows(&caller("ann"), &req("get", "", "pods")));
        let view = policy.role_rules(
            &RoleRef {
                api_group: GROUP.into(),
                kind: "ClusterRole".into(),
                name: "view".into(),
            },
            Some("dev"),
        );
        let reads = |resource| view.iter().any(|r| r.allows(&req("get", "", resource)));
        assert!(reads("pods") && reads("configmaps") && !reads("secrets"));
    }
}
