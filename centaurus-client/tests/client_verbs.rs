//! The client against a real API server: typed verbs and `Status` errors over HTTPS and the
//! in-process transport alike, watches that resume and re-list after 410, an informer on
//! the client, failover to a second server, and the tenant gate applying to in-process
//! callers.

use std::sync::Arc;
use std::time::Duration;

use centaurus_api::region::{LocalRegion, Region, RegionOptions};
use centaurus_client::kubeconfig::Kubeconfig;
use centaurus_client::{Api, Client, Patch};
use centaurus_core::controller::{Informer, WatchEvent};
use centaurus_core::model::{Container, Namespace, ObjectMeta, Pod, PodSpec, Resource};
use centaurus_core::store::{RedbStore, Store};
use centaurus_tenancy::Identity;
use futures::StreamExt;
use serde_json::json;

fn pod(name: &str) -> Pod {
    let mut p = Pod::typed(ObjectMeta::namespaced("acme", "dev", name));
    p.spec = PodSpec {
        containers: vec![Container {
            name: "c".into(),
            image: "busybox".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    p
}

async fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap())
}

/// Every verb of [`Api`] and its errors, through `client` (an administrator's).
async fn verbs(client: &Client) {
    let pods: Api<Pod> = client.api();
    let created = pods.create(pod("web")).await.unwrap();
    assert!(!created.metadata.uid.is_empty());
    let again = pods.create(pod("web")).await.unwrap_err();
    assert!(again.is_already_exists(), "{again}");
    let got = pods.get(&created.key()).await.unwrap().unwrap();
    assert_eq!(got.metadata.uid, created.metadata.uid);
    assert!(
        pods.get("/registry/pods/acme/dev/none")
            .await
            .unwrap()
            .is_none()
    );

    // A stale resourceVersion is a conflict; modify re-reads and wins.
    let mut stale = got.clone();
    let mut fresh = got.clone();
    fresh.metadata.labels.insert("v".into(), "1".into());
    pods.update(&fresh).await.unwrap();
    stale.metadata.labels.insert("v".into(), "2".into());
    let e = pods.update(&stale).await.unwrap_err();
    assert!(e.is_conflict(), "{e}");
    let modified = pods
        .modify(&got.key(), |p| {
            p.metadata.labels.insert("v".into(), "3".into());
            true
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(modified.metadata.labels["v"], "3");

    // Status goes through its subresource only.
    let st = pods
        .modify_status(&got.key(), |p| {
            p.status.get_or_insert_with(Default::default).phase = "Running".into();
            true
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.phase(), "Running");
    let mut spec_write = st.clone();
    spec_write.status.as_mut().unwrap().phase = "Failed".into();
    let kept = pods.update(&spec_write).await.unwrap();
    assert_eq!(
        kept.phase(),
        "Running",
        "a main-resource update keeps the status"
    );

    // Patches of each type.
    let merged = pods
        .patch(
            &got.key(),
            &Patch::Merge(json!({"metadata": {"labels": {"m": "1"}}})),
            false,
        )
        .await
        .unwrap();
    assert_eq!(merged.metadata.labels["m"], "1");
    let jp = pods
        .patch(
            &got.key(),
            &Patch::Json(json!([{"op": "add", "path": "/metadata/labels/j", "value": "1"}])),
            false,
        )
        .await
        .unwrap();
    assert_eq!(jp.metadata.labels["j"], "1");
    let sp = pods
        .patch(
            &got.key(),
            &Patch::Strategic(json!({"metadata": {"labels": {"s": "1"}}})),
            false,
        )
        .await
        .unwrap();
    assert_eq!(sp.metadata.labels["s"], "1");

    // Paged lists show every object once.
    for i in 0..7 {
        pods.create(pod(&format!("p{i}"))).await.unwrap();
    }
    let mut names = Vec::new();
    let mut next = None;
    let mut pages = 0;
    loop {
        let page = pods
            .list_page("/registry/pods/acme/", 3, next.take())
            .await
            .unwrap();
        pages += 1;
        names.extend(page.items.into_iter().map(|p| p.metadata.name));
        match page.next {
            Some(t) => next = Some(t),
            None => break,
        }
    }
    assert_eq!((names.len(), pages), (8, 3), "{names:?}");
    assert_eq!(pods.list("/registry/pods/").await.unwrap().len(), 8);

    // A precondition on delete, then deleting what is gone.
    let e = pods.delete(&got.key(), Some(1)).await.unwrap_err();
    assert!(e.is_conflict(), "{e}");
    pods.delete(&got.key(), None).await.unwrap();
    pods.delete(&got.key(), None).await.unwrap();
    assert!(pods.get(&got.key()).await.unwrap().is_none());
}

async fn acme_dev(client: &Client) {
    let t = centaurus_core::model::Tenant::typed(ObjectMeta::named("acme"));
    client.api().create(t).await.unwrap();
    let mut ns = Namespace::typed(ObjectMeta::named("dev"));
    ns.metadata.tenant = "acme".into();
    client.api().create(ns).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbs_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let region = Region::start(
        store(&dir).await,
        RegionOptions {
            data_dir: dir.path().to_owned(),
            listen: "127.0.0.1:0".parse().unwrap(),
            config: Default::default(),
            compact_every: Duration::from_secs(3600),
        },
    )
    .await
    .unwrap();
    let mut config = Kubeconfig::load(&region.admin_kubeconfig).unwrap();
    // The first server is down: the client goes on to the second.
    let live = config.clusters[0].cluster.server.clone();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("https://{}", dead.local_addr().unwrap());
    drop(dead);
    config.clusters[0].cluster.server = dead_url;
    config.clusters[0].cluster.set_fallback_servers(&[live]);
    let path = dir.path().join("two.kubeconfig");
    config.write(&path).unwrap();
    let client = Client::new(Kubeconfig::load(&path).unwrap().connection().unwrap()).unwrap();
    acme_dev(&client).await;
    verbs(&client).await;
    region.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbs_in_process_and_the_gate_applies() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalRegion::start(store(&dir).await, dir.path())
        .await
        .unwrap();
    let admin = local.admin();
    acme_dev(&admin).await;
    verbs(&admin).await;
    // Any registered kind through the dynamic API, by what the registry says of it.
    let registry = centaurus_api::region::registry();
    let vpcs = admin.dynamic(centaurus_client::KindRef::from_info(
        registry
            .by_plural("mizar.centaurus.io", "v1", "vpcs")
            .unwrap(),
    ));
    let vpc = vpcs
        .create(
            json!({"metadata": {"name": "v", "tenant": "acme"}, "spec": {"cidr": "10.1.0.0/16"}}),
        )
        .await
        .unwrap();
    assert_eq!(vpc["kind"], "Vpc");
    assert!(
        vpc["spec"]["vni"].as_u64().is_some(),
        "admission assigned a VNI: {vpc}"
    );
    let e = vpcs
        .create(
            json!({"metadata": {"name": "w", "tenant": "acme"}, "spec": {"cidr": "not-a-cidr"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(422), "{e}");
    assert_eq!(vpcs.list("/registry/vpcs/acme/").await.unwrap().len(), 1);
    vpcs.delete("/registry/vpcs/acme/v", None).await.unwrap();
    assert!(vpcs.get("/registry/vpcs/acme/v").await.unwrap().is_none());

    // Another tenant's user in this process is still confined to its tenant.
    let beta = local.client(Identity {
        user: "eve".into(),
        tenant: "beta".into(),
        groups: vec![centaurus_tenancy::TENANT_ADMINS_GROUP.into()],
        tenant_uid: None,
    });
    let e = beta
        .api::<Pod>()
        .list("/registry/pods/acme/")
        .await
        .unwrap_err();
    assert!(e.is_forbidden(), "{e}");
    let e = beta.api::<Pod>().create(pod("x")).await.unwrap_err();
    assert!(e.is_forbidden(), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_resume_and_relist_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let local = LocalRegion::start(store.clone(), dir.path()).await.unwrap();
    let admin = local.admin();
    acme_dev(&admin).await;
    let pods: Api<Pod> = admin.api();
    let start = pods
        .list_page("/registry/pods/", 1, None)
        .await
        .unwrap()
        .revision;
    let informer = Arc::new(Informer::new(pods.source("/registry/pods/acme/")));
    let cache = informer.cache();
    tokio::spawn(informer.clone().run());
    informer.wait_synced().await;

    let a = pods.create(pod("a")).await.unwrap();
    let mut events = pods.watch("/registry/pods/", start).await.unwrap();
    match events.next().await.unwrap().unwrap() {
        WatchEvent::Put(p) => assert_eq!(p.metadata.name, "a"),
        other => panic!("{other:?}"),
    }
    pods.delete(&a.key(), None).await.unwrap();
    match events.next().await.unwrap().unwrap() {
        WatchEvent::Delete(p) => assert_eq!(p.metadata.name, "a"),
        other => panic!("{other:?}"),
    }

    // History before a compaction is gone: a watch from there ends with 410, and the
    // informer lists again and keeps its cache right.
    let b = pods.create(pod("b")).await.unwrap();
    let now = store.revision().await.unwrap();
    store.compact(now).await.unwrap();
    let mut old = pods.watch("/registry/pods/", start).await.unwrap();
    let gone = old.next().await.unwrap().unwrap_err();
    assert!(
        matches!(gone, centaurus_core::controller::SourceError::Gone(_)),
        "{gone}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cache.get(&b.key()).is_none() || cache.get(&a.key()).is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "informer cache stale"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
