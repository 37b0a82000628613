//! RBAC (`rbac.authorization.k8s.io/v1`) inside tenants' spaces: Roles reach their
//! namespace, ClusterRoles their tenant and never another; a user grants only what it holds.

mod common;

use centaurus_tenancy::Identity;
use common::{Harness, pod};
use http::Method;
use serde_json::{Value, json};

const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";

/// A token of user `user` of `tenant` (no groups: only its bindings give it anything).
async fn user(h: &Harness, tenant: &str, user: &str) -> String {
    h.tokens
        .issue(Identity {
            user: user.into(),
            tenant: tenant.into(),
            groups: vec![],
            tenant_uid: h.tenant_uid(tenant).await,
        })
        .await
        .unwrap()
}

async fn post(h: &Harness, token: &str, path: &str, body: Value) -> common::Reply {
    h.call(Method::POST, path, Some(token), Some(body)).await
}

async fn get(h: &Harness, token: &str, path: &str) -> u16 {
    h.call(Method::GET, path, Some(token), None)
        .await
        .status
        .as_u16()
}

fn role_ref(kind: &str, name: &str) -> Value {
    json!({"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name})
}

fn user_subject(name: &str) -> Value {
    json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name}])
}

#[tokio::test]
async fn bindings_reach_their_namespace_or_their_tenant_and_no_further() {
    let h = Harness::new().await;
    let acme = h.tenant("acme").await;
    let beta = h.tenant("beta").await;
    for t in [&acme, &beta] {
        for ns in ["dev", "prod"] {
            let r = post(
                &h,
                t,
                "/api/v1/namespaces",
                json!({"metadata": {"name": ns}}),
            )
            .await;
            assert_eq!(r.status, 201, "{}", r.body);
            let r = post(&h, t, &format!("/api/v1/namespaces/{ns}/pods"), pod("web")).await;
            assert_eq!(r.status, 201, "{}", r.body);
        }
    }
    let alice = user(&h, "acme", "alice").await;
    let beta_alice = user(&h, "beta", "alice").await;
    assert_eq!(get(&h, &alice, "/api/v1/namespaces/dev/pods").await, 403);

    // A RoleBinding of the default `view` ClusterRole: dev's pods, not prod's, no Secrets.
    let r = post(
        &h,
        &acme,
        &format!("{RBAC}/namespaces/dev/rolebindings"),
        json!({"metadata": {"name": "alice-views"}, "subjects": user_subject("alice"),
               "roleRef": role_ref("ClusterRole", "view")}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(get(&h, &alice, "/api/v1/namespaces/dev/pods").await, 200);
    assert_eq!(
        get(&h, &alice, "/api/v1/namespaces/dev/pods/web").await,
        200
    );
    assert_eq!(get(&h, &alice, "/api/v1/namespaces/dev/secrets").await, 403);
    assert_eq!(get(&h, &alice, "/api/v1/namespaces/prod/pods").await, 403);
    assert_eq!(
        get(&h, &alice, "/api/v1/pods").await,
        403,
        "across namespaces"
    );
    let r = h
        .call(
            Method::DELETE,
            "/api/v1/namespaces/dev/pods/web",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("no role binding of the tenant allows it"),
        "{}",
        r.body
    );
    // beta's alice is another user: acme's bindings give her nothing, in either tenant.
    assert_eq!(
        get(&h, &beta_alice, "/api/v1/namespaces/dev/pods").await,
        403
    );
    assert_eq!(
        get(&h, &beta_alice, "/api/v1/tenants/acme/namespaces/dev/pods").await,
        403
    );

    // A ClusterRoleBinding reaches every namespace of acme, but not beta nor the region.
    let r = post(
        &h,
        &acme,
        &format!("{RBAC}/clusterrolebindings"),
        json!({"metadata": {"name": "alice-views-all"}, "subjects": user_subject("alice"),
               "roleRef": role_ref("ClusterRole", "view")}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(get(&h, &alice, "/api/v1/namespaces/prod/pods").await, 200);
    assert_eq!(get(&h, &alice, "/api/v1/pods").await, 200);
    for path in [
        "/api/v1/tenants/beta/namespaces/dev/pods",
        "/api/v1/tenants/all/pods",
        "/api/v1/nodes",
        "/api/v1/tenants",
    ] {
        assert_eq!(get(&h, &alice, path).await, 403, "{path}");
    }
    // A ClusterRole of acme is acme's alone: a binding in beta to a role named like it
    // finds beta's own (none), and beta's tenant admin sees none of acme's objects.
    let r = h
        .call(
            Method::GET,
            &format!("{RBAC}/clusterrolebindings"),
            Some(&beta),
            None,
        )
        .await;
    let names: Vec<_> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["cluster-admin"], "beta's own only");
}

#[tokio::test]
async fn a_user_grants_only_what_it_holds() {
    let h = Harness::new().await;
    let acme = h.tenant("acme").await;
    let bob = user(&h, "acme", "bob").await;
    // bob may manage roles and bindings in default, and read pods there.
    let ns = format!("{RBAC}/namespaces/default");
    let r = post(
        &h,
        &acme,
        &format!("{ns}/roles"),
        json!({"metadata": {"name": "rbac-manager"}, "rules": [
            {"verbs": ["get", "list", "create", "update", "patch", "delete"],
             "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"]},
            {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = post(
        &h,
        &acme,
        &format!("{ns}/rolebindings"),
        json!({"metadata": {"name": "bob"}, "subjects": user_subject("bob"),
               "roleRef": role_ref("Role", "rbac-manager")}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);

    // He cannot write a role that deletes pods, nor one with wildcards he lacks ...
    for rules in [
        json!([{"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]}]),
        json!([{"verbs": ["get"], "apiGroups": ["*"], "resources": ["pods"]}]),
        json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["*"]}]),
    ] {
        let r = post(
            &h,
            &bob,
            &format!("{ns}/roles"),
            json!({"metadata": {"name": "more"}, "rules": rules}),
        )
        .await;
        assert_eq!(r.status, 403, "{rules}: {}", r.body);
        assert!(
            r.body["message"]
                .as_str()
                .unwrap()
                .contains("does not hold that permission itself"),
            "{}",
            r.body
        );
    }
    // ... nor bind himself to cluster-admin or admin, here or tenant-wide.
    for cluster_role in ["cluster-admin", "admin", "edit"] {
        let r = post(
            &h,
            &bob,
            &format!("{ns}/rolebindings"),
            json!({"metadata": {"name": "bob-more"}, "subjects": user_subject("bob"),
                   "roleRef": role_ref("ClusterRole", cluster_role)}),
        )
        .await;
        assert_eq!(r.status, 403, "{cluster_role}: {}", r.body);
    }
    let r = post(
        &h,
        &bob,
        &format!("{RBAC}/clusterrolebindings"),
        json!({"metadata": {"name": "bob-all"}, "subjects": user_subject("bob"),
               "roleRef": role_ref("ClusterRole", "cluster-admin")}),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    // What he holds he may pass on: a pod reader for carol.
    let r = post(
        &h,
        &bob,
        &format!("{ns}/roles"),
        json!({"metadata": {"name": "pod-reader"},
               "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["web"]}]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = post(
        &h,
        &bob,
        &format!("{ns}/rolebindings"),
        json!({"metadata": {"name": "carol"}, "subjects": user_subject("carol"),
               "roleRef": role_ref("Role", "pod-reader")}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let carol = user(&h, "acme", "carol").await;
    post(&h, &acme, "/api/v1/namespaces/default/pods", pod("web")).await;
    post(&h, &acme, "/api/v1/namespaces/default/pods", pod("db")).await;
    assert_eq!(
        get(&h, &carol, "/api/v1/namespaces/default/pods/web").await,
        200
    );
    assert_eq!(
        get(&h, &carol, "/api/v1/namespaces/default/pods/db").await,
        403
    );
    assert_eq!(
        get(&h, &carol, "/api/v1/namespaces/default/pods").await,
        403
    );

    // A binding's role never changes; a subject must be a known kind.
    let path = format!("{ns}/rolebindings/carol");
    let mut binding = h.call(Method::GET, &path, Some(&acme), None).await.body;
    binding["roleRef"] = role_ref("ClusterRole", "view");
    let r = h.call(Method::PUT, &path, Some(&acme), Some(binding)).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let r = post(
        &h,
        &acme,
        &format!("{ns}/rolebindings"),
        json!({"metadata": {"name": "odd"}, "subjects": [{"kind": "Robot", "name": "r2"}],
               "roleRef": role_ref("Role", "pod-reader")}),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.body);
}

#[tokio::test]
async fn cluster_roles_aggregate_by_label_within_their_tenant() {
    let h = Harness::new().await;
    let acme = h.tenant("acme").await;
    let beta = h.tenant("beta").await;
    let dave = user(&h, "acme", "dave").await;
    // The aggregating role is bound first; the rules arrive with a labelled role.
    for body in [
        json!({"metadata": {"name": "monitoring"},
               "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"example.com/aggregate-to-monitoring": "true"}}]},
               "rules": []}),
        json!({"metadata": {"name": "system:pod-watcher",
                            "labels": {"example.com/aggregate-to-monitoring": "true"}},
               "rules": [{"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}]}),
    ] {
        let r = post(&h, &acme, &format!("{RBAC}/clusterroles"), body).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    // beta labels a role of its own alike: it never reaches acme's aggregation.
    let r = post(
        &h,
        &beta,
        &format!("{RBAC}/clusterroles"),
        json!({"metadata": {"name": "leak", "labels": {"example.com/aggregate-to-monitoring": "true"}},
               "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = post(
        &h,
        &acme,
        &format!("{RBAC}/clusterrolebindings"),
        json!({"metadata": {"name": "dave"}, "subjects": user_subject("dave"),
               "roleRef": role_ref("ClusterRole", "monitoring")}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(get(&h, &dave, "/api/v1/pods").await, 200);
    assert_eq!(
        get(&h, &dave, "/api/v1/namespaces/default/configmaps").await,
        403
    );
    assert_eq!(
        get(&h, &dave, "/api/v1/namespaces/default/pods/x").await,
        403
    );
}

#[tokio::test]
async fn tenancy_roles_of_earlier_releases_move_to_rbac() {
    let h = Harness::new().await;
    let _acme = h.tenant("acme").await;
    let old = json!({"apiVersion": "tenancy.centaurus.io/v1", "kind": "Role",
        "metadata": {"name": "readers", "tenant": "acme", "uid": "u1"},
        "spec": {"rules": [{"verbs": ["get", "list"], "resources": ["pods"]}], "users": ["erin"]}});
    let key = "/registry/roles/acme/readers";
    h.store
        .create(key, old.to_string().into_bytes().into())
        .await
        .unwrap();
    let erin = user(&h, "acme", "erin").await;
    h.api.resume().await.unwrap();
    assert!(h.store.get(key).await.unwrap().is_none(), "moved away");
    assert_eq!(get(&h, &erin, "/api/v1/namespaces/default/pods").await, 200);
    assert_eq!(
        get(&h, &erin, "/api/v1/namespaces/default/configmaps").await,
        403
    );
    let r = h
        .call(
            Method::GET,
            &format!("{RBAC}/clusterrolebindings/readers"),
            Some(&h.system),
            None,
        )
        .await;
    assert_eq!(r.status, 404, "system's own space has none: {}", r.body);
    let r = h
        .call(
            Method::GET,
            &format!("{RBAC}/tenants/acme/clusterrolebindings/readers"),
            Some(&h.system),
            None,
        )
        .await;
    assert_eq!(r.body["subjects"][0]["name"], "erin", "{}", r.body);
}
