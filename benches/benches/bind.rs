//! What a binding costs a scheduler, over HTTPS to API servers on redb: booking the pod in
//! its node's ledger and posting its `Binding`, where both live in one partition, and
//! where the ledger lives in the node's resource partition and the pod in a tenant
//! partition (two servers, two connections). The pods are created and their bookings
//! released outside the timing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use centaurus_api::region::{Region, RegionOptions};
use centaurus_client::Client;
use centaurus_client::kubeconfig::Kubeconfig;
use centaurus_core::model::{
    Container, Node, NodeInfo, NodeStatus, ObjectMeta, Pod, PodSpec, Quantity, Resource,
};
use centaurus_core::store::{RedbStore, Store};
use centaurus_sched::binder::{Binder, LedgerBinder};
use centaurus_sched::cluster::{NodeState, PodInfo};
use criterion::{Criterion, criterion_group, criterion_main};

/// Nodes the bindings go round, so no ledger grows.
const NODES: usize = 16;
/// Pods created (outside the timing) at a time.
const BATCH: usize = 64;

async fn partition(dir: &std::path::Path) -> (Region, Client) {
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.join("store.redb")).unwrap());
    centaurus_api::region::bootstrap(&*store).await.unwrap();
    let region = Region::start(
        store,
        RegionOptions {
            data_dir: dir.to_owned(),
            listen: "127.0.0.1:0".parse().unwrap(),
            config: Default::default(),
            compact_every: Duration::from_secs(3600),
        },
    )
    .await
    .unwrap();
    let config = Kubeconfig::load(&region.admin_kubeconfig).unwrap();
    let client = Client::new(config.connection().unwrap()).unwrap();
    (region, client)
}

fn node(i: usize) -> NodeState {
    let mut n = Node::typed(ObjectMeta::named(format!("node-{i}")));
    n.status = Some(NodeStatus {
        allocatable: [("cpu", "1000"), ("memory", "1Ti"), ("pods", "100000")]
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity::new(*v)))
            .collect(),
        node_info: NodeInfo {
            workload_types: vec!["container".into()],
            ..Default::default()
        },
        ..Default::default()
    });
    NodeState::new(n)
}

fn pod(name: String) -> Pod {
    let mut p = Pod::typed(ObjectMeta::namespaced("system", "default", name));
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

/// Times `iters` bindings of fresh pods of `pods` through `binder`.
async fn bind(binder: &LedgerBinder, pods: &Client, nodes: &[NodeState], iters: u64) -> Duration {
    let mut spent = Duration::ZERO;
    let mut left = iters as usize;
    while left > 0 {
        let n = left.min(BATCH);
        left -= n;
        let mut batch = Vec::with_capacity(n);
        for _ in 0..n {
            let p = pods
                .api::<Pod>()
                .create(pod(format!("p-{}", next_id())))
                .await
                .unwrap();
            batch.push(PodInfo::new(p));
        }
        for (i, p) in batch.iter().enumerate() {
            let node = &nodes[i % nodes.len()];
            let t = Instant::now();
            binder.bind(p, node).await.unwrap();
            spent += t.elapsed();
        }
        for (i, p) in batch.iter().enumerate() {
            binder
                .release(&p.pod.metadata.uid, &nodes[i % nodes.len()].name)
                .await
                .unwrap();
        }
    }
    spent
}

fn next_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed).to_string()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (one, tp, rp) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let ((_one, single), (_tp, tenant), (_rp, resource)) = rt.block_on(async {
        (
            partition(one.path()).await,
            partition(tp.path()).await,
            partition(rp.path()).await,
        )
    });
    let nodes: Vec<NodeState> = (0..NODES).map(node).collect();
    let in_one = LedgerBinder::new(single.clone());
    let across = LedgerBinder::split("tp1", tenant.clone(), resource);
    let mut g = c.benchmark_group("bind");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("single_partition", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| bind(&in_one, &single, &nodes, iters))
    });
    g.bench_function("cross_partition", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| bind(&across, &tenant, &nodes, iters))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
