//! `centaurusctl`: the client CLI. Thin: arguments and wiring; the verbs live in
//! `centaurus_client::ctl` and the load tool in `centaurus_client::load`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use centaurus_client::Client;
use centaurus_client::ctl::{Ctl, Output, Space, render, render_table};
use centaurus_client::kubeconfig::Kubeconfig;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "centaurusctl", version, about = "Talk to a Centaurus region")]
struct Cli {
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct SpaceArgs {
    /// Namespace (default: the context's, or `default`).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// An explicit tenant (`all` for every tenant; system users only). Default: your own.
    #[arg(long)]
    tenant: Option<String>,
}

impl SpaceArgs {
    fn space(&self) -> Space {
        Space {
            tenant: self.tenant.clone(),
            namespace: self.namespace.clone(),
            all_namespaces: self.all_namespaces,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Yaml,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Shows this host's transit tables, learned hosts and datapath counters (asks the
    /// local transit daemon; no kubeconfig needed).
    Transit {
        /// The transit daemon's socket.
        #[arg(long, default_value = "/run/centaurus/transitd.sock")]
        socket: PathBuf,
        /// Print the raw JSON.
        #[arg(short = 'o', long, value_enum)]
        output: Option<Format>,
    },
    /// Lists the kinds: name, short names, API version, scope.
    ApiResources,
    /// Shows objects: a table, or `-o yaml|json`.
    Get {
        /// Kind (plural, singular, short name).
        kind: String,
        /// One object's name.
        name: Option<String>,
        #[command(flatten)]
        space: SpaceArgs,
        /// Label selector.
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// Output format.
        #[arg(short = 'o', long)]
        output: Option<Format>,
    },
    /// Shows one object in full.
    Describe {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
        #[command(flatten)]
        space: SpaceArgs,
    },
    /// Creates or updates the objects of a manifest file (YAML or JSON, many documents).
    Apply {
        /// The manifest (`-` for standard input).
        #[arg(short = 'f', long)]
        filename: PathBuf,
        #[command(flatten)]
        space: SpaceArgs,
    },
    /// Deletes objects by kind and name, or those of a manifest.
    Delete {
        /// Kind.
        kind: Option<String>,
        /// Name.
        name: Option<String>,
        /// A manifest whose objects to delete.
        #[arg(short = 'f', long)]
        filename: Option<PathBuf>,
        #[command(flatten)]
        space: SpaceArgs,
    },
    /// Streams changes of a kind.
    Watch {
        /// Kind.
        kind: String,
        #[command(flatten)]
        space: SpaceArgs,
        /// Stop after this many seconds (default: until the server ends the watch).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Prints what a pod's container wrote, or a VM pod's serial console.
    Logs {
        /// The pod.
        pod: String,
        /// The container (or the VM's name); needed when the pod has several.
        #[arg(short = 'c', long)]
        container: Option<String>,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
        #[command(flatten)]
        space: SpaceArgs,
    },
    /// Acts on a VM pod: `reboot`, `snapshot NAME` or `restore SNAPSHOT_ID`.
    Action {
        /// The VM pod.
        pod: String,
        /// reboot, snapshot or restore.
        action: String,
        /// The snapshot name (snapshot) or id (restore).
        argument: Option<String>,
        #[command(flatten)]
        space: SpaceArgs,
    },
    /// Creates things.
    #[command(subcommand)]
    Create(CreateCommand),
    /// Tenant administration.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Failure drills on hollow nodes: power them off (they stop heartbeating, as a host
    /// that lost power does, so the region evicts and replaces their pods) and on again.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Drives load against the API and prints latency percentiles per verb.
    Load {
        /// Concurrent clients (one connection each).
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Pods to create.
        #[arg(long, default_value_t = 10_000)]
        pods: usize,
        /// Gets to issue.
        #[arg(long, default_value_t = 10_000)]
        gets: usize,
        /// Lists to issue (pages of 100).
        #[arg(long, default_value_t = 1_000)]
        lists: usize,
        /// Watchers following the creates.
        #[arg(long, default_value_t = 4)]
        watchers: usize,
        /// Namespace to load.
        #[arg(long, default_value = "load")]
        namespace: String,
        /// The API server's process id, to report its resident memory growth per pod.
        #[arg(long)]
        server_pid: Option<u32>,
    },
}

#[derive(Subcommand)]
enum CreateCommand {
    /// Creates a tenant (its `default` namespace and `admin` role come with it).
    Tenant {
        /// Tenant name.
        name: String,
        /// Quota, `pods=10,cpu=4,memory=8Gi,vms=2`.
        #[arg(long, value_delimiter = ',')]
        quota: Vec<String>,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Powers hollow nodes off.
    Stop(NodeSelection),
    /// Powers hollow nodes on again.
    Start(NodeSelection),
}

#[derive(Args)]
struct NodeSelection {
    /// Node names.
    names: Vec<String>,
    /// Every node of this availability zone.
    #[arg(long)]
    zone: Option<String>,
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Prints a kubeconfig for an administrator of a tenant (a new bearer token), usable by
    /// kubectl as it is.
    Kubeconfig {
        /// Tenant name.
        name: String,
        /// User name.
        #[arg(long, default_value = "admin")]
        user: String,
    },
}

fn kubeconfig_path(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p);
    }
    if let Some(p) = std::env::var_os("KUBECONFIG").filter(|p| !p.is_empty()) {
        return Ok(std::env::split_paths(&p).next().unwrap_or_default());
    }
    let home =
        std::env::var_os("HOME").ok_or_else(|| anyhow!("no --kubeconfig, $KUBECONFIG or $HOME"))?;
    Ok(PathBuf::from(home).join(".kube/config"))
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

fn read_manifest(path: &PathBuf) -> anyhow::Result<Vec<serde_json::Value>> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    centaurus_client::manifest::decode(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Prints the dump of the transit daemon at `socket`.
async fn transit(socket: &std::path::Path, raw: bool) -> anyhow::Result<()> {
    let (status, body) = centaurus_xdp::transitd::request(socket, "GET", "/v1/dump", b"")
        .await
        .with_context(|| format!("no transit daemon at {}", socket.display()))?;
    if status != 200 {
        return Err(anyhow!(
            "transitd answered {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    if raw {
        println!("{}", String::from_utf8_lossy(&body));
        return Ok(());
    }
    let d: centaurus_xdp::transitd::Dump = serde_json::from_slice(&body)?;
    let list = |hosts: &[std::net::Ipv4Addr]| {
        hosts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    println!("HOST {}", d.host);
    println!("\nENDPOINT (VNI/IP)        WHERE");
    for (k, v) in &d.endpoints {
        println!("{k:<24} {v}");
    }
    println!("\nAGENT (VNI/IP)           BOUNCERS");
    for (k, v) in &d.agents {
        println!("{k:<24} {}", list(v));
    }
    println!("\nBOUNCED SUBNET           DIVIDERS");
    for (k, v) in &d.bounced {
        println!("{k:<24} {}", list(v));
    }
    println!("\nDIVIDED SUBNET           BOUNCERS");
    for (k, v) in &d.divided {
        println!("{k:<24} {}", list(v));
    }
    println!(
        "\nSERVICE (VNI/VIP:PORT)   BACKENDS ({} connections tracked)",
        d.connections
    );
    for (k, v) in &d.services {
        println!("{k:<24} {}", v.join(","));
    }
    println!("\nPOLICY (VNI/IP)          RULES");
    for (k, v) in &d.policies {
        println!("{k:<24} {v}");
    }
    println!("\nLEARNED (VNI/IP)         HOST");
    for (k, v) in &d.learned {
        println!("{k:<24} {v}");
    }
    println!("\nNEIGHBOR                 MAC");
    for (k, v) in &d.neighbors {
        println!("{:<24} {v}", k.to_string());
    }
    if !d.pending.is_empty() {
        println!("\nWAITING FOR THEIR VETH   {}", d.pending.join(", "));
    }
    println!("\nCOUNTER                  PACKETS");
    for (k, v) in &d.counters {
        println!("{k:<24} {v}");
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let registry = centaurus_api::region::registry();
    if let Command::Transit { socket, output } = &cli.command {
        return transit(socket, output.is_some()).await;
    }
    if let Command::ApiResources = cli.command {
        println!(
            "{:<14} {:<10} {:<30} {:<11} KIND",
            "NAME", "SHORT", "APIVERSION", "SCOPE"
        );
        for info in registry.kinds() {
            println!(
                "{:<14} {:<10} {:<30} {:<11} {}",
                info.plural,
                info.short_names.join(","),
                info.api_version(),
                format!("{:?}", info.scope),
                info.kind
            );
        }
        return Ok(());
    }
    let path = kubeconfig_path(cli.kubeconfig)?;
    let config = Kubeconfig::load(&path)?;
    let conn = config.connection()?;
    let ctl = Ctl {
        client: Arc::new(Client::new(conn.clone())?),
        registry,
    };
    match cli.command {
        Command::ApiResources | Command::Transit { .. } => unreachable!("handled above"),
        Command::Get {
            kind,
            name,
            space,
            selector,
            output,
        } => {
            let info = ctl.kind(&kind)?;
            let (name, space, selector) = (name.as_deref(), space.space(), selector.as_deref());
            let out = match output {
                None => {
                    let table = ctl.table(&info, name, &space, selector).await?;
                    println!("{}", render_table(&table, space.all_namespaces));
                    return Ok(());
                }
                Some(Format::Yaml) => Output::Yaml,
                Some(Format::Json) => Output::Json,
            };
            let objs = ctl.get(&info, name, &space, selector).await?;
            println!("{}", render(&objs, out));
        }
        Command::Describe { kind, name, space } => {
            let info = ctl.kind(&kind)?;
            let space = space.space();
            let table = ctl.table(&info, Some(&name), &space, None).await?;
            let objs = ctl.get(&info, Some(&name), &space, None).await?;
            println!("{}", render_table(&table, false));
            println!("\n{}", render(&objs, Output::Yaml));
        }
        Command::Apply { filename, space } => {
            for obj in read_manifest(&filename)? {
                println!("{}", ctl.apply(&obj, &space.space()).await?);
            }
        }
        Command::Delete {
            kind,
            name,
            filename,
            space,
        } => match (kind, name, filename) {
            (Some(kind), Some(name), None) => println!(
                "{}",
                ctl.delete(&*ctl.kind(&kind)?, &name, &space.space())
                    .await?
            ),
            (None, None, Some(f)) => {
                for obj in read_manifest(&f)? {
                    let info = ctl.kind(obj["kind"].as_str().unwrap_or(""))?;
                    let mut s = space.space();
                    if let Some(ns) = obj.pointer("/metadata/namespace").and_then(|v| v.as_str()) {
                        s.namespace = Some(ns.to_owned());
                    }
                    println!(
                        "{}",
                        ctl.delete(&info, obj["metadata"]["name"].as_str().unwrap_or(""), &s)
                            .await?
                    );
                }
            }
            _ => anyhow::bail!("give KIND NAME or -f FILE"),
        },
        Command::Watch {
            kind,
            space,
            timeout,
        } => {
            let info = ctl.kind(&kind)?;
            ctl.watch(&info, &space.space(), timeout, |line| println!("{line}"))
                .await?;
        }
        Command::Logs {
            pod,
            container,
            tail,
            space,
        } => {
            use std::io::Write as _;
            let log = ctl
                .logs(&pod, container.as_deref(), tail, &space.space())
                .await?;
            std::io::stdout().write_all(&log)?;
        }
        Command::Action {
            pod,
            action,
            argument,
            space,
        } => println!(
            "{}",
            ctl.vm_action(&pod, &action, argument.as_deref(), &space.space())
                .await?
        ),
        Command::Create(CreateCommand::Tenant { name, quota }) => {
            let quota = quota
                .iter()
                .map(|q| {
                    q.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .ok_or_else(|| anyhow!("quota {q:?} is not NAME=VALUE"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            println!("{}", ctl.create_tenant(&name, &quota).await?);
        }
        Command::Node(command) => {
            let (selection, on) = match &command {
                NodeCommand::Stop(s) => (s, false),
                NodeCommand::Start(s) => (s, true),
            };
            if selection.names.is_empty() && selection.zone.is_none() {
                bail!("name the nodes, or a zone with --zone");
            }
            let nodes = ctl
                .power(&selection.names, selection.zone.as_deref(), on)
                .await?;
            for n in nodes {
                println!("node/{n} powered {}", if on { "on" } else { "off" });
            }
        }
        Command::Tenant(TenantCommand::Kubeconfig { name, user }) => {
            print!(
                "{}",
                ctl.tenant_kubeconfig(&config, &name, &user)
                    .await?
                    .to_yaml()
            );
        }
        Command::Load {
            clients,
            pods,
            gets,
            lists,
            watchers,
            namespace,
            server_pid,
        } => {
            let before = server_pid.and_then(rss_bytes);
            let spec = centaurus_client::load::LoadSpec {
                clients,
                pods,
                gets,
                lists,
                watchers,
                namespace,
            };
            println!(
                "load: {clients} clients, {pods} pod creates, {gets} gets, {lists} lists, {watchers} watchers"
            );
            let (stats, seen) = centaurus_client::load::run(conn, spec).await?;
            for s in &stats {
                println!("{s}");
            }
            println!(
                "watch   {seen} events delivered to {watchers} watchers (expected {})",
                pods * watchers
            );
            if let (Some(pid), Some(before)) = (server_pid, before)
                && let Some(after) = rss_bytes(pid)
            {
                println!(
                    "server  RSS {:.1} MiB -> {:.1} MiB: {:.0} bytes per created pod",
                    before as f64 / 1048576.0,
                    after as f64 / 1048576.0,
                    (after as f64 - before as f64) / pods.max(1) as f64
                );
            }
        }
    }
    Ok(())
}
