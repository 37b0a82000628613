//! An agent that starts after a killed one removes what that one left: a QEMU guest (the
//! KVM probe's, killed mid-probe), and pods' network namespaces and veths (recorded in the
//! network's ledger). Needs root, QEMU and iproute2 (`scripts/setup.sh`; CI runs as root);
//! without them it says why and skips.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use centaurus_core::model::{ObjectMeta, Pod, Resource};
use centaurus_runtime::{
    AttachmentLedger, HostLocalNetwork, NetworkPlugin, QemuRuntime, RuncRuntime, Runtime,
};

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn a_guest_left_by_a_killed_probe_is_stopped() {
    if !RuncRuntime::available() || !QemuRuntime::available(None) {
        eprintln!("SKIPPED: needs root and QEMU (scripts/setup.sh)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("kvm-probe");
    std::fs::create_dir_all(&probe).unwrap();
    // What a probe leaves when its agent dies by SIGKILL: a QEMU with its pidfile, whose
    // parent is gone (here: it was never ours to wait for).
    let pidfile = probe.join("qemu.pid");
    let mut left = Command::new("qemu-system-x86_64")
        .args([
            "-M",
            "none",
            "-nodefaults",
            "-display",
            "none",
            "-monitor",
            "none",
        ])
        .arg("-pidfile")
        .arg(&pidfile)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&pidfile).map_or(true, |p| !p.ends_with('\n')) {
        assert!(Instant::now() < deadline, "qemu wrote no pidfile");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = left.id();
    assert!(alive(pid));
    let stopped = QemuRuntime::new(dir.path(), None).reset().await.unwrap();
    assert_eq!(stopped, 1);
    let _ = left.wait();
    assert!(!alive(pid), "the left guest still runs");
    // A pidfile whose pid is now another process's is left alone.
    std::fs::write(&pidfile, std::process::id().to_string()).unwrap();
    assert_eq!(QemuRuntime::new(dir.path(), None).reset().await.unwrap(), 0);
}

fn netns_exists(name: &str) -> bool {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

#[tokio::test]
async fn pod_networks_left_by_a_killed_agent_are_removed() {
    if !RuncRuntime::available() {
        eprintln!("SKIPPED: needs root (scripts/setup.sh)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("network");
    let bridge = format!("cbr125-{}", std::process::id() % 100_000);
    let mut pod = Pod::typed(ObjectMeta::namespaced("acme", "default", "web"));
    pod.metadata.uid = format!("{:08x}-reap-0000-0000-000000000000", std::process::id());
    let ns = HostLocalNetwork::netns_name(&pod.metadata.uid);
    {
        let first = HostLocalNetwork::new(bridge.clone(), Ipv4Addr::new(10, 125, 0, 1))
            .with_ledger(AttachmentLedger::open(&ledger).unwrap());
        first.attach(&pod).await.unwrap();
        assert!(netns_exists(&ns));
        // Dropped without a release: the agent was killed.
    }
    assert!(netns_exists(&ns));
    let next = HostLocalNetwork::new(bridge.clone(), Ipv4Addr::new(10, 125, 0, 1))
        .with_ledger(AttachmentLedger::open(&ledger).unwrap());
    assert_eq!(next.reap().await, 1);
    assert!(!netns_exists(&ns), "the namespace is left");
    let veth = Command::new("ip")
        .args(["link", "show", &format!("cv{}", &ns["cent-".len()..])])
        .output()
        .unwrap();
    assert!(!veth.status.success(), "the host veth is left");
    // Reaped once: what this agent attaches afterwards stays.
    next.attach(&pod).await.unwrap();
    assert_eq!(next.reap().await, 0);
    assert!(netns_exists(&ns));
    next.release_all().await;
    assert!(!netns_exists(&ns));
    let _ = Command::new("ip").args(["link", "del", &bridge]).status();
}
