//! An in-process API server on a temporary redb store, driven through the router with
//! bearer tokens for a system admin and the admins of tenants `acme` and `beta`.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use centaurus_api::{ApiConfig, region};
use centaurus_core::store::{RedbStore, Store};
use centaurus_tenancy::{Identity, TokenFile};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

pub struct Harness {
    pub api: Arc<centaurus_api::ApiServer>,
    pub app: axum::Router,
    pub store: Arc<dyn Store>,
    /// The static token file (the system token; tests add others).
    pub tokens: Arc<TokenFile>,
    pub system: String,
    _dir: tempfile::TempDir,
}

pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: http::HeaderMap,
}

impl Harness {
    pub async fn new() -> Self {
        Self::with_config(ApiConfig::default()).await
    }

    pub async fn with_config(config: ApiConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(RedbStore::open(dir.path().join("store.redb")).unwrap());
        region::bootstrap(&*store).await.unwrap();
        let tokens_path = dir.path().join("tokens.csv");
        let tokens = Arc::new(TokenFile::load(&tokens_path).await.unwrap());
        let system = tokens
            .issue(Identity {
                user: "root".into(),
                tenant: "system".into(),
                groups: vec![],
                tenant_uid: None,
            })
            .await
            .unwrap();
        let (api, app) = region::app(store.clone(), tokens.clone(), config)
            .await
            .unwrap();
        Self {
            api,
            app,
            store,
            tokens,
            system,
            _dir: dir,
        }
    }

    /// Creates a tenant (as system) and returns a token of its admin.
    pub async fn tenant(&self, name: &str) -> String {
        let r = self
            .call(
                Method::POST,
                "/api/v1/tenants",
                Some(&self.system),
                Some(json!({"apiVersion": "v1", "kind": "Tenant", "metadata": {"name": name}})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        let r = self
            .call(
                Method::POST,
                &format!("/api/v1/tenants/{name}/token"),
                Some(&self.system),
                Some(json!({"user": "admin"})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["token"].as_str().unwrap().to_owned()
    }

    /// The UID of tenant `name`, as system reads it.
    pub async fn tenant_uid(&self, name: &str) -> Option<String> {
        let r = self
            .call(
                Method::GET,
                &format!("/api/v1/tenants/{name}"),
                Some(&self.system),
                None,
            )
            .await;
        r.body["metadata"]["uid"].as_str().map(str::to_owned)
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body: Bytes = body.into();
        if !body.is_empty() {
            req = req.header("content-type", content_type);
        }
        let res = self
            .app
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Reply {
            status,
            body,
            headers,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        self.raw(
            method,
            path,
            token,
            "application/json",
            body.map(|b| b.to_string()).unwrap_or_default(),
        )
        .await
    }

    /// Opens a watch and returns a receiver of its events.
    pub async fn watch(&self, path: &str, token: &str) -> tokio::sync::mpsc::Receiver<Value> {
        let req = Request::get(path)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200);
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let mut body = res.into_body();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                    while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=pos).collect();
                        if tx
                            .send(serde_json::from_slice(&line).unwrap())
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        rx
    }
}

impl Harness {
    /// A watch request read for at most 100 ms: its status and the events as an array.
    pub async fn watch_briefly(&self, path: &str, token: &str) -> Reply {
        let req = Request::get(path)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let mut body = res.into_body();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_millis(100), async {
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
        })
        .await;
        let text = String::from_utf8_lossy(&buf);
        let body = if status == 200 {
            Value::Array(
                text.lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect(),
            )
        } else {
            serde_json::from_str(&text).unwrap()
        };
        Reply {
            status,
            body,
            headers,
        }
    }
}

pub async fn next_event(rx: &mut tokio::sync::mpsc::Receiver<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("event within 5 s")
        .expect("watch open")
}

pub fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
}

/// Samples this process's resident memory every 2 ms until stopped, keeping the peak.
pub struct PeakRss {
    peak: Arc<std::sync::atomic::AtomicU64>,
    done: Arc<std::sync::atomic::AtomicBool>,
    sampler: std::thread::JoinHandle<()>,
}

impl PeakRss {
    /// Starts sampling.
    pub fn start() -> Self {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let peak = Arc::new(AtomicU64::new(rss()));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, done) = (peak.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    peak.fetch_max(rss(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        Self {
            peak,
            done,
            sampler,
        }
    }

    /// Stops sampling; returns the peak, in bytes.
    pub fn stop(self) -> u64 {
        use std::sync::atomic::Ordering;
        self.done.store(true, Ordering::Relaxed);
        self.sampler.join().unwrap();
        self.peak.load(Ordering::Relaxed)
    }
}

/// Resident memory of this process, in bytes.
pub fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Writes `n` pods of about 500 bytes each into `tenant`'s `namespace`, straight into the
/// store, 64 at a time.
pub async fn fill_pods(store: &Arc<dyn Store>, tenant: &str, namespace: &str, n: usize) {
    let mut batch = tokio::task::JoinSet::new();
    for i in 0..n {
        let (store, tenant, namespace) = (store.clone(), tenant.to_owned(), namespace.to_owned());
        batch.spawn(async move {
            let name = format!("pod-{i:07}");
            let pod = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "tenant": tenant,
                    "uid": format!("00000000-0000-0000-0000-{i:012}"),
                    "labels": {"app": "web", "tier": "front"},
                    "creationTimestamp": "2026-12-01T00:00:00Z"},
                "spec": {"nodeName": format!("hollow-{}", i % 1000), "containers": [{"name": "c", "image": "busybox",
                    "command": ["sh", "-c", "sleep 3600"],
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
                "status": {"phase": "Running", "podIP": format!("10.0.{}.{}", i / 250 % 250, i % 250),
                    "conditions": [{"type": "Ready", "status": "True"}]}});
            store
                .create(
                    &format!("/registry/pods/{tenant}/{namespace}/{name}"),
                    Bytes::from(pod.to_string()),
                )
                .await
                .unwrap();
        });
        if batch.len() >= 64 {
            batch.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = batch.join_next().await {
        r.unwrap();
    }
}
