//! `centaurus up --droplets 2`: a region on two droplets made on this machine, each a node
//! with its own transit daemon. Through a real kubectl, two tenants each run a server pod on
//! one droplet and a client pod on the other, in their default VPCs (the same CIDR, so the
//! same addresses): the clients ping their server and send it a line over TCP by pod IP,
//! through the overlay datapath (TC hook); each server hears only its own tenant's client; both droplets'
//! transit daemons counted the overlay frames they sent and delivered. Each tenant exposes
//! its server as a Service (both get the same cluster IP) and a pod on the other droplet
//! fetches a page from it by that address: the agent translates the VIP to the server and
//! the reply back, so each tenant reaches only its own server. A NetworkPolicy lets only
//! pods labelled `app=fetch` reach acme's server, by pod IP or Service, in the datapath;
//! beta's stays open. Each tenant's VM pod (QEMU guest, its virtio-net device a tap in
//! the droplet with the transit agent on it) reaches its server by IP and TCP and its
//! Services by DNS name, and is reached by it, at the same address as the other tenant's
//! VM. After the region stops and
//! starts again on the same data, a new pod reaches a server as before.
//!
//! Needs root, runc, iproute2, ethtool and kubectl (`scripts/setup.sh`); CI runs it as root.

mod common;

use std::time::Instant;

use base64::Engine as _;
use centaurus_runtime::{QemuRuntime, RuncRuntime};
use centaurus_xdp::testbed::is_root;
use centaurus_xdp::transitd::{Dump, request};
use common::{Kubectl, eventually, kubectl_binary, up};
use serde_json::Value;

/// A busybox pod on `node` running `script` (restarted after a node's restart, as the
/// default `restartPolicy: Always` says), labelled `app: NAME`.
fn pod(name: &str, node: &str, script: &str) -> String {
    labelled_pod(name, name, node, script)
}

/// [`pod`] labelled `app: APP`.
fn labelled_pod(name: &str, app: &str, node: &str, script: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", script]}],
        },
    })
    .to_string()
}

fn apply(k: &Kubectl, dir: &std::path::Path, name: &str, manifest: &str) {
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, manifest).unwrap();
    k.run(&["apply", "-f", file.to_str().unwrap()]);
}

fn running(k: &Kubectl, name: &str) -> Value {
    k.run(&[
        "wait",
        "--for=jsonpath={.status.phase}=Running",
        &format!("pod/{name}"),
        "--timeout=90s",
    ]);
    k.json(&["get", "pod", name])
}

/// The pods' network namespaces on this machine (the droplets' are `cent-r…`).
fn pod_namespaces() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("cent-") && !n.starts_with("cent-r"))
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

/// A VM pod (the tiny image) on `node`, whose guest runs `script` once up.
fn vm_pod(name: &str, node: &str, script: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "virtualMachine": {
                "name": "vm",
                "image": "tiny",
                "userData": base64::engine::general_purpose::STANDARD.encode(script),
                "resources": {"limits": {"cpu": "1", "memory": "128Mi"}},
            },
        },
    })
    .to_string()
}

/// A VM pod's serial console.
fn console(k: &Kubectl, name: &str) -> String {
    k.run(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/default/pods/{name}/log"),
    ])
}

fn vm_pods_join_their_tenants_overlay(
    dir: &std::path::Path,
    data: &std::path::Path,
    servers: &[(&str, Kubectl, String)],
    vip: &str,
) {
    for (tenant, k, ip) in servers {
        let script = format!(
            "#!/bin/sh\n\
             (echo vm of {tenant} | nc -l -p 7000 > /tmp/heard; echo heard $(cat /tmp/heard)) &\n\
             cat /etc/resolv.conf\n\
             ping -c 3 -W 2 {ip}\n\
             for i in $(seq 1 20); do echo vm-get | nc -w 3 {ip} 8080 | grep page && break; sleep 1; done\n\
             for i in $(seq 1 20); do nslookup web > /tmp/web 2>&1; grep -q 'Address: 10.96' /tmp/web && break; sleep 1; done\n\
             vip=$(grep 'Address: 10.96' /tmp/web | head -1 | cut -d' ' -f2)\n\
             echo get | nc -w 3 $vip 80 | sed 's/^/by name: /'\n\
             cat /tmp/web; echo other-names\n\
             nslookup acme-web.default.svc.cluster.local\n\
             echo vm-done\n"
        );
        apply(k, dir, "vm", &vm_pod("vm", "droplet-0", &script));
    }
    let mut addresses = Vec::new();
    for (tenant, k, _) in servers {
        let started = Instant::now();
        let vm = running(k, "vm");
        eprintln!("{tenant}: VM Running after {:?}", started.elapsed());
        let deadline = Instant::now() + std::time::Duration::from_secs(120);
        let log = loop {
            let log = console(k, "vm");
            if log.contains("vm-done") {
                break log;
            }
            assert!(
                Instant::now() < deadline,
                "{tenant}: the VM's guest did not run its script: {log}\ndroplet-0: {:?}",
                dump(&data.join("droplets/transitd-0.sock"))
            );
            std::thread::sleep(std::time::Duration::from_millis(500));
        };
        let vm_ip = vm["status"]["podIP"].as_str().unwrap().to_owned();
        assert!(
            log.contains(&format!("centaurus-vm: eth0 {vm_ip}/")),
            "{tenant}: {log}"
        );
        assert!(log.contains("3 packets received"), "{tenant}: {log}");
        assert!(
            log.contains(&format!("page of {tenant}")),
            "{tenant}: {log}"
        );
        // The Service, by the address its name resolved to (busybox's nc cannot resolve).
        assert!(
            log.contains(&format!("by name: page of {tenant}")),
            "{tenant}: {log}"
        );
        assert!(
            log.contains("nameserver 10.96.0.10")
                && log.contains("search default.svc.cluster.local svc.cluster.local"),
            "{tenant}: {log}"
        );
        let (own, other) = log.split_once("other-names").unwrap();
        assert!(own.contains(&format!("Address: {vip}")), "{tenant}: {log}");
        assert_eq!(
            other.contains("NXDOMAIN"),
            *tenant == "beta",
            "{tenant}: {log}"
        );
        // The other way: the server on droplet-1 pings the VM and sends it a line.
        let sent = k.run(&[
            "exec",
            "server",
            "--",
            "sh",
            "-c",
            &format!("ping -c 3 -W 2 {vm_ip}; echo hello vm | nc -w 3 {vm_ip} 7000"),
        ]);
        assert!(sent.contains("3 packets received"), "{tenant}: {sent}");
        assert!(
            sent.contains(&format!("vm of {tenant}")),
            "{tenant}: {sent}"
        );
        eventually(30, "the VM heard the server", || {
            console(k, "vm").contains("heard hello vm").then_some(())
        });
        assert!(
            k.run(&["logs", "server"]).contains("vm-get"),
            "{tenant}'s server heard its VM"
        );
        addresses.push(vm_ip);
    }
    assert_eq!(
        addresses[0], addresses[1],
        "the tenants' VMs have the same address, each on its own overlay"
    );
    for (_, k, _) in servers {
        k.run(&["delete", "pod", "vm", "--wait=true", "--timeout=60s"]);
    }
}

fn dump(socket: &std::path::Path) -> Dump {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, body) = rt
        .block_on(request(socket, "GET", "/v1/dump", b""))
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn pods_on_two_droplets_reach_each_other_through_the_overlay() {
    if !is_root() || !RuncRuntime::available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs this test as root with runc"
        );
        eprintln!("SKIPPED: droplets need root and runc (scripts/setup.sh)");
        return;
    }
    let Some(bin) = kubectl_binary() else {
        assert!(std::env::var_os("CI").is_none(), "CI installs kubectl");
        eprintln!("SKIPPED: no kubectl ($KUBECTL, .venv/bin/kubectl or PATH)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("region");
    let addr = common::free_addr();
    let namespaces_before = pod_namespaces();
    let region = up(&data, &addr, &["--droplets", "2"]);
    let admin = Kubectl {
        bin: bin.clone(),
        kubeconfig: data.join("admin.kubeconfig"),
        cache: dir.path().join("cache-admin"),
    };
    eventually(60, "both droplets' nodes are Ready", || {
        let nodes = admin.json(&["get", "nodes"]);
        let ready = nodes["items"]
            .as_array()?
            .iter()
            .filter(|n| {
                n["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .map(|n| {
                n["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect::<Vec<_>>();
        (ready == ["droplet-0", "droplet-1"]).then_some(())
    });

    let mut servers = Vec::new();
    for tenant in ["acme", "beta"] {
        let manifest = format!(
            "apiVersion: v1\nkind: Tenant\nmetadata:\n  name: {tenant}\nspec:\n  quota:\n    pods: \"10\"\n"
        );
        let file = dir.path().join(format!("tenant-{tenant}.yaml"));
        std::fs::write(&file, manifest).unwrap();
        admin.run(&["create", "-f", file.to_str().unwrap()]);
        let k = Kubectl::tenant_admin(&bin, &data, dir.path(), tenant);
        // The server prints what it hears, then stays.
        let started = Instant::now();
        apply(
            &k,
            dir.path(),
            "server",
            &pod(
                "server",
                "droplet-1",
                &format!(
                    "while true; do echo page of {tenant} | nc -l -p 8080; done & \
                     echo ack from {tenant} | nc -l -p 5000; sleep 3600"
                ),
            ),
        );
        let server = running(&k, "server");
        eprintln!("{tenant}: server Running after {:?}", started.elapsed());
        assert_eq!(server["spec"]["nodeName"], "droplet-1");
        let ip = server["status"]["podIP"].as_str().unwrap().to_owned();
        assert!(ip.starts_with("10.0."), "from the tenant's VPC: {ip}");
        servers.push((tenant, k, ip));
    }
    assert_eq!(
        servers[0].2, servers[1].2,
        "the tenants' VPCs overlap: their servers have the same address"
    );
    for (tenant, k, ip) in &servers {
        // Running means the server's process started, not that it listens yet: the client
        // tries again until its own tenant's server answers.
        let script = format!(
            "ping -c 3 -W 2 {ip}; for i in 1 2 3 4 5; do \
             echo hello from {tenant} | nc -w 3 {ip} 5000 | grep 'ack from' && break; \
             echo retry; sleep 1; done; echo sent; sleep 3600"
        );
        apply(
            k,
            dir.path(),
            "client",
            &pod("client", "droplet-0", &script),
        );
        let client = running(k, "client");
        assert_eq!(client["spec"]["nodeName"], "droplet-0");
        eventually(60, "the client pinged and sent", || {
            let log = k.run(&["logs", "client"]);
            log.contains("sent").then_some(())
        });
        let log = k.run(&["logs", "client"]);
        assert!(
            log.contains("3 packets received"),
            "{tenant}: {log}\ndroplet-0: {:?}\ndroplet-1: {:?}",
            dump(&data.join("droplets/transitd-0.sock")),
            dump(&data.join("droplets/transitd-1.sock"))
        );
        assert!(
            log.contains(&format!("ack from {tenant}")),
            "{tenant}: {log}"
        );
    }
    // Each server heard its own tenant's client only.
    for (tenant, k, _) in &servers {
        let other = if *tenant == "acme" { "beta" } else { "acme" };
        let server = k.json(&["get", "pod", "server"]);
        let what = format!(
            "{tenant}'s server hears its client; client: {}; server restarts: {}; droplet-1: {:?}",
            k.run(&["logs", "client"]),
            server["status"]["containerStatuses"][0]["restartCount"],
            dump(&data.join("droplets/transitd-1.sock")).counters,
        );
        let log = eventually(30, &what, || {
            let log = k.run(&["logs", "server"]);
            log.contains("hello from").then_some(log)
        });
        assert!(log.contains(&format!("hello from {tenant}")), "{log}");
        assert!(!log.contains(other), "{tenant} heard {other}: {log}");
    }
    // Services: the same cluster IP in both tenants, each leading to its own server.
    let mut vips = Vec::new();
    for (tenant, k, _) in &servers {
        k.run(&[
            "expose",
            "pod",
            "server",
            "--name=web",
            "--port=80",
            "--target-port=8080",
        ]);
        let vip = k.json(&["get", "service", "web"])["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .to_owned();
        eprintln!("{tenant}: service web at {vip}");
        let script = format!(
            "for i in $(seq 1 30); do echo get | nc -w 3 {vip} 80 | grep page && break; \
             sleep 1; done; echo fetched; sleep 3600"
        );
        apply(k, dir.path(), "fetch", &pod("fetch", "droplet-0", &script));
        running(k, "fetch");
        vips.push(vip);
    }
    assert_eq!(
        vips[0], vips[1],
        "per-tenant service ranges: the same first address"
    );
    for (tenant, k, _) in &servers {
        let log = eventually(60, "the page was fetched through the Service", || {
            let log = k.run(&["logs", "fetch"]);
            log.contains("fetched").then_some(log)
        });
        assert!(
            log.contains(&format!("page of {tenant}")),
            "{tenant}: {log}\nserver: {}\nslices: {}\ndroplet-0: {:?}",
            k.run(&["logs", "server"]),
            k.run(&["get", "endpointslices", "-o", "yaml"]),
            dump(&data.join("droplets/transitd-0.sock"))
        );
    }
    // Cluster DNS: each tenant's pod on droplet-1 resolves its own Services' names at
    // 10.96.0.10 (its tenant's DNS, through the same translation); a name only acme has
    // is NXDOMAIN for beta.
    servers[0].1.run(&[
        "expose",
        "pod",
        "server",
        "--name=acme-web",
        "--port=80",
        "--target-port=8080",
    ]);
    for (_, k, _) in &servers {
        // By the short name, through the pod's resolv.conf (cluster DNS, search path).
        // (nslookup tries every search domain and fails if any does not know the name.)
        let script = "cat /etc/resolv.conf; for i in $(seq 1 30); do \
             nslookup web > /tmp/web 2>&1; grep -q 'Address: 10.96' /tmp/web && break; \
             sleep 1; done; cat /tmp/web; \
             echo ---; nslookup acme-web.default.svc.cluster.local; \
             echo looked; sleep 3600";
        apply(k, dir.path(), "lookup", &pod("lookup", "droplet-1", script));
    }
    for (tenant, k, _) in &servers {
        let log = eventually(60, "the names were looked up", || {
            let log = k.run(&["logs", "lookup"]);
            log.contains("looked").then_some(log)
        });
        assert!(
            log.contains("nameserver 10.96.0.10")
                && log.contains("search default.svc.cluster.local svc.cluster.local cluster.local")
                && log.contains("options ndots:5"),
            "{tenant}: {log}"
        );
        let (own, other) = log.split_once("---").unwrap();
        assert!(
            own.contains(&format!("Address: {}", vips[0])),
            "{tenant}: {log}"
        );
        if *tenant == "acme" {
            assert!(other.contains("Address: 10.96.0."), "{tenant}: {log}");
        } else {
            assert!(
                other.contains("NXDOMAIN"),
                "{tenant} resolved acme's name: {log}"
            );
        }
    }
    // VM pods on the overlay: each tenant's VM on droplet-0 (the same address in both)
    // pings its tenant's server on droplet-1, fetches its page over TCP, resolves the
    // tenant's names through cluster DNS (beta gets NXDOMAIN for acme's) and fetches the
    // page through the Service the name resolved to; the server pings the VM and sends it
    // a line over TCP.
    if QemuRuntime::available(None) {
        vm_pods_join_their_tenants_overlay(dir.path(), &data, &servers, &vips[0]);
    } else {
        assert!(std::env::var_os("CI").is_none(), "CI installs QEMU");
        eprintln!("SKIPPED the VM pods: no qemu-system-x86_64 or VM kernel");
    }
    // NetworkPolicy: acme's server takes port 8080 only from pods labelled app=fetch, by
    // pod IP and through the Service alike; beta has no policy, so anyone reaches its
    // server. A pod of acme labelled otherwise is refused in the datapath.
    let policy = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "server-from-fetch"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "server"}},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{"podSelector": {"matchLabels": {"app": "fetch"}}}],
                "ports": [{"protocol": "TCP", "port": 8080}]
            }]
        }
    });
    apply(&servers[0].1, dir.path(), "policy", &policy.to_string());
    let listed = servers[0].1.run(&["get", "networkpolicies"]);
    assert!(
        listed.contains("server-from-fetch") && listed.contains("app=server"),
        "{listed}"
    );
    eventually(
        30,
        "the policy is programmed on the server's droplet",
        || {
            let d = dump(&data.join("droplets/transitd-1.sock"));
            d.policies
                .values()
                .any(|p| p.starts_with("ingress 1 rules"))
                .then_some(())
        },
    );
    let try_server = |ip: &str, port: u16| {
        format!(
            "for i in 1 2 3; do echo get | nc -w 2 {ip} {port} | grep -q page && echo reached; \
             done; echo tried; sleep 3600"
        )
    };
    for (_, k, ip) in &servers {
        for (name, app, target, port) in [
            ("denied", "other", ip.as_str(), 8080),
            ("allowed", "fetch", ip.as_str(), 8080),
            ("allowed-vip", "fetch", vips[0].as_str(), 80),
        ] {
            let script = try_server(target, port);
            apply(
                k,
                dir.path(),
                name,
                &labelled_pod(name, app, "droplet-0", &script),
            );
        }
    }
    for (tenant, k, _) in &servers {
        for name in ["denied", "allowed", "allowed-vip"] {
            let log = eventually(60, "the pod tried the server", || {
                let log = k.run(&["logs", name]);
                log.contains("tried").then_some(log)
            });
            let open = *tenant == "beta" || name != "denied";
            assert_eq!(log.contains("reached"), open, "{tenant} {name}: {log}");
        }
    }
    let d = dump(&data.join("droplets/transitd-1.sock"));
    assert!(d.counters["drop_policy"] >= 3, "{:?}", d.counters);
    let d = dump(&data.join("droplets/transitd-0.sock"));
    assert_eq!(
        d.services.len(),
        7,
        "web and kube-dns (UDP, TCP) of both, acme-web: {:?}",
        d.services
    );
    assert!(d.connections >= 4, "{}", d.connections);
    assert!(
        d.counters["nat"] >= 2 && d.counters["reply_nat"] >= 2,
        "droplet 0 translated the connections: {:?}",
        d.counters
    );
    // It crossed the overlay: each droplet's transit daemon sent and delivered frames.
    for i in 0..2 {
        let socket = data.join(format!("droplets/transitd-{i}.sock"));
        let d = dump(&socket);
        assert!(
            d.counters["sent"] >= 8 && d.counters["delivered"] >= 8,
            "droplet {i}: {:?}",
            d.counters
        );
    }
    drop(region);
    // A clean stop removes the droplets.
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        !left
            .lines()
            .any(|l| l.starts_with("cent-r") && l.contains("-d")),
        "{left}"
    );
    // ... and the pods' namespaces: none is left that was not there before (a pod's
    // namespace is named after the pod, so one left by an earlier run is reused, then
    // removed too).
    let stale: Vec<String> = pod_namespaces()
        .into_iter()
        .filter(|n| !namespaces_before.contains(n))
        .collect();
    assert!(stale.is_empty(), "left after a clean stop: {stale:?}");

    // Up again on the same data: new droplets, whose transit daemons restore their tables
    // from their logs (the operator counts the hosts as programmed), and the pods start
    // again behind their endpoints.
    let _region = up(&data, &addr, &["--droplets", "2"]);
    // (acme's policy refuses the ping: beta's server is the one pinged.)
    let (tenant, k, ip) = &servers[1];
    running(k, "server");
    let script = format!("ping -c 3 -W 2 {ip}; echo pinged; sleep 3600");
    apply(k, dir.path(), "again", &pod("again", "droplet-0", &script));
    running(k, "again");
    let log = eventually(60, "the new client pinged", || {
        let log = k.run(&["logs", "again"]);
        log.contains("pinged").then_some(log)
    });
    assert!(
        log.contains("3 packets received"),
        "{tenant} after a restart: {log}"
    );
    eventually(30, "acme's policy is back on the server's droplet", || {
        let d = dump(&data.join("droplets/transitd-1.sock"));
        d.policies
            .values()
            .any(|p| p.starts_with("ingress 1 rules"))
            .then_some(())
    });
}
