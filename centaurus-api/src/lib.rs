//! The Centaurus API server: Kubernetes-compatible REST and watch for every registered kind,
//! with Arktos tenant paths and the short Kubernetes paths resolved to the caller's tenant.
//!
//! [`router`] builds the axum application: discovery and OpenAPI from the registry, the
//! [`centaurus_tenancy::AuthnLayer`], and [`ApiServer`] for every resource path.
//! [`tls::serve`] runs it over HTTPS with the region's [`tls::Pki`]; [`local::InProcess`]
//! is the transport of `centaurus-client` for components in the server's process.

mod accounts;
pub mod agent_link;
pub mod apply;
pub mod codec;
mod cpu;
pub mod discovery;
pub mod error;
mod join;
mod lifecycle;
mod list;
pub mod local;
pub mod metrics;
pub mod openapi;
pub mod partition;
pub mod patch;
pub mod pods;
pub mod protobuf;
pub mod query;
mod quota;
pub mod region;
pub mod relocation;
pub mod resource_metrics;
mod review;
pub mod route;
mod scale;
pub mod selector;
mod server;
pub mod spdy;
pub mod streams;
pub mod tls;
mod watch;

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use error::{ApiError, ApiResult};
pub use pods::{PodStreams, StreamError};
pub use server::{ApiConfig, ApiServer};

/// The aggregated discovery document (`apidiscovery.k8s.io/v2`) when the client's
/// `Accept` asks for it, as kubectl does: every resource in one answer.
fn aggregated(api: &ApiServer, headers: &http::HeaderMap, core: bool) -> Option<Response> {
    let accept = headers.get(http::header::ACCEPT)?.to_str().ok()?;
    let wants = accept.split(',').any(|t| {
        let t: Vec<&str> = t.split(';').map(str::trim).collect();
        t.contains(&"g=apidiscovery.k8s.io")
            && t.contains(&"v=v2")
            && t.contains(&"as=APIGroupDiscoveryList")
    });
    if !wants {
        return None;
    }
    let mut res = Json(discovery::aggregated(api.registry(), core)).into_response();
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(discovery::AGGREGATED_CONTENT_TYPE),
    );
    res.headers_mut()
        .insert(http::header::VARY, http::HeaderValue::from_static("Accept"));
    Some(res)
}

async fn api_versions(State(api): State<Arc<ApiServer>>, headers: http::HeaderMap) -> Response {
    aggregated(&api, &headers, true)
        .unwrap_or_else(|| Json(discovery::core_versions()).into_response())
}

async fn api_groups(State(api): State<Arc<ApiServer>>, headers: http::HeaderMap) -> Response {
    aggregated(&api, &headers, false)
        .unwrap_or_else(|| Json(discovery::groups(api.registry())).into_response())
}

async fn core_resources(State(api): State<Arc<ApiServer>>) -> Response {
    match discovery::resources(api.registry(), "", "v1") {
        Some(v) => Json(v).into_response(),
        None => ApiError::no_route("/api/v1").into_response(),
    }
}

async fn group(State(api): State<Arc<ApiServer>>, Path(g): Path<String>) -> Response {
    match discovery::group(api.registry(), &g) {
        Some(v) => Json(v).into_response(),
        None => ApiError::no_route(&format!("/apis/{g}")).into_response(),
    }
}

async fn group_resources(
    State(api): State<Arc<ApiServer>>,
    Path((g, v)): Path<(String, String)>,
) -> Response {
    if (g.as_str(), v.as_str()) == (resource_metrics::GROUP, resource_metrics::VERSION)
        && let Some(doc) = resource_metrics::discovery(api.registry())
    {
        return Json(doc).into_response();
    }
    match discovery::resources(api.registry(), &g, &v) {
        Some(doc) => Json(doc).into_response(),
        None => ApiError::no_route(&format!("/apis/{g}/{v}")).into_response(),
    }
}

async fn openapi_index(State(api): State<Arc<ApiServer>>) -> Response {
    Json(api.openapi().index()).into_response()
}

async fn openapi_document(State(api): State<Arc<ApiServer>>, Path(gv): Path<String>) -> Response {
    match api.openapi().document(&gv) {
        Some(doc) => Json(doc).into_response(),
        None => ApiError::no_route(&format!("/openapi/v3/{gv}")).into_response(),
    }
}

/// The group whose members may read `/metrics` without being system users (Kubernetes'
/// name for monitoring agents).
pub const MONITORING_GROUP: &str = "system:monitoring";

/// Region-wide counters: for system users (not the components') and the
/// [`MONITORING_GROUP`] only, as they describe every tenant's traffic.
/// Ready when the store answers within 2 s (a server cut off from etcd is not).
async fn readyz(State(api): State<Arc<ApiServer>>) -> Response {
    match tokio::time::timeout(std::time::Duration::from_secs(2), api.store.revision()).await {
        Ok(Ok(_)) => "ok".into_response(),
        Ok(Err(e)) => (
            http::StatusCode::SERVICE_UNAVAILABLE,
            format!("the store failed: {e}"),
        )
            .into_response(),
        Err(_) => (
            http::StatusCode::SERVICE_UNAVAILABLE,
            "the store did not answer within 2 s",
        )
            .into_response(),
    }
}

async fn metrics(
    State(api): State<Arc<ApiServer>>,
    caller: Option<axum::Extension<centaurus_tenancy::Identity>>,
) -> Response {
    match caller {
        Some(axum::Extension(id))
            if (id.is_system() && !centaurus_tenancy::confine::is_component(&id))
                || id.groups.iter().any(|g| g == MONITORING_GROUP) =>
        {
            api.metrics_text().into_response()
        }
        _ => ApiError::forbidden(format!(
            "/metrics describes every tenant: it is readable by system users and the group {MONITORING_GROUP:?} only"
        ))
        .into_response(),
    }
}

async fn resource_or_404(state: State<Arc<ApiServer>>, req: Request) -> Response {
    let p = req.uri().path();
    if p.starts_with("/api/") || p.starts_with("/apis/") {
        ApiServer::handle(state, req).await
    } else {
        ApiError::no_route(p).into_response()
    }
}

async fn version() -> Json<serde_json::Value> {
    Json(discovery::version())
}

/// The application: discovery, OpenAPI, health, and every resource path, behind
/// authentication.
pub fn router(api: Arc<ApiServer>, authn: centaurus_tenancy::AuthnLayer) -> axum::Router {
    axum::Router::new()
        // The official Python client asks for `/version/`; Kubernetes answers both.
        .route("/version", get(version))
        .route("/version/", get(version))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/livez", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/api", get(api_versions))
        .route("/api/v1", get(core_resources))
        .route("/apis", get(api_groups))
        .route("/apis/{group}", get(group))
        .route("/apis/{group}/{version}", get(group_resources))
        .route("/openapi/v3", get(openapi_index))
        .route("/openapi/v3/{*gv}", get(openapi_document))
        .fallback(resource_or_404)
        .with_state(api)
        .layer(authn)
}
