//! Controller runtime: informers feed reconcilers; active-active instances split objects
//! over a hash ring; failures retry with backoff; deletions reach the reconciler.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use centaurus_core::controller::{Controller, Reconciler, Requeue, RingOwnership, WorkQueue};
use centaurus_core::model::{Container, ObjectMeta, Pod, Resource, hash_key_of};
use centaurus_core::ring::{HashRing, RingConfig};
use centaurus_core::store::{RedbStore, Store};

type Seen = Arc<Mutex<HashMap<String, Vec<(String, bool)>>>>;

struct Recorder {
    me: String,
    seen: Seen,
    /// Keys that fail this many times before succeeding.
    failures: Arc<Mutex<HashMap<String, u32>>>,
}

#[async_trait]
impl Reconciler<Pod> for Recorder {
    async fn reconcile(&self, key: &str, object: Option<Pod>) -> Result<Requeue, String> {
        {
            let mut f = self.failures.lock().unwrap();
            if let Some(n) = f.get_mut(key)
                && *n > 0
            {
                *n -= 1;
                return Err(format!("{key}: transient failure"));
            }
        }
        self.seen
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default()
            .push((self.me.clone(), object.is_some()));
        Ok(Requeue::Done)
    }
}

fn pod(name: &str) -> Pod {
    let mut meta = ObjectMeta::namespaced("acme", "dev", name);
    meta.uid = format!("uid-{name}");
    meta.hash_key = hash_key_of(&meta.uid);
    let mut p = Pod::typed(meta);
    p.spec.containers.push(Container {
        name: "c".into(),
        image: "busybox".into(),
        ..Default::default()
    });
    p
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_active_controllers_split_objects_by_ring() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
    let pods: Vec<Pod> = (0..60).map(|i| pod(&format!("p{i}"))).collect();
    // Half exist before the controllers start (initial list), half arrive by watch.
    for p in &pods[..30] {
        store
            .create(&p.key(), serde_json::to_vec(p).unwrap().into())
            .await
            .unwrap();
    }
    let ring = Arc::new(RwLock::new(HashRing::with_owners(
        RingConfig::default(),
        ["c1", "c2"],
    )));
    let seen: Seen = Arc::default();
    let failures: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    failures.lock().unwrap().insert(pods[45].key(), 3);
    let prefix = "/registry/pods/acme/";
    let mut tasks = Vec::new();
    for me in ["c1", "c2"] {
        let controller = Controller::<Pod>::from_store(store.clone(), prefix)
            .with_ownership(RingOwnership {
                ring: ring.clone(),
                me: me.into(),
            })
            .with_workers(2);
        let r = Recorder {
            me: me.into(),
            seen: seen.clone(),
            failures: failures.clone(),
        };
        tasks.push(tokio::spawn(controller.run(r)));
    }
    for p in &pods[30..] {
        store
            .create(&p.key(), serde_json::to_vec(p).unwrap().into())
            .await
            .unwrap();
    }
    wait_for("every pod reconciled", || seen.lock().unwrap().len() == 60).await;
    {
        let seen = seen.lock().unwrap();
        let ring = ring.read().unwrap();
        let mut per = HashMap::new();
        for p in &pods {
            let calls = &seen[&p.key()];
            let owner = ring.get(p.metadata.ring_position()).unwrap();
            assert!(
                calls.iter().all(|(who, _)| who == owner),
                "{} reconciled by a non-owner: {calls:?}",
                p.key()
            );
            *per.entry(owner.to_owned()).or_insert(0) += 1;
        }
        assert_eq!(per.len(), 2, "both instances got work: {per:?}");
    }
    assert_eq!(
        failures.lock().unwrap()[&pods[45].key()],
        0,
        "the failing key was retried until it succeeded"
    );

    // A deletion reaches the owner with no object.
    let victim = pods[3].key();
    store.delete(&victim, None).await.unwrap();
    wait_for("deletion reconciled", || {
        seen.lock().unwrap()[&victim]
            .iter()
            .any(|(_, exists)| !exists)
    })
    .await;
    for t in tasks {
        t.abort();
    }
}

#[tokio::test]
async fn work_queue_dedups_and_requeues_dirty_keys() {
    let q = WorkQueue::default();
    q.add("a");
    q.add("a");
    q.add("b");
    assert_eq!(q.len(), 2, "a key is queued once");
    let a = q.next().await.unwrap();
    assert_eq!(a, "a");
    q.add("a"); // changed while processing: not handed out twice at once
    assert_eq!(q.next().await.unwrap(), "b");
    assert!(q.is_empty());
    q.done("a");
    assert_eq!(q.next().await.unwrap(), "a", "re-queued after done");
    q.done("a");
    q.done("b");
    q.shut_down();
    assert_eq!(q.next().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn informer_reports_changes_with_store_revisions() {
    use centaurus_core::controller::{Change, Informer};
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
    let p = pod("web");
    let created = store
        .create(&p.key(), serde_json::to_vec(&p).unwrap().into())
        .await
        .unwrap();
    let informer = Arc::new(Informer::<Pod>::from_store(
        store.clone(),
        "/registry/pods/acme/",
    ));
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let l = log.clone();
    informer.on_change(move |c| {
        let entry = match c {
            Change::Added(o) => {
                format!("added {}@{}", o.metadata.name, o.metadata.resource_version)
            }
            Change::Modified { old, new } => format!(
                "modified {}@{}->{}",
                new.metadata.name, old.metadata.resource_version, new.metadata.resource_version
            ),
            Change::Deleted(o) => format!("deleted {}", o.metadata.name),
        };
        l.lock().unwrap().push(entry);
    });
    let task = tokio::spawn(informer.clone().run());
    informer.wait_synced().await;
    let mut p2 = p.clone();
    p2.metadata.labels.insert("v".into(), "2".into());
    let updated = store
        .update(
            &p.key(),
            serde_json::to_vec(&p2).unwrap().into(),
            created.mod_revision,
        )
        .await
        .unwrap();
    store.delete(&p.key(), None).await.unwrap();
    wait_for("three changes", || log.lock().unwrap().len() == 3).await;
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            format!("added web@{}", created.mod_revision),
            format!(
                "modified web@{}->{}",
                created.mod_revision, updated.mod_revision
            ),
            "deleted web".to_string(),
        ]
    );
    assert!(informer.cache().is_empty());
    task.abort();
}

/// A watcher that falls behind is stopped by the store; the informer lists again and its
/// cache converges on the store's contents, deletions included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn informer_relists_after_falling_behind() {
    use centaurus_core::controller::Informer;
    use centaurus_core::store::{RangeOptions, RedbOptions};
    let dir = tempfile::tempdir().unwrap();
    let opts = RedbOptions {
        watch_lag_capacity: 4,
        watch_window: 0,
        ..RedbOptions::default()
    };
    let store: Arc<dyn Store> =
        Arc::new(RedbStore::open_with(dir.path().join("s.redb"), opts).unwrap());
    let informer = Arc::new(Informer::<Pod>::from_store(
        store.clone(),
        "/registry/pods/acme/",
    ));
    let task = tokio::spawn(informer.clone().run());
    informer.wait_synced().await;
    // Bursts far larger than the lag capacity, committed as few batches.
    let pods: Vec<Pod> = (0..300).map(|i| pod(&format!("burst-{i}"))).collect();
    let keys: Vec<String> = pods.iter().map(|p| p.key()).collect();
    let bodies: Vec<_> = pods
        .iter()
        .map(|p| serde_json::to_vec(p).unwrap())
        .collect();
    futures::future::join_all(
        keys.iter()
            .zip(bodies)
            .map(|(k, b)| store.create(k, b.into())),
    )
    .await;
    futures::future::join_all(keys[..100].iter().map(|k| store.delete(k, None))).await;
    let want = store
        .range("/registry/pods/acme/", RangeOptions::default())
        .await
        .unwrap();
    assert_eq!(want.kvs.len(), 200);
    let cache = informer.cache();
    wait_for("cache converged", || cache.len() == 200).await;
    for kv in &want.kvs {
        let cached = cache.get(&kv.key).expect("cached");
        assert_eq!(
            cached.metadata.resource_version,
            kv.mod_revision.to_string()
        );
    }
    task.abort();
}
