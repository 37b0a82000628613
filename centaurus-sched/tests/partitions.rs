//! The schedulers of several tenant partitions share the nodes of several resource
//! partitions: each books a pod in its node's ledger in the node's partition, so no node
//! is ever overcommitted, and each counts what the others booked.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use centaurus_api::ApiConfig;
use centaurus_api::partition::Partition;
use centaurus_api::region::LocalRegion;
use centaurus_core::model::{
    Container, LABEL_ZONE, Node, NodeInfo, NodeLedger, NodeStatus, ObjectMeta, Pod, PodSpec,
    Quantity, Resource, ResourceList, ResourceRequirements,
};
use centaurus_core::objects::Objects;
use centaurus_core::store::{RedbStore, Store};
use centaurus_sched::{Scheduler, SchedulerConfig};

fn list(pairs: &[(&str, &str)]) -> ResourceList {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity::new(*v)))
        .collect()
}

fn node(i: usize) -> Node {
    let mut n = Node::typed(ObjectMeta::named(format!("node-{i}")));
    n.metadata
        .labels
        .insert(LABEL_ZONE.into(), format!("zone-{}", i % 2));
    n.status = Some(NodeStatus {
        // Room for 4 pods of 500m.
        allocatable: list(&[("cpu", "2"), ("memory", "8Gi"), ("pods", "110")]),
        node_info: NodeInfo {
            workload_types: vec!["container".into()],
            ..Default::default()
        },
        ..Default::default()
    });
    n
}

fn pod(i: usize) -> Pod {
    // The same tenant, namespace and names in every tenant partition.
    let mut p = Pod::typed(ObjectMeta::namespaced("acme", "dev", format!("p-{i}")));
    p.spec = PodSpec {
        containers: vec![Container {
            name: "c".into(),
            image: "busybox".into(),
            resources: ResourceRequirements {
                requests: list(&[("cpu", "500m")]),
                ..Default::default()
            },
            ..Default::default()
        }],
        ..Default::default()
    };
    p
}

struct PartitionUnderTest {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    local: LocalRegion,
}

async fn partition(partition: Partition) -> PartitionUnderTest {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
    let config = ApiConfig {
        partition,
        ..Default::default()
    };
    let local = LocalRegion::start_with(store.clone(), dir.path(), config)
        .await
        .unwrap();
    PartitionUnderTest {
        _dir: dir,
        store,
        local,
    }
}

fn scheduler_client(p: &PartitionUnderTest) -> centaurus_client::Client {
    p.local
        .client(centaurus_tenancy::identity::SCHEDULER.identity())
}

async fn bound(tps: &[PartitionUnderTest]) -> Vec<Vec<Pod>> {
    let mut out = Vec::new();
    for tp in tps {
        let pods = Objects::<Pod>::new(tp.store.clone());
        let all = pods.list("/registry/pods/").await.unwrap();
        out.push(
            all.into_iter()
                .filter(|p| !p.spec.node_name.is_empty())
                .collect(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tenant_partitions_never_overcommit_twenty_nodes_of_two_resource_partitions() {
    let rps = vec![
        partition(Partition::Resource("az-1".into())).await,
        partition(Partition::Resource("az-2".into())).await,
    ];
    let mut tps = Vec::new();
    for name in ["tp-1", "tp-2", "tp-3"] {
        tps.push(partition(Partition::Tenant(name.into())).await);
    }
    // A resource partition serves no pods, a tenant partition no nodes.
    let rp_admin = rps[0].local.admin();
    let err = rp_admin
        .api::<Pod>()
        .list("/registry/pods/")
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    let err = tps[0]
        .local
        .admin()
        .api::<Node>()
        .list("/registry/nodes/")
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    // Nor tenants other than the system tenant.
    let err = rp_admin
        .api()
        .create(centaurus_core::model::Tenant::typed(ObjectMeta::named(
            "acme",
        )))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("tenant partition"), "{err}");

    for i in 0..20 {
        Objects::<Node>::new(rps[i % 2].store.clone())
            .create(node(i))
            .await
            .unwrap();
    }
    // A booking of tp-1's for a pod deleted while no scheduler of tp-1 ran: released at
    // start, so its room is not lost.
    let mut stale = NodeLedger::typed(ObjectMeta::named("node-0"));
    stale
        .spec
        .pods
        .insert("tp-1/deleted-pod".into(), [1000, 0, 0]);
    Objects::<NodeLedger>::new(rps[0].store.clone())
        .create(stale)
        .await
        .unwrap();
    let rp_clients: Vec<_> = rps.iter().map(scheduler_client).collect();
    let mut tasks = Vec::new();
    for (i, tp) in tps.iter().enumerate() {
        let config = SchedulerConfig {
            feasible_nodes: 3,
            ..SchedulerConfig::default()
        };
        let s = Arc::new(Scheduler::partitioned(
            &format!("tp-{}", i + 1),
            scheduler_client(tp),
            &rp_clients,
            config,
        ));
        tasks.push(tokio::spawn(s.run()));
    }
    // 3 × 40 pods of 500m over 20 nodes with room for 4 each: 80 fit.
    let mut creates = Vec::new();
    for tp in &tps {
        let pods = Objects::<Pod>::new(tp.store.clone());
        for i in 0..40 {
            let pods = pods.clone();
            creates.push(tokio::spawn(
                async move { pods.create(pod(i)).await.unwrap() },
            ));
        }
    }
    for c in creates {
        c.await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n: usize = bound(&tps).await.iter().map(Vec::len).sum();
        if n >= 80 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bound {n} of the 80 pods that fit"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Racing bindings land; then nothing is over and every partition got some room.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_tp = bound(&tps).await;
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for pods in &per_tp {
        assert!(!pods.is_empty(), "a tenant partition got no node");
        for p in pods {
            *per_node.entry(p.spec.node_name.clone()).or_default() += 1;
        }
    }
    assert!(
        per_node.values().all(|&n| n <= 4),
        "overcommitted: {per_node:?}"
    );
    assert_eq!(per_node.values().sum::<usize>(), 80);
    // Pods of every tenant partition on nodes of both resource partitions.
    let rp_of = |node: &str| node.trim_start_matches("node-").parse::<usize>().unwrap() % 2;
    let spread: std::collections::HashSet<usize> = per_tp
        .iter()
        .flatten()
        .map(|p| rp_of(&p.spec.node_name))
        .collect();
    assert_eq!(spread.len(), 2);
    // Each node's ledger, in its own resource partition, books exactly its pods.
    for (node, n) in &per_node {
        let ledgers = Objects::<NodeLedger>::new(rps[rp_of(node)].store.clone());
        let ledger = ledgers
            .get(&format!("/registry/{}/{node}", NodeLedger::PLURAL))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ledger.spec.pods.len(), *n, "ledger of {node}");
    }
    // Deleting one partition's bound pods releases their bookings; the pods still
    // waiting (of every partition) take the room, and the nodes are full again, not over.
    let tp0 = Objects::<Pod>::new(tps[0].store.clone());
    for p in &per_tp[0] {
        tp0.delete(&p.key(), None).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let after = bound(&tps).await;
        let mut booked = 0;
        for rp in &rps {
            for l in Objects::<NodeLedger>::new(rp.store.clone())
                .list("/registry/nodeledgers/")
                .await
                .unwrap()
            {
                booked += l.spec.pods.len();
            }
        }
        let total: usize = after.iter().map(Vec::len).sum();
        if total == 80 && booked == 80 {
            let mut per_node: HashMap<String, usize> = HashMap::new();
            for p in after.iter().flatten() {
                *per_node.entry(p.spec.node_name.clone()).or_default() += 1;
            }
            assert!(per_node.values().all(|&n| n <= 4), "{per_node:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "freed room not taken: {total} bound, {booked} booked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in tasks {
        t.abort();
    }
}
