//! Container pods through runc: one OCI bundle per container on the image's root
//! filesystem (read-only, with private `/tmp`), joined to the pod's network namespace, with
//! cpu and memory limits in the OCI spec. The agent holds `runc run` as the container's
//! parent, so it learns each exit code as runc returns it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use centaurus_core::model::{self, Container, Pod, Time};
use serde_json::{Value, json};

use crate::images::ImageStore;
use crate::podconfig::VolumeContent;
use crate::session::{self, Process};
use crate::{
    Result, Runtime, RuntimeError, SandboxNetwork, WorkloadState, WorkloadStatus, pod_dir, run_tool,
};

/// Runs container pods with runc.
pub struct RuncRuntime {
    root: PathBuf,
    images: ImageStore,
    runc: String,
    sandboxes: Mutex<HashMap<String, SandboxNetwork>>,
    workloads: Mutex<HashMap<(String, String), Record>>,
    rates: crate::usage::Rates,
}

/// A container's shared bookkeeping, by pod UID and container name.
type Record = Arc<Mutex<ContainerRecord>>;

/// One container's bookkeeping.
struct ContainerRecord {
    id: String,
    bundle: PathBuf,
    log: PathBuf,
    state: WorkloadState,
}

impl RuncRuntime {
    /// A runtime keeping bundles, logs and runc state under `root` (a relative root is
    /// taken from the current directory now: runc resolves bundle paths from its own).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = crate::absolute(root.into());
        Self {
            images: ImageStore::new(&root),
            runc: "runc".into(),
            root,
            sandboxes: Mutex::default(),
            workloads: Mutex::default(),
            rates: Default::default(),
        }
    }

    /// True when runc can be run here (it is installed and we are root).
    pub fn available() -> bool {
        let root = is_root();
        root && std::process::Command::new("runc")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn state_root(&self) -> String {
        self.root.join("runc").display().to_string()
    }

    fn workload(&self, uid: &str, name: &str) -> Result<Record> {
        self.workloads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(uid.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(format!("container {name} of pod {uid}")))
    }

    fn containers_of(&self, pod_uid: &str) -> Vec<String> {
        self.workloads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|k| k.0 == pod_uid)
            .map(|k| k.1.clone())
            .collect()
    }

    /// The runc ID of a running container.
    fn running(&self, pod_uid: &str, name: &str) -> Result<String> {
        let w = self.workload(pod_uid, name)?;
        let c = w.lock().unwrap_or_else(|e| e.into_inner());
        match c.state {
            WorkloadState::Running { .. } => Ok(c.id.clone()),
            _ => Err(RuntimeError::NotReady(format!(
                "container {name} is not running"
            ))),
        }
    }

    async fn runc(&self, args: &[&str]) -> Result<String> {
        let root = self.state_root();
        let mut all = vec!["--root", root.as_str()];
        all.extend_from_slice(args);
        run_tool(&self.runc, &all).await
    }
}

/// How long ago `started_at` was.
pub(crate) fn running_for(started_at: &Time) -> Duration {
    (model::now() - *started_at).to_std().unwrap_or_default()
}

/// The exit code of `child` (-1 when it cannot be told).
async fn exit_code(mut child: tokio::process::Child) -> i32 {
    child.wait().await.ok().and_then(|s| s.code()).unwrap_or(-1)
}

/// True when the process runs as root.
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A pod's volumes: `DIR/volumes/NAME` in its state directory.
fn volume_dir(root: &Path, pod_uid: &str, name: &str) -> PathBuf {
    pod_dir(root, pod_uid).join("volumes").join(name)
}

/// The bind mounts of a container's `volumeMounts`: ConfigMap and Secret volumes are
/// always read-only, `emptyDir` as the mount asks.
fn volume_mounts(root: &Path, pod: &Pod, c: &Container) -> Vec<Value> {
    c.volume_mounts
        .iter()
        .filter_map(|m| {
            let v = pod.spec.volumes.iter().find(|v| v.name == m.name)?;
            let mut source = volume_dir(root, &pod.metadata.uid, &m.name);
            if !m.sub_path.is_empty() {
                source = source.join(&m.sub_path);
            }
            let ro = m.read_only || v.empty_dir.is_none();
            let mut options = vec!["rbind", "nosuid", "nodev"];
            if ro {
                options.push("ro");
            }
            Some(json!({"destination": m.mount_path, "type": "bind", "source": source, "options": options}))
        })
        .collect()
}

/// The OCI runtime spec of one container.
fn oci_spec(
    c: &Container,
    rootfs: &Path,
    netns: Option<&Path>,
    hostname: &str,
    cgroup: &str,
    volumes: Vec<Value>,
) -> Value {
    let mut args: Vec<String> = c.command.clone();
    args.extend(c.args.iter().cloned());
    if args.is_empty() {
        args.push("sh".into());
    }
    let mut env = vec![
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        format!("HOSTNAME={hostname}"),
    ];
    env.extend(c.env.iter().map(|e| format!("{}={}", e.name, e.value)));
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    namespaces.push(match netns {
        Some(p) => json!({"type": "network", "path": p}),
        None => json!({"type": "network"}),
    });
    let mut resources = json!({});
    let limit = |name: &str| {
        c.resources.limits.get(name).and_then(|q| {
            if name == "cpu" {
                q.milli_value()
            } else {
                q.value()
            }
            .ok()
        })
    };
    if let Some(milli) = limit("cpu").filter(|m| *m > 0) {
        resources["cpu"] = json!({"quota": milli * 100, "period": 100_000});
    }
    if let Some(bytes) = limit("memory").filter(|b| *b > 0) {
        resources["memory"] = json!({"limit": bytes});
    }
    let mut mounts = json!([
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]},
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=755"]}
    ]);
    if let Some(m) = mounts.as_array_mut() {
        m.extend(volumes);
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": env,
            "cwd": c.working_dir.clone().unwrap_or_else(|| "/".into()),
            "capabilities": {
                "bounding": CAPS, "effective": CAPS, "permitted": CAPS,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": rootfs, "readonly": true},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "resources": resources,
            "cgroupsPath": cgroup,
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

const CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Writes `data` to `path`, readable by its owner only.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

#[async_trait]
impl Runtime for RuncRuntime {
    fn projects_files(&self) -> bool {
        true
    }

    async fn write_volumes(
        &self,
        pod_uid: &str,
        volumes: &std::collections::BTreeMap<String, VolumeContent>,
    ) -> Result<()> {
        for (name, content) in volumes {
            let dir = volume_dir(&self.root, pod_uid, name);
            match content {
                VolumeContent::Projected(files) => {
                    if crate::podconfig::write_projected(&dir, files)? {
                        tracing::debug!(pod = pod_uid, volume = name, "volume files written");
                    }
                }
                VolumeContent::Empty => std::fs::create_dir_all(&dir)?,
            }
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "runc"
    }

    async fn reset(&self) -> Result<usize> {
        if !Path::new(&self.state_root()).exists() {
            return Ok(0);
        }
        let listed = self.runc(&["list", "--quiet"]).await?;
        let mut stopped = 0;
        for id in listed.lines().map(str::trim).filter(|l| !l.is_empty()) {
            match self.runc(&["delete", "--force", id]).await {
                Ok(_) => stopped += 1,
                Err(e) => {
                    tracing::warn!(container = id, error = %e, "cannot remove a left-over container")
                }
            }
        }
        for w in self
            .workloads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            let mut c = w.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(c.state, WorkloadState::Running { .. }) {
                c.state = WorkloadState::Created;
            }
        }
        Ok(stopped)
    }

    async fn create_sandbox(&self, pod: &Pod, net: &SandboxNetwork) -> Result<()> {
        std::fs::create_dir_all(pod_dir(&self.root, &pod.metadata.uid))?;
        self.sandboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pod.metadata.uid.clone(), net.clone());
        Ok(())
    }

    async fn stop_sandbox(&self, pod_uid: &str) -> Result<()> {
        let names = self.containers_of(pod_uid);
        for n in names {
            self.stop_workload(pod_uid, &n, Duration::from_secs(5))
                .await?;
        }
        Ok(())
    }

    async fn remove_sandbox(&self, pod_uid: &str) -> Result<()> {
        self.stop_sandbox(pod_uid).await?;
        let names = self.containers_of(pod_uid);
        for n in names {
            self.remove_workload(pod_uid, &n).await?;
        }
        self.sandboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(pod_uid);
        crate::remove_pod_dir(&self.root, pod_uid)
    }

    async fn create_workload(&self, pod: &Pod, name: &str) -> Result<()> {
        let uid = &pod.metadata.uid;
        let c = pod
            .spec
            .containers
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| RuntimeError::NotFound(format!("container {name} in the pod spec")))?;
        let rootfs = self.images.rootfs(&c.image)?;
        // A subPath of an emptyDir is made on first use, as the kubelet makes it.
        for m in c.volume_mounts.iter().filter(|m| !m.sub_path.is_empty()) {
            if pod
                .spec
                .volumes
                .iter()
                .any(|v| v.name == m.name && v.empty_dir.is_some())
            {
                std::fs::create_dir_all(volume_dir(&self.root, uid, &m.name).join(&m.sub_path))?;
            }
        }
        let net = self
            .sandboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(format!("sandbox of pod {uid}")))?;
        let bundle = pod_dir(&self.root, uid).join(name);
        std::fs::create_dir_all(&bundle)?;
        let short: String = uid
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(12)
            .collect();
        let id = format!("{short}-{name}");
        let mut mounts = volume_mounts(&self.root, pod, c);
        // The node resolved the pod's DNS policy into `None` with the settings it gets.
        if pod.spec.dns_policy == "None"
            && let Some(dns) = &pod.spec.dns_config
        {
            let file = pod_dir(&self.root, uid).join("resolv.conf");
            std::fs::write(&file, crate::podconfig::resolv_conf(dns))?;
            mounts.push(json!({"destination": "/etc/resolv.conf", "type": "bind",
                "source": file, "options": ["rbind", "nosuid", "nodev", "ro"]}));
        }
        let spec = oci_spec(
            c,
            &rootfs,
            net.netns.as_deref(),
            &pod.metadata.name,
            &format!("/centaurus/{id}"),
            mounts,
        );
        // The spec carries the container's environment, Secrets' values included.
        write_private(
            &bundle.join("config.json"),
            &serde_json::to_vec_pretty(&spec).expect("json"),
        )?;
        let log = bundle.join("output.log");
        std::fs::File::create(&log)?;
        self.workloads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                (uid.clone(), name.to_owned()),
                Arc::new(Mutex::new(ContainerRecord {
                    id,
                    bundle,
                    log,
                    state: WorkloadState::Created,
                })),
            );
        Ok(())
    }

    async fn start_workload(&self, pod_uid: &str, name: &str) -> Result<()> {
        let w = self.workload(pod_uid, name)?;
        let (id, bundle, log) = {
            let c = w.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(c.state, WorkloadState::Running { .. }) {
                return Ok(());
            }
            (c.id.clone(), c.bundle.clone(), c.log.clone())
        };
        // A restart: the old container must be gone first.
        let _ = self.runc(&["delete", "--force", &id]).await;
        let out = std::fs::OpenOptions::new().append(true).open(&log)?;
        let err = out.try_clone()?;
        let mut child = tokio::process::Command::new(&self.runc)
            .args(["--root", &self.state_root(), "run", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| RuntimeError::Tool {
                tool: "runc run".into(),
                message: e.to_string(),
            })?;
        let started_at = model::now();
        w.lock().unwrap_or_else(|e| e.into_inner()).state = WorkloadState::Running { started_at };
        tokio::spawn(async move {
            let status = child.wait().await;
            let code = status.ok().and_then(|s| s.code()).unwrap_or(-1);
            let finished_at: Time = model::now();
            w.lock().unwrap_or_else(|e| e.into_inner()).state = WorkloadState::Exited {
                code,
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
                started_at: Some(started_at),
                finished_at,
            };
        });
        Ok(())
    }

    async fn stop_workload(&self, pod_uid: &str, name: &str, grace: Duration) -> Result<()> {
        let w = self.workload(pod_uid, name)?;
        let id = w.lock().unwrap_or_else(|e| e.into_inner()).id.clone();
        let running = || {
            matches!(
                w.lock().unwrap_or_else(|e| e.into_inner()).state,
                WorkloadState::Running { .. }
            )
        };
        if !running() {
            return Ok(());
        }
        let _ = self.runc(&["kill", &id, "TERM"]).await;
        let deadline = tokio::time::Instant::now() + grace;
        while running() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if running() {
            let _ = self.runc(&["kill", "--all", &id, "KILL"]).await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while running() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    async fn remove_workload(&self, pod_uid: &str, name: &str) -> Result<()> {
        let Ok(w) = self.workload(pod_uid, name) else {
            return Ok(());
        };
        let id = w.lock().unwrap_or_else(|e| e.into_inner()).id.clone();
        let _ = self.runc(&["delete", "--force", &id]).await;
        self.workloads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(pod_uid.to_owned(), name.to_owned()));
        Ok(())
    }

    async fn workload_status(&self, pod_uid: &str, name: &str) -> Result<WorkloadStatus> {
        let w = self.workload(pod_uid, name)?;
        let c = w.lock().unwrap_or_else(|e| e.into_inner());
        Ok(WorkloadStatus {
            name: name.to_owned(),
            state: c.state.clone(),
            id: format!("runc://{}", c.id),
            ready: matches!(c.state, WorkloadState::Running { .. }),
            reboots: 0,
        })
    }

    async fn exec(
        &self,
        pod_uid: &str,
        name: &str,
        command: &[String],
        tty: bool,
        stdin: bool,
    ) -> Result<Process> {
        let id = self.running(pod_uid, name)?;
        let mut cmd = tokio::process::Command::new(&self.runc);
        cmd.args(["--root", &self.state_root(), "exec"])
            .kill_on_drop(true);
        if !tty {
            let mut child = cmd
                .arg(&id)
                .args(command)
                .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| RuntimeError::Tool {
                    tool: "runc exec".into(),
                    message: e.to_string(),
                })?;
            let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
                return Err(RuntimeError::Tool {
                    tool: "runc exec".into(),
                    message: "no output pipes".into(),
                });
            };
            return Ok(Process {
                stdin: child
                    .stdin
                    .take()
                    .map(|i| Box::pin(i) as std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>),
                stdout: Box::pin(out),
                stderr: Some(Box::pin(err)),
                resize: None,
                exit: Some(Box::pin(exit_code(child))),
            });
        }
        // With a terminal: runc on a terminal of ours makes one in the container and
        // proxies the two, following our size when told with SIGWINCH.
        let (terminal, [i, o, e]) = session::Terminal::open(80, 24)?;
        let child = cmd
            .arg("--tty")
            .arg(&id)
            .args(command)
            .stdin(i)
            .stdout(o)
            .stderr(e)
            .spawn()
            .map_err(|e| RuntimeError::Tool {
                tool: "runc exec".into(),
                message: e.to_string(),
            })?;
        // The command holds our copies of the terminal's other side: let them go, so the
        // output ends when runc does.
        drop(cmd);
        Ok(Process {
            resize: Some(terminal.resizer(child.id())),
            stdin: Some(Box::pin(terminal.input)),
            stdout: Box::pin(terminal.output),
            stderr: None,
            exit: Some(Box::pin(exit_code(child))),
        })
    }

    async fn attach(&self, pod_uid: &str, name: &str, stdin: bool) -> Result<Process> {
        if stdin {
            return Err(RuntimeError::Unsupported(format!(
                "container {name} keeps no standard input to attach to; attach without -i to follow its output, or exec a shell"
            )));
        }
        self.running(pod_uid, name)?;
        let w = self.workload(pod_uid, name)?;
        let log = w.lock().unwrap_or_else(|e| e.into_inner()).log.clone();
        // What the container writes from now on, until it stops.
        let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let mut file = tokio::fs::File::open(&log).await?;
        tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::End(0)).await?;
        let running = {
            let w = w.clone();
            move || {
                matches!(
                    w.lock().unwrap_or_else(|e| e.into_inner()).state,
                    WorkloadState::Running { .. }
                )
            }
        };
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = file.read(&mut buf).await.unwrap_or(0);
                if n > 0 {
                    if theirs.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    continue;
                }
                if !running() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let exit = async move {
            loop {
                if let WorkloadState::Exited { code, .. } =
                    w.lock().unwrap_or_else(|e| e.into_inner()).state
                {
                    return code;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        Ok(Process {
            stdin: None,
            stdout: Box::pin(ours),
            stderr: None,
            resize: None,
            exit: Some(Box::pin(exit)),
        })
    }

    async fn port_forward(&self, pod_uid: &str, port: u16) -> Result<tokio::net::TcpStream> {
        let netns = self
            .sandboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(pod_uid)
            .and_then(|n| n.netns.clone())
            .ok_or_else(|| {
                RuntimeError::NotFound(format!("the network namespace of pod {pod_uid}"))
            })?;
        session::connect_in(&netns, port).await
    }

    async fn usage(
        &self,
        pod_uid: &str,
        name: &str,
    ) -> Result<Option<centaurus_core::remote::Usage>> {
        let w = self.workload(pod_uid, name)?;
        let (id, started_at) = {
            let c = w.lock().unwrap_or_else(|e| e.into_inner());
            match &c.state {
                WorkloadState::Running { started_at } => (c.id.clone(), *started_at),
                _ => return Ok(None),
            }
        };
        let Some((cpu, memory)) = crate::usage::cgroup(&format!("/centaurus/{id}")) else {
            return Ok(None);
        };
        Ok(Some(centaurus_core::remote::Usage {
            cpu_nanocores: self.rates.rate(&id, cpu, running_for(&started_at)),
            memory_bytes: memory,
        }))
    }

    async fn logs(&self, pod_uid: &str, name: &str) -> Result<Vec<u8>> {
        let log = self
            .workload(pod_uid, name)?
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log
            .clone();
        Ok(tokio::fs::read(log).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use centaurus_core::model::{Quantity, ResourceRequirements};

    #[test]
    fn spec_carries_command_limits_and_the_pod_netns() {
        let c = Container {
            name: "app".into(),
            image: "busybox".into(),
            command: vec!["sh".into(), "-c".into()],
            args: vec!["echo hi".into()],
            resources: ResourceRequirements {
                limits: [
                    ("cpu".to_string(), Quantity::new("250m")),
                    ("memory".to_string(), Quantity::new("64Mi")),
                ]
                .into_iter()
                .collect(),
                ..Default::default()
            },
            ..Default::default()
        };
        let spec = oci_spec(
            &c,
            Path::new("/img/rootfs"),
            Some(Path::new("/var/run/netns/cent-1")),
            "web",
            "/centaurus/x",
            Vec::new(),
        );
        assert_eq!(spec["process"]["args"], json!(["sh", "-c", "echo hi"]));
        assert_eq!(spec["linux"]["resources"]["cpu"]["quota"], 25_000);
        assert_eq!(
            spec["linux"]["resources"]["memory"]["limit"],
            64 * 1024 * 1024
        );
        assert_eq!(
            spec["linux"]["namespaces"][4]["path"],
            "/var/run/netns/cent-1"
        );
        assert_eq!(spec["root"]["readonly"], true);
    }

    #[test]
    fn config_volumes_mount_read_only_and_empty_dirs_as_asked() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "uid": "u1"},
            "spec": {
                "volumes": [
                    {"name": "conf", "configMap": {"name": "app"}},
                    {"name": "scratch", "emptyDir": {}},
                ],
                "containers": [{"name": "c", "image": "busybox", "volumeMounts": [
                    {"name": "conf", "mountPath": "/etc/app"},
                    {"name": "scratch", "mountPath": "/data"},
                    {"name": "scratch", "mountPath": "/logs", "subPath": "logs", "readOnly": true},
                ]}],
            },
        }))
        .unwrap();
        let mounts = volume_mounts(Path::new("/r"), &pod, &pod.spec.containers[0]);
        let ro = |m: &Value| m["options"].as_array().unwrap().contains(&json!("ro"));
        assert_eq!(mounts[0]["source"], "/r/pods/u1/volumes/conf");
        assert!(ro(&mounts[0]));
        assert_eq!(mounts[1]["destination"], "/data");
        assert!(!ro(&mounts[1]));
        assert_eq!(mounts[2]["source"], "/r/pods/u1/volumes/scratch/logs");
        assert!(ro(&mounts[2]));
    }
}
