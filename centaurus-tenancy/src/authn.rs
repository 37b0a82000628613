//! Authentication: credentials in, [`Identity`] out.
//!
//! [`TokenFile`] reads bearer tokens from a file in the Kubernetes static token format with
//! two more columns, the tenant and its UID: `token,user,uid,"group1,group2",tenant,tenantUID`.
//! A missing tenant column means the `system` tenant, so a plain Kubernetes token file keeps
//! working. [`ClientCertAuthenticator`] maps a verified client certificate's subject to a
//! user: `CN` is the user, `O=tenant:NAME` its tenant and `OU=tenant-uid:UID` (or an `O` of
//! that form) that tenant's UID. [`TenantBound`] refuses credentials whose tenant is gone or was re-created, and
//! [`AuthnLayer`] runs them for every
//! request as a tower layer.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use async_trait::async_trait;
use centaurus_core::controller::{Cache, Informer};
use centaurus_core::model::{self, Resource, Scope, Tenant};
use centaurus_core::store::Store;
use http::{Request, Response, StatusCode, header};
use tokio::io::AsyncWriteExt;

use crate::{Identity, SYSTEM_TENANT};

/// The subject of a client certificate the TLS layer verified against the region's CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    /// Subject common name.
    pub common_name: String,
    /// Subject organizations.
    pub organizations: Vec<String>,
    /// Subject organizational units.
    pub organizational_units: Vec<String>,
}

/// The credentials a request carried.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// A bearer token from the `Authorization` header.
    pub bearer_token: Option<String>,
    /// A verified client certificate.
    pub client_cert: Option<ClientCert>,
    /// The caller an authenticating proxy names in the request's headers
    /// ([`REMOTE_USER`]...): believed only from the region's front door ([`FrontDoor`]).
    pub forwarded: Option<Identity>,
}

/// The header the front door names its caller's user in.
pub const REMOTE_USER: &str = "x-remote-user";
/// The header (one per group) the front door names its caller's groups in.
pub const REMOTE_GROUP: &str = "x-remote-group";
/// The header the front door names its caller's tenant in.
pub const REMOTE_TENANT: &str = "x-remote-tenant";
/// The header the front door names the UID of its caller's tenant in.
pub const REMOTE_TENANT_UID: &str = "x-remote-tenant-uid";

impl Credentials {
    /// The credentials of an HTTP request: its bearer token and the [`ClientCert`] the TLS
    /// layer put in its extensions.
    pub fn of<B>(req: &Request<B>) -> Self {
        let bearer_token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(|t| t.trim().to_owned());
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let forwarded = header(REMOTE_USER).map(|user| Identity {
            user,
            tenant: header(REMOTE_TENANT).unwrap_or_else(|| SYSTEM_TENANT.into()),
            groups: req
                .headers()
                .get_all(REMOTE_GROUP)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_owned))
                .collect(),
            tenant_uid: header(REMOTE_TENANT_UID),
        });
        Self {
            bearer_token,
            client_cert: req.extensions().get::<ClientCert>().cloned(),
            forwarded,
        }
    }

    /// True when no credentials were presented.
    pub fn is_empty(&self) -> bool {
        self.bearer_token.is_none() && self.client_cert.is_none()
    }
}

/// Turns credentials into an identity.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// `Ok(None)` when these credentials are not this authenticator's to judge; `Err` when
    /// they are and they are bad.
    async fn authenticate(&self, credentials: &Credentials) -> Result<Option<Identity>, String>;
}

/// Errors reading or writing a token file.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file could not be read or written.
    #[error("token file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A line does not have the expected columns.
    #[error("token file {path} line {line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Bearer tokens from a CSV file; new tokens are appended to it.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    tokens: RwLock<HashMap<String, Identity>>,
    append: tokio::sync::Mutex<()>,
}

/// Splits one CSV line, honouring double quotes (`"a,b"` is one field; `""` is a quote).
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().expect("one field").push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut().expect("one field").push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    Ok(fields)
}

/// Parses one token line into the token and its identity.
pub fn parse_token_line(line: &str) -> Result<(String, Identity), String> {
    let f = split_csv(line)?;
    if f.len() < 3 {
        return Err(format!(
            "expected token,user,uid[,\"groups\"[,tenant]], found {} columns",
            f.len()
        ));
    }
    let (token, user) = (f[0].trim(), f[1].trim());
    if token.is_empty() || user.is_empty() {
        return Err("token and user must not be empty".into());
    }
    let groups = f
        .get(3)
        .map(|g| {
            g.split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let field = |i: usize| f.get(i).map(|t| t.trim()).filter(|t| !t.is_empty());
    Ok((
        token.to_owned(),
        Identity {
            user: user.to_owned(),
            tenant: field(4).unwrap_or(SYSTEM_TENANT).to_owned(),
            groups,
            tenant_uid: field(5).map(str::to_owned),
        },
    ))
}

fn token_line(token: &str, id: &Identity) -> String {
    format!(
        "{token},{},{},\"{}\",{},{}\n",
        id.user,
        uuid::Uuid::new_v4(),
        id.groups.join(","),
        id.tenant,
        id.tenant_uid.as_deref().unwrap_or("")
    )
}

impl TokenFile {
    /// Loads `path`; a missing file is an empty table that [`TokenFile::issue`] creates.
    pub async fn load(path: impl AsRef<Path>) -> Result<Self, TokenFileError> {
        let path = path.as_ref().to_owned();
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(TokenFileError::Io { path, source }),
        };
        let mut tokens = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (token, id) = parse_token_line(line).map_err(|message| TokenFileError::Parse {
                path: path.clone(),
                line: i + 1,
                message,
            })?;
            tokens.insert(token, id);
        }
        Ok(Self {
            path,
            tokens: RwLock::new(tokens),
            append: tokio::sync::Mutex::new(()),
        })
    }

    /// Issues a new random token for `identity`, appends it to the file (synced) and
    /// returns it.
    pub async fn issue(&self, identity: Identity) -> Result<String, TokenFileError> {
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let _guard = self.append.lock().await;
        let io = |source| TokenFileError::Io {
            path: self.path.clone(),
            source,
        };
        let mut opts = tokio::fs::OpenOptions::new();
        opts.create(true).append(true);
        #[cfg(unix)]
        opts.mode(0o600);
        let mut file = opts.open(&self.path).await.map_err(io)?;
        file.write_all(token_line(&token, &identity).as_bytes())
            .await
            .map_err(io)?;
        file.sync_all().await.map_err(io)?;
        self.tokens
            .write()
            .expect("token table lock")
            .insert(token.clone(), identity);
        Ok(token)
    }

    /// Revokes every token of `tenant` (its deletion): they are removed from the file and the
    /// table. Returns how many were revoked.
    pub async fn revoke_tenant(&self, tenant: &str) -> Result<usize, TokenFileError> {
        self.rewrite(|id| id.tenant != tenant).await
    }

    /// Binds the tokens written before tokens named their tenant's UID to `uid_of` their
    /// tenant now, and revokes those whose tenant no longer exists (`uid_of` gives None).
    /// Returns how many tokens were bound or revoked.
    pub async fn bind_unbound(
        &self,
        uid_of: impl Fn(&str) -> Option<String>,
    ) -> Result<usize, TokenFileError> {
        self.rewrite(|id| {
            if id.tenant == SYSTEM_TENANT || id.tenant_uid.is_some() {
                return true;
            }
            id.tenant_uid = uid_of(&id.tenant);
            id.tenant_uid.is_some()
        })
        .await
    }

    /// Keeps the tokens whose identity `keep` accepts (it may amend them) and, when any was
    /// dropped or amended, replaces the file with the rest (written aside, synced, renamed).
    /// Returns how many were dropped or amended.
    async fn rewrite(
        &self,
        mut keep: impl FnMut(&mut Identity) -> bool,
    ) -> Result<usize, TokenFileError> {
        let _guard = self.append.lock().await;
        let io = |source| TokenFileError::Io {
            path: self.path.clone(),
            source,
        };
        let (text, changed) = {
            let mut tokens = self.tokens.write().expect("token table lock");
            let mut changed = 0;
            tokens.retain(|_, id| {
                let before = id.clone();
                let kept = keep(id);
                changed += usize::from(!kept || *id != before);
                kept
            });
            let text: String = tokens.iter().map(|(t, id)| token_line(t, id)).collect();
            (text, changed)
        };
        if changed == 0 {
            return Ok(0);
        }
        let aside = self.path.with_extension("csv.new");
        let mut opts = tokio::fs::OpenOptions::new();
        opts.create(true).write(true).truncate(true);
        #[cfg(unix)]
        opts.mode(0o600);
        let mut file = opts.open(&aside).await.map_err(io)?;
        file.write_all(text.as_bytes()).await.map_err(io)?;
        file.sync_all().await.map_err(io)?;
        tokio::fs::rename(&aside, &self.path).await.map_err(io)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let dir = tokio::fs::File::open(dir).await.map_err(io)?;
            dir.sync_all().await.map_err(io)?;
        }
        Ok(changed)
    }

    /// The identity of a token, if it is known.
    pub fn lookup(&self, token: &str) -> Option<Identity> {
        self.tokens
            .read()
            .expect("token table lock")
            .get(token)
            .cloned()
    }

    /// Number of known tokens.
    pub fn len(&self) -> usize {
        self.tokens.read().expect("token table lock").len()
    }

    /// True when no token is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl Authenticator for TokenFile {
    async fn authenticate(&self, c: &Credentials) -> Result<Option<Identity>, String> {
        match &c.bearer_token {
            None => Ok(None),
            Some(t) => self
                .lookup(t)
                .map(Some)
                .ok_or_else(|| "invalid bearer token".to_owned()),
        }
    }
}

/// Maps verified client certificates to users: `CN` is the user, `O=tenant:NAME` the
/// tenant, other organizations are groups.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientCertAuthenticator;

/// The organization prefix that names a certificate's tenant.
pub const TENANT_ORG_PREFIX: &str = "tenant:";

/// The organization prefix that names the UID of a certificate's tenant.
pub const TENANT_UID_ORG_PREFIX: &str = "tenant-uid:";

#[async_trait]
impl Authenticator for ClientCertAuthenticator {
    async fn authenticate(&self, c: &Credentials) -> Result<Option<Identity>, String> {
        let Some(cert) = &c.client_cert else {
            return Ok(None);
        };
        let tenant = cert
            .organizations
            .iter()
            .find_map(|o| o.strip_prefix(TENANT_ORG_PREFIX))
            .ok_or("client certificate names no tenant (expected O=tenant:NAME)")?;
        if cert.common_name.is_empty() {
            return Err("client certificate has no common name".into());
        }
        Ok(Some(Identity {
            user: cert.common_name.clone(),
            tenant: tenant.to_owned(),
            groups: cert
                .organizations
                .iter()
                .filter(|o| {
                    !o.starts_with(TENANT_ORG_PREFIX) && !o.starts_with(TENANT_UID_ORG_PREFIX)
                })
                .cloned()
                .collect(),
            tenant_uid: cert
                .organizations
                .iter()
                .chain(&cert.organizational_units)
                .find_map(|o| o.strip_prefix(TENANT_UID_ORG_PREFIX))
                .map(str::to_owned),
        }))
    }
}

/// Refuses the credentials of tenants that are gone: an identity outside the `system`
/// tenant authenticates only while its tenant exists, is not being deleted, and has the UID
/// the credential was issued for. So a token or certificate of a deleted tenant gets 401,
/// and never opens a tenant later created under the same name.
///
/// Decides from an informer cache of tenants and confirms every refusal against the store,
/// so a tenant created a moment ago is never refused.
pub struct TenantBound {
    inner: Arc<dyn Authenticator>,
    store: Arc<dyn Store>,
    tenants: Cache<Tenant>,
}

impl TenantBound {
    /// Binds `inner`'s identities to the live tenants of `store` (an informer on tenants is
    /// started here, on the current tokio runtime; returns once it is loaded).
    pub async fn new(inner: Arc<dyn Authenticator>, store: Arc<dyn Store>) -> Self {
        let informer = Arc::new(Informer::<Tenant>::from_store(
            store.clone(),
            format!("/registry/{}/", Tenant::PLURAL),
        ));
        let tenants = informer.cache();
        tokio::spawn(informer.clone().run());
        informer.wait_synced().await;
        Self {
            inner,
            store,
            tenants,
        }
    }

    fn live(tenant: Option<&Tenant>, uid: &str) -> bool {
        tenant.is_some_and(|t| t.metadata.uid == uid && t.metadata.deletion_timestamp.is_none())
    }
}

#[async_trait]
impl Authenticator for TenantBound {
    async fn authenticate(&self, c: &Credentials) -> Result<Option<Identity>, String> {
        let Some(id) = self.inner.authenticate(c).await? else {
            return Ok(None);
        };
        if id.is_system() {
            return Ok(Some(id));
        }
        let Some(uid) = id.tenant_uid.as_deref() else {
            return Err(format!(
                "the credential of {} names no UID of tenant {:?}; ask for a new one",
                id.user, id.tenant
            ));
        };
        let key = model::object_key(Tenant::PLURAL, Scope::Cluster, "", "", &id.tenant);
        if Self::live(self.tenants.get(&key).as_ref(), uid) {
            return Ok(Some(id));
        }
        let stored = self
            .store
            .get(&key)
            .await
            .map_err(|e| format!("authentication unavailable: {e}"))?
            .and_then(|kv| serde_json::from_slice::<Tenant>(&kv.value).ok());
        if Self::live(stored.as_ref(), uid) {
            Ok(Some(id))
        } else {
            Err(format!(
                "tenant {:?} of this credential no longer exists (it was deleted, or is being deleted)",
                id.tenant
            ))
        }
    }
}

/// The region's front door as an authenticating proxy: a request authenticated as
/// [`identity::GATEWAY`] that names a caller in the [`REMOTE_USER`] headers is that caller's
/// (whom the front door authenticated); from anyone else those headers are ignored. Put
/// it inside [`TenantBound`], so a forwarded tenant user is bound to its live tenant too.
pub struct FrontDoor {
    inner: Arc<dyn Authenticator>,
}

impl FrontDoor {
    /// Believes the front door's forwarded callers, authenticating everyone with `inner`.
    pub fn new(inner: Arc<dyn Authenticator>) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl Authenticator for FrontDoor {
    async fn authenticate(&self, c: &Credentials) -> Result<Option<Identity>, String> {
        let id = self.inner.authenticate(c).await?;
        let gateway = crate::identity::GATEWAY;
        match (id, &c.forwarded) {
            (Some(id), Some(caller)) if id.user == gateway.user && id.tenant == SYSTEM_TENANT => {
                if caller.user == gateway.user || caller.user.is_empty() {
                    return Err("the front door cannot forward itself or nobody".into());
                }
                Ok(Some(caller.clone()))
            }
            (id, _) => Ok(id),
        }
    }
}

/// Tries authenticators in order; the first that judges the credentials decides.
#[derive(Clone, Default)]
pub struct AuthenticatorChain(pub Vec<Arc<dyn Authenticator>>);

#[async_trait]
impl Authenticator for AuthenticatorChain {
    async fn authenticate(&self, c: &Credentials) -> Result<Option<Identity>, String> {
        for a in &self.0 {
            if let Some(id) = a.authenticate(c).await? {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }
}

/// A tower layer that authenticates every request: on success the [`Identity`] goes into
/// the request's extensions; bad or missing credentials get `401` with a Kubernetes
/// `Status` body, except on the public paths (`/version`, `/healthz`, …), which pass
/// through without an identity.
#[derive(Clone)]
pub struct AuthnLayer {
    authn: Arc<dyn Authenticator>,
}

impl AuthnLayer {
    /// A layer over an authenticator (usually an [`AuthenticatorChain`]).
    pub fn new(authn: Arc<dyn Authenticator>) -> Self {
        Self { authn }
    }
}

impl<S> tower::Layer<S> for AuthnLayer {
    type Service = Authn<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authn {
            inner,
            authn: self.authn.clone(),
        }
    }
}

/// The service [`AuthnLayer`] makes.
#[derive(Clone)]
pub struct Authn<S> {
    inner: S,
    authn: Arc<dyn Authenticator>,
}

/// The identity of a caller inside the server's process: the in-process transport puts it
/// into a request's extensions and [`Authn`] takes it as authenticated. Only code linked
/// into the process can set it; requests from the network never carry it.
#[derive(Clone, Debug)]
pub struct InProcessCaller(pub Identity);

/// Paths anyone may read, as Kubernetes' `system:public-info-viewer` allows.
pub fn is_public_path(path: &str) -> bool {
    matches!(path, "/version" | "/healthz" | "/readyz" | "/livez")
}

fn unauthorized<B: From<String>>(message: &str) -> Response<B> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": "Unauthorized", "code": 401
    });
    let mut res = Response::new(B::from(body.to_string()));
    *res.status_mut() = StatusCode::UNAUTHORIZED;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    res
}

impl<S, ReqB, ResB> tower::Service<Request<ReqB>> for Authn<S>
where
    S: tower::Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    ReqB: Send + 'static,
    ResB: From<String>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authn = self.authn.clone();
        Box::pin(async move {
            // A caller in this process (the in-process transport) states its identity;
            // nothing from the network can put this marker into a request's extensions.
            if let Some(InProcessCaller(id)) = req.extensions_mut().remove::<InProcessCaller>() {
                req.extensions_mut().insert(id);
                return inner.call(req).await;
            }
            let creds = Credentials::of(&req);
            match authn.authenticate(&creds).await {
                Ok(Some(id)) => {
                    req.extensions_mut().insert(id);
                    inner.call(req).await
                }
                Ok(None) if is_public_path(req.uri().path()) => inner.call(req).await,
                Ok(None) => Ok(unauthorized(
                    "no credentials: a bearer token or a client certificate is required",
                )),
                Err(message) => {
                    tracing::debug!(%message, "authentication failed");
                    Ok(unauthorized(&format!("authentication failed: {message}")))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lines_parse_with_quoted_groups_and_tenant() {
        let (t, id) = parse_token_line(r#"abc,alice,1,"dev,ops",acme"#).unwrap();
        assert_eq!(t, "abc");
        assert_eq!(id.user, "alice");
        assert_eq!(id.tenant, "acme");
        assert_eq!(id.groups, ["dev", "ops"]);
        let (_, admin) = parse_token_line("xyz,admin,2").unwrap();
        assert_eq!(admin.tenant, SYSTEM_TENANT);
        assert!(parse_token_line("only,two").is_err());
        assert!(parse_token_line(r#"a,b,c,"open"#).is_err());
    }

    #[tokio::test]
    async fn issued_tokens_survive_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.csv");
        let file = TokenFile::load(&path).await.unwrap();
        let id = Identity {
            user: "admin".into(),
            tenant: "acme".into(),
            groups: vec![crate::TENANT_ADMINS_GROUP.into()],
            tenant_uid: Some("uid-1".into()),
        };
        let token = file.issue(id.clone()).await.unwrap();
        let reloaded = TokenFile::load(&path).await.unwrap();
        assert_eq!(reloaded.lookup(&token), Some(id));
        let creds = Credentials {
            bearer_token: Some("wrong".into()),
            ..Default::default()
        };
        assert!(reloaded.authenticate(&creds).await.is_err());
    }

    #[tokio::test]
    async fn revoked_and_unbound_tokens_leave_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.csv");
        // A file from before tokens named their tenant's UID.
        std::fs::write(
            &path,
            "t-root,root,1\nt-acme,admin,2,,acme\nt-gone,admin,3,,gone\nt-beta,admin,4,,beta,uid-b\n",
        )
        .unwrap();
        let file = TokenFile::load(&path).await.unwrap();
        let changed = file
            .bind_unbound(|t| (t == "acme").then(|| "uid-a".to_owned()))
            .await
            .unwrap();
        assert_eq!(changed, 2, "acme's token bound, gone's revoked");
        assert_eq!(file.revoke_tenant("beta").await.unwrap(), 1);
        for f in [&file, &TokenFile::load(&path).await.unwrap()] {
            assert!(f.lookup("t-root").unwrap().is_system());
            assert_eq!(
                f.lookup("t-acme").unwrap().tenant_uid.as_deref(),
                Some("uid-a")
            );
            assert_eq!((f.lookup("t-gone"), f.lookup("t-beta")), (None, None));
        }
    }

    #[tokio::test]
    async fn certificates_name_their_tenant() {
        let creds = |orgs: &[&str]| Credentials {
            client_cert: Some(ClientCert {
                common_name: "bob".into(),
                organizations: orgs.iter().map(|s| s.to_string()).collect(),
                organizational_units: vec![],
            }),
            ..Default::default()
        };
        let id = ClientCertAuthenticator
            .authenticate(&creds(&["tenant:acme", "tenant-uid:u-1", "dev"]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                id.tenant.as_str(),
                id.groups.as_slice(),
                id.tenant_uid.as_deref()
            ),
            ("acme", &["dev".to_string()][..], Some("u-1"))
        );
        assert!(
            ClientCertAuthenticator
                .authenticate(&creds(&["dev"]))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn only_the_front_door_forwards_callers() {
        let cert = |cn: &str| ClientCert {
            common_name: cn.into(),
            organizations: vec![format!("{TENANT_ORG_PREFIX}{SYSTEM_TENANT}")],
            organizational_units: vec![],
        };
        let alice = Identity {
            user: "alice".into(),
            tenant: "acme".into(),
            groups: vec!["dev".into()],
            tenant_uid: Some("u-1".into()),
        };
        let door = FrontDoor::new(Arc::new(ClientCertAuthenticator));
        let via = |cn: &str, forwarded: Option<Identity>| Credentials {
            client_cert: Some(cert(cn)),
            forwarded,
            ..Default::default()
        };
        let gateway = crate::identity::GATEWAY.user;
        let got = door.authenticate(&via(gateway, Some(alice.clone()))).await;
        assert_eq!(got.unwrap(), Some(alice.clone()));
        // Anyone else naming a caller is only itself.
        let got = door
            .authenticate(&via("mallory", Some(alice.clone())))
            .await;
        assert_eq!(got.unwrap().unwrap().user, "mallory");
        // The front door itself, unforwarded, is itself (and confined to nothing).
        let got = door.authenticate(&via(gateway, None)).await;
        assert_eq!(got.unwrap().unwrap().user, gateway);
        let mut itself = alice;
        itself.user = gateway.into();
        assert!(
            door.authenticate(&via(gateway, Some(itself)))
                .await
                .is_err()
        );
    }
}
