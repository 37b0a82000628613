//! `?watch=true`: a stream of `{"type": …, "object": …}` lines, one per change.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use centaurus_core::store::{EventKind, StoreError, range_all};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::codec::{self, object_of};
use crate::error::{ApiError, ApiResult};
use crate::query::Params;
use crate::server::{ApiServer, Target};

/// Counts the watch as closed when the stream task ends, however it ends.
struct WatchGuard(Arc<ApiServer>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.metrics.watch_delta(-1);
    }
}

fn line(kind: &str, object: Value) -> Bytes {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

/// Starts a watch. Without a resourceVersion (or with `0`, or with `sendInitialEvents`) the
/// current objects come first as `ADDED` (followed, for `sendInitialEvents` with bookmarks,
/// by the bookmark that ends them); with one, the changes after it. History that was compacted away ends the
/// stream with an `ERROR` event carrying a 410 `Expired` status, so clients list again.
pub(crate) async fn watch(
    api: Arc<ApiServer>,
    target: Target,
    params: Params,
    accept: Option<&str>,
) -> ApiResult<Response> {
    let table = codec::wants_table(accept);
    let prefix = target.prefix();
    let revision = params.revision()?.filter(|_| !params.send_initial_events);
    let (initial, start) = match revision {
        Some(rv) => (Vec::new(), rv + 1),
        None => {
            let all = range_all(&*api.store, &prefix)
                .await
                .map_err(|e| ApiError::from_store(e, target.info.plural, ""))?;
            let mut items = Vec::new();
            for kv in &all.kvs {
                let mut obj = object_of(kv)?;
                if ApiServer::selected(&obj, &params) {
                    target.info.served(&mut obj);
                    items.push(obj);
                }
            }
            (items, all.revision + 1)
        }
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let stream = match api.store.watch(&prefix, start).await {
        Ok(s) => Some(s),
        Err(e) if e.is_gone() => {
            let _ = tx
                .send(line(
                    "ERROR",
                    ApiError::from_store(e, target.info.plural, "").status(),
                ))
                .await;
            None
        }
        Err(e) => return Err(ApiError::from_store(e, target.info.plural, "")),
    };
    let encode = {
        let info = target.info.clone();
        move |obj: Value| -> Value {
            if table {
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                codec::table(&info, &[obj], &rv, None)
            } else {
                obj
            }
        }
    };
    if let Some(mut stream) = stream {
        let info = target.info.clone();
        let bookmark_every = api.config.bookmark_interval;
        tokio::spawn(async move {
            api.metrics.watch_delta(1);
            let _closed = WatchGuard(api.clone());
            for obj in initial {
                if tx.send(line("ADDED", encode(obj))).await.is_err() {
                    return;
                }
            }
            if params.send_initial_events && params.allow_bookmarks {
                let end = json!({"kind": info.kind, "apiVersion": info.api_version(),
                    "metadata": {"resourceVersion": (start - 1).to_string(),
                        "annotations": {"k8s.io/initial-events-end": "true"}}});
                if tx.send(line("BOOKMARK", end)).await.is_err() {
                    return;
                }
            }
            let mut last = start - 1;
            let deadline = params.timeout.map(|t| tokio::time::Instant::now() + t);
            let mut bookmarks = tokio::time::interval(bookmark_every);
            bookmarks.tick().await;
            loop {
                let until_deadline = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = until_deadline => return,
                    _ = bookmarks.tick(), if params.allow_bookmarks => {
                        let mark = json!({"kind": info.kind, "apiVersion": info.api_version(),
                            "metadata": {"resourceVersion": last.to_string()}});
                        if tx.send(line("BOOKMARK", mark)).await.is_err() {
                            return;
                        }
                    }
                    ev = stream.next() => {
                        let ev = match ev {
                            None => return,
                            Some(Err(e)) => {
                                let status = match e {
                                    StoreError::Compacted { .. } | StoreError::WatchLagged { .. } => ApiError::from_store(e, info.plural, "").status(),
                                    other => ApiError::internal(format!("watch failed: {other}")).status(),
                                };
                                let _ = tx.send(line("ERROR", status)).await;
                                return;
                            }
                            Some(Ok(ev)) => ev,
                        };
                        last = ev.revision();
                        let Ok(mut obj) = object_of(&ev.kv) else { continue };
                        if !ApiServer::selected(&obj, &params) {
                            continue;
                        }
                        info.served(&mut obj);
                        let kind = match ev.kind {
                            EventKind::Delete => "DELETED",
                            EventKind::Put if ev.kv.create_revision == ev.kv.mod_revision => "ADDED",
                            EventKind::Put => "MODIFIED",
                        };
                        if tx.send(line(kind, encode(obj))).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    let body = Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>),
    );
    Ok(Response::builder()
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("static headers"))
}
