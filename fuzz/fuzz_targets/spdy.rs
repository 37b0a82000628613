//! SPDY/3.1 as port-forward clients send it: any bytes split into frames or refused,
//! never a panic; header blocks of SYN_STREAM frames decompress (one zlib stream over
//! the session, with the SPDY dictionary) or are refused.
#![no_main]

use centaurus_api::spdy::{Frame, HeaderReader, parse_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = bytes::BytesMut::from(data);
    let mut headers = HeaderReader::default();
    while let Ok(Some(frame)) = parse_frame(&mut buf) {
        if let Frame::Control { kind: 1, payload, .. } = frame
            && payload.len() >= 10
            && headers.read(&payload[10..]).is_err()
        {
            break;
        }
    }
});
