//! The region's PKI and the HTTPS listener.
//!
//! At first start [`Pki::load_or_create`] makes a CA, a serving certificate for the API
//! (localhost, the listen address and the host name) and an admin client certificate
//! (`CN=admin, O=tenant:system`); later starts reuse them. [`serve`] accepts TLS
//! connections, verifies optional client certificates against the CA and hands each
//! request the certificate's subject as a [`ClientCert`] extension.

use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use centaurus_tenancy::ClientCert;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// PKI failures.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// Certificate generation or parsing failed.
    #[error("certificate: {0}")]
    Cert(String),
}

/// PEM-encoded CA, serving and admin credentials.
#[derive(Clone, Debug)]
pub struct Pki {
    /// CA certificate.
    pub ca_cert: String,
    ca_key: String,
    /// Serving certificate.
    pub server_cert: String,
    /// Serving key.
    pub server_key: String,
    /// Admin client certificate (`O=tenant:system`).
    pub admin_cert: String,
    /// Admin client key.
    pub admin_key: String,
}

fn cert_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Cert(e.to_string())
}

impl Pki {
    /// Loads the PKI from `dir/pki`, creating what is missing.
    pub fn load_or_create(dir: &Path, server_names: &[String]) -> Result<Self, TlsError> {
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki).map_err(|source| TlsError::Io {
            path: pki.clone(),
            source,
        })?;
        let read = |name: &str| std::fs::read_to_string(pki.join(name)).ok();
        let write = |name: &str, text: &str| -> Result<(), TlsError> {
            let path = pki.join(name);
            std::fs::write(&path, text).map_err(|source| TlsError::Io {
                path: path.clone(),
                source,
            })?;
            #[cfg(unix)]
            if name.ends_with(".key") {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
            }
            Ok(())
        };
        let (ca_cert, ca_key) = match (read("ca.crt"), read("ca.key")) {
            (Some(c), Some(k)) => (c, k),
            _ => {
                let key = KeyPair::generate().map_err(cert_err)?;
                let mut p = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
                p.distinguished_name
                    .push(DnType::CommonName, "centaurus-ca");
                p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                p.key_usages = vec![
                    KeyUsagePurpose::KeyCertSign,
                    KeyUsagePurpose::CrlSign,
                    KeyUsagePurpose::DigitalSignature,
                ];
                let cert = p.self_signed(&key).map_err(cert_err)?;
                write("ca.crt", &cert.pem())?;
                write("ca.key", &key.serialize_pem())?;
                (cert.pem(), key.serialize_pem())
            }
        };
        let mut this = Self {
            ca_cert,
            ca_key,
            server_cert: String::new(),
            server_key: String::new(),
            admin_cert: String::new(),
            admin_key: String::new(),
        };
        (this.server_cert, this.server_key) = match (read("server.crt"), read("server.key")) {
            (Some(c), Some(k)) => (c, k),
            _ => {
                let (c, k) = this.issue_server(server_names)?;
                write("server.crt", &c)?;
                write("server.key", &k)?;
                (c, k)
            }
        };
        (this.admin_cert, this.admin_key) = match (read("admin.crt"), read("admin.key")) {
            (Some(c), Some(k)) => (c, k),
            _ => {
                let (c, k) = this.issue_client("admin", centaurus_tenancy::SYSTEM_TENANT, None)?;
                write("admin.crt", &c)?;
                write("admin.key", &k)?;
                (c, k)
            }
        };
        Ok(this)
    }

    fn sign(&self, params: CertificateParams) -> Result<(String, String), TlsError> {
        let ca_key = KeyPair::from_pem(&self.ca_key).map_err(cert_err)?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert, ca_key).map_err(cert_err)?;
        let key = KeyPair::generate().map_err(cert_err)?;
        let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    fn issue_server(&self, names: &[String]) -> Result<(String, String), TlsError> {
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        p.distinguished_name
            .push(DnType::CommonName, "centaurus-apiserver");
        for n in names
            .iter()
            .map(String::as_str)
            .chain(["localhost", "127.0.0.1", "::1"])
        {
            let san = match n.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.try_into().map_err(cert_err)?),
            };
            if !p.subject_alt_names.contains(&san) {
                p.subject_alt_names.push(san);
            }
        }
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(p)
    }

    /// Issues a client certificate for `user` of `tenant` (`O=tenant:{tenant}`) bound to the
    /// tenant's UID (`O=tenant-uid:{uid}`; every tenant but `system` needs one to be let in).
    pub fn issue_client(
        &self,
        user: &str,
        tenant: &str,
        tenant_uid: Option<&str>,
    ) -> Result<(String, String), TlsError> {
        use centaurus_tenancy::authn::{TENANT_ORG_PREFIX, TENANT_UID_ORG_PREFIX};
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        p.distinguished_name.push(DnType::CommonName, user);
        // rcgen keeps one value per attribute type in a DN: the UID goes in the unit.
        p.distinguished_name.push(
            DnType::OrganizationName,
            format!("{TENANT_ORG_PREFIX}{tenant}"),
        );
        if let Some(uid) = tenant_uid {
            p.distinguished_name.push(
                DnType::OrganizationalUnitName,
                format!("{TENANT_UID_ORG_PREFIX}{uid}"),
            );
        }
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(p)
    }

    /// Signs the public key of a PEM certificate request (its signature checked) as the
    /// client certificate of node `node` (`system:node:NODE`); the request's subject and
    /// extensions are ignored.
    pub fn sign_node_request(&self, csr_pem: &str, node: &str) -> Result<String, TlsError> {
        use centaurus_tenancy::authn::TENANT_ORG_PREFIX;
        let mut csr =
            rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(cert_err)?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        p.distinguished_name
            .push(DnType::CommonName, format!("system:node:{node}"));
        p.distinguished_name.push(
            DnType::OrganizationName,
            format!("{TENANT_ORG_PREFIX}{}", centaurus_tenancy::SYSTEM_TENANT),
        );
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        csr.params = p;
        let ca_key = KeyPair::from_pem(&self.ca_key).map_err(cert_err)?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert, ca_key).map_err(cert_err)?;
        Ok(csr.signed_by(&issuer).map_err(cert_err)?.pem())
    }

    /// A rustls server configuration: the serving certificate, ALPN h2 and http/1.1, and
    /// optional client certificates verified against the CA.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca_cert.as_bytes()) {
            roots.add(c.map_err(cert_err)?).map_err(cert_err)?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(cert_err)?;
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.server_cert.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(cert_err)?;
        let key = PrivateKeyDer::from_pem_slice(self.server_key.as_bytes()).map_err(cert_err)?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(cert_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(cert_err)?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(cfg)
    }
}

/// The subject of a DER certificate: common name, organizations and organizational units.
pub fn client_cert_subject(der: &[u8]) -> Option<ClientCert> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let common_name = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let strings =
        |attrs: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
            attrs
                .filter_map(|o| o.as_str().ok().map(str::to_owned))
                .collect()
        };
    Some(ClientCert {
        common_name,
        organizations: strings(&mut subject.iter_organization()),
        organizational_units: strings(&mut subject.iter_organizational_unit()),
    })
}

/// Serves `app` over TLS on `listener` until `shutdown` completes; open connections then
/// get a second to finish.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| client_cert_subject(c));
            let service =
                hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                    if let Some(c) = &cert {
                        req.extensions_mut().insert(c.clone());
                    }
                    answer_then_drain(app.clone(), req)
                });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // HTTP/2 takes the header lists HTTP/1 takes (a URI up to 64 KiB: long label
            // selectors), where its default refuses them with a bare 431.
            builder.http2().max_header_list_size(MAX_HEADER_LIST);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), graceful.shutdown()).await;
}

/// The largest header block an HTTP/2 request may send (hyper's HTTP/1 buffer is 400 KiB,
/// its URIs at most 64 KiB).
const MAX_HEADER_LIST: u32 = 256 << 10;

/// Bytes of an unread HTTP/1 request body read and dropped after its answer.
const DRAIN_LIMIT: u64 = 16 << 20;
/// How long the server waits for the rest of an unread body.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers `req`, then reads the part of its body the answer did not need (a request
/// refused before its body was read: 401, 403, 404, 413...). An HTTP/1 client sends its whole
/// body before it reads the answer; a server that closes the connection on unread bytes
/// makes the kernel reset it, and the client sees the reset, not the answer. HTTP/2
/// resets just the stream, so its bodies are left alone, as are bodies over
/// [`DRAIN_LIMIT`] and bodies the client waits to send (`Expect: 100-continue`).
async fn answer_then_drain(
    app: Router,
    req: http::Request<hyper::body::Incoming>,
) -> Result<axum::response::Response, std::convert::Infallible> {
    use http_body::Body as _;
    let drain = req.version() <= http::Version::HTTP_11
        && !req.body().is_end_stream()
        && !req.headers().contains_key(http::header::EXPECT)
        && req.body().size_hint().lower() <= DRAIN_LIMIT;
    if !drain {
        return app.oneshot(req.map(axum::body::Body::new)).await;
    }
    let (parts, body) = req.into_parts();
    let body = SharedBody(Arc::new(std::sync::Mutex::new(body)));
    let answer = app
        .oneshot(http::Request::from_parts(
            parts,
            axum::body::Body::new(body.clone()),
        ))
        .await;
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        use http_body_util::BodyExt as _;
        let mut rest = body;
        let mut read = 0u64;
        while read <= DRAIN_LIMIT {
            match rest.frame().await {
                Some(Ok(frame)) => {
                    read += frame.data_ref().map_or(0, |d| d.len() as u64);
                }
                _ => return true,
            }
        }
        false
    })
    .await;
    if drained != Ok(true) {
        tracing::debug!("an unread request body was too long or too slow to drain");
    }
    answer
}

/// A request body the handler and [`answer_then_drain`] both hold: the handler reads what
/// it needs, the server the rest.
#[derive(Clone)]
struct SharedBody(Arc<std::sync::Mutex<hyper::body::Incoming>>);

impl http_body::Body for SharedBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let mut body = self.0.lock().unwrap_or_else(|e| e.into_inner());
        std::pin::Pin::new(&mut *body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).size_hint()
    }
}
