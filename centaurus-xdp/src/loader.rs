//! Loads the transit programs (aya), attaches them at one [`Hook`], and keeps their maps
//! equal to one host's [`HostTables`]: every [`TableUpdate`] is applied to a mirror of the
//! tables and the entries it touched are rewritten in the maps.
//!
//! Loaded with [`Transit::load`], the maps and attachments live as long as the [`Transit`].
//! Loaded with [`Transit::load_pinned`], the maps and the links attaching the programs are
//! pinned in a directory on a BPF filesystem: they outlive the process, so the datapath
//! keeps forwarding while its daemon is down, and the next daemon takes them over (the same
//! maps, learned hosts and counters included; its programs replace the old ones in each
//! link atomically).

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::Key;
use aya::maps::{Array, HashMap as BpfHash, LpmTrie, MapData, PerCpuArray};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, SchedClassifierLinkId, TcAttachType};
use aya::programs::xdp::XdpLink;
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId};
use aya::{Ebpf, EbpfLoader};
use centaurus_vpc::maglev::Backend;
use centaurus_vpc::policy::Way;
use centaurus_vpc::tables::{EndpointKey, HostTables, KeyMap, Location, ServiceKey, TableUpdate};

use crate::maps::*;
use crate::model::{Conn, HostInfo, Learned, Track};

/// The compiled programs (`bpf/transit.c`, built by `build.rs`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/transit.o"));

/// The compiled object, for tools that attach its programs themselves (iproute2's
/// `ip link set DEV xdp obj FILE program xdp_pass`).
pub fn object() -> &'static [u8] {
    OBJECT
}

/// Where a host's transit and agent programs run. Both hooks make the same decisions
/// and put the same bytes on the wire, so hosts with different hooks interoperate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Hook {
    /// XDP, native where the driver has it. Frames lose their segmentation and
    /// checksum-offload state: endpoints must segment and checksum in software, and a
    /// veth copies every frame into XDP's pages.
    Xdp,
    /// TC classifiers at ingress. Socket buffers keep GSO super-frames and offloaded
    /// checksums across the overlay, and deliveries enter the endpoint's namespace
    /// directly (`bpf_redirect_peer`).
    #[default]
    Tc,
}

impl std::str::FromStr for Hook {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "xdp" => Ok(Hook::Xdp),
            "tc" => Ok(Hook::Tc),
            _ => Err(format!("no hook {s:?}: xdp or tc")),
        }
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Hook::Xdp => "xdp",
            Hook::Tc => "tc",
        })
    }
}

/// The programs in the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// On the substrate interface.
    Transit,
    /// On the host side of each endpoint's veth.
    Agent,
    /// On the peer of a veth that XDP frames are redirected into (XDP only).
    Pass,
    /// Sends every frame back out (a traffic generator, with [`Transit::time`]; XDP only).
    Tx,
}

impl Program {
    /// The program's name in the object, for a host on `hook`.
    fn name(self, hook: Hook) -> &'static str {
        match (self, hook) {
            (Program::Transit, Hook::Xdp) => "transit_xdp",
            (Program::Transit, Hook::Tc) => "transit_tc",
            (Program::Agent, Hook::Xdp) => "transit_agent",
            (Program::Agent, Hook::Tc) => "transit_agent_tc",
            (Program::Pass, _) => "xdp_pass",
            (Program::Tx, _) => "xdp_tx",
        }
    }

    /// The hook the program runs at on a host on `hook`.
    fn hook(self, hook: Hook) -> Hook {
        match self {
            Program::Pass | Program::Tx => Hook::Xdp,
            _ => hook,
        }
    }
}

/// How a program was attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// XDP in the driver.
    XdpNative,
    /// XDP in the generic (socket buffer) path, where the driver has none.
    XdpGeneric,
    /// XDP, by a pinned link taken over (in the mode it was made with).
    XdpLink,
    /// A TC classifier at ingress.
    TcIngress,
}

/// An attachment, to detach it by.
enum Link {
    Xdp(XdpLinkId),
    Tc(SchedClassifierLinkId),
}

/// Why loading or programming the datapath failed.
#[derive(Debug, thiserror::Error)]
pub enum TransitError {
    /// The kernel refused to load the object (with the verifier's log).
    #[error("loading the transit programs: {0}")]
    Load(String),
    /// A map operation failed.
    #[error("map {map}: {message}")]
    Map {
        /// The map.
        map: &'static str,
        /// What went wrong.
        message: String,
    },
    /// Attaching to an interface failed in both native and generic mode.
    #[error("attaching {program} to {interface}: {message}")]
    Attach {
        /// The program.
        program: &'static str,
        /// The interface.
        interface: String,
        /// What went wrong.
        message: String,
    },
    /// An interface does not exist.
    #[error("no interface {0}")]
    NoInterface(String),
    /// Pinning under a directory failed.
    #[error("pinning in {}: {message}", path.display())]
    Pin {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Whether `dir` is on a BPF filesystem (what `/proc/self/mounts` says of the longest
/// mount point above it).
fn on_bpffs(dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, at, kind) = (f.next()?, f.next()?, f.next()?);
            dir.starts_with(at).then(|| (at.len(), kind == "bpf"))
        })
        .max()
        .is_some_and(|(_, bpf)| bpf)
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> TransitError {
    move |e| TransitError::Map {
        map,
        message: e.to_string(),
    }
}

/// True when interface `name` (in the caller's network namespace) is a tap: tun devices
/// have `tun_flags`.
pub fn is_tap(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('/')
        && Path::new(&format!("/sys/class/net/{name}/tun_flags")).exists()
}

/// An interface's index, read from sysfs (in the caller's network namespace).
pub fn ifindex(name: &str) -> Option<u32> {
    if name.is_empty() || name.contains('/') {
        return None;
    }
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The outcome of one `BPF_PROG_TEST_RUN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunResult {
    /// The verdict in XDP's terms (`XDP_DROP` 1, `XDP_PASS` 2, `XDP_TX` 3, `XDP_REDIRECT`
    /// 4), whatever the hook. A TC program sends a frame back out by redirecting it to
    /// its own interface, which reads as `XDP_REDIRECT`.
    pub action: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// Mean time per run, ns.
    pub ns: u64,
}

const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;
const TC_ACT_REDIRECT: i32 = 7;

/// XDP actions.
pub mod action {
    /// Dropped.
    pub const DROP: u32 = 1;
    /// To the kernel.
    pub const PASS: u32 = 2;
    /// Back out of the interface.
    pub const TX: u32 = 3;
    /// To another interface.
    pub const REDIRECT: u32 = 4;
}

/// One host's loaded datapath and the tables it holds.
pub struct Transit {
    bpf: Ebpf,
    hook: Hook,
    me: HostInfo,
    mirror: HostTables,
    /// LPM keys written per VNI, so a change rewrites exactly that VNI's entries.
    bounced_keys: HashMap<u32, Vec<Key<NetData>>>,
    divided_keys: HashMap<u32, Vec<Key<NetData>>>,
    /// The trie keys each local endpoint's policy was written under, with their
    /// generation.
    policy_keys: KeyMap<EndpointKey, PolicyKeys>,
    /// The ifindex each local endpoint's agent entry was written under.
    agent_ifindex: KeyMap<EndpointKey, u32>,
    /// Local endpoints whose veth does not exist yet.
    pending: BTreeSet<EndpointKey>,
    attach_agents: bool,
    /// Agent attachments by ifindex, with the veth's name.
    agent_links: HashMap<u32, (Link, String)>,
    substrate_link: Option<Link>,
    /// Where maps and links are pinned, if they are.
    pins: Option<PathBuf>,
}

/// The trie entries of one endpoint's policy.
struct PolicyKeys {
    generation: u8,
    peers: Vec<Key<PolicyPeerData>>,
    ports: Vec<Key<PolicyPortData>>,
}

/// The maps in the object.
const MAPS: [&str; 13] = [
    "config",
    "endpoints",
    "bounced",
    "divided",
    "agents",
    "learned",
    "hosts",
    "services",
    "conntrack",
    "policy_eps",
    "policy_peers",
    "policy_ports",
    "counters",
];

/// The layout of this build's maps: a hash of each map's name, type, key and value sizes,
/// entry limit and flags, as the compiled object defines them.
pub fn map_layout() -> String {
    static LAYOUT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LAYOUT
        .get_or_init(|| {
            let object = aya_obj::Object::parse(OBJECT).expect("the built object parses");
            let mut maps: Vec<_> = object.maps.iter().collect();
            maps.sort_by(|a, b| a.0.cmp(b.0));
            let text: String = maps
                .iter()
                .map(|(name, m)| {
                    format!(
                        "{name}:{}:{}:{}:{}:{};",
                        m.map_type(),
                        m.key_size(),
                        m.value_size(),
                        m.max_entries(),
                        m.map_flags()
                    )
                })
                .collect();
            format!(
                "{:016x}",
                centaurus_core::ring::stable_hash(text.as_bytes())
            )
        })
        .clone()
}

impl Transit {
    /// Loads the programs and configures them for host `me`, whose substrate interface has
    /// index `substrate`, to run at `hook`. Nothing is attached yet.
    pub fn load(me: HostInfo, substrate: u32, hook: Hook) -> Result<Self, TransitError> {
        Self::open(me, substrate, hook, None)
    }

    /// [`Transit::load`] with the maps and links pinned under `dir`, a directory on a BPF
    /// filesystem (made if missing): [`Transit::attach`] takes over links pinned there, and
    /// maps pinned there by an earlier daemon are used as they are when that daemon's maps
    /// had this build's layout ([`map_layout`]; they are pinned in `dir/maps-{layout}`).
    /// Maps of other layouts are unpinned, and freed once the links no longer run the
    /// programs that use them.
    pub fn load_pinned(
        me: HostInfo,
        substrate: u32,
        hook: Hook,
        dir: &Path,
    ) -> Result<Self, TransitError> {
        Self::load_pinned_as(me, substrate, hook, dir, &map_layout())
    }

    /// [`Transit::load_pinned`] as if this build's maps had the layout named `layout`: for
    /// tests that play an older build.
    #[doc(hidden)]
    pub fn load_pinned_as(
        me: HostInfo,
        substrate: u32,
        hook: Hook,
        dir: &Path,
        layout: &str,
    ) -> Result<Self, TransitError> {
        let pin_error = |message: String| TransitError::Pin {
            path: dir.to_owned(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| pin_error(e.to_string()))?;
        if !on_bpffs(dir) {
            return Err(pin_error(
                "not on a BPF filesystem (mount one: `mount -t bpf bpf DIR`)".into(),
            ));
        }
        let maps = format!("maps-{layout}");
        for entry in std::fs::read_dir(dir).map_err(|e| pin_error(e.to_string()))? {
            let entry = entry.map_err(|e| pin_error(e.to_string()))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("maps-") && name != maps {
                tracing::info!(stale = %name, "unpinning maps of another layout");
                std::fs::remove_dir_all(entry.path()).map_err(|e| pin_error(e.to_string()))?;
            }
        }
        let maps = dir.join(maps);
        std::fs::create_dir_all(&maps).map_err(|e| pin_error(e.to_string()))?;
        Self::open(me, substrate, hook, Some((dir, &maps)))
    }

    /// Loads `xdp_pass` alone and returns it, to be attached by its fd (over netlink) to
    /// the pod side of veths that XDP frames are redirected into.
    pub fn pass_program() -> Result<std::os::fd::OwnedFd, TransitError> {
        let load = |e: String| TransitError::Load(format!("xdp_pass: {e}"));
        let mut bpf = EbpfLoader::new()
            .load(OBJECT)
            .map_err(|e| load(e.to_string()))?;
        let prog: &mut Xdp = bpf
            .program_mut("xdp_pass")
            .ok_or_else(|| load("not in the object".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| load(e.to_string()))?;
        prog.load().map_err(|e| load(verifier_tail(&e)))?;
        // The program lives as long as a descriptor of it; the object's maps go with `bpf`.
        let fd = prog.fd().map_err(|e| load(e.to_string()))?;
        std::os::fd::AsFd::as_fd(fd)
            .try_clone_to_owned()
            .map_err(|e| load(e.to_string()))
    }

    /// Loads the programs; with `pins`, links are pinned in the first directory and maps
    /// in the second.
    fn open(
        me: HostInfo,
        substrate: u32,
        hook: Hook,
        pins: Option<(&Path, &Path)>,
    ) -> Result<Self, TransitError> {
        let mut loader = EbpfLoader::new();
        let paths: Vec<(&str, PathBuf)> = pins
            .map(|(_, maps)| MAPS.iter().map(|m| (*m, maps.join(m))).collect())
            .unwrap_or_default();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut bpf = loader
            .load(OBJECT)
            .map_err(|e| TransitError::Load(e.to_string()))?;
        // Every program is loaded, whatever the hook, so the verifier passes on all of them.
        for (name, prog) in bpf.programs_mut() {
            let loaded = match prog {
                aya::programs::Program::Xdp(p) => p.load(),
                aya::programs::Program::SchedClassifier(p) => p.load(),
                _ => continue,
            };
            loaded.map_err(|e| TransitError::Load(format!("{name}: {}", verifier_tail(&e))))?;
        }
        let mut t = Self {
            bpf,
            hook,
            me,
            mirror: HostTables::default(),
            bounced_keys: HashMap::new(),
            divided_keys: HashMap::new(),
            agent_ifindex: KeyMap::default(),
            policy_keys: KeyMap::default(),
            pending: BTreeSet::new(),
            attach_agents: true,
            agent_links: HashMap::new(),
            substrate_link: None,
            pins: pins.map(|(links, _)| links.to_owned()),
        };
        let mut config: Array<&mut MapData, HostConfig> = t.map("config")?;
        let cfg = HostConfig {
            ip: be(me.ip),
            mac: me.mac,
            pad: [0; 2],
            ifindex: substrate,
        };
        config.set(0, cfg, 0).map_err(map_err("config"))?;
        Ok(t)
    }

    /// Whether [`Transit::apply`] attaches the agent to each local endpoint's veth (on by
    /// default; tests that only run the programs turn it off).
    pub fn set_attach_agents(&mut self, on: bool) {
        self.attach_agents = on;
    }

    /// This host.
    pub fn host(&self) -> HostInfo {
        self.me
    }

    /// The hook this host's programs run at.
    pub fn hook(&self) -> Hook {
        self.hook
    }

    /// The tables as programmed.
    pub fn tables(&self) -> &HostTables {
        &self.mirror
    }

    /// Local endpoints waiting for their veth.
    pub fn pending(&self) -> impl Iterator<Item = &EndpointKey> {
        self.pending.iter()
    }

    fn map<'a, T>(&'a mut self, name: &'static str) -> Result<T, TransitError>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
    {
        let m = self.bpf.map_mut(name).ok_or(TransitError::Map {
            map: name,
            message: "not in the object".into(),
        })?;
        T::try_from(m).map_err(map_err(name))
    }

    fn xdp(&mut self, p: Program) -> Result<&mut Xdp, TransitError> {
        let name = p.name(self.hook);
        self.bpf
            .program_mut(name)
            .and_then(|prog| prog.try_into().ok())
            .ok_or_else(|| TransitError::Load(format!("no XDP program {name}")))
    }

    fn tc(&mut self, p: Program) -> Result<&mut SchedClassifier, TransitError> {
        let name = p.name(self.hook);
        self.bpf
            .program_mut(name)
            .and_then(|prog| prog.try_into().ok())
            .ok_or_else(|| TransitError::Load(format!("no TC program {name}")))
    }

    /// Attaches `p` to `interface`, at this host's hook: XDP in native mode, or in generic
    /// mode where the driver has no XDP support; TC at ingress.
    pub fn attach(&mut self, p: Program, interface: &str) -> Result<Attached, TransitError> {
        let index =
            ifindex(interface).ok_or_else(|| TransitError::NoInterface(interface.into()))?;
        self.attach_index(p, interface, index).map(|(_, how)| how)
    }

    /// Attaches `p` to `interface`; when pinning, takes over the link pinned for it (an
    /// atomic replacement of the program) or else pins the new link.
    fn attach_index(
        &mut self,
        p: Program,
        interface: &str,
        index: u32,
    ) -> Result<(Link, Attached), TransitError> {
        let Some(path) = self.link_pin(p, interface) else {
            return self.attach_new(p, interface, index);
        };
        if let Some(taken) = self.take_over(p, &path) {
            return Ok(taken);
        }
        // None, or one whose interface is gone: start afresh.
        let _ = std::fs::remove_file(&path);
        let (link, how) = self.attach_new(p, interface, index)?;
        let pin_error = |message: String| TransitError::Pin {
            path: path.clone(),
            message,
        };
        let fd: Result<FdLink, _> = match link {
            Link::Xdp(id) => self.xdp(p)?.take_link(id).map(FdLink::try_from),
            Link::Tc(id) => self.tc(p)?.take_link(id).map(FdLink::try_from),
        }
        .map_err(|e| pin_error(e.to_string()))?;
        let fd = fd.map_err(|e| {
            pin_error(format!(
                "{e} (pinning needs BPF links: Linux 5.9 for XDP, 6.6 for TC)"
            ))
        })?;
        fd.pin(&path).map_err(|e| pin_error(e.to_string()))?;
        let (link, _) = self
            .take_over(p, &path)
            .ok_or_else(|| pin_error("the link just pinned does not open".into()))?;
        Ok((link, how))
    }

    /// Where the link attaching `p` to `interface` is pinned, when pinning. The name does
    /// not say the hook: a daemon on another hook than the last one finds its links,
    /// cannot take them over, and so removes them.
    fn link_pin(&self, p: Program, interface: &str) -> Option<PathBuf> {
        let file = match p {
            Program::Transit => "link-substrate".to_owned(),
            _ => format!("link-agent-{interface}"),
        };
        self.pins.as_ref().map(|dir| dir.join(file))
    }

    /// Puts this process's `p` into the link pinned at `path`, if there is one and its
    /// interface is still there.
    fn take_over(&mut self, p: Program, path: &Path) -> Option<(Link, Attached)> {
        let fd = FdLink::from(PinnedLink::from_pin(path).ok()?);
        if p.hook(self.hook) == Hook::Tc {
            let link = SchedClassifierLink::try_from(fd).ok()?;
            let id = self.tc(p).ok()?.attach_to_link(link).ok()?;
            Some((Link::Tc(id), Attached::TcIngress))
        } else {
            let link = XdpLink::try_from(fd).ok()?;
            let id = self.xdp(p).ok()?.attach_to_link(link).ok()?;
            Some((Link::Xdp(id), Attached::XdpLink))
        }
    }

    fn attach_new(
        &mut self,
        p: Program,
        interface: &str,
        index: u32,
    ) -> Result<(Link, Attached), TransitError> {
        let name = p.name(self.hook);
        let failed = |message: String| TransitError::Attach {
            program: name,
            interface: interface.into(),
            message,
        };
        if p.hook(self.hook) == Hook::Tc {
            let prog = self.tc(p)?;
            let link = match prog.attach(interface, TcAttachType::Ingress) {
                Ok(link) => link,
                // Before TCX (Linux 6.6) a classifier needs the clsact qdisc.
                Err(first) => {
                    let _ = aya::programs::tc::qdisc_add_clsact(interface);
                    prog.attach(interface, TcAttachType::Ingress)
                        .map_err(|e| failed(format!("{first}; with clsact: {e}")))?
                }
            };
            return Ok((Link::Tc(link), Attached::TcIngress));
        }
        let prog = self.xdp(p)?;
        match prog.attach_to_if_index(index, XdpMode::Driver) {
            Ok(link) => Ok((Link::Xdp(link), Attached::XdpNative)),
            Err(native) => prog
                .attach_to_if_index(index, XdpMode::Skb)
                .map(|link| (Link::Xdp(link), Attached::XdpGeneric))
                .map_err(|generic| failed(format!("native: {native}; generic: {generic}"))),
        }
    }

    fn detach(&mut self, p: Program, link: Link) -> Result<(), TransitError> {
        let name = p.name(self.hook);
        let r = match link {
            Link::Xdp(l) => self.xdp(p)?.detach(l),
            Link::Tc(l) => self.tc(p)?.detach(l),
        };
        r.map_err(|e| TransitError::Attach {
            program: name,
            interface: String::new(),
            message: format!("detaching: {e}"),
        })
    }

    /// Attaches the transit program to the substrate interface.
    pub fn attach_substrate(&mut self, interface: &str) -> Result<Attached, TransitError> {
        let index =
            ifindex(interface).ok_or_else(|| TransitError::NoInterface(interface.into()))?;
        let (link, how) = self.attach_index(Program::Transit, interface, index)?;
        self.substrate_link = Some(link);
        Ok(how)
    }

    /// Records the substrate MAC of another host (the `hosts` map).
    pub fn set_neighbor(&mut self, host: Ipv4Addr, mac: [u8; 6]) -> Result<(), TransitError> {
        let mut hosts: BpfHash<&mut MapData, u32, HostMac> = self.map("hosts")?;
        let v = HostMac { mac, pad: [0; 2] };
        hosts.insert(be(host), v, 0).map_err(map_err("hosts"))
    }

    /// The substrate MACs known for other hosts.
    pub fn neighbors(&mut self) -> Result<HashMap<Ipv4Addr, [u8; 6]>, TransitError> {
        let hosts: BpfHash<&mut MapData, u32, HostMac> = self.map("hosts")?;
        hosts
            .iter()
            .map(|r| r.map(|(k, v)| (ip(k), v.mac)).map_err(map_err("hosts")))
            .collect()
    }

    /// Hosts the tables send to whose MAC is not known yet.
    pub fn unresolved_hosts(&mut self) -> Result<Vec<Ipv4Addr>, TransitError> {
        let known = self.neighbors()?;
        let t = &self.mirror;
        let mut want: BTreeSet<Ipv4Addr> = BTreeSet::new();
        want.extend(t.endpoints.values().filter_map(|l| match l {
            Location::Remote { host, .. } => Some(*host),
            Location::Local { .. } => None,
        }));
        want.extend(
            t.bounced
                .values()
                .flatten()
                .flat_map(|n| n.dividers.iter().copied()),
        );
        want.extend(
            t.divided
                .values()
                .flatten()
                .flat_map(|n| n.bouncers.iter().copied()),
        );
        want.extend(t.agents.values().flatten().copied());
        want.remove(&self.me.ip);
        Ok(want
            .into_iter()
            .filter(|h| !known.contains_key(h))
            .collect())
    }

    /// Remote endpoints' hosts learned from return-to-sender.
    pub fn learned(&mut self) -> Result<Vec<(EndpointKey, Learned)>, TransitError> {
        let learned: BpfHash<&mut MapData, EpKey, LearnedValue> = self.map("learned")?;
        learned
            .iter()
            .map(|r| {
                r.map(|(k, v)| {
                    let l = Learned {
                        host: ip(v.host_ip),
                        mac: v.host_mac,
                        seen_ns: v.seen_ns,
                    };
                    (EndpointKey::from(k), l)
                })
                .map_err(map_err("learned"))
            })
            .collect()
    }

    /// The connections that connection tracking holds: each flow's backend and each
    /// reply's Service, and the connections policies let through.
    pub fn conntrack(&mut self) -> Result<Vec<(Conn, Backend)>, TransitError> {
        let map: BpfHash<&mut MapData, CtKey, IpPort> = self.map("conntrack")?;
        map.iter()
            .map(|r| {
                r.map(|(k, v)| {
                    let conn = Conn {
                        vni: k.vni,
                        protocol: k.proto,
                        client: (ip(k.client), u16::from_be(k.client_port)),
                        peer: (ip(k.peer), u16::from_be(k.peer_port)),
                        track: match k.dir {
                            CT_SERVICE => Track::Service,
                            CT_REPLY => Track::Reply,
                            CT_POLICY_OUT => Track::Policy(Way::Egress),
                            _ => Track::Policy(Way::Ingress),
                        },
                    };
                    (conn, Backend::from(v))
                })
                .map_err(map_err("conntrack"))
            })
            .collect()
    }

    /// The counters summed over CPUs, by name.
    pub fn counters(&mut self) -> Result<Vec<(&'static str, u64)>, TransitError> {
        let counters: PerCpuArray<&mut MapData, u64> = self.map("counters")?;
        (0..COUNTERS)
            .map(|i| {
                let per_cpu = counters.get(&i, 0).map_err(map_err("counters"))?;
                Ok((COUNTER_NAMES[i as usize], per_cpu.iter().sum()))
            })
            .collect()
    }

    /// Runs `p` once per `repeat` on `frame` as if it arrived on interface `ingress`
    /// (`BPF_PROG_TEST_RUN`); maps are read and written as for a real frame, redirects are
    /// reported but not carried out.
    pub fn run(
        &mut self,
        p: Program,
        frame: &[u8],
        ingress: u32,
        repeat: u32,
    ) -> Result<RunResult, TransitError> {
        let tc = p.hook(self.hook) == Hook::Tc;
        let ctx: Vec<u8> = if tc {
            // struct __sk_buff up to ifindex (the interface the classifier runs on), at
            // byte 40.
            let mut ctx = [0u32; 11];
            ctx[10] = ingress;
            ctx.iter().flat_map(|w| w.to_ne_bytes()).collect()
        } else {
            // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
            // egress_ifindex.
            [0, frame.len() as u32, 0, ingress, 0, 0]
                .iter()
                .flat_map(|w| w.to_ne_bytes())
                .collect()
        };
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            repeat: repeat.max(1),
            ..TestRunOptions::new()
        };
        let r = if tc {
            self.tc(p)?.test_run(opts)
        } else {
            self.xdp(p)?.test_run(opts)
        }
        .map_err(|e| {
            TransitError::Load(format!("test run of a {}-byte frame: {e:?}", frame.len()))
        })?;
        out.truncate(r.data_size_out as usize);
        let action = if tc {
            match r.return_value as i32 {
                TC_ACT_OK => action::PASS,
                TC_ACT_SHOT => action::DROP,
                TC_ACT_REDIRECT => action::REDIRECT,
                other => return Err(TransitError::Load(format!("TC verdict {other}"))),
            }
        } else {
            r.return_value
        };
        Ok(RunResult {
            action,
            frame: out,
            ns: r.duration.as_nanos() as u64,
        })
    }

    /// Mean ns per packet of `p` on `frame` arriving on `ingress`, over `repeat` runs with
    /// live frames (`BPF_F_TEST_XDP_LIVE_FRAMES`): each run gets a fresh copy of the frame,
    /// and transmits and redirects really happen (where the device can take them).
    pub fn time(
        &mut self,
        p: Program,
        frame: &[u8],
        ingress: u32,
        repeat: u32,
    ) -> Result<u64, TransitError> {
        let ctx: Vec<u8> = [0, frame.len() as u32, 0, ingress, 0, 0]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        let prog = self.xdp(p)?;
        let opts = TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat: repeat.max(1),
            attrs: aya::programs::TestRunAttrs::new().xdp_live_frames(64),
            ..TestRunOptions::new()
        };
        let r = prog
            .test_run(opts)
            .map_err(|e| TransitError::Load(format!("test run: {e:?}")))?;
        Ok(r.duration.as_nanos() as u64)
    }

    /// Applies updates to the tables and rewrites the entries they touch.
    pub fn apply(&mut self, updates: &[TableUpdate]) -> Result<(), TransitError> {
        let mut endpoints = BTreeSet::new();
        let mut agents = BTreeSet::new();
        let mut bounced = BTreeSet::new();
        let mut divided = BTreeSet::new();
        let mut services = BTreeSet::new();
        let mut policies = BTreeSet::new();
        for u in updates {
            self.mirror.apply(u);
            match u {
                TableUpdate::PutEndpoint { key, .. } | TableUpdate::DeleteEndpoint { key } => {
                    endpoints.insert(*key);
                    agents.insert(*key);
                }
                TableUpdate::PutAgent { key, .. } | TableUpdate::DeleteAgent { key } => {
                    agents.insert(*key);
                }
                TableUpdate::PutBouncedSubnet { vni, .. }
                | TableUpdate::DeleteBouncedSubnet { vni, .. } => {
                    bounced.insert(*vni);
                }
                TableUpdate::PutDividedSubnet { vni, .. }
                | TableUpdate::DeleteDividedSubnet { vni, .. } => {
                    divided.insert(*vni);
                }
                TableUpdate::PutService { key, .. } | TableUpdate::DeleteService { key } => {
                    services.insert(*key);
                }
                TableUpdate::PutPolicy { key, .. } | TableUpdate::DeletePolicy { key } => {
                    policies.insert(*key);
                }
            }
        }
        for key in policies {
            self.write_policy(key)?;
        }
        for key in services {
            self.write_service(key)?;
        }
        for key in endpoints {
            self.write_endpoint(key)?;
        }
        for key in agents {
            self.write_agent(key)?;
        }
        for vni in bounced {
            self.write_bounced(vni)?;
        }
        for vni in divided {
            self.write_divided(vni)?;
        }
        Ok(())
    }

    /// Removes from the maps the entries the tables do not hold: after the tables are
    /// restored into pinned maps, what an earlier daemon wrote that they no longer have.
    /// Returns how many entries went.
    pub fn prune(&mut self) -> Result<usize, TransitError> {
        let keep: std::collections::HashSet<EpKey> = self
            .mirror
            .endpoints
            .keys()
            .filter(|k| !self.pending.contains(k))
            .map(|k| EpKey::from(*k))
            .collect();
        let mut endpoints: BpfHash<&mut MapData, EpKey, EpValue> = self.map("endpoints")?;
        let mut gone = prune_hash(&mut endpoints, "endpoints", |k| keep.contains(k))?;
        let keep: BTreeSet<u32> = self.agent_ifindex.values().copied().collect();
        let mut agents: BpfHash<&mut MapData, u32, AgentValue> = self.map("agents")?;
        gone += prune_hash(&mut agents, "agents", |k| keep.contains(k))?;
        let keep: Vec<Key<NetData>> = self.bounced_keys.values().flatten().cloned().collect();
        let mut trie: LpmTrie<&mut MapData, NetData, BouncedValue> = self.map("bounced")?;
        gone += prune_trie(&mut trie, "bounced", &keep)?;
        let keep: Vec<Key<NetData>> = self.divided_keys.values().flatten().cloned().collect();
        let mut trie: LpmTrie<&mut MapData, NetData, NetValue> = self.map("divided")?;
        gone += prune_trie(&mut trie, "divided", &keep)?;
        let keep: std::collections::HashSet<SvcKey> = self
            .mirror
            .services
            .keys()
            .map(|k| SvcKey::from(*k))
            .collect();
        let mut services: BpfHash<&mut MapData, SvcKey, SvcValue> = self.map("services")?;
        gone += prune_hash(&mut services, "services", |k| keep.contains(k))?;
        let keep: std::collections::HashSet<EpKey> = (self.mirror.policies.keys())
            .map(|k| EpKey::from(*k))
            .collect();
        let mut eps: BpfHash<&mut MapData, EpKey, PolicyValue> = self.map("policy_eps")?;
        gone += prune_hash(&mut eps, "policy_eps", |k| keep.contains(k))?;
        let keep: Vec<_> = self
            .policy_keys
            .values()
            .flat_map(|p| &p.peers)
            .cloned()
            .collect();
        let mut trie: LpmTrie<&mut MapData, PolicyPeerData, PolicyBits> =
            self.map("policy_peers")?;
        gone += prune_trie(&mut trie, "policy_peers", &keep)?;
        let keep: Vec<_> = self
            .policy_keys
            .values()
            .flat_map(|p| &p.ports)
            .cloned()
            .collect();
        let mut trie: LpmTrie<&mut MapData, PolicyPortData, PolicyBits> =
            self.map("policy_ports")?;
        gone += prune_trie(&mut trie, "policy_ports", &keep)?;
        Ok(gone)
    }

    /// Retries local endpoints whose veth has appeared since, or was made again; returns how
    /// many still wait for theirs.
    pub fn refresh(&mut self) -> Result<usize, TransitError> {
        // Local endpoints whose interface appeared, and those whose interface was made
        // again under its name (a pod's retried start re-wires it): a new index, and no
        // agent on it yet.
        let mut waiting: Vec<EndpointKey> = self.pending.iter().copied().collect();
        waiting.extend(self.agent_ifindex.iter().filter_map(|(key, index)| {
            match self.mirror.endpoints.get(key) {
                Some(Location::Local { veth, .. }) if ifindex(veth) != Some(*index) => Some(*key),
                _ => None,
            }
        }));
        for key in waiting {
            self.write_endpoint(key)?;
            self.write_agent(key)?;
        }
        Ok(self.pending.len())
    }

    fn local_ifindex(&mut self, key: EndpointKey) -> Option<u32> {
        match self.mirror.endpoints.get(&key) {
            Some(Location::Local { veth, .. }) => {
                let index = ifindex(veth);
                match index {
                    Some(_) => self.pending.remove(&key),
                    None => self.pending.insert(key),
                };
                index
            }
            _ => {
                self.pending.remove(&key);
                None
            }
        }
    }

    fn write_endpoint(&mut self, key: EndpointKey) -> Result<(), TransitError> {
        let value = match self.mirror.endpoints.get(&key).cloned() {
            Some(Location::Local { mac, veth }) => self.local_ifindex(key).map(|ifindex| EpValue {
                host_ip: be(self.me.ip),
                ifindex,
                mac,
                flags: if is_tap(&veth) {
                    EP_LOCAL | EP_TAP
                } else {
                    EP_LOCAL
                },
                pad: 0,
            }),
            Some(Location::Remote { host, mac }) => Some(EpValue {
                host_ip: be(host),
                ifindex: 0,
                mac,
                flags: 0,
                pad: 0,
            }),
            None => {
                self.pending.remove(&key);
                None
            }
        };
        let mut map: BpfHash<&mut MapData, EpKey, EpValue> = self.map("endpoints")?;
        match value {
            Some(v) => map
                .insert(EpKey::from(key), v, 0)
                .map_err(map_err("endpoints")),
            None => remove_if_present(map.remove(&EpKey::from(key)), "endpoints"),
        }
    }

    fn write_agent(&mut self, key: EndpointKey) -> Result<(), TransitError> {
        let bouncers = self.mirror.agents.get(&key).cloned();
        let index = match bouncers {
            Some(_) => self.local_ifindex(key),
            None => None,
        };
        let old = self.agent_ifindex.get(&key).copied();
        if let Some(old) = old.filter(|o| Some(*o) != index) {
            let mut map: BpfHash<&mut MapData, u32, AgentValue> = self.map("agents")?;
            remove_if_present(map.remove(&old), "agents")?;
            self.agent_ifindex.remove(&key);
            if let Some((link, veth)) = self.agent_links.remove(&old) {
                // The veth may be gone already, which detaches the program with it. A
                // pinned link holds on until its pin is gone too.
                if let Some(pin) = self.link_pin(Program::Agent, &veth) {
                    let _ = std::fs::remove_file(pin);
                }
                let _ = self.detach(Program::Agent, link);
            }
        }
        let (Some(bouncers), Some(index)) = (bouncers, index) else {
            return Ok(());
        };
        let (count, array) = hosts_array::<MAX_BOUNCERS>(&bouncers);
        let value = AgentValue {
            ep: EpKey::from(key),
            count,
            bouncers: array,
        };
        let mut map: BpfHash<&mut MapData, u32, AgentValue> = self.map("agents")?;
        map.insert(index, value, 0).map_err(map_err("agents"))?;
        self.agent_ifindex.insert(key, index);
        if self.attach_agents && !self.agent_links.contains_key(&index) {
            let veth = match self.mirror.endpoints.get(&key) {
                Some(Location::Local { veth, .. }) => veth.clone(),
                _ => String::new(),
            };
            let (link, _) = self.attach_index(Program::Agent, &veth, index)?;
            self.agent_links.insert(index, (link, veth));
        }
        Ok(())
    }

    /// Writes a scaled endpoint's whole table at once (a hash map update swaps the value,
    /// so a packet sees the old table or the new one, never a mix).
    fn write_service(&mut self, key: ServiceKey) -> Result<(), TransitError> {
        let value = self.mirror.services.get(&key).map(SvcValue::new);
        let mut map: BpfHash<&mut MapData, SvcKey, SvcValue> = self.map("services")?;
        match value {
            Some(v) => map
                .insert(SvcKey::from(key), v, 0)
                .map_err(map_err("services")),
            None => remove_if_present(map.remove(&SvcKey::from(key)), "services"),
        }
    }

    /// Writes a local endpoint's compiled policy under the generation its last one was not
    /// written under, switches its `policy_eps` entry to it, and then removes the old
    /// generation's entries: a packet sees one policy or the other, never a mix.
    fn write_policy(&mut self, key: EndpointKey) -> Result<(), TransitError> {
        let compiled = self.mirror.policies.get(&key).map(|p| p.compiled.clone());
        let old = self.policy_keys.remove(&key);
        let generation = old.as_ref().map_or(0, |o| o.generation ^ 1);
        let ep = EpKey::from(key);
        if let Some(c) = compiled {
            let mut value = PolicyValue {
                generation,
                ..PolicyValue::default()
            };
            let mut peers = Vec::new();
            let mut ports = Vec::new();
            let ways = [
                (Way::Ingress, WAY_INGRESS, POLICY_ISOLATE_INGRESS),
                (Way::Egress, WAY_EGRESS, POLICY_ISOLATE_EGRESS),
            ];
            for (way, w, flag) in ways {
                let Some(rules) = c.way(way) else { continue };
                value.flags |= flag;
                value.any_port[usize::from(w)] = PolicyBits::new(&rules.any_port);
                for (cidr, classes) in &rules.peers {
                    let data = PolicyPeerData {
                        vni: ep.vni,
                        ip: ep.ip,
                        way: w,
                        generation,
                        pad: [0; 2],
                        peer: be(cidr.network()),
                    };
                    let len = POLICY_PEER_FIXED_BITS + u32::from(cidr.prefix_len());
                    peers.push((Key::new(len, data), PolicyBits::new(classes)));
                }
                for (p, classes) in &rules.ports {
                    let data = PolicyPortData {
                        vni: ep.vni,
                        ip: ep.ip,
                        way: w,
                        generation,
                        proto: p.protocol,
                        pad: 0,
                        port: p.value.to_be(),
                        pad2: [0; 2],
                    };
                    let len = POLICY_PORT_FIXED_BITS + u32::from(p.len);
                    ports.push((Key::new(len, data), PolicyBits::new(classes)));
                }
            }
            let written = self.write_policy_entries(&peers, &ports);
            let (value, peers, ports) = match &written {
                Ok(()) => (value, peers, ports),
                // A full table: the endpoint takes nothing but replies (fails closed) until
                // its policy is written again, rather than everything.
                Err(_) => {
                    let deny = PolicyValue {
                        flags: POLICY_ISOLATE_INGRESS | POLICY_ISOLATE_EGRESS,
                        generation,
                        ..PolicyValue::default()
                    };
                    (deny, Vec::new(), Vec::new())
                }
            };
            let mut eps: BpfHash<&mut MapData, EpKey, PolicyValue> = self.map("policy_eps")?;
            eps.insert(ep, value, 0).map_err(map_err("policy_eps"))?;
            self.policy_keys.insert(
                key,
                PolicyKeys {
                    generation,
                    peers: peers.into_iter().map(|(k, _)| k).collect(),
                    ports: ports.into_iter().map(|(k, _)| k).collect(),
                },
            );
            if let Err(e) = written {
                self.remove_policy_entries(old.as_ref())?;
                return Err(e);
            }
        } else {
            let mut eps: BpfHash<&mut MapData, EpKey, PolicyValue> = self.map("policy_eps")?;
            remove_if_present(eps.remove(&ep), "policy_eps")?;
        }
        self.remove_policy_entries(old.as_ref())
    }

    /// Writes one generation of a policy's trie entries; on a failure (a full table),
    /// removes what it wrote.
    fn write_policy_entries(
        &mut self,
        peers: &[(Key<PolicyPeerData>, PolicyBits)],
        ports: &[(Key<PolicyPortData>, PolicyBits)],
    ) -> Result<(), TransitError> {
        let mut trie: LpmTrie<&mut MapData, PolicyPeerData, PolicyBits> =
            self.map("policy_peers")?;
        let mut written = rewrite_trie(&mut trie, "policy_peers", &[], peers);
        if written.is_ok() {
            let mut trie: LpmTrie<&mut MapData, PolicyPortData, PolicyBits> =
                self.map("policy_ports")?;
            written = rewrite_trie(&mut trie, "policy_ports", &[], ports);
        }
        if written.is_err() {
            let keys = PolicyKeys {
                generation: 0,
                peers: peers.iter().map(|(k, _)| *k).collect(),
                ports: ports.iter().map(|(k, _)| *k).collect(),
            };
            self.remove_policy_entries(Some(&keys))?;
        }
        written
    }

    fn remove_policy_entries(&mut self, keys: Option<&PolicyKeys>) -> Result<(), TransitError> {
        let Some(keys) = keys else { return Ok(()) };
        let mut trie: LpmTrie<&mut MapData, PolicyPeerData, PolicyBits> =
            self.map("policy_peers")?;
        for k in &keys.peers {
            remove_if_present(trie.remove(k), "policy_peers")?;
        }
        let mut trie: LpmTrie<&mut MapData, PolicyPortData, PolicyBits> =
            self.map("policy_ports")?;
        for k in &keys.ports {
            remove_if_present(trie.remove(k), "policy_ports")?;
        }
        Ok(())
    }

    fn write_bounced(&mut self, vni: u32) -> Result<(), TransitError> {
        let nets = self.mirror.bounced.get(&vni).cloned().unwrap_or_default();
        let mut want: Vec<(Key<NetData>, BouncedValue)> = Vec::new();
        for (i, n) in nets.iter().enumerate() {
            let (count, dividers) = hosts_array::<MAX_DIVIDERS>(&n.dividers);
            let mut v = BouncedValue {
                flags: NET_SUBNET,
                count,
                dividers,
            };
            want.push((net_key(vni, n.cidr.network(), n.cidr.prefix_len()), v));
            if i == 0 {
                v.flags = 0;
                want.push((net_key(vni, Ipv4Addr::UNSPECIFIED, 0), v));
            }
        }
        let old = self.bounced_keys.remove(&vni).unwrap_or_default();
        let mut map: LpmTrie<&mut MapData, NetData, BouncedValue> = self.map("bounced")?;
        rewrite_trie(&mut map, "bounced", &old, &want)?;
        if !want.is_empty() {
            self.bounced_keys
                .insert(vni, want.into_iter().map(|(k, _)| k).collect());
        }
        Ok(())
    }

    fn write_divided(&mut self, vni: u32) -> Result<(), TransitError> {
        let nets = self.mirror.divided.get(&vni).cloned().unwrap_or_default();
        let mut want: Vec<(Key<NetData>, NetValue)> = Vec::new();
        for n in &nets {
            let (count, hosts) = hosts_array::<MAX_BOUNCERS>(&n.bouncers);
            let v = NetValue {
                flags: NET_SUBNET,
                count,
                hosts,
            };
            want.push((net_key(vni, n.cidr.network(), n.cidr.prefix_len()), v));
        }
        if !nets.is_empty() {
            let v = NetValue::default();
            want.push((net_key(vni, Ipv4Addr::UNSPECIFIED, 0), v));
        }
        let old = self.divided_keys.remove(&vni).unwrap_or_default();
        let mut map: LpmTrie<&mut MapData, NetData, NetValue> = self.map("divided")?;
        rewrite_trie(&mut map, "divided", &old, &want)?;
        if !want.is_empty() {
            self.divided_keys
                .insert(vni, want.into_iter().map(|(k, _)| k).collect());
        }
        Ok(())
    }
}

/// The error with the end of the verifier's log, where it says what it refused.
fn verifier_tail(e: &aya::programs::ProgramError) -> String {
    let text = format!("{e:?}").replace("\\n", "\n");
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

fn net_key(vni: u32, network: Ipv4Addr, len: u8) -> Key<NetData> {
    let data = NetData {
        vni: vni.to_be(),
        ip: be(network),
    };
    Key::new(32 + u32::from(len), data)
}

fn key_eq<K: aya::Pod + PartialEq>(a: &Key<K>, b: &Key<K>) -> bool {
    (a.prefix_len(), a.data()) == (b.prefix_len(), b.data())
}

fn rewrite_trie<K: aya::Pod + PartialEq, V: aya::Pod>(
    map: &mut LpmTrie<&mut MapData, K, V>,
    name: &'static str,
    old: &[Key<K>],
    want: &[(Key<K>, V)],
) -> Result<(), TransitError> {
    for k in want {
        map.insert(&k.0, k.1, 0).map_err(map_err(name))?;
    }
    for k in old {
        if !want.iter().any(|(w, _)| key_eq(w, k)) {
            remove_if_present(map.remove(k), name)?;
        }
    }
    Ok(())
}

/// Removes the keys of `map` that `keep` refuses; returns how many.
fn prune_hash<K: aya::Pod, V: aya::Pod>(
    map: &mut BpfHash<&mut MapData, K, V>,
    name: &'static str,
    keep: impl Fn(&K) -> bool,
) -> Result<usize, TransitError> {
    let stale: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !keep(k))
        .collect();
    for k in &stale {
        remove_if_present(map.remove(k), name)?;
    }
    Ok(stale.len())
}

/// Removes the keys of `map` not in `keep`; returns how many.
fn prune_trie<K: aya::Pod + PartialEq, V: aya::Pod>(
    map: &mut LpmTrie<&mut MapData, K, V>,
    name: &'static str,
    keep: &[Key<K>],
) -> Result<usize, TransitError> {
    let stale: Vec<Key<K>> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !keep.iter().any(|w| key_eq(w, k)))
        .collect();
    for k in &stale {
        remove_if_present(map.remove(k), name)?;
    }
    Ok(stale.len())
}

fn remove_if_present(
    r: Result<(), aya::maps::MapError>,
    map: &'static str,
) -> Result<(), TransitError> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(())
        }
        r => r.map_err(map_err(map)),
    }
}
