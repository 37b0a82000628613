//! API errors, rendered as Kubernetes `Status` objects.

use axum::response::{IntoResponse, Response};
use centaurus_core::model::FieldError;
use centaurus_core::store::StoreError;
use http::StatusCode;
use serde_json::json;

/// An error answer: HTTP code, Kubernetes reason and a message, plus the offending fields
/// for `Invalid`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason} ({code}): {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// Kubernetes `reason` (`NotFound`, `Conflict`, …).
    pub reason: &'static str,
    /// For a person.
    pub message: String,
    /// Details: the kind and name concerned and field causes.
    pub details: Option<serde_json::Value>,
    /// For a 405: the methods the path serves (the `Allow` header).
    pub allow: Option<&'static str>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            allow: None,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }
    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "Unauthorized", message)
    }
    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }
    /// 404 for an object.
    pub fn not_found(plural: &str, name: &str) -> Self {
        let mut e = Self::new(404, "NotFound", format!("{plural} \"{name}\" not found"));
        e.details = Some(json!({"name": name, "kind": plural}));
        e
    }
    /// 404 for a path that serves nothing. Its details are empty, not absent, as
    /// Kubernetes sends them: clients tell a missing route from a missing object by that
    /// (kubectl debug dereferences them).
    pub fn no_route(path: &str) -> Self {
        let mut e = Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        );
        e.details = Some(json!({}));
        e
    }
    /// 405.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }
    /// 409 for a create of an existing name.
    pub fn already_exists(plural: &str, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "AlreadyExists",
            format!("{plural} \"{name}\" already exists"),
        );
        e.details = Some(json!({"name": name, "kind": plural}));
        e
    }
    /// 409 with its own message (server-side apply conflicts).
    pub fn conflict_message(message: impl Into<String>) -> Self {
        Self::new(409, "Conflict", message)
    }
    /// 409 for a stale resourceVersion.
    pub fn conflict(plural: &str, name: &str, why: &str) -> Self {
        let mut e = Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {plural} \"{name}\": {why}"),
        );
        e.details = Some(json!({"name": name, "kind": plural}));
        e
    }
    /// 410: the requested history was compacted.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }
    /// 413.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("request body exceeds the limit of {limit} bytes"),
        )
    }
    /// 415.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }
    /// 422: the object is invalid; every bad field is listed.
    pub fn invalid(kind: &str, name: &str, errors: &[FieldError]) -> Self {
        let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let causes: Vec<_> = errors
            .iter()
            .map(|e| json!({"reason": "FieldValueInvalid", "message": e.message, "field": e.field}))
            .collect();
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {}", list.join(", ")),
        );
        e.details = Some(json!({"name": name, "kind": kind, "causes": causes}));
        e
    }
    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }
    /// 503: the store is unavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// 503 with `Retry-After`: `tenant` is being moved between tenant partitions, and its
    /// space takes writes again when the move is over.
    pub fn moving(tenant: &str) -> Self {
        let mut e = Self::new(
            503,
            "ServiceUnavailable",
            format!("tenant {tenant} is being moved to another partition: try again shortly"),
        );
        e.details = Some(json!({"name": tenant, "kind": "tenants", "retryAfterSeconds": 1}));
        e
    }

    /// The error as a `Status` object.
    pub fn status(&self) -> serde_json::Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }

    /// Maps a store failure on `plural`/`name`.
    pub fn from_store(e: StoreError, plural: &str, name: &str) -> Self {
        match e {
            StoreError::NotFound { .. } => Self::not_found(plural, name),
            StoreError::AlreadyExists { .. } => Self::already_exists(plural, name),
            StoreError::Conflict { .. } => Self::conflict(
                plural,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ),
            StoreError::Compacted {
                requested,
                compacted,
            } => Self::gone(format!(
                "too old resource version: {requested} ({compacted})"
            )),
            StoreError::WatchLagged { .. } => Self::gone("watch fell behind; list again"),
            StoreError::FutureRevision { requested, current } => Self::new(
                504,
                "Timeout",
                format!("Too large resource version: {requested}, current: {current}"),
            ),
            StoreError::InvalidArgument(m) if m.contains("exceeds the limit") => {
                Self::new(413, "RequestEntityTooLarge", m)
            }
            StoreError::InvalidArgument(m) => Self::bad_request(m),
            StoreError::Backend(m) => Self::unavailable(format!("storage: {m}")),
            StoreError::Corrupt(m) => Self::internal(format!("storage: {m}")),
            StoreError::Closed => Self::unavailable("storage is shutting down"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut res = (code, self.status().to_string()).into_response();
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        let retry = self
            .details
            .as_ref()
            .and_then(|d| d["retryAfterSeconds"].as_u64());
        if let Some(methods) = self.allow {
            res.headers_mut()
                .insert(http::header::ALLOW, http::HeaderValue::from_static(methods));
        }
        if let Some(seconds) = retry {
            res.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
        }
        res
    }
}

/// Results of API operations.
pub type ApiResult<T> = Result<T, ApiError>;
