//! Pods' network wiring on the real kernel, over netlink: a container endpoint's namespace
//! and veth pair (host side in another namespace, as a droplet's), and a VM endpoint's tap,
//! which a QEMU guest takes as its NIC with the endpoint's address, MAC, MTU, gateway and
//! resolv.conf. Needs root (QEMU and the VM kernel for the guest; `scripts/setup.sh`);
//! without them it says why and skips.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use centaurus_core::model::{ObjectMeta, Pod, PodDnsConfig, PodSpec, Resource, VirtualMachine};
use centaurus_runtime::vpc::{unwire, wire, wire_guest};
use centaurus_runtime::{QemuRuntime, Runtime, SandboxNetwork, Wiring, WorkloadState};
use centaurus_vpc::kinds::EndpointStatus;

fn root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `ip` run to look, not to make.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// A droplet-like namespace, removed on drop.
struct Host(String);

impl Host {
    async fn new(name: &str) -> Self {
        let name = format!("{name}-{}", std::process::id() % 100_000);
        centaurus_netdev::netns::del_netns(&name).await.unwrap();
        centaurus_netdev::netns::add_netns(&name).await.unwrap();
        Host(name)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn endpoint(n: u32) -> EndpointStatus {
    EndpointStatus {
        ip: format!("10.77.0.{n}"),
        prefix_len: 24,
        mac: format!("02:77:00:00:00:{n:02x}"),
        gateway: "10.77.0.1".into(),
        veth: format!("vw{}-{n}", std::process::id() % 100_000),
        netns: format!("cent-w{}-{n}", std::process::id() % 100_000),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_endpoint_is_a_namespace_and_a_veth_pair() {
    if !root() {
        eprintln!("SKIP: wiring needs root");
        return;
    }
    let host = Host::new("cent-wh").await;
    let w = Wiring {
        host_netns: Some(host.0.clone()),
        mtu: Some(1400),
        pod_xdp: None,
    };
    let s = endpoint(5);
    let path = wire(&w, &s).await.unwrap();
    assert!(path.ends_with(&s.netns), "{path:?}");
    let pod = ip(&["-n", &s.netns, "addr", "show", "eth0"]);
    assert!(pod.contains("inet 10.77.0.5/24"), "{pod}");
    assert!(pod.contains("link/ether 02:77:00:00:00:05"), "{pod}");
    assert!(
        pod.contains("mtu 1400") && pod.contains("state UP"),
        "{pod}"
    );
    let route = ip(&["-n", &s.netns, "route"]);
    assert!(route.contains("default via 10.77.0.1 dev eth0"), "{route}");
    assert!(ip(&["-n", &s.netns, "link", "show", "lo"]).contains("UP"));
    let side = ip(&["-n", &host.0, "link", "show", &s.veth]);
    assert!(side.contains("mtu 1400") && side.contains("UP"), "{side}");
    // Not in this namespace: it was made in the host's.
    assert!(!ip(&["link", "show", &s.veth]).contains("mtu"));

    // With a loaded XDP program (droplets at the XDP hook), the pod's side runs it, with
    // the offloads XDP cannot carry turned off.
    let program = centaurus_xdp::loader::Transit::pass_program().unwrap();
    let xdp = Wiring {
        pod_xdp: Some(std::sync::Arc::new(program)),
        ..w.clone()
    };
    let s2 = endpoint(7);
    wire(&xdp, &s2).await.unwrap();
    let pod = ip(&["-n", &s2.netns, "link", "show", "eth0"]);
    assert!(pod.contains("xdp") && pod.contains("prog/xdp id"), "{pod}");
    let offloads = Command::new("ip")
        .args(["netns", "exec", &s2.netns, "ethtool", "-k", "eth0"])
        .output()
        .unwrap();
    let offloads = String::from_utf8_lossy(&offloads.stdout);
    assert!(
        offloads.contains("tx-checksumming: off")
            && offloads.contains("generic-segmentation-offload: off"),
        "{offloads}"
    );
    unwire(&xdp, &s2.veth, &s2.netns).await;

    // Wiring again (a retry) after a partial teardown starts clean.
    unwire(&w, &s.veth, &s.netns).await;
    assert!(
        ip(&["netns", "list"])
            .lines()
            .all(|l| !l.starts_with(&s.netns))
    );
    assert!(!ip(&["-n", &host.0, "link", "show", &s.veth]).contains("mtu"));
    // Bad names are refused, not passed on.
    let bad = EndpointStatus {
        netns: "../etc".into(),
        ..endpoint(6)
    };
    assert!(wire(&w, &bad).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_guest_takes_its_endpoints_tap_as_its_nic() {
    if !root() || !QemuRuntime::available(None) {
        eprintln!("SKIP: a VM guest needs root, qemu-system-x86_64 and the VM kernel");
        return;
    }
    let host = Host::new("cent-wv").await;
    let w = Wiring {
        host_netns: Some(host.0.clone()),
        mtu: Some(1400),
        pod_xdp: None,
    };
    let s = endpoint(9);
    let nic = wire_guest(&w, &s).await.unwrap();
    assert_eq!(nic.address, "10.77.0.9/24");
    let tap = ip(&["-n", &host.0, "-d", "link", "show", &s.veth]);
    assert!(
        tap.contains("tun type tap") && tap.contains("mtu 1400"),
        "{tap}"
    );
    // The host side plays the gateway here (the transit agent answers for it on a droplet).
    ip(&["-n", &host.0, "addr", "add", "10.77.0.1/24", "dev", &s.veth]);

    let dir = tempfile::tempdir().unwrap();
    let rt = QemuRuntime::new(dir.path(), None);
    let mut pod = Pod::typed(ObjectMeta::namespaced("acme", "dev", "guest"));
    pod.metadata.uid = "wiring-guest".into();
    pod.spec = PodSpec {
        virtual_machine: Some(VirtualMachine {
            name: "vm".into(),
            image: "tiny".into(),
            user_data: "#!/bin/sh\ncat /etc/resolv.conf\nip -o link show eth0\n".into(),
            ..Default::default()
        }),
        dns_policy: "None".into(),
        dns_config: Some(PodDnsConfig {
            nameservers: vec!["10.96.0.10".into()],
            searches: vec!["dev.svc.cluster.local".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let net = SandboxNetwork {
        netns: None,
        ip: s.ip.clone(),
        nic: Some(nic),
    };
    rt.create_sandbox(&pod, &net).await.unwrap();
    rt.write_volumes(&pod.metadata.uid, &BTreeMap::new())
        .await
        .unwrap();
    rt.create_workload(&pod, "vm").await.unwrap();
    rt.start_workload(&pod.metadata.uid, "vm").await.unwrap();
    let uid = pod.metadata.uid.as_str();
    let console = async || {
        String::from_utf8_lossy(&rt.logs(uid, "vm").await.unwrap_or_default()).into_owned()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !console().await.contains("centaurus-vm: ready") {
        let status = rt.workload_status(&pod.metadata.uid, "vm").await.unwrap();
        assert!(
            tokio::time::Instant::now() < deadline
                && matches!(status.state, WorkloadState::Running { .. }),
            "the guest did not come up: {:?}\n{}",
            status.state,
            console().await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = console().await;
    assert!(
        log.contains("centaurus-vm: eth0 10.77.0.9/24 via 10.77.0.1"),
        "{log}"
    );
    assert!(log.contains("nameserver 10.96.0.10"), "{log}");
    assert!(log.contains("search dev.svc.cluster.local"), "{log}");
    assert!(log.contains("mtu 1400"), "{log}");
    assert!(log.contains("link/ether 02:77:00:00:00:09"), "{log}");
    // The guest answers from the host's side of its tap.
    let ping = ip(&[
        "netns",
        "exec",
        &host.0,
        "busybox",
        "ping",
        "-c",
        "3",
        "-W",
        "2",
        "10.77.0.9",
    ]);
    assert!(ping.contains("3 packets received"), "{ping}\n{log}");
    rt.remove_sandbox(&pod.metadata.uid).await.unwrap();
    unwire(&w, &s.veth, &s.netns).await;
    assert!(!ip(&["-n", &host.0, "link", "show", &s.veth]).contains("mtu"));
}
