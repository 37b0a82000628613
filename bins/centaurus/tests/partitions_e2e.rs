//! A partitioned region as separate OS processes, started by `centaurus region`: 2 tenant
//! partitions (TP) and 2 resource partitions (RP), each with its own etcd and API server,
//! one region CA, and the front door (`centaurus gateway`) as the region's one endpoint.
//! Each TP runs its scheduler and controllers over the nodes of both RPs; each RP runs its
//! node lifecycle and one hollow agent of 10 nodes (joined with a bootstrap token of that
//! RP, each node its own identity) that runs the pods bound to its nodes in both TPs.
//! Tenants created through the front door land on different TPs and, through it with a
//! stock kubectl, create the same Deployment; their pods land on nodes of both RPs and
//! never collide, and a system user lists both tenants' pods and every RP's nodes there.
//! One tenant then moves to the other TP while its user watches and scales its pods
//! through the front door (`centaurus move-tenant`): its pods run on, its watch carries on.
//! Then the fault domains: every process of one TP dies and the other TP's tenants go on;
//! one RP's API server dies and the other RP's nodes keep taking pods, and its nodes
//! rejoin when it returns; a whole AZ (an RP's agent and so its nodes) is lost and its pods
//! are replaced on the other RP's nodes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Instant;

use common::{Kubectl, Proc, etcd_binary, eventually, kubectl_binary, run};

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

/// The droplets of the provisioned endpoints of `k`'s tenant.
fn provisioned_endpoints(k: &Kubectl) -> Vec<String> {
    let eps = k.json(&["get", "endpoints.mizar.centaurus.io"]);
    eps["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"]["phase"] == "Provisioned")
        .map(|e| e["spec"]["droplet"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The VNI of the default VPC of `k`'s tenant.
fn vni_of(k: &Kubectl) -> u64 {
    let vpcs = k.json(&["get", "vpcs"]);
    vpcs["items"][0]["spec"]["vni"].as_u64().unwrap()
}

/// The pods of `k`'s tenant: name → (uid, startTime).
fn pods_of(k: &Kubectl) -> BTreeMap<String, (String, String)> {
    let pods = k.json(&["get", "pods"]);
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
            (
                s(&p["metadata"]["name"]),
                (s(&p["metadata"]["uid"]), s(&p["status"]["startTime"])),
            )
        })
        .collect()
}

/// Moves acme (6 running pods of `web`) from tp1 to tp2 while its user watches its pods
/// through the front door and scales `web` in the middle of the move. The scale waits out
/// the move (503 with Retry-After, retried by kubectl) and lands on tp2; the watch carries
/// on from tp2 and sees the new pod, and never a deletion; the six pods keep their UIDs
/// and were never restarted; their bookings pass to tp2; tp1 holds nothing of acme after.
fn move_a_tenant(
    bin: &Path,
    region_dir: &Path,
    door: &Kubectl,
    acme: &Kubectl,
    admin: &dyn Fn(&str) -> Kubectl,
) {
    let before = pods_of(acme);
    assert_eq!(before.len(), 6);
    let vni = vni_of(acme);
    let watch_log = region_dir.join("acme-watch.log");
    let mut watch = acme
        .cmd(&[
            "get",
            "pods",
            "--watch-only",
            "--output-watch-events",
            "-o",
            "json",
        ])
        .stdout(std::fs::File::create(&watch_log).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let t = Instant::now();
    let mut mover = std::process::Command::new(bin)
        .args([
            "move-tenant",
            "acme",
            "--to",
            "tp2",
            "--settle",
            "1",
            "--data-dir",
        ])
        .arg(region_dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(mover.stdout.take().unwrap()).lines();
    let mut said = Vec::new();
    // Once the space is frozen, a write waits for the move rather than fail: refused with
    // 503 and Retry-After: 1 until the switch, retried by kubectl.
    for line in lines.by_ref() {
        let line = line.unwrap();
        said.push(line.clone());
        if line.contains("freezing") {
            break;
        }
    }
    let scaling = Instant::now();
    acme.run(&["scale", "deployment", "web", "--replicas=7"]);
    let scaled = scaling.elapsed();
    assert!(
        scaled.as_secs_f64() >= 0.9,
        "the scale did not wait: {scaled:?}"
    );
    said.extend(lines.map(Result::unwrap));
    assert!(mover.wait().unwrap().success(), "{said:?}");
    eprintln!(
        "move: {:?} ({:.1} s); the scale in the middle waited {:.1} s",
        said.last(),
        t.elapsed().as_secs_f64(),
        scaled.as_secs_f64()
    );
    let tenant_of = |tp: &str| {
        admin(tp).json(&["get", "tenants"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["metadata"]["name"] == "acme")
    };
    assert!(tenant_of("tp2") && !tenant_of("tp1"));
    let left: serde_json::Value =
        serde_json::from_str(&admin("tp1").run(&["get", "--raw", "/api/v1/tenants/all/pods"]))
            .unwrap();
    assert!(
        left["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["metadata"]["tenant"] != "acme"),
        "{left}"
    );
    // Same pods, same UIDs, never restarted; the seventh scheduled by tp2.
    eventually(60, "7 running pods of acme on tp2", || {
        (running(acme, "web").len() == 7).then_some(())
    });
    let after = pods_of(acme);
    for (name, was) in &before {
        assert_eq!(after.get(name), Some(was), "pod {name} across the move");
    }
    let new: Vec<&String> = after.keys().filter(|n| !before.contains_key(*n)).collect();
    assert_eq!(new.len(), 1, "{after:?}");
    // Its VPC came along with its VNI; tp2's operator took its endpoints over and
    // provisions the new pod's.
    assert_eq!(vni_of(acme), vni);
    eventually(30, "7 provisioned endpoints of acme on tp2", || {
        (provisioned_endpoints(acme).len() == 7).then_some(())
    });
    // The watch opened before the move saw the new pod, and no deletion.
    // `kubectl get -w --output-watch-events -o json`: one JSON event after another.
    let events = || -> Vec<(String, String)> {
        let log = std::fs::read_to_string(&watch_log).unwrap();
        serde_json::Deserializer::from_str(&log)
            .into_iter::<serde_json::Value>()
            .map_while(Result::ok)
            .map(|e| {
                let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
                (s(&e["type"]), s(&e["object"]["metadata"]["name"]))
            })
            .collect()
    };
    let seen = eventually(
        30,
        "the watch through the front door sees the new pod",
        || {
            let seen = events();
            seen.contains(&("ADDED".into(), new[0].clone()))
                .then_some(seen)
        },
    );
    assert!(seen.iter().all(|(t, _)| t != "DELETED"), "{seen:?}");
    let _ = watch.kill();
    let _ = watch.wait();
    // Bookings: every acme pod is booked by tp2 in its node's ledger, none by tp1.
    let mut booked = BTreeSet::new();
    for rp in ["rp1", "rp2"] {
        for l in admin(rp).json(&["get", "nodeledgers"])["items"]
            .as_array()
            .unwrap()
        {
            booked.extend(l["spec"]["pods"].as_object().unwrap().keys().cloned());
        }
    }
    for (uid, _) in after.values() {
        assert!(booked.contains(&format!("tp2/{uid}")), "{uid}: {booked:?}");
        assert!(!booked.contains(&format!("tp1/{uid}")), "{uid}");
    }
    // The front door routes acme to tp2 and lists it once.
    let tenants = door.json(&["get", "tenants"]);
    let acmes = tenants["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["metadata"]["name"] == "acme")
        .count();
    assert_eq!(acmes, 1);
}

#[test]
fn two_tenant_and_two_resource_partitions_as_processes() {
    let (Some(_), Some(kubectl)) = (etcd_binary(), kubectl_binary()) else {
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
    let region_dir = d.join("region");
    let launcher = Launcher(Proc::start(
        "region",
        bin,
        &[
            "region",
            "--data-dir",
            region_dir.to_str().unwrap(),
            "--tenant-partitions",
            "2",
            "--resource-partitions",
            "2",
            "--hollow-nodes",
            "20",
            "--eviction-timeout",
            "2",
        ],
        &d.join("region.log"),
        Some("centaurus region: ready"),
    ));
    let region: serde_json::Value =
        serde_json::from_slice(&std::fs::read(region_dir.join("region.json")).unwrap()).unwrap();
    let process = |name: &str| {
        region["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no process {name} in region.json"))
            .clone()
    };
    let kill = |name: &str| {
        let pid = process(name)["pid"].as_u64().unwrap().to_string();
        run(Path::new("kill"), &["-9", &pid]);
    };
    let data = |p: &str| region_dir.join(p);
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

    // The front door: one endpoint for the region. A system user sees every resource
    // partition's nodes; tenants are created through it, each on the tenant partition
    // with the fewest.
    let door = Kubectl {
        bin: kubectl.clone(),
        kubeconfig: region_dir.join("gateway").join("admin.kubeconfig"),
        cache: d.join("cache-admin-gateway"),
    };
    assert_eq!(
        door.json(&["get", "nodes"])["items"]
            .as_array()
            .unwrap()
            .len(),
        20
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
        door.run(&["create", "-f", t.to_str().unwrap()]);
        let held = admin(tp).json(&["get", "tenants"]);
        assert!(
            held["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["metadata"]["name"] == tenant),
            "{tenant} is not on {tp}"
        );
        // The tenant's kubeconfig names the front door (its token was issued by its TP).
        let k = Kubectl::tenant_admin(&kubectl, &region_dir.join("gateway"), d, tenant);
        k.run(&["apply", "-f", manifest.to_str().unwrap()]);
        tenants.push(k);
    }
    // One name, one tenant in the region: not a second one on the other TP.
    let err = door.fails(&["create", "-f", d.join("acme.yaml").to_str().unwrap()]);
    assert!(err.contains("AlreadyExists"), "{err}");
    // Front-door headers from anyone but the front door are ignored: a tenant naming
    // system:admin stays itself, sent to its TP directly or through the front door.
    let token = centaurus_client::kubeconfig::Kubeconfig::load(&tenants[0].kubeconfig)
        .unwrap()
        .users[0]
        .user
        .token
        .clone();
    assert!(!token.is_empty());
    let tp1 = region["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "tp1")
        .unwrap()["server"]
        .as_str()
        .unwrap()
        .to_owned();
    for server in [tp1.as_str(), region["gateway"]["server"].as_str().unwrap()] {
        let out = std::process::Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args([
                "-H",
                "X-Remote-User: system:admin",
                "-H",
                "X-Remote-Tenant: system",
            ])
            .arg(format!("{server}/api/v1/tenants"))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "403",
            "forged headers at {server}"
        );
    }
    // A tenant reaches its own partition only, and not the region's hosts.
    let err = tenants[0].fails(&["get", "nodes"]);
    assert!(err.contains("Forbidden"), "{err}");
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
    // The VPC plane across partitions: each TP's operator provisions its tenants' endpoints
    // on the droplets of both RPs, from VNIs of its own range.
    let mut vnis = BTreeSet::new();
    for k in &tenants {
        let droplets = eventually(60, "6 provisioned endpoints in each tenant", || {
            let d = provisioned_endpoints(k);
            (d.len() == 6).then_some(d)
        });
        assert_eq!(
            partitions_of(&droplets),
            BTreeSet::from(["rp1".into(), "rp2".into()])
        );
        vnis.insert(vni_of(k));
    }
    assert_eq!(vnis.len(), 2, "one VNI for two tenants' VPCs: {vnis:?}");
    // Same names, separate partitions: each tenant sees its own six.
    for k in &tenants {
        let pods = k.json(&["get", "pods"]);
        assert_eq!(pods["items"].as_array().unwrap().len(), 6);
        // Logs: the tenant partition finds the pod's node in its resource partition and
        // reads them from that node's agent.
        let (pod, uid) = (
            pods["items"][0]["metadata"]["name"].as_str().unwrap(),
            pods["items"][0]["metadata"]["uid"].as_str().unwrap(),
        );
        assert_eq!(
            k.run(&["logs", pod]),
            format!("hollow workload web of pod {uid}\n")
        );
        // A session goes through the front door's upgraded connection to the tenant
        // partition and on to the node's agent, whose answer comes back: hollow pods run
        // no commands.
        let refused = k.fails(&["exec", pod, "--", "true"]);
        assert!(refused.contains("runs no commands"), "{refused}");
    }
    // A system user lists every tenant's pods through the front door: both partitions.
    let all: serde_json::Value =
        serde_json::from_str(&door.run(&["get", "--raw", "/api/v1/tenants/all/pods"])).unwrap();
    let mut tenants_seen: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["metadata"]["tenant"].as_str())
        .collect();
    tenants_seen.sort();
    tenants_seen.dedup();
    assert_eq!(tenants_seen, ["acme", "globex"]);
    eprintln!(
        "two tenants on two TPs running 6 pods each after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    move_a_tenant(bin, &region_dir, &door, &tenants[0], &admin);
    eprintln!(
        "acme moved from tp1 to tp2 after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The density tool, from outside: every pod it creates through the front door starts.
    let out = std::process::Command::new(bin)
        .args([
            "region-density",
            "--data-dir",
            region_dir.to_str().unwrap(),
            "--requests",
            "20",
            "--pods",
            "30",
            "--latency-pods",
            "20",
            "--rate",
            "20",
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "rp1: 10 nodes, 10 Ready",
        "added by the front door",
        "Ready: 30 in",
        "Ready: 20 in",
        "bound in all: 30 in",
        " 30 ok     0 err",
        "get ",
        "per node)",
    ] {
        assert!(report.contains(line), "no {line:?} in:\n{report}");
    }
    eprintln!("{report}");

    // Kill every process of tp1: tp2's tenant goes on creating and running pods.
    let t = Instant::now();
    for p in [
        "apiserver-tp1",
        "scheduler-tp1",
        "controllers-tp1",
        "etcd-tp1-0",
    ] {
        kill(p);
    }
    tenants[1].run(&["scale", "deployment", "web", "--replicas=8"]);
    eventually(30, "tp2 scales up with tp1 gone", || {
        (running(&tenants[1], "web").len() == 8).then_some(())
    });
    // acme, moved to tp2, goes on too.
    tenants[0].run(&["scale", "deployment", "web", "--replicas=8"]);
    eventually(30, "acme scales up on tp2 with tp1 gone", || {
        (running(&tenants[0], "web").len() == 8).then_some(())
    });
    // A list across partitions says which one is missing rather than leave it out.
    let err = door.fails(&["get", "--raw", "/api/v1/tenants/all/pods"]);
    assert!(err.contains("tp1 cannot be reached"), "{err}");
    eprintln!(
        "tp1 killed: tp2 scaled 6 -> 8 in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Kill rp1's API server: rp2's nodes keep taking new pods.
    let t = Instant::now();
    kill("apiserver-rp1");
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
    // It returns (as the launcher started it): its nodes are there and renew their leases.
    let command: Vec<String> = process("apiserver-rp1")["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let args: Vec<&str> = command[1..].iter().map(String::as_str).collect();
    let _rp1 = Proc::start(
        "apiserver-rp1 again",
        bin,
        &args,
        &d.join("apiserver-rp1-again.log"),
        Some("centaurus apiserver:"),
    );
    eventually(60, "rp1's nodes Ready again", || {
        (ready_nodes(&admin("rp1")) == 10).then_some(())
    });

    // Lose the AZ of rp1 (its agent, so all of its nodes): after their leases expire rp1
    // marks them NotReady, tp2 evicts its pods there and they are replaced on rp2.
    let t = Instant::now();
    kill("agent-rp1");
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
    drop(launcher);
}

/// The launcher, stopped with SIGTERM (it stops its processes) when dropped.
struct Launcher(Proc);

impl Drop for Launcher {
    fn drop(&mut self) {
        let pid = self.0.child.id().to_string();
        let _ = std::process::Command::new("kill").arg(&pid).status();
        let _ = self.0.child.wait();
    }
}
