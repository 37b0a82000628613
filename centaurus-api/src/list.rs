//! Lists: every page of one list (and of one paged list, through its `continue` tokens)
//! is read at one revision, the first page's, and the response streams to the client a
//! store page at a time, encoded off the serving threads, so a list's memory is a small
//! multiple of one page whatever the list's size.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use base64::Engine as _;
use bytes::Bytes;
use centaurus_core::store::{RangeOptions, RangeResult, Revision, StoreError};
use http::{StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::codec::{self, object_of};
use crate::error::{ApiError, ApiResult};
use crate::query::Params;
use crate::server::{ApiServer, Target};

/// Most objects read from the store at once.
const PAGE: usize = 500;

/// What a `continue` token holds (Kubernetes' shape): the list's revision and the last
/// key returned.
#[derive(Serialize, Deserialize)]
struct ContinueToken {
    v: String,
    rv: Revision,
    start: String,
}

impl ContinueToken {
    fn encode(rv: Revision, start: String) -> String {
        let token = ContinueToken {
            v: "meta.k8s.io/v1".into(),
            rv,
            start,
        };
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&token).expect("tokens encode"))
    }

    /// The revision and last key of a token for a list under `prefix`.
    fn decode(token: &str, prefix: &str) -> ApiResult<(Revision, String)> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| serde_json::from_slice::<ContinueToken>(&b).ok())
            .filter(|t| t.start.starts_with(prefix) && t.rv > 0)
            .map(|t| (t.rv, t.start))
            .ok_or_else(|| ApiError::bad_request("invalid continue token"))
    }
}

/// One store page encoded: its items (or table rows), comma-separated.
struct Encoded {
    bytes: Bytes,
    /// Items that matched the selectors.
    items: usize,
    /// The key to continue after, when the list's limit was reached with keys left.
    next: Option<String>,
}

impl ApiServer {
    /// `GET` of a collection.
    pub(crate) async fn list(
        self: &Arc<Self>,
        target: &Target,
        params: &Params,
        accept: Option<&str>,
    ) -> ApiResult<Response> {
        let prefix = target.prefix();
        let (at, after) = match &params.continue_token {
            None => (0, None),
            Some(t) => {
                let (rv, start) = ContinueToken::decode(t, &prefix)?;
                (rv, Some(start))
            }
        };
        let store = self.store.clone();
        // A small limit reads no more than it can return (a selector may need more pages).
        let page_size = match params.limit {
            0 => PAGE,
            limit => limit.min(PAGE),
        };
        let read = move |after: Option<String>, revision: Revision| {
            let (store, prefix) = (store.clone(), prefix.clone());
            async move {
                store
                    .range(
                        &prefix,
                        RangeOptions {
                            limit: page_size,
                            after,
                            revision,
                        },
                    )
                    .await
            }
        };
        let plural = target.info.plural;
        let gone = move |e: StoreError| match e {
            StoreError::Compacted { .. } if at > 0 => ApiError::gone(
                "the provided continue parameter is too old to display a consistent list result; start a new list without it",
            ),
            e => ApiError::from_store(e, plural, ""),
        };
        // The first page is read before answering, so its failures are the answer's status.
        let first = read(after, at).await.map_err(gone)?;
        let at = first.revision;
        let table = codec::wants_table(accept);
        let head = if table {
            format!(
                r#"{{"kind":"Table","apiVersion":"meta.k8s.io/v1","columnDefinitions":{},"rows":["#,
                codec::table_columns(&target.info)
            )
        } else {
            format!(
                r#"{{"kind":"{}List","apiVersion":"{}","items":["#,
                target.info.kind,
                target.info.api_version()
            )
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
        let api = self.clone();
        let (target, params) = (target.clone(), params.clone());
        tokio::spawn(async move {
            if tx.send(Ok(Bytes::from(head))).await.is_err() {
                return;
            }
            let mut page = first;
            let mut sent = 0usize;
            loop {
                let last = page.kvs.last().map(|kv| kv.key.clone());
                let more = page.more;
                let encoded = {
                    let size = page.kvs.iter().map(|kv| kv.value.len()).sum();
                    let (t, params) = (target.clone(), params.clone());
                    let left = (params.limit > 0).then(|| params.limit - sent);
                    api.offload(&target, size, move || {
                        encode_page(&t, &params, page, left, sent > 0, table)
                    })
                    .await
                };
                let encoded = match encoded {
                    Ok(e) => e,
                    Err(e) => return abort(&tx, e.message).await,
                };
                sent += encoded.items;
                if !encoded.bytes.is_empty() && tx.send(Ok(encoded.bytes)).await.is_err() {
                    return;
                }
                if encoded.next.is_some() || !more {
                    let mut meta = json!({"resourceVersion": at.to_string()});
                    if let Some(next) = encoded.next {
                        meta["continue"] = json!(ContinueToken::encode(at, next));
                    }
                    let _ = tx
                        .send(Ok(Bytes::from(format!(r#"],"metadata":{meta}}}"#))))
                        .await;
                    return;
                }
                page = match read(last, at).await {
                    Ok(p) => p,
                    Err(e) => return abort(&tx, e.to_string()).await,
                };
            }
        });
        let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut res = Response::new(body);
        *res.status_mut() = StatusCode::OK;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok(res)
    }
}

/// Ends a list response that has begun: the body breaks off, so the client sees a failed
/// transfer and never a short list it could take for whole.
async fn abort(tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>, why: String) {
    tracing::warn!(error = %why, "a list broke off");
    let _ = tx.send(Err(std::io::Error::other(why))).await;
}

/// The items (or table rows) of `page` that match the request's selectors, at most `left`
/// of them, comma-separated (and after a comma when `follows` earlier items).
fn encode_page(
    target: &Target,
    params: &Params,
    page: RangeResult,
    left: Option<usize>,
    follows: bool,
    table: bool,
) -> ApiResult<Encoded> {
    let rows = table.then(|| codec::TableRows::new(&target.info));
    let mut out = Encoded {
        bytes: Bytes::new(),
        items: 0,
        next: None,
    };
    let mut buf = Vec::with_capacity(page.kvs.iter().map(|kv| kv.value.len() + 32).sum());
    let count = page.kvs.len();
    for (i, kv) in page.kvs.iter().enumerate() {
        if left == Some(out.items) {
            break;
        }
        let mut obj = object_of(kv)?;
        if !ApiServer::selected(&obj, params) {
            continue;
        }
        target.info.served(&mut obj);
        let item: &Value = &match &rows {
            Some(rows) => rows.row(&obj),
            None => obj,
        };
        if follows || out.items > 0 {
            buf.push(b',');
        }
        serde_json::to_writer(&mut buf, item).map_err(|e| ApiError::internal(e.to_string()))?;
        out.items += 1;
        if left == Some(out.items) && (page.more || i + 1 < count) {
            out.next = Some(kv.key.clone());
        }
    }
    out.bytes = Bytes::from(buf);
    Ok(out)
}
