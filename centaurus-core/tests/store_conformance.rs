//! The store conformance suite against every implementation: RedbStore, EtcdStore on a real
//! etcd, the WatchCache over each, and the Sealed wrapper (sealing every key).

use std::sync::Arc;

use centaurus_core::store::{RedbStore, Sealed, SealingKey, WatchCache, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    conformance::run(|| {
        n += 1;
        let path = dir.path().join(format!("store-{n}.redb"));
        async move { RedbStore::open(path).unwrap() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_cache_over_redb_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    conformance::run(|| {
        n += 1;
        let path = dir.path().join(format!("store-{n}.redb"));
        async move {
            WatchCache::new(RedbStore::open(path).unwrap(), 1024, 4096)
                .await
                .unwrap()
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_redb_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(SealingKey::generate());
    let mut n = 0;
    conformance::run(|| {
        n += 1;
        let path = dir.path().join(format!("store-{n}.redb"));
        let key = key.clone();
        async move { Sealed::new(RedbStore::open(path).unwrap(), key, &[""]) }
    })
    .await;
}

/// etcd-backed suites share one server and run in sequence (compaction is server-wide).
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_conforms() {
    use centaurus_core::store::conformance::EtcdServer;
    let Some(etcd) = EtcdServer::start().await.unwrap() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "etcd is not installed, and CI must run the etcd suite (.ci/run installs etcd-server)"
        );
        eprintln!(
            "SKIPPED etcd_store_conforms: no `etcd` binary on PATH (apt-get install etcd-server)"
        );
        return;
    };
    // At the root the API servers use (none): every answer, the revision included.
    use centaurus_core::store::Store as _;
    let whole = etcd.store("").await.unwrap();
    let before = whole.revision().await.unwrap();
    let kv = whole
        .create("/whole/a", bytes::Bytes::from_static(b"1"))
        .await
        .unwrap();
    assert!(kv.mod_revision > before);
    assert_eq!(whole.revision().await.unwrap(), kv.mod_revision);
    let mut n = 0;
    conformance::run(|| {
        n += 1;
        let root = format!("/plain-{n}");
        let etcd = &etcd;
        async move { etcd.store(&root).await.unwrap() }
    })
    .await;
    conformance::run(|| {
        n += 1;
        let root = format!("/cached-{n}");
        let etcd = &etcd;
        async move {
            WatchCache::new(etcd.store(&root).await.unwrap(), 1024, 4096)
                .await
                .unwrap()
        }
    })
    .await;
}
