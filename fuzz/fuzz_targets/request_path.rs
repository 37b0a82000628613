//! The request router: any path and query string gives a route or a clean 4xx, never a
//! panic; a parsed route names non-empty segments only. The query also goes through the
//! pod log parameters, which cut the path (taken as a log) to a slice of itself, and the
//! exec parameters, whose requests survive their way to a node agent and back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = text.split_once('?').unwrap_or((text, ""));
    match centaurus_api::route::parse(path) {
        Ok(r) => {
            assert!(!r.plural.is_empty() && !r.version.is_empty());
            assert!(r.name.as_deref().is_none_or(|n| !n.is_empty() && !n.contains('/')));
        }
        Err(e) => assert_eq!(e.code, 404),
    }
    if let Err(e) = centaurus_api::query::Params::parse(Some(query)) {
        assert_eq!(e.code, 400);
    }
    match centaurus_api::pods::LogParams::parse(Some(query)) {
        Ok(p) => {
            let log = path.as_bytes();
            let cut = p.cut(log);
            // A slice of the log itself.
            let (start, end) = (log.as_ptr() as usize, log.as_ptr() as usize + log.len());
            let at = cut.as_ptr() as usize;
            assert!(cut.is_empty() || (start <= at && at + cut.len() <= end));
        }
        Err(e) => assert_eq!(e.code, 400),
    }
    for attach in [false, true] {
        match centaurus_api::streams::parse_request(Some(query), attach) {
            Ok(r) => {
                let again = centaurus_api::streams::parse_request(
                    Some(&centaurus_api::streams::request_query(&r)),
                    attach,
                )
                .unwrap();
                assert_eq!(again, r);
            }
            Err(e) => assert_eq!(e.code, 400),
        }
    }
});
