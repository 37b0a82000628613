//! Pod-to-pod traffic between two droplets, in one run, over three datapaths built on the
//! same substrate (network namespaces on a bridge): our XDP + Geneve overlay, the kernel's
//! VXLAN overlay, and plain veth routing. For each it measures TCP throughput (iperf3, 10 s),
//! request/response latency (1-byte TCP ping-pong, 20,000 round trips), the 64-byte UDP
//! forwarding rate under a sender that outruns the datapath (an XDP traffic generator on
//! the sending pod's interface, `BPF_PROG_TEST_RUN` live frames), and the CPU time per
//! forwarded packet (system + softirq over all CPUs, divided by the packets delivered),
//! then prints a table with ratios to the kernel's VXLAN. Needs root, iperf3, ethtool and
//! iproute2 (`scripts/setup.sh`); without root it says so and exits.
//!
//! `cargo bench -p centaurus-benches --bench datapath` (or `scripts/datapath-bench.sh`)

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use centaurus_vpc::Dataplane;
use centaurus_xdp::loader::{Program, Transit, ifindex};
use centaurus_xdp::model::HostInfo;
use centaurus_xdp::testbed::{SUBSTRATE_MTU, Testbed, is_root, run};
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
fn xdp_pods(bed: &mut Testbed, rt: &tokio::runtime::Runtime) -> Pods {
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
    Pods {
        a: bed.endpoints[0].netns.clone(),
        b: bed.endpoints[1].netns.clone(),
        a_ip: ips[0],
        b_ip: ips[1],
        next_mac: centaurus_xdp::model::GATEWAY_MAC,
    }
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

fn rr_us(p: &Pods) -> (f64, f64) {
    let exe = std::env::current_exe().unwrap();
    let mut server = Command::new("ip")
        .args(["netns", "exec", &p.b])
        .arg(&exe)
        .args(["--rr-server"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = exec(
        &p.a,
        &[exe.to_str().unwrap(), "--rr-client", &p.b_ip.to_string()],
    );
    let _ = server.kill();
    let _ = server.wait();
    let mut f = out.split_whitespace().map(|x| x.parse::<f64>().unwrap());
    (f.next().unwrap(), f.next().unwrap())
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

/// Sends up to `count` 64-byte UDP frames from pod a to pod b at `rate` a second; returns
/// (delivered pps, loss, CPU ns per delivered packet).
fn blast(
    p: &Pods,
    host_veth: (&str, &str),
    object: &Path,
    count: u32,
    rate: f64,
) -> (f64, f64, f64) {
    let frame = {
        let b = PacketBuilder::ethernet2(mac_of(&p.a, "eth0"), p.next_mac)
            .ipv4(p.a_ip.octets(), p.b_ip.octets(), 64)
            .udp(4000, 9);
        let mut out = Vec::new();
        b.write(&mut out, &[0u8; 18]).unwrap();
        out
    };
    // The generator's frames cross the sender's veth only when both ends run an XDP
    // program (the XDP overlay has its agent and xdp_pass there already); for the kernel's
    // datapaths, xdp_pass goes on both ends for the blast only.
    let (droplet, veth) = host_veth;
    let attach = !veth.is_empty();
    let obj = object.to_string_lossy();
    let pass = [
        "ip", "link", "set", "DEV", "xdpdrv", "obj", &obj, "program", "xdp_pass",
    ];
    if attach {
        exec(droplet, &[&pass[..3], &[veth], &pass[4..]].concat());
        exec(&p.a, &[&pass[..3], &["eth0"], &pass[4..]].concat());
    }
    let exe = std::env::current_exe().unwrap();
    let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
    let (rx0, cpu0) = (rx_packets(&p.b), cpu_jiffies());
    let out = exec(
        &p.a,
        &[
            exe.to_str().unwrap(),
            "--blast",
            &hex,
            &count.to_string(),
            &rate.to_string(),
        ],
    );
    let mut out = out.split_whitespace();
    let sent: f64 = out.next().unwrap().parse().unwrap();
    let secs: f64 = out.next().unwrap().parse().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (rx1, cpu1) = (rx_packets(&p.b), cpu_jiffies());
    if attach {
        exec(droplet, &["ip", "link", "set", veth, "xdp", "off"]);
        exec(&p.a, &["ip", "link", "set", "eth0", "xdp", "off"]);
    }
    let delivered = (rx1 - rx0) as f64;
    let hz = 100.0; // USER_HZ
    let cpu_ns = (cpu1 - cpu0) as f64 / hz * 1e9;
    (
        delivered / secs,
        1.0 - delivered / sent,
        cpu_ns / delivered.max(1.0),
    )
}

struct Row {
    name: &'static str,
    gbits: f64,
    /// The highest rate delivered with under 1% loss, and the CPU ns per packet there.
    pps: f64,
    /// iperf3's unthrottled 64-byte UDP: delivered pps and loss.
    iperf_udp: (f64, f64),
    cpu_ns: f64,
    rr: (f64, f64),
}

fn measure(name: &'static str, p: &Pods, host_veth: (&str, &str), object: &Path) -> Row {
    let gbits = iperf_gbits(p);
    let rr = rr_us(p);
    let iperf_udp = iperf_udp64(p);
    // Binary search for the highest offered rate that loses under 1%, one second a trial.
    let (mut lo, mut hi) = (0.0f64, 3_000_000.0f64);
    let (mut pps, mut cpu_ns) = (0.0, f64::NAN);
    for _ in 0..9 {
        let rate = (lo + hi) / 2.0;
        let (got, lost, cpu) = blast(p, host_veth, object, rate as u32, rate);
        if lost < 0.01 {
            (lo, pps, cpu_ns) = (rate, got, cpu);
        } else {
            hi = rate;
        }
    }
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
        Some("--rr-client") => return rr_client(args[2].parse().unwrap()),
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
    // DATAPATH_ONLY=xdp|vxlan|veth measures one; DATAPATH_PAUSE=SECONDS keeps each
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
    let mut rows = Vec::new();
    if only.is_empty() || only == "xdp" {
        let mut bed = Testbed::with_mtu("cxb-x", 2, dir.path(), mtu).unwrap();
        let pods = xdp_pods(&mut bed, &rt);
        pause();
        rows.push(measure(
            "XDP + Geneve (ours)",
            &pods,
            ("", ""),
            &dir.path().join("transit.o"),
        ));
    }
    for (name, vxlan, tag) in [
        ("kernel VXLAN", true, "cxb-v"),
        ("plain veth routing", false, "cxb-r"),
    ] {
        if !(only.is_empty() || only == if vxlan { "vxlan" } else { "veth" }) {
            continue;
        }
        let mut bed = Testbed::with_mtu(tag, 2, dir.path(), mtu).unwrap();
        // The kernel's datapaths get their substrate without XDP on it, so segmentation
        // offloads stay on (XDP on a veth turns them off on its peer).
        for i in 0..2 {
            run(&[
                "ip",
                "-n",
                &bed.substrate,
                "link",
                "set",
                &format!("d{i}"),
                "xdp",
                "off",
            ])
            .unwrap();
        }
        let pods = kernel_pods(&mut bed, vxlan);
        pause();
        let d0 = bed.droplets[0].netns.clone();
        rows.push(measure(
            name,
            &pods,
            (&d0, "vp0"),
            &dir.path().join("transit.o"),
        ));
        for pod in [&pods.a, &pods.b] {
            let _ = run(&["ip", "netns", "del", pod]);
        }
    }
    let vx = rows
        .iter()
        .find(|r| r.name == "kernel VXLAN")
        .map_or((f64::NAN, f64::NAN, f64::NAN, f64::NAN), |vx| {
            (vx.gbits, vx.pps, vx.cpu_ns, vx.rr.0)
        });
    println!(
        "{:<20} {:>8} {:>6} | {:>10} {:>6} {:>20} | {:>8} {:>6} | {:>7} {:>7} {:>6}",
        "datapath",
        "TCP Gb/s",
        "xVXLAN",
        "UDP64 kpps",
        "xVXLAN",
        "iperf3 UDP64 (loss)",
        "CPU ns",
        "xVXLAN",
        "RR p50",
        "RR p99",
        "xVXLAN"
    );
    for r in &rows {
        println!(
            "{:<20} {:>8.2} {:>6.2} | {:>10.0} {:>6.2} {:>9.0} kpps ({:>3.0}%) | {:>8.0} {:>6.2} | {:>7.1} {:>7.1} {:>6.2}",
            r.name,
            r.gbits,
            r.gbits / vx.0,
            r.pps / 1e3,
            r.pps / vx.1,
            r.iperf_udp.0 / 1e3,
            r.iperf_udp.1 * 100.0,
            r.cpu_ns,
            r.cpu_ns / vx.2,
            r.rr.0,
            r.rr.1,
            r.rr.0 / vx.3
        );
    }
    println!(
        "UDP64: the highest offered rate delivered with < 1% loss (kpps). CPU: system + \
         softirq ns per delivered packet at that rate, the generator included. iperf3 UDP64: one \
         socket sender, unthrottled, delivered kpps and loss. RR: 1-byte TCP \
         round trip, us."
    );
}

/// `--transitd --substrate eth0 --ip IP --socket PATH`, as `centaurus transitd` does.
fn transitd(args: &[String]) {
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .map(|i| args[i + 1].clone())
            .unwrap()
    };
    let (substrate, ip, socket) = (arg("--substrate"), arg("--ip"), arg("--socket"));
    let mac = mac_of_here(&substrate);
    let me = HostInfo {
        ip: ip.parse().unwrap(),
        mac,
    };
    let mut t = Transit::load(me, ifindex(&substrate).unwrap()).unwrap();
    t.attach_substrate(&substrate).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(centaurus_xdp::transitd::serve(t, Path::new(&socket)))
        .unwrap();
}

fn mac_of_here(dev: &str) -> [u8; 6] {
    let text = std::fs::read_to_string(format!("/sys/class/net/{dev}/address")).unwrap();
    centaurus_vpc::ipam::parse_mac(text.trim()).unwrap()
}

fn rr_server() {
    let l = TcpListener::bind("0.0.0.0:5201").unwrap();
    for s in l.incoming() {
        let mut s = s.unwrap();
        s.set_nodelay(true).unwrap();
        let mut b = [0u8; 1];
        while s.read_exact(&mut b).is_ok() {
            if s.write_all(&b).is_err() {
                break;
            }
        }
    }
}

fn rr_client(to: Ipv4Addr) {
    let mut s = TcpStream::connect((to, 5201)).unwrap();
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

/// Sends `count` copies of the frame out of `eth0` with the XDP traffic generator, at
/// `rate` frames a second, for at most 1.5 s; prints how many it sent and in how long.
fn blast_here(hex: &str, count: u32, rate: f64) {
    assert!(rate > 0.0);
    let frame: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let me = HostInfo {
        ip: Ipv4Addr::UNSPECIFIED,
        mac: [0; 6],
    };
    let index = ifindex("eth0").unwrap();
    let mut t = Transit::load(me, index).unwrap();
    // Bursts of about a millisecond of traffic: each run of the generator sets up its
    // frames anew, which costs more than the frames themselves at small bursts.
    let burst = ((rate / 1000.0) as u32).clamp(32, 4096);
    let start = Instant::now();
    let mut sent = 0u32;
    while sent < count && start.elapsed() < Duration::from_millis(1500) {
        let due = start + Duration::from_secs_f64(f64::from(sent) / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        t.time(Program::Tx, &frame, index, burst).unwrap();
        sent += burst;
    }
    println!("{sent} {}", start.elapsed().as_secs_f64());
}
