//! Manifest and body decoding: multi-document YAML/JSON manifests, request bodies of every
//! content type (JSON, YAML, Kubernetes protobuf) and the three patch formats give objects
//! or clean errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(objects) = centaurus_client::manifest::decode(text)
    {
        assert!(objects.iter().all(|o| o["apiVersion"].is_string()));
    }
    for ct in ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"] {
        if let Err(e) = centaurus_api::codec::decode_body(Some(ct), data) {
            assert!(e.code == 400 || e.code == 415, "{e}");
        }
    }
    let mut doc = serde_json::json!({"metadata": {"name": "a", "labels": {"x": "1"}},
        "spec": {"containers": [{"name": "c", "image": "i"}]}});
    for kind in [
        centaurus_api::patch::PatchKind::Merge,
        centaurus_api::patch::PatchKind::Json,
        centaurus_api::patch::PatchKind::Strategic,
    ] {
        if let Err(e) = centaurus_api::patch::apply(kind, &mut doc, data) {
            assert!(e.code == 400 || e.code == 422, "{e}");
        }
    }
});
