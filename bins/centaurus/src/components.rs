//! The region as separate processes: `centaurus apiserver` (the only process that opens a
//! store) and the components that are its clients through a kubeconfig: `scheduler`,
//! `controllers`, `operator` (the VPC operator and the network controller) and `agent`
//! (this host's runtimes, or many hollow nodes).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use centaurus_api::ApiConfig;
use centaurus_api::agent_link::AgentLink;
use centaurus_api::region::{self, Region, RegionOptions};
use centaurus_api::tls::Pki;
use centaurus_client::Client;
use centaurus_client::kubeconfig::Kubeconfig;
use centaurus_core::store::{RedbStore, Store};
use centaurus_tenancy::identity::{self, Component};

/// Where `apiserver` keeps the region's objects.
#[derive(Clone, Debug)]
pub enum StoreArg {
    /// `redb:PATH`: the embedded store (one API server).
    Redb(PathBuf),
    /// `etcd:URL[,URL...]`: an etcd cluster (any number of API servers).
    Etcd(Vec<String>),
}

impl std::str::FromStr for StoreArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("redb", path)) if !path.is_empty() => Ok(Self::Redb(path.into())),
            Some(("etcd", urls)) => {
                let urls: Vec<String> = urls
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned)
                    .collect();
                if urls.is_empty() || urls.iter().any(|u| !u.starts_with("http")) {
                    return Err(format!(
                        "etcd:URL[,URL...] needs http(s) URLs, not {urls:?}"
                    ));
                }
                Ok(Self::Etcd(urls))
            }
            _ => Err(format!(
                "expected redb:PATH or etcd:URL[,URL...], not {s:?}"
            )),
        }
    }
}

/// Recent events an API server's watch cache keeps, so a watch that resumes slightly in the
/// past is served without asking etcd.
const WATCH_WINDOW: usize = 16 * 1024;
/// Events a watcher may fall behind the watch cache before it is ended (and re-lists).
const WATCH_LAG: usize = 64 * 1024;

impl StoreArg {
    /// Opens the store for an API server: etcd behind one [`WatchCache`] watch, so the
    /// server's watches (one per node agent and kind, at scale tens of thousands) are not
    /// each an etcd watcher. redb's store fans out its watches itself.
    ///
    /// [`WatchCache`]: centaurus_core::store::WatchCache
    pub async fn open_served(&self) -> anyhow::Result<Arc<dyn Store>> {
        Ok(match self {
            Self::Redb(_) => self.open().await?,
            Self::Etcd(urls) => Arc::new(
                centaurus_core::store::WatchCache::new(
                    Self::etcd(urls).await?,
                    WATCH_WINDOW,
                    WATCH_LAG,
                )
                .await
                .context("watching etcd")?,
            ),
        })
    }

    async fn etcd(urls: &[String]) -> anyhow::Result<centaurus_core::store::EtcdStore> {
        centaurus_core::store::EtcdStore::connect(centaurus_core::store::EtcdConfig {
            endpoints: urls.to_vec(),
            root: String::new(),
        })
        .await
        .with_context(|| format!("connecting to etcd at {}", urls.join(",")))
    }

    /// Opens the store.
    pub async fn open(&self) -> anyhow::Result<Arc<dyn Store>> {
        Ok(match self {
            Self::Redb(path) => Arc::new(
                RedbStore::open(path).with_context(|| format!("opening {}", path.display()))?,
            ),
            Self::Etcd(urls) => Arc::new(Self::etcd(urls).await?),
        })
    }
}

/// The components whose kubeconfigs an API server writes, and their file names.
pub const COMPONENTS: [(&str, Component); 7] = [
    ("apiserver", identity::API_SERVER),
    ("gateway", identity::GATEWAY),
    ("scheduler", identity::SCHEDULER),
    ("controllers", identity::CONTROLLERS),
    ("vpc-operator", identity::VPC_OPERATOR),
    ("network-controller", identity::NETWORK_CONTROLLER),
    ("node-fleet", identity::NODE_FLEET),
];

/// Writes `DIR/components/NAME.kubeconfig` for each of [`COMPONENTS`] that has none: a
/// client certificate for the component's user, signed by the region's CA, and `servers`.
fn write_component_kubeconfigs(dir: &Path, servers: &[String]) -> anyhow::Result<PathBuf> {
    let names: Vec<String> = Vec::new();
    let pki = Pki::load_or_create(dir, &names)?;
    let out = dir.join("components");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for (file, c) in COMPONENTS {
        let path = out.join(format!("{file}.kubeconfig"));
        if path.exists() {
            continue;
        }
        let (cert, key) = pki.issue_client(c.user, centaurus_core::model::SYSTEM_TENANT, None)?;
        let mut config = Kubeconfig::single(
            file,
            &servers[0],
            &pki.ca_cert,
            Kubeconfig::cert_user(&cert, &key),
        );
        config.clusters[0]
            .cluster
            .set_fallback_servers(&servers[1..]);
        config
            .write(&path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(out)
}

/// `centaurus node-kubeconfig`: a kubeconfig for the agent of node `node`
/// (`system:node:NODE`), signed by the CA in `data_dir`, with the servers of the
/// components' kubeconfigs.
pub fn node_kubeconfig(data_dir: &Path, node: &str, out: &Path) -> anyhow::Result<()> {
    let fleet = data_dir.join("components").join("node-fleet.kubeconfig");
    let mut config = Kubeconfig::load(&fleet).with_context(|| {
        format!(
            "reading {} (written by `centaurus apiserver --data-dir {}`)",
            fleet.display(),
            data_dir.display()
        )
    })?;
    let pki = Pki::load_or_create(data_dir, &[])?;
    let user = identity::node(node).user;
    let (cert, key) = pki.issue_client(&user, centaurus_core::model::SYSTEM_TENANT, None)?;
    config.users[0].user = Kubeconfig::cert_user(&cert, &key);
    config
        .write(out)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("centaurus: kubeconfig of {user} at {}", out.display());
    Ok(())
}

/// `centaurus bootstrap-kubeconfig`: a kubeconfig with a new bootstrap token (valid
/// `ttl_seconds`), asked for through `admin`, with which agents join nodes.
pub async fn bootstrap_kubeconfig(
    admin: &Path,
    out: &Path,
    ttl_seconds: u64,
) -> anyhow::Result<()> {
    let config = Kubeconfig::load(admin).with_context(|| format!("reading {}", admin.display()))?;
    let client = Client::new(config.connection()?)?;
    let reply = client
        .send_json(
            http::Method::POST,
            &format!(
                "/api/v1/tenants/{}/token",
                centaurus_core::model::SYSTEM_TENANT
            ),
            &serde_json::json!({"bootstrap": true, "ttlSeconds": ttl_seconds}),
        )
        .await?
        .ok()?;
    let token = reply["token"]
        .as_str()
        .context("the API server's answer carries no token")?;
    let mut bootstrap = config.clone();
    bootstrap.users[0].user = centaurus_client::kubeconfig::User {
        token: token.into(),
        ..Default::default()
    };
    bootstrap
        .write(out)
        .with_context(|| format!("writing {}", out.display()))?;
    println!(
        "centaurus: bootstrap kubeconfig at {} ({}, until {})",
        out.display(),
        reply["user"].as_str().unwrap_or(""),
        reply["expires"].as_str().unwrap_or("")
    );
    Ok(())
}

/// Joins node `node` with a bootstrap kubeconfig: a fresh key, its certificate request to
/// `POST /api/v1/nodes/{node}/join`, and the node's kubeconfig with the certificate signed
/// there (the servers and CA of `bootstrap`).
pub async fn join_kubeconfig(bootstrap: &Kubeconfig, node: &str) -> anyhow::Result<Kubeconfig> {
    let client = Client::new(bootstrap.connection()?)?;
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())?
        .serialize_request(&key)?
        .pem()?;
    let reply = client
        .send_json(
            http::Method::POST,
            &format!("/api/v1/nodes/{node}/join"),
            &serde_json::json!({"csr": csr}),
        )
        .await?
        .ok()
        .with_context(|| format!("joining node {node}"))?;
    let cert = reply["certificate"]
        .as_str()
        .context("the join answer carries no certificate")?;
    let mut config = bootstrap.clone();
    config.users[0].user = Kubeconfig::cert_user(cert, &key.serialize_pem());
    Ok(config)
}

/// A client of node `node` from its kubeconfig at `path`, joining with `bootstrap` (and
/// keeping the credentials there) when there is none yet.
pub async fn joined(bootstrap: &Kubeconfig, node: &str, path: &Path) -> anyhow::Result<Client> {
    if !path.exists() {
        join_kubeconfig(bootstrap, node)
            .await?
            .write(path)
            .with_context(|| format!("writing {}", path.display()))?;
        println!(
            "centaurus agent: node {node} joined; its kubeconfig is {}",
            path.display()
        );
    }
    client(path)
}

/// `centaurus apiserver`: serves the region over HTTPS from `store` until Ctrl-C or
/// SIGTERM. Several API servers on one etcd share `data_dir` (its CA and token file).
pub async fn apiserver(
    store: &StoreArg,
    data_dir: &Path,
    listen: std::net::SocketAddr,
    peers: &[String],
    partition: centaurus_api::partition::Partition,
    resource_partitions: &[PathBuf],
    vnis: Option<(u32, u32)>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir).context("creating the data directory")?;
    let data_dir = &std::fs::canonicalize(data_dir)?;
    let (db, created) = open_and_bootstrap(store).await?;
    let region = Region::start(
        db.clone(),
        RegionOptions {
            data_dir: data_dir.to_owned(),
            listen,
            config: ApiConfig {
                partition: partition.clone(),
                vnis,
                ..ApiConfig::default()
            },
            compact_every: Duration::from_secs(300),
        },
    )
    .await?;
    let me = format!("https://{}", region.addr);
    let servers: Vec<String> = std::iter::once(me.clone())
        .chain(peers.iter().filter(|p| **p != me).cloned())
        .collect();
    let components = write_component_kubeconfigs(data_dir, &servers)?;
    // Pod logs come from each pod's node agent, over HTTPS; a tenant partition finds the
    // nodes in the resource partitions.
    let pki = Pki::load_or_create(data_dir, &[])?;
    let logs = if resource_partitions.is_empty() {
        AgentLink::new(db, &pki)?
    } else {
        let clients = resource_partitions
            .iter()
            .map(|p| client(p))
            .collect::<anyhow::Result<_>>()?;
        AgentLink::across(clients, &pki)?
    };
    region.api.set_pod_streams(Arc::new(logs));
    println!(
        "centaurus apiserver: {me}, {partition}, on {store:?} ({}); admin kubeconfig {}; component kubeconfigs in {}",
        if created { "initialized" } else { "reopened" },
        region.admin_kubeconfig.display(),
        components.display()
    );
    until_stopped().await?;
    region.stop().await;
    Ok(())
}

/// Copies the region's CA (`ca.crt`, `ca.key` in `from`) into `data_dir/pki` unless the
/// same CA is there; refuses a different one (its certificates would not be trusted).
pub fn adopt_ca(from: &Path, data_dir: &Path) -> anyhow::Result<()> {
    adopt(from, data_dir, &["ca.crt", "ca.key"], &[])
}

/// As [`adopt_ca`], and the region's keys for Secrets at rest (`secrets.key`) and for
/// ServiceAccount tokens (`sa.key`) when `from` has them: every API server of a region
/// opens the Secrets any of them sealed and accepts the tokens any of them signed (a
/// tenant moved between partitions keeps both).
pub fn adopt_region_keys(from: &Path, data_dir: &Path) -> anyhow::Result<()> {
    adopt(
        from,
        data_dir,
        &["ca.crt", "ca.key"],
        &["secrets.key", "sa.key"],
    )
}

fn adopt(from: &Path, data_dir: &Path, required: &[&str], optional: &[&str]) -> anyhow::Result<()> {
    let pki = data_dir.join("pki");
    std::fs::create_dir_all(&pki).with_context(|| format!("creating {}", pki.display()))?;
    for name in required.iter().chain(optional) {
        let src = from.join(name);
        let text = match std::fs::read(&src) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && optional.contains(name) => {
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", src.display())),
        };
        let dst = pki.join(name);
        match std::fs::read(&dst) {
            Ok(have) if have == text => {}
            Ok(_) => anyhow::bail!(
                "{} holds another {name} than {}: a region's partitions share one",
                dst.display(),
                src.display()
            ),
            Err(_) => {
                std::fs::write(&dst, &text)
                    .with_context(|| format!("writing {}", dst.display()))?;
                #[cfg(unix)]
                if name.ends_with(".key") {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600))?;
                }
            }
        }
    }
    Ok(())
}

/// Opens the store and bootstraps the region in it, waiting up to a minute for a store
/// that is not up yet (an etcd cluster still forming). Returns whether the region is new.
async fn open_and_bootstrap(store: &StoreArg) -> anyhow::Result<(Arc<dyn Store>, bool)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut delay = Duration::from_millis(100);
    loop {
        let attempt = async {
            let db = store.open_served().await?;
            let created = region::bootstrap(&*db).await?;
            anyhow::Ok((db, created))
        };
        match attempt.await {
            Ok(done) => return Ok(done),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "the store is not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e.context("the store did not become reachable within 60 s")),
        }
    }
}

/// A name for an instance of active-active components: this host's name and the process id.
pub fn instance_name() -> String {
    format!(
        "{}-{}",
        centaurus_runtime::agent::hostname(),
        std::process::id()
    )
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn until_stopped() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("waiting for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// A client from the kubeconfig at `path`.
pub fn client(path: &Path) -> anyhow::Result<Client> {
    Ok(client_and_ca(path)?.0)
}

/// A client from the kubeconfig at `path`, and the region's CA (PEM) it names.
pub fn client_and_ca(path: &Path) -> anyhow::Result<(Client, Vec<u8>)> {
    let config = Kubeconfig::load(path).with_context(|| format!("reading {}", path.display()))?;
    let conn = config.connection()?;
    let ca = conn.ca_pem.clone();
    Ok((Client::new(conn)?, ca))
}

/// Runs `work` until it ends or the process is told to stop.
pub async fn serve(name: &str, work: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    println!("centaurus {name}: running");
    tokio::select! {
        () = work => anyhow::bail!("{name} stopped"),
        r = until_stopped() => r,
    }
}

/// A component's probes, served over plain HTTP (bind it to loopback, as the kubelet's
/// healthz port): `/healthz` (the process answers), `/readyz` (it reaches the API: the
/// API server's own `/readyz` answered 200 within 2 s) and `/metrics` (its client's
/// requests and the process' resident memory, Prometheus text).
pub async fn serve_probes(
    name: &'static str,
    listen: std::net::SocketAddr,
    client: Client,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    use prometheus_client::metrics::gauge::Gauge;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("the probes of {name} cannot listen on {listen}"))?;
    println!(
        "centaurus {name}: probes on http://{}",
        listener.local_addr()?
    );
    let mut registry = prometheus_client::registry::Registry::with_prefix("centaurus");
    let memory = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
    registry.register(
        "process_resident_memory_bytes",
        "Resident memory of the process",
        memory.clone(),
    );
    client.metrics().register(&mut registry);
    let registry = Arc::new(registry);
    let ready = client.clone();
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let client = ready.clone();
                async move {
                    let probe = tokio::time::timeout(Duration::from_secs(2), client.get("/readyz"));
                    match probe.await {
                        Ok(Ok(r)) if r.status.is_success() => (StatusCode::OK, "ok".to_owned()),
                        Ok(Ok(r)) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("the API server is not ready ({})", r.status),
                        ),
                        Ok(Err(e)) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("cannot reach the API server: {e}"),
                        ),
                        Err(_) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "the API server did not answer within 2 s".to_owned(),
                        ),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                let memory = memory.clone();
                async move {
                    if let Some(rss) = centaurus_api::metrics::resident_bytes() {
                        memory.set(rss as i64);
                    }
                    let mut text = String::new();
                    match prometheus_client::encoding::text::encode(&mut text, &registry) {
                        Ok(()) => (
                            StatusCode::OK,
                            [(
                                header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            text,
                        ),
                        Err(e) => (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            [(header::CONTENT_TYPE, "text/plain")],
                            e.to_string(),
                        ),
                    }
                }
            }),
        );
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the probes stopped");
        }
    }))
}
