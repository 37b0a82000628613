//! Request bodies in, objects and tables out.

use centaurus_core::model::ResourceInfo;
use centaurus_core::store::KeyValue;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};

/// The deepest nesting a request body may have: serde_json's own limit, so that a JSON
/// body and the same object in YAML are judged alike.
pub const MAX_DEPTH: usize = 128;

/// The YAML parser's budget for one request body. Deep nesting is refused while parsing, at
/// the first opener past [`MAX_DEPTH`], so a hostile body costs what its first levels cost
/// (a parse that built the whole tree first spent minutes on 100,000 nested `[`).
fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.flow_nesting_limit = MAX_DEPTH;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// Decodes a request body (JSON, or YAML when the content type says so) into a JSON
/// object. Errors are 400 with the parse position; nesting deeper than [`MAX_DEPTH`] is
/// refused. CPU-bound: servers run it off the threads that serve other requests.
pub fn decode_body(content_type: Option<&str>, body: &[u8]) -> ApiResult<Value> {
    let ct = content_type
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    let value: Value = match ct {
        "application/json" | "" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("unable to decode JSON body: {e}")))?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            serde_saphyr::from_slice_with_options(body, yaml_options())
                .map_err(|e| ApiError::bad_request(format!("unable to decode YAML body: {e}")))?
        }
        crate::protobuf::CONTENT_TYPE => crate::protobuf::decode(body)?,
        other => {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of type {other:?} is not supported; send application/json or application/yaml"
            )));
        }
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(value)
}

/// A stored value as an API object: its `resourceVersion` is the revision that wrote it.
pub fn object_of(kv: &KeyValue) -> ApiResult<Value> {
    let mut v: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is corrupt: {e}", kv.key)))?;
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(kv.mod_revision.to_string()),
        );
    }
    Ok(v)
}

/// True when the `Accept` header asks for server-side `Table` output (kubectl get).
pub fn wants_table(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("as=Table"))
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Human age, as kubectl prints it: `45s`, `12m`, `5h`, `3d`.
pub fn age(created: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(created) else {
        return "<unknown>".into();
    };
    let secs = (now - t.with_timezone(&chrono::Utc)).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Extra columns per kind: (name, priority, cell).
type Column = (&'static str, u8, fn(&Value) -> Value);

fn columns(plural: &str) -> Vec<Column> {
    fn phase_or(v: &Value, default: &str) -> Value {
        let p = str_at(v, "/status/phase");
        json!(if p.is_empty() { default } else { p })
    }
    match plural {
        "pods" => vec![
            ("Status", 0, |v| {
                if v.pointer("/metadata/deletionTimestamp").is_some() {
                    return json!("Terminating");
                }
                // As kubectl prints pods: a container's waiting or terminated reason
                // (CrashLoopBackOff, Error) says more than the phase.
                let reason = v
                    .pointer("/status/containerStatuses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|c| {
                        ["/state/waiting/reason", "/state/terminated/reason"]
                            .iter()
                            .find_map(|p| c.pointer(p).and_then(Value::as_str))
                    })
                    .find(|r| !r.is_empty() && *r != "Completed");
                match reason {
                    Some(r) if str_at(v, "/status/phase") != "Succeeded" => json!(r),
                    _ => phase_or(v, "Pending"),
                }
            }),
            ("Node", 0, |v| json!(str_at(v, "/spec/nodeName"))),
            ("IP", 1, |v| json!(str_at(v, "/status/podIP"))),
            ("Type", 1, |v| {
                json!(if v.pointer("/spec/virtualMachine").is_some() {
                    "vm"
                } else {
                    "container"
                })
            }),
        ],
        "tenants" | "namespaces" => vec![("Status", 0, |v| phase_or(v, "Active"))],
        "deployments" | "replicasets" => vec![("Ready", 0, |v| {
            let ready = v
                .pointer("/status/readyReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let want = v
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            json!(format!("{ready}/{want}"))
        })],
        "nodes" => vec![("Status", 0, |v| {
            let ready = v
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| str_at(c, "/type") == "Ready"))
                .map(|c| str_at(c, "/status") == "True");
            json!(match ready {
                Some(true) => "Ready",
                Some(false) => "NotReady",
                None => "Unknown",
            })
        })],
        _ => vec![],
    }
}

/// The column definitions of a `Table` of `info`'s kind.
pub fn table_columns(info: &ResourceInfo) -> Value {
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0}),
    ];
    for (name, priority, _) in &columns(info.plural) {
        defs.push(json!({"name": name, "type": "string", "format": "", "description": "", "priority": priority}));
    }
    defs.push(json!({"name": "Age", "type": "string", "format": "", "description": "Time since creation", "priority": 0}));
    Value::Array(defs)
}

/// Makes the rows of a `Table` of one kind.
pub struct TableRows {
    columns: Vec<Column>,
    now: chrono::DateTime<chrono::Utc>,
}

impl TableRows {
    /// Rows of `info`'s kind, ages counted from now.
    pub fn new(info: &ResourceInfo) -> Self {
        Self {
            columns: columns(info.plural),
            now: chrono::Utc::now(),
        }
    }

    /// The row of `o`: its cells and its metadata.
    pub fn row(&self, o: &Value) -> Value {
        let mut cells = vec![json!(str_at(o, "/metadata/name"))];
        cells.extend(self.columns.iter().map(|(_, _, f)| f(o)));
        cells.push(json!(age(
            str_at(o, "/metadata/creationTimestamp"),
            self.now
        )));
        let mut partial = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1"});
        partial["metadata"] = o.get("metadata").cloned().unwrap_or(json!({}));
        json!({"cells": cells, "object": partial})
    }
}

/// Objects as a `meta.k8s.io/v1` `Table`, the form kubectl prints.
pub fn table(
    info: &ResourceInfo,
    objects: &[Value],
    resource_version: &str,
    cont: Option<&str>,
) -> Value {
    let rows = TableRows::new(info);
    let rows: Vec<Value> = objects.iter().map(|o| rows.row(o)).collect();
    let mut meta = json!({"resourceVersion": resource_version});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": table_columns(info), "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_report_where_they_break() {
        let e = decode_body(None, b"{\"a\": [1, 2,}").unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.message.contains("line 1 column"), "{}", e.message);
        let e = decode_body(Some("application/yaml"), b"a: [1\nb: 2").unwrap_err();
        assert!(e.message.contains("line"), "{}", e.message);
        assert_eq!(
            decode_body(Some("application/yaml"), b"a: 1").unwrap()["a"],
            1
        );
        assert_eq!(decode_body(None, b"[1]").unwrap_err().code, 400);
        let yaml = decode_body(
            Some("application/yaml"),
            b"metadata:\n  name: web\n  labels: {app: web}\nspec:\n  containers:\n  - name: c\n    args: [sh, -c, 'echo hi']\n",
        )
        .unwrap();
        assert_eq!(yaml["spec"]["containers"][0]["args"][2], "echo hi");
        assert_eq!(yaml["metadata"]["labels"]["app"], "web");
        assert_eq!(decode_body(Some("text/plain"), b"x").unwrap_err().code, 415);
    }

    #[test]
    fn pod_rows_say_why_a_container_waits() {
        let info = crate::region::registry()
            .by_plural("", "v1", "pods")
            .cloned()
            .unwrap();
        let status = |pod: Value| table(&info, &[pod], "1", None)["rows"][0]["cells"][1].clone();
        let pod = |phase: &str, state: Value| {
            json!({"metadata": {"name": "p"}, "status": {"phase": phase,
                "containerStatuses": [{"name": "c", "state": state}]}})
        };
        assert_eq!(
            status(pod(
                "Running",
                json!({"waiting": {"reason": "CrashLoopBackOff"}})
            )),
            "CrashLoopBackOff"
        );
        assert_eq!(status(pod("Running", json!({"running": {}}))), "Running");
        assert_eq!(
            status(pod("Failed", json!({"terminated": {"reason": "Error"}}))),
            "Error"
        );
        assert_eq!(
            status(pod(
                "Succeeded",
                json!({"terminated": {"reason": "Completed"}})
            )),
            "Succeeded"
        );
    }

    /// `{"a": ` (or `a: [`, or `- `) nested `depth` times around `1`.
    fn nested(depth: usize, open: &str, close: &str) -> Vec<u8> {
        format!("{}1{}", open.repeat(depth), close.repeat(depth)).into_bytes()
    }

    #[test]
    fn nesting_is_limited_alike_in_json_and_yaml() {
        let yaml = Some("application/yaml");
        for (ct, open, close) in [
            (None, "{\"a\":", "}"),
            (yaml, "{a: ", "}"),
            (yaml, "{a: [", "]}"),
        ] {
            let ok = nested(MAX_DEPTH / 2 - 1, open, close);
            assert!(
                decode_body(ct, &ok).is_ok(),
                "{}",
                String::from_utf8_lossy(&ok)
            );
            let deep = nested(MAX_DEPTH + 1, open, close);
            assert_eq!(decode_body(ct, &deep).unwrap_err().code, 400);
        }
        // Block nesting: `- - - ... 1` is a sequence MAX_DEPTH + 1 deep.
        let block = format!("a:\n  {}1\n", "- ".repeat(MAX_DEPTH + 1));
        assert_eq!(decode_body(yaml, block.as_bytes()).unwrap_err().code, 400);
    }

    #[test]
    fn a_hostile_yaml_body_is_refused_at_its_first_levels() {
        // 100,000 nested flow sequences in 200 KB: the whole parse took 111 s before the
        // depth budget; now it stops at MAX_DEPTH. Timed loosely: the point is the order of
        // magnitude, on any machine.
        let body = nested(100_000, "[", "]");
        let started = std::time::Instant::now();
        let e = decode_body(Some("application/yaml"), &body).unwrap_err();
        assert_eq!(e.code, 400, "{}", e.message);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "refused after {:?}",
            started.elapsed()
        );
    }
}
