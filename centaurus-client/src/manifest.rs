//! Manifest files: YAML or JSON, one object or many (`---` separated, or a `List`).

use serde_json::Value;

/// Splits manifest text into objects. YAML documents are separated by `---`; empty
/// documents are skipped; a `kind: List` (or `…List`) with `items` is expanded. Every
/// object must have `apiVersion`, `kind` and `metadata.name` (or `generateName`).
pub fn decode(text: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    let trimmed = text.trim_start();
    let docs: Vec<Value> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let mut de = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        let mut docs = Vec::new();
        for v in &mut de {
            docs.push(v.map_err(|e| format!("JSON: {e}"))?);
        }
        docs
    } else {
        let mut docs = Vec::new();
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(doc)
                .map_err(|e| format!("YAML document {}: {e}", i + 1))?;
            if v.is_null() {
                continue;
            }
            docs.push(
                serde_json::to_value(v).map_err(|e| format!("YAML document {}: {e}", i + 1))?,
            );
        }
        docs
    };
    for doc in docs {
        let items = match &doc {
            Value::Array(a) => a.clone(),
            Value::Object(o)
                if o.get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.ends_with("List"))
                    && o.get("items").is_some() =>
            {
                o["items"]
                    .as_array()
                    .cloned()
                    .ok_or("List items must be an array")?
            }
            _ => vec![doc],
        };
        for item in items {
            check(&item, out.len() + 1)?;
            out.push(item);
        }
    }
    Ok(out)
}

fn check(obj: &Value, n: usize) -> Result<(), String> {
    if !obj.is_object() {
        return Err(format!("object {n}: a manifest must be a mapping"));
    }
    for field in ["apiVersion", "kind"] {
        if obj
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(format!("object {n}: {field} is required"));
        }
    }
    let named = ["/metadata/name", "/metadata/generateName"]
        .iter()
        .any(|p| {
            obj.pointer(p)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
        });
    if !named {
        return Err(format!("object {n}: metadata.name is required"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_and_json() {
        let yaml = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: dev}\n---\n\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: a}}\n";
        let objs = decode(yaml).unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[1]["kind"], "Pod");
        let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"}} {"apiVersion":"v1","kind":"Pod","metadata":{"name":"b"}}"#;
        assert_eq!(decode(json).unwrap().len(), 2);
        assert!(
            decode("kind: Pod\nmetadata: {name: a}")
                .unwrap_err()
                .contains("apiVersion")
        );
        assert!(decode("a: [1").unwrap_err().contains("YAML document 1"));
        assert!(decode("{\"a\": ").unwrap_err().contains("JSON"));
    }
}
