//! The reference model walked across hosts, frame by frame, agrees with `SimDataplane` on
//! where every packet lands (or why it is dropped) and by which hosts; the bytes it
//! delivers are the bytes sent; the wire carries the sender's VNI and return-to-sender.

use std::net::Ipv4Addr;

mod common;

use centaurus_vpc::tables::{EndpointKey, HostTables};
use centaurus_vpc::{Outcome, SimDataplane};
use centaurus_xdp::geneve::decapsulate;
use centaurus_xdp::model::{Drop, GATEWAY_MAC, Host, Verdict, flow_hash};
use common::{frame, host, index, region};
use etherparse::PacketBuilder;

fn tables(sim: &SimDataplane, i: usize) -> HostTables {
    sim.with_tables(host(i).ip, Clone::clone)
}

/// Every host's model state: its tables and the MACs of all the others.
fn hosts(sim: &SimDataplane) -> Vec<Host> {
    (0..8)
        .map(|i| {
            let mut h = Host::new(host(i));
            h.tables = tables(sim, i);
            h.neighbors = (0..8)
                .filter(|j| *j != i)
                .map(|j| (host(j).ip, host(j).mac))
                .collect();
            h
        })
        .collect()
}

/// Walks `sent` from endpoint `src` on host `home` through the model, host by host, and
/// returns where it ended and the hosts it crossed. Delivered frames must carry the sent
/// bytes from the gateway to the endpoint; the wire must carry the sender's VNI and
/// return-to-sender, with the TTL falling by one per hop.
fn walk(hs: &mut [Host], src: EndpointKey, home: usize, sent: &[u8]) -> (Outcome, Vec<Ipv4Addr>) {
    let mut at = home;
    let mut path = vec![host(at).ip];
    let mut verdict = hs[at].agent_egress(src, sent, 0);
    let mut ttl = 64;
    loop {
        match verdict {
            Verdict::Deliver { veth, frame } => {
                assert_eq!(
                    frame[12..],
                    sent[12..],
                    "delivered bytes differ from the sent bytes"
                );
                assert_eq!(frame[6..12], GATEWAY_MAC);
                return (
                    Outcome::Delivered {
                        host: host(at).ip,
                        veth,
                    },
                    path,
                );
            }
            Verdict::Drop(Drop::Tables(reason)) => {
                return (
                    Outcome::Dropped {
                        host: host(at).ip,
                        reason,
                    },
                    path,
                );
            }
            Verdict::Send { frame } => {
                let (outer, g, inner) = decapsulate(&frame).unwrap();
                assert_eq!(g.vni, src.vni, "the wire carries the sender's VNI");
                assert_eq!(inner, sent);
                assert_eq!(outer.src, host(at).ip);
                assert_eq!(g.return_to_sender(), Some((host(home).ip, host(home).mac)));
                assert_eq!(outer.ttl, ttl);
                ttl -= 1;
                at = index(outer.dst);
                path.push(outer.dst);
                assert!(path.len() <= 8, "loop: {path:?}");
                verdict = hs[at].transit_ingress(&frame, 0);
            }
            other => panic!("{src:?}: model gave {other:?}"),
        }
    }
}

#[test]
fn model_walk_agrees_with_the_simulation() {
    let (sim, eps, _) = region();
    let mut hs = hosts(&sim);
    let mut compared = 0;
    for (src, home) in &eps {
        for dst in common::destinations(&eps, *src) {
            for sport in [1000u16, 2000, 3000] {
                let sent = frame(src.ip, dst, sport);
                let flow = flow_hash(src.ip, dst, 17, (sport, 7));
                let mut expect = sim.deliver(*src, dst, u64::from(flow));
                // A sender that is its own subnet's bouncer takes that hop in place.
                expect.path.dedup();
                for h in hs.iter_mut() {
                    h.learned.clear();
                }
                let (got, path) = walk(&mut hs, *src, *home, &sent);
                assert_eq!(got, expect.outcome, "{src:?} -> {dst} flow {flow}");
                assert_eq!(path, expect.path, "{src:?} -> {dst} flow {flow}");
                compared += 1;
            }
        }
    }
    assert!(compared > 300, "{compared}");
}

#[test]
fn replies_learn_the_direct_path() {
    let (sim, eps, _) = region();
    let mut hs = hosts(&sim);
    // Endpoints of one subnet on different hosts whose first packet is bounced.
    let mut checked = 0;
    for (a, ha) in &eps {
        for (b, hb) in &eps {
            if a.vni != b.vni || ha == hb {
                continue;
            }
            for h in hs.iter_mut() {
                h.learned.clear();
            }
            let (first, path) = walk(&mut hs, *a, *ha, &frame(a.ip, b.ip, 9));
            if !matches!(first, Outcome::Delivered { .. }) {
                continue;
            }
            // b's host learned a's; the reply goes there directly, and a's host learns b's.
            let (reply, back) = walk(&mut hs, *b, *hb, &frame(b.ip, a.ip, 9));
            assert!(matches!(reply, Outcome::Delivered { .. }), "{reply:?}");
            assert_eq!(
                back,
                vec![host(*hb).ip, host(*ha).ip],
                "first path {path:?}"
            );
            let (_, again) = walk(&mut hs, *a, *ha, &frame(a.ip, b.ip, 10));
            assert_eq!(again, vec![host(*ha).ip, host(*hb).ip]);
            checked += 1;
        }
    }
    assert!(checked > 20, "{checked}");
}

#[test]
fn malformed_and_foreign_frames_are_dropped_or_passed() {
    let (sim, eps, _) = region();
    let mut hs = hosts(&sim);
    let (src, home) = eps[0];
    // Not an endpoint of this host, or spoofing another address.
    let other = EndpointKey::new(src.vni, "10.0.1.77".parse().unwrap());
    assert_eq!(
        hs[home].agent_egress(other, &frame(other.ip, src.ip, 1), 0),
        Verdict::Drop(Drop::Tables(
            centaurus_vpc::tables::DropReason::UnknownSource
        ))
    );
    assert_eq!(
        hs[home].agent_egress(src, &frame(other.ip, eps[1].0.ip, 1), 0),
        Verdict::Drop(Drop::Tables(
            centaurus_vpc::tables::DropReason::UnknownSource
        ))
    );
    // Frames cut short of an IPv4 header are dropped (beyond it the agent does not look).
    let good = frame(src.ip, eps[1].0.ip, 5);
    for cut in 0..34 {
        let v = hs[home].agent_egress(src, &good[..cut], 0);
        assert!(matches!(v, Verdict::Drop(_)), "cut {cut}: {v:?}");
    }
    // On the substrate, a frame that is not Geneve is the kernel's.
    assert_eq!(hs[home].transit_ingress(&good, 0), Verdict::Pass);
    let dst = eps
        .iter()
        .find(|(k, h)| k.vni == src.vni && *h != home)
        .unwrap()
        .0;
    let Verdict::Send { frame: overlay } = hs[home].agent_egress(src, &frame(src.ip, dst.ip, 5), 0)
    else {
        panic!("expected an overlay frame")
    };
    let to = index(decapsulate(&overlay).unwrap().0.dst);
    // Truncated overlay frames: passed while they do not look like Geneve to this host,
    // dropped once they do.
    for cut in 0..overlay.len() {
        match hs[to].transit_ingress(&overlay[..cut], 0) {
            Verdict::Pass => assert!(cut < 42, "cut {cut} passed"),
            Verdict::Drop(Drop::Malformed(_)) => assert!(cut >= 42, "cut {cut}"),
            v => panic!("cut {cut}: {v:?}"),
        }
    }
    // Addressed to another host: the kernel's.
    let elsewhere = (to + 1) % 8;
    assert_eq!(hs[elsewhere].transit_ingress(&overlay, 0), Verdict::Pass);
    // A wrong VNI finds nothing.
    let mut wrong = overlay.clone();
    let g = 14 + 20 + 8;
    wrong[g + 4..g + 7].copy_from_slice(&[0x0f, 0xff, 0xff]);
    assert_eq!(
        hs[to].transit_ingress(&wrong, 0),
        Verdict::Drop(Drop::Tables(centaurus_vpc::tables::DropReason::UnknownVni))
    );
    // A bad option length.
    let mut bad = overlay.clone();
    bad[g + 8 + 3] = 2;
    assert!(matches!(
        hs[to].transit_ingress(&bad, 0),
        Verdict::Drop(Drop::Malformed(_))
    ));
}

#[test]
fn arp_is_answered_on_the_host_with_the_gateway_mac() {
    let (sim, eps, _) = region();
    let mut hs = hosts(&sim);
    let (src, home) = eps[0];
    let request = |target: Ipv4Addr| {
        let b = PacketBuilder::ethernet2([2, 1, 1, 1, 1, 1], [0xff; 6]).arp(
            etherparse::ArpPacket::new(
                etherparse::ArpHardwareId::ETHERNET,
                etherparse::EtherType::IPV4,
                etherparse::ArpOperation::REQUEST,
                &[2, 1, 1, 1, 1, 1],
                &src.ip.octets(),
                &[0; 6],
                &target.octets(),
            )
            .unwrap(),
        );
        let mut req = Vec::new();
        b.write(&mut req).unwrap();
        req
    };
    // Any address, on this host or not, in the subnet or not (the gateway).
    for target in [eps[1].0.ip, "10.0.1.1".parse().unwrap()] {
        let Verdict::Reply { frame } = hs[home].agent_egress(src, &request(target), 0) else {
            panic!("no ARP reply")
        };
        let p = etherparse::SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(etherparse::NetSlice::Arp(arp)) = p.net else {
            panic!("reply is not ARP")
        };
        assert_eq!(arp.operation(), etherparse::ArpOperation::REPLY);
        assert_eq!(arp.sender_protocol_addr(), target.octets());
        assert_eq!(arp.sender_hw_addr(), GATEWAY_MAC);
        assert_eq!(arp.target_protocol_addr(), src.ip.octets());
        assert_eq!(arp.target_hw_addr(), [2, 1, 1, 1, 1, 1]);
    }
    // A probe of its own address gets no answer.
    assert!(matches!(
        hs[home].agent_egress(src, &request(src.ip), 0),
        Verdict::Drop(Drop::Malformed(_))
    ));
}
