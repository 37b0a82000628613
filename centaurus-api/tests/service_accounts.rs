//! ServiceAccount tokens through the API: issued by a TokenRequest, accepted as a user of
//! the account's tenant (reaching only what that tenant's Roles give it, never another
//! tenant), and refused once expired, tampered with, or when the account or the pod it is
//! bound to is gone.

mod common;

use common::{Harness, pod};
use http::Method;
use serde_json::{Value, json};

const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/default";

async fn token(h: &Harness, admin: &str, account: &str, spec: Value) -> (u16, Value) {
    let r = h
        .call(
            Method::POST,
            &format!("/api/v1/namespaces/default/serviceaccounts/{account}/token"),
            Some(admin),
            Some(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})),
        )
        .await;
    (r.status.as_u16(), r.body)
}

/// The caller's pods of its default namespace.
async fn pods_as(h: &Harness, token: &str) -> common::Reply {
    h.call(
        Method::GET,
        "/api/v1/namespaces/default/pods",
        Some(token),
        None,
    )
    .await
}

#[tokio::test]
async fn account_tokens_reach_only_their_tenant() {
    let h = Harness::new().await;
    let acme = h.tenant("acme").await;
    let beta = h.tenant("beta").await;
    for t in [&acme, &beta] {
        let r = h
            .call(
                Method::POST,
                "/api/v1/namespaces/default/serviceaccounts",
                Some(t),
                Some(json!({"metadata": {"name": "builder"}})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        let r = h
            .call(
                Method::POST,
                "/api/v1/namespaces/default/pods",
                Some(t),
                Some(pod("web")),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let (status, answer) = token(&h, &acme, "builder", json!({})).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["kind"], "TokenRequest");
    assert!(
        answer["status"]["expirationTimestamp"].is_string(),
        "{answer}"
    );
    let sa = answer["status"]["token"].as_str().unwrap().to_owned();

    // Authenticated as the account of acme, with nothing granted yet.
    let r = pods_as(&h, &sa).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("system:serviceaccount:default:builder"),
        "{}",
        r.body
    );
    // A Role of acme, bound to the account, gives it pods to read.
    for (plural, body) in [
        (
            "roles",
            json!({"metadata": {"name": "pod-reader"},
                "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]}),
        ),
        (
            "rolebindings",
            json!({"metadata": {"name": "builder-reads-pods"},
                "subjects": [{"kind": "ServiceAccount", "name": "builder"}],
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"}}),
        ),
    ] {
        let r = h
            .call(
                Method::POST,
                &format!("{RBAC}/{plural}"),
                Some(&acme),
                Some(body),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = pods_as(&h, &sa).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["items"][0]["metadata"]["tenant"], "acme");
    for path in [
        "/api/v1/tenants/beta/namespaces/default/pods",
        "/api/v1/tenants/all/pods",
        "/api/v1/tenants",
    ] {
        let r = h.call(Method::GET, path, Some(&sa), None).await;
        assert_eq!(r.status, 403, "{path}: {}", r.body);
    }
    let r = h
        .call(
            Method::DELETE,
            "/api/v1/namespaces/default/pods/web",
            Some(&sa),
            None,
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);

    // A tampered token, and beta's account of the same name, are not acme's.
    let mut tampered = sa.clone().into_bytes();
    let i = tampered.len() - 5;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let r = pods_as(&h, &tampered).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let (_, b) = token(&h, &beta, "builder", json!({})).await;
    let beta_sa = b["status"]["token"].as_str().unwrap().to_owned();
    let r = pods_as(&h, &beta_sa).await;
    assert_eq!(
        r.status, 403,
        "beta's account has no role in beta: {}",
        r.body
    );

    // Deleting the account revokes its tokens.
    let r = h
        .call(
            Method::DELETE,
            "/api/v1/namespaces/default/serviceaccounts/builder",
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = pods_as(&h, &sa).await;
    assert_eq!(r.status, 401, "{}", r.body);
}

#[tokio::test]
async fn bound_tokens_die_with_their_pod_and_requests_are_checked() {
    let h = Harness::new().await;
    let acme = h.tenant("acme").await;
    for (path, body) in [
        ("serviceaccounts", json!({"metadata": {"name": "default"}})),
        ("pods", pod("web")),
    ] {
        let r = h
            .call(
                Method::POST,
                &format!("/api/v1/namespaces/default/{path}"),
                Some(&acme),
                Some(body),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let bound = json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web"}});
    let (status, answer) = token(&h, &acme, "default", bound).await;
    assert_eq!(status, 201, "{answer}");
    let sa = answer["status"]["token"].as_str().unwrap().to_owned();
    // Authenticated (403 from the gate, not 401).
    let r = pods_as(&h, &sa).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = h
        .call(
            Method::DELETE,
            "/api/v1/namespaces/default/pods/web",
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = pods_as(&h, &sa).await;
    assert_eq!(r.status, 401, "{}", r.body);

    for (spec, status) in [
        (json!({"expirationSeconds": 10}), 422),
        (
            json!({"boundObjectRef": {"kind": "Secret", "name": "x"}}),
            422,
        ),
        (
            json!({"boundObjectRef": {"kind": "Pod", "name": "nope"}}),
            422,
        ),
        (json!({"audiences": "not a list"}), 422),
    ] {
        let (got, body) = token(&h, &acme, "default", spec.clone()).await;
        assert_eq!(got, status, "{spec}: {body}");
    }
    let (got, body) = token(&h, &acme, "missing", json!({})).await;
    assert_eq!(got, 404, "{body}");
}
