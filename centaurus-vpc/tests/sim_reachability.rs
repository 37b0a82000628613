//! Packets through the plane's programming on a simulated region: reachability within and
//! across subnets, isolation between tenants with identical addresses, deletion, and the
//! bound on the hosts one endpoint's provisioning touches.

use std::net::Ipv4Addr;

use centaurus_vpc::plane::{DropletInfo, Plane, Programming};
use centaurus_vpc::tables::{DropReason, EndpointKey};
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
