//! What stock clients ran into: refused HTTP/1.1 bodies answered with a reset, deletes that
//! lost a race to a controller, `/version/`, and wrongly typed fields answered as invalid
//! rather than undecodable.

mod common;

use std::sync::Arc;
use std::time::Duration;

use centaurus_api::tls::Pki;
use common::Harness;
use http::Method;
use rustls::pki_types::{CertificateDer, pem::PemObject};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves the harness's application over TLS on a free port; returns the port and a
/// client configuration that trusts its CA.
async fn serve_tls(h: &Harness, dir: &std::path::Path) -> (u16, Arc<rustls::ClientConfig>) {
    let pki = Pki::load_or_create(dir, &["localhost".into()]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(centaurus_api::tls::serve(
        listener,
        Arc::new(pki.server_config().unwrap()),
        h.app.clone(),
        std::future::pending(),
    ));
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(dir.join("pki/ca.crt")).unwrap();
    for cert in CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    (port, Arc::new(config))
}

/// Sends `requests` (each a head and a body) on one HTTP/1.1 connection, writing every
/// byte of a request before reading its answer, as simple clients do; returns each
/// answer's status line and body, or the I/O error that ended the connection.
async fn http1(
    port: u16,
    config: Arc<rustls::ClientConfig>,
    requests: &[(String, Vec<u8>)],
) -> Vec<Result<(String, String), String>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    let mut answers = Vec::new();
    for (head, body) in requests {
        let sent = async {
            tls.write_all(head.as_bytes()).await?;
            tls.write_all(body).await?;
            tls.flush().await
        }
        .await;
        if let Err(e) = sent {
            answers.push(Err(format!("sending: {e}")));
            break;
        }
        match read_answer(&mut tls).await {
            Ok(a) => answers.push(Ok(a)),
            Err(e) => {
                answers.push(Err(format!("reading: {e}")));
                break;
            }
        }
    }
    answers
}

/// Reads one HTTP/1.1 answer with a `content-length`.
async fn read_answer(tls: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<(String, String)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if tls.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    tls.read_exact(&mut body).await?;
    let status = head.lines().next().unwrap_or("").to_owned();
    Ok((status, String::from_utf8_lossy(&body).to_string()))
}

fn post(path: &str, token: Option<&str>, body: &[u8]) -> (String, Vec<u8>) {
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    (
        format!(
            "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n{auth}content-length: {}\r\n\r\n",
            body.len()
        ),
        body.to_vec(),
    )
}

#[tokio::test]
async fn refused_http1_bodies_get_their_answer_and_keep_the_connection() {
    let h = Harness::new().await;
    let acme = h.tenant("acme").await;
    let dir = tempfile::tempdir().unwrap();
    let (port, config) = serve_tls(&h, dir.path()).await;
    let pods = "/api/v1/namespaces/default/pods";
    let big = vec![b'a'; 600 << 10];
    let huge = vec![b'a'; 5 << 20];
    let answers = http1(
        port,
        config.clone(),
        &[
            // Refused before the body is read: no credentials, another tenant's space,
            // no such resource, too large; then an ordinary request on the same connection.
            post(pods, None, &big),
            post(
                "/api/v1/tenants/other/namespaces/default/pods",
                Some(&acme),
                &big,
            ),
            post("/api/v1/namespaces/default/nosuch", Some(&acme), &big),
            post(pods, Some(&acme), &huge),
            post(
                pods,
                Some(&acme),
                &serde_json::to_vec(&common::pod("web")).unwrap(),
            ),
        ],
    )
    .await;
    let statuses: Vec<String> = answers
        .iter()
        .map(|a| match a {
            Ok((status, _)) => status.split(' ').nth(1).unwrap_or("").to_owned(),
            Err(e) => e.clone(),
        })
        .collect();
    assert_eq!(statuses, ["401", "403", "404", "413", "201"], "{answers:?}");
    for (status, body) in answers.iter().flatten().take(4) {
        let status_obj: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{status}: body {body:?} is not a Status: {e}"));
        assert_eq!(status_obj["kind"], "Status", "{status}");
    }
}

#[tokio::test]
async fn a_delete_without_preconditions_wins_over_concurrent_writes() {
    let h = Harness::new().await;
    let acme = h.tenant("acme").await;
    let pods = "/api/v1/namespaces/default/pods";
    for round in 0..10 {
        let name = format!("p{round}");
        let r = h
            .call(Method::POST, pods, Some(&acme), Some(common::pod(&name)))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        // A controller keeps writing the pod while the user deletes it.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (app, stop, path, token) = (
                h.app.clone(),
                stop.clone(),
                format!("{pods}/{name}"),
                acme.clone(),
            );
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let req = http::Request::patch(&path)
                        .header("authorization", format!("Bearer {token}"))
                        .header("content-type", "application/merge-patch+json")
                        .body(axum::body::Body::from(
                            json!({"metadata": {"labels": {"n": n.to_string()}}}).to_string(),
                        ))
                        .unwrap();
                    let _ = tower::ServiceExt::oneshot(app.clone(), req).await;
                    n += 1;
                    tokio::task::yield_now().await;
                }
                n
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let r = h
            .call(Method::DELETE, &format!("{pods}/{name}"), Some(&acme), None)
            .await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let writes = writer.await.unwrap();
        assert_eq!(r.status, 200, "round {round} ({writes} writes): {}", r.body);
        // A stale resourceVersion precondition is still the caller's conflict.
        let r = h
            .call(Method::POST, pods, Some(&acme), Some(common::pod(&name)))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        let r = h
            .raw(
                Method::DELETE,
                &format!("{pods}/{name}"),
                Some(&acme),
                "application/json",
                json!({"preconditions": {"resourceVersion": "1"}}).to_string(),
            )
            .await;
        assert_eq!(r.status, 409, "{}", r.body);
    }
}

#[tokio::test]
async fn version_with_a_trailing_slash_and_wrongly_typed_fields() {
    let h = Harness::new().await;
    let acme = h.tenant("acme").await;
    for path in ["/version", "/version/"] {
        let r = h.call(Method::GET, path, Some(&acme), None).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(r.body["major"], "1", "{path}");
    }
    let mut deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "replicas": "two",
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}},
                         "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
        }
    });
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    let r = h
        .call(
            Method::POST,
            deployments,
            Some(&acme),
            Some(deployment.clone()),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let message = r.body["message"].as_str().unwrap();
    assert!(
        message.contains("cannot be handled as a Deployment") && message.contains("spec.replicas"),
        "{message}"
    );
    // A body that decodes but breaks a rule stays 422.
    deployment["spec"]["replicas"] = json!(-1);
    let r = h
        .call(Method::POST, deployments, Some(&acme), Some(deployment))
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    // A DeleteOptions body that does not decode is refused, and the object stays.
    let r = h
        .call(
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(&acme),
            Some(common::pod("keep")),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = h
        .raw(
            Method::DELETE,
            "/api/v1/namespaces/default/pods/keep",
            Some(&acme),
            "application/json",
            "{not json",
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = h
        .call(
            Method::GET,
            "/api/v1/namespaces/default/pods/keep",
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Protobuf DeleteOptions, as typed Go clients send them, delete.
    let r = h
        .raw(
            Method::DELETE,
            "/api/v1/namespaces/default/pods/keep",
            Some(&acme),
            "application/vnd.kubernetes.protobuf",
            &b"k8s\0\x0a\x13\x0a\x02v1\x12\x0dDeleteOptions"[..],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = h
        .call(
            Method::GET,
            "/api/v1/namespaces/default/pods/keep",
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
}
