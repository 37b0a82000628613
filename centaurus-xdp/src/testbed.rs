//! A multi-host region on one machine: each droplet is a network namespace with a
//! substrate interface `eth0` on a shared bridge (itself in a namespace of its own, so the
//! machine's network is untouched), running its own transit daemon; each endpoint is a
//! namespace whose `eth0` pairs with a host-side veth in its droplet. Everything is torn
//! down on drop. Namespaces, links, addresses and routes are made over netlink
//! (`centaurus-netdev`); programs run in the namespaces through `ip netns exec` (which
//! also gives them the namespace's own /sys). Needs root, ethtool and iproute2.
//!
//! The droplets' programs run at one [`Hook`], TC unless asked otherwise. Frames that XDP
//! redirects or bounces into a veth reach its peer only when the peer runs an XDP program
//! itself (on this kernel, requesting GRO on the peer was not enough): on the XDP hook the
//! testbed attaches `xdp_pass` to the bridge's ports and the endpoints' interfaces, and
//! turns the endpoints' checksum and segmentation offloads off, as XDP frames carry no
//! offload state. On the TC hook nothing of that is needed, and offloads stay on.
//!
//! The substrate carries jumbo frames ([`SUBSTRATE_MTU`], as datacenter fabrics do; any
//! MTU can be asked for) and endpoints get what is left after the overlay's headers
//! ([`endpoint_mtu`]). Frames over a page cross the veths as multi-buffer XDP frames.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use std::os::fd::{AsFd, OwnedFd};

use centaurus_netdev::netns::{NETNS_DIR, add_netns, del_netns, netns_path};
use centaurus_netdev::{LinkChange, Netlink, PodLink, block_on};

use crate::loader::Hook;
use crate::model::HostInfo;

/// The processes in the network namespace at `netns`.
fn pids_in(netns: &Path) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(ns) = std::fs::metadata(netns) else {
        return Vec::new();
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| (m.dev(), m.ino()) == (ns.dev(), ns.ino()))
        })
        .collect()
}

/// The substrate MTU a testbed gets unless told otherwise.
pub const SUBSTRATE_MTU: u32 = 9000;

/// The MTU of an endpoint on a substrate of MTU `substrate`: the overlay adds an outer
/// IPv4, UDP and Geneve header with the return-to-sender option, and the inner Ethernet
/// header.
pub fn endpoint_mtu(substrate: u32) -> u32 {
    substrate - crate::model::ENCAP_LEN as u32
}

/// One simulated host.
#[derive(Clone, Debug)]
pub struct Droplet {
    /// Its network namespace.
    pub netns: String,
    /// Its substrate address and MAC.
    pub host: HostInfo,
    /// Its transit daemon's socket.
    pub socket: PathBuf,
}

/// One endpoint's namespace.
#[derive(Clone, Debug)]
pub struct EndpointNs {
    /// The namespace.
    pub netns: String,
    /// The droplet it is on.
    pub droplet: usize,
    /// The host-side veth.
    pub veth: String,
}

/// The substrate, its droplets and endpoints.
pub struct Testbed {
    prefix: String,
    /// `xdp_pass`, loaded on the XDP hook.
    pass: Option<OwnedFd>,
    /// The hook of every droplet's programs.
    pub hook: Hook,
    /// A BPF filesystem mounted for the testbed, where each droplet's daemon pins its maps
    /// and links (in a directory of its own), so a daemon restarts without a gap.
    pins: PathBuf,
    /// The substrate's MTU.
    pub mtu: u32,
    /// The namespace holding the substrate bridge.
    pub substrate: String,
    /// The droplets, in order.
    pub droplets: Vec<Droplet>,
    /// The endpoints made so far.
    pub endpoints: Vec<EndpointNs>,
    daemons: Vec<Child>,
    /// The daemons' program and its first arguments.
    daemon_command: Option<(PathBuf, Vec<String>)>,
}

/// True when the process runs as root (the testbed and the BPF tests need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    })
}

/// Runs a command and fails with its stderr if it fails.
pub fn run(args: &[&str]) -> std::io::Result<Output> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

impl Testbed {
    /// Droplet `i`'s substrate address on `192.168.77.0/24` and a MAC derived from it.
    pub fn host(i: usize) -> HostInfo {
        let ip = Ipv4Addr::new(192, 168, 77, i as u8 + 1);
        let o = ip.octets();
        HostInfo {
            ip,
            mac: [0x02, 0xfe, o[0], o[1], o[2], o[3]],
        }
    }

    /// Makes `count` droplets on a fresh bridge of [`SUBSTRATE_MTU`], on the TC hook;
    /// namespaces are named after `prefix` (keep it short: interface names are at most 15
    /// bytes). Sockets go under `dir`.
    pub fn new(prefix: &str, count: usize, dir: &Path) -> std::io::Result<Self> {
        Self::build(prefix, count, dir, SUBSTRATE_MTU, Hook::Tc)
    }

    /// [`Testbed::new`] on a substrate of MTU `mtu`, with programs at `hook`.
    pub fn build(
        prefix: &str,
        count: usize,
        dir: &Path,
        mtu: u32,
        hook: Hook,
    ) -> std::io::Result<Self> {
        let substrate = format!("{prefix}-sub");
        // Mounted here, in this mount namespace, the filesystem is seen by the daemons too:
        // `ip netns exec` gives each a mount namespace of its own that mounts propagate to
        // (and remounts /sys, so /sys/fs/bpf would not do). One left by a killed testbed
        // goes first.
        let pins = dir.join("bpf");
        let _ = Command::new("umount").arg("-l").arg(&pins).output();
        std::fs::create_dir_all(&pins)?;
        run(&["mount", "-t", "bpf", "bpf", &pins.to_string_lossy()])?;
        let mut bed = Self {
            mtu,
            hook,
            pins,
            pass: None,
            prefix: prefix.to_owned(),
            substrate: substrate.clone(),
            droplets: Vec::new(),
            endpoints: Vec::new(),
            daemons: Vec::new(),
            daemon_command: None,
        };
        if hook == Hook::Xdp {
            let pass = crate::loader::Transit::pass_program().map_err(std::io::Error::other)?;
            bed.pass = Some(pass);
        }
        let droplets: Vec<Droplet> = (0..count)
            .map(|i| Droplet {
                netns: format!("{prefix}-d{i}"),
                host: Self::host(i),
                socket: dir.join(format!("transitd-{i}.sock")),
            })
            .collect();
        let pass = bed.pass.as_ref().map(AsFd::as_fd);
        block_on(async {
            add_netns(&substrate).await?;
            let sub_path = netns_path(&substrate);
            let sub = Netlink::open(Some(&sub_path)).await?;
            sub.add_bridge("br0").await?;
            sub.set_link("br0", LinkChange::UP).await?;
            let here = Netlink::open(None).await?;
            for (i, d) in droplets.iter().enumerate() {
                let port = format!("d{i}");
                add_netns(&d.netns).await?;
                let path = netns_path(&d.netns);
                here.add_veth("eth0", Some(&path), &port, Some(&sub_path))
                    .await?;
                let on_bridge = LinkChange {
                    mtu: Some(mtu),
                    controller: Some("br0"),
                    up: true,
                    ..Default::default()
                };
                sub.set_link(&port, on_bridge).await?;
                if let Some(p) = pass {
                    sub.attach_xdp(&port, p).await?;
                }
                let mac = centaurus_vpc::ipam::format_mac(d.host.mac);
                let droplet = Netlink::open(Some(&path)).await?;
                droplet.set_link("lo", LinkChange::UP).await?;
                let eth0 = LinkChange {
                    mtu: Some(mtu),
                    mac: Some(&mac),
                    ..Default::default()
                };
                droplet.set_link("eth0", eth0).await?;
                droplet.add_address("eth0", d.host.ip.into(), 24).await?;
                droplet.set_link("eth0", LinkChange::UP).await?;
            }
            std::io::Result::Ok(())
        })?;
        bed.droplets = droplets;
        Ok(bed)
    }

    /// Starts each droplet's transit daemon, `exe ARGS --substrate eth0 --ip IP --hook HOOK
    /// --socket PATH --tables PATH --pins DIR` (ARGS is `transitd` for the `centaurus`
    /// binary), and waits for its socket.
    pub fn start_transit_daemons(&mut self, exe: &Path, args: &[&str]) -> std::io::Result<()> {
        self.daemon_command = Some((exe.to_owned(), args.iter().map(|a| a.to_string()).collect()));
        self.daemons = (0..self.droplets.len())
            .map(|i| self.spawn_daemon(i))
            .collect::<std::io::Result<_>>()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        (0..self.droplets.len()).try_for_each(|i| self.wait_daemon(i, deadline))
    }

    /// Kills droplet `i`'s transit daemon and starts it again (it restores its tables from
    /// its table log and takes over its pinned maps and links, so its datapath forwards
    /// throughout); returns once it serves.
    pub fn restart_transit_daemon(&mut self, i: usize) -> std::io::Result<()> {
        let _ = self.daemons[i].kill();
        let _ = self.daemons[i].wait();
        self.daemons[i] = self.spawn_daemon(i)?;
        self.wait_daemon(i, Instant::now() + Duration::from_secs(20))
    }

    fn spawn_daemon(&self, i: usize) -> std::io::Result<Child> {
        let (exe, args) = self.daemon_command.as_ref().expect("daemons started");
        let d = &self.droplets[i];
        // A socket left by an earlier daemon must not pass for this one's.
        let _ = std::fs::remove_file(&d.socket);
        Command::new("ip")
            .args(["netns", "exec", &d.netns])
            .arg(exe)
            .args(args)
            .args(["--substrate", "eth0", "--ip", &d.host.ip.to_string()])
            .args(["--hook", &self.hook.to_string()])
            .arg("--socket")
            .arg(&d.socket)
            .arg("--tables")
            .arg(d.socket.with_extension("tables"))
            .arg("--pins")
            .arg(self.pins.join(format!("d{i}")))
            .stdout(Stdio::null())
            .spawn()
    }

    fn wait_daemon(&self, i: usize, deadline: Instant) -> std::io::Result<()> {
        let d = &self.droplets[i];
        while !d.socket.exists() {
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "transitd of {} did not start",
                    d.netns
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// A dataplane that programs the droplets through their transit daemons.
    pub fn dataplane(&self) -> crate::transitd::XdpDataplane {
        let dp = crate::transitd::XdpDataplane::new();
        for d in &self.droplets {
            dp.add_host(d.host.ip, d.socket.clone());
        }
        dp
    }

    /// A management plane that knows the droplets as `d0`, `d1`, ..., and
    /// [`Testbed::dataplane`].
    pub fn plane(&self) -> (centaurus_vpc::plane::Plane, crate::transitd::XdpDataplane) {
        let mut plane = centaurus_vpc::plane::Plane::new();
        for (i, d) in self.droplets.iter().enumerate() {
            let info = centaurus_vpc::plane::DropletInfo {
                ip: d.host.ip,
                mac: d.host.mac,
            };
            plane.set_droplet(&format!("d{i}"), info);
        }
        (plane, self.dataplane())
    }

    /// Removes what a testbed named `prefix` left behind when its process was killed: its
    /// namespaces, and the processes still running in them (its transit daemons).
    pub fn sweep(prefix: &str) -> std::io::Result<()> {
        let start = format!("{prefix}-");
        let names = match std::fs::read_dir(NETNS_DIR) {
            Ok(dir) => dir
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&start))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        for ns in names {
            for pid in pids_in(&netns_path(&ns)) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .output();
            }
            block_on(del_netns(&ns))?;
        }
        Ok(())
    }

    /// Makes endpoint namespace number `n` on `droplet`: its `eth0` with `ip/prefix_len`,
    /// `mac` and a default route via `gateway`, paired with host-side `veth`. The MTU
    /// leaves room for the overlay's headers ([`endpoint_mtu`]).
    #[allow(clippy::too_many_arguments)]
    pub fn add_endpoint(
        &mut self,
        droplet: usize,
        veth: &str,
        ip: Ipv4Addr,
        prefix_len: u8,
        mac: [u8; 6],
        gateway: Ipv4Addr,
    ) -> std::io::Result<usize> {
        let n = self.endpoints.len();
        let netns = format!("{}-e{n}", self.prefix);
        let host_ns = netns_path(&self.droplets[droplet].netns);
        let mtu = endpoint_mtu(self.mtu);
        let mac = centaurus_vpc::ipam::format_mac(mac);
        let link = PodLink {
            netns: &netns,
            veth,
            host_netns: Some(&host_ns),
            bridge: None,
            mtu: Some(mtu),
            mac: Some(&mac),
            address: (ip, prefix_len),
            gateway,
            xdp: self.pass.as_ref().map(AsFd::as_fd),
        };
        block_on(link.make())?;
        self.endpoints.push(EndpointNs {
            netns,
            droplet,
            veth: veth.to_owned(),
        });
        Ok(n)
    }

    /// Removes endpoint `n`'s veth pair and namespace (the veth first: a namespace's
    /// devices go some time after the namespace does).
    pub fn remove_endpoint(&mut self, n: usize) -> std::io::Result<()> {
        let e = &self.endpoints[n];
        let host_ns = netns_path(&self.droplets[e.droplet].netns);
        block_on(async {
            Netlink::open(Some(&host_ns))
                .await?
                .del_link(&e.veth)
                .await?;
            del_netns(&e.netns).await
        })
    }

    /// Runs a command in endpoint `n`'s namespace.
    pub fn exec(&self, n: usize, args: &[&str]) -> std::io::Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.endpoints[n].netns])
            .args(args)
            .output()
    }

    /// Spawns a command in endpoint `n`'s namespace.
    pub fn spawn(&self, n: usize, args: &[&str]) -> std::io::Result<Child> {
        Command::new("ip")
            .args(["netns", "exec", &self.endpoints[n].netns])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
    }
}

/// A packet capture on the substrate bridge (tcpdump in the substrate's namespace), to see
/// what crossed the wire between droplets.
pub struct Capture {
    child: Child,
    file: PathBuf,
}

impl Testbed {
    /// Starts capturing every frame crossing the substrate bridge that matches the pcap
    /// `filter` (for example `udp port 6081`), into `file`; returns once tcpdump listens.
    pub fn capture(&self, file: &Path, filter: &str) -> std::io::Result<Capture> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.substrate, "tcpdump", "-i", "br0"])
            // Each frame handed over and written as it is seen, whole frames, and no
            // dropping to the tcpdump user (the file may be in a directory only root can
            // write).
            .args(["--immediate-mode", "-U", "-s", "0", "-Z", "root", "-w"])
            .arg(file)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stderr = std::io::BufReader::new(child.stderr.take().expect("piped"));
        let mut line = String::new();
        loop {
            line.clear();
            if std::io::BufRead::read_line(&mut stderr, &mut line)? == 0 {
                let _ = child.wait();
                return Err(std::io::Error::other(format!(
                    "tcpdump on {} did not start",
                    self.substrate
                )));
            }
            if line.contains("listening on") {
                break;
            }
        }
        // Keep draining its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Ok(Capture {
            child,
            file: file.to_owned(),
        })
    }
}

impl Capture {
    /// Stops the capture and returns the frames it saw, in order.
    pub fn finish(mut self) -> std::io::Result<Vec<Vec<u8>>> {
        // Every frame is written whole as it is seen (immediate mode, -U): a kill after the
        // last one had time to be read loses nothing.
        std::thread::sleep(Duration::from_millis(200));
        let _ = self.child.kill();
        let _ = self.child.wait();
        read_pcap(&std::fs::read(&self.file)?).map_err(std::io::Error::other)
    }
}

/// The frames of a classic pcap file of Ethernet frames (what tcpdump writes), in order.
pub fn read_pcap(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let word = |at: usize, big: bool| -> Result<u32, String> {
        let b: [u8; 4] = bytes
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("pcap truncated at byte {at}"))?;
        Ok(if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    let big = match word(0, false)? {
        0xa1b2_c3d4 | 0xa1b2_3c4d => false,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => true,
        m => return Err(format!("not a pcap file (magic {m:#010x})")),
    };
    let link = word(20, big)?;
    if link != 1 {
        return Err(format!("link type {link}, not Ethernet"));
    }
    let (mut at, mut frames) = (24, Vec::new());
    while at < bytes.len() {
        let len = word(at + 8, big)? as usize;
        let frame = bytes
            .get(at + 16..at + 16 + len)
            .ok_or_else(|| format!("pcap record at byte {at} truncated"))?;
        frames.push(frame.to_vec());
        at += 16 + len;
    }
    Ok(frames)
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for c in &mut self.daemons {
            let _ = c.kill();
            let _ = c.wait();
        }
        let names = self
            .endpoints
            .iter()
            .map(|e| e.netns.clone())
            .chain(self.droplets.iter().map(|d| d.netns.clone()))
            .chain([self.substrate.clone()]);
        block_on(async {
            for ns in names {
                let _ = del_netns(&ns).await;
            }
        });
        let _ = Command::new("umount").arg("-l").arg(&self.pins).output();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap(big: bool, frames: &[&[u8]]) -> Vec<u8> {
        let w = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut out = Vec::new();
        for v in [0xa1b2_c3d4, 0x0004_0002, 0, 0, 65535, 1] {
            out.extend_from_slice(&w(v));
        }
        for f in frames {
            for v in [1, 2, f.len() as u32, f.len() as u32] {
                out.extend_from_slice(&w(v));
            }
            out.extend_from_slice(f);
        }
        out
    }

    #[test]
    fn pcap_frames_read_back_in_either_byte_order() {
        for big in [false, true] {
            let file = pcap(big, &[b"first frame", b"", b"third"]);
            let frames = read_pcap(&file).unwrap();
            assert_eq!(
                frames,
                vec![b"first frame".to_vec(), vec![], b"third".to_vec()]
            );
        }
    }

    #[test]
    fn bad_pcap_files_are_refused_with_a_reason() {
        let file = pcap(false, &[b"a frame"]);
        assert!(read_pcap(&file[..10]).unwrap_err().contains("truncated"));
        assert!(
            read_pcap(&file[..file.len() - 1])
                .unwrap_err()
                .contains("truncated")
        );
        assert!(
            read_pcap(b"GIF89a..........................")
                .unwrap_err()
                .contains("magic")
        );
        let mut raw = file.clone();
        raw[20] = 101; // LINKTYPE_RAW
        assert!(read_pcap(&raw).unwrap_err().contains("not Ethernet"));
    }
}
