//! The Geneve codec on arbitrary bytes: parsing a header or a whole overlay frame answers
//! (accepted or refused with a reason) and never panics; whatever is accepted re-encodes to
//! bytes that parse back to the same header.
#![no_main]

use centaurus_xdp::geneve::{Geneve, decapsulate, encapsulate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((g, rest)) = Geneve::parse(data) {
        let mut buf = Vec::new();
        g.write(&mut buf).expect("a parsed header re-encodes");
        assert_eq!(buf.len(), g.len());
        buf.extend_from_slice(rest);
        let (back, rest2) = Geneve::parse(&buf).expect("a re-encoded header parses");
        assert_eq!(back, g);
        assert_eq!(rest2, rest);
    }
    if let Ok((outer, g, inner)) = decapsulate(data) {
        let frame = encapsulate(&outer, &g, inner).expect("a parsed frame re-encodes");
        let (o2, g2, i2) = decapsulate(&frame).expect("a re-encoded frame parses");
        assert_eq!((o2, g2, i2), (outer, g, inner));
    }
});
