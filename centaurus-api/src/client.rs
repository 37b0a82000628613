//! A small HTTPS client for the API, configured from a kubeconfig: what centaurusctl, the
//! load tool and the tests use.

use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use futures::Stream;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use serde_json::Value;

use crate::kubeconfig::Connection;

/// An answer from the API.
#[derive(Clone, Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Body bytes.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "response is not JSON: {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as JSON when the status is a success; the Status message otherwise.
    pub fn ok(self) -> anyhow::Result<Value> {
        if self.status.is_success() {
            return self.json();
        }
        let msg = self
            .json()
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned());
        bail!("{} ({})", msg, self.status)
    }
}

/// A connection-reusing HTTPS client (one HTTP/1.1 connection, re-made when it drops).
pub struct Client {
    conn: Connection,
    tls: tokio_rustls::TlsConnector,
    authority: String,
    server_name: ServerName<'static>,
    sender: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl Client {
    /// A client for `conn` (see [`crate::kubeconfig::Kubeconfig::connection`]).
    pub fn new(conn: Connection) -> anyhow::Result<Self> {
        let authority = conn
            .server
            .strip_prefix("https://")
            .ok_or_else(|| anyhow!("server {:?} must be an https:// URL", conn.server))?
            .trim_end_matches('/')
            .to_owned();
        let host = match authority.rsplit_once(':') {
            Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
            None => authority.clone(),
        };
        let server_name = ServerName::try_from(host).context("server host name")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&conn.ca_pem) {
            roots
                .add(c.context("CA certificate")?)
                .context("CA certificate")?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let mut cfg = match &conn.client_cert {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .context("client certificate")?;
                let key = PrivateKeyDer::from_pem_slice(key).context("client key")?;
                builder.with_client_auth_cert(chain, key)?
            }
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            conn,
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            authority,
            server_name,
            sender: tokio::sync::Mutex::new(None),
        })
    }

    /// The default namespace of the context.
    pub fn namespace(&self) -> &str {
        &self.conn.namespace
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let tcp = tokio::net::TcpStream::connect(&self.authority)
            .await
            .with_context(|| format!("cannot connect to {}", self.conn.server))?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .context("TLS handshake")?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn build(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.authority)
            .header(header::ACCEPT, "application/json");
        if !body.is_empty() {
            req = req.header(header::CONTENT_TYPE, content_type);
        }
        if let Some(t) = &self.conn.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        Ok(req.body(Full::new(body))?)
    }

    /// Sends one request and reads the whole answer.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: impl Into<Bytes>,
    ) -> anyhow::Result<Reply> {
        let body = body.into();
        let mut slot = self.sender.lock().await;
        for attempt in 0..2 {
            let mut sender = match slot.take() {
                Some(s) if !s.is_closed() => s,
                _ => self.connect().await?,
            };
            if sender.ready().await.is_err() {
                continue;
            }
            let res = match sender
                .send_request(self.build(method.clone(), path, content_type, body.clone())?)
                .await
            {
                Ok(r) => r,
                Err(e) if attempt == 0 && e.is_canceled() => continue,
                Err(e) => return Err(e.into()),
            };
            let status = res.status();
            let body = res.into_body().collect().await?.to_bytes();
            *slot = Some(sender);
            return Ok(Reply { status, body });
        }
        bail!("connection to {} keeps closing", self.conn.server)
    }

    /// GET.
    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.request(Method::GET, path, "", Bytes::new()).await
    }

    /// Sends a JSON body.
    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<Reply> {
        self.request(method, path, "application/json", body.to_string())
            .await
    }

    /// Opens a watch (on its own connection) and yields each event as JSON.
    pub async fn watch(
        &self,
        path: &str,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<Value>> + use<>> {
        let mut sender = self.connect().await?;
        let res = sender
            .send_request(self.build(Method::GET, path, "", Bytes::new())?)
            .await?;
        if !res.status().is_success() {
            let status = res.status();
            let body = res.into_body().collect().await?.to_bytes();
            Reply { status, body }.ok()?;
            bail!("watch failed with {status}");
        }
        let body = res.into_body();
        Ok(futures::stream::unfold(
            (body, Vec::<u8>::new(), sender),
            |(mut body, mut buf, sender)| async move {
                loop {
                    if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=pos).collect();
                        let v = serde_json::from_slice::<Value>(&line).map_err(anyhow::Error::from);
                        return Some((v, (body, buf, sender)));
                    }
                    match body.frame().await {
                        None => return None,
                        Some(Err(e)) => return Some((Err(e.into()), (body, buf, sender))),
                        Some(Ok(frame)) => {
                            if let Ok(data) = frame.into_data() {
                                buf.extend_from_slice(&data);
                            }
                        }
                    }
                }
            },
        ))
    }
}
