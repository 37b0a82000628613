//! The store conformance suite: the behaviour every [`Store`] must show, run against each
//! implementation (`RedbStore`, `EtcdStore`, `WatchCache` over both). Anyone implementing
//! `Store` can run it: `conformance::run(|| async { make_store() }).await`.
//!
//! Each case takes a fresh store from the factory and works under its own key prefix, so a
//! factory may hand out views of one shared backend. The suite panics on the first
//! deviation, naming the case.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::{EventKind, MAX_VALUE_SIZE, RangeOptions, Store, StoreError, WatchStream};

const WAIT: Duration = Duration::from_secs(10);

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn next(stream: &mut WatchStream, case: &str) -> std::sync::Arc<super::Event> {
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(Ok(e))) => e,
        Ok(Some(Err(e))) => panic!("{case}: watch failed: {e}"),
        Ok(None) => panic!("{case}: watch ended"),
        Err(_) => panic!("{case}: no event within {WAIT:?}"),
    }
}

async fn quiet(stream: &mut WatchStream, case: &str) {
    if let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
        panic!("{case}: unexpected watch item {item:?}");
    }
}

/// Expects a watch from a compacted revision to fail, at the call or as its first item
/// (etcd reports it on the stream).
async fn expect_compacted<S: Store>(store: &S, prefix: &str, start: i64, case: &str) {
    match store.watch(prefix, start).await {
        Err(e) => assert!(e.is_gone(), "{case}: expected Compacted, got {e}"),
        Ok(mut s) => match tokio::time::timeout(WAIT, s.next()).await {
            Ok(Some(Err(e))) => assert!(e.is_gone(), "{case}: expected Compacted, got {e}"),
            other => panic!("{case}: expected Compacted, got {other:?}"),
        },
    }
}

/// Runs every case, each on a store from `make`.
pub async fn run<S, F, Fut>(mut make: F)
where
    S: Store,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    crud(&make().await).await;
    guarded_writes(&make().await).await;
    invalid_requests(&make().await).await;
    range_pages(&make().await).await;
    list_at_one_revision(&make().await).await;
    watch_history_and_live(&make().await).await;
    watch_concurrent_writers(&make().await).await;
    many_watchers(&make().await).await;
    compaction(&make().await).await;
}

async fn crud<S: Store>(s: &S) {
    let case = "crud";
    let p = "/conformance/crud/";
    assert_eq!(s.get(&format!("{p}missing")).await.unwrap(), None, "{case}");
    let before = s.revision().await.unwrap();
    let kv = s.create(&format!("{p}a"), b("1")).await.unwrap();
    assert!(kv.mod_revision > before, "{case}: revision must grow");
    assert_eq!(kv.create_revision, kv.mod_revision, "{case}");
    assert_eq!(kv.version, 1, "{case}");
    assert_eq!(
        s.revision().await.unwrap(),
        kv.mod_revision,
        "{case}: store revision is the last write's"
    );
    assert_eq!(
        s.get(&format!("{p}a")).await.unwrap(),
        Some(kv.clone()),
        "{case}"
    );

    let err = s.create(&format!("{p}a"), b("2")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists { .. }),
        "{case}: {err}"
    );
    assert_eq!(
        s.get(&format!("{p}a")).await.unwrap().unwrap().value,
        b("1"),
        "{case}: create must not overwrite"
    );
    assert_eq!(
        s.revision().await.unwrap(),
        kv.mod_revision,
        "{case}: a refused write does not bump the revision"
    );

    let up = s
        .update(&format!("{p}a"), b("2"), kv.mod_revision)
        .await
        .unwrap();
    assert!(up.mod_revision > kv.mod_revision, "{case}");
    assert_eq!(
        (up.create_revision, up.version, &up.value),
        (kv.create_revision, 2, &b("2")),
        "{case}"
    );

    let gone = s.delete(&format!("{p}a"), None).await.unwrap();
    assert!(gone.mod_revision > up.mod_revision, "{case}");
    assert_eq!(gone.value, b("2"), "{case}: delete returns the last value");
    assert_eq!(s.get(&format!("{p}a")).await.unwrap(), None, "{case}");
    let err = s.delete(&format!("{p}a"), None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{case}: {err}");

    // A key can be created again after deletion, with a new create revision.
    let again = s.create(&format!("{p}a"), b("3")).await.unwrap();
    assert!(
        again.create_revision > gone.mod_revision && again.version == 1,
        "{case}"
    );
}

async fn guarded_writes<S: Store>(s: &S) {
    let case = "guarded_writes";
    let k = "/conformance/cas/k";
    let kv = s.create(k, b("v1")).await.unwrap();
    let v2 = s.update(k, b("v2"), kv.mod_revision).await.unwrap();
    match s.update(k, b("stale"), kv.mod_revision).await {
        Err(StoreError::Conflict {
            expected, actual, ..
        }) => {
            assert_eq!(
                (expected, actual),
                (kv.mod_revision, v2.mod_revision),
                "{case}"
            )
        }
        other => panic!("{case}: stale update must conflict, got {other:?}"),
    }
    assert_eq!(
        s.get(k).await.unwrap().unwrap().value,
        b("v2"),
        "{case}: a conflict changes nothing"
    );
    match s.update("/conformance/cas/missing", b("x"), 0).await {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!(
            "{case}: update of a missing key (even at revision 0) must be NotFound, got {other:?}"
        ),
    }
    assert_eq!(
        s.get("/conformance/cas/missing").await.unwrap(),
        None,
        "{case}"
    );
    match s.delete(k, Some(kv.mod_revision)).await {
        Err(StoreError::Conflict { actual, .. }) => assert_eq!(actual, v2.mod_revision, "{case}"),
        other => panic!("{case}: stale delete must conflict, got {other:?}"),
    }
    assert!(s.get(k).await.unwrap().is_some(), "{case}");
    s.delete(k, Some(v2.mod_revision)).await.unwrap();
    assert!(s.get(k).await.unwrap().is_none(), "{case}");

    // Racing updates from one revision: exactly one wins.
    let base = s.create("/conformance/cas/race", b("0")).await.unwrap();
    let results = futures::future::join_all((0..8).map(|i| {
        s.update(
            "/conformance/cas/race",
            Bytes::from(i.to_string()),
            base.mod_revision,
        )
    }))
    .await;
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        wins, 1,
        "{case}: exactly one of racing updates wins: {results:?}"
    );
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(_) | Err(StoreError::Conflict { .. }))),
        "{case}: losers see Conflict"
    );
}

async fn invalid_requests<S: Store>(s: &S) {
    let case = "invalid_requests";
    assert!(
        matches!(
            s.create("", b("x")).await,
            Err(StoreError::InvalidArgument(_))
        ),
        "{case}: empty key"
    );
    let big = Bytes::from(vec![b'x'; MAX_VALUE_SIZE + 1]);
    assert!(
        matches!(
            s.create("/conformance/invalid/big", big).await,
            Err(StoreError::InvalidArgument(_))
        ),
        "{case}: oversized value"
    );
    assert_eq!(
        s.get("/conformance/invalid/big").await.unwrap(),
        None,
        "{case}: nothing stored"
    );
    let max = Bytes::from(vec![b'y'; MAX_VALUE_SIZE]);
    let kv = s
        .create("/conformance/invalid/max", max.clone())
        .await
        .unwrap();
    assert_eq!(
        s.get("/conformance/invalid/max")
            .await
            .unwrap()
            .unwrap()
            .value,
        max,
        "{case}"
    );
    assert_eq!(kv.value.len(), MAX_VALUE_SIZE, "{case}");
    assert!(
        s.watch("/x", -1).await.is_err(),
        "{case}: negative watch start"
    );
}

async fn range_pages<S: Store>(s: &S) {
    let case = "range_pages";
    let p = "/conformance/range/";
    let mut keys: Vec<String> = (0..25).map(|i| format!("{p}a/{i:03}")).collect();
    for k in &keys {
        s.create(k, Bytes::from(k.clone())).await.unwrap();
    }
    // Siblings that share a string prefix but not the path prefix.
    s.create(&format!("{p}ab/x"), b("no")).await.unwrap();
    s.create(&format!("{p}a"), b("no")).await.unwrap();
    keys.sort();
    let all = s
        .range(&format!("{p}a/"), RangeOptions::default())
        .await
        .unwrap();
    assert_eq!(
        all.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(),
        keys,
        "{case}"
    );
    assert!(!all.more, "{case}");
    assert!(
        all.revision >= all.kvs.iter().map(|kv| kv.mod_revision).max().unwrap(),
        "{case}"
    );
    assert!(
        all.kvs.iter().all(|kv| kv.value == kv.key.as_bytes()),
        "{case}: values"
    );

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .range(
                &format!("{p}a/"),
                RangeOptions {
                    limit: 7,
                    after: after.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(page.kvs.len() <= 7, "{case}");
        seen.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        if !page.more {
            break;
        }
        after = page.kvs.last().map(|kv| kv.key.clone());
    }
    assert_eq!(seen, keys, "{case}: pages cover every key once, in order");
    let exact = s
        .range(
            &format!("{p}a/"),
            RangeOptions {
                limit: 25,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        !exact.more && exact.kvs.len() == 25,
        "{case}: a full last page has more=false"
    );
    let empty = s
        .range("/conformance/range/none/", RangeOptions::default())
        .await
        .unwrap();
    assert!(empty.kvs.is_empty() && !empty.more, "{case}");
}

/// A paged list read while the keys change: every page shows the first page's revision, and
/// a watch from the next revision brings every change since, exactly once, so that list +
/// watch equals the store now.
async fn list_at_one_revision<S: Store>(s: &S) {
    use std::collections::BTreeMap;
    let case = "list_at_one_revision";
    let p = "/conformance/snapshot/";
    let key = |i: usize| format!("{p}k{i:02}");
    let mut then = BTreeMap::new();
    for i in 0..30 {
        let kv = s.create(&key(i), b("v0")).await.unwrap();
        then.insert(kv.key.clone(), kv);
    }
    let page = |after: Option<String>, revision| RangeOptions {
        limit: 10,
        after,
        revision,
    };
    let first = s.range(p, page(None, 0)).await.unwrap();
    let at = first.revision;
    assert_eq!(first.kvs.len(), 10, "{case}");
    // Writes before, inside and after the pages still to read.
    let k05 = s.get(&key(5)).await.unwrap().unwrap();
    s.update(&key(5), b("v1"), k05.mod_revision).await.unwrap();
    let k15 = s.get(&key(15)).await.unwrap().unwrap();
    s.update(&key(15), b("v1"), k15.mod_revision).await.unwrap();
    s.delete(&key(20), None).await.unwrap();
    s.delete(&key(12), None).await.unwrap();
    s.create(&key(12), b("again")).await.unwrap();
    s.create(&format!("{p}k17a"), b("new")).await.unwrap();
    s.create(&key(99), b("new")).await.unwrap();
    let k25 = s.get(&key(25)).await.unwrap().unwrap();
    s.update(&key(25), b("v1"), k25.mod_revision).await.unwrap();
    let writes = 8;

    let mut listed: BTreeMap<String, super::KeyValue> = first
        .kvs
        .into_iter()
        .map(|kv| (kv.key.clone(), kv))
        .collect();
    let mut after = listed.keys().last().cloned();
    loop {
        let next = s.range(p, page(after.clone(), at)).await.unwrap();
        assert_eq!(
            next.revision, at,
            "{case}: a later page reports the list's revision"
        );
        after = next.kvs.last().map(|kv| kv.key.clone());
        listed.extend(next.kvs.into_iter().map(|kv| (kv.key.clone(), kv)));
        if !next.more {
            break;
        }
    }
    assert_eq!(
        listed, then,
        "{case}: the pages show the keys as they were at {at}"
    );

    // List + watch from the next revision = now, each change seen once.
    let mut w = s.watch(p, at + 1).await.unwrap();
    for _ in 0..writes {
        let e = next(&mut w, case).await;
        assert!(e.revision() > at, "{case}");
        match e.kind {
            EventKind::Put => {
                listed.insert(e.kv.key.clone(), e.kv.clone());
            }
            EventKind::Delete => {
                assert!(listed.remove(&e.kv.key).is_some(), "{case}: {e:?}");
            }
        }
    }
    quiet(&mut w, case).await;
    let now: BTreeMap<String, super::KeyValue> = s
        .range(p, RangeOptions::default())
        .await
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| (kv.key.clone(), kv))
        .collect();
    assert_eq!(listed, now, "{case}: list + watch is the store now");

    let current = s.revision().await.unwrap();
    match s.range(p, page(None, current + 10)).await {
        Err(StoreError::FutureRevision { .. }) => {}
        other => panic!("{case}: a future revision must fail, got {other:?}"),
    }
    s.compact(current).await.unwrap();
    match s.range(p, page(after, at)).await {
        Err(e) if e.is_gone() => {}
        other => panic!("{case}: a compacted revision must be gone, got {other:?}"),
    }
}

async fn watch_history_and_live<S: Store>(s: &S) {
    let case = "watch_history_and_live";
    let p = "/conformance/watch/";
    let a = s.create(&format!("{p}k"), b("1")).await.unwrap();
    let u = s
        .update(&format!("{p}k"), b("2"), a.mod_revision)
        .await
        .unwrap();
    s.create("/conformance/other/k", b("elsewhere"))
        .await
        .unwrap();
    let d = s.delete(&format!("{p}k"), None).await.unwrap();

    let mut w = s.watch(p, a.mod_revision).await.unwrap();
    let e1 = next(&mut w, case).await;
    assert_eq!(
        (e1.kind, e1.revision(), &e1.kv.value, e1.kv.version),
        (EventKind::Put, a.mod_revision, &b("1"), 1),
        "{case}"
    );
    assert_eq!(e1.prev_value, None, "{case}");
    let e2 = next(&mut w, case).await;
    assert_eq!(
        (e2.kind, e2.revision(), &e2.kv.value),
        (EventKind::Put, u.mod_revision, &b("2")),
        "{case}"
    );
    assert_eq!(
        e2.prev_value,
        Some(b("1")),
        "{case}: updates carry the previous value"
    );
    assert_eq!(e2.kv.create_revision, a.mod_revision, "{case}");
    let e3 = next(&mut w, case).await;
    assert_eq!(
        (e3.kind, e3.revision(), &e3.kv.value),
        (EventKind::Delete, d.mod_revision, &b("2")),
        "{case}"
    );

    // Live events follow the history without a gap; other prefixes are filtered out.
    s.create("/conformance/other/k2", b("x")).await.unwrap();
    let live = s.create(&format!("{p}live"), b("L")).await.unwrap();
    let e4 = next(&mut w, case).await;
    assert_eq!(
        (e4.revision(), &e4.kv.key),
        (live.mod_revision, &format!("{p}live")),
        "{case}"
    );

    // Starting mid-history skips earlier events.
    let mut mid = s.watch(p, u.mod_revision).await.unwrap();
    assert_eq!(
        next(&mut mid, case).await.revision(),
        u.mod_revision,
        "{case}"
    );

    // Watching "from now" (0) sees only later changes.
    let mut now = s.watch(p, 0).await.unwrap();
    quiet(&mut now, case).await;
    let later = s.create(&format!("{p}later"), b("x")).await.unwrap();
    assert_eq!(
        next(&mut now, case).await.revision(),
        later.mod_revision,
        "{case}"
    );

    // A start in the future waits for that revision.
    let future = s.revision().await.unwrap() + 2;
    let mut fut = s.watch(p, future).await.unwrap();
    s.create(&format!("{p}f1"), b("x")).await.unwrap();
    let f2 = s.create(&format!("{p}f2"), b("x")).await.unwrap();
    let e = next(&mut fut, case).await;
    assert_eq!(
        e.revision(),
        f2.mod_revision,
        "{case}: events before the start are skipped"
    );
}

async fn watch_concurrent_writers<S: Store>(s: &S) {
    let case = "watch_concurrent_writers";
    let p = "/conformance/concurrent/";
    let start = s.revision().await.unwrap() + 1;
    let mut w = s.watch(p, start).await.unwrap();
    let writes = futures::future::join_all((0..4).map(|t| async move {
        let mut revs = Vec::new();
        for i in 0..25 {
            revs.push(
                s.create(&format!("{p}{t}/{i}"), b("x"))
                    .await
                    .unwrap()
                    .mod_revision,
            );
        }
        revs
    }))
    .await;
    let mut acked: Vec<i64> = writes.into_iter().flatten().collect();
    acked.sort();
    let mut seen = Vec::new();
    for _ in 0..acked.len() {
        seen.push(next(&mut w, case).await.revision());
    }
    assert!(
        seen.windows(2).all(|p| p[0] < p[1]),
        "{case}: strictly increasing revisions"
    );
    assert_eq!(
        seen, acked,
        "{case}: exactly the acknowledged writes, no gaps, no duplicates"
    );
}

async fn many_watchers<S: Store>(s: &S) {
    let case = "many_watchers";
    let p = "/conformance/fanout/";
    let start = s.revision().await.unwrap() + 1;
    let mut watchers = Vec::new();
    for _ in 0..100 {
        watchers.push(s.watch(p, start).await.unwrap());
    }
    let mut revs = Vec::new();
    for i in 0..50 {
        revs.push(
            s.create(&format!("{p}{i:02}"), b("x"))
                .await
                .unwrap()
                .mod_revision,
        );
    }
    for w in &mut watchers {
        for r in &revs {
            assert_eq!(next(w, case).await.revision(), *r, "{case}");
        }
    }
}

async fn compaction<S: Store>(s: &S) {
    let case = "compaction";
    let p = "/conformance/compact/";
    let mut revs = Vec::new();
    for i in 0..5 {
        revs.push(
            s.create(&format!("{p}{i}"), b("x"))
                .await
                .unwrap()
                .mod_revision,
        );
    }
    s.compact(revs[3]).await.unwrap();
    expect_compacted(s, p, revs[1], case).await;
    let mut w = s.watch(p, revs[3]).await.unwrap();
    assert_eq!(
        next(&mut w, case).await.revision(),
        revs[3],
        "{case}: the compaction revision stays watchable"
    );
    assert_eq!(next(&mut w, case).await.revision(), revs[4], "{case}");
    // Data is untouched by compaction.
    assert_eq!(
        s.range(p, RangeOptions::default()).await.unwrap().kvs.len(),
        5,
        "{case}"
    );
    match s.compact(revs[2]).await {
        Err(e) if e.is_gone() => {}
        other => panic!("{case}: compacting below the compacted revision must fail, got {other:?}"),
    }
    let current = s.revision().await.unwrap();
    match s.compact(current + 10).await {
        Err(StoreError::FutureRevision { .. }) => {}
        other => panic!("{case}: compacting the future must fail, got {other:?}"),
    }
}

/// A throwaway etcd server on free loopback ports, for tests and benchmarks. The process
/// and its data directory go when this is dropped.
#[cfg(feature = "etcd")]
pub struct EtcdServer {
    child: std::process::Child,
    _dir: TempDir,
    /// The client URL, `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

#[cfg(feature = "etcd")]
struct TempDir(std::path::PathBuf);

#[cfg(feature = "etcd")]
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(feature = "etcd")]
impl EtcdServer {
    /// Starts `etcd` from `PATH` and waits until it answers. `Ok(None)` when no `etcd`
    /// binary is installed (callers decide whether that may skip).
    pub async fn start() -> Result<Option<Self>, String> {
        let Some(bin) = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("etcd"))
                .find(|p| p.is_file())
        }) else {
            return Ok(None);
        };
        let free_port = || -> Result<u16, String> {
            let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            Ok(l.local_addr().map_err(|e| e.to_string())?.port())
        };
        let (client, peer) = (free_port()?, free_port()?);
        let dir =
            std::env::temp_dir().join(format!("centaurus-etcd-{}-{client}", std::process::id()));
        let dir = TempDir(dir);
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = std::process::Command::new(bin)
            .args(["--name", "conformance", "--data-dir"])
            .arg(&dir.0)
            .args([
                "--listen-client-urls",
                &endpoint,
                "--advertise-client-urls",
                &endpoint,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("conformance={peer_url}")])
            .args(["--log-level", "error", "--logger", "zap"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("starting etcd: {e}"))?;
        let server = Self {
            child,
            _dir: dir,
            endpoint,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(store) = server.store("/probe").await
                && store.revision().await.is_ok()
            {
                return Ok(Some(server));
            }
            if std::time::Instant::now() > deadline {
                return Err("etcd did not answer within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A store whose keys live under `root` on this server.
    pub async fn store(&self, root: &str) -> super::Result<super::EtcdStore> {
        super::EtcdStore::connect(super::EtcdConfig {
            endpoints: vec![self.endpoint.clone()],
            root: root.to_owned(),
        })
        .await
    }
}

#[cfg(feature = "etcd")]
impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
