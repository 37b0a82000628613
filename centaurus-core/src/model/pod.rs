//! `Pod`: one schedulable unit holding either containers or one virtual machine.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validation::{self, Errors, FieldError};
use super::{Condition, Object, ObjectMeta, Quantity, Time};

/// A pod: containers *or* one virtual machine, scheduled as a unit onto one node.
pub type Pod = Object<PodSpec, PodStatus>;

crate::impl_resource!(
    Pod,
    kind = "Pod",
    group = "",
    version = "v1",
    plural = "pods",
    scope = Namespaced,
    short = ["po"],
    validate = validate_pod,
    defaults = default_pod,
    view = (show_vm_as_container, vm_as_kept)
);

/// Kubernetes tools index a pod's `spec.containers` (`kubectl logs` and `attach` take the
/// first one and fail on a pod without any), so the API shows a VM pod's VM as its one
/// container (same name and image, with a terminal: its serial console) and the VM's
/// status as that container's status. Objects read back drop both ([`vm_as_kept`]).
pub fn show_vm_as_container(pod: &mut serde_json::Value) {
    let Some(vm) = pod.pointer("/spec/virtualMachine").cloned() else {
        return;
    };
    let (name, image) = (
        vm.get("name").cloned().unwrap_or_default(),
        vm.get("image").cloned().unwrap_or_default(),
    );
    let mut container =
        serde_json::json!({"name": name, "image": image, "stdin": true, "tty": true});
    if let Some(r) = vm.get("resources") {
        container["resources"] = r.clone();
    }
    pod["spec"]["containers"] = serde_json::json!([container]);
    let Some(vs) = pod.pointer("/status/virtualMachineStatus").cloned() else {
        return;
    };
    let running = vs.get("state").and_then(|s| s.as_str()) == Some("Running");
    let state = if running {
        let started = pod
            .pointer("/status/startTime")
            .cloned()
            .unwrap_or_default();
        serde_json::json!({"running": {"startedAt": started}})
    } else {
        serde_json::json!({"waiting": {"reason": vs.get("state").cloned().unwrap_or_default()}})
    };
    pod["status"]["containerStatuses"] = serde_json::json!([{
        "name": name, "image": image, "imageID": "",
        "containerID": vs.get("vmID").cloned().unwrap_or_default(),
        "ready": vs.get("ready").cloned().unwrap_or(serde_json::json!(false)),
        "started": running,
        "restartCount": vs.get("restartCount").cloned().unwrap_or(serde_json::json!(0)),
        "state": state,
    }]);
}

/// A VM pod as it is kept: without the container and container status that show its VM
/// to Kubernetes tools ([`show_vm_as_container`]); `None` when there are none.
pub fn vm_as_kept(pod: &serde_json::Value) -> Option<serde_json::Value> {
    let vm = pod.pointer("/spec/virtualMachine")?;
    let name = vm.get("name");
    let is_mirror = |list: Option<&serde_json::Value>| {
        list.and_then(|l| l.as_array())
            .is_some_and(|l| l.len() == 1 && l[0].get("name") == name)
    };
    let (spec, status) = (
        is_mirror(pod.pointer("/spec/containers")),
        is_mirror(pod.pointer("/status/containerStatuses")),
    );
    if !spec && !status {
        return None;
    }
    let mut kept = pod.clone();
    if spec && let Some(s) = kept.get_mut("spec").and_then(|s| s.as_object_mut()) {
        s.remove("containers");
    }
    if status && let Some(s) = kept.get_mut("status").and_then(|s| s.as_object_mut()) {
        s.remove("containerStatuses");
    }
    Some(kept)
}

/// Kubernetes' defaults, and the phase a pod has from its creation on (`Pending`; clients
/// read `status.phase` of a pod they have just created).
fn default_pod(pod: &mut Pod) {
    pod.spec.set_defaults();
    let status = pod.status.get_or_insert_with(PodStatus::default);
    if status.phase.is_empty() {
        status.phase = "Pending".into();
    }
}

/// Resource amounts by name (`cpu`, `memory`, `pods`, `vm`).
pub type ResourceList = BTreeMap<String, Quantity>;

/// Desired state of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// The containers of a container pod; empty for a VM pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<Container>,
    /// The virtual machine of a VM pod; absent for a container pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine: Option<VirtualMachine>,
    /// The node the pod is bound to; set by the scheduler.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    /// Labels a node must carry to run the pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pod tolerates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// `Always` (default), `OnFailure` or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    /// The scheduler that places the pod; the default scheduler when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scheduler_name: String,
    /// Scheduling priority; higher goes first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Seconds given to stop gracefully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    /// How the pod's DNS is set up: `ClusterFirst` (the default: the cluster DNS and the
    /// Kubernetes search path), `ClusterFirstWithHostNet` (the same), `Default` (the
    /// node's), `None` (`dnsConfig` alone).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dns_policy: String,
    /// Nameservers, search domains and resolver options added to what the policy gives
    /// (all there is under `dnsPolicy: None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<PodDnsConfig>,
    /// Pod-level security attributes, kept as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<serde_json::Map<String, serde_json::Value>>,
    /// Whether Service environment variables are injected (true by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_service_links: Option<bool>,
    /// Volumes the containers may mount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<super::Volume>,
    /// The ServiceAccount the pod runs as (`default` when unset).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_name: String,
    /// The same, under its deprecated name; kept equal to `serviceAccountName`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account: String,
    /// Whether the account's token is projected into the pod (the account decides when
    /// unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automount_service_account_token: Option<bool>,
}

/// A pod's own DNS settings (`spec.dnsConfig`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodDnsConfig {
    /// Nameserver addresses (at most 3 in all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub searches: Vec<String>,
    /// Resolver options (`ndots`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<PodDnsConfigOption>,
}

/// One resolver option.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PodDnsConfigOption {
    /// Its name.
    pub name: String,
    /// Its value, for options that take one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// The DNS policies a pod may name.
pub const DNS_POLICIES: [&str; 4] = ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];
/// Most nameservers a resolv.conf holds (the resolver reads no more).
pub const MAX_NAMESERVERS: usize = 3;
/// Most search domains a pod may add.
pub const MAX_SEARCHES: usize = 32;

/// The scheduler that places pods that name none.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

impl PodSpec {
    /// Kubernetes' pod defaults: `restartPolicy: Always`, `dnsPolicy: ClusterFirst`,
    /// `schedulerName: default-scheduler`, `terminationGracePeriodSeconds: 30`, an empty
    /// `securityContext`, `enableServiceLinks: true`, `serviceAccountName: default`,
    /// `defaultMode: 0644` of ConfigMap and
    /// Secret volumes, and per container `imagePullPolicy`
    /// (`Always` for `:latest` or no tag, else `IfNotPresent`) and the termination message
    /// path and policy.
    pub fn set_defaults(&mut self) {
        self.restart_policy.get_or_insert_with(|| "Always".into());
        if self.dns_policy.is_empty() {
            self.dns_policy = "ClusterFirst".into();
        }
        if self.scheduler_name.is_empty() {
            self.scheduler_name = DEFAULT_SCHEDULER_NAME.into();
        }
        self.termination_grace_period_seconds.get_or_insert(30);
        self.security_context.get_or_insert_with(Default::default);
        self.enable_service_links.get_or_insert(true);
        if self.service_account_name.is_empty() {
            self.service_account_name = match self.service_account.as_str() {
                "" => super::DEFAULT_SERVICE_ACCOUNT.into(),
                old => old.into(),
            };
        }
        self.service_account.clone_from(&self.service_account_name);
        for v in &mut self.volumes {
            if let Some(c) = &mut v.config_map {
                c.default_mode.get_or_insert(0o644);
            }
            if let Some(s) = &mut v.secret {
                s.default_mode.get_or_insert(0o644);
            }
        }
        for c in &mut self.containers {
            c.image_pull_policy.get_or_insert_with(|| {
                let tag = c
                    .image
                    .rsplit('/')
                    .next()
                    .and_then(|last| last.split_once(':'));
                match tag {
                    None | Some((_, "latest")) if !c.image.contains('@') => "Always".into(),
                    _ => "IfNotPresent".into(),
                }
            });
            if c.termination_message_path.is_empty() {
                c.termination_message_path = "/dev/termination-log".into();
            }
            if c.termination_message_policy.is_empty() {
                c.termination_message_policy = "File".into();
            }
        }
    }
}

/// One container of a container pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// Unique within the pod (a DNS label).
    pub name: String,
    /// Image reference, resolved by the node's image store.
    pub image: String,
    /// Entrypoint; the image's when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Every key of ConfigMaps and Secrets as environment variables (`env` wins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<super::EnvFromSource>,
    /// Volumes of the pod mounted into the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<super::VolumeMount>,
    /// Working directory inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Requests and limits.
    #[serde(default)]
    pub resources: ResourceRequirements,
    /// Ports the container listens on (informational).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// `Always`, `IfNotPresent` or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Where the container may write why it ended.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub termination_message_path: String,
    /// `File` or `FallbackToLogsOnError`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub termination_message_policy: String,
    /// Keeps standard input open (`kubectl run -i`, `kubectl debug`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin: bool,
    /// Allocates a terminal.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    /// Container-level security attributes, kept as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<serde_json::Map<String, serde_json::Value>>,
}

/// An environment variable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Variable value.
    #[serde(default)]
    pub value: String,
    /// Where the value comes from instead (a ConfigMap, a Secret, a field of the pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<super::EnvVarSource>,
}

/// A port a container exposes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// Optional name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The port number.
    pub container_port: i32,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// Compute resources requested (for scheduling) and limited (enforced by the runtime).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceRequirements {
    /// Upper bounds enforced at run time.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: ResourceList,
    /// Amounts reserved at scheduling time; default to the limits.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: ResourceList,
}

/// The virtual machine of a VM pod (Arktos `virtualMachine`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachine {
    /// Name of the VM (a DNS label).
    pub name: String,
    /// VM image reference, resolved by the node's image store.
    pub image: String,
    /// Requests and limits (`cpu`, `memory`).
    #[serde(default)]
    pub resources: ResourceRequirements,
    /// Name of the key pair injected into the guest.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_pair_name: String,
    /// Public key injected into the guest.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub public_key: String,
    /// Data handed to the guest at boot (cloud-init style), base64 as in Arktos.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_data: String,
    /// The pod's volumes placed in the guest's root filesystem at boot (ConfigMap and
    /// Secret files, empty directories): the guest reads them at `mountPath`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<super::VolumeMount>,
    /// Desired power state: `Running` (default) or `Shutdown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_spec: Option<String>,
    /// `Always`, `IfNotPresent` or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Where the container may write why it ended.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub termination_message_path: String,
    /// `File` or `FallbackToLogsOnError`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub termination_message_policy: String,
    /// Keeps standard input open (`kubectl run -i`, `kubectl debug`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin: bool,
    /// Allocates a terminal.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    /// Container-level security attributes, kept as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A taint the pod tolerates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Toleration {
    /// Taint key; empty with `Exists` tolerates every taint.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// `Equal` (default) or `Exists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// Value compared with `Equal`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// The effect tolerated; every effect when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub effect: String,
    /// How long a `NoExecute` taint is tolerated before eviction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

impl Toleration {
    /// Kubernetes' matching: an empty effect tolerates every effect, an empty key with
    /// `Exists` every taint, `Exists` any value of its key, `Equal` just its value.
    pub fn tolerates(&self, key: &str, value: &str, effect: &str) -> bool {
        if !self.effect.is_empty() && self.effect != effect {
            return false;
        }
        let exists = self.operator.as_deref() == Some("Exists");
        if self.key.is_empty() {
            return exists;
        }
        self.key == key && (exists || self.value == value)
    }
}

/// Observed state of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Unknown`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// `PodScheduled`, `Initialized`, `Ready`, …
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Why the pod is in its phase, for a person.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Short machine-readable reason (`Evicted`, `NodeLost`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Address of the node running the pod.
    #[serde(default, skip_serializing_if = "String::is_empty", rename = "hostIP")]
    pub host_ip: String,
    /// The pod's address in its network.
    #[serde(default, skip_serializing_if = "String::is_empty", rename = "podIP")]
    pub pod_ip: String,
    /// When the node agent accepted the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// One entry per container of a container pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_statuses: Vec<ContainerStatus>,
    /// The state of a VM pod's virtual machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine_status: Option<VirtualMachineStatus>,
}

/// Observed state of one container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    /// The container's name.
    pub name: String,
    /// Current state.
    #[serde(default)]
    pub state: ContainerState,
    /// True when the container is running and ready.
    #[serde(default)]
    pub ready: bool,
    /// Times the container was restarted.
    #[serde(default)]
    pub restart_count: i32,
    /// The image it runs.
    #[serde(default)]
    pub image: String,
    /// Runtime-specific ID, `runc://…`.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        rename = "containerID"
    )]
    pub container_id: String,
    /// The image the runtime resolved the container's image to.
    #[serde(default, skip_serializing_if = "String::is_empty", rename = "imageID")]
    pub image_id: String,
    /// True once the container has started (and not yet stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<bool>,
}

/// Exactly one of the fields is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ContainerState {
    /// Not yet running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<StateReason>,
    /// Running since a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<StateRunning>,
    /// Exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminated: Option<StateTerminated>,
}

/// A waiting reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StateReason {
    /// Machine-readable reason.
    #[serde(default)]
    pub reason: String,
    /// Detail for a person.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Running since.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateRunning {
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
}

/// How a container ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateTerminated {
    /// The exit code.
    pub exit_code: i32,
    /// Machine-readable reason (`Completed`, `Error`, `OOMKilled`).
    #[serde(default)]
    pub reason: String,
    /// Detail for a person.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
}

/// Observed state of a VM pod's virtual machine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineStatus {
    /// The VM's name.
    pub name: String,
    /// The image it booted.
    #[serde(default)]
    pub image: String,
    /// Lifecycle state: `Pending`, `Running`, `Rebooting`, `Stopped`, `Failed`.
    #[serde(default)]
    pub state: String,
    /// Power state as the hypervisor reports it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub power_state: String,
    /// True once the guest reported ready.
    #[serde(default)]
    pub ready: bool,
    /// Times the VM was restarted (including reboot actions).
    #[serde(default)]
    pub restart_count: i32,
    /// Hypervisor-specific ID.
    #[serde(default, skip_serializing_if = "String::is_empty", rename = "vmID")]
    pub vm_id: String,
    /// Detail for a person.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Pod metadata and spec, as embedded in workload controllers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PodTemplateSpec {
    /// Metadata given to each pod (labels must match the controller's selector).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The pods' spec.
    #[serde(default)]
    pub spec: PodSpec,
}

impl PodSpec {
    /// The pod's request of `resource` summed over its containers and VM, in milli-units for
    /// `cpu` and whole units otherwise. A workload without requests is charged its limits,
    /// as Kubernetes defaults requests to limits.
    pub fn requested(&self, resource: &str) -> i64 {
        let one = |r: &ResourceRequirements| {
            let q = r.requests.get(resource).or_else(|| r.limits.get(resource));
            q.map(|q| {
                if resource == "cpu" {
                    q.milli_value().unwrap_or(0)
                } else {
                    q.value().unwrap_or(0)
                }
            })
            .unwrap_or(0)
        };
        self.containers
            .iter()
            .map(|c| one(&c.resources))
            .sum::<i64>()
            + self
                .virtual_machine
                .as_ref()
                .map_or(0, |vm| one(&vm.resources))
    }
}

impl Pod {
    /// True for a VM pod.
    pub fn is_vm(&self) -> bool {
        self.spec.virtual_machine.is_some()
    }

    /// The pod's phase, `Pending` when no status was reported yet.
    pub fn phase(&self) -> &str {
        match &self.status {
            Some(s) if !s.phase.is_empty() => &s.phase,
            _ => "Pending",
        }
    }
}

fn validate_resources(errors: &mut Errors, field: &str, r: &ResourceRequirements) {
    for (kind, list) in [("limits", &r.limits), ("requests", &r.requests)] {
        for (name, q) in list {
            match q.milli_value() {
                Ok(v) if v < 0 => {
                    errors.push(format!("{field}.{kind}[{name}]"), "must not be negative")
                }
                Ok(_) => {}
                Err(e) => errors.push(format!("{field}.{kind}[{name}]"), e.to_string()),
            }
        }
    }
}

/// Checks a pod spec; `field` is its path (`spec` or `spec.template.spec`).
pub fn validate_pod_spec(errors: &mut Errors, field: &str, spec: &PodSpec) {
    super::volume::validate_pod_config(errors, field, spec);
    match (spec.containers.is_empty(), &spec.virtual_machine) {
        (true, None) => errors.push(
            field,
            "a pod must hold either containers or a virtualMachine",
        ),
        (false, Some(_)) => errors.push(
            field,
            "a pod holds containers or a virtualMachine, not both",
        ),
        _ => {}
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let f = format!("{field}.containers[{i}]");
        errors.check(format!("{f}.name"), validation::dns_label(&c.name));
        if !names.insert(c.name.as_str()) {
            errors.push(
                format!("{f}.name"),
                format!("duplicate container name {:?}", c.name),
            );
        }
        if c.image.trim().is_empty() {
            errors.push(format!("{f}.image"), "must not be empty");
        }
        validate_resources(errors, &format!("{f}.resources"), &c.resources);
    }
    if let Some(vm) = &spec.virtual_machine {
        let f = format!("{field}.virtualMachine");
        errors.check(format!("{f}.name"), validation::dns_label(&vm.name));
        if vm.image.trim().is_empty() {
            errors.push(format!("{f}.image"), "must not be empty");
        }
        validate_resources(errors, &format!("{f}.resources"), &vm.resources);
        if let Some(p) = &vm.power_spec
            && !matches!(p.as_str(), "Running" | "Shutdown")
        {
            errors.push(
                format!("{f}.powerSpec"),
                format!("{p:?}: must be Running or Shutdown"),
            );
        }
    }
    if !spec.dns_policy.is_empty() && !DNS_POLICIES.contains(&spec.dns_policy.as_str()) {
        errors.push(
            format!("{field}.dnsPolicy"),
            format!(
                "{:?}: must be one of {}",
                spec.dns_policy,
                DNS_POLICIES.join(", ")
            ),
        );
    }
    let servers = spec.dns_config.as_ref().map_or(0, |c| c.nameservers.len());
    if spec.dns_policy == "None" && servers == 0 {
        errors.push(
            format!("{field}.dnsConfig.nameservers"),
            "at least one nameserver is required with dnsPolicy None",
        );
    }
    if let Some(c) = &spec.dns_config {
        let f = format!("{field}.dnsConfig");
        if c.nameservers.len() > MAX_NAMESERVERS {
            errors.push(
                format!("{f}.nameservers"),
                format!("at most {MAX_NAMESERVERS} nameservers"),
            );
        }
        for (i, n) in c.nameservers.iter().enumerate() {
            if n.parse::<std::net::IpAddr>().is_err() {
                errors.push(
                    format!("{f}.nameservers[{i}]"),
                    format!("{n:?}: not an IP address"),
                );
            }
        }
        if c.searches.len() > MAX_SEARCHES {
            errors.push(
                format!("{f}.searches"),
                format!("at most {MAX_SEARCHES} search domains"),
            );
        }
        for (i, d) in c.searches.iter().enumerate() {
            errors.check(
                format!("{f}.searches[{i}]"),
                validation::dns_subdomain(d.trim_end_matches('.')),
            );
        }
        for (i, o) in c.options.iter().enumerate() {
            let bad = o.name.is_empty()
                || o.name.chars().any(|c| c.is_whitespace())
                || o.value
                    .as_ref()
                    .is_some_and(|v| v.chars().any(char::is_whitespace));
            if bad {
                errors.push(
                    format!("{f}.options[{i}]"),
                    "a name, and a value if any, without spaces",
                );
            }
        }
    }
    if let Some(p) = &spec.restart_policy
        && !matches!(p.as_str(), "Always" | "OnFailure" | "Never")
    {
        errors.push(
            format!("{field}.restartPolicy"),
            format!("{p:?}: must be Always, OnFailure or Never"),
        );
    }
    validation::labels(
        errors,
        &format!("{field}.nodeSelector"),
        &spec.node_selector,
    );
    for (i, t) in spec.tolerations.iter().enumerate() {
        let f = format!("{field}.tolerations[{i}]");
        match t.operator.as_deref() {
            None | Some("Equal") => {}
            Some("Exists") if t.value.is_empty() => {}
            Some("Exists") => {
                errors.push(format!("{f}.value"), "must be empty with operator Exists")
            }
            Some(op) => errors.push(
                format!("{f}.operator"),
                format!("{op:?}: must be Equal or Exists"),
            ),
        }
        if !t.effect.is_empty() && !super::TAINT_EFFECTS.contains(&t.effect.as_str()) {
            errors.push(
                format!("{f}.effect"),
                format!("{:?}: unknown effect", t.effect),
            );
        }
    }
}

fn validate_pod(pod: &Pod) -> Result<(), Vec<FieldError>> {
    let mut errors = Errors::default();
    validate_pod_spec(&mut errors, "spec", &pod.spec);
    errors.into_result()
}

/// Sets a pod's `PodScheduled` condition (and phase `Pending` when it has none), as the
/// scheduler records a decision and the API server a binding.
pub fn set_pod_scheduled(pod: &mut Pod, status: &str, reason: &str, message: &str) {
    let st = pod.status.get_or_insert_with(PodStatus::default);
    if st.phase.is_empty() {
        st.phase = "Pending".into();
    }
    st.conditions.retain(|c| c.type_ != "PodScheduled");
    st.conditions.push(Condition {
        type_: "PodScheduled".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Some(super::now()),
        ..Default::default()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns_errors(spec: serde_json::Value) -> Vec<String> {
        let mut spec: serde_json::Value = spec;
        spec["containers"] = serde_json::json!([{"name": "c", "image": "busybox"}]);
        let spec: PodSpec = serde_json::from_value(spec).unwrap();
        let mut errors = Errors::default();
        validate_pod_spec(&mut errors, "spec", &spec);
        errors.0.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn dns_policy_and_config_are_checked() {
        assert!(dns_errors(serde_json::json!({"dnsPolicy": "ClusterFirst"})).is_empty());
        assert_eq!(
            dns_errors(serde_json::json!({"dnsPolicy": "Cluster"})),
            ["spec.dnsPolicy"]
        );
        assert_eq!(
            dns_errors(serde_json::json!({"dnsPolicy": "None"})),
            ["spec.dnsConfig.nameservers"]
        );
        let ok = serde_json::json!({"dnsPolicy": "None", "dnsConfig": {
            "nameservers": ["10.96.0.10"], "searches": ["svc.cluster.local."],
            "options": [{"name": "ndots", "value": "5"}]}});
        assert!(dns_errors(ok).is_empty());
        let bad = serde_json::json!({"dnsConfig": {
            "nameservers": ["1.1.1.1", "2.2.2.2", "3.3.3.3", "dns.example"],
            "searches": ["not a domain"], "options": [{"name": "nd ots"}]}});
        assert_eq!(
            dns_errors(bad),
            [
                "spec.dnsConfig.nameservers",
                "spec.dnsConfig.nameservers[3]",
                "spec.dnsConfig.searches[0]",
                "spec.dnsConfig.options[0]"
            ]
        );
    }
}
