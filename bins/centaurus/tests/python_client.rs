//! The official Kubernetes Python client (PyPI `kubernetes`, which `scripts/setup.sh`
//! installs into `.venv`) against `centaurus up`: typed models read, patch, list and watch
//! nodes, pods and deployments; errors are typed; the dynamic client applies server-side;
//! exec runs over its WebSocket when this host runs containers (root and runc). The walk
//! itself is `tests/python/client_walk.py`.

mod common;

use std::path::Path;

use centaurus_runtime::RuncRuntime;

#[test]
fn the_official_python_client_walks_the_region() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    let has_client = std::process::Command::new(&python)
        .args(["-c", "import kubernetes"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_client {
        eprintln!("SKIPPED: no kubernetes Python client in .venv (scripts/setup.sh installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("region");
    let runc = RuncRuntime::available();
    let mut args = vec!["--hollow-nodes", "2"];
    if !runc {
        eprintln!("exec is not walked: runc is missing or we are not root");
        args.push("--no-local-agent");
    }
    let _region = common::up(&data, &common::free_addr(), &args);
    let admin = data.join("admin.kubeconfig");
    let tenant_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/manifests/tenant-acme.yaml");
    let Some(bin) = common::kubectl_binary() else {
        eprintln!("SKIPPED: no kubectl to make the tenant with");
        return;
    };
    let kubectl = common::Kubectl {
        bin,
        kubeconfig: admin.clone(),
        cache: dir.path().join("cache"),
    };
    kubectl.run(&["create", "-f", tenant_path.to_str().unwrap()]);
    let tenant = dir.path().join("acme.kubeconfig");
    common::tenant_kubeconfig(&admin, "acme", &tenant);
    let host = centaurus_runtime::agent::hostname();
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(root.join("bins/centaurus/tests/python/client_walk.py"))
        .arg(&admin)
        .arg(&tenant);
    if runc {
        cmd.arg(&host);
    }
    let out = cmd.output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{said}");
    assert!(
        out.status.success(),
        "the Python client's walk failed:\n{said}"
    );
    assert!(said.contains("python client walk: ok"));
    if runc {
        assert!(said.contains("exec: ok"));
    }
}
