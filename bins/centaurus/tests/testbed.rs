//! The datapath carrying real traffic, once with its programs at the TC hook and once at
//! the XDP hook: three droplets (network namespaces on a bridge, each running `centaurus
//! transitd`), two tenants whose VPCs have identical CIDRs and identical endpoint
//! addresses, programmed by the management plane through the transit daemons. Pings and
//! TCP transfers between endpoint namespaces go through the programs (Geneve on the
//! substrate); they reach only their own tenant; replies learn the direct path; a
//! restarted transit daemon serves its tables again; a deleted endpoint is unreachable at
//! once. A capture on the substrate shows Geneve in each tenant's VNI, and TCP crossing in
//! segments of the jumbo MTU (XDP) or as GSO super-frames larger than any MTU (TC).
//!
//! Needs root, iproute2, ethtool, iperf3, tcpdump and busybox (`scripts/setup.sh`); CI runs it
//! as root.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use centaurus_vpc::Dataplane;
use centaurus_vpc::plane::{EndpointPlaced, Programming};
use centaurus_xdp::geneve::decapsulate;
use centaurus_xdp::loader::Hook;
use centaurus_xdp::testbed::{SUBSTRATE_MTU, Testbed, is_root};
use centaurus_xdp::transitd::{Dump, XdpDataplane, request};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Runtime::new().unwrap())
}

fn program(dp: &XdpDataplane, prog: Programming) {
    for (host, updates) in prog {
        runtime().block_on(dp.program(host, &updates)).unwrap();
    }
}

fn dump(socket: &Path) -> Dump {
    let (status, body) = runtime()
        .block_on(request(socket, "GET", "/v1/dump", b""))
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn ping(bed: &Testbed, from: usize, to: Ipv4Addr, count: &str) -> bool {
    let out = bed
        .exec(
            from,
            &["busybox", "ping", "-c", count, "-W", "1", &to.to_string()],
        )
        .unwrap();
    out.status.success()
}

/// Sends `data` over TCP from endpoint `from` to a listener on endpoint `to`, and returns
/// what the listener received once `expect` bytes arrived (or 15 s passed).
fn tcp(
    bed: &Testbed,
    from: usize,
    to: usize,
    to_ip: Ipv4Addr,
    data: &[u8],
    expect: usize,
    dir: &Path,
) -> Vec<u8> {
    let out = dir.join(format!("received-{to}"));
    let _ = std::fs::remove_file(&out);
    // busybox nc stops reading the connection when its stdin ends: keep it open.
    let mut listener = std::process::Command::new("ip")
        .args(["netns", "exec", &bed.endpoints[to].netns, "sh", "-c"])
        .arg(format!(
            "sleep 20 | busybox nc -l -p 5001 > {}",
            out.display()
        ))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let src = dir.join("payload");
    std::fs::write(&src, data).unwrap();
    let sent = bed
        .exec(
            from,
            &[
                "sh",
                "-c",
                &format!("busybox nc -w 3 {to_ip} 5001 < {}", src.display()),
            ],
        )
        .unwrap();
    assert!(
        sent.status.success(),
        "nc: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::fs::metadata(&out).map_or(0, |m| m.len() as usize) < expect
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let _ = listener.kill();
    let _ = listener.wait();
    std::fs::read(&out).unwrap_or_default()
}

/// Overlay frames only.
const GENEVE_FILTER: &str = "udp dst port 6081";

/// Decodes captured substrate frames, requiring each to be well-formed Geneve in `vni`
/// between two droplets, carrying return-to-sender with a droplet's address and MAC;
/// returns each one's inner IPv4 source, destination and the frame's length.
fn overlay_frames(frames: &[Vec<u8>], vni: u32, bed: &Testbed) -> Vec<(Ipv4Addr, Ipv4Addr, usize)> {
    let hosts: Vec<_> = bed.droplets.iter().map(|d| d.host).collect();
    frames
        .iter()
        .map(|f| {
            let (outer, geneve, inner) = decapsulate(f).expect("a well-formed overlay frame");
            assert_eq!(geneve.vni, vni, "{outer:?}");
            let sender = hosts
                .iter()
                .find(|h| h.ip == outer.src)
                .expect("from a droplet");
            assert!(hosts.iter().any(|h| h.ip == outer.dst), "{outer:?}");
            assert_eq!(outer.src_mac, sender.mac);
            // The endpoint's own host: the sender, or where a bouncer got it from.
            let rts = geneve.return_to_sender().expect("return-to-sender");
            assert!(hosts.iter().any(|h| (h.ip, h.mac) == rts), "{rts:?}");
            let ip = etherparse::SlicedPacket::from_ethernet(inner).expect("an inner frame");
            let Some(etherparse::NetSlice::Ipv4(ip)) = ip.net else {
                panic!("inner frame not IPv4")
            };
            let h = ip.header();
            (h.source_addr(), h.destination_addr(), f.len())
        })
        .collect()
}

#[test]
fn pods_on_three_droplets_talk_through_the_tc_hook() {
    three_droplets(Hook::Tc);
}

#[test]
fn pods_on_three_droplets_talk_through_the_xdp_hook() {
    three_droplets(Hook::Xdp);
}

fn three_droplets(hook: Hook) {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs this test as root"
        );
        eprintln!("SKIPPED: the testbed needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("c{hook}{}", std::process::id() % 10000);
    let mut bed = Testbed::build(&prefix, 3, dir.path(), SUBSTRATE_MTU, hook).unwrap();
    bed.start_transit_daemons(Path::new(env!("CARGO_BIN_EXE_centaurus")), &["transitd"])
        .unwrap();

    let (mut plane, dp) = bed.plane();
    // Two tenants, identical CIDRs; in each, a1 and a2 share subnet a, b1 is in subnet b.
    let mut eps: Vec<(String, EndpointPlaced, usize)> = Vec::new();
    for (tenant, vni) in [("acme", 1001), ("beta", 1002)] {
        let vpc = format!("{tenant}/v");
        program(
            &dp,
            plane
                .provision_vpc(&vpc, "10.0.0.0/16".parse().unwrap(), vni, 1, &[])
                .unwrap()
                .1,
        );
        for (s, cidr) in [("a", "10.0.1.0/24"), ("b", "10.0.2.0/24")] {
            let subnet = format!("{tenant}/{s}");
            program(
                &dp,
                plane
                    .provision_subnet(&subnet, &vpc, cidr.parse().unwrap(), 2, &[])
                    .unwrap()
                    .1,
            );
        }
        for (name, subnet, droplet) in [("a1", "a", 0), ("a2", "a", 1), ("b1", "b", 2)] {
            let id = format!("{tenant}/ns/{name}");
            let (p, prog) = plane
                .provision_endpoint(
                    &id,
                    &format!("{tenant}/{subnet}"),
                    &format!("d{droplet}"),
                    None,
                )
                .unwrap();
            program(&dp, prog);
            let n = bed
                .add_endpoint(droplet, &p.veth, p.ip, p.prefix_len, p.mac, p.gateway)
                .unwrap();
            eps.push((id, p, n));
        }
    }
    let (a1, a2, b1) = (&eps[0], &eps[1], &eps[2]);
    let (a1_beta, b1_beta) = (&eps[3], &eps[5]);
    assert_eq!(
        a1.1.ip, a1_beta.1.ip,
        "the tenants' addresses are identical"
    );
    assert_eq!(b1.1.ip, b1_beta.1.ip);

    // The daemons attach agents to the veths that appeared and resolve the other hosts.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = bed.droplets.iter().all(|d| {
            let dump = dump(&d.socket);
            dump.pending.is_empty() && dump.neighbors.len() == bed.droplets.len() - 1
        });
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "transit daemons not ready: {:?}",
            dump(&bed.droplets[0].socket)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let counters = |bed: &Testbed| -> Vec<_> {
        bed.droplets
            .iter()
            .map(|d| dump(&d.socket).counters)
            .collect()
    };
    // TESTBED_PAUSE=SECONDS keeps the testbed up for inspection before the traffic.
    if let Some(s) = std::env::var_os("TESTBED_PAUSE") {
        std::thread::sleep(Duration::from_secs(s.to_str().unwrap().parse().unwrap()));
    }
    // Ping within a subnet and across subnets, in each tenant, capturing the substrate.
    for (base, vni) in [(0, 1001), (3, 1002)] {
        let (x1, x2, y1) = (&eps[base], &eps[base + 1], &eps[base + 2]);
        let capture = bed
            .capture(&dir.path().join(format!("pings-{vni}.pcap")), GENEVE_FILTER)
            .unwrap();
        assert!(
            ping(&bed, x1.2, x2.1.ip, "3"),
            "{} -> {} within the subnet: {:?}",
            x1.0,
            x2.0,
            counters(&bed)
        );
        assert!(
            ping(&bed, x1.2, y1.1.ip, "3"),
            "{} -> {} across subnets",
            x1.0,
            y1.0
        );
        assert!(
            ping(&bed, y1.2, x2.1.ip, "3"),
            "{} -> {} across subnets",
            y1.0,
            x2.0
        );
        // On the wire it was Geneve in this tenant's VNI, between its endpoints, from
        // the droplets, each frame naming its endpoint's host in return-to-sender.
        let frames = capture.finish().unwrap();
        let seen = overlay_frames(&frames, vni, &bed);
        let ours = [x1.1.ip, x2.1.ip, y1.1.ip];
        let mut pairs = std::collections::BTreeMap::new();
        for (src, dst, _) in &seen {
            assert!(ours.contains(src) && ours.contains(dst), "{src} -> {dst}");
            *pairs.entry((*src, *dst)).or_insert(0) += 1;
        }
        // Three requests and three replies on each of the three paths.
        assert!(
            pairs.len() == 6 && pairs.values().all(|n| *n >= 3),
            "tenant {vni}: {pairs:?}"
        );
    }

    // A TCP transfer reaches the listener of the sender's own tenant only: both tenants'
    // b1 listen on the same address.
    let payload: Vec<u8> = (0..400_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let got = tcp(
        &bed,
        a1.2,
        b1.2,
        b1.1.ip,
        &payload,
        payload.len(),
        dir.path(),
    );
    assert_eq!(got.len(), payload.len(), "acme's transfer");
    assert!(got == payload, "acme's bytes arrived intact");
    // A bulk sender (iperf3, 128 KB writes) fills its socket's queue, so the stack builds
    // the largest segments it can.
    let capture = bed
        .capture(&dir.path().join("tcp.pcap"), GENEVE_FILTER)
        .unwrap();
    let mut server = bed
        .spawn(b1.2, &["iperf3", "-s", "-1", "-p", "5201"])
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let bulk = bed
        .exec(
            a1.2,
            &[
                "iperf3",
                "-c",
                &b1.1.ip.to_string(),
                "-n",
                "8M",
                "-l",
                "128K",
            ],
        )
        .unwrap();
    let _ = server.wait();
    assert!(
        bulk.status.success(),
        "iperf3: {}",
        String::from_utf8_lossy(&bulk.stderr)
    );
    // XDP: segments of the endpoints' jumbo MTU crossed whole, as multi-buffer frames
    // larger than a page. TC: the sender's GSO super-frames crossed unsegmented, larger
    // than the MTU (a real NIC would segment them; the veths need not).
    let frames = capture.finish().unwrap();
    let seen = overlay_frames(&frames, 1001, &bed);
    let largest = seen.iter().map(|(_, _, len)| *len).max().unwrap_or(0);
    let mtu = bed.mtu as usize;
    let expected = match hook {
        Hook::Xdp => largest > 4096 && largest <= mtu + 14,
        Hook::Tc => largest > mtu + 14,
    };
    assert!(
        expected,
        "largest overlay frame {largest} bytes on a substrate of MTU {mtu}, {hook} hook"
    );
    let secret = b"beta only".to_vec();
    let got = tcp(
        &bed,
        a1_beta.2,
        b1_beta.2,
        b1_beta.1.ip,
        &secret,
        secret.len(),
        dir.path(),
    );
    assert_eq!(got, secret);
    let acme_file = std::fs::read(dir.path().join(format!("received-{}", b1.2))).unwrap();
    assert_eq!(
        acme_file.len(),
        payload.len(),
        "beta's bytes never reached acme"
    );

    // The overlay carried it: every droplet counted frames sent and delivered.
    let dumps: Vec<Dump> = bed.droplets.iter().map(|d| dump(&d.socket)).collect();
    for d in &dumps {
        assert!(
            d.counters["sent"] > 0 && d.counters["delivered"] > 0,
            "{:?}",
            d.counters
        );
    }
    // Replies learned the direct path: a1's host knows a2's host, and pings from a1 to a2
    // now cross no third host.
    let a1_host = &dumps[0];
    assert_eq!(
        a1_host.learned.get(&format!("1001/{}", a2.1.ip)),
        Some(&bed.droplets[1].host.ip)
    );
    let third = dump(&bed.droplets[2].socket).counters;
    assert!(ping(&bed, a1.2, a2.1.ip, "5"));
    let after = dump(&bed.droplets[2].socket).counters;
    assert_eq!(
        (third["sent"], third["delivered"]),
        (after["sent"], after["delivered"]),
        "the third droplet stayed off the direct path"
    );

    // A restarted transit daemon serves the same tables again from its table log, with no
    // reprogramming; its maps and links were pinned, so a2 (on that droplet) answers all
    // along, and what it learned and counted survives.
    let before = dump(&bed.droplets[1].socket);
    let pings = bed
        .spawn(
            a1.2,
            &[
                "busybox",
                "ping",
                "-c",
                "60",
                "-i",
                "0.05",
                &a2.1.ip.to_string(),
            ],
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    bed.restart_transit_daemon(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let d = dump(&bed.droplets[1].socket);
        if d.pending.is_empty() && d.neighbors.len() == bed.droplets.len() - 1 {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "restarted daemon not ready: {d:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        (
            &after.endpoints,
            &after.bounced,
            &after.divided,
            &after.agents
        ),
        (
            &before.endpoints,
            &before.bounced,
            &before.divided,
            &before.agents
        )
    );
    assert!(!after.endpoints.is_empty());
    assert_eq!(after.learned, before.learned);
    assert!(after.counters["delivered"] > before.counters["delivered"]);
    let out = pings.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("60 packets transmitted, 60 packets received"),
        "pings across the restart: {report}"
    );

    // An endpoint's veth made again under its name (a pod's retried start re-wires it,
    // with a new interface index) is found again: b1 answers from its new namespace.
    bed.remove_endpoint(b1.2).unwrap();
    let p = &b1.1;
    bed.add_endpoint(2, &p.veth, p.ip, p.prefix_len, p.mac, p.gateway)
        .unwrap();
    assert!(
        ping(&bed, a1.2, b1.1.ip, "3"),
        "b1 made again: {:?}",
        dump(&bed.droplets[2].socket)
    );

    // Deleting a2 makes it unreachable at once, in acme; beta's a2 still answers.
    program(&dp, plane.delete_endpoint(&a2.0));
    assert!(
        !ping(&bed, a1.2, a2.1.ip, "2"),
        "a deleted endpoint answered"
    );
    assert!(ping(&bed, a1_beta.2, eps[4].1.ip, "2"));
    let drops = dump(&bed.droplets[0].socket).counters;
    println!("droplet 0 counters: {drops:?}");
}
