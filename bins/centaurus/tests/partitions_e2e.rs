//! A partitioned region as separate OS processes: 2 tenant partitions (TP) and 2 resource
//! partitions (RP), each with its own etcd and API server, one region CA. Each TP runs its
//! scheduler and controllers over the nodes of both RPs; each RP runs its node lifecycle and
//! one hollow agent of 10 nodes (joined with a bootstrap token of that RP, each node its own
//! identity) that runs the pods bound to its nodes in both TPs. Tenants of different TPs
//! create the same Deployment through a stock kubectl; their pods land on nodes of both RPs
//! and never collide. Then the fault domains: every process of one TP dies and the other
//! TP's tenant goes on; one RP's API server dies and the other RP's nodes keep taking pods,
//! and its nodes rejoin when it returns; a whole AZ (an RP's agent and so its nodes) is lost
//! and its pods are replaced on the other RP's nodes.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{
    Kubectl, Proc, etcd_binary, etcd_cluster, eventually, free_addr, kubectl_binary, run,
};

/// Running pods of `app` and the nodes they run on.
fn running(k: &Kubectl, app: &str) -> Vec<String> {
    let pods = k.json(&["get", "pods", "-l", &format!("app={app}")]);
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .map(|p| {
            p["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// The resource partitions (by node name prefix) that `nodes` belong to.
fn partitions_of(nodes: &[String]) -> BTreeSet<String> {
    nodes
        .iter()
        .map(|n| n.split('-').next().unwrap().to_owned())
        .collect()
}

fn ready_nodes(k: &Kubectl) -> usize {
    let nodes = k.json(&["get", "nodes"]);
    nodes["items"].as_array().map_or(0, |items| {
        items
            .iter()
            .filter(|n| {
                n["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .count()
    })
}

#[test]
fn two_tenant_and_two_resource_partitions_as_processes() {
    let (Some(etcd), Some(kubectl)) = (etcd_binary(), kubectl_binary()) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs etcd-server and kubectl (scripts/setup.sh)"
        );
        eprintln!("SKIPPED: needs etcd and kubectl (scripts/setup.sh)");
        return;
    };
    let started = Instant::now();
    let bin = Path::new(env!("CARGO_BIN_EXE_centaurus"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let names = ["rp1", "rp2", "tp1", "tp2"];
    let mut etcds = Vec::new();
    let mut stores = Vec::new();
    for name in names {
        let (members, urls) = etcd_cluster(&etcd, d, &format!("etcd-{name}"), 1);
        etcds.push(members);
        stores.push(format!("etcd:{}", urls.join(",")));
    }
    let data = |p: &str| d.join(p);
    let addrs: Vec<String> = names.iter().map(|_| free_addr()).collect();
    let api = |i: usize| {
        let name = names[i];
        let role = if name.starts_with("rp") {
            format!("resource:{name}")
        } else {
            format!("tenant:{name}")
        };
        let mut args = vec![
            "apiserver".to_owned(),
            "--store".into(),
            stores[i].clone(),
            "--data-dir".into(),
            data(name).to_str().unwrap().into(),
            "--listen".into(),
            addrs[i].clone(),
            "--partition".into(),
            role,
        ];
        // The first partition makes the region's CA; the others trust it.
        if i > 0 {
            args.extend([
                "--ca".into(),
                data("rp1").join("pki").to_str().unwrap().into(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::start(
            &format!("apiserver-{name}"),
            bin,
            &args,
            &d.join(format!("apiserver-{name}.log")),
            Some("centaurus apiserver:"),
        )
    };
    let mut apis: Vec<Proc> = (0..names.len()).map(api).collect();
    let kc = |p: &str, c: &str| -> PathBuf {
        data(p).join("components").join(format!("{c}.kubeconfig"))
    };
    let list = |c: &str| format!("{},{}", kc("rp1", c).display(), kc("rp2", c).display());
    let component = |name: &str, args: &[&str]| {
        let probes = free_addr();
        let mut args = args.to_vec();
        args.extend(["--probes", &probes]);
        Proc::start(
            name,
            bin,
            &args,
            &d.join(format!("{name}.log")),
            Some("running"),
        )
    };
    let mut tp_procs: Vec<Vec<Proc>> = Vec::new();
    for tp in ["tp1", "tp2"] {
        let scheduler = component(
            &format!("scheduler-{tp}"),
            &[
                "scheduler",
                "--kubeconfig",
                kc(tp, "scheduler").to_str().unwrap(),
                "--resource-partitions",
                &list("scheduler"),
            ],
        );
        let controllers = component(
            &format!("controllers-{tp}"),
            &[
                "controllers",
                "--kubeconfig",
                kc(tp, "controllers").to_str().unwrap(),
                "--resource-partitions",
                &list("controllers"),
                "--eviction-timeout",
                "2",
            ],
        );
        tp_procs.push(vec![scheduler, controllers]);
    }
    let mut agents = Vec::new();
    let mut _rp_controllers = Vec::new();
    for rp in ["rp1", "rp2"] {
        _rp_controllers.push(component(
            &format!("controllers-{rp}"),
            &[
                "controllers",
                "--kubeconfig",
                kc(rp, "controllers").to_str().unwrap(),
                "--nodes-only",
            ],
        ));
        let bootstrap = d.join(format!("bootstrap-{rp}.kubeconfig"));
        run(
            bin,
            &[
                "bootstrap-kubeconfig",
                "--kubeconfig",
                data(rp).join("admin.kubeconfig").to_str().unwrap(),
                "--out",
                bootstrap.to_str().unwrap(),
            ],
        );
        let tenants = format!(
            "{},{}",
            kc("tp1", "node-fleet").display(),
            kc("tp2", "node-fleet").display()
        );
        let probes = free_addr();
        agents.push(Proc::start(
            &format!("agent-{rp}"),
            bin,
            &[
                "agent",
                "--bootstrap-kubeconfig",
                bootstrap.to_str().unwrap(),
                "--hollow",
                "10",
                "--hollow-prefix",
                rp,
                "--zones",
                "2",
                "--zone-prefix",
                rp,
                "--tenant-partitions",
                &tenants,
                "--serve",
                "127.0.0.1:0",
                "--probes",
                &probes,
            ],
            &d.join(format!("agent-{rp}.log")),
            Some("hollow nodes"),
        ));
    }
    let admin = |p: &str| Kubectl {
        bin: kubectl.clone(),
        kubeconfig: data(p).join("admin.kubeconfig"),
        cache: d.join(format!("cache-admin-{p}")),
    };
    for rp in ["rp1", "rp2"] {
        eventually(60, "10 Ready nodes in each resource partition", || {
            (ready_nodes(&admin(rp)) == 10).then_some(())
        });
    }
    eprintln!(
        "2 TP x 2 RP, 20 hollow nodes Ready after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Partitions serve their role's kinds only.
    let err = admin("tp1").fails(&["get", "nodes"]);
    assert!(
        err.contains("the server doesn't have a resource type"),
        "{err}"
    );
    let err = admin("rp1").fails(&["get", "pods", "-A"]);
    assert!(
        err.contains("the server doesn't have a resource type"),
        "{err}"
    );

    // One tenant on each tenant partition; the same Deployment in both.
    let manifest = d.join("web.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 6\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - {name: web, image: busybox}\n",
    )
    .unwrap();
    let mut tenants = Vec::new();
    for (tp, tenant) in [("tp1", "acme"), ("tp2", "globex")] {
        let t = d.join(format!("{tenant}.yaml"));
        std::fs::write(
            &t,
            format!("apiVersion: v1\nkind: Tenant\nmetadata:\n  name: {tenant}\n"),
        )
        .unwrap();
        admin(tp).run(&["create", "-f", t.to_str().unwrap()]);
        let k = Kubectl::tenant_admin(&kubectl, &data(tp), d, tenant);
        k.run(&["apply", "-f", manifest.to_str().unwrap()]);
        tenants.push(k);
    }
    for k in &tenants {
        let nodes = eventually(60, "6 running pods in each tenant", || {
            let nodes = running(k, "web");
            (nodes.len() == 6).then_some(nodes)
        });
        // Spread over the zones, and so over the nodes of both resource partitions.
        assert_eq!(
            partitions_of(&nodes),
            BTreeSet::from(["rp1".to_owned(), "rp2".to_owned()]),
            "{nodes:?}"
        );
    }
    // Same names, separate partitions: each tenant sees its own six.
    for k in &tenants {
        let pods = k.json(&["get", "pods"]);
        assert_eq!(pods["items"].as_array().unwrap().len(), 6);
    }
    eprintln!(
        "two tenants on two TPs running 6 pods each after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Kill every process of tp1: tp2's tenant goes on creating and running pods.
    let t = Instant::now();
    apis[2].kill();
    for p in &mut tp_procs[0] {
        p.kill();
    }
    etcds[2].iter_mut().for_each(Proc::kill);
    tenants[1].run(&["scale", "deployment", "web", "--replicas=8"]);
    eventually(30, "tp2 scales up with tp1 gone", || {
        (running(&tenants[1], "web").len() == 8).then_some(())
    });
    eprintln!(
        "tp1 killed: tp2 scaled 6 -> 8 in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Kill rp1's API server: rp2's nodes keep taking new pods.
    let t = Instant::now();
    apis[0].kill();
    tenants[1].run(&["scale", "deployment", "web", "--replicas=10"]);
    let nodes = eventually(60, "tp2 scales up on rp2 with rp1's API down", || {
        let nodes = running(&tenants[1], "web");
        (nodes.len() == 10).then_some(nodes)
    });
    eprintln!(
        "rp1's API server killed: tp2 scaled 8 -> 10 in {:.1} s ({} on rp2)",
        t.elapsed().as_secs_f64(),
        nodes.iter().filter(|n| n.starts_with("rp2")).count()
    );
    // It returns: its nodes are there and renew their leases again.
    apis[0] = api(0);
    eventually(60, "rp1's nodes Ready again", || {
        (ready_nodes(&admin("rp1")) == 10).then_some(())
    });

    // Lose the AZ of rp1 (its agent, so all of its nodes): after their leases expire rp1
    // marks them NotReady, tp2 evicts its pods there and they are replaced on rp2.
    let t = Instant::now();
    agents[0].kill();
    let nodes = eventually(120, "tp2's pods all on rp2 after rp1's AZ is lost", || {
        let nodes = running(&tenants[1], "web");
        (nodes.len() == 10 && nodes.iter().all(|n| n.starts_with("rp2"))).then_some(nodes)
    });
    assert_eq!(partitions_of(&nodes).len(), 1);
    eprintln!(
        "rp1's AZ lost: its pods replaced on rp2 in {:.1} s (lease 40 s, eviction 2 s); whole test {:.1} s",
        t.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
