//! The API server's link to node agents: logs fetched over HTTPS from the endpoint a Node
//! publishes, accepted only with the certificate it publishes; exec sessions and port
//! forwards carried over WebSockets to it, refusals with the agent's reason.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use centaurus_api::PodStreams;
use centaurus_api::StreamError;
use centaurus_api::agent_link::{AgentEndpoint, AgentLink, NodePods};
use centaurus_api::streams::{Conn, Session, StreamRequest, channel, frame, outcome};
use centaurus_api::tls::Pki;
use centaurus_core::model::{self, Node, NodeStatus, ObjectMeta, Pod, Resource};
use centaurus_core::store::{RedbStore, Store};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

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

    /// Echoes standard input upper-cased until it closes, then exits with the number
    /// of lines of the command.
    async fn exec(
        &self,
        _: &str,
        _: &str,
        name: &str,
        request: &StreamRequest,
    ) -> Result<Session, StreamError> {
        if request.container.as_deref() == Some("missing") {
            return Err(StreamError::BadRequest(format!(
                "no container missing in {name}"
            )));
        }
        let (session, mut input, output) = Session::pair();
        let code = request.command.len() as i32;
        tokio::spawn(async move {
            while let Some(f) = input.recv().await {
                match f[0] {
                    channel::STDIN => {
                        let up = f[1..].to_ascii_uppercase();
                        let _ = output.send(frame(channel::STDOUT, &up)).await;
                    }
                    channel::CLOSE => break,
                    _ => {}
                }
            }
            let _ = output.send(outcome(Ok(code))).await;
        });
        Ok(session)
    }

    /// A connection that echoes, on port 7 only.
    async fn port_forward(
        &self,
        _: &str,
        _: &str,
        _: &str,
        port: u16,
    ) -> Result<Conn, StreamError> {
        if port != 7 {
            return Err(StreamError::BadRequest(format!(
                "nothing listens on port {port}"
            )));
        }
        let (ours, theirs) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(theirs);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
        Ok(Box::pin(ours))
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
async fn sessions_and_port_forwards_go_over_websockets_to_the_agent() {
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
    publish(&*store, "n1", Some(endpoint.published())).await;
    tokio::spawn(endpoint.serve(Arc::new(Canned), std::future::pending()));
    let link = AgentLink::new(store, &pki).unwrap();
    let request = StreamRequest {
        command: vec!["tr".into(), "a-z".into(), "A-Z".into()],
        stdin: true,
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let mut s = link.exec(&pod_on("n1"), &request).await.unwrap();
    s.input.send(frame(channel::STDIN, b"shout")).await.unwrap();
    s.input
        .send(frame(channel::CLOSE, &[channel::STDIN]))
        .await
        .unwrap();
    let mut frames = Vec::new();
    while let Some(f) = s.output.recv().await {
        frames.push(f);
    }
    assert_eq!(frames[0], frame(channel::STDOUT, b"SHOUT"));
    let end: serde_json::Value = serde_json::from_slice(&frames[1][1..]).unwrap();
    assert_eq!(end["details"]["causes"][0]["message"], "3", "{end}");
    assert_eq!(frames.len(), 2);
    // The agent's refusal arrives with its reason.
    let missing = StreamRequest {
        container: Some("missing".into()),
        ..request
    };
    match link.exec(&pod_on("n1"), &missing).await {
        Err(StreamError::BadRequest(m)) => assert!(m.contains("no container missing"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a session with a missing container"),
    }
    // A port forward's bytes, both ways.
    let mut conn = link.port_forward(&pod_on("n1"), 7).await.unwrap();
    conn.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    conn.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");
    match link.port_forward(&pod_on("n1"), 8).await {
        Err(StreamError::BadRequest(m)) => assert!(m.contains("port 8"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a connection to a closed port"),
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
