//! The subresources beside the object verbs: `pods/{name}/log` (through a [`PodStreams`]
//! provider, here one over an in-memory log), `pods/{name}/action`, the `scale` of
//! Deployments, and watches with `sendInitialEvents` as kubectl's streaming lists use them.

mod common;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Body;
use centaurus_api::{PodStreams, StreamError};
use centaurus_core::model::Pod;
use common::{Harness, next_event, pod};
use http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Logs of container `c` of any pod, from a shared buffer.
struct MemoryLogs(Arc<Mutex<Vec<u8>>>);

#[async_trait]
impl PodStreams for MemoryLogs {
    async fn logs(&self, pod: &Pod, container: Option<&str>) -> Result<Vec<u8>, StreamError> {
        match container.unwrap_or("c") {
            "c" => Ok(self.0.lock().unwrap().clone()),
            other => Err(StreamError::BadRequest(format!(
                "container {other} is not valid for pod {}",
                pod.metadata.name
            ))),
        }
    }
}

/// Creates pod `name` bound to node `n1` in `phase`.
async fn bound_pod(h: &Harness, token: &str, base: &str, name: &str, phase: &str) {
    let mut p = pod(name);
    p["spec"]["nodeName"] = json!("n1");
    let r = h
        .call(Method::POST, &format!("{base}/pods"), Some(token), Some(p))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let mut p = r.body;
    p["status"] = json!({"phase": phase});
    let r = h
        .call(
            Method::PUT,
            &format!("{base}/pods/{name}/status"),
            Some(token),
            Some(p),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn pod_logs_come_from_the_provider() {
    let h = Harness::new().await;
    let acme = h.tenant("acme").await;
    let beta = h.tenant("beta").await;
    let base = "/api/v1/namespaces/default";
    bound_pod(&h, &acme, base, "web", "Running").await;
    let log = format!("{base}/pods/web/log");

    // No node agent serves logs yet.
    let r = h.call(Method::GET, &log, Some(&acme), None).await;
    assert_eq!(r.status, 503, "{}", r.body);

    let buffer = Arc::new(Mutex::new(b"one\ntwo\n".to_vec()));
    assert!(h.api.set_pod_streams(Arc::new(MemoryLogs(buffer.clone()))));
    let r = h.call(Method::GET, &log, Some(&acme), None).await;
    assert_eq!((r.status.as_u16(), r.body), (200, json!("one\ntwo\n")));
    let r = h
        .call(
            Method::GET,
            &format!("{log}?tailLines=1"),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(r.body, json!("two\n"));
    let r = h
        .call(
            Method::GET,
            &format!("{log}?container=x"),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body["message"].as_str().unwrap().contains("not valid"));
    let r = h
        .call(
            Method::GET,
            &format!("{log}?tailLines=-3"),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(r.status, 400);
    // A pod that has not started has no log yet; a missing one is 404.
    bound_pod(&h, &acme, base, "early", "Pending").await;
    let r = h
        .call(
            Method::GET,
            &format!("{base}/pods/early/log"),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("waiting to start")
    );
    let r = h
        .call(
            Method::GET,
            &format!("{base}/pods/nope/log"),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(r.status, 404);
    // Another tenant reads its own (absent) pod under the same name, or is refused acme's.
    let r = h.call(Method::GET, &log, Some(&beta), None).await;
    assert_eq!(r.status, 404);
    let r = h
        .call(
            Method::GET,
            "/api/v1/tenants/acme/namespaces/default/pods/web/log",
            Some(&beta),
            None,
        )
        .await;
    assert_eq!(r.status, 403);
    // Logs are read-only.
    let r = h
        .call(Method::PUT, &log, Some(&acme), Some(json!({})))
        .await;
    assert_eq!(r.status, 404);

    // follow: what is written later arrives on the same response, which ends with the pod.
    let req = Request::get(format!("{log}?follow=true"))
        .header("authorization", format!("Bearer {acme}"))
        .body(Body::empty())
        .unwrap();
    let res = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let reader = tokio::spawn(async move { res.into_body().collect().await.unwrap().to_bytes() });
    // With limitBytes the followed log ends once that many bytes are sent.
    let req = Request::get(format!("{log}?follow=true&limitBytes=12"))
        .header("authorization", format!("Bearer {acme}"))
        .body(Body::empty())
        .unwrap();
    let res = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let limited = tokio::spawn(async move { res.into_body().collect().await.unwrap().to_bytes() });
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    buffer.lock().unwrap().extend_from_slice(b"three\n");
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let limited = tokio::time::timeout(std::time::Duration::from_secs(2), limited)
        .await
        .expect("a followed log ends at limitBytes while the pod runs")
        .unwrap();
    assert_eq!(&limited[..], b"one\ntwo\nthre");
    let mut p = h
        .call(Method::GET, &format!("{base}/pods/web"), Some(&acme), None)
        .await
        .body;
    p["status"]["phase"] = json!("Succeeded");
    let r = h
        .call(
            Method::PUT,
            &format!("{base}/pods/web/status"),
            Some(&acme),
            Some(p),
        )
        .await;
    assert_eq!(r.status, 200);
    let followed = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
        .await
        .expect("the followed log ends with the pod")
        .unwrap();
    assert_eq!(&followed[..], b"one\ntwo\nthree\n");
}

#[tokio::test]
async fn vm_actions_become_action_objects() {
    let h = Harness::new().await;
    let acme = h.tenant("acme").await;
    let base = "/api/v1/namespaces/default";
    let vm = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "vm1"},
        "spec": {"virtualMachine": {"name": "vm", "image": "tiny"}}});
    let r = h
        .call(Method::POST, &format!("{base}/pods"), Some(&acme), Some(vm))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = h
        .call(
            Method::POST,
            &format!("{base}/pods"),
            Some(&acme),
            Some(pod("web")),
        )
        .await;
    assert_eq!(r.status, 201);

    let r = h
        .call(
            Method::POST,
            &format!("{base}/pods/vm1/action"),
            Some(&acme),
            Some(
                json!({"apiVersion": "v1", "kind": "CustomAction", "actionName": "reboot",
                "rebootParams": {"delayInSeconds": 3}}),
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["kind"], "Action");
    assert_eq!(r.body["metadata"]["tenant"], "acme");
    assert_eq!(
        r.body["spec"]["podAction"],
        json!({"podName": "vm1", "rebootAction": {"delayInSeconds": 3}})
    );
    let name = r.body["metadata"]["name"].as_str().unwrap().to_owned();
    assert!(name.starts_with("vm1-reboot-"), "{name}");
    let r = h
        .call(
            Method::GET,
            &format!("{base}/actions/{name}"),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(r.status, 200);

    let r = h
        .call(
            Method::POST,
            &format!("{base}/pods/vm1/action"),
            Some(&acme),
            Some(json!({"snapshotAction": {"snapshotName": "s1"}})),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        r.body["spec"]["podAction"]["snapshotAction"]["snapshotName"],
        "s1"
    );

    for (path, body, status) in [
        ("vm1", json!({"actionName": "explode"}), 400),
        ("vm1", json!({"actionName": "snapshot"}), 422),
        ("web", json!({"actionName": "reboot"}), 400),
        ("nope", json!({"actionName": "reboot"}), 404),
    ] {
        let r = h
            .call(
                Method::POST,
                &format!("{base}/pods/{path}/action"),
                Some(&acme),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, status, "{path} {body}: {}", r.body);
    }
    let r = h
        .raw(
            Method::POST,
            &format!("{base}/pods/vm1/action"),
            Some(&acme),
            "application/json",
            "{not json",
        )
        .await;
    assert_eq!(r.status, 400);
    // Only the two good requests left objects behind.
    let r = h
        .call(Method::GET, &format!("{base}/actions"), Some(&acme), None)
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn deployments_scale_through_the_scale_subresource() {
    let h = Harness::new().await;
    let t = h.system.clone();
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    assert_eq!(
        h.call(Method::POST, deployments, Some(&t), Some(d))
            .await
            .status,
        201
    );
    let scale = format!("{deployments}/web/scale");
    let r = h.call(Method::GET, &scale, Some(&t), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        (&r.body["kind"], &r.body["apiVersion"]),
        (&json!("Scale"), &json!("autoscaling/v1"))
    );
    assert_eq!(r.body["spec"]["replicas"], 3);
    assert_eq!(r.body["status"]["selector"], "app=web");
    let stale = r.body["metadata"]["resourceVersion"].clone();

    // kubectl scale: a merge patch.
    let r = h
        .raw(
            Method::PATCH,
            &scale,
            Some(&t),
            "application/merge-patch+json",
            r#"{"spec":{"replicas":5}}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["spec"]["replicas"], 5);
    let d = h
        .call(Method::GET, &format!("{deployments}/web"), Some(&t), None)
        .await
        .body;
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox"
    );

    // PUT with the old resourceVersion conflicts; a negative count is invalid.
    let put = |replicas: Value, rv: Value| {
        json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": "web", "resourceVersion": rv}, "spec": {"replicas": replicas}})
    };
    let r = h
        .call(Method::PUT, &scale, Some(&t), Some(put(json!(2), stale)))
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = h
        .call(
            Method::PUT,
            &scale,
            Some(&t),
            Some(put(json!(-1), json!(""))),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let r = h
        .call(
            Method::PUT,
            &scale,
            Some(&t),
            Some(put(json!(1), json!(""))),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["spec"]["replicas"], 1);
    // Pods have no scale.
    let r = h
        .call(
            Method::GET,
            "/api/v1/namespaces/default/pods/web/scale",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn streaming_lists_end_their_initial_events_with_a_bookmark() {
    let h = Harness::new().await;
    let t = h.system.clone();
    for name in ["a", "b"] {
        h.call(
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(&t),
            Some(pod(name)),
        )
        .await;
    }
    let mut w = h
        .watch(
            "/api/v1/namespaces/default/pods?watch=true&sendInitialEvents=true\
             &allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&resourceVersion=1",
            &t,
        )
        .await;
    let mut names = Vec::new();
    for _ in 0..2 {
        let ev = next_event(&mut w).await;
        assert_eq!(ev["type"], "ADDED");
        names.push(
            ev["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(names, ["a", "b"]);
    let end = next_event(&mut w).await;
    assert_eq!(end["type"], "BOOKMARK");
    assert_eq!(
        end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    h.call(
        Method::POST,
        "/api/v1/namespaces/default/pods",
        Some(&t),
        Some(pod("c")),
    )
    .await;
    let ev = next_event(&mut w).await;
    assert_eq!(
        (
            ev["type"].as_str(),
            ev["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("c"))
    );
}
