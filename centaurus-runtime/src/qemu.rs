//! VM pods through QEMU: a `-M microvm` guest booting its image's kernel and initramfs,
//! its serial console written to a log, controlled over QMP.
//!
//! The guest's configuration is a second initramfs archive appended to its image's, made
//! at every start (a config drive in the boot image): `/etc/hostname`, the pod's
//! `userData` as `/userdata`, and the pod's volumes at the VM's `volumeMounts` (ConfigMap
//! and Secret files, the ServiceAccount token at the Kubernetes path, empty directories).
//! A changed ConfigMap or Secret reaches the guest when QEMU next starts it (a restart; a
//! reboot action resets the guest with the archive it booted with).
//!
//! A pod whose network gives it a [`GuestNic`] gets a virtio-net device on that tap, with
//! the NIC's MAC; QEMU runs in the tap's network namespace, and the config drive carries
//! the address, gateway and MTU the guest's init configures, and the pod's resolv.conf.
//!
//! KVM is used when a probe boots a guest under it; otherwise TCG (on some hosts
//! `/dev/kvm` exists but guests hang under it).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use centaurus_core::model::{self, Pod, PodAction};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::images::{
    DEFAULT_KERNEL, GUEST_NETWORK, ImageStore, VM_READY_LINE, guest_network, initrd_with,
};
use crate::podconfig::{VolumeContent, VolumeFile};
use crate::session::Process;
use crate::{
    GuestNic, Result, Runtime, RuntimeError, SandboxNetwork, WorkloadState, WorkloadStatus, pod_dir,
};

/// How guests are run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization.
    Kvm,
    /// Software emulation.
    Tcg,
}

impl Accel {
    /// QEMU's name for it (`-accel kvm|tcg`).
    pub fn arg(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Runs VM pods with QEMU.
pub struct QemuRuntime {
    root: PathBuf,
    images: ImageStore,
    kernel: PathBuf,
    qemu: String,
    accel: tokio::sync::OnceCell<Accel>,
    vms: Mutex<HashMap<String, Arc<Mutex<Vm>>>>,
    /// Each pod's volumes as last resolved by the agent.
    volumes: Mutex<HashMap<String, BTreeMap<String, VolumeContent>>>,
    /// Each pod's network device, from its sandbox's network.
    nics: Mutex<HashMap<String, GuestNic>>,
    rates: crate::usage::Rates,
}

struct Vm {
    name: String,
    dir: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    /// What the guest's initramfs is made of at each start; None boots `initrd` as it is.
    guest: Option<Guest>,
    memory_mib: i64,
    cpus: i64,
    nic: Option<GuestNic>,
    state: WorkloadState,
    /// Bumped by every start, so the exit of an old process is not taken for the new one's.
    generation: u64,
    reboots: i32,
    pid: Option<u32>,
}

/// A guest's own files, appended to its image's initramfs.
struct Guest {
    /// The image's initramfs.
    base: PathBuf,
    /// Hostname and userData.
    files: Vec<VolumeFile>,
    /// Where the pod's volumes go in the guest.
    mounts: Vec<model::VolumeMount>,
}

impl Guest {
    /// Writes the guest's initramfs to `out`: its image's, then its own files and the
    /// `volumes` it mounts.
    fn write(&self, volumes: Option<&BTreeMap<String, VolumeContent>>, out: &Path) -> Result<()> {
        let mut files = self.files.clone();
        let mut dirs = Vec::new();
        for m in &self.mounts {
            let root = m.mount_path.trim_matches('/');
            dirs.push(root.to_owned());
            if let Some(VolumeContent::Projected(projected)) = volumes.and_then(|v| v.get(&m.name))
            {
                files.extend(projected.iter().map(|f| VolumeFile {
                    path: format!("{root}/{}", f.path),
                    ..f.clone()
                }));
            }
        }
        initrd_with(&self.base, &dirs, &files, out)
    }
}

impl Vm {
    fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    fn qmp(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    /// The serial console, for `attach` (what it shows is also kept in [`Vm::console`]).
    fn console_socket(&self) -> PathBuf {
        self.dir.join("console.sock")
    }
}

impl QemuRuntime {
    /// A runtime keeping VM state under `root`, booting `tiny` from the kernel at
    /// `kernel` (by default [`DEFAULT_KERNEL`]).
    /// A relative root is taken from the current directory now.
    pub fn new(root: impl Into<PathBuf>, kernel: Option<PathBuf>) -> Self {
        let root = crate::absolute(root.into());
        Self {
            images: ImageStore::new(&root),
            kernel: kernel.unwrap_or_else(|| DEFAULT_KERNEL.into()),
            qemu: "qemu-system-x86_64".into(),
            accel: tokio::sync::OnceCell::new(),
            vms: Mutex::default(),
            volumes: Mutex::default(),
            nics: Mutex::default(),
            rates: Default::default(),
            root,
        }
    }

    /// True when QEMU is installed and the kernel for the tiny image is present.
    pub fn available(kernel: Option<&Path>) -> bool {
        kernel.unwrap_or(Path::new(DEFAULT_KERNEL)).exists()
            && std::process::Command::new("qemu-system-x86_64")
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    }

    /// The accelerator guests run under: KVM if a probe guest boots under it within 20 s,
    /// TCG otherwise. Probed once; `CENTAURUS_VM_ACCEL=kvm|tcg` skips the probe.
    pub async fn accel(&self) -> Accel {
        *self
            .accel
            .get_or_init(|| async {
                match std::env::var("CENTAURUS_VM_ACCEL").as_deref() {
                    Ok("kvm") => return Accel::Kvm,
                    Ok("tcg") => return Accel::Tcg,
                    _ => {}
                }
                if !Path::new("/dev/kvm").exists() {
                    return Accel::Tcg;
                }
                match self.probe_kvm().await {
                    Ok(true) => Accel::Kvm,
                    Ok(false) => {
                        tracing::info!("a guest did not boot under KVM within 20 s; using TCG");
                        Accel::Tcg
                    }
                    Err(e) => {
                        tracing::info!(error = %e, "KVM probe failed; using TCG");
                        Accel::Tcg
                    }
                }
            })
            .await
    }

    async fn probe_kvm(&self) -> Result<bool> {
        let (kernel, initrd) = self.images.vm_image("tiny", &self.kernel)?;
        let dir = self.root.join("kvm-probe");
        std::fs::create_dir_all(&dir)?;
        // A probe of an agent that was killed in the middle of it.
        if reap(&dir).await {
            tracing::info!("stopped the KVM probe guest a previous agent left running");
        }
        let vm = Vm {
            name: "probe".into(),
            dir: dir.clone(),
            kernel,
            initrd,
            guest: None,
            memory_mib: 128,
            cpus: 1,
            nic: None,
            state: WorkloadState::Created,
            generation: 0,
            reboots: 0,
            pid: None,
        };
        let _ = std::fs::remove_file(vm.console());
        let mut child = tokio::process::Command::new(&self.qemu)
            .args(qemu_args(&vm, Accel::Kvm, None))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut booted = false;
        while tokio::time::Instant::now() < deadline {
            if std::fs::read_to_string(vm.console()).is_ok_and(|s| s.contains(VM_READY_LINE)) {
                booted = true;
                break;
            }
            if child.try_wait()?.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = child.kill().await;
        Ok(booted)
    }

    fn vm(&self, uid: &str) -> Result<Arc<Mutex<Vm>>> {
        self.vms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(format!("VM of pod {uid}")))
    }

    /// Starts QEMU for `vm`, restoring from `incoming` when given.
    async fn launch(
        &self,
        pod_uid: &str,
        vm: &Arc<Mutex<Vm>>,
        incoming: Option<&Path>,
    ) -> Result<()> {
        let accel = self.accel().await;
        let (args, generation, netns) = {
            let mut v = vm.lock().unwrap_or_else(|e| e.into_inner());
            if let (Some(guest), None) = (&v.guest, incoming) {
                let volumes = self.volumes.lock().unwrap_or_else(|e| e.into_inner());
                guest.write(volumes.get(pod_uid), &v.initrd)?;
            }
            v.generation += 1;
            let _ = std::fs::remove_file(v.qmp());
            let _ = std::fs::remove_file(v.console_socket());
            let netns = v.nic.as_ref().and_then(|n| n.netns.clone());
            (qemu_args(&v, accel, incoming), v.generation, netns)
        };
        let mut qemu = tokio::process::Command::new(&self.qemu);
        if let Some(netns) = netns {
            // QEMU opens its tap in the namespace the tap is in.
            centaurus_netdev::netns::enter_on_exec(qemu.as_std_mut(), &netns)?;
        }
        let child = qemu
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| RuntimeError::Tool {
                tool: self.qemu.clone(),
                message: e.to_string(),
            })?;
        let started_at = model::now();
        {
            let mut v = vm.lock().unwrap_or_else(|e| e.into_inner());
            v.state = WorkloadState::Running { started_at };
            v.pid = child.id();
        }
        let vm = vm.clone();
        tokio::spawn(async move {
            let out = child.wait_with_output().await;
            let (code, err) = match out {
                Ok(o) => (
                    o.status.code().unwrap_or(-1),
                    String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                ),
                Err(e) => (-1, e.to_string()),
            };
            let mut v = vm.lock().unwrap_or_else(|e| e.into_inner());
            if v.generation != generation {
                return;
            }
            if code != 0 && !err.is_empty() {
                tracing::warn!(vm = v.name, code, stderr = err, "qemu exited");
            }
            v.pid = None;
            v.state = WorkloadState::Exited {
                code,
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
                started_at: Some(started_at),
                finished_at: model::now(),
            };
        });
        Ok(())
    }

    async fn qmp(&self, uid: &str, commands: &[Value]) -> Result<Vec<Value>> {
        let sock = self
            .vm(uid)?
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .qmp();
        Qmp::connect(&sock).await?.run(commands).await
    }
}

/// The guest kernel's command line. Under TCG the guest's TSC runs at the host's rate; the
/// kernel is told that rate, because calibrating it against the emulated PIT fails when
/// the host is busy (several guests booting at once), after which the guest hangs.
fn kernel_command_line(accel: Accel) -> String {
    let mut line = "console=ttyS0 quiet panic=-1".to_owned();
    if accel == Accel::Tcg
        && let Some(khz) = host_tsc_khz()
    {
        line.push_str(&format!(" tsc_early_khz={khz}"));
    }
    line
}

/// The host's TSC rate in kHz, measured once against the monotonic clock over 50 ms.
#[allow(unsafe_code)] // one rdtsc intrinsic
fn host_tsc_khz() -> Option<u64> {
    static KHZ: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *KHZ.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: rdtsc has no preconditions on x86_64.
            let tsc = || unsafe { std::arch::x86_64::_rdtsc() };
            let (t0, c0) = (std::time::Instant::now(), tsc());
            std::thread::sleep(Duration::from_millis(50));
            let (ticks, nanos) = (tsc().wrapping_sub(c0), t0.elapsed().as_nanos() as u64);
            (nanos > 0).then(|| ticks * 1_000_000 / nanos)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    })
}

/// QEMU's command line for a VM.
/// Where the QEMU of the VM kept in `dir` writes its pid.
fn pidfile(dir: &Path) -> PathBuf {
    dir.join("qemu.pid")
}

/// Kills the QEMU whose pidfile is in `dir`, if it still runs (a pid taken over by another
/// process is left alone: QEMU's command line names `dir`). Returns true when one ran.
async fn reap(dir: &Path) -> bool {
    let file = pidfile(dir);
    let Some(pid) = std::fs::read_to_string(&file)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    else {
        return false;
    };
    let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(dir.to_string_lossy().as_ref()));
    if ours {
        let _ = crate::run_tool("kill", &["-KILL", &pid.to_string()]).await;
    }
    let _ = std::fs::remove_file(&file);
    ours
}

fn qemu_args(vm: &Vm, accel: Accel, incoming: Option<&Path>) -> Vec<String> {
    let mut args: Vec<String> = [
        "-M",
        "microvm,pit=on,pic=on,rtc=on",
        "-accel",
        accel.arg(),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-monitor",
        "none",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend([
        "-m".into(),
        format!("{}M", vm.memory_mib),
        "-smp".into(),
        vm.cpus.to_string(),
        "-kernel".into(),
        vm.kernel.display().to_string(),
        "-initrd".into(),
        vm.initrd.display().to_string(),
        "-append".into(),
        kernel_command_line(accel),
        "-chardev".into(),
        format!(
            "socket,id=console,path={},server=on,wait=off,logfile={},logappend=on",
            vm.console_socket().display(),
            vm.console().display()
        ),
        "-serial".into(),
        "chardev:console".into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", vm.qmp().display()),
        "-pidfile".into(),
        pidfile(&vm.dir).display().to_string(),
    ]);
    if let Some(nic) = &vm.nic {
        // Without a virtio header on the tap the device offers the guest no offloads: the
        // guest checksums and segments its packets itself, as the datapath expects.
        args.extend([
            "-netdev".into(),
            format!(
                "tap,id=nic0,ifname={},script=no,downscript=no,vnet_hdr=off",
                nic.tap
            ),
            "-device".into(),
            format!("virtio-net-device,netdev=nic0,mac={}", nic.mac),
        ]);
    }
    if let Some(state) = incoming {
        args.extend(["-incoming".into(), format!("exec:cat {}", state.display())]);
    }
    args
}

/// A QMP session.
struct Qmp {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl Qmp {
    async fn connect(sock: &Path) -> Result<Self> {
        let mut last = None;
        for _ in 0..50 {
            match UnixStream::connect(sock).await {
                Ok(s) => {
                    let (r, w) = s.into_split();
                    let mut q = Self {
                        reader: BufReader::new(r),
                        writer: w,
                    };
                    q.read().await?; // greeting
                    q.execute(&json!({"execute": "qmp_capabilities"})).await?;
                    return Ok(q);
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(RuntimeError::Tool {
            tool: "qmp".into(),
            message: format!("cannot connect to {}: {:?}", sock.display(), last),
        })
    }

    async fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).await? == 0 {
            return Err(RuntimeError::Tool {
                tool: "qmp".into(),
                message: "QEMU closed the connection".into(),
            });
        }
        serde_json::from_str(&line).map_err(|e| RuntimeError::Tool {
            tool: "qmp".into(),
            message: format!("bad reply {line:?}: {e}"),
        })
    }

    async fn execute(&mut self, cmd: &Value) -> Result<Value> {
        let mut bytes = serde_json::to_vec(cmd).expect("json");
        bytes.push(b'\n');
        self.writer.write_all(&bytes).await?;
        loop {
            let reply = self.read().await?;
            if reply.get("event").is_some() {
                continue;
            }
            if let Some(err) = reply.get("error") {
                return Err(RuntimeError::Tool {
                    tool: format!("qmp {}", cmd["execute"]),
                    message: err["desc"].as_str().unwrap_or("error").to_owned(),
                });
            }
            return Ok(reply["return"].clone());
        }
    }

    async fn run(mut self, commands: &[Value]) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for c in commands {
            out.push(self.execute(c).await?);
        }
        Ok(out)
    }
}

/// `userData` as the guest gets it: base64 decoded when it is base64 (as Arktos sends
/// it), as written otherwise.
fn user_data(raw: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .unwrap_or_else(|_| raw.as_bytes().to_vec())
}

#[async_trait]
impl Runtime for QemuRuntime {
    fn name(&self) -> &'static str {
        "qemu"
    }

    async fn reset(&self) -> Result<usize> {
        let mut stopped = usize::from(reap(&self.root.join("kvm-probe")).await);
        let Ok(pods) = std::fs::read_dir(self.root.join("pods")) else {
            return Ok(stopped);
        };
        for pod in pods.flatten() {
            for vm in std::fs::read_dir(pod.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if reap(&vm.path()).await {
                    stopped += 1;
                    continue;
                }
                // A guest of a build that wrote no pidfile: a socket that accepts belongs
                // to a live QEMU; a stale one refuses at once.
                let sock = vm.path().join("qmp.sock");
                if UnixStream::connect(&sock).await.is_err() {
                    continue;
                }
                let quit = Qmp::connect(&sock)
                    .await?
                    .run(&[json!({"execute": "quit"})])
                    .await;
                match quit {
                    Ok(_) => stopped += 1,
                    Err(e) => {
                        tracing::warn!(socket = %sock.display(), error = %e, "cannot stop a left-over VM")
                    }
                }
            }
        }
        Ok(stopped)
    }

    fn projects_files(&self) -> bool {
        true
    }

    /// Kept for the guest's next start (see the module's doc).
    async fn write_volumes(
        &self,
        pod_uid: &str,
        volumes: &BTreeMap<String, VolumeContent>,
    ) -> Result<()> {
        self.volumes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pod_uid.to_owned(), volumes.clone());
        Ok(())
    }

    async fn create_sandbox(&self, pod: &Pod, net: &SandboxNetwork) -> Result<()> {
        std::fs::create_dir_all(pod_dir(&self.root, &pod.metadata.uid))?;
        let mut nics = self.nics.lock().unwrap_or_else(|e| e.into_inner());
        match &net.nic {
            Some(nic) => nics.insert(pod.metadata.uid.clone(), nic.clone()),
            None => nics.remove(&pod.metadata.uid),
        };
        Ok(())
    }

    async fn stop_sandbox(&self, pod_uid: &str) -> Result<()> {
        let name = self
            .vm(pod_uid)
            .map(|v| v.lock().unwrap_or_else(|e| e.into_inner()).name.clone());
        match name {
            Ok(n) => {
                self.stop_workload(pod_uid, &n, Duration::from_secs(2))
                    .await
            }
            Err(_) => Ok(()),
        }
    }

    async fn remove_sandbox(&self, pod_uid: &str) -> Result<()> {
        self.stop_sandbox(pod_uid).await?;
        self.vms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(pod_uid);
        self.volumes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(pod_uid);
        self.nics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(pod_uid);
        crate::remove_pod_dir(&self.root, pod_uid)
    }

    async fn create_workload(&self, pod: &Pod, name: &str) -> Result<()> {
        let spec = pod
            .spec
            .virtual_machine
            .as_ref()
            .filter(|vm| vm.name == name)
            .ok_or_else(|| {
                RuntimeError::NotFound(format!("virtual machine {name} in the pod spec"))
            })?;
        let (kernel, base) = self.images.vm_image(&spec.image, &self.kernel)?;
        let dir = pod_dir(&self.root, &pod.metadata.uid).join(name);
        std::fs::create_dir_all(&dir)?;
        let file = |path: &str, data: Vec<u8>| VolumeFile {
            path: path.into(),
            data,
            mode: 0o644,
        };
        let mut files = vec![file(
            "etc/hostname",
            format!("{}\n", pod.metadata.name).into_bytes(),
        )];
        if !spec.user_data.is_empty() {
            files.push(file("userdata", user_data(&spec.user_data)));
        }
        let nic = self
            .nics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&pod.metadata.uid)
            .cloned();
        if let Some(n) = &nic {
            let settings = guest_network(&n.address, &n.gateway, n.mtu);
            files.push(file(GUEST_NETWORK, settings.into_bytes()));
        }
        // The node resolved the pod's DNS policy into `None` with the settings it gets.
        if pod.spec.dns_policy == "None"
            && let Some(dns) = &pod.spec.dns_config
        {
            let conf = crate::podconfig::resolv_conf(dns);
            files.push(file("etc/resolv.conf", conf.into_bytes()));
        }
        let guest = Guest {
            base,
            files,
            mounts: spec.volume_mounts.clone(),
        };
        let limit = |n: &str| {
            let r = &spec.resources;
            r.limits.get(n).or_else(|| r.requests.get(n)).and_then(|q| {
                if n == "cpu" {
                    q.milli_value()
                } else {
                    q.value()
                }
                .ok()
            })
        };
        let vm = Vm {
            name: name.to_owned(),
            initrd: dir.join("initrd.cpio"),
            dir,
            kernel,
            guest: Some(guest),
            memory_mib: limit("memory").map_or(128, |b| (b / (1024 * 1024)).max(64)),
            cpus: limit("cpu").map_or(1, |m| ((m + 999) / 1000).clamp(1, 8)),
            nic,
            state: WorkloadState::Created,
            generation: 0,
            reboots: 0,
            pid: None,
        };
        self.vms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pod.metadata.uid.clone(), Arc::new(Mutex::new(vm)));
        Ok(())
    }

    async fn start_workload(&self, pod_uid: &str, _: &str) -> Result<()> {
        let vm = self.vm(pod_uid)?;
        if matches!(
            vm.lock().unwrap_or_else(|e| e.into_inner()).state,
            WorkloadState::Running { .. }
        ) {
            return Ok(());
        }
        self.launch(pod_uid, &vm, None).await
    }

    async fn stop_workload(&self, pod_uid: &str, _: &str, grace: Duration) -> Result<()> {
        let Ok(vm) = self.vm(pod_uid) else {
            return Ok(());
        };
        let running = || {
            matches!(
                vm.lock().unwrap_or_else(|e| e.into_inner()).state,
                WorkloadState::Running { .. }
            )
        };
        if !running() {
            return Ok(());
        }
        let _ = tokio::time::timeout(grace, self.qmp(pod_uid, &[json!({"execute": "quit"})])).await;
        let deadline = tokio::time::Instant::now() + grace;
        while running() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if running() {
            let pid = vm.lock().unwrap_or_else(|e| e.into_inner()).pid;
            if let Some(pid) = pid {
                let _ = crate::run_tool("kill", &["-9", &pid.to_string()]).await;
            }
        }
        Ok(())
    }

    async fn remove_workload(&self, _: &str, _: &str) -> Result<()> {
        Ok(())
    }

    async fn workload_status(&self, pod_uid: &str, name: &str) -> Result<WorkloadStatus> {
        let vm = self.vm(pod_uid)?;
        let v = vm.lock().unwrap_or_else(|e| e.into_inner());
        let ready = matches!(v.state, WorkloadState::Running { .. })
            && std::fs::read_to_string(v.console()).is_ok_and(|s| s.contains(VM_READY_LINE));
        Ok(WorkloadStatus {
            name: name.to_owned(),
            state: v.state.clone(),
            id: format!("qemu://{pod_uid}/{}", v.name),
            ready,
            reboots: v.reboots,
        })
    }

    async fn logs(&self, pod_uid: &str, _: &str) -> Result<Vec<u8>> {
        let console = self
            .vm(pod_uid)?
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .console();
        match tokio::fs::read(console).await {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    async fn usage(&self, pod_uid: &str, _: &str) -> Result<Option<centaurus_core::remote::Usage>> {
        let (pid, started_at) = {
            let vm = self.vm(pod_uid)?;
            let v = vm.lock().unwrap_or_else(|e| e.into_inner());
            match (&v.state, v.pid) {
                (WorkloadState::Running { started_at }, Some(pid)) => (pid, *started_at),
                _ => return Ok(None),
            }
        };
        let Some((cpu, memory)) = crate::usage::process(pid) else {
            return Ok(None);
        };
        Ok(Some(centaurus_core::remote::Usage {
            cpu_nanocores: self
                .rates
                .rate(pod_uid, cpu, crate::runc::running_for(&started_at)),
            memory_bytes: memory,
        }))
    }

    async fn attach(&self, pod_uid: &str, _: &str, _stdin: bool) -> Result<Process> {
        let (socket, running) = {
            let vm = self.vm(pod_uid)?;
            let v = vm.lock().unwrap_or_else(|e| e.into_inner());
            (
                v.console_socket(),
                matches!(v.state, WorkloadState::Running { .. }),
            )
        };
        if !running {
            return Err(RuntimeError::NotReady("the VM is not running".into()));
        }
        // QEMU serves one console client at a time; a second waits for the first to leave.
        let conn = tokio::net::UnixStream::connect(&socket).await?;
        let (rd, wr) = conn.into_split();
        Ok(Process {
            stdin: Some(Box::pin(wr)),
            stdout: Box::pin(rd),
            stderr: None,
            resize: None,
            exit: None,
        })
    }

    async fn vm_action(&self, pod_uid: &str, _: &str, action: &PodAction) -> Result<String> {
        let vm = self.vm(pod_uid)?;
        if let Some(reboot) = &action.reboot_action {
            if reboot.delay_in_seconds > 0 {
                tokio::time::sleep(Duration::from_secs(reboot.delay_in_seconds as u64)).await;
            }
            self.qmp(pod_uid, &[json!({"execute": "system_reset"})])
                .await?;
            vm.lock().unwrap_or_else(|e| e.into_inner()).reboots += 1;
            return Ok("the guest was reset".into());
        }
        let dir = vm.lock().unwrap_or_else(|e| e.into_inner()).dir.clone();
        if let Some(s) = &action.snapshot_action {
            let name = valid_snapshot_name(&s.snapshot_name)?;
            let file = dir.join(format!("snapshot-{name}.state"));
            self.qmp(
                pod_uid,
                &[
                    json!({"execute": "stop"}),
                    json!({"execute": "migrate", "arguments": {"uri": format!("exec:cat > {}", file.display())}}),
                ],
            )
            .await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                let r = self
                    .qmp(pod_uid, &[json!({"execute": "query-migrate"})])
                    .await?;
                match r[0]["status"].as_str() {
                    Some("completed") => break,
                    Some("failed") | Some("cancelled") => {
                        let _ = self.qmp(pod_uid, &[json!({"execute": "cont"})]).await;
                        return Err(RuntimeError::Tool {
                            tool: "qmp migrate".into(),
                            message: r[0].to_string(),
                        });
                    }
                    _ if tokio::time::Instant::now() > deadline => {
                        return Err(RuntimeError::Tool {
                            tool: "qmp migrate".into(),
                            message: "snapshot did not finish in 60 s".into(),
                        });
                    }
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            self.qmp(pod_uid, &[json!({"execute": "cont"})]).await?;
            return Ok(format!("snapshot {name} saved"));
        }
        if let Some(r) = &action.restore_action {
            let name = valid_snapshot_name(&r.snapshot_id)?;
            let file = dir.join(format!("snapshot-{name}.state"));
            if !file.exists() {
                return Err(RuntimeError::NotFound(format!("snapshot {name}")));
            }
            self.stop_workload(pod_uid, "", Duration::from_secs(2))
                .await?;
            self.launch(pod_uid, &vm, Some(&file)).await?;
            vm.lock().unwrap_or_else(|e| e.into_inner()).reboots += 1;
            return Ok(format!("restored snapshot {name}"));
        }
        Err(RuntimeError::Unsupported("empty action".into()))
    }
}

fn valid_snapshot_name(name: &str) -> Result<&str> {
    if !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(name)
    } else {
        Err(RuntimeError::Unsupported(format!(
            "snapshot name {name:?}: use letters, digits, '-' and '_' (at most 63)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcg_guests_are_told_the_tsc_rate() {
        assert!(!kernel_command_line(Accel::Kvm).contains("tsc_early_khz"));
        let tcg = kernel_command_line(Accel::Tcg);
        if cfg!(target_arch = "x86_64") {
            let khz: u64 = tcg
                .split_once("tsc_early_khz=")
                .and_then(|(_, v)| v.parse().ok())
                .expect("a rate on x86_64");
            // Any x86_64 host of this century: between 500 MHz and 10 GHz.
            assert!((500_000..10_000_000).contains(&khz), "{khz} kHz");
        }
    }

    #[test]
    fn user_data_is_decoded_when_base64() {
        assert_eq!(user_data("aGVsbG8="), b"hello");
        assert_eq!(user_data("#!/bin/sh\necho hi"), b"#!/bin/sh\necho hi");
    }

    /// The (name, mode, data) of each entry of the `newc` archives in `bytes`.
    fn entries(mut bytes: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let field = |h: &[u8], i: usize| {
            u32::from_str_radix(std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                .unwrap() as usize
        };
        let up = |n: usize| n.div_ceil(4) * 4;
        let mut out = Vec::new();
        while bytes.len() >= 110 {
            let (mode, size, name_len) = (field(bytes, 1), field(bytes, 6), field(bytes, 11));
            let name = String::from_utf8(bytes[110..110 + name_len - 1].to_vec()).unwrap();
            let data_at = up(110 + name_len);
            out.push((name, mode as u32, bytes[data_at..data_at + size].to_vec()));
            bytes = &bytes[up(data_at + size)..];
        }
        out
    }

    #[test]
    fn the_guest_gets_its_volumes_at_their_mount_paths() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.cpio");
        std::fs::write(&base, crate::images::Cpio::default().finish()).unwrap();
        let mount = |name: &str, path: &str| model::VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            ..Default::default()
        };
        let guest = Guest {
            base: base.clone(),
            files: vec![VolumeFile {
                path: "etc/hostname".into(),
                data: b"vm1\n".to_vec(),
                mode: 0o644,
            }],
            mounts: vec![
                mount("db", "/etc/db/"),
                mount("scratch", "/var/scratch"),
                mount("gone", "/opt/gone"),
            ],
        };
        let volumes = BTreeMap::from([
            (
                "db".to_owned(),
                VolumeContent::Projected(vec![VolumeFile {
                    path: "keys/password".into(),
                    data: b"s3cret".to_vec(),
                    mode: 0o400,
                }]),
            ),
            ("scratch".to_owned(), VolumeContent::Empty),
        ]);
        let out = dir.path().join("initrd.cpio");
        guest.write(Some(&volumes), &out).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "Secrets are for the host's root only");
        let all = entries(&std::fs::read(&out).unwrap());
        let names: Vec<&str> = all.iter().map(|e| e.0.as_str()).collect();
        // Directories come before what is in them, each once; a volume not resolved (yet)
        // is an empty directory.
        assert_eq!(
            names,
            [
                "TRAILER!!!",
                "etc",
                "etc/db",
                "var",
                "var/scratch",
                "opt",
                "opt/gone",
                "etc/hostname",
                "etc/db/keys",
                "etc/db/keys/password",
                "TRAILER!!!",
            ]
        );
        let password = all.iter().find(|e| e.0 == "etc/db/keys/password").unwrap();
        assert_eq!(
            (password.1, password.2.as_slice()),
            (0o100_400, &b"s3cret"[..])
        );
        assert_eq!(all[1].1, 0o040_755);
    }

    #[test]
    fn snapshot_names_cannot_escape_the_vm_directory() {
        assert!(valid_snapshot_name("before-upgrade_1").is_ok());
        assert!(valid_snapshot_name("../x").is_err());
        assert!(valid_snapshot_name("").is_err());
    }
}
