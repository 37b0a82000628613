//! What the datapath tests share: a region of 8 hosts with two tenants of identical CIDRs
//! and identical Services, frames, and running a test inside a network namespace of its
//! own.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command;

use centaurus_vpc::maglev::Backend;
use centaurus_vpc::plane::{DropletInfo, Plane, Programming, ScaledEndpoint};
use centaurus_vpc::tables::{EndpointKey, TCP, TableUpdate, UDP};
use centaurus_vpc::{Dataplane, SimDataplane};
use centaurus_xdp::model::HostInfo;
use etherparse::PacketBuilder;

/// Host `i`'s substrate interface.
pub fn host(i: usize) -> HostInfo {
    HostInfo {
        ip: Ipv4Addr::new(192, 168, 1, i as u8 + 1),
        mac: [2, 0xaa, 0, 0, 0, i as u8],
    }
}

/// Every update each host received, in order.
pub type Log = BTreeMap<Ipv4Addr, Vec<TableUpdate>>;

fn apply(sim: &SimDataplane, log: &mut Log, prog: Programming) {
    for (h, u) in prog {
        futures::executor::block_on(sim.program(h, &u)).unwrap();
        log.entry(h).or_default().extend(u);
    }
}

/// A UDP frame from `src` to `dst`.
pub fn frame(src: Ipv4Addr, dst: Ipv4Addr, sport: u16) -> Vec<u8> {
    frame_with(src, dst, sport, b"centaurus")
}

/// A UDP frame from `src` to `dst` carrying `payload`.
pub fn frame_with(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 1, 1, 1, 1, 1], [2, 2, 2, 2, 2, 2])
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, 7);
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

/// Every tenant's Service: TCP port 80 to its first 3 endpoints' port 8080, and UDP port
/// 53 with `ClientIP` affinity to their port 5353.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
/// Every tenant's Service without backends (TCP port 80).
pub const EMPTY_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 21);

/// The backends of [`VIP`] in a tenant whose endpoints are `eps` (in provisioning order),
/// at `port`.
pub fn backends(eps: &[(EndpointKey, usize)], vni: u32, port: u16) -> Vec<Backend> {
    eps.iter()
        .filter(|(k, _)| k.vni == vni)
        .take(3)
        .map(|(k, _)| Backend::new(k.ip, port))
        .collect()
}

/// A TCP (`protocol` 6) or UDP frame from `src`:`sport` to `dst`:`dport`.
pub fn l4_frame(protocol: u8, src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 1, 1, 1, 1, 1], [2, 2, 2, 2, 2, 2]).ipv4(
        src.octets(),
        dst.octets(),
        64,
    );
    let mut out = Vec::new();
    match protocol {
        TCP => b
            .tcp(sport, dport, 0x1234_5678, 64240)
            .syn()
            .write(&mut out, b"hello")
            .unwrap(),
        _ => b.udp(sport, dport).write(&mut out, b"hello").unwrap(),
    }
    out
}

/// Whether an Ethernet frame's IPv4 header checksum and its TCP or UDP checksum (over the
/// pseudo-header) hold; a UDP checksum of 0 means none.
pub fn checksums_ok(frame: &[u8]) -> bool {
    fn sum(words: &[u8], mut acc: u32) -> u32 {
        for c in words.chunks(2) {
            acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        acc
    }
    fn folded(mut acc: u32) -> u16 {
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }
    let ip = &frame[14..34];
    let l4 = &frame[34..14 + usize::from(u16::from_be_bytes([ip[2], ip[3]]))];
    if ip[9] == UDP && l4[6..8] == [0, 0] {
        return folded(sum(ip, 0)) == 0xffff;
    }
    let mut pseudo = ip[12..20].to_vec();
    pseudo.extend([0, ip[9]]);
    pseudo.extend((l4.len() as u16).to_be_bytes());
    folded(sum(ip, 0)) == 0xffff && folded(sum(l4, sum(&pseudo, 0))) == 0xffff
}

/// Two tenants with the same CIDRs, two subnets each, endpoints over 8 hosts, and the same
/// Services ([`VIP`], [`EMPTY_VIP`]).
pub fn region() -> (SimDataplane, Vec<(EndpointKey, usize)>, Log) {
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
    let mut log = Log::new();
    let mut eps = Vec::new();
    for (t, vni) in [("acme", 1001), ("beta", 1002)] {
        let vpc = format!("{t}/v");
        apply(
            &sim,
            &mut log,
            plane
                .provision_vpc(&vpc, "10.0.0.0/16".parse().unwrap(), vni, 1, &[])
                .unwrap()
                .1,
        );
        for (s, cidr) in [("a", "10.0.1.0/24"), ("b", "10.0.2.0/24")] {
            let subnet = format!("{t}/{s}");
            apply(
                &sim,
                &mut log,
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
                apply(&sim, &mut log, prog);
                eps.push((EndpointKey::new(p.vni, p.ip), d));
            }
        }
        let ports = vec![
            ScaledEndpoint {
                vip: VIP,
                port: 80,
                protocol: TCP,
                backends: backends(&eps, vni, 8080),
                affinity: false,
            },
            ScaledEndpoint {
                vip: VIP,
                port: 53,
                protocol: UDP,
                backends: backends(&eps, vni, 5353),
                affinity: true,
            },
        ];
        apply(
            &sim,
            &mut log,
            plane
                .provision_service(&format!("{t}/ns/web"), &vpc, ports)
                .unwrap(),
        );
        let empty = vec![ScaledEndpoint {
            vip: EMPTY_VIP,
            port: 80,
            protocol: TCP,
            backends: Vec::new(),
            affinity: false,
        }];
        apply(
            &sim,
            &mut log,
            plane
                .provision_service(&format!("{t}/ns/none"), &vpc, empty)
                .unwrap(),
        );
    }
    (sim, eps, log)
}

/// What each endpoint sends to in the agreement tests: every endpoint of its VPC, an
/// unused address of a subnet and one outside every subnet.
pub fn destinations(eps: &[(EndpointKey, usize)], src: EndpointKey) -> Vec<Ipv4Addr> {
    let mut dsts: Vec<Ipv4Addr> = eps
        .iter()
        .filter(|(k, _)| k.vni == src.vni)
        .map(|(k, _)| k.ip)
        .collect();
    dsts.extend(["10.0.1.250", "10.0.9.9"].map(|a| a.parse::<Ipv4Addr>().unwrap()));
    dsts
}

/// Host index of a substrate address.
pub fn index(ip: Ipv4Addr) -> usize {
    ip.octets()[3] as usize - 1
}

/// Runs test `name` of this test binary inside a fresh network namespace. Returns true in
/// the namespace (the caller runs the test body); outside it, re-runs the binary there,
/// asserts that it passed, removes the namespace, and returns false.
pub fn in_netns(name: &str) -> bool {
    const INSIDE: &str = "CENTAURUS_TEST_NETNS";
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    if !centaurus_xdp::testbed::is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs {name} as root");
        eprintln!("SKIPPED: {name} loads BPF programs and needs root");
        return false;
    }
    let ns = format!("cx-test-{}-{}", std::process::id(), name.len());
    let ok = Command::new("ip").args(["netns", "add", &ns]).status();
    assert!(
        ok.is_ok_and(|s| s.success()),
        "`ip netns add` failed: these tests need root and iproute2"
    );
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .unwrap();
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{name} failed in its namespace"
    );
    false
}

/// Runs a command, panicking with its output if it fails.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
