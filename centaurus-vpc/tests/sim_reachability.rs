//! Packets through the plane's programming on a simulated region: reachability within and
//! across subnets, isolation between tenants with identical addresses, deletion, the
//! bound on the hosts one endpoint's provisioning touches, and scaled endpoints.

use std::net::Ipv4Addr;

use centaurus_vpc::maglev::Backend;
use centaurus_vpc::plane::{DropletInfo, Plane, Programming, ScaledEndpoint};
use centaurus_vpc::tables::{DropReason, EndpointKey, TCP, TableUpdate};
use centaurus_vpc::{Dataplane, Outcome, SimDataplane};

fn host(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, (i / 250) as u8, (i % 250 + 1) as u8)
}

fn region(droplets: usize) -> Plane {
    let mut p = Plane::new();
    for i in 0..droplets {
        let ip = host(i);
        p.set_droplet(
            &format!("d{i}"),
            DropletInfo {
                ip,
                mac: [2, 0, 0, 0, 0, i as u8],
            },
        );
    }
    p
}

async fn apply(sim: &SimDataplane, prog: Programming) {
    for (host, updates) in prog {
        sim.program(host, &updates).await.unwrap();
    }
}

/// A VPC `10.0.0.0/16` with subnets `10.0.1.0/24` and `10.0.2.0/24` for `tenant`, VNI
/// `vni`, and two endpoints in each subnet on the given droplets. Returns the endpoints'
/// keys: [a1, a2, b1, b2].
async fn tenant_network(
    plane: &mut Plane,
    sim: &SimDataplane,
    tenant: &str,
    vni: u32,
    on: [usize; 4],
) -> [EndpointKey; 4] {
    let vpc = format!("{tenant}/vpc");
    let (_, prog) = plane
        .provision_vpc(&vpc, "10.0.0.0/16".parse().unwrap(), vni, 1, &[])
        .unwrap();
    apply(sim, prog).await;
    let mut keys = Vec::new();
    for (s, cidr) in [("a", "10.0.1.0/24"), ("b", "10.0.2.0/24")] {
        let subnet = format!("{tenant}/{s}");
        let (_, prog) = plane
            .provision_subnet(&subnet, &vpc, cidr.parse().unwrap(), 2, &[])
            .unwrap();
        apply(sim, prog).await;
        for n in 1..=2 {
            let d = on[keys.len()];
            let (placed, prog) = plane
                .provision_endpoint(
                    &format!("{tenant}/default/{s}{n}"),
                    &subnet,
                    &format!("d{d}"),
                    None,
                )
                .unwrap();
            apply(sim, prog).await;
            keys.push(EndpointKey::new(placed.vni, placed.ip));
        }
    }
    keys.try_into().unwrap()
}

fn delivered_to(
    sim: &SimDataplane,
    src: EndpointKey,
    dst: Ipv4Addr,
    flow: u64,
) -> Option<Ipv4Addr> {
    match sim.deliver(src, dst, flow).outcome {
        Outcome::Delivered { host, .. } => Some(host),
        Outcome::Dropped { .. } => None,
    }
}

#[tokio::test]
async fn reachability_within_and_across_subnets_and_isolation() {
    let mut plane = region(12);
    let sim = SimDataplane::new();
    let acme = tenant_network(&mut plane, &sim, "acme", 1001, [0, 1, 2, 3]).await;
    // Tenant beta: the same CIDRs, the same addresses, other hosts, its own VNI.
    let beta = tenant_network(&mut plane, &sim, "beta", 1002, [4, 5, 6, 7]).await;
    assert_eq!(
        acme.map(|k| k.ip),
        beta.map(|k| k.ip),
        "both tenants got the same addresses"
    );

    for flow in 0..16 {
        // Same subnet, other host: agent → bouncer → host.
        let d = sim.deliver(acme[0], acme[1].ip, flow);
        assert_eq!(
            d.outcome,
            Outcome::Delivered {
                host: host(1),
                veth: veth(&sim, host(1), acme[1])
            },
            "{d:?}"
        );
        assert!(d.hops() <= 2, "{d:?}");
        // Across subnets: agent → bouncer of a → divider → bouncer of b → host.
        let d = sim.deliver(acme[0], acme[2].ip, flow);
        assert_eq!(
            delivered_to(&sim, acme[0], acme[2].ip, flow),
            Some(host(2)),
            "{d:?}"
        );
        assert!(d.hops() <= 4, "{d:?}");
        // The same addresses in beta land on beta's hosts, never acme's.
        assert_eq!(delivered_to(&sim, beta[0], beta[1].ip, flow), Some(host(5)));
        assert_eq!(delivered_to(&sim, beta[3], beta[0].ip, flow), Some(host(4)));
        // An address no endpoint holds, inside and outside the subnets.
        let d = sim.deliver(acme[0], "10.0.1.200".parse().unwrap(), flow);
        assert!(
            matches!(
                d.outcome,
                Outcome::Dropped {
                    reason: DropReason::UnknownEndpoint,
                    ..
                }
            ),
            "{d:?}"
        );
        let d = sim.deliver(acme[0], "10.0.9.9".parse().unwrap(), flow);
        assert!(
            matches!(
                d.outcome,
                Outcome::Dropped {
                    reason: DropReason::NoRoute,
                    ..
                }
            ),
            "{d:?}"
        );
    }
    // Every packet of either tenant lands only on its own tenant's hosts.
    for src in acme {
        for dst in beta {
            for flow in 0..8 {
                if let Some(h) = delivered_to(&sim, src, dst.ip, flow) {
                    assert!(
                        [0, 1, 2, 3].map(host).contains(&h),
                        "acme packet landed on {h}"
                    );
                }
            }
        }
    }
    // Same host short-cut: two endpoints on one droplet never leave it.
    let (p, prog) = plane
        .provision_endpoint("acme/default/a3", "acme/a", "d0", None)
        .unwrap();
    apply(&sim, prog).await;
    let d = sim.deliver(acme[0], p.ip, 0);
    assert_eq!(d.hops(), 0, "{d:?}");

    // A deleted endpoint is unreachable at once, from every sender and flow.
    apply(&sim, plane.delete_endpoint("acme/default/a2")).await;
    for flow in 0..16 {
        assert_eq!(delivered_to(&sim, acme[0], acme[1].ip, flow), None);
        assert_eq!(delivered_to(&sim, acme[2], acme[1].ip, flow), None);
    }
    // No host keeps an entry for it.
    for i in 0..12 {
        assert!(
            sim.with_tables(host(i), |t| !t.endpoints.contains_key(&acme[1])
                && !t.agents.contains_key(&acme[1]))
        );
    }
    // The deleted endpoint cannot send either.
    let d = sim.deliver(acme[1], acme[0].ip, 0);
    assert!(matches!(
        d.outcome,
        Outcome::Dropped {
            reason: DropReason::UnknownSource,
            ..
        }
    ));
    // beta is untouched.
    assert_eq!(delivered_to(&sim, beta[0], beta[1].ip, 0), Some(host(5)));
}

fn veth(sim: &SimDataplane, host: Ipv4Addr, key: EndpointKey) -> String {
    sim.with_tables(host, |t| match t.endpoints.get(&key) {
        Some(centaurus_vpc::tables::Location::Local { veth, .. }) => veth.clone(),
        other => panic!("{key:?} is not local on {host}: {other:?}"),
    })
}

#[tokio::test]
async fn endpoint_provisioning_touches_only_bouncers_and_its_host() {
    let mut plane = region(1000);
    let sim = SimDataplane::new();
    for (t, bouncers) in [("acme", 1), ("beta", 3), ("gamma", 8)] {
        let vpc = format!("{t}/vpc");
        apply(
            &sim,
            plane
                .provision_vpc(
                    &vpc,
                    "10.0.0.0/8".parse().unwrap(),
                    2000 + bouncers as u32,
                    2,
                    &[],
                )
                .unwrap()
                .1,
        )
        .await;
        let subnet = format!("{t}/net");
        let (placed, prog) = plane
            .provision_subnet(&subnet, &vpc, "10.1.0.0/16".parse().unwrap(), bouncers, &[])
            .unwrap();
        apply(&sim, prog).await;
        let mut distinct = placed.bouncers.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            bouncers,
            "bouncers of one subnet share a droplet"
        );
        for i in 0..200 {
            sim.reset_counts();
            let (_, prog) = plane
                .provision_endpoint(
                    &format!("{t}/ns/ep{i}"),
                    &subnet,
                    &format!("d{}", (i * 7) % 1000),
                    None,
                )
                .unwrap();
            apply(&sim, prog).await;
            let touched = sim.calls().len();
            assert!(
                touched <= bouncers + 1,
                "{t}: endpoint {i} touched {touched} hosts"
            );
            assert!(
                touched >= bouncers,
                "{t}: endpoint {i} touched {touched} hosts"
            );
        }
    }
}

#[tokio::test]
async fn scaling_bouncers_and_dividers_keeps_every_path() {
    let mut plane = region(20);
    let sim = SimDataplane::new();
    let eps = tenant_network(&mut plane, &sim, "acme", 1001, [0, 5, 10, 15]).await;
    let check = |sim: &SimDataplane| {
        for src in eps {
            for dst in eps {
                for flow in 0..8 {
                    assert!(
                        delivered_to(sim, src, dst.ip, flow).is_some(),
                        "{src:?} -> {dst:?} flow {flow}"
                    );
                }
            }
        }
    };
    check(&sim);
    for n in [5, 1, 3] {
        let (placed, prog) = plane
            .provision_subnet("acme/a", "acme/vpc", "10.0.1.0/24".parse().unwrap(), n, &[])
            .unwrap();
        assert_eq!(placed.bouncers.len(), n);
        apply(&sim, prog).await;
        check(&sim);
        let (placed, prog) = plane
            .provision_vpc("acme/vpc", "10.0.0.0/16".parse().unwrap(), 1001, n, &[])
            .unwrap();
        assert_eq!(placed.dividers.len(), n);
        apply(&sim, prog).await;
        check(&sim);
    }
    // Scaling down removed the old bouncers' entries: only current bouncers and hosts hold
    // entries for acme's subnet a.
    let (placed, _) = plane
        .provision_subnet("acme/a", "acme/vpc", "10.0.1.0/24".parse().unwrap(), 3, &[])
        .unwrap();
    let bouncer_ips: Vec<Ipv4Addr> = placed
        .bouncers
        .iter()
        .map(|d| plane.droplets()[d].ip)
        .collect();
    for i in 0..20 {
        let h = host(i);
        let holds = sim.with_tables(h, |t| t.endpoints.contains_key(&eps[1]));
        let should = bouncer_ips.contains(&h) || h == host(5);
        assert_eq!(holds, should, "host {h}");
    }
    // Deleting everything leaves every table empty.
    apply(&sim, plane.delete_vpc("acme/vpc")).await;
    assert_eq!(sim.total_entries(), 0);
}

fn scaled(vip: Ipv4Addr, backends: &[EndpointKey], affinity: bool) -> Vec<ScaledEndpoint> {
    vec![ScaledEndpoint {
        vip,
        port: 80,
        protocol: TCP,
        backends: backends.iter().map(|k| Backend::new(k.ip, 8080)).collect(),
        affinity,
    }]
}

/// Programs tenant `t`'s Service `web` with `ports`.
async fn set_web(plane: &mut Plane, sim: &SimDataplane, t: &str, ports: Vec<ScaledEndpoint>) {
    let prog = plane
        .provision_service(&format!("{t}/default/web"), &format!("{t}/vpc"), ports)
        .unwrap();
    apply(sim, prog).await;
}

/// Where 300 connections from `client` (source ports from 20000) to `vip`:80 went.
fn spread(sim: &SimDataplane, client: EndpointKey, vip: Ipv4Addr) -> Vec<Ipv4Addr> {
    (0..300)
        .map(|i| {
            let (backend, d) = sim.send(client, 20_000 + i, vip, 80, TCP);
            let b = backend.expect("a scaled endpoint");
            assert!(
                matches!(d.outcome, Outcome::Delivered { .. }),
                "{:?}",
                d.outcome
            );
            b.ip
        })
        .collect()
}

/// A Service over three endpoints on three droplets: connections spread over the backends
/// (each takes 20–47%), only the hosts with endpoints of the VPC are programmed, a removed
/// backend's connections move and only those, a tenant with the same addresses and the
/// same service address reaches only its own backends, a host's first endpoint of the VPC
/// brings the Service and its last takes it away, and `ClientIP` affinity keeps a client on
/// one backend.
#[tokio::test]
async fn scaled_endpoints_spread_fail_over_and_stay_in_their_tenant() {
    let mut plane = region(12);
    let sim = SimDataplane::new();
    let acme = tenant_network(&mut plane, &sim, "acme", 1, [0, 1, 2, 3]).await;
    let beta = tenant_network(&mut plane, &sim, "beta", 2, [4, 5, 6, 7]).await;
    let vip = Ipv4Addr::new(10, 96, 0, 16);
    sim.reset_counts();
    let prog = plane
        .provision_service(
            "acme/default/web",
            "acme/vpc",
            scaled(vip, &acme[1..], false),
        )
        .unwrap();
    let hosts: Vec<Ipv4Addr> = prog.keys().copied().collect();
    assert_eq!(
        hosts,
        (0..4).map(host).collect::<Vec<_>>(),
        "only acme's hosts"
    );
    assert_eq!(plane.service_hosts("acme/vpc"), hosts);
    apply(&sim, prog).await;
    assert_eq!(sim.calls().len(), 4, "4 of 12 hosts programmed");

    let before = spread(&sim, acme[0], vip);
    for b in &acme[1..] {
        let share = before.iter().filter(|ip| **ip == b.ip).count();
        assert!((60..=141).contains(&share), "{} took {share} of 300", b.ip);
    }
    // Established connections keep their backend; a removed backend's move, only those.
    let gone = acme[3].ip;
    set_web(&mut plane, &sim, "acme", scaled(vip, &acme[1..3], false)).await;
    let after = spread(&sim, acme[0], vip);
    for (b, a) in before.iter().zip(&after) {
        if *b == gone {
            assert_ne!(*a, gone);
        } else {
            assert_eq!(a, b, "a connection to a remaining backend moved");
        }
    }
    // Another tenant: the same endpoint addresses and service address, its own backends.
    set_web(&mut plane, &sim, "beta", scaled(vip, &beta[1..2], false)).await;
    for (i, ip) in spread(&sim, beta[0], vip).iter().enumerate() {
        assert_eq!(*ip, beta[1].ip);
        let (_, d) = sim.send(beta[0], 20_000 + i as u16, vip, 80, TCP);
        assert!(
            matches!(d.outcome, Outcome::Delivered { host: h, .. } if h == host(5)),
            "beta's backend lives on d5: {:?}",
            d.outcome
        );
    }
    // A new host of the VPC gets its Services with its first endpoint, and loses them
    // with its last.
    let (placed, prog) = plane
        .provision_endpoint("acme/default/late", "acme/a", "d8", None)
        .unwrap();
    assert!(
        prog[&host(8)]
            .iter()
            .any(|u| matches!(u, TableUpdate::PutService { key, .. } if key.vip == vip)),
        "{prog:?}"
    );
    apply(&sim, prog).await;
    let late = EndpointKey::new(placed.vni, placed.ip);
    assert!(sim.send(late, 30_000, vip, 80, TCP).0.is_some());
    let prog = plane.delete_endpoint("acme/default/late");
    assert!(
        prog[&host(8)]
            .iter()
            .any(|u| matches!(u, TableUpdate::DeleteService { .. })),
        "{prog:?}"
    );
    apply(&sim, prog).await;
    sim.with_tables(host(8), |t| assert!(t.services.is_empty()));
    // Moved to another VPC (its network changed): gone from the first VPC's hosts.
    let elsewhere = Ipv4Addr::new(10, 96, 0, 99);
    let prog = plane
        .provision_service(
            "acme/default/web",
            "beta/vpc",
            scaled(elsewhere, &beta[1..2], false),
        )
        .unwrap();
    assert!(
        prog.contains_key(&host(0)) && prog.contains_key(&host(4)),
        "{prog:?}"
    );
    apply(&sim, prog).await;
    sim.with_tables(host(0), |t| {
        assert!(t.services.keys().all(|k| k.vni != acme[0].vni))
    });
    // ClientIP affinity: one backend for all of a client's connections.
    set_web(&mut plane, &sim, "acme", scaled(vip, &acme[1..], true)).await;
    let sticky: std::collections::HashSet<Ipv4Addr> = (0..50)
        .map(|i| sim.send(acme[1], 40_000 + i, vip, 80, TCP).0.unwrap().ip)
        .collect();
    assert_eq!(sticky.len(), 1, "{sticky:?}");
    // Deleted: gone from every host that had it.
    apply(&sim, plane.delete_service("acme/default/web", "acme/vpc")).await;
    for i in 0..4 {
        sim.with_tables(host(i), |t| {
            assert!(t.services.keys().all(|k| k.vni != acme[0].vni))
        });
    }
    assert_eq!(sim.send(acme[0], 50_000, vip, 80, TCP).0, None);
}
