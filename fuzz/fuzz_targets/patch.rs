//! Patch bodies of every patch type against an object of every kind the API serves (its
//! main resource and its `status` and `scale` subresources), through the whole in-process
//! API server as dry runs: any body is applied or refused with a 4xx status, never a panic
//! or a 5xx.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use centaurus_api::ApiConfig;
use centaurus_api::region;
use centaurus_core::store::{RedbStore, Store};
use centaurus_tenancy::{Identity, TokenFile};
use http::{Method, Request};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use tower::ServiceExt;

/// The application, a system token, and the path of one object of each kind.
struct Api {
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
    token: String,
    objects: Vec<String>,
}

/// One object of each kind: its collection and its manifest.
fn seeds() -> Vec<(&'static str, Value)> {
    let meta = |name: &str| json!({"name": name});
    vec![
        ("/api/v1/namespaces", json!({"metadata": meta("team")})),
        ("/api/v1/tenants", json!({"metadata": meta("acme")})),
        ("/api/v1/nodes", json!({"metadata": meta("n1"), "spec": {}})),
        (
            "/api/v1/namespaces/default/pods",
            json!({"metadata": meta("web"),
                   "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
        ),
        (
            "/api/v1/namespaces/default/pods",
            json!({"metadata": meta("vm"),
                   "spec": {"virtualMachine": {"name": "vm", "image": "tiny"}}}),
        ),
        (
            "/apis/apps/v1/namespaces/default/deployments",
            json!({"metadata": meta("d"), "spec": {
                "replicas": 2, "selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}},
                             "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}),
        ),
        (
            "/apis/apps/v1/namespaces/default/replicasets",
            json!({"metadata": meta("rs"), "spec": {
                "replicas": 1, "selector": {"matchLabels": {"r": "s"}},
                "template": {"metadata": {"labels": {"r": "s"}},
                             "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}),
        ),
        (
            "/apis/coordination.k8s.io/v1/namespaces/default/leases",
            json!({"metadata": meta("l"),
                   "spec": {"holderIdentity": "x", "leaseDurationSeconds": 40}}),
        ),
        (
            "/apis/arktos.futurewei.com/v1/networks",
            json!({"metadata": meta("net"), "spec": {"type": "flat"}}),
        ),
        (
            "/apis/mizar.centaurus.io/v1/vpcs",
            json!({"metadata": meta("v"), "spec": {"cidr": "10.1.0.0/16"}}),
        ),
        (
            "/apis/mizar.centaurus.io/v1/subnets",
            json!({"metadata": meta("s"), "spec": {"vpc": "v", "cidr": "10.1.1.0/24"}}),
        ),
        (
            "/apis/mizar.centaurus.io/v1/droplets",
            json!({"metadata": meta("h1"), "spec": {
                "node": "n1", "ip": "198.18.0.1", "mac": "02:fe:c6:12:00:01", "ifname": "eth0"}}),
        ),
        (
            "/apis/mizar.centaurus.io/v1/bouncers",
            json!({"metadata": meta("b"), "spec": {
                "droplet": "h1", "subnet": "s", "tenant": "system", "vni": 1000, "vpc": "v"}}),
        ),
        (
            "/apis/mizar.centaurus.io/v1/dividers",
            json!({"metadata": meta("dv"), "spec": {
                "droplet": "h1", "tenant": "system", "vni": 1000, "vpc": "v"}}),
        ),
        (
            "/apis/mizar.centaurus.io/v1/namespaces/default/endpoints",
            json!({"metadata": meta("e"),
                   "spec": {"vpc": "v", "subnet": "s", "pod": "web", "droplet": "h1"}}),
        ),
        (
            "/apis/scheduling.centaurus.io/v1/nodeledgers",
            json!({"metadata": meta("n1"), "spec": {"pods": {"u": [100, 1000, 0]}}}),
        ),
        (
            "/apis/tenancy.centaurus.io/v1/grants",
            json!({"metadata": meta("g"), "spec": {
                "grantee": "acme", "rules": [{"verbs": ["get"], "resources": ["pods"]}]}}),
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
            json!({"metadata": meta("r"),
                   "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}),
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
            json!({"metadata": meta("rb"), "subjects": [{"kind": "User", "name": "u"}],
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}}),
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            json!({"metadata": meta("cr"), "rules": [],
                   "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]}}),
        ),
        (
            "/api/v1/namespaces/default/resourcequotas",
            json!({"metadata": meta("q"), "spec": {"hard": {"pods": "100", "requests.cpu": "10"}}}),
        ),
        (
            "/api/v1/namespaces/default/limitranges",
            json!({"metadata": meta("l"), "spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}}]}}),
        ),
    ]
}

async fn call(app: &axum::Router, req: Request<Body>) -> (u16, Value) {
    let res = app.clone().oneshot(req).await.expect("infallible");
    let status = res.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(res.into_body())
        .await
        .expect("in-process bodies do not fail")
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn api() -> &'static Api {
    static API: OnceLock<Api> = OnceLock::new();
    API.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("centaurus-fuzz-patch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (app, token, objects) = runtime.block_on(async {
            let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.join("store.redb")).unwrap());
            region::bootstrap(&*store).await.unwrap();
            let tokens = Arc::new(TokenFile::load(&dir.join("tokens.csv")).await.unwrap());
            let token = tokens
                .issue(Identity {
                    user: "root".into(),
                    tenant: "system".into(),
                    groups: vec![],
                    tenant_uid: None,
                })
                .await
                .unwrap();
            let (_, app) = region::app(store, tokens, ApiConfig::default())
                .await
                .unwrap();
            let mut objects = Vec::new();
            for (collection, manifest) in seeds() {
                let name = manifest["metadata"]["name"].as_str().unwrap().to_owned();
                let req = Request::post(collection)
                    .header("authorization", format!("Bearer {token}"))
                    .header("content-type", "application/json")
                    .body(Body::from(manifest.to_string()))
                    .unwrap();
                let (status, body) = call(&app, req).await;
                assert_eq!(status, 201, "seeding {collection}/{name}: {body}");
                objects.push(format!("{collection}/{name}"));
            }
            (app, token, objects)
        });
        Api {
            runtime,
            app,
            token,
            objects,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let [object, kind, sub, body @ ..] = data else {
        return;
    };
    let api = api();
    let path = &api.objects[*object as usize % api.objects.len()];
    let content_type = [
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
    ][*kind as usize % 3];
    let path = match sub % 3 {
        0 => path.clone(),
        1 => format!("{path}/status"),
        _ => format!("{path}/scale"),
    };
    let req = Request::builder()
        .method(Method::PATCH)
        .uri(format!("{path}?dryRun=All"))
        .header("authorization", format!("Bearer {}", api.token))
        .header("content-type", content_type)
        .body(Body::from(body.to_vec()))
        .unwrap();
    let (status, answer) = api.runtime.block_on(call(&api.app, req));
    assert!(
        status < 500,
        "PATCH {path} ({content_type}) {:?}: {status} {answer}",
        String::from_utf8_lossy(body)
    );
});
