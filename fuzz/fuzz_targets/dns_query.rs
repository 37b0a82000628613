//! The cluster DNS's query path: any bytes a pod sends to its tenant's listener decode or
//! are refused without panicking; a decoded query's answer carries only the asking
//! tenant's addresses (acme's are 10.1.x.x, beta's 10.2.x.x) and encodes on the wire.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::{Arc, LazyLock};

use centaurus_dns::{ServiceRecord, TenantHandler, Zone};
use hickory_server::authority::MessageRequest;
use hickory_server::proto::op::{Header, Message};
use hickory_server::proto::rr::RData;
use hickory_server::proto::serialize::binary::BinDecodable;
use libfuzzer_sys::fuzz_target;

static ZONE: LazyLock<Arc<Zone>> = LazyLock::new(|| {
    let z = Zone::new();
    for (t, octet) in [("acme", 1), ("beta", 2)] {
        for (name, headless) in [("web", false), ("db", true)] {
            z.set(
                t,
                "prod",
                name,
                Some(ServiceRecord {
                    cluster_ip: (!headless).then_some(Ipv4Addr::new(10, octet, 0, 16)),
                    ports: vec![("http".into(), "tcp".into(), 80)],
                    endpoints: vec![(
                        Ipv4Addr::new(10, octet, 1, 7),
                        [("http".to_string(), 8080)].into(),
                    )],
                }),
            );
        }
    }
    Arc::new(z)
});

fuzz_target!(|data: &[u8]| {
    let Ok(request) = MessageRequest::from_bytes(data) else {
        return;
    };
    let handler = TenantHandler::new(ZONE.clone(), "acme");
    let answer = handler.answer(&request);
    for r in answer.answers.iter().chain(&answer.additionals) {
        if let RData::A(a) = r.data() {
            assert_eq!(a.0.octets()[1], 1, "beta's address answered to acme: {r:?}");
        }
    }
    let mut m = Message::new();
    m.set_header(Header::response_from_request(request.header()));
    m.set_response_code(answer.code);
    m.add_answers(answer.answers).add_additionals(answer.additionals);
    let bytes = m.to_vec().expect("an answer encodes");
    Message::from_vec(&bytes).expect("an encoded answer decodes");
});
