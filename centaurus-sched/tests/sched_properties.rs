//! Scheduler invariants over random regions and pods: no node is ever over its allocatable
//! in any resource, a pod is left unscheduled only when no node can take it, and the pods
//! of one controller spread evenly over zones.

use std::collections::{BTreeMap, HashMap};

use centaurus_core::model::{
    Container, LABEL_ZONE, Node, NodeInfo, NodeStatus, ObjectMeta, OwnerReference, Pod, PodSpec,
    Quantity, Resource, ResourceList, ResourceRequirements, Taint, Toleration, VirtualMachine,
};
use centaurus_sched::plugins::{default_filters, default_scores};
use centaurus_sched::{ClusterState, PodInfo};
use proptest::prelude::*;

fn list(pairs: &[(&str, String)]) -> ResourceList {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity::new(v.clone())))
        .collect()
}

#[derive(Clone, Debug)]
struct NodeShape {
    zone: u8,
    cpu_milli: i64,
    mem_mi: i64,
    pods: i64,
    vms: i64,
    tainted: bool,
    gpu: bool,
}

fn node(i: usize, s: &NodeShape) -> Node {
    let mut n = Node::typed(ObjectMeta::named(format!("node-{i}")));
    n.metadata
        .labels
        .insert(LABEL_ZONE.into(), format!("zone-{}", s.zone));
    if s.gpu {
        n.metadata.labels.insert("gpu".into(), "true".into());
    }
    if s.tainted {
        n.spec.taints.push(Taint {
            key: "dedicated".into(),
            value: "infra".into(),
            effect: "NoSchedule".into(),
            time_added: None,
        });
    }
    let mut types = vec!["container".to_string()];
    if s.vms > 0 {
        types.push("vm".into());
    }
    n.status = Some(NodeStatus {
        allocatable: list(&[
            ("cpu", format!("{}m", s.cpu_milli)),
            ("memory", format!("{}Mi", s.mem_mi)),
            ("pods", s.pods.to_string()),
            ("vm", s.vms.to_string()),
        ]),
        node_info: NodeInfo {
            workload_types: types,
            ..Default::default()
        },
        ..Default::default()
    });
    n
}

#[derive(Clone, Debug)]
struct PodShape {
    cpu_milli: i64,
    mem_mi: i64,
    vm: bool,
    owner: Option<u8>,
    wants_gpu: bool,
    tolerates: bool,
}

fn pod(i: usize, s: &PodShape) -> Pod {
    let mut p = Pod::typed(ObjectMeta::namespaced("t", "ns", format!("pod-{i}")));
    p.metadata.uid = format!("uid-{i}");
    if let Some(o) = s.owner {
        p.metadata.owner_references.push(OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: format!("rs-{o}"),
            uid: format!("rs-uid-{o}"),
            controller: Some(true),
            block_owner_deletion: None,
        });
    }
    let resources = ResourceRequirements {
        requests: list(&[
            ("cpu", format!("{}m", s.cpu_milli)),
            ("memory", format!("{}Mi", s.mem_mi)),
        ]),
        ..Default::default()
    };
    p.spec = if s.vm {
        PodSpec {
            virtual_machine: Some(VirtualMachine {
                name: "vm".into(),
                image: "tiny".into(),
                resources,
                ..Default::default()
            }),
            ..Default::default()
        }
    } else {
        PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: "busybox".into(),
                resources,
                ..Default::default()
            }],
            ..Default::default()
        }
    };
    if s.wants_gpu {
        p.spec.node_selector.insert("gpu".into(), "true".into());
    }
    if s.tolerates {
        p.spec.tolerations.push(Toleration {
            key: "dedicated".into(),
            operator: Some("Exists".into()),
            ..Default::default()
        });
    }
    p
}

fn node_shape() -> impl Strategy<Value = NodeShape> {
    (
        0u8..3,
        1000i64..8000,
        512i64..8192,
        1i64..12,
        0i64..3,
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(zone, cpu_milli, mem_mi, pods, vms, tainted, gpu)| NodeShape {
                zone,
                cpu_milli,
                mem_mi,
                pods,
                vms,
                tainted,
                gpu,
            },
        )
}

fn pod_shape() -> impl Strategy<Value = PodShape> {
    (
        0i64..2500,
        0i64..3000,
        prop::bool::weighted(0.2),
        prop::option::of(0u8..3),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(cpu_milli, mem_mi, vm, owner, wants_gpu, tolerates)| PodShape {
                cpu_milli,
                mem_mi,
                vm,
                owner,
                wants_gpu,
                tolerates,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn never_overcommits_and_binds_whatever_fits(
        nodes in prop::collection::vec(node_shape(), 1..25),
        pods in prop::collection::vec(pod_shape(), 1..120),
        enough in 1usize..8,
    ) {
        let filters = default_filters();
        let scores = default_scores();
        let mut cluster = ClusterState::default();
        for (i, s) in nodes.iter().enumerate() {
            cluster.upsert_node(node(i, s));
        }
        for (i, s) in pods.iter().enumerate() {
            let info = PodInfo::new(pod(i, s));
            match cluster.select(&info, &filters, &scores, enough) {
                Ok(name) => {
                    let chosen = cluster.node(&name).unwrap();
                    prop_assert!(filters.iter().all(|f| f.filter(&info, chosen).is_ok()));
                    cluster.place(&info, &name);
                }
                Err(why) => {
                    // Unschedulable only when no node at all passes every filter.
                    for n in cluster.nodes() {
                        prop_assert!(
                            filters.iter().any(|f| f.filter(&info, n).is_err()),
                            "{} fits on {} but got: {why}", info.key, n.name
                        );
                    }
                    prop_assert_eq!(why.nodes, nodes.len());
                    prop_assert_eq!(why.reasons.values().sum::<usize>(), nodes.len());
                }
            }
            for n in cluster.nodes() {
                prop_assert!(
                    n.requested.exceeding(&n.allocatable).is_empty(),
                    "{} over allocatable: {:?} > {:?}", n.name, n.requested, n.allocatable
                );
            }
        }
    }

    #[test]
    fn a_controllers_pods_spread_over_zones(
        zones in 2u8..5,
        per_zone in 1usize..6,
        replicas in 1usize..40,
    ) {
        let filters = default_filters();
        let scores = default_scores();
        let mut cluster = ClusterState::default();
        let mut zone_of = HashMap::new();
        for i in 0..(zones as usize * per_zone) {
            let shape = equal_node((i % zones as usize) as u8);
            zone_of.insert(format!("node-{i}"), shape.zone);
            cluster.upsert_node(node(i, &shape));
        }
        let mut per_zone_count: BTreeMap<u8, usize> = (0..zones).map(|z| (z, 0)).collect();
        for i in 0..replicas {
            let info = sibling(i);
            // Few feasible nodes per decision, so spreading must not depend on seeing all.
            let name = cluster.select(&info, &filters, &scores, 2).unwrap();
            cluster.place(&info, &name);
            *per_zone_count.get_mut(&zone_of[&name]).unwrap() += 1;
            let max = per_zone_count.values().max().unwrap();
            let min = per_zone_count.values().min().unwrap();
            prop_assert!(max - min <= 1, "after {} pods: {per_zone_count:?}", i + 1);
        }
    }

    #[test]
    fn a_controllers_pods_spread_over_the_nodes_of_each_zone(
        zones_of_nodes in proptest::collection::vec(0u8..4, 1..24),
        replicas in 1usize..60,
    ) {
        let mut cluster = ClusterState::default();
        let mut zone_of = HashMap::new();
        for (i, &zone) in zones_of_nodes.iter().enumerate() {
            zone_of.insert(format!("node-{i}"), zone);
            cluster.upsert_node(node(i, &equal_node(zone)));
        }
        let per_node = spread(&mut cluster, replicas, 128);
        let mut by_zone: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
        for (name, zone) in &zone_of {
            by_zone.entry(*zone).or_default().push(per_node.get(name).copied().unwrap_or(0));
        }
        for (zone, counts) in &by_zone {
            let (max, min) = (counts.iter().max().unwrap(), counts.iter().min().unwrap());
            prop_assert!(max - min <= 1, "zone {zone}: {counts:?} ({per_node:?})");
        }
    }
}

/// A node of 64 CPUs, 64 GiB and 110 pods in `zone`.
fn equal_node(zone: u8) -> NodeShape {
    NodeShape {
        zone,
        cpu_milli: 64_000,
        mem_mi: 65_536,
        pods: 110,
        vms: 0,
        tainted: false,
        gpu: false,
    }
}

/// Pod `i` of one controller: 100m, 64Mi.
fn sibling(i: usize) -> PodInfo {
    PodInfo::new(pod(
        i,
        &PodShape {
            cpu_milli: 100,
            mem_mi: 64,
            vm: false,
            owner: Some(0),
            wants_gpu: false,
            tolerates: false,
        },
    ))
}

/// Schedules `replicas` pods of one controller (100m, 64Mi each), seeing `enough` feasible
/// nodes per decision; returns how many landed on each node.
fn spread(cluster: &mut ClusterState, replicas: usize, enough: usize) -> BTreeMap<String, usize> {
    let mut per_node = BTreeMap::new();
    for i in 0..replicas {
        let info = sibling(i);
        let name = cluster
            .select(&info, &default_filters(), &default_scores(), enough)
            .unwrap();
        cluster.place(&info, &name);
        *per_node.entry(name).or_default() += 1;
    }
    per_node
}

#[test]
fn twenty_replicas_on_ten_nodes_in_two_zones_take_two_each() {
    let mut cluster = ClusterState::default();
    for i in 0..10 {
        cluster.upsert_node(node(i, &equal_node((i % 2) as u8)));
    }
    let per_node = spread(&mut cluster, 20, 128);
    assert_eq!(per_node.len(), 10, "{per_node:?}");
    assert!(per_node.values().all(|&n| n == 2), "{per_node:?}");
}

#[test]
fn unschedulable_message_counts_reasons() {
    let mut cluster = ClusterState::default();
    let small = NodeShape {
        zone: 0,
        cpu_milli: 500,
        mem_mi: 512,
        pods: 10,
        vms: 0,
        tainted: false,
        gpu: false,
    };
    cluster.upsert_node(node(0, &small));
    cluster.upsert_node(node(1, &small));
    cluster.upsert_node(node(
        2,
        &NodeShape {
            tainted: true,
            ..small.clone()
        },
    ));
    let info = PodInfo::new(pod(
        0,
        &PodShape {
            cpu_milli: 1000,
            mem_mi: 10,
            vm: false,
            owner: None,
            wants_gpu: false,
            tolerates: false,
        },
    ));
    let why = cluster
        .select(&info, &default_filters(), &default_scores(), 10)
        .unwrap_err();
    assert_eq!(
        why.to_string(),
        "0/3 nodes are available: 2 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: infra}"
    );
    let vm = PodInfo::new(pod(
        1,
        &PodShape {
            cpu_milli: 100,
            mem_mi: 10,
            vm: true,
            owner: None,
            wants_gpu: false,
            tolerates: true,
        },
    ));
    let why = cluster
        .select(&vm, &default_filters(), &default_scores(), 10)
        .unwrap_err();
    assert_eq!(
        why.to_string(),
        "0/3 nodes are available: 3 node(s) do not run VM pods"
    );
    assert_eq!(vm.pod.key(), "/registry/pods/t/ns/pod-1");
}
