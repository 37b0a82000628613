//! `src/maps.rs` and `bpf/maps.h` describe the same bytes: a C program built from the
//! header prints every size and offset, and the Rust structs must match.

use std::mem::{offset_of, size_of};
use std::process::Command;

use centaurus_xdp::maps::*;

#[test]
fn rust_structs_match_the_c_header() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("layout.c");
    let header = concat!(env!("CARGO_MANIFEST_DIR"), "/bpf/maps.h");
    let fields: &[(&str, &str)] = &[
        ("ep_key", "vni"),
        ("ep_key", "ip"),
        ("ep_value", "host_ip"),
        ("ep_value", "ifindex"),
        ("ep_value", "mac"),
        ("ep_value", "flags"),
        ("net_key", "prefixlen"),
        ("net_key", "vni"),
        ("net_key", "ip"),
        ("net_value", "count"),
        ("net_value", "hosts"),
        ("bounced_value", "count"),
        ("bounced_value", "dividers"),
        ("agent_value", "ep"),
        ("agent_value", "host_ip"),
        ("agent_value", "host_mac"),
        ("agent_value", "count"),
        ("agent_value", "bouncers"),
    ];
    let structs = [
        "ep_key",
        "ep_value",
        "net_key",
        "net_value",
        "bounced_value",
        "agent_value",
    ];
    let mut c = format!(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"{header}\"\nint main(void) {{\n"
    );
    for s in structs {
        c += &format!("printf(\"{s} %zu\\n\", sizeof(struct {s}));\n");
    }
    for (s, f) in fields {
        c += &format!("printf(\"{s}.{f} %zu\\n\", offsetof(struct {s}, {f}));\n");
    }
    c += "printf(\"DROP_REASONS %d\\n\", DROP_REASONS);\nreturn 0;\n}\n";
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
    let c_says: std::collections::BTreeMap<String, usize> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect();
    let rust_says: std::collections::BTreeMap<String, usize> = [
        ("ep_key", size_of::<EpKey>()),
        ("ep_value", size_of::<EpValue>()),
        ("net_key", size_of::<NetKey>()),
        ("net_value", size_of::<NetValue>()),
        ("bounced_value", size_of::<BouncedValue>()),
        ("agent_value", size_of::<AgentValue>()),
        ("ep_key.vni", offset_of!(EpKey, vni)),
        ("ep_key.ip", offset_of!(EpKey, ip)),
        ("ep_value.host_ip", offset_of!(EpValue, host_ip)),
        ("ep_value.ifindex", offset_of!(EpValue, ifindex)),
        ("ep_value.mac", offset_of!(EpValue, mac)),
        ("ep_value.flags", offset_of!(EpValue, flags)),
        ("net_key.prefixlen", offset_of!(NetKey, prefixlen)),
        ("net_key.vni", offset_of!(NetKey, vni)),
        ("net_key.ip", offset_of!(NetKey, ip)),
        ("net_value.count", offset_of!(NetValue, count)),
        ("net_value.hosts", offset_of!(NetValue, hosts)),
        ("bounced_value.count", offset_of!(BouncedValue, count)),
        ("bounced_value.dividers", offset_of!(BouncedValue, dividers)),
        ("agent_value.ep", offset_of!(AgentValue, ep)),
        ("agent_value.host_ip", offset_of!(AgentValue, host_ip)),
        ("agent_value.host_mac", offset_of!(AgentValue, host_mac)),
        ("agent_value.count", offset_of!(AgentValue, count)),
        ("agent_value.bouncers", offset_of!(AgentValue, bouncers)),
        ("DROP_REASONS", DROP_REASONS as usize),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(rust_says, c_says);
}
