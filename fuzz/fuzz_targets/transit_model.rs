//! The datapath's reference model on arbitrary frames, arriving on a substrate interface
//! and on an endpoint's veth of a host that bounces, divides and holds endpoints: every
//! frame gets a verdict and nothing panics; a frame the model sends on is valid Geneve.
//! (`tests/bpf_agrees.rs` holds the BPF programs to the same verdicts.)
#![no_main]

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use centaurus_vpc::tables::{EndpointKey, HostTables, Location, TableUpdate};
use centaurus_xdp::geneve::decapsulate;
use centaurus_xdp::model::{Host, HostInfo, Verdict};
use libfuzzer_sys::fuzz_target;

const ME: HostInfo = HostInfo { ip: Ipv4Addr::new(192, 168, 0, 1), mac: [2, 0, 0, 0, 0, 1] };

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
    for v in [h.transit_ingress(data, 0), h.agent_egress(local, data, 0)] {
        if let Verdict::Send { frame } = v {
            decapsulate(&frame).expect("the model sends valid Geneve");
        }
    }
});
