//! The datapath's reference model on arbitrary frames, arriving on a substrate interface
//! and on an endpoint's veth of a host that bounces, divides, holds endpoints and Services
//! (one over two backends, TCP and UDP, one without backends): every frame gets a verdict
//! and nothing panics; a frame the model sends on is valid Geneve; whatever it delivers or
//! sends keeps its length.
//! (`tests/bpf_agrees.rs` holds the BPF programs to the same verdicts.)
#![no_main]

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use centaurus_vpc::maglev::Backend;
use centaurus_vpc::tables::{EndpointKey, HostTables, Location, ServiceKey, TableUpdate, TCP, UDP};
use centaurus_xdp::geneve::decapsulate;
use centaurus_xdp::model::{Host, HostInfo, Verdict};
use libfuzzer_sys::fuzz_target;

const ME: HostInfo = HostInfo { ip: Ipv4Addr::new(192, 168, 0, 1), mac: [2, 0, 0, 0, 0, 1] };

/// A Service at `vip` port 80 over the first `n` of 10.0.1.2 (local) and 10.0.1.3 (remote).
fn service(vip: Ipv4Addr, protocol: u8, n: u8) -> TableUpdate {
    TableUpdate::PutService {
        key: ServiceKey { vni: 1000, vip, port: 80, protocol },
        backends: (0..n).map(|i| Backend::new(Ipv4Addr::new(10, 0, 1, 2 + i), 8080)).collect(),
        affinity: protocol == UDP,
    }
}

fn host() -> &'static Host {
    static T: OnceLock<Host> = OnceLock::new();
    T.get_or_init(|| {
        let mut t = HostTables::default();
        let peer = Ipv4Addr::new(192, 168, 0, 2);
        let local = EndpointKey::new(1000, Ipv4Addr::new(10, 0, 1, 2));
        for u in [
            TableUpdate::PutEndpoint { key: local, location: Location::Local { veth: "ve0".into(), mac: [2, 1, 1, 1, 1, 1] } },
            TableUpdate::PutEndpoint {
                key: EndpointKey::new(1000, Ipv4Addr::new(10, 0, 1, 3)),
                location: Location::Remote { host: peer, mac: [2, 1, 1, 1, 1, 2] },
            },
            TableUpdate::PutAgent { key: local, bouncers: vec![ME.ip, peer] },
            TableUpdate::PutBouncedSubnet { vni: 1000, cidr: "10.0.1.0/24".parse().unwrap(), dividers: vec![peer] },
            TableUpdate::PutDividedSubnet { vni: 1000, cidr: "10.0.2.0/24".parse().unwrap(), bouncers: vec![peer] },
            service(Ipv4Addr::new(10, 96, 0, 20), TCP, 2),
            service(Ipv4Addr::new(10, 96, 0, 20), UDP, 2),
            service(Ipv4Addr::new(10, 96, 0, 21), TCP, 0),
        ] {
            t.apply(&u);
        }
        let mut h = Host::new(ME);
        h.tables = t;
        h.neighbors.insert(peer, [2, 0, 0, 0, 0, 2]);
        h
    })
}

fuzz_target!(|data: &[u8]| {
    let local = EndpointKey::new(1000, Ipv4Addr::new(10, 0, 1, 2));
    let mut h = host().clone();
    for (v, from_agent) in [(h.transit_ingress(data, 0), false), (h.agent_egress(local, data, 0), true)] {
        match v {
            Verdict::Send { frame } => {
                decapsulate(&frame).expect("the model sends valid Geneve");
                let added = if from_agent { centaurus_xdp::model::ENCAP_LEN } else { 0 };
                assert_eq!(frame.len(), data.len() + added);
            }
            Verdict::Deliver { frame, .. } if from_agent => assert_eq!(frame.len(), data.len()),
            _ => {}
        }
    }
});
