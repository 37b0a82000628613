//! Kubernetes' protobuf encoding, for every kind that has a Kubernetes protobuf type.
//!
//! Bodies are the `k8s\0` envelope around a `runtime.Unknown` whose `raw` is the object.
//! Objects are read and written through the upstream message descriptors (Kubernetes 1.35,
//! `proto/kubernetes.fds`, written by `tools/k8s-descriptors` from the descriptors the
//! `k8s-rs-pb` crate generated from the upstream `.proto` files) as dynamic messages, and
//! mapped to and from the JSON the rest of the server speaks by Kubernetes' own rules:
//! proto field names are the JSON names; `Time`, `MicroTime`, `Duration`, `Quantity`,
//! `IntOrString`, `RawExtension`, `FieldsV1` and the string-list wrappers have JSON forms
//! of their own; bytes are base64. Go writes every non-pointer field, set or not, so a
//! zero value read from the wire is dropped as JSON's `omitempty` drops it, except for the
//! pointer fields whose zero means something ([`ZERO_MEANS_SOMETHING`]).

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, Kind, MapKey, MessageDescriptor, ReflectMessage, Value as Pb,
};
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};

/// The content type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// What every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8] = b"k8s\0";

/// The message descriptors of the Kubernetes API groups.
static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(&include_bytes!("../proto/kubernetes.fds")[..])
        .expect("the embedded Kubernetes descriptors decode")
});

const META: &str = "apimachinery.pkg.apis.meta.v1";

/// JSON fields whose Go type is a pointer and whose zero value (`0`, `false`) means
/// something other than "unset", so a zero read from the wire is kept.
const ZERO_MEANS_SOMETHING: &[&str] = &[
    // Counts and durations where 0 is a choice.
    "replicas",
    "parallelism",
    "completions",
    "backoffLimit",
    "backoffLimitPerIndex",
    "maxFailedIndexes",
    "activeDeadlineSeconds",
    "ttlSecondsAfterFinished",
    "terminationGracePeriodSeconds",
    "gracePeriodSeconds",
    "revisionHistoryLimit",
    "progressDeadlineSeconds",
    "successfulJobsHistoryLimit",
    "failedJobsHistoryLimit",
    "startingDeadlineSeconds",
    "expirationSeconds",
    "deletionGracePeriodSeconds",
    "runAsUser",
    "runAsGroup",
    "fsGroup",
    "defaultMode",
    "mode",
    "priority",
    // Switches whose false overrides a true default or a true elsewhere.
    "automountServiceAccountToken",
    "enableServiceLinks",
    "allowPrivilegeEscalation",
    "privileged",
    "readOnlyRootFilesystem",
    "runAsNonRoot",
    "suspend",
    "optional",
    "immutable",
    "hostUsers",
    "setHostnameAsFQDN",
    "shareProcessNamespace",
    "orphanDependents",
    "allowed",
    "denied",
    "ready",
    "serving",
    "terminating",
];

fn malformed(why: &str) -> ApiError {
    ApiError::bad_request(format!("malformed protobuf body: {why}"))
}

/// The message type of `kind` in `api_version`, if Kubernetes has one.
pub fn message_of(api_version: &str, kind: &str) -> Option<MessageDescriptor> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let package = match group {
        "" => format!("api.core.{version}"),
        "meta.k8s.io" => format!("apimachinery.pkg.apis.meta.{version}"),
        "metrics.k8s.io" => format!("metrics.pkg.apis.metrics.{version}"),
        g => format!("api.{}.{version}", g.split('.').next().unwrap_or(g)),
    };
    POOL.get_message_by_name(&format!("{package}.{kind}"))
        // Options kinds (DeleteOptions, ...) are sent under any group's version.
        .or_else(|| POOL.get_message_by_name(&format!("{META}.{kind}")))
}

/// Decodes a protobuf request body into the JSON object it stands for. Kinds without a
/// Kubernetes protobuf type are 415; bodies that do not decode are 400.
pub fn decode(body: &[u8]) -> ApiResult<Value> {
    let inner = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| malformed("missing the k8s\\0 prefix"))?;
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(inner)
        .map_err(|e| malformed(&e.to_string()))?;
    if unknown
        .content_encoding
        .as_deref()
        .is_some_and(|e| !e.is_empty())
    {
        return Err(ApiError::unsupported_media_type(
            "encoded protobuf bodies are not supported",
        ));
    }
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    let desc = message_of(&api_version, &kind).ok_or_else(|| {
        ApiError::unsupported_media_type(format!(
            "{kind} ({api_version}) has no Kubernetes protobuf type; send JSON or YAML"
        ))
    })?;
    let msg = DynamicMessage::decode(desc, &unknown.raw.unwrap_or_default()[..])
        .map_err(|e| malformed(&e.to_string()))?;
    let mut obj = match to_json(&msg)? {
        Value::Object(o) => o,
        _ => Map::new(),
    };
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    Ok(Value::Object(obj))
}

/// Encodes `obj` (with its `apiVersion` and `kind`) as a protobuf body, or None when its
/// kind has no Kubernetes protobuf type or its JSON does not fit that type.
pub fn encode(obj: &Value) -> Option<Vec<u8>> {
    let api_version = obj.get("apiVersion")?.as_str()?;
    let kind = obj.get("kind")?.as_str()?;
    let desc = message_of(api_version, kind)?;
    let raw = from_json(&desc, obj).ok()?.encode_to_vec();
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some(api_version.to_owned()),
            kind: Some(kind.to_owned()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    Some([MAGIC, &unknown.encode_to_vec()].concat())
}

/// True when `accept` puts Kubernetes protobuf first.
pub fn preferred(accept: Option<&str>) -> bool {
    accept
        .and_then(|a| a.split(',').next())
        .is_some_and(|first| first.split(';').next().unwrap_or("").trim() == CONTENT_TYPE)
}

/// The special messages with JSON forms of their own, by full name.
#[derive(Clone, Copy)]
enum Special {
    Time,
    MicroTime,
    Duration,
    Quantity,
    IntOrString,
    RawJson,
    StringList,
}

fn special(desc: &MessageDescriptor) -> Option<Special> {
    Some(match desc.full_name() {
        "apimachinery.pkg.apis.meta.v1.Time" => Special::Time,
        "apimachinery.pkg.apis.meta.v1.MicroTime" => Special::MicroTime,
        "apimachinery.pkg.apis.meta.v1.Duration" => Special::Duration,
        "apimachinery.pkg.api.resource.Quantity" => Special::Quantity,
        "apimachinery.pkg.util.intstr.IntOrString" => Special::IntOrString,
        "apimachinery.pkg.runtime.RawExtension" | "apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            Special::RawJson
        }
        "apimachinery.pkg.apis.meta.v1.Verbs"
        | "api.authentication.v1.ExtraValue"
        | "api.authorization.v1.ExtraValue" => Special::StringList,
        _ => return None,
    })
}

fn int_field(msg: &DynamicMessage, name: &str) -> i64 {
    match msg.get_field_by_name(name).as_deref() {
        Some(Pb::I64(n)) => *n,
        Some(Pb::I32(n)) => i64::from(*n),
        _ => 0,
    }
}

fn str_field(msg: &DynamicMessage, name: &str) -> String {
    match msg.get_field_by_name(name).as_deref() {
        Some(Pb::String(s)) => s.clone(),
        _ => String::new(),
    }
}

/// A Go `time.Duration` (nanoseconds) as Go prints it: `1h2m3.5s`, `150ms`, `0s`.
fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let ns = ns.unsigned_abs();
    if ns < 1_000_000_000 {
        let (unit, div) = match ns {
            n if n < 1_000 => ("ns", 1),
            n if n < 1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        let whole = ns / div;
        let frac = ns % div;
        let frac = if frac == 0 {
            String::new()
        } else {
            let digits = div.ilog10() as usize;
            format!(".{:0digits$}", frac)
                .trim_end_matches('0')
                .to_owned()
        };
        return format!("{sign}{whole}{frac}{unit}");
    }
    let (h, rest) = (ns / 3_600_000_000_000, ns % 3_600_000_000_000);
    let (m, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let (s, frac) = (rest / 1_000_000_000, rest % 1_000_000_000);
    let frac = if frac == 0 {
        String::new()
    } else {
        format!(".{frac:09}").trim_end_matches('0').to_owned()
    };
    let mut out = sign.to_owned();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}{frac}s"));
    out
}

/// Parses a Go duration string (`1h2m3.5s`, `150ms`) into nanoseconds.
fn parse_go_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    match rest {
        "0" => return Some(0),
        "" => return None,
        _ => {}
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&e| e > 0)?;
        let n: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    (total <= i64::MAX as f64).then(|| (if neg { -total } else { total }) as i64)
}

fn special_to_json(kind: Special, msg: &DynamicMessage) -> ApiResult<Value> {
    Ok(match kind {
        Special::Time | Special::MicroTime => {
            let (secs, nanos) = (int_field(msg, "seconds"), int_field(msg, "nanos"));
            if secs == 0 && nanos == 0 {
                return Ok(Value::Null);
            }
            let t = chrono::DateTime::from_timestamp(secs, u32::try_from(nanos).unwrap_or(0))
                .ok_or_else(|| malformed("a time out of range"))?;
            let format = match kind {
                Special::Time => chrono::SecondsFormat::Secs,
                _ => chrono::SecondsFormat::Micros,
            };
            json!(t.to_rfc3339_opts(format, true))
        }
        Special::Duration => json!(go_duration(int_field(msg, "duration"))),
        Special::Quantity => match str_field(msg, "string") {
            q if q.is_empty() => Value::Null,
            q => json!(q),
        },
        Special::IntOrString => match int_field(msg, "type") {
            1 => json!(str_field(msg, "strVal")),
            _ => json!(int_field(msg, "intVal")),
        },
        Special::RawJson => match msg.fields().next() {
            Some((_, Pb::Bytes(raw))) if !raw.is_empty() => {
                serde_json::from_slice(raw).map_err(|_| {
                    ApiError::unsupported_media_type(
                        "an embedded object that is not JSON is not supported",
                    )
                })?
            }
            _ => Value::Null,
        },
        Special::StringList => match msg.fields().next() {
            Some((_, Pb::List(items))) => items
                .iter()
                .map(|v| match v {
                    Pb::String(s) => json!(s),
                    _ => json!(""),
                })
                .collect::<Vec<_>>()
                .into(),
            _ => json!([]),
        },
    })
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

fn scalar_to_json(v: &Pb) -> ApiResult<Value> {
    Ok(match v {
        Pb::Bool(b) => json!(b),
        Pb::I32(n) => json!(n),
        Pb::I64(n) => json!(n),
        Pb::U32(n) => json!(n),
        Pb::U64(n) => json!(n),
        Pb::F32(n) => json!(n),
        Pb::F64(n) => json!(n),
        Pb::String(s) => json!(s),
        Pb::Bytes(b) => json!(STANDARD.encode(b)),
        Pb::EnumNumber(n) => json!(n),
        Pb::Message(m) => to_json(m)?,
        Pb::List(items) => items
            .iter()
            .map(scalar_to_json)
            .collect::<ApiResult<Vec<_>>>()?
            .into(),
        Pb::Map(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    MapKey::String(s) => s.clone(),
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(n) => n.to_string(),
                    MapKey::I64(n) => n.to_string(),
                    MapKey::U32(n) => n.to_string(),
                    MapKey::U64(n) => n.to_string(),
                };
                out.insert(key, scalar_to_json(v)?);
            }
            Value::Object(out)
        }
    })
}

/// The JSON of a decoded message, by Kubernetes' rules (see the module docs).
fn to_json(msg: &DynamicMessage) -> ApiResult<Value> {
    let desc = msg.descriptor();
    if let Some(kind) = special(&desc) {
        return special_to_json(kind, msg);
    }
    let mut out = Map::new();
    for (field, value) in msg.fields() {
        let v = scalar_to_json(value)?;
        let scalar = !matches!(value, Pb::Message(_) | Pb::List(_) | Pb::Map(_));
        let keep_zero =
            ZERO_MEANS_SOMETHING.contains(&field.name()) && !matches!(value, Pb::String(_));
        if v.is_null() || (scalar && is_zero(&v) && !keep_zero) {
            continue;
        }
        out.insert(field.name().to_owned(), v);
    }
    Ok(Value::Object(out))
}

/// Why a JSON value does not fit a field (only our own objects are encoded, so this
/// means a kind whose JSON differs from Kubernetes'; the caller answers JSON instead).
#[derive(Debug)]
struct Misfit;

fn special_from_json(
    kind: Special,
    desc: &MessageDescriptor,
    v: &Value,
) -> Result<DynamicMessage, Misfit> {
    let mut msg = DynamicMessage::new(desc.clone());
    let mut set = |name: &str, value: Pb| -> Result<(), Misfit> {
        let f = desc.get_field_by_name(name).ok_or(Misfit)?;
        msg.try_set_field(&f, value).map_err(|_| Misfit)
    };
    match kind {
        Special::Time | Special::MicroTime => {
            let t = chrono::DateTime::parse_from_rfc3339(v.as_str().ok_or(Misfit)?)
                .map_err(|_| Misfit)?;
            set("seconds", Pb::I64(t.timestamp()))?;
            set("nanos", Pb::I32(t.timestamp_subsec_nanos() as i32))?;
        }
        Special::Duration => set(
            "duration",
            Pb::I64(parse_go_duration(v.as_str().ok_or(Misfit)?).ok_or(Misfit)?),
        )?,
        Special::Quantity => {
            let q = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(Misfit),
            };
            set("string", Pb::String(q))?;
        }
        Special::IntOrString => match v {
            Value::String(s) => {
                set("type", Pb::I64(1))?;
                set("strVal", Pb::String(s.clone()))?;
            }
            Value::Number(n) => {
                set("type", Pb::I64(0))?;
                set(
                    "intVal",
                    Pb::I32(
                        n.as_i64()
                            .and_then(|n| i32::try_from(n).ok())
                            .ok_or(Misfit)?,
                    ),
                )?;
            }
            _ => return Err(Misfit),
        },
        Special::RawJson => {
            let f = desc.fields().next().ok_or(Misfit)?;
            set(f.name(), Pb::Bytes(v.to_string().into_bytes().into()))?;
        }
        Special::StringList => {
            let items = v
                .as_array()
                .ok_or(Misfit)?
                .iter()
                .map(|s| s.as_str().map(|s| Pb::String(s.to_owned())).ok_or(Misfit))
                .collect::<Result<Vec<_>, _>>()?;
            let f = desc.fields().next().ok_or(Misfit)?;
            set(f.name(), Pb::List(items))?;
        }
    }
    Ok(msg)
}

fn value_from_json(kind: &Kind, v: &Value) -> Result<Pb, Misfit> {
    let int = || v.as_i64().ok_or(Misfit);
    Ok(match kind {
        Kind::Bool => Pb::Bool(v.as_bool().ok_or(Misfit)?),
        Kind::String => Pb::String(v.as_str().ok_or(Misfit)?.to_owned()),
        Kind::Bytes => Pb::Bytes(
            STANDARD
                .decode(v.as_str().ok_or(Misfit)?)
                .map_err(|_| Misfit)?
                .into(),
        ),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Pb::I32(i32::try_from(int()?).map_err(|_| Misfit)?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Pb::I64(int()?),
        Kind::Uint32 | Kind::Fixed32 => Pb::U32(u32::try_from(int()?).map_err(|_| Misfit)?),
        Kind::Uint64 | Kind::Fixed64 => Pb::U64(v.as_u64().ok_or(Misfit)?),
        Kind::Float => Pb::F32(v.as_f64().ok_or(Misfit)? as f32),
        Kind::Double => Pb::F64(v.as_f64().ok_or(Misfit)?),
        Kind::Enum(_) => Pb::EnumNumber(i32::try_from(int()?).map_err(|_| Misfit)?),
        Kind::Message(m) => Pb::Message(from_json(m, v)?),
    })
}

/// The message `desc` from JSON; fields Kubernetes does not have (Arktos' and ours) are
/// left out, as a Kubernetes client would not know them.
fn from_json(desc: &MessageDescriptor, v: &Value) -> Result<DynamicMessage, Misfit> {
    if let Some(kind) = special(desc) {
        return special_from_json(kind, desc, v);
    }
    let obj = v.as_object().ok_or(Misfit)?;
    let mut msg = DynamicMessage::new(desc.clone());
    for (name, value) in obj {
        let Some(field) = desc.get_field_by_name(name) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        let kind = field.kind();
        let pb = if field.is_map() {
            let entry = kind.as_message().ok_or(Misfit)?;
            let value_field = entry.map_entry_value_field();
            let mut map = std::collections::HashMap::new();
            for (k, item) in value.as_object().ok_or(Misfit)? {
                map.insert(
                    MapKey::String(k.clone()),
                    value_from_json(&value_field.kind(), item)?,
                );
            }
            Pb::Map(map)
        } else if field.is_list() {
            Pb::List(
                value
                    .as_array()
                    .ok_or(Misfit)?
                    .iter()
                    .map(|item| value_from_json(&kind, item))
                    .collect::<Result<_, _>>()?,
            )
        } else {
            value_from_json(&kind, value)?
        };
        msg.try_set_field(&field, pb).map_err(|_| Misfit)?;
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use k8s_pb::api::apps::v1 as apps;
    use k8s_pb::api::core::v1 as core;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let u = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            ..Default::default()
        };
        [MAGIC, &u.encode_to_vec()].concat()
    }

    /// A Deployment as Go writes it: every non-pointer field present, zero or not.
    fn deployment() -> apps::Deployment {
        let labels: std::collections::BTreeMap<_, _> =
            [("app".to_owned(), "web".to_owned())].into();
        apps::Deployment {
            metadata: Some(meta::ObjectMeta {
                name: Some("web".into()),
                generate_name: Some(String::new()),
                namespace: Some(String::new()),
                uid: Some(String::new()),
                generation: Some(0),
                creation_timestamp: Some(meta::Time {
                    seconds: Some(0),
                    nanos: Some(0),
                }),
                labels: labels.clone(),
                ..Default::default()
            }),
            spec: Some(apps::DeploymentSpec {
                replicas: Some(0),
                selector: Some(meta::LabelSelector {
                    match_labels: labels.clone(),
                    ..Default::default()
                }),
                template: Some(core::PodTemplateSpec {
                    metadata: Some(meta::ObjectMeta {
                        labels,
                        creation_timestamp: Some(meta::Time::default()),
                        ..Default::default()
                    }),
                    spec: Some(core::PodSpec {
                        containers: vec![core::Container {
                            name: Some("busybox".into()),
                            image: Some("busybox".into()),
                            command: vec!["sleep".into(), "3600".into()],
                            working_dir: Some(String::new()),
                            ports: vec![core::ContainerPort {
                                container_port: Some(8080),
                                host_port: Some(0),
                                ..Default::default()
                            }],
                            resources: Some(core::ResourceRequirements {
                                limits: [(
                                    "memory".to_owned(),
                                    k8s_pb::apimachinery::pkg::api::resource::Quantity {
                                        string: Some("64Mi".into()),
                                    },
                                )]
                                .into(),
                                ..Default::default()
                            }),
                            stdin: Some(false),
                            ..Default::default()
                        }],
                        automount_service_account_token: Some(false),
                        host_network: Some(false),
                        ..Default::default()
                    }),
                }),
                strategy: Some(apps::DeploymentStrategy {
                    r#type: Some("RollingUpdate".into()),
                    rolling_update: Some(apps::RollingUpdateDeployment {
                        max_surge: Some(IntOrString {
                            r#type: Some(1),
                            str_val: Some("25%".into()),
                            int_val: Some(0),
                        }),
                        max_unavailable: Some(IntOrString {
                            r#type: Some(0),
                            int_val: Some(1),
                            str_val: Some(String::new()),
                        }),
                    }),
                }),
                min_ready_seconds: Some(0),
                paused: Some(false),
                ..Default::default()
            }),
            status: Some(apps::DeploymentStatus::default()),
        }
    }

    #[test]
    fn a_deployment_decodes_as_kubernetes_reads_it() {
        let body = envelope("apps/v1", "Deployment", deployment().encode_to_vec());
        let obj = decode(&body).unwrap();
        assert_eq!(
            (obj["apiVersion"].as_str(), obj["kind"].as_str()),
            (Some("apps/v1"), Some("Deployment"))
        );
        let meta = &obj["metadata"];
        assert_eq!(meta["name"], "web");
        // Go's zero values of non-pointer fields are not fields at all.
        for unset in [
            "generateName",
            "namespace",
            "uid",
            "generation",
            "creationTimestamp",
        ] {
            assert!(meta.get(unset).is_none(), "{unset} in {meta}");
        }
        let spec = &obj["spec"];
        assert_eq!(spec["replicas"], 0, "a pointer's zero is kept");
        assert!(spec.get("minReadySeconds").is_none() && spec.get("paused").is_none());
        assert_eq!(spec["selector"]["matchLabels"]["app"], "web");
        assert_eq!(spec["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 1);
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert!(pod.get("hostNetwork").is_none());
        let c = &pod["containers"][0];
        assert_eq!(c["command"], json!(["sleep", "3600"]));
        assert_eq!(c["ports"], json!([{"containerPort": 8080}]));
        assert_eq!(c["resources"]["limits"]["memory"], "64Mi");
        assert!(c.get("workingDir").is_none() && c.get("stdin").is_none());
        assert!(
            spec["template"]["metadata"]
                .get("creationTimestamp")
                .is_none()
        );
        // Every model kind reads it.
        let registry = crate::region::registry();
        let info = registry.by_plural("apps", "v1", "deployments").unwrap();
        info.validate(&obj).unwrap();
    }

    #[test]
    fn objects_round_trip_through_protobuf() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "uid": "u-1",
                "creationTimestamp": "2026-12-06T10:00:00Z", "labels": {"a": "b"},
                "tenant": "acme", "hashKey": 7,
                "managedFields": [{"manager": "kubectl", "operation": "Apply",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}},
                    "time": "2026-12-06T10:00:00Z"}]},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "100m"}}}],
                "terminationGracePeriodSeconds": 0, "restartPolicy": "Always"},
            "status": {"phase": "Running", "podIP": "10.0.0.5",
                "startTime": "2026-12-06T10:00:01Z"}});
        let body = encode(&pod).unwrap();
        let back = decode(&body).unwrap();
        let mut expected = pod.clone();
        // Arktos' fields are not in Kubernetes' Pod.
        let m = expected["metadata"].as_object_mut().unwrap();
        m.remove("tenant");
        m.remove("hashKey");
        assert_eq!(back, expected);
        // Kinds Kubernetes has no type for are not encoded.
        assert!(encode(&json!({"apiVersion": "vpc.centaurus.io/v1", "kind": "Vpc"})).is_none());
        // Nor JSON that does not fit the type.
        assert!(
            encode(&json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": 3}}))
                .is_none()
        );
    }

    #[test]
    fn bad_bodies_are_refused_cleanly() {
        let body = envelope("apps/v1", "Deployment", deployment().encode_to_vec());
        for cut in 0..body.len() {
            if let Err(e) = decode(&body[..cut]) {
                assert!(e.code == 400 || e.code == 415, "{e}");
            }
        }
        assert_eq!(decode(b"{}").unwrap_err().code, 400);
        let ours = envelope("vpc.centaurus.io/v1", "Vpc", vec![]);
        let e = decode(&ours).unwrap_err();
        assert_eq!(e.code, 415);
        assert!(e.message.contains("send JSON or YAML"), "{}", e.message);
    }

    #[test]
    fn config_and_accounts_decode_as_kubectl_sends_them() {
        let secret = core::Secret {
            metadata: Some(meta::ObjectMeta {
                name: Some("db".into()),
                ..Default::default()
            }),
            data: [("password".to_owned(), b"hunter2".to_vec())].into(),
            r#type: Some("Opaque".into()),
            immutable: None,
            ..Default::default()
        };
        let obj = decode(&envelope("v1", "Secret", secret.encode_to_vec())).unwrap();
        assert_eq!(obj["data"]["password"], "aHVudGVyMg==");
        assert!(obj.get("immutable").is_none());
        // The fuzz corpus' seeds are what `kubectl create token|serviceaccount` send.
        let seed = |name: &str| {
            let path = format!(
                "{}/../fuzz/corpus/request_body/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            std::fs::read(path).unwrap()[1..].to_vec()
        };
        let tr = decode(&seed("token_request.pb")).unwrap();
        assert_eq!(tr["kind"], "TokenRequest");
        assert_eq!(tr["spec"]["expirationSeconds"], 3600);
        assert_eq!(tr["spec"]["boundObjectRef"]["name"], "web");
        // `kubectl create deployment cap --image=busybox --replicas=2 --port=8080 -- sleep 3600`
        let d = decode(&seed("deployment.pb")).unwrap();
        assert_eq!(d["spec"]["replicas"], 2);
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["ports"], json!([{"containerPort": 8080}]));
        assert_eq!(c["command"], json!(["sleep", "3600"]));
        assert_eq!(c["resources"], json!({}));
        assert!(encode(&d).is_some());
        let sa = decode(&seed("service_account.pb")).unwrap();
        assert_eq!(sa["metadata"]["name"], "builder");
        assert_eq!(sa["automountServiceAccountToken"], true);
    }

    #[test]
    fn delete_options_and_reviews_decode() {
        let opts = meta::DeleteOptions {
            grace_period_seconds: Some(0),
            preconditions: Some(meta::Preconditions {
                resource_version: Some("42".into()),
                uid: None,
            }),
            propagation_policy: Some("Foreground".into()),
            ..Default::default()
        };
        let obj = decode(&envelope("v1", "DeleteOptions", opts.encode_to_vec())).unwrap();
        assert_eq!(obj["gracePeriodSeconds"], 0);
        assert_eq!(obj["preconditions"]["resourceVersion"], "42");
        use k8s_pb::api::authorization::v1 as authz;
        let review = authz::SelfSubjectAccessReview {
            spec: Some(authz::SelfSubjectAccessReviewSpec {
                resource_attributes: Some(authz::ResourceAttributes {
                    namespace: Some("dev".into()),
                    verb: Some("create".into()),
                    resource: Some("pods".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let obj = decode(&envelope(
            "authorization.k8s.io/v1",
            "SelfSubjectAccessReview",
            review.encode_to_vec(),
        ))
        .unwrap();
        assert_eq!(obj["spec"]["resourceAttributes"]["verb"], "create");
    }

    #[test]
    fn go_durations_print_and_parse_as_go_does() {
        for (ns, s) in [
            (0, "0s"),
            (1_500_000_000, "1.5s"),
            (150_000_000, "150ms"),
            (3_723_000_000_000, "1h2m3s"),
            (60_000_000_000, "1m0s"),
            (-2_000, "-2µs"),
        ] {
            assert_eq!(go_duration(ns), s);
            assert_eq!(parse_go_duration(s), Some(ns), "{s}");
        }
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn protobuf_is_preferred_only_when_first() {
        assert!(preferred(Some(
            "application/vnd.kubernetes.protobuf, application/json"
        )));
        assert!(preferred(Some("application/vnd.kubernetes.protobuf;q=1")));
        assert!(!preferred(Some(
            "application/json, application/vnd.kubernetes.protobuf"
        )));
        assert!(!preferred(None));
    }
}
