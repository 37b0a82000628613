//! The regional API endpoint as one unit: store bootstrap, PKI, token file, the HTTPS
//! listener, the admin kubeconfig and periodic compaction. `centaurus up` and the tests
//! start it the same way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use centaurus_core::model::{self, Registry, Resource as _, Scope};
use centaurus_core::store::{SEALED_PREFIXES, Sealed, SealingKey, Store, StoreError};
use centaurus_tenancy::accounts::AccountKey;
use centaurus_tenancy::confine::Confined;
use centaurus_tenancy::{
    AuthenticatorChain, AuthnLayer, CallerSpace, ClientCertAuthenticator, FrontDoor, Identity,
    StoredTokens, TenantBound, TenantGate, TokenFile,
};
use centaurus_vpc::admission::NetworkAdmission;
use centaurus_vpc::services::ServiceAdmission;
use serde_json::json;
use tokio::sync::oneshot;

use crate::tls::Pki;
use crate::{ApiConfig, ApiServer};
use centaurus_client::kubeconfig::Kubeconfig;

/// Every kind a region serves: the built-in kinds, tenancy's roles and grants, and the
/// VPC plane's kinds.
pub fn registry() -> Registry {
    let mut r = Registry::builtin();
    centaurus_tenancy::register_kinds(&mut r)
        .expect("tenancy plurals are distinct from the built-in ones");
    centaurus_vpc::kinds::register_kinds(&mut r)
        .expect("vpc plurals are distinct from the other kinds");
    r
}

/// Creates the `system` tenant and its `default`, `kube-system` and `kube-node-lease`
/// namespaces unless they exist. Returns true when the tenant was created (a new region).
pub async fn bootstrap(store: &dyn Store) -> Result<bool, StoreError> {
    let mut created = false;
    let namespace = |name: &str| {
        (
            model::object_key("namespaces", Scope::Tenant, model::SYSTEM_TENANT, "", name),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "tenant": model::SYSTEM_TENANT}, "spec": {}, "status": {"phase": "Active"}}),
        )
    };
    let objects = [
        (
            model::object_key("tenants", Scope::Cluster, "", "", model::SYSTEM_TENANT),
            json!({"apiVersion": "v1", "kind": "Tenant", "metadata": {"name": model::SYSTEM_TENANT}, "spec": {}, "status": {"phase": "Active"}}),
        ),
        namespace("default"),
        namespace("kube-system"),
        namespace(model::NODE_LEASE_NAMESPACE),
    ];
    for (i, (key, mut obj)) in objects.into_iter().enumerate() {
        crate::lifecycle::stamp(obj["metadata"].as_object_mut().expect("object literal"));
        match store.create(&key, Bytes::from(obj.to_string())).await {
            Ok(_) => created |= i == 0,
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(created)
}

/// The API server of a region over `store`, wired as `centaurus up` wires it: Secrets
/// sealed at rest with `config.sealing`, the region's kinds, the cached tenant gate, caller-tenant space resolution, and authentication by
/// client certificate, then by the bearer tokens the region's API servers issued (kept in
/// the store, [`StoredTokens`]), then by the static `tokens` file. Returns the server and
/// its application (plain HTTP; [`crate::tls::serve`] adds TLS).
pub async fn app(
    store: Arc<dyn Store>,
    tokens: Arc<TokenFile>,
    config: ApiConfig,
) -> anyhow::Result<(Arc<ApiServer>, axum::Router)> {
    let key = config.sealing.clone().unwrap_or_else(|| {
        tracing::info!("Secrets are sealed with a key of this process only");
        Arc::new(SealingKey::generate())
    });
    let store: Arc<dyn Store> = Arc::new(Sealed::new(store, key, SEALED_PREFIXES));
    let issued = Arc::new(
        StoredTokens::start(store.clone())
            .await
            .context("loading the region's tokens")?,
    );
    let partition = config.partition.clone();
    let config_vnis = config.vnis;
    let api = ApiServer::new(
        store.clone(),
        Arc::new(partition.registry(&registry())),
        Arc::new(Confined::new(
            Arc::new(TenantGate::cached(store.clone()).await),
            store.clone(),
        )),
        Arc::new(CallerSpace),
        Some(issued.clone()),
        config,
    );
    api.watch_tenants().await;
    api.add_admission(Arc::new(match config_vnis {
        Some((first, last)) => NetworkAdmission::with_vnis(first, last),
        None => NetworkAdmission::new(),
    }));
    api.add_admission(Arc::new(ServiceAdmission::new()));
    if let Some(a) = partition.admission() {
        api.add_admission(a);
    }
    let chain = AuthenticatorChain(vec![
        Arc::new(ClientCertAuthenticator),
        api.account_tokens(),
        issued,
        tokens,
    ]);
    let door = FrontDoor::new(Arc::new(chain));
    let authn = AuthnLayer::new(Arc::new(TenantBound::new(Arc::new(door), store).await));
    let router = crate::router(api.clone(), authn);
    Ok((api, router))
}

/// An API server of a region in this process with no listener, for tools and tests whose
/// components are clients of it through the in-process transport.
#[derive(Clone)]
pub struct LocalRegion {
    /// The server.
    pub api: Arc<ApiServer>,
    /// Its application, authentication included.
    pub router: axum::Router,
}

impl LocalRegion {
    /// Bootstraps `store` ([`bootstrap`]) and serves it as [`app`] does, with the token file
    /// `tokens.csv` in `dir`.
    pub async fn start(store: Arc<dyn Store>, dir: &std::path::Path) -> anyhow::Result<Self> {
        Self::start_with(store, dir, ApiConfig::default()).await
    }

    /// As [`LocalRegion::start`], with `config` (a partition's, say).
    pub async fn start_with(
        store: Arc<dyn Store>,
        dir: &std::path::Path,
        config: ApiConfig,
    ) -> anyhow::Result<Self> {
        bootstrap(&*store).await?;
        let tokens = Arc::new(TokenFile::load(dir.join("tokens.csv")).await?);
        let config = with_sealing_key(config, dir)?;
        let (api, router) = app(store, tokens, config).await?;
        Ok(Self { api, router })
    }

    /// A client as `identity`.
    pub fn client(&self, identity: Identity) -> centaurus_client::Client {
        crate::local::InProcess::client(self.router.clone(), identity)
    }

    /// Creates tenant `tenant` (unless it exists) and its namespace `namespace`, as an
    /// administrator would.
    pub async fn space(&self, tenant: &str, namespace: &str) -> anyhow::Result<()> {
        let admin = self.admin();
        let t = model::Tenant::typed(model::ObjectMeta::named(tenant));
        let mut ns = model::Namespace::typed(model::ObjectMeta::named(namespace));
        ns.metadata.tenant = tenant.into();
        for r in [
            admin.api().create(t).await.map(drop),
            admin.api().create(ns).await.map(drop),
        ] {
            match r {
                Ok(()) => {}
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// A client as a system user (`system:admin`).
    pub fn admin(&self) -> centaurus_client::Client {
        self.client(Identity {
            user: "system:admin".into(),
            tenant: model::SYSTEM_TENANT.into(),
            groups: Vec::new(),
            tenant_uid: None,
        })
    }
}

/// Binds the tokens of `tokens` written before tokens named their tenant's UID to their
/// tenants as they are now, and revokes those of tenants that are gone or being deleted.
async fn bind_unbound_tokens(store: &dyn Store, tokens: &TokenFile) -> anyhow::Result<()> {
    let all = centaurus_core::store::range_all(store, "/registry/tenants/").await?;
    let live: std::collections::HashMap<String, String> = all
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<model::Tenant>(&kv.value).ok())
        .filter(|t| t.metadata.deletion_timestamp.is_none())
        .map(|t| (t.metadata.name, t.metadata.uid))
        .collect();
    let changed = tokens.bind_unbound(|t| live.get(t).cloned()).await?;
    if changed > 0 {
        tracing::info!(
            changed,
            "tokens bound to their tenant's UID, or revoked where the tenant is gone"
        );
    }
    Ok(())
}

/// The file of the region's key for Secrets at rest, in a data directory. Every API server
/// of a region holds the same one.
pub fn sealing_key_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("pki").join("secrets.key")
}

/// The file of the region's key for signing ServiceAccount tokens, in a data directory.
/// Every API server of a region holds the same one.
pub fn account_key_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("pki").join("sa.key")
}

/// `config` with the sealing key and the account key of `data_dir` ([`sealing_key_path`],
/// [`account_key_path`], made when absent) unless it has them.
fn with_sealing_key(
    mut config: ApiConfig,
    data_dir: &std::path::Path,
) -> anyhow::Result<ApiConfig> {
    if config.sealing.is_none() {
        config.sealing = Some(Arc::new(SealingKey::load_or_create(&sealing_key_path(
            data_dir,
        ))?));
    }
    if config.account_key.is_none() {
        config.account_key = Some(Arc::new(AccountKey::load_or_create(&account_key_path(
            data_dir,
        ))?));
    }
    Ok(config)
}

/// How to run the regional API endpoint.
#[derive(Clone, Debug)]
pub struct RegionOptions {
    /// State directory: `pki/`, `tokens.csv`, `admin.kubeconfig`.
    pub data_dir: PathBuf,
    /// Listen address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Limits.
    pub config: ApiConfig,
    /// How often history older than the previous period is compacted.
    pub compact_every: Duration,
}

/// A running API endpoint.
pub struct Region {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// `DIR/admin.kubeconfig`.
    pub admin_kubeconfig: PathBuf,
    /// The server.
    pub api: Arc<ApiServer>,
    /// The application the listener serves (authentication included), for in-process
    /// clients ([`Region::client`]).
    pub router: axum::Router,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Region {
    /// Starts serving `store` over HTTPS.
    pub async fn start(store: Arc<dyn Store>, opts: RegionOptions) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&opts.data_dir).context("creating the data directory")?;
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .with_context(|| format!("cannot listen on {}", opts.listen))?;
        let addr = listener.local_addr()?;
        let mut names = vec![addr.ip().to_string()];
        if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
            names.push(h.trim().to_owned());
        }
        let pki = Pki::load_or_create(&opts.data_dir, &names)?;
        let tokens = Arc::new(TokenFile::load(opts.data_dir.join("tokens.csv")).await?);
        bind_unbound_tokens(&*store, &tokens).await?;
        let config = with_sealing_key(opts.config.clone(), &opts.data_dir)?;
        let (api, app) = app(store.clone(), tokens, config).await?;
        api.set_pki(pki.clone());
        let resumed = api.resume().await?;
        if resumed > 0 {
            tracing::info!(
                resumed,
                "resumed deleting terminating tenants and namespaces"
            );
        }
        let serve = app.clone();
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            addr.ip().to_string()
        };
        let server = if addr.is_ipv6() {
            format!("https://[{host}]:{}", addr.port())
        } else {
            format!("https://{host}:{}", addr.port())
        };
        let admin_kubeconfig = opts.data_dir.join("admin.kubeconfig");
        Kubeconfig::single(
            "centaurus-admin",
            &server,
            &pki.ca_cert,
            Kubeconfig::cert_user(&pki.admin_cert, &pki.admin_key),
        )
        .write(&admin_kubeconfig)
        .context("writing admin.kubeconfig")?;
        let (stop, stopped) = oneshot::channel::<()>();
        let tls = Arc::new(pki.server_config()?);
        let compact_every = opts.compact_every;
        let task = tokio::spawn(async move {
            let compactor = tokio::spawn(compact_periodically(store, compact_every));
            crate::tls::serve(listener, tls, serve, async {
                let _ = stopped.await;
            })
            .await;
            compactor.abort();
        });
        Ok(Self {
            addr,
            admin_kubeconfig,
            api,
            router: app,
            stop,
            task,
        })
    }

    /// A client of this region inside its process, as `identity` (see
    /// [`crate::local::InProcess`]).
    pub fn client(&self, identity: Identity) -> centaurus_client::Client {
        crate::local::InProcess::client(self.router.clone(), identity)
    }

    /// Stops accepting, lets open requests finish briefly, and returns.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Every period, compacts history up to the revision seen one period earlier, so watches
/// can resume across at least one period, as kube-apiserver's compactor allows.
async fn compact_periodically(store: Arc<dyn Store>, every: Duration) {
    let mut previous = None;
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if let Some(rev) = previous {
            match store.compact(rev).await {
                Ok(()) => tracing::debug!(revision = rev, "compacted"),
                Err(StoreError::Compacted { .. }) => {}
                Err(e) => tracing::warn!(error = %e, "compaction failed"),
            }
        }
        previous = store.revision().await.ok();
    }
}
