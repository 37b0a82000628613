//! Tenant spaces: the gate, grants, quota, lifecycle and cluster-scoped admission.

mod common;

use std::time::Duration;

use common::{Harness, pod};
use http::Method;
use serde_json::json;

#[tokio::test]
async fn identical_names_in_two_tenants_never_collide() {
    let h = Harness::new().await;
    let (acme, beta) = (h.tenant("acme").await, h.tenant("beta").await);
    for (token, image) in [(&acme, "acme-image"), (&beta, "beta-image")] {
        let r = h
            .call(
                Method::POST,
                "/api/v1/namespaces",
                Some(token),
                Some(json!({"metadata": {"name": "dev"}})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        let mut p = pod("web");
        p["spec"]["containers"][0]["image"] = json!(image);
        let r = h
            .call(
                Method::POST,
                "/api/v1/namespaces/dev/pods",
                Some(token),
                Some(p),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = h
        .call(
            Method::GET,
            "/api/v1/namespaces/dev/pods/web",
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(r.body["spec"]["containers"][0]["image"], "acme-image");
    let r = h
        .call(
            Method::GET,
            "/api/v1/tenants/beta/namespaces/dev/pods/web",
            Some(&h.system),
            None,
        )
        .await;
    assert_eq!(r.body["spec"]["containers"][0]["image"], "beta-image");
    // Another tenant's path is 403; `all` is for system users; cluster kinds too.
    for path in [
        "/api/v1/tenants/beta/namespaces/dev/pods",
        "/api/v1/tenants/all/pods",
        "/api/v1/nodes",
        "/api/v1/tenants",
    ] {
        let r = h.call(Method::GET, path, Some(&acme), None).await;
        assert_eq!(
            (r.status.as_u16(), r.body["reason"].as_str()),
            (403, Some("Forbidden")),
            "{path}"
        );
    }
    let r = h
        .call(Method::GET, "/api/v1/tenants/acme", Some(&acme), None)
        .await;
    assert_eq!(r.status, 200, "a tenant reads its own tenant object");
    let r = h
        .call(
            Method::GET,
            "/api/v1/tenants/all/pods",
            Some(&h.system),
            None,
        )
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    // A tenant without a role for a user: the gate refuses.
    let nobody = h
        .tokens
        .issue(centaurus_tenancy::Identity {
            user: "guest".into(),
            tenant: "acme".into(),
            groups: vec![],
            tenant_uid: h.tenant_uid("acme").await,
        })
        .await
        .unwrap();
    let r = h
        .call(
            Method::GET,
            "/api/v1/namespaces/dev/pods",
            Some(&nobody),
            None,
        )
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn grants_open_exactly_what_they_name() {
    let h = Harness::new().await;
    let (acme, beta) = (h.tenant("acme").await, h.tenant("beta").await);
    h.call(
        Method::POST,
        "/api/v1/namespaces/default/pods",
        Some(&acme),
        Some(pod("shared")),
    )
    .await;
    let grant = json!({"apiVersion": "tenancy.centaurus.io/v1", "kind": "Grant", "metadata": {"name": "to-beta"},
        "spec": {"grantee": "beta", "rules": [{"verbs": ["get", "list"], "resources": ["pods"]}], "namespaces": ["default"]}});
    let r = h
        .call(
            Method::POST,
            "/apis/tenancy.centaurus.io/v1/grants",
            Some(&acme),
            Some(grant),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = h
        .call(
            Method::GET,
            "/api/v1/tenants/acme/namespaces/default/pods/shared",
            Some(&beta),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = h
        .call(
            Method::DELETE,
            "/api/v1/tenants/acme/namespaces/default/pods/shared",
            Some(&beta),
            None,
        )
        .await;
    assert_eq!(r.status, 403);
    let r = h
        .call(
            Method::GET,
            "/api/v1/tenants/acme/namespaces/default/deployments",
            Some(&beta),
            None,
        )
        .await;
    assert_eq!(r.status, 404, "deployments are in apps/v1");
    let r = h
        .call(
            Method::GET,
            "/apis/apps/v1/tenants/acme/namespaces/default/deployments",
            Some(&beta),
            None,
        )
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn quota_is_enforced_at_admission() {
    let h = Harness::new().await;
    let r = h.call(Method::POST, "/api/v1/tenants", Some(&h.system), Some(json!({"metadata": {"name": "small"}, "spec": {"quota": {"pods": "2", "vms": "0"}}}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let token = h
        .tokens
        .issue(centaurus_tenancy::Identity {
            user: "admin".into(),
            tenant: "small".into(),
            groups: vec![centaurus_tenancy::TENANT_ADMINS_GROUP.into()],
            tenant_uid: h.tenant_uid("small").await,
        })
        .await
        .unwrap();
    for name in ["a", "b"] {
        assert_eq!(
            h.call(
                Method::POST,
                "/api/v1/namespaces/default/pods",
                Some(&token),
                Some(pod(name))
            )
            .await
            .status,
            201
        );
    }
    let r = h
        .call(
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(&token),
            Some(pod("c")),
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("exceeded quota: requested: pods=1, used: pods=2, limited: pods=2"),
        "{}",
        r.body
    );
    let bad = h
        .call(
            Method::POST,
            "/api/v1/tenants",
            Some(&h.system),
            Some(json!({"metadata": {"name": "odd"}, "spec": {"quota": {"gpus": "1"}}})),
        )
        .await;
    assert_eq!(bad.status, 422);
}

#[tokio::test]
async fn tenant_lifecycle_creates_and_deletes_the_whole_space() {
    let h = Harness::new().await;
    let acme = h.tenant("acme").await;
    let r = h
        .call(Method::GET, "/api/v1/namespaces/default", Some(&acme), None)
        .await;
    assert_eq!(r.status, 200, "a new tenant has its default namespace");
    let r = h
        .call(
            Method::GET,
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/cluster-admin",
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "and its administrators' binding: {}", r.body);
    assert_eq!(r.body["roleRef"]["name"], "cluster-admin");
    h.call(
        Method::POST,
        "/api/v1/namespaces/default/pods",
        Some(&acme),
        Some(pod("web")),
    )
    .await;
    let r = h
        .call(
            Method::DELETE,
            "/api/v1/tenants/acme",
            Some(&h.system),
            None,
        )
        .await;
    assert_eq!(r.body["status"]["phase"], "Terminating");
    for _ in 0..100 {
        if h.call(Method::GET, "/api/v1/tenants/acme", Some(&h.system), None)
            .await
            .status
            == 404
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        h.call(Method::GET, "/api/v1/tenants/acme", Some(&h.system), None)
            .await
            .status,
        404
    );
    let left = h
        .store
        .range("/registry/pods/acme/", Default::default())
        .await
        .unwrap();
    assert!(left.kvs.is_empty(), "the tenant's pods went with it");
    let r = h
        .call(
            Method::DELETE,
            "/api/v1/tenants/system",
            Some(&h.system),
            None,
        )
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn terminating_spaces_refuse_new_objects_and_nodes_stay_out_of_tenants() {
    let h = Harness::new().await;
    let t = h.system.clone();
    let mut ns = json!({"metadata": {"name": "held", "finalizers": []}});
    ns["spec"] = json!({});
    h.call(Method::POST, "/api/v1/namespaces", Some(&t), Some(ns))
        .await;
    // Keep the namespace terminating by holding one of its pods with a finalizer-free
    // write racing the cleaner: check admission right after the delete.
    let r = h
        .call(Method::DELETE, "/api/v1/namespaces/held", Some(&t), None)
        .await;
    assert_eq!(r.body["status"]["phase"], "Terminating");
    let r = h
        .call(
            Method::POST,
            "/api/v1/namespaces/held/pods",
            Some(&t),
            Some(pod("late")),
        )
        .await;
    assert!(
        r.status == 403 || r.status == 404,
        "{} {}",
        r.status,
        r.body
    );
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}});
    let r = h
        .call(
            Method::POST,
            "/api/v1/tenants/acme/nodes",
            Some(&t),
            Some(node.clone()),
        )
        .await;
    assert_eq!(r.status, 403);
    let mut tenanted = node.clone();
    tenanted["metadata"]["tenant"] = json!("acme");
    let r = h
        .call(Method::POST, "/api/v1/nodes", Some(&t), Some(tenanted))
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(
        h.call(Method::POST, "/api/v1/nodes", Some(&t), Some(node))
            .await
            .status,
        201
    );
}
