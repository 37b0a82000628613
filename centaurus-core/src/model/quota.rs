//! `ResourceQuota` and `LimitRange` (core `v1`): limits per namespace, inside the limits
//! of the namespace's tenant.
//!
//! A quota's usage is charged at admission (the API server adds what an object uses to
//! `status.used` with a compare-and-swap, so concurrent creates through any API server never
//! overrun it) and kept true by the quota controller, which recounts a namespace when its
//! objects go away. Amounts are compared in thousandths, so `cpu` (`500m`) and byte counts
//! share one arithmetic.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::validation::{Errors, FieldError};
use super::{ObjectMeta, PodSpec, Quantity, Registry, ResourceList, ResourceRequirements};

/// The annotation on a quota with the time (RFC 3339) of the last admission that charged
/// it: a recount lower than the charged usage waits until charges in flight have landed.
pub const ANNOTATION_CHARGED_AT: &str = "quota.centaurus.io/charged-at";

/// How long after a charge a recount may lower a quota's usage, in seconds.
pub const CHARGE_SETTLE_SECS: i64 = 5;

/// The compute names a quota may limit, from a pod's containers and VM.
const COMPUTE: [&str; 7] = [
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
    "vms",
];

/// Kinds counted under their plain plural, as Kubernetes counts them.
const COUNTED: [&str; 5] = [
    "pods",
    "configmaps",
    "secrets",
    "serviceaccounts",
    "resourcequotas",
];

/// Desired limits of a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceQuotaSpec {
    /// Hard limits by resource name: `pods`, `cpu`/`requests.cpu`, `memory`/
    /// `requests.memory`, `limits.cpu`, `limits.memory`, `vms`, `configmaps`, `secrets`,
    /// `serviceaccounts`, `resourcequotas`, `count/PLURAL[.GROUP]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hard: ResourceList,
    /// Quota scopes (not served yet: a quota with scopes is refused).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// A scope selector (not served yet: refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<BTreeMap<String, Value>>")]
    pub scope_selector: Option<Value>,
}

/// What a namespace uses of its quota.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceQuotaStatus {
    /// The limits in force.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hard: ResourceList,
    /// The usage of each limited name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub used: ResourceList,
}

/// Hard limits on what a namespace's objects may use together.
pub type ResourceQuota = super::Object<ResourceQuotaSpec, ResourceQuotaStatus>;

crate::impl_resource!(
    ResourceQuota,
    kind = "ResourceQuota",
    group = "",
    version = "v1",
    plural = "resourcequotas",
    scope = Namespaced,
    short = ["quota"],
    validate = validate_quota
);

fn validate_quota(q: &ResourceQuota) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    for (name, value) in &q.spec.hard {
        let field = format!("spec.hard[{name}]");
        if !limitable(name) {
            e.push(
                &field,
                format!(
                    "{name:?} is not a resource this region limits: one of {COMPUTE:?}, {COUNTED:?} or count/PLURAL[.GROUP] of a built-in kind"
                ),
            );
        }
        quantity_check(&mut e, &field, value);
    }
    if !q.spec.scopes.is_empty() || q.spec.scope_selector.is_some() {
        e.push(
            "spec.scopes",
            "quota scopes and scope selectors are not served yet; a quota covers the whole namespace",
        );
    }
    e.into_result()
}

fn quantity_check(e: &mut Errors, field: &str, q: &Quantity) {
    match q.milli_value() {
        Ok(v) if v < 0 => e.push(field, "must be greater than or equal to 0"),
        Ok(_) => {}
        Err(err) => e.push(field, err.to_string()),
    }
}

/// True for the names a quota may limit.
fn limitable(name: &str) -> bool {
    COMPUTE.contains(&name)
        || COUNTED.contains(&name)
        || name
            .strip_prefix("count/")
            .is_some_and(|k| counted_kind(k).is_some())
}

/// The (group, plural) of a built-in namespaced kind named as `count/` names it:
/// `PLURAL` for the core group, `PLURAL.GROUP` otherwise.
fn counted_kind(name: &str) -> Option<(String, String)> {
    static BUILTIN: std::sync::LazyLock<Registry> = std::sync::LazyLock::new(Registry::builtin);
    let (plural, group) = name.split_once('.').unwrap_or((name, ""));
    BUILTIN
        .kinds()
        .find(|k| k.plural == plural && k.group == group && k.scope == super::Scope::Namespaced)
        .map(|k| (k.group.to_owned(), k.plural.to_owned()))
}

/// The (group, plural) of the kind whose objects a quota name counts: pods for the compute
/// names.
pub fn counted_by(name: &str) -> Option<(String, String)> {
    if COMPUTE.contains(&name) {
        return Some((String::new(), "pods".into()));
    }
    if COUNTED.contains(&name) {
        return Some((String::new(), name.to_owned()));
    }
    counted_kind(name.strip_prefix("count/")?)
}

/// An object whose usage is charged against hard limits: a namespace's [`ResourceQuota`],
/// or a [`super::Tenant`]'s quota over all its namespaces.
pub trait Ledger: super::Resource {
    /// The limits.
    fn hard(&self) -> &ResourceList;
    /// The usage recorded so far, if any.
    fn used(&self) -> Option<&ResourceList>;
    /// Records `used` (and the limits it was counted for).
    fn set_used(&mut self, used: ResourceList);
    /// The namespace whose objects it counts; None for all of a tenant's.
    fn counts_namespace(&self) -> Option<&str>;
    /// How a refusal names it after "exceeded quota" (`: NAME` of a ResourceQuota).
    fn named(&self) -> String;
}

impl Ledger for ResourceQuota {
    fn hard(&self) -> &ResourceList {
        &self.spec.hard
    }
    fn used(&self) -> Option<&ResourceList> {
        self.status.as_ref().map(|s| &s.used)
    }
    fn set_used(&mut self, used: ResourceList) {
        let hard = self.spec.hard.clone();
        let status = self.status.get_or_insert_default();
        status.used = used;
        status.hard = hard;
    }
    fn counts_namespace(&self) -> Option<&str> {
        Some(&self.metadata.namespace)
    }
    fn named(&self) -> String {
        format!(": {},", self.metadata.name)
    }
}

impl Ledger for super::Tenant {
    fn hard(&self) -> &ResourceList {
        &self.spec.quota
    }
    fn used(&self) -> Option<&ResourceList> {
        self.status.as_ref().map(|s| &s.used)
    }
    fn set_used(&mut self, used: ResourceList) {
        self.status.get_or_insert_default().used = used;
    }
    fn counts_namespace(&self) -> Option<&str> {
        None
    }
    fn named(&self) -> String {
        ":".into()
    }
}

/// Amounts by resource name, in thousandths.
pub type Amounts = BTreeMap<String, i64>;

/// An amount of resource `name` as a quantity: milli-units when it has a fraction, whole
/// units otherwise, memory in the largest binary unit that divides it (`64Mi`).
pub fn quantity_of(name: &str, milli: i64) -> Quantity {
    if milli % 1000 != 0 {
        return Quantity(format!("{milli}m"));
    }
    let whole = milli / 1000;
    if name.ends_with("memory") && whole != 0 {
        for (suffix, unit) in [
            ("Ti", 1i64 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if whole % unit == 0 {
                return Quantity(format!("{}{suffix}", whole / unit));
            }
        }
    }
    Quantity(whole.to_string())
}

/// The amounts of a resource list (unparseable quantities are left out).
pub fn amounts(list: &ResourceList) -> Amounts {
    list.iter()
        .filter_map(|(k, q)| Some((k.clone(), q.milli_value().ok()?)))
        .collect()
}

/// The resource list of some amounts.
pub fn resource_list(amounts: &Amounts) -> ResourceList {
    amounts
        .iter()
        .map(|(k, v)| (k.clone(), quantity_of(k, *v)))
        .collect()
}

/// Every compute name a pod uses: its containers' and VM's requests (defaulting to
/// limits) and limits, and `vms`.
pub fn pod_compute(spec: &PodSpec) -> Amounts {
    let mut out = Amounts::new();
    let parts = spec
        .containers
        .iter()
        .map(|c| &c.resources)
        .chain(spec.virtual_machine.iter().map(|vm| &vm.resources));
    for r in parts {
        for res in ["cpu", "memory"] {
            let request = r.requests.get(res).or_else(|| r.limits.get(res));
            if let Some(v) = request.and_then(|q| q.milli_value().ok()) {
                *out.entry(res.to_owned()).or_default() += v;
                *out.entry(format!("requests.{res}")).or_default() += v;
            }
            if let Some(v) = r.limits.get(res).and_then(|q| q.milli_value().ok()) {
                *out.entry(format!("limits.{res}")).or_default() += v;
            }
        }
    }
    if spec.virtual_machine.is_some() {
        out.insert("vms".into(), 1000);
    }
    out
}

/// What one object of kind `group`/`plural` uses (`obj` is the object, for pods): its
/// counts, and a pod's compute. A pod that has finished uses nothing.
pub fn usage_of(group: &str, plural: &str, obj: &Value) -> Amounts {
    let mut out = Amounts::new();
    if plural == "pods" {
        let phase = obj.pointer("/status/phase").and_then(Value::as_str);
        if matches!(phase, Some("Succeeded" | "Failed")) {
            return out;
        }
        if let Ok(spec) = serde_json::from_value::<PodSpec>(obj["spec"].clone()) {
            out = pod_compute(&spec);
        }
    }
    if group.is_empty() && COUNTED.contains(&plural) {
        out.insert(plural.to_owned(), 1000);
    }
    let count = if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    };
    out.insert(count, 1000);
    out
}

/// The quota names of `hard` that a compute constraint needs every part of a pod to state:
/// `cpu` limited means each container must request cpu (or set a limit), `limits.cpu`
/// means each must set a cpu limit. Returns the missing ones, as Kubernetes names them.
pub fn unstated(hard: &ResourceList, spec: &PodSpec) -> Vec<String> {
    let parts: Vec<&ResourceRequirements> = spec
        .containers
        .iter()
        .map(|c| &c.resources)
        .chain(spec.virtual_machine.iter().map(|vm| &vm.resources))
        .collect();
    let mut missing = Vec::new();
    for res in ["cpu", "memory"] {
        let needs_request = hard.contains_key(res) || hard.contains_key(&format!("requests.{res}"));
        if needs_request
            && parts
                .iter()
                .any(|r| !r.requests.contains_key(res) && !r.limits.contains_key(res))
        {
            missing.push(format!("requests.{res}"));
        }
        let limit = format!("limits.{res}");
        if hard.contains_key(&limit) && parts.iter().any(|r| !r.limits.contains_key(res)) {
            missing.push(limit);
        }
    }
    missing
}

/// Checks that adding `delta` to `used` keeps every name `hard` limits within it. The
/// error reads as Kubernetes': `requested: pods=1, used: pods=2, limited: pods=2`.
pub fn check(hard: &ResourceList, used: &Amounts, delta: &Amounts) -> Result<(), String> {
    let hard_amounts = amounts(hard);
    let over: Vec<&String> = delta
        .iter()
        .filter(|(name, want)| {
            **want > 0
                && hard_amounts
                    .get(*name)
                    .is_some_and(|limit| used.get(*name).copied().unwrap_or(0) + **want > *limit)
        })
        .map(|(name, _)| name)
        .collect();
    if over.is_empty() {
        return Ok(());
    }
    let show = |f: &dyn Fn(&str) -> String| {
        over.iter()
            .map(|n| format!("{n}={}", f(n)))
            .collect::<Vec<_>>()
            .join(",")
    };
    Err(format!(
        "requested: {}, used: {}, limited: {}",
        show(&|n| quantity_of(n, delta[n]).0),
        show(&|n| quantity_of(n, used.get(n).copied().unwrap_or(0)).0),
        show(&|n| hard[n].0.clone()),
    ))
}

/// One kind of limit in a [`LimitRange`]: per `Container` (and a VM) or per `Pod`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitRangeItem {
    /// `Container` or `Pod`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Largest limit (a container's, or a pod's sum).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub max: ResourceList,
    /// Smallest request (a container's, or a pod's sum).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub min: ResourceList,
    /// The limit a container gets when it sets none (`Container` only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub default: ResourceList,
    /// The request a container gets when it sets none (`Container` only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub default_request: ResourceList,
    /// Largest ratio of limit to request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub max_limit_request_ratio: ResourceList,
}

/// Per-container and per-pod defaults and bounds of a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitRangeSpec {
    /// The limits.
    #[serde(default)]
    pub limits: Vec<LimitRangeItem>,
}

/// Defaults and bounds for the compute resources of a namespace's pods, containers and VMs
/// (a VM pod's VM is its container).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitRange {
    /// `v1`.
    #[serde(default)]
    pub api_version: String,
    /// `LimitRange`.
    #[serde(default)]
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The limits.
    #[serde(default)]
    pub spec: LimitRangeSpec,
}

crate::impl_resource!(
    LimitRange,
    kind = "LimitRange",
    group = "",
    version = "v1",
    plural = "limitranges",
    scope = Namespaced,
    short = ["limits"],
    validate = validate_limit_range,
    defaults = default_limit_range
);

/// Kubernetes' defaults: a container default limit is `max` when unset, its default request
/// the default limit.
fn default_limit_range(lr: &mut LimitRange) {
    for item in lr.spec.limits.iter_mut().filter(|i| i.type_ == "Container") {
        for (k, v) in &item.max {
            item.default.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (k, v) in &item.default {
            item.default_request
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
    }
}

fn validate_limit_range(lr: &LimitRange) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    for (i, item) in lr.spec.limits.iter().enumerate() {
        let field = |f: &str| format!("spec.limits[{i}].{f}");
        match item.type_.as_str() {
            "Container" => {}
            "Pod" => {
                if !item.default.is_empty() || !item.default_request.is_empty() {
                    e.push(field("default"), "a Pod limit has no defaults");
                }
            }
            t => e.push(
                field("type"),
                format!("{t:?} is not served; Container or Pod"),
            ),
        }
        for (name, list) in [
            ("max", &item.max),
            ("min", &item.min),
            ("default", &item.default),
            ("defaultRequest", &item.default_request),
            ("maxLimitRequestRatio", &item.max_limit_request_ratio),
        ] {
            for (k, q) in list {
                quantity_check(&mut e, &field(&format!("{name}[{k}]")), q);
            }
        }
        let (min, max) = (amounts(&item.min), amounts(&item.max));
        let (default, request) = (amounts(&item.default), amounts(&item.default_request));
        for (k, lo) in &min {
            if max.get(k).is_some_and(|hi| lo > hi) {
                e.push(field(&format!("min[{k}]")), "must be at most max");
            }
            if request.get(k).is_some_and(|r| r < lo) {
                e.push(
                    field(&format!("defaultRequest[{k}]")),
                    "must be at least min",
                );
            }
        }
        for (k, r) in &request {
            if default.get(k).is_some_and(|d| r > d) {
                e.push(
                    field(&format!("defaultRequest[{k}]")),
                    "must be at most the default limit",
                );
            }
        }
        for (k, d) in &default {
            if max.get(k).is_some_and(|hi| d > hi) {
                e.push(field(&format!("default[{k}]")), "must be at most max");
            }
        }
    }
    e.into_result()
}

impl LimitRange {
    /// Gives each container (and the VM) of `pod` (a pod's JSON) the default limits and
    /// requests it does not set.
    pub fn default_pod(&self, pod: &mut Value) {
        for item in self.spec.limits.iter().filter(|i| i.type_ == "Container") {
            for part in parts_mut(pod) {
                let resources = &mut part["resources"];
                if !resources.is_object() {
                    *resources = Value::Object(Default::default());
                }
                // Requests first, while the limits are still the container's own.
                for (list, defaults) in [
                    ("requests", &item.default_request),
                    ("limits", &item.default),
                ] {
                    for (k, v) in defaults {
                        let set = resources[list]
                            .as_object()
                            .is_some_and(|m| m.contains_key(k));
                        if set {
                            continue;
                        }
                        // A container that sets a limit but no request requests its limit.
                        let value = match (list, resources["limits"].get(k)) {
                            ("requests", Some(limit)) => limit.clone(),
                            _ => Value::String(v.0.clone()),
                        };
                        if !resources[list].is_object() {
                            resources[list] = Value::Object(Default::default());
                        }
                        resources[list][k] = value;
                    }
                }
            }
        }
    }

    /// The bounds `spec` breaks, one message each, as Kubernetes words them.
    pub fn violations(&self, spec: &PodSpec) -> Vec<String> {
        let mut out = Vec::new();
        let parts: Vec<(&str, &ResourceRequirements)> = spec
            .containers
            .iter()
            .map(|c| (c.name.as_str(), &c.resources))
            .chain(
                spec.virtual_machine
                    .iter()
                    .map(|vm| (vm.name.as_str(), &vm.resources)),
            )
            .collect();
        for item in &self.spec.limits {
            let what = item.type_.as_str();
            let checks: Vec<(String, Amounts, Amounts)> = if what == "Pod" {
                let mut req = Amounts::new();
                let mut lim = Amounts::new();
                for (_, r) in &parts {
                    for (k, v) in amounts(&r.requests) {
                        *req.entry(k).or_default() += v;
                    }
                    for (k, v) in amounts(&r.limits) {
                        *lim.entry(k).or_default() += v;
                    }
                }
                vec![("Pod".into(), req, lim)]
            } else {
                parts
                    .iter()
                    .map(|(n, r)| {
                        (
                            format!("Container {n}"),
                            amounts(&r.requests),
                            amounts(&r.limits),
                        )
                    })
                    .collect()
            };
            for (who, req, lim) in checks {
                for (k, lo) in amounts(&item.min) {
                    match req.get(&k) {
                        Some(r) if *r >= lo => {}
                        Some(r) => out.push(format!(
                            "minimum {k} usage per {what} is {}, but request is {}",
                            item.min[&k].0,
                            quantity_of(&k, *r).0
                        )),
                        None => out.push(format!(
                            "{who}: minimum {k} usage per {what} is {}: no request is set",
                            item.min[&k].0
                        )),
                    }
                }
                for (k, hi) in amounts(&item.max) {
                    match lim.get(&k) {
                        Some(l) if *l <= hi => {}
                        Some(l) => out.push(format!(
                            "maximum {k} usage per {what} is {}, but limit is {}",
                            item.max[&k].0,
                            quantity_of(&k, *l).0
                        )),
                        None => out.push(format!(
                            "{who}: maximum {k} usage per {what} is {}: no limit is set",
                            item.max[&k].0
                        )),
                    }
                }
                for (k, ratio) in amounts(&item.max_limit_request_ratio) {
                    if let (Some(l), Some(r)) = (lim.get(&k), req.get(&k))
                        && *r > 0
                        && l.saturating_mul(1000) / r > ratio
                    {
                        out.push(format!(
                            "{k} max limit to request ratio per {what} is {}, but provided ratio is {:.6}",
                            item.max_limit_request_ratio[&k].0,
                            *l as f64 / *r as f64
                        ));
                    }
                }
            }
        }
        out
    }
}

/// The containers and the VM of a pod's JSON.
fn parts_mut(pod: &mut Value) -> Vec<&mut Value> {
    let spec = &mut pod["spec"];
    let Some(spec) = spec.as_object_mut() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in spec.iter_mut() {
        match (k.as_str(), v) {
            ("containers", Value::Array(cs)) => out.extend(cs.iter_mut()),
            ("virtualMachine", vm @ Value::Object(_)) => out.push(vm),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(resources: Value) -> PodSpec {
        serde_json::from_value(serde_json::json!({"containers": [
            {"name": "a", "image": "busybox", "resources": resources},
        ]}))
        .unwrap()
    }

    #[test]
    fn usage_counts_compute_and_objects() {
        let spec = serde_json::json!({"spec": {"containers": [
            {"name": "a", "image": "i", "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "1", "memory": "64Mi"}}},
            {"name": "b", "image": "i"},
        ]}});
        let u = usage_of("", "pods", &spec);
        assert_eq!(u["pods"], 1000);
        assert_eq!(u["count/pods"], 1000);
        assert_eq!(u["requests.cpu"], 250);
        assert_eq!(u["limits.cpu"], 1000);
        assert_eq!(
            u["memory"],
            64 * 1024 * 1024 * 1000,
            "requests default to limits"
        );
        let done = serde_json::json!({"spec": spec["spec"], "status": {"phase": "Succeeded"}});
        assert!(usage_of("", "pods", &done).is_empty());
        assert_eq!(
            usage_of("batch", "jobs", &Value::Null),
            Amounts::from([("count/jobs.batch".to_owned(), 1000)])
        );
    }

    #[test]
    fn checks_read_as_kubernetes_reads_them() {
        let hard: ResourceList = [("pods", "2"), ("requests.cpu", "1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Quantity::new(v)))
            .collect();
        let used = Amounts::from([("pods".to_owned(), 2000), ("requests.cpu".to_owned(), 500)]);
        let delta = Amounts::from([("pods".to_owned(), 1000), ("requests.cpu".to_owned(), 250)]);
        assert_eq!(
            check(&hard, &used, &delta).unwrap_err(),
            "requested: pods=1, used: pods=2, limited: pods=2"
        );
        let used = Amounts::from([("pods".to_owned(), 1000), ("requests.cpu".to_owned(), 800)]);
        assert_eq!(
            check(&hard, &used, &delta).unwrap_err(),
            "requested: requests.cpu=250m, used: requests.cpu=800m, limited: requests.cpu=1"
        );
        assert!(check(&hard, &Amounts::new(), &delta).is_ok());
        assert_eq!(
            unstated(&hard, &pod(serde_json::json!({}))),
            ["requests.cpu"]
        );
    }

    #[test]
    fn limit_ranges_default_and_bound_containers() {
        let mut lr: LimitRange = serde_json::from_value(serde_json::json!({"spec": {"limits": [
            {"type": "Container", "max": {"cpu": "1"}, "min": {"cpu": "100m"}, "defaultRequest": {"cpu": "200m"}},
        ]}}))
        .unwrap();
        default_limit_range(&mut lr);
        assert_eq!(
            lr.spec.limits[0].default["cpu"].0, "1",
            "default limit is max"
        );
        let mut p = serde_json::json!({"spec": {"containers": [
            {"name": "a", "image": "i"},
            {"name": "b", "image": "i", "resources": {"limits": {"cpu": "500m"}}},
        ]}});
        lr.default_pod(&mut p);
        assert_eq!(
            p["spec"]["containers"][0]["resources"]["requests"]["cpu"],
            "200m"
        );
        assert_eq!(
            p["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "1"
        );
        assert_eq!(
            p["spec"]["containers"][1]["resources"]["requests"]["cpu"], "500m",
            "a set limit is the request"
        );
        let spec: PodSpec = serde_json::from_value(p["spec"].clone()).unwrap();
        assert!(lr.violations(&spec).is_empty());
        let big = pod(serde_json::json!({"limits": {"cpu": "2"}, "requests": {"cpu": "50m"}}));
        assert_eq!(
            lr.violations(&big),
            [
                "minimum cpu usage per Container is 100m, but request is 50m",
                "maximum cpu usage per Container is 1, but limit is 2"
            ]
        );
        let bad: LimitRange = serde_json::from_value(serde_json::json!({"spec": {"limits": [
            {"type": "Container", "max": {"cpu": "1"}, "min": {"cpu": "2"}},
            {"type": "PersistentVolumeClaim"},
        ]}}))
        .unwrap();
        let errs = validate_limit_range(&bad).unwrap_err();
        assert_eq!(
            errs.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(),
            ["spec.limits[0].min[cpu]", "spec.limits[1].type"]
        );
    }
}
