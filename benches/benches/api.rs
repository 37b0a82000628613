//! API round trip through the whole in-process stack (authentication, tenant gate,
//! admission, redb store), without TLS: create and get a pod as a system user and as a
//! tenant admin (whose gate check reads the tenant's RBAC bindings), and a list page of 100;
//! creating a pod in a tenant with a quota and 2,000 pods, and in a namespace with a
//! ResourceQuota (each charged by a compare-and-swap on the quota's usage).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use centaurus_api::{ApiConfig, region};
use centaurus_core::store::{RedbStore, Store};
use centaurus_tenancy::{Identity, TokenFile};
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    token: &str,
    body: Option<String>,
) -> u16 {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(body.map(Body::from).unwrap_or_default())
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let code = res.status().as_u16();
    res.into_body().collect().await.unwrap();
    code
}

fn pod(name: &str) -> String {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    .to_string()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (app, system, tenant) = rt.block_on(async {
        let store: Arc<dyn Store> =
            Arc::new(RedbStore::open(dir.path().join("store.redb")).unwrap());
        region::bootstrap(&*store).await.unwrap();
        let tokens = Arc::new(
            TokenFile::load(dir.path().join("tokens.csv"))
                .await
                .unwrap(),
        );
        let system = tokens
            .issue(Identity {
                user: "root".into(),
                tenant: "system".into(),
                groups: vec![],
                tenant_uid: None,
            })
            .await
            .unwrap();
        let (_, app) = region::app(store.clone(), tokens.clone(), ApiConfig::default())
            .await
            .unwrap();
        assert_eq!(
            call(
                &app,
                "POST",
                "/api/v1/tenants",
                &system,
                Some(json!({"metadata": {"name": "acme"}}).to_string())
            )
            .await,
            201
        );
        let acme = store
            .get(&centaurus_core::model::object_key(
                "tenants",
                centaurus_core::model::Scope::Cluster,
                "",
                "",
                "acme",
            ))
            .await
            .unwrap()
            .unwrap();
        let acme: serde_json::Value = serde_json::from_slice(&acme.value).unwrap();
        let tenant = tokens
            .issue(Identity {
                user: "admin".into(),
                tenant: "acme".into(),
                groups: vec![centaurus_tenancy::TENANT_ADMINS_GROUP.into()],
                tenant_uid: acme["metadata"]["uid"].as_str().map(str::to_owned),
            })
            .await
            .unwrap();
        for i in 0..100 {
            for t in [&system, &tenant] {
                assert_eq!(
                    call(
                        &app,
                        "POST",
                        "/api/v1/namespaces/default/pods",
                        t,
                        Some(pod(&format!("seed-{i}")))
                    )
                    .await,
                    201
                );
            }
        }
        // A tenant with a quota and 2,000 pods, and a namespace of acme with a quota.
        assert_eq!(
            call(
                &app,
                "POST",
                "/api/v1/tenants",
                &system,
                Some(json!({"metadata": {"name": "metered"}, "spec": {"quota": {"pods": "1000000"}}}).to_string())
            )
            .await,
            201
        );
        for i in 0..2000 {
            assert_eq!(
                call(
                    &app,
                    "POST",
                    "/api/v1/tenants/metered/namespaces/default/pods",
                    &system,
                    Some(pod(&format!("seed-{i}")))
                )
                .await,
                201
            );
        }
        for (path, body) in [
            ("/api/v1/namespaces", json!({"metadata": {"name": "quoted"}})),
            (
                "/api/v1/namespaces/quoted/resourcequotas",
                json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "1000000", "count/pods": "1000000"}}}),
            ),
        ] {
            assert_eq!(call(&app, "POST", path, &tenant, Some(body.to_string())).await, 201);
        }
        (app, system, tenant)
    });
    let mut g = c.benchmark_group("api_round_trip");
    let n = AtomicUsize::new(0);
    g.bench_function("create_pod/system", |b| {
        b.to_async(&rt).iter(|| async {
            let i = n.fetch_add(1, Ordering::Relaxed);
            assert_eq!(
                call(
                    &app,
                    "POST",
                    "/api/v1/namespaces/default/pods",
                    &system,
                    Some(pod(&format!("p-{i}")))
                )
                .await,
                201
            )
        })
    });
    for (name, path, token) in [
        (
            "create_pod/tenant",
            "/api/v1/namespaces/default/pods",
            &tenant,
        ),
        (
            "create_pod/tenant_quota_2000_pods",
            "/api/v1/tenants/metered/namespaces/default/pods",
            &system,
        ),
        (
            "create_pod/namespace_quota",
            "/api/v1/namespaces/quoted/pods",
            &tenant,
        ),
    ] {
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let i = n.fetch_add(1, Ordering::Relaxed);
                assert_eq!(
                    call(&app, "POST", path, token, Some(pod(&format!("p-{i}")))).await,
                    201
                )
            })
        });
    }
    for (who, token) in [("system", &system), ("tenant", &tenant)] {
        g.bench_function(format!("get_pod/{who}"), |b| {
            b.to_async(&rt).iter(|| async {
                assert_eq!(
                    call(
                        &app,
                        "GET",
                        "/api/v1/namespaces/default/pods/seed-7",
                        token,
                        None
                    )
                    .await,
                    200
                )
            })
        });
    }
    g.bench_function("list_100_pods/tenant", |b| {
        b.to_async(&rt).iter(|| async {
            assert_eq!(
                call(
                    &app,
                    "GET",
                    "/api/v1/namespaces/default/pods?limit=100",
                    &tenant,
                    None
                )
                .await,
                200
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
