//! Resource quantities from manifests: parse without panicking or overflowing, and a parsed
//! value is consistent between its milli and whole forms.
#![no_main]

use centaurus_core::model::Quantity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let q = Quantity::from(text);
    if let Ok(milli) = q.milli_value() {
        let whole = q.value().expect("milli parsed, so whole parses");
        assert!(whole * 1000 >= milli && whole * 1000 - milli < 1000);
    }
});
