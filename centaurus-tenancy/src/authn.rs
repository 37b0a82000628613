//! Authentication: credentials in, [`Identity`] out.
//!
//! [`TokenFile`] reads bearer tokens from a file in the Kubernetes static token format with
//! one more column, the tenant: `token,user,uid,"group1,group2",tenant`. A missing tenant
//! column means the `system` tenant, so a plain Kubernetes token file keeps working.
//! [`ClientCertAuthenticator`] maps a verified client certificate's subject to a user:
//! `CN` is the user and `O=tenant:NAME` its tenant. [`AuthnLayer`] runs them for every
//! request as a tower layer.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use async_trait::async_trait;
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
}

/// The credentials a request carried.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// A bearer token from the `Authorization` header.
    pub bearer_token: Option<String>,
    /// A verified client certificate.
    pub client_cert: Option<ClientCert>,
}

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
        Self {
            bearer_token,
            client_cert: req.extensions().get::<ClientCert>().cloned(),
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
    let tenant = f.get(4).map(|t| t.trim()).filter(|t| !t.is_empty());
    Ok((
        token.to_owned(),
        Identity {
            user: user.to_owned(),
            tenant: tenant.unwrap_or(SYSTEM_TENANT).to_owned(),
            groups,
        },
    ))
}

fn token_line(token: &str, id: &Identity) -> String {
    format!(
        "{token},{},{},\"{}\",{}\n",
        id.user,
        uuid::Uuid::new_v4(),
        id.groups.join(","),
        id.tenant
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
                .filter(|o| !o.starts_with(TENANT_ORG_PREFIX))
                .cloned()
                .collect(),
        }))
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
        };
        let token = file.issue(id.clone()).await.unwrap();
        let reloaded = TokenFile::load(&path).await.unwrap();
        assert_eq!(reloaded.lookup(&token), Some(id));
        let creds = Credentials {
            bearer_token: Some("wrong".into()),
            client_cert: None,
        };
        assert!(reloaded.authenticate(&creds).await.is_err());
    }

    #[tokio::test]
    async fn certificates_name_their_tenant() {
        let creds = |orgs: &[&str]| Credentials {
            bearer_token: None,
            client_cert: Some(ClientCert {
                common_name: "bob".into(),
                organizations: orgs.iter().map(|s| s.to_string()).collect(),
            }),
        };
        let id = ClientCertAuthenticator
            .authenticate(&creds(&["tenant:acme", "dev"]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (id.tenant.as_str(), id.groups.as_slice()),
            ("acme", &["dev".to_string()][..])
        );
        assert!(
            ClientCertAuthenticator
                .authenticate(&creds(&["dev"]))
                .await
                .is_err()
        );
    }
}
