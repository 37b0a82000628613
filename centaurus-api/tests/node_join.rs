//! Nodes join with a bootstrap token: the token may only ask for a node's credentials (and
//! not for a node whose agent is alive), the certificate it gets is confined to that node
//! by the node authorizer, and an expired token opens nothing.

mod common;

use axum::body::Body;
use centaurus_api::tls::{Pki, client_cert_subject};
use centaurus_tenancy::ClientCert;
use common::Harness;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use rustls::pki_types::{CertificateDer, pem::PemObject};
use serde_json::{Value, json};
use tower::ServiceExt;

async fn bootstrap_token(h: &Harness, body: Value) -> (StatusCode, Value) {
    let r = h
        .call(
            Method::POST,
            "/api/v1/tenants/system/token",
            Some(&h.system),
            Some(body),
        )
        .await;
    (r.status, r.body)
}

fn csr() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    rcgen::CertificateParams::new(vec!["forged.example".to_owned()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
}

/// A request with the verified client certificate `cert` (as the TLS layer passes it).
async fn with_cert(h: &Harness, method: Method, path: &str, cert: &ClientCert) -> StatusCode {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap();
    req.extensions_mut().insert(cert.clone());
    let res = h.app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let _ = res.into_body().collect().await;
    status
}

#[tokio::test]
async fn a_bootstrap_token_joins_nodes_and_does_nothing_else() {
    let h = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    assert!(h.api.set_pki(Pki::load_or_create(dir.path(), &[]).unwrap()));
    let tenant = h.tenant("acme").await;

    // Only the system tenant has bootstrap tokens, for at most a week.
    let r = h
        .call(
            Method::POST,
            "/api/v1/tenants/acme/token",
            Some(&h.system),
            Some(json!({"bootstrap": true})),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let (code, body) = bootstrap_token(&h, json!({"bootstrap": true, "ttlSeconds": 999_999})).await;
    assert_eq!(code, 422, "{body}");
    // A tenant cannot make one.
    let r = h
        .call(
            Method::POST,
            "/api/v1/tenants/system/token",
            Some(&tenant),
            Some(json!({"bootstrap": true})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);

    let (code, body) = bootstrap_token(&h, json!({"bootstrap": true, "ttlSeconds": 600})).await;
    assert_eq!(code, 201, "{body}");
    assert!(
        body["user"]
            .as_str()
            .unwrap()
            .starts_with("system:bootstrap:")
    );
    let token = body["token"].as_str().unwrap().to_owned();

    // Nothing but joining.
    for (method, path) in [
        (Method::GET, "/api/v1/nodes"),
        (Method::GET, "/api/v1/tenants/all/pods"),
        (Method::GET, "/api/v1/tenants"),
        (Method::POST, "/api/v1/tenants/system/token"),
        (Method::GET, "/metrics"),
    ] {
        let r = h
            .call(method.clone(), path, Some(&token), Some(json!({})))
            .await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
    }
    // Bad requests are refused clearly.
    for body in [
        json!({}),
        json!({"csr": "not a request"}),
        json!({"csr": 7}),
    ] {
        let r = h
            .call(
                Method::POST,
                "/api/v1/nodes/n1/join",
                Some(&token),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
    }
    let r = h
        .call(
            Method::POST,
            "/api/v1/nodes/Not_A_Name/join",
            Some(&token),
            Some(json!({"csr": csr()})),
        )
        .await;
    assert!(r.status.is_client_error(), "{}", r.body);

    // A join: the certificate names the node, whatever the request asked for.
    let r = h
        .call(
            Method::POST,
            "/api/v1/nodes/n1/join",
            Some(&token),
            Some(json!({"csr": csr()})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let pem = r.body["certificate"].as_str().unwrap();
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let subject = client_cert_subject(&der).unwrap();
    assert_eq!(subject.common_name, "system:node:n1");
    assert_eq!(subject.organizations, vec!["tenant:system".to_owned()]);

    // That certificate is node n1: its own Node, nothing of any tenant, no other node.
    assert_eq!(
        with_cert(&h, Method::GET, "/api/v1/nodes/n1", &subject).await,
        404
    );
    for path in [
        "/api/v1/tenants/all/pods",
        "/api/v1/tenants/acme/namespaces/default/pods",
        "/api/v1/tenants",
        "/metrics",
    ] {
        assert_eq!(
            with_cert(&h, Method::GET, path, &subject).await,
            403,
            "{path}"
        );
    }
    assert_eq!(
        with_cert(&h, Method::POST, "/api/v1/nodes/n2/join", &subject).await,
        403
    );

    // A node whose agent is alive cannot be taken over with a bootstrap token.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "n1", "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40, "renewTime": now},
    });
    let r = h
        .call(
            Method::POST,
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            Some(&h.system),
            Some(lease),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = h
        .call(
            Method::POST,
            "/api/v1/nodes/n1/join",
            Some(&token),
            Some(json!({"csr": csr()})),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);

    // An expired token opens nothing.
    let (code, body) = bootstrap_token(&h, json!({"bootstrap": true, "ttlSeconds": 1})).await;
    assert_eq!(code, 201, "{body}");
    let short = body["token"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = h
        .call(
            Method::POST,
            "/api/v1/nodes/n3/join",
            Some(&short),
            Some(json!({"csr": csr()})),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
}

#[tokio::test]
async fn a_server_without_the_ca_signs_nothing() {
    let h = Harness::new().await;
    let (_, body) = bootstrap_token(&h, json!({"bootstrap": true})).await;
    let token = body["token"].as_str().unwrap();
    let r = h
        .call(
            Method::POST,
            "/api/v1/nodes/n1/join",
            Some(token),
            Some(json!({"csr": csr()})),
        )
        .await;
    assert_eq!(r.status, 405, "{}", r.body);
}
