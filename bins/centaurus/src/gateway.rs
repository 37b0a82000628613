//! `centaurus gateway`: the front door of a partitioned region, its one HTTPS endpoint.
//!
//! It authenticates each caller itself (a client certificate of the region CA; a bearer
//! token by asking the tenant partitions' `SelfSubjectReview` with it), then forwards the
//! request to the partition that holds what it asks for, as the front door's own identity
//! naming the caller in the `X-Remote-*` headers, which API servers believe from the front
//! door only ([`centaurus_tenancy::FrontDoor`]); each partition authorizes as usual.
//!
//! Routing: a tenant's requests (short paths, its own tenant paths, watches included) go
//! to the tenant partition that holds the tenant, known from the Tenant objects the
//! partitions hold (watched here); the hosts' kinds (Nodes, NodeLedgers, Droplets) to the
//! resource partition that has the object, lists of them merged over every resource
//! partition; a system user's `tenants/all` lists and the list of tenants merged over every
//! tenant partition; a tenant created here goes to the tenant partition with the fewest.
//! Discovery merges the first tenant and resource partitions' documents.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use centaurus_client::Client;
use centaurus_client::kubeconfig::{Kubeconfig, User};
use centaurus_core::controller::{Cache, Informer};
use centaurus_core::model::{self, SYSTEM_TENANT, Tenant};
use centaurus_tenancy::authn::{REMOTE_GROUP, REMOTE_TENANT, REMOTE_TENANT_UID, REMOTE_USER};
use centaurus_tenancy::{Authenticator, ClientCertAuthenticator, Credentials, Identity};
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// Largest request body forwarded (the API servers' own limit is 3 MiB).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// How long a bearer token's identity is believed before it is asked again.
const TOKEN_TTL: Duration = Duration::from_secs(10);

/// Token identities kept at most (expired ones are dropped when the cache is full).
const MAX_TOKENS: usize = 100_000;

/// How often a watch checks whether its tenant moved.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// How long a watch waits for its moved tenant to arrive in its new partition.
const FOLLOW_WAIT: Duration = Duration::from_secs(30);

/// A watch's query, carrying on from `revision` of another partition (nothing sent again).
fn resumed_query(query: &str, revision: &str) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if !matches!(
            &*k,
            "resourceVersion" | "resourceVersionMatch" | "sendInitialEvents"
        ) {
            out.append_pair(&k, &v);
        }
    }
    out.append_pair("resourceVersion", revision);
    out.finish()
}

/// The kinds resource partitions hold.
const HOST_PLURALS: [&str; 3] = ["nodes", "nodeledgers", "droplets"];

/// One partition as the front door reaches it.
struct Partition {
    name: String,
    /// As the front door (`DIR/components/gateway.kubeconfig` of the partition).
    client: Client,
    /// The partition's servers and CA, for asking it about a bearer token.
    kubeconfig: Kubeconfig,
    /// As the front door, for upgraded connections (exec, attach, port-forward).
    upgrades: centaurus_client::transport::HttpsTransport,
}

/// The front door's state.
pub struct Gateway {
    tenants: Vec<Partition>,
    resources: Vec<Partition>,
    /// The Tenant objects of each tenant partition.
    held: Vec<Cache<Tenant>>,
    /// Token digest → the caller it authenticated, and until when that is believed.
    tokens: RwLock<HashMap<String, (Identity, Instant)>>,
}

fn partitions(list: &[(String, PathBuf)]) -> anyhow::Result<Vec<Partition>> {
    list.iter()
        .map(|(name, path)| {
            let kubeconfig =
                Kubeconfig::load(path).with_context(|| format!("reading {}", path.display()))?;
            Ok(Partition {
                name: name.clone(),
                client: Client::new(kubeconfig.connection()?)?,
                upgrades: centaurus_client::transport::HttpsTransport::new(
                    &kubeconfig.connection()?,
                )?,
                kubeconfig,
            })
        })
        .collect()
}

/// A `NAME=KUBECONFIG` argument.
pub fn named_path(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=KUBECONFIG, not {s:?}"))?;
    Ok((name.to_owned(), path.into()))
}

/// A request the front door answers itself, with a Kubernetes `Status`.
struct Refused {
    code: StatusCode,
    reason: &'static str,
    message: String,
}

/// The answer for a tenant no partition holds.
fn no_tenant(tenant: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("tenants \"{tenant}\" not found"),
    )
    .into_response()
}

/// A partition the front door cannot reach.
fn unreachable_partition(to: &Partition, e: &dyn std::fmt::Display) -> Refused {
    status(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        format!("{} cannot be reached: {e}", to.name),
    )
}

fn status(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        code,
        reason,
        message: message.into(),
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code.as_u16(),
        });
        (
            self.code,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

/// Where a request goes.
enum Route {
    /// One tenant partition (by index).
    Tenant(usize),
    /// The tenant partition that holds this tenant.
    Home(String),
    /// Every tenant partition, lists merged.
    AllTenants,
    /// The resource partition that has the named object, or every one (lists merged).
    Hosts { named: bool },
    /// Discovery: the first tenant and resource partitions, documents merged.
    Discovery,
    /// A new tenant: the tenant partition with the fewest.
    NewTenant,
}

impl Gateway {
    /// Starts watching the tenant partitions' Tenants; serves after they are loaded.
    pub async fn new(
        tenants: &[(String, PathBuf)],
        resources: &[(String, PathBuf)],
    ) -> anyhow::Result<Arc<Self>> {
        anyhow::ensure!(
            !tenants.is_empty() && !resources.is_empty(),
            "the front door needs at least one tenant and one resource partition"
        );
        let tenants = partitions(tenants)?;
        let resources = partitions(resources)?;
        let mut held = Vec::new();
        for p in &tenants {
            let informer = Arc::new(Informer::new(
                p.client.api::<Tenant>().source("/registry/tenants/"),
            ));
            held.push(informer.cache());
            tokio::spawn(informer.clone().run());
            tokio::time::timeout(Duration::from_secs(30), informer.wait_synced())
                .await
                .with_context(|| format!("listing the tenants of {}", p.name))?;
        }
        Ok(Arc::new(Self {
            tenants,
            resources,
            held,
            tokens: RwLock::default(),
        }))
    }

    /// The tenant partition that holds `tenant`: from the watched Tenants, or, for one
    /// created a moment ago, by asking each partition. A partition holds a tenant that is
    /// moving away from it until the copy is complete, and one that arrives after.
    async fn home(&self, tenant: &str) -> Option<usize> {
        let key = format!("/registry/tenants/{tenant}");
        let served = |t: Option<Tenant>| t.is_some_and(|t| model::tenant_served(&t));
        if let Some(i) = self.held.iter().position(|c| served(c.get(&key))) {
            return Some(i);
        }
        for (i, p) in self.tenants.iter().enumerate() {
            if let Ok(t) = p.client.api::<Tenant>().get(&key).await
                && served(t)
            {
                return Some(i);
            }
        }
        None
    }

    /// Resolves once partition `at` no longer serves `tenant` (it moved away).
    async fn moved_away(&self, at: usize, tenant: &str) {
        let key = format!("/registry/tenants/{tenant}");
        while self.held[at]
            .get(&key)
            .is_some_and(|t| model::tenant_served(&t))
        {
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }

    /// Where `tenant` arrived after a move, and the revision there its watches carry on
    /// from; None if it does not show within [`FOLLOW_WAIT`].
    async fn arrival(&self, tenant: &str) -> Option<(usize, String)> {
        let key = format!("/registry/tenants/{tenant}");
        let deadline = Instant::now() + FOLLOW_WAIT;
        while Instant::now() < deadline {
            for (i, c) in self.held.iter().enumerate() {
                let Some(t) = c.get(&key).filter(model::tenant_served) else {
                    continue;
                };
                if let Some(rev) = t.metadata.annotations.get(model::ANNOTATION_ARRIVED_AT) {
                    return Some((i, rev.clone()));
                }
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
        None
    }

    /// Streams the answer `first` of `tenant`'s watch `head` from partition `at`, and when
    /// the tenant moves, carries on with the same watch in its new partition from the
    /// revision its copy was complete at: the client's stream never sees the move.
    fn follow(
        self: Arc<Self>,
        tenant: String,
        mut at: usize,
        caller: Identity,
        head: http::request::Parts,
        first: http::Response<centaurus_client::transport::Body>,
    ) -> Response {
        let (parts, mut body) = first.into_parts();
        if !parts.status.is_success() {
            return Response::from_parts(parts, Body::new(body));
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
        tokio::spawn(async move {
            loop {
                let away = self.moved_away(at, &tenant);
                tokio::pin!(away);
                loop {
                    tokio::select! {
                        frame = body.frame() => match frame {
                            Some(Ok(f)) => {
                                if let Ok(data) = f.into_data()
                                    && tx.send(Ok(data)).await.is_err()
                                {
                                    return;
                                }
                            }
                            // The watch ended: the client watches again.
                            _ => return,
                        },
                        () = &mut away => break,
                        () = tx.closed() => return,
                    }
                }
                let Some((next, revision)) = self.arrival(&tenant).await else {
                    return;
                };
                let mut again = head.clone();
                let query = resumed_query(head.uri.query().unwrap_or(""), &revision);
                let Ok(uri) = format!("{}?{query}", head.uri.path()).parse() else {
                    return;
                };
                again.uri = uri;
                match self
                    .forward(&self.tenants[next], Some(&caller), &again, Bytes::new())
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        tracing::info!(
                            tenant,
                            from = self.tenants[at].name,
                            to = self.tenants[next].name,
                            "a watch followed its tenant"
                        );
                        (at, body) = (next, r.into_body());
                    }
                    _ => return,
                }
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Response::from_parts(parts, Body::from_stream(stream))
    }

    /// The caller, authenticated here.
    async fn caller(&self, creds: &Credentials) -> Result<Identity, Refused> {
        let unauthorized = |m: String| status(StatusCode::UNAUTHORIZED, "Unauthorized", m);
        if creds.client_cert.is_some() {
            return match ClientCertAuthenticator.authenticate(creds).await {
                Ok(Some(id)) => Ok(id),
                Ok(None) => Err(unauthorized("no credentials".into())),
                Err(e) => Err(unauthorized(format!("authentication failed: {e}"))),
            };
        }
        let Some(token) = &creds.bearer_token else {
            return Err(unauthorized(
                "no credentials: a bearer token or a client certificate is required".into(),
            ));
        };
        let digest = centaurus_tenancy::tokens::sha256_hex(token.as_bytes());
        if let Some((id, until)) = self
            .tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&digest)
            && Instant::now() < *until
        {
            return Ok(id.clone());
        }
        // The partition that issued the token knows it.
        for p in &self.tenants {
            let mut config = p.kubeconfig.clone();
            for u in &mut config.users {
                u.user = User {
                    token: token.clone(),
                    ..Default::default()
                };
            }
            let Ok(client) = config
                .connection()
                .map_err(drop)
                .and_then(|c| Client::new(c).map_err(drop))
            else {
                continue;
            };
            let review =
                json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
            let Ok(reply) = client
                .send_json(
                    Method::POST,
                    "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                    &review,
                )
                .await
            else {
                continue;
            };
            let Ok(answer) = reply.ok() else { continue };
            let info = &answer["status"]["userInfo"];
            let first = |k: &str| info["extra"][k][0].as_str().map(str::to_owned);
            let id = Identity {
                user: info["username"].as_str().unwrap_or_default().to_owned(),
                tenant: first("centaurus.io/tenant").unwrap_or_else(|| SYSTEM_TENANT.into()),
                groups: info["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .filter(|g| *g != "system:authenticated")
                    .map(str::to_owned)
                    .collect(),
                tenant_uid: first("centaurus.io/tenant-uid"),
            };
            if id.user.is_empty() {
                continue;
            }
            let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
            if tokens.len() >= MAX_TOKENS {
                let now = Instant::now();
                tokens.retain(|_, (_, until)| *until > now);
            }
            tokens.insert(digest, (id.clone(), Instant::now() + TOKEN_TTL));
            return Ok(id);
        }
        Err(unauthorized("authentication failed: unknown token".into()))
    }

    /// Where the request for `path` by `caller` goes.
    fn route(&self, method: &Method, path: &str, caller: &Identity) -> Result<Route, Refused> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        // Resource paths: /api/v1/... and /apis/GROUP/VERSION/...
        let rest: &[&str] = match parts.as_slice() {
            ["api", "v1", rest @ ..] => rest,
            ["apis", _, _, rest @ ..] => rest,
            _ => return Ok(Route::Discovery),
        };
        let home = |t: &str| Ok(Route::Home(t.to_owned()));
        match rest {
            [] => Ok(Route::Discovery),
            ["tenants"] if *method == Method::POST => Ok(Route::NewTenant),
            ["tenants"] => Ok(Route::AllTenants),
            ["tenants", "all", ..] => Ok(Route::AllTenants),
            ["tenants", t, ..] if caller.is_system() => home(t),
            [plural, ..] if HOST_PLURALS.contains(plural) && !caller.is_system() => Err(status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("{plural} are the region's: a tenant's user cannot reach them"),
            )),
            [plural, tail @ ..] if HOST_PLURALS.contains(plural) => Ok(Route::Hosts {
                named: !tail.is_empty(),
            }),
            // Short paths and the caller's own tenant paths: its tenant's partition (the
            // system tenant's short paths: the first one's).
            _ if caller.is_system() => Ok(Route::Tenant(0)),
            _ => home(&caller.tenant),
        }
    }

    /// Forwards `req` (its body read) to `to` for `caller` (None: as the front door itself,
    /// for what is the same for everyone, discovery).
    async fn forward(
        &self,
        to: &Partition,
        caller: Option<&Identity>,
        head: &http::request::Parts,
        body: Bytes,
    ) -> Result<http::Response<centaurus_client::transport::Body>, Refused> {
        let req = Self::forwarded(caller, head, body)?;
        to.client
            .send_request(req)
            .await
            .map_err(|e| unreachable_partition(to, &e))
    }

    /// `head` and `body` as the front door forwards them for `caller`: the caller's own
    /// credentials and forgeable headers dropped, who it is in `X-Remote-*`.
    fn forwarded(
        caller: Option<&Identity>,
        head: &http::request::Parts,
        body: Bytes,
    ) -> Result<http::Request<Bytes>, Refused> {
        let mut req = http::Request::builder()
            .method(head.method.clone())
            .uri(head.uri.path_and_query().map_or("/", |p| p.as_str()));
        for (name, value) in &head.headers {
            let drop = name == header::AUTHORIZATION
                || name == header::HOST
                || name == header::CONTENT_LENGTH
                || name.as_str().starts_with("x-remote-")
                || name.as_str().starts_with("impersonate-");
            if !drop {
                req = req.header(name, value);
            }
        }
        let value = |v: &str| {
            HeaderValue::from_str(v).map_err(|_| {
                status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "a user name or group that cannot be forwarded",
                )
            })
        };
        if let Some(caller) = caller {
            req = req
                .header(REMOTE_USER, value(&caller.user)?)
                .header(REMOTE_TENANT, value(&caller.tenant)?);
            if let Some(uid) = &caller.tenant_uid {
                req = req.header(REMOTE_TENANT_UID, value(uid)?);
            }
            for g in &caller.groups {
                req = req.header(REMOTE_GROUP, value(g)?);
            }
        }
        req.body(body)
            .map_err(|e| status(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()))
    }

    /// Relays a request that upgrades its connection (exec, attach, port-forward) to the
    /// tenant partition of the tenant it addresses, and then the connection itself.
    async fn upgraded(&self, caller: &Identity, mut req: http::Request<Body>) -> Response {
        let client_side = hyper::upgrade::on(&mut req);
        let (head, _) = req.into_parts();
        let to = match self.route(&head.method, head.uri.path(), caller) {
            Ok(Route::Tenant(i)) => &self.tenants[i],
            Ok(Route::Home(t)) => match self.home(&t).await {
                Some(i) => &self.tenants[i],
                None => return no_tenant(&t),
            },
            Ok(_) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "only a tenant's pods are reached through upgraded connections",
                )
                .into_response();
            }
            Err(e) => return e.into_response(),
        };
        let fwd = match Self::forwarded(Some(caller), &head, Bytes::new()) {
            Ok(r) => r,
            Err(e) => return e.into_response(),
        };
        let (res, partition_side) = match to.upgrades.upgrade(fwd).await {
            Ok(r) => r,
            Err(e) => return unreachable_partition(to, &e).into_response(),
        };
        let (parts, body) = res.into_parts();
        let Some(partition_side) = partition_side else {
            return Response::from_parts(parts, Body::new(body));
        };
        tokio::spawn(async move {
            if let Ok(client_side) = client_side.await {
                let _ = tokio::io::copy_bidirectional(
                    &mut TokioIo::new(client_side),
                    &mut TokioIo::new(partition_side),
                )
                .await;
            }
        });
        Response::from_parts(parts, Body::empty())
    }

    /// Forwards to each of `to` and merges the JSON answers: lists' `items` (or tables'
    /// `rows`), discovery's `resources` and `groups`. A list needs every partition (one
    /// that cannot answer is a 503 naming it); discovery (`caller` None) leaves out a
    /// partition that does not answer or does not serve the document.
    async fn merged(
        &self,
        to: &[&Partition],
        caller: Option<&Identity>,
        head: &http::request::Parts,
    ) -> Response {
        if head
            .uri
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"))
        {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the front door does not watch across partitions yet: watch within one tenant",
            )
            .into_response();
        }
        let lenient = caller.is_none();
        let mut merged: Option<Value> = None;
        for p in to {
            let res = match self.forward(p, caller, head, Bytes::new()).await {
                Ok(r) => r,
                Err(_) if lenient => continue,
                Err(e) => return e.into_response(),
            };
            let code = res.status();
            let bytes = match res.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) if lenient => continue,
                Err(e) => {
                    return status(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ServiceUnavailable",
                        format!("{} stopped answering: {e}", p.name),
                    )
                    .into_response();
                }
            };
            if !code.is_success() {
                if lenient && (code == StatusCode::NOT_FOUND || code.is_server_error()) {
                    continue;
                }
                return (code, [(header::CONTENT_TYPE, "application/json")], bytes).into_response();
            }
            let Ok(doc) = serde_json::from_slice::<Value>(&bytes) else {
                return (code, bytes).into_response();
            };
            if doc["metadata"]["continue"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
            {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "a list across partitions is not paged yet: ask for more at once (limit)",
                )
                .into_response();
            }
            let Some(m) = merged.as_mut() else {
                merged = Some(doc);
                continue;
            };
            for field in ["items", "rows", "resources", "groups"] {
                let (Some(all), Some(more)) = (m[field].as_array_mut(), doc[field].as_array())
                else {
                    continue;
                };
                // Objects are distinct across partitions; discovery entries by name.
                let by_name = matches!(field, "resources" | "groups");
                for v in more {
                    let name = v["name"].as_str();
                    if by_name && all.iter().any(|a| a["name"].as_str() == name) {
                        continue;
                    }
                    all.push(v.clone());
                }
            }
        }
        let Some(mut m) = merged else {
            return status(StatusCode::NOT_FOUND, "NotFound", "no partition answered")
                .into_response();
        };
        if m["metadata"].is_object() {
            // No one revision spans partitions.
            m["metadata"]["resourceVersion"] = json!("");
        }
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            m.to_string(),
        )
            .into_response()
    }

    async fn handle(self: Arc<Self>, req: http::Request<Body>) -> Response {
        let creds = Credentials::of(&req);
        let caller = match self.caller(&creds).await {
            Ok(c) => c,
            Err(e) => return e.into_response(),
        };
        if req.headers().contains_key(header::UPGRADE) {
            return self.upgraded(&caller, req).await;
        }
        let (head, body) = req.into_parts();
        let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return status(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "RequestEntityTooLarge",
                    format!("request bodies are limited to {MAX_BODY} bytes"),
                )
                .into_response();
            }
        };
        let route = match self.route(&head.method, head.uri.path(), &caller) {
            Ok(r) => r,
            Err(e) => return e.into_response(),
        };
        let read = head.method == Method::GET;
        let watch = read
            && head
                .uri
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
        let target = match route {
            Route::Tenant(i) => &self.tenants[i],
            Route::Home(t) => match self.home(&t).await {
                Some(i) if watch => {
                    return match self
                        .forward(&self.tenants[i], Some(&caller), &head, body)
                        .await
                    {
                        Ok(res) => self.clone().follow(t, i, caller, head, res),
                        Err(e) => e.into_response(),
                    };
                }
                Some(i) => &self.tenants[i],
                None => return no_tenant(&t),
            },
            Route::NewTenant => {
                // One name, one tenant, in the whole region.
                let name = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v["metadata"]["name"].as_str().map(str::to_owned));
                if let Some(name) = name
                    && self.home(&name).await.is_some()
                {
                    return status(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        format!("tenants \"{name}\" already exists"),
                    )
                    .into_response();
                }
                let fewest = (0..self.tenants.len())
                    .min_by_key(|&i| self.held[i].list().len())
                    .unwrap_or(0);
                &self.tenants[fewest]
            }
            Route::AllTenants if read => {
                let all: Vec<&Partition> = self.tenants.iter().collect();
                return self.merged(&all, Some(&caller), &head).await;
            }
            Route::Discovery if read => {
                // Merged from the partitions' documents in their plain form: the front
                // door answers discovery as groups and resource lists, which clients that
                // ask for the aggregated form also take.
                let mut plain = head.clone();
                plain
                    .headers
                    .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
                return self
                    .merged(&[&self.tenants[0], &self.resources[0]], None, &plain)
                    .await;
            }
            Route::Discovery => &self.tenants[0],
            Route::Hosts { named: false } if read => {
                let all: Vec<&Partition> = self.resources.iter().collect();
                return self.merged(&all, Some(&caller), &head).await;
            }
            Route::Hosts { .. } => match self.holder(&caller, &head).await {
                Some(p) => p,
                None => &self.resources[0],
            },
            Route::AllTenants => {
                return status(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    "write a tenant's objects through its own tenant paths",
                )
                .into_response();
            }
        };
        match self.forward(target, Some(&caller), &head, body).await {
            Ok(res) => {
                let (parts, body) = res.into_parts();
                Response::from_parts(parts, Body::new(body))
            }
            Err(e) => e.into_response(),
        }
    }

    /// The resource partition that has the host object `head` names.
    async fn holder(&self, caller: &Identity, head: &http::request::Parts) -> Option<&Partition> {
        let mut probe = head.clone();
        probe.method = Method::GET;
        // The object itself, not a subresource: /api/v1/nodes/NAME[/status].
        let path = head.uri.path();
        let object = path
            .split('/')
            .take(if path.starts_with("/apis/") { 6 } else { 5 })
            .collect::<Vec<_>>()
            .join("/");
        probe.uri = object.parse().ok()?;
        for p in &self.resources {
            if let Ok(r) = self.forward(p, Some(caller), &probe, Bytes::new()).await
                && r.status().is_success()
            {
                return Some(p);
            }
        }
        None
    }
}

/// `centaurus gateway`: serves the front door on `listen` until Ctrl-C or SIGTERM, with a
/// server certificate of the region CA (adopted from `ca` into `data_dir`), and writes
/// `DIR/admin.kubeconfig` for it.
pub async fn run(
    data_dir: &Path,
    ca: &Path,
    listen: SocketAddr,
    tenants: &[(String, PathBuf)],
    resources: &[(String, PathBuf)],
) -> anyhow::Result<()> {
    crate::components::adopt_ca(ca, data_dir)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("the front door cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let pki = centaurus_api::tls::Pki::load_or_create(data_dir, &[addr.ip().to_string()])?;
    let gateway = Gateway::new(tenants, resources).await?;
    let server = format!("https://{addr}");
    let admin = data_dir.join("admin.kubeconfig");
    Kubeconfig::single(
        "centaurus-region",
        &server,
        &pki.ca_cert,
        Kubeconfig::cert_user(&pki.admin_cert, &pki.admin_key),
    )
    .write(&admin)
    .with_context(|| format!("writing {}", admin.display()))?;
    let app = axum::Router::new()
        .fallback(|State(g): State<Arc<Gateway>>, req: http::Request<Body>| g.handle(req))
        .with_state(gateway);
    println!(
        "centaurus gateway: {server} in front of {} tenant and {} resource partitions; admin kubeconfig {}",
        tenants.len(),
        resources.len(),
        admin.display()
    );
    let tls = Arc::new(pki.server_config()?);
    centaurus_api::tls::serve(listener, tls, app, async {
        let _ = crate::components::until_stopped().await;
    })
    .await;
    Ok(())
}
