//! Address management of the VPC plane: IPv4 CIDRs, endpoint addresses and MACs from a
//! subnet, and virtual network identifiers (VNIs) unique in a region.
//!
//! Every allocator is safe to share between tasks: one lock per pool, and an address or a
//! VNI is handed out at most once until it is released.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::sync::Mutex;

use ipnetwork::Ipv4Network;

/// The largest VNI Geneve carries (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// Why an address or a VNI could not be had.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// The text is not an IPv4 CIDR without host bits.
    #[error("invalid CIDR: {0}")]
    InvalidCidr(String),
    /// Every address (or VNI) is taken.
    #[error("{0} is exhausted")]
    Exhausted(String),
    /// The address lies outside the pool, or is its network, gateway or broadcast address.
    #[error("{addr} is not an assignable address of {pool}")]
    OutOfRange {
        /// The address asked for.
        addr: Ipv4Addr,
        /// The pool.
        pool: String,
    },
    /// The VNI is outside the pool's range.
    #[error("VNI {vni} is outside {first}..={last}")]
    InvalidVni {
        /// The VNI asked for.
        vni: u32,
        /// The pool's first VNI.
        first: u32,
        /// The largest VNI.
        last: u32,
    },
    /// The address or VNI is already taken.
    #[error("{0} is already allocated")]
    InUse(String),
}

/// An IPv4 CIDR with no host bits set (an `ipnetwork` network, held to that rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr(Ipv4Network);

impl Ipv4Cidr {
    /// The CIDR `base/len`; host bits of `base` are an error.
    pub fn new(base: Ipv4Addr, len: u8) -> Result<Self, IpamError> {
        format!("{base}/{len}").parse()
    }

    /// The CIDR of length `len` (at most 32) that holds `addr`.
    pub fn covering(addr: Ipv4Addr, len: u8) -> Self {
        let len = len.min(32);
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        let net = Ipv4Network::new(Ipv4Addr::from(u32::from(addr) & mask), len);
        Self(net.expect("a masked address and a length of at most 32"))
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.0.network()
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix()
    }

    /// How many addresses it spans.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.0.prefix()))
    }

    /// The last address (the broadcast address of a subnet).
    pub fn last(&self) -> Ipv4Addr {
        self.0.broadcast()
    }

    /// Whether `addr` lies inside.
    pub fn contains_addr(&self, addr: Ipv4Addr) -> bool {
        self.0.contains(addr)
    }

    /// Whether `other` lies wholly inside.
    pub fn contains(&self, other: &Ipv4Cidr) -> bool {
        other.0.is_subnet_of(self.0)
    }

    /// Whether the two share any address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.0.overlaps(other.0)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = IpamError;

    fn from_str(text: &str) -> Result<Self, IpamError> {
        match centaurus_core::model::validation::cidr(text).map_err(IpamError::InvalidCidr)? {
            (IpAddr::V4(a), len) => Ipv4Network::new(a, len)
                .map(Self)
                .map_err(|e| IpamError::InvalidCidr(format!("{text:?}: {e}"))),
            (IpAddr::V6(_), _) => Err(IpamError::InvalidCidr(format!(
                "{text:?}: IPv6 networks are not supported yet"
            ))),
        }
    }
}

impl serde::Serialize for Ipv4Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix_len())
    }
}

/// The locally administered MAC of an endpoint: `02` then the VNI's low byte, then the
/// IPv4 address, so endpoints of one VPC never share a MAC and the MAC names its IP.
pub fn endpoint_mac(vni: u32, ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, (vni & 0xff) as u8, o[0], o[1], o[2], o[3]]
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (either case).
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[derive(Debug)]
struct PoolState {
    taken: BTreeSet<u32>,
    /// Where the next search starts, so a released address is not reused at once.
    cursor: u32,
}

/// Endpoint addresses of one subnet. The network address, the gateway (the first host
/// address) and the broadcast address are never handed out; a /31 or /32 has no room.
#[derive(Debug)]
pub struct SubnetPool {
    cidr: Ipv4Cidr,
    first: u32,
    last: u32,
    state: Mutex<PoolState>,
}

impl SubnetPool {
    /// A pool over `cidr`, nothing taken.
    pub fn new(cidr: Ipv4Cidr) -> Self {
        let base = u32::from(cidr.network());
        let (first, last) = if cidr.prefix_len() >= 31 {
            (1, 0) // empty
        } else {
            (base + 2, u32::from(cidr.last()) - 1)
        };
        Self {
            cidr,
            first,
            last,
            state: Mutex::new(PoolState {
                taken: BTreeSet::new(),
                cursor: first,
            }),
        }
    }

    /// The subnet.
    pub fn cidr(&self) -> Ipv4Cidr {
        self.cidr
    }

    /// The gateway address (the subnet's first host address).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + 1)
    }

    /// How many addresses can be handed out in all.
    pub fn capacity(&self) -> u64 {
        if self.first > self.last {
            0
        } else {
            u64::from(self.last - self.first) + 1
        }
    }

    /// How many are taken.
    pub fn allocated(&self) -> usize {
        self.lock().taken.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands out a free address: the next one after the last handed out, wrapping around.
    pub fn allocate(&self) -> Result<Ipv4Addr, IpamError> {
        let mut s = self.lock();
        if s.taken.len() as u64 >= self.capacity() {
            return Err(IpamError::Exhausted(format!("subnet {}", self.cidr)));
        }
        // The first free address at or after the cursor, else from the start.
        let free_from = |from: u32, to: u32, taken: &BTreeSet<u32>| {
            let mut candidate = from;
            for t in taken.range(from..=to) {
                if *t != candidate {
                    break;
                }
                candidate += 1;
            }
            (candidate <= to).then_some(candidate)
        };
        let start = s.cursor.clamp(self.first, self.last);
        let ip = free_from(start, self.last, &s.taken)
            .or_else(|| free_from(self.first, self.last, &s.taken))
            .expect("fewer taken than capacity leaves a free address");
        s.taken.insert(ip);
        s.cursor = if ip == self.last { self.first } else { ip + 1 };
        Ok(Ipv4Addr::from(ip))
    }

    /// Takes a given address (an endpoint that names its own IP, or one recorded before a
    /// restart).
    pub fn reserve(&self, ip: Ipv4Addr) -> Result<(), IpamError> {
        let n = u32::from(ip);
        if n < self.first || n > self.last {
            return Err(IpamError::OutOfRange {
                addr: ip,
                pool: self.cidr.to_string(),
            });
        }
        if !self.lock().taken.insert(n) {
            return Err(IpamError::InUse(ip.to_string()));
        }
        Ok(())
    }

    /// Gives an address back; false if it was not taken.
    pub fn release(&self, ip: Ipv4Addr) -> bool {
        self.lock().taken.remove(&u32::from(ip))
    }
}

/// VNIs of a region: each VPC has its own, unique across tenants.
#[derive(Debug)]
pub struct VniPool {
    first: u32,
    state: Mutex<PoolState>,
}

impl Default for VniPool {
    /// VNIs from 1000 up (lower ones are left for infrastructure networks).
    fn default() -> Self {
        Self::new(1000)
    }
}

impl VniPool {
    /// VNIs from `first` to [`MAX_VNI`].
    pub fn new(first: u32) -> Self {
        let first = first.clamp(1, MAX_VNI);
        Self {
            first,
            state: Mutex::new(PoolState {
                taken: BTreeSet::new(),
                cursor: first,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands out the lowest free VNI at or after the cursor.
    pub fn allocate(&self) -> Result<u32, IpamError> {
        let mut s = self.lock();
        let capacity = u64::from(MAX_VNI - self.first) + 1;
        if s.taken.len() as u64 >= capacity {
            return Err(IpamError::Exhausted("the region's VNIs".into()));
        }
        let mut v = s.cursor;
        while s.taken.contains(&v) {
            v = if v == MAX_VNI { self.first } else { v + 1 };
        }
        s.taken.insert(v);
        s.cursor = if v == MAX_VNI { self.first } else { v + 1 };
        Ok(v)
    }

    /// Takes a given VNI (a VPC that names its own, or one recorded before a restart).
    pub fn reserve(&self, vni: u32) -> Result<(), IpamError> {
        if vni < self.first || vni > MAX_VNI {
            return Err(IpamError::InvalidVni {
                vni,
                first: self.first,
                last: MAX_VNI,
            });
        }
        if !self.lock().taken.insert(vni) {
            return Err(IpamError::InUse(format!("VNI {vni}")));
        }
        Ok(())
    }

    /// Gives a VNI back; false if it was not taken.
    pub fn release(&self, vni: u32) -> bool {
        self.lock().taken.remove(&vni)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_contain_and_overlap() {
        let vpc = cidr("10.0.0.0/16");
        assert_eq!(vpc.to_string(), "10.0.0.0/16");
        assert_eq!(vpc.size(), 65_536);
        assert_eq!(vpc.last(), Ipv4Addr::new(10, 0, 255, 255));
        assert!(vpc.contains(&cidr("10.0.4.0/24")));
        assert!(!vpc.contains(&cidr("10.1.0.0/24")));
        assert!(!cidr("10.0.4.0/24").contains(&vpc));
        assert!(vpc.overlaps(&cidr("10.0.0.0/8")));
        assert!(!cidr("10.0.0.0/24").overlaps(&cidr("10.0.1.0/24")));
        assert!(cidr("0.0.0.0/0").contains(&vpc));
        for bad in ["10.0.0.1/16", "10.0.0.0/33", "10.0.0.0", "fd00::/64", "x/8"] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
        assert!(Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 0), 8).is_ok());
    }

    #[test]
    fn a_subnet_hands_out_its_host_addresses_once() {
        let pool = SubnetPool::new(cidr("10.0.0.0/29"));
        assert_eq!(pool.gateway(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(pool.capacity(), 5); // .2 to .6
        let got: Vec<_> = (0..5).map(|_| pool.allocate().unwrap()).collect();
        assert_eq!(got[0], Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(got[4], Ipv4Addr::new(10, 0, 0, 6));
        assert!(matches!(pool.allocate(), Err(IpamError::Exhausted(_))));
        assert!(pool.release(got[1]));
        assert!(!pool.release(got[1]));
        assert_eq!(pool.allocate().unwrap(), got[1]);
        for bad in [[10, 0, 0, 0], [10, 0, 0, 1], [10, 0, 0, 7], [10, 0, 1, 2]] {
            assert!(matches!(
                pool.reserve(Ipv4Addr::from(bad)),
                Err(IpamError::OutOfRange { .. })
            ));
        }
        assert_eq!(
            pool.reserve(got[0]),
            Err(IpamError::InUse("10.0.0.2".into()))
        );
        assert_eq!(SubnetPool::new(cidr("10.0.0.0/31")).capacity(), 0);
        assert!(SubnetPool::new(cidr("10.0.0.4/32")).allocate().is_err());
    }

    #[test]
    fn released_addresses_are_not_reused_at_once() {
        let pool = SubnetPool::new(cidr("10.0.0.0/24"));
        let a = pool.allocate().unwrap();
        pool.release(a);
        assert_ne!(pool.allocate().unwrap(), a);
    }

    #[test]
    fn vnis_are_unique_and_bounded() {
        let pool = VniPool::new(MAX_VNI - 2);
        let got: Vec<_> = (0..3).map(|_| pool.allocate().unwrap()).collect();
        assert_eq!(got, [MAX_VNI - 2, MAX_VNI - 1, MAX_VNI]);
        assert!(pool.allocate().is_err());
        pool.release(MAX_VNI - 1);
        assert_eq!(pool.allocate().unwrap(), MAX_VNI - 1);
        assert!(pool.reserve(MAX_VNI + 1).is_err());
        assert!(pool.reserve(MAX_VNI).is_err());
        let fresh = VniPool::default();
        fresh.reserve(1000).unwrap();
        assert_eq!(fresh.allocate().unwrap(), 1001);
    }

    #[test]
    fn macs_name_the_vni_and_the_address() {
        let mac = endpoint_mac(0x1234, Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(format_mac(mac), "02:34:0a:00:00:05");
        assert_eq!(mac[0] & 0x03, 0x02, "locally administered unicast");
    }
}
