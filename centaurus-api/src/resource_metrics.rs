//! The resource metrics API, `metrics.k8s.io/v1beta1` (what `kubectl top` reads):
//! `PodMetrics` in a tenant's namespaces and `NodeMetrics` for system users, from what node
//! agents measure (cgroups of runc containers, QEMU processes, simulated figures on hollow
//! nodes), asked of each node's agent when a request needs it and kept for a few seconds,
//! as metrics-server keeps its scrapes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use centaurus_core::model::{Node, Pod, Registry, Resource as _};
use centaurus_core::remote::{NodeUsage, Usage};
use centaurus_tenancy::{Identity, Verb};
use futures::StreamExt as _;
use http::StatusCode;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::query::Params;
use crate::route::ResourcePath;
use crate::server::{ApiServer, json_response};

/// The API group.
pub const GROUP: &str = "metrics.k8s.io";
/// Its version.
pub const VERSION: &str = "v1beta1";

/// How long a node's figures are served before its agent is asked again.
const FRESH: Duration = Duration::from_secs(10);
/// Agents asked at once for one request.
const FAN_OUT: usize = 16;

/// Node figures recently fetched, by node.
#[derive(Default)]
pub struct UsageCache(Mutex<HashMap<String, (Instant, Arc<NodeUsage>)>>);

impl UsageCache {
    fn get(&self, node: &str) -> Option<Arc<NodeUsage>> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.get(node)
            .filter(|(at, _)| at.elapsed() < FRESH)
            .map(|(_, u)| u.clone())
    }

    fn put(&self, usage: NodeUsage) -> Arc<NodeUsage> {
        let usage = Arc::new(usage);
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, (at, _)| at.elapsed() < FRESH);
        m.insert(usage.node.clone(), (Instant::now(), usage.clone()));
        usage
    }
}

/// The discovery document of `metrics.k8s.io/v1beta1` for a server of `registry`'s
/// kinds: the metrics of pods where pods are served, of nodes where nodes are (a tenant
/// partition has no nodes, a resource partition no pods); None where neither is.
pub fn discovery(registry: &Registry) -> Option<Value> {
    let served = |plural: &str| registry.by_plural("", "v1", plural).is_some();
    let mut resources = Vec::new();
    if served(Pod::PLURAL) {
        resources.push(
            json!({"name": "pods", "singularName": "", "namespaced": true,
            "kind": "PodMetrics", "verbs": ["get", "list"]}),
        );
    }
    if served(Node::PLURAL) {
        resources.push(
            json!({"name": "nodes", "singularName": "", "namespaced": false,
            "kind": "NodeMetrics", "verbs": ["get", "list"]}),
        );
    }
    (!resources.is_empty()).then(|| {
        json!({"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": format!("{GROUP}/{VERSION}"), "resources": resources})
    })
}

/// CPU as the metrics API writes it (nanocores).
fn cpu(u: &Usage) -> String {
    format!("{}n", u.cpu_nanocores)
}

/// Memory as the metrics API writes it (KiB).
fn memory(u: &Usage) -> String {
    format!("{}Ki", u.memory_bytes / 1024)
}

fn metadata(name: &str, namespace: Option<&str>, labels: &Value, timestamp: &str) -> Value {
    let mut m = json!({"name": name, "creationTimestamp": timestamp, "labels": labels});
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    m
}

impl ApiServer {
    /// Serves a `metrics.k8s.io/v1beta1` path for `caller`.
    pub(crate) async fn resource_metrics(
        &self,
        caller: &Identity,
        rp: &ResourcePath,
        query: Option<&str>,
    ) -> ApiResult<axum::response::Response> {
        let params = Params::parse(query)?;
        let plural = match rp.plural.as_str() {
            "pods" => Pod::PLURAL,
            "nodes" => Node::PLURAL,
            other => {
                return Err(ApiError::no_route(&format!(
                    "{other} in {GROUP}/{VERSION}: it serves pods and nodes"
                )));
            }
        };
        if rp.subresource.is_some() || params.watch {
            return Err(ApiError::method_not_allowed(
                "metrics are read with get and list",
            ));
        }
        // Metrics are authorized as reads of what they measure, in the caller's space.
        let target = self.target(
            caller,
            &ResourcePath {
                group: String::new(),
                version: "v1".into(),
                plural: plural.into(),
                ..rp.clone()
            },
        )?;
        let verb = if target.name.is_some() {
            Verb::Get
        } else {
            Verb::List
        };
        self.authorize(caller, verb, plural, &target, &params)
            .await?;
        let objects: Vec<Value> = match &target.name {
            Some(name) => vec![self.get(&target, name).await?],
            None => {
                let prefix = target.prefix();
                centaurus_core::store::range_all(&*self.store, &prefix)
                    .await
                    .map_err(|e| ApiError::from_store(e, plural, ""))?
                    .kvs
                    .iter()
                    .filter_map(|kv| crate::codec::object_of(kv).ok())
                    .filter(|o| ApiServer::selected(o, &params))
                    .collect()
            }
        };
        let nodes: Vec<String> = if plural == Node::PLURAL {
            objects
                .iter()
                .filter_map(|o| o.pointer("/metadata/name")?.as_str().map(str::to_owned))
                .collect()
        } else {
            let mut n: Vec<String> = objects
                .iter()
                .filter_map(|o| o.pointer("/spec/nodeName")?.as_str().map(str::to_owned))
                .filter(|n| !n.is_empty())
                .collect();
            n.sort();
            n.dedup();
            n
        };
        let usage = self.node_usage(&nodes).await;
        let items: Vec<Value> = if plural == Node::PLURAL {
            objects
                .iter()
                .filter_map(|o| {
                    let name = o.pointer("/metadata/name")?.as_str()?;
                    let u = usage.get(name)?;
                    Some(json!({
                        "kind": "NodeMetrics", "apiVersion": format!("{GROUP}/{VERSION}"),
                        "metadata": metadata(name, None, o.pointer("/metadata/labels").unwrap_or(&json!({})), &u.timestamp),
                        "timestamp": u.timestamp, "window": format!("{}s", u.window_seconds),
                        "usage": {"cpu": cpu(&u.usage), "memory": memory(&u.usage)},
                    }))
                })
                .collect()
        } else {
            objects
                .iter()
                .filter_map(|o| {
                    let meta = o.get("metadata")?;
                    let (tenant, ns, name) = (
                        meta.get("tenant")?.as_str()?,
                        meta.get("namespace")?.as_str()?,
                        meta.get("name")?.as_str()?,
                    );
                    let node = usage.get(o.pointer("/spec/nodeName")?.as_str()?)?;
                    let pod = node
                        .pods
                        .iter()
                        .find(|p| p.tenant == tenant && p.namespace == ns && p.name == name)?;
                    let containers: Vec<Value> = pod
                        .workloads
                        .iter()
                        .map(|(c, u)| json!({"name": c, "usage": {"cpu": cpu(u), "memory": memory(u)}}))
                        .collect();
                    Some(json!({
                        "kind": "PodMetrics", "apiVersion": format!("{GROUP}/{VERSION}"),
                        "metadata": metadata(name, Some(ns), meta.get("labels").unwrap_or(&json!({})), &node.timestamp),
                        "timestamp": node.timestamp, "window": format!("{}s", node.window_seconds),
                        "containers": containers,
                    }))
                })
                .collect()
        };
        let kind = if plural == Node::PLURAL {
            "NodeMetrics"
        } else {
            "PodMetrics"
        };
        if let Some(name) = &target.name {
            return match items.into_iter().next() {
                Some(item) => Ok(json_response(StatusCode::OK, &item)),
                None => Err(ApiError::not_found(
                    &format!("{}.{GROUP}", plural),
                    &format!("{name}: not running, or its node agent cannot be asked"),
                )),
            };
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({"kind": format!("{kind}List"), "apiVersion": format!("{GROUP}/{VERSION}"),
                "metadata": {}, "items": items}),
        ))
    }

    /// The figures of `nodes`, fresh from the cache or from their agents (several at once);
    /// nodes whose agent cannot be asked are left out, as metrics-server leaves them out.
    async fn node_usage(&self, nodes: &[String]) -> BTreeMap<String, Arc<NodeUsage>> {
        let Some(provider) = self.pod_streams.get().cloned() else {
            return BTreeMap::new();
        };
        let cache = &self.usage_cache;
        futures::stream::iter(nodes.iter().cloned())
            .map(|node| {
                let provider = provider.clone();
                async move {
                    if let Some(u) = cache.get(&node) {
                        return Some((node, u));
                    }
                    match provider.usage(&node).await {
                        Ok(u) => Some((node, cache.put(u))),
                        Err(e) => {
                            tracing::debug!(node, error = %e, "no usage figures");
                            None
                        }
                    }
                }
            })
            .buffer_unordered(FAN_OUT)
            .filter_map(std::future::ready)
            .collect()
            .await
    }
}
