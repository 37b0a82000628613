//! A load generator: many concurrent clients create, get and list pods over HTTPS while
//! watchers follow them; prints latency percentiles per verb and throughput.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use http::Method;
use serde_json::json;

use crate::client::Client;
use crate::kubeconfig::Connection;

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Concurrent clients, each on its own connection.
    pub clients: usize,
    /// Pods to create.
    pub pods: usize,
    /// Gets to issue (random created pods).
    pub gets: usize,
    /// Lists to issue (`limit=100` pages of the namespace).
    pub lists: usize,
    /// Watchers following the namespace during the creates.
    pub watchers: usize,
    /// Namespace to use (created if missing).
    pub namespace: String,
}

/// Latency figures of one verb.
#[derive(Clone, Debug)]
pub struct VerbStats {
    /// Verb name.
    pub verb: String,
    /// Requests completed.
    pub count: usize,
    /// Requests that failed.
    pub errors: usize,
    /// Wall time of the phase.
    pub elapsed: Duration,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Worst latency.
    pub max: Duration,
}

impl std::fmt::Display for VerbStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<7} {:>8} ok {:>5} err {:>9.0}/s  p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
            self.verb,
            self.count,
            self.errors,
            self.count as f64 / self.elapsed.as_secs_f64(),
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.max.as_secs_f64() * 1e3
        )
    }
}

impl VerbStats {
    /// The figures of `verb` from its requests' latencies, its failed requests and the
    /// wall time they took.
    pub fn of(
        verb: impl Into<String>,
        mut lat: Vec<Duration>,
        errors: usize,
        elapsed: Duration,
    ) -> Self {
        lat.sort();
        let at = |q: f64| {
            lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        Self {
            verb: verb.into(),
            count: lat.len(),
            errors,
            elapsed,
            p50: at(0.5),
            p99: at(0.99),
            max: lat.last().copied().unwrap_or_default(),
        }
    }
}

async fn phase<F, Fut>(
    verb: &'static str,
    clients: &[Arc<Client>],
    total: usize,
    op: F,
) -> VerbStats
where
    F: Fn(Arc<Client>, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<bool>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .cloned()
        .map(|c| {
            let next = next.clone();
            let op = op.clone();
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), 0);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return (lat, errors);
                    }
                    let t = Instant::now();
                    match op(c.clone(), i).await {
                        Ok(true) => lat.push(t.elapsed()),
                        _ => errors += 1,
                    }
                }
            })
        })
        .collect();
    let (mut lat, mut errors) = (Vec::with_capacity(total), 0);
    for t in tasks {
        let (l, e) = t.await.expect("load task");
        lat.extend(l);
        errors += e;
    }
    VerbStats::of(verb, lat, errors, started.elapsed())
}

/// Runs the load and returns per-verb figures plus the events the watchers saw.
pub async fn run(conn: Connection, spec: LoadSpec) -> anyhow::Result<(Vec<VerbStats>, usize)> {
    let mut clients = Vec::new();
    for _ in 0..spec.clients.max(1) {
        clients.push(Arc::new(Client::new(conn.clone())?));
    }
    let ns = spec.namespace.clone();
    let reply = clients[0]
        .send_json(
            Method::POST,
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await?;
    if !reply.status.is_success() && reply.status.as_u16() != 409 {
        reply.ok()?;
    }
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
    let seen = Arc::new(AtomicUsize::new(0));
    let mut watchers = Vec::new();
    for _ in 0..spec.watchers {
        let c = Client::new(conn.clone())?;
        let rv = clients[0]
            .get(&format!("/api/v1/namespaces/{ns}/pods?limit=1"))
            .await?
            .ok()?;
        let rv = rv
            .pointer("/metadata/resourceVersion")
            .and_then(|v| v.as_str())
            .unwrap_or("0")
            .to_owned();
        let mut events = Box::pin(
            c.watch(&format!(
                "/api/v1/namespaces/{ns}/pods?watch=true&resourceVersion={rv}"
            ))
            .await?,
        );
        let seen = seen.clone();
        watchers.push(tokio::spawn(async move {
            while let Some(Ok(_)) = events.next().await {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut out = Vec::new();
    let create_ns = ns.clone();
    let rid = run_id.clone();
    out.push(
        phase("create", &clients, spec.pods, move |c, i| {
            let ns = create_ns.clone();
            let name = format!("load-{rid}-{i}");
            async move {
                let pod = json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "labels": {"app": "load", "run": "x"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}});
                Ok(c.send_json(Method::POST, &format!("/api/v1/namespaces/{ns}/pods"), &pod).await?.status.is_success())
            }
        })
        .await,
    );
    let (get_ns, rid, created) = (ns.clone(), run_id.clone(), spec.pods.max(1));
    out.push(
        phase("get", &clients, spec.gets, move |c, i| {
            let p = format!(
                "/api/v1/namespaces/{get_ns}/pods/load-{rid}-{}",
                (i * 7919) % created
            );
            async move { Ok(c.get(&p).await?.status.is_success()) }
        })
        .await,
    );
    let list_ns = ns.clone();
    out.push(
        phase("list", &clients, spec.lists, move |c, _| {
            let p = format!("/api/v1/namespaces/{list_ns}/pods?limit=100");
            async move { Ok(c.get(&p).await?.status.is_success()) }
        })
        .await,
    );
    // Let watchers drain what the creates produced.
    let want = spec.pods * spec.watchers;
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in watchers {
        w.abort();
    }
    Ok((out, seen.load(Ordering::Relaxed)))
}
