//! Active-active ReplicaSet controllers over Leases: three instances split the replica
//! sets between them, a killed instance's share is taken over within its lease expiry, and
//! from the instances' own records, no replica set is ever reconciled by two instances at
//! once, and no replica set gets more pods than it asks for.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use centaurus_api::region::LocalRegion;
use centaurus_controllers::{Membership, MembershipConfig, ReplicaSetController, Share};
use centaurus_core::controller::Observer;
use centaurus_core::model::{
    Container, LabelSelector, ObjectMeta, Pod, PodSpec, PodTemplateSpec, ReplicaSet,
    ReplicaSetSpec, Resource,
};
use centaurus_core::store::{RedbStore, Store};
use centaurus_tenancy::identity;

type Records = Arc<Mutex<Vec<(String, String, Instant, Instant)>>>;

fn replica_set(i: usize) -> ReplicaSet {
    let labels: BTreeMap<String, String> = [("app".to_string(), format!("rs{i}"))].into();
    let mut rs = ReplicaSet::typed(ObjectMeta::namespaced("acme", "prod", format!("rs{i}")));
    rs.spec = ReplicaSetSpec {
        replicas: Some(2),
        selector: LabelSelector {
            match_labels: labels.clone(),
            ..Default::default()
        },
        template: PodTemplateSpec {
            metadata: ObjectMeta {
                labels,
                ..Default::default()
            },
            spec: PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: "busybox".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        },
        ..Default::default()
    };
    rs
}

/// Pods per replica set name.
async fn pods_per_set(admin: &centaurus_client::Client) -> HashMap<String, usize> {
    let mut per = HashMap::new();
    for p in admin
        .api::<Pod>()
        .list("/registry/pods/acme/")
        .await
        .unwrap()
    {
        if let Some(owner) = p.metadata.controller_ref() {
            *per.entry(owner.name.clone()).or_default() += 1;
        }
    }
    per
}

async fn converge(
    admin: &centaurus_client::Client,
    sets: usize,
    want: usize,
    secs: u64,
) -> Duration {
    let start = Instant::now();
    loop {
        let per = pods_per_set(admin).await;
        if per.len() == sets && per.values().all(|&n| n == want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "not converged to {want} pods per set: {per:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_take_over_and_never_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
    let local = LocalRegion::start(store, dir.path()).await.unwrap();
    local.space("acme", "prod").await.unwrap();
    let admin = local.admin();
    let records: Records = Arc::default();
    let lease = Duration::from_secs(1);
    let mut instances = HashMap::new();
    for name in ["a", "b", "c"] {
        let client = local.client(identity::CONTROLLERS.identity());
        let membership = Membership::new(
            &client,
            MembershipConfig {
                group: "controllers".into(),
                name: name.into(),
                period: Duration::from_millis(200),
                lease,
                settle: Duration::from_millis(400),
            },
        );
        let r = records.clone();
        let who = name.to_owned();
        let observer: Observer = Arc::new(move |key: &str, start, end| {
            r.lock()
                .unwrap()
                .push((who.clone(), key.to_owned(), start, end));
        });
        let share = Share {
            observer: Some(observer),
            ..membership.share()
        };
        let task = tokio::spawn(async move {
            tokio::join!(
                membership.run(),
                ReplicaSetController::run(client, 2, share)
            );
        });
        instances.insert(name, task);
    }
    let sets = 30;
    for i in 0..sets {
        admin.api().create(replica_set(i)).await.unwrap();
    }
    converge(&admin, sets, 2, 30).await;
    let by: std::collections::HashSet<String> = records
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.0.clone())
        .collect();
    assert_eq!(by.len(), 3, "every instance reconciled some sets: {by:?}");

    // Kill one instance (no goodbye: its lease just stops), then scale every set up.
    instances.remove("c").unwrap().abort();
    let killed = Instant::now();
    for i in 0..sets {
        admin
            .api::<ReplicaSet>()
            .modify(&format!("/registry/replicasets/acme/prod/rs{i}"), |rs| {
                rs.spec.replicas = Some(3);
                true
            })
            .await
            .unwrap();
    }
    converge(&admin, sets, 3, 30).await;
    let takeover = killed.elapsed();
    eprintln!(
        "a killed instance's share converged {:.2} s after the kill (lease {lease:?})",
        takeover.as_secs_f64()
    );
    assert!(
        takeover < lease + Duration::from_secs(5),
        "takeover took {takeover:?}"
    );

    // Settle, then check the records and the pods again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(pods_per_set(&admin).await.values().all(|&n| n == 3));
    let records = records.lock().unwrap().clone();
    let mut per_key: HashMap<&str, Vec<&(String, String, Instant, Instant)>> = HashMap::new();
    for r in &records {
        per_key.entry(r.1.as_str()).or_default().push(r);
    }
    for (key, mut rs) in per_key {
        rs.sort_by_key(|r| r.2);
        for w in rs.windows(2) {
            if w[0].0 != w[1].0 {
                assert!(
                    w[0].3 <= w[1].2,
                    "{key} reconciled by {} and {} at once",
                    w[0].0,
                    w[1].0
                );
            }
        }
    }
    for (_, t) in instances {
        t.abort();
    }
}
