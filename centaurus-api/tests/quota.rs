//! ResourceQuota and LimitRange admission: charged by compare-and-swap, never overrun by
//! concurrent creates, refunded when counted objects go, defaults and bounds from limit
//! ranges; one tenant's quotas never touch another's namespace of the same name.

mod common;

use common::{Harness, pod};
use http::Method;
use serde_json::{Value, json};

const DEV: &str = "/api/v1/namespaces/dev";

fn pod_with(name: &str, cpu: Option<&str>) -> Value {
    let mut p = pod(name);
    if let Some(cpu) = cpu {
        p["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": cpu}});
    }
    p
}

async fn setup(h: &Harness, tenant: &str) -> String {
    let token = h.tenant(tenant).await;
    let r = h
        .call(
            Method::POST,
            "/api/v1/namespaces",
            Some(&token),
            Some(json!({"metadata": {"name": "dev"}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    token
}

async fn post(h: &Harness, token: &str, path: &str, body: Value) -> common::Reply {
    h.call(Method::POST, path, Some(token), Some(body)).await
}

#[tokio::test]
async fn quotas_refuse_what_exceeds_them_with_kubernetes_messages() {
    let h = Harness::new().await;
    let acme = setup(&h, "acme").await;
    let beta = setup(&h, "beta").await;
    let r = post(
        &h,
        &acme,
        &format!("{DEV}/resourcequotas"),
        json!({"metadata": {"name": "compute"}, "spec": {"hard": {"pods": "2", "requests.cpu": "1"}}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = post(&h, &acme, &format!("{DEV}/pods"), pod_with("nocpu", None)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.body["message"],
        "pods \"nocpu\" is forbidden: failed quota: compute: must specify requests.cpu"
    );
    let r = post(
        &h,
        &acme,
        &format!("{DEV}/pods"),
        pod_with("a", Some("600m")),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = post(
        &h,
        &acme,
        &format!("{DEV}/pods"),
        pod_with("b", Some("500m")),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.body["message"],
        "pods \"b\" is forbidden: exceeded quota: compute, requested: requests.cpu=500m, used: requests.cpu=600m, limited: requests.cpu=1"
    );
    let r = post(
        &h,
        &acme,
        &format!("{DEV}/pods"),
        pod_with("b", Some("400m")),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = post(&h, &acme, &format!("{DEV}/pods"), pod_with("c", Some("0"))).await;
    assert_eq!(
        r.body["message"],
        "pods \"c\" is forbidden: exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2"
    );
    let q = h
        .call(
            Method::GET,
            &format!("{DEV}/resourcequotas/compute"),
            Some(&acme),
            None,
        )
        .await
        .body;
    assert_eq!(
        q["status"]["used"],
        json!({"pods": "2", "requests.cpu": "1"})
    );
    assert_eq!(
        q["status"]["hard"],
        json!({"pods": "2", "requests.cpu": "1"})
    );
    // beta's dev has no quota: its pods are not counted against acme's, nor refused.
    for i in 0..3 {
        let r = post(&h, &beta, &format!("{DEV}/pods"), pod(&format!("p{i}"))).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    // A dry run charges nothing.
    let r = h
        .raw(
            Method::POST,
            &format!("{DEV}/configmaps?dryRun=All"),
            Some(&acme),
            "application/json",
            json!({"metadata": {"name": "x"}}).to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // Scopes are not served: a clear refusal, not a quota that counts the wrong things.
    let r = post(
        &h,
        &acme,
        &format!("{DEV}/resourcequotas"),
        json!({"metadata": {"name": "scoped"}, "spec": {"hard": {"pods": "1"}, "scopes": ["BestEffort"]}}),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let r = post(
        &h,
        &acme,
        &format!("{DEV}/resourcequotas"),
        json!({"metadata": {"name": "odd"}, "spec": {"hard": {"gpus": "1"}}}),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.body);
}

#[tokio::test]
async fn concurrent_creates_never_overrun_a_quota_and_removals_are_refunded() {
    let h = Harness::new().await;
    let acme = setup(&h, "acme").await;
    // Two ConfigMaps exist before the quota: its first charge counts them.
    for name in ["old-0", "old-1"] {
        let r = post(
            &h,
            &acme,
            &format!("{DEV}/configmaps"),
            json!({"metadata": {"name": name}}),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = post(
        &h,
        &acme,
        &format!("{DEV}/resourcequotas"),
        json!({"metadata": {"name": "objects"}, "spec": {"hard": {"configmaps": "7", "count/jobs.batch": "0"}}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let creates = (0..20).map(|i| {
        let (h, acme) = (&h, &acme);
        async move {
            post(
                h,
                acme,
                &format!("{DEV}/configmaps"),
                json!({"metadata": {"name": format!("cm-{i}")}}),
            )
            .await
            .status
            .as_u16()
        }
    });
    let statuses = futures::future::join_all(creates).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        5,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 403),
        "{statuses:?}"
    );
    assert_eq!(used_configmaps(&h, &acme).await, "7");
    let r = h
        .call(
            Method::DELETE,
            &format!("{DEV}/configmaps/old-0"),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        used_configmaps(&h, &acme).await,
        "6",
        "a removal gives its count back"
    );
    let r = post(
        &h,
        &acme,
        &format!("{DEV}/configmaps"),
        json!({"metadata": {"name": "late"}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = h
        .call(
            Method::DELETE,
            &format!("{DEV}/configmaps/old-1"),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(
        &h,
        &acme,
        &format!("{DEV}/configmaps"),
        json!({"metadata": {"name": "late"}}),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(
        used_configmaps(&h, &acme).await,
        "6",
        "a create that fails keeps nothing"
    );
    let job = json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}});
    let r = post(&h, &acme, "/apis/batch/v1/namespaces/dev/jobs", job).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("limited: count/jobs.batch=0"),
        "{}",
        r.body
    );
}

async fn used_configmaps(h: &Harness, token: &str) -> Value {
    h.call(
        Method::GET,
        &format!("{DEV}/resourcequotas/objects"),
        Some(token),
        None,
    )
    .await
    .body["status"]["used"]["configmaps"]
        .clone()
}

#[tokio::test]
async fn limit_ranges_default_and_bound_pods_and_vms() {
    let h = Harness::new().await;
    let acme = setup(&h, "acme").await;
    let r = post(
        &h,
        &acme,
        &format!("{DEV}/limitranges"),
        json!({"metadata": {"name": "sizes"}, "spec": {"limits": [
            {"type": "Container", "max": {"cpu": "1", "memory": "1Gi"}, "defaultRequest": {"cpu": "100m", "memory": "64Mi"}},
            {"type": "Pod", "max": {"cpu": "1500m"}},
        ]}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.body["spec"]["limits"][0]["default"]["cpu"], "1",
        "defaulted to max"
    );
    let r = post(&h, &acme, &format!("{DEV}/pods"), pod("plain")).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let resources = &r.body["spec"]["containers"][0]["resources"];
    assert_eq!(
        *resources,
        json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "100m", "memory": "64Mi"}})
    );
    let mut big = pod("big");
    big["spec"]["containers"][0]["resources"] = json!({"limits": {"cpu": "2"}});
    let r = post(&h, &acme, &format!("{DEV}/pods"), big).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.body["message"],
        "pods \"big\" is forbidden: [maximum cpu usage per Container is 1, but limit is 2, \
         maximum cpu usage per Pod is 1500m, but limit is 2]"
    );
    let mut two = pod("two");
    two["spec"]["containers"] = json!([
        {"name": "a", "image": "busybox", "resources": {"limits": {"cpu": "800m"}}},
        {"name": "b", "image": "busybox", "resources": {"limits": {"cpu": "800m"}}},
    ]);
    let r = post(&h, &acme, &format!("{DEV}/pods"), two).await;
    assert_eq!(
        r.body["message"],
        "pods \"two\" is forbidden: [maximum cpu usage per Pod is 1500m, but limit is 1600m]"
    );
    // A VM pod's VM is bounded and defaulted as a container is.
    let vm = json!({"metadata": {"name": "vm"}, "spec": {"virtualMachine": {
        "name": "vm", "image": "cirros", "resources": {"limits": {"memory": "2Gi"}}}}});
    let r = post(&h, &acme, &format!("{DEV}/pods"), vm).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("maximum memory usage per Container is 1Gi, but limit is 2Gi"),
        "{}",
        r.body
    );
}
