//! `centaurus region`: a whole partitioned region on this machine as separate processes,
//! for evaluation and tests: per partition an etcd cluster and an API server; per tenant
//! partition its scheduler and controllers over the nodes of every resource partition; per
//! resource partition its node lifecycle and one agent of hollow nodes (joined with a
//! bootstrap token, each node its own identity) that runs their pods of every tenant
//! partition. Every process is this binary (or etcd) with the flags an operator would use;
//! `DIR/region.json` lists the partitions and the processes (pid, command line, log).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// What `centaurus region` starts.
#[derive(clap::Args, Debug)]
pub struct RegionPlan {
    /// Where the partitions keep their state and the processes their logs.
    #[arg(long, default_value = "./centaurus-region")]
    pub data_dir: PathBuf,
    /// Tenant partitions (`tp1`, `tp2`, ...).
    #[arg(long, default_value_t = 2)]
    pub tenant_partitions: usize,
    /// Resource partitions (`rp1`, `rp2`, ...), one availability zone each.
    #[arg(long, default_value_t = 2)]
    pub resource_partitions: usize,
    /// Hollow nodes, spread evenly over the resource partitions.
    #[arg(long, default_value_t = 20)]
    pub hollow_nodes: usize,
    /// Members of each partition's etcd cluster (1 or 3).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub etcd_members: u8,
    /// Seconds a node stays NotReady before its pods are evicted.
    #[arg(long, default_value_t = 60)]
    pub eviction_timeout: u64,
    /// Exit (stopping everything) once the region is up, instead of serving until Ctrl-C.
    #[arg(long)]
    pub exit_when_ready: bool,
    /// How the hollow nodes authenticate: `own` (each joins with a bootstrap token and
    /// runs as `system:node:NAME`, as real nodes do) or `fleet` (every node of a resource
    /// partition under its fleet identity, on shared connections: what fits 100,000
    /// nodes on one machine).
    #[arg(long, value_enum, default_value = "own")]
    pub node_identity: NodeIdentity,
    /// Seconds between the hollow nodes' lease renewals (a lease is valid for four).
    #[arg(long, default_value_t = 10)]
    pub heartbeat: u64,
}

/// How the hollow nodes of a region authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NodeIdentity {
    /// Each node its own identity, joined with a bootstrap token.
    Own,
    /// One identity for all nodes of a resource partition (`node-fleet`).
    Fleet,
}

/// One partition as `region.json` lists it.
#[derive(Serialize, Deserialize)]
pub(crate) struct PartitionEntry {
    pub name: String,
    /// `tenant`, `resource` or `front door`.
    pub role: String,
    pub server: String,
    pub admin_kubeconfig: PathBuf,
    pub etcd: Vec<String>,
}

/// One process as `region.json` lists it.
#[derive(Serialize, Deserialize)]
pub(crate) struct ProcessEntry {
    pub name: String,
    pub pid: u32,
    pub command: Vec<String>,
    pub log: PathBuf,
}

/// `DIR/region.json`: where everything of a running region is.
#[derive(Serialize, Deserialize)]
pub(crate) struct RegionFile {
    /// The front door: its server and admin kubeconfig.
    pub gateway: PartitionEntry,
    pub partitions: Vec<PartitionEntry>,
    pub processes: Vec<ProcessEntry>,
}

impl RegionFile {
    /// Reads `dir/region.json`.
    pub(crate) fn load(dir: &Path) -> anyhow::Result<Self> {
        let file = dir.join("region.json");
        let text = std::fs::read(&file).with_context(|| {
            format!(
                "reading {} (is `centaurus region --data-dir {}` running?)",
                file.display(),
                dir.display()
            )
        })?;
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", file.display()))
    }
}

/// How long a process of the region may take to say it is ready.
const MINUTE: Duration = Duration::from_secs(60);

/// The processes started so far; killed when dropped.
#[derive(Default)]
struct Processes {
    children: Vec<(String, Child)>,
    entries: Vec<ProcessEntry>,
}

impl Processes {
    /// Starts `program args` as `name`, its output in `logs/NAME.log`; with `ready`, waits
    /// (at most the given time) for a line of its standard output that contains it.
    async fn start(
        &mut self,
        logs: &Path,
        name: &str,
        program: &Path,
        args: &[String],
        ready: Option<(&str, Duration)>,
    ) -> anyhow::Result<()> {
        let log = logs.join(format!("{name}.log"));
        let err =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        let pid = child.id().unwrap_or_default();
        let stdout = child.stdout.take().context("the child's output")?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let marker = ready.map(|(m, _)| m.to_owned());
        let out_log = logs.join(format!("{name}.out"));
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut tx = Some(tx);
            let mut file = tokio::fs::File::create(&out_log).await.ok();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(f) = file.as_mut() {
                    let _ = f.write_all(format!("{line}\n").as_bytes()).await;
                }
                if marker.as_deref().is_some_and(|m| line.contains(m))
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        if let Some((marker, patience)) = ready {
            match tokio::time::timeout(patience, rx).await {
                Ok(Ok(())) => {}
                _ => anyhow::bail!(
                    "{name} did not print {marker:?} within {} s; see {}",
                    patience.as_secs(),
                    log.display()
                ),
            }
        }
        self.entries.push(ProcessEntry {
            name: name.to_owned(),
            pid,
            command: std::iter::once(program.display().to_string())
                .chain(args.iter().cloned())
                .collect(),
            log,
        });
        self.children.push((name.to_owned(), child));
        Ok(())
    }

    /// Stops every process (SIGTERM, then SIGKILL after 5 s), the last started first.
    async fn stop(&mut self) {
        for (_, child) in self.children.iter().rev() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .arg(pid.to_string())
                    .status();
            }
        }
        for (name, child) in self.children.iter_mut().rev() {
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                tracing::warn!(name, "did not stop on SIGTERM; killing it");
                let _ = child.kill().await;
            }
        }
    }
}

/// A free loopback address (the port is released for the process that will bind it).
fn free_addr() -> anyhow::Result<String> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string())
}

fn etcd_binary() -> anyhow::Result<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
        .context("no etcd on PATH (Debian etcd-server; scripts/setup.sh installs it)")
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// `centaurus region`: starts the plan's processes, writes `DIR/region.json`, and serves
/// until Ctrl-C or SIGTERM (or until ready, with `exit_when_ready`), then stops them all.
pub async fn run(plan: RegionPlan) -> anyhow::Result<()> {
    anyhow::ensure!(
        plan.tenant_partitions > 0 && plan.resource_partitions > 0,
        "a region needs at least one tenant and one resource partition"
    );
    std::fs::create_dir_all(&plan.data_dir)
        .with_context(|| format!("creating {}", plan.data_dir.display()))?;
    let dir = std::fs::canonicalize(&plan.data_dir)?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let me = std::env::current_exe().context("this binary's path")?;
    let etcd = etcd_binary()?;
    let mut procs = Processes::default();
    let result = start(&plan, &dir, &logs, &me, &etcd, &mut procs).await;
    let result = match result {
        Ok((gateway, partitions)) => {
            let file = dir.join("region.json");
            let region = RegionFile {
                gateway,
                partitions,
                processes: std::mem::take(&mut procs.entries),
            };
            std::fs::write(&file, serde_json::to_vec_pretty(&region)?)
                .with_context(|| format!("writing {}", file.display()))?;
            println!(
                "centaurus region: {} tenant and {} resource partitions, {} hollow nodes, {} processes; see {}",
                plan.tenant_partitions,
                plan.resource_partitions,
                plan.hollow_nodes,
                region.processes.len(),
                file.display()
            );
            for p in std::iter::once(&region.gateway).chain(&region.partitions) {
                println!(
                    "  {} ({}): {} admin kubeconfig {}",
                    p.name,
                    p.role,
                    p.server,
                    p.admin_kubeconfig.display()
                );
            }
            println!("centaurus region: ready");
            if plan.exit_when_ready {
                Ok(())
            } else {
                crate::components::until_stopped().await
            }
        }
        Err(e) => Err(e),
    };
    procs.stop().await;
    result
}

async fn start(
    plan: &RegionPlan,
    dir: &Path,
    logs: &Path,
    me: &Path,
    etcd: &Path,
    procs: &mut Processes,
) -> anyhow::Result<(PartitionEntry, Vec<PartitionEntry>)> {
    let rps: Vec<String> = (1..=plan.resource_partitions)
        .map(|i| format!("rp{i}"))
        .collect();
    let tps: Vec<String> = (1..=plan.tenant_partitions)
        .map(|i| format!("tp{i}"))
        .collect();
    let mut partitions = Vec::new();
    // The first partition makes the region's CA; the others trust it.
    let ca = dir.join(&rps[0]).join("pki");
    for (name, role) in rps
        .iter()
        .map(|n| (n, "resource"))
        .chain(tps.iter().map(|n| (n, "tenant")))
    {
        let pdir = dir.join(name);
        let members = usize::from(plan.etcd_members);
        let peers: Vec<String> = (0..members)
            .map(|_| free_addr().map(|a| format!("http://{a}")))
            .collect::<anyhow::Result<_>>()?;
        let clients: Vec<String> = (0..members)
            .map(|_| free_addr().map(|a| format!("http://{a}")))
            .collect::<anyhow::Result<_>>()?;
        let cluster = (0..members)
            .map(|i| format!("{name}-{i}={}", peers[i]))
            .collect::<Vec<_>>()
            .join(",");
        for i in 0..members {
            let args = [
                "--name",
                &format!("{name}-{i}"),
                "--data-dir",
                &s(&pdir.join(format!("etcd-{i}"))),
                "--listen-client-urls",
                &clients[i],
                "--advertise-client-urls",
                &clients[i],
                "--listen-peer-urls",
                &peers[i],
                "--initial-advertise-peer-urls",
                &peers[i],
                "--initial-cluster",
                &cluster,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                name,
                "--log-level",
                "error",
            ]
            .map(str::to_owned);
            procs
                .start(logs, &format!("etcd-{name}-{i}"), etcd, &args, None)
                .await?;
        }
        let listen = free_addr()?;
        let mut args = vec![
            "apiserver".to_owned(),
            "--store".into(),
            format!("etcd:{}", clients.join(",")),
            "--data-dir".into(),
            s(&pdir),
            "--listen".into(),
            listen.clone(),
            "--partition".into(),
            format!("{role}:{name}"),
        ];
        if *name != rps[0] {
            args.extend(["--ca".into(), s(&ca)]);
        }
        if role == "tenant" {
            let kubeconfigs: Vec<String> = rps
                .iter()
                .map(|rp| s(&dir.join(rp).join("components").join("apiserver.kubeconfig")))
                .collect();
            args.extend(["--resource-partitions".into(), kubeconfigs.join(",")]);
            let (first, last) =
                vni_range(tps.iter().position(|t| t == name).unwrap_or(0), tps.len());
            args.extend(["--vni-range".into(), format!("{first}-{last}")]);
        }
        procs
            .start(
                logs,
                &format!("apiserver-{name}"),
                me,
                &args,
                Some(("centaurus apiserver:", MINUTE)),
            )
            .await?;
        partitions.push(PartitionEntry {
            name: name.clone(),
            role: role.into(),
            server: format!("https://{listen}"),
            admin_kubeconfig: pdir.join("admin.kubeconfig"),
            etcd: clients,
        });
    }
    let kc = |p: &str, c: &str| {
        s(&dir
            .join(p)
            .join("components")
            .join(format!("{c}.kubeconfig")))
    };
    let every =
        |parts: &[String], c: &str| parts.iter().map(|p| kc(p, c)).collect::<Vec<_>>().join(",");
    let eviction = plan.eviction_timeout.to_string();
    for tp in &tps {
        for (component, extra) in [
            ("scheduler", vec!["--partition".to_owned(), tp.clone()]),
            (
                "controllers",
                vec!["--eviction-timeout".to_owned(), eviction.clone()],
            ),
        ] {
            let mut args = vec![
                component.to_owned(),
                "--kubeconfig".into(),
                kc(tp, component),
                "--resource-partitions".into(),
                every(&rps, component),
                "--probes".into(),
                free_addr()?,
            ];
            args.extend(extra);
            procs
                .start(
                    logs,
                    &format!("{component}-{tp}"),
                    me,
                    &args,
                    Some(("running", MINUTE)),
                )
                .await?;
        }
    }
    // Each TP's VPC plane: an operator over the droplets of every RP.
    for tp in &tps {
        let args = vec![
            "operator".to_owned(),
            "--kubeconfig".into(),
            kc(tp, "vpc-operator"),
            "--network-kubeconfig".into(),
            kc(tp, "network-controller"),
            "--resource-partitions".into(),
            every(&rps, "vpc-operator"),
            "--state-dir".into(),
            s(&dir.join(tp).join("operator")),
            "--name".into(),
            format!("operator-{tp}"),
            "--probes".into(),
            free_addr()?,
        ];
        procs
            .start(
                logs,
                &format!("operator-{tp}"),
                me,
                &args,
                Some(("running", MINUTE)),
            )
            .await?;
    }
    let per_rp = plan.hollow_nodes.div_ceil(rps.len());
    let mut left = plan.hollow_nodes;
    for rp in &rps {
        let args = vec![
            "controllers".to_owned(),
            "--kubeconfig".into(),
            kc(rp, "controllers"),
            "--nodes-only".into(),
            "--network-kubeconfig".into(),
            kc(rp, "network-controller"),
            "--probes".into(),
            free_addr()?,
        ];
        procs
            .start(
                logs,
                &format!("controllers-{rp}"),
                me,
                &args,
                Some(("running", MINUTE)),
            )
            .await?;
        let nodes = per_rp.min(left);
        left -= nodes;
        if nodes == 0 {
            continue;
        }
        let mut args = vec!["agent".to_owned()];
        match plan.node_identity {
            NodeIdentity::Own => {
                let bootstrap = dir.join(rp).join("bootstrap.kubeconfig");
                crate::components::bootstrap_kubeconfig(
                    &dir.join(rp).join("admin.kubeconfig"),
                    &bootstrap,
                    7 * 86400,
                )
                .await?;
                args.extend(["--bootstrap-kubeconfig".into(), s(&bootstrap)]);
            }
            NodeIdentity::Fleet => args.extend(["--kubeconfig".into(), kc(rp, "node-fleet")]),
        }
        args.extend([
            "--heartbeat".into(),
            plan.heartbeat.to_string(),
            "--hollow".into(),
            nodes.to_string(),
            "--hollow-prefix".into(),
            rp.clone(),
            "--zones".into(),
            "2".into(),
            "--zone-prefix".into(),
            rp.clone(),
            "--tenant-partitions".into(),
            every(&tps, "node-fleet"),
            "--serve".into(),
            "127.0.0.1:0".into(),
            "--probes".into(),
            free_addr()?,
            "--root".into(),
            s(&dir.join(rp).join("node")),
        ]);
        procs
            .start(
                logs,
                &format!("agent-{rp}"),
                me,
                &args,
                // Joining a node is a round trip and a store write: give each its share.
                Some((
                    "hollow nodes",
                    MINUTE + Duration::from_millis(100) * per_rp as u32,
                )),
            )
            .await?;
    }
    // The front door, in front of every partition.
    let listen = free_addr()?;
    let named = |parts: &[String]| {
        parts
            .iter()
            .map(|p| format!("{p}={}", kc(p, "gateway")))
            .collect::<Vec<_>>()
            .join(",")
    };
    let gw = dir.join("gateway");
    let args = vec![
        "gateway".to_owned(),
        "--data-dir".into(),
        s(&gw),
        "--ca".into(),
        s(&ca),
        "--listen".into(),
        listen.clone(),
        "--tenant-partitions".into(),
        named(&tps),
        "--resource-partitions".into(),
        named(&rps),
    ];
    procs
        .start(
            logs,
            "gateway",
            me,
            &args,
            Some(("centaurus gateway:", MINUTE)),
        )
        .await?;
    let gateway = PartitionEntry {
        name: "gateway".into(),
        role: "front door".into(),
        server: format!("https://{listen}"),
        admin_kubeconfig: gw.join("admin.kubeconfig"),
        etcd: Vec::new(),
    };
    Ok((gateway, partitions))
}

/// The VNIs of tenant partition `index` of `count`: an equal share of the region's.
fn vni_range(index: usize, count: usize) -> (u32, u32) {
    let (first, max) = (
        centaurus_vpc::admission::FIRST_VNI,
        centaurus_vpc::ipam::MAX_VNI,
    );
    let span = (max - first + 1) / count.max(1) as u32;
    let start = first + span * index as u32;
    let end = if index + 1 >= count {
        max
    } else {
        start + span - 1
    };
    (start, end)
}

/// What `centaurus move-tenant` moves, and where.
#[derive(clap::Args, Debug)]
pub struct MovePlan {
    /// The tenant.
    pub tenant: String,
    /// The tenant partition it goes to.
    #[arg(long)]
    pub to: String,
    /// The region's directory: its `region.json` names the partitions and their stores.
    #[arg(long, default_value = "./centaurus-region")]
    pub data_dir: PathBuf,
    /// Seconds the move gives writes admitted before its freeze, and watches and node agents
    /// after its switch, to catch up.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
}

/// `centaurus move-tenant`: moves a tenant of the region in `DIR` to another tenant
/// partition ([`centaurus_api::relocation`]) while the region runs, and prints what it did.
pub async fn move_tenant(plan: MovePlan) -> anyhow::Result<()> {
    use centaurus_api::relocation::{PartitionStore, TenantMove};
    use centaurus_core::model::{self, Tenant};
    let region = RegionFile::load(&plan.data_dir)?;
    let open = |p: &PartitionEntry| crate::components::StoreArg::Etcd(p.etcd.clone());
    let mut tenants = Vec::new();
    let mut resources = Vec::new();
    for p in &region.partitions {
        let store = open(p)
            .open()
            .await
            .with_context(|| format!("the store of {}", p.name))?;
        match p.role.as_str() {
            "tenant" => tenants.push(PartitionStore {
                name: p.name.clone(),
                store,
            }),
            _ => resources.push(store),
        }
    }
    let to = tenants
        .iter()
        .find(|p| p.name == plan.to)
        .cloned()
        .with_context(|| format!("{} is not a tenant partition of this region", plan.to))?;
    // Where the tenant is: the partition a move takes it from (an interrupted move is
    // resumed), else the one whose copy is not being written by a move.
    let key = model::object_key("tenants", model::Scope::Cluster, "", "", &plan.tenant);
    let mut from = None;
    for p in &tenants {
        let Some(kv) = p.store.get(&key).await? else {
            continue;
        };
        let t: Tenant = serde_json::from_slice(&kv.value)
            .with_context(|| format!("tenant {} in {} is corrupt", plan.tenant, p.name))?;
        if t.metadata
            .annotations
            .contains_key(model::ANNOTATION_MOVING_TO)
        {
            from = Some(p.clone());
            break;
        }
        if t.status.as_ref().map(|s| s.phase.as_str()) != Some(model::TENANT_ARRIVING) {
            from = Some(p.clone());
        }
    }
    let from = from.with_context(|| format!("no tenant partition holds tenant {}", plan.tenant))?;
    let started = std::time::Instant::now();
    let moved = TenantMove {
        tenant: plan.tenant.clone(),
        from: from.clone(),
        to,
        resources,
        registry: std::sync::Arc::new(centaurus_api::region::registry()),
        settle: Duration::from_secs_f64(plan.settle.max(0.0)),
    }
    .run(|step| println!("centaurus move-tenant: {step}"))
    .await?;
    println!(
        "centaurus move-tenant: moved tenant {} from {} to {} in {:.1} s: {} objects, {} tokens, {} bookings; writes waited {:.1} s; {} keys drained",
        plan.tenant,
        from.name,
        plan.to,
        started.elapsed().as_secs_f64(),
        moved.objects,
        moved.tokens,
        moved.bookings,
        moved.frozen_for.as_secs_f64(),
        moved.drained
    );
    Ok(())
}
