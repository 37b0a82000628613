//! Kubernetes verbs, errors and watch semantics, through the router.

mod common;

use common::{Harness, next_event, pod};
use http::Method;
use serde_json::json;

#[tokio::test]
async fn create_get_list_with_selectors_and_pages() {
    let h = Harness::new().await;
    let t = h.system.clone();
    for i in 0..5 {
        let mut p = pod(&format!("p{i}"));
        p["metadata"]["labels"]["idx"] = json!(i.to_string());
        let r = h
            .call(
                Method::POST,
                "/api/v1/namespaces/default/pods",
                Some(&t),
                Some(p),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.body["metadata"]["tenant"], "system");
        assert!(
            r.body["metadata"]["uid"].is_string()
                && r.body["metadata"]["resourceVersion"].is_string()
        );
    }
    let r = h
        .call(
            Method::GET,
            "/api/v1/namespaces/default/pods/p3",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body["metadata"]["name"].as_str()),
        (200, Some("p3"))
    );
    let r = h
        .call(
            Method::GET,
            "/api/v1/namespaces/default/pods?labelSelector=idx%20in%20(1,2)",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.body["kind"], "PodList");
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    let r = h
        .call(
            Method::GET,
            "/api/v1/pods?fieldSelector=metadata.name%3Dp4",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    // Pages of two: 2 + 2 + 1, each continue token leading on, every page at the first
    // page's revision, whatever is written between them.
    let mut names = Vec::new();
    let mut revisions = Vec::new();
    let mut path = "/api/v1/namespaces/default/pods?limit=2".to_owned();
    loop {
        let r = h.call(Method::GET, &path, Some(&t), None).await;
        names.extend(
            r.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned()),
        );
        revisions.push(r.body["metadata"]["resourceVersion"].clone());
        if revisions.len() == 1 {
            for (method, path, body) in [
                (Method::DELETE, "/api/v1/namespaces/default/pods/p3", None),
                (
                    Method::POST,
                    "/api/v1/namespaces/default/pods",
                    Some(pod("p2a")),
                ),
            ] {
                let r = h.call(method, path, Some(&t), body).await;
                assert!(r.status.is_success(), "{}", r.body);
            }
        }
        match r.body["metadata"]["continue"].as_str() {
            Some(c) => path = format!("/api/v1/namespaces/default/pods?limit=2&continue={c}"),
            None => break,
        }
    }
    assert_eq!(names, ["p0", "p1", "p2", "p3", "p4"]);
    assert!(
        revisions.iter().all(|r| *r == revisions[0]),
        "{revisions:?}"
    );
    let r = h
        .call(Method::GET, "/api/v1/pods?continue=bm9wZQ", Some(&t), None)
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn update_conflicts_patches_and_status() {
    let h = Harness::new().await;
    let t = h.system.clone();
    let created = h
        .call(
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(&t),
            Some(pod("web")),
        )
        .await
        .body;
    let mut stale = created.clone();
    stale["metadata"]["labels"]["v"] = json!("1");
    let r = h
        .call(
            Method::PUT,
            "/api/v1/namespaces/default/pods/web",
            Some(&t),
            Some(stale.clone()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = h
        .call(
            Method::PUT,
            "/api/v1/namespaces/default/pods/web",
            Some(&t),
            Some(stale),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body["reason"].as_str()),
        (409, Some("Conflict"))
    );

    let merge = h
        .raw(
            Method::PATCH,
            "/api/v1/namespaces/default/pods/web",
            Some(&t),
            "application/merge-patch+json",
            r#"{"metadata":{"labels":{"v":"2"}}}"#,
        )
        .await;
    assert_eq!(merge.body["metadata"]["labels"]["v"], "2");
    let jp = h
        .raw(
            Method::PATCH,
            "/api/v1/namespaces/default/pods/web",
            Some(&t),
            "application/json-patch+json",
            r#"[{"op":"replace","path":"/spec/containers/0/image","value":"busybox:2"}]"#,
        )
        .await;
    assert_eq!(jp.body["spec"]["containers"][0]["image"], "busybox:2");
    assert_eq!(jp.body["metadata"]["generation"], 2);
    let smp = h
        .raw(
            Method::PATCH,
            "/api/v1/namespaces/default/pods/web",
            Some(&t),
            "application/strategic-merge-patch+json",
            r#"{"spec":{"containers":[{"name":"side","image":"busybox"}]}}"#,
        )
        .await;
    assert_eq!(
        smp.body["spec"]["containers"].as_array().unwrap().len(),
        2,
        "{}",
        smp.body
    );

    // Status goes through the subresource only.
    let mut with_status = smp.body.clone();
    with_status["status"] = json!({"phase": "Running"});
    let r = h
        .call(
            Method::PUT,
            "/api/v1/namespaces/default/pods/web",
            Some(&t),
            Some(with_status.clone()),
        )
        .await;
    assert_eq!(r.body["status"]["phase"], "Pending", "{}", r.body);
    with_status["metadata"]["resourceVersion"] = r.body["metadata"]["resourceVersion"].clone();
    let r = h
        .call(
            Method::PUT,
            "/api/v1/namespaces/default/pods/web/status",
            Some(&t),
            Some(with_status),
        )
        .await;
    assert_eq!(r.body["status"]["phase"], "Running", "{}", r.body);
    let r = h
        .raw(
            Method::PATCH,
            "/api/v1/namespaces/default/pods/web/status",
            Some(&t),
            "application/merge-patch+json",
            r#"{"status":{"podIP":"10.0.0.9"}}"#,
        )
        .await;
    assert_eq!(
        (
            r.body["status"]["phase"].as_str(),
            r.body["status"]["podIP"].as_str()
        ),
        (Some("Running"), Some("10.0.0.9"))
    );
    // Server-side apply needs a manager and a whole configuration of the object.
    let r = h
        .raw(
            Method::PATCH,
            "/api/v1/namespaces/default/pods/web",
            Some(&t),
            "application/apply-patch+yaml",
            "{}",
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body["message"].as_str().unwrap().contains("fieldManager"));
    let r = h
        .raw(
            Method::PATCH,
            "/api/v1/namespaces/default/pods/web?fieldManager=ops",
            Some(&t),
            "application/apply-patch+yaml",
            "{}",
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("metadata.name")
    );
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let h = Harness::new().await;
    let t = h.system.clone();
    let mut p = pod("held");
    p["metadata"]["finalizers"] = json!(["example.com/hold"]);
    h.call(
        Method::POST,
        "/api/v1/namespaces/default/pods",
        Some(&t),
        Some(p),
    )
    .await;
    let r = h
        .call(
            Method::DELETE,
            "/api/v1/namespaces/default/pods/held",
            Some(&t),
            None,
        )
        .await;
    assert!(r.body["metadata"]["deletionTimestamp"].is_string());
    let r = h
        .call(
            Method::GET,
            "/api/v1/namespaces/default/pods/held",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let r = h
        .raw(
            Method::PATCH,
            "/api/v1/namespaces/default/pods/held",
            Some(&t),
            "application/merge-patch+json",
            r#"{"metadata":{"finalizers":null}}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = h
        .call(
            Method::GET,
            "/api/v1/namespaces/default/pods/held",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn bad_input_gets_status_errors_and_writes_nothing() {
    let h = Harness::with_config(centaurus_api::ApiConfig {
        max_body: 64 * 1024,
        ..Default::default()
    })
    .await;
    let t = h.system.clone();
    let before = h.store.revision().await.unwrap();
    let r = h
        .raw(
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(&t),
            "application/json",
            "{\"metadata\": {\"name\": ",
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body["kind"].as_str()),
        (400, Some("Status"))
    );
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("line 1 column"),
        "{}",
        r.body
    );
    let r = h
        .raw(
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(&t),
            "application/yaml",
            "metadata: [unclosed\n",
        )
        .await;
    assert_eq!(r.status, 400);
    let big = json!({"metadata": {"name": "big", "annotations": {"a": "x".repeat(100_000)}}});
    let r = h
        .call(
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(&t),
            Some(big),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body["reason"].as_str()),
        (413, Some("RequestEntityTooLarge"))
    );
    let mut bad = pod("Bad_Name");
    bad["spec"]["containers"][0]["image"] = json!("");
    let r = h
        .call(
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(&t),
            Some(bad),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body["reason"].as_str()),
        (422, Some("Invalid"))
    );
    let fields: Vec<&str> = r.body["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"metadata.name") && fields.contains(&"spec.containers[0].image"),
        "{fields:?}"
    );
    let mut unknown = pod("u");
    unknown["spec"]["colour"] = json!("red");
    let r = h
        .call(
            Method::POST,
            "/api/v1/namespaces/default/pods?fieldValidation=Strict",
            Some(&t),
            Some(unknown),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"spec.colour\""),
        "{}",
        r.body
    );
    let r = h.call(Method::GET, "/api/v1/widgets", Some(&t), None).await;
    assert_eq!(
        (r.status.as_u16(), r.body["reason"].as_str()),
        (404, Some("NotFound"))
    );
    let r = h.call(Method::GET, "/api/v1/pods", None, None).await;
    assert_eq!(r.status, 401);
    let r = h
        .call(Method::GET, "/api/v1/pods", Some("forged"), None)
        .await;
    assert_eq!(r.status, 401);
    let r = h
        .call(
            Method::POST,
            "/api/v1/namespaces/nowhere/pods",
            Some(&t),
            Some(pod("x")),
        )
        .await;
    assert_eq!(r.status, 404);
    let mut other_ns = pod("x");
    other_ns["metadata"]["namespace"] = json!("kube-system");
    let r = h
        .call(
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(&t),
            Some(other_ns),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        h.store.revision().await.unwrap(),
        before,
        "a rejected request wrote something"
    );
    let r = h.call(Method::GET, "/version", None, None).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn watch_streams_resumes_and_reports_compaction() {
    let h = Harness::with_config(centaurus_api::ApiConfig {
        bookmark_interval: std::time::Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let t = h.system.clone();
    let first = h
        .call(
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(&t),
            Some(pod("a")),
        )
        .await
        .body;
    // Without a resourceVersion: current objects first.
    let mut w = h
        .watch(
            "/api/v1/namespaces/default/pods?watch=true&allowWatchBookmarks=true",
            &t,
        )
        .await;
    let ev = next_event(&mut w).await;
    assert_eq!(
        (
            ev["type"].as_str(),
            ev["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("a"))
    );
    h.call(
        Method::POST,
        "/api/v1/namespaces/default/pods",
        Some(&t),
        Some(pod("b")),
    )
    .await;
    h.raw(
        Method::PATCH,
        "/api/v1/namespaces/default/pods/b",
        Some(&t),
        "application/merge-patch+json",
        r#"{"metadata":{"labels":{"x":"y"}}}"#,
    )
    .await;
    h.call(
        Method::DELETE,
        "/api/v1/namespaces/default/pods/b",
        Some(&t),
        None,
    )
    .await;
    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        let ev = next_event(&mut w).await;
        if ev["type"] != "BOOKMARK" {
            kinds.push(ev["type"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);
    loop {
        if next_event(&mut w).await["type"] == "BOOKMARK" {
            break;
        }
    }
    // Resume after the first object's revision: exactly the later changes.
    let rv = first["metadata"]["resourceVersion"].as_str().unwrap();
    let mut w = h
        .watch(
            &format!("/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}"),
            &t,
        )
        .await;
    assert_eq!(next_event(&mut w).await["object"]["metadata"]["name"], "b");
    // Compacted history: an ERROR event with 410 Expired.
    let now = h.store.revision().await.unwrap();
    h.store.compact(now).await.unwrap();
    let mut w = h
        .watch(
            &format!("/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}"),
            &t,
        )
        .await;
    let ev = next_event(&mut w).await;
    assert_eq!(
        (
            ev["type"].as_str(),
            ev["object"]["code"].as_u64(),
            ev["object"]["reason"].as_str()
        ),
        (Some("ERROR"), Some(410), Some("Expired"))
    );
}
