//! API decoding: any request body, decoded and validated as every kind a region serves
//! (views of a kind in a second group included), must give an answer (accepted, or errors
//! naming fields) and never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let registry = centaurus_api::region::registry();
    for info in registry.served() {
        if let Err(errors) = info.validate(&value) {
            assert!(!errors.is_empty());
        }
    }
});
