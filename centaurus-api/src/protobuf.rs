//! The slice of Kubernetes' protobuf encoding that kubectl's typed commands send
//! (`kubectl create namespace`): the `k8s\0` envelope and `ObjectMeta`. Bodies this
//! decoder cannot represent faithfully are refused (415) rather than half-read.

use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};

/// The content type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

struct Reader<'a> {
    buf: &'a [u8],
}

enum Field<'a> {
    Varint,
    Bytes(&'a [u8]),
    Fixed,
}

fn malformed(why: &str) -> ApiError {
    ApiError::bad_request(format!("malformed protobuf body: {why}"))
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> ApiResult<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or_else(|| malformed("truncated varint"))?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(malformed("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> ApiResult<&'a [u8]> {
        if n > self.buf.len() {
            return Err(malformed("length beyond the end of the message"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn next(&mut self) -> ApiResult<Option<(u64, Field<'a>)>> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = match key & 7 {
            0 => {
                self.varint()?;
                Field::Varint
            }
            1 => {
                self.take(8)?;
                Field::Fixed
            }
            2 => {
                let n =
                    usize::try_from(self.varint()?).map_err(|_| malformed("length overflows"))?;
                Field::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed
            }
            w => return Err(malformed(&format!("unsupported wire type {w}"))),
        };
        Ok(Some((key >> 3, field)))
    }
}

fn fields(buf: &[u8]) -> ApiResult<Vec<(u64, Field<'_>)>> {
    let mut r = Reader { buf };
    let mut out = Vec::new();
    while let Some(f) = r.next()? {
        out.push(f);
    }
    Ok(out)
}

fn string(b: &[u8]) -> ApiResult<String> {
    String::from_utf8(b.to_vec()).map_err(|_| malformed("string is not UTF-8"))
}

fn map_entry(b: &[u8]) -> ApiResult<(String, String)> {
    let (mut k, mut v) = (String::new(), String::new());
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => k = string(x)?,
            (2, Field::Bytes(x)) => v = string(x)?,
            _ => return Err(malformed("bad map entry")),
        }
    }
    Ok((k, v))
}

/// ObjectMeta fields a client may set: name, generateName, namespace, labels, annotations,
/// finalizers. Server-owned fields are ignored as the JSON path ignores them.
fn object_meta(b: &[u8]) -> ApiResult<Value> {
    let mut meta = Map::new();
    let (mut labels, mut annotations, mut finalizers) = (Map::new(), Map::new(), Vec::new());
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => drop(meta.insert("name".into(), json!(string(x)?))),
            (2, Field::Bytes(x)) => drop(meta.insert("generateName".into(), json!(string(x)?))),
            (3, Field::Bytes(x)) => drop(meta.insert("namespace".into(), json!(string(x)?))),
            (11, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                labels.insert(k, json!(v));
            }
            (12, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                annotations.insert(k, json!(v));
            }
            (14, Field::Bytes(x)) => finalizers.push(json!(string(x)?)),
            // selfLink, uid, resourceVersion, generation, timestamps, owners, managed fields
            (4..=10 | 13 | 15..=17, _) => {}
            (n, _) => return Err(malformed(&format!("unknown ObjectMeta field {n}"))),
        }
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    if !finalizers.is_empty() {
        meta.insert("finalizers".into(), Value::Array(finalizers));
    }
    Ok(Value::Object(meta))
}

/// Decodes a protobuf request body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> ApiResult<Value> {
    let inner = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| malformed("missing the k8s\\0 prefix"))?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in fields(inner)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (n, f) in fields(tm)? {
                    match (n, f) {
                        (1, Field::Bytes(x)) => api_version = string(x)?,
                        (2, Field::Bytes(x)) => kind = string(x)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(x)) => raw = x,
            (3 | 4, Field::Bytes(x)) if !x.is_empty() => {
                return Err(ApiError::unsupported_media_type(
                    "encoded protobuf bodies are not supported",
                ));
            }
            _ => {}
        }
    }
    let mut obj = json!({"apiVersion": api_version, "kind": kind, "metadata": {}});
    for (n, f) in fields(raw)? {
        match (n, f, kind.as_str()) {
            (1, Field::Bytes(m), _) => obj["metadata"] = object_meta(m)?,
            (2, Field::Bytes(spec), "Namespace") => {
                let mut fin = Vec::new();
                for (n, f) in fields(spec)? {
                    if let (1, Field::Bytes(x)) = (n, f) {
                        fin.push(json!(string(x)?));
                    }
                }
                obj["spec"] = json!({"finalizers": fin});
            }
            (3, _, "Namespace") => {}
            (_, Field::Varint | Field::Fixed | Field::Bytes(_), _) => {
                return Err(ApiError::unsupported_media_type(format!(
                    "protobuf bodies are decoded for Namespace only, not {kind}; send JSON or YAML (kubectl apply -f, kubectl create -f)"
                )));
            }
        }
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![((n << 3) | 2) as u8, bytes.len() as u8];
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn decodes_a_namespace_as_kubectl_sends_it() {
        let meta = [
            field(1, b"dev"),
            field(11, &[field(1, b"team"), field(2, b"a")].concat()),
        ]
        .concat();
        let type_meta = [field(1, b"v1"), field(2, b"Namespace")].concat();
        let raw = [field(1, &meta), field(2, &[]), field(3, &[])].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &raw)].concat();
        let obj = decode(&body).unwrap();
        assert_eq!(obj["kind"], "Namespace");
        assert_eq!(obj["metadata"]["name"], "dev");
        assert_eq!(obj["metadata"]["labels"]["team"], "a");
        // Truncation anywhere is a clean 400.
        for cut in 0..body.len() {
            if let Err(e) = decode(&body[..cut]) {
                assert!(e.code == 400 || e.code == 415);
            }
        }
        let deployment = [
            MAGIC.to_vec(),
            field(1, &[field(1, b"apps/v1"), field(2, b"Deployment")].concat()),
            field(2, &[field(1, &meta), field(2, &[8, 3])].concat()),
        ]
        .concat();
        assert_eq!(decode(&deployment).unwrap_err().code, 415);
    }
}
