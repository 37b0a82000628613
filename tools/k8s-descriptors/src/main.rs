//! Writes a `FileDescriptorSet` of the Kubernetes API groups Centaurus speaks protobuf for.
//!
//! The descriptors come from `k8s-rs-pb` (generated from the upstream `.proto` files of
//! Kubernetes 1.35), whose every generated module embeds its file's `FileDescriptorProto`
//! as the byte string `file_descriptor_proto_data`. The tool reads those literals out of
//! the crate's source with `syn`, keeps the files the listed groups need (their imports
//! first), drops source comments and writes the set.
//!
//! Usage: `cargo run --release -- ../../centaurus-api/proto/kubernetes.fds`

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use prost::Message;
use prost_types::{FileDescriptorProto, FileDescriptorSet};

/// The proto files served, by their names in the crate (`api/GROUP/VERSION/...`).
const ROOTS: &[&str] = &[
    "api/core/v1/generated.proto",
    "api/apps/v1/generated.proto",
    "api/batch/v1/generated.proto",
    "api/rbac/v1/generated.proto",
    "api/coordination/v1/generated.proto",
    "api/events/v1/generated.proto",
    "api/authorization/v1/generated.proto",
    "api/authentication/v1/generated.proto",
    "api/policy/v1/generated.proto",
    "api/networking/v1/generated.proto",
    "api/discovery/v1/generated.proto",
    "api/scheduling/v1/generated.proto",
    "api/autoscaling/v1/generated.proto",
    "api/autoscaling/v2/generated.proto",
    "api/storage/v1/generated.proto",
    "api/certificates/v1/generated.proto",
    "api/apidiscovery/v2/generated.proto",
    "metrics/pkg/apis/metrics/v1beta1/generated.proto",
    "apimachinery/pkg/apis/meta/v1/generated.proto",
];

fn crate_dir() -> PathBuf {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "cargo metadata failed");
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let manifest = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "k8s-rs-pb")
        .and_then(|p| p["manifest_path"].as_str())
        .expect("k8s-rs-pb among the packages");
    Path::new(manifest).parent().unwrap().join("src/v1_35")
}

/// Every embedded descriptor under `dir`, by file name.
fn embedded(dir: &Path, out: &mut BTreeMap<String, FileDescriptorProto>) {
    for entry in std::fs::read_dir(dir).expect("read the crate source") {
        let path = entry.unwrap().path();
        if path.is_dir() {
            embedded(&path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let src = std::fs::read_to_string(&path).unwrap();
        if !src.contains("file_descriptor_proto_data") {
            continue;
        }
        let file = syn::parse_file(&src).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for item in file.items {
            let syn::Item::Static(s) = item else { continue };
            if s.ident != "file_descriptor_proto_data" {
                continue;
            }
            let syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::ByteStr(bytes), .. }) = *s.expr
            else {
                panic!("{}: the descriptor is not a byte string", path.display());
            };
            let mut fd = FileDescriptorProto::decode(&bytes.value()[..]).expect("a descriptor");
            fd.source_code_info = None;
            out.insert(fd.name().to_owned(), fd);
        }
    }
}

fn visit(
    name: &str,
    all: &BTreeMap<String, FileDescriptorProto>,
    seen: &mut HashSet<String>,
    set: &mut FileDescriptorSet,
) {
    if !seen.insert(name.to_owned()) {
        return;
    }
    let fd = all.get(name).unwrap_or_else(|| panic!("no descriptor for {name}"));
    for dep in &fd.dependency {
        visit(dep, all, seen, set);
    }
    set.file.push(fd.clone());
}

fn main() {
    let out = std::env::args().nth(1).expect("usage: k8s-descriptors OUT.fds");
    let mut all = BTreeMap::new();
    embedded(&crate_dir(), &mut all);
    let (mut seen, mut set) = (HashSet::new(), FileDescriptorSet::default());
    for root in ROOTS {
        visit(root, &all, &mut seen, &mut set);
    }
    let bytes = set.encode_to_vec();
    std::fs::write(&out, &bytes).expect("write the descriptor set");
    eprintln!("{} files, {} bytes -> {out}", set.file.len(), bytes.len());
}
