//! One scheduling decision and placement (`ClusterState::select` + `place` with the default
//! plugins) in regions of 5,000 and 100,000 nodes over 10 zones: batches of 1,000 pods of
//! one ReplicaSet (spread over zones), one in ten a VM pod. Throughput is pods per second
//! of one core; binding (a store write) is measured end to end by `centaurus density`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use centaurus_core::model::{
    Container, LABEL_ZONE, Node, NodeInfo, NodeStatus, ObjectMeta, OwnerReference, Pod, PodSpec,
    Quantity, Resource, ResourceList, ResourceRequirements, VirtualMachine,
};
use centaurus_sched::plugins::{default_filters, default_scores};
use centaurus_sched::{ClusterState, PodInfo};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const BATCH: usize = 1_000;
const FEASIBLE: usize = 128;

fn list(pairs: &[(&str, &str)]) -> ResourceList {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity::new(*v)))
        .collect()
}

fn region(nodes: usize) -> ClusterState {
    let mut c = ClusterState::default();
    for i in 0..nodes {
        let mut n = Node::typed(ObjectMeta::named(format!("node-{i}")));
        n.metadata
            .labels
            .insert(LABEL_ZONE.into(), format!("zone-{}", i % 10));
        n.status = Some(NodeStatus {
            allocatable: list(&[
                ("cpu", "32"),
                ("memory", "128Gi"),
                ("pods", "110"),
                ("vm", "8"),
            ]),
            node_info: NodeInfo {
                workload_types: vec!["container".into(), "vm".into()],
                ..Default::default()
            },
            ..Default::default()
        });
        c.upsert_node(n);
    }
    c
}

fn pods() -> Vec<PodInfo> {
    let requests = ResourceRequirements {
        requests: list(&[("cpu", "100m"), ("memory", "128Mi")]),
        ..Default::default()
    };
    (0..BATCH)
        .map(|i| {
            let mut p = Pod::typed(ObjectMeta::namespaced("t", "ns", format!("web-{i}")));
            p.metadata.uid = format!("uid-{i}");
            p.metadata.owner_references.push(OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: "web".into(),
                uid: "rs-web".into(),
                controller: Some(true),
                ..Default::default()
            });
            p.spec = if i % 10 == 0 {
                PodSpec {
                    virtual_machine: Some(VirtualMachine {
                        name: "vm".into(),
                        image: "tiny".into(),
                        resources: requests.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            } else {
                PodSpec {
                    containers: vec![Container {
                        name: "c".into(),
                        image: "busybox".into(),
                        resources: requests.clone(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }
            };
            PodInfo::new(p)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let filters = default_filters();
    let scores = default_scores();
    let batch = pods();
    let mut g = c.benchmark_group("schedule");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    for nodes in [5_000, 100_000] {
        let mut cluster = region(nodes);
        g.bench_function(format!("{nodes}_nodes"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    for pod in &batch {
                        let node = cluster
                            .select(pod, &filters, &scores, FEASIBLE)
                            .expect("the region has room");
                        cluster.place(pod, &node);
                        black_box(&node);
                    }
                    spent += started.elapsed();
                    // Back to an empty region, outside the timing.
                    for pod in &batch {
                        cluster.unplace(&pod.key);
                    }
                }
                spent
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
