//! The VPC plane's costs.
//!
//! Printed before the criterion groups (set `VPC_BENCH_ENDPOINTS`, default 100,000):
//! - endpoint provisioning through the pipeline and `SimDataplane` over 1,000 droplets,
//!   p50/p99 per endpoint, and the hosts and table updates each endpoint costs, against a
//!   full-mesh design that programs every host, at 10, 100 and 1,000 hosts;
//! - time from creation to `Provisioned` through the operator on a redb store
//!   (`VPC_BENCH_OPERATOR_ENDPOINTS`, default 5,000, created at 500/s);
//! - Service backend churn over 1,000 droplets: the plane's decision plus every affected
//!   host programmed in `SimDataplane` (each host builds its Maglev table), p50/p99 per
//!   change, and the hosts touched, against kube-proxy's model of programming every host.
//!
//! Criterion: a bouncer's table lookup and a full transit decision at 1,000,000 endpoints;
//! building a Maglev table and picking a backend.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use centaurus_core::objects::Objects;
use centaurus_core::store::{RedbStore, Store};
use centaurus_vpc::admission::NetworkAdmission;
use centaurus_vpc::kinds::{Droplet, Endpoint, PROVISIONED, Subnet, Vpc};
use centaurus_vpc::maglev::{Backend, Table};
use centaurus_vpc::operator::{Operator, OperatorConfig};
use centaurus_vpc::plane::{DropletInfo, Plane, ScaledEndpoint};
use centaurus_vpc::tables::{EndpointKey, HostTables, Location, TCP, TableUpdate, flow_hash};
use centaurus_vpc::{Dataplane, SimDataplane};
use criterion::{Criterion, criterion_group, criterion_main};
use futures::StreamExt;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn droplet_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0xc612_0000u32 + i as u32 + 1)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// A plane of `hosts` droplets.
fn droplets(hosts: usize) -> Plane {
    let mut plane = Plane::new();
    for i in 0..hosts {
        let info = DropletInfo {
            ip: droplet_ip(i),
            mac: [2, 0, 0, 0, 0, 0],
        };
        plane.set_droplet(&format!("d{i}"), info);
    }
    plane
}

/// Tenant `t`'s VPC `t{t}/vpc` (VNI 1000 + t; CIDR and dividers) with one subnet `t{t}/s`
/// of 3 bouncers.
fn tenant_network(plane: &mut Plane, sim: &SimDataplane, t: u32, vpc: (&str, usize), subnet: &str) {
    let id = format!("t{t}/vpc");
    let (_, p) = plane
        .provision_vpc(&id, vpc.0.parse().unwrap(), 1000 + t, vpc.1, &[])
        .unwrap();
    apply(sim, p);
    let (_, p) = plane
        .provision_subnet(&format!("t{t}/s"), &id, subnet.parse().unwrap(), 3, &[])
        .unwrap();
    apply(sim, p);
}

/// The pipeline alone: plane decisions plus programming the simulated hosts.
fn pipeline(endpoints: usize) {
    for hosts in [10, 100, 1000] {
        let mut plane = droplets(hosts);
        let sim = SimDataplane::new();
        let tenants = 10;
        for t in 0..tenants {
            tenant_network(&mut plane, &sim, t, ("10.0.0.0/8", 2), "10.0.0.0/12");
        }
        sim.reset_counts();
        let n = if hosts == 1000 {
            endpoints
        } else {
            endpoints.min(20_000)
        };
        let mut lat = Vec::with_capacity(n);
        let mut touched = 0usize;
        for i in 0..n {
            let t = i % tenants as usize;
            let start = Instant::now();
            let (_, p) = plane
                .provision_endpoint(
                    &format!("t{t}/ns/ep{i}"),
                    &format!("t{t}/s"),
                    &format!("d{}", (i * 7919) % hosts),
                    None,
                )
                .unwrap();
            touched += p.len();
            apply(&sim, p);
            lat.push(start.elapsed());
        }
        lat.sort();
        let updates = sim.updates() as f64 / n as f64;
        println!(
            "vpc pipeline: {n} endpoints over {hosts} droplets (3 bouncers per subnet): p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs; \
             {:.2} hosts and {updates:.2} table updates per endpoint; full mesh: {hosts} hosts and {hosts} updates per endpoint ({:.0}× ours)",
            pct(&lat, 0.5).as_secs_f64() * 1e6,
            pct(&lat, 0.99).as_secs_f64() * 1e6,
            lat[n - 1].as_secs_f64() * 1e6,
            touched as f64 / n as f64,
            hosts as f64 / updates,
        );
    }
}

/// Backend churn: 100 tenants' VPCs, 30 endpoints each scattered over 1,000 droplets, one
/// Service each over `backends` of them; each change swaps one backend of one Service.
fn churn(backends: usize, changes: usize) {
    let hosts = 1000;
    let tenants = 100;
    let mut plane = droplets(hosts);
    let sim = SimDataplane::new();
    let per_vpc = backends.max(30);
    let mut ips: Vec<Vec<Ipv4Addr>> = Vec::new();
    for t in 0..tenants {
        tenant_network(
            &mut plane,
            &sim,
            t as u32,
            ("10.0.0.0/16", 1),
            "10.0.0.0/16",
        );
        let mut mine = Vec::new();
        for e in 0..per_vpc {
            let d = (t * 7919 + e * 104_729) % hosts;
            let (placed, p) = plane
                .provision_endpoint(
                    &format!("t{t}/ns/ep{e}"),
                    &format!("t{t}/s"),
                    &format!("d{d}"),
                    None,
                )
                .unwrap();
            apply(&sim, p);
            mine.push(placed.ip);
        }
        ips.push(mine);
    }
    let scaled = |ips: &[Ipv4Addr]| {
        vec![ScaledEndpoint {
            vip: Ipv4Addr::new(10, 96, 0, 16),
            port: 80,
            protocol: TCP,
            backends: ips.iter().map(|ip| Backend::new(*ip, 8080)).collect(),
            affinity: false,
        }]
    };
    for (t, mine) in ips.iter().enumerate() {
        let p = plane
            .provision_service(
                &format!("t{t}/ns/web"),
                &format!("t{t}/vpc"),
                scaled(&mine[..backends]),
            )
            .unwrap();
        apply(&sim, p);
    }
    let mut lat = Vec::with_capacity(changes);
    let mut touched = 0usize;
    let mut every_host = Vec::with_capacity(changes);
    for c in 0..changes {
        let t = c % tenants;
        // Swap one backend for the next endpoint of the VPC.
        let mine = &ips[t];
        let mut set: Vec<Ipv4Addr> = mine[..backends].to_vec();
        set[c % backends] = mine[(backends + c / tenants) % per_vpc];
        let start = Instant::now();
        let p = plane
            .provision_service(&format!("t{t}/ns/web"), &format!("t{t}/vpc"), scaled(&set))
            .unwrap();
        touched += p.len();
        let updates = p.values().next().cloned().unwrap_or_default();
        apply(&sim, p);
        lat.push(start.elapsed());
        // kube-proxy's model: the same change on every host.
        if c < 50 {
            let start = Instant::now();
            for h in 0..hosts {
                futures::executor::block_on(sim.program(droplet_ip(h), &updates)).unwrap();
            }
            every_host.push(start.elapsed());
        }
    }
    lat.sort();
    every_host.sort();
    let ours = pct(&lat, 0.5);
    let theirs = pct(&every_host, 0.5);
    println!(
        "service churn: {changes} backend changes, {backends} backends per Service, 100 VPCs of {per_vpc} endpoints over {hosts} droplets: \
         p50 {:.1} µs, p99 {:.1} µs to every affected host programmed; {:.1} hosts per change; \
         every host (kube-proxy's model): {hosts} hosts, p50 {:.1} µs ({:.1}× ours)",
        ours.as_secs_f64() * 1e6,
        pct(&lat, 0.99).as_secs_f64() * 1e6,
        touched as f64 / changes as f64,
        theirs.as_secs_f64() * 1e6,
        theirs.as_secs_f64() / ours.as_secs_f64(),
    );
}

fn apply(sim: &SimDataplane, prog: centaurus_vpc::plane::Programming) {
    for (host, updates) in prog {
        futures::executor::block_on(sim.program(host, &updates)).unwrap();
    }
}

/// Creation to `Provisioned` through the operator and a redb store.
fn operator(endpoints: usize, rate: f64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
        let admission = NetworkAdmission::new();
        for i in 0..1000 {
            let mut d = Droplet::default();
            d.metadata.name = format!("d{i}");
            d.spec.ip = droplet_ip(i).to_string();
            d.spec.mac = "02:00:00:00:00:01".into();
            d.spec.ifname = "eth0".into();
            Objects::new(store.clone()).create(d).await.unwrap();
        }
        let mut v = Vpc::default();
        v.metadata.name = "v".into();
        v.metadata.tenant = "acme".into();
        v.spec.cidr = "10.0.0.0/8".into();
        v.spec.dividers = 2;
        admission.create(&store, v).await.unwrap();
        let mut s = Subnet::default();
        s.metadata.name = "s".into();
        s.metadata.tenant = "acme".into();
        s.spec.cidr = "10.0.0.0/12".into();
        s.spec.vpc = "v".into();
        s.spec.bouncers = 3;
        admission.create(&store, s).await.unwrap();
        // The operator is a client of an API server over the store, as in a region.
        let local = centaurus_api::region::LocalRegion::start(store.clone(), dir.path())
            .await
            .unwrap();
        let op = Operator::new(
            local.client(centaurus_tenancy::identity::VPC_OPERATOR.identity()),
            Arc::new(SimDataplane::new()),
            OperatorConfig {
                name: "op".into(),
                ownership: Arc::new(centaurus_core::controller::OwnAll),
                state_file: dir.path().join("op.redb"),
                workers: 8,
                resync: Duration::from_secs(60),
            },
        )
        .unwrap();
        let task = tokio::spawn(op.clone().run());
        let mut watch = store.watch("/registry/endpoints/", store.revision().await.unwrap() + 1).await.unwrap();
        let created = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<String, Instant>::new()));
        let c = created.clone();
        let collector = tokio::spawn(async move {
            let mut lat = Vec::new();
            while lat.len() < endpoints {
                let Some(Ok(ev)) = watch.next().await else { break };
                let v: serde_json::Value = serde_json::from_slice(&ev.kv.value).unwrap();
                if v.pointer("/status/phase").and_then(|p| p.as_str()) == Some(PROVISIONED)
                    && let Some(t) = c.lock().unwrap().remove(&ev.kv.key)
                {
                    lat.push(t.elapsed());
                }
            }
            lat
        });
        let start = Instant::now();
        for i in 0..endpoints {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
            let mut e = Endpoint::default();
            e.metadata.name = format!("ep{i}");
            e.metadata.tenant = "acme".into();
            e.metadata.namespace = "default".into();
            e.spec.subnet = "s".into();
            e.spec.droplet = format!("d{}", (i * 7919) % 1000);
            created.lock().unwrap().insert(format!("/registry/endpoints/acme/default/ep{i}"), Instant::now());
            admission.create(&store, e).await.unwrap();
        }
        let mut lat = tokio::time::timeout(Duration::from_secs(600), collector).await.unwrap().unwrap();
        lat.sort();
        println!(
            "vpc operator: {endpoints} endpoints created at {rate}/s over 1,000 droplets through redb: creation → Provisioned (operator through the in-process API) p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            pct(&lat, 0.5).as_secs_f64() * 1e3,
            pct(&lat, 0.99).as_secs_f64() * 1e3,
            lat[lat.len() - 1].as_secs_f64() * 1e3,
        );
        task.abort();
    });
}

fn lookup(c: &mut Criterion) {
    pipeline(env("VPC_BENCH_ENDPOINTS", 100_000));
    operator(env("VPC_BENCH_OPERATOR_ENDPOINTS", 5_000), 500.0);
    churn(3, 1_000);
    churn(100, 1_000);
    let n = 1_000_000u32;
    let me = droplet_ip(0);
    let mut t = HostTables::default();
    t.endpoints.reserve(n as usize);
    for i in 0..n {
        let key = EndpointKey::new(1000 + i % 4, Ipv4Addr::from(0x0a00_0000 + i / 4));
        t.apply(&TableUpdate::PutEndpoint {
            key,
            location: Location::Remote {
                host: droplet_ip((i % 999 + 1) as usize),
                mac: [2, 0, 0, 0, 0, 0],
            },
        });
    }
    // Every key, in a scattered order, so lookups miss the cache as a busy bouncer's would.
    const MASK: usize = (1 << 20) - 1;
    let keys: Vec<EndpointKey> = (0..=MASK as u32)
        .map(|i| {
            let j = i.wrapping_mul(2_654_435_761) % n;
            EndpointKey::new(1000 + j % 4, Ipv4Addr::from(0x0a00_0000 + j / 4))
        })
        .collect();
    let mut group = c.benchmark_group("bouncer_1M_endpoints");
    let mut i = 0usize;
    group.bench_function("table_lookup", |b| {
        b.iter(|| {
            i = (i + 1) & MASK;
            black_box(t.endpoints.get(black_box(&keys[i])))
        })
    });
    group.bench_function("transit_decision", |b| {
        b.iter(|| {
            i = (i + 1) & MASK;
            let k = keys[i];
            black_box(t.transit(me, k.vni, black_box(k.ip), i as u64))
        })
    });
    group.finish();
}

fn maglev(c: &mut Criterion) {
    let mut group = c.benchmark_group("maglev");
    for n in [3usize, 100] {
        let backends: Vec<Backend> = (0..n)
            .map(|i| Backend::new(Ipv4Addr::from(0x0a00_0000 + i as u32), 8080))
            .collect();
        group.bench_function(format!("build_{n}_backends"), |b| {
            b.iter(|| black_box(Table::new(black_box(&backends))))
        });
        let table = Table::new(&backends);
        let mut port = 0u16;
        group.bench_function(format!("pick_{n}_backends"), |b| {
            b.iter(|| {
                port = port.wrapping_add(1);
                let flow = flow_hash(
                    Ipv4Addr::new(10, 0, 0, 1),
                    Ipv4Addr::new(10, 96, 0, 16),
                    6,
                    (port, 80),
                );
                black_box(table.pick(flow))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lookup, maglev);
criterion_main!(benches);
