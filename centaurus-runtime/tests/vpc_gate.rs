//! The VPC readiness gate on a hollow node: a pod whose endpoint is slow to be provisioned
//! waits, Pending with the reason in its status, and starts once the endpoint is ready; a
//! backlogged network plane never fails it. Both ways of waiting: polling the endpoint,
//! and following a watch of every endpoint (a node fleet's).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use centaurus_core::model::{
    Container, Network, NetworkSpec, ObjectMeta, Pod, PodSpec, Quantity, Resource,
};
use centaurus_core::objects::Objects;
use centaurus_core::store::{RedbStore, Store};
use centaurus_runtime::{AgentConfig, Fleet, HollowRuntime, NoNetwork, NodeAgent, VpcNetwork};
use centaurus_vpc::kinds::{Endpoint, EndpointSpec, EndpointStatus, PROVISIONED, Progress};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_waits_for_a_slow_endpoint_and_never_fails() {
    slow_endpoint(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_waits_on_the_endpoints_watch_and_never_fails() {
    slow_endpoint(true).await;
}

async fn slow_endpoint(watching: bool) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
    let local = centaurus_api::region::LocalRegion::start(store.clone(), dir.path())
        .await
        .unwrap();
    let agents = local.client(centaurus_tenancy::identity::NODE_FLEET.identity());
    let fleet = Fleet::new(agents.clone());
    tokio::spawn(fleet.clone().run());
    fleet.wait_synced().await;
    let runtime = Arc::new(HollowRuntime::default());
    // Each wait for the endpoint gives up after 100 ms: the agent must try again.
    let network = VpcNetwork::new(
        agents,
        Arc::new(NoNetwork::new(Ipv4Addr::new(10, 244, 0, 0))),
        None,
        Duration::from_millis(100),
    );
    let network = Arc::new(if watching {
        network.watching_endpoints()
    } else {
        network
    });
    fleet
        .add(NodeAgent::new(
            AgentConfig {
                node_name: "n1".into(),
                zone: "zone-a".into(),
                labels: BTreeMap::new(),
                capacity: [("cpu", "4"), ("memory", "8Gi"), ("pods", "10")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), Quantity::new(v)))
                    .collect(),
                address: "192.0.2.1".into(),
                heartbeat: Duration::from_secs(5),
                lease_seconds: 20,
            },
            Some(runtime.clone()),
            Some(runtime),
            network,
        ))
        .await
        .unwrap();
    let mut net = Network::typed(ObjectMeta {
        tenant: "acme".into(),
        ..ObjectMeta::named("default")
    });
    net.spec = NetworkSpec {
        type_: "vpc".into(),
        vpc_id: "default".into(),
        ..Default::default()
    };
    Objects::<Network>::new(store.clone())
        .create(net)
        .await
        .unwrap();
    let mut pod = Pod::typed(ObjectMeta::namespaced("acme", "default", "web"));
    pod.spec = PodSpec {
        node_name: "n1".into(),
        containers: vec![Container {
            name: "c".into(),
            image: "busybox".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let pods = Objects::<Pod>::new(store.clone());
    let pod = pods.create(pod).await.unwrap();

    // Many times the gate's timeout later, the pod still waits, and says why.
    let mut phases = Vec::new();
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let p = pods.get(&pod.key()).await.unwrap().unwrap();
        phases.push(p.phase().to_owned());
    }
    assert!(phases.iter().all(|p| p != "Failed"), "{phases:?}");
    let waiting = pods.get(&pod.key()).await.unwrap().unwrap();
    let status = waiting.status.unwrap();
    assert_eq!(status.phase, "Pending");
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "PodReadyToStartContainers")
        .expect("the reason it waits");
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", "NetworkNotReady")
    );
    assert!(condition.message.contains("endpoint"), "{condition:?}");

    // The operator catches up: the pod starts with the endpoint's address.
    let mut endpoint = Endpoint::typed(ObjectMeta::namespaced("acme", "default", "web"));
    endpoint.spec = EndpointSpec {
        subnet: "default".into(),
        droplet: "n1".into(),
        pod: "web".into(),
        ..Default::default()
    };
    endpoint.status = Some(EndpointStatus {
        progress: Progress {
            phase: PROVISIONED.into(),
            ..Default::default()
        },
        ip: "10.0.0.5".into(),
        prefix_len: 16,
        ..Default::default()
    });
    Objects::<Endpoint>::new(store.clone())
        .create(endpoint)
        .await
        .unwrap();
    let created = tokio::time::Instant::now();
    let deadline = created + Duration::from_secs(20);
    loop {
        let p = pods.get(&pod.key()).await.unwrap().unwrap();
        assert_ne!(p.phase(), "Failed");
        let status = p.status.clone().unwrap_or_default();
        if p.phase() == "Running" && status.pod_ip == "10.0.0.5" {
            assert!(
                status
                    .conditions
                    .iter()
                    .any(|c| { c.type_ == "PodReadyToStartContainers" && c.status == "True" })
            );
            println!(
                "watching: {watching}: Running {:?} after the endpoint",
                created.elapsed()
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{p:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
