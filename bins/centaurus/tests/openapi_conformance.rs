//! schemathesis (PyPI, installed into `.venv` by `scripts/setup.sh`) against the OpenAPI
//! documents `centaurus up` serves, for the core group and `apps/v1`, as a tenant: from
//! generated requests (fuzzing) and chains of them (stateful), no answer is a server
//! error, every status code, content type and response body is the one the documents
//! declare, and methods a path does not serve are 405 with `Allow`.

mod common;

use std::path::Path;

#[test]
fn the_served_openapi_documents_hold_for_generated_requests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let schemathesis = root.join(".venv/bin/schemathesis");
    if !schemathesis.exists() {
        eprintln!("SKIPPED: no schemathesis in .venv (scripts/setup.sh installs it)");
        return;
    }
    let Some(kubectl) = common::kubectl_binary() else {
        eprintln!("SKIPPED: no kubectl to make the tenant with");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("region");
    let listen = common::free_addr();
    let _region = common::up(&data, &listen, &["--api-only"]);
    let admin = common::Kubectl {
        bin: kubectl,
        kubeconfig: data.join("admin.kubeconfig"),
        cache: dir.path().join("cache"),
    };
    let tenant = root.join("examples/manifests/tenant-acme.yaml");
    admin.run(&["create", "-f", tenant.to_str().unwrap()]);
    let acme = common::Kubectl::tenant_admin(&admin.bin, &data, dir.path(), "acme");
    let config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&acme.kubeconfig).unwrap()).unwrap();
    let token = config["users"][0]["user"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let ca = dir.path().join("ca.pem");
    std::fs::copy(data.join("pki/ca.crt"), &ca).unwrap();
    std::fs::write(
        dir.path().join("schemathesis.toml"),
        format!(
            r#"base-url = "https://{listen}"
headers = {{ Authorization = "Bearer {token}" }}
[parameters]
"query.watch" = false
"query.follow" = false
"query.timeoutSeconds" = 1
"path.namespace" = "default"
"path.tenant" = "acme"
[checks]
enabled = false
not_a_server_error.enabled = true
status_code_conformance.enabled = true
content_type_conformance.enabled = true
response_schema_conformance.enabled = true
unsupported_method.enabled = true
[[operations]]
include-path-regex = "/(exec|attach|portforward)$"
enabled = false
"#
        ),
    )
    .unwrap();
    for gv in ["api/v1", "apis/apps/v1"] {
        let doc = dir.path().join(format!("{}.json", gv.replace('/', "-")));
        std::fs::write(
            &doc,
            acme.run(&["get", "--raw", &format!("/openapi/v3/{gv}")]),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let out = std::process::Command::new(&schemathesis)
            .current_dir(dir.path())
            .arg("--config-file")
            .arg(dir.path().join("schemathesis.toml"))
            .arg("run")
            .arg(&doc)
            .arg("--tls-verify")
            .arg(&ca)
            .args([
                "-n",
                "10",
                "--generation-deterministic",
                "--phases",
                "fuzzing,stateful",
            ])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        let cases = said
            .lines()
            .find(|l| l.contains(" generated, "))
            .unwrap_or("")
            .trim()
            .to_owned();
        eprintln!("{gv}: {cases} in {:.0?}", started.elapsed());
        assert!(
            out.status.success(),
            "schemathesis on {gv}:\n{said}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
