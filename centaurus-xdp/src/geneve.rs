//! Geneve (RFC 8926) as the datapath speaks it: the 8-byte base header with a 24-bit VNI,
//! option TLVs (ours under an experimental option class, notably return-to-sender, which
//! carries the sending host so receivers can learn the direct path), and whole overlay
//! frames — outer Ethernet, IPv4 and UDP to port 6081 (with etherparse) around an inner
//! Ethernet frame.
//!
//! Parsing never panics and refuses anything malformed with a reason; the transit program
//! drops those packets and counts the reason.

use std::net::Ipv4Addr;

use etherparse::{LinkSlice, NetSlice, SlicedPacket, TransportSlice};

/// Geneve's UDP port.
pub const GENEVE_PORT: u16 = 6081;
/// Protocol type of an Ethernet payload (transparent Ethernet bridging).
pub const ETH_BRIDGING: u16 = 0x6558;
/// Our option class, from the experimental range (RFC 8926 §8).
pub const OPTION_CLASS: u16 = 0xfff0;
/// Option type of return-to-sender.
pub const OPT_RETURN_TO_SENDER: u8 = 0x01;
/// Length of the base header.
pub const BASE_LEN: usize = 8;
/// Longest options area (6-bit length in 4-byte words).
pub const MAX_OPTIONS_LEN: usize = 63 * 4;
/// Most options a header may carry (the BPF programs walk at most this many).
pub const MAX_OPTIONS: usize = 8;

/// Why bytes are not a Geneve packet we accept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GeneveError {
    /// Fewer bytes than a header needs.
    #[error("truncated: {need} bytes needed, {have} present")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// A version other than 0.
    #[error("unsupported Geneve version {0}")]
    Version(u8),
    /// An option running past the options area.
    #[error("option at offset {0} overruns the options area")]
    OptionOverrun(usize),
    /// A critical option we do not understand (the RFC says drop).
    #[error("unknown critical option class {class:#06x} type {type_:#04x}")]
    UnknownCritical {
        /// Option class.
        class: u16,
        /// Option type.
        type_: u8,
    },
    /// One of our options with the wrong length.
    #[error("option type {type_:#04x} has {len} data bytes")]
    BadOption {
        /// Option type.
        type_: u8,
        /// Its data length.
        len: usize,
    },
    /// Not Ethernet/IPv4/UDP to the Geneve port.
    #[error("not a Geneve frame: {0}")]
    NotGeneve(String),
    /// More options than the datapath walks.
    #[error("more than {MAX_OPTIONS} options")]
    TooManyOptions,
    /// More options than fit the 6-bit length.
    #[error("options take {0} bytes, more than {MAX_OPTIONS_LEN}")]
    OptionsTooLong(usize),
}

/// An option TLV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GeneveOption {
    /// The sending host's substrate address and MAC, so the receiver can reply directly.
    ReturnToSender {
        /// Substrate address.
        host: Ipv4Addr,
        /// Substrate MAC.
        mac: [u8; 6],
    },
    /// An option of another class or type, kept as it came.
    Other {
        /// Option class.
        class: u16,
        /// Type byte (its top bit marks it critical).
        type_: u8,
        /// Data, a multiple of 4 bytes.
        data: Vec<u8>,
    },
}

/// The Geneve header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geneve {
    /// The 24-bit network identifier.
    pub vni: u32,
    /// The O bit: a control packet.
    pub oam: bool,
    /// The C bit: critical options are present.
    pub critical: bool,
    /// The payload's protocol, [`ETH_BRIDGING`] for ours.
    pub protocol: u16,
    /// Options, in order.
    pub options: Vec<GeneveOption>,
}

impl Geneve {
    /// A header for an Ethernet payload in `vni`, without options.
    pub fn new(vni: u32) -> Self {
        Self {
            vni: vni & 0xff_ffff,
            oam: false,
            critical: false,
            protocol: ETH_BRIDGING,
            options: Vec::new(),
        }
    }

    /// The return-to-sender option, if present.
    pub fn return_to_sender(&self) -> Option<(Ipv4Addr, [u8; 6])> {
        self.options.iter().find_map(|o| match o {
            GeneveOption::ReturnToSender { host, mac } => Some((*host, *mac)),
            GeneveOption::Other { .. } => None,
        })
    }

    fn options_len(&self) -> usize {
        self.options
            .iter()
            .map(|o| {
                4 + match o {
                    GeneveOption::ReturnToSender { .. } => 12,
                    GeneveOption::Other { data, .. } => data.len().div_ceil(4) * 4,
                }
            })
            .sum()
    }

    /// Encoded length.
    pub fn len(&self) -> usize {
        BASE_LEN + self.options_len()
    }

    /// Always false: a header has at least its 8 base bytes.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Appends the encoded header to `out`.
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), GeneveError> {
        let opt_len = self.options_len();
        if opt_len > MAX_OPTIONS_LEN {
            return Err(GeneveError::OptionsTooLong(opt_len));
        }
        out.push((opt_len / 4) as u8);
        out.push(u8::from(self.oam) << 7 | u8::from(self.critical) << 6);
        out.extend_from_slice(&self.protocol.to_be_bytes());
        out.extend_from_slice(&(self.vni << 8).to_be_bytes());
        for o in &self.options {
            match o {
                GeneveOption::ReturnToSender { host, mac } => {
                    out.extend_from_slice(&OPTION_CLASS.to_be_bytes());
                    out.push(OPT_RETURN_TO_SENDER);
                    out.push(3);
                    out.extend_from_slice(&host.octets());
                    out.extend_from_slice(mac);
                    out.extend_from_slice(&[0, 0]);
                }
                GeneveOption::Other { class, type_, data } => {
                    let words = data.len().div_ceil(4);
                    out.extend_from_slice(&class.to_be_bytes());
                    out.push(*type_);
                    out.push(words as u8 & 0x1f);
                    out.extend_from_slice(data);
                    out.resize(out.len() + words * 4 - data.len(), 0);
                }
            }
        }
        Ok(())
    }

    /// Parses a header at the start of `buf`; returns it and the payload after it.
    pub fn parse(buf: &[u8]) -> Result<(Self, &[u8]), GeneveError> {
        if buf.len() < BASE_LEN {
            return Err(GeneveError::Truncated {
                need: BASE_LEN,
                have: buf.len(),
            });
        }
        let version = buf[0] >> 6;
        if version != 0 {
            return Err(GeneveError::Version(version));
        }
        let opt_len = usize::from(buf[0] & 0x3f) * 4;
        let end = BASE_LEN + opt_len;
        if buf.len() < end {
            return Err(GeneveError::Truncated {
                need: end,
                have: buf.len(),
            });
        }
        let mut g = Geneve {
            oam: buf[1] & 0x80 != 0,
            critical: buf[1] & 0x40 != 0,
            protocol: u16::from_be_bytes([buf[2], buf[3]]),
            vni: u32::from_be_bytes([0, buf[4], buf[5], buf[6]]),
            options: Vec::new(),
        };
        let mut at = BASE_LEN;
        while at < end {
            if g.options.len() == MAX_OPTIONS {
                return Err(GeneveError::TooManyOptions);
            }
            if at + 4 > end {
                return Err(GeneveError::OptionOverrun(at));
            }
            let class = u16::from_be_bytes([buf[at], buf[at + 1]]);
            let type_ = buf[at + 2];
            let len = usize::from(buf[at + 3] & 0x1f) * 4;
            let data = buf
                .get(at + 4..at + 4 + len)
                .filter(|_| at + 4 + len <= end);
            let Some(data) = data else {
                return Err(GeneveError::OptionOverrun(at));
            };
            g.options.push(match (class, type_) {
                (OPTION_CLASS, OPT_RETURN_TO_SENDER) => {
                    if len != 12 {
                        return Err(GeneveError::BadOption { type_, len });
                    }
                    GeneveOption::ReturnToSender {
                        host: Ipv4Addr::new(data[0], data[1], data[2], data[3]),
                        mac: [data[4], data[5], data[6], data[7], data[8], data[9]],
                    }
                }
                _ if type_ & 0x80 != 0 => {
                    return Err(GeneveError::UnknownCritical { class, type_ });
                }
                _ => GeneveOption::Other {
                    class,
                    type_,
                    data: data.to_vec(),
                },
            });
            at += 4 + len;
        }
        Ok((g, &buf[end..]))
    }
}

/// The outer addressing of an overlay frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outer {
    /// Sending host's MAC.
    pub src_mac: [u8; 6],
    /// Next hop's MAC.
    pub dst_mac: [u8; 6],
    /// Sending host's substrate address.
    pub src: Ipv4Addr,
    /// Receiving host's substrate address.
    pub dst: Ipv4Addr,
    /// Outer TTL.
    pub ttl: u8,
    /// UDP source port (a flow hash, for ECMP).
    pub src_port: u16,
}

/// The UDP source port for a flow hash: in the ephemeral range, as RFC 8926 recommends.
pub fn flow_port(hash: u32) -> u16 {
    49152 | (hash as u16 & 0x3fff)
}

/// Length of the outer Ethernet, IPv4 and UDP headers.
pub const OUTER_LEN: usize = 14 + 20 + 8;

/// Writes the outer Ethernet, IPv4 and UDP headers of an overlay frame of `frame_len`
/// bytes into `out[..OUTER_LEN]`, as the BPF programs do: IPv4 without options, ID 0, DF
/// set, a computed header checksum, and a zero UDP checksum (allowed over IPv4, RFC 8926).
pub fn write_outer(out: &mut [u8], outer: &Outer, frame_len: usize) {
    let ip_len = (frame_len - 14) as u16;
    let udp_len = (frame_len - 34) as u16;
    out[0..6].copy_from_slice(&outer.dst_mac);
    out[6..12].copy_from_slice(&outer.src_mac);
    out[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut out[14..34];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[4..6].copy_from_slice(&[0, 0]);
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
    ip[8] = outer.ttl;
    ip[9] = 17;
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&outer.src.octets());
    ip[16..20].copy_from_slice(&outer.dst.octets());
    let mut sum: u32 = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let udp = &mut out[34..42];
    udp[0..2].copy_from_slice(&outer.src_port.to_be_bytes());
    udp[2..4].copy_from_slice(&GENEVE_PORT.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
}

/// Builds an overlay frame: outer Ethernet/IPv4/UDP to [`GENEVE_PORT`] (see
/// [`write_outer`]), then `geneve`, then the inner Ethernet frame.
pub fn encapsulate(outer: &Outer, geneve: &Geneve, inner: &[u8]) -> Result<Vec<u8>, GeneveError> {
    let mut out = vec![0; OUTER_LEN];
    geneve.write(&mut out)?;
    out.extend_from_slice(inner);
    if out.len() > usize::from(u16::MAX) + 14 {
        return Err(GeneveError::NotGeneve(format!(
            "{} bytes do not fit an IPv4 packet",
            out.len()
        )));
    }
    let len = out.len();
    write_outer(&mut out, outer, len);
    Ok(out)
}

/// Parses an overlay frame into its outer addressing, Geneve header and inner frame.
pub fn decapsulate(frame: &[u8]) -> Result<(Outer, Geneve, &[u8]), GeneveError> {
    let p =
        SlicedPacket::from_ethernet(frame).map_err(|e| GeneveError::NotGeneve(e.to_string()))?;
    let Some(LinkSlice::Ethernet2(eth)) = &p.link else {
        return Err(GeneveError::NotGeneve("no Ethernet II header".into()));
    };
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        return Err(GeneveError::NotGeneve("not IPv4".into()));
    };
    let Some(TransportSlice::Udp(udp)) = &p.transport else {
        return Err(GeneveError::NotGeneve("not UDP".into()));
    };
    if udp.destination_port() != GENEVE_PORT {
        return Err(GeneveError::NotGeneve(format!(
            "UDP port {}",
            udp.destination_port()
        )));
    }
    let h = ip.header();
    let outer = Outer {
        src_mac: eth.source(),
        dst_mac: eth.destination(),
        src: Ipv4Addr::from(h.source()),
        dst: Ipv4Addr::from(h.destination()),
        ttl: h.ttl(),
        src_port: udp.source_port(),
    };
    let (geneve, inner) = Geneve::parse(udp.payload())?;
    Ok((outer, geneve, inner))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Geneve {
        let mut g = Geneve::new(0x00ab_cdef);
        g.options.push(GeneveOption::ReturnToSender {
            host: Ipv4Addr::new(192, 168, 0, 7),
            mac: [2, 0, 0, 0, 0, 7],
        });
        g.options.push(GeneveOption::Other {
            class: 0x0102,
            type_: 0x05,
            data: vec![1, 2, 3, 4, 5, 6, 7, 8],
        });
        g
    }

    #[test]
    fn header_round_trips_with_options() {
        let g = header();
        let mut buf = Vec::new();
        g.write(&mut buf).unwrap();
        assert_eq!(buf.len(), g.len());
        assert_eq!(buf.len(), 8 + 16 + 12);
        buf.extend_from_slice(b"inner");
        let (back, rest) = Geneve::parse(&buf).unwrap();
        assert_eq!(back, g);
        assert_eq!(rest, b"inner");
        assert_eq!(
            back.return_to_sender(),
            Some((Ipv4Addr::new(192, 168, 0, 7), [2, 0, 0, 0, 0, 7]))
        );
        // Wire layout of the base header: option length in words, protocol, VNI.
        assert_eq!(&buf[..8], &[7, 0, 0x65, 0x58, 0xab, 0xcd, 0xef, 0]);
    }

    #[test]
    fn malformed_headers_are_refused() {
        let mut buf = Vec::new();
        header().write(&mut buf).unwrap();
        for cut in 0..buf.len() {
            assert!(
                Geneve::parse(&buf[..cut]).is_err(),
                "truncated at {cut} accepted"
            );
        }
        let mut v1 = buf.clone();
        v1[0] |= 0x40;
        assert_eq!(Geneve::parse(&v1).unwrap_err(), GeneveError::Version(1));
        // An option claiming more data than the options area holds.
        let mut over = buf.clone();
        over[8 + 3] = 0x1f;
        assert_eq!(
            Geneve::parse(&over).unwrap_err(),
            GeneveError::OptionOverrun(8)
        );
        // Return-to-sender with the wrong length.
        let mut bad = Vec::new();
        let mut g = Geneve::new(1);
        g.options.push(GeneveOption::Other {
            class: OPTION_CLASS,
            type_: OPT_RETURN_TO_SENDER,
            data: vec![0; 8],
        });
        g.write(&mut bad).unwrap();
        assert_eq!(
            Geneve::parse(&bad).unwrap_err(),
            GeneveError::BadOption { type_: 1, len: 8 }
        );
        // An unknown critical option is refused, an unknown plain one kept.
        let mut crit = Vec::new();
        let mut g = Geneve::new(1);
        g.options.push(GeneveOption::Other {
            class: 0x0200,
            type_: 0x81,
            data: vec![],
        });
        g.write(&mut crit).unwrap();
        assert!(matches!(
            Geneve::parse(&crit),
            Err(GeneveError::UnknownCritical { type_: 0x81, .. })
        ));
    }

    #[test]
    fn frames_round_trip_through_the_outer_headers() {
        let outer = Outer {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: Ipv4Addr::new(192, 168, 0, 1),
            dst: Ipv4Addr::new(192, 168, 0, 2),
            ttl: 63,
            src_port: flow_port(0xdead_beef),
        };
        let inner = [0x5au8; 60];
        let frame = encapsulate(&outer, &header(), &inner).unwrap();
        assert_eq!(frame.len(), 14 + 20 + 8 + header().len() + inner.len());
        let (o, g, i) = decapsulate(&frame).unwrap();
        assert_eq!((o, g, i), (outer, header(), &inner[..]));
        assert!(o.src_port >= 49152);
        // Another UDP port is not Geneve.
        let mut other = frame.clone();
        other[14 + 20 + 3] = 0x35;
        assert!(matches!(
            decapsulate(&other),
            Err(GeneveError::NotGeneve(_))
        ));
        for cut in [0, 13, 14 + 19, 14 + 20 + 7, 14 + 20 + 8 + 3] {
            assert!(
                decapsulate(&frame[..cut]).is_err(),
                "frame cut at {cut} accepted"
            );
        }
    }
}
