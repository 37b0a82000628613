//! The node agent with the real runtimes: a container pod under runc in its own network
//! namespace, and a VM pod under QEMU whose guest prints its ready line, runs its
//! `userData` and is rebooted by an Action. Needs root, runc, QEMU and the VM kernel
//! (`scripts/setup.sh` installs them; CI runs as root); without them it says why and skips.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use centaurus_core::model::{
    Action, ActionSpec, Container, ObjectMeta, Pod, PodAction, PodSpec, Quantity, RebootParams,
    Resource, ResourceRequirements, VirtualMachine,
};
use centaurus_core::objects::Objects;
use centaurus_core::store::{RedbStore, Store};
use centaurus_runtime::{
    AgentConfig, Fleet, HostLocalNetwork, NodeAgent, QemuRuntime, RuncRuntime, Runtime,
};

fn usable() -> bool {
    if !RuncRuntime::available() {
        eprintln!("SKIP: runc is missing or we are not root (scripts/setup.sh installs runc)");
        return false;
    }
    if !QemuRuntime::available(None) {
        eprintln!("SKIP: qemu-system-x86_64 or the VM kernel is missing (run scripts/setup.sh)");
        return false;
    }
    true
}

struct Node {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    fleet: Arc<Fleet>,
    task: tokio::task::JoinHandle<()>,
    bridge: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

async fn node(name: &str) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
    let local = centaurus_api::region::LocalRegion::start(store.clone(), dir.path())
        .await
        .unwrap();
    let fleet = Fleet::new(local.client(centaurus_tenancy::identity::NODE_FLEET.identity()));
    let task = tokio::spawn(fleet.clone().run());
    fleet.wait_synced().await;
    let containers: Arc<dyn Runtime> = Arc::new(RuncRuntime::new(dir.path().join("runc")));
    let vms: Arc<dyn Runtime> = Arc::new(QemuRuntime::new(dir.path().join("qemu"), None));
    // Each test node has its own bridge and range, as separate hosts would.
    let subnet = if name.starts_with("vm") { 124 } else { 123 };
    let bridge = format!("cbr{subnet}-{}", std::process::id() % 100_000);
    let agent = NodeAgent::new(
        AgentConfig {
            node_name: name.into(),
            zone: "zone-a".into(),
            labels: BTreeMap::new(),
            capacity: [("cpu", "2"), ("memory", "4Gi"), ("pods", "20"), ("vm", "2")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), Quantity::new(v)))
                .collect(),
            address: "127.0.0.1".into(),
            heartbeat: Duration::from_secs(5),
            lease_seconds: 20,
        },
        Some(containers),
        Some(vms),
        Arc::new(HostLocalNetwork::new(
            bridge.clone(),
            Ipv4Addr::new(10, subnet, 0, 1),
        )),
    );
    fleet.add(agent).await.unwrap();
    Node {
        _dir: dir,
        store,
        fleet,
        task,
        bridge,
    }
}

async fn wait_pod(pods: &Objects<Pod>, key: &str, secs: u64, ok: impl Fn(&Pod) -> bool) -> Pod {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let p = pods.get(key).await.unwrap().unwrap();
        if ok(&p) {
            return p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out; pod status: {:?}",
            p.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_pod_runs_under_runc_with_its_own_network() {
    if !usable() {
        return;
    }
    let n = node("runc-node").await;
    let pods = Objects::<Pod>::new(n.store.clone());
    let mut pod = Pod::typed(ObjectMeta::namespaced("acme", "dev", "hello"));
    pod.spec = PodSpec {
        node_name: "runc-node".into(),
        restart_policy: Some("Never".into()),
        containers: vec![Container {
            name: "main".into(),
            image: "busybox".into(),
            command: vec!["sh".into(), "-c".into()],
            args: vec!["echo hello from $(hostname); ip -4 addr show eth0 | grep -o 'inet [0-9.]*'; sleep 1; exit 3".into()],
            resources: ResourceRequirements {
                limits: [
                    ("cpu".to_string(), Quantity::new("500m")),
                    ("memory".to_string(), Quantity::new("64Mi")),
                ]
                .into(),
                ..Default::default()
            },
            ..Default::default()
        }],
        ..Default::default()
    };
    let pod = pods.create(pod).await.unwrap();
    let key = pod.key();
    let running = wait_pod(&pods, &key, 30, |p| {
        p.phase() == "Running" || p.phase() == "Failed"
    })
    .await;
    let ip = running.status.as_ref().unwrap().pod_ip.clone();
    assert!(
        ip.starts_with("10.123."),
        "pod IP {ip}: {:?}",
        running.status
    );
    // restartPolicy Never: the exit code 3 makes the pod Failed.
    let done = wait_pod(&pods, &key, 30, |p| p.phase() == "Failed").await;
    let st = &done.status.as_ref().unwrap().container_statuses[0];
    assert_eq!(st.state.terminated.as_ref().unwrap().exit_code, 3);
    let log = String::from_utf8(n.fleet.logs(&done, None).await.unwrap()).unwrap();
    assert!(log.contains("hello from hello"), "log: {log}");
    assert!(log.contains(&format!("inet {ip}")), "log: {log}");
    pods.delete(&key, None).await.unwrap();
    let ns = HostLocalNetwork::netns_name(&pod.metadata.uid);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while std::path::Path::new(&format!("/var/run/netns/{ns}")).exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "netns {ns} not removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_pod_boots_runs_user_data_and_reboots() {
    if !usable() {
        return;
    }
    let n = node("vm-node").await;
    let pods = Objects::<Pod>::new(n.store.clone());
    let script = "#!/bin/sh\necho userdata-ran-in-$(hostname)\n";
    let mut pod = Pod::typed(ObjectMeta::namespaced("acme", "dev", "vm1"));
    pod.spec = PodSpec {
        node_name: "vm-node".into(),
        virtual_machine: Some(VirtualMachine {
            name: "vm".into(),
            image: "tiny".into(),
            user_data: base64::engine::general_purpose::STANDARD.encode(script),
            resources: ResourceRequirements {
                limits: [
                    ("cpu".to_string(), Quantity::new("1")),
                    ("memory".to_string(), Quantity::new("128Mi")),
                ]
                .into(),
                ..Default::default()
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod = pods.create(pod).await.unwrap();
    let key = pod.key();
    let ready = wait_pod(&pods, &key, 90, |p| {
        p.status
            .as_ref()
            .and_then(|s| s.virtual_machine_status.as_ref())
            .is_some_and(|v| v.ready)
    })
    .await;
    assert_eq!(ready.phase(), "Running");
    let log = String::from_utf8_lossy(&n.fleet.logs(&ready, None).await.unwrap()).into_owned();
    assert!(log.contains("centaurus-vm: ready vm1"), "console: {log}");
    assert!(log.contains("userdata-ran-in-vm1"), "console: {log}");

    // Reboot through an Action: the guest resets and prints its ready line again.
    let actions = Objects::<Action>::new(n.store.clone());
    let mut action = Action::typed(ObjectMeta::namespaced("acme", "dev", "reboot-vm1"));
    action.spec = ActionSpec {
        node_name: String::new(),
        pod_action: Some(PodAction {
            pod_name: "vm1".into(),
            reboot_action: Some(RebootParams {
                delay_in_seconds: 0,
            }),
            ..Default::default()
        }),
    };
    let action = actions.create(action).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let a = actions.get(&action.key()).await.unwrap().unwrap();
        // The agent records the result, then the node that carried it out.
        if let Some(s) = a.status.filter(|s| s.complete)
            && !a.spec.node_name.is_empty()
        {
            assert_eq!(s.state, "Succeeded", "{}", s.message);
            assert_eq!(a.spec.node_name, "vm-node");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "action not carried out"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rebooted = wait_pod(&pods, &key, 90, |p| {
        p.status
            .as_ref()
            .and_then(|s| s.virtual_machine_status.as_ref())
            .is_some_and(|v| v.restart_count == 1)
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let log =
            String::from_utf8_lossy(&n.fleet.logs(&rebooted, None).await.unwrap()).into_owned();
        if log.matches("centaurus-vm: ready vm1").count() >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no second boot: {log}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    pods.delete(&key, None).await.unwrap();
}
