//! CIDRs from network specs: parse without panicking; an accepted CIDR has no host bits
//! and re-parses from its canonical form.
#![no_main]

use centaurus_core::model::validation::cidr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((addr, len)) = cidr(text) {
        assert_eq!(cidr(&format!("{addr}/{len}")), Ok((addr, len)));
    }
});
