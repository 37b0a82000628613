//! CIDRs from network specs: parse without panicking; an accepted CIDR has no host bits
//! and re-parses from its canonical form. The VPC plane's IPv4 CIDRs agree with it, contain
//! their own network and last address, and overlap symmetrically with a second CIDR.
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
    let (first, second) = text.split_once(' ').unwrap_or((text, "10.0.0.0/8"));
    let parsed = first.parse::<centaurus_vpc::ipam::Ipv4Cidr>();
    if let Ok(c) = parsed {
        assert!(cidr(first).is_ok_and(|(a, _)| a.is_ipv4()));
        assert!(c.contains_addr(c.network()) && c.contains_addr(c.last()));
        assert_eq!(c.to_string().parse::<centaurus_vpc::ipam::Ipv4Cidr>(), Ok(c));
        if let Ok(d) = second.parse::<centaurus_vpc::ipam::Ipv4Cidr>() {
            assert_eq!(c.overlaps(&d), d.overlaps(&c));
            assert_eq!(c.contains(&d) && d.contains(&c), c == d);
        }
    }
});
