//! Discovery (`/version`, `/api`, `/apis`, resource lists) and OpenAPI v3, built from the
//! registry so that kubectl finds every kind and its field-validation support.

use std::collections::BTreeMap;

use centaurus_core::model::{Registry, ResourceInfo, Scope};
use serde_json::{Value, json};

pub use centaurus_core::model::KUBERNETES_MINOR;

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
    if crate::resource_metrics::discovery(registry).is_some() {
        groups.insert(
            crate::resource_metrics::GROUP.to_owned(),
            vec![crate::resource_metrics::VERSION.to_owned()],
        );
    }
    for k in registry.served().filter(|k| !k.group.is_empty()) {
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
        .served()
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
            "categories": if matches!(k.plural, "pods" | "deployments" | "replicasets" | "daemonsets" | "statefulsets" | "jobs" | "cronjobs") { vec!["all"] } else { vec![] },
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

/// The content type of aggregated discovery answers.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// One group version's resources as aggregated discovery lists them: subresources under
/// their resource.
fn aggregated_version(list: &Value, group: &str, version: &str) -> Value {
    let mut resources: Vec<Value> = Vec::new();
    let entries = list["resources"].as_array().cloned().unwrap_or_default();
    for r in entries
        .iter()
        .filter(|r| !r["name"].as_str().unwrap_or("").contains('/'))
    {
        let name = r["name"].as_str().unwrap_or("");
        let subresources: Vec<Value> = entries
            .iter()
            .filter_map(|s| {
                let sub = s["name"].as_str()?.strip_prefix(name)?.strip_prefix('/')?;
                Some(json!({"subresource": sub, "verbs": s["verbs"],
                    "responseKind": {"group": s.get("group").and_then(Value::as_str).unwrap_or(group),
                        "version": s.get("version").and_then(Value::as_str).unwrap_or(version),
                        "kind": s["kind"]}}))
            })
            .collect();
        let mut entry = json!({
            "resource": name,
            "responseKind": {"group": group, "version": version, "kind": r["kind"]},
            "scope": if r["namespaced"] == true { "Namespaced" } else { "Cluster" },
            "singularResource": r["singularName"],
            "verbs": r["verbs"],
        });
        for key in ["shortNames", "categories"] {
            if r[key].as_array().is_some_and(|a| !a.is_empty()) {
                entry[key] = r[key].clone();
            }
        }
        if !subresources.is_empty() {
            entry["subresources"] = json!(subresources);
        }
        resources.push(entry);
    }
    json!({"version": version, "resources": resources, "freshness": "Current"})
}

/// `/api` (`core`) or `/apis` as aggregated discovery (`apidiscovery.k8s.io/v2`).
pub fn aggregated(registry: &Registry, core: bool) -> Value {
    let mut items = Vec::new();
    if core {
        if let Some(list) = resources(registry, "", "v1") {
            items.push(json!({"metadata": {"name": ""}, "versions": [aggregated_version(&list, "", "v1")]}));
        }
    } else {
        for (g, versions) in group_versions(registry) {
            let versions: Vec<Value> = versions
                .iter()
                .filter_map(|v| {
                    let list = if g == crate::resource_metrics::GROUP {
                        crate::resource_metrics::discovery(registry)
                    } else {
                        resources(registry, &g, v)
                    }?;
                    Some(aggregated_version(&list, &g, v))
                })
                .collect();
            items.push(json!({"metadata": {"name": g}, "versions": versions}));
        }
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {}, "items": items})
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
        // Aggregated: subresources under their resource, every group in one document.
        let core = aggregated(&r, true);
        let pods = core["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["resource"] == "pods")
            .unwrap()
            .clone();
        assert_eq!(pods["scope"], "Namespaced");
        assert!(pods["subresources"].to_string().contains("\"exec\""));
        let groups = aggregated(&r, false);
        assert!(
            groups["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["metadata"]["name"] == "metrics.k8s.io")
        );
    }
}
