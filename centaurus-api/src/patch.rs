//! The three patch formats Kubernetes clients send: JSON merge patch (RFC 7386), JSON
//! patch (RFC 6902) and strategic merge patch (lists of objects merged by key).

use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

/// The patch format, from the request's content type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml`: server-side apply ([`crate::apply`]).
    Apply,
}

impl PatchKind {
    /// The format named by a content type.
    pub fn from_content_type(ct: Option<&str>) -> ApiResult<Self> {
        let ct = ct.unwrap_or("").split(';').next().unwrap_or("").trim();
        match ct {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/json-patch+json" => Ok(Self::Json),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" => Ok(Self::Apply),
            other => Err(ApiError::unsupported_media_type(format!(
                "patch content type {other:?} is not one of application/merge-patch+json, application/json-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml"
            ))),
        }
    }
}

/// Applies a patch body to `doc`.
pub fn apply(kind: PatchKind, doc: &mut Value, body: &[u8]) -> ApiResult<()> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("unable to decode patch: {e}")))?;
    match kind {
        PatchKind::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(doc, &patch);
        }
        PatchKind::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(doc, &ops).map_err(|e| ApiError::invalid_patch(e.to_string()))?;
        }
        PatchKind::Apply => {
            return Err(ApiError::bad_request(
                "an apply is not a patch of the object: it is served by server-side apply",
            ));
        }
        PatchKind::Strategic => {
            let Value::Object(p) = patch else {
                return Err(ApiError::bad_request(
                    "a strategic merge patch must be a JSON object",
                ));
            };
            strategic_merge(doc, &p, "");
        }
    }
    Ok(())
}

impl ApiError {
    /// 422 for a JSON patch whose operations cannot be applied.
    pub fn invalid_patch(message: String) -> Self {
        let mut e = ApiError::bad_request(format!("the JSON patch cannot be applied: {message}"));
        e.code = 422;
        e.reason = "Invalid";
        e
    }
}

/// The merge key of lists of objects in the built-in kinds, by field name.
pub(crate) fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers" | "initContainers" | "env" | "volumes" | "imagePullSecrets" => "name",
        "ports" => "containerPort",
        "volumeMounts" => "mountPath",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "addresses" => "type",
        _ => return None,
    })
}

/// Lists of scalars merged as sets rather than replaced.
pub(crate) fn merges_primitives(field: &str) -> bool {
    field == "finalizers"
}

fn strategic_merge(doc: &mut Value, patch: &Map<String, Value>, _field: &str) {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = patch.clone();
        p.remove("$patch");
        *doc = Value::Object(p);
        return;
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let target = doc.as_object_mut().expect("made an object above");
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(gone)) = (target.get_mut(field), v) {
                list.retain(|x| !gone.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue; // $setElementOrder/…, $retainKeys: ordering hints we do not need
        }
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(sub) => {
                let slot = target.entry(k.clone()).or_insert(Value::Null);
                if sub.get("$patch").and_then(Value::as_str) == Some("delete") {
                    target.remove(k);
                } else {
                    strategic_merge(slot, sub, k);
                }
            }
            Value::Array(items) => {
                let slot = target.entry(k.clone()).or_insert(Value::Array(vec![]));
                if let Some(key) = merge_key(k) {
                    merge_list_by_key(slot, items, key);
                } else if merges_primitives(k) {
                    let list = slot.as_array_mut();
                    match list {
                        Some(list) => {
                            for item in items {
                                if !list.contains(item) {
                                    list.push(item.clone());
                                }
                            }
                        }
                        None => *slot = Value::Array(items.clone()),
                    }
                } else {
                    *slot = Value::Array(items.clone());
                }
            }
            other => {
                target.insert(k.clone(), other.clone());
            }
        }
    }
}

fn merge_list_by_key(slot: &mut Value, items: &[Value], key: &str) {
    if !slot.is_array() {
        *slot = Value::Array(vec![]);
    }
    let list = slot.as_array_mut().expect("made an array above");
    for item in items {
        let Some(obj) = item.as_object() else {
            list.push(item.clone());
            continue;
        };
        let id = obj.get(key);
        let pos = id.and_then(|id| list.iter().position(|x| x.get(key) == Some(id)));
        let directive = obj.get("$patch").and_then(Value::as_str);
        match (pos, directive) {
            (Some(i), Some("delete")) => {
                list.remove(i);
            }
            (None, Some("delete")) => {}
            (Some(i), _) => strategic_merge(&mut list[i], obj, key),
            (None, _) => {
                let mut fresh = Value::Object(Map::new());
                strategic_merge(&mut fresh, obj, key);
                list.push(fresh);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let mut pod = json!({"metadata": {"labels": {"a": "1"}, "finalizers": ["x"]},
            "spec": {"containers": [{"name": "a", "image": "v1"}, {"name": "b", "image": "v1"}]}});
        let patch = json!({"metadata": {"labels": {"a": null, "b": "2"}, "finalizers": ["y"]},
            "spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                     "containers": [{"name": "b", "image": "v2"}, {"name": "c", "image": "v1"},
                                    {"name": "a", "$patch": "delete"}]}});
        apply(PatchKind::Strategic, &mut pod, patch.to_string().as_bytes()).unwrap();
        assert_eq!(pod["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(pod["metadata"]["finalizers"], json!(["x", "y"]));
        assert_eq!(
            pod["spec"]["containers"],
            json!([{"name": "b", "image": "v2"}, {"name": "c", "image": "v1"}])
        );
    }

    #[test]
    fn merge_and_json_patches() {
        let mut doc = json!({"spec": {"replicas": 3, "paused": true}});
        apply(
            PatchKind::Merge,
            &mut doc,
            br#"{"spec": {"replicas": 5, "paused": null}}"#,
        )
        .unwrap();
        assert_eq!(doc, json!({"spec": {"replicas": 5}}));
        apply(
            PatchKind::Json,
            &mut doc,
            br#"[{"op": "replace", "path": "/spec/replicas", "value": 1}]"#,
        )
        .unwrap();
        assert_eq!(doc["spec"]["replicas"], 1);
        let e = apply(
            PatchKind::Json,
            &mut doc,
            br#"[{"op": "remove", "path": "/nope"}]"#,
        )
        .unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            apply(PatchKind::Merge, &mut doc, b"{").unwrap_err().code,
            400
        );
        assert_eq!(
            PatchKind::from_content_type(Some("application/apply-patch+yaml")).unwrap(),
            PatchKind::Apply
        );
        assert_eq!(
            PatchKind::from_content_type(Some("text/plain"))
                .unwrap_err()
                .code,
            415
        );
    }
}
