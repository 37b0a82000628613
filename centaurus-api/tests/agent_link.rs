//! The API server's link to node agents: logs fetched over HTTPS from the endpoint a Node
//! publishes, accepted only with the certificate it publishes.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use centaurus_api::PodStreams;
use centaurus_api::StreamError;
use centaurus_api::agent_link::{AgentEndpoint, AgentLink, NodePods};
use centaurus_api::tls::Pki;
use centaurus_core::model::{self, Node, NodeStatus, ObjectMeta, Pod, Resource};
use centaurus_core::store::{RedbStore, Store};

struct Canned;

#[async_trait]
impl NodePods for Canned {
    async fn logs(
        &self,
        tenant: &str,
        namespace: &str,
        name: &str,
        container: Option<&str>,
    ) -> Result<Vec<u8>, StreamError> {
        match container {
            Some("missing") => Err(StreamError::BadRequest("container missing in pod".into())),
            _ => Ok(format!("{tenant}/{namespace}/{name}/{container:?}\n").into_bytes()),
        }
    }
}

fn pod_on(node: &str) -> Pod {
    let mut pod = Pod::typed(ObjectMeta::namespaced("acme", "default", "web"));
    pod.spec.node_name = node.into();
    pod
}

async fn publish(store: &dyn Store, name: &str, endpoint: Option<model::AgentEndpoint>) {
    let mut node = Node::typed(ObjectMeta::named(name));
    node.status = Some(NodeStatus {
        agent_endpoint: endpoint,
        ..Default::default()
    });
    let value = Bytes::from(serde_json::to_vec(&node).unwrap());
    store.create(&node.key(), value).await.unwrap();
}

#[tokio::test]
async fn logs_come_over_https_from_the_endpoint_the_node_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
    let endpoint = AgentEndpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1",
        pki.ca_cert.as_bytes(),
    )
    .await
    .unwrap();
    let published = endpoint.published();
    assert!(published.url.starts_with("https://127.0.0.1:"));
    tokio::spawn(endpoint.serve(Arc::new(Canned), std::future::pending()));

    publish(&*store, "n1", Some(published.clone())).await;
    // Another node names the same address with another certificate: a stand-in there
    // would not be believed.
    let mut forged = published.clone();
    forged.certificate_sha256 = "00".repeat(32);
    publish(&*store, "n2", Some(forged)).await;
    publish(&*store, "n3", None).await;

    let logs = AgentLink::new(store, &pki).unwrap();
    assert_eq!(
        logs.logs(&pod_on("n1"), None).await.unwrap(),
        b"acme/default/web/None\n"
    );
    assert_eq!(
        logs.logs(&pod_on("n1"), Some("side")).await.unwrap(),
        b"acme/default/web/Some(\"side\")\n"
    );
    match logs.logs(&pod_on("n1"), Some("missing")).await {
        Err(StreamError::BadRequest(m)) => assert!(m.contains("container missing"), "{m}"),
        other => panic!("{other:?}"),
    }
    match logs.logs(&pod_on("n2"), None).await {
        Err(StreamError::Unavailable(m)) => assert!(m.contains("TLS"), "{m}"),
        other => panic!("{other:?}"),
    }
    for node in ["n3", "gone"] {
        assert!(matches!(
            logs.logs(&pod_on(node), None).await,
            Err(StreamError::Unavailable(_))
        ));
    }
}

#[tokio::test]
async fn the_endpoint_refuses_certificates_of_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let region = Pki::load_or_create(&dir.path().join("region"), &[]).unwrap();
    let other = Pki::load_or_create(&dir.path().join("other"), &[]).unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
    let endpoint = AgentEndpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1",
        region.ca_cert.as_bytes(),
    )
    .await
    .unwrap();
    publish(&*store, "n1", Some(endpoint.published())).await;
    tokio::spawn(endpoint.serve(Arc::new(Canned), std::future::pending()));
    // An API server of another region (another CA) is refused in the handshake.
    let logs = AgentLink::new(store, &other).unwrap();
    assert!(matches!(
        logs.logs(&pod_on("n1"), None).await,
        Err(StreamError::Unavailable(_))
    ));
}
