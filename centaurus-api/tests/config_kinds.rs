//! ConfigMaps and Secrets through the API: `stringData` is merged and never stored, values
//! are sealed in the store, immutable objects and Secret types refuse changes (422 naming
//! the field), and malformed values get 400 without touching what is stored.

mod common;

use common::Harness;
use http::Method;
use serde_json::json;

const SECRETS: &str = "/api/v1/namespaces/default/secrets";
const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test]
async fn secrets_merge_string_data_and_are_sealed_at_rest() {
    let h = Harness::new().await;
    let t = h.tenant("acme").await;
    let r = h
        .call(
            Method::POST,
            SECRETS,
            Some(&t),
            Some(json!({
                "metadata": {"name": "db"},
                "data": {"user": "YWRtaW4="},
                "stringData": {"password": "plain-value-1"},
            })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["type"], "Opaque");
    assert_eq!(r.body["data"]["password"], "cGxhaW4tdmFsdWUtMQ==");
    assert!(r.body.get("stringData").is_none(), "{}", r.body);
    let got = h
        .call(Method::GET, &format!("{SECRETS}/db"), Some(&t), None)
        .await;
    assert_eq!(got.body["data"], r.body["data"]);

    let raw = h
        .store
        .get("/registry/secrets/acme/default/db")
        .await
        .unwrap()
        .unwrap();
    assert!(raw.value.starts_with(b"k8s:enc:aesgcm:v1:"));
    for clear in [&b"plain-value-1"[..], b"cGxhaW4tdmFsdWUtMQ==", b"YWRtaW4="] {
        assert!(!raw.value.windows(clear.len()).any(|w| w == clear));
    }
    // A sealed value copied under another key does not open there.
    h.store
        .create("/registry/secrets/acme/default/copy", raw.value.clone())
        .await
        .unwrap();
    let copy = h
        .call(Method::GET, &format!("{SECRETS}/copy"), Some(&t), None)
        .await;
    assert_eq!(copy.status, 500, "{}", copy.body);
    assert!(!copy.body.to_string().contains("plain-value"));
}

#[tokio::test]
async fn immutable_objects_and_secret_types_refuse_changes() {
    let h = Harness::new().await;
    let t = h.tenant("acme").await;
    let merge = |path: String, body: serde_json::Value| {
        let (h, t) = (&h, &t);
        async move {
            h.raw(
                Method::PATCH,
                &path,
                Some(t),
                "application/merge-patch+json",
                body.to_string(),
            )
            .await
        }
    };
    let r = h
        .call(
            Method::POST,
            CONFIGMAPS,
            Some(&t),
            Some(json!({"metadata": {"name": "c"}, "data": {"k": "v"}, "immutable": true})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = merge(format!("{CONFIGMAPS}/c"), json!({"data": {"k": "w"}})).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body["message"].as_str().unwrap().contains("data"),
        "{}",
        r.body
    );
    let r = merge(format!("{CONFIGMAPS}/c"), json!({"immutable": false})).await;
    assert_eq!(r.status, 422, "{}", r.body);
    // Metadata may still change.
    let r = merge(
        format!("{CONFIGMAPS}/c"),
        json!({"metadata": {"labels": {"a": "b"}}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let r = h
        .call(
            Method::POST,
            SECRETS,
            Some(&t),
            Some(json!({"metadata": {"name": "s"}, "data": {"k": "dg=="}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = merge(
        format!("{SECRETS}/s"),
        json!({"type": "kubernetes.io/basic-auth", "data": {"username": "dQ=="}}),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body["message"].as_str().unwrap().contains("type"),
        "{}",
        r.body
    );
    let r = merge(format!("{SECRETS}/s"), json!({"data": {"k": "dw=="}})).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn malformed_configuration_is_refused_and_loses_nothing() {
    let h = Harness::new().await;
    let t = h.tenant("acme").await;
    let cases = [
        (
            SECRETS,
            json!({"metadata": {"name": "a"}, "data": {"k": "not base64!"}}),
            400,
        ),
        (
            SECRETS,
            json!({"metadata": {"name": "a"}, "data": {"bad/key": "dg=="}}),
            422,
        ),
        (
            SECRETS,
            json!({"metadata": {"name": "a"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "dg=="}}),
            422,
        ),
        (
            CONFIGMAPS,
            json!({"metadata": {"name": "a"}, "data": {"k": "v"}, "binaryData": {"k": "dg=="}}),
            422,
        ),
        (
            CONFIGMAPS,
            json!({"metadata": {"name": "a"}, "data": {"k": "x".repeat(1 << 20)}}),
            422,
        ),
    ];
    for (path, body, status) in cases {
        let r = h
            .call(Method::POST, path, Some(&t), Some(body.clone()))
            .await;
        assert_eq!(r.status, status, "{body:.120}: {}", r.body);
    }
    for kind in ["secrets", "configmaps"] {
        let stored = h
            .store
            .range(&format!("/registry/{kind}/"), Default::default())
            .await
            .unwrap();
        assert!(stored.kvs.is_empty(), "a refused {kind} was stored");
    }
}
