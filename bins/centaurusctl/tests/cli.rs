//! centaurusctl against an in-process region: tenants, tenant kubeconfigs, apply of a
//! multi-document manifest, tables, YAML/JSON output, delete, and clear errors.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use centaurus_api::region::{self, Region, RegionOptions};
use centaurus_core::store::{RedbStore, Store};

fn ctl(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_centaurusctl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn ok(kubeconfig: &Path, args: &[&str]) -> String {
    let (success, out, err) = ctl(kubeconfig, args);
    assert!(success, "centaurusctl {args:?}: {err}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_admin_walk() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("store.redb")).unwrap());
    region::bootstrap(&*store).await.unwrap();
    let region = Region::start(
        store,
        RegionOptions {
            data_dir: dir.path().to_owned(),
            listen: "127.0.0.1:0".parse().unwrap(),
            config: Default::default(),
            compact_every: Duration::from_secs(300),
        },
    )
    .await
    .unwrap();
    let admin = region.admin_kubeconfig.clone();
    let tenant_cfg = dir.path().join("acme.kubeconfig");
    let walk = tokio::task::spawn_blocking(move || {
        assert_eq!(
            ok(&admin, &["create", "tenant", "acme", "--quota", "pods=10"]).trim(),
            "tenant/acme created"
        );
        let (success, _, err) = ctl(&admin, &["create", "tenant", "Bad_Name"]);
        assert!(!success && err.contains("metadata.name"), "{err}");
        let kubeconfig = ok(&admin, &["tenant", "kubeconfig", "acme"]);
        assert!(
            kubeconfig.contains("token:") && kubeconfig.contains("certificate-authority-data:")
        );
        std::fs::write(&tenant_cfg, kubeconfig).unwrap();
        let manifest = tenant_cfg.with_extension("yaml");
        std::fs::write(
            &manifest,
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: dev}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: dev, labels: {app: web}}\nspec:\n  containers: [{name: c, image: busybox}]\n",
        )
        .unwrap();
        let applied = ok(&tenant_cfg, &["apply", "-f", manifest.to_str().unwrap()]);
        assert_eq!(applied, "namespace/dev created\npod/web created\n");
        assert_eq!(
            ok(&tenant_cfg, &["apply", "-f", manifest.to_str().unwrap()]),
            "namespace/dev configured\npod/web configured\n"
        );
        let table = ok(&tenant_cfg, &["get", "pods", "-n", "dev"]);
        assert!(
            table.starts_with("NAME") && table.contains("web") && table.contains("Pending"),
            "{table}"
        );
        let json: serde_json::Value = serde_json::from_str(&ok(
            &tenant_cfg,
            &["get", "pod", "web", "-n", "dev", "-o", "json"],
        ))
        .unwrap();
        assert_eq!(json["metadata"]["tenant"], "acme");
        assert!(
            ok(
                &tenant_cfg,
                &["get", "po", "-n", "dev", "-o", "yaml", "-l", "app=web"]
            )
            .contains("name: web")
        );
        let (success, _, err) = ctl(&tenant_cfg, &["get", "pods", "--tenant", "system", "-A"]);
        assert!(!success && err.contains("403"), "{err}");
        assert!(ok(&tenant_cfg, &["describe", "pod", "web", "-n", "dev"]).contains("tenant: acme"));
        let watch_cfg = tenant_cfg.clone();
        let watch = std::thread::spawn(move || {
            ok(
                &watch_cfg,
                &["watch", "pods", "-n", "dev", "--timeout", "2"],
            )
        });
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            ok(&tenant_cfg, &["delete", "pod", "web", "-n", "dev"]).trim(),
            "pod \"web\" deleted"
        );
        let events: Vec<String> = watch
            .join()
            .unwrap()
            .lines()
            .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(events, ["ADDED dev/web", "DELETED dev/web"]);
        assert_eq!(
            ok(&tenant_cfg, &["get", "pods", "-n", "dev"]).trim(),
            "No resources found."
        );
        let (success, _, err) = ctl(&tenant_cfg, &["get", "widgets"]);
        assert!(
            !success && err.contains("doesn't have a resource type"),
            "{err}"
        );
        let (success, _, err) = ctl(Path::new("/nonexistent"), &["get", "pods"]);
        assert!(!success && err.contains("cannot read kubeconfig"), "{err}");
    });
    walk.await.unwrap();
    region.stop().await;
}
