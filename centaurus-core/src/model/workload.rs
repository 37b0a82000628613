//! Workload controllers: `ReplicaSet`, `Deployment`, `DaemonSet` and `StatefulSet`, for
//! container and VM pods alike.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::pod::validate_pod_spec;
use super::validation::{self, Errors, FieldError};
use super::{Condition, IntOrString, LabelSelector, Object, PodTemplateSpec};

/// Keeps a number of identical pods running.
pub type ReplicaSet = Object<ReplicaSetSpec, ReplicaSetStatus>;
crate::impl_resource!(
    ReplicaSet,
    kind = "ReplicaSet",
    group = "apps",
    version = "v1",
    plural = "replicasets",
    scope = Namespaced,
    short = ["rs"],
    validate = validate_replica_set,
    defaults = default_replica_set
);

fn default_replica_set(rs: &mut ReplicaSet) {
    rs.spec.replicas.get_or_insert(1);
    rs.spec.template.spec.set_defaults();
}

/// Desired state of a replica set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSetSpec {
    /// Desired number of pods (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Selects the pods the set owns; must match the template's labels.
    pub selector: LabelSelector,
    /// The pods to create.
    pub template: PodTemplateSpec,
    /// Seconds a ready pod must stay ready to count as available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
}

/// Observed state of a replica set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSetStatus {
    /// Pods that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Pods whose labels match the template.
    #[serde(default)]
    pub fully_labeled_replicas: i32,
    /// Pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pods that are available.
    #[serde(default)]
    pub available_replicas: i32,
    /// The generation the status describes.
    #[serde(default)]
    pub observed_generation: i64,
}

/// Declarative updates of replica sets: rolling updates of container and VM pods.
pub type Deployment = Object<DeploymentSpec, DeploymentStatus>;
crate::impl_resource!(
    Deployment,
    kind = "Deployment",
    group = "apps",
    version = "v1",
    plural = "deployments",
    scope = Namespaced,
    short = ["deploy"],
    validate = validate_deployment,
    defaults = default_deployment
);

/// Kubernetes' defaults: one replica, a rolling update of 25% surge and 25% unavailable
/// (unless `Recreate`), ten old replica sets kept.
fn default_deployment(d: &mut Deployment) {
    d.spec.replicas.get_or_insert(1);
    d.spec.revision_history_limit.get_or_insert(10);
    let strategy = &mut d.spec.strategy;
    let kind = strategy.type_.get_or_insert_with(|| "RollingUpdate".into());
    if kind == "RollingUpdate" {
        let rolling = strategy.rolling_update.get_or_insert_with(Default::default);
        let quarter = || IntOrString::String("25%".into());
        rolling.max_surge.get_or_insert_with(quarter);
        rolling.max_unavailable.get_or_insert_with(quarter);
    }
    d.spec.template.spec.set_defaults();
}

/// Desired state of a deployment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSpec {
    /// Desired number of pods (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Selects the pods; must match the template's labels.
    pub selector: LabelSelector,
    /// The pods to run.
    pub template: PodTemplateSpec,
    /// How old pods are replaced by new ones.
    #[serde(default)]
    pub strategy: DeploymentStrategy,
    /// Seconds a ready pod must stay ready to count as available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
    /// Old replica sets kept for rollback (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i32>,
    /// When true, changes to the template are not rolled out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// `RollingUpdate` (default) or `Recreate`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStrategy {
    /// The strategy's type.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Bounds of a rolling update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
}

/// Bounds of a rolling update (defaults: 25% each).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdate {
    /// Pods above the desired count that may exist during the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
    /// Pods below the desired count that may be unavailable during the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

/// Observed state of a deployment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    /// Pods of every replica set.
    #[serde(default)]
    pub replicas: i32,
    /// Pods with the current template.
    #[serde(default)]
    pub updated_replicas: i32,
    /// Ready pods.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Available pods.
    #[serde(default)]
    pub available_replicas: i32,
    /// Pods not yet available.
    #[serde(default)]
    pub unavailable_replicas: i32,
    /// The generation the status describes.
    #[serde(default)]
    pub observed_generation: i64,
    /// `Available`, `Progressing`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

fn validate_selected_template(
    e: &mut Errors,
    replicas: Option<i32>,
    selector: &LabelSelector,
    template: &PodTemplateSpec,
) {
    if replicas.is_some_and(|r| r < 0) {
        e.push("spec.replicas", "must not be negative");
    }
    if selector.match_labels.is_empty() && selector.match_expressions.is_empty() {
        e.push("spec.selector", "must not be empty");
    } else if !selector.matches(&template.metadata.labels) {
        e.push(
            "spec.template.metadata.labels",
            "must match the selector, or the controller could never find its pods",
        );
    }
    validation::labels(
        e,
        "spec.template.metadata.labels",
        &template.metadata.labels,
    );
    validate_pod_spec(e, "spec.template.spec", &template.spec);
}

fn validate_replica_set(rs: &ReplicaSet) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    validate_selected_template(
        &mut e,
        rs.spec.replicas,
        &rs.spec.selector,
        &rs.spec.template,
    );
    e.into_result()
}

fn validate_deployment(d: &Deployment) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    validate_selected_template(&mut e, d.spec.replicas, &d.spec.selector, &d.spec.template);
    match d.spec.strategy.type_.as_deref() {
        None | Some("RollingUpdate") | Some("Recreate") => {}
        Some(t) => e.push(
            "spec.strategy.type",
            format!("{t:?}: must be RollingUpdate or Recreate"),
        ),
    }
    if let Some(ru) = &d.spec.strategy.rolling_update {
        let replicas = d.spec.replicas.unwrap_or(1);
        let surge = ru.max_surge.as_ref().map(|v| v.resolve(replicas, true));
        let unavailable = ru
            .max_unavailable
            .as_ref()
            .map(|v| v.resolve(replicas, false));
        for (field, v) in [("maxSurge", &surge), ("maxUnavailable", &unavailable)] {
            match v {
                Some(Err(msg)) => {
                    e.push(format!("spec.strategy.rollingUpdate.{field}"), msg.clone())
                }
                Some(Ok(n)) if *n < 0 => e.push(
                    format!("spec.strategy.rollingUpdate.{field}"),
                    "must not be negative",
                ),
                _ => {}
            }
        }
        if matches!((surge, unavailable), (Some(Ok(0)), Some(Ok(0)))) {
            e.push(
                "spec.strategy.rollingUpdate",
                "maxSurge and maxUnavailable may not both be 0",
            );
        }
    }
    e.into_result()
}

/// One pod on each node that matches its template (container or VM pods).
pub type DaemonSet = Object<DaemonSetSpec, DaemonSetStatus>;
crate::impl_resource!(
    DaemonSet,
    kind = "DaemonSet",
    group = "apps",
    version = "v1",
    plural = "daemonsets",
    scope = Namespaced,
    short = ["ds"],
    validate = validate_daemon_set,
    defaults = default_daemon_set
);

/// Kubernetes' defaults: a rolling update of one node at a time, ten revisions kept.
fn default_daemon_set(ds: &mut DaemonSet) {
    let strategy = &mut ds.spec.update_strategy;
    let kind = strategy.type_.get_or_insert_with(|| "RollingUpdate".into());
    if kind == "RollingUpdate" {
        let rolling = strategy.rolling_update.get_or_insert_with(Default::default);
        rolling.max_unavailable.get_or_insert(IntOrString::Int(1));
        rolling.max_surge.get_or_insert(IntOrString::Int(0));
    }
    ds.spec.revision_history_limit.get_or_insert(10);
    ds.spec.template.spec.set_defaults();
}

/// Desired state of a daemon set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetSpec {
    /// Selects the pods; must match the template's labels.
    pub selector: LabelSelector,
    /// The pod to run on each node; its `nodeSelector` and tolerations choose the nodes.
    pub template: PodTemplateSpec,
    /// How pods of an old template are replaced.
    #[serde(default)]
    pub update_strategy: DaemonSetUpdateStrategy,
    /// Seconds a ready pod must stay ready to count as available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
    /// Old revisions kept (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i32>,
}

/// `RollingUpdate` (default) or `OnDelete` (a pod takes the new template when deleted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetUpdateStrategy {
    /// The strategy's type.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Bounds of a rolling update (`maxUnavailable` default 1; `maxSurge` 0, the only
    /// value supported: a node runs one pod of the set at a time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
}

/// Observed state of a daemon set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetStatus {
    /// Nodes that run a pod of the set and should.
    #[serde(default)]
    pub current_number_scheduled: i32,
    /// Nodes that run a pod of the set and should not.
    #[serde(default)]
    pub number_misscheduled: i32,
    /// Nodes that should run a pod of the set.
    #[serde(default)]
    pub desired_number_scheduled: i32,
    /// Nodes whose pod of the set is ready.
    #[serde(default)]
    pub number_ready: i32,
    /// Nodes whose pod has the current template.
    #[serde(default)]
    pub updated_number_scheduled: i32,
    /// Nodes whose pod is available.
    #[serde(default)]
    pub number_available: i32,
    /// Nodes that should run an available pod and do not.
    #[serde(default)]
    pub number_unavailable: i32,
    /// The generation the status describes.
    #[serde(default)]
    pub observed_generation: i64,
}

fn validate_daemon_set(ds: &DaemonSet) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    validate_selected_template(&mut e, None, &ds.spec.selector, &ds.spec.template);
    if ds.spec.template.spec.restart_policy.as_deref() != Some("Always") {
        e.push(
            "spec.template.spec.restartPolicy",
            "Unsupported value: a daemon set's pods restart \"Always\"",
        );
    }
    if !ds.spec.template.spec.node_name.is_empty() {
        e.push(
            "spec.template.spec.nodeName",
            "must be empty: the daemon set places a pod on each matching node",
        );
    }
    let strategy = &ds.spec.update_strategy;
    match strategy.type_.as_deref() {
        None | Some("RollingUpdate") | Some("OnDelete") => {}
        Some(t) => e.push(
            "spec.updateStrategy.type",
            format!("Unsupported value: {t:?}: supported values: \"RollingUpdate\", \"OnDelete\""),
        ),
    }
    if let Some(ru) = &strategy.rolling_update {
        if ru
            .max_surge
            .as_ref()
            .is_some_and(|s| *s != IntOrString::Int(0) && *s != IntOrString::String("0%".into()))
        {
            e.push(
                "spec.updateStrategy.rollingUpdate.maxSurge",
                "only 0 is supported: a node runs one pod of the set at a time",
            );
        }
        match ru.max_unavailable.as_ref().map(|v| v.resolve(100, false)) {
            Some(Err(msg)) => e.push("spec.updateStrategy.rollingUpdate.maxUnavailable", msg),
            Some(Ok(n)) if n < 1 => e.push(
                "spec.updateStrategy.rollingUpdate.maxUnavailable",
                "must be at least 1 (or a percentage of at least 1%)",
            ),
            _ => {}
        }
    }
    e.into_result()
}

/// Pods with stable ordinal names (`NAME-0`, `NAME-1`, ...), made and replaced in order.
pub type StatefulSet = Object<StatefulSetSpec, StatefulSetStatus>;
crate::impl_resource!(
    StatefulSet,
    kind = "StatefulSet",
    group = "apps",
    version = "v1",
    plural = "statefulsets",
    scope = Namespaced,
    short = ["sts"],
    validate = validate_stateful_set,
    defaults = default_stateful_set,
    update = stateful_set_update
);

/// Kubernetes' defaults: one replica, `OrderedReady`, a rolling update from partition 0,
/// ten revisions kept.
fn default_stateful_set(sts: &mut StatefulSet) {
    let spec = &mut sts.spec;
    spec.replicas.get_or_insert(1);
    spec.pod_management_policy
        .get_or_insert_with(|| "OrderedReady".into());
    spec.revision_history_limit.get_or_insert(10);
    let strategy = &mut spec.update_strategy;
    let kind = strategy.type_.get_or_insert_with(|| "RollingUpdate".into());
    if kind == "RollingUpdate" {
        strategy
            .rolling_update
            .get_or_insert_with(Default::default)
            .partition
            .get_or_insert(0);
    }
    spec.template.spec.set_defaults();
}

/// Desired state of a stateful set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSetSpec {
    /// Desired number of pods (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Selects the pods; must match the template's labels.
    pub selector: LabelSelector,
    /// The pods to run, named `NAME-ORDINAL`.
    pub template: PodTemplateSpec,
    /// The headless Service that names the pods in DNS (kept for the Services work).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_name: String,
    /// `OrderedReady` (default: one at a time, each after its predecessors are ready) or
    /// `Parallel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_management_policy: Option<String>,
    /// How pods of an old template are replaced.
    #[serde(default)]
    pub update_strategy: StatefulSetUpdateStrategy,
    /// Old revisions kept (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i32>,
    /// Seconds a ready pod must stay ready to count as available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
    /// Volume claims per pod: refused until persistent volumes exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<serde_json::Map<String, serde_json::Value>>")]
    pub volume_claim_templates: Vec<serde_json::Value>,
}

/// `RollingUpdate` (default) or `OnDelete`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSetUpdateStrategy {
    /// The strategy's type.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Where a rolling update stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<StatefulSetRollingUpdate>,
}

/// Bounds of a stateful set's rolling update.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSetRollingUpdate {
    /// Pods with an ordinal below it keep their template (default 0: all are updated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
}

/// Observed state of a stateful set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSetStatus {
    /// Pods that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pods that are available.
    #[serde(default)]
    pub available_replicas: i32,
    /// Pods of the current revision.
    #[serde(default)]
    pub current_replicas: i32,
    /// Pods of the update revision.
    #[serde(default)]
    pub updated_replicas: i32,
    /// The revision of the pods before the update (`NAME-HASH`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub current_revision: String,
    /// The revision of the template (`NAME-HASH`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub update_revision: String,
    /// The generation the status describes.
    #[serde(default)]
    pub observed_generation: i64,
}

fn validate_stateful_set(sts: &StatefulSet) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    let spec = &sts.spec;
    validate_selected_template(&mut e, spec.replicas, &spec.selector, &spec.template);
    if spec.template.spec.restart_policy.as_deref() != Some("Always") {
        e.push(
            "spec.template.spec.restartPolicy",
            "Unsupported value: a stateful set's pods restart \"Always\"",
        );
    }
    match spec.pod_management_policy.as_deref() {
        None | Some("OrderedReady" | "Parallel") => {}
        Some(p) => e.push(
            "spec.podManagementPolicy",
            format!("Unsupported value: {p:?}: supported values: \"OrderedReady\", \"Parallel\""),
        ),
    }
    match spec.update_strategy.type_.as_deref() {
        None | Some("RollingUpdate" | "OnDelete") => {}
        Some(t) => e.push(
            "spec.updateStrategy.type",
            format!("Unsupported value: {t:?}: supported values: \"RollingUpdate\", \"OnDelete\""),
        ),
    }
    if spec
        .update_strategy
        .rolling_update
        .as_ref()
        .and_then(|r| r.partition)
        .is_some_and(|p| p < 0)
    {
        e.push(
            "spec.updateStrategy.rollingUpdate.partition",
            "must not be negative",
        );
    }
    if !spec.volume_claim_templates.is_empty() {
        e.push(
            "spec.volumeClaimTemplates",
            "not supported: the region has no persistent volumes yet",
        );
    }
    // Pod names are NAME-ORDINAL and carry the name as a label value.
    if sts.metadata.name.len() > 52 {
        e.push(
            "metadata.name",
            "must be no more than 52 characters (its pods add an ordinal)",
        );
    }
    e.into_result()
}

/// Only replicas, the template, the update strategy, minReadySeconds and the history limit
/// may change, as Kubernetes allows.
fn stateful_set_update(new: &StatefulSet, old: &StatefulSet) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    let (n, o) = (&new.spec, &old.spec);
    if n.selector != o.selector {
        e.push("spec.selector", "field is immutable");
    }
    if n.service_name != o.service_name {
        e.push("spec.serviceName", "field is immutable");
    }
    if n.pod_management_policy != o.pod_management_policy {
        e.push("spec.podManagementPolicy", "field is immutable");
    }
    e.into_result()
}
