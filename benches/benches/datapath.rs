//! Pod-to-pod traffic between two droplets, in one run, over four datapaths built on the
//! same substrate (network namespaces on a bridge): our Geneve overlay with its programs
//! at the TC hook and at the XDP hook, the kernel's VXLAN overlay, and plain veth routing. For each it measures TCP throughput (iperf3, 10 s),
//! request/response latency (1-byte TCP ping-pong, 20,000 round trips), the highest 64-byte
//! UDP rate delivered with under 1% loss (two paced packet-socket senders in the sending
//! pod, one flow and one CPU each; a veth charges the whole forwarding path to the sender's
//! CPU, so the senders saturate the datapath by construction), and the CPU time per
//! forwarded packet at a rate all three carry (system + softirq over all CPUs, divided by
//! the packets delivered, then less the senders' own cost), then prints a table with
//! ratios to the kernel's VXLAN. The substrate has jumbo frames
//! (`DATAPATH_MTU`, 9000 unless set). Needs root, iperf3, ethtool and iproute2
//! (`scripts/setup.sh`); without root it says so and exits.
//!
//! The senders are packet sockets, not the XDP programs' test runs: on this kernel each
//! `BPF_PROG_TEST_RUN` with live frames costs a fixed 16-40 ms, whatever its frame count,
//! so a generator built on it cannot pace.
//!
//! Then Services, on our TC datapath and on plain veth routing: new TCP connections a
//! second (connect, one byte each way, close; one client) and the 1-byte round trip over
//! an established connection, to the backend pod directly and through a Service VIP with 3
//! and with 100 backends (the server pod listens on 100 ports). Ours translates the VIP in
//! the transit agent (Maglev table, connection tracking in BPF); veth routing translates it
//! as kube-proxy's iptables mode does: a chain of `statistic --mode random` DNAT rules in
//! the client's namespace, one per backend. `DATAPATH_ONLY=services` measures only these.
//!
//! Then NetworkPolicy, on our TC datapath: everything above for the two pods again with
//! 64 policy rules on each (egress on the sender, ingress on the receiver; the last of
//! them lets the other pod through, on every port), against the same pods with none.
//! `DATAPATH_ONLY=policies` measures only these.
//!
//! `cargo bench -p centaurus-benches --bench datapath` (or `scripts/datapath-bench.sh`)

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use centaurus_vpc::Dataplane;
use centaurus_vpc::maglev::Backend;
use centaurus_vpc::plane::{Plane, ScaledEndpoint};
use centaurus_vpc::policy::{Block, EndpointPolicy, PortRange, Rule};
use centaurus_vpc::tables::TCP;
use centaurus_xdp::loader::{Hook, Transit, ifindex};
use centaurus_xdp::model::HostInfo;
use centaurus_xdp::testbed::{SUBSTRATE_MTU, Testbed, is_root, run};
use centaurus_xdp::transitd::XdpDataplane;
use etherparse::PacketBuilder;

fn exec(ns: &str, args: &[&str]) -> String {
    let mut a = vec!["ip", "netns", "exec", ns];
    a.extend_from_slice(args);
    String::from_utf8(run(&a).unwrap().stdout).unwrap()
}

/// The pods of one datapath: namespaces, addresses, the sender's next-hop MAC.
struct Pods {
    a: String,
    b: String,
    b_ip: Ipv4Addr,
    a_ip: Ipv4Addr,
    next_mac: [u8; 6],
}

fn mac_of(ns: &str, dev: &str) -> [u8; 6] {
    let text = exec(ns, &["cat", &format!("/sys/class/net/{dev}/address")]);
    centaurus_vpc::ipam::parse_mac(text.trim()).unwrap()
}

/// Two droplets with a pod each, routed by the kernel: over VXLAN (`vxlan`) or directly.
fn kernel_pods(bed: &mut Testbed, vxlan: bool) -> Pods {
    let p = bed.droplets[0].netns.clone();
    let prefix = p.trim_end_matches("-d0").to_owned();
    for i in 0..2 {
        let d = bed.droplets[i].netns.clone();
        let pod = format!("{prefix}-p{i}");
        let (me, peer) = (i + 1, 2 - i);
        run(&["ip", "netns", "add", &pod]).unwrap();
        let veth = format!("vp{i}");
        run(&[
            "ip", "link", "add", &veth, "netns", &d, "type", "veth", "peer", "name", "eth0",
            "netns", &pod,
        ])
        .unwrap();
        // VXLAN's outer headers take 50 bytes of the substrate's MTU.
        let mtu = (bed.mtu - if vxlan { 50 } else { 0 }).to_string();
        let mtu = mtu.as_str();
        exec(&d, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        exec(
            &d,
            &[
                "ip",
                "addr",
                "add",
                &format!("10.10.{me}.1/24"),
                "dev",
                &veth,
            ],
        );
        exec(&d, &["ip", "link", "set", &veth, "mtu", mtu, "up"]);
        exec(&pod, &["ip", "link", "set", "lo", "up"]);
        exec(&pod, &["ip", "link", "set", "eth0", "mtu", mtu]);
        exec(
            &pod,
            &[
                "ip",
                "addr",
                "add",
                &format!("10.10.{me}.2/24"),
                "dev",
                "eth0",
            ],
        );
        exec(&pod, &["ip", "link", "set", "eth0", "up"]);
        exec(
            &pod,
            &[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &format!("10.10.{me}.1"),
            ],
        );
        let peer_sub = format!("192.168.77.{peer}");
        if vxlan {
            let local = format!("192.168.77.{me}");
            exec(
                &d,
                &[
                    "ip",
                    "link",
                    "add",
                    "vx0",
                    "type",
                    "vxlan",
                    "id",
                    "42",
                    "dstport",
                    "4789",
                    "local",
                    &local,
                    "dev",
                    "eth0",
                    "nolearning",
                ],
            );
            exec(
                &d,
                &[
                    "bridge",
                    "fdb",
                    "append",
                    "00:00:00:00:00:00",
                    "dev",
                    "vx0",
                    "dst",
                    &peer_sub,
                ],
            );
            exec(
                &d,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("172.16.0.{me}/24"),
                    "dev",
                    "vx0",
                ],
            );
            exec(&d, &["ip", "link", "set", "vx0", "up"]);
        }
        // The peer pod's subnet: through the VXLAN device, or straight over the substrate.
        let (via, dev) = match vxlan {
            true => (format!("172.16.0.{peer}"), "vx0"),
            false => (peer_sub, "eth0"),
        };
        let subnet = format!("10.10.{peer}.0/24");
        exec(
            &d,
            &["ip", "route", "add", &subnet, "via", &via, "dev", dev],
        );
    }
    let next_mac = mac_of(&bed.droplets[0].netns, "vp0");
    Pods {
        a: format!("{prefix}-p0"),
        b: format!("{prefix}-p1"),
        a_ip: "10.10.1.2".parse().unwrap(),
        b_ip: "10.10.2.2".parse().unwrap(),
        next_mac,
    }
}

/// Two droplets running this binary as their transit daemon, a VPC with one subnet, and
/// an endpoint on each droplet.
fn overlay_pods(bed: &mut Testbed, rt: &tokio::runtime::Runtime) -> (Pods, Plane, XdpDataplane) {
    let exe = std::env::current_exe().unwrap();
    bed.start_transit_daemons(&exe, &["--transitd"]).unwrap();
    let (mut plane, dp) = bed.plane();
    let apply = |prog: centaurus_vpc::plane::Programming| {
        for (h, u) in prog {
            rt.block_on(dp.program(h, &u)).unwrap();
        }
    };
    apply(
        plane
            .provision_vpc("t/v", "10.0.0.0/16".parse().unwrap(), 1001, 1, &[])
            .unwrap()
            .1,
    );
    apply(
        plane
            .provision_subnet("t/s", "t/v", "10.0.1.0/24".parse().unwrap(), 1, &[])
            .unwrap()
            .1,
    );
    let mut ips = Vec::new();
    for i in 0..2 {
        let (p, prog) = plane
            .provision_endpoint(&format!("t/ns/p{i}"), "t/s", &format!("d{i}"), None)
            .unwrap();
        apply(prog);
        bed.add_endpoint(i, &p.veth, p.ip, p.prefix_len, p.mac, p.gateway)
            .unwrap();
        ips.push(p.ip);
    }
    // Wait for the agents to attach and the hosts to resolve each other.
    std::thread::sleep(Duration::from_secs(2));
    let pods = Pods {
        a: bed.endpoints[0].netns.clone(),
        b: bed.endpoints[1].netns.clone(),
        a_ip: ips[0],
        b_ip: ips[1],
        next_mac: centaurus_xdp::model::GATEWAY_MAC,
    };
    (pods, plane, dp)
}

/// Runs iperf3 from pod a to pod b with `args` and returns its JSON report.
fn iperf(p: &Pods, args: &[&str]) -> serde_json::Value {
    let mut server = Command::new("ip")
        .args(["netns", "exec", &p.b, "iperf3", "-s", "-1"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let b = p.b_ip.to_string();
    let out = exec(&p.a, &[&["iperf3", "-J", "-c", &b][..], args].concat());
    let _ = server.wait();
    serde_json::from_str(&out).unwrap()
}

fn iperf_gbits(p: &Pods) -> f64 {
    let v = iperf(p, &["-t", "10"]);
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap()
        / 1e9
}

/// 64-byte frames (18-byte UDP payload) from iperf3, unthrottled: (delivered pps, loss).
fn iperf_udp64(p: &Pods) -> (f64, f64) {
    let v = iperf(p, &["-u", "-b", "0", "-l", "18", "-t", "5"]);
    let sum = &v["end"]["sum"];
    let (packets, lost) = (
        sum["packets"].as_f64().unwrap(),
        sum["lost_packets"].as_f64().unwrap(),
    );
    let secs = sum["seconds"].as_f64().unwrap();
    ((packets - lost) / secs, lost / packets.max(1.0))
}

/// Runs this binary's `--rr-server` in pod b while `f` runs.
fn with_server<T>(p: &Pods, f: impl FnOnce() -> T) -> T {
    let exe = std::env::current_exe().unwrap();
    let mut server = Command::new("ip")
        .args(["netns", "exec", &p.b])
        .arg(&exe)
        .args(["--rr-server"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = f();
    let _ = server.kill();
    let _ = server.wait();
    out
}

/// Runs this binary in pod a with `args` and returns the numbers it prints.
fn client(p: &Pods, args: &[&str]) -> Vec<f64> {
    let exe = std::env::current_exe().unwrap();
    let out = exec(&p.a, &[&[exe.to_str().unwrap()][..], args].concat());
    out.split_whitespace().map(|x| x.parse().unwrap()).collect()
}

/// The 1-byte TCP round trip to `to`:`port` (p50, p99 in us).
fn rr_to(p: &Pods, to: Ipv4Addr, port: u16) -> (f64, f64) {
    let f = client(p, &["--rr-client", &to.to_string(), &port.to_string()]);
    (f[0], f[1])
}

fn rr_us(p: &Pods) -> (f64, f64) {
    with_server(p, || rr_to(p, p.b_ip, RR_PORT))
}

/// New connections a second to `to`:`port` (the median of three 2-second runs), and how
/// many failed (refused, or no answer within a second) over the three.
fn cps_to(p: &Pods, to: Ipv4Addr, port: u16) -> (f64, f64) {
    let runs: Vec<Vec<f64>> = (0..3)
        .map(|_| client(p, &["--cps-client", &to.to_string(), &port.to_string()]))
        .collect();
    let failed = runs.iter().map(|r| r[1]).sum();
    (median(runs.into_iter().map(|r| r[0]).collect()), failed)
}

/// The port the round-trip server listens on first; it listens on [`SERVER_PORTS`].
const RR_PORT: u16 = 5201;
const SERVER_PORTS: u16 = 100;
/// The Services: 3 backends (ports 5201-5203 of pod b) and 100 (ports 5201-5300).
const VIP3: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
const VIP100: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 21);

/// A path to the server: its name, connections a second and failures, round trip p50 and
/// p99.
type ServiceRow = (String, (f64, f64), (f64, f64));

/// Connections a second and round trips to pod b directly and through both Services.
fn measure_services(name: &'static str, p: &Pods) -> Vec<ServiceRow> {
    with_server(p, || {
        [
            ("direct", p.b_ip),
            ("VIP, 3 backends", VIP3),
            ("VIP, 100 backends", VIP100),
        ]
        .into_iter()
        .map(|(what, to)| {
            let cps = cps_to(p, to, RR_PORT);
            let rr = rr_to(p, to, RR_PORT);
            (format!("{name}: {what}"), cps, rr)
        })
        .collect()
    })
}

/// Programs both Services as scaled endpoints of the overlay's VPC.
fn overlay_services(
    plane: &mut Plane,
    dp: &XdpDataplane,
    rt: &tokio::runtime::Runtime,
    b: Ipv4Addr,
) {
    let ports = [(VIP3, 3), (VIP100, 100)]
        .into_iter()
        .map(|(vip, n)| ScaledEndpoint {
            vip,
            port: RR_PORT,
            protocol: TCP,
            backends: (0..n).map(|i| Backend::new(b, RR_PORT + i)).collect(),
            affinity: false,
        })
        .collect();
    for (h, u) in plane.provision_service("t/ns/rr", "t/v", ports).unwrap() {
        rt.block_on(dp.program(h, &u)).unwrap();
    }
}

/// 64 rules on each pod, as 64 policies of one rule each would give: 63 that let in (out)
/// other addresses of the VPC on one port each, and last one that lets the other pod
/// through on any port. The packets the benchmark sends look at every class.
fn overlay_policies(plane: &mut Plane, dp: &XdpDataplane, rt: &tokio::runtime::Runtime, p: &Pods) {
    let rules = |other: Ipv4Addr| -> Vec<Rule> {
        let mut rules: Vec<Rule> = (0..63u8)
            .map(|i| Rule {
                peers: vec![Block::host(Ipv4Addr::new(10, 0, 2, i + 1))],
                ports: vec![PortRange {
                    protocol: TCP,
                    first: 6000 + u16::from(i),
                    last: 6000 + u16::from(i),
                }],
            })
            .collect();
        rules.push(Rule {
            peers: vec![Block::host(other)],
            ports: Vec::new(),
        });
        rules
    };
    let want = [
        (
            p.a_ip,
            EndpointPolicy {
                ingress: None,
                egress: Some(rules(p.b_ip)),
            },
        ),
        (
            p.b_ip,
            EndpointPolicy {
                ingress: Some(rules(p.a_ip)),
                egress: None,
            },
        ),
    ]
    .into();
    for (h, u) in plane.provision_policies("t/v", want).unwrap() {
        rt.block_on(dp.program(h, &u)).unwrap();
    }
}

/// Both Services as kube-proxy's iptables mode writes them, in pod a's namespace: each
/// backend's rule takes its share of the new connections that reach it at random.
fn iptables_services(p: &Pods) {
    for (chain, vip, n) in [("SVC3", VIP3, 3u16), ("SVC100", VIP100, 100)] {
        exec(&p.a, &["iptables", "-t", "nat", "-N", chain]);
        for i in 0..n {
            let to = format!("{}:{}", p.b_ip, RR_PORT + i);
            let probability = format!("{:.5}", 1.0 / f64::from(n - i));
            let mut rule = vec!["iptables", "-t", "nat", "-A", chain, "-p", "tcp"];
            if i + 1 < n {
                rule.extend(["-m", "statistic", "--mode", "random", "--probability"]);
                rule.push(&probability);
            }
            rule.extend(["-j", "DNAT", "--to-destination", &to]);
            exec(&p.a, &rule);
        }
        let (vip, port) = (vip.to_string(), RR_PORT.to_string());
        exec(
            &p.a,
            &[
                "iptables", "-t", "nat", "-A", "OUTPUT", "-d", &vip, "-p", "tcp", "--dport", &port,
                "-j", chain,
            ],
        );
    }
}

/// system + softirq jiffies over all CPUs.
fn cpu_jiffies() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    f[2] + f[6]
}

fn rx_packets(ns: &str) -> u64 {
    exec(ns, &["cat", "/sys/class/net/eth0/statistics/rx_packets"])
        .trim()
        .parse()
        .unwrap()
}

/// Senders of the 64-byte UDP load: one per CPU, each its own flow.
const SENDERS: u16 = 2;

/// Sends 64-byte UDP frames from pod a to pod b at `rate` a second in all, from
/// [`SENDERS`] packet-socket senders (each its own flow) for about a second; returns the
/// frames sent, the seconds it took and the system + softirq CPU ns spent meanwhile.
fn send(p: &Pods, rate: f64) -> (f64, f64, f64) {
    let exe = std::env::current_exe().unwrap();
    let src_mac = mac_of(&p.a, "eth0");
    let cpu0 = cpu_jiffies();
    let senders: Vec<_> = (0..SENDERS)
        .map(|i| {
            let b = PacketBuilder::ethernet2(src_mac, p.next_mac)
                .ipv4(p.a_ip.octets(), p.b_ip.octets(), 64)
                .udp(4000 + i, 9);
            let mut frame = Vec::new();
            b.write(&mut frame, &[0u8; 18]).unwrap();
            let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
            let each = rate / f64::from(SENDERS);
            Command::new("ip")
                .args(["netns", "exec", &p.a])
                .arg(&exe)
                .args([
                    "--blast",
                    &hex,
                    &(each as u32).to_string(),
                    &each.to_string(),
                ])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let (mut sent, mut secs) = (0.0f64, 0.0f64);
    for s in senders {
        let out = s.wait_with_output().unwrap();
        let out = String::from_utf8(out.stdout).unwrap();
        let mut f = out.split_whitespace().map(|x| x.parse::<f64>().unwrap());
        sent += f.next().unwrap();
        secs = secs.max(f.next().unwrap());
    }
    std::thread::sleep(Duration::from_millis(200));
    let hz = 100.0; // USER_HZ
    (sent, secs, (cpu_jiffies() - cpu0) as f64 / hz * 1e9)
}

/// [`send`] at `rate`; returns (delivered pps, loss, CPU ns per delivered packet).
fn blast(p: &Pods, rate: f64) -> (f64, f64, f64) {
    let rx0 = rx_packets(&p.b);
    let (sent, secs, cpu_ns) = send(p, rate);
    let delivered = (rx_packets(&p.b) - rx0) as f64;
    (
        delivered / secs,
        1.0 - delivered / sent.max(1.0),
        cpu_ns / delivered.max(1.0),
    )
}

/// The CPU ns per packet of the senders themselves: the same senders at [`CPU_RATE`] into
/// a veth, in a namespace of its own, whose peer drops each frame on arrival (it is
/// addressed to another host); the median of three. Subtracted from each datapath's CPU
/// per packet.
fn sender_floor_ns() -> f64 {
    let ns = "cxb-null";
    let _ = run(&["ip", "netns", "del", ns]);
    run(&["ip", "netns", "add", ns]).unwrap();
    exec(
        ns,
        &[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "sink",
        ],
    );
    exec(ns, &["ip", "link", "set", "sink", "up"]);
    exec(ns, &["ip", "link", "set", "eth0", "up"]);
    let sink = Pods {
        a: ns.into(),
        b: ns.into(),
        a_ip: Ipv4Addr::new(10, 99, 0, 1),
        b_ip: Ipv4Addr::new(10, 99, 0, 2),
        next_mac: [0x02, 0, 0, 0, 0, 0x99],
    };
    let floor = median(
        (0..3)
            .map(|_| {
                let (sent, _, cpu_ns) = send(&sink, CPU_RATE);
                cpu_ns / sent.max(1.0)
            })
            .collect(),
    );
    let _ = run(&["ip", "netns", "del", ns]);
    floor
}

struct Row {
    name: &'static str,
    gbits: f64,
    /// The highest rate delivered with under 1% loss (the median of three searches).
    pps: f64,
    /// iperf3's unthrottled 64-byte UDP: delivered pps and loss.
    iperf_udp: (f64, f64),
    /// CPU ns per delivered packet at [`CPU_RATE`] (the median of three).
    cpu_ns: f64,
    rr: (f64, f64),
}

/// The offered rate at which CPU per packet is compared: one every datapath carries
/// without loss, so the figure is the work a packet costs, not a saturated machine's
/// time divided by its rate.
const CPU_RATE: f64 = 50_000.0;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Binary search for the highest offered rate that loses under 1%, one second a trial;
/// returns the rate delivered there.
fn highest_rate(p: &Pods) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 1_000_000.0f64);
    let mut pps = 0.0;
    for _ in 0..8 {
        let rate = (lo + hi) / 2.0;
        let (got, lost, _) = blast(p, rate);
        if lost < 0.01 {
            (lo, pps) = (rate, got);
        } else {
            hi = rate;
        }
    }
    pps
}

fn measure(name: &'static str, p: &Pods) -> Row {
    let gbits = iperf_gbits(p);
    let rr = rr_us(p);
    let iperf_udp = iperf_udp64(p);
    let pps = median((0..3).map(|_| highest_rate(p)).collect());
    let cpu_ns = median((0..3).map(|_| blast(p, CPU_RATE).2).collect());
    Row {
        name,
        gbits,
        pps,
        iperf_udp,
        cpu_ns,
        rr,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--transitd") => return transitd(&args[2..]),
        Some("--rr-server") => return rr_server(),
        Some("--rr-client") => {
            return rr_client(args[2].parse().unwrap(), args[3].parse().unwrap());
        }
        Some("--cps-client") => {
            return cps_client(args[2].parse().unwrap(), args[3].parse().unwrap());
        }
        Some("--blast") => {
            return blast_here(&args[2], args[3].parse().unwrap(), args[4].parse().unwrap());
        }
        _ => {}
    }
    if !is_root() || args.iter().any(|a| a == "--list") {
        eprintln!("datapath: needs root (network namespaces and BPF); skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // DATAPATH_ONLY=tc|xdp|vxlan|veth measures one; DATAPATH_PAUSE=SECONDS keeps each
    // datapath up that long before measuring, for a look inside; DATAPATH_MTU sets the
    // substrate's MTU (jumbo frames by default).
    let only = std::env::var("DATAPATH_ONLY").unwrap_or_default();
    let mtu = std::env::var("DATAPATH_MTU").map_or(SUBSTRATE_MTU, |m| m.parse().unwrap());
    println!("substrate MTU {mtu}");
    let pause = || {
        if let Ok(s) = std::env::var("DATAPATH_PAUSE") {
            std::thread::sleep(Duration::from_secs(s.parse().unwrap()));
        }
    };
    let services_only = only == "services";
    let policies_only = only == "policies";
    let mut rows = Vec::new();
    let mut services = Vec::new();
    for (name, hook, tag) in [
        ("ours, TC hook", Hook::Tc, "cxb-t"),
        ("ours, XDP hook", Hook::Xdp, "cxb-x"),
    ] {
        let services_here = hook == Hook::Tc && (only.is_empty() || services_only);
        let policies_here = hook == Hook::Tc && (only.is_empty() || policies_only);
        if !(only.is_empty() || only == hook.to_string() || services_here || policies_here) {
            continue;
        }
        let mut bed = Testbed::build(tag, 2, dir.path(), mtu, hook).unwrap();
        let (pods, mut plane, dp) = overlay_pods(&mut bed, &rt);
        pause();
        if !services_only {
            rows.push(measure(name, &pods));
        }
        if policies_here {
            overlay_policies(&mut plane, &dp, &rt, &pods);
            rows.push(measure("ours, TC, 64 rules", &pods));
            for (h, u) in plane.provision_policies("t/v", Default::default()).unwrap() {
                rt.block_on(dp.program(h, &u)).unwrap();
            }
        }
        if policies_only {
            continue;
        }
        if services_here {
            overlay_services(&mut plane, &dp, &rt, pods.b_ip);
            services.extend(measure_services(name, &pods));
        }
    }
    for (name, vxlan, tag) in [
        ("kernel VXLAN", true, "cxb-v"),
        ("plain veth routing", false, "cxb-r"),
    ] {
        let services_here = !vxlan && (only.is_empty() || services_only);
        if policies_only
            || !(only.is_empty() || only == if vxlan { "vxlan" } else { "veth" } || services_here)
        {
            continue;
        }
        // The TC hook's testbed puts no XDP on the substrate, which would turn segmentation
        // offloads off on its peer.
        let mut bed = Testbed::build(tag, 2, dir.path(), mtu, Hook::Tc).unwrap();
        let pods = kernel_pods(&mut bed, vxlan);
        pause();
        if !services_only {
            rows.push(measure(name, &pods));
        }
        if services_here {
            iptables_services(&pods);
            services.extend(measure_services("veth + iptables DNAT", &pods));
        }
        for pod in [&pods.a, &pods.b] {
            let _ = run(&["ip", "netns", "del", pod]);
        }
    }
    print_services(&services);
    if services_only {
        return;
    }
    let named = |name: &str| rows.iter().find(|r| r.name == name);
    if let (Some(none), Some(with)) = (named("ours, TC hook"), named("ours, TC, 64 rules")) {
        println!(
            "NetworkPolicy, 64 rules on each pod vs none (TC): TCP {:.2}x, UDP64 {:.2}x, \
             RR p50 {:.2}x, CPU ns {:.2}x",
            with.gbits / none.gbits,
            with.pps / none.pps,
            with.rr.0 / none.rr.0,
            with.cpu_ns / none.cpu_ns
        );
    }
    let floor = sender_floor_ns();
    let vx = rows
        .iter()
        .find(|r| r.name == "kernel VXLAN")
        .map_or((f64::NAN, f64::NAN, f64::NAN, f64::NAN), |vx| {
            (vx.gbits, vx.pps, vx.cpu_ns - floor, vx.rr.0)
        });
    println!(
        "{:<20} {:>8} {:>6} | {:>10} {:>6} {:>20} | {:>8} {:>8} {:>6} | {:>7} {:>7} {:>6}",
        "datapath",
        "TCP Gb/s",
        "xVXLAN",
        "UDP64 kpps",
        "xVXLAN",
        "iperf3 UDP64 (loss)",
        "CPU ns",
        "net",
        "xVXLAN",
        "RR p50",
        "RR p99",
        "xVXLAN"
    );
    for r in &rows {
        let net = r.cpu_ns - floor;
        println!(
            "{:<20} {:>8.2} {:>6.2} | {:>10.0} {:>6.2} {:>9.0} kpps ({:>3.0}%) | {:>8.0} {:>8.0} {:>6.2} | {:>7.1} {:>7.1} {:>6.2}",
            r.name,
            r.gbits,
            r.gbits / vx.0,
            r.pps / 1e3,
            r.pps / vx.1,
            r.iperf_udp.0 / 1e3,
            r.iperf_udp.1 * 100.0,
            r.cpu_ns,
            net,
            net / vx.2,
            r.rr.0,
            r.rr.1,
            r.rr.0 / vx.3
        );
    }
    println!(
        "UDP64: the highest offered rate delivered with < 1% loss (kpps, median of three \
         searches), two packet-socket senders. CPU: system + softirq ns per delivered packet \
         at {} kpps (median of three), the senders included; net: less the senders' own \
         {floor:.0} ns per packet (the same senders into a veth that drops on arrival), the \
         ratio on net. iperf3 UDP64: one socket sender, unthrottled, delivered kpps and loss. \
         RR: 1-byte TCP round trip, us.",
        CPU_RATE / 1e3
    );
}

/// The Services table: each row with its ratio to the same datapath's direct row.
fn print_services(rows: &[ServiceRow]) {
    if rows.is_empty() {
        return;
    }
    println!(
        "{:<40} {:>8} {:>6} {:>7} | {:>7} {:>7} {:>7}",
        "service path", "conn/s", "failed", "xdirect", "RR p50", "RR p99", "xdirect"
    );
    let mut direct = (f64::NAN, f64::NAN);
    for (name, (cps, failed), rr) in rows {
        if name.ends_with(": direct") {
            direct = (*cps, rr.0);
        }
        println!(
            "{name:<40} {cps:>8.0} {failed:>6} {:>7.2} | {:>7.1} {:>7.1} {:>7.2}",
            cps / direct.0,
            rr.0,
            rr.1,
            rr.0 / direct.1
        );
    }
    println!(
        "conn/s: connect, one byte each way, close, one client, the median of three 2-second \
         runs (failed: refused or unanswered for 1 s, over the three); RR: 1-byte round trips over one connection, us. xdirect: to the same pod \
         without a Service, on the same datapath."
    );
}

/// `--transitd --substrate eth0 --ip IP --hook HOOK --socket PATH`, as `centaurus transitd`
/// does.
fn transitd(args: &[String]) {
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .map(|i| args[i + 1].clone())
            .unwrap()
    };
    let (substrate, ip, socket) = (arg("--substrate"), arg("--ip"), arg("--socket"));
    let hook: Hook = arg("--hook").parse().unwrap();
    let mac = mac_of_here(&substrate);
    let me = HostInfo {
        ip: ip.parse().unwrap(),
        mac,
    };
    let mut t = Transit::load(me, ifindex(&substrate).unwrap(), hook).unwrap();
    t.attach_substrate(&substrate).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(centaurus_xdp::transitd::serve(t, None, Path::new(&socket)))
        .unwrap();
}

fn mac_of_here(dev: &str) -> [u8; 6] {
    let text = std::fs::read_to_string(format!("/sys/class/net/{dev}/address")).unwrap();
    centaurus_vpc::ipam::parse_mac(text.trim()).unwrap()
}

/// Echoes every byte back, on [`SERVER_PORTS`] ports from [`RR_PORT`], a thread per
/// connection.
fn rr_server() {
    let listeners: Vec<TcpListener> = (0..SERVER_PORTS)
        .map(|i| TcpListener::bind(("0.0.0.0", RR_PORT + i)).unwrap())
        .collect();
    for l in listeners {
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    s.set_nodelay(true).unwrap();
                    let mut b = [0u8; 1];
                    while s.read_exact(&mut b).is_ok() {
                        if s.write_all(&b).is_err() {
                            break;
                        }
                    }
                });
            }
        });
    }
    loop {
        std::thread::park();
    }
}

/// Opens, uses (one byte each way) and closes connections to `to`:`port` for 2 s; prints
/// how many a second.
fn cps_client(to: Ipv4Addr, port: u16) {
    // Client ports come back at once after a close.
    let _ = std::fs::write("/proc/sys/net/ipv4/tcp_tw_reuse", "1");
    let _ = std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "1024 65000");
    let start = Instant::now();
    let (mut n, mut failed) = (0u64, 0u64);
    let once = || -> std::io::Result<()> {
        let second = Duration::from_secs(1);
        let mut s = TcpStream::connect_timeout(&(to, port).into(), second)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(second))?;
        let mut b = [7u8; 1];
        s.write_all(&b)?;
        s.read_exact(&mut b)
    };
    while start.elapsed() < Duration::from_secs(2) {
        match once() {
            Ok(()) => n += 1,
            Err(_) => failed += 1,
        }
    }
    println!("{} {failed}", n as f64 / start.elapsed().as_secs_f64());
}

fn rr_client(to: Ipv4Addr, port: u16) {
    let mut s = TcpStream::connect((to, port)).unwrap();
    s.set_nodelay(true).unwrap();
    let mut b = [7u8; 1];
    let mut lat: Vec<f64> = Vec::new();
    for i in 0..21_000 {
        let t = Instant::now();
        s.write_all(&b).unwrap();
        s.read_exact(&mut b).unwrap();
        if i >= 1000 {
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    lat.sort_by(f64::total_cmp);
    println!("{} {}", lat[lat.len() / 2], lat[lat.len() * 99 / 100]);
}

/// Sends `count` copies of the frame out of `eth0` through a packet socket, at `rate`
/// frames a second (batches of 32), for at most 1.5 s; prints how many it sent and in how
/// long. A frame the socket refuses (its device's queue full) is not counted as sent.
fn blast_here(hex: &str, count: u32, rate: f64) {
    assert!(rate > 0.0);
    let frame: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let eth0 = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == "eth0")
        .expect("eth0");
    let config = pnet_datalink::Config {
        promiscuous: false,
        ..Default::default()
    };
    let Ok(pnet_datalink::Channel::Ethernet(mut tx, _rx)) = pnet_datalink::channel(&eth0, config)
    else {
        panic!("no packet socket on eth0");
    };
    let start = Instant::now();
    let mut sent = 0u32;
    while sent < count && start.elapsed() < Duration::from_millis(1500) {
        let due = start + Duration::from_secs_f64(f64::from(sent) / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        for _ in 0..32 {
            if let Some(Ok(())) = tx.send_to(&frame, None) {
                sent += 1;
            }
        }
    }
    println!("{sent} {}", start.elapsed().as_secs_f64());
}
