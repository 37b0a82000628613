//! `centaurus`: the server binary. Thin: argument parsing and wiring; logic lives in crates.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod cluster_dns;
mod components;
mod density;
mod gateway;
mod region;
mod region_density;
mod up;

/// mimalloc returns the memory the server frees to the system; glibc's allocator kept
/// 550 MiB after a namespace of 24,000 pods was deleted.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "centaurus",
    version,
    about = "Centaurus: one regional cloud for container and VM pods"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs an all-in-one region in this process on the embedded store.
    Up {
        /// Where the region keeps its state (created if missing).
        #[arg(long, default_value = "./centaurus-data")]
        data_dir: PathBuf,
        /// The store: `redb:PATH` (default: `DIR/store.redb`) or `etcd:URL[,URL...]`.
        #[arg(long)]
        store: Option<components::StoreArg>,
        /// Address of the API server (HTTPS); port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        /// Exit once the region is ready instead of serving until Ctrl-C.
        #[arg(long)]
        exit_when_ready: bool,
        /// Simulated nodes to run beside the real one (scale tests, demos).
        #[arg(long, default_value_t = 0)]
        hollow_nodes: usize,
        /// Availability zones the hollow nodes are spread over.
        #[arg(long, default_value_t = 3)]
        zones: usize,
        /// Do not run a node agent for this host.
        #[arg(long)]
        no_local_agent: bool,
        /// Run the region on N droplets made on this machine (network namespaces on a
        /// substrate bridge), each a node with its own transit daemon; pods reach each
        /// other through the XDP datapath. Replaces this host's node agent. Needs root.
        #[arg(long, default_value_t = 0, conflicts_with = "hollow_nodes")]
        droplets: usize,
        /// Serve the API only: no scheduler, controllers or node agents (run them
        /// elsewhere, or test the API alone).
        #[arg(long)]
        api_only: bool,
        /// Seconds a node stays NotReady (its lease expired: 40 s without a heartbeat)
        /// before its pods are evicted and their controllers replace them elsewhere.
        #[arg(long, default_value_t = 60)]
        eviction_timeout: u64,
    },
    /// Serves the region's API from a store: the only process that opens one. Writes the
    /// admin kubeconfig and the components' kubeconfigs (`DIR/components/`).
    Apiserver {
        /// `redb:PATH` (the embedded store) or `etcd:URL[,URL...]`.
        #[arg(long)]
        store: components::StoreArg,
        /// The region's CA, token file and kubeconfigs; API servers of one region share it.
        #[arg(long, default_value = "./centaurus-data")]
        data_dir: PathBuf,
        /// Address to serve HTTPS on.
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        /// The other API servers of the region (`https://HOST:PORT`), listed in the
        /// component kubeconfigs for failover.
        #[arg(long, value_delimiter = ',')]
        peers: Vec<String>,
        /// Serve one partition of a partitioned region: `tenant:NAME` (tenants' spaces and
        /// workloads) or `resource:NAME` (nodes, their Leases and ledgers, droplets), each
        /// on its own store. Default: the whole region.
        #[arg(long, default_value = "")]
        partition: PartitionArg,
        /// The region's CA (a directory with `ca.crt` and `ca.key`, and `secrets.key` and
        /// `sa.key`, the keys of Secrets at rest and of ServiceAccount tokens), copied into
        /// `DIR/pki` when that has none: every partition of a region trusts one CA, seals
        /// with one key and signs tokens with one key.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// In a tenant partition: the API server kubeconfigs of the resource partitions
        /// (their `DIR/components/apiserver.kubeconfig`), where it finds the agents of its
        /// pods' nodes (`kubectl logs`).
        #[arg(long, value_delimiter = ',')]
        resource_partitions: Vec<PathBuf>,
        /// In a tenant partition: the VNIs it hands to new VPCs, `FIRST-LAST`, disjoint
        /// from every other tenant partition's (their VPCs share the hosts' datapaths).
        #[arg(long, value_parser = vni_range)]
        vni_range: Option<(u32, u32)>,
    },
    /// Runs the scheduler as a client of the API.
    Scheduler {
        /// Its kubeconfig (`DIR/components/scheduler.kubeconfig`).
        #[arg(long)]
        kubeconfig: PathBuf,
        /// Where to serve /healthz, /readyz and /metrics (plain HTTP; keep it on loopback).
        #[arg(long, default_value = "127.0.0.1:10259")]
        probes: SocketAddr,
        /// In a tenant partition: the scheduler's kubeconfigs of every resource partition,
        /// whose nodes it places this partition's pods on.
        #[arg(long, value_delimiter = ',', requires = "partition")]
        resource_partitions: Vec<PathBuf>,
        /// The name of its tenant partition (with `--resource-partitions`): its bookings in
        /// the nodes' ledgers carry it.
        #[arg(long)]
        partition: Option<String>,
    },
    /// Runs the workload and node-lifecycle controllers as clients of the API.
    Controllers {
        /// Their kubeconfig (`DIR/components/controllers.kubeconfig`).
        #[arg(long)]
        kubeconfig: PathBuf,
        /// Seconds a node stays NotReady before its pods are evicted.
        #[arg(long, default_value_t = 60)]
        eviction_timeout: u64,
        /// This instance's name among the active-active instances (unique; default: host
        /// and process id). Instances share the objects over the ring of their Leases.
        #[arg(long)]
        name: Option<String>,
        /// Where to serve /healthz, /readyz and /metrics (plain HTTP; keep it on loopback).
        #[arg(long, default_value = "127.0.0.1:10257")]
        probes: SocketAddr,
        /// In a tenant partition: the controllers' kubeconfigs of every resource
        /// partition, whose lost nodes this partition's pods are evicted from.
        #[arg(long, value_delimiter = ',', conflicts_with = "nodes_only")]
        resource_partitions: Vec<PathBuf>,
        /// In a resource partition: node lifecycle only (readiness and taints; its
        /// tenant partitions evict their own pods).
        #[arg(long)]
        nodes_only: bool,
        /// In a resource partition: the network controller's kubeconfig
        /// (`DIR/components/network-controller.kubeconfig`), to make a Droplet for each
        /// node, where the tenant partitions' VPC operators place and program.
        #[arg(long, requires = "nodes_only")]
        network_kubeconfig: Option<PathBuf>,
    },
    /// Runs a VPC operator replica (on the simulated dataplane) and the network controller
    /// as clients of the API.
    Operator {
        /// The operator's kubeconfig (`DIR/components/vpc-operator.kubeconfig`).
        #[arg(long)]
        kubeconfig: PathBuf,
        /// The network controller's (`DIR/components/network-controller.kubeconfig`).
        #[arg(long)]
        network_kubeconfig: PathBuf,
        /// Where the replica keeps its decisions.
        #[arg(long, default_value = "./centaurus-operator")]
        state_dir: PathBuf,
        /// This replica's name among the active-active replicas (unique; default: host and
        /// process id). Replicas share the VPCs over the ring of their Leases.
        #[arg(long)]
        name: Option<String>,
        /// Where to serve /healthz, /readyz and /metrics (plain HTTP; keep it on loopback).
        #[arg(long, default_value = "127.0.0.1:10263")]
        probes: SocketAddr,
        /// In a tenant partition: the operator's kubeconfigs of every resource partition
        /// (their `DIR/components/vpc-operator.kubeconfig`), whose droplets it places
        /// bouncers and dividers on and programs; their network controllers make them.
        #[arg(long, value_delimiter = ',')]
        resource_partitions: Vec<PathBuf>,
    },
    /// Writes the kubeconfig of a node's agent (`system:node:NAME`, confined by the node
    /// authorizer to that node's objects), signed by the region's CA.
    NodeKubeconfig {
        /// The API servers' data directory (its CA and component kubeconfigs).
        #[arg(long, default_value = "./centaurus-data")]
        data_dir: PathBuf,
        /// The node (this host's name by default).
        #[arg(long)]
        node: Option<String>,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Writes a kubeconfig with a new bootstrap token, with which `centaurus agent
    /// --bootstrap-kubeconfig` joins nodes (each gets its own `system:node:NAME`
    /// certificate). The token may do nothing else.
    BootstrapKubeconfig {
        /// An administrator's kubeconfig (`DIR/admin.kubeconfig`).
        #[arg(long)]
        kubeconfig: PathBuf,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
        /// Seconds the token stays valid (at most a week).
        #[arg(long, default_value_t = 86400)]
        ttl: u64,
    },
    /// Runs node agents as clients of the API: this host's (runc, and QEMU when present;
    /// alone, with its node's kubeconfig from `node-kubeconfig`) and/or `--hollow N`
    /// simulated nodes (with the fleet's kubeconfig).
    Agent {
        /// Its kubeconfig: this host's node's (`node-kubeconfig`), or the fleet's
        /// (`DIR/components/node-fleet.kubeconfig`) for hollow nodes. With
        /// `--bootstrap-kubeconfig`, where this host's node keeps the credentials it joins
        /// with.
        #[arg(long, required_unless_present = "bootstrap_kubeconfig")]
        kubeconfig: Option<PathBuf>,
        /// Join with this bootstrap token (`bootstrap-kubeconfig`): each node, hollow ones
        /// included, gets its own `system:node:NAME` credentials and runs as that identity.
        #[arg(long)]
        bootstrap_kubeconfig: Option<PathBuf>,
        /// Simulated nodes to run.
        #[arg(long, default_value_t = 0)]
        hollow: usize,
        /// Zones the hollow nodes are spread over.
        #[arg(long, default_value_t = 3)]
        zones: usize,
        /// Name prefix of the hollow nodes (several agents each need their own).
        #[arg(long, default_value = "hollow")]
        hollow_prefix: String,
        /// Name prefix of the hollow nodes' zones (`PREFIX-a`, `PREFIX-b`, ...): the
        /// availability zone of a resource partition, say.
        #[arg(long, default_value = "zone")]
        zone_prefix: String,
        /// Seconds between the hollow nodes' lease renewals (a lease is valid for four).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
        heartbeat: u64,
        /// Run this host's node agent with the real runtimes (needs root and runc).
        #[arg(long)]
        local: bool,
        /// This host's runtimes (implies `--local`): `runc`, `qemu` or `runc,qemu`
        /// (default: runc, and QEMU when present).
        #[arg(long, value_enum, value_delimiter = ',')]
        runtime: Vec<up::RuntimeKind>,
        /// Where this host's agent keeps its workloads.
        #[arg(long, default_value = "./centaurus-node")]
        root: PathBuf,
        /// Where to serve the endpoint the API servers fetch pod logs from (HTTPS, client
        /// certificates of the region's CA; its Nodes publish it). Port 0 picks one.
        #[arg(long, default_value = "127.0.0.1:10250")]
        serve: SocketAddr,
        /// The address the API servers reach the endpoint at, when `--serve` listens on
        /// every address.
        #[arg(long, default_value = "127.0.0.1")]
        advertise_address: String,
        /// Where to serve /healthz, /readyz and /metrics (plain HTTP; keep it on loopback).
        #[arg(long, default_value = "127.0.0.1:10248")]
        probes: SocketAddr,
        /// In a partitioned region (the kubeconfig being the nodes' resource partition's):
        /// a kubeconfig of each tenant partition, whose servers and CA the nodes reach with
        /// their own identity to run the pods bound to them there.
        #[arg(long, value_delimiter = ',')]
        tenant_partitions: Vec<PathBuf>,
    },
    /// Serves the front door of a partitioned region: one HTTPS endpoint that
    /// authenticates callers and sends each request to the partition that holds it.
    Gateway {
        /// Where it keeps its certificate and writes `admin.kubeconfig`.
        #[arg(long, default_value = "./centaurus-gateway")]
        data_dir: PathBuf,
        /// The region's CA (`ca.crt`, `ca.key`: a partition's `DIR/pki`).
        #[arg(long)]
        ca: PathBuf,
        /// Address to serve HTTPS on.
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        /// Each tenant partition as NAME=KUBECONFIG (its `DIR/components/gateway.kubeconfig`).
        #[arg(long, value_delimiter = ',', required = true, value_parser = gateway::named_path)]
        tenant_partitions: Vec<(String, PathBuf)>,
        /// Each resource partition as NAME=KUBECONFIG.
        #[arg(long, value_delimiter = ',', required = true, value_parser = gateway::named_path)]
        resource_partitions: Vec<(String, PathBuf)>,
    },
    /// Runs a partitioned region on this machine as separate processes (etcd included):
    /// tenant and resource partitions, each with its own etcd and API server, schedulers
    /// and controllers, and hollow nodes. Writes `DIR/region.json`; Ctrl-C stops it all.
    Region(region::RegionPlan),
    /// Moves a tenant of a running partitioned region to another tenant partition: its
    /// objects, tokens and pods' bookings are copied, writes wait (503 with Retry-After)
    /// meanwhile, watches through the front door and the pods on their nodes carry on.
    MoveTenant(region::MovePlan),
    /// Measures pod startup latency, scheduling throughput and heartbeat cost of an
    /// in-process region on a fresh store in a temporary directory.
    Density(density::Density),
    /// Measures a running partitioned region (`centaurus region`) from outside: the front
    /// door's added latency, scheduling throughput per tenant partition, pod startup and
    /// API call latency under a steady creation rate, and every process' memory.
    RegionDensity(region_density::RegionDensity),
    /// Runs this host's transit daemon: loads the XDP datapath, attaches it to the
    /// substrate interface, and serves table programming on a Unix socket.
    Transitd {
        /// The substrate interface (where overlay traffic enters and leaves the host).
        #[arg(long)]
        substrate: String,
        /// This host's address on the substrate.
        #[arg(long)]
        ip: std::net::Ipv4Addr,
        /// Where the programs run: `tc` (keeps segmentation and checksum offloads across
        /// the overlay) or `xdp`.
        #[arg(long, default_value = "tc")]
        hook: centaurus_xdp::loader::Hook,
        /// Where to serve.
        #[arg(long, default_value = "/run/centaurus/transitd.sock")]
        socket: PathBuf,
        /// Where to keep the tables it is programmed with, so a restarted daemon serves
        /// them again.
        #[arg(long, default_value = "/var/lib/centaurus/transitd/tables.jsonl")]
        tables: PathBuf,
        /// A directory on a BPF filesystem to pin the maps and links in, so the datapath
        /// forwards while the daemon is down and a restarted daemon takes it over; without
        /// it, the programs detach when the daemon exits.
        #[arg(long)]
        pins: Option<PathBuf>,
    },
}

/// `--vni-range FIRST-LAST`.
fn vni_range(s: &str) -> Result<(u32, u32), String> {
    let max = centaurus_vpc::ipam::MAX_VNI;
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("expected FIRST-LAST, not {s:?}"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<u32>()
            .ok()
            .filter(|v| (1..=max).contains(v))
            .ok_or_else(|| format!("a VNI is 1 to {max}, not {v:?}"))
    };
    let (first, last) = (parse(a)?, parse(b)?);
    if first > last {
        return Err(format!("{first} is above {last}"));
    }
    Ok((first, last))
}

/// `--partition`: empty for the whole region.
#[derive(Clone, Debug)]
struct PartitionArg(centaurus_api::partition::Partition);

impl std::str::FromStr for PartitionArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Ok(Self(Default::default()));
        }
        s.parse().map(Self)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            // The DNS server logs every query at info; the netlink packet parser warns of
            // every attribute a newer kernel sends that it does not know.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,hickory_server=warn,netlink_packet_route=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Up {
            data_dir,
            store,
            listen,
            exit_when_ready,
            hollow_nodes,
            zones,
            no_local_agent,
            droplets,
            api_only,
            eviction_timeout,
        } => up::run(
            &data_dir,
            store.as_ref(),
            listen,
            exit_when_ready,
            (!api_only).then_some(up::Compute {
                hollow_nodes,
                zones,
                local_agent: !no_local_agent && droplets == 0,
                droplets,
                eviction_timeout: std::time::Duration::from_secs(eviction_timeout),
            }),
        )
        .await
        .with_context(|| format!("region in {}", data_dir.display())),
        Command::Transitd {
            substrate,
            ip,
            hook,
            socket,
            tables,
            pins,
        } => transitd(&substrate, ip, hook, &socket, &tables, pins.as_deref()).await,
        Command::Apiserver {
            store,
            data_dir,
            listen,
            peers,
            partition,
            ca,
            resource_partitions,
            vni_range,
        } => {
            if let Some(ca) = ca {
                components::adopt_region_keys(&ca, &data_dir)?;
            }
            components::apiserver(
                &store,
                &data_dir,
                listen,
                &peers,
                partition.0,
                &resource_partitions,
                vni_range,
            )
            .await
        }
        Command::Scheduler {
            kubeconfig,
            probes,
            resource_partitions,
            partition,
        } => {
            let client = components::client(&kubeconfig)?;
            components::serve_probes("scheduler", probes, client.clone()).await?;
            let s = if resource_partitions.is_empty() {
                centaurus_sched::Scheduler::new(client, Default::default())
            } else {
                let rps = resource_partitions
                    .iter()
                    .map(|p| components::client(p))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let partition = partition.context("--partition names the tenant partition")?;
                centaurus_sched::Scheduler::partitioned(
                    &partition,
                    client,
                    &rps,
                    Default::default(),
                )
            };
            components::serve("scheduler", std::sync::Arc::new(s).run()).await
        }
        Command::Controllers {
            kubeconfig,
            eviction_timeout,
            name,
            probes,
            resource_partitions,
            nodes_only,
            network_kubeconfig,
        } => {
            use centaurus_controllers::{LifecycleScope, Membership, MembershipConfig};
            let client = components::client(&kubeconfig)?;
            components::serve_probes("controllers", probes, client.clone()).await?;
            let scope = if nodes_only {
                LifecycleScope::Nodes
            } else if resource_partitions.is_empty() {
                LifecycleScope::Region
            } else {
                LifecycleScope::Pods(
                    resource_partitions
                        .iter()
                        .map(|p| components::client(p))
                        .collect::<anyhow::Result<_>>()?,
                )
            };
            let lifecycle = centaurus_controllers::NodeLifecycleConfig {
                eviction_timeout: std::time::Duration::from_secs(eviction_timeout),
                ..Default::default()
            };
            let name = name.unwrap_or_else(components::instance_name);
            let membership = Membership::new(&client, MembershipConfig::new("controllers", &name));
            let share = membership.share();
            println!("centaurus controllers: instance {name}");
            let droplets = network_kubeconfig
                .map(|k| components::client(&k))
                .transpose()?;
            components::serve("controllers", async move {
                let hosts = async {
                    if let Some(c) = droplets {
                        centaurus_vpc::network::run_hosts(c, share.clone()).await;
                    }
                };
                tokio::join!(
                    membership.run(),
                    hosts,
                    centaurus_controllers::run_in(client, scope, lifecycle, share.clone())
                );
            })
            .await
        }
        Command::Operator {
            kubeconfig,
            network_kubeconfig,
            state_dir,
            name,
            probes,
            resource_partitions,
        } => {
            use centaurus_controllers::{Membership, MembershipConfig};
            let hosts = if resource_partitions.is_empty() {
                None
            } else {
                Some(
                    resource_partitions
                        .iter()
                        .map(|k| components::client(k))
                        .collect::<anyhow::Result<Vec<_>>>()?,
                )
            };
            let (op, net) = (
                components::client(&kubeconfig)?,
                components::client(&network_kubeconfig)?,
            );
            components::serve_probes("operator", probes, op.clone()).await?;
            std::fs::create_dir_all(&state_dir)?;
            let name = name.unwrap_or_else(components::instance_name);
            let membership = Membership::new(&op, MembershipConfig::new("vpc-operators", &name));
            let share = membership.share();
            let clients = move |c: centaurus_tenancy::identity::Component| {
                if c == centaurus_tenancy::identity::VPC_OPERATOR {
                    op.clone()
                } else {
                    net.clone()
                }
            };
            let tasks = up::start_network(
                &clients,
                hosts,
                &state_dir,
                (
                    std::sync::Arc::new(centaurus_vpc::SimDataplane::new()),
                    "simulated",
                ),
                (&name, share),
            )?;
            components::serve("operator", async {
                let run = async {
                    for t in tasks {
                        let _ = t.await;
                    }
                };
                tokio::join!(membership.run(), run);
            })
            .await
        }
        Command::NodeKubeconfig {
            data_dir,
            node,
            out,
        } => components::node_kubeconfig(
            &data_dir,
            &node.unwrap_or_else(centaurus_runtime::agent::hostname),
            &out,
        ),
        Command::Agent {
            kubeconfig,
            bootstrap_kubeconfig,
            hollow,
            zones,
            hollow_prefix,
            zone_prefix,
            heartbeat,
            local,
            runtime,
            root,
            serve,
            advertise_address,
            probes,
            tenant_partitions,
        } => {
            let (credentials, probe_client, ca) = match bootstrap_kubeconfig {
                Some(path) => {
                    let bootstrap = centaurus_client::kubeconfig::Kubeconfig::load(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let conn = bootstrap.connection()?;
                    let ca = conn.ca_pem.clone();
                    let probe_client = centaurus_client::Client::new(conn)?;
                    let local_kubeconfig = kubeconfig.unwrap_or_else(|| root.join("kubeconfig"));
                    (
                        up::AgentCredentials::Join {
                            bootstrap,
                            local_kubeconfig,
                        },
                        probe_client,
                        ca,
                    )
                }
                None => {
                    let path = kubeconfig.context("--kubeconfig or --bootstrap-kubeconfig")?;
                    let (client, ca) = components::client_and_ca(&path)?;
                    let user = centaurus_client::kubeconfig::Kubeconfig::load(&path)?.users[0]
                        .user
                        .clone();
                    (
                        up::AgentCredentials::Shared(client.clone(), user),
                        client,
                        ca,
                    )
                }
            };
            components::serve_probes("agent", probes, probe_client).await?;
            up::agents(
                &ca,
                up::AgentProcess {
                    credentials,
                    hollow,
                    zones: up::Zones {
                        count: zones,
                        prefix: &zone_prefix,
                    },
                    prefix: &hollow_prefix,
                    heartbeat: std::time::Duration::from_secs(heartbeat),
                    local: (local || !runtime.is_empty()).then_some((root.as_path(), &runtime)),
                    serve,
                    advertise: &advertise_address,
                    tenants: tenant_partitions
                        .iter()
                        .map(|p| {
                            centaurus_client::kubeconfig::Kubeconfig::load(p)
                                .with_context(|| format!("reading {}", p.display()))
                        })
                        .collect::<anyhow::Result<_>>()?,
                },
            )
            .await
        }
        Command::BootstrapKubeconfig {
            kubeconfig,
            out,
            ttl,
        } => components::bootstrap_kubeconfig(&kubeconfig, &out, ttl).await,
        Command::Region(plan) => region::run(plan).await,
        Command::MoveTenant(plan) => region::move_tenant(plan).await,
        Command::Gateway {
            data_dir,
            ca,
            listen,
            tenant_partitions,
            resource_partitions,
        } => {
            std::fs::create_dir_all(&data_dir)?;
            gateway::run(
                &data_dir,
                &ca,
                listen,
                &tenant_partitions,
                &resource_partitions,
            )
            .await
        }
        Command::RegionDensity(d) => region_density::run(d).await,
        Command::Density(d) => {
            let dir = tempfile::tempdir().context("making a scratch directory")?;
            density::run(dir.path(), d).await
        }
    }
}

async fn transitd(
    substrate: &str,
    ip: std::net::Ipv4Addr,
    hook: centaurus_xdp::loader::Hook,
    socket: &std::path::Path,
    tables: &std::path::Path,
    pins: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use centaurus_xdp::loader::{Transit, ifindex};
    let index = ifindex(substrate).with_context(|| format!("no interface {substrate}"))?;
    let mac_text = std::fs::read_to_string(format!("/sys/class/net/{substrate}/address"))
        .with_context(|| format!("reading the MAC of {substrate}"))?;
    let mac = centaurus_vpc::ipam::parse_mac(mac_text.trim())
        .with_context(|| format!("{substrate} has MAC {mac_text:?}"))?;
    let me = centaurus_xdp::model::HostInfo { ip, mac };
    let mut transit = match pins {
        Some(dir) => Transit::load_pinned(me, index, hook, dir),
        None => Transit::load(me, index, hook),
    }
    .context("loading the transit programs (as root?)")?;
    let how = transit.attach_substrate(substrate)?;
    for dir in [socket.parent(), tables.parent()].into_iter().flatten() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let (log, restored) = centaurus_xdp::transitd::TableLog::open(tables, &mut transit)
        .map_err(anyhow::Error::msg)
        .context("restoring the tables")?;
    // Pinned maps may hold what an earlier daemon wrote after its log's last batch.
    let pruned = transit.prune()?;
    eprintln!(
        "transitd: ready on {} (host {ip}, substrate {substrate}, {how:?}; {restored} table entries restored from {}, {pruned} stale map entries removed; pins: {})",
        socket.display(),
        tables.display(),
        pins.map_or("none".into(), |p| p.display().to_string())
    );
    tokio::select! {
        r = centaurus_xdp::transitd::serve(transit, Some(log), socket) => r.with_context(|| format!("serving on {}", socket.display())),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
