//! The API server's link to node agents, as kube-apiserver's to kubelets: an agent serves an
//! HTTPS endpoint ([`AgentEndpoint::serve`]) for what only it can answer (pod logs) and
//! publishes its address and the SHA-256 digest of its self-signed serving certificate in
//! its Node's `status.agentEndpoint`, which only that node (or the fleet that hosts it) may
//! write. The API server ([`AgentLogs`]) connects with its own client certificate
//! (`system:centaurus:apiserver`, signed by the region's CA) and accepts only the
//! certificate the Node names; the agent answers only that identity.
//!
//! The endpoint serves `GET /containerLogs/{tenant}/{namespace}/{pod}[/{container}]`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use centaurus_core::model::{self, AgentEndpoint as Published, Node, Pod, Resource};
use centaurus_core::store::Store;
use centaurus_tenancy::identity::API_SERVER;
use centaurus_tenancy::tokens::sha256_hex;
use centaurus_tenancy::{ClientCert, authn::TENANT_ORG_PREFIX};
use http::StatusCode;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpListener;

use crate::pods::{LogError, PodLogs};
use crate::tls::Pki;

/// Largest log an agent's answer may carry.
pub const MAX_LOG_BYTES: usize = 32 * 1024 * 1024;

/// How long the API server waits to connect to an agent and for its answer.
const AGENT_TIMEOUT: Duration = Duration::from_secs(10);

/// What an agent answers through its endpoint.
#[async_trait]
pub trait NodePods: Send + Sync + 'static {
    /// Everything `container` (may be omitted for a pod with one workload) of the pod
    /// `tenant/namespace/name` bound to one of this agent's nodes has written.
    async fn logs(
        &self,
        tenant: &str,
        namespace: &str,
        name: &str,
        container: Option<&str>,
    ) -> Result<Vec<u8>, LogError>;
}

/// An agent's HTTPS endpoint: its listener and self-signed serving certificate.
pub struct AgentEndpoint {
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    published: Published,
}

impl AgentEndpoint {
    /// Listens on `listen` with a fresh self-signed certificate, accepting only client
    /// certificates signed by the CA in `ca_pem`. `host` is the address the API servers
    /// reach this host at (used when `listen` is unspecified, `0.0.0.0`).
    pub async fn bind(listen: SocketAddr, host: &str, ca_pem: &[u8]) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("the agent endpoint cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let ip = if addr.ip().is_unspecified() {
            host.to_owned()
        } else {
            addr.ip().to_string()
        };
        let key = rcgen::generate_simple_self_signed(vec![ip.clone()])
            .context("making the agent's serving certificate")?;
        let der = key.cert.der().clone();
        let published = Published {
            url: match ip.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V6(_)) => format!("https://[{ip}]:{}", addr.port()),
                _ => format!("https://{ip}:{}", addr.port()),
            },
            certificate_sha256: sha256_hex(&der),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(c.context("the region's CA")?)?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()?;
        let key_der = PrivateKeyDer::try_from(key.signing_key.serialize_der())
            .map_err(|e| anyhow::anyhow!("the agent's serving key: {e}"))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![der], key_der)?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            listener,
            tls: Arc::new(tls),
            published,
        })
    }

    /// What the agent's Nodes publish (`status.agentEndpoint`).
    pub fn published(&self) -> Published {
        self.published.clone()
    }

    /// Serves `pods` until `shutdown` completes.
    pub async fn serve(
        self,
        pods: Arc<dyn NodePods>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let app = axum::Router::new()
            .route(
                "/containerLogs/{tenant}/{namespace}/{pod}",
                get(
                    |s: State<Arc<dyn NodePods>>,
                     Path((t, ns, p)): Path<(String, String, String)>,
                     cert: Option<axum::Extension<ClientCert>>| async move {
                        answer_logs(&*s.0, cert, &t, &ns, &p, None).await
                    },
                ),
            )
            .route(
                "/containerLogs/{tenant}/{namespace}/{pod}/{container}",
                get(
                    |s: State<Arc<dyn NodePods>>,
                     Path((t, ns, p, c)): Path<(String, String, String, String)>,
                     cert: Option<axum::Extension<ClientCert>>| async move {
                        answer_logs(&*s.0, cert, &t, &ns, &p, Some(&c)).await
                    },
                ),
            )
            .with_state(pods);
        crate::tls::serve(self.listener, self.tls, app, shutdown).await;
    }
}

/// True for the API servers' client certificate.
fn is_api_server(cert: &ClientCert) -> bool {
    cert.common_name == API_SERVER.user
        && cert
            .organizations
            .iter()
            .any(|o| o.strip_prefix(TENANT_ORG_PREFIX) == Some(model::SYSTEM_TENANT))
}

async fn answer_logs(
    pods: &dyn NodePods,
    cert: Option<axum::Extension<ClientCert>>,
    tenant: &str,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
) -> Response {
    if !cert.is_some_and(|c| is_api_server(&c.0)) {
        return (
            StatusCode::FORBIDDEN,
            "only the region's API servers may ask this agent",
        )
            .into_response();
    }
    match pods.logs(tenant, namespace, pod, container).await {
        Ok(log) => (StatusCode::OK, log).into_response(),
        Err(LogError::BadRequest(m)) => (StatusCode::BAD_REQUEST, m).into_response(),
        Err(LogError::Unavailable(m)) => (StatusCode::SERVICE_UNAVAILABLE, m).into_response(),
    }
}

/// Where the API server reads the Nodes that publish their agents' endpoints.
enum NodeDirectory {
    /// Its own store (the region, or a resource partition).
    Store(Arc<dyn Store>),
    /// The resource partitions of a tenant partition, through their API servers.
    Partitions(Vec<centaurus_client::Client>),
}

/// Pod logs fetched from the agent of each pod's node over HTTPS.
pub struct AgentLogs {
    nodes: NodeDirectory,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl AgentLogs {
    /// Reads Nodes from `store`; authenticates to agents with a client certificate for
    /// `system:centaurus:apiserver` issued now by `pki`.
    pub fn new(store: Arc<dyn Store>, pki: &Pki) -> anyhow::Result<Self> {
        Self::with_nodes(NodeDirectory::Store(store), pki)
    }

    /// For a tenant partition: reads Nodes from the resource partitions `resources` (as
    /// `system:centaurus:apiserver`, which may read Nodes there).
    pub fn across(resources: Vec<centaurus_client::Client>, pki: &Pki) -> anyhow::Result<Self> {
        Self::with_nodes(NodeDirectory::Partitions(resources), pki)
    }

    fn with_nodes(nodes: NodeDirectory, pki: &Pki) -> anyhow::Result<Self> {
        let (cert, key) = pki.issue_client(API_SERVER.user, model::SYSTEM_TENANT, None)?;
        let chain = CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<_, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes())?;
        Ok(Self { nodes, chain, key })
    }

    async fn node(&self, node: &str) -> Result<Option<Node>, LogError> {
        let key = model::object_key(Node::PLURAL, Node::SCOPE, "", "", node);
        let unavailable =
            |e: &dyn std::fmt::Display| LogError::Unavailable(format!("reading node {node}: {e}"));
        match &self.nodes {
            NodeDirectory::Store(store) => {
                let Some(kv) = store.get(&key).await.map_err(|e| unavailable(&e))? else {
                    return Ok(None);
                };
                serde_json::from_slice(&kv.value)
                    .map(Some)
                    .map_err(|e| unavailable(&e))
            }
            NodeDirectory::Partitions(clients) => {
                let mut failed = None;
                for c in clients {
                    match c.api::<Node>().get(&key).await {
                        Ok(Some(n)) => return Ok(Some(n)),
                        Ok(None) => {}
                        Err(e) => failed = Some(e),
                    }
                }
                // Absent where it could be read, and a partition could not be asked.
                match failed {
                    Some(e) => Err(unavailable(&e)),
                    None => Ok(None),
                }
            }
        }
    }

    async fn endpoint_of(&self, node: &str) -> Result<Published, LogError> {
        let node_obj = self
            .node(node)
            .await?
            .ok_or_else(|| LogError::Unavailable(format!("node {node} does not exist")))?;
        node_obj
            .status
            .and_then(|s| s.agent_endpoint)
            .ok_or_else(|| {
                LogError::Unavailable(format!("the agent of node {node} serves no endpoint"))
            })
    }

    async fn fetch(&self, ep: &Published, path: &str) -> Result<(StatusCode, Bytes), String> {
        let authority = ep
            .url
            .strip_prefix("https://")
            .ok_or_else(|| format!("agent endpoint {:?} is not https", ep.url))?
            .trim_end_matches('/')
            .to_owned();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                sha256: ep.certificate_sha256.clone(),
                provider,
            }))
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| e.to_string())?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpStream::connect(&authority)
            .await
            .map_err(|e| format!("connecting to {}: {e}", ep.url))?;
        // The certificate is checked by its digest, not by name.
        let name = ServerName::try_from("centaurus-agent").expect("a valid name");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {}: {e}", ep.url))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header(http::header::HOST, &authority)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let res = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = res.status();
        let body = Limited::new(res.into_body(), MAX_LOG_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer of {}: {e}", ep.url))?
            .to_bytes();
        Ok((status, body))
    }
}

#[async_trait]
impl PodLogs for AgentLogs {
    async fn logs(&self, pod: &Pod, container: Option<&str>) -> Result<Vec<u8>, LogError> {
        let ep = self.endpoint_of(&pod.spec.node_name).await?;
        let m = &pod.metadata;
        let mut path = format!("/containerLogs/{}/{}/{}", m.tenant, m.namespace, m.name);
        if let Some(c) = container {
            path.push('/');
            path.push_str(c);
        }
        let (status, body) = tokio::time::timeout(AGENT_TIMEOUT, self.fetch(&ep, &path))
            .await
            .map_err(|_| LogError::Unavailable(format!("{} did not answer in time", ep.url)))?
            .map_err(LogError::Unavailable)?;
        let text = || String::from_utf8_lossy(&body).into_owned();
        match status {
            StatusCode::OK => Ok(body.to_vec()),
            StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => Err(LogError::BadRequest(text())),
            other => Err(LogError::Unavailable(format!(
                "the agent of node {} answered {other}: {}",
                pod.spec.node_name,
                text()
            ))),
        }
    }
}

/// Accepts exactly the certificate whose SHA-256 a Node published.
#[derive(Debug)]
struct Pinned {
    sha256: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if sha256_hex(end_entity) == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the agent's certificate is not the one its Node publishes".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
