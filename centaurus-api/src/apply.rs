//! Server-side apply and field ownership (`metadata.managedFields`), as Kubernetes keeps
//! them: every write that names a `fieldManager` records which fields that manager set;
//! an apply (`application/apply-patch+yaml`) merges the manager's configuration into the
//! object, removes the fields it applied before and no longer does (unless others own
//! them too), and refuses (409, naming each field and its manager) to change a field
//! another manager set to another value, unless forced, which takes the field over.
//!
//! Field sets are FieldsV1 trees: `f:NAME` for a field, `k:{"name":"c"}` for an item of
//! a list merged by key, `v:VALUE` for an item of a set, `.` for a list item itself; a
//! leaf is `{}`. Lists merge by the keys strategic merge patches use; other lists are
//! atomic.

use centaurus_core::model::ManagedFieldsEntry;
use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// Metadata fields the server owns, never part of a field set.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "tenant",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "hashKey",
];

/// One step of a field path: a FieldsV1 key.
type Path = Vec<String>;

/// The field set of `obj` (an object of a kind, or part of one).
fn set_of(obj: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    if let Value::Object(m) = obj {
        for (k, v) in m {
            if !v.is_null() {
                out.insert(format!("f:{k}"), child(k, v));
            }
        }
    }
    out
}

fn child(name: &str, v: &Value) -> Value {
    match v {
        Value::Object(_) => Value::Object(set_of(v)),
        Value::Array(items) => match crate::patch::merge_key(name) {
            Some(key) if items.iter().all(|i| i.get(key).is_some()) => {
                let mut m = Map::new();
                for item in items {
                    let mut inner = set_of(item);
                    inner.insert(".".into(), json!({}));
                    m.insert(
                        format!("k:{}", json!({key: item[key]})),
                        Value::Object(inner),
                    );
                }
                Value::Object(m)
            }
            _ if crate::patch::merges_primitives(name) => Value::Object(
                items
                    .iter()
                    .map(|i| (format!("v:{i}"), json!({})))
                    .collect(),
            ),
            _ => json!({}),
        },
        _ => json!({}),
    }
}

/// The field set of a whole object, without what the server owns (and without `status`
/// for the object itself).
pub fn fields_of(obj: &Value) -> Value {
    let mut set = set_of(obj);
    set.remove("f:apiVersion");
    set.remove("f:kind");
    set.remove("f:status");
    if let Some(Value::Object(meta)) = set.get_mut("f:metadata") {
        for f in SERVER_METADATA {
            meta.remove(&format!("f:{f}"));
        }
        if meta.is_empty() {
            set.remove("f:metadata");
        }
    }
    Value::Object(set)
}

/// Every leaf path of a field set.
fn leaves(set: &Value) -> Vec<Path> {
    fn walk(v: &Value, at: &mut Path, out: &mut Vec<Path>) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, x) in m {
                    at.push(k.clone());
                    walk(x, at, out);
                    at.pop();
                }
            }
            _ => {
                if !at.is_empty() {
                    out.push(at.clone());
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(set, &mut Vec::new(), &mut out);
    out
}

/// The field set of `paths`.
fn set_from(paths: &[Path]) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut at = &mut root;
        for seg in p {
            at = at
                .entry(seg.clone())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("field sets are objects");
        }
    }
    Value::Object(root)
}

/// The value at `path` in `obj`, if there is one (a list item itself for `.`).
fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut v = obj;
    for seg in path {
        v = if let Some(f) = seg.strip_prefix("f:") {
            v.get(f)?
        } else if let Some(k) = seg.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).ok()?;
            v.as_array()?.iter().find(|item| key_matches(item, &key))?
        } else if let Some(x) = seg.strip_prefix("v:") {
            let want: Value = serde_json::from_str(x).ok()?;
            v.as_array()?.iter().find(|i| **i == want)?
        } else if seg == "." {
            v
        } else {
            return None;
        };
    }
    Some(v)
}

/// Matches a list item against a `k:` key.
fn key_matches(item: &Value, key: &Map<String, Value>) -> bool {
    key.iter().all(|(k, v)| item.get(k) == Some(v))
}

/// Removes what `path` names from `obj` (a field, or a list item), and the maps it leaves
/// empty; true when `obj` itself is left an empty map.
fn remove_at(obj: &mut Value, path: &[String]) -> bool {
    let Some((seg, rest)) = path.split_first() else {
        return false;
    };
    if rest.is_empty() || rest == ["."] {
        if let Some(f) = seg.strip_prefix("f:") {
            if let Some(m) = obj.as_object_mut() {
                m.remove(f);
            }
        } else if let Some(k) = seg.strip_prefix("k:") {
            if let (Ok(key), Some(items)) = (
                serde_json::from_str::<Map<String, Value>>(k),
                obj.as_array_mut(),
            ) {
                items.retain(|item| !key_matches(item, &key));
            }
        } else if let Some(x) = seg.strip_prefix("v:")
            && let (Ok(want), Some(items)) = (serde_json::from_str::<Value>(x), obj.as_array_mut())
        {
            items.retain(|i| *i != want);
        }
    } else if let Some(f) = seg.strip_prefix("f:") {
        if let Some(m) = obj.as_object_mut()
            && let Some(child) = m.get_mut(f)
            && remove_at(child, rest)
        {
            m.remove(f);
        }
    } else if let Some(k) = seg.strip_prefix("k:")
        && let (Ok(key), Some(items)) = (
            serde_json::from_str::<Map<String, Value>>(k),
            obj.as_array_mut(),
        )
        && let Some(item) = items.iter_mut().find(|i| key_matches(i, &key))
    {
        remove_at(item, rest);
    }
    obj.as_object().is_some_and(|m| m.is_empty())
}

/// Merges an applied configuration into `live`: maps field by field, lists with a merge
/// key item by item, set lists as sets, everything else replaced.
fn merge(live: &mut Value, applied: &Value, field: &str) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            for (k, av) in a {
                match l.get_mut(k) {
                    Some(lv) if !av.is_null() => merge(lv, av, k),
                    _ => {
                        l.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(a)) => match crate::patch::merge_key(field) {
            Some(key)
                if a.iter().all(|i| i.get(key).is_some())
                    && l.iter().all(|i| i.get(key).is_some()) =>
            {
                for item in a {
                    match l.iter_mut().find(|x| x.get(key) == item.get(key)) {
                        Some(x) => merge(x, item, ""),
                        None => l.push(item.clone()),
                    }
                }
            }
            _ if crate::patch::merges_primitives(field) => {
                for item in a {
                    if !l.contains(item) {
                        l.push(item.clone());
                    }
                }
            }
            _ => *l = a.clone(),
        },
        (l, a) => *l = a.clone(),
    }
}

fn entries(obj: &Value) -> Vec<ManagedFieldsEntry> {
    obj.pointer("/metadata/managedFields")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

fn set_entries(obj: &mut Value, mut list: Vec<ManagedFieldsEntry>) {
    list.retain(|e| !leaves(&e.fields_v1).is_empty());
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    let meta = obj["metadata"].as_object_mut().expect("made above");
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), json!(list));
    }
}

fn entry(manager: &str, operation: &str, api_version: &str, paths: &[Path]) -> ManagedFieldsEntry {
    ManagedFieldsEntry {
        manager: manager.to_owned(),
        operation: operation.to_owned(),
        api_version: api_version.to_owned(),
        time: Some(centaurus_core::model::now()),
        fields_type: "FieldsV1".into(),
        fields_v1: set_from(paths),
        subresource: String::new(),
    }
}

/// A path as Kubernetes prints it in a conflict: `.spec.replicas`,
/// `.spec.containers[name="c"].image`.
fn display(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = seg.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let inner: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", inner.join(",")));
        } else if let Some(v) = seg.strip_prefix("v:") {
            out.push_str(&format!("[{v}]"));
        }
    }
    out
}

/// Applies `applied` (a whole configuration of the object) for `manager` to `live` (None:
/// the object does not exist yet), forcing conflicts when `force`. The merged object,
/// with its managed fields.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
) -> Result<Value, ApiError> {
    let wanted = leaves(&fields_of(applied));
    let Some(live) = live else {
        let mut obj = applied.clone();
        set_entries(
            &mut obj,
            vec![entry(manager, "Apply", api_version, &wanted)],
        );
        return Ok(obj);
    };
    let mut others = entries(live);
    let mine_before = others
        .iter()
        .position(|e| e.manager == manager && e.operation == "Apply")
        .map(|i| others.remove(i));
    // Fields other managers set to something else.
    let mut conflicts = Vec::new();
    for e in &mut others {
        let owned = leaves(&e.fields_v1);
        let lost: Vec<&Path> = owned
            .iter()
            .filter(|p| wanted.contains(p) && value_at(live, p) != value_at(applied, p))
            .collect();
        if lost.is_empty() {
            continue;
        }
        if force {
            let kept: Vec<Path> = owned
                .iter()
                .filter(|p| !lost.contains(p))
                .cloned()
                .collect();
            e.fields_v1 = set_from(&kept);
        } else {
            for p in lost {
                conflicts.push((e.manager.clone(), e.api_version.clone(), display(p)));
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflict_error(&conflicts));
    }
    let mut obj = live.clone();
    // What this manager applied before and no longer does goes, unless others own it.
    if let Some(before) = &mine_before {
        let owned_by_others: Vec<Path> = others.iter().flat_map(|e| leaves(&e.fields_v1)).collect();
        for p in leaves(&before.fields_v1) {
            if !wanted.contains(&p) && !owned_by_others.contains(&p) {
                remove_at(&mut obj, &p);
            }
        }
    }
    merge(&mut obj, applied, "");
    others.push(entry(manager, "Apply", api_version, &wanted));
    set_entries(&mut obj, others);
    Ok(obj)
}

fn conflict_error(conflicts: &[(String, String, String)]) -> ApiError {
    let lines: Vec<String> = conflicts
        .iter()
        .map(|(m, v, f)| format!("conflict with \"{m}\" using {v}: {f}"))
        .collect();
    let mut e = ApiError::conflict_message(format!(
        "Apply failed with {} conflict{}: {}",
        conflicts.len(),
        if conflicts.len() == 1 { "" } else { "s" },
        lines.join("\n")
    ));
    e.details = Some(json!({"causes": conflicts.iter().map(|(m, v, f)| json!({
        "reason": "FieldManagerConflict",
        "message": format!("conflict with \"{m}\" using {v}"),
        "field": f,
    })).collect::<Vec<_>>()}));
    e
}

/// Records a write other than an apply by `manager` (a create when `current` is None):
/// it owns the fields it changed, which other managers no longer own.
pub fn record_update(current: Option<&Value>, next: &mut Value, manager: &str, api_version: &str) {
    let after = leaves(&fields_of(next));
    let Some(current) = current else {
        set_entries(next, vec![entry(manager, "Update", api_version, &after)]);
        return;
    };
    let before = leaves(&fields_of(current));
    let changed: Vec<&Path> = after
        .iter()
        .filter(|p| value_at(next, p) != value_at(current, p))
        .chain(before.iter().filter(|p| !after.contains(p)))
        .collect();
    let mut list = entries(current);
    let mut mine: Vec<Path> = Vec::new();
    for e in &mut list {
        let owned = leaves(&e.fields_v1);
        let kept: Vec<Path> = owned
            .iter()
            .filter(|p| !changed.contains(p) && after.contains(p))
            .cloned()
            .collect();
        if e.manager == manager && e.operation == "Update" {
            mine = kept;
            e.fields_v1 = json!({});
        } else if kept.len() != owned.len() {
            e.fields_v1 = set_from(&kept);
        }
    }
    list.retain(|e| !(e.manager == manager && e.operation == "Update"));
    if changed.is_empty() && mine.is_empty() {
        set_entries(next, list);
        return;
    }
    mine.extend(changed.into_iter().filter(|p| after.contains(p)).cloned());
    list.push(entry(manager, "Update", api_version, &mine));
    set_entries(next, list);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": "c", "image": image, "args": ["a", "b"]}]}}}})
    }

    #[test]
    fn field_sets_key_lists_and_leave_out_server_fields() {
        let set = fields_of(&deployment(2, "nginx"));
        let c = &set["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"];
        assert_eq!(c["f:image"], json!({}));
        assert_eq!(c["f:args"], json!({}), "args are atomic");
        assert_eq!(c["."], json!({}));
        assert!(set["f:metadata"].get("f:name").is_none());
        assert!(set.get("f:apiVersion").is_none());
        assert_eq!(display(&leaves(&set)[0]), ".metadata.labels.app");
    }

    #[test]
    fn applies_merge_conflict_and_force() {
        let first = apply(None, &deployment(2, "nginx"), "alice", false, "apps/v1").unwrap();
        // Another manager changes replicas with an ordinary update.
        let mut scaled = first.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(Some(&first), &mut scaled, "kubectl-scale", "apps/v1");
        // Alice applies the same config again: replicas 2 conflicts with kubectl-scale's 5.
        let e = apply(
            Some(&scaled),
            &deployment(2, "nginx:2"),
            "alice",
            false,
            "apps/v1",
        )
        .unwrap_err();
        assert_eq!(e.code, 409);
        assert!(
            e.message.contains("conflict with \"kubectl-scale\""),
            "{}",
            e.message
        );
        assert!(e.message.contains(".spec.replicas"), "{}", e.message);
        // Applying the live value is no conflict; forcing takes the field.
        let same = apply(
            Some(&scaled),
            &deployment(5, "nginx:2"),
            "alice",
            false,
            "apps/v1",
        )
        .unwrap();
        assert_eq!(same["spec"]["replicas"], 5);
        let forced = apply(
            Some(&scaled),
            &deployment(2, "nginx:2"),
            "alice",
            true,
            "apps/v1",
        )
        .unwrap();
        assert_eq!(forced["spec"]["replicas"], 2);
        assert_eq!(
            forced["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:2"
        );
        let managers: Vec<String> = entries(&forced).iter().map(|e| e.manager.clone()).collect();
        assert_eq!(managers, ["alice"], "kubectl-scale owned nothing else");
        // A field alice no longer applies is removed; one she never applied stays.
        let mut smaller = deployment(2, "nginx:2");
        smaller["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("labels");
        let mut live = forced.clone();
        live["metadata"]["annotations"] = json!({"note": "by hand"});
        let after = apply(Some(&live), &smaller, "alice", false, "apps/v1").unwrap();
        assert!(after["metadata"].get("labels").is_none());
        assert_eq!(after["metadata"]["annotations"]["note"], "by hand");
    }

    #[test]
    fn list_items_merge_by_key_and_go_when_no_longer_applied() {
        let two = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        let live = apply(None, &two, "m", false, "v1").unwrap();
        let one = json!({"spec": {"containers": [{"name": "a", "image": "x2"}]}});
        let after = apply(Some(&live), &one, "m", false, "v1").unwrap();
        assert_eq!(
            after["spec"]["containers"],
            json!([{"name": "a", "image": "x2"}])
        );
    }
}
