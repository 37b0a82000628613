//! Property: whatever users of several tenants do to pods, ConfigMaps, Secrets, Events, Jobs,
//! Roles and RoleBindings, through
//! short paths or tenant paths, no answer to a user outside `system` ever contains another
//! tenant's object or Secret value, every request for another tenant's space is refused,
//! and every Secret is sealed in the store.

mod common;

use common::{Harness, pod};
use http::Method;
use proptest::prelude::*;
use serde_json::{Value, json};

const TENANTS: [&str; 3] = ["acme", "beta", "gamma"];
/// The kinds the operations act on: the root of their group's paths, and their plural.
const KINDS: [(&str, &str); 7] = [
    ("/api/v1", "pods"),
    ("/api/v1", "configmaps"),
    ("/api/v1", "secrets"),
    ("/api/v1", "events"),
    ("/apis/batch/v1", "jobs"),
    ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
];

/// An object of `KINDS[kind]` named `name`, created by `tenant`: its values (but a pod's)
/// name the tenant, so a leak shows in any answer.
fn object_body(kind: usize, name: &str, tenant: &str) -> Value {
    match KINDS[kind].1 {
        "pods" => pod(name),
        "configmaps" => {
            json!({"metadata": {"name": name}, "data": {"owner": format!("cm-of-{tenant}")}})
        }
        "events" => json!({
            "metadata": {"name": name},
            "involvedObject": {"kind": "Pod", "name": name},
            "reason": "Tested",
            "message": format!("ev-of-{tenant}"),
        }),
        "jobs" => json!({"metadata": {"name": name}, "spec": {"template": {
            "metadata": {"annotations": {"owner": format!("job-of-{tenant}")}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]},
        }}}),
        "roles" => json!({"metadata": {"name": name}, "rules": [{"verbs": ["get"],
            "apiGroups": [""], "resources": ["pods"], "resourceNames": [format!("rn-of-{tenant}")]}]}),
        "rolebindings" => json!({"metadata": {"name": name},
            "subjects": [{"kind": "User", "name": format!("sub-of-{tenant}")}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "p0"}}),
        _ => {
            json!({"metadata": {"name": name}, "stringData": {"password": format!("pw-of-{tenant}")}})
        }
    }
}

/// Values of other tenants' objects than `caller`'s, as an answer would carry them
/// (Secrets' in base64).
fn foreign_values(caller: &str) -> Vec<String> {
    use base64::Engine as _;
    TENANTS
        .iter()
        .filter(|t| **t != caller)
        .flat_map(|t| {
            [
                format!("cm-of-{t}"),
                format!("ev-of-{t}"),
                format!("job-of-{t}"),
                format!("rn-of-{t}"),
                format!("sub-of-{t}"),
                base64::engine::general_purpose::STANDARD.encode(format!("pw-of-{t}")),
            ]
        })
        .collect()
}

#[derive(Clone, Debug)]
enum Path {
    /// `/api/v1/namespaces/{ns}/…`: the caller's tenant.
    Short,
    /// `/api/v1/tenants/{t}/namespaces/{ns}/…`.
    Tenant(usize),
    /// `/api/v1/tenants/all/…`.
    All,
}

#[derive(Clone, Debug)]
enum Op {
    Create { ns: usize, name: usize },
    Get { ns: usize, name: usize },
    List { all_namespaces: bool },
    Label { ns: usize, name: usize },
    Delete { ns: usize, name: usize },
    Watch,
}

fn op() -> impl Strategy<Value = (usize, Path, usize, Op)> {
    (0..3usize, path_op(), 0..KINDS.len())
        .prop_map(|(user, (path, op), kind)| (user, path, kind, op))
}

fn path_op() -> impl Strategy<Value = (Path, Op)> {
    let path = prop_oneof![
        Just(Path::Short),
        (0..3usize).prop_map(Path::Tenant),
        Just(Path::All)
    ];
    let op = prop_oneof![
        (0..2usize, 0..3usize).prop_map(|(ns, name)| Op::Create { ns, name }),
        (0..2usize, 0..3usize).prop_map(|(ns, name)| Op::Get { ns, name }),
        any::<bool>().prop_map(|all_namespaces| Op::List { all_namespaces }),
        (0..2usize, 0..3usize).prop_map(|(ns, name)| Op::Label { ns, name }),
        (0..2usize, 0..3usize).prop_map(|(ns, name)| Op::Delete { ns, name }),
        Just(Op::Watch),
    ];
    (path, op)
}

/// Every `metadata.tenant` in a JSON answer.
fn tenants_in(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(t) = m
                .get("metadata")
                .and_then(|md| md.get("tenant"))
                .and_then(Value::as_str)
            {
                out.push(t.to_owned());
            }
            m.values().for_each(|x| tenants_in(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| tenants_in(x, out)),
        _ => {}
    }
}

async fn run(ops: Vec<(usize, Path, usize, Op)>) -> Result<(), TestCaseError> {
    let h = Harness::new().await;
    let mut tokens = Vec::new();
    for t in TENANTS {
        let token = h.tenant(t).await;
        for ns in ["ns0", "ns1"] {
            let r = h
                .call(
                    Method::POST,
                    "/api/v1/namespaces",
                    Some(&token),
                    Some(json!({"metadata": {"name": ns}})),
                )
                .await;
            prop_assert_eq!(r.status, 201);
        }
        tokens.push(token);
    }
    for (user, path, kind, op) in ops {
        let (root, plural) = KINDS[kind];
        let caller = TENANTS[user];
        let token = &tokens[user];
        let (prefix, foreign) = match &path {
            Path::Short => (root.to_owned(), false),
            Path::Tenant(t) => (
                format!("{root}/tenants/{}", TENANTS[*t]),
                TENANTS[*t] != caller,
            ),
            Path::All => (format!("{root}/tenants/all"), true),
        };
        let object =
            |ns: usize, name: usize| format!("{prefix}/namespaces/ns{ns}/{plural}/p{name}");
        let creates = matches!(op, Op::Create { .. });
        let reply = match op {
            Op::Create { ns, name } => {
                h.call(
                    Method::POST,
                    &format!("{prefix}/namespaces/ns{ns}/{plural}"),
                    Some(token),
                    Some(object_body(kind, &format!("p{name}"), caller)),
                )
                .await
            }
            Op::Get { ns, name } => {
                h.call(Method::GET, &object(ns, name), Some(token), None)
                    .await
            }
            Op::List { all_namespaces } => {
                let p = if all_namespaces {
                    format!("{prefix}/{plural}")
                } else {
                    format!("{prefix}/namespaces/ns0/{plural}")
                };
                h.call(Method::GET, &p, Some(token), None).await
            }
            Op::Label { ns, name } => {
                h.raw(
                    Method::PATCH,
                    &object(ns, name),
                    Some(token),
                    "application/merge-patch+json",
                    format!(r#"{{"metadata":{{"labels":{{"by":"{caller}"}}}}}}"#),
                )
                .await
            }
            Op::Delete { ns, name } => {
                h.call(Method::DELETE, &object(ns, name), Some(token), None)
                    .await
            }
            Op::Watch => {
                h.watch_briefly(&format!("{prefix}/{plural}?watch=true"), token)
                    .await
            }
        };
        if creates && !foreign {
            prop_assert!(
                reply.status == 201 || reply.status == 409,
                "{caller} could not create {plural} in its own space: {} {}",
                reply.status,
                reply.body
            );
        }
        if foreign {
            prop_assert!(
                reply.status == 403 || reply.status == 400,
                "{caller} reached {path:?}: {} {}",
                reply.status,
                reply.body
            );
        }
        let mut seen = Vec::new();
        tenants_in(&reply.body, &mut seen);
        prop_assert!(
            seen.iter().all(|t| t == caller),
            "{caller} saw objects of {seen:?}: {}",
            reply.body
        );
        let text = reply.body.to_string();
        for value in foreign_values(caller) {
            prop_assert!(!text.contains(&value), "{caller} saw {value}: {text}");
        }
    }
    // The store agrees: each object sits under its own tenant's key, and Secrets are sealed.
    let mut kvs = Vec::new();
    for plural in [
        "pods",
        "configmaps",
        "events",
        "jobs",
        "roles",
        "rolebindings",
    ] {
        let all = h
            .store
            .range(&format!("/registry/{plural}/"), Default::default())
            .await
            .unwrap();
        kvs.extend(all.kvs);
    }
    let secrets = h
        .store
        .range("/registry/secrets/", Default::default())
        .await
        .unwrap();
    for kv in &secrets.kvs {
        prop_assert!(
            kv.value.starts_with(b"k8s:enc:aesgcm:v1:"),
            "{} is not sealed",
            kv.key
        );
    }
    for kv in kvs {
        let v: Value = serde_json::from_slice(&kv.value).unwrap();
        let t = v["metadata"]["tenant"].as_str().unwrap();
        prop_assert!(
            kv.key.starts_with("/registry/") && kv.key.split('/').nth(3) == Some(t),
            "{} holds tenant {t}",
            kv.key
        );
        prop_assert!(
            v["metadata"]["labels"]["by"]
                .as_str()
                .is_none_or(|by| by == t),
            "{} was labelled by another tenant",
            kv.key
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn no_tenant_sees_or_touches_another(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops))?;
    }
}
