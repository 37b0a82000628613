//! Client errors: a Kubernetes `Status` answer becomes [`ClientError::Api`] with its code
//! and reason; everything else is a transport or decoding failure.

use serde_json::Value;

/// A `Status` answer of the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// HTTP status code (`code`).
    pub code: u16,
    /// Machine-readable reason (`NotFound`, `AlreadyExists`, `Conflict`, `Forbidden`, ...).
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

impl Status {
    /// The status of an answer with code `code` and body `body` (a `Status` object or not).
    pub fn of(code: u16, body: &[u8]) -> Self {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        Self {
            code,
            reason: text("reason").unwrap_or_default(),
            message: text("message")
                .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into()),
        }
    }
}

/// Why a request failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an error `Status`.
    #[error("{} ({} {})", .0.message, .0.code, .0.reason)]
    Api(Status),
    /// No server could be reached, or the connection failed mid-request.
    #[error("transport: {0}")]
    Transport(String),
    /// The answer was not what the verb expects.
    #[error("decode: {0}")]
    Decode(String),
    /// The request could not be built (bad key, bad object).
    #[error("request: {0}")]
    Request(String),
}

impl ClientError {
    /// The HTTP code of an API refusal.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Api(s) => Some(s.code),
            _ => None,
        }
    }

    /// 404: the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    /// 409 with reason `Conflict`: someone else wrote first.
    pub fn is_conflict(&self) -> bool {
        matches!(self, ClientError::Api(s) if s.code == 409 && s.reason != "AlreadyExists")
    }

    /// 409 with reason `AlreadyExists`.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, ClientError::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
    }

    /// 410: the history asked for is gone.
    pub fn is_gone(&self) -> bool {
        self.code() == Some(410)
    }

    /// 403: the caller may not do this.
    pub fn is_forbidden(&self) -> bool {
        self.code() == Some(403)
    }

    /// A failure worth retrying as is: transport faults, 429 and 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Api(s) => s.code == 429 || s.code >= 500,
            _ => false,
        }
    }
}

impl From<ClientError> for centaurus_core::controller::SourceError {
    fn from(e: ClientError) -> Self {
        if e.is_gone() {
            Self::Gone(e.to_string())
        } else {
            Self::Failed(e.to_string())
        }
    }
}
