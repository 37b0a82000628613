//! `src/maps.rs` and `bpf/maps.h` describe the same bytes: a C program built from the
//! header prints every size and offset, and the Rust structs must match.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::process::Command;

use centaurus_xdp::maps::*;

/// `(C name, Rust size or offset)` for every struct and field the programs share.
fn rust_layout() -> Vec<(&'static str, usize)> {
    vec![
        ("sizeof(struct host_config)", size_of::<HostConfig>()),
        (
            "offsetof(struct host_config, ip)",
            offset_of!(HostConfig, ip),
        ),
        (
            "offsetof(struct host_config, mac)",
            offset_of!(HostConfig, mac),
        ),
        (
            "offsetof(struct host_config, ifindex)",
            offset_of!(HostConfig, ifindex),
        ),
        ("sizeof(struct ep_key)", size_of::<EpKey>()),
        ("offsetof(struct ep_key, vni)", offset_of!(EpKey, vni)),
        ("offsetof(struct ep_key, ip)", offset_of!(EpKey, ip)),
        ("sizeof(struct ep_value)", size_of::<EpValue>()),
        (
            "offsetof(struct ep_value, host_ip)",
            offset_of!(EpValue, host_ip),
        ),
        (
            "offsetof(struct ep_value, ifindex)",
            offset_of!(EpValue, ifindex),
        ),
        ("offsetof(struct ep_value, mac)", offset_of!(EpValue, mac)),
        (
            "offsetof(struct ep_value, flags)",
            offset_of!(EpValue, flags),
        ),
        // aya's LPM key is the prefix length followed by NetData.
        ("sizeof(struct net_key)", 4 + size_of::<NetData>()),
        (
            "offsetof(struct net_key, vni)",
            4 + offset_of!(NetData, vni),
        ),
        ("offsetof(struct net_key, ip)", 4 + offset_of!(NetData, ip)),
        ("sizeof(struct net_value)", size_of::<NetValue>()),
        (
            "offsetof(struct net_value, flags)",
            offset_of!(NetValue, flags),
        ),
        (
            "offsetof(struct net_value, count)",
            offset_of!(NetValue, count),
        ),
        (
            "offsetof(struct net_value, hosts)",
            offset_of!(NetValue, hosts),
        ),
        ("sizeof(struct bounced_value)", size_of::<BouncedValue>()),
        (
            "offsetof(struct bounced_value, flags)",
            offset_of!(BouncedValue, flags),
        ),
        (
            "offsetof(struct bounced_value, count)",
            offset_of!(BouncedValue, count),
        ),
        (
            "offsetof(struct bounced_value, dividers)",
            offset_of!(BouncedValue, dividers),
        ),
        ("sizeof(struct agent_value)", size_of::<AgentValue>()),
        (
            "offsetof(struct agent_value, ep)",
            offset_of!(AgentValue, ep),
        ),
        (
            "offsetof(struct agent_value, count)",
            offset_of!(AgentValue, count),
        ),
        (
            "offsetof(struct agent_value, bouncers)",
            offset_of!(AgentValue, bouncers),
        ),
        ("sizeof(struct learned_value)", size_of::<LearnedValue>()),
        (
            "offsetof(struct learned_value, host_ip)",
            offset_of!(LearnedValue, host_ip),
        ),
        (
            "offsetof(struct learned_value, host_mac)",
            offset_of!(LearnedValue, host_mac),
        ),
        (
            "offsetof(struct learned_value, seen_ns)",
            offset_of!(LearnedValue, seen_ns),
        ),
        ("sizeof(struct host_mac)", size_of::<HostMac>()),
        ("sizeof(struct svc_key)", size_of::<SvcKey>()),
        ("offsetof(struct svc_key, vip)", offset_of!(SvcKey, vip)),
        ("offsetof(struct svc_key, port)", offset_of!(SvcKey, port)),
        ("offsetof(struct svc_key, proto)", offset_of!(SvcKey, proto)),
        ("sizeof(struct ipport)", size_of::<IpPort>()),
        ("offsetof(struct ipport, port)", offset_of!(IpPort, port)),
        ("sizeof(struct svc_value)", size_of::<SvcValue>()),
        (
            "offsetof(struct svc_value, count)",
            offset_of!(SvcValue, count),
        ),
        (
            "offsetof(struct svc_value, backends)",
            offset_of!(SvcValue, backends),
        ),
        (
            "offsetof(struct svc_value, slots)",
            offset_of!(SvcValue, slots),
        ),
        ("sizeof(struct ct_key)", size_of::<CtKey>()),
        ("offsetof(struct ct_key, client)", offset_of!(CtKey, client)),
        ("offsetof(struct ct_key, peer)", offset_of!(CtKey, peer)),
        (
            "offsetof(struct ct_key, client_port)",
            offset_of!(CtKey, client_port),
        ),
        (
            "offsetof(struct ct_key, peer_port)",
            offset_of!(CtKey, peer_port),
        ),
        ("offsetof(struct ct_key, proto)", offset_of!(CtKey, proto)),
        ("offsetof(struct ct_key, dir)", offset_of!(CtKey, dir)),
        ("sizeof(struct policy_bits)", size_of::<PolicyBits>()),
        ("sizeof(struct policy_value)", size_of::<PolicyValue>()),
        (
            "offsetof(struct policy_value, generation)",
            offset_of!(PolicyValue, generation),
        ),
        (
            "offsetof(struct policy_value, any_port)",
            offset_of!(PolicyValue, any_port),
        ),
        (
            "sizeof(struct policy_peer_key)",
            4 + size_of::<PolicyPeerData>(),
        ),
        (
            "offsetof(struct policy_peer_key, way)",
            4 + offset_of!(PolicyPeerData, way),
        ),
        (
            "offsetof(struct policy_peer_key, peer)",
            4 + offset_of!(PolicyPeerData, peer),
        ),
        (
            "sizeof(struct policy_port_key)",
            4 + size_of::<PolicyPortData>(),
        ),
        (
            "offsetof(struct policy_port_key, proto)",
            4 + offset_of!(PolicyPortData, proto),
        ),
        (
            "offsetof(struct policy_port_key, port)",
            4 + offset_of!(PolicyPortData, port),
        ),
        (
            "offsetof(struct policy_peer_key, peer) * 8 - 32",
            POLICY_PEER_FIXED_BITS as usize,
        ),
        (
            "offsetof(struct policy_port_key, port) * 8 - 32",
            POLICY_PORT_FIXED_BITS as usize,
        ),
        ("POLICY_WORDS", POLICY_WORDS),
        ("WAY_INGRESS", usize::from(WAY_INGRESS)),
        ("WAY_EGRESS", usize::from(WAY_EGRESS)),
        (
            "POLICY_ISOLATE_INGRESS",
            usize::from(POLICY_ISOLATE_INGRESS),
        ),
        ("POLICY_ISOLATE_EGRESS", usize::from(POLICY_ISOLATE_EGRESS)),
        ("CT_POLICY_OUT", usize::from(CT_POLICY_OUT)),
        ("CT_POLICY_IN", usize::from(CT_POLICY_IN)),
        ("MAX_BACKENDS", MAX_BACKENDS),
        ("MAGLEV_SLOTS", MAGLEV_SLOTS),
        ("MAGLEV_SIZE", centaurus_vpc::maglev::TABLE_SIZE),
        ("SVC_AFFINITY", SVC_AFFINITY as usize),
        ("CT_SERVICE", usize::from(CT_SERVICE)),
        ("CT_REPLY", usize::from(CT_REPLY)),
        ("MAX_BOUNCERS", MAX_BOUNCERS),
        ("MAX_DIVIDERS", MAX_DIVIDERS),
        ("EP_LOCAL", usize::from(EP_LOCAL)),
        ("EP_TAP", usize::from(EP_TAP)),
        ("NET_SUBNET", NET_SUBNET as usize),
        ("COUNTERS", COUNTERS as usize),
        // What the API lets a subnet or VPC ask for fits the maps.
        ("MAX_BOUNCERS", centaurus_vpc::kinds::MAX_BOUNCERS as usize),
        ("MAX_DIVIDERS", centaurus_vpc::kinds::MAX_DIVIDERS as usize),
    ]
}

#[test]
fn rust_structs_match_the_c_header() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("layout.c");
    let header = concat!(env!("CARGO_MANIFEST_DIR"), "/bpf/maps.h");
    let mut c = format!(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"{header}\"\nint main(void) {{\n"
    );
    for (expr, _) in rust_layout() {
        c += &format!("printf(\"%s %zu\\n\", \"{expr}\", (size_t)({expr}));\n");
    }
    c += "return 0;\n}\n";
    std::fs::write(&src, c).unwrap();
    let bin = dir.path().join("layout");
    let out = Command::new("cc")
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .output()
        .expect("a C compiler (cc) is needed: apt-get install gcc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&bin).output().unwrap();
    let c_says: Vec<(String, usize)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect();
    let rust_says: Vec<(String, usize)> = rust_layout()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    assert_eq!(rust_says, c_says);
    // The counters' names follow the enum.
    let names: BTreeMap<usize, &str> = COUNTER_NAMES.iter().copied().enumerate().collect();
    assert_eq!(names[&0], "drop_malformed");
    assert_eq!(names[&9], "drop_no_backend");
    assert_eq!(names[&(COUNTERS as usize - 1)], "reply_nat");
}
