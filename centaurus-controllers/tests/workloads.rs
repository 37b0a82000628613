//! The compute plane end to end on hollow nodes: a Deployment's pods are scheduled over
//! zones and run, it scales and rolls to a new image, and when every node of one zone
//! stops heartbeating its pods are replaced in the other zones; a deleted node comes back
//! while its agent runs, and its pods are replaced when no agent brings it back; the
//! scheduler, controllers and agents record events, which expire; Services' Endpoints and
//! EndpointSlices follow their pods.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use centaurus_api::region::LocalRegion;
use centaurus_client::{Api, Client};
use centaurus_controllers::deployment::REVISION_ANNOTATION;
use centaurus_controllers::{EventExpiry, NodeLifecycleConfig, run_all};
use centaurus_core::model::{
    Container, ContainerPort, DaemonSet, Deployment, DeploymentSpec, EndpointAddress, EndpointPort,
    EndpointSlice, EndpointSubset, Endpoints, Event, IntOrString, LabelSelector, ObjectMeta,
    ObjectReference, Pod, PodSpec, PodTemplateSpec, Quantity, Resource, ResourceList,
    ResourceRequirements, SERVICE_NAME_LABEL, Service, ServicePort, StatefulSet,
    StatefulSetRollingUpdate,
};
use centaurus_core::store::{RedbStore, Store};
use centaurus_runtime::{AgentConfig, Fleet, HollowRuntime, NoNetwork, NodeAgent};
use centaurus_sched::{Scheduler, SchedulerConfig};
use centaurus_tenancy::identity;

fn capacity() -> ResourceList {
    [
        ("cpu", "4"),
        ("memory", "8Gi"),
        ("pods", "110"),
        ("vm", "2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity::new(v)))
    .collect()
}

fn deployment(replicas: i32, image: &str) -> Deployment {
    let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
    let mut d = Deployment::typed(ObjectMeta::namespaced("acme", "prod", "web"));
    d.spec = DeploymentSpec {
        replicas: Some(replicas),
        selector: LabelSelector {
            match_labels: labels.clone(),
            ..Default::default()
        },
        template: PodTemplateSpec {
            metadata: ObjectMeta {
                labels,
                ..Default::default()
            },
            spec: PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    image: image.into(),
                    resources: ResourceRequirements {
                        requests: [("cpu".to_string(), Quantity::new("500m"))].into(),
                        ..Default::default()
                    },
                    ..Default::default()
                }],
                ..Default::default()
            },
        },
        ..Default::default()
    };
    d
}

async fn wait_for(pods: &Api<Pod>, what: &str, secs: u64, ok: impl Fn(&[Pod]) -> bool) -> Vec<Pod> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let all = pods.list("/registry/pods/").await.unwrap();
        if ok(&all) {
            return all;
        }
        if tokio::time::Instant::now() > deadline {
            let summary: Vec<_> = all
                .iter()
                .map(|p| {
                    (
                        p.metadata.name.clone(),
                        p.spec.node_name.clone(),
                        p.phase().to_owned(),
                    )
                })
                .collect();
            panic!("timed out waiting for {what}: {summary:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn running<'a>(all: &'a [Pod], image: &str) -> Vec<&'a Pod> {
    all.iter()
        .filter(|p| p.phase() == "Running" && p.spec.containers[0].image == image)
        .filter(|p| {
            p.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .collect()
}

/// An API server in this process, the scheduler, the controllers (fast lifecycle timings)
/// and a fleet of `nodes` hollow nodes over three zones, heartbeating every 200 ms, each a
/// client of the API; the client returned is an administrator's, with tenant `acme` and
/// its namespace `prod` made.
async fn region(
    nodes: usize,
) -> (
    tempfile::TempDir,
    Client,
    Arc<Fleet>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
    let local = LocalRegion::start(store, dir.path()).await.unwrap();
    local.space("acme", "prod").await.unwrap();
    let scheduler = Arc::new(Scheduler::new(
        local.client(identity::SCHEDULER.identity()),
        SchedulerConfig::default(),
    ));
    let mut tasks = vec![
        tokio::spawn(scheduler.clone().run()),
        tokio::spawn(run_all(
            local.client(identity::CONTROLLERS.identity()),
            NodeLifecycleConfig {
                period: Duration::from_millis(200),
                eviction_timeout: Duration::from_secs(1),
                orphan_grace: Duration::from_secs(1),
            },
            centaurus_controllers::Share::all(),
        )),
    ];
    let fleet = Fleet::new(local.client(identity::NODE_FLEET.identity()));
    tasks.push(tokio::spawn(fleet.clone().run()));
    fleet.wait_synced().await;
    for i in 0..nodes {
        fleet.add(hollow_agent(i)).await.unwrap();
    }

    (dir, local.admin(), fleet, tasks)
}

/// A stateful set makes `db-0..2` one after another, each once its predecessor is ready;
/// a deleted pod comes back under its name; a new template rolls down to the partition;
/// scaling down removes the highest ordinal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_sets_keep_ordinal_names() {
    let (_dir, admin, _fleet, tasks) = region(3).await;
    let pods = admin.api::<Pod>();
    let sets = admin.api::<StatefulSet>();
    let template = deployment(3, "db:1").spec;
    let mut sts = StatefulSet::typed(ObjectMeta::namespaced("acme", "prod", "db"));
    sts.spec.replicas = Some(3);
    sts.spec.selector = template.selector;
    sts.spec.template = template.template;
    sts.spec.template.spec.restart_policy = Some("Always".into());
    let sts = sets.create(sts).await.unwrap();
    let names = |all: &[Pod], image: &str| -> Vec<String> {
        let mut n: Vec<String> = running(all, image)
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| p.metadata.name.clone())
            .collect();
        n.sort();
        n
    };
    let all = wait_for(&pods, "db-0, db-1 and db-2 running", 30, |all| {
        names(all, "db:1") == ["db-0", "db-1", "db-2"]
    })
    .await;
    // In order: each was made after its predecessor had started.
    let started = |name: &str| {
        let p = all.iter().find(|p| p.metadata.name == name).unwrap();
        (
            p.metadata.creation_timestamp.unwrap(),
            p.status.as_ref().unwrap().start_time.unwrap(),
        )
    };
    for (before, after) in [("db-0", "db-1"), ("db-1", "db-2")] {
        assert!(
            started(after).0 >= started(before).1,
            "{after} was made before {before} started"
        );
    }
    // A deleted pod comes back under its own name.
    let uid = all
        .iter()
        .find(|p| p.metadata.name == "db-1")
        .unwrap()
        .metadata
        .uid
        .clone();
    pods.delete("/registry/pods/acme/prod/db-1", None)
        .await
        .unwrap();
    wait_for(&pods, "db-1 back", 30, |all| {
        names(all, "db:1") == ["db-0", "db-1", "db-2"]
            && all
                .iter()
                .any(|p| p.metadata.name == "db-1" && p.metadata.uid != uid)
    })
    .await;
    // A new template with partition 1: db-2 and db-1 roll, db-0 keeps the old one.
    sets.modify(&sts.key(), |s| {
        s.spec.template.spec.containers[0].image = "db:2".into();
        s.spec.update_strategy.rolling_update =
            Some(StatefulSetRollingUpdate { partition: Some(1) });
        true
    })
    .await
    .unwrap();
    wait_for(&pods, "db-1 and db-2 on the new template", 30, |all| {
        names(all, "db:2") == ["db-1", "db-2"] && names(all, "db:1") == ["db-0"]
    })
    .await;
    // Scaled to one: the highest ordinals go.
    sets.modify(&sts.key(), |s| {
        s.spec.replicas = Some(1);
        true
    })
    .await
    .unwrap();
    wait_for(&pods, "db-0 alone", 30, |all| {
        all.iter().all(|p| p.metadata.name == "db-0")
    })
    .await;
    let status = sets.get(&sts.key()).await.unwrap().unwrap().status.unwrap();
    assert_eq!(
        (status.replicas, status.ready_replicas),
        (1, 1),
        "{status:?}"
    );
    for t in tasks {
        t.abort();
    }
}

/// Hollow node `hollow-{i}`, in zone a, b or c by `i`, heartbeating every 200 ms.
fn hollow_agent(i: usize) -> NodeAgent {
    let network = Arc::new(NoNetwork::new(Ipv4Addr::new(10, 244, i as u8, 0)));
    let runtime = Arc::new(HollowRuntime::default());
    NodeAgent::new(
        AgentConfig {
            node_name: format!("hollow-{i}"),
            zone: ["zone-a", "zone-b", "zone-c"][i % 3].into(),
            labels: BTreeMap::new(),
            capacity: capacity(),
            address: format!("192.0.2.{}", i + 1),
            heartbeat: Duration::from_millis(200),
            lease_seconds: 1,
        },
        Some(runtime.clone()),
        Some(runtime),
        network,
    )
}

/// A daemon set puts one pod on each node and follows a new one; a new template rolls
/// over the nodes; its pod stays on a node that stops heartbeating (daemon pods tolerate
/// it); a node selector narrows its nodes; deleting it takes its pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_sets_follow_the_nodes() {
    let (_dir, admin, fleet, tasks) = region(3).await;
    let pods = admin.api::<Pod>();
    let sets = admin.api::<DaemonSet>();
    let template = deployment(1, "agent:1").spec;
    let mut ds = DaemonSet::typed(ObjectMeta::namespaced("acme", "prod", "agent"));
    ds.spec.selector = template.selector;
    ds.spec.template = template.template;
    ds.spec.template.spec.restart_policy = Some("Always".into());
    let ds = sets.create(ds).await.unwrap();
    let on_nodes = |all: &[Pod], image: &str| -> Vec<String> {
        let mut nodes: Vec<String> = running(all, image)
            .iter()
            .map(|p| p.spec.node_name.clone())
            .collect();
        nodes.sort();
        nodes
    };
    wait_for(&pods, "a pod on each of 3 nodes", 20, |all| {
        on_nodes(all, "agent:1") == ["hollow-0", "hollow-1", "hollow-2"] && all.len() == 3
    })
    .await;
    // A new node gets its pod.
    fleet.add(hollow_agent(3)).await.unwrap();
    wait_for(&pods, "a pod on the new node", 20, |all| {
        on_nodes(all, "agent:1").len() == 4 && all.len() == 4
    })
    .await;
    // A new template rolls over every node.
    sets.modify(&ds.key(), |d| {
        d.spec.template.spec.containers[0].image = "agent:2".into();
        true
    })
    .await
    .unwrap();
    wait_for(&pods, "the new template on every node", 30, |all| {
        on_nodes(all, "agent:2").len() == 4 && all.len() == 4
    })
    .await;
    let status = sets.get(&ds.key()).await.unwrap().unwrap().status.unwrap();
    assert_eq!(
        (
            status.desired_number_scheduled,
            status.updated_number_scheduled
        ),
        (4, 4),
        "{status:?}"
    );
    // A lost node keeps its daemon pod (the eviction timeout here is 1 s).
    fleet.stop_node("hollow-3");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let all = pods.list("/registry/pods/").await.unwrap();
    assert!(
        all.iter().any(|p| p.spec.node_name == "hollow-3"),
        "the daemon pod of the lost node was evicted"
    );
    // A node selector narrows the set to the nodes of zone a.
    sets.modify(&ds.key(), |d| {
        d.spec
            .template
            .spec
            .node_selector
            .insert("topology.kubernetes.io/zone".into(), "zone-a".into());
        true
    })
    .await
    .unwrap();
    wait_for(&pods, "pods on the zone-a nodes only", 30, |all| {
        on_nodes(all, "agent:2") == ["hollow-0"] && all.len() <= 2
    })
    .await;
    sets.delete(&ds.key(), None).await.unwrap();
    wait_for(&pods, "no pods", 20, |all| all.is_empty()).await;
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_scale_roll_and_survive_a_zone_failure() {
    let (_dir, admin, fleet, tasks) = region(6).await;
    let pods = admin.api::<Pod>();
    let deployments = admin.api::<Deployment>();
    let d = deployments
        .create(deployment(3, "busybox:1"))
        .await
        .unwrap();
    let all = wait_for(&pods, "3 running pods", 20, |all| {
        running(all, "busybox:1").len() == 3
    })
    .await;
    let zones: HashSet<String> = all
        .iter()
        .map(|p| p.spec.node_name.clone())
        .map(|n| {
            ["zone-a", "zone-b", "zone-c"]
                [n.trim_start_matches("hollow-").parse::<usize>().unwrap() % 3]
                .to_owned()
        })
        .collect();
    assert_eq!(zones.len(), 3, "three replicas spread over three zones");
    assert!(
        all.iter()
            .all(|p| !p.status.as_ref().unwrap().pod_ip.is_empty())
    );

    // Scale to 5.
    deployments
        .modify(&d.key(), |d| {
            d.spec.replicas = Some(5);
            true
        })
        .await
        .unwrap();
    wait_for(&pods, "5 running pods", 20, |all| {
        running(all, "busybox:1").len() == 5
    })
    .await;

    // Roll to a new image: every pod is replaced, never below 5 - 25% available.
    deployments
        .modify(&d.key(), |d| {
            d.spec.template.spec.containers[0].image = "busybox:2".into();
            true
        })
        .await
        .unwrap();
    wait_for(&pods, "the rollout", 30, |all| {
        running(all, "busybox:2").len() == 5 && all.len() == 5
    })
    .await;
    let d_now = deployments.get(&d.key()).await.unwrap().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut status = d_now.status.clone().unwrap_or_default();
    while status.updated_replicas != 5 || status.available_replicas != 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "deployment status: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = deployments
            .get(&d.key())
            .await
            .unwrap()
            .unwrap()
            .status
            .unwrap_or_default();
    }

    // Zone a fails: its nodes stop heartbeating; their pods are replaced elsewhere.
    let zone_a = ["hollow-0", "hollow-3"];
    for n in zone_a {
        fleet.stop_node(n);
    }
    let all = wait_for(&pods, "replacement in other zones", 30, |all| {
        let live = running(all, "busybox:2");
        live.len() == 5
            && live
                .iter()
                .all(|p| !zone_a.contains(&p.spec.node_name.as_str()))
            && all
                .iter()
                .all(|p| !zone_a.contains(&p.spec.node_name.as_str()))
    })
    .await;
    assert_eq!(all.len(), 5);
    let nodes = admin.api::<centaurus_core::model::Node>();
    let lost = nodes
        .get("/registry/nodes/hollow-0")
        .await
        .unwrap()
        .unwrap();
    let ready = lost
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "Unknown");
    assert!(lost.spec.taints.iter().any(|t| t.effect == "NoExecute"));
    // The node controller said so, about the node and about the pods it evicted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let node_events = admin
            .api::<Event>()
            .list("/registry/events/system/default/")
            .await
            .unwrap();
        let evicted = events_of_prod(&admin)
            .await
            .into_iter()
            .any(|e| e.reason == "TaintManagerEviction" && e.source.component == "node-controller");
        let not_ready = node_events.iter().any(|e| {
            e.reason == "NodeNotReady"
                && e.involved_object.kind == "Node"
                && e.involved_object.name == "hollow-0"
        });
        if evicted && not_ready {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "evicted {evicted}, NodeNotReady {not_ready}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Each template is a revision, numbered as `kubectl rollout history` reads them; going
    // back to an earlier template makes it the newest revision.
    let revisions = |want: &'static [(&'static str, &'static str)]| {
        let (sets, deployments, key) = (
            admin.api::<centaurus_core::model::ReplicaSet>(),
            deployments.clone(),
            d.key(),
        );
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let mut got: Vec<(String, String)> = sets
                    .list("/registry/replicasets/")
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|rs| {
                        (
                            rs.spec.template.spec.containers[0].image.clone(),
                            rs.metadata.annotations[REVISION_ANNOTATION].clone(),
                        )
                    })
                    .collect();
                got.sort();
                let current = deployments.get(&key).await.unwrap().unwrap();
                let newest = want.iter().map(|(_, r)| *r).max().unwrap();
                let expected: Vec<(String, String)> = want
                    .iter()
                    .map(|(i, r)| (i.to_string(), r.to_string()))
                    .collect();
                if got == expected
                    && current
                        .metadata
                        .annotations
                        .get(REVISION_ANNOTATION)
                        .map(String::as_str)
                        == Some(newest)
                {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "revisions {got:?}, deployment at {:?}",
                    current.metadata.annotations.get(REVISION_ANNOTATION)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    revisions(&[("busybox:1", "1"), ("busybox:2", "2")]).await;
    deployments
        .modify(&d.key(), |d| {
            d.spec.template.spec.containers[0].image = "busybox:1".into();
            true
        })
        .await
        .unwrap();
    revisions(&[("busybox:1", "3"), ("busybox:2", "2")]).await;

    // Deleting the deployment removes its replica sets and pods.
    deployments.delete(&d.key(), None).await.unwrap();
    wait_for(&pods, "garbage collection", 20, |all| all.is_empty()).await;
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_node_comes_back_or_its_pods_move() {
    let (_dir, admin, fleet, tasks) = region(3).await;
    let pods = admin.api::<Pod>();
    let nodes = admin.api::<centaurus_core::model::Node>();
    admin
        .api::<Deployment>()
        .create(deployment(3, "busybox:1"))
        .await
        .unwrap();
    let all = wait_for(&pods, "3 running pods", 20, |all| {
        running(all, "busybox:1").len() == 3
    })
    .await;
    // Deleted while its agent runs: the agent registers it again, its pods stay.
    let first = all[0].spec.node_name.clone();
    let key = format!("/registry/nodes/{first}");
    nodes.delete(&key, None).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while nodes.get(&key).await.unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{first} was not registered again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Deleted with its agent gone: its pods are evicted and replaced on the other nodes.
    let victim = all[1].spec.node_name.clone();
    fleet.stop_node(&victim);
    nodes
        .delete(&format!("/registry/nodes/{victim}"), None)
        .await
        .unwrap();
    let all = wait_for(&pods, "the pods of the deleted node replaced", 30, |all| {
        running(all, "busybox:1").len() == 3 && all.iter().all(|p| p.spec.node_name != victim)
    })
    .await;
    assert!(all.iter().any(|p| p.spec.node_name == first));
    for t in tasks {
        t.abort();
    }
}

/// The events of `acme/prod`.
async fn events_of_prod(admin: &Client) -> Vec<Event> {
    admin
        .api::<Event>()
        .list("/registry/events/acme/prod/")
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_controllers_and_agents_record_events_that_expire() {
    let (_dir, admin, _fleet, tasks) = region(2).await;
    let pods = admin.api::<Pod>();
    admin
        .api::<Deployment>()
        .create(deployment(2, "busybox:1"))
        .await
        .unwrap();
    let all = wait_for(&pods, "2 running pods", 20, |all| {
        running(all, "busybox:1").len() == 2
    })
    .await;
    let pod = &all[0];
    let want = [
        ("Deployment", "ScalingReplicaSet", "deployment-controller"),
        ("ReplicaSet", "SuccessfulCreate", "replicaset-controller"),
        ("Pod", "Scheduled", "default-scheduler"),
        ("Pod", "Created", "kubelet"),
        ("Pod", "Started", "kubelet"),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events = events_of_prod(&admin).await;
        let found = |(kind, reason, component): &(&str, &str, &str)| {
            events.iter().any(|e| {
                e.involved_object.kind == *kind
                    && e.reason == *reason
                    && e.source.component == *component
                    && (*kind != "Pod" || e.involved_object.name == pod.metadata.name)
            })
        };
        if want.iter().all(found) {
            break events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing {:?} among {:?}",
            want.iter().filter(|w| !found(w)).collect::<Vec<_>>(),
            events
                .iter()
                .map(|e| (&e.involved_object.kind, &e.reason))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let scheduled = events
        .iter()
        .find(|e| e.reason == "Scheduled" && e.involved_object.name == pod.metadata.name)
        .unwrap();
    assert_eq!(
        scheduled.message,
        format!(
            "Successfully assigned prod/{} to {}",
            pod.metadata.name, pod.spec.node_name
        )
    );
    assert_eq!(scheduled.involved_object.uid, pod.metadata.uid);
    let started = events
        .iter()
        .find(|e| e.reason == "Started" && e.involved_object.name == pod.metadata.name)
        .unwrap();
    assert_eq!(started.source.host, pod.spec.node_name);
    assert_eq!(started.involved_object.field_path, "spec.containers{web}");

    // The same event again counts up on one object.
    let recorder = centaurus_client::Recorder::new(admin.clone(), "tester");
    for _ in 0..3 {
        recorder.warning(ObjectReference::to(pod), "Probed", "the probe failed");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let probed: Vec<Event> = events_of_prod(&admin)
            .await
            .into_iter()
            .filter(|e| e.reason == "Probed")
            .collect();
        if probed.len() == 1 && probed[0].count == 3 {
            assert_eq!(probed[0].type_, "Warning");
            assert!(probed[0].last_timestamp >= probed[0].first_timestamp);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "repeats are not one event counted 3 times: {probed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Expiry: events last seen before the TTL go, the others stay.
    let stale = Event {
        metadata: ObjectMeta::namespaced("acme", "prod", "stale.1"),
        involved_object: ObjectReference::to(pod),
        reason: "Old".into(),
        last_timestamp: Some(centaurus_core::model::now() - chrono::Duration::hours(2)),
        ..Default::default()
    };
    admin.api::<Event>().create(stale).await.unwrap();
    let before = events_of_prod(&admin).await.len();
    let expiry = EventExpiry::new(&admin, Duration::from_secs(3600));
    let expired = expiry
        .sweep(&centaurus_controllers::Share::all())
        .await
        .unwrap();
    assert_eq!(expired, 1);
    let after = events_of_prod(&admin).await;
    assert_eq!(after.len(), before - 1);
    assert!(after.iter().all(|e| e.reason != "Old"));
    for t in tasks {
        t.abort();
    }
}

/// A namespace quota holds the pods a Deployment's ReplicaSet creates (it records why), and
/// the quota controller frees what pods used once they are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_hold_controllers_pods_and_free_what_goes() {
    use centaurus_core::model::{ResourceQuota, Tenant, quota::ResourceQuotaSpec};
    let (_dir, admin, _fleet, tasks) = region(2).await;
    let pods = admin.api::<Pod>();
    let quotas = admin.api::<ResourceQuota>();
    // The tenant's own quota counts the same pods, over all its namespaces.
    let tenants = admin.api::<Tenant>();
    tenants
        .modify("/registry/tenants/acme", |t| {
            t.spec.quota.insert("pods".into(), Quantity::new("10"));
            true
        })
        .await
        .unwrap();
    let mut q = ResourceQuota::typed(ObjectMeta::namespaced("acme", "prod", "compute"));
    q.spec = ResourceQuotaSpec {
        hard: [("pods", "3"), ("requests.cpu", "1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), Quantity::new(v)))
            .collect(),
        ..Default::default()
    };
    quotas.create(q).await.unwrap();
    admin
        .api::<Deployment>()
        .create(deployment(3, "busybox:1"))
        .await
        .unwrap();
    // Two pods of 500m fit in 1 cpu; the third is refused, and the refusal recorded.
    wait_for(&pods, "2 running pods", 20, |all| {
        running(all, "busybox:1").len() == 2
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let refused = events_of_prod(&admin)
            .await
            .into_iter()
            .any(|e| e.reason == "FailedCreate" && e.message.contains("exceeded quota: compute"));
        if refused {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no FailedCreate event"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        pods.list("/registry/pods/acme/prod/").await.unwrap().len(),
        2
    );
    let key = "/registry/resourcequotas/acme/prod/compute";
    let used = |q: &ResourceQuota| q.status.clone().unwrap_or_default().used;
    assert_eq!(
        used(&quotas.get(key).await.unwrap().unwrap())["requests.cpu"].0,
        "1"
    );
    // Scaled to one, the freed share is recounted (once the last charge has settled).
    admin
        .api::<Deployment>()
        .modify("/registry/deployments/acme/prod/web", |d| {
            d.spec.replicas = Some(1);
            true
        })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let q = quotas.get(key).await.unwrap().unwrap();
        let u = used(&q);
        let t = tenants
            .get("/registry/tenants/acme")
            .await
            .unwrap()
            .unwrap();
        let tenant_pods = t.status.unwrap_or_default().used.get("pods").cloned();
        if u.get("requests.cpu").map(|q| q.0.as_str()) == Some("500m")
            && u.get("pods").map(|q| q.0.as_str()) == Some("1")
            && tenant_pods.as_ref().map(|q| q.0.as_str()) == Some("1")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still used: {u:?}, tenant: {tenant_pods:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for t in tasks {
        t.abort();
    }
}

/// Polls `probe` every 100 ms until it gives a value, for at most `secs` seconds.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    secs: u64,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Service leads to the ready pods its selector picks: its Endpoints and EndpointSlice
/// follow a Deployment's pods as it scales, a named `targetPort` resolves to the
/// container's port, a Service without a selector keeps the Endpoints made by hand, and
/// a deleted Service's Endpoints and slices go with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_lead_to_their_ready_pods() {
    let (_dir, admin, _fleet, tasks) = region(2).await;
    let mut d = deployment(3, "web:1");
    d.spec.template.spec.containers[0].ports = vec![ContainerPort {
        name: "http".into(),
        container_port: 8080,
        protocol: None,
    }];
    let d = admin.api::<Deployment>().create(d).await.unwrap();
    let services = admin.api::<Service>();
    let mut svc = Service::typed(ObjectMeta::namespaced("acme", "prod", "web"));
    svc.spec.selector = [("app".to_string(), "web".to_string())].into();
    svc.spec.ports = vec![ServicePort {
        name: "web".into(),
        port: 80,
        target_port: Some(IntOrString::String("http".into())),
        ..Default::default()
    }];
    let svc = services.create(svc).await.unwrap();
    assert!(svc.virtual_ip().is_some(), "{:?}", svc.spec);

    let endpoints = admin.api::<Endpoints>();
    let slices = admin.api::<EndpointSlice>();
    let pods = admin.api::<Pod>();
    let ep_key = "/registry/serviceendpoints/acme/prod/web";
    let ready_ips = |n: usize| {
        let (endpoints, pods) = (endpoints.clone(), pods.clone());
        async move {
            let ep = endpoints.get(ep_key).await.unwrap()?;
            let s = ep.subsets.first()?;
            let mut ips: Vec<String> = s.addresses.iter().map(|a| a.ip.clone()).collect();
            let mut want: Vec<String> = pods
                .list("/registry/pods/acme/prod/")
                .await
                .unwrap()
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter_map(|p| p.status.as_ref().map(|s| s.pod_ip.clone()))
                .collect();
            ips.sort();
            want.sort();
            (ips.len() == n && ips == want && ep.subsets.len() == 1).then_some(s.clone())
        }
    };
    let subset = eventually("3 ready addresses", 30, || ready_ips(3)).await;
    assert_eq!(subset.ports.len(), 1);
    assert_eq!(
        (subset.ports[0].name.as_str(), subset.ports[0].port),
        ("web", 8080)
    );
    assert!(subset.addresses.iter().all(|a| a.node_name.is_some()));
    let slice = eventually("a slice of 3", 10, || {
        let slices = slices.clone();
        async move {
            let all = slices
                .list("/registry/endpointslices/acme/prod/")
                .await
                .unwrap();
            all.into_iter().find(|s| {
                s.metadata
                    .labels
                    .get(SERVICE_NAME_LABEL)
                    .map(String::as_str)
                    == Some("web")
                    && s.endpoints.len() == 3
            })
        }
    })
    .await;
    assert_eq!(slice.address_type, "IPv4");
    assert_eq!(slice.ports[0].port, 8080);
    assert!(
        slice
            .endpoints
            .iter()
            .all(|e| e.conditions.ready == Some(true))
    );
    assert_eq!(slice.metadata.owner_references[0].uid, svc.metadata.uid);

    // Scaled down: the addresses follow.
    admin
        .api::<Deployment>()
        .modify(&d.key(), |d| {
            d.spec.replicas = Some(1);
            true
        })
        .await
        .unwrap();
    eventually("1 ready address", 30, || ready_ips(1)).await;

    // A Service without a selector keeps the Endpoints made for it by hand.
    let mut manual = Service::typed(ObjectMeta::namespaced("acme", "prod", "db"));
    manual.spec.ports = vec![ServicePort {
        port: 5432,
        ..Default::default()
    }];
    services.create(manual).await.unwrap();
    let mut by_hand = Endpoints::typed(ObjectMeta::namespaced("acme", "prod", "db"));
    by_hand.subsets = vec![EndpointSubset {
        addresses: vec![EndpointAddress {
            ip: "192.0.2.50".into(),
            ..Default::default()
        }],
        ports: vec![EndpointPort {
            port: 5432,
            ..Default::default()
        }],
        ..Default::default()
    }];
    endpoints.create(by_hand).await.unwrap();

    // Deleted: its Endpoints and slices go.
    services.delete(&svc.key(), None).await.unwrap();
    eventually("the Service's Endpoints and slices gone", 10, || {
        let (endpoints, slices) = (endpoints.clone(), slices.clone());
        async move {
            let left = slices
                .list("/registry/endpointslices/acme/prod/")
                .await
                .unwrap();
            (endpoints.get(ep_key).await.unwrap().is_none() && left.is_empty()).then_some(())
        }
    })
    .await;
    let kept = endpoints
        .get("/registry/serviceendpoints/acme/prod/db")
        .await
        .unwrap()
        .expect("hand-made Endpoints stay");
    assert_eq!(kept.subsets[0].addresses[0].ip, "192.0.2.50");
    for t in tasks {
        t.abort();
    }
}
