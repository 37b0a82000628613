//! Moving a tenant between two tenant partitions' stores, each served by its own API
//! server (`centaurus_api::relocation`): writes wait (503 with Retry-After) while reads go
//! on, the tenant's objects arrive byte for byte with its UIDs and its credentials keep
//! working, its pods' bookings pass to the new partition's tag in the resource partition's
//! ledger, the old partition keeps nothing, refusals are clear, and an interrupted move is
//! resumed by moving again.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use centaurus_api::relocation::{MoveError, PartitionStore, TenantMove};
use centaurus_core::model;
use centaurus_core::store::{RedbStore, Store};
use common::{Harness, pod};
use http::Method;
use serde_json::{Value, json};

fn plan(tenant: &str, from: &Harness, to: &Harness, rp: &Arc<dyn Store>) -> TenantMove {
    TenantMove {
        tenant: tenant.into(),
        from: PartitionStore {
            name: "tp1".into(),
            store: from.store.clone(),
        },
        to: PartitionStore {
            name: "tp2".into(),
            store: to.store.clone(),
        },
        resources: vec![rp.clone()],
        registry: Arc::new(centaurus_api::region::registry()),
        settle: Duration::from_millis(200),
    }
}

async fn stored(store: &Arc<dyn Store>, key: &str) -> Option<Value> {
    let kv = store.get(key).await.unwrap()?;
    Some(serde_json::from_slice(&kv.value).unwrap())
}

/// A pod of acme bound to `node`, with its UID.
async fn bound_pod(h: &Harness, token: &str, name: &str, node: &str) -> String {
    let mut p = pod(name);
    p["spec"]["nodeName"] = json!(node);
    let r = h
        .call(
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(token),
            Some(p),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["metadata"]["uid"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_moves_with_its_objects_credentials_and_bookings() {
    let (tp1, tp2) = (Harness::new().await, Harness::new().await);
    let dir = tempfile::tempdir().unwrap();
    let rp: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("rp.redb")).unwrap());
    let acme = tp1.tenant("acme").await;
    let uid = tp1.tenant_uid("acme").await.unwrap();
    let pods = [
        bound_pod(&tp1, &acme, "a", "n1").await,
        bound_pod(&tp1, &acme, "b", "n1").await,
        bound_pod(&tp1, &acme, "c", "n2").await,
    ];
    // n1's ledger holds acme's two pods and another partition's one; n2 is in no ledger.
    let ledger = json!({"apiVersion": "scheduling.centaurus.io/v1", "kind": "NodeLedger",
        "metadata": {"name": "n1"}, "spec": {"pods": {
            format!("tp1/{}", pods[0]): [100, 1, 0], format!("tp1/{}", pods[1]): [100, 1, 0],
            "tp3/other": [500, 1, 0]}}});
    rp.create("/registry/nodeledgers/n1", Bytes::from(ledger.to_string()))
        .await
        .unwrap();
    let before = stored(&tp1.store, "/registry/pods/acme/default/a")
        .await
        .unwrap();

    let (tx, mut steps) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mover = plan("acme", &tp1, &tp2, &rp);
    let moving = tokio::spawn(async move {
        mover
            .run(move |step| {
                let _ = tx.send(step.to_owned());
            })
            .await
    });
    while let Some(step) = steps.recv().await {
        if step.starts_with("copying") {
            break;
        }
    }
    // Frozen: a write waits (503, Retry-After), a read is served.
    let r = tp1
        .call(
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(&acme),
            Some(pod("late")),
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.headers["retry-after"], "1");
    assert_eq!(r.body["details"]["retryAfterSeconds"], 1);
    assert!(r.body["message"].as_str().unwrap().contains("being moved"));
    let r = tp1
        .call(
            Method::DELETE,
            "/api/v1/namespaces/default/pods/a",
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    let r = tp1
        .call(
            Method::GET,
            "/api/v1/namespaces/default/pods",
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 3);

    let moved = moving.await.unwrap().unwrap();
    assert_eq!(moved.tokens, 1);
    assert_eq!(moved.bookings, 2);
    assert!(moved.objects >= 5, "{moved:?}");
    // The copy: same bytes, the same tenant UID, the token works there.
    let after = stored(&tp2.store, "/registry/pods/acme/default/a")
        .await
        .unwrap();
    assert_eq!(before, after);
    let t = stored(&tp2.store, "/registry/tenants/acme").await.unwrap();
    assert_eq!(t["metadata"]["uid"], uid.as_str());
    assert_eq!(t["status"]["phase"], "Active");
    assert_eq!(
        t["metadata"]["annotations"][model::ANNOTATION_MOVED_FROM],
        "tp1"
    );
    assert_eq!(
        t["metadata"]["annotations"][model::ANNOTATION_ARRIVED_AT],
        moved.arrived_at.to_string()
    );
    let r = tp2
        .call(
            Method::GET,
            "/api/v1/namespaces/default/pods",
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut uids: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["uid"].as_str().unwrap())
        .collect();
    uids.sort();
    let mut want: Vec<&str> = pods.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(uids, want);
    // Writes go on there.
    let r = tp2
        .call(
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(&acme),
            Some(pod("late")),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // Bookings: tp2's now; the other partition's untouched.
    let ledger = stored(&rp, "/registry/nodeledgers/n1").await.unwrap();
    let booked: Vec<&String> = ledger["spec"]["pods"].as_object().unwrap().keys().collect();
    let mut want = [
        format!("tp2/{}", pods[0]),
        format!("tp2/{}", pods[1]),
        "tp3/other".to_owned(),
    ];
    want.sort();
    assert_eq!(booked, want.iter().collect::<Vec<_>>());
    // The old partition keeps nothing of acme: no tenant, no objects, no token.
    assert!(stored(&tp1.store, "/registry/tenants/acme").await.is_none());
    let left = centaurus_core::store::range_all(&*tp1.store, "/registry/")
        .await
        .unwrap();
    assert!(
        left.kvs.iter().all(|kv| !kv.key.contains("/acme")),
        "{:?}",
        left.kvs.iter().map(|kv| &kv.key).collect::<Vec<_>>()
    );
    let r = tp1
        .call(
            Method::GET,
            "/api/v1/namespaces/default/pods",
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.body);

    // Refusals.
    let again = plan("acme", &tp1, &tp2, &rp).run(|_| {}).await;
    assert!(
        matches!(&again, Err(MoveError::Refused(m)) if m.contains("not in tp1")),
        "{again:?}"
    );
    let system = plan("system", &tp1, &tp2, &rp).run(|_| {}).await;
    assert!(matches!(system, Err(MoveError::Refused(_))));
    tp1.tenant("acme").await;
    let taken = plan("acme", &tp1, &tp2, &rp).run(|_| {}).await;
    assert!(
        matches!(&taken, Err(MoveError::Refused(m)) if m.contains("tp2 already holds a tenant acme")),
        "{taken:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_move_is_resumed_by_moving_again() {
    let (tp1, tp2) = (Harness::new().await, Harness::new().await);
    let dir = tempfile::tempdir().unwrap();
    let rp: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("rp.redb")).unwrap());
    let acme = tp1.tenant("acme").await;
    bound_pod(&tp1, &acme, "a", "n1").await;
    // Stopped after the freeze and part of the copy: the tenant Moving in tp1, an
    // arriving copy of it and one stale object in tp2.
    let key = "/registry/tenants/acme";
    let kv = tp1.store.get(key).await.unwrap().unwrap();
    let mut t: Value = serde_json::from_slice(&kv.value).unwrap();
    t["status"]["phase"] = json!(model::TENANT_MOVING);
    t["metadata"]["annotations"] = json!({model::ANNOTATION_MOVING_TO: "tp2"});
    tp1.store
        .update(key, Bytes::from(t.to_string()), kv.mod_revision)
        .await
        .unwrap();
    let mut copy = t.clone();
    copy["status"]["phase"] = json!(model::TENANT_ARRIVING);
    copy["metadata"]["annotations"] = json!({model::ANNOTATION_MOVED_FROM: "tp1"});
    tp2.store
        .create(key, Bytes::from(copy.to_string()))
        .await
        .unwrap();
    tp2.store
        .create(
            "/registry/pods/acme/default/a",
            Bytes::from(json!({"stale": true}).to_string()),
        )
        .await
        .unwrap();
    // The copy takes no writes meanwhile, not even the region's own.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = tp2
        .call(
            Method::POST,
            "/api/v1/tenants/acme/namespaces/default/pods",
            Some(&tp2.system),
            Some(pod("b")),
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.body);

    plan("acme", &tp1, &tp2, &rp).run(|_| {}).await.unwrap();
    let a = stored(&tp2.store, "/registry/pods/acme/default/a")
        .await
        .unwrap();
    assert_eq!(a["metadata"]["name"], "a");
    assert!(stored(&tp1.store, key).await.is_none());
    let r = tp2
        .call(
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(&acme),
            Some(pod("b")),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
}
