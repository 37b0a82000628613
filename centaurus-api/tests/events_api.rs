//! Events in both groups: `events.k8s.io/v1` serves the core `v1` Events under its own
//! field names (one object, one store key), for create, read, list, watch, patch and
//! tables, with errors naming its fields, inside the caller's tenant only.

mod common;

use common::{Harness, next_event};
use http::Method;
use serde_json::{Value, json};

const V1: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
const CORE: &str = "/api/v1/namespaces/default/events";

fn event_v1(name: &str) -> Value {
    json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": name},
        "eventTime": "2026-12-07T04:00:00.123456Z",
        "regarding": {"kind": "Pod", "apiVersion": "v1", "name": "web-0", "namespace": "default"},
        "reason": "Pulled", "action": "Pulling", "type": "Normal",
        "note": "image pulled",
        "reportingController": "example.com/puller", "reportingInstance": "puller-1",
    })
}

#[tokio::test]
async fn one_event_is_served_in_both_groups_under_their_names() {
    let h = Harness::new().await;
    let t = h.tenant("acme").await;
    let r = h
        .call(Method::POST, V1, Some(&t), Some(event_v1("pulled")))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["apiVersion"], "events.k8s.io/v1");
    assert_eq!(r.body["note"], "image pulled");
    assert_eq!(r.body["regarding"]["name"], "web-0");
    assert_eq!(r.body["reportingController"], "example.com/puller");
    for core_name in ["message", "involvedObject", "reportingComponent"] {
        assert!(r.body.get(core_name).is_none(), "{core_name}: {}", r.body);
    }
    // The same object in the core group, under the core names.
    let core = h
        .call(Method::GET, &format!("{CORE}/pulled"), Some(&t), None)
        .await;
    assert_eq!(core.status, 200, "{}", core.body);
    assert_eq!(core.body["apiVersion"], "v1");
    assert_eq!(core.body["message"], "image pulled");
    assert_eq!(core.body["involvedObject"]["name"], "web-0");
    assert_eq!(core.body["reportingComponent"], "example.com/puller");
    assert!(core.body.get("note").is_none(), "{}", core.body);
    let raw = h
        .store
        .get("/registry/events/acme/default/pulled")
        .await
        .unwrap()
        .unwrap();
    let kept: Value = serde_json::from_slice(&raw.value).unwrap();
    assert_eq!(kept["apiVersion"], "v1", "kept in the core shape: {kept}");

    // An event the core group made is listed in the new group, renamed.
    let made = h
        .call(
            Method::POST,
            CORE,
            Some(&t),
            Some(json!({
                "metadata": {"name": "scheduled"},
                "involvedObject": {"kind": "Pod", "name": "web-0", "namespace": "default"},
                "reason": "Scheduled", "message": "assigned to node-1", "count": 3,
                "source": {"component": "default-scheduler"},
            })),
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let list = h.call(Method::GET, V1, Some(&t), None).await;
    assert_eq!(list.body["kind"], "EventList", "{}", list.body);
    assert_eq!(list.body["apiVersion"], "events.k8s.io/v1");
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{}", list.body);
    let scheduled = items.iter().find(|e| e["reason"] == "Scheduled").unwrap();
    assert_eq!(scheduled["note"], "assigned to node-1");
    assert_eq!(scheduled["deprecatedCount"], 3);
    assert_eq!(
        scheduled["deprecatedSource"]["component"],
        "default-scheduler"
    );

    // A series update as client-go's recorder sends it (a strategic merge patch), and a
    // merge patch of the note: the core view sees both.
    let patched = h
        .raw(
            Method::PATCH,
            &format!("{V1}/pulled"),
            Some(&t),
            "application/strategic-merge-patch+json",
            json!({"series": {"count": 2, "lastObservedTime": "2026-12-07T04:01:00.000000Z"}})
                .to_string(),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.body["series"]["count"], 2);
    let noted = h
        .raw(
            Method::PATCH,
            &format!("{V1}/pulled"),
            Some(&t),
            "application/merge-patch+json",
            json!({"note": "image pulled again"}).to_string(),
        )
        .await;
    assert_eq!(noted.status, 200, "{}", noted.body);
    assert_eq!(noted.body["note"], "image pulled again");
    assert_eq!(noted.body["series"]["count"], 2);
    let core = h
        .call(Method::GET, &format!("{CORE}/pulled"), Some(&t), None)
        .await;
    assert_eq!(core.body["message"], "image pulled again", "{}", core.body);
    assert_eq!(core.body["series"]["count"], 2);

    // An update (PUT) in the new shape keeps the core shape underneath.
    let mut whole = noted.body.clone();
    whole["note"] = json!("replaced");
    let put = h
        .call(Method::PUT, &format!("{V1}/pulled"), Some(&t), Some(whole))
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    let core = h
        .call(Method::GET, &format!("{CORE}/pulled"), Some(&t), None)
        .await;
    assert_eq!(core.body["message"], "replaced", "{}", core.body);

    // kubectl's table: the same columns in both groups.
    let req = http::Request::get(V1)
        .header("authorization", format!("Bearer {t}"))
        .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(axum::body::Body::empty())
        .unwrap();
    let res = tower::ServiceExt::oneshot(h.app.clone(), req)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let bytes = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    let table: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(table["kind"], "Table", "{table}");
    let row = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cells"].as_array().unwrap().contains(&json!("replaced")))
        .unwrap_or_else(|| panic!("no row with the note: {table}"))
        .clone();
    assert!(
        row["cells"]
            .as_array()
            .unwrap()
            .contains(&json!("pod/web-0")),
        "{row}"
    );
}

#[tokio::test]
async fn the_new_group_names_its_own_fields_in_errors_and_stays_in_the_tenant() {
    let h = Harness::new().await;
    let acme = h.tenant("acme").await;
    let other = h.tenant("other").await;
    let mut bad = event_v1("bad");
    bad["type"] = json!("Loud");
    bad.as_object_mut().unwrap().remove("regarding");
    let r = h.call(Method::POST, V1, Some(&acme), Some(bad)).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let fields: Vec<&str> = r.body["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert!(fields.contains(&"regarding"), "{}", r.body);
    assert!(fields.contains(&"type"), "{}", r.body);
    let r = h
        .call(
            Method::POST,
            V1,
            Some(&acme),
            Some(json!({"metadata": {"name": "x"}, "note": 7})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body["message"].as_str().unwrap().contains("note"),
        "{}",
        r.body
    );

    // Watches in the new group see the renamed object, of the caller's tenant only.
    let mut theirs = h.watch(&format!("{V1}?watch=1"), &other).await;
    let mut ours = h.watch(&format!("{V1}?watch=1"), &acme).await;
    let r = h
        .call(Method::POST, V1, Some(&acme), Some(event_v1("pulled")))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let seen = next_event(&mut ours).await;
    assert_eq!(seen["type"], "ADDED");
    assert_eq!(seen["object"]["note"], "image pulled", "{seen}");
    assert_eq!(seen["object"]["apiVersion"], "events.k8s.io/v1");
    // The same name in the other tenant is another object.
    let r = h
        .call(Method::POST, V1, Some(&other), Some(event_v1("pulled")))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let seen = next_event(&mut theirs).await;
    assert_eq!(seen["object"]["metadata"]["tenant"], "other", "{seen}");
    let list = h.call(Method::GET, V1, Some(&other), None).await;
    assert_eq!(
        list.body["items"].as_array().unwrap().len(),
        1,
        "{}",
        list.body
    );
    let gone = h
        .call(
            Method::DELETE,
            "/apis/events.k8s.io/v1/tenants/acme/namespaces/default/events/pulled",
            Some(&other),
            None,
        )
        .await;
    assert!(
        gone.status == 403 || gone.status == 404,
        "{}: {}",
        gone.status,
        gone.body
    );
    let still = h
        .call(Method::GET, &format!("{CORE}/pulled"), Some(&acme), None)
        .await;
    assert_eq!(still.status, 200);

    // Discovery names the group and its one kind.
    let groups = h.call(Method::GET, "/apis", Some(&acme), None).await;
    assert!(
        groups.body["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "events.k8s.io"),
        "{}",
        groups.body
    );
    let resources = h
        .call(Method::GET, "/apis/events.k8s.io/v1", Some(&acme), None)
        .await;
    assert_eq!(
        resources.body["resources"][0]["name"], "events",
        "{}",
        resources.body
    );
    assert_eq!(resources.body["resources"][0]["kind"], "Event");
}
