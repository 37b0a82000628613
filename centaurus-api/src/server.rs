//! The API server: generic Kubernetes verbs over every registered kind, in tenant spaces.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use centaurus_core::admission::{Admission, AdmitGuard};
use centaurus_core::model::{self, Registry, ResourceInfo, Scope, Tenant};
use centaurus_core::store::{KeyValue, Store, StoreError};
use centaurus_tenancy::{Attributes, Authorizer, Identity, SpaceResolver, StoredTokens, Verb};
use http::{Method, StatusCode, header};
use serde_json::{Value, json};

use crate::codec::{self, object_of};
use crate::error::{ApiError, ApiResult};
use crate::lifecycle::Lifecycle;
use crate::patch::{self, PatchKind};
use crate::query::Params;
use crate::route::{self, ResourcePath, TenantSel};

/// Limits and timings of the API server.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Largest accepted request body, in bytes (larger: 413).
    pub max_body: usize,
    /// How often a watch that allows bookmarks receives one.
    pub bookmark_interval: Duration,
    /// How many CPU-bound request jobs (decoding and patching bodies, encoding lists) run at
    /// once on the blocking pool, half of them at most for one tenant; more wait their turn
    /// there, never on the threads that serve requests.
    pub cpu_jobs: usize,
    /// The part of the region this server serves (its kinds).
    pub partition: crate::partition::Partition,
    /// The VNIs this server hands to new VPCs (a tenant partition's range; None: all).
    pub vnis: Option<(u32, u32)>,
    /// The region's key for Secrets at rest ([`centaurus_core::store::Sealed`]). None: a
    /// key of this process only, for servers whose store dies with them (tests, tools).
    pub sealing: Option<Arc<centaurus_core::store::SealingKey>>,
    /// The region's key for signing ServiceAccount tokens
    /// ([`centaurus_tenancy::accounts`]). None: a key of this process only.
    pub account_key: Option<Arc<centaurus_tenancy::accounts::AccountKey>>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body: 3 * 1024 * 1024,
            bookmark_interval: Duration::from_secs(30),
            cpu_jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            partition: Default::default(),
            vnis: None,
            sealing: None,
            account_key: None,
        }
    }
}

/// The parts an API server is made of.
pub struct ApiServer {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) authorizer: Arc<dyn Authorizer>,
    pub(crate) resolver: Arc<dyn SpaceResolver>,
    tokens: Option<Arc<StoredTokens>>,
    /// Issues and checks ServiceAccount tokens.
    pub(crate) accounts: Arc<centaurus_tenancy::accounts::AccountTokens>,
    pub(crate) config: ApiConfig,
    quota_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Caches of the namespaces' quotas and limit ranges, started at first use.
    pub(crate) limits: tokio::sync::OnceCell<crate::quota::Limits>,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) metrics: crate::metrics::Metrics,
    pub(crate) pod_streams: std::sync::OnceLock<Arc<dyn crate::pods::PodStreams>>,
    /// The OpenAPI documents of the registry, built on first use.
    openapi: std::sync::OnceLock<crate::openapi::Documents>,
    /// Node figures recently fetched for the metrics API.
    pub(crate) usage_cache: crate::resource_metrics::UsageCache,
    /// The region's CA, for node credentials ([`ApiServer::set_pki`]).
    pub(crate) pki: std::sync::OnceLock<Arc<crate::tls::Pki>>,
    admission: std::sync::RwLock<Vec<Arc<dyn Admission>>>,
    pub(crate) cpu: crate::cpu::CpuPool,
    /// The tenants, to refuse writes into one being moved ([`ApiServer::watch_tenants`]).
    tenants: std::sync::OnceLock<centaurus_core::controller::Cache<Tenant>>,
}

/// A resolved request target: the kind, the space and the object.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub info: Arc<ResourceInfo>,
    /// None: every tenant (or a cluster-scoped kind).
    pub tenant: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The caller (its tenant's share of the server's CPU work is what the request uses).
    pub caller: Identity,
    /// The node a node agent's identity speaks for (`system:node:NAME`).
    pub node: Option<String>,
}

impl Target {
    pub(crate) fn key(&self, name: &str) -> String {
        self.info.key(
            self.tenant.as_deref().unwrap_or(model::SYSTEM_TENANT),
            self.namespace.as_deref().unwrap_or(""),
            name,
        )
    }
    pub(crate) fn prefix(&self) -> String {
        self.info
            .prefix(self.tenant.as_deref(), self.namespace.as_deref())
    }
    pub(crate) fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}

pub(crate) fn json_response(code: StatusCode, v: &Value) -> Response {
    let mut res = (code, v.to_string()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    res
}

/// An object of `info`'s kind as clients are shown it ([`ResourceInfo::served`]), in the
/// form the client prefers: Kubernetes protobuf when its `Accept` puts that first and the
/// kind has a protobuf type, JSON otherwise.
pub(crate) fn object_response(
    info: &ResourceInfo,
    accept: Option<&str>,
    code: StatusCode,
    mut v: Value,
) -> Response {
    info.served(&mut v);
    let v = &v;
    if crate::protobuf::preferred(accept)
        && let Some(body) = crate::protobuf::encode(v)
    {
        let mut res = (code, body).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static(crate::protobuf::CONTENT_TYPE),
        );
        return res;
    }
    json_response(code, v)
}

fn header_str(req: &http::request::Parts, name: header::HeaderName) -> Option<&str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

impl ApiServer {
    /// An API server over `store` serving `registry`'s kinds; `tokens` (when given) issues
    /// tenant tokens through `POST /api/v1/tenants/{name}/token`.
    pub fn new(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        authorizer: Arc<dyn Authorizer>,
        resolver: Arc<dyn SpaceResolver>,
        tokens: Option<Arc<StoredTokens>>,
        config: ApiConfig,
    ) -> Arc<Self> {
        let key = config.account_key.clone().unwrap_or_else(|| {
            tracing::info!("ServiceAccount tokens are signed with a key of this process only");
            Arc::new(centaurus_tenancy::accounts::AccountKey::generate())
        });
        Arc::new(Self {
            accounts: Arc::new(centaurus_tenancy::accounts::AccountTokens::new(
                &key,
                store.clone(),
            )),
            lifecycle: Lifecycle::new(store.clone(), registry.clone()),
            store,
            registry,
            authorizer,
            resolver,
            tokens,
            quota_locks: Mutex::new(HashMap::new()),
            limits: Default::default(),
            metrics: Default::default(),
            pod_streams: Default::default(),
            usage_cache: Default::default(),
            openapi: Default::default(),
            pki: Default::default(),
            admission: Default::default(),
            cpu: crate::cpu::CpuPool::new(config.cpu_jobs),
            config,
            tenants: Default::default(),
        })
    }

    /// The authenticator of the ServiceAccount tokens this server issues.
    pub fn account_tokens(&self) -> Arc<centaurus_tenancy::accounts::AccountTokens> {
        self.accounts.clone()
    }

    /// Watches the store's tenants (returns once they are loaded), so that writes into the
    /// space of a tenant being moved between partitions get 503 with `Retry-After` (stock
    /// clients wait and retry) until the move is over.
    pub async fn watch_tenants(&self) {
        let informer = Arc::new(centaurus_core::controller::Informer::<Tenant>::from_store(
            self.store.clone(),
            "/registry/tenants/".to_owned(),
        ));
        let _ = self.tenants.set(informer.cache());
        tokio::spawn(informer.clone().run());
        informer.wait_synced().await;
    }

    /// Refuses a write into the space of a tenant that is being moved.
    fn writable(&self, target: &Target) -> ApiResult<()> {
        let tenant = match (target.info.plural, &target.tenant, &target.name) {
            ("tenants", _, Some(name)) => name.as_str(),
            (_, Some(t), _) if target.info.scope != Scope::Cluster => t.as_str(),
            _ => return Ok(()),
        };
        let Some(cache) = self.tenants.get() else {
            return Ok(());
        };
        let key = model::object_key("tenants", Scope::Cluster, "", "", tenant);
        match cache.get(&key) {
            Some(t) if model::tenant_frozen(&t) => Err(ApiError::moving(tenant)),
            _ => Ok(()),
        }
    }

    /// Resumes work a stop interrupted: the deletion of terminating tenants and namespaces
    /// (and moves the tenancy roles of earlier releases to RBAC). Returns how many deletions
    /// were resumed.
    pub async fn resume(&self) -> Result<usize, StoreError> {
        self.lifecycle.resume().await
    }

    /// Serves `pods/{name}/log` from `provider` (the node agents). Without one, log requests
    /// get 503. Returns false if a provider was already set.
    pub fn set_pod_streams(&self, provider: Arc<dyn crate::pods::PodStreams>) -> bool {
        self.pod_streams.set(provider).is_ok()
    }

    /// Runs `admitter` on every create and update of the kinds it handles.
    pub fn add_admission(&self, admitter: Arc<dyn Admission>) {
        self.admission
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(admitter);
    }

    /// A role or binding a user outside the `system` tenant writes may allow, or grant, only
    /// what that user may do itself ([`Authorizer::confirm_rbac`]).
    async fn confirm_rbac(&self, target: &Target, obj: &Value) -> ApiResult<()> {
        if target.info.group != centaurus_tenancy::rbac::GROUP || target.caller.is_system() {
            return Ok(());
        }
        let tenant = target.tenant.as_deref().unwrap_or(model::SYSTEM_TENANT);
        self.authorizer
            .confirm_rbac(&target.caller, tenant, target.info.plural, obj)
            .await
            .map_err(|d| ApiError::forbidden(d.0))
    }

    /// Runs the kind's admitters over `obj`; the guards are held until the write is done.
    async fn admit_against_store(
        &self,
        target: &Target,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> ApiResult<Vec<AdmitGuard>> {
        let plural = target.info.plural;
        let admitters: Vec<_> = self
            .admission
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|a| a.handles(target.info.group, plural))
            .cloned()
            .collect();
        let mut guards = Vec::new();
        for a in admitters {
            match a.admit(self.store.as_ref(), plural, obj, old).await {
                Ok(g) => guards.push(g),
                Err(errors) => {
                    let name = obj
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    return Err(ApiError::invalid(target.info.kind, name, &errors));
                }
            }
        }
        Ok(guards)
    }

    /// Runs CPU-bound work of a request by `target.caller` (of `size` bytes of input) off
    /// the serving threads ([`crate::cpu::CpuPool`]).
    pub(crate) async fn offload<T: Send + 'static>(
        &self,
        target: &Target,
        size: usize,
        work: impl FnOnce() -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        self.cpu.run(&target.caller.tenant, size, work).await
    }

    /// [`codec::decode_body`] off the serving threads.
    pub(crate) async fn decode(
        &self,
        target: &Target,
        content_type: Option<&str>,
        body: &Bytes,
    ) -> ApiResult<Value> {
        let (content_type, body) = (content_type.map(str::to_owned), body.clone());
        self.offload(target, body.len(), move || {
            codec::decode_body(content_type.as_deref(), &body)
        })
        .await
    }

    /// Request metrics in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        self.metrics.render()
    }

    /// The registry served.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The OpenAPI documents of the kinds served.
    pub fn openapi(&self) -> &crate::openapi::Documents {
        self.openapi
            .get_or_init(|| crate::openapi::Documents::of(&self.registry))
    }

    /// Handles one resource request (everything under `/api` and `/apis` that is not
    /// discovery). The caller's [`Identity`] must be in the request's extensions.
    pub async fn handle(State(api): State<Arc<Self>>, req: Request) -> Response {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let watch = req
            .uri()
            .query()
            .is_some_and(|q| q.contains("watch=true") || q.contains("watch=1"));
        let named = route::parse(&path).is_ok_and(|r| r.name.is_some());
        let verb = match (&method, named, watch) {
            (&Method::GET, true, _) => "GET",
            (&Method::GET, false, true) => "WATCH",
            (&Method::GET, false, false) => "LIST",
            (&Method::POST, ..) => "CREATE",
            (&Method::PUT, ..) => "UPDATE",
            (&Method::PATCH, ..) => "PATCH",
            (&Method::DELETE, ..) => "DELETE",
            _ => "OTHER",
        };
        let started = std::time::Instant::now();
        let res = match api.dispatch(req).await {
            Ok(res) => res,
            Err(e) => e.into_response(),
        };
        let elapsed = started.elapsed();
        api.metrics.observe(verb, res.status().as_u16(), elapsed);
        tracing::debug!(%method, %path, status = res.status().as_u16(), elapsed_us = elapsed.as_micros() as u64, "request");
        res
    }

    async fn dispatch(self: &Arc<Self>, req: Request) -> ApiResult<Response> {
        let (parts, body) = req.into_parts();
        let caller = parts
            .extensions
            .get::<Identity>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("no credentials"))?;
        if let Some(review) = crate::review::Review::of(parts.uri.path()) {
            if parts.method != Method::POST {
                return Err(ApiError::method_not_allowed(format!(
                    "{} is not supported on reviews: create one with POST",
                    parts.method
                )));
            }
            let body = axum::body::to_bytes(body, self.config.max_body)
                .await
                .map_err(|_| ApiError::too_large(self.config.max_body))?;
            let content_type = header_str(&parts, header::CONTENT_TYPE);
            return self.review(review, &caller, content_type, body).await;
        }
        let rp = route::parse(parts.uri.path())?;
        if rp.group == crate::resource_metrics::GROUP {
            if parts.method != Method::GET {
                return Err(ApiError::method_not_allowed(
                    "metrics are read with get and list",
                ));
            }
            return self.resource_metrics(&caller, &rp, parts.uri.query()).await;
        }
        let mut params = Params::parse(parts.uri.query())?;
        // Writers that do not name themselves are named by their client, as Kubernetes
        // names them (`kubectl/v1.37.1 (linux/amd64) …` manages as `kubectl`).
        if params.field_manager.is_none() {
            params.field_manager = header_str(&parts, header::USER_AGENT)
                .and_then(|ua| ua.split('/').next())
                .map(|m| m.chars().take(128).collect::<String>())
                .filter(|m| !m.is_empty());
        }
        let target = self.target(&caller, &rp)?;
        let stream = crate::pods::is_stream(target.info.plural, target.subresource.as_deref());
        let verb = match (&parts.method, target.name.is_some()) {
            // Sessions with a workload are authorized as creates, as Kubernetes does.
            (&Method::GET | &Method::POST, true) if stream => Verb::Create,
            (&Method::GET, true) => Verb::Get,
            (&Method::GET, false) if params.watch => Verb::Watch,
            (&Method::GET, false) => Verb::List,
            // Every namespace's objects are read there, never created.
            (&Method::POST, false)
                if target.info.scope == Scope::Namespaced && target.namespace.is_none() =>
            {
                let mut e = ApiError::method_not_allowed(format!(
                    "{} are created in a namespace: POST to .../namespaces/NAMESPACE/{}",
                    target.info.plural, target.info.plural
                ));
                e.allow = Some("GET");
                return Err(e);
            }
            (&Method::POST, false) => Verb::Create,
            (&Method::POST, true)
                if matches!(
                    target.subresource.as_deref(),
                    Some("token" | "action" | "binding" | "join")
                ) =>
            {
                Verb::Create
            }
            (&Method::PUT, true) => Verb::Update,
            (&Method::PATCH, true) => Verb::Patch,
            (&Method::DELETE, true) => Verb::Delete,
            (m, named) => {
                let mut e = ApiError::method_not_allowed(format!(
                    "{m} is not supported on {} {}",
                    if named {
                        "an object of"
                    } else {
                        "the collection"
                    },
                    target.info.plural
                ));
                e.allow = Some(if named {
                    "GET, PUT, PATCH, DELETE"
                } else {
                    "GET, POST"
                });
                return Err(e);
            }
        };
        let resource = match &target.subresource {
            Some(sub) => format!("{}/{sub}", target.info.plural),
            None => target.info.plural.to_owned(),
        };
        self.authorize(&caller, verb, &resource, &target, &params)
            .await?;
        if matches!(
            verb,
            Verb::Create | Verb::Update | Verb::Patch | Verb::Delete
        ) {
            self.writable(&target)?;
        }
        if stream && verb == Verb::Create {
            return self.pod_stream(&target, parts).await;
        }
        if let Some(sub) = &target.subresource {
            let ok = match sub.as_str() {
                "status" => target.info.has_status && verb != Verb::Delete,
                "token" => {
                    matches!(target.info.plural, "tenants" | "serviceaccounts")
                        && verb == Verb::Create
                }
                "join" => target.info.plural == "nodes" && verb == Verb::Create,
                "scale" => {
                    crate::scale::has_scale(target.info.plural)
                        && matches!(verb, Verb::Get | Verb::Update | Verb::Patch)
                }
                "log" => crate::pods::has_subresource(target.info.plural, sub) && verb == Verb::Get,
                "action" | "binding" => {
                    crate::pods::has_subresource(target.info.plural, sub) && verb == Verb::Create
                }
                _ => false,
            };
            if !ok {
                return Err(ApiError::no_route(parts.uri.path()));
            }
        }
        let accept = header_str(&parts, header::ACCEPT).map(str::to_owned);
        let content_type = header_str(&parts, header::CONTENT_TYPE).map(str::to_owned);
        let body = if matches!(
            verb,
            Verb::Create | Verb::Update | Verb::Patch | Verb::Delete
        ) {
            axum::body::to_bytes(body, self.config.max_body)
                .await
                .map_err(|_| ApiError::too_large(self.config.max_body))?
        } else {
            Bytes::new()
        };
        match verb {
            Verb::Get if target.subresource.as_deref() == Some("log") => {
                self.pod_log(&target, parts.uri.query()).await
            }
            Verb::Get if target.subresource.as_deref() == Some("scale") => Ok(object_response(
                &target.info,
                accept.as_deref(),
                StatusCode::OK,
                self.get_scale(&target).await?,
            )),
            Verb::Get => {
                let obj = self.get(&target, target.name()).await?;
                if codec::wants_table(accept.as_deref()) {
                    let rv = obj
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    return Ok(json_response(
                        StatusCode::OK,
                        &codec::table(&target.info, &[obj], &rv, None),
                    ));
                }
                Ok(object_response(
                    &target.info,
                    accept.as_deref(),
                    StatusCode::OK,
                    obj,
                ))
            }
            Verb::List => self.list(&target, &params, accept.as_deref()).await,
            Verb::Watch => {
                crate::watch::watch(self.clone(), target, params, accept.as_deref()).await
            }
            Verb::Create if target.subresource.as_deref() == Some("token") => {
                if target.info.plural == "serviceaccounts" {
                    self.account_token(&target, content_type.as_deref(), &body)
                        .await
                } else {
                    self.issue_token(&target, &body).await
                }
            }
            Verb::Create if target.subresource.as_deref() == Some("join") => {
                self.join_node(&target, &caller, &body).await
            }
            Verb::Create if target.subresource.as_deref() == Some("action") => {
                let action = self
                    .pod_action(&target, content_type.as_deref(), &body, &params)
                    .await?;
                Ok(json_response(StatusCode::CREATED, &action))
            }
            Verb::Create if target.subresource.as_deref() == Some("binding") => {
                let status = self
                    .bind_pod(&target, content_type.as_deref(), &body, &params)
                    .await?;
                Ok(json_response(StatusCode::CREATED, &status))
            }
            Verb::Create => {
                let obj = self.decode(&target, content_type.as_deref(), &body).await?;
                let created = self.create(&target, obj, &params).await?;
                Ok(object_response(
                    &target.info,
                    accept.as_deref(),
                    StatusCode::CREATED,
                    created,
                ))
            }
            Verb::Update if target.subresource.as_deref() == Some("scale") => {
                let scale = self.decode(&target, content_type.as_deref(), &body).await?;
                let updated = self.put_scale(&target, &scale, &params).await?;
                Ok(object_response(
                    &target.info,
                    accept.as_deref(),
                    StatusCode::OK,
                    updated,
                ))
            }
            Verb::Update => {
                let obj = self.decode(&target, content_type.as_deref(), &body).await?;
                let updated = self.update(&target, obj, &params).await?;
                Ok(object_response(
                    &target.info,
                    accept.as_deref(),
                    StatusCode::OK,
                    updated,
                ))
            }
            Verb::Patch if target.subresource.as_deref() == Some("scale") => {
                let kind = PatchKind::from_content_type(content_type.as_deref())?;
                let patched = self.patch_scale(&target, kind, &body, &params).await?;
                Ok(object_response(
                    &target.info,
                    accept.as_deref(),
                    StatusCode::OK,
                    patched,
                ))
            }
            Verb::Patch => {
                let kind = PatchKind::from_content_type(content_type.as_deref())?;
                let patched = self.patch(&target, kind, &body, &params).await?;
                Ok(object_response(
                    &target.info,
                    accept.as_deref(),
                    StatusCode::OK,
                    patched,
                ))
            }
            Verb::Delete => {
                let deleted = self.delete(&target, &body).await?;
                Ok(object_response(
                    &target.info,
                    accept.as_deref(),
                    StatusCode::OK,
                    deleted,
                ))
            }
        }
    }

    /// Asks the authorizer whether `caller` may `verb` `resource` where `target` is.
    pub(crate) async fn authorize(
        &self,
        caller: &Identity,
        verb: Verb,
        resource: &str,
        target: &Target,
        params: &Params,
    ) -> ApiResult<()> {
        self.authorizer
            .authorize(
                caller,
                &Attributes {
                    verb,
                    group: target.info.group,
                    resource,
                    scope: target.info.scope,
                    tenant: target.tenant.as_deref(),
                    namespace: target.namespace.as_deref(),
                    name: target.name.as_deref(),
                    fields: &params.field_selector.equalities(),
                },
            )
            .await
            .map_err(|d| ApiError::forbidden(d.0))
    }

    /// Resolves the kind and the space of a path for `caller`.
    pub(crate) fn target(&self, caller: &Identity, rp: &ResourcePath) -> ApiResult<Target> {
        let info = self
            .registry
            .by_plural(&rp.group, &rp.version, &rp.plural)
            .cloned()
            .ok_or_else(|| {
                ApiError::no_route(&format!(
                    "{} in {}",
                    rp.plural,
                    if rp.group.is_empty() {
                        rp.version.clone()
                    } else {
                        format!("{}/{}", rp.group, rp.version)
                    }
                ))
            })?;
        let tenant = match (&rp.tenant, info.scope) {
            (TenantSel::Caller, Scope::Cluster) => None,
            (TenantSel::Named(t), Scope::Cluster) => {
                return Err(ApiError::forbidden(format!(
                    "{} are cluster-scoped: they cannot live inside tenant {t:?}'s space",
                    info.plural
                )));
            }
            (TenantSel::All, Scope::Cluster) => None,
            (TenantSel::Caller, _) => Some(self.resolver.resolve(caller, None)),
            (TenantSel::Named(t), _) => Some(self.resolver.resolve(caller, Some(t))),
            (TenantSel::All, _) => {
                if rp.name.is_some() {
                    return Err(ApiError::bad_request(
                        "the tenant \"all\" addresses collections only; name a tenant to address one object",
                    ));
                }
                None
            }
        };
        if rp.namespace.is_some() && info.scope != Scope::Namespaced {
            return Err(ApiError::no_route(&format!(
                "{} in a namespace",
                info.plural
            )));
        }
        Ok(Target {
            info,
            tenant,
            namespace: rp.namespace.clone(),
            name: rp.name.clone(),
            subresource: rp.subresource.clone(),
            caller: caller.clone(),
            node: centaurus_tenancy::identity::node_name(caller).map(str::to_owned),
        })
    }

    /// A node agent may create only events about a pod bound to it, named as
    /// [`model::Event::dedup_name`] names them (so that its later updates can be checked by
    /// name alone).
    async fn check_node_event(
        &self,
        node: &str,
        target: &Target,
        obj: &Value,
        name: &str,
    ) -> ApiResult<()> {
        let about = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or("");
        let (kind, pod) = (about("/involvedObject/kind"), about("/involvedObject/name"));
        let refuse = |why: &str| {
            Err(ApiError::forbidden(format!(
                "node {node} may record events only about the pods bound to it: {why}"
            )))
        };
        if kind != "Pod" || model::Event::regarding_name(name) != Some(pod) {
            return refuse(&format!(
                "event {name:?} is about {kind} {pod:?}, or not named after it"
            ));
        }
        let key = model::object_key(
            "pods",
            Scope::Namespaced,
            target.tenant.as_deref().unwrap_or(model::SYSTEM_TENANT),
            target.namespace.as_deref().unwrap_or(""),
            pod,
        );
        let kv = self
            .store
            .get(&key)
            .await
            .map_err(|e| ApiError::from_store(e, "pods", pod))?;
        let bound = kv.is_some_and(|kv| {
            serde_json::from_slice::<Value>(&kv.value)
                .is_ok_and(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node))
        });
        if bound {
            Ok(())
        } else {
            refuse(&format!("pod {pod:?} is not bound to it"))
        }
    }

    pub(crate) async fn get_kv(&self, target: &Target, name: &str) -> ApiResult<KeyValue> {
        self.store
            .get(&target.key(name))
            .await
            .map_err(|e| ApiError::from_store(e, target.info.plural, name))?
            .ok_or_else(|| ApiError::not_found(target.info.plural, name))
    }

    pub(crate) async fn get(&self, target: &Target, name: &str) -> ApiResult<Value> {
        object_of(&self.get_kv(target, name).await?)
    }

    /// True when `obj` matches the request's label and field selectors.
    pub(crate) fn selected(obj: &Value, params: &Params) -> bool {
        if !params.label_selector.is_empty() {
            let labels = obj
                .pointer("/metadata/labels")
                .and_then(|l| serde_json::from_value(l.clone()).ok())
                .unwrap_or_default();
            if !params.label_selector.matches(&labels) {
                return false;
            }
        }
        params.field_selector.matches(obj)
    }

    /// Checks the manifest's type and coordinates against the path, fills them in, and
    /// decodes it as the kind (422 with every bad field; 400 for unknown fields in strict
    /// mode).
    fn admit_shape(&self, target: &Target, mut obj: Value, strict: bool) -> ApiResult<Value> {
        require_object(&obj)?;
        let info = &target.info;
        let api_version = info.api_version();
        // An update has made the object as it is kept, under a view's kind's apiVersion.
        let kept = info.kept_api_version();
        for (field, want) in [("apiVersion", api_version.as_str()), ("kind", info.kind)] {
            match obj.get(field).and_then(Value::as_str) {
                None | Some("") => obj[field] = json!(want),
                Some(got) if got == want || (field == "apiVersion" && got == kept) => {}
                Some(got) => {
                    return Err(ApiError::bad_request(format!(
                        "{field} {got:?} does not match the path, which serves {} {}",
                        api_version, info.kind
                    )));
                }
            }
        }
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        let meta = obj["metadata"]
            .as_object_mut()
            .expect("made an object above");
        let coords = [
            (
                "tenant",
                if info.scope == Scope::Cluster {
                    None
                } else {
                    target.tenant.as_deref()
                },
            ),
            (
                "namespace",
                if info.scope == Scope::Namespaced {
                    target.namespace.as_deref()
                } else {
                    None
                },
            ),
        ];
        for (field, want) in coords {
            let got = meta
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            match want {
                Some(want) if got.is_empty() => {
                    meta.insert(field.into(), json!(want));
                }
                Some(want) if got != want => {
                    return Err(ApiError::bad_request(format!(
                        "the {field} of the provided object ({got:?}) does not match the {field} of the request ({want:?})"
                    )));
                }
                None if !got.is_empty() => {
                    return Err(ApiError::invalid(
                        info.kind,
                        meta.get("name").and_then(Value::as_str).unwrap_or(""),
                        &[model::FieldError::new(
                            format!("metadata.{field}"),
                            format!("must be empty: {} has no {field}", info.plural),
                        )],
                    ));
                }
                _ => {}
            }
        }
        if info.scope == Scope::Namespaced && target.namespace.is_none() {
            let ns = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
            if ns.is_empty() {
                meta.insert("namespace".into(), json!("default"));
            }
        }
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let decoded = info.decode(&obj).map_err(|e| match e {
            model::DecodeError::Invalid(errs) => ApiError::invalid(info.kind, &name, &errs),
            model::DecodeError::Malformed(e) => ApiError::bad_request(format!(
                "{kind} in version {version:?} cannot be handled as a {kind}: {what}",
                kind = info.kind,
                version = info.version,
                what = if e.field.is_empty() {
                    e.message
                } else {
                    e.to_string()
                },
            )),
        })?;
        if strict && !decoded.unknown_fields.is_empty() {
            let list: Vec<String> = decoded
                .unknown_fields
                .iter()
                .map(|f| format!("unknown field {f:?}"))
                .collect();
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                list.join(", ")
            )));
        }
        Ok(decoded.value)
    }

    /// The tenant object of a space, checked to accept new content.
    async fn writable_space(&self, target: &Target, obj: &Value) -> ApiResult<Option<Tenant>> {
        if target.info.scope == Scope::Cluster {
            return Ok(None);
        }
        let tenant = obj
            .pointer("/metadata/tenant")
            .and_then(Value::as_str)
            .unwrap_or(model::SYSTEM_TENANT);
        let kv = self
            .store
            .get(&model::object_key(
                "tenants",
                Scope::Cluster,
                "",
                "",
                tenant,
            ))
            .await
            .map_err(|e| ApiError::from_store(e, "tenants", tenant))?
            .ok_or_else(|| ApiError::not_found("tenants", tenant))?;
        let t: Tenant = serde_json::from_slice(&kv.value)
            .map_err(|e| ApiError::internal(format!("tenant {tenant} is corrupt: {e}")))?;
        if t.metadata.deletion_timestamp.is_some() {
            return Err(ApiError::forbidden(format!(
                "unable to create new content in tenant {tenant} because it is being terminated"
            )));
        }
        if target.info.scope == Scope::Namespaced {
            let ns = obj
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("");
            let kv = self
                .store
                .get(&model::object_key(
                    "namespaces",
                    Scope::Tenant,
                    tenant,
                    "",
                    ns,
                ))
                .await
                .map_err(|e| ApiError::from_store(e, "namespaces", ns))?
                .ok_or_else(|| ApiError::not_found("namespaces", ns))?;
            let terminating = serde_json::from_slice::<Value>(&kv.value)
                .ok()
                .is_some_and(|v| v.pointer("/metadata/deletionTimestamp").is_some());
            if terminating {
                return Err(ApiError::forbidden(format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                )));
            }
        }
        Ok(Some(t))
    }

    pub(crate) async fn create(
        &self,
        target: &Target,
        obj: Value,
        params: &Params,
    ) -> ApiResult<Value> {
        if target.tenant.is_none() && target.info.scope != Scope::Cluster {
            return Err(ApiError::bad_request(
                "create needs a tenant; \"all\" addresses every tenant",
            ));
        }
        let mut obj = obj;
        let meta = obj.get_mut("metadata").and_then(Value::as_object_mut);
        if let Some(meta) = meta {
            let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
            let generate = meta
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if name.is_empty() && !generate.is_empty() {
                let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..5].to_owned();
                let generated = format!("{generate}{suffix}");
                meta.insert("name".into(), json!(generated));
            }
            crate::lifecycle::stamp(meta);
            for server_owned in [
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                meta.remove(server_owned);
            }
        }
        if target.info.has_status
            && target.info.plural != "tenants"
            && target.info.plural != "namespaces"
        {
            // Status is written by controllers through the status subresource.
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
        }
        let mut obj = self.admit_shape(target, obj, params.strict)?;
        if matches!(target.info.plural, "tenants" | "namespaces") {
            obj["status"] = json!({"phase": "Active"});
        }
        if !params.applying {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("managedFields");
            }
            if let Some(manager) = &params.field_manager {
                crate::apply::record_update(None, &mut obj, manager, &target.info.api_version());
            }
        }
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if name.is_empty() {
            return Err(ApiError::invalid(
                target.info.kind,
                "",
                &[model::FieldError::new(
                    "metadata.name",
                    "name or generateName is required",
                )],
            ));
        }
        if let Some(node) = &target.node
            && matches!(target.info.plural, "nodes" | "leases")
            && name != *node
        {
            return Err(ApiError::forbidden(format!(
                "node {node} may create only its own {}, not {name:?}",
                target.info.plural
            )));
        }
        if let Some(node) = &target.node
            && target.info.plural == "events"
        {
            self.check_node_event(node, target, &obj, &name).await?;
        }
        let tenant = self.writable_space(target, &obj).await?;
        if target.info.plural == "actions" {
            self.default_action_node(&mut obj).await?;
        }
        self.confirm_rbac(target, &obj).await?;
        self.limit_pod(target, &mut obj).await?;
        let _admitted = self.admit_against_store(target, &mut obj, None).await?;
        // The object's own coordinates, which admit_shape checked against the path.
        let str_at = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or("");
        let key = target.info.key(
            match str_at("/metadata/tenant") {
                "" => model::SYSTEM_TENANT,
                t => t,
            },
            str_at("/metadata/namespace"),
            &name,
        );
        let bytes =
            Bytes::from(serde_json::to_vec(&obj).map_err(|e| ApiError::internal(e.to_string()))?);
        if params.dry_run {
            return Ok(obj);
        }
        let quota = tenant
            .as_ref()
            .filter(|t| target.info.plural == "pods" && !t.spec.quota.is_empty());
        let kv = match quota {
            Some(t) => {
                let lock = self
                    .quota_locks
                    .lock()
                    .expect("quota lock table")
                    .entry(t.metadata.name.clone())
                    .or_default()
                    .clone();
                // One create at a time per tenant here spares the ledger's compare-and-swap
                // the conflicts; other API servers' creates are what it guards against.
                let _guard = lock.lock().await;
                self.charge_tenant(target, &obj).await?;
                self.charge_quotas(target, &obj).await?;
                self.store.create(&key, bytes).await
            }
            None => {
                self.charge_quotas(target, &obj).await?;
                let created = self.store.create(&key, bytes).await;
                if created.is_err() {
                    // Charged for nothing (the name is taken): give the counts back.
                    self.refund_quotas(target, &obj).await;
                }
                created
            }
        }
        .map_err(|e| ApiError::from_store(e, target.info.plural, &name))?;
        if target.info.plural == "tenants" {
            self.lifecycle.tenant_created(&name).await;
        }
        self.await_cached(target.info.plural, &key).await;
        object_of(&kv)
    }

    /// An action on a pod names the pod's node (`spec.nodeName`), so that node's agent, which
    /// watches only what names it, sees it.
    async fn default_action_node(&self, obj: &mut Value) -> ApiResult<()> {
        let str_at = |p: &str| {
            obj.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let (pod, node) = (str_at("/spec/podAction/podName"), str_at("/spec/nodeName"));
        if pod.is_empty() || !node.is_empty() {
            return Ok(());
        }
        let tenant = match str_at("/metadata/tenant") {
            t if t.is_empty() => model::SYSTEM_TENANT.to_owned(),
            t => t,
        };
        let key = model::object_key(
            "pods",
            Scope::Namespaced,
            &tenant,
            &str_at("/metadata/namespace"),
            &pod,
        );
        if let Some(kv) = self
            .store
            .get(&key)
            .await
            .map_err(|e| ApiError::from_store(e, "pods", &pod))?
        {
            let bound = serde_json::from_slice::<Value>(&kv.value)
                .ok()
                .and_then(|p| p.pointer("/spec/nodeName").cloned());
            if let Some(n) = bound {
                obj["spec"]["nodeName"] = n;
            }
        }
        Ok(())
    }

    /// Replaces an object (or its status), guarded by resourceVersion.
    pub(crate) async fn update(
        &self,
        target: &Target,
        obj: Value,
        params: &Params,
    ) -> ApiResult<Value> {
        require_object(&obj)?;
        let obj = target.info.unserved(obj);
        let name = target.name().to_owned();
        let current_kv = self.get_kv(target, &name).await?;
        let current = object_of(&current_kv)?;
        if let Some(body_name) = obj.pointer("/metadata/name").and_then(Value::as_str)
            && body_name != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let expected = match obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
        {
            Some(rv) if !rv.is_empty() => {
                let rv: i64 = rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("resourceVersion {rv:?} is not a valid revision"))
                })?;
                if rv != current_kv.mod_revision {
                    return Err(ApiError::conflict(
                        target.info.plural,
                        &name,
                        "the object has been modified; please apply your changes to the latest version and try again",
                    ));
                }
                rv
            }
            _ => current_kv.mod_revision,
        };
        let status_only = target.subresource.as_deref() == Some("status");
        let mut next = if status_only {
            let mut next = current.clone();
            next["status"] = obj.get("status").cloned().unwrap_or(Value::Null);
            next
        } else {
            let mut next = obj;
            if target.info.has_status {
                match current.get("status") {
                    Some(s) => next["status"] = s.clone(),
                    None => {
                        if let Some(o) = next.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            next
        };
        // Server-owned metadata survives every update.
        if !next.get("metadata").is_some_and(Value::is_object) {
            next["metadata"] = json!({});
        }
        for field in [
            "uid",
            "hashKey",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "tenant",
            "namespace",
            "generation",
        ] {
            match current["metadata"].get(field) {
                Some(v) => next["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = next["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        if let Some(m) = next["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        if !status_only && next.get("spec") != current.get("spec") {
            let g = current
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            next["metadata"]["generation"] = json!(g + 1);
        }
        let mut next = self.admit_shape(target, next, params.strict)?;
        if !params.applying {
            // Who manages which field: kept, and moved to this writer where it changed
            // them (when it names itself).
            match current.pointer("/metadata/managedFields") {
                Some(m) => next["metadata"]["managedFields"] = m.clone(),
                None => drop(
                    next["metadata"]
                        .as_object_mut()
                        .map(|m| m.remove("managedFields")),
                ),
            }
            if let (Some(manager), false) = (&params.field_manager, status_only) {
                crate::apply::record_update(
                    Some(&current),
                    &mut next,
                    manager,
                    &target.info.api_version(),
                );
            }
        }
        if !status_only {
            target
                .info
                .validate_update(&next, &current)
                .map_err(|errors| ApiError::invalid(target.info.kind, &name, &errors))?;
        }
        let _admitted = if status_only {
            Vec::new()
        } else {
            self.confirm_rbac(target, &next).await?;
            self.admit_against_store(target, &mut next, Some(&current))
                .await?
        };
        if params.dry_run {
            return Ok(next);
        }
        let finalized = next.pointer("/metadata/deletionTimestamp").is_some()
            && next
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_none_or(|f| f.is_empty())
            && !matches!(target.info.plural, "tenants" | "namespaces");
        let key = target.key(&name);
        if finalized {
            let kv = self
                .store
                .delete(&key, Some(expected))
                .await
                .map_err(|e| ApiError::from_store(e, target.info.plural, &name))?;
            self.refund_quotas(target, &next).await;
            let mut gone = next;
            gone["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
            return Ok(gone);
        }
        let bytes =
            Bytes::from(serde_json::to_vec(&next).map_err(|e| ApiError::internal(e.to_string()))?);
        let kv = self
            .store
            .update(&key, bytes, expected)
            .await
            .map_err(|e| ApiError::from_store(e, target.info.plural, &name))?;
        object_of(&kv)
    }

    async fn patch(
        &self,
        target: &Target,
        kind: PatchKind,
        body: &Bytes,
        params: &Params,
    ) -> ApiResult<Value> {
        if kind == PatchKind::Apply {
            return self.server_side_apply(target, body, params).await;
        }
        // A patch applies to the object as the client sees it (a view's names included).
        let read = || async {
            let mut doc = self.get(target, target.name()).await?;
            target.info.served(&mut doc);
            Ok(doc)
        };
        self.patch_with(target, kind, body, read, |doc, _| {
            self.update(target, doc, params)
        })
        .await
    }

    /// Reads a document, applies the patch and writes it; retries on a concurrent write
    /// when the patch sets no `resourceVersion` precondition, as Kubernetes does. `write`
    /// learns whether the patch set one.
    /// `PATCH` with `application/apply-patch+yaml`: merges the manager's configuration
    /// into the object (or creates it), refusing conflicts unless forced.
    async fn server_side_apply(
        &self,
        target: &Target,
        body: &Bytes,
        params: &Params,
    ) -> ApiResult<Value> {
        let manager = params.field_manager.clone().ok_or_else(|| {
            ApiError::bad_request(
                "PATCH with application/apply-patch+yaml needs a fieldManager query parameter",
            )
        })?;
        if target.subresource.is_some() {
            return Err(ApiError::method_not_allowed(
                "server-side apply is served on objects, not their subresources",
            ));
        }
        let applied = self.decode(target, Some("application/yaml"), body).await?;
        let applied = target.info.unserved(applied);
        let name = target.name().to_owned();
        match applied.pointer("/metadata/name").and_then(Value::as_str) {
            Some(n) if n == name => {}
            _ => {
                return Err(ApiError::bad_request(format!(
                    "an applied configuration names its object: metadata.name must be {name:?}"
                )));
            }
        }
        for field in ["apiVersion", "kind"] {
            if applied
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(ApiError::bad_request(format!(
                    "an applied configuration must set {field}"
                )));
            }
        }
        let applying = Params {
            applying: true,
            ..params.clone()
        };
        for _ in 0..5 {
            let live = match self.get_kv(target, &name).await {
                Ok(kv) => Some(object_of(&kv)?),
                Err(e) if e.code == 404 => None,
                Err(e) => return Err(e),
            };
            let mut merged = crate::apply::apply(
                live.as_ref(),
                &applied,
                &manager,
                params.force,
                &target.info.api_version(),
            )?;
            let written = match &live {
                Some(l) => {
                    merged["metadata"]["resourceVersion"] =
                        l["metadata"]["resourceVersion"].clone();
                    self.update(target, merged, &applying).await
                }
                None => self.create(target, merged, &applying).await,
            };
            match written {
                // Another write won the race (or the object came or went): apply again.
                Err(e)
                    if e.code == 409 && e.reason != "Invalid" && e.message.contains("modified")
                        || e.reason == "AlreadyExists" => {}
                other => return other,
            }
        }
        Err(ApiError::conflict(
            target.info.plural,
            &name,
            "too many concurrent writes; try again",
        ))
    }

    pub(crate) async fn patch_with<R, W>(
        &self,
        target: &Target,
        kind: PatchKind,
        body: &Bytes,
        read: impl Fn() -> R,
        write: impl Fn(Value, bool) -> W,
    ) -> ApiResult<Value>
    where
        R: Future<Output = ApiResult<Value>>,
        W: Future<Output = ApiResult<Value>>,
    {
        for _ in 0..5 {
            let mut doc = read().await?;
            let before = doc.pointer("/metadata/resourceVersion").cloned();
            let body = body.clone();
            doc = self
                .offload(target, body.len(), move || {
                    patch::apply(kind, &mut doc, &body).map(|()| doc)
                })
                .await?;
            require_object(&doc)?;
            let precondition = doc.pointer("/metadata/resourceVersion").cloned() != before;
            match write(doc, precondition).await {
                Err(e) if e.reason == "Conflict" && !precondition => continue,
                other => return other,
            }
        }
        Err(ApiError::conflict(
            target.info.plural,
            target.name(),
            "too many concurrent writes; try again",
        ))
    }

    /// Deletes (or marks for deletion) the target. Without a `resourceVersion` precondition
    /// a write that lands between the read and the delete (a controller's, the
    /// scheduler's) is not the caller's conflict: the delete reads again, as Kubernetes'.
    async fn delete(&self, target: &Target, body: &[u8]) -> ApiResult<Value> {
        for _ in 0..16 {
            if let Some(done) = self.delete_once(target, body).await? {
                return Ok(done);
            }
        }
        Err(ApiError::conflict(
            target.info.plural,
            target.name(),
            "too many concurrent writes; try again",
        ))
    }

    /// One attempt of [`Self::delete`]: `None` when another write won the race and the
    /// caller set no `resourceVersion` precondition.
    async fn delete_once(&self, target: &Target, body: &[u8]) -> ApiResult<Option<Value>> {
        let name = target.name().to_owned();
        let kv = self.get_kv(target, &name).await?;
        let mut pinned = false;
        let mut obj = object_of(&kv)?;
        if !body.is_empty() {
            // JSON, or protobuf from typed Go clients.
            let opts: Value = if body.starts_with(crate::protobuf::MAGIC) {
                crate::protobuf::decode(body)?
            } else {
                serde_json::from_slice(body).map_err(|e| {
                    ApiError::bad_request(format!("unable to decode DeleteOptions: {e}"))
                })?
            };
            let rv = opts
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str);
            pinned = rv.is_some();
            if let Some(rv) = rv
                && rv != kv.mod_revision.to_string()
            {
                return Err(ApiError::conflict(
                    target.info.plural,
                    &name,
                    "the resourceVersion precondition failed",
                ));
            }
            if let Some(uid) = opts.pointer("/preconditions/uid").and_then(Value::as_str)
                && Some(uid) != obj.pointer("/metadata/uid").and_then(Value::as_str)
            {
                return Err(ApiError::conflict(
                    target.info.plural,
                    &name,
                    "the UID precondition failed",
                ));
            }
        }
        let is_space = matches!(target.info.plural, "tenants" | "namespaces");
        if is_space && name == model::SYSTEM_TENANT && target.info.plural == "tenants" {
            return Err(ApiError::forbidden("the system tenant cannot be deleted"));
        }
        let has_finalizers = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if is_space || has_finalizers {
            if obj.pointer("/metadata/deletionTimestamp").is_none() {
                obj["metadata"]["deletionTimestamp"] = json!(model::now());
                if is_space {
                    obj["status"]["phase"] = json!("Terminating");
                }
                if let Some(m) = obj["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                let bytes = Bytes::from(
                    serde_json::to_vec(&obj).map_err(|e| ApiError::internal(e.to_string()))?,
                );
                let kv = match self.store.update(&kv.key, bytes, kv.mod_revision).await {
                    Err(StoreError::Conflict { .. }) if !pinned => return Ok(None),
                    other => {
                        other.map_err(|e| ApiError::from_store(e, target.info.plural, &name))?
                    }
                };
                obj = object_of(&kv)?;
            }
            if is_space {
                if target.info.plural == "tenants"
                    && let Some(tokens) = &self.tokens
                {
                    // The tenant's credentials die with it (TenantBound refuses them too,
                    // tokens issued elsewhere and certificates included).
                    tokens
                        .revoke_tenant(&name)
                        .await
                        .map_err(|e| ApiError::internal(e.to_string()))?;
                }
                self.lifecycle
                    .delete_space(target.info.plural, &kv.key, &obj);
            }
            return Ok(Some(obj));
        }
        let gone = match self.store.delete(&kv.key, Some(kv.mod_revision)).await {
            Err(StoreError::Conflict { .. }) if !pinned => return Ok(None),
            other => other.map_err(|e| ApiError::from_store(e, target.info.plural, &name))?,
        };
        self.refund_quotas(target, &obj).await;
        obj["metadata"]["resourceVersion"] = json!(gone.mod_revision.to_string());
        Ok(Some(obj))
    }

    /// `POST /api/v1/tenants/{name}/token` with `{"user": "U"}`: issues a bearer token for
    /// an administrator of that tenant. For the `system` tenant, `{"bootstrap": true,
    /// "ttlSeconds": N}` issues a bootstrap token instead (`system:bootstrappers`: it may
    /// only join nodes), valid for N seconds (default a day, at most a week).
    async fn issue_token(&self, target: &Target, body: &[u8]) -> ApiResult<Response> {
        const DAY: u64 = 24 * 3600;
        let tokens = self
            .tokens
            .as_ref()
            .ok_or_else(|| ApiError::method_not_allowed("this server does not issue tokens"))?;
        let tenant = target.name().to_owned();
        let kv = self.get_kv(target, &tenant).await?;
        let object = object_of(&kv)?;
        if object.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::forbidden(format!(
                "tenant {tenant:?} is being deleted: it gets no new tokens"
            )));
        }
        let tenant_uid = object
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let req: Value = if body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("unable to decode token request: {e}"))
            })?
        };
        let invalid = |field: &str, message: &str| {
            ApiError::invalid(
                "TokenRequest",
                &tenant,
                &[model::FieldError::new(field, message)],
            )
        };
        let (identity, expires) = if req.get("bootstrap").and_then(Value::as_bool) == Some(true) {
            if tenant != model::SYSTEM_TENANT {
                return Err(invalid(
                    "bootstrap",
                    "bootstrap tokens belong to the system tenant",
                ));
            }
            let ttl = match req.get("ttlSeconds") {
                None => DAY,
                Some(v) => v
                    .as_u64()
                    .filter(|t| (1..=7 * DAY).contains(t))
                    .ok_or_else(|| invalid("ttlSeconds", "must be 1 to 604800 seconds"))?,
            };
            let id = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
            (
                centaurus_tenancy::identity::bootstrap(&id),
                Some(model::now() + std::time::Duration::from_secs(ttl)),
            )
        } else {
            let user = req.get("user").and_then(Value::as_str).unwrap_or("admin");
            if model::validation::dns_subdomain(user).is_err() {
                return Err(invalid("user", "must be a DNS-1123 subdomain"));
            }
            let identity = Identity {
                user: user.to_owned(),
                tenant: tenant.clone(),
                groups: vec![centaurus_tenancy::TENANT_ADMINS_GROUP.into()],
                tenant_uid,
            };
            (identity, None)
        };
        let user = identity.user.clone();
        let token = tokens
            .issue_until(identity, expires)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let mut answer = json!({"kind": "TenantToken", "apiVersion": "v1", "tenant": tenant, "user": user, "token": token});
        if let Some(t) = expires {
            answer["expires"] = json!(t);
        }
        Ok(json_response(StatusCode::CREATED, &answer))
    }
}

/// Refuses a document that is not a JSON object (a body of `1`, or a JSON patch that
/// replaced the whole document): every kind is an object.
fn require_object(doc: &Value) -> ApiResult<()> {
    if doc.is_object() {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "the object must be a JSON object, not {}",
        match doc {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) | Value::Object(_) => "an array",
        }
    )))
}
