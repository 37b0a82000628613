//! [`Client`]: requests and watches over a [`Transport`], and typed access through
//! [`Client::api`].

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::error::{ClientError, Status};
use crate::kubeconfig::Connection;
use crate::transport::{Body, HttpsTransport, Transport};

/// A whole answer from the API.
#[derive(Clone, Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Body bytes.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Result<Value, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ClientError::Decode(format!(
                "response is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(512)])
            ))
        })
    }

    /// The answer as an error when it is not a success.
    pub fn success(self) -> Result<Self, ClientError> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(ClientError::Api(Status::of(
                self.status.as_u16(),
                &self.body,
            )))
        }
    }

    /// The body as JSON when the status is a success; the `Status` as an error otherwise.
    pub fn ok(self) -> Result<Value, ClientError> {
        self.success()?.json()
    }
}

/// A client of one region's API: cheap to clone, one connection shared by every clone.
#[derive(Clone)]
pub struct Client {
    transport: Arc<dyn Transport>,
    namespace: String,
    metrics: crate::metrics::ClientMetrics,
}

impl Client {
    /// An HTTPS client for `conn` (see [`crate::kubeconfig::Kubeconfig::connection`]).
    pub fn new(conn: Connection) -> Result<Self, ClientError> {
        Ok(Self {
            transport: Arc::new(HttpsTransport::new(&conn)?),
            namespace: conn.namespace,
            metrics: Default::default(),
        })
    }

    /// A client over any transport (the in-process one of `centaurus-api`, for example).
    pub fn with_transport(transport: Arc<dyn Transport>, namespace: impl Into<String>) -> Self {
        Self {
            transport,
            namespace: namespace.into(),
            metrics: Default::default(),
        }
    }

    /// What this client's requests (and every clone's) cost.
    pub fn metrics(&self) -> &crate::metrics::ClientMetrics {
        &self.metrics
    }

    /// The default namespace of the context.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Sends one request and returns the answer's head and streaming body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<http::Response<Body>, ClientError> {
        self.send_as(method, path, "application/json", content_type, body)
            .await
    }

    /// As [`Client::send`], accepting `accept`.
    pub async fn send_as(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<http::Response<Body>, ClientError> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::ACCEPT, accept);
        if !body.is_empty() {
            req = req.header(header::CONTENT_TYPE, content_type);
        }
        let req = req
            .body(body)
            .map_err(|e| ClientError::Request(format!("{path}: {e}")))?;
        self.send_request(req).await
    }

    /// Sends `req` as it is (method, path and query, headers, body): what a proxy
    /// forwards. Returns the answer's head and streaming body.
    pub async fn send_request(
        &self,
        req: Request<Bytes>,
    ) -> Result<http::Response<Body>, ClientError> {
        let method = req.method().clone();
        let started = std::time::Instant::now();
        let res = self.transport.send(req).await;
        let code = res.as_ref().ok().map(|r| r.status().as_u16());
        self.metrics.observe(&method, code, started.elapsed());
        res
    }

    /// Sends one request and reads the whole answer.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: impl Into<Bytes>,
    ) -> Result<Reply, ClientError> {
        let res = self.send(method, path, content_type, body.into()).await?;
        Self::read(res).await
    }

    /// GET, accepting `accept` (a `Table`, for example).
    pub async fn get_as(&self, path: &str, accept: &str) -> Result<Reply, ClientError> {
        let res = self
            .send_as(Method::GET, path, accept, "", Bytes::new())
            .await?;
        Self::read(res).await
    }

    async fn read(res: http::Response<Body>) -> Result<Reply, ClientError> {
        let status = res.status();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Transport(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok(Reply { status, body })
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Result<Reply, ClientError> {
        self.request(Method::GET, path, "", Bytes::new()).await
    }

    /// Sends a JSON body.
    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: &Value,
    ) -> Result<Reply, ClientError> {
        self.request(method, path, "application/json", body.to_string())
            .await
    }

    /// Opens a watch and yields each event as JSON (`{"type": ..., "object": ...}`).
    pub async fn watch(
        &self,
        path: &str,
    ) -> Result<impl Stream<Item = Result<Value, ClientError>> + Send + use<>, ClientError> {
        let res = self.send(Method::GET, path, "", Bytes::new()).await?;
        if !res.status().is_success() {
            let status = res.status();
            let body = res
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(ClientError::Api(Status::of(status.as_u16(), &body)));
        }
        Ok(json_lines(res.into_body()))
    }

    /// Access to any kind, by what the registry says of it, with JSON objects.
    pub fn dynamic(&self, kind: crate::api::KindRef) -> crate::api::DynamicApi {
        crate::api::DynamicApi::new(self.clone(), kind)
    }

    /// Typed access to kind `R`.
    pub fn api<R: centaurus_core::model::Resource>(&self) -> crate::api::Api<R> {
        crate::api::Api::new(self.clone())
    }
}

/// The JSON values of a newline-delimited stream, as they arrive. A line longer than
/// 64 MiB ends the stream with an error rather than growing without bound.
fn json_lines(body: Body) -> impl Stream<Item = Result<Value, ClientError>> + Send {
    const MAX_LINE: usize = 64 << 20;
    futures::stream::unfold(
        (Some(body), Vec::<u8>::new()),
        |(body, mut buf)| async move {
            let mut body = body?;
            loop {
                if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let v = serde_json::from_slice::<Value>(&line)
                        .map_err(|e| ClientError::Decode(format!("watch event: {e}")));
                    return Some((v, (Some(body), buf)));
                }
                if buf.len() > MAX_LINE {
                    let e = ClientError::Decode("watch event over 64 MiB".into());
                    return Some((Err(e), (None, buf)));
                }
                match body.frame().await {
                    None => return None,
                    Some(Err(e)) => {
                        let e = ClientError::Transport(format!("watch stream: {e}"));
                        return Some((Err(e), (None, buf)));
                    }
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            buf.extend_from_slice(&data);
                        }
                    }
                }
            }
        },
    )
    .boxed()
}
