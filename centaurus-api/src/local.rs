//! The in-process transport: a [`Transport`] that calls the API's router with a given
//! identity, so a component in the server's process takes the same path as a remote client
//! (authentication, tenant gate, admission, watch) without a socket.

use async_trait::async_trait;
use bytes::Bytes;
use centaurus_client::transport::{Body, Transport, boxed};
use centaurus_client::{Client, ClientError};
use centaurus_tenancy::{Identity, InProcessCaller};
use http::{Request, Response};
use tower::ServiceExt as _;

/// Requests as `identity`, into `router` (see [`crate::router`]).
#[derive(Clone)]
pub struct InProcess {
    router: axum::Router,
    identity: Identity,
}

impl InProcess {
    /// A transport into `router` as `identity`.
    pub fn new(router: axum::Router, identity: Identity) -> Self {
        Self { router, identity }
    }

    /// A [`Client`] over this transport (default namespace `default`).
    pub fn client(router: axum::Router, identity: Identity) -> Client {
        Client::with_transport(std::sync::Arc::new(Self::new(router, identity)), "default")
    }
}

#[async_trait]
impl Transport for InProcess {
    async fn send(&self, req: Request<Bytes>) -> Result<Response<Body>, ClientError> {
        let (mut parts, body) = req.into_parts();
        parts
            .extensions
            .insert(InProcessCaller(self.identity.clone()));
        let req = Request::from_parts(parts, axum::body::Body::from(body));
        let res = self
            .router
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|never| match never {});
        Ok(res.map(boxed))
    }
}
