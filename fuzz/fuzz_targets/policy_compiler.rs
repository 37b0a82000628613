//! NetworkPolicy manifests, from parsing to the datapath's lookup tables: a manifest
//! parses or is refused without panicking; an admitted policy resolves against a fixed
//! set of pods and namespaces, and every endpoint's compiled rules (the class bitmaps the
//! programs look up) give the verdict the rules read directly give, for every probe
//! packet: each pod's address and some others, four protocols, ports at range edges.
#![no_main]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use centaurus_core::model::{NetworkPolicy, Resource};
use centaurus_vpc::policy::{Member, Resolver, Way, endpoint_policies};
use libfuzzer_sys::fuzz_target;

fn members() -> Vec<Member> {
    let pod = |ns: &str, app: &str, last: u8, port: u16| Member {
        namespace: ns.into(),
        labels: BTreeMap::from([("app".to_owned(), app.to_owned())]),
        ip: Ipv4Addr::new(10, 0, last / 4, last),
        named_ports: vec![("http".into(), 6, port), ("dns".into(), 17, 53)],
    };
    vec![
        pod("default", "web", 1, 8080),
        pod("default", "db", 2, 5432),
        pod("default", "web", 9, 80),
        pod("ops", "probe", 3, 9090),
        pod("kube-system", "dns", 10, 53),
    ]
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut policy) = serde_json::from_slice::<NetworkPolicy>(data) else {
        return;
    };
    if policy.metadata.namespace.is_empty() {
        policy.metadata.namespace = "default".into();
    }
    policy.set_defaults();
    if policy.validate().is_err() {
        return;
    }
    let members = members();
    let labels = BTreeMap::from([("team".to_owned(), "ops".to_owned())]);
    let none = BTreeMap::new();
    let resolver = Resolver::new(
        [("default", &none), ("ops", &labels), ("kube-system", &none)],
        &members,
    );
    let policies = endpoint_policies(std::slice::from_ref(&policy), &resolver);
    let mut peers: Vec<Ipv4Addr> = members.iter().map(|m| m.ip).collect();
    peers.extend([
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::new(10, 0, 0, 0),
        Ipv4Addr::new(10, 255, 255, 255),
        Ipv4Addr::new(192, 168, 1, 1),
        Ipv4Addr::BROADCAST,
    ]);
    for (ip, p) in &policies {
        let compiled = p.compile();
        for way in [Way::Ingress, Way::Egress] {
            for peer in &peers {
                for protocol in [6, 17, 132, 1] {
                    for port in [None, Some(0), Some(1), Some(53), Some(80), Some(8080), Some(65535)] {
                        assert_eq!(
                            compiled.allows(way, *peer, protocol, port),
                            p.allows(way, *peer, protocol, port),
                            "{ip}: {way:?} {peer} {protocol} {port:?}"
                        );
                    }
                }
            }
        }
    }
});
