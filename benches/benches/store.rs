//! Store figures: durable create throughput and get latency (RedbStore, the same sealed as
//! Secrets are, and EtcdStore on a real etcd with `--features etcd`, in the same run), the
//! cost of sealing and opening one Secret, and watch fan-out: 1,000 watchers receiving
//! 10,000 events each, in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use centaurus_core::store::{RedbStore, Sealed, SealingKey, Store};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;

const CONCURRENCY: usize = 64;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn value() -> Bytes {
    // About the size of a small pod object.
    Bytes::from(vec![b'x'; 1024])
}

/// Creates `CONCURRENCY` keys at once (one durable write each, acknowledged after fsync) and
/// gets a key, for one store.
fn bench_store(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, store: Arc<dyn Store>) {
    let counter = AtomicU64::new(0);
    let mut group = c.benchmark_group("store_create_durable");
    group.throughput(Throughput::Elements(CONCURRENCY as u64));
    group.bench_function(BenchmarkId::new(name, CONCURRENCY), |b| {
        b.to_async(rt).iter(|| {
            let base = counter.fetch_add(1, Ordering::Relaxed);
            let store = store.clone();
            async move {
                let writes = (0..CONCURRENCY).map(|i| {
                    let store = store.clone();
                    async move {
                        store
                            .create(&format!("/bench/{base}/{i}"), value())
                            .await
                            .unwrap()
                    }
                });
                futures::future::join_all(writes).await
            }
        })
    });
    group.finish();

    let key = "/bench/get/key";
    rt.block_on(store.create(key, value())).unwrap();
    let mut group = c.benchmark_group("store_get");
    group.bench_function(name, |b| {
        b.to_async(rt)
            .iter(|| async { store.get(key).await.unwrap().unwrap() })
    });
    group.finish();
}

fn stores(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let redb: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("bench.redb")).unwrap());
    bench_store(c, &rt, "redb", redb);
    // Every key sealed, as `/registry/secrets/` is in a region: the ratio to "redb" is
    // what sealing adds to a durable create and a get.
    let sealed = RedbStore::open(dir.path().join("sealed.redb")).unwrap();
    let key = Arc::new(SealingKey::generate());
    let sealed: Arc<dyn Store> = Arc::new(Sealed::new(sealed, key, &["/bench/"]));
    bench_store(c, &rt, "redb_sealed", sealed);

    #[cfg(feature = "etcd")]
    {
        use centaurus_core::store::conformance::EtcdServer;
        let etcd = rt
            .block_on(EtcdServer::start())
            .unwrap()
            .expect("etcd binary on PATH");
        let store: Arc<dyn Store> = Arc::new(rt.block_on(etcd.store("/bench")).unwrap());
        bench_store(c, &rt, "etcd", store);
        drop(etcd);
    }
}

/// AES-256-GCM on one Secret value: sealing (on create and update) and opening (on every
/// read, list item and watch event), at a typical size and at the 1 MiB limit's 1/16.
fn sealing(c: &mut Criterion) {
    let key = SealingKey::generate();
    let mut group = c.benchmark_group("secret_sealing");
    for size in [1024usize, 64 * 1024] {
        let plain = vec![b'x'; size];
        let store_key = "/registry/secrets/acme/default/db";
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("seal", size), |b| {
            b.iter(|| key.seal(store_key, &plain))
        });
        let sealed = key.seal(store_key, &plain);
        group.bench_function(BenchmarkId::new("open", size), |b| {
            b.iter(|| key.open(store_key, sealed.clone()).unwrap())
        });
    }
    group.finish();
}

const WATCHERS: usize = 1000;
const EVENTS: usize = 10_000;

/// One round: WATCHERS watchers on a prefix, EVENTS writes from 16 writers; returns when every
/// watcher has seen every event in revision order.
async fn fan_out_round(store: Arc<dyn Store>, round: u64) -> Duration {
    let prefix = format!("/fanout/{round}/");
    let start_rev = store.revision().await.unwrap() + 1;
    let mut watchers = Vec::with_capacity(WATCHERS);
    for _ in 0..WATCHERS {
        let mut w = store.watch(&prefix, start_rev).await.unwrap();
        watchers.push(tokio::spawn(async move {
            let mut last = 0;
            for _ in 0..EVENTS {
                let e = w.next().await.unwrap().unwrap();
                assert!(e.revision() > last, "out of order");
                last = e.revision();
            }
        }));
    }
    let begin = Instant::now();
    let writers = (0..16).map(|t| {
        let store = store.clone();
        let prefix = prefix.clone();
        tokio::spawn(async move {
            for i in (t..EVENTS).step_by(16) {
                store
                    .create(&format!("{prefix}{i:05}"), Bytes::from_static(b"{}"))
                    .await
                    .unwrap();
            }
        })
    });
    futures::future::join_all(writers).await;
    for w in watchers {
        w.await.unwrap();
    }
    begin.elapsed()
}

fn fan_out(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("fanout.redb")).unwrap());
    let mut group = c.benchmark_group("watch_fan_out");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements((WATCHERS * EVENTS) as u64));
    let round = AtomicU64::new(0);
    let mut run = |name: &str, store: Arc<dyn Store>| {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        rt.block_on(fan_out_round(
                            store.clone(),
                            round.fetch_add(1, Ordering::Relaxed),
                        ))
                    })
                    .sum()
            })
        });
    };
    run("redb_1000_watchers_10000_events", store);
    #[cfg(feature = "etcd")]
    {
        use centaurus_core::store::conformance::EtcdServer;
        let etcd = rt
            .block_on(EtcdServer::start())
            .unwrap()
            .expect("etcd binary on PATH");
        let cached = rt.block_on(async {
            centaurus_core::store::WatchCache::new(
                etcd.store("/fanout").await.unwrap(),
                4096,
                65_536,
            )
            .await
        });
        run(
            "etcd_watch_cache_1000_watchers_10000_events",
            Arc::new(cached.unwrap()),
        );
    }
    group.finish();
}

criterion_group!(benches, stores, sealing, fan_out);
criterion_main!(benches);
