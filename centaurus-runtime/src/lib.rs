//! Node runtimes and the unified node agent: container pods through runc, VM pods through
//! QEMU, simulated pods for scale tests, all behind one CRI-shaped [`Runtime`] trait.
//!
//! - [`Runtime`]: sandbox and workload lifecycle, status, logs and VM actions.
//! - [`HollowRuntime`]: simulated pods that run at once (scale tests, hollow nodes).
//! - [`RuncRuntime`]: container pods on OCI bundles from the local [`images`] store.
//! - [`QemuRuntime`]: VM pods in QEMU microVMs controlled over QMP.
//! - [`NetworkPlugin`]: attaches a pod's sandbox to a network; [`VpcNetwork`] starts pods on
//!   VPC networks once their endpoint is provisioned (the readiness gate).
//! - [`agent`]: the node agent — registration, heartbeat, pod workers, status, logs.

pub mod agent;
pub mod hollow;
pub mod images;
pub mod ledger;
pub mod network;
pub mod podconfig;
pub mod qemu;
pub mod runc;
pub mod session;
pub mod usage;
pub mod vpc;

use std::path::PathBuf;

use async_trait::async_trait;
use centaurus_core::model::{Pod, PodAction, Time};

pub use agent::{AgentConfig, Fleet, NodeAgent};
pub use hollow::HollowRuntime;
pub use ledger::AttachmentLedger;
pub use network::{GuestNic, HostLocalNetwork, NetworkPlugin, NoNetwork, SandboxNetwork};
pub use qemu::QemuRuntime;
pub use runc::RuncRuntime;
pub use session::Process;
pub use vpc::{VpcNetwork, Wiring};

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The image is not in the node's image store.
    #[error("image {0:?} not found in the node's image store")]
    ImageNotFound(String),
    /// No such sandbox or workload.
    #[error("{0} not found")]
    NotFound(String),
    /// The operation does not apply (a VM action on a container).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Something the pod needs is not ready yet (its network endpoint, say): the same
    /// operation may succeed later.
    #[error("not ready: {0}")]
    NotReady(String),
    /// A host tool (runc, qemu, ip) failed.
    #[error("{tool} failed: {message}")]
    Tool {
        /// The tool.
        tool: String,
        /// What it said.
        message: String,
    },
    /// Local I/O failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Result of a runtime operation.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// The state of one workload (a container or a VM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkloadState {
    /// Created, not started.
    Created,
    /// Running since a time.
    Running {
        /// When it started.
        started_at: Time,
    },
    /// Ended.
    Exited {
        /// Exit code (VMs: 0 for a clean shutdown).
        code: i32,
        /// `Completed`, `Error`, `OOMKilled`.
        reason: String,
        /// When it started.
        started_at: Option<Time>,
        /// When it ended.
        finished_at: Time,
    },
}

/// A workload's state and details.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadStatus {
    /// The container's or VM's name.
    pub name: String,
    /// Its state.
    pub state: WorkloadState,
    /// Runtime ID, `runc://…`, `qemu://…`, `hollow://…`.
    pub id: String,
    /// For VMs: the guest printed its ready line.
    pub ready: bool,
    /// For VMs: times the guest was rebooted by an action.
    pub reboots: i32,
}

/// Runs the workloads of pods on one node, CRI-shaped: a pod's sandbox (its isolation
/// and network context) holds its workloads, addressed by pod UID and workload name.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// `runc`, `qemu` or `hollow`.
    fn name(&self) -> &'static str;

    /// How often the agent should poll workload status; `None` when workloads never
    /// change on their own.
    fn poll_interval(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_millis(500))
    }

    /// Prepares the pod's sandbox in `net`.
    async fn create_sandbox(&self, pod: &Pod, net: &SandboxNetwork) -> Result<()>;
    /// Stops every workload of the sandbox.
    async fn stop_sandbox(&self, pod_uid: &str) -> Result<()>;
    /// Removes the sandbox and everything in it; removing what is gone succeeds.
    async fn remove_sandbox(&self, pod_uid: &str) -> Result<()>;

    /// True when the runtime puts volume files into its workloads ([`Runtime::write_volumes`]
    /// does something): its pods get their ServiceAccount's token projected.
    fn projects_files(&self) -> bool {
        false
    }

    /// Makes the sandbox's volumes hold `volumes` (by volume name): before the workloads
    /// are created, and again whenever a ConfigMap or Secret they project changes.
    /// Runtimes whose pods have no volumes (hollow nodes) ignore it.
    async fn write_volumes(
        &self,
        _pod_uid: &str,
        _volumes: &std::collections::BTreeMap<String, podconfig::VolumeContent>,
    ) -> Result<()> {
        Ok(())
    }

    /// Creates the workload `name` of `pod` (a container of a container pod, or the VM).
    async fn create_workload(&self, pod: &Pod, name: &str) -> Result<()>;
    /// Starts a created (or exited) workload.
    async fn start_workload(&self, pod_uid: &str, name: &str) -> Result<()>;
    /// Stops a workload, forcefully after `grace`.
    async fn stop_workload(
        &self,
        pod_uid: &str,
        name: &str,
        grace: std::time::Duration,
    ) -> Result<()>;
    /// Removes a stopped workload.
    async fn remove_workload(&self, pod_uid: &str, name: &str) -> Result<()>;
    /// The workload's state.
    async fn workload_status(&self, pod_uid: &str, name: &str) -> Result<WorkloadStatus>;

    /// What the workload wrote: container stdout and stderr, or the VM's serial console.
    async fn logs(&self, pod_uid: &str, name: &str) -> Result<Vec<u8>>;

    /// Stops every workload this runtime's state directory names that a previous agent
    /// process left running (the agent starts its pods afresh); returns how many. Also what
    /// a clean stop of the agent calls.
    async fn reset(&self) -> Result<usize> {
        Ok(0)
    }

    /// Runs `command` in the workload (a container), with a terminal when `tty`; its
    /// standard input is kept open when `stdin`.
    async fn exec(
        &self,
        pod_uid: &str,
        name: &str,
        command: &[String],
        tty: bool,
        stdin: bool,
    ) -> Result<Process> {
        let _ = (pod_uid, name, command, tty, stdin);
        Err(RuntimeError::Unsupported(format!(
            "the {} runtime runs no commands in its workloads",
            self.name()
        )))
    }

    /// Attaches to the workload: a VM's serial console, or what a container writes from
    /// now on.
    async fn attach(&self, pod_uid: &str, name: &str, stdin: bool) -> Result<Process> {
        let _ = (pod_uid, name, stdin);
        Err(RuntimeError::Unsupported(format!(
            "the {} runtime cannot attach to its workloads",
            self.name()
        )))
    }

    /// A connection to `port` on the loopback of the pod's network namespace.
    async fn port_forward(&self, pod_uid: &str, port: u16) -> Result<tokio::net::TcpStream> {
        let _ = (pod_uid, port);
        Err(RuntimeError::Unsupported(format!(
            "the {} runtime forwards no ports",
            self.name()
        )))
    }

    /// What the workload uses now; `None` when it is not running or the runtime cannot
    /// tell.
    async fn usage(
        &self,
        pod_uid: &str,
        name: &str,
    ) -> Result<Option<centaurus_core::remote::Usage>> {
        let _ = (pod_uid, name);
        Ok(None)
    }

    /// Carries out a VM action; returns a message for the action's status.
    async fn vm_action(&self, pod_uid: &str, name: &str, action: &PodAction) -> Result<String> {
        let _ = (pod_uid, name, action);
        Err(RuntimeError::Unsupported(format!(
            "the {} runtime has no VM actions",
            self.name()
        )))
    }
}

/// The names of a pod's workloads: its containers, or its VM.
pub fn workload_names(pod: &Pod) -> Vec<String> {
    match &pod.spec.virtual_machine {
        Some(vm) => vec![vm.name.clone()],
        None => pod.spec.containers.iter().map(|c| c.name.clone()).collect(),
    }
}

/// Where a runtime keeps its per-pod state.
/// `path` made absolute against the current directory (as it is, when that cannot be read).
pub(crate) fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

pub(crate) fn pod_dir(root: &std::path::Path, pod_uid: &str) -> PathBuf {
    root.join("pods").join(pod_uid)
}

/// Removes a pod's state directory; one already gone is fine.
pub(crate) fn remove_pod_dir(root: &std::path::Path, pod_uid: &str) -> Result<()> {
    match std::fs::remove_dir_all(pod_dir(root, pod_uid)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Runs a host tool and returns its stdout, or its stderr as the error.
pub(crate) async fn run_tool(tool: &str, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(tool)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| RuntimeError::Tool {
            tool: tool.into(),
            message: e.to_string(),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(RuntimeError::Tool {
            tool: format!("{tool} {}", args.join(" ")),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}
