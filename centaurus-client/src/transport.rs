//! How requests reach an API server: [`Transport`], with [`HttpsTransport`] (HTTP/2 over
//! TLS from a kubeconfig, several servers for failover) here and the in-process transport
//! in `centaurus-api` (a call into the server's handler, same authentication, tenant gate
//! and admission, no socket).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};

use crate::error::ClientError;
use crate::kubeconfig::Connection;

/// A boxed error of a response body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body: whole answers and watch streams alike.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Sends one request to the API and returns the answer as it streams in.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Sends `req`; its path and query are the API path, with no scheme or authority.
    async fn send(&self, req: Request<Bytes>) -> Result<Response<Body>, ClientError>;
}

/// Boxes any response body as a [`Body`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

struct Server {
    url: String,
    authority: String,
    name: ServerName<'static>,
}

/// HTTP/2 over TLS to one of several API servers, with one multiplexed connection that is
/// re-made (on the next server, when the current one is down) after it fails.
pub struct HttpsTransport {
    servers: Vec<Server>,
    tls: tokio_rustls::TlsConnector,
    /// The same TLS, offering HTTP/1.1: upgraded connections (WebSockets, SPDY) exist in
    /// HTTP/1.1 only.
    tls_http1: tokio_rustls::TlsConnector,
    token: Option<String>,
    /// The index of the current server and the live connection to it.
    conn: tokio::sync::Mutex<(usize, Option<SendRequest<Full<Bytes>>>)>,
    connect_timeout: Duration,
}

impl HttpsTransport {
    /// A transport for `conn`: its server first, then its other servers in order.
    pub fn new(conn: &Connection) -> Result<Self, ClientError> {
        let bad =
            |what: &str, e: &dyn std::fmt::Display| ClientError::Request(format!("{what}: {e}"));
        let mut servers = Vec::new();
        for url in std::iter::once(&conn.server).chain(&conn.fallback_servers) {
            let authority = url
                .strip_prefix("https://")
                .ok_or_else(|| {
                    ClientError::Request(format!("server {url:?} must be an https:// URL"))
                })?
                .trim_end_matches('/')
                .to_owned();
            let host = match authority.rsplit_once(':') {
                Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
                None => authority.clone(),
            };
            let name = ServerName::try_from(host).map_err(|e| bad("server host name", &e))?;
            servers.push(Server {
                url: url.clone(),
                authority,
                name,
            });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&conn.ca_pem) {
            let c = c.map_err(|e| bad("CA certificate", &e))?;
            roots.add(c).map_err(|e| bad("CA certificate", &e))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("TLS", &e))?
            .with_root_certificates(roots);
        let mut cfg = match &conn.client_cert {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad("client certificate", &e))?;
                let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| bad("client key", &e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| bad("client certificate", &e))?
            }
            None => builder.with_no_client_auth(),
        };
        let mut http1 = cfg.clone();
        http1.alpn_protocols = vec![b"http/1.1".to_vec()];
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            servers,
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            tls_http1: tokio_rustls::TlsConnector::from(Arc::new(http1)),
            token: conn.token.clone(),
            conn: tokio::sync::Mutex::new((0, None)),
            connect_timeout: Duration::from_secs(5),
        })
    }

    /// A TLS connection to `s` through `tls` (HTTP/2 or HTTP/1.1, by its ALPN).
    async fn tls_to(
        &self,
        s: &Server,
        tls: &tokio_rustls::TlsConnector,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(&s.authority),
        )
        .await
        .map_err(|_| format!("connecting to {} timed out", s.url))?
        .map_err(|e| format!("cannot connect to {}: {e}", s.url))?;
        let _ = tcp.set_nodelay(true);
        tokio::time::timeout(self.connect_timeout, tls.connect(s.name.clone(), tcp))
            .await
            .map_err(|_| format!("TLS handshake with {} timed out", s.url))?
            .map_err(|e| format!("TLS handshake with {}: {e}", s.url))
    }

    async fn connect_to(&self, s: &Server) -> Result<SendRequest<Full<Bytes>>, String> {
        let tls = self.tls_to(s, &self.tls).await?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP/2 handshake with {}: {e}", s.url))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// The live connection, or a new one: to the same server first, then to the others.
    async fn sender(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let mut slot = self.conn.lock().await;
        if let Some(s) = slot.1.as_ref().filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        let start = slot.0;
        let mut errors = Vec::new();
        for k in 0..self.servers.len() {
            let i = (start + k) % self.servers.len();
            match self.connect_to(&self.servers[i]).await {
                Ok(s) => {
                    if i != start {
                        tracing::info!(server = %self.servers[i].url, "API connection failed over");
                    }
                    *slot = (i, Some(s.clone()));
                    return Ok(s);
                }
                Err(e) => errors.push(e),
            }
        }
        slot.1 = None;
        Err(ClientError::Transport(errors.join("; ")))
    }

    /// Sends `req`, which asks to upgrade the connection (`Connection: Upgrade`), on a
    /// connection of its own (HTTP/1.1, to the first server that answers): the answer, and
    /// when it is `101 Switching Protocols`, the upgraded connection.
    pub async fn upgrade(
        &self,
        req: Request<Bytes>,
    ) -> Result<(Response<Body>, Option<hyper::upgrade::Upgraded>), ClientError> {
        let (mut parts, body) = req.into_parts();
        if let Some(t) = &self.token {
            let v = http::HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|e| ClientError::Request(format!("token: {e}")))?;
            parts.headers.insert(header::AUTHORIZATION, v);
        }
        let mut errors = Vec::new();
        for s in &self.servers {
            let connected = async {
                let tls = self.tls_to(s, &self.tls_http1).await?;
                hyper::client::conn::http1::handshake(TokioIo::new(tls))
                    .await
                    .map_err(|e| format!("HTTP/1.1 with {}: {e}", s.url))
            };
            let (mut sender, conn) = match connected.await {
                Ok(c) => c,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            tokio::spawn(conn.with_upgrades());
            parts.headers.insert(
                header::HOST,
                http::HeaderValue::from_str(&s.authority)
                    .map_err(|e| ClientError::Request(e.to_string()))?,
            );
            let req = Request::from_parts(parts, Full::new(body));
            let mut res = sender
                .send_request(req)
                .await
                .map_err(|e| ClientError::Transport(e.to_string()))?;
            if res.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                return Ok((res.map(boxed), None));
            }
            let upgraded = hyper::upgrade::on(&mut res)
                .await
                .map_err(|e| ClientError::Transport(format!("upgrading: {e}")))?;
            return Ok((res.map(boxed), Some(upgraded)));
        }
        Err(ClientError::Transport(errors.join("; ")))
    }

    /// Drops the connection so that the next request makes a new one.
    async fn forget(&self) {
        self.conn.lock().await.1 = None;
    }
}

#[async_trait]
impl Transport for HttpsTransport {
    async fn send(&self, req: Request<Bytes>) -> Result<Response<Body>, ClientError> {
        let (mut parts, body) = req.into_parts();
        if let Some(t) = &self.token {
            let v = http::HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|e| ClientError::Request(format!("token: {e}")))?;
            parts.headers.insert(header::AUTHORIZATION, v);
        }
        for attempt in 0..2 {
            let mut sender = self.sender().await?;
            let req = Request::from_parts(parts.clone(), Full::new(body.clone()));
            if sender.ready().await.is_err() {
                self.forget().await;
                continue;
            }
            match sender.send_request(req).await {
                Ok(res) => return Ok(res.map(boxed)),
                // Refused before it was sent (the connection went away): safe to resend.
                Err(e) if attempt == 0 && (e.is_canceled() || e.is_closed()) => {
                    self.forget().await;
                }
                Err(e) => {
                    self.forget().await;
                    return Err(ClientError::Transport(e.to_string()));
                }
            }
        }
        Err(ClientError::Transport(
            "the connection keeps closing".into(),
        ))
    }
}
