//! The reference model walked across hosts, frame by frame, agrees with `SimDataplane` on
//! where every packet lands (or why it is dropped) and by which hosts; the bytes it
//! delivers are the bytes sent; the wire carries the sender's VNI and return-to-sender.

use std::net::Ipv4Addr;

use centaurus_vpc::plane::{DropletInfo, Plane, Programming};
use centaurus_vpc::tables::{EndpointKey, HostTables};
use centaurus_vpc::{Dataplane, Outcome, SimDataplane};
use centaurus_xdp::geneve::decapsulate;
use centaurus_xdp::model::{Drop, HostInfo, Verdict, agent_egress, flow_hash, transit_ingress};
use etherparse::PacketBuilder;

fn host(i: usize) -> HostInfo {
    HostInfo {
        ip: Ipv4Addr::new(192, 168, 1, i as u8 + 1),
        mac: [2, 0xaa, 0, 0, 0, i as u8],
    }
}

fn neighbor(ip: Ipv4Addr) -> Option<[u8; 6]> {
    let o = ip.octets();
    (o[..3] == [192, 168, 1]).then(|| [2, 0xaa, 0, 0, 0, o[3] - 1])
}

fn apply(sim: &SimDataplane, prog: Programming) {
    for (h, u) in prog {
        futures::executor::block_on(sim.program(h, &u)).unwrap();
    }
}

fn frame(src: Ipv4Addr, dst: Ipv4Addr, sport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 1, 1, 1, 1, 1], [2, 2, 2, 2, 2, 2])
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, 7);
    let payload = b"centaurus";
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

/// Two tenants with the same CIDRs, two subnets each, endpoints over 8 hosts.
fn region() -> (SimDataplane, Vec<(EndpointKey, usize)>) {
    let mut plane = Plane::new();
    for i in 0..8 {
        plane.set_droplet(
            &format!("d{i}"),
            DropletInfo {
                ip: host(i).ip,
                mac: host(i).mac,
            },
        );
    }
    let sim = SimDataplane::new();
    let mut eps = Vec::new();
    for (t, vni) in [("acme", 1001), ("beta", 1002)] {
        let vpc = format!("{t}/v");
        apply(
            &sim,
            plane
                .provision_vpc(&vpc, "10.0.0.0/16".parse().unwrap(), vni, 1, &[])
                .unwrap()
                .1,
        );
        for (s, cidr) in [("a", "10.0.1.0/24"), ("b", "10.0.2.0/24")] {
            let subnet = format!("{t}/{s}");
            apply(
                &sim,
                plane
                    .provision_subnet(&subnet, &vpc, cidr.parse().unwrap(), 2, &[])
                    .unwrap()
                    .1,
            );
            for n in 0..4 {
                let d = (n * 3 + s.len() + vni as usize) % 8;
                let (p, prog) = plane
                    .provision_endpoint(&format!("{t}/ns/{s}{n}"), &subnet, &format!("d{d}"), None)
                    .unwrap();
                apply(&sim, prog);
                eps.push((EndpointKey::new(p.vni, p.ip), d));
            }
        }
    }
    (sim, eps)
}

fn tables(sim: &SimDataplane, i: usize) -> HostTables {
    sim.with_tables(host(i).ip, Clone::clone)
}

fn index(ip: Ipv4Addr) -> usize {
    ip.octets()[3] as usize - 1
}

#[test]
fn model_walk_agrees_with_the_simulation() {
    let (sim, eps) = region();
    let all_tables: Vec<HostTables> = (0..8).map(|i| tables(&sim, i)).collect();
    let mut compared = 0;
    for (src, home) in &eps {
        let mut dsts: Vec<Ipv4Addr> = eps
            .iter()
            .filter(|(k, _)| k.vni == src.vni)
            .map(|(k, _)| k.ip)
            .collect();
        dsts.extend(["10.0.1.250", "10.0.9.9"].map(|a| a.parse::<Ipv4Addr>().unwrap()));
        for dst in dsts {
            for sport in [1000u16, 2000, 3000] {
                let sent = frame(src.ip, dst, sport);
                let flow = flow_hash(src.ip, dst, 17, (sport, 7));
                let expect = sim.deliver(*src, dst, u64::from(flow));
                // Walk the frame through the model, host by host.
                let mut at = *home;
                let mut path = vec![host(at).ip];
                let mut verdict = agent_egress(&all_tables[at], host(at), *src, &sent, &neighbor);
                let mut ttl = 64;
                let got = loop {
                    match verdict {
                        Verdict::Redirect { veth, frame } => {
                            assert_eq!(frame, sent, "delivered bytes differ from the sent bytes");
                            break Outcome::Delivered {
                                host: host(at).ip,
                                veth,
                            };
                        }
                        Verdict::Drop(Drop::Tables(reason)) => {
                            break Outcome::Dropped {
                                host: host(at).ip,
                                reason,
                            };
                        }
                        Verdict::Drop(other) => panic!("{src:?} -> {dst}: model dropped {other:?}"),
                        Verdict::Transmit { frame } => {
                            let (outer, g, inner) = decapsulate(&frame).unwrap();
                            assert_eq!(g.vni, src.vni, "the wire carries the sender's VNI");
                            assert_eq!(inner, &sent[..]);
                            assert_eq!(outer.src, host(at).ip);
                            assert_eq!(
                                g.return_to_sender(),
                                Some((host(*home).ip, host(*home).mac))
                            );
                            assert_eq!(outer.ttl, ttl);
                            ttl -= 1;
                            at = index(outer.dst);
                            path.push(outer.dst);
                            assert!(path.len() <= 8, "loop: {path:?}");
                            verdict = transit_ingress(&all_tables[at], host(at), &frame, &neighbor);
                        }
                    }
                };
                assert_eq!(got, expect.outcome, "{src:?} -> {dst} flow {flow}");
                assert_eq!(path, expect.path, "{src:?} -> {dst} flow {flow}");
                compared += 1;
            }
        }
    }
    assert!(compared > 300, "{compared}");
}

#[test]
fn malformed_and_foreign_frames_are_dropped() {
    let (sim, eps) = region();
    let (src, home) = eps[0];
    let t = tables(&sim, home);
    // Not an endpoint of this host.
    let other = EndpointKey::new(src.vni, "10.0.1.77".parse().unwrap());
    assert!(matches!(
        agent_egress(
            &t,
            host(home),
            other,
            &frame(other.ip, src.ip, 1),
            &neighbor
        ),
        Verdict::Drop(_)
    ));
    // Truncated frames, never a panic.
    let good = frame(src.ip, eps[1].0.ip, 5);
    for cut in 0..good.len() {
        let v = agent_egress(&t, host(home), src, &good[..cut], &neighbor);
        assert!(matches!(v, Verdict::Drop(_)), "cut {cut}: {v:?}");
    }
    // On the substrate: a frame that is not Geneve, truncated overlay frames, and one for
    // another host.
    assert!(matches!(
        transit_ingress(&t, host(home), &good, &neighbor),
        Verdict::Drop(Drop::Malformed(_))
    ));
    let Verdict::Transmit { frame: overlay } = agent_egress(&t, host(home), src, &good, &neighbor)
    else {
        panic!("expected an overlay frame")
    };
    let to = index(decapsulate(&overlay).unwrap().0.dst);
    let tt = tables(&sim, to);
    for cut in 0..overlay.len() {
        assert!(
            matches!(
                transit_ingress(&tt, host(to), &overlay[..cut], &neighbor),
                Verdict::Drop(_)
            ),
            "cut {cut}"
        );
    }
    let elsewhere = (to + 1) % 8;
    assert!(matches!(
        transit_ingress(
            &tables(&sim, elsewhere),
            host(elsewhere),
            &overlay,
            &neighbor
        ),
        Verdict::Drop(Drop::Malformed(_))
    ));
    // A wrong VNI finds nothing: rewrite the VNI on the wire to an unknown one.
    let mut wrong = overlay.clone();
    let g = 14 + 20 + 8;
    wrong[g + 4..g + 7].copy_from_slice(&[0x0f, 0xff, 0xff]);
    assert!(matches!(
        transit_ingress(&tt, host(to), &wrong, &neighbor),
        Verdict::Drop(Drop::Tables(_))
    ));
}

#[test]
fn arp_for_an_endpoint_is_answered_on_the_host() {
    let (sim, eps) = region();
    let (src, home) = eps[0];
    let (dst, _) = eps[1];
    let t = tables(&sim, home);
    let b = PacketBuilder::ethernet2([2, 1, 1, 1, 1, 1], [0xff; 6]).arp(
        etherparse::ArpPacket::new(
            etherparse::ArpHardwareId::ETHERNET,
            etherparse::EtherType::IPV4,
            etherparse::ArpOperation::REQUEST,
            &[2, 1, 1, 1, 1, 1],
            &src.ip.octets(),
            &[0; 6],
            &dst.ip.octets(),
        )
        .unwrap(),
    );
    let mut req = Vec::new();
    b.write(&mut req).unwrap();
    let Verdict::Redirect { frame, .. } = agent_egress(&t, host(home), src, &req, &neighbor) else {
        panic!("no ARP reply")
    };
    let p = etherparse::SlicedPacket::from_ethernet(&frame).unwrap();
    let Some(etherparse::NetSlice::Arp(arp)) = p.net else {
        panic!("reply is not ARP")
    };
    assert_eq!(arp.operation(), etherparse::ArpOperation::REPLY);
    assert_eq!(arp.sender_protocol_addr(), dst.ip.octets());
    assert_eq!(
        arp.sender_hw_addr(),
        centaurus_vpc::ipam::endpoint_mac(dst.vni, dst.ip)
    );
    assert_eq!(arp.target_protocol_addr(), src.ip.octets());
}
