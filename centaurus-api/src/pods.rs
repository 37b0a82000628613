//! Pod subresources served beside the object verbs:
//!
//! - `GET …/pods/{name}/log`: what a container wrote, or a VM's serial console, read from the
//!   node agent through a [`PodStreams`] provider (`container`, `tailLines`, `limitBytes` and
//!   `follow` as in Kubernetes).
//! - `POST …/pods/{name}/action`: an Arktos VM action (reboot, snapshot, restore). The body is
//!   Arktos' `CustomAction` (`actionName` with `rebootParams`, `snapshotParams` or
//!   `restoreParams`) or a `PodAction` (`rebootAction`, …); the answer is the `Action` object
//!   the node agent carries out and reports on.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use centaurus_core::model::{Pod, Resource};
use http::{StatusCode, header};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::query::Params;
use crate::server::{ApiServer, Target};
use crate::streams::{Conn, Session, StreamRequest};
use centaurus_core::remote::NodeUsage;

/// Why a provider could not return a pod's log.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The request cannot be served as asked: no such container, none named in a pod with
    /// several, or not started yet.
    #[error("{0}")]
    BadRequest(String),
    /// The pod's node agent could not be asked.
    #[error("{0}")]
    Unavailable(String),
}

/// Where pod output and interactive sessions come from: the node agents that run the pods.
#[async_trait]
pub trait PodStreams: Send + Sync + 'static {
    /// Everything `container` (a container or the VM; may be omitted for a pod with one) of
    /// `pod` has written so far.
    async fn logs(&self, pod: &Pod, container: Option<&str>) -> Result<Vec<u8>, StreamError>;

    /// Runs a command in a container of `pod`, or attaches to a workload (an empty
    /// command): its console for a VM.
    async fn exec(&self, pod: &Pod, request: &StreamRequest) -> Result<Session, StreamError> {
        let _ = request;
        Err(StreamError::BadRequest(format!(
            "the node agent of pod {} offers no interactive sessions",
            pod.metadata.name
        )))
    }

    /// What `node` and its running pods use now (the metrics API's source).
    async fn usage(&self, node: &str) -> Result<NodeUsage, StreamError> {
        Err(StreamError::Unavailable(format!(
            "no node agent measures node {node}"
        )))
    }

    /// A connection to `port` in `pod`'s network namespace.
    async fn port_forward(&self, pod: &Pod, port: u16) -> Result<Conn, StreamError> {
        let _ = port;
        Err(StreamError::BadRequest(format!(
            "the node agent of pod {} offers no port forwarding",
            pod.metadata.name
        )))
    }
}

/// How often a followed log is read again.
const FOLLOW_PERIOD: Duration = Duration::from_millis(500);

/// Query parameters of `pods/{name}/log`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogParams {
    container: Option<String>,
    tail_lines: Option<usize>,
    limit_bytes: Option<usize>,
    follow: bool,
    previous: bool,
}

impl LogParams {
    /// Parses `container`, `tailLines`, `limitBytes`, `follow` and `previous`; a bad count
    /// is a 400.
    pub fn parse(query: Option<&str>) -> ApiResult<Self> {
        let mut p = Self::default();
        let count = |k: &str, v: &str| {
            v.parse::<usize>().map_err(|_| {
                ApiError::bad_request(format!("{k} {v:?} is not a non-negative integer"))
            })
        };
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "container" if !v.is_empty() => p.container = Some(v.into_owned()),
                "tailLines" => p.tail_lines = Some(count(&k, &v)?),
                "limitBytes" => p.limit_bytes = Some(count(&k, &v)?.max(1)),
                "follow" => p.follow = matches!(v.as_ref(), "true" | "1"),
                "previous" => p.previous = matches!(v.as_ref(), "true" | "1"),
                _ => {}
            }
        }
        Ok(p)
    }

    /// The part of a whole log this request shows.
    pub fn cut<'a>(&self, log: &'a [u8]) -> &'a [u8] {
        let mut start = 0;
        if let Some(n) = self.tail_lines {
            let body = log.strip_suffix(b"\n").unwrap_or(log);
            start = if n == 0 {
                log.len()
            } else {
                body.iter()
                    .enumerate()
                    .rev()
                    .filter(|(_, b)| **b == b'\n')
                    .nth(n - 1)
                    .map_or(0, |(i, _)| i + 1)
            };
        }
        let end = self
            .limit_bytes
            .map_or(log.len(), |l| log.len().min(start.saturating_add(l)));
        &log[start..end]
    }
}

impl From<StreamError> for ApiError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::BadRequest(m) => ApiError::bad_request(m),
            StreamError::Unavailable(m) => ApiError::unavailable(m),
        }
    }
}

/// A followed log: where it has been sent to, and how many bytes `limitBytes` leaves.
struct Follow {
    api: Arc<ApiServer>,
    target: Target,
    provider: Arc<dyn PodStreams>,
    container: Option<String>,
    sent_to: usize,
    first: Option<Bytes>,
    left: Option<usize>,
}

/// A stream subresource asked for without the upgrade it needs.
fn upgrade_needed(sub: &str, protocols: &str) -> ApiError {
    ApiError::bad_request(format!(
        "pods/{sub} is served over an upgraded connection: a WebSocket with the subprotocol {protocols}"
    ))
}

/// Answers `Upgrade: SPDY/3.1` (kubectl's fallback for port forwarding) and serves the
/// session on the upgraded connection.
fn spdy_upgrade<F, Fut>(parts: &mut http::request::Parts, connect: F) -> Response
where
    F: Fn(u16) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Conn, StreamError>> + Send + 'static,
{
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return ApiError::bad_request("this connection cannot be upgraded").into_response();
    };
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            crate::spdy::serve_port_forward(hyper_util::rt::TokioIo::new(upgraded), connect).await;
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1")
        .header(
            "X-Stream-Protocol-Version",
            crate::spdy::PORT_FORWARD_PROTOCOL,
        )
        .body(Body::empty())
        .expect("static headers")
}

fn text(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(body)
        .expect("static headers")
}

impl ApiServer {
    async fn pod(&self, target: &Target) -> ApiResult<Pod> {
        let obj = self.get_kv(target, target.name()).await?;
        serde_json::from_slice(&obj.value).map_err(|e| ApiError::internal(e.to_string()))
    }

    /// `GET pods/{name}/log`.
    pub(crate) async fn pod_log(
        self: &Arc<Self>,
        target: &Target,
        query: Option<&str>,
    ) -> ApiResult<Response> {
        let params = LogParams::parse(query)?;
        let pod = self.pod(target).await?;
        if params.previous {
            return Err(ApiError::bad_request(format!(
                "pod {}: the node agent keeps no log of previous container instances",
                pod.metadata.name
            )));
        }
        let phase = pod.status.as_ref().map_or("", |s| s.phase.as_str());
        if pod.spec.node_name.is_empty() || matches!(phase, "" | "Pending") {
            return Err(ApiError::bad_request(format!(
                "pod {} is waiting to start: {}",
                pod.metadata.name,
                if pod.spec.node_name.is_empty() {
                    "not scheduled yet"
                } else {
                    "its node agent is starting it"
                }
            )));
        }
        let provider = self.pod_streams.get().cloned().ok_or_else(|| {
            ApiError::unavailable(format!(
                "no node agent serves logs for node {}",
                pod.spec.node_name
            ))
        })?;
        let container = params.container.clone();
        let log = provider.logs(&pod, container.as_deref()).await?;
        let first = Bytes::copy_from_slice(params.cut(&log));
        if !params.follow {
            return Ok(text(Body::from(first)));
        }
        // Follow: send what is new every period until the pod ends or is gone, or until
        // `limitBytes` have been sent.
        let left = params.limit_bytes.map(|l| l - first.len());
        let follow = Follow {
            api: self.clone(),
            target: target.clone(),
            provider,
            container,
            sent_to: log.len(),
            first: Some(first),
            left,
        };
        let stream = futures::stream::unfold(follow, |mut f| async move {
            if let Some(first) = f.first.take() {
                return Some((Ok::<_, std::io::Error>(first), f));
            }
            loop {
                if f.left == Some(0) {
                    return None;
                }
                tokio::time::sleep(FOLLOW_PERIOD).await;
                let pod = f.api.pod(&f.target).await.ok()?;
                let log = f.provider.logs(&pod, f.container.as_deref()).await.ok()?;
                let ended = pod
                    .status
                    .as_ref()
                    .is_some_and(|st| matches!(st.phase.as_str(), "Succeeded" | "Failed"));
                if log.len() > f.sent_to {
                    let mut new = &log[f.sent_to..];
                    if let Some(left) = &mut f.left {
                        new = &new[..new.len().min(*left)];
                        *left -= new.len();
                    }
                    f.sent_to += new.len();
                    return Some((Ok(Bytes::copy_from_slice(new)), f));
                }
                // A restarted workload starts a new log.
                f.sent_to = f.sent_to.min(log.len());
                if ended {
                    return None;
                }
            }
        });
        Ok(text(Body::from_stream(stream)))
    }

    /// `pods/{name}/exec`, `attach` and `portforward`: upgrades the connection (a
    /// WebSocket, or SPDY/3.1 for port forwarding) and relays it to the pod's node agent.
    pub(crate) async fn pod_stream(
        self: &Arc<Self>,
        target: &Target,
        mut parts: http::request::Parts,
    ) -> ApiResult<Response> {
        use axum::extract::FromRequestParts as _;
        let sub = target.subresource.clone().unwrap_or_default();
        let query = parts.uri.query().map(str::to_owned);
        let request = match sub.as_str() {
            "portforward" => None,
            s => Some(crate::streams::parse_request(
                query.as_deref(),
                s == "attach",
            )?),
        };
        let pod = self.pod(target).await?;
        let phase = pod.status.as_ref().map_or("", |s| s.phase.as_str());
        if pod.spec.node_name.is_empty() || phase != "Running" {
            return Err(ApiError::bad_request(format!(
                "pod {} is not running (phase {}): {sub} needs a running pod",
                pod.metadata.name,
                if phase.is_empty() { "Pending" } else { phase }
            )));
        }
        let provider = self.pod_streams.get().cloned().ok_or_else(|| {
            ApiError::unavailable(format!(
                "no node agent serves streams for node {}",
                pod.spec.node_name
            ))
        })?;
        let offered = offered(&parts);
        let spdy = parts
            .headers
            .get(header::UPGRADE)
            .and_then(|u| u.to_str().ok())
            .is_some_and(|u| u.eq_ignore_ascii_case("SPDY/3.1"));
        let Some(request) = request else {
            let connect = move |port: u16| {
                let (provider, pod) = (provider.clone(), pod.clone());
                async move { provider.port_forward(&pod, port).await }
            };
            if spdy {
                return Ok(spdy_upgrade(&mut parts, connect));
            }
            let ws = WebSocketUpgrade::from_request_parts(&mut parts, &())
                .await
                .map_err(|_| upgrade_needed("portforward", crate::streams::PORT_FORWARD_TUNNEL))?;
            if !offered
                .iter()
                .any(|p| p == crate::streams::PORT_FORWARD_TUNNEL)
            {
                return Err(upgrade_needed(
                    "portforward",
                    crate::streams::PORT_FORWARD_TUNNEL,
                ));
            }
            return Ok(ws
                .protocols([crate::streams::PORT_FORWARD_TUNNEL])
                .on_upgrade(move |socket| {
                    crate::spdy::serve_port_forward(crate::streams::bytes_of(socket), connect)
                }));
        };
        let protocol = [crate::streams::V5, crate::streams::V4]
            .into_iter()
            .find(|p| offered.iter().any(|o| o == p));
        let (Some(protocol), Ok(ws)) = (
            protocol,
            WebSocketUpgrade::from_request_parts(&mut parts, &()).await,
        ) else {
            return Err(upgrade_needed(
                &sub,
                &format!("{}, {}", crate::streams::V5, crate::streams::V4),
            ));
        };
        Ok(ws
            .protocols([protocol])
            .on_upgrade(move |socket| async move {
                let session = match provider.exec(&pod, &request).await {
                    Ok(s) => s,
                    Err(e) => Session::failed(&e.to_string()),
                };
                crate::streams::serve_session(socket, session, protocol == crate::streams::V5).await
            }))
    }

    /// `POST pods/{name}/action`: records an `Action` for the pod's node agent.
    pub(crate) async fn pod_action(
        &self,
        target: &Target,
        content_type: Option<&str>,
        body: &Bytes,
        params: &Params,
    ) -> ApiResult<Value> {
        let pod = self.pod(target).await?;
        if pod.spec.virtual_machine.is_none() {
            return Err(ApiError::bad_request(format!(
                "pod {} is not a VM pod: actions apply to VMs only",
                pod.metadata.name
            )));
        }
        let request = self.decode(target, content_type, body).await?;
        let (verb, pod_action) = pod_action_of(&pod.metadata.name, &request)?;
        let info = self
            .registry
            .by_plural("", "v1", "actions")
            .cloned()
            .ok_or_else(|| ApiError::internal("the Action kind is not registered"))?;
        let actions = Target {
            info,
            subresource: None,
            name: None,
            ..target.clone()
        };
        let action = json!({
            "apiVersion": "v1", "kind": "Action",
            "metadata": {"generateName": format!("{}-{verb}-", pod.metadata.name)},
            "spec": {"podAction": pod_action},
        });
        self.create(&actions, action, params).await
    }

    /// `POST pods/{name}/binding`: assigns an unbound pod to a node as kube-scheduler does,
    /// `spec.nodeName` and a true `PodScheduled` condition in one write. A pod already
    /// assigned, being deleted, or of another UID than `metadata.uid` of the binding is a
    /// 409 conflict.
    pub(crate) async fn bind_pod(
        &self,
        target: &Target,
        content_type: Option<&str>,
        body: &Bytes,
        params: &Params,
    ) -> ApiResult<Value> {
        let binding = self.decode(target, content_type, body).await?;
        let node = binding
            .pointer("/target/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::bad_request("a Binding names its node in target.name"))?
            .to_owned();
        if let Some(kind) = binding.pointer("/target/kind").and_then(Value::as_str)
            && !kind.is_empty()
            && kind != "Node"
        {
            return Err(ApiError::bad_request(format!(
                "a pod binds to a Node, not a {kind}"
            )));
        }
        let uid = binding.pointer("/metadata/uid").and_then(Value::as_str);
        let name = target.name().to_owned();
        let conflict = |why: String| ApiError::conflict(Pod::PLURAL, &name, &why);
        loop {
            let kv = self.get_kv(target, &name).await?;
            let mut pod = crate::codec::object_of(&kv)?;
            if let Some(uid) = uid
                && pod.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid)
            {
                return Err(conflict(format!("the pod's UID is not {uid}")));
            }
            if let Some(bound) = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                return Err(conflict(format!(
                    "pod {name} is already assigned to node {bound}"
                )));
            }
            if pod.pointer("/metadata/deletionTimestamp").is_some() {
                return Err(conflict(format!("pod {name} is being deleted")));
            }
            pod["spec"]["nodeName"] = json!(node);
            let mut typed: Pod = serde_json::from_value(pod.clone())
                .map_err(|e| ApiError::internal(format!("stored pod {name}: {e}")))?;
            centaurus_core::model::set_pod_scheduled(&mut typed, "True", "", "");
            pod["status"] = serde_json::to_value(&typed.status)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            if let Some(m) = pod["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            if params.dry_run {
                break;
            }
            let bytes = Bytes::from(
                serde_json::to_vec(&pod).map_err(|e| ApiError::internal(e.to_string()))?,
            );
            match self.store.update(&kv.key, bytes, kv.mod_revision).await {
                Ok(_) => break,
                Err(centaurus_core::store::StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(e, Pod::PLURAL, &name)),
            }
        }
        Ok(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        )
    }
}

/// The action a request body asks for: its verb and the `spec.podAction` to record.
fn pod_action_of(pod: &str, request: &Value) -> ApiResult<(&'static str, Value)> {
    const ACTIONS: [(&str, &str, &str); 3] = [
        ("reboot", "rebootParams", "rebootAction"),
        ("snapshot", "snapshotParams", "snapshotAction"),
        ("restore", "restoreParams", "restoreAction"),
    ];
    let named = request.get("actionName").and_then(Value::as_str);
    let mut found = None;
    for (verb, params, field) in ACTIONS {
        let asked = if named.is_some_and(|n| n.eq_ignore_ascii_case(verb)) {
            Some(request.get(params).cloned().unwrap_or_else(|| json!({})))
        } else {
            request.get(field).cloned()
        };
        if let Some(args) = asked {
            if found.is_some() {
                return Err(ApiError::bad_request("an action request names one action"));
            }
            found = Some((verb, json!({"podName": pod, field: args})));
        }
    }
    found.ok_or_else(|| {
        ApiError::bad_request(format!(
            "no action named: set actionName to reboot, snapshot or restore{}",
            named.map(|n| format!(" (not {n:?})")).unwrap_or_default()
        ))
    })
}

/// Whether `plural` has the subresource `sub` for requests with a name.
pub(crate) fn has_subresource(plural: &str, sub: &str) -> bool {
    plural == Pod::PLURAL && matches!(sub, "log" | "action" | "binding")
}

/// True for the subresources served as streams over an upgraded connection.
pub(crate) fn is_stream(plural: &str, sub: Option<&str>) -> bool {
    plural == Pod::PLURAL && matches!(sub, Some("exec" | "attach" | "portforward"))
}

/// The subprotocols a WebSocket upgrade offers.
fn offered(parts: &http::request::Parts) -> Vec<String> {
    parts
        .headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_and_limit_cut_the_log() {
        let p = |q: &str| LogParams::parse(Some(q)).unwrap();
        let log = b"one\ntwo\nthree\n";
        assert_eq!(p("").cut(log), log);
        assert_eq!(p("tailLines=1").cut(log), b"three\n");
        assert_eq!(p("tailLines=2").cut(log), b"two\nthree\n");
        assert_eq!(p("tailLines=9").cut(log), log);
        assert_eq!(p("tailLines=0").cut(log), b"");
        assert_eq!(p("tailLines=1").cut(b"one\npartial"), b"partial");
        assert_eq!(p("limitBytes=5").cut(log), b"one\nt");
        assert_eq!(p("tailLines=2&limitBytes=3").cut(log), b"two");
        assert!(LogParams::parse(Some("tailLines=-1")).is_err());
        assert!(LogParams::parse(Some("limitBytes=x")).is_err());
        assert_eq!(p(&format!("limitBytes={}", usize::MAX)).cut(log), log);
        assert_eq!(
            p("container=vm&follow=true").container.as_deref(),
            Some("vm")
        );
    }

    #[test]
    fn action_bodies_in_both_shapes() {
        let (verb, a) = pod_action_of(
            "vm1",
            &json!({"kind": "CustomAction", "actionName": "Reboot", "rebootParams": {"delayInSeconds": 2}}),
        )
        .unwrap();
        assert_eq!(verb, "reboot");
        assert_eq!(
            a,
            json!({"podName": "vm1", "rebootAction": {"delayInSeconds": 2}})
        );
        let (verb, a) =
            pod_action_of("vm1", &json!({"snapshotAction": {"snapshotName": "s1"}})).unwrap();
        assert_eq!(verb, "snapshot");
        assert_eq!(a["snapshotAction"]["snapshotName"], "s1");
        assert!(pod_action_of("vm1", &json!({"actionName": "explode"})).is_err());
        assert!(pod_action_of("vm1", &json!({})).is_err());
        assert!(
            pod_action_of(
                "vm1",
                &json!({"actionName": "reboot", "restoreAction": {"snapshotID": "s"}})
            )
            .is_err()
        );
    }
}
