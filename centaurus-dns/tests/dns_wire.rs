//! The cluster DNS on the wire: two tenants' listeners over UDP and TCP answer the same
//! name with their own Service's address (or NXDOMAIN), from a zone that follows a real
//! API server; malformed queries get an error or nothing, and the server goes on.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use centaurus_api::region::LocalRegion;
use centaurus_core::model::{
    EndpointPort, EndpointSlice, ObjectMeta, Resource, SERVICE_NAME_LABEL, Service, ServicePort,
    SliceEndpoint,
};
use centaurus_core::store::{RedbStore, Store};
use centaurus_dns::{Zone, serve};
use hickory_server::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

fn query(id: u16, name: &str, rtype: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    m.to_vec().unwrap()
}

async fn udp(server: SocketAddr, bytes: &[u8]) -> Option<Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf))
        .await
        .ok()?
        .unwrap();
    Some(Message::from_vec(&buf[..n]).unwrap())
}

async fn tcp(server: SocketAddr, bytes: &[u8]) -> Message {
    let mut s = TcpStream::connect(server).await.unwrap();
    s.write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .unwrap();
    s.write_all(bytes).await.unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.unwrap();
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

fn addresses(m: &Message) -> Vec<Ipv4Addr> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

async fn listen(zone: &Arc<Zone>, tenant: &str) -> (SocketAddr, SocketAddr) {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addrs = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    let mut server = serve(zone.clone(), tenant, udp, tcp);
    tokio::spawn(async move { server.block_until_done().await });
    addrs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_resolves_its_own_services() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
    let region = LocalRegion::start(store, dir.path()).await.unwrap();
    region.space("acme", "prod").await.unwrap();
    region.space("beta", "prod").await.unwrap();
    let admin = region.admin();
    // The same Service name in both tenants; acme's has a ready endpoint.
    for t in ["acme", "beta"] {
        let mut s = Service::typed(ObjectMeta::namespaced(t, "prod", "web"));
        s.spec.selector = [("app".to_string(), "web".to_string())].into();
        s.spec.ports = vec![ServicePort {
            name: "http".into(),
            port: 80,
            ..Default::default()
        }];
        admin.api::<Service>().create(s).await.unwrap();
    }
    let mut headless = Service::typed(ObjectMeta::namespaced("acme", "prod", "db"));
    headless.spec.cluster_ip = "None".into();
    headless.spec.selector = [("app".to_string(), "db".to_string())].into();
    admin.api::<Service>().create(headless).await.unwrap();
    let mut slice = EndpointSlice::typed(ObjectMeta::namespaced("acme", "prod", "db-1"));
    slice.metadata.labels = [(SERVICE_NAME_LABEL.to_string(), "db".to_string())].into();
    slice.address_type = "IPv4".into();
    slice.ports = vec![EndpointPort {
        port: 5432,
        ..Default::default()
    }];
    slice.endpoints = vec![SliceEndpoint {
        addresses: vec!["10.0.0.7".into()],
        ..Default::default()
    }];
    admin.api::<EndpointSlice>().create(slice).await.unwrap();
    let acme_ip = admin
        .api::<Service>()
        .get("/registry/services/acme/prod/web")
        .await
        .unwrap()
        .unwrap()
        .virtual_ip()
        .unwrap();

    let zone = Arc::new(Zone::new());
    tokio::spawn(zone.clone().follow(admin.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while zone.len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the zone did not fill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (acme_udp, acme_tcp) = listen(&zone, "acme").await;
    let (beta_udp, _) = listen(&zone, "beta").await;

    let web = "web.prod.svc.cluster.local.";
    let a = udp(acme_udp, &query(1, web, RecordType::A)).await.unwrap();
    assert_eq!((a.id(), a.response_code()), (1, ResponseCode::NoError));
    assert!(a.authoritative());
    assert_eq!(addresses(&a), [acme_ip]);
    let t = tcp(acme_tcp, &query(2, web, RecordType::A)).await;
    assert_eq!(addresses(&t), [acme_ip]);
    let b = udp(beta_udp, &query(3, web, RecordType::A)).await.unwrap();
    assert_eq!(b.response_code(), ResponseCode::NoError);
    assert_eq!(b.answers().len(), 1, "beta's own web");
    // acme's headless Service is NXDOMAIN to beta, its endpoint to acme.
    let db = "db.prod.svc.cluster.local.";
    let b = udp(beta_udp, &query(4, db, RecordType::A)).await.unwrap();
    assert_eq!(b.response_code(), ResponseCode::NXDomain);
    let a = udp(acme_udp, &query(5, db, RecordType::A)).await.unwrap();
    assert_eq!(addresses(&a), [Ipv4Addr::new(10, 0, 0, 7)]);
    // Outside the cluster domain: refused, not recursed.
    let r = udp(acme_udp, &query(6, "example.com.", RecordType::A))
        .await
        .unwrap();
    assert_eq!(r.response_code(), ResponseCode::Refused);
    // A deleted Service leaves the zone.
    admin
        .api::<Service>()
        .delete("/registry/services/acme/prod/web", None)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let a = udp(acme_udp, &query(7, web, RecordType::A)).await.unwrap();
        if a.response_code() == ResponseCode::NXDomain {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Garbage and truncated queries: an error or no answer, and the server goes on.
    let good = query(8, db, RecordType::A);
    for junk in [&b"\x00"[..], &[0xffu8; 64][..], &good[..good.len() - 3]] {
        if let Some(m) = udp(acme_udp, junk).await {
            assert_ne!(m.response_code(), ResponseCode::NoError, "{m:?}");
        }
    }
    let mut two = Message::new();
    two.set_id(9)
        .add_query(Query::query(Name::from_ascii(db).unwrap(), RecordType::A))
        .add_query(Query::query(Name::from_ascii(web).unwrap(), RecordType::A));
    let m = udp(acme_udp, &two.to_vec().unwrap()).await.unwrap();
    assert_eq!(m.response_code(), ResponseCode::FormErr);
    let a = udp(acme_udp, &good).await.unwrap();
    assert_eq!(addresses(&a), [Ipv4Addr::new(10, 0, 0, 7)]);
}
