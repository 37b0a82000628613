//! The transit daemon: one per host, it holds the host's loaded datapath ([`Transit`]) and
//! serves the `Dataplane` operations as JSON over HTTP/1.1 on a Unix socket, so the VPC
//! operators program hosts through it ([`XdpDataplane`]):
//!
//! - `POST /v1/program` with a JSON array of `TableUpdate`s applies them (200, or 500 with
//!   the error as text; malformed bodies get 400);
//! - `GET /v1/dump` returns the host's tables, learned hosts, neighbors and counters
//!   ([`Dump`]), which `centaurusctl transit` prints.
//!
//! In the background it attaches agents to veths that appear after their endpoint was
//! programmed, and resolves the MACs of the hosts the tables send to from the kernel's
//! neighbor table (sending a datagram to a host first makes the kernel resolve it).
//!
//! With a [`TableLog`], every batch it applies is appended to a file, and a restarted
//! daemon replays it: the host serves the same tables again without the management plane
//! (which counts the host as programmed) sending them anew.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use centaurus_vpc::tables::{EndpointKey, HostTables, Location, TableUpdate};
use centaurus_vpc::{Dataplane, DataplaneError};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::loader::Transit;

/// Largest request body transitd reads.
pub const MAX_BODY: usize = 64 << 20;

/// What `GET /v1/dump` returns.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Dump {
    /// The host's substrate address.
    pub host: Ipv4Addr,
    /// Endpoints: `vni/ip` → where.
    pub endpoints: BTreeMap<String, String>,
    /// Subnets this host bounces for: `vni/cidr` → the VPC's dividers.
    pub bounced: BTreeMap<String, Vec<Ipv4Addr>>,
    /// Subnets this host divides: `vni/cidr` → their bouncers.
    pub divided: BTreeMap<String, Vec<Ipv4Addr>>,
    /// Local endpoints' agents: `vni/ip` → their subnet's bouncers.
    pub agents: BTreeMap<String, Vec<Ipv4Addr>>,
    /// Scaled endpoints: `vni/vip:port/protocol` → their backends (`ip:port`), with
    /// `(ClientIP)` under affinity.
    #[serde(default)]
    pub services: BTreeMap<String, Vec<String>>,
    /// Connections through scaled endpoints that connection tracking holds (both
    /// directions count).
    #[serde(default)]
    pub connections: usize,
    /// Local endpoints' NetworkPolicies: `vni/ip` → what each direction holds.
    #[serde(default)]
    pub policies: BTreeMap<String, String>,
    /// Local endpoints whose veth has not appeared yet.
    pub pending: Vec<String>,
    /// Remote endpoints' hosts learned from return-to-sender: `vni/ip` → host.
    pub learned: BTreeMap<String, Ipv4Addr>,
    /// Other hosts' MACs.
    pub neighbors: BTreeMap<Ipv4Addr, String>,
    /// Counters summed over CPUs.
    pub counters: BTreeMap<String, u64>,
}

fn key(k: &EndpointKey) -> String {
    format!("{}/{}", k.vni, k.ip)
}

fn mac(m: [u8; 6]) -> String {
    centaurus_vpc::ipam::format_mac(m)
}

/// Collects a [`Dump`] of `t`.
pub fn dump(t: &mut Transit) -> Result<Dump, String> {
    let tables = t.tables().clone();
    let mut bounced = BTreeMap::new();
    for (vni, nets) in &tables.bounced {
        for n in nets {
            bounced.insert(format!("{vni}/{}", n.cidr), n.dividers.clone());
        }
    }
    let mut divided = BTreeMap::new();
    for (vni, nets) in &tables.divided {
        for n in nets {
            divided.insert(format!("{vni}/{}", n.cidr), n.bouncers.clone());
        }
    }
    let endpoints = tables
        .endpoints
        .iter()
        .map(|(k, l)| {
            let at = match l {
                Location::Local { veth, mac: m } => format!("local {veth} {}", mac(*m)),
                Location::Remote { host, mac: m } => {
                    format!("on {host} {}", mac(*m))
                }
            };
            (key(k), at)
        })
        .collect();
    let agents = tables
        .agents
        .iter()
        .map(|(k, b)| (key(k), b.clone()))
        .collect();
    let services = tables
        .services
        .iter()
        .map(|(k, s)| {
            let proto = if k.protocol == centaurus_vpc::tables::TCP {
                "tcp"
            } else {
                "udp"
            };
            let mut backends: Vec<String> = s
                .table
                .backends()
                .iter()
                .map(|b| format!("{}:{}", b.ip, b.port))
                .collect();
            if s.affinity {
                backends.push("(ClientIP)".into());
            }
            (format!("{}/{}:{}/{proto}", k.vni, k.vip, k.port), backends)
        })
        .collect();
    let policies = tables
        .policies
        .iter()
        .map(|(k, p)| {
            let way = |rules: Option<&[centaurus_vpc::policy::Rule]>, overflow: bool| match rules {
                None => "open".to_owned(),
                Some(_) if overflow => "deny (too many port sets)".to_owned(),
                Some(r) => format!("{} rules", r.len()),
            };
            let over =
                |c: Option<&centaurus_vpc::policy::Classified>| c.is_some_and(|c| c.overflow);
            let text = format!(
                "ingress {}, egress {}",
                way(
                    p.policy.ingress.as_deref(),
                    over(p.compiled.ingress.as_ref())
                ),
                way(p.policy.egress.as_deref(), over(p.compiled.egress.as_ref())),
            );
            (key(k), text)
        })
        .collect();
    let pending = t.pending().map(key).collect();
    let e = |e: crate::loader::TransitError| e.to_string();
    let connections = t.conntrack().map_err(e)?.len();
    let learned = t
        .learned()
        .map_err(e)?
        .iter()
        .map(|(k, l)| (key(k), l.host))
        .collect();
    let neighbors = t
        .neighbors()
        .map_err(e)?
        .into_iter()
        .map(|(h, m)| (h, mac(m)))
        .collect();
    let counters = t
        .counters()
        .map_err(e)?
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v))
        .collect();
    Ok(Dump {
        host: t.host().ip,
        endpoints,
        bounced,
        divided,
        agents,
        services,
        connections,
        policies,
        pending,
        learned,
        neighbors,
        counters,
    })
}

/// The MAC the kernel's neighbor table holds for `ip`, from `/proc/net/arp`.
pub fn kernel_neighbor(ip: Ipv4Addr) -> Option<[u8; 6]> {
    let table = std::fs::read_to_string("/proc/net/arp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // IP address, HW type, Flags (0x2: complete), HW address, Mask, Device
        if f.len() >= 4 && f[0] == ip.to_string() && f[2] != "0x0" {
            centaurus_vpc::ipam::parse_mac(f[3]).filter(|m| *m != [0; 6])
        } else {
            None
        }
    })
}

/// One pass of background upkeep: attach agents to veths that appeared, and learn the
/// MACs of hosts the tables send to (asking the kernel to resolve those it lacks).
pub fn upkeep(t: &mut Transit) -> Result<(), String> {
    t.refresh().map_err(|e| e.to_string())?;
    for host in t.unresolved_hosts().map_err(|e| e.to_string())? {
        match kernel_neighbor(host) {
            Some(m) => t.set_neighbor(host, m).map_err(|e| e.to_string())?,
            None => {
                // A datagram to the discard port makes the kernel ARP for the host.
                if let Ok(s) = UdpSocket::bind("0.0.0.0:0") {
                    let _ = s.send_to(b"", (host, 9));
                }
            }
        }
    }
    Ok(())
}

/// The tables a transit daemon was programmed with, in a file: one JSON array of updates
/// a line, appended as each batch is applied. Opening it replays it and rewrites it as one
/// line, the tables' snapshot.
pub struct TableLog {
    file: std::fs::File,
}

impl TableLog {
    /// Opens (or creates) the log at `path` and applies what it holds to `transit`;
    /// returns the log and how many table entries it restored. A last line cut short (a
    /// daemon killed mid-write) is dropped; any other unreadable line is an error, so
    /// nothing is silently lost.
    pub fn open(path: &Path, transit: &mut Transit) -> Result<(Self, usize), String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        let snapshot = Self::replay(&text)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .updates();
        transit.apply(&snapshot).map_err(|e| e.to_string())?;
        let mut line = serde_json::to_vec(&snapshot).expect("updates serialize");
        line.push(b'\n');
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &line)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        Ok((Self { file }, snapshot.len()))
    }

    /// The tables a log's text builds.
    fn replay(text: &str) -> Result<HostTables, String> {
        let mut tables = HostTables::default();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            match serde_json::from_str::<Vec<TableUpdate>>(line) {
                Ok(batch) => batch.iter().for_each(|u| tables.apply(u)),
                Err(e) if i + 1 == lines.len() && !text.ends_with('\n') => {
                    tracing::warn!("dropping a batch cut short: {e}");
                }
                Err(e) => return Err(format!("line {}: {e}", i + 1)),
            }
        }
        Ok(tables)
    }

    /// Appends a batch that was applied.
    pub fn append(&mut self, updates: &[TableUpdate]) -> std::io::Result<()> {
        use std::io::Write;
        let mut line = serde_json::to_vec(updates).expect("updates serialize");
        line.push(b'\n');
        self.file.write_all(&line)
    }
}

/// A host's datapath and the log of what it was programmed with.
struct Daemon {
    transit: Transit,
    log: Option<TableLog>,
}

impl Daemon {
    fn program(&mut self, updates: &[TableUpdate]) -> Result<(), String> {
        self.transit.apply(updates).map_err(|e| e.to_string())?;
        if let Some(log) = &mut self.log {
            log.append(updates)
                .map_err(|e| format!("applied, but not logged: {e}"))?;
        }
        Ok(())
    }
}

/// Serves `transit` on the Unix socket at `path` until the task is dropped, running
/// [`upkeep`] every 100 ms, and appending what it applies to `log`.
pub async fn serve(transit: Transit, log: Option<TableLog>, path: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    let transit = Arc::new(Mutex::new(Daemon { transit, log }));
    let t = transit.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Err(e) = upkeep(&mut t.lock().expect("transit lock").transit) {
                tracing::warn!("transitd upkeep: {e}");
            }
        }
    });
    loop {
        let (stream, _) = listener.accept().await?;
        let t = transit.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, t).await {
                tracing::debug!("transitd connection: {e}");
            }
        });
    }
}

/// A parsed HTTP/1.1 request: method, path and body.
async fn read_request(
    stream: &mut UnixStream,
) -> std::io::Result<Result<(String, String, Vec<u8>), (u16, String)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if buf.len() > 64 << 10 {
            return Ok(Err((431, "request head too large".into())));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Err((400, "connection closed mid-request".into())));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or_default().split(' ');
    let (method, path) = (
        first.next().unwrap_or_default().to_owned(),
        first.next().unwrap_or_default().to_owned(),
    );
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim().parse::<usize>());
    let length = match length {
        None => 0,
        Some(Ok(n)) if n <= MAX_BODY => n,
        Some(Ok(n)) => return Ok(Err((413, format!("body of {n} bytes is over {MAX_BODY}")))),
        Some(Err(_)) => return Ok(Err((400, "bad Content-Length".into()))),
    };
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Err((400, "body shorter than Content-Length".into())));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok(Ok((method, path, body)))
}

async fn respond(
    stream: &mut UnixStream,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

async fn handle(mut stream: UnixStream, transit: Arc<Mutex<Daemon>>) -> std::io::Result<()> {
    let (method, path, body) = match read_request(&mut stream).await? {
        Ok(r) => r,
        Err((status, why)) => {
            return respond(&mut stream, status, "text/plain", why.as_bytes()).await;
        }
    };
    let (status, ctype, out) = match (method.as_str(), path.as_str()) {
        ("POST", "/v1/program") => match serde_json::from_slice::<Vec<TableUpdate>>(&body) {
            Err(e) => (
                400,
                "text/plain",
                format!("malformed updates: {e}").into_bytes(),
            ),
            Ok(updates) => match transit.lock().expect("transit lock").program(&updates) {
                Ok(()) => (200, "application/json", b"{}".to_vec()),
                Err(e) => (500, "text/plain", e.into_bytes()),
            },
        },
        ("GET", "/v1/dump") => match dump(&mut transit.lock().expect("transit lock").transit) {
            Ok(d) => (
                200,
                "application/json",
                serde_json::to_vec_pretty(&d).expect("a dump serializes"),
            ),
            Err(e) => (500, "text/plain", e.into_bytes()),
        },
        _ => (
            404,
            "text/plain",
            format!("no {method} {path}: try POST /v1/program or GET /v1/dump").into_bytes(),
        ),
    };
    respond(&mut stream, status, ctype, &out).await
}

/// Sends one request to the transitd at `socket`; returns the status and body.
pub async fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = UnixStream::connect(socket).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: transitd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "malformed response from transitd",
        )
    };
    let at = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let status = std::str::from_utf8(&out[..at])
        .ok()
        .and_then(|h| h.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, out[at + 4..].to_vec()))
}

/// The production `Dataplane`: programs each host through its transitd, whose socket is
/// found by host address.
pub struct XdpDataplane {
    sockets: Mutex<BTreeMap<Ipv4Addr, PathBuf>>,
}

impl XdpDataplane {
    /// A dataplane that knows no hosts yet.
    pub fn new() -> Self {
        Self {
            sockets: Mutex::new(BTreeMap::new()),
        }
    }

    /// Where `host`'s transitd listens.
    pub fn add_host(&self, host: Ipv4Addr, socket: PathBuf) {
        self.sockets
            .lock()
            .expect("sockets lock")
            .insert(host, socket);
    }
}

impl Default for XdpDataplane {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Dataplane for XdpDataplane {
    async fn program(&self, host: Ipv4Addr, updates: &[TableUpdate]) -> Result<(), DataplaneError> {
        let err = |message: String| DataplaneError { host, message };
        let socket = self
            .sockets
            .lock()
            .expect("sockets lock")
            .get(&host)
            .cloned()
            .ok_or_else(|| err("no transit daemon known for this host".into()))?;
        let body = serde_json::to_vec(updates).map_err(|e| err(e.to_string()))?;
        let (status, reply) = request(&socket, "POST", "/v1/program", &body)
            .await
            .map_err(|e| err(format!("transitd at {}: {e}", socket.display())))?;
        if status != 200 {
            return Err(err(format!(
                "transitd answered {status}: {}",
                String::from_utf8_lossy(&reply)
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(last: u8) -> TableUpdate {
        TableUpdate::PutEndpoint {
            key: EndpointKey {
                vni: 9,
                ip: Ipv4Addr::new(10, 0, 0, last),
            },
            location: Location::Remote {
                host: Ipv4Addr::new(192, 168, 0, 1),
                mac: [2, 0, 0, 0, 0, 1],
            },
        }
    }

    fn line(batch: &[TableUpdate]) -> String {
        serde_json::to_string(batch).unwrap() + "\n"
    }

    #[test]
    fn a_log_replays_its_batches_in_order() {
        let delete = TableUpdate::DeleteEndpoint {
            key: EndpointKey {
                vni: 9,
                ip: Ipv4Addr::new(10, 0, 0, 2),
            },
        };
        let text = line(&[put(2), put(3)]) + &line(&[delete]) + &line(&[put(4)]);
        let tables = TableLog::replay(&text).unwrap();
        let mut ips: Vec<_> = tables.endpoints.keys().map(|k| k.ip.octets()[3]).collect();
        ips.sort();
        assert_eq!(ips, [3, 4]);
        assert!(TableLog::replay("").unwrap().endpoints.is_empty());
    }

    #[test]
    fn only_a_last_batch_cut_short_is_dropped() {
        let whole = line(&[put(2)]);
        let cut = &line(&[put(3)])[..20];
        let tables = TableLog::replay(&(whole.clone() + cut)).unwrap();
        assert_eq!(tables.endpoints.len(), 1);
        // Anything else unreadable is refused, not skipped.
        let err = TableLog::replay(&(whole.clone() + "{not json}\n" + &whole)).unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        let err = TableLog::replay(&(whole + cut + "\n")).unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }
}
