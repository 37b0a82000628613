//! Tenancy and infrastructure kinds: `Tenant`, `Namespace`, `Node`, `Lease`, `NodeLedger`,
//! `Action`, `Network`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validation::{self, Errors, FieldError};
use super::{Condition, NoStatus, Object, ResourceList, Time};

/// Node label naming the availability zone.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
/// Node label of simulated (hollow) nodes, `true`.
pub const LABEL_HOLLOW: &str = "centaurus.io/hollow";
/// Node label for failure drills: a hollow node labelled `off` stops renewing its lease and
/// reporting, as a host that lost power would, until the label is removed or `on`. Real
/// nodes ignore it.
pub const LABEL_POWER: &str = "centaurus.io/power";
/// Node label naming the region.
pub const LABEL_REGION: &str = "topology.kubernetes.io/region";
/// Node label naming the host.
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// The namespace of the system tenant holding node heartbeat leases, as in Kubernetes.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// A node's `Ready` condition as of now.
pub fn node_ready_condition(status: &str, reason: &str, message: &str) -> Condition {
    let now = super::now();
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Some(now),
        last_heartbeat_time: Some(now),
    }
}

/// The effects a taint can have.
pub const TAINT_EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// A tenant: an isolated space of namespaces, workloads and networks.
pub type Tenant = Object<TenantSpec, TenantStatus>;
crate::impl_resource!(
    Tenant,
    kind = "Tenant",
    group = "",
    version = "v1",
    plural = "tenants",
    scope = Cluster,
    short = ["te"],
    validate = validate_tenant
);

/// Desired state of a tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// The storage cluster (tenant partition) holding the tenant's data.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub storage_cluster_id: String,
    /// Hard limits on the tenant's space: `pods`, `cpu`, `memory` and `vms` (VM pods).
    /// Absent names are unlimited.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub quota: super::ResourceList,
}

/// Observed state of a tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TenantStatus {
    /// `Active` or `Terminating`; during a move between tenant partitions
    /// [`TENANT_MOVING`] and then [`TENANT_MOVED`] where it was, [`TENANT_ARRIVING`] where
    /// it goes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// What the tenant's pods use of `spec.quota`: charged when a pod is admitted, recounted
    /// by the quota controller ([`super::quota`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub used: super::ResourceList,
}

/// The phase of a tenant being copied to another tenant partition: its space is read-only.
pub const TENANT_MOVING: &str = "Moving";
/// The phase of a tenant's copy while it is written: not served yet, read-only.
pub const TENANT_ARRIVING: &str = "Arriving";
/// The phase of a tenant that another tenant partition now holds: its space here is being
/// drained, read-only.
pub const TENANT_MOVED: &str = "Moved";
/// On a moving or moved tenant: the tenant partition it goes to.
pub const ANNOTATION_MOVING_TO: &str = "tenancy.centaurus.io/moving-to";
/// On a moved tenant's copy: the tenant partition it came from.
pub const ANNOTATION_MOVED_FROM: &str = "tenancy.centaurus.io/moved-from";
/// On a moved tenant's copy: the store revision of its partition once the copy was
/// complete, where watches of the tenant's objects carry on.
pub const ANNOTATION_ARRIVED_AT: &str = "tenancy.centaurus.io/arrived-at-revision";

/// Whether `tenant`'s space takes no writes now: it is being moved between partitions.
pub fn tenant_frozen(tenant: &Tenant) -> bool {
    matches!(
        tenant.status.as_ref().map(|s| s.phase.as_str()),
        Some(TENANT_MOVING | TENANT_ARRIVING | TENANT_MOVED)
    )
}

/// Whether the partition whose copy of `tenant` this is serves it: not a copy still being
/// written, nor one another partition now holds.
pub fn tenant_served(tenant: &Tenant) -> bool {
    !matches!(
        tenant.status.as_ref().map(|s| s.phase.as_str()),
        Some(TENANT_ARRIVING | TENANT_MOVED)
    )
}

fn validate_tenant(t: &Tenant) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    e.check("metadata.name", validation::dns_label(&t.metadata.name));
    if t.metadata.name == "all" {
        e.push(
            "metadata.name",
            "\"all\" is reserved: in paths it means every tenant",
        );
    }
    for (name, q) in &t.spec.quota {
        let field = format!("spec.quota[{name}]");
        if !matches!(name.as_str(), "pods" | "cpu" | "memory" | "vms") {
            e.push(field, "supported quota names: pods, cpu, memory, vms");
        } else if let Err(err) = q.milli_value() {
            e.push(field, err.to_string());
        } else if q.milli_value().is_ok_and(|v| v < 0) {
            e.push(field, "must not be negative");
        }
    }
    e.into_result()
}

/// A namespace inside a tenant's space.
pub type Namespace = Object<NamespaceSpec, NamespaceStatus>;
crate::impl_resource!(
    Namespace,
    kind = "Namespace",
    group = "",
    version = "v1",
    plural = "namespaces",
    scope = Tenant,
    short = ["ns"],
    validate = validate_namespace
);

/// Desired state of a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NamespaceSpec {
    /// Finalizers that must run before the namespace is removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
}

/// Observed state of a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NamespaceStatus {
    /// `Active` or `Terminating`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
}

fn validate_namespace(ns: &Namespace) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    e.check("metadata.name", validation::dns_label(&ns.metadata.name));
    e.into_result()
}

/// A host that runs pods: containers, VMs or both.
pub type Node = Object<NodeSpec, NodeStatus>;
crate::impl_resource!(
    Node,
    kind = "Node",
    group = "",
    version = "v1",
    plural = "nodes",
    scope = Cluster,
    short = ["no"],
    validate = validate_node
);

/// Desired state of a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    /// Taints repel pods that do not tolerate them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// When true, no new pods are scheduled here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unschedulable: bool,
    /// Pod address range of the node (flat networking).
    #[serde(default, skip_serializing_if = "String::is_empty", rename = "podCIDR")]
    pub pod_cidr: String,
    /// Provider-specific ID.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        rename = "providerID"
    )]
    pub provider_id: String,
}

/// A taint on a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Taint {
    /// Taint key.
    pub key: String,
    /// Taint value.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
    /// When the taint was added (`NoExecute`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_added: Option<Time>,
}

/// Observed state of a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Total resources (`cpu`, `memory`, `pods`, `vm`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capacity: ResourceList,
    /// Resources available to pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allocatable: ResourceList,
    /// `Ready`, `MemoryPressure`, …
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// How to reach the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
    /// Versions and the workload types the node runs.
    #[serde(default)]
    pub node_info: NodeInfo,
    /// Where the API server reaches the node's agent (pod logs), and the certificate the
    /// agent serves there. Only the node itself may write it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_endpoint: Option<AgentEndpoint>,
}

/// A node agent's HTTPS endpoint, as its Node publishes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentEndpoint {
    /// `https://HOST:PORT`.
    pub url: String,
    /// Lower-case hex SHA-256 of the DER certificate the agent serves (self-signed; the
    /// API server accepts that certificate only).
    #[serde(rename = "certificateSHA256")]
    pub certificate_sha256: String,
}

/// One address of a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeAddress {
    /// `InternalIP`, `ExternalIP` or `Hostname`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The address.
    pub address: String,
}

/// Facts about a node's software.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// Kernel version.
    #[serde(default)]
    pub kernel_version: String,
    /// Operating system.
    #[serde(default)]
    pub operating_system: String,
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// Container runtime name and version (`runc://1.1`).
    #[serde(default)]
    pub container_runtime_version: String,
    /// Node agent version, as the Kubernetes version it serves (`v1.37.0-centaurus.0.1.0`).
    #[serde(default)]
    pub kubelet_version: String,
    /// Deprecated in Kubernetes and always empty; clients still expect the field.
    #[serde(default)]
    pub kube_proxy_version: String,
    /// Workload types the node runs: `container`, `vm`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workload_types: Vec<String>,
    /// The operating system's name (`/etc/os-release` `PRETTY_NAME`).
    #[serde(default)]
    pub os_image: String,
    /// The host's machine ID (`/etc/machine-id`).
    #[serde(default, rename = "machineID")]
    pub machine_id: String,
    /// The host's system UUID (DMI product UUID, when readable).
    #[serde(default, rename = "systemUUID")]
    pub system_uuid: String,
    /// The ID of the host's current boot; it changes when the host reboots.
    #[serde(default, rename = "bootID")]
    pub boot_id: String,
}

fn validate_node(node: &Node) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    for (i, t) in node.spec.taints.iter().enumerate() {
        e.check(
            format!("spec.taints[{i}].key"),
            validation::qualified_name(&t.key),
        );
        if !TAINT_EFFECTS.contains(&t.effect.as_str()) {
            e.push(
                format!("spec.taints[{i}].effect"),
                format!("{:?}: unknown effect", t.effect),
            );
        }
    }
    e.into_result()
}

/// A lease: a named lock with a holder and an expiry, used for heartbeats and leader election.
pub type Lease = Object<LeaseSpec, NoStatus>;
crate::impl_resource!(
    Lease,
    kind = "Lease",
    group = "coordination.k8s.io",
    version = "v1",
    plural = "leases",
    scope = Namespaced
);

/// Desired state of a lease.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaseSpec {
    /// Who holds the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_identity: Option<String>,
    /// How long a renewal is valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_duration_seconds: Option<i32>,
    /// When the current holder acquired it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquire_time: Option<Time>,
    /// When the holder last renewed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_time: Option<Time>,
    /// How many times the holder changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_transitions: Option<i32>,
}

impl Lease {
    /// True when the lease has a renewal that is still valid at `now`.
    pub fn is_valid_at(&self, now: Time) -> bool {
        match (self.spec.renew_time, self.spec.lease_duration_seconds) {
            (Some(renewed), Some(secs)) => now < renewed + chrono::Duration::seconds(secs.into()),
            _ => false,
        }
    }
}

/// The bookings on one node (named like the node): the requests of every pod schedulers
/// bound there, so that several schedulers sharing the node never overcommit it.
/// Reserved to system users, like every cluster-scoped kind.
pub type NodeLedger = Object<NodeLedgerSpec, NoStatus>;
crate::impl_resource!(
    NodeLedger,
    kind = "NodeLedger",
    group = "scheduling.centaurus.io",
    version = "v1",
    plural = "nodeledgers",
    scope = Cluster
);

/// The bookings of a node ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeLedgerSpec {
    /// Pod UID → `[cpu millicores, memory bytes, vm slots]`.
    #[serde(default)]
    pub pods: BTreeMap<String, [i64; 3]>,
}

/// What the bookings of tenant partition `partition` start with (a booking is
/// `PARTITION/POD-UID`; in a region of one partition, the pod UID alone).
pub fn booking_tag(partition: &str) -> String {
    format!("{partition}/")
}

/// An action on a VM pod (Arktos): reboot, snapshot or restore.
pub type Action = Object<ActionSpec, ActionStatus>;
crate::impl_resource!(
    Action,
    kind = "Action",
    group = "",
    version = "v1",
    plural = "actions",
    scope = Namespaced,
    validate = validate_action
);

/// What to do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionSpec {
    /// The node agent that carries it out (set when the pod is bound).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    /// An action on one pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_action: Option<PodAction>,
}

/// An action on one VM pod; exactly one of the actions is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodAction {
    /// The pod, in the action's namespace.
    pub pod_name: String,
    /// Restart the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_action: Option<RebootParams>,
    /// Save the VM state under a name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_action: Option<SnapshotParams>,
    /// Return to a saved state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_action: Option<RestoreParams>,
}

/// Reboot parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebootParams {
    /// Seconds to wait before rebooting.
    #[serde(default)]
    pub delay_in_seconds: i32,
}

/// Snapshot parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotParams {
    /// Name of the snapshot to take.
    pub snapshot_name: String,
}

/// Restore parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RestoreParams {
    /// The snapshot to return to.
    #[serde(rename = "snapshotID")]
    pub snapshot_id: String,
}

/// Progress of an action.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionStatus {
    /// True once carried out (or failed for good).
    #[serde(default)]
    pub complete: bool,
    /// `Pending`, `Succeeded` or `Failed`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// Detail for a person.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

fn validate_action(a: &Action) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    match &a.spec.pod_action {
        None => e.push("spec.podAction", "required"),
        Some(p) => {
            e.check(
                "spec.podAction.podName",
                validation::dns_subdomain(&p.pod_name),
            );
            let n = usize::from(p.reboot_action.is_some())
                + usize::from(p.snapshot_action.is_some())
                + usize::from(p.restore_action.is_some());
            if n != 1 {
                e.push(
                    "spec.podAction",
                    "exactly one of rebootAction, snapshotAction, restoreAction must be set",
                );
            }
        }
    }
    e.into_result()
}

/// A tenant network (Arktos): `flat`, or `vpc` backed by the Mizar network plane.
pub type Network = Object<NetworkSpec, NetworkStatus>;
crate::impl_resource!(
    Network,
    kind = "Network",
    group = "arktos.futurewei.com",
    version = "v1",
    plural = "networks",
    scope = Tenant,
    short = ["net"],
    validate = validate_network
);

/// Desired state of a network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    /// `flat` or `vpc`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The VPC of a `vpc` network.
    #[serde(default, skip_serializing_if = "String::is_empty", rename = "vpcID")]
    pub vpc_id: String,
    /// Address ranges of the network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidrs: Vec<String>,
}

/// Observed state of a network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStatus {
    /// `Pending`, `Ready` or `Failed`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// Detail for a person.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

fn validate_network(n: &Network) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    match n.spec.type_.as_str() {
        "flat" => {}
        "vpc" if n.spec.vpc_id.is_empty() => e.push("spec.vpcID", "required for type vpc"),
        "vpc" => {}
        other => e.push("spec.type", format!("{other:?}: must be flat or vpc")),
    }
    for (i, c) in n.spec.cidrs.iter().enumerate() {
        e.check(format!("spec.cidrs[{i}]"), validation::cidr(c).map(|_| ()));
    }
    e.into_result()
}
