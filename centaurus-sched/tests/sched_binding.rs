//! Schedulers as clients of an API server over a real store: pods get bound, and two
//! schedulers racing for the same pods and nodes never overcommit a node.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use centaurus_api::region::LocalRegion;
use centaurus_core::model::{
    Container, LABEL_ZONE, Node, NodeInfo, NodeStatus, ObjectMeta, Pod, PodSpec, Quantity,
    Resource, ResourceList, ResourceRequirements,
};
use centaurus_core::objects::Objects;
use centaurus_core::store::{RedbStore, Store};
use centaurus_sched::binder::ledger_key;
use centaurus_sched::{LedgerBinder, Scheduler, SchedulerConfig};

fn list(pairs: &[(&str, &str)]) -> ResourceList {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity::new(*v)))
        .collect()
}

fn node(i: usize, cpu: &str, pods: &str) -> Node {
    let mut n = Node::typed(ObjectMeta::named(format!("node-{i}")));
    n.metadata
        .labels
        .insert(LABEL_ZONE.into(), format!("zone-{}", i % 2));
    n.status = Some(NodeStatus {
        allocatable: list(&[("cpu", cpu), ("memory", "8Gi"), ("pods", pods)]),
        node_info: NodeInfo {
            workload_types: vec!["container".into()],
            ..Default::default()
        },
        ..Default::default()
    });
    n
}

fn pod(i: usize, cpu: &str) -> Pod {
    let mut p = Pod::typed(ObjectMeta::namespaced("acme", "dev", format!("p-{i}")));
    p.spec = PodSpec {
        containers: vec![Container {
            name: "c".into(),
            image: "busybox".into(),
            resources: ResourceRequirements {
                requests: list(&[("cpu", cpu)]),
                ..Default::default()
            },
            ..Default::default()
        }],
        ..Default::default()
    };
    p
}

/// A store (the tests write nodes and pods into it directly) and an API server over it
/// for the schedulers.
async fn store() -> (tempfile::TempDir, Arc<dyn Store>, LocalRegion) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
    let local = LocalRegion::start(store.clone(), dir.path()).await.unwrap();
    (dir, store, local)
}

fn scheduler_client(local: &LocalRegion) -> centaurus_client::Client {
    local.client(centaurus_tenancy::identity::SCHEDULER.identity())
}

/// Waits until `done` holds over the pods, or panics after `secs`.
async fn wait_pods(store: &Arc<dyn Store>, secs: u64, done: impl Fn(&[Pod]) -> bool) -> Vec<Pod> {
    let pods = Objects::<Pod>::new(store.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let all = pods.list("/registry/pods/").await.unwrap();
        if done(&all) {
            return all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out; bound {} of {}",
            all.iter().filter(|p| !p.spec.node_name.is_empty()).count(),
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_pods_and_explains_the_ones_that_wait() {
    let (_dir, store, local) = store().await;
    let nodes = Objects::<Node>::new(store.clone());
    let pods = Objects::<Pod>::new(store.clone());
    for i in 0..4 {
        nodes.create(node(i, "2", "110")).await.unwrap();
    }
    let scheduler = Arc::new(Scheduler::new(
        scheduler_client(&local),
        SchedulerConfig::default(),
    ));
    let task = tokio::spawn(scheduler.clone().run());
    for i in 0..10 {
        pods.create(pod(i, "500m")).await.unwrap();
    }
    let big = pods.create(pod(99, "3")).await.unwrap();
    let all = wait_pods(&store, 20, |all| {
        all.iter().filter(|p| !p.spec.node_name.is_empty()).count() == 10
            && all.iter().any(|p| {
                p.status
                    .as_ref()
                    .is_some_and(|s| s.conditions.iter().any(|c| c.reason == "Unschedulable"))
            })
    })
    .await;
    let waiting = all
        .iter()
        .find(|p| p.metadata.name == big.metadata.name)
        .unwrap();
    let cond = &waiting.status.as_ref().unwrap().conditions[0];
    assert_eq!(cond.message, "0/4 nodes are available: 4 Insufficient cpu");
    let mut per_zone = HashMap::new();
    for p in all.iter().filter(|p| !p.spec.node_name.is_empty()) {
        *per_zone.entry(p.spec.node_name.clone()).or_insert(0) += 1;
    }
    assert!(per_zone.values().all(|&n| n <= 4), "{per_zone:?}");

    // A bigger node arrives: the waiting pod is retried and bound there.
    nodes.create(node(7, "4", "110")).await.unwrap();
    let all = wait_pods(&store, 20, |all| {
        all.iter().all(|p| !p.spec.node_name.is_empty())
    })
    .await;
    let waiting = all
        .iter()
        .find(|p| p.metadata.name == big.metadata.name)
        .unwrap();
    assert_eq!(waiting.spec.node_name, "node-7");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_racing_never_overcommit() {
    let (_dir, store, local) = store().await;
    let nodes = Objects::<Node>::new(store.clone());
    let pods = Objects::<Pod>::new(store.clone());
    // 10 nodes with room for 4 pods of 500m each: 40 of the 60 pods fit.
    for i in 0..10 {
        nodes.create(node(i, "2", "110")).await.unwrap();
    }
    let mut tasks = Vec::new();
    for name in ["a", "b"] {
        let config = SchedulerConfig {
            // Both schedule every pod: the worst case for double booking.
            feasible_nodes: 3,
            ..SchedulerConfig::default()
        };
        let s = Arc::new(Scheduler::with_binder(
            scheduler_client(&local),
            config,
            Arc::new(LedgerBinder::new(scheduler_client(&local))),
        ));
        tracing::debug!(name, "scheduler started");
        tasks.push(tokio::spawn(s.run()));
    }
    let creates: Vec<_> = (0..60)
        .map(|i| {
            let pods = pods.clone();
            tokio::spawn(async move { pods.create(pod(i, "500m")).await.unwrap() })
        })
        .collect();
    for c in creates {
        c.await.unwrap();
    }
    let all = wait_pods(&store, 30, |all| {
        all.iter().filter(|p| !p.spec.node_name.is_empty()).count() >= 40
    })
    .await;
    // Give racing bindings time to land, then check nothing went over.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = pods.list("/registry/pods/").await.unwrap_or(all);
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for p in all.iter().filter(|p| !p.spec.node_name.is_empty()) {
        *per_node.entry(p.spec.node_name.clone()).or_default() += 1;
    }
    assert!(
        per_node.values().all(|&n| n <= 4),
        "overcommitted: {per_node:?}"
    );
    assert_eq!(per_node.values().sum::<usize>(), 40);
    // Every ledger books exactly the pods bound to its node.
    let binder = LedgerBinder::new(scheduler_client(&local));
    for (node, n) in &per_node {
        let ledger = binder.ledger(node).await.unwrap();
        assert_eq!(ledger.spec.pods.len(), *n, "ledger of {node}");
        assert!(store.get(&ledger_key(node)).await.unwrap().is_some());
    }
    // Deleting the pods frees their bookings (pods still waiting may take the freed room
    // meanwhile, so delete them all).
    for p in &all {
        pods.delete(&p.key(), None).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = store
            .range("/registry/nodeledgers/", Default::default())
            .await
            .unwrap();
        let pods_left = pods.list("/registry/pods/").await.unwrap();
        if left.kvs.is_empty() && pods_left.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bookings not released: {:?}",
            left.kvs
                .iter()
                .map(|kv| String::from_utf8_lossy(&kv.value))
                .collect::<Vec<_>>()
        );
        for p in &pods_left {
            pods.delete(&p.key(), None).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for t in tasks {
        t.abort();
    }
}
