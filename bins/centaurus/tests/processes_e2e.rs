//! The region as separate OS processes on a 3-member etcd cluster: two API servers, the
//! scheduler, three active-active controller instances, two active-active VPC operator
//! replicas with their network controllers, and a hollow node agent of 100 nodes (each
//! joined with a bootstrap token as its own node identity), each a
//! `centaurus` process; only the API servers connect to the store. Every component
//! answers `/healthz`, `/readyz` and `/metrics`. A tenant's Deployment reaches Running
//! through a stock kubectl, starting on the API server that did not issue its token, and
//! its logs come over HTTPS from the agent's endpoint, which refuses other identities.
//! Then the controller instance that owns the Deployment, the operator replica that holds
//! the tenant's VPC, an API server and an etcd member are killed (SIGKILL) in turn and the
//! region goes on: the others take over the dead one's share, the components fail over to
//! the other API server, and scale-ups still converge. As root, this host's runc agent
//! joins as its own node identity, runs a pod pinned to it (its output read, and a command
//! run in it, through the
//! agent's endpoint), and runs it again after the agent is killed and restarted; with
//! QEMU, a VM pod boots on it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use centaurus_core::ring::{HashRing, RingConfig, stable_hash};
use common::{
    Kubectl, Proc, etcd_binary, etcd_cluster, eventually, free_addr, kubectl_binary, run,
};

fn running_pods(k: &Kubectl, app: &str) -> usize {
    let pods = k.json(&["get", "pods", "-l", &format!("app={app}")]);
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["status"]["phase"] == "Running")
        .count()
}

#[test]
fn a_region_of_processes_on_etcd_survives_kills() {
    let (Some(etcd), Some(kubectl)) = (etcd_binary(), kubectl_binary()) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs etcd-server and kubectl (scripts/setup.sh)"
        );
        eprintln!("SKIPPED: needs etcd and kubectl (scripts/setup.sh)");
        return;
    };
    let bin = Path::new(env!("CARGO_BIN_EXE_centaurus"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("region");
    let (mut members, urls) = etcd_cluster(&etcd, d, "etcd", 3);
    let store = format!("etcd:{}", urls.join(","));
    let (a1, a2) = (free_addr(), free_addr());
    let peers = format!("https://{a1},https://{a2}");
    let api = |name: &str, listen: &str| {
        Proc::start(
            name,
            bin,
            &[
                "apiserver",
                "--store",
                &store,
                "--data-dir",
                data.to_str().unwrap(),
                "--listen",
                listen,
                "--peers",
                &peers,
            ],
            &d.join(format!("{name}.log")),
            Some("centaurus apiserver:"),
        )
    };
    // The first server makes the region's CA; the second shares it.
    let mut api1 = api("apiserver-1", &a1);
    let _api2 = api("apiserver-2", &a2);
    let kc = |c: &str| data.join("components").join(format!("{c}.kubeconfig"));
    let component = |name: &str, args: &[&str]| {
        Proc::start(
            name,
            bin,
            args,
            &d.join(format!("{name}.log")),
            Some("running"),
        )
    };
    // Each component serves its probes on a port of its own.
    let probes: Vec<(&str, String)> = [
        "scheduler",
        "controllers-c1",
        "controllers-c2",
        "controllers-c3",
        "operator-op-a",
        "operator-op-b",
        "agent",
    ]
    .into_iter()
    .map(|c| (c, free_addr()))
    .collect();
    let probe = |c: &str| probes.iter().find(|(n, _)| *n == c).unwrap().1.clone();
    let _scheduler = component(
        "scheduler",
        &[
            "scheduler",
            "--kubeconfig",
            kc("scheduler").to_str().unwrap(),
            "--probes",
            &probe("scheduler"),
        ],
    );
    // Three active-active controller instances.
    let mut controllers: Vec<Proc> = ["c1", "c2", "c3"]
        .iter()
        .map(|name| {
            component(
                &format!("controllers-{name}"),
                &[
                    "controllers",
                    "--kubeconfig",
                    kc("controllers").to_str().unwrap(),
                    "--name",
                    name,
                    "--probes",
                    &probe(&format!("controllers-{name}")),
                ],
            )
        })
        .collect();
    // Two active-active VPC operator replicas (each with the network controller).
    let mut operators: Vec<Proc> = ["op-a", "op-b"]
        .iter()
        .map(|name| {
            let state = d.join(name);
            component(
                &format!("operator-{name}"),
                &[
                    "operator",
                    "--kubeconfig",
                    kc("vpc-operator").to_str().unwrap(),
                    "--network-kubeconfig",
                    kc("network-controller").to_str().unwrap(),
                    "--state-dir",
                    state.to_str().unwrap(),
                    "--name",
                    name,
                    "--probes",
                    &probe(&format!("operator-{name}")),
                ],
            )
        })
        .collect();
    // The hollow nodes join with a bootstrap token: each gets its own node identity.
    let bootstrap = d.join("bootstrap.kubeconfig");
    run(
        bin,
        &[
            "bootstrap-kubeconfig",
            "--kubeconfig",
            data.join("admin.kubeconfig").to_str().unwrap(),
            "--out",
            bootstrap.to_str().unwrap(),
        ],
    );
    let _agent = Proc::start(
        "agent",
        bin,
        &[
            "agent",
            "--bootstrap-kubeconfig",
            bootstrap.to_str().unwrap(),
            "--hollow",
            "100",
            "--zones",
            "2",
            "--serve",
            "127.0.0.1:0",
            "--probes",
            &probe("agent"),
        ],
        &d.join("agent.log"),
        Some("hollow nodes"),
    );

    // A tenant through a stock kubectl, on the first API server and then, once it is gone,
    // on the second (kubectl knows one server per cluster).
    let admin = Kubectl {
        bin: kubectl.clone(),
        kubeconfig: data.join("admin.kubeconfig"),
        cache: d.join("cache-admin"),
    };
    let tenant = d.join("acme.yaml");
    std::fs::write(
        &tenant,
        "apiVersion: v1\nkind: Tenant\nmetadata:\n  name: acme\n",
    )
    .unwrap();
    admin.run(&["create", "-f", tenant.to_str().unwrap()]);
    let k = Kubectl::tenant_admin(&kubectl, &data, d, "acme");
    // The token came from the server of admin.kubeconfig; the tenant starts on the first
    // server, which knows it from the store.
    let on_server = |addr: &str| {
        let mut config = centaurus_client::kubeconfig::Kubeconfig::load(&k.kubeconfig).unwrap();
        config.clusters[0].cluster.server = format!("https://{addr}");
        config.write(&k.kubeconfig).unwrap();
    };
    on_server(&a1);
    eventually(60, "100 hollow nodes Ready", || {
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
            .count();
        (ready == 100).then_some(())
    });
    // kubectl's `create deployment` speaks protobuf (not decoded yet): a manifest.
    let manifest = d.join("web.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - {name: web, image: busybox}\n",
    )
    .unwrap();
    k.run(&["apply", "-f", manifest.to_str().unwrap()]);
    eventually(60, "3 running pods", || {
        (running_pods(&k, "web") == 3).then_some(())
    });
    // Every component answers its probes and counts its requests to the API.
    for (component, addr) in &probes {
        for path in ["/healthz", "/readyz"] {
            let (code, body) = http_get(addr, path);
            assert_eq!(code, 200, "{component} {path}: {body}");
        }
        let (code, metrics) = http_get(addr, "/metrics");
        assert_eq!(code, 200, "{component} /metrics");
        assert!(
            metrics.contains("centaurus_rest_client_requests_total{method=\"GET\",code=\"200\"}"),
            "{component} /metrics: {metrics}"
        );
    }
    // Logs come from the pod's agent process, over its HTTPS endpoint.
    let pods = k.json(&["get", "pods", "-l", "app=web"]);
    let (pod, uid) = (
        pods["items"][0]["metadata"]["name"].as_str().unwrap(),
        pods["items"][0]["metadata"]["uid"].as_str().unwrap(),
    );
    assert_eq!(
        k.run(&["logs", pod]),
        format!("hollow workload web of pod {uid}\n")
    );
    // The endpoint answers only the API servers: not a tenant, not a component.
    let node = admin.json(&["get", "node", "hollow-0"]);
    let endpoint = node["status"]["agentEndpoint"]["url"].as_str().unwrap();
    for (who, kubeconfig) in [
        ("no certificate", None),
        ("the scheduler", Some(kc("scheduler"))),
    ] {
        let mut curl = Command::new("curl");
        curl.args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"]);
        if let Some(path) = &kubeconfig {
            let config = centaurus_client::kubeconfig::Kubeconfig::load(path).unwrap();
            let conn = config.connection().unwrap();
            let (cert, key) = conn.client_cert.unwrap();
            let (c, k) = (d.join("c.pem"), d.join("k.pem"));
            std::fs::write(&c, cert).unwrap();
            std::fs::write(&k, key).unwrap();
            curl.arg("--cert").arg(&c).arg("--key").arg(&k);
        }
        let out = curl
            .arg(format!("{endpoint}/containerLogs/acme/default/{pod}"))
            .output()
            .unwrap();
        let code = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            code == "403" || code == "000",
            "{who} got {code} from the agent endpoint"
        );
    }

    // SIGKILL the controller instance that owns the Deployment (on the ring of the
    // instances' Leases): its share moves to the others within its lease (10 s).
    let owner_of = |members: &[&str], position: u64| {
        HashRing::with_owners(RingConfig::default(), members.iter().copied())
            .get(position)
            .unwrap()
            .to_owned()
    };
    let deployment = k.json(&["get", "deployment", "web"]);
    let position = deployment["metadata"]["hashKey"].as_i64().unwrap() as u64;
    let owner = owner_of(&["c1", "c2", "c3"], position);
    let started = Instant::now();
    controllers[["c1", "c2", "c3"].iter().position(|c| *c == owner).unwrap()].kill();
    k.run(&["scale", "deployment", "web", "--replicas=4"]);
    eventually(
        20,
        "4 running pods after a controller instance died",
        || (running_pods(&k, "web") == 4).then_some(()),
    );
    eprintln!(
        "controller instance {owner} (the Deployment's) killed: scale-up converged in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // SIGKILL the operator replica that holds the tenant's VPC: the other takes it over,
    // and the next pod's endpoint is provisioned there.
    let vpcs = k.json(&["get", "vpcs"]);
    let vpc = vpcs["items"][0]["metadata"]["name"].as_str().unwrap();
    let owner = owner_of(
        &["op-a", "op-b"],
        stable_hash(format!("acme/{vpc}").as_bytes()),
    );
    let started = Instant::now();
    operators[usize::from(owner == "op-b")].kill();
    k.run(&["scale", "deployment", "web", "--replicas=5"]);
    eventually(40, "5 running pods after an operator replica died", || {
        (running_pods(&k, "web") == 5).then_some(())
    });
    eprintln!(
        "operator replica {owner} (the VPC's) killed: scale-up converged in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // SIGKILL the first API server: every component fails over to the second.
    let started = Instant::now();
    api1.kill();
    on_server(&a2);
    k.run(&["scale", "deployment", "web", "--replicas=6"]);
    eventually(60, "6 running pods after an API server died", || {
        (running_pods(&k, "web") == 6).then_some(())
    });
    eprintln!(
        "API server killed: scale-up converged through the other in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // SIGKILL an etcd member: writes go on, and nothing acknowledged is lost.
    let started = Instant::now();
    members[0].kill();
    k.run(&["scale", "deployment", "web", "--replicas=7"]);
    eventually(60, "7 running pods after an etcd member died", || {
        (running_pods(&k, "web") == 7).then_some(())
    });
    eprintln!(
        "etcd member killed: scale-up converged in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let deployment = k.json(&["get", "deployment", "web"]);
    assert_eq!(deployment["spec"]["replicas"], 7);

    // This host's runc agent as its own node identity: a pod pinned to it runs, and after
    // the agent is killed and started again, runs again.
    if !root_with_runc() {
        eprintln!("SKIPPED the runc agent: needs root and runc");
        return;
    }
    let host = centaurus_runtime::agent::hostname();
    let node_kc = d.join("node.kubeconfig");
    run(
        bin,
        &[
            "node-kubeconfig",
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            node_kc.to_str().unwrap(),
        ],
    );
    let node_root = d.join("node");
    let qemu = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join("qemu-system-x86_64").is_file());
    let agent_args = [
        "agent",
        "--kubeconfig",
        node_kc.to_str().unwrap(),
        "--runtime",
        if qemu { "runc,qemu" } else { "runc" },
        "--root",
        node_root.to_str().unwrap(),
        "--serve",
        "127.0.0.1:0",
    ];
    let mut runc_agent = Proc::start(
        "runc agent",
        bin,
        &agent_args,
        &d.join("runc-agent.log"),
        Some("runs"),
    );
    let overrides = format!(
        r#"{{"apiVersion":"v1","spec":{{"nodeSelector":{{"kubernetes.io/hostname":"{host}"}}}}}}"#
    );
    k.run(&[
        "run",
        "solo",
        "--image=busybox",
        "--restart=Never",
        &format!("--overrides={overrides}"),
        "--",
        "sh",
        "-c",
        "echo started; sleep 3600",
    ]);
    let started = |k: &Kubectl| -> Option<String> {
        let p = k.json(&["get", "pod", "solo"]);
        (p["status"]["phase"] == "Running" && p["spec"]["nodeName"] == host.as_str())
            .then(|| p["status"]["startTime"].as_str().unwrap_or("").to_owned())
    };
    let first = eventually(90, "the pinned pod Running on this host", || started(&k));
    eventually(10, "the runc pod's output through its agent", || {
        (k.run(&["logs", "solo"]) == "started\n").then_some(())
    });
    // A session through the API server, which relays it to the agent's endpoint.
    let exec = k
        .cmd(&["exec", "solo", "--", "sh", "-c", "hostname; exit 7"])
        .output()
        .unwrap();
    assert_eq!(exec.status.code(), Some(7), "{exec:?}");
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "solo\n");
    runc_agent.kill();
    let _runc_agent = Proc::start(
        "runc agent again",
        bin,
        &agent_args,
        &d.join("runc-agent-2.log"),
        Some("runs"),
    );
    eventually(
        90,
        "the pinned pod Running again after its agent restarted",
        || started(&k).filter(|t| *t != first),
    );

    // A VM pod on this host's agent, when QEMU is here.
    if !qemu {
        eprintln!("SKIPPED the VM pod: needs qemu-system-x86 (scripts/setup.sh)");
        return;
    }
    let vm = d.join("vm.yaml");
    std::fs::write(
        &vm,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: vm1\nspec:\n  nodeSelector: {{kubernetes.io/hostname: {host}}}\n  virtualMachine:\n    name: vm\n    image: tiny\n    resources:\n      requests: {{cpu: 500m, memory: 128Mi}}\n"
        ),
    )
    .unwrap();
    let booting = Instant::now();
    k.run(&["apply", "-f", vm.to_str().unwrap()]);
    eventually(120, "the VM pod Running with its guest ready", || {
        let p = k.json(&["get", "pod", "vm1"]);
        (p["status"]["phase"] == "Running" && p["status"]["virtualMachineStatus"]["ready"] == true)
            .then_some(())
    });
    eprintln!(
        "VM pod ready after {:.1} s",
        booting.elapsed().as_secs_f64()
    );
}

/// GET `path` from the plain-HTTP server at `addr`: the status code and the body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (code, body.to_owned())
}

fn root_with_runc() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    root && etcd_binary().is_some()
        && std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|d| d.join("runc").is_file())
}
