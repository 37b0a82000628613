//! Request bodies as the API server decodes them: any bytes, sent as JSON, YAML or
//! protobuf, must be decoded or refused with a 4xx status, and never panic; YAML nested
//! deeper than the limit is refused. Whatever decodes encodes back to protobuf, or is
//! found not to fit a Kubernetes type, without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let content_type = match kind % 3 {
        0 => "application/json",
        1 => "application/yaml",
        _ => "application/vnd.kubernetes.protobuf",
    };
    match centaurus_api::codec::decode_body(Some(content_type), body) {
        Ok(obj) => drop(centaurus_api::protobuf::encode(&obj)),
        Err(e) => assert!((400..500).contains(&e.code), "{content_type}: {} {}", e.code, e.message),
    }
});
