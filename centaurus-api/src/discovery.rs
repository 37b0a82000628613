//! Discovery (`/version`, `/api`, `/apis`, resource lists) and OpenAPI v3, built from the
//! registry so that kubectl finds every kind and its field-validation support.

use std::collections::BTreeMap;

use centaurus_core::model::{Registry, ResourceInfo, Scope};
use serde_json::{Value, json};

/// The Kubernetes minor version whose API subset this server speaks to clients.
pub const KUBERNETES_MINOR: &str = "37";

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBERNETES_MINOR,
        "gitVersion": format!("v1.{KUBERNETES_MINOR}.0-centaurus.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

/// `/api`.
pub fn core_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]})
}

fn group_versions(registry: &Registry) -> BTreeMap<String, Vec<String>> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // Served beside the registry's kinds: the resource metrics of pods and nodes.
    groups.insert(
        crate::resource_metrics::GROUP.to_owned(),
        vec![crate::resource_metrics::VERSION.to_owned()],
    );
    for k in registry.kinds().filter(|k| !k.group.is_empty()) {
        let versions = groups.entry(k.group.to_owned()).or_default();
        if !versions.iter().any(|v| v == k.version) {
            versions.push(k.version.to_owned());
        }
    }
    groups
}

/// `/apis`.
pub fn groups(registry: &Registry) -> Value {
    let groups: Vec<Value> = group_versions(registry)
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`.
pub fn group(registry: &Registry, group: &str) -> Option<Value> {
    groups(registry)["groups"]
        .as_array()?
        .iter()
        .find(|g| g["name"] == group)
        .map(|g| {
            let mut g = g.clone();
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            g
        })
}

const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// `/api/v1` and `/apis/{group}/{version}`: the kinds served there. Tenant-scoped kinds
/// are not namespaced, as kubectl must see them.
pub fn resources(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let kinds: Vec<&std::sync::Arc<ResourceInfo>> = registry
        .kinds()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for k in kinds {
        list.push(json!({
            "name": k.plural, "singularName": k.singular(), "namespaced": k.scope == Scope::Namespaced,
            "kind": k.kind, "verbs": VERBS, "shortNames": k.short_names,
            "categories": if matches!(k.plural, "pods" | "deployments" | "replicasets") { vec!["all"] } else { vec![] },
        }));
        if k.has_status {
            list.push(json!({"name": format!("{}/status", k.plural), "singularName": "",
                "namespaced": k.scope == Scope::Namespaced, "kind": k.kind, "verbs": ["get", "patch", "update"]}));
        }
        if matches!(k.plural, "deployments" | "replicasets") {
            list.push(
                json!({"name": format!("{}/scale", k.plural), "singularName": "",
                "namespaced": true, "group": "autoscaling", "version": "v1", "kind": "Scale",
                "verbs": ["get", "patch", "update"]}),
            );
        }
        if k.plural == "pods" {
            list.push(
                json!({"name": "pods/log", "singularName": "", "namespaced": true,
                "kind": "Pod", "verbs": ["get"]}),
            );
            list.push(
                json!({"name": "pods/action", "singularName": "", "namespaced": true,
                "kind": "Action", "verbs": ["create"]}),
            );
            for sub in ["exec", "attach"] {
                list.push(json!({"name": format!("pods/{sub}"), "singularName": "",
                    "namespaced": true, "kind": "PodExecOptions", "verbs": ["create", "get"]}));
            }
            list.push(
                json!({"name": "pods/portforward", "singularName": "", "namespaced": true,
                "kind": "PodPortForwardOptions", "verbs": ["create", "get"]}),
            );
        }
        if k.plural == "tenants" {
            list.push(
                json!({"name": "tenants/token", "singularName": "", "namespaced": false,
                "kind": "TenantToken", "verbs": ["create"]}),
            );
        }
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
    )
}

/// The URL path (without the leading `/`) of a group version in OpenAPI v3.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: the index of group-version documents.
pub fn openapi_index(registry: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs: Vec<(String, String)> = registry
        .kinds()
        .map(|k| (k.group.to_owned(), k.version.to_owned()))
        .collect();
    gvs.sort();
    gvs.dedup();
    for (g, v) in gvs {
        let path = gv_path(&g, &v);
        let doc = openapi_document(registry, &path).expect("listed group versions have documents");
        let hash = format!(
            "{:016X}",
            centaurus_core::ring::stable_hash(doc.to_string().as_bytes())
        );
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

/// Rewrites JSON Schema references to `#/$defs/X` into OpenAPI's `#/components/schemas/{prefix}X`.
fn rewrite_refs(v: &mut Value, prefix: &str) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/$defs/")
            {
                *r = format!("#/components/schemas/{prefix}{name}");
            }
            m.remove("$schema");
            for x in m.values_mut() {
                rewrite_refs(x, prefix);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite_refs(x, prefix)),
        _ => {}
    }
}

/// `/openapi/v3/{path}`: the paths and schemas of one group version. Every write path
/// declares the `fieldValidation` parameter and its kind, so kubectl leaves validation to
/// the server.
pub fn openapi_document(registry: &Registry, gv: &str) -> Option<Value> {
    let kinds: Vec<_> = registry
        .kinds()
        .filter(|k| gv_path(k.group, k.version) == gv)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let mut schemas = serde_json::Map::new();
    let mut paths = serde_json::Map::new();
    let field_validation = json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string"},
        "description": "Strict: unknown fields are an error; Warn and Ignore drop them."});
    for k in kinds {
        let prefix = format!(
            "{}.{}.",
            if k.group.is_empty() { "core" } else { k.group },
            k.version
        );
        let mut schema = serde_json::to_value(&*k.schema).unwrap_or(json!({}));
        if let Some(defs) = schema.as_object_mut().and_then(|m| m.remove("$defs"))
            && let Value::Object(defs) = defs
        {
            for (name, mut def) in defs {
                rewrite_refs(&mut def, &prefix);
                schemas.insert(format!("{prefix}{name}"), def);
            }
        }
        rewrite_refs(&mut schema, &prefix);
        let gvk = json!({"group": k.group, "version": k.version, "kind": k.kind});
        schema["x-kubernetes-group-version-kind"] = json!([gvk.clone()]);
        let schema_name = format!("{prefix}{}", k.kind);
        schemas.insert(schema_name.clone(), schema);
        let body = json!({"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema_name}")}}}});
        let ok = json!({"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema_name}")}}}}});
        let base = match k.scope {
            Scope::Namespaced => format!("/{gv}/namespaces/{{namespace}}/{}", k.plural),
            _ => format!("/{gv}/{}", k.plural),
        };
        let op = |action: &str, with_body: bool| {
            let mut o = json!({"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": action,
                "parameters": [field_validation], "responses": ok});
            if with_body {
                o["requestBody"] = body.clone();
            }
            o
        };
        paths.insert(
            base.clone(),
            json!({"get": op("list", false), "post": op("post", true)}),
        );
        paths.insert(
            format!("{base}/{{name}}"),
            json!({"get": op("get", false), "put": op("put", true), "patch": op("patch", true), "delete": op("delete", false)}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Centaurus", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_lists_every_kind_once() {
        let r = Registry::builtin();
        let core = resources(&r, "", "v1").unwrap();
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"pods")
                && names.contains(&"pods/status")
                && names.contains(&"tenants/token")
        );
        let ns = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "namespaces")
            .unwrap();
        assert_eq!(ns["namespaced"], false);
        assert!(
            groups(&r)["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["name"] == "apps")
        );
        assert!(resources(&r, "nope", "v1").is_none());
    }

    #[test]
    fn openapi_documents_resolve_their_references() {
        let r = Registry::builtin();
        let index = openapi_index(&r);
        assert!(
            index["paths"]["apis/apps/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/apis/apps/v1?hash=")
        );
        let doc = openapi_document(&r, "api/v1").unwrap();
        let text = doc.to_string();
        assert!(!text.contains("#/$defs/"));
        for cap in text.split("#/components/schemas/").skip(1) {
            let name: String = cap.chars().take_while(|c| *c != '"').collect();
            assert!(
                doc["components"]["schemas"].get(&name).is_some(),
                "dangling reference {name}"
            );
        }
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Pod");
    }
}
