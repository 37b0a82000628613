//! Differential tests: the BPF programs, run by the kernel on frames with
//! `BPF_PROG_TEST_RUN`, reach the reference model's verdict with the same bytes and count
//! the same drop reason, hop by hop across 8 hosts and on thousands of malformed frames,
//! at both hooks (XDP and TC). Frames larger than a page run as multi-buffer XDP frames
//! (the kernel's TC test runs take at most a page; the testbed carries TC's large frames).
//! They load real programs, so they run as root, each in a network namespace of its own.

mod common;

use std::time::Instant;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use centaurus_vpc::ipam::Ipv4Cidr;
use centaurus_vpc::maglev::Backend;
use centaurus_vpc::policy::{Block, EndpointPolicy, PortRange, Rule, SCTP, Way};
use centaurus_vpc::tables::{DropReason, EndpointKey, Location, ServiceKey, TCP, TableUpdate, UDP};
use centaurus_xdp::geneve::decapsulate;
use centaurus_xdp::loader::{Hook, Program, RunResult, Transit, action};
use centaurus_xdp::model::{Drop, Host, Verdict};
use common::{
    EMPTY_VIP, Log, VIP, checksums_ok, frame, host, in_netns, index, l4_frame, region, sh,
};

/// One host as the kernel runs it and as the model says it should run.
struct Pair {
    bpf: Transit,
    model: Host,
}

/// Loads a datapath per host at `hook` with its programming and the MACs of the others.
/// Each local endpoint gets its veth pair (unless an earlier load made it), so the agent's
/// entry has an ifindex to sit under.
fn load(log: &Log, hook: Hook) -> Vec<Pair> {
    sh(&["ip", "link", "set", "lo", "up"]);
    (0..8)
        .map(|i| {
            let me = host(i);
            let updates = log.get(&me.ip).cloned().unwrap_or_default();
            make_veths(&updates);
            let mut bpf = Transit::load(me, 1, hook).expect("the transit programs load");
            bpf.set_attach_agents(false);
            bpf.apply(&updates).unwrap();
            assert_eq!(bpf.pending().count(), 0);
            let mut model = Host::new(me);
            model.tables = bpf.tables().clone();
            for j in (0..8).filter(|j| *j != i) {
                bpf.set_neighbor(host(j).ip, host(j).mac).unwrap();
                model.neighbors.insert(host(j).ip, host(j).mac);
            }
            Pair { bpf, model }
        })
        .collect()
}

/// Makes the veth pair of each local endpoint in `updates` that has none yet.
fn make_veths(updates: &[TableUpdate]) {
    for u in updates {
        if let TableUpdate::PutEndpoint {
            location: Location::Local { veth, .. },
            ..
        } = u
        {
            let peer = format!("pp{}", &veth[2..]);
            if centaurus_xdp::loader::ifindex(veth).is_none() {
                sh(&[
                    "ip", "link", "add", veth, "type", "veth", "peer", "name", &peer,
                ]);
            }
        }
    }
}

fn ifindex_of(pair: &Pair, key: EndpointKey) -> u32 {
    match pair.model.tables.endpoints.get(&key) {
        Some(Location::Local { veth, .. }) => centaurus_xdp::loader::ifindex(veth).unwrap(),
        _ => panic!("{key:?} is not local"),
    }
}

fn drops(pair: &mut Pair) -> Vec<u64> {
    pair.bpf.counters().unwrap().iter().map(|c| c.1).collect()
}

/// Runs `frame` through program `p` of `pair` and through the model, and requires the
/// same action, bytes and counted drop reason. Returns the model's verdict.
fn agree(pair: &mut Pair, p: Program, src: Option<EndpointKey>, frame: &[u8], now: u64) -> Verdict {
    let before = drops(pair);
    let (expect, ingress) = match (p, src) {
        (Program::Agent, Some(src)) => (
            pair.model.agent_egress(src, frame, now),
            ifindex_of(pair, src),
        ),
        _ => (pair.model.transit_ingress(frame, now), 1),
    };
    // The kernel runs XDP only on whole Ethernet headers; TC test runs want something
    // after them, and for an IPv4 or IPv6 type its whole fixed header. Test runs refuse
    // anything shorter; the model must still drop or pass them.
    let shortest = match (pair.bpf.hook(), frame.get(12..14)) {
        (Hook::Xdp, _) => 14,
        (Hook::Tc, Some([0x08, 0x00])) => 14 + 20,
        (Hook::Tc, Some([0x86, 0xdd])) => 14 + 40,
        (Hook::Tc, _) => 15,
    };
    if frame.len() < shortest {
        assert!(
            matches!(expect, Verdict::Drop(_) | Verdict::Pass),
            "{expect:?}"
        );
        return expect;
    }
    let got: RunResult = pair.bpf.run(p, frame, ingress, 1).unwrap();
    let after = drops(pair);
    // TC sends a frame back out of its interface by redirecting it there.
    let tx = match pair.bpf.hook() {
        Hook::Xdp => action::TX,
        Hook::Tc => action::REDIRECT,
    };
    let (want_action, want_frame) = match &expect {
        Verdict::Deliver { frame, .. } => (action::REDIRECT, frame.clone()),
        Verdict::Send { frame } if p == Program::Agent => (action::REDIRECT, frame.clone()),
        Verdict::Send { frame } | Verdict::Reply { frame } => (tx, frame.clone()),
        Verdict::Pass => (action::PASS, frame.to_vec()),
        Verdict::Drop(_) => (action::DROP, got.frame.clone()),
    };
    assert_eq!(
        (got.action, &got.frame),
        (want_action, &want_frame),
        "{p:?} at {:?} on {frame:02x?}: model says {expect:?}",
        pair.bpf.hook()
    );
    if let Verdict::Drop(d) = &expect {
        let i = d.counter() as usize;
        assert_eq!(
            after[i],
            before[i] + 1,
            "{p:?}: {d:?} counted elsewhere: {before:?} -> {after:?}"
        );
    }
    expect
}

fn now(start: Instant) -> u64 {
    // The model's clock only decides freshness (30 s) and refreshes (1 s): a test that
    // runs in a few seconds agrees with the kernel's clock on both.
    start.elapsed().as_nanos() as u64 + 1_000_000_000_000
}

/// Walks `sent` from endpoint `src` on host `home` through the agent, then from host to
/// host through the transit program while it is sent on, requiring agreement at each hop
/// and calling `on_wire` with each overlay frame; returns the last verdict and the hops.
fn walk(
    hosts: &mut [Pair],
    src: EndpointKey,
    home: usize,
    sent: &[u8],
    start: Instant,
    mut on_wire: impl FnMut(&[u8]),
) -> (Verdict, usize) {
    let mut v = agree(
        &mut hosts[home],
        Program::Agent,
        Some(src),
        sent,
        now(start),
    );
    let mut hops = 0;
    while let Verdict::Send { frame } = v {
        on_wire(&frame);
        let at = index(decapsulate(&frame).unwrap().0.dst);
        hops += 1;
        v = agree(&mut hosts[at], Program::Transit, None, &frame, now(start));
    }
    (v, hops)
}

#[test]
fn programs_agree_with_the_model_hop_by_hop() {
    if !in_netns("programs_agree_with_the_model_hop_by_hop") {
        return;
    }
    for hook in [Hook::Xdp, Hook::Tc] {
        hop_by_hop(hook);
    }
}

fn hop_by_hop(hook: Hook) {
    let (_, eps, log) = region();
    let mut hosts = load(&log, hook);
    let start = Instant::now();
    let (mut delivered, mut hops, mut dropped) = (0, 0, 0);
    for (src, home) in &eps {
        for dst in common::destinations(&eps, *src) {
            for sport in [1000u16, 2000] {
                let sent = frame(src.ip, dst, sport);
                let (v, n) = walk(&mut hosts, *src, *home, &sent, start, |_| {});
                hops += n;
                match v {
                    Verdict::Deliver { .. } => delivered += 1,
                    Verdict::Drop(_) => dropped += 1,
                    other => panic!("{other:?}"),
                }
            }
        }
    }
    println!("{hook}: agreed on {delivered} deliveries, {dropped} drops, {hops} substrate hops");
    assert!(delivered > 200 && dropped > 50 && hops > 300);
    // Both learned the same senders' hosts.
    let mut learned = 0;
    for pair in &mut hosts {
        let mut bpf: Vec<_> = pair
            .bpf
            .learned()
            .unwrap()
            .into_iter()
            .map(|(k, l)| (k, l.host, l.mac))
            .collect();
        let mut model: Vec<_> = pair
            .model
            .learned
            .iter()
            .map(|(k, l)| (*k, l.host, l.mac))
            .collect();
        bpf.sort();
        model.sort();
        assert_eq!(bpf, model);
        learned += bpf.len();
    }
    assert!(learned > 20, "{learned}");
}

/// The kernel's connection tracking holds on every host what the model's does.
fn same_conntrack(hosts: &mut [Pair]) {
    for pair in hosts {
        let mut bpf = pair.bpf.conntrack().unwrap();
        let mut model: Vec<_> = pair.model.conntrack.iter().map(|(k, v)| (*k, *v)).collect();
        bpf.sort();
        model.sort();
        assert_eq!(bpf, model);
    }
}

/// The destination (`dst`) or source address and port of a delivered TCP or UDP frame.
fn addr_port(frame: &[u8], dst: bool) -> Backend {
    let (ip, port) = if dst { (30, 36) } else { (26, 34) };
    let a: [u8; 4] = frame[ip..ip + 4].try_into().unwrap();
    Backend::new(
        Ipv4Addr::from(a),
        u16::from_be_bytes([frame[port], frame[port + 1]]),
    )
}

#[test]
fn scaled_endpoints_agree_with_the_model() {
    if !in_netns("scaled_endpoints_agree_with_the_model") {
        return;
    }
    for hook in [Hook::Xdp, Hook::Tc] {
        scaled_endpoints(hook);
    }
}

/// Every endpoint of both tenants opens connections to its tenant's Service (the same VIP
/// in both): each lands on a backend of its own tenant, with valid checksums, and the
/// backend's reply comes back from the VIP; the programs agree with the model at every
/// hop and hold the same connections. Then a backend goes: only its connections move.
fn scaled_endpoints(hook: Hook) {
    let (_, eps, log) = region();
    let mut hosts = load(&log, hook);
    let start = Instant::now();
    let home_of = |k: EndpointKey| eps.iter().find(|(e, _)| *e == k).map(|(_, h)| *h);
    let mut chosen: BTreeMap<(EndpointKey, u16), Backend> = BTreeMap::new();
    let mut per_backend: BTreeMap<(u32, Backend), usize> = BTreeMap::new();
    // One round of connections: TCP to port 80 from 6 client ports, UDP to port 53 from
    // 3 (ClientIP affinity: one backend per client).
    type Tally = BTreeMap<(u32, Backend), usize>;
    let round = |hosts: &mut [Pair],
                 chosen: &mut BTreeMap<(EndpointKey, u16), Backend>,
                 per_backend: &mut Tally| {
        let mut moved = 0;
        for (src, home) in &eps {
            let mut udp_backend = None;
            for (protocol, dport, sport) in (0..6)
                .map(|i| (TCP, 80, 40000 + i))
                .chain((0..3).map(|i| (UDP, 53, 50000 + i)))
            {
                let sent = l4_frame(protocol, src.ip, VIP, sport, dport);
                let (v, _) = walk(hosts, *src, *home, &sent, start, |_| {});
                let Verdict::Deliver { frame, .. } = v else {
                    panic!("{hook}: {src:?}:{sport} to the VIP: {v:?}");
                };
                let b = addr_port(&frame, true);
                let want =
                    common::backends(&eps, src.vni, if protocol == TCP { 8080 } else { 5353 });
                assert!(
                    want.contains(&b),
                    "{src:?} reached {b:?}, not one of {want:?}"
                );
                assert!(checksums_ok(&frame), "{hook}: bad checksums {frame:02x?}");
                if protocol == UDP {
                    assert_eq!(*udp_backend.get_or_insert(b), b, "ClientIP affinity");
                }
                if let Some(was) = chosen.insert((*src, sport), b) {
                    moved += usize::from(was != b);
                }
                *per_backend.entry((src.vni, b)).or_default() += 1;
                // The backend answers; the client sees the Service answer.
                let server = EndpointKey::new(src.vni, b.ip);
                let reply = l4_frame(protocol, b.ip, src.ip, b.port, sport);
                let (v, _) = walk(
                    hosts,
                    server,
                    home_of(server).unwrap(),
                    &reply,
                    start,
                    |_| {},
                );
                let Verdict::Deliver { frame, .. } = v else {
                    panic!("{hook}: reply from {b:?}: {v:?}");
                };
                assert_eq!(
                    addr_port(&frame, false),
                    Backend::new(VIP, dport),
                    "{hook}: reply not translated"
                );
                assert!(
                    checksums_ok(&frame),
                    "{hook}: bad reply checksums {frame:02x?}"
                );
            }
        }
        moved
    };
    assert_eq!(round(&mut hosts, &mut chosen, &mut per_backend), 0);
    // Both tenants' TCP connections spread over their 3 backends.
    let tcp = per_backend.keys().filter(|(_, b)| b.port == 8080).count();
    assert_eq!(tcp, 6, "{per_backend:?}");
    same_conntrack(&mut hosts);
    // A UDP packet without a checksum keeps none; a Service without backends drops.
    let (src, home) = eps[5];
    let mut bare = l4_frame(UDP, src.ip, VIP, 51000, 53);
    bare[40..42].copy_from_slice(&[0, 0]);
    let (v, _) = walk(&mut hosts, src, home, &bare, start, |_| {});
    let Verdict::Deliver { frame, .. } = v else {
        panic!("{v:?}")
    };
    assert_eq!(frame[40..42], [0, 0]);
    assert!(checksums_ok(&frame));
    let nothing = l4_frame(TCP, src.ip, EMPTY_VIP, 40000, 80);
    let v = agree(
        &mut hosts[home],
        Program::Agent,
        Some(src),
        &nothing,
        now(start),
    );
    assert_eq!(v, Verdict::Drop(centaurus_xdp::model::Drop::NoBackend));
    // The first tenant's first TCP backend goes, on every host holding the Service.
    let vni = eps[0].0.vni;
    let gone = common::backends(&eps, vni, 8080)[0];
    let left: Vec<Backend> = common::backends(&eps, vni, 8080)[1..].to_vec();
    let update = TableUpdate::PutService {
        key: ServiceKey {
            vni,
            vip: VIP,
            port: 80,
            protocol: TCP,
        },
        backends: left,
        affinity: false,
    };
    for pair in &mut hosts {
        if pair.model.tables.services.keys().any(|k| k.vni == vni) {
            pair.bpf.apply(std::slice::from_ref(&update)).unwrap();
            pair.model.tables.apply(&update);
        }
    }
    let before = chosen.clone();
    let moved = round(&mut hosts, &mut chosen, &mut Tally::new());
    // (The other tenant's backend at the same address stays.)
    let on_gone = before
        .iter()
        .filter(|((k, _), b)| k.vni == vni && **b == gone)
        .count();
    assert_eq!(moved, on_gone, "only the gone backend's connections move");
    assert!(on_gone > 0);
    println!(
        "{hook}: scaled endpoints agreed; {} connections per backend, {on_gone} moved off a gone backend",
        per_backend
            .values()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join("/")
    );
}

#[test]
fn policies_agree_with_the_model() {
    if !in_netns("policies_agree_with_the_model") {
        return;
    }
    for hook in [Hook::Xdp, Hook::Tc] {
        policies(hook);
    }
}

/// A random policy over the region's addresses: blocks of endpoints, prefixes with
/// exceptions or everything, ports of three protocols, one or both directions isolated.
fn random_policy(rng: &mut Rng, eps: &[(EndpointKey, usize)]) -> EndpointPolicy {
    let cidr = |s: &str| s.parse::<Ipv4Cidr>().unwrap();
    let rules = |rng: &mut Rng| -> Option<Vec<Rule>> {
        if rng.below(3) == 0 {
            return None;
        }
        let rules = (0..rng.below(4))
            .map(|_| {
                let peers = (0..1 + rng.below(3))
                    .map(|_| match rng.below(4) {
                        0 => Block::any(),
                        1 => Block {
                            cidr: cidr("10.0.0.0/16"),
                            except: vec![cidr(["10.0.1.0/24", "10.0.2.0/25"][rng.below(2)])],
                        },
                        2 => Block {
                            cidr: cidr(["10.0.1.0/24", "10.0.2.0/24", "10.0.1.0/30"][rng.below(3)]),
                            except: Vec::new(),
                        },
                        _ => Block::host(eps[rng.below(eps.len())].0.ip),
                    })
                    .collect();
                let ports = (0..rng.below(3))
                    .map(|_| {
                        let (protocol, first, last) = [
                            (TCP, 80, 80),
                            (UDP, 53, 60),
                            (TCP, 8000, 8100),
                            (SCTP, 9, 9),
                            (UDP, 0, u16::MAX),
                        ][rng.below(5)];
                        PortRange {
                            protocol,
                            first,
                            last,
                        }
                    })
                    .collect();
                Rule { peers, ports }
            })
            .collect();
        Some(rules)
    };
    EndpointPolicy {
        ingress: rules(rng),
        egress: rules(rng),
    }
}

/// A packet of `protocol` (TCP, UDP, SCTP or ICMP) from `src`:`sport` to `dst`:`dport`.
fn any_frame(protocol: u8, src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = l4_frame(
        if protocol == TCP { TCP } else { UDP },
        src,
        dst,
        sport,
        dport,
    );
    f[23] = protocol; // Neither checks the IPv4 checksum.
    f
}

/// Random policies on most endpoints of both tenants (the same addresses in each), and
/// every endpoint sends packets of four protocols to every endpoint of its VPC; each goes
/// back as a reply. The programs agree with the model at every hop; a new packet is
/// delivered exactly when the sender's egress rules and the receiver's ingress rules
/// (read directly, not compiled) allow it; a reply of a delivered packet always is; the
/// kernel tracks the connections the model does. Then every policy is replaced (a new
/// generation) or removed, and nothing stale stays in the maps.
fn policies(hook: Hook) {
    let (_, eps, log) = region();
    let mut hosts = load(&log, hook);
    let start = Instant::now();
    let mut rng = Rng(0x5eed_0f90_11c1_e5a7 ^ hook as u64);
    let home_of = |k: EndpointKey| eps.iter().find(|(e, _)| *e == k).map(|(_, h)| *h).unwrap();
    let mut policies: BTreeMap<EndpointKey, EndpointPolicy> = BTreeMap::new();
    let program = |hosts: &mut [Pair], policies: &mut BTreeMap<_, _>, rng: &mut Rng| {
        for (key, home) in &eps {
            let update = if rng.below(5) == 0 {
                policies.remove(key);
                TableUpdate::DeletePolicy { key: *key }
            } else {
                let policy = random_policy(rng, &eps);
                policies.insert(*key, policy.clone());
                TableUpdate::PutPolicy { key: *key, policy }
            };
            hosts[*home]
                .bpf
                .apply(std::slice::from_ref(&update))
                .unwrap();
            hosts[*home].model.tables.apply(&update);
        }
    };
    program(&mut hosts, &mut policies, &mut rng);
    let allows = |policies: &BTreeMap<EndpointKey, EndpointPolicy>,
                  key: EndpointKey,
                  way: Way,
                  peer: Ipv4Addr,
                  protocol: u8,
                  port: u16| {
        let port = (protocol != 1).then_some(port);
        policies
            .get(&key)
            .is_none_or(|p| p.allows(way, peer, protocol, port))
    };
    let (mut delivered, mut refused, mut replies) = (0, 0, 0);
    let mut sport = 20000u16;
    let mut sent_before = std::collections::BTreeSet::new();
    for round in 0..2 {
        for (src, home) in &eps {
            for (dst, _) in eps.iter().filter(|(d, _)| d.vni == src.vni && d != src) {
                for (protocol, dport) in [(TCP, 80), (UDP, 55), (SCTP, 9), (1, 0)] {
                    sport += 1;
                    let sent = any_frame(protocol, src.ip, dst.ip, sport, dport);
                    let (v, _) = walk(&mut hosts, *src, *home, &sent, start, |_| {});
                    let open = allows(&policies, *src, Way::Egress, dst.ip, protocol, dport)
                        && allows(&policies, *dst, Way::Ingress, src.ip, protocol, dport);
                    // A packet of a connection sent on earlier (let out, if not in) passes,
                    // as connection tracking goes; without ports (ICMP), any such packet.
                    let ports = |a: u16, b: u16| if protocol == 1 { (0, 0) } else { (a, b) };
                    let flow = (src.vni, src.ip, dst.ip, protocol, ports(sport, dport));
                    let reverse = (src.vni, dst.ip, src.ip, protocol, ports(dport, sport));
                    let reply_of_earlier =
                        sent_before.contains(&reverse) || sent_before.contains(&flow);
                    sent_before.insert(flow);
                    match v {
                        Verdict::Deliver { .. } => {
                            assert!(
                                open || reply_of_earlier,
                                "{hook}: {src:?} → {dst:?} {protocol}/{sport}→{dport}: {:?} / {:?}",
                                policies.get(src),
                                policies.get(dst)
                            );
                            sent_before.insert(reverse);
                            delivered += 1;
                            let reply = any_frame(protocol, dst.ip, src.ip, dport, sport);
                            let (v, _) =
                                walk(&mut hosts, *dst, home_of(*dst), &reply, start, |_| {});
                            assert!(
                                matches!(v, Verdict::Deliver { .. }),
                                "{hook}: the reply of {src:?} → {dst:?} {protocol}: {v:?}"
                            );
                            replies += 1;
                        }
                        Verdict::Drop(Drop::Tables(DropReason::Policy)) => {
                            assert!(!open, "{hook}: {src:?} → {dst:?} {protocol}/{dport}");
                            refused += 1;
                        }
                        other => panic!("{hook}: {other:?}"),
                    }
                }
            }
        }
        same_conntrack(&mut hosts);
        if round == 0 {
            // New policies, written under the other generation, or none.
            program(&mut hosts, &mut policies, &mut rng);
            for pair in &mut hosts {
                assert_eq!(pair.bpf.prune().unwrap(), 0, "{hook}: stale policy entries");
            }
        }
    }
    println!(
        "{hook}: policies agreed on {delivered} deliveries (and their replies), {refused} refusals"
    );
    assert!(
        delivered > 100 && refused > 100 && replies == delivered,
        "{delivered} {refused}"
    );
}

/// Frames larger than a page reach the programs as multi-buffer frames (headers in the
/// linear part, the rest in fragments): the outer lengths the programs write and check
/// cover the whole frame, as the model's do, on every hop up to delivery.
#[test]
fn multi_buffer_frames_agree_with_the_model() {
    if !in_netns("multi_buffer_frames_agree_with_the_model") {
        return;
    }
    let (_, eps, log) = region();
    let mut hosts = load(&log, Hook::Xdp);
    let start = Instant::now();
    let (src, home) = eps[0];
    let (mut delivered, mut hops) = (0, 0);
    // Up to a 9000-byte substrate's endpoint MTU (8934), over one and two pages.
    for len in [3000usize, 4090, 4097, 6000, 8934 - 28] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 13 % 251) as u8).collect();
        for dst in common::destinations(&eps, src) {
            let sent = common::frame_with(src.ip, dst, 5000, &payload);
            let (v, n) = walk(&mut hosts, src, home, &sent, start, |overlay| {
                assert_eq!(overlay.len(), sent.len() + centaurus_xdp::model::ENCAP_LEN);
            });
            hops += n;
            if let Verdict::Deliver { frame, .. } = &v {
                assert_eq!(frame.len(), sent.len());
                delivered += 1;
            }
        }
    }
    println!("multi-buffer: agreed on {delivered} deliveries over {hops} substrate hops");
    assert!(delivered > 20 && hops > 20, "{delivered} {hops}");
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn malformed_frames_get_the_models_verdict() {
    if !in_netns("malformed_frames_get_the_models_verdict") {
        return;
    }
    for hook in [Hook::Xdp, Hook::Tc] {
        malformed(hook);
    }
}

fn malformed(hook: Hook) {
    let (_, eps, log) = region();
    let mut hosts = load(&log, hook);
    let start = Instant::now();
    let (src, home) = eps[0];
    let dst = eps
        .iter()
        .find(|(k, h)| k.vni == src.vni && *h != home)
        .unwrap()
        .0;
    let sent = frame(src.ip, dst.ip, 4242);
    let Verdict::Send { frame: overlay } =
        agree(&mut hosts[home], Program::Agent, Some(src), &sent, 0)
    else {
        panic!("expected an overlay frame");
    };
    let to = index(decapsulate(&overlay).unwrap().0.dst);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut verdicts = std::collections::BTreeMap::<String, usize>::new();
    let mut tally = |v: &Verdict| {
        let name = format!("{v:?}");
        *verdicts
            .entry(name.split([' ', '(', '{']).next().unwrap().to_owned())
            .or_default() += 1;
    };
    // Every truncation, on both programs.
    for cut in 0..overlay.len() {
        tally(&agree(
            &mut hosts[to],
            Program::Transit,
            None,
            &overlay[..cut],
            now(start),
        ));
    }
    for cut in 0..sent.len() {
        tally(&agree(
            &mut hosts[home],
            Program::Agent,
            Some(src),
            &sent[..cut],
            now(start),
        ));
    }
    // Random byte flips over the headers, and random lengths of random bytes.
    for _ in 0..3000 {
        let mut f = overlay.clone();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(f.len().min(100));
            f[at] = rng.next() as u8;
        }
        tally(&agree(
            &mut hosts[to],
            Program::Transit,
            None,
            &f,
            now(start),
        ));
        let mut g = sent.clone();
        let at = rng.below(g.len());
        g[at] = rng.next() as u8;
        tally(&agree(
            &mut hosts[home],
            Program::Agent,
            Some(src),
            &g,
            now(start),
        ));
    }
    // Frames to a scaled endpoint: every truncation (a TCP header cut before its
    // checksum), and random byte flips over the headers.
    let to_vip = l4_frame(TCP, src.ip, VIP, 4343, 80);
    for cut in 0..to_vip.len() {
        let v = agree(
            &mut hosts[home],
            Program::Agent,
            Some(src),
            &to_vip[..cut],
            now(start),
        );
        tally(&v);
    }
    for _ in 0..2000 {
        let mut g = to_vip.clone();
        for _ in 0..1 + rng.below(2) {
            let at = rng.below(g.len().min(54));
            g[at] = rng.next() as u8;
        }
        tally(&agree(
            &mut hosts[home],
            Program::Agent,
            Some(src),
            &g,
            now(start),
        ));
    }
    for _ in 0..500 {
        let len = rng.below(200);
        let f: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        tally(&agree(
            &mut hosts[to],
            Program::Transit,
            None,
            &f,
            now(start),
        ));
        tally(&agree(
            &mut hosts[home],
            Program::Agent,
            Some(src),
            &f,
            now(start),
        ));
    }
    println!("{hook}: verdicts {verdicts:?}");
    assert!(
        verdicts.get("Drop").copied().unwrap_or(0) > 1000,
        "{verdicts:?}"
    );
    assert!(
        verdicts.get("Pass").copied().unwrap_or(0) > 100,
        "{verdicts:?}"
    );
}

#[test]
fn pinned_maps_outlive_their_loader() {
    if !in_netns("pinned_maps_outlive_their_loader") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let not_bpffs = Transit::load_pinned(host(0), 1, Hook::Tc, dir.path()).err();
    assert!(
        format!("{not_bpffs:?}").contains("not on a BPF filesystem"),
        "{not_bpffs:?}"
    );
    // The test's own mount namespace (`ip netns exec` gives it one) takes the mount.
    sh(&["mount", "-t", "bpf", "bpf", &dir.path().to_string_lossy()]);
    let pins = dir.path().join("host0");
    let (_, _, log) = region();
    let me = host(0);
    let updates = log.get(&me.ip).cloned().unwrap_or_default();
    sh(&["ip", "link", "set", "lo", "up"]);
    make_veths(&updates);
    let mut first = Transit::load_pinned(me, 1, Hook::Tc, &pins).unwrap();
    first.set_attach_agents(false);
    first.apply(&updates).unwrap();
    assert_eq!(first.pending().count(), 0);
    let written = first.tables().endpoints.len()
        + first.tables().agents.len()
        + first.tables().bounced.values().flatten().count()
        + first.tables().divided.values().flatten().count();
    assert!(written > 3, "{written}");
    drop(first);
    // A second loader finds the first one's entries in the pinned maps; with tables that
    // hold none of them, pruning removes every one (the tries' per-VNI entries too), once.
    let mut second = Transit::load_pinned(me, 1, Hook::Tc, &pins).unwrap();
    let pruned = second.prune().unwrap();
    assert!(pruned >= written, "pruned {pruned} of {written}");
    assert_eq!(second.prune().unwrap(), 0);
    drop(second);
    // Maps pinned by a build whose maps had another layout are never reused: they are
    // unpinned, and this build starts on fresh maps of its own.
    let layout = centaurus_xdp::loader::map_layout();
    let mut older = Transit::load_pinned_as(me, 1, Hook::Tc, &pins, "0000older0000000").unwrap();
    older.set_attach_agents(false);
    older.apply(&updates).unwrap();
    drop(older);
    assert!(pins.join("maps-0000older0000000").exists());
    let mut third = Transit::load_pinned(me, 1, Hook::Tc, &pins).unwrap();
    assert_eq!(
        third.prune().unwrap(),
        0,
        "the older build's entries were reused"
    );
    assert!(!pins.join("maps-0000older0000000").exists());
    assert!(
        pins.join(format!("maps-{layout}"))
            .join("endpoints")
            .exists()
    );
    drop(third);
    let _ = std::process::Command::new("umount")
        .arg(dir.path())
        .status();
}
