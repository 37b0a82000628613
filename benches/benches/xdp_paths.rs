//! Per-packet cost of each path through the XDP programs, as the kernel measures it with
//! `BPF_PROG_TEST_RUN` on live frames (each run on a fresh copy of the frame; the mean over
//! 1,000,000 runs, repeated 5 times; the median is printed). Transmits and redirects go
//! to `lo`, which cannot take XDP frames, so their cost after the program is the kernel
//! refusing them: encapsulation by the agent, bounce, divide, decapsulation, ARP reply,
//! same-host delivery, and a frame left to the kernel. Needs root (it loads the programs);
//! without it, says so and exits.
//!
//! The TC classifiers are not timed here: a TC test run repeats on one socket buffer, so an
//! encapsulating program would see its own output from the second run on; the datapath
//! benchmark measures them carrying traffic.
//!
//! `cargo bench -p centaurus-benches --bench xdp_paths`

use std::net::Ipv4Addr;

use centaurus_vpc::tables::{EndpointKey, Location, TableUpdate};
use centaurus_xdp::geneve::{Geneve, GeneveOption, Outer, encapsulate, flow_port};
use centaurus_xdp::loader::{Hook, Program, Transit, action};
use centaurus_xdp::model::HostInfo;
use etherparse::PacketBuilder;

const VNI: u32 = 1000;
const RUNS: u32 = 1_000_000;

fn host(i: u8) -> HostInfo {
    HostInfo {
        ip: Ipv4Addr::new(192, 168, 1, i),
        mac: [2, 0xaa, 0, 0, 0, i],
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// A 64-byte UDP frame (the small-packet case) from `src` to `dst`.
fn udp(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 1, 1, 1, 1, 1], [2, 2, 2, 2, 2, 2])
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(4000, 5000);
    let mut out = Vec::new();
    b.write(&mut out, &[0u8; 18]).unwrap();
    out
}

/// The overlay frame of `inner` from host `from` to host `to`.
fn overlay(from: HostInfo, to: HostInfo, inner: &[u8]) -> Vec<u8> {
    let mut g = Geneve::new(VNI);
    g.options.push(GeneveOption::ReturnToSender {
        host: from.ip,
        mac: from.mac,
    });
    let outer = Outer {
        src_mac: from.mac,
        dst_mac: to.mac,
        src: from.ip,
        dst: to.ip,
        ttl: 64,
        src_port: flow_port(7),
    };
    encapsulate(&outer, &g, inner).unwrap()
}

/// Host `me` with `updates`, knowing hosts 1 to 4; local endpoints sit behind `lo`.
fn load(me: u8, updates: &[TableUpdate]) -> Transit {
    let mut t = Transit::load(host(me), 1, Hook::Xdp).expect("loading the programs");
    t.set_attach_agents(false);
    t.apply(updates).unwrap();
    for i in 1..=4 {
        t.set_neighbor(host(i).ip, host(i).mac).unwrap();
    }
    t
}

fn local(ip: Ipv4Addr) -> TableUpdate {
    TableUpdate::PutEndpoint {
        key: EndpointKey::new(VNI, ip),
        location: Location::Local {
            veth: "lo".into(),
            mac: [2, 9, 9, 9, 9, 9],
        },
    }
}

fn median_ns(t: &mut Transit, p: Program, frame: &[u8], want: u32) -> u64 {
    let once = t.run(p, frame, 1, 1).unwrap();
    assert_eq!(
        once.action,
        want,
        "{p:?} took another path: {:?}",
        t.counters()
    );
    let mut runs: Vec<u64> = (0..5)
        .map(|_| match t.time(p, frame, 1, RUNS) {
            Ok(ns) => ns,
            Err(e) => {
                // Some kernels refuse live-frame test runs (EPERM) even to root.
                eprintln!("xdp_paths: this kernel refuses live-frame test runs ({e}); skipped");
                std::process::exit(0);
            }
        })
        .collect();
    runs.sort();
    runs[2]
}

fn main() {
    if !centaurus_xdp::testbed::is_root() || std::env::args().any(|a| a == "--list") {
        eprintln!("xdp_paths: loading BPF programs needs root; skipped");
        return;
    }
    let src = ip("10.0.1.2");
    let remote = ip("10.0.1.3");
    let sender = EndpointKey::new(VNI, src);
    // Host 1: the sender's host, subnet 10.0.1.0/24 bounced by host 2.
    let mut h1 = load(
        1,
        &[
            local(src),
            local(ip("10.0.1.4")),
            TableUpdate::PutAgent {
                key: sender,
                bouncers: vec![host(2).ip],
            },
        ],
    );
    // Host 2: the bouncer, knows the remote endpoint is on host 3.
    let mut h2 = load(
        2,
        &[TableUpdate::PutEndpoint {
            key: EndpointKey::new(VNI, remote),
            location: Location::Remote {
                host: host(3).ip,
                mac: [2, 9, 9, 9, 9, 3],
            },
        }],
    );
    // Host 3: the remote endpoint's host.
    let mut h3 = load(3, &[local(remote)]);
    // Host 4: a divider, routing 10.0.2.0/24 to host 2.
    let mut h4 = load(
        4,
        &[TableUpdate::PutDividedSubnet {
            vni: VNI,
            cidr: "10.0.2.0/24".parse().unwrap(),
            bouncers: vec![host(2).ip],
        }],
    );
    let arp = {
        let b = PacketBuilder::ethernet2([2, 1, 1, 1, 1, 1], [0xff; 6]).arp(
            etherparse::ArpPacket::new(
                etherparse::ArpHardwareId::ETHERNET,
                etherparse::EtherType::IPV4,
                etherparse::ArpOperation::REQUEST,
                &[2, 1, 1, 1, 1, 1],
                &src.octets(),
                &[0; 6],
                &remote.octets(),
            )
            .unwrap(),
        );
        let mut out = Vec::new();
        b.write(&mut out).unwrap();
        out
    };
    let inner = udp(src, remote);
    let mut paths: Vec<(&str, u64)> = vec![
        (
            "encap (agent -> bouncer)",
            median_ns(&mut h1, Program::Agent, &inner, action::REDIRECT),
        ),
        (
            "same host (agent -> veth)",
            median_ns(
                &mut h1,
                Program::Agent,
                &udp(src, ip("10.0.1.4")),
                action::REDIRECT,
            ),
        ),
        (
            "ARP reply (agent)",
            median_ns(&mut h1, Program::Agent, &arp, action::TX),
        ),
        (
            "bounce (bouncer -> host)",
            median_ns(
                &mut h2,
                Program::Transit,
                &overlay(host(1), host(2), &inner),
                action::TX,
            ),
        ),
        (
            "divide (divider -> bouncer)",
            median_ns(
                &mut h4,
                Program::Transit,
                &overlay(host(1), host(4), &udp(src, ip("10.0.2.5"))),
                action::TX,
            ),
        ),
        (
            "decap (host -> veth)",
            median_ns(
                &mut h3,
                Program::Transit,
                &overlay(host(2), host(3), &inner),
                action::REDIRECT,
            ),
        ),
        (
            "not overlay (pass)",
            median_ns(
                &mut h3,
                Program::Transit,
                &udp(ip("192.168.1.9"), host(3).ip),
                action::PASS,
            ),
        ),
    ];
    let mut bad = overlay(host(2), host(3), &inner);
    bad[14 + 20 + 8] |= 0x40; // Geneve version 1
    paths.push((
        "drop (malformed overlay)",
        median_ns(&mut h3, Program::Transit, &bad, action::DROP),
    ));
    println!("{:<30} {:>10}", "path (64-byte inner frame)", "ns/packet");
    for (name, ns) in paths {
        println!("{name:<30} {ns:>10}");
    }
}
