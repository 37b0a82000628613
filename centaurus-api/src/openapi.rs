//! OpenAPI v3 documents of the served kinds (`/openapi/v3` and one document per group
//! version), valid OpenAPI 3.0 that `kubectl explain` and other tools read: the kinds'
//! JSON Schemas rewritten to 3.0 (nullable instead of `null` types, references alone or
//! under `allOf`, int-or-string marked as Kubernetes marks it), list kinds of their own,
//! every path with its parameters (Kubernetes' short paths and Arktos' tenant paths),
//! the query parameters of lists, watches and writes, subresources, and every status code
//! the server answers with.

use std::collections::BTreeMap;

use centaurus_core::model::{Registry, ResourceInfo, Scope};
use serde_json::{Map, Value, json};

/// The URL path (without the leading `/`) of a group version in OpenAPI v3.
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// Every group version's document, and the index that names them by hash.
pub struct Documents {
    index: Value,
    docs: BTreeMap<String, Value>,
}

impl Documents {
    /// The documents of `registry`'s kinds (built once: the registry does not change).
    pub fn of(registry: &Registry) -> Self {
        let mut gvs: Vec<(String, String)> = registry
            .served()
            .map(|k| (k.group.to_owned(), k.version.to_owned()))
            .collect();
        gvs.sort();
        gvs.dedup();
        let mut docs = BTreeMap::new();
        let mut paths = Map::new();
        for (g, v) in gvs {
            let path = gv_path(&g, &v);
            let kinds: Vec<&ResourceInfo> = registry
                .served()
                .filter(|k| k.group == g && k.version == v)
                .map(|k| &**k)
                .collect();
            let doc = document(&path, &kinds);
            let hash = format!(
                "{:016X}",
                centaurus_core::ring::stable_hash(doc.to_string().as_bytes())
            );
            paths.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
            );
            docs.insert(path, doc);
        }
        Self {
            index: json!({"paths": paths}),
            docs,
        }
    }

    /// `/openapi/v3`.
    pub fn index(&self) -> &Value {
        &self.index
    }

    /// `/openapi/v3/{path}`.
    pub fn document(&self, path: &str) -> Option<&Value> {
        self.docs.get(path)
    }
}

/// Rewrites a JSON Schema (2020-12, as schemars writes it) into an OpenAPI 3.0 schema,
/// with references to `#/$defs/X` pointing at `#/components/schemas/{prefix}X`.
pub fn to_openapi(v: &mut Value, prefix: &str) {
    match v {
        Value::Object(m) => {
            for k in ["$schema", "$id", "$comment", "examples", "prefixItems"] {
                m.remove(k);
            }
            for x in m.values_mut() {
                to_openapi(x, prefix);
            }
            if let Some(Value::String(r)) = m.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/$defs/")
            {
                *r = format!("#/components/schemas/{prefix}{name}");
            }
            if let Some(c) = m.remove("const") {
                m.insert("enum".into(), json!([c]));
            }
            if let Some(Value::Array(_)) = m.get("items") {
                m.insert("items".into(), json!({}));
            }
            // `type: [T, "null"]`: T, nullable; several types: an int-or-string, or any.
            if let Some(Value::Array(types)) = m.get("type").cloned() {
                let nullable = types.iter().any(|t| t == "null");
                let rest: Vec<Value> = types.into_iter().filter(|t| t != "null").collect();
                m.remove("type");
                match rest.as_slice() {
                    [one] => drop(m.insert("type".into(), one.clone())),
                    many if many.len() == 2
                        && many.contains(&json!("integer"))
                        && many.contains(&json!("string")) =>
                    {
                        m.insert("x-kubernetes-int-or-string".into(), json!(true));
                    }
                    _ => {}
                }
                if nullable {
                    m.insert("nullable".into(), json!(true));
                }
            }
            // `anyOf`/`oneOf` with a null member: the rest, nullable.
            for key in ["anyOf", "oneOf"] {
                let Some(Value::Array(members)) = m.get(key).cloned() else {
                    continue;
                };
                let is_null = |s: &Value| s.get("type") == Some(&json!("null"));
                if !members.iter().any(is_null) {
                    continue;
                }
                let rest: Vec<Value> = members.into_iter().filter(|s| !is_null(s)).collect();
                m.remove(key);
                m.insert("nullable".into(), json!(true));
                match rest.len() {
                    0 => {}
                    1 => drop(m.insert("allOf".into(), Value::Array(rest))),
                    _ => drop(m.insert(key.into(), Value::Array(rest))),
                }
            }
            // An integer or a string, as Kubernetes marks IntOrString.
            if let Some(Value::Array(members)) = m.get("anyOf").or_else(|| m.get("oneOf")) {
                let types: Vec<&Value> = members.iter().filter_map(|s| s.get("type")).collect();
                if types.len() == 2
                    && types.contains(&&json!("integer"))
                    && types.contains(&&json!("string"))
                {
                    m.insert("x-kubernetes-int-or-string".into(), json!(true));
                }
            }
            // In 3.0 a reference's siblings are ignored: keep them by moving it under allOf.
            if m.contains_key("$ref") && m.len() > 1 {
                let r = m.remove("$ref").expect("checked");
                m.insert("allOf".into(), json!([{"$ref": r}]));
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| to_openapi(x, prefix)),
        _ => {}
    }
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn query(name: &str, kind: &str, description: &str) -> Value {
    let schema = if kind == "integer" {
        json!({"type": kind, "minimum": 0})
    } else {
        json!({"type": kind})
    };
    json!({"name": name, "in": "query", "schema": schema, "description": description})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"},
        "description": format!("The {name} of the object.")})
}

/// Query parameters of lists and watches.
fn list_params() -> Vec<Value> {
    vec![
        query(
            "labelSelector",
            "string",
            "Only objects whose labels match.",
        ),
        query(
            "fieldSelector",
            "string",
            "Only objects whose fields match (metadata.name, metadata.namespace, spec.nodeName, status.phase).",
        ),
        query(
            "limit",
            "integer",
            "At most this many objects; the answer's continue token reads on.",
        ),
        query("continue", "string", "Where an earlier page ended."),
        query(
            "resourceVersion",
            "string",
            "The revision to list at, or to watch from.",
        ),
        query("resourceVersionMatch", "string", "Exact or NotOlderThan."),
        query("watch", "boolean", "Stream changes instead of listing."),
        query("allowWatchBookmarks", "boolean", "Send BOOKMARK events."),
        query(
            "sendInitialEvents",
            "boolean",
            "Start a watch with the current objects, then a bookmark.",
        ),
        query(
            "timeoutSeconds",
            "integer",
            "End the list or watch after this long.",
        ),
        query("pretty", "string", "Indent the answer."),
    ]
}

/// Query parameters of writes.
fn write_params() -> Vec<Value> {
    vec![
        query(
            "dryRun",
            "string",
            "All: check and answer without storing anything.",
        ),
        query("fieldManager", "string", "Who makes the change."),
        query(
            "fieldValidation",
            "string",
            "Strict: unknown fields are an error; Warn and Ignore drop them.",
        ),
        query("pretty", "string", "Indent the answer."),
    ]
}

/// Query parameters of deletes.
fn delete_params() -> Vec<Value> {
    vec![
        query(
            "dryRun",
            "string",
            "All: check and answer without deleting.",
        ),
        query(
            "gracePeriodSeconds",
            "integer",
            "Seconds before the object is deleted.",
        ),
        query(
            "propagationPolicy",
            "string",
            "Orphan, Background or Foreground.",
        ),
        query(
            "orphanDependents",
            "boolean",
            "Deprecated: use propagationPolicy.",
        ),
        query("pretty", "string", "Indent the answer."),
    ]
}

/// The error answers every operation may give, as `Status` objects.
fn error_responses(codes: &[&str]) -> Map<String, Value> {
    let status = json!({"content": {"application/json": {"schema": schema_ref("Status")}}});
    codes
        .iter()
        .map(|c| {
            let mut r = status.clone();
            r["description"] = json!(match *c {
                "400" => "Bad request: a body or parameter that does not decode",
                "401" => "Unauthorized: no valid credentials",
                "403" => "Forbidden: the caller may not do this here",
                "404" => "Not found",
                "405" => "Method not allowed",
                "409" => "Conflict: a stale resourceVersion, or an object that exists",
                "410" => "Gone: the revision asked for was compacted",
                "413" => "The body is too large",
                "415" => "Unsupported media type",
                "422" => "Invalid: the object breaks its kind's rules",
                "429" => "Too many requests",
                "500" => "Internal error",
                "503" => "Unavailable: the store or a node agent did not answer",
                _ => "Error",
            });
            ((*c).to_owned(), r)
        })
        .collect()
}

const READ_ERRORS: &[&str] = &["400", "401", "403", "404", "405", "410", "500", "503"];
const WRITE_ERRORS: &[&str] = &[
    "400", "401", "403", "404", "405", "409", "413", "415", "422", "429", "500", "503",
];

fn json_body(schema: Value) -> Value {
    json!({"required": true, "content": {
        "application/json": {"schema": schema.clone()},
        "application/yaml": {"schema": schema},
    }})
}

fn answer(code: &str, description: &str, schema: Value) -> (String, Value) {
    (
        code.to_owned(),
        json!({"description": description, "content": {
            "application/json": {"schema": schema.clone()},
            "application/yaml": {"schema": schema},
        }}),
    )
}

fn operation(
    id: String,
    action: &str,
    gvk: &Value,
    params: Vec<Value>,
    body: Option<Value>,
    ok: Vec<(String, Value)>,
    errors: &[&str],
) -> Value {
    let mut responses = error_responses(errors);
    for (code, r) in ok {
        responses.insert(code, r);
    }
    let mut o = json!({"operationId": id, "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk, "parameters": params, "responses": responses});
    if let Some(b) = body {
        o["requestBody"] = b;
    }
    o
}

/// What a kind is, for `kubectl explain`, where the kind has a description of its own.
fn kind_description(k: &ResourceInfo) -> String {
    let what = match k.kind {
        "Pod" => {
            "A pod: containers, or one virtual machine, run together on one node in one network namespace."
        }
        "Node" => "A host that runs pods: container pods, VM pods, or both.",
        "Deployment" => {
            "Declarative updates of replica sets: rolling updates of container and VM pods."
        }
        "ReplicaSet" => "Keeps a number of identical pods running.",
        "StatefulSet" => "Pods with stable ordinal names, made and replaced in order.",
        "DaemonSet" => "One pod (containers or a VM) on each node that fits its template.",
        "Job" => "Pods (containers or VMs) run until a number of them have succeeded.",
        "CronJob" => "Jobs made on a schedule.",
        "Namespace" => "A namespace of a tenant's space.",
        "Tenant" => {
            "A tenant: an organization with a space of its own, which no other tenant sees."
        }
        "ConfigMap" => "Configuration data for pods.",
        "Secret" => "Data for pods that is kept sealed at rest.",
        "ServiceAccount" => "An identity for processes in pods.",
        "Event" => "Something that happened to an object.",
        "Lease" => "A lease: node heartbeats and controller membership.",
        _ => "",
    };
    if what.is_empty() {
        format!("{} ({}).", k.kind, k.api_version())
    } else {
        what.to_owned()
    }
}

/// The paths and schemas of one group version.
fn document(gv: &str, kinds: &[&ResourceInfo]) -> Value {
    let mut schemas = Map::new();
    let mut paths = Map::new();
    for k in kinds {
        let prefix = format!(
            "{}.{}.",
            if k.group.is_empty() { "core" } else { k.group },
            k.version
        );
        let mut schema = serde_json::to_value(&*k.schema).unwrap_or(json!({}));
        if let Some(Value::Object(defs)) = schema.as_object_mut().and_then(|m| m.remove("$defs")) {
            for (name, mut def) in defs {
                to_openapi(&mut def, &prefix);
                schemas.insert(format!("{prefix}{name}"), def);
            }
        }
        to_openapi(&mut schema, &prefix);
        let gvk = json!({"group": k.group, "version": k.version, "kind": k.kind});
        schema["x-kubernetes-group-version-kind"] = json!([gvk.clone()]);
        schema["description"] = json!(kind_description(k));
        schema.as_object_mut().map(|m| m.remove("title"));
        let name = format!("{prefix}{}", k.kind);
        schemas.insert(name.clone(), schema);
        let list_name = format!("{name}List");
        let list_gvk =
            json!({"group": k.group, "version": k.version, "kind": format!("{}List", k.kind)});
        schemas.insert(
            list_name.clone(),
            json!({"type": "object", "required": ["items"],
                "description": format!("A list of {}.", k.plural),
                "properties": {
                    "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                    "metadata": schema_ref("ListMeta"),
                    "items": {"type": "array", "items": schema_ref(&name)},
                },
                "x-kubernetes-group-version-kind": [list_gvk]}),
        );
        add_paths(&mut paths, gv, k, &gvk, &name, &list_name);
    }
    schemas.insert(
        "ListMeta".into(),
        json!({"type": "object", "description": "The list's revision and where a paged list reads on.",
            "properties": {"resourceVersion": {"type": "string"}, "continue": {"type": "string"},
                "remainingItemCount": {"type": "integer", "format": "int64"}}}),
    );
    schemas.insert(
        "Status".into(),
        json!({"type": "object", "description": "The outcome of a request that returns no object: why it failed.",
            "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                "metadata": {"type": "object"}, "status": {"type": "string"},
                "message": {"type": "string"}, "reason": {"type": "string"},
                "code": {"type": "integer", "format": "int32"},
                "details": {"type": "object", "properties": {
                    "name": {"type": "string"}, "kind": {"type": "string"},
                    "causes": {"type": "array", "items": {"type": "object", "properties": {
                        "reason": {"type": "string"}, "message": {"type": "string"},
                        "field": {"type": "string"}}}}}}},
            "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "Status"}]}),
    );
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Centaurus", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"BearerToken": {"type": "apiKey", "in": "header", "name": "authorization",
                "description": "A bearer token: Authorization: Bearer TOKEN"}},
        },
        "security": [{"BearerToken": []}],
    })
}

/// The paths of kind `k`: where its collections and objects are (short paths, and tenant
/// paths for the kinds of tenants' spaces), and its subresources.
fn add_paths(
    paths: &mut Map<String, Value>,
    gv: &str,
    k: &ResourceInfo,
    gvk: &Value,
    schema: &str,
    list_schema: &str,
) {
    let p = k.plural;
    let mut collections: Vec<(String, Vec<&str>)> = match k.scope {
        Scope::Namespaced => vec![
            (
                format!("/{gv}/namespaces/{{namespace}}/{p}"),
                vec!["namespace"],
            ),
            (
                format!("/{gv}/tenants/{{tenant}}/namespaces/{{namespace}}/{p}"),
                vec!["tenant", "namespace"],
            ),
        ],
        Scope::Tenant => vec![
            (format!("/{gv}/{p}"), vec![]),
            (format!("/{gv}/tenants/{{tenant}}/{p}"), vec!["tenant"]),
        ],
        Scope::Cluster => vec![(format!("/{gv}/{p}"), vec![])],
    };
    let obj = schema_ref(schema);
    let list = schema_ref(list_schema);
    let id = |verb: &str, suffix: &str, at: &str| {
        format!(
            "{verb}{}{suffix}{}",
            k.kind,
            at.replace(['/', '{', '}'], "_")
        )
    };
    for (i, (base, params)) in collections.drain(..).enumerate() {
        let params: Vec<Value> = params.iter().map(|n| path_param(n)).collect();
        let mut item_params = params.clone();
        item_params.push(path_param("name"));
        let collection = json!({"parameters": params,
            "get": operation(id("list", "", &base), "list", gvk, list_params(), None,
                vec![answer("200", "OK", list.clone())], READ_ERRORS),
            "post": operation(id("create", "", &base), "post", gvk, write_params(), Some(json_body(obj.clone())),
                vec![answer("200", "OK", obj.clone()), answer("201", "Created", obj.clone())], WRITE_ERRORS),
        });
        paths.insert(base.clone(), collection);
        // Every namespace's objects, for a list across them.
        if k.scope == Scope::Namespaced && i == 0 {
            paths.insert(
                format!("/{gv}/{p}"),
                json!({"get": operation(id("list", "AllNamespaces", &base), "list", gvk, list_params(), None,
                    vec![answer("200", "OK", list.clone())], READ_ERRORS)}),
            );
        }
        let item = format!("{base}/{{name}}");
        let patch_body = json!({"required": true, "content": {
            "application/merge-patch+json": {"schema": {"type": "object"}},
            "application/strategic-merge-patch+json": {"schema": {"type": "object"}},
            "application/json-patch+json": {"schema": {"type": "array", "items": {"type": "object"}}},
            "application/apply-patch+yaml": {"schema": {"type": "object"}},
        }});
        paths.insert(
            item.clone(),
            json!({"parameters": item_params,
                "get": operation(id("read", "", &item), "get", gvk, vec![query("pretty", "string", "Indent the answer.")], None,
                    vec![answer("200", "OK", obj.clone())], READ_ERRORS),
                "put": operation(id("replace", "", &item), "put", gvk, write_params(), Some(json_body(obj.clone())),
                    vec![answer("200", "OK", obj.clone()), answer("201", "Created", obj.clone())], WRITE_ERRORS),
                "patch": operation(id("patch", "", &item), "patch", gvk, {
                    let mut ps = write_params();
                    ps.push(query("force", "boolean", "Server-side apply: take fields other managers own."));
                    ps
                }, Some(patch_body.clone()),
                    vec![answer("200", "OK", obj.clone()), answer("201", "Created", obj.clone())], WRITE_ERRORS),
                "delete": operation(id("delete", "", &item), "delete", gvk, delete_params(), None,
                    vec![answer("200", "OK", obj.clone()), answer("202", "Accepted: deletion begun", obj.clone())], WRITE_ERRORS),
            }),
        );
        if k.has_status {
            paths.insert(
                format!("{item}/status"),
                json!({"parameters": item_params,
                    "get": operation(id("read", "Status", &item), "get", gvk, vec![], None,
                        vec![answer("200", "OK", obj.clone())], READ_ERRORS),
                    "put": operation(id("replace", "Status", &item), "put", gvk, write_params(), Some(json_body(obj.clone())),
                        vec![answer("200", "OK", obj.clone())], WRITE_ERRORS),
                    "patch": operation(id("patch", "Status", &item), "patch", gvk, write_params(), Some(patch_body),
                        vec![answer("200", "OK", obj.clone())], WRITE_ERRORS),
                }),
            );
        }
        if matches!(p, "deployments" | "replicasets") {
            let scale = json!({"type": "object", "properties": {
                "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
                "spec": {"type": "object", "properties": {"replicas": {"type": "integer", "format": "int32"}}},
                "status": {"type": "object", "properties": {"replicas": {"type": "integer", "format": "int32"},
                    "selector": {"type": "string"}}}}});
            let scale_gvk = json!({"group": "autoscaling", "version": "v1", "kind": "Scale"});
            paths.insert(
                format!("{item}/scale"),
                json!({"parameters": item_params,
                    "get": operation(id("read", "Scale", &item), "get", &scale_gvk, vec![], None,
                        vec![answer("200", "OK", scale.clone())], READ_ERRORS),
                    "put": operation(id("replace", "Scale", &item), "put", &scale_gvk, write_params(), Some(json_body(scale.clone())),
                        vec![answer("200", "OK", scale.clone())], WRITE_ERRORS),
                    "patch": operation(id("patch", "Scale", &item), "patch", &scale_gvk, write_params(), Some(json!({"required": true, "content": {
                            "application/merge-patch+json": {"schema": {"type": "object"}},
                            "application/strategic-merge-patch+json": {"schema": {"type": "object"}},
                            "application/json-patch+json": {"schema": {"type": "array", "items": {"type": "object"}}},
                        }})),
                        vec![answer("200", "OK", scale.clone())], WRITE_ERRORS),
                }),
            );
        }
        if p == "pods" {
            add_pod_subresources(paths, &item, &item_params, gvk, &id);
        }
    }
}

fn add_pod_subresources(
    paths: &mut Map<String, Value>,
    item: &str,
    params: &[Value],
    gvk: &Value,
    id: &dyn Fn(&str, &str, &str) -> String,
) {
    let text = json!({"200": {"description": "What the workload wrote", "content": {"text/plain": {"schema": {"type": "string"}}}}});
    let mut log_responses = error_responses(READ_ERRORS);
    log_responses.extend(text.as_object().cloned().unwrap_or_default());
    paths.insert(
        format!("{item}/log"),
        json!({"parameters": params, "get": {
            "operationId": id("read", "Log", item), "x-kubernetes-action": "get",
            "x-kubernetes-group-version-kind": gvk,
            "parameters": [
                query("container", "string", "The container (or the VM) to read."),
                query("follow", "boolean", "Stream the log as it grows."),
                query("tailLines", "integer", "Only the last lines."),
                query("limitBytes", "integer", "At most this many bytes."),
                query("previous", "boolean", "The previous instance's log (not kept: 400)."),
            ],
            "responses": log_responses}}),
    );
    for (sub, what) in [
        (
            "exec",
            "Runs a command in a container over an upgraded connection (WebSocket, v5.channel.k8s.io).",
        ),
        (
            "attach",
            "Attaches to a container's output or a VM's serial console over an upgraded connection.",
        ),
        (
            "portforward",
            "Forwards ports of the pod's network namespace (SPDY/3.1, tunnelled in a WebSocket or upgraded to).",
        ),
    ] {
        let mut responses = error_responses(READ_ERRORS);
        responses.insert(
            "101".into(),
            json!({"description": "Switching protocols: the session"}),
        );
        let mut command = query(
            "command",
            "string",
            "The command and its arguments, one parameter each.",
        );
        command["required"] = json!(sub == "exec");
        let op = |verb: &str| {
            json!({"operationId": id(verb, sub, item), "description": what,
                "x-kubernetes-action": "connect", "x-kubernetes-group-version-kind": gvk,
                "parameters": [
                    command,
                    query("container", "string", "The container."),
                    query("stdin", "boolean", "Send standard input."),
                    query("stdout", "boolean", "Receive standard output."),
                    query("stderr", "boolean", "Receive standard error."),
                    query("tty", "boolean", "With a terminal."),
                ],
                "responses": responses})
        };
        paths.insert(
            format!("{item}/{sub}"),
            json!({"parameters": params, "get": op("connectGet"), "post": op("connectPost")}),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every schema keyword of OpenAPI 3.0 (and Kubernetes' extensions); anything else in
    /// a schema is a document tools cannot read.
    const KEYWORDS: &[&str] = &[
        "$ref",
        "type",
        "format",
        "description",
        "properties",
        "additionalProperties",
        "items",
        "required",
        "enum",
        "default",
        "nullable",
        "allOf",
        "anyOf",
        "oneOf",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "uniqueItems",
        "readOnly",
        "writeOnly",
        "example",
        "title",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "x-kubernetes-group-version-kind",
        "x-kubernetes-int-or-string",
    ];

    /// Checks a schema: only 3.0 keywords, `type` a string, `$ref` alone.
    fn check(schema: &Value, at: &str) {
        let Some(m) = schema.as_object() else {
            panic!("{at}: a schema that is not an object");
        };
        for (k, v) in m {
            assert!(KEYWORDS.contains(&k.as_str()), "{at}: keyword {k}");
            match k.as_str() {
                "type" => assert!(v.is_string(), "{at}: type {v}"),
                "$ref" => assert_eq!(m.len(), 1, "{at}: a reference with siblings"),
                "properties" => {
                    for (name, s) in v.as_object().unwrap() {
                        check(s, &format!("{at}.{name}"));
                    }
                }
                "items" => check(v, &format!("{at}[]")),
                "additionalProperties" if v.is_object() => check(v, &format!("{at}{{}}")),
                "allOf" | "anyOf" | "oneOf" => {
                    for s in v.as_array().unwrap() {
                        check(s, at);
                    }
                }
                _ => {}
            }
        }
    }

    #[test]
    fn documents_are_openapi_3_0_with_every_reference_resolved() {
        let registry = crate::region::registry();
        let docs = Documents::of(&registry);
        assert!(
            docs.index()["paths"]["apis/apps/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/apis/apps/v1?hash=")
        );
        for (path, doc) in &docs.docs {
            assert_eq!(doc["openapi"], "3.0.0");
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            for (name, s) in schemas {
                check(s, &format!("{path} {name}"));
            }
            let text = doc.to_string();
            assert!(!text.contains("#/$defs/"), "{path}");
            for cap in text.split("#/components/schemas/").skip(1) {
                let name: String = cap.chars().take_while(|c| *c != '"').collect();
                assert!(
                    schemas.contains_key(&name),
                    "{path}: dangling reference {name}"
                );
            }
            // Every templated path segment is a declared parameter.
            for (p, item) in doc["paths"].as_object().unwrap() {
                let declared: Vec<&str> = item["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x["name"].as_str())
                    .collect();
                for seg in p.split('/').filter(|s| s.starts_with('{')) {
                    let name = seg.trim_matches(['{', '}']);
                    assert!(declared.contains(&name), "{path} {p}: {name} undeclared");
                }
            }
        }
        let core = docs.document("api/v1").unwrap();
        let pods = &core["paths"]["/api/v1/namespaces/{namespace}/pods"]["get"];
        assert_eq!(pods["x-kubernetes-group-version-kind"]["kind"], "Pod");
        assert!(pods["parameters"].to_string().contains("labelSelector"));
        assert!(pods["responses"].get("410").is_some());
        assert!(
            core["paths"]["/api/v1/tenants/{tenant}/namespaces/{namespace}/pods/{name}/exec"]
                .is_object()
        );
        assert!(core["components"]["schemas"]["core.v1.PodList"].is_object());
    }

    #[test]
    fn schemas_lose_their_2020_12_forms() {
        let mut s = json!({"properties": {
            "a": {"type": ["string", "null"]},
            "b": {"anyOf": [{"$ref": "#/$defs/X"}, {"type": "null"}], "description": "b"},
            "c": {"$ref": "#/$defs/X", "description": "c"},
            "d": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            "e": {"const": "x"},
        }});
        to_openapi(&mut s, "p.");
        let p = &s["properties"];
        assert_eq!(p["a"], json!({"type": "string", "nullable": true}));
        assert_eq!(p["b"]["allOf"][0]["$ref"], "#/components/schemas/p.X");
        assert_eq!(p["b"]["nullable"], true);
        assert_eq!(p["c"]["allOf"][0]["$ref"], "#/components/schemas/p.X");
        assert_eq!(p["d"]["x-kubernetes-int-or-string"], true);
        assert_eq!(p["e"]["enum"], json!(["x"]));
    }
}
