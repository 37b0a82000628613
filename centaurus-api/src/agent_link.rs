//! The API server's link to node agents, as kube-apiserver's to kubelets: an agent serves an
//! HTTPS endpoint ([`AgentEndpoint::serve`]) for what only it can answer (pod logs) and
//! publishes its address and the SHA-256 digest of its self-signed serving certificate in
//! its Node's `status.agentEndpoint`, which only that node (or the fleet that hosts it) may
//! write. The API server ([`AgentLink`]) connects with its own client certificate
//! (`system:centaurus:apiserver`, signed by the region's CA) and accepts only the
//! certificate the Node names; the agent answers only that identity.
//!
//! The endpoint serves `GET /containerLogs/{tenant}/{namespace}/{pod}[/{container}]`, and
//! WebSockets at `/exec/{tenant}/{namespace}/{pod}?QUERY` (a remote command session in
//! `v5.channel.k8s.io` frames, the query as `pods/exec` takes it) and
//! `/portForward/{tenant}/{namespace}/{pod}/{port}` (the connection's bytes). Both are
//! set up before the upgrade, so a failure is an HTTP answer with its reason.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, RawQuery, State};
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

use crate::pods::{PodStreams, StreamError};
use crate::streams::{Conn, Session, StreamRequest};
use crate::tls::Pki;
use centaurus_core::remote::NodeUsage;

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
    ) -> Result<Vec<u8>, StreamError>;

    /// A session with a workload of the pod `tenant/namespace/name`.
    async fn exec(
        &self,
        tenant: &str,
        namespace: &str,
        name: &str,
        request: &StreamRequest,
    ) -> Result<Session, StreamError> {
        let _ = (tenant, namespace, request);
        Err(StreamError::BadRequest(format!(
            "this agent offers no sessions with pod {name}"
        )))
    }

    /// What the agent's node `node` and its pods use now.
    async fn usage(&self, node: &str) -> Result<NodeUsage, StreamError> {
        Err(StreamError::BadRequest(format!(
            "this agent does not measure node {node}"
        )))
    }

    /// A connection to `port` in the network namespace of the pod `tenant/namespace/name`.
    async fn port_forward(
        &self,
        tenant: &str,
        namespace: &str,
        name: &str,
        port: u16,
    ) -> Result<Conn, StreamError> {
        let _ = (tenant, namespace, port);
        Err(StreamError::BadRequest(format!(
            "this agent forwards no ports of pod {name}"
        )))
    }
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
            .route(
                "/stats/{node}",
                get(
                    |s: State<Arc<dyn NodePods>>,
                     Path(node): Path<String>,
                     cert: Option<axum::Extension<ClientCert>>| async move {
                        if let Some(refused) = unless_api_server(cert) {
                            return refused;
                        }
                        match s.0.usage(&node).await {
                            Ok(u) => axum::Json(u).into_response(),
                            Err(e) => refusal(e),
                        }
                    },
                ),
            )
            .route(
                "/exec/{tenant}/{namespace}/{pod}",
                get(
                    |s: State<Arc<dyn NodePods>>,
                     Path((t, ns, p)): Path<(String, String, String)>,
                     RawQuery(q): RawQuery,
                     cert: Option<axum::Extension<ClientCert>>,
                     ws: WebSocketUpgrade| async move {
                        if let Some(refused) = unless_api_server(cert) {
                            return refused;
                        }
                        let attach = !q.as_deref().is_some_and(|q| q.contains("command="));
                        let request = match crate::streams::parse_request(q.as_deref(), attach) {
                            Ok(r) => r,
                            Err(e) => return (StatusCode::BAD_REQUEST, e.message).into_response(),
                        };
                        match s.0.exec(&t, &ns, &p, &request).await {
                            Ok(session) => {
                                ws.protocols([crate::streams::V5]).on_upgrade(|socket| {
                                    crate::streams::serve_session(socket, session, true)
                                })
                            }
                            Err(e) => refusal(e),
                        }
                    },
                ),
            )
            .route(
                "/portForward/{tenant}/{namespace}/{pod}/{port}",
                get(
                    |s: State<Arc<dyn NodePods>>,
                     Path((t, ns, p, port)): Path<(String, String, String, u16)>,
                     cert: Option<axum::Extension<ClientCert>>,
                     ws: WebSocketUpgrade| async move {
                        if let Some(refused) = unless_api_server(cert) {
                            return refused;
                        }
                        match s.0.port_forward(&t, &ns, &p, port).await {
                            Ok(conn) => {
                                ws.on_upgrade(|socket| crate::streams::serve_bytes(socket, conn))
                            }
                            Err(e) => refusal(e),
                        }
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

/// The refusal of every caller but the region's API servers.
fn unless_api_server(cert: Option<axum::Extension<ClientCert>>) -> Option<Response> {
    if cert.is_some_and(|c| is_api_server(&c.0)) {
        return None;
    }
    Some(
        (
            StatusCode::FORBIDDEN,
            "only the region's API servers may ask this agent",
        )
            .into_response(),
    )
}

/// An agent's failure as an HTTP answer.
fn refusal(e: StreamError) -> Response {
    match e {
        StreamError::BadRequest(m) => (StatusCode::BAD_REQUEST, m).into_response(),
        StreamError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m).into_response(),
    }
}

async fn answer_logs(
    pods: &dyn NodePods,
    cert: Option<axum::Extension<ClientCert>>,
    tenant: &str,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
) -> Response {
    if let Some(refused) = unless_api_server(cert) {
        return refused;
    }
    match pods.logs(tenant, namespace, pod, container).await {
        Ok(log) => (StatusCode::OK, log).into_response(),
        Err(e) => refusal(e),
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
pub struct AgentLink {
    nodes: NodeDirectory,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl AgentLink {
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

    async fn node(&self, node: &str) -> Result<Option<Node>, StreamError> {
        let key = model::object_key(Node::PLURAL, Node::SCOPE, "", "", node);
        let unavailable = |e: &dyn std::fmt::Display| {
            StreamError::Unavailable(format!("reading node {node}: {e}"))
        };
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

    async fn endpoint_of(&self, node: &str) -> Result<Published, StreamError> {
        let node_obj = self
            .node(node)
            .await?
            .ok_or_else(|| StreamError::Unavailable(format!("node {node} does not exist")))?;
        node_obj
            .status
            .and_then(|s| s.agent_endpoint)
            .ok_or_else(|| {
                StreamError::Unavailable(format!("the agent of node {node} serves no endpoint"))
            })
    }

    /// A TLS connection to the agent at `ep` (its certificate pinned, ours the API
    /// server's) and the authority to address it by.
    async fn connect(
        &self,
        ep: &Published,
    ) -> Result<
        (
            tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
            String,
        ),
        String,
    > {
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
        Ok((tls, authority))
    }

    async fn fetch(&self, ep: &Published, path: &str) -> Result<(StatusCode, Bytes), String> {
        let (tls, authority) = self.connect(ep).await?;
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
impl PodStreams for AgentLink {
    async fn logs(&self, pod: &Pod, container: Option<&str>) -> Result<Vec<u8>, StreamError> {
        let ep = self.endpoint_of(&pod.spec.node_name).await?;
        let m = &pod.metadata;
        let mut path = format!("/containerLogs/{}/{}/{}", m.tenant, m.namespace, m.name);
        if let Some(c) = container {
            path.push('/');
            path.push_str(c);
        }
        let (status, body) = tokio::time::timeout(AGENT_TIMEOUT, self.fetch(&ep, &path))
            .await
            .map_err(|_| StreamError::Unavailable(format!("{} did not answer in time", ep.url)))?
            .map_err(StreamError::Unavailable)?;
        let text = || String::from_utf8_lossy(&body).into_owned();
        match status {
            StatusCode::OK => Ok(body.to_vec()),
            StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => Err(StreamError::BadRequest(text())),
            other => Err(StreamError::Unavailable(format!(
                "the agent of node {} answered {other}: {}",
                pod.spec.node_name,
                text()
            ))),
        }
    }

    async fn exec(&self, pod: &Pod, request: &StreamRequest) -> Result<Session, StreamError> {
        let m = &pod.metadata;
        let path = format!(
            "/exec/{}/{}/{}?{}",
            m.tenant,
            m.namespace,
            m.name,
            crate::streams::request_query(request)
        );
        let ws = self.websocket(pod, &path, Some(crate::streams::V5)).await?;
        Ok(crate::streams::session_over(ws))
    }

    async fn usage(&self, node: &str) -> Result<NodeUsage, StreamError> {
        let ep = self.endpoint_of(node).await?;
        let (status, body) =
            tokio::time::timeout(AGENT_TIMEOUT, self.fetch(&ep, &format!("/stats/{node}")))
                .await
                .map_err(|_| {
                    StreamError::Unavailable(format!("{} did not answer in time", ep.url))
                })?
                .map_err(StreamError::Unavailable)?;
        if status != StatusCode::OK {
            return Err(StreamError::Unavailable(format!(
                "the agent of node {node} answered {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        serde_json::from_slice(&body)
            .map_err(|e| StreamError::Unavailable(format!("the figures of node {node}: {e}")))
    }

    async fn port_forward(&self, pod: &Pod, port: u16) -> Result<Conn, StreamError> {
        let m = &pod.metadata;
        let path = format!(
            "/portForward/{}/{}/{}/{port}",
            m.tenant, m.namespace, m.name
        );
        let ws = self.websocket(pod, &path, None).await?;
        Ok(crate::streams::bytes_of(ws))
    }
}

impl AgentLink {
    /// A WebSocket to `path` on the agent of `pod`'s node, offering `protocol`. An agent's
    /// refusal is its HTTP answer, with the reason it gave.
    async fn websocket(
        &self,
        pod: &Pod,
        path: &str,
        protocol: Option<&str>,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
        StreamError,
    > {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let ep = self.endpoint_of(&pod.spec.node_name).await?;
        let node = &pod.spec.node_name;
        let open = async {
            let (tls, authority) = self.connect(&ep).await.map_err(StreamError::Unavailable)?;
            let mut req = format!("wss://{authority}{path}")
                .into_client_request()
                .map_err(|e| StreamError::Unavailable(e.to_string()))?;
            if let Some(p) = protocol {
                req.headers_mut().insert(
                    http::header::SEC_WEBSOCKET_PROTOCOL,
                    http::HeaderValue::from_str(p).expect("a protocol name"),
                );
            }
            match tokio_tungstenite::client_async(req, tls).await {
                Ok((ws, _)) => Ok(ws),
                Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                    let why = res
                        .body()
                        .as_deref()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_default();
                    Err(match res.status() {
                        StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => {
                            StreamError::BadRequest(why)
                        }
                        s => StreamError::Unavailable(format!(
                            "the agent of node {node} answered {s}: {why}"
                        )),
                    })
                }
                Err(e) => Err(StreamError::Unavailable(format!(
                    "the agent of node {node}: {e}"
                ))),
            }
        };
        tokio::time::timeout(AGENT_TIMEOUT, open)
            .await
            .map_err(|_| StreamError::Unavailable(format!("{} did not answer in time", ep.url)))?
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
