//! The datapath's reference model on arbitrary frames, arriving on a substrate interface
//! and on an endpoint's veth of a host that bounces, divides and holds endpoints: every
//! frame gets a verdict and nothing panics; a frame the model sends on is valid Geneve.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use centaurus_vpc::tables::{EndpointKey, HostTables, Location, TableUpdate};
use centaurus_xdp::geneve::decapsulate;
use centaurus_xdp::model::{HostInfo, Verdict, agent_egress, transit_ingress};
use libfuzzer_sys::fuzz_target;

const ME: HostInfo = HostInfo { ip: Ipv4Addr::new(192, 168, 0, 1), mac: [2, 0, 0, 0, 0, 1] };

fn tables() -> &'static HostTables {
    static T: OnceLock<HostTables> = OnceLock::new();
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
        t
    })
}

fuzz_target!(|data: &[u8]| {
    let neighbor = |ip: Ipv4Addr| Some([2, 0, 0, 0, 0, ip.octets()[3]]);
    let local = EndpointKey::new(1000, Ipv4Addr::new(10, 0, 1, 2));
    for v in [
        transit_ingress(tables(), ME, data, &neighbor),
        agent_egress(tables(), ME, local, data, &neighbor),
    ] {
        if let Verdict::Transmit { frame } = v {
            // ARP replies go back out too; anything else must be an overlay frame.
            if frame.get(12..14) != Some(&[0x08, 0x06]) {
                decapsulate(&frame).expect("the model sends valid Geneve");
            }
        }
    }
});
