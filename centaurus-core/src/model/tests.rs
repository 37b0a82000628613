use serde_json::json;

use super::*;

#[test]
fn pod_round_trips_with_kubernetes_field_names() {
    let wire = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "namespace": "dev",
            "tenant": "acme",
            "uid": "0b8c",
            "hashKey": -42,
            "resourceVersion": "17",
            "creationTimestamp": "2026-11-24T10:00:00Z",
            "labels": {"app": "web"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1",
                                  "uid": "9", "controller": true}],
            "finalizers": ["example.com/cleanup"]
        },
        "spec": {
            "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "echo hi"],
                            "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}],
            "nodeName": "n1",
            "nodeSelector": {"topology.kubernetes.io/zone": "az-1"},
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
            "restartPolicy": "Never"
        },
        "status": {"phase": "Running", "podIP": "10.0.0.5", "hostIP": "192.0.2.1",
                   "startTime": "2026-11-24T10:00:01Z",
                   "containerStatuses": [{"name": "c", "state": {"running": {"startedAt": "2026-11-24T10:00:01Z"}},
                                          "ready": true, "restartCount": 0, "image": "busybox",
                                          "containerID": "runc://abc"}]}
    });
    let pod: Pod = serde_json::from_value(wire.clone()).unwrap();
    assert_eq!(pod.metadata.tenant, "acme");
    assert_eq!(pod.metadata.hash_key, -42);
    assert_eq!(pod.metadata.controller_ref().unwrap().name, "web-1");
    assert_eq!(pod.status.as_ref().unwrap().pod_ip, "10.0.0.5");
    assert!(!pod.is_vm());
    assert_eq!(serde_json::to_value(&pod).unwrap(), wire);
    assert!(pod.validate().is_ok());
}

#[test]
fn vm_pod_round_trips() {
    let wire = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "vm1", "namespace": "default"},
        "spec": {"virtualMachine": {"name": "vm", "image": "tiny", "keyPairName": "k",
                                     "userData": "ZWNobyBoaQ==", "powerSpec": "Running",
                                     "resources": {"requests": {"cpu": "1", "memory": "128Mi"}}}},
        "status": {"phase": "Running", "virtualMachineStatus": {"name": "vm", "image": "tiny",
                   "state": "Running", "ready": true, "restartCount": 1, "vmID": "qemu-1"}}
    });
    let pod: Pod = serde_json::from_value(wire.clone()).unwrap();
    assert!(pod.is_vm());
    assert_eq!(serde_json::to_value(&pod).unwrap(), wire);
    assert!(pod.validate().is_ok());
}

#[test]
fn a_pod_holds_containers_or_a_vm_not_both_nor_neither() {
    let mut pod = Pod::typed(ObjectMeta::named("p"));
    let errs = pod.validate().unwrap_err();
    assert_eq!(errs[0].field, "spec");
    pod.spec.containers.push(Container {
        name: "c".into(),
        image: "busybox".into(),
        ..Default::default()
    });
    assert!(pod.validate().is_ok());
    pod.spec.virtual_machine = Some(VirtualMachine {
        name: "v".into(),
        image: "tiny".into(),
        ..Default::default()
    });
    assert!(pod.validate().unwrap_err()[0].message.contains("not both"));
}

#[test]
fn pod_validation_names_each_bad_field() {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [
            {"name": "Bad_Name", "image": ""},
            {"name": "c", "image": "x", "resources": {"limits": {"cpu": "lots"}}},
            {"name": "c", "image": "x"}
        ], "restartPolicy": "Sometimes"}
    }))
    .unwrap();
    let fields: Vec<String> = pod
        .validate()
        .unwrap_err()
        .into_iter()
        .map(|e| e.field)
        .collect();
    for want in [
        "spec.containers[0].name",
        "spec.containers[0].image",
        "spec.containers[1].resources.limits[cpu]",
        "spec.containers[2].name",
        "spec.restartPolicy",
    ] {
        assert!(
            fields.iter().any(|f| f == want),
            "missing {want} in {fields:?}"
        );
    }
}

#[test]
fn workloads_validate_selector_and_rolling_update() {
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}}}
    }))
    .unwrap();
    assert!(d.validate().is_ok());
    let mut bad = d.clone();
    bad.spec
        .template
        .metadata
        .labels
        .insert("app".into(), "other".into());
    bad.spec.strategy.rolling_update = Some(RollingUpdate {
        max_surge: Some(IntOrString::Int(0)),
        max_unavailable: Some(IntOrString::String("0%".into())),
    });
    let fields: Vec<String> = bad
        .validate()
        .unwrap_err()
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert!(
        fields.contains(&"spec.template.metadata.labels".to_string()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"spec.strategy.rollingUpdate".to_string()),
        "{fields:?}"
    );
    assert_eq!(IntOrString::String("25%".into()).resolve(3, true), Ok(1));
    assert_eq!(IntOrString::String("25%".into()).resolve(3, false), Ok(0));
    assert!(IntOrString::String("x".into()).resolve(3, true).is_err());
}

#[test]
fn other_kinds_round_trip_and_validate() {
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "az-1"}},
        "spec": {"taints": [{"key": "dedicated", "value": "vm", "effect": "NoSchedule"}], "podCIDR": "10.1.0.0/24"},
        "status": {"capacity": {"cpu": "2", "memory": "4Gi", "pods": "110", "vm": "4"},
                   "addresses": [{"type": "InternalIP", "address": "192.0.2.1"}],
                   "nodeInfo": {"workloadTypes": ["container", "vm"]}}
    }))
    .unwrap();
    assert!(node.validate().is_ok());
    assert_eq!(
        node.status.as_ref().unwrap().capacity["memory"]
            .value()
            .unwrap(),
        4 << 30
    );

    let action: Action = serde_json::from_value(json!({
        "metadata": {"name": "reboot-1"},
        "spec": {"podAction": {"podName": "vm1", "rebootAction": {"delayInSeconds": 0}}}
    }))
    .unwrap();
    assert!(action.validate().is_ok());
    let mut two = action.clone();
    two.spec.pod_action.as_mut().unwrap().snapshot_action = Some(SnapshotParams {
        snapshot_name: "s".into(),
    });
    assert!(two.validate().is_err());

    let net: Network = serde_json::from_value(json!({
        "metadata": {"name": "default"}, "spec": {"type": "vpc", "vpcID": "vpc-1", "cidrs": ["10.0.0.0/16"]}
    }))
    .unwrap();
    assert!(net.validate().is_ok());
    let bad: Network = serde_json::from_value(json!({
        "metadata": {"name": "n"}, "spec": {"type": "mesh", "cidrs": ["10.0.0.1/16"]}
    }))
    .unwrap();
    assert_eq!(bad.validate().unwrap_err().len(), 2);

    let now = now();
    let lease = Lease {
        spec: LeaseSpec {
            renew_time: Some(now),
            lease_duration_seconds: Some(40),
            ..Default::default()
        },
        ..Lease::typed(ObjectMeta::named("n1"))
    };
    assert!(lease.is_valid_at(now + chrono::Duration::seconds(39)));
    assert!(!lease.is_valid_at(now + chrono::Duration::seconds(41)));
}

#[test]
fn a_view_serves_a_kinds_objects_under_other_names() {
    let reg = Registry::builtin();
    let core = reg.by_plural("", "v1", "events").unwrap();
    let view = reg.by_plural(EVENTS_GROUP, "v1", "events").unwrap();
    assert!(view.is_view() && !core.is_view());
    assert_eq!(view.key("acme", "dev", "e"), core.key("acme", "dev", "e"));
    assert_eq!(
        reg.by_kind("events.k8s.io/v1", "Event").unwrap().group,
        EVENTS_GROUP
    );
    assert_eq!(
        reg.resolve_name("events").unwrap().group,
        "",
        "names mean the core kind"
    );
    assert_eq!(reg.kinds().filter(|k| k.plural == "events").count(), 1);
    assert_eq!(reg.served().filter(|k| k.plural == "events").count(), 2);
    let schema = view.schema.as_value();
    assert!(schema.pointer("/properties/note").is_some());
    assert!(schema.pointer("/properties/message").is_none());

    let shown = serde_json::json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "e", "namespace": "dev"},
        "regarding": {"kind": "Pod", "name": "p"}, "note": "hi", "deprecatedCount": 2,
        "reportingController": "c",
    });
    let kept = view.decode(&shown).unwrap().value;
    assert_eq!(kept["apiVersion"], "v1");
    assert_eq!(kept["message"], "hi");
    assert_eq!(kept["involvedObject"]["name"], "p");
    assert_eq!(
        (kept["count"].clone(), kept["reportingComponent"].clone()),
        (2.into(), "c".into())
    );
    assert!(kept.get("note").is_none());
    let mut again = kept.clone();
    view.served(&mut again);
    assert_eq!(again["apiVersion"], "events.k8s.io/v1");
    assert_eq!(
        (again["note"].clone(), again["regarding"]["name"].clone()),
        ("hi".into(), "p".into())
    );
    assert!(again.get("message").is_none() && again.get("involvedObject").is_none());
    let mut same = kept.clone();
    core.served(&mut same);
    assert_eq!(same, kept, "the core kind shows what is kept");
    assert_eq!(view.unserved(again), kept);

    // Errors name the view's fields.
    let errors = view
        .validate(
            &serde_json::json!({"metadata": {"name": "e", "namespace": "dev"}, "type": "Loud"}),
        )
        .unwrap_err();
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["type", "regarding"]);
}

#[test]
fn registry_serves_kinds_generically() {
    let reg = Registry::builtin();
    let pods = reg.by_plural("", "v1", "pods").unwrap();
    assert_eq!(pods.kind, "Pod");
    assert_eq!(pods.scope, Scope::Namespaced);
    assert!(reg.by_plural("apps", "v1", "pods").is_none());
    assert_eq!(
        reg.by_kind("apps/v1", "Deployment").unwrap().plural,
        "deployments"
    );
    assert_eq!(reg.resolve_name("deploy").unwrap().kind, "Deployment");
    assert_eq!(reg.resolve_name("Pod").unwrap().plural, "pods");
    assert_eq!(reg.resolve_name("ns").unwrap().scope, Scope::Tenant);

    assert_eq!(
        pods.key("acme", "dev", "web"),
        "/registry/pods/acme/dev/web"
    );
    assert_eq!(pods.prefix(Some("acme"), None), "/registry/pods/acme/");
    assert_eq!(
        pods.prefix(Some("acme"), Some("dev")),
        "/registry/pods/acme/dev/"
    );
    let nodes = reg.resolve_name("nodes").unwrap();
    assert_eq!(nodes.key("acme", "dev", "n1"), "/registry/nodes/n1");
    assert_eq!(nodes.prefix(Some("acme"), None), "/registry/nodes/");

    // The schema is real JSON Schema with the Kubernetes field names.
    let schema = serde_json::to_string(&*pods.schema).unwrap();
    assert!(schema.contains("virtualMachine") && schema.contains("resourceVersion"));

    // Registering a plural twice is refused: store keys would collide.
    let mut reg2 = Registry::builtin();
    assert!(matches!(
        reg2.register::<Pod>(),
        Err(RegistryError::DuplicatePlural { .. })
    ));
}

#[test]
fn registry_validation_reports_decode_errors_with_paths() {
    let reg = Registry::builtin();
    let pods = reg.by_plural("", "v1", "pods").unwrap();
    let err = pods
        .validate(&json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": 5}]}}))
        .unwrap_err();
    assert_eq!(err[0].field, "spec.containers[0].image");
    let err = pods
        .validate(
            &json!({"metadata": {"name": "Not/Valid", "labels": {"bad key!": "v"}},
                         "spec": {"containers": [{"name": "c", "image": "i"}]}}),
        )
        .unwrap_err();
    let fields: Vec<_> = err.iter().map(|e| e.field.as_str()).collect();
    assert!(
        fields.contains(&"metadata.name") && fields.contains(&"metadata.labels[bad key!]"),
        "{fields:?}"
    );
    let tenants = reg.by_plural("", "v1", "tenants").unwrap();
    assert!(
        tenants
            .validate(&json!({"metadata": {"name": "a.b"}}))
            .is_err(),
        "tenant names are labels"
    );
    assert!(
        tenants
            .validate(&json!({"metadata": {"name": "acme"}}))
            .is_ok()
    );
}

#[test]
fn label_selectors() {
    let labels = [
        ("app".to_string(), "web".to_string()),
        ("tier".to_string(), "fe".to_string()),
    ]
    .into_iter()
    .collect();
    assert!(LabelSelector::default().matches(&labels));
    assert!(LabelSelector::match_labels([("app", "web")]).matches(&labels));
    assert!(!LabelSelector::match_labels([("app", "db")]).matches(&labels));
    let expr = |op: &str, values: &[&str]| LabelSelector {
        match_expressions: vec![LabelSelectorRequirement {
            key: "tier".into(),
            operator: op.into(),
            values: values.iter().map(|s| s.to_string()).collect(),
        }],
        ..Default::default()
    };
    assert!(expr("In", &["fe", "be"]).matches(&labels));
    assert!(!expr("NotIn", &["fe"]).matches(&labels));
    assert!(expr("Exists", &[]).matches(&labels));
    assert!(!expr("DoesNotExist", &[]).matches(&labels));
    assert!(!expr("Bogus", &[]).matches(&labels));
}

#[test]
fn registry_decode_normalizes_and_reports_unknown_fields() {
    let registry = Registry::builtin();
    let pods = registry.resolve_name("pods").unwrap();
    assert!(pods.has_status);
    assert!(!registry.resolve_name("leases").unwrap().has_status);
    let decoded = pods
        .decode(&serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "colour": "red"},
            "spec": {"containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "Never"}]}
        }))
        .unwrap();
    assert_eq!(decoded.unknown_fields, vec!["metadata.colour".to_string()]);
    assert!(decoded.value["metadata"].get("colour").is_none());
    assert_eq!(decoded.value["spec"]["containers"][0]["name"], "c");
}

#[test]
fn pods_and_templates_get_kubernetes_defaults() {
    let registry = Registry::builtin();
    let info = |plural: &str| {
        registry
            .kinds()
            .find(|k| k.plural == plural)
            .unwrap()
            .clone()
    };
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [
            {"name": "a", "image": "busybox"},
            {"name": "b", "image": "busybox:1.36"},
            {"name": "c", "image": "reg:5000/app@sha256:ab", "imagePullPolicy": "Never"},
        ]},
    });
    let out = info("pods").decode(&pod).unwrap().value;
    let spec = &out["spec"];
    assert_eq!(spec["restartPolicy"], "Always");
    assert_eq!(spec["dnsPolicy"], "ClusterFirst");
    assert_eq!(spec["schedulerName"], "default-scheduler");
    assert_eq!(spec["terminationGracePeriodSeconds"], 30);
    assert_eq!(spec["securityContext"], serde_json::json!({}));
    assert_eq!(spec["enableServiceLinks"], true);
    let policies: Vec<&str> = spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["imagePullPolicy"].as_str().unwrap())
        .collect();
    assert_eq!(policies, ["Always", "IfNotPresent", "Never"]);
    assert_eq!(
        spec["containers"][0]["terminationMessagePath"],
        "/dev/termination-log"
    );
    assert_eq!(spec["containers"][0]["terminationMessagePolicy"], "File");
    assert_eq!(
        out["status"]["phase"], "Pending",
        "a new pod reads as Pending"
    );
    // What the client set stays; defaulting twice changes nothing.
    let mut set = pod.clone();
    set["spec"]["restartPolicy"] = "Never".into();
    let once = info("pods").decode(&set).unwrap().value;
    assert_eq!(once["spec"]["restartPolicy"], "Never");
    assert_eq!(info("pods").decode(&once).unwrap().value, once);
    // Templates of workloads are defaulted as pods are.
    let rs = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "r", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
            "metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "a", "image": "busybox"}]}}},
    });
    let out = info("replicasets").decode(&rs).unwrap().value;
    assert_eq!(out["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
}

#[test]
fn jobs_and_cron_jobs_are_defaulted_and_checked_as_kubernetes_does() {
    let registry = Registry::builtin();
    let info = |plural: &str| {
        registry
            .kinds()
            .find(|k| k.plural == plural)
            .unwrap()
            .clone()
    };
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "pi", "namespace": "default", "uid": "u-1"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox"}]}}},
    });
    let out = info("jobs").decode(&job).unwrap().value;
    assert_eq!(out["spec"]["completions"], 1);
    assert_eq!(out["spec"]["parallelism"], 1);
    assert_eq!(out["spec"]["backoffLimit"], 6);
    assert_eq!(out["spec"]["completionMode"], "NonIndexed");
    assert_eq!(
        out["spec"]["selector"]["matchLabels"][JOB_UID_LABEL], "u-1",
        "the selector names the job's UID"
    );
    assert_eq!(
        out["spec"]["template"]["metadata"]["labels"][JOB_NAME_LABEL],
        "pi"
    );
    // Only parallelism: a work queue, no completions.
    let mut queue = job.clone();
    queue["spec"]["parallelism"] = 3.into();
    assert!(
        info("jobs").decode(&queue).unwrap().value["spec"]
            .get("completions")
            .is_none()
    );

    let refused = |info: &ResourceInfo, v: &serde_json::Value| match info.decode(v) {
        Err(DecodeError::Invalid(errors)) => errors,
        other => panic!("expected invalid, got {other:?}"),
    };
    // A job's pods must not restart forever.
    let mut always = job.clone();
    always["spec"]["template"]["spec"]["restartPolicy"] = "Always".into();
    let errors = refused(&info("jobs"), &always);
    assert_eq!(errors[0].field, "spec.template.spec.restartPolicy");
    let mut indexed = job.clone();
    indexed["spec"]["completionMode"] = "Indexed".into();
    indexed["spec"]["completions"] = serde_json::Value::Null;
    indexed["spec"]["parallelism"] = 2.into();
    assert_eq!(
        refused(&info("jobs"), &indexed)[0].field,
        "spec.completions"
    );

    // The template is fixed once the job exists; parallelism is not.
    let old = info("jobs").decode(&job).unwrap().value;
    let mut wider = old.clone();
    wider["spec"]["parallelism"] = 4.into();
    assert!(info("jobs").validate_update(&wider, &old).is_ok());
    let mut other = old.clone();
    other["spec"]["template"]["spec"]["containers"][0]["image"] = "alpine".into();
    assert_eq!(
        info("jobs").validate_update(&other, &old).unwrap_err()[0].field,
        "spec.template"
    );

    let cron = json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "tick", "namespace": "default"},
        "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}},
    });
    let out = info("cronjobs").decode(&cron).unwrap().value;
    assert_eq!(out["spec"]["concurrencyPolicy"], "Allow");
    assert_eq!(out["spec"]["successfulJobsHistoryLimit"], 3);
    assert_eq!(out["spec"]["failedJobsHistoryLimit"], 1);
    assert_eq!(out["spec"]["jobTemplate"]["spec"]["backoffLimit"], 6);
    for (schedule, why) in [
        ("* * * *", "exactly 5 fields"),
        ("0 0 * * * *", "exactly 5 fields"),
        ("61 * * * *", ""),
        ("TZ=Europe/Paris 0 * * * *", "spec.timeZone"),
    ] {
        let mut bad = cron.clone();
        bad["spec"]["schedule"] = schedule.into();
        let errors = refused(&info("cronjobs"), &bad);
        assert_eq!(errors[0].field, "spec.schedule", "{schedule}");
        assert!(
            errors[0].message.contains(why),
            "{schedule}: {}",
            errors[0].message
        );
    }
    let mut zoned = cron.clone();
    zoned["spec"]["timeZone"] = "Europe/Paris".into();
    assert_eq!(refused(&info("cronjobs"), &zoned)[0].field, "spec.timeZone");
    assert!(Schedule::parse("@daily").is_ok());
}

#[test]
fn daemon_and_stateful_sets_are_defaulted_and_checked() {
    let registry = Registry::builtin();
    let info = |plural: &str| {
        registry
            .kinds()
            .find(|k| k.plural == plural)
            .unwrap()
            .clone()
    };
    let set = |kind: &str| {
        json!({
            "apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": "s", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "s"}}, "template": {
                "metadata": {"labels": {"app": "s"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
        })
    };
    let ds = info("daemonsets").decode(&set("DaemonSet")).unwrap().value;
    assert_eq!(ds["spec"]["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(
        ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );
    let sts = info("statefulsets")
        .decode(&set("StatefulSet"))
        .unwrap()
        .value;
    assert_eq!(sts["spec"]["replicas"], 1);
    assert_eq!(sts["spec"]["podManagementPolicy"], "OrderedReady");
    assert_eq!(
        sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
        0
    );
    let refused = |plural: &str, v: &serde_json::Value| match info(plural).decode(v) {
        Err(DecodeError::Invalid(errors)) => errors[0].field.clone(),
        other => panic!("expected invalid, got {other:?}"),
    };
    let mut never = set("DaemonSet");
    never["spec"]["template"]["spec"]["restartPolicy"] = "Never".into();
    assert_eq!(
        refused("daemonsets", &never),
        "spec.template.spec.restartPolicy"
    );
    let mut surge = set("DaemonSet");
    surge["spec"]["updateStrategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}});
    assert_eq!(
        refused("daemonsets", &surge),
        "spec.updateStrategy.rollingUpdate.maxSurge"
    );
    let mut claims = set("StatefulSet");
    claims["spec"]["volumeClaimTemplates"] = json!([{"metadata": {"name": "data"}}]);
    assert_eq!(
        refused("statefulsets", &claims),
        "spec.volumeClaimTemplates"
    );
    let mut moved = sts.clone();
    moved["spec"]["podManagementPolicy"] = "Parallel".into();
    assert_eq!(
        info("statefulsets")
            .validate_update(&moved, &sts)
            .unwrap_err()[0]
            .field,
        "spec.podManagementPolicy"
    );
    let mut scaled = sts.clone();
    scaled["spec"]["replicas"] = 5.into();
    assert!(info("statefulsets").validate_update(&scaled, &sts).is_ok());
}
