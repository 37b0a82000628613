//! End to end through a real kubectl against `centaurus up` with the real runtimes: a
//! container pod under runc reaches Running and its log shows its output; a Deployment of
//! three container pods scales to five (`kubectl scale`) and rolls to a new image
//! (`kubectl set image`, `kubectl rollout status`); a VM pod under QEMU reaches Running, its
//! console log shows the guest's ready line and its userData's output, and a reboot action
//! (`POST pods/{name}/action`) resets the guest, which prints its ready line again. Meanwhile
//! batch work runs: `kubectl create job`, an Indexed job two at a time, a job failing past its
//! backoff limit and a cron job firing every minute. All of it runs in a tenant's space,
//! through the tenant admin's kubeconfig.
//!
//! Needs root, runc, QEMU and the VM kernel (`scripts/setup.sh`; CI runs as root) and kubectl;
//! without them it says why and skips.

mod common;

use std::path::Path;
use std::time::Instant;

use centaurus_runtime::{QemuRuntime, RuncRuntime};
use common::{Kubectl, eventually, kubectl_binary, up_from};
use serde_json::Value;

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

/// The pods labelled `app=web` that run `image` and are Running.
fn running_web_pods(k: &Kubectl, image: &str) -> usize {
    items(&k.json(&["get", "pods", "-l", "app=web"]))
        .iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["spec"]["containers"][0]["image"] == image
        })
        .count()
}

fn raw_log(k: &Kubectl, pod: &str) -> String {
    raw_log_in(k, "default", pod)
}

fn raw_log_in(k: &Kubectl, ns: &str, pod: &str) -> String {
    let out = k
        .cmd(&[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/{ns}/pods/{pod}/log"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kubectl_runs_container_and_vm_pods_on_real_runtimes() {
    let Some(bin) = kubectl_binary() else {
        eprintln!("SKIPPED: no kubectl ($KUBECTL, .venv/bin/kubectl or PATH)");
        return;
    };
    if !RuncRuntime::available() {
        eprintln!("SKIPPED: runc is missing or we are not root (scripts/setup.sh installs runc)");
        return;
    }
    if !QemuRuntime::available(None) {
        eprintln!("SKIPPED: qemu-system-x86_64 or the VM kernel is missing (run scripts/setup.sh)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("region");
    // A relative data directory, as the README writes it: runc must still find its bundles.
    let listen = common::free_addr();
    let _region = up_from(Some(dir.path()), Path::new("region"), &listen, &[]);
    let admin = Kubectl {
        bin: bin.clone(),
        kubeconfig: data.join("admin.kubeconfig"),
        cache: dir.path().join("cache-admin"),
    };
    // The local node registers and turns Ready.
    eventually(60, "the local node is Ready", || {
        items(&admin.json(&["get", "nodes"]))
            .iter()
            .any(|n| {
                n["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .then_some(())
    });
    let tenant =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/manifests/tenant-acme.yaml");
    admin.run(&["create", "-f", tenant.to_str().unwrap()]);
    let k = Kubectl::tenant_admin(&bin, &data, dir.path(), "acme");
    // Batch work runs beside the rest and is checked at the end (the cron job meanwhile
    // fires every minute).
    start_batch(&k, dir.path());

    // A container pod: Running, and its log is its output.
    let started = Instant::now();
    k.run(&[
        "run",
        "hello",
        "--image=busybox",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "echo hello from centaurus; sleep 3600",
    ]);
    k.run(&[
        "wait",
        "--for=jsonpath={.status.phase}=Running",
        "pod/hello",
        "--timeout=60s",
    ]);
    eprintln!("container pod Running after {:?}", started.elapsed());
    sessions(&k, dir.path());
    // Its figures from its cgroup, through `kubectl top`.
    let top = eventually(30, "the pod's figures", || {
        let out = k
            .cmd(&["top", "pod", "hello", "--no-headers"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    let memory: u64 = top
        .split_whitespace()
        .nth(2)
        .and_then(|m| m.strip_suffix("Mi"))
        .and_then(|m| m.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(memory < 64, "busybox's working set, in MiB: {top}");
    let pod = k.json(&["get", "pod", "hello"]);
    assert!(
        pod["status"]["podIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.0.")),
        "the pod's address is from acme's default VPC: {}",
        pod["status"]
    );
    assert_eq!(pod["metadata"]["tenant"], "acme");
    // The pod started behind its Endpoint, which the VPC operator provisioned.
    let ep = k.json(&["get", "endpoints.mizar.centaurus.io", "hello"]);
    assert_eq!(ep["status"]["phase"], "Provisioned", "{ep}");
    assert_eq!(ep["status"]["ip"], pod["status"]["podIP"], "{ep}");
    // A flat network keeps working beside the VPC plane: its pods use the node's bridge.
    let flat = dir.path().join("flat.yaml");
    std::fs::write(
        &flat,
        "apiVersion: arktos.futurewei.com/v1\nkind: Network\nmetadata:\n  name: flat\nspec:\n  type: flat\n",
    )
    .unwrap();
    k.run(&["apply", "-f", flat.to_str().unwrap()]);
    k.run(&[
        "run",
        "onflat",
        "--image=busybox",
        "--restart=Never",
        "--labels=arktos.futurewei.com/network=flat",
        "--",
        "sleep",
        "3600",
    ]);
    k.run(&[
        "wait",
        "--for=jsonpath={.status.phase}=Running",
        "pod/onflat",
        "--timeout=60s",
    ]);
    let pod = k.json(&["get", "pod", "onflat"]);
    assert!(
        pod["status"]["podIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.88.")),
        "{}",
        pod["status"]
    );
    k.run(&["delete", "pod", "onflat", "--wait=false"]);
    eventually(30, "kubectl logs hello shows the output", || {
        k.run(&["logs", "hello"])
            .contains("hello from centaurus")
            .then_some(())
    });
    let err = k.fails(&["logs", "hello", "-c", "nope"]);
    assert!(err.contains("not valid"), "{err}");
    // The scheduler's and the agent's events: in `describe`, in `get events` and its watch.
    eventually(30, "describe shows the pod's events", || {
        let d = k.run(&["describe", "pod", "hello"]);
        (d.contains("Events:")
            && d.contains("Scheduled")
            && d.contains("default-scheduler")
            && d.contains("Started container hello"))
        .then_some(())
    });
    let events = k.run(&["get", "events"]);
    assert!(
        events.contains("LAST SEEN") && events.contains("pod/hello") && events.contains("Started"),
        "{events}"
    );
    // The watch ends at the request timeout, whatever kubectl's exit status says of that.
    let watched = k
        .cmd(&["get", "events", "--watch", "--request-timeout=3s"])
        .output()
        .unwrap();
    let watched = String::from_utf8_lossy(&watched.stdout);
    assert!(watched.contains("Scheduled"), "{watched}");
    assert!(
        !admin.run(&["get", "events"]).contains("pod/hello"),
        "the system tenant's default namespace does not hold acme's events"
    );

    // Configuration: a ConfigMap value in the environment and as a file, a Secret as env;
    // an update to the ConfigMap reaches the mounted file.
    k.run(&[
        "create",
        "configmap",
        "settings",
        "--from-literal=greeting=bonjour",
    ]);
    k.run(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=token=s3cr3t",
    ]);
    let configured = dir.path().join("configured.yaml");
    std::fs::write(
        &configured,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: configured\nspec:\n  restartPolicy: Never\n  \
         containers:\n  - name: c\n    image: busybox\n    \
         command: [sh, -c, 'echo env=$GREETING/$TOKEN; echo sa=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace) token=$(cat /var/run/secrets/kubernetes.io/serviceaccount/token); while true; do echo file=$(cat /etc/settings/greeting); sleep 2; done']\n    \
         env:\n    - name: GREETING\n      valueFrom: {configMapKeyRef: {name: settings, key: greeting}}\n    \
         - name: TOKEN\n      valueFrom: {secretKeyRef: {name: creds, key: token}}\n    \
         volumeMounts:\n    - {name: settings, mountPath: /etc/settings}\n  \
         volumes:\n  - name: settings\n    configMap: {name: settings}\n",
    )
    .unwrap();
    k.run(&["apply", "-f", configured.to_str().unwrap()]);
    k.run(&[
        "wait",
        "--for=jsonpath={.status.phase}=Running",
        "pod/configured",
        "--timeout=60s",
    ]);
    eventually(30, "the pod prints its env and the mounted file", || {
        let log = k.run(&["logs", "configured"]);
        (log.contains("env=bonjour/s3cr3t") && log.contains("file=bonjour")).then_some(())
    });
    // The pod's ServiceAccount token, projected at the Kubernetes path, is a user of acme
    // with nothing granted: it is known (403, not 401) and reaches no other tenant.
    let log = k.run(&["logs", "configured"]);
    assert!(log.contains("sa=default token=ey"), "{log}");
    let token = log
        .split("token=")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap()
        .to_owned();
    let as_account = |args: &[&str]| {
        let out = std::process::Command::new(&bin)
            .args([
                "--kubeconfig=/dev/null",
                &format!("--server=https://{listen}"),
                "--insecure-skip-tls-verify",
                &format!("--token={token}"),
            ])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = as_account(&["get", "pods"]);
    assert!(
        err.contains("Forbidden") && err.contains("system:serviceaccount:default:default"),
        "{err}"
    );
    let err = as_account(&[
        "get",
        "--raw",
        "/api/v1/tenants/system/namespaces/default/pods",
    ]);
    assert!(err.contains("Forbidden"), "{err}");
    // kubectl makes accounts and their tokens; an account may keep its pods tokenless.
    k.run(&["create", "serviceaccount", "builder"]);
    let made = k.run(&["create", "token", "builder"]);
    assert!(made.trim().starts_with("ey"), "{made}");
    let quiet = dir.path().join("quiet.yaml");
    std::fs::write(
        &quiet,
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: quiet}\nautomountServiceAccountToken: false\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: quiet}\nspec:\n  serviceAccountName: quiet\n  \
         restartPolicy: Never\n  containers:\n  - name: c\n    image: busybox\n    \
         command: [sh, -c, 'test -f /var/run/secrets/kubernetes.io/serviceaccount/token && echo has-token || echo no-token; sleep 3600']\n",
    )
    .unwrap();
    k.run(&["apply", "-f", quiet.to_str().unwrap()]);
    eventually(60, "the quiet pod runs without a token", || {
        let out = k.cmd(&["logs", "quiet"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .contains("no-token")
            .then_some(())
    });
    k.run(&["delete", "pod", "quiet", "--wait=false"]);
    k.run(&[
        "patch",
        "configmap",
        "settings",
        "-p",
        r#"{"data":{"greeting":"hola"}}"#,
    ]);
    eventually(60, "the update reaches the mounted file", || {
        k.run(&["logs", "configured"])
            .contains("file=hola")
            .then_some(())
    });
    k.run(&["delete", "pod", "configured", "--wait=false"]);

    // A Deployment: 3 replicas, scaled to 5, rolled to a new image.
    let manifest = dir.path().join("web.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  \
         selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    \
         spec:\n      containers:\n      - name: c\n        image: busybox:1.36\n        \
         command: [sh, -c, 'echo serving; sleep 3600']\n",
    )
    .unwrap();
    k.run(&["apply", "-f", manifest.to_str().unwrap()]);
    let rollout = ["rollout", "status", "deployment/web", "--timeout=120s"];
    k.run(&rollout);
    assert_eq!(running_web_pods(&k, "busybox:1.36"), 3);
    assert!(
        k.run(&["scale", "deployment", "web", "--replicas=5"])
            .contains("scaled")
    );
    k.run(&rollout);
    eventually(60, "5 web pods Running", || {
        (running_web_pods(&k, "busybox:1.36") == 5).then_some(())
    });
    k.run(&["set", "image", "deployment/web", "c=busybox:1.37"]);
    k.run(&rollout);
    eventually(
        120,
        "5 web pods Running busybox:1.37 and no old ones",
        || {
            let pods = items(&k.json(&["get", "pods", "-l", "app=web"]));
            (pods.len() == 5 && running_web_pods(&k, "busybox:1.37") == 5).then_some(())
        },
    );
    // Each template is a revision `kubectl rollout history` lists and shows.
    let history = k.run(&["rollout", "history", "deployment/web"]);
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|r| r.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    let first = k.run(&["rollout", "history", "deployment/web", "--revision=1"]);
    assert!(first.contains("busybox:1.36"), "{first}");
    let d = k.json(&["get", "deployment", "web"]);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    assert_eq!(d["status"]["updatedReplicas"], 5);
    assert_eq!(d["status"]["availableReplicas"], 5);
    assert!(k.run(&["logs", "deployment/web"]).contains("serving"));

    // A VM pod under QEMU: Running, its console shows the ready line and userData's output.
    let started = Instant::now();
    let vm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/manifests/vm.yaml");
    k.run(&["apply", "-f", vm.to_str().unwrap()]);
    k.run(&[
        "wait",
        "--for=jsonpath={.status.phase}=Running",
        "pod/vm1",
        "--timeout=120s",
    ]);
    eprintln!("VM pod Running after {:?}", started.elapsed());
    eventually(120, "the guest's ready line and userData output", || {
        let log = raw_log(&k, "vm1");
        (log.contains("centaurus-vm: ready vm1") && log.contains("user-data: hello from vm1"))
            .then_some(())
    });
    eprintln!("VM guest ready after {:?}", started.elapsed());
    // `kubectl logs` and `attach` take a pod's first container: a VM pod shows its VM as
    // one, and attaching reaches the guest's serial console, where a shell answers.
    assert!(k.run(&["logs", "vm1"]).contains("centaurus-vm: ready vm1"));
    let (out, _) = piped(
        &k,
        &["attach", "-i", "vm1"],
        b"echo guest-says-$((6*7))\n",
        true,
        std::time::Duration::from_secs(6),
    );
    assert!(out.contains("guest-says-42"), "the console answered: {out}");

    // Reboot through the action subresource: the Action succeeds and the guest boots again.
    let action = dir.path().join("reboot.json");
    std::fs::write(&action, r#"{"actionName": "reboot"}"#).unwrap();
    let created: Value = serde_json::from_str(&k.run(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/pods/vm1/action",
        "-f",
        action.to_str().unwrap(),
    ]))
    .unwrap();
    let name = created["metadata"]["name"].as_str().unwrap().to_owned();
    assert!(name.starts_with("vm1-reboot-"), "{created}");
    eventually(60, "the reboot action succeeds", || {
        let a = k.json(&["get", "actions", &name]);
        assert_ne!(a["status"]["state"], "Failed", "{a}");
        (a["status"]["state"] == "Succeeded").then_some(())
    });
    eventually(120, "the guest prints its ready line again", || {
        (raw_log(&k, "vm1")
            .matches("centaurus-vm: ready vm1")
            .count()
            >= 2)
            .then_some(())
    });
    let pod = k.json(&["get", "pod", "vm1"]);
    assert_eq!(
        pod["status"]["virtualMachineStatus"]["restartCount"], 1,
        "{pod}"
    );
    // An action on a container pod is refused.
    let err = k.fails(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/pods/hello/action",
        "-f",
        action.to_str().unwrap(),
    ]);
    assert!(err.contains("not a VM pod"), "{err}");

    vm_stateful_set(&k, dir.path());
    check_batch(&k);

    // Deleting the Deployment removes its pods; deleted pods leave the node.
    k.run(&["delete", "deployment", "web"]);
    k.run(&["delete", "pod", "vm1", "hello", "--wait=false"]);
    eventually(120, "every pod is gone", || {
        items(&k.json(&["get", "pods"])).is_empty().then_some(())
    });
}

/// A StatefulSet of VM pods: `vms-0` boots, then `vms-1` once `vms-0` is Ready (its guest
/// up); a deleted VM pod returns under its name and its guest takes that name.
fn vm_stateful_set(k: &Kubectl, dir: &Path) {
    let manifest = dir.join("vms.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: vms\nspec:\n  replicas: 2\n  \
         selector:\n    matchLabels: {app: vms}\n  template:\n    metadata:\n      \
         labels: {app: vms}\n    spec:\n      virtualMachine:\n        name: vm\n        \
         image: tiny\n        resources:\n          requests: {cpu: 100m, memory: 64Mi}\n          \
         limits: {cpu: '1', memory: 128Mi}\n",
    )
    .unwrap();
    k.run(&["apply", "-f", manifest.to_str().unwrap()]);
    // (name, uid, created, ready since) of each Running pod, by name.
    let running = || {
        let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
        let mut pods: Vec<[String; 4]> = items(&k.json(&["get", "pods", "-l", "app=vms"]))
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                let m = &p["metadata"];
                let ready = p["status"]["conditions"]
                    .as_array()
                    .and_then(|c| {
                        c.iter()
                            .find(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                    .map_or(String::new(), |c| text(&c["lastTransitionTime"]));
                [
                    text(&m["name"]),
                    text(&m["uid"]),
                    text(&m["creationTimestamp"]),
                    ready,
                ]
            })
            .collect();
        pods.sort();
        pods
    };
    let guest_up = |name: &str| raw_log(k, name).contains(&format!("centaurus-vm: ready {name}"));
    let first = eventually(180, "vms-0 and vms-1 Running with their guests up", || {
        // Shown when this fails.
        eprintln!("{}", k.run(&["get", "pods", "-l", "app=vms", "-o", "wide"]));
        let pods = running();
        let names: Vec<&str> = pods.iter().map(|p| p[0].as_str()).collect();
        (names == ["vms-0", "vms-1"] && guest_up("vms-0") && guest_up("vms-1")).then_some(pods)
    });
    // OrderedReady: vms-1 was made only once vms-0 was Ready.
    assert!(
        !first[0][3].is_empty() && first[0][3] <= first[1][2],
        "{first:?}"
    );
    k.run(&["delete", "pod", "vms-0", "--wait=false"]);
    eventually(180, "vms-0 back under its name with a new guest", || {
        let pods = running();
        (pods.len() == 2 && pods[0][0] == "vms-0" && pods[0][1] != first[0][1] && guest_up("vms-0"))
            .then_some(())
    });
    k.run(&["delete", "statefulset", "vms"]);
}

/// Starts batch work in namespace `batch`: a job from `kubectl create job`, an Indexed job
/// of four completions two at a time, a job that fails past its backoff limit, a cron
/// job firing every minute, and a VM job whose guest reads a Secret and a ConfigMap.
fn start_batch(k: &Kubectl, dir: &Path) {
    k.run(&["create", "namespace", "batch"]);
    let b = |args: &[&str]| k.run(&[&["-n", "batch"], args].concat());
    b(&[
        "create",
        "job",
        "once",
        "--image=busybox",
        "--",
        "sh",
        "-c",
        "echo job done",
    ]);
    let manifest = dir.join("jobs.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: par}\nspec:\n  completions: 4\n  \
         parallelism: 2\n  completionMode: Indexed\n  template:\n    spec:\n      \
         restartPolicy: Never\n      containers:\n      - name: c\n        image: busybox\n        \
         command: [sh, -c, 'echo index $JOB_COMPLETION_INDEX; sleep 2']\n---\n\
         apiVersion: batch/v1\nkind: Job\nmetadata: {name: doomed}\nspec:\n  backoffLimit: 1\n  \
         template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: c\n        \
         image: busybox\n        command: [sh, -c, 'exit 3']\n",
    )
    .unwrap();
    b(&["apply", "-f", manifest.to_str().unwrap()]);
    b(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=password=s3cret",
    ]);
    b(&[
        "create",
        "configmap",
        "app",
        "--from-literal=greeting=hello-vm",
    ]);
    let vm_job = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/manifests/vm-job.yaml");
    b(&["apply", "-f", vm_job.to_str().unwrap()]);
    b(&[
        "create",
        "cronjob",
        "tick",
        "--image=busybox",
        "--schedule=*/1 * * * *",
        "--",
        "sh",
        "-c",
        "echo tick",
    ]);
}

/// Checks the work [`start_batch`] started.
fn check_batch(k: &Kubectl) {
    let b = |args: &[&str]| k.run(&[&["-n", "batch"], args].concat());
    let bj = |args: &[&str]| k.json(&[&["-n", "batch"], args].concat());
    b(&[
        "wait",
        "--for=condition=complete",
        "job/once",
        "--timeout=120s",
    ]);
    assert!(b(&["logs", "job/once"]).contains("job done"));
    b(&[
        "wait",
        "--for=condition=complete",
        "job/par",
        "--timeout=120s",
    ]);
    let par = bj(&["get", "job", "par"]);
    assert_eq!(par["status"]["succeeded"], 4, "{par}");
    assert_eq!(par["status"]["completedIndexes"], "0-3", "{par}");
    let mut printed: Vec<String> = items(&bj(&["get", "pods", "-l", "job-name=par"]))
        .iter()
        .map(|p| raw_log_in(k, "batch", p["metadata"]["name"].as_str().unwrap()))
        .map(|log| log.trim().to_owned())
        .collect();
    printed.sort();
    assert_eq!(printed, ["index 0", "index 1", "index 2", "index 3"]);
    // The VM job: its guest read the Secret (with its mode), the ConfigMap and its account's
    // token from its initramfs, then powered off, which completed the job.
    b(&[
        "wait",
        "--for=condition=complete",
        "job/vm-report",
        "--timeout=180s",
    ]);
    let vm_pod = items(&bj(&["get", "pods", "-l", "job-name=vm-report"]))[0].clone();
    assert_eq!(vm_pod["status"]["phase"], "Succeeded", "{vm_pod}");
    let report = raw_log_in(k, "batch", vm_pod["metadata"]["name"].as_str().unwrap());
    for line in [
        "report: password=s3cret mode=400",
        "report: greeting=hello-vm",
        "report: namespace=batch token=eyJ",
    ] {
        assert!(
            report.contains(line),
            "{line:?} missing from the console:\n{report}"
        );
    }
    let table = b(&["get", "job", "par"]);
    assert!(
        table.starts_with("NAME") && table.contains("STATUS") && table.contains("4/4"),
        "{table}"
    );
    // Two failures (the first and its one retry, after a back-off) fail the job.
    b(&[
        "wait",
        "--for=condition=failed",
        "job/doomed",
        "--timeout=120s",
    ]);
    let doomed = bj(&["get", "job", "doomed"]);
    assert_eq!(doomed["status"]["failed"], 2, "{doomed}");
    assert_eq!(
        doomed["status"]["conditions"][0]["reason"], "BackoffLimitExceeded",
        "{doomed}"
    );
    // The cron job fired at two minutes at least, and each of its jobs completed.
    eventually(150, "two completed jobs of the cron job", || {
        let done = items(&bj(&["get", "jobs"]))
            .iter()
            .filter(|j| {
                j["metadata"]["ownerReferences"][0]["name"] == "tick"
                    && j["status"]["succeeded"] == 1
            })
            .count();
        (done >= 2).then_some(())
    });
    let tick = bj(&["get", "cronjob", "tick"]);
    assert!(tick["status"]["lastScheduleTime"].is_string(), "{tick}");
    let events = b(&["get", "events"]);
    for reason in ["SuccessfulCreate", "Completed", "BackoffLimitExceeded"] {
        assert!(events.contains(reason), "{reason} missing from:\n{events}");
    }
    // Deleting the cron job takes its jobs and their pods with it.
    b(&["delete", "cronjob", "tick"]);
    b(&["delete", "job", "once", "par", "doomed", "vm-report"]);
    eventually(60, "the batch namespace is empty", || {
        (items(&bj(&["get", "jobs"])).is_empty() && items(&bj(&["get", "pods"])).is_empty())
            .then_some(())
    });
}

/// Runs kubectl with `input` on its standard input (written after a second, once the
/// session is up; then closed, or `kept_open` as an attach needs it) and kills it after
/// `within` if it has not ended: its output and error, and its exit code (None when
/// killed).
fn piped(
    k: &Kubectl,
    args: &[&str],
    input: &[u8],
    kept_open: bool,
    within: std::time::Duration,
) -> (String, Option<i32>) {
    use std::io::{Read as _, Write as _};
    let mut child = k
        .cmd(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let _ = stdin.write_all(&input);
        if kept_open {
            std::thread::sleep(std::time::Duration::from_secs(30));
        }
    });
    let deadline = Instant::now() + within;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    drop(writer);
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (format!("{out}{err}").replace('\r', ""), code)
}

/// Sessions with the running container pod `hello` through a stock kubectl: exec with its
/// exit code, standard input and a terminal; cp both ways; attach; port-forward to a server
/// in a pod with a real TCP exchange.
fn sessions(k: &Kubectl, dir: &Path) {
    use std::io::{Read as _, Write as _};
    use std::process::Stdio;
    // The exit code, standard output and error of a command.
    let out = k
        .cmd(&[
            "exec",
            "hello",
            "--",
            "sh",
            "-c",
            "echo to-out; echo to-err >&2; exit 3",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "to-out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("to-err"));
    // Standard input, closed at its end (the command sees EOF and exits).
    let (out, code) = piped(
        k,
        &["exec", "-i", "hello", "--", "tr", "a-z", "A-Z"],
        b"shout\n",
        false,
        std::time::Duration::from_secs(30),
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("SHOUT"), "{out}");
    // A terminal of the client's size (`script` gives kubectl one). Under load busybox's
    // `stty` can run before runc has finished setting up the container's console (it
    // fails with ECHILD), so the command asks again briefly, and the whole is tried thrice.
    let kubeconfig = k.kubeconfig.display().to_string();
    let mut shown = String::new();
    for _ in 0..3 {
        let tty = std::process::Command::new("script")
            .args([
                "-qec",
                &format!(
                    "stty cols 123 rows 45; {} --kubeconfig {kubeconfig} exec -it hello -- sh -c 'tty; for i in 1 2 3 4 5; do stty size 2>/dev/null && break; sleep 0.5; done'",
                    k.bin.display()
                ),
                "/dev/null",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        shown = String::from_utf8_lossy(&tty.stdout).into_owned();
        if shown.contains("/dev/pts/") && shown.contains("45 123") {
            break;
        }
        eprintln!("exec -it showed {shown:?}; again");
    }
    assert!(
        shown.contains("/dev/pts/") && shown.contains("45 123"),
        "a terminal of 123x45: {shown}"
    );
    // cp both ways: tar through exec.
    let local = dir.join("to-pod.txt");
    std::fs::write(&local, "carried by tar\n").unwrap();
    k.run(&["cp", local.to_str().unwrap(), "hello:/tmp/in-pod.txt"]);
    assert_eq!(
        k.run(&["exec", "hello", "--", "cat", "/tmp/in-pod.txt"]),
        "carried by tar\n"
    );
    let back = dir.join("from-pod.txt");
    k.run(&["cp", "hello:/tmp/in-pod.txt", back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "carried by tar\n");
    // attach: what the container writes from now on (here, through its own stdout).
    let mut attach = k
        .cmd(&["attach", "hello"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    k.run(&[
        "exec",
        "hello",
        "--",
        "sh",
        "-c",
        "echo written-later > /proc/1/fd/1",
    ]);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let _ = attach.kill();
    let _ = attach.wait();
    let mut attached = String::new();
    attach
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut attached)
        .unwrap();
    assert!(
        attached.contains("written-later"),
        "attach showed: {attached:?}"
    );
    // port-forward: an HTTP server in a pod, reached from here over a real connection.
    k.run(&[
        "run",
        "served",
        "--image=busybox",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "mkdir /tmp/www && echo served-from-the-pod > /tmp/www/index.html && httpd -f -p 8080 -h /tmp/www",
    ]);
    k.run(&[
        "wait",
        "--for=jsonpath={.status.phase}=Running",
        "pod/served",
        "--timeout=60s",
    ]);
    let mut forward = k
        .cmd(&["port-forward", "pod/served", ":8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines =
        std::io::BufRead::lines(std::io::BufReader::new(forward.stdout.take().unwrap()));
    let port: u16 = lines
        .find_map(|l| {
            let l = l.ok()?;
            l.strip_prefix("Forwarding from 127.0.0.1:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("kubectl port-forward says where it listens");
    std::thread::spawn(move || for _ in lines {});
    let answer = eventually(30, "an answer through the forwarded port", || {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        conn.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer).ok()?;
        answer.contains("served-from-the-pod").then_some(answer)
    });
    assert!(answer.starts_with("HTTP/1."), "{answer}");
    let _ = forward.kill();
    let _ = forward.wait();
    k.run(&["delete", "pod", "served", "--wait=false"]);
}

/// The web pods Running, by node.
fn web_pods_by_node(k: &Kubectl) -> Vec<String> {
    items(&k.json(&["get", "pods", "-l", "app=web"]))
        .iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .map(|p| p["spec"]["nodeName"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Zone failure: a Deployment spread over three zones of hollow nodes (and a DaemonSet on
/// each of them, and a StatefulSet's three ordinals) loses a zone
/// (`centaurusctl node stop --zone`, here the same library call) and is whole again in the
/// other two; the nodes come back when powered on.
#[test]
fn a_deployment_survives_the_loss_of_a_zone() {
    let Some(bin) = kubectl_binary() else {
        eprintln!("SKIPPED: no kubectl ($KUBECTL, .venv/bin/kubectl or PATH)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("region");
    let _region = common::up(
        &data,
        &common::free_addr(),
        &[
            "--no-local-agent",
            "--hollow-nodes",
            "6",
            "--zones",
            "3",
            "--eviction-timeout",
            "5",
        ],
    );
    let admin = Kubectl {
        bin: bin.clone(),
        kubeconfig: data.join("admin.kubeconfig"),
        cache: dir.path().join("cache-admin"),
    };
    let tenant =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/manifests/tenant-acme.yaml");
    admin.run(&["create", "-f", tenant.to_str().unwrap()]);
    let k = Kubectl::tenant_admin(&bin, &data, dir.path(), "acme");
    let manifest = dir.path().join("web.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 6\n  \
         selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    \
         spec:\n      containers:\n      - name: c\n        image: busybox\n",
    )
    .unwrap();
    k.run(&["apply", "-f", manifest.to_str().unwrap()]);
    // hollow-i is in zone-{a,b,c}[i % 3]: two replicas a zone, one a node.
    let zone_a = ["hollow-0", "hollow-3"];
    let nodes = eventually(60, "6 web pods Running", || {
        Some(web_pods_by_node(&k)).filter(|n| n.len() == 6)
    });
    let mut distinct = nodes.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 6, "one replica a node: {nodes:?}");
    // `kubectl top`: the tenant sees its pods' simulated figures; nodes are the system's.
    let top = k.run(&["top", "pod", "--no-headers"]);
    assert_eq!(top.lines().count(), 6, "{top}");
    assert!(
        top.lines()
            .all(|l| l.starts_with("web-") && l.contains("Mi")),
        "{top}"
    );
    assert!(k.fails(&["top", "node"]).contains("Forbidden"));
    let nodes_top = admin.run(&["top", "node", "--no-headers"]);
    assert_eq!(nodes_top.lines().count(), 6, "{nodes_top}");

    // A DaemonSet: a pod on each of the six nodes; a deleted one comes back on its node.
    let daemons = dir.path().join("agent.yaml");
    std::fs::write(
        &daemons,
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agent\nspec:\n  \
         selector:\n    matchLabels: {app: agent}\n  template:\n    metadata:\n      \
         labels: {app: agent}\n    spec:\n      containers:\n      - name: c\n        \
         image: busybox\n",
    )
    .unwrap();
    k.run(&["apply", "-f", daemons.to_str().unwrap()]);
    let daemon_nodes = || {
        let mut on: Vec<String> = items(&k.json(&["get", "pods", "-l", "app=agent"]))
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| p["spec"]["nodeName"].as_str().unwrap_or("").to_owned())
            .collect();
        on.sort();
        on
    };
    let all_six: Vec<String> = (0..6).map(|i| format!("hollow-{i}")).collect();
    eventually(60, "a daemon pod on each node", || {
        (daemon_nodes() == all_six).then_some(())
    });
    let first = items(&k.json(&["get", "pods", "-l", "app=agent"]))[0].clone();
    k.run(&["delete", "pod", first["metadata"]["name"].as_str().unwrap()]);
    eventually(60, "the deleted daemon pod replaced on its node", || {
        (daemon_nodes() == all_six).then_some(())
    });
    // A StatefulSet: db-0, db-1, db-2 in order; a deleted pod returns under its name.
    let stateful = dir.path().join("db.yaml");
    std::fs::write(
        &stateful,
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\nspec:\n  replicas: 3\n  \
         selector:\n    matchLabels: {app: db}\n  template:\n    metadata:\n      \
         labels: {app: db}\n    spec:\n      containers:\n      - name: c\n        \
         image: busybox\n",
    )
    .unwrap();
    k.run(&["apply", "-f", stateful.to_str().unwrap()]);
    let db_pods = || {
        let mut names: Vec<(String, String)> = items(&k.json(&["get", "pods", "-l", "app=db"]))
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                let m = &p["metadata"];
                (
                    m["name"].as_str().unwrap().to_owned(),
                    m["uid"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        names.sort();
        names
    };
    let ordinals = |pods: &[(String, String)]| -> Vec<String> {
        pods.iter().map(|(n, _)| n.clone()).collect()
    };
    let before = eventually(60, "db-0..2 Running", || {
        Some(db_pods()).filter(|p| ordinals(p) == ["db-0", "db-1", "db-2"])
    });
    k.run(&["delete", "pod", "db-1"]);
    eventually(60, "db-1 back under its name", || {
        let now = db_pods();
        (ordinals(&now) == ["db-0", "db-1", "db-2"] && now[1].1 != before[1].1).then_some(())
    });
    let sts = k.run(&["get", "statefulset", "db"]);
    assert!(sts.contains("3/3"), "{sts}");
    let table = k.run(&["get", "daemonset", "agent"]);
    assert!(
        table.contains("NODE SELECTOR")
            && table.split_whitespace().filter(|c| *c == "6").count() >= 4,
        "{table}"
    );

    // A ResourceQuota holds a Deployment's third pod, and a pod over it is refused.
    k.run(&["create", "namespace", "limited"]);
    k.run(&[
        "create",
        "quota",
        "small",
        "--hard=pods=2,count/deployments.apps=1",
        "-n",
        "limited",
    ]);
    k.run(&[
        "create",
        "deployment",
        "capped",
        "--image=busybox",
        "--replicas=3",
        "-n",
        "limited",
    ]);
    eventually(60, "2 capped pods and the refusal of the third", || {
        let pods = items(&k.json(&["get", "pods", "-n", "limited"]));
        let refused = items(&k.json(&["get", "events", "-n", "limited"]))
            .iter()
            .any(|e| {
                e["reason"] == "FailedCreate"
                    && e["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("exceeded quota: small")
            });
        (pods.len() == 2 && refused).then_some(())
    });
    let err = k.fails(&["run", "extra", "--image=busybox", "-n", "limited"]);
    assert!(
        err.contains("exceeded quota: small, requested: pods=1, used: pods=2, limited: pods=2"),
        "{err}"
    );
    let err = k.fails(&[
        "create",
        "deployment",
        "second",
        "--image=busybox",
        "-n",
        "limited",
    ]);
    assert!(err.contains("count/deployments.apps=1"), "{err}");
    let quota = k.run(&["get", "quota", "small", "-n", "limited"]);
    assert!(quota.contains("pods: 2/2"), "{quota}");
    assert_eq!(items(&k.json(&["get", "pods", "-n", "limited"])).len(), 2);

    let ctl = |on: bool| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let config =
                centaurus_client::kubeconfig::Kubeconfig::load(&data.join("admin.kubeconfig"))
                    .unwrap();
            let ctl = centaurus_client::ctl::Ctl {
                client: std::sync::Arc::new(
                    centaurus_client::Client::new(config.connection().unwrap()).unwrap(),
                ),
                registry: centaurus_api::region::registry(),
            };
            ctl.power(&[], Some("zone-a"), on).await.unwrap()
        })
    };
    let lost = Instant::now();
    let mut powered = ctl(false);
    powered.sort();
    assert_eq!(powered, zone_a);
    let nodes = eventually(150, "6 web pods Running outside zone-a", || {
        Some(web_pods_by_node(&k))
            .filter(|n| n.len() == 6 && n.iter().all(|node| !zone_a.contains(&node.as_str())))
    });
    eprintln!(
        "zone-a lost: all 6 replicas Running in zone-b and zone-c {:.1?} later (lease 40 s, eviction timeout 5 s): {nodes:?}",
        lost.elapsed()
    );
    ctl(true);
    eventually(60, "zone-a's nodes Ready again", || {
        items(&admin.json(&["get", "nodes"]))
            .iter()
            .filter(|n| zone_a.contains(&n["metadata"]["name"].as_str().unwrap_or("")))
            .all(|n| {
                n["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .then_some(())
    });
    // The daemon pods of zone-a stayed on their nodes through the loss.
    eventually(60, "the daemon set whole", || {
        (daemon_nodes() == all_six).then_some(())
    });
}
