//! Operator replicas against a real store: everything reaches `Provisioned` exactly once,
//! through crashes, restarts and replicas joining and leaving; the tables they program
//! forward packets between the addresses they hand out, and to Services' backends.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use centaurus_core::controller::RingOwnership;
use centaurus_core::model::{
    Container, ContainerPort, EndpointPort, EndpointSlice, Network, NetworkPolicy, ObjectMeta, Pod,
    Resource, SERVICE_NAME_LABEL, Service, ServicePort, SliceEndpoint,
};
use centaurus_core::objects::Objects;
use centaurus_core::ring::{HashRing, RingConfig};
use centaurus_core::store::{EventKind, RedbStore, Store};
use centaurus_vpc::admission::NetworkAdmission;
use centaurus_vpc::kinds::{Bouncer, Divider, Droplet, Endpoint, PROVISIONED, Subnet, Vpc};
use centaurus_vpc::operator::{Operator, OperatorConfig};
use centaurus_vpc::policy::{Block, EndpointPolicy, PortRange, Rule};
use centaurus_vpc::tables::{DropReason, EndpointKey, ServiceKey, TCP};
use centaurus_vpc::{Outcome, SimDataplane};
use futures::StreamExt;

struct Region {
    store: Arc<dyn Store>,
    /// The API server the operators are clients of.
    local: centaurus_api::region::LocalRegion,
    sim: Arc<SimDataplane>,
    admission: NetworkAdmission,
    dir: tempfile::TempDir,
    /// Transitions to Provisioned per store key.
    provisioned: Arc<Mutex<HashMap<String, u32>>>,
}

fn phase(value: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(value)
        .ok()
        .and_then(|v| {
            v.pointer("/status/phase")
                .and_then(|p| p.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

impl Region {
    async fn new(droplets: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(RedbStore::open(dir.path().join("store.redb")).unwrap());
        let provisioned = Arc::new(Mutex::new(HashMap::new()));
        let mut watch = store.watch("/registry/", 0).await.unwrap();
        let counts = provisioned.clone();
        tokio::spawn(async move {
            while let Some(Ok(ev)) = watch.next().await {
                if ev.kind == EventKind::Delete {
                    continue;
                }
                let before = ev.prev_value.as_deref().map(phase).unwrap_or_default();
                if phase(&ev.kv.value) == PROVISIONED && before != PROVISIONED {
                    *counts.lock().unwrap().entry(ev.kv.key.clone()).or_insert(0) += 1;
                }
            }
        });
        let local = centaurus_api::region::LocalRegion::start(store.clone(), dir.path())
            .await
            .unwrap();
        let r = Self {
            local,
            store,
            sim: Arc::new(SimDataplane::new()),
            admission: NetworkAdmission::new(),
            dir,
            provisioned,
        };
        for i in 0..droplets {
            let mut d = Droplet::default();
            d.metadata.name = format!("d{i}");
            d.spec.ip = host(i).to_string();
            d.spec.mac = format!("02:00:00:00:{:02x}:{:02x}", i / 256, i % 256);
            d.spec.ifname = "eth0".into();
            Objects::new(r.store.clone()).create(d).await.unwrap();
        }
        r
    }

    fn operator(
        &self,
        name: &str,
        ring: &Arc<RwLock<HashRing>>,
    ) -> (Arc<Operator>, tokio::task::JoinHandle<()>) {
        let op = Operator::new(
            self.local
                .client(centaurus_tenancy::identity::VPC_OPERATOR.identity()),
            self.sim.clone(),
            OperatorConfig {
                name: name.into(),
                ownership: Arc::new(RingOwnership {
                    ring: ring.clone(),
                    me: name.into(),
                }),
                state_file: self.dir.path().join(format!("{name}.redb")),
                workers: 4,
                resync: Duration::from_millis(200),
            },
        )
        .unwrap();
        let task = tokio::spawn(op.clone().run());
        (op, task)
    }

    /// VPC `v` (10.0.0.0/16) with subnet `s` (10.0.0.0/20, 2 bouncers) and `n` endpoints.
    async fn network(&self, tenant: &str, n: usize) {
        let mut v = Vpc::default();
        v.metadata.name = "v".into();
        v.metadata.tenant = tenant.into();
        v.spec.cidr = "10.0.0.0/16".into();
        v.spec.dividers = 1;
        self.admission.create(&self.store, v).await.unwrap();
        let mut s = Subnet::default();
        s.metadata.name = "s".into();
        s.metadata.tenant = tenant.into();
        s.spec.cidr = "10.0.0.0/20".into();
        s.spec.vpc = "v".into();
        s.spec.bouncers = 2;
        self.admission.create(&self.store, s).await.unwrap();
        self.endpoints(tenant, 0..n).await;
    }

    async fn endpoints(&self, tenant: &str, range: std::ops::Range<usize>) {
        for i in range {
            let mut e = Endpoint::default();
            e.metadata.name = format!("ep{i}");
            e.metadata.tenant = tenant.into();
            e.metadata.namespace = "default".into();
            e.spec.subnet = "s".into();
            e.spec.droplet = format!("d{}", i % 7);
            self.admission.create(&self.store, e).await.unwrap();
        }
    }

    async fn list<R: Resource>(&self, prefix: &str) -> Vec<R> {
        Objects::<R>::new(self.store.clone())
            .list(prefix)
            .await
            .unwrap()
    }

    async fn endpoints_provisioned(&self) -> (usize, usize) {
        let eps = self.list::<Endpoint>("/registry/endpoints/").await;
        let done = eps
            .iter()
            .filter(|e| {
                e.status
                    .as_ref()
                    .is_some_and(|s| s.progress.phase == PROVISIONED)
            })
            .count();
        (done, eps.len())
    }

    async fn wait_all_provisioned(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (done, all) = self.endpoints_provisioned().await;
            let vpcs = self.list::<Vpc>("/registry/vpcs/").await;
            let subnets = self.list::<Subnet>("/registry/subnets/").await;
            let ok = |p: Option<&str>| p == Some(PROVISIONED);
            if done == all
                && vpcs
                    .iter()
                    .all(|v| ok(v.status.as_ref().map(|s| s.progress.phase.as_str())))
                && subnets
                    .iter()
                    .all(|v| ok(v.status.as_ref().map(|s| s.progress.phase.as_str())))
            {
                // Let the watch catch up before the counts are read.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{done}/{all} endpoints provisioned after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every VPC, subnet and endpoint went to Provisioned exactly once.
    async fn assert_provisioned_once(&self) {
        let counts = self.provisioned.lock().unwrap().clone();
        let mut keys: Vec<String> = Vec::new();
        keys.extend(
            self.list::<Vpc>("/registry/vpcs/")
                .await
                .iter()
                .map(Resource::key),
        );
        keys.extend(
            self.list::<Subnet>("/registry/subnets/")
                .await
                .iter()
                .map(Resource::key),
        );
        keys.extend(
            self.list::<Endpoint>("/registry/endpoints/")
                .await
                .iter()
                .map(Resource::key),
        );
        for k in keys {
            assert_eq!(
                counts.get(&k),
                Some(&1),
                "{k} went to Provisioned {:?} times",
                counts.get(&k)
            );
        }
    }

    /// Addresses are unique per tenant, and every endpoint reaches every other of its
    /// tenant and no other tenant's.
    async fn assert_forwarding(&self) {
        let eps = self.list::<Endpoint>("/registry/endpoints/").await;
        let mut by_tenant: BTreeMap<String, Vec<(EndpointKey, Ipv4Addr)>> = BTreeMap::new();
        for e in &eps {
            let s = e.status.as_ref().unwrap();
            let key = EndpointKey::new(s.vni, s.ip.parse().unwrap());
            by_tenant
                .entry(e.metadata.tenant.clone())
                .or_default()
                .push((key, s.host_ip.parse().unwrap()));
        }
        let vnis: BTreeSet<u32> = by_tenant.values().map(|v| v[0].0.vni).collect();
        assert_eq!(vnis.len(), by_tenant.len(), "VNIs are unique per VPC");
        for (tenant, eps) in &by_tenant {
            let ips: BTreeSet<Ipv4Addr> = eps.iter().map(|(k, _)| k.ip).collect();
            assert_eq!(
                ips.len(),
                eps.len(),
                "{tenant}: an address was handed out twice"
            );
            for (i, (src, _)) in eps.iter().enumerate().step_by(7) {
                for (dst, home) in eps.iter().skip(i % 5).step_by(5) {
                    match self.sim.deliver(*src, dst.ip, i as u64).outcome {
                        Outcome::Delivered { host, .. } => assert_eq!(host, *home),
                        other => panic!("{tenant}: {src:?} -> {dst:?}: {other:?}"),
                    }
                }
            }
        }
        // No leaked entries: each endpoint is held by its bouncers and its host only.
        let expected: usize = eps
            .iter()
            .map(|e| {
                let s = e.status.as_ref().unwrap();
                let mut holders: BTreeSet<&str> = s.bouncers.iter().map(String::as_str).collect();
                holders.insert(&s.host_ip);
                holders.len()
            })
            .sum();
        let held: usize = (0..64)
            .map(|i| self.sim.with_tables(host(i), |t| t.endpoints.len()))
            .sum();
        assert_eq!(held, expected, "endpoint entries over all hosts");
    }
}

fn host(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 0, i as u8 + 1)
}

fn ring(names: &[&str]) -> Arc<RwLock<HashRing>> {
    Arc::new(RwLock::new(HashRing::with_owners(
        RingConfig::default(),
        names.iter().copied(),
    )))
}

async fn stop(op: Arc<Operator>, task: tokio::task::JoinHandle<()>) {
    task.abort();
    let _ = task.await;
    // The workers hold the replica (and its local store) until their abort lands.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&op) > 1 {
        assert!(Instant::now() < deadline, "operator tasks did not stop");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisions_two_tenants_with_the_same_cidrs() {
    let r = Region::new(12).await;
    let ring = ring(&["op-0"]);
    let (op, task) = r.operator("op-0", &ring);
    r.network("acme", 40).await;
    r.network("beta", 40).await;
    r.wait_all_provisioned().await;
    r.assert_provisioned_once().await;
    r.assert_forwarding().await;
    // Roles are objects too: two bouncers per subnet on distinct droplets, one divider per VPC.
    let bouncers = r.list::<Bouncer>("/registry/bouncers/").await;
    assert_eq!(bouncers.len(), 4);
    let dividers = r.list::<Divider>("/registry/dividers/").await;
    assert_eq!(dividers.len(), 2);
    let eps = r.list::<Endpoint>("/registry/endpoints/acme/").await;
    let s = eps[0].status.as_ref().unwrap();
    assert!(
        s.progress.provision_delay.is_some_and(|d| d < 30.0),
        "{s:?}"
    );
    assert_eq!(s.prefix_len, 20);
    assert_eq!(s.gateway, "10.0.0.1");
    assert!(
        r.list::<Droplet>("/registry/droplets/")
            .await
            .iter()
            .all(|d| d.status.as_ref().is_some_and(|s| s.phase == PROVISIONED))
    );

    // Deleting an endpoint removes it from every table; its address is not reused at once.
    let gone = &eps[3];
    let key = EndpointKey::new(
        gone.status.as_ref().unwrap().vni,
        gone.status.as_ref().unwrap().ip.parse().unwrap(),
    );
    Objects::<Endpoint>::new(r.store.clone())
        .delete(&gone.key(), None)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (0..12).any(|i| {
        r.sim
            .with_tables(host(i), |t| t.endpoints.contains_key(&key))
    }) {
        assert!(
            Instant::now() < deadline,
            "entries of a deleted endpoint remain"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let src = eps[0].status.as_ref().unwrap();
    let d = r.sim.deliver(
        EndpointKey::new(src.vni, src.ip.parse().unwrap()),
        key.ip,
        1,
    );
    assert!(matches!(d.outcome, Outcome::Dropped { .. }), "{d:?}");

    // Scaling a subnet's bouncers moves the Bouncer objects and keeps forwarding.
    Objects::<Subnet>::new(r.store.clone())
        .modify("/registry/subnets/acme/s", |s| {
            s.spec.bouncers = 4;
            true
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = Objects::<Subnet>::new(r.store.clone())
            .get("/registry/subnets/acme/s")
            .await
            .unwrap()
            .unwrap();
        if s.status.unwrap().bouncers.len() == 4
            && r.list::<Bouncer>("/registry/bouncers/").await.len() == 6
        {
            break;
        }
        assert!(Instant::now() < deadline, "bouncers did not scale");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop(op, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_operator_resumes_without_provisioning_twice() {
    let r = Region::new(7).await;
    let ring = ring(&["op-0"]);
    r.network("acme", 0).await;
    let (op, task) = r.operator("op-0", &ring);
    r.endpoints("acme", 0..300).await;
    // Crash part way.
    let deadline = Instant::now() + Duration::from_secs(30);
    while r.endpoints_provisioned().await.0 < 60 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop(op, task).await;
    let (done, all) = r.endpoints_provisioned().await;
    assert!(
        done < all,
        "the crash came too late to test anything ({done}/{all})"
    );
    let (op, task) = r.operator("op-0", &ring);
    r.wait_all_provisioned().await;
    r.assert_provisioned_once().await;
    r.assert_forwarding().await;
    assert!(
        op.stats()
            .adopted
            .load(std::sync::atomic::Ordering::Relaxed)
            >= done as u64
    );
    // A clean restart adopts everything and writes nothing.
    stop(op, task).await;
    let (op, task) = r.operator("op-0", &ring);
    let deadline = Instant::now() + Duration::from_secs(10);
    while op.counts().2 < 300 {
        assert!(
            Instant::now() < deadline,
            "restart did not adopt: {:?}",
            op.counts()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        op.stats()
            .provisioned
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(
        op.stats()
            .host_calls
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    r.assert_provisioned_once().await;
    stop(op, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_split_vpcs_and_hand_them_over() {
    let r = Region::new(7).await;
    let names = ["op-0", "op-1", "op-2"];
    let ring = ring(&names);
    let mut ops: BTreeMap<String, (Arc<Operator>, tokio::task::JoinHandle<()>)> = names
        .iter()
        .map(|n| (n.to_string(), r.operator(n, &ring)))
        .collect();
    let tenants: Vec<String> = (0..12).map(|i| format!("t{i}")).collect();
    for t in &tenants {
        r.network(t, 10).await;
    }
    r.wait_all_provisioned().await;
    let held = |ops: &BTreeMap<String, (Arc<Operator>, tokio::task::JoinHandle<()>)>| -> BTreeMap<String, usize> {
        ops.iter().map(|(n, (op, _))| (n.clone(), op.counts().0)).collect()
    };
    let before = held(&ops);
    assert_eq!(
        before.values().sum::<usize>(),
        12,
        "each VPC held by exactly one replica: {before:?}"
    );
    assert!(
        before.values().filter(|n| **n > 0).count() >= 2,
        "the ring spread nothing: {before:?}"
    );

    // A replica joins: only the VPCs the ring now gives it move.
    ring.write().unwrap().add("op-3", 1);
    ops.insert("op-3".into(), r.operator("op-3", &ring));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = held(&ops);
        let moved: usize = names
            .iter()
            .map(|n| before[*n] - now[*n].min(before[*n]))
            .sum();
        if now.values().sum::<usize>() == 12 && now["op-3"] == moved {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "handover did not settle: {before:?} -> {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A replica leaves: the others adopt its VPCs.
    ring.write().unwrap().remove("op-1");
    let (op, task) = ops.remove("op-1").unwrap();
    stop(op, task).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while held(&ops).values().sum::<usize>() != 12 {
        assert!(
            Instant::now() < deadline,
            "VPCs of the leaver were not adopted: {:?}",
            held(&ops)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // New endpoints in every VPC, handled by the new owners with the adopted address pools.
    for t in &tenants {
        r.endpoints(t, 10..15).await;
    }
    r.wait_all_provisioned().await;
    r.assert_provisioned_once().await;
    r.assert_forwarding().await;
    for (_, (op, task)) in ops {
        stop(op, task).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failed_for_want_of_addresses_recovers_when_one_is_freed() {
    let r = Region::new(7).await;
    let ring = ring(&["op-0"]);
    let (op, task) = r.operator("op-0", &ring);
    let mut v = Vpc::default();
    v.metadata.name = "v".into();
    v.metadata.tenant = "acme".into();
    v.spec.cidr = "10.0.0.0/16".into();
    v.spec.dividers = 1;
    r.admission.create(&r.store, v).await.unwrap();
    // A /29 has five endpoint addresses (.2 to .6).
    let mut s = Subnet::default();
    s.metadata.name = "s".into();
    s.metadata.tenant = "acme".into();
    s.spec.cidr = "10.0.0.0/29".into();
    s.spec.vpc = "v".into();
    s.spec.bouncers = 1;
    r.admission.create(&r.store, s).await.unwrap();
    r.endpoints("acme", 0..6).await;
    let phases = || async {
        r.list::<Endpoint>("/registry/endpoints/")
            .await
            .into_iter()
            .map(|e| {
                let s = e.status.unwrap_or_default();
                (e.metadata.name, s.progress.phase, s.progress.message)
            })
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let now = phases().await;
        let done = now.iter().filter(|(_, p, _)| p == PROVISIONED).count();
        if let Some(f) = now.iter().find(|(_, p, _)| p == "Failed")
            && done == 5
        {
            break f.clone();
        }
        assert!(Instant::now() < deadline, "{now:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(failed.2.contains("is exhausted"), "{failed:?}");
    // Free an address: the failed endpoint gets it on the next look.
    let other = if failed.0 == "ep0" { "ep1" } else { "ep0" };
    Objects::<Endpoint>::new(r.store.clone())
        .delete(&format!("/registry/endpoints/acme/default/{other}"), None)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while phases().await.iter().any(|(_, p, _)| p != PROVISIONED) {
        assert!(Instant::now() < deadline, "{:?}", phases().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop(op, task).await;
}

/// Waits until every host's tables satisfy `ok` for the scaled endpoint `key`.
async fn wait_tables(
    r: &Region,
    what: &str,
    ok: impl Fn(usize, Option<usize>) -> bool,
    key: ServiceKey,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let backends = |i: usize| {
            r.sim.with_tables(host(i), |t| {
                t.services.get(&key).map(|s| s.table.backends().len())
            })
        };
        if (0..12).all(|i| ok(i, backends(i))) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {:?}",
            (0..12).map(backends).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A Service of a tenant's network gets a scaled endpoint on the hosts with endpoints of
/// the network's VPC (and no other), with its slices' ready addresses as backends; a slice
/// change reprograms it, and a deleted Service leaves every host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_are_programmed_where_their_vpc_is() {
    let r = Region::new(12).await;
    let ring = ring(&["op-0"]);
    let (op, task) = r.operator("op-0", &ring);
    r.network("acme", 5).await; // ep0..ep4 on d0..d4
    r.wait_all_provisioned().await;
    let mut net = Network::default();
    net.metadata.name = "default".into();
    net.metadata.tenant = "acme".into();
    net.spec.type_ = "vpc".into();
    net.spec.vpc_id = "v".into();
    Objects::new(r.store.clone()).create(net).await.unwrap();
    let eps = r.list::<Endpoint>("/registry/endpoints/acme/").await;
    let ip = |i: usize| eps[i].status.as_ref().unwrap().ip.clone();
    let vni = eps[0].status.as_ref().unwrap().vni;
    let mut svc = Service::typed(ObjectMeta::namespaced("acme", "default", "web"));
    svc.spec.cluster_ip = "10.96.0.20".into();
    svc.spec.ports = vec![ServicePort {
        name: "http".into(),
        protocol: "TCP".into(),
        port: 80,
        ..Default::default()
    }];
    let svc = Objects::new(r.store.clone()).create(svc).await.unwrap();
    let slice = |ips: &[String]| {
        let mut s = EndpointSlice::typed(ObjectMeta::namespaced("acme", "default", "web-1"));
        s.metadata.labels = [(SERVICE_NAME_LABEL.to_string(), "web".to_string())].into();
        s.address_type = "IPv4".into();
        s.ports = vec![EndpointPort {
            name: "http".into(),
            port: 8080,
            protocol: "TCP".into(),
            app_protocol: None,
        }];
        s.endpoints = ips
            .iter()
            .map(|ip| SliceEndpoint {
                addresses: vec![ip.clone()],
                ..Default::default()
            })
            .collect();
        s
    };
    let slices = Objects::<EndpointSlice>::new(r.store.clone());
    slices.create(slice(&[ip(0), ip(1), ip(2)])).await.unwrap();
    let key = ServiceKey {
        vni,
        vip: Ipv4Addr::new(10, 96, 0, 20),
        port: 80,
        protocol: TCP,
    };
    wait_tables(
        &r,
        "3 backends on d0..d4 only",
        |i, n| n == (i < 5).then_some(3),
        key,
    )
    .await;
    // A connection from ep4 reaches one of the backends, at its port.
    let src = EndpointKey::new(vni, ip(4).parse().unwrap());
    let (backend, d) = r.sim.send(src, 40_000, key.vip, 80, TCP);
    let backend = backend.unwrap();
    assert_eq!(backend.port, 8080);
    assert!([ip(0), ip(1), ip(2)].contains(&backend.ip.to_string()));
    assert!(matches!(d.outcome, Outcome::Delivered { .. }), "{d:?}");
    // The slice changes: the backends follow.
    slices
        .modify("/registry/endpointslices/acme/default/web-1", |s| {
            s.endpoints.truncate(2);
            true
        })
        .await
        .unwrap();
    wait_tables(&r, "2 backends", |i, n| n == (i < 5).then_some(2), key).await;
    // Deleted: gone everywhere.
    Objects::<Service>::new(r.store.clone())
        .delete(&svc.key(), None)
        .await
        .unwrap();
    wait_tables(&r, "no service", |_, n| n.is_none(), key).await;
    stop(op, task).await;
}

/// The policies each host holds, by endpoint address.
fn held_policies(r: &Region, hosts: usize) -> BTreeMap<Ipv4Addr, (usize, EndpointPolicy)> {
    (0..hosts)
        .flat_map(|i| {
            r.sim.with_tables(host(i), |t| {
                (t.policies.iter())
                    .map(|(k, p)| (k.ip, (i, p.policy.clone())))
                    .collect::<Vec<_>>()
            })
        })
        .collect()
}

/// A NetworkPolicy of a tenant is resolved against its pods' labels and programmed on the
/// host of each endpoint it selects, and only there; a pod's new labels, a changed policy
/// and a deleted one follow, each touching only the selected endpoints' hosts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_are_programmed_on_their_endpoints_hosts() {
    let r = Region::new(8).await;
    let ring = ring(&["op-0"]);
    let (op, task) = r.operator("op-0", &ring);
    r.network("acme", 0).await;
    let pods = Objects::<Pod>::new(r.store.clone());
    for (i, app) in ["db", "web", "web", "batch"].iter().enumerate() {
        let mut pod = Pod::typed(ObjectMeta::namespaced("acme", "default", format!("p{i}")));
        pod.metadata.labels = [("app".to_string(), app.to_string())].into();
        pod.spec.containers = vec![Container {
            name: "c".into(),
            image: "busybox".into(),
            ports: vec![ContainerPort {
                name: "pg".into(),
                container_port: 5432,
                protocol: None,
            }],
            ..Default::default()
        }];
        pods.create(pod).await.unwrap();
        let mut e = Endpoint::default();
        e.metadata.name = format!("p{i}");
        e.metadata.tenant = "acme".into();
        e.metadata.namespace = "default".into();
        e.spec.subnet = "s".into();
        e.spec.droplet = format!("d{i}");
        e.spec.pod = format!("p{i}");
        r.admission.create(&r.store, e).await.unwrap();
    }
    // An endpoint without a pod (as the cluster DNS's) is selected by its own labels.
    let mut e = Endpoint::default();
    e.metadata.name = "p4".into();
    e.metadata.tenant = "acme".into();
    e.metadata.namespace = "default".into();
    e.metadata.labels = [("k8s-app".to_string(), "kube-dns".to_string())].into();
    e.spec.subnet = "s".into();
    e.spec.droplet = "d4".into();
    r.admission.create(&r.store, e).await.unwrap();
    r.wait_all_provisioned().await;
    let eps = r.list::<Endpoint>("/registry/endpoints/acme/").await;
    let ip = |i: usize| -> Ipv4Addr { eps[i].status.as_ref().unwrap().ip.parse().unwrap() };
    let mut policy: NetworkPolicy = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "db", "namespace": "default", "tenant": "acme"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}},
                                  {"podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                         "ports": [{"port": "pg"}]}]
        }
    }))
    .unwrap();
    policy.set_defaults();
    let policies = Objects::<NetworkPolicy>::new(r.store.clone());
    r.sim.reset_counts();
    policies.create(policy).await.unwrap();
    let rule = |peers: &[usize]| EndpointPolicy {
        ingress: Some(vec![Rule {
            peers: peers.iter().map(|i| Block::host(ip(*i))).collect(),
            ports: vec![PortRange {
                protocol: TCP,
                first: 5432,
                last: 5432,
            }],
        }]),
        egress: None,
    };
    let wait = |what: &'static str, want: BTreeMap<Ipv4Addr, (usize, EndpointPolicy)>| {
        let r = &r;
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while held_policies(r, 8) != want {
                assert!(
                    Instant::now() < deadline,
                    "{what}: {:?}",
                    held_policies(r, 8)
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait("db takes web", [(ip(0), (0, rule(&[1, 2, 4])))].into()).await;
    // The simulated datapath enforces it: web reaches db's port, batch does not.
    let vni = eps[0].status.as_ref().unwrap().vni;
    let send = |from: usize, port: u16| {
        let d = r
            .sim
            .send(EndpointKey::new(vni, ip(from)), 40_000, ip(0), port, TCP)
            .1;
        match d.outcome {
            Outcome::Delivered { .. } => Ok(()),
            Outcome::Dropped { reason, .. } => Err(reason),
        }
    };
    assert_eq!(send(1, 5432), Ok(()));
    assert_eq!(send(1, 80), Err(DropReason::Policy));
    assert_eq!(send(3, 5432), Err(DropReason::Policy));
    assert_eq!(
        r.sim.calls().keys().copied().collect::<Vec<_>>(),
        [host(0)],
        "only the db endpoint's host is programmed"
    );
    // batch becomes web.
    pods.modify("/registry/pods/acme/default/p3", |p| {
        p.metadata.labels.insert("app".into(), "web".into());
        true
    })
    .await
    .unwrap();
    wait(
        "db takes the new web too",
        [(ip(0), (0, rule(&[1, 2, 3, 4])))].into(),
    )
    .await;
    // Now it selects every pod and takes nothing in.
    policies
        .modify("/registry/networkpolicies/acme/default/db", |p| {
            p.spec.pod_selector = Default::default();
            p.spec.ingress.clear();
            true
        })
        .await
        .unwrap();
    let deny = EndpointPolicy {
        ingress: Some(Vec::new()),
        egress: None,
    };
    wait(
        "default deny",
        (0..5).map(|i| (ip(i), (i, deny.clone()))).collect(),
    )
    .await;
    policies
        .delete("/registry/networkpolicies/acme/default/db", None)
        .await
        .unwrap();
    wait("no policy", BTreeMap::new()).await;
    stop(op, task).await;
}
