//! Configuration handed to pods: `ConfigMap` and `Secret` (core `v1`).
//!
//! Both are maps of file-name-like keys to values; a Secret's values are bytes (base64 in
//! JSON, as Kubernetes encodes them) and are sealed at rest by the store
//! ([`crate::store::Sealed`]). An `immutable` object's data can never change again.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validation::{Errors, FieldError};
use super::{ObjectMeta, Resource};

/// Most bytes of data one ConfigMap or Secret holds (Kubernetes' limit).
pub const MAX_CONFIG_SIZE: usize = 1024 * 1024;

/// The default Secret type.
pub const SECRET_TYPE_OPAQUE: &str = "Opaque";

/// Keys and values a pod can read as files or environment variables.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMap {
    /// `v1`.
    #[serde(default)]
    pub api_version: String,
    /// `ConfigMap`.
    #[serde(default)]
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// UTF-8 values by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Binary values by key (base64 in JSON); keys distinct from `data`'s.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "base64_values"
    )]
    #[schemars(with = "BTreeMap<String, String>")]
    pub binary_data: BTreeMap<String, Vec<u8>>,
    /// When true, the data can never change again (the object can still be deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}
crate::impl_resource!(
    ConfigMap,
    kind = "ConfigMap",
    group = "",
    version = "v1",
    plural = "configmaps",
    scope = Namespaced,
    short = ["cm"],
    validate = validate_config_map,
    update = validate_config_map_update
);

/// Confidential keys and values, sealed at rest and handed only to the pods that use them.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    /// `v1`.
    #[serde(default)]
    pub api_version: String,
    /// `Secret`.
    #[serde(default)]
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Values by key (base64 in JSON).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "base64_values"
    )]
    #[schemars(with = "BTreeMap<String, String>")]
    pub data: BTreeMap<String, Vec<u8>>,
    /// Write-only UTF-8 values, merged into `data` on write (they win over `data`) and
    /// never stored or returned.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, String>,
    /// What the data is for (`Opaque`, `kubernetes.io/tls`, ...); fixed at creation.
    #[serde(default, rename = "type")]
    pub type_: String,
    /// When true, the data can never change again (the object can still be deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}
crate::impl_resource!(
    Secret,
    kind = "Secret",
    group = "",
    version = "v1",
    plural = "secrets",
    scope = Namespaced,
    validate = validate_secret,
    defaults = default_secret,
    update = validate_secret_update
);

/// A Secret's values never reach logs: only its name and keys are shown.
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("metadata", &self.metadata)
            .field("type", &self.type_)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn default_secret(s: &mut Secret) {
    for (k, v) in std::mem::take(&mut s.string_data) {
        s.data.insert(k, v.into_bytes());
    }
    if s.type_.is_empty() {
        s.type_ = SECRET_TYPE_OPAQUE.to_owned();
    }
}

/// Checks a key of a ConfigMap or Secret: what a file name in a volume may be
/// (Kubernetes' `IsConfigMapKey`).
pub fn config_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("must not be empty".into());
    }
    if key.len() > 253 {
        return Err(format!(
            "must be no more than 253 characters, not {}",
            key.len()
        ));
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "{key:?} must consist of alphanumeric characters, '-', '_' or '.'"
        ));
    }
    if key == "." || key == ".." || key.starts_with("..") {
        return Err(format!(
            "{key:?} must not be '.' or '..' or start with '..'"
        ));
    }
    Ok(())
}

fn check_keys<'a>(errors: &mut Errors, field: &str, keys: impl Iterator<Item = &'a String>) {
    for k in keys {
        errors.check(format!("{field}[{k}]"), config_key(k));
    }
}

fn check_size(errors: &mut Errors, size: usize) {
    if size > MAX_CONFIG_SIZE {
        errors.push(
            "data",
            format!("total size {size} exceeds {MAX_CONFIG_SIZE} bytes"),
        );
    }
}

fn validate_config_map(cm: &ConfigMap) -> Result<(), Vec<FieldError>> {
    let mut errors = Errors::default();
    check_keys(&mut errors, "data", cm.data.keys());
    check_keys(&mut errors, "binaryData", cm.binary_data.keys());
    for k in cm.binary_data.keys().filter(|k| cm.data.contains_key(*k)) {
        errors.push(
            format!("binaryData[{k}]"),
            "duplicate of a key in data: a key is in data or binaryData, not both",
        );
    }
    let size = cm
        .data
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum::<usize>()
        + cm.binary_data
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    check_size(&mut errors, size);
    errors.into_result()
}

/// The keys a Secret of a well-known type must have.
fn required_keys(type_: &str) -> &'static [&'static str] {
    match type_ {
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        _ => &[],
    }
}

fn validate_secret(s: &Secret) -> Result<(), Vec<FieldError>> {
    let mut errors = Errors::default();
    check_keys(&mut errors, "data", s.data.keys());
    check_size(
        &mut errors,
        s.data.iter().map(|(k, v)| k.len() + v.len()).sum(),
    );
    for key in required_keys(&s.type_) {
        if !s.data.contains_key(*key) {
            errors.push(
                format!("data[{key}]"),
                format!("required for a Secret of type {}", s.type_),
            );
        }
    }
    match s.type_.as_str() {
        "kubernetes.io/dockerconfigjson" => {
            if let Some(v) = s.data.get(".dockerconfigjson")
                && serde_json::from_slice::<serde_json::Value>(v).is_err()
            {
                errors.push("data[.dockerconfigjson]", "must be valid JSON");
            }
        }
        "kubernetes.io/basic-auth"
            if !s.data.contains_key("username") && !s.data.contains_key("password") =>
        {
            errors.push(
                "data",
                "a kubernetes.io/basic-auth Secret needs username or password",
            );
        }
        "kubernetes.io/service-account-token"
            if !s
                .metadata
                .annotations
                .contains_key("kubernetes.io/service-account.name") =>
        {
            errors.push(
                "metadata.annotations[kubernetes.io/service-account.name]",
                "required for a Secret of type kubernetes.io/service-account-token",
            );
        }
        _ => {}
    }
    errors.into_result()
}

fn immutable_rules(
    errors: &mut Errors,
    was_immutable: Option<bool>,
    is_immutable: Option<bool>,
    data_changed: bool,
) {
    if was_immutable == Some(true) {
        if is_immutable != Some(true) {
            errors.push("immutable", "field is immutable when `immutable` is set");
        }
        if data_changed {
            errors.push("data", "field is immutable when `immutable` is set");
        }
    }
}

fn validate_config_map_update(new: &ConfigMap, old: &ConfigMap) -> Result<(), Vec<FieldError>> {
    let mut errors = Errors::default();
    immutable_rules(
        &mut errors,
        old.immutable,
        new.immutable,
        new.data != old.data || new.binary_data != old.binary_data,
    );
    errors.into_result()
}

fn validate_secret_update(new: &Secret, old: &Secret) -> Result<(), Vec<FieldError>> {
    let mut errors = Errors::default();
    if new.type_ != old.type_ {
        errors.push(
            "type",
            format!("field is immutable (it is {:?})", old.type_),
        );
    }
    immutable_rules(
        &mut errors,
        old.immutable,
        new.immutable,
        new.data != old.data,
    );
    errors.into_result()
}

/// Serde for maps of byte values written as base64 strings.
mod base64_values {
    use std::collections::BTreeMap;

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, v)| (k, STANDARD.encode(v))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        let text = Option::<BTreeMap<String, Option<String>>>::deserialize(d)?.unwrap_or_default();
        text.into_iter()
            .map(|(k, v)| {
                let v = v.unwrap_or_default();
                STANDARD
                    .decode(v.as_bytes())
                    .map(|b| (k.clone(), b))
                    .map_err(|e| D::Error::custom(format!("value of {k:?} is not base64: {e}")))
            })
            .collect()
    }
}

impl ConfigMap {
    /// The value of `key` as bytes, from `data` or `binaryData`.
    pub fn value(&self, key: &str) -> Option<&[u8]> {
        self.data
            .get(key)
            .map(|v| v.as_bytes())
            .or_else(|| self.binary_data.get(key).map(Vec::as_slice))
    }
}

impl Secret {
    /// A new Secret with `data`.
    pub fn with_data(metadata: ObjectMeta, data: BTreeMap<String, Vec<u8>>) -> Self {
        let mut s = Self::typed(metadata);
        s.data = data;
        s.type_ = SECRET_TYPE_OPAQUE.to_owned();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Registry;
    use serde_json::json;

    fn decode(v: serde_json::Value) -> Result<serde_json::Value, crate::model::DecodeError> {
        let r = Registry::builtin();
        let info = r.by_kind("v1", v["kind"].as_str().unwrap()).unwrap();
        info.decode(&v).map(|d| d.value)
    }

    #[test]
    fn string_data_is_merged_into_data_and_never_stored() {
        let v = decode(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "default"},
            "data": {"a": "b2xk", "b": "Yg=="}, "stringData": {"a": "new"}}))
        .unwrap();
        assert_eq!(v["data"], json!({"a": "bmV3", "b": "Yg=="}));
        assert!(v.get("stringData").is_none());
        assert_eq!(v["type"], "Opaque");
    }

    #[test]
    fn bad_keys_values_and_types_are_refused_with_their_field() {
        let e = decode(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "default"}, "data": {"a": "not base64!"}}))
        .unwrap_err();
        assert!(
            matches!(e, crate::model::DecodeError::Malformed(f) if f.field == "data" && f.message.contains("base64"))
        );
        let e = decode(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "default"},
            "data": {"../x": "1", "ok": "2"}, "binaryData": {"ok": "Mg=="}}))
        .unwrap_err();
        let crate::model::DecodeError::Invalid(fields) = e else {
            panic!("{e:?}")
        };
        let names: Vec<_> = fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(names, ["data[../x]", "binaryData[ok]"]);
        let e = decode(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "default"}, "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": "x"}}))
        .unwrap_err();
        assert!(format!("{e:?}").contains("data[tls.key]"), "{e:?}");
        let big = "x".repeat(MAX_CONFIG_SIZE);
        assert!(
            decode(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "default"}, "data": {"k": big}}))
            .is_err()
        );
    }

    #[test]
    fn immutable_data_and_secret_types_never_change() {
        let r = Registry::builtin();
        let cm = r.by_kind("v1", "ConfigMap").unwrap();
        let old = json!({"metadata": {"name": "c"}, "data": {"a": "1"}, "immutable": true});
        let changed = json!({"metadata": {"name": "c"}, "data": {"a": "2"}, "immutable": true});
        let unset = json!({"metadata": {"name": "c"}, "data": {"a": "1"}});
        let relabeled = json!({"metadata": {"name": "c", "labels": {"x": "y"}}, "data": {"a": "1"}, "immutable": true});
        assert!(cm.validate_update(&changed, &old).is_err());
        assert!(cm.validate_update(&unset, &old).is_err());
        cm.validate_update(&relabeled, &old).unwrap();
        cm.validate_update(&changed, &unset).unwrap();
        let secret = r.by_kind("v1", "Secret").unwrap();
        let e = secret
            .validate_update(
                &json!({"metadata": {"name": "s"}, "type": "kubernetes.io/basic-auth", "data": {"username": "YQ=="}}),
                &json!({"metadata": {"name": "s"}, "type": "Opaque"}),
            )
            .unwrap_err();
        assert_eq!(e[0].field, "type");
    }

    #[test]
    fn a_secret_debug_shows_keys_not_values() {
        let s = Secret::with_data(
            ObjectMeta::default(),
            [("password".to_owned(), b"hunter2".to_vec())].into(),
        );
        let shown = format!("{s:?}");
        assert!(
            shown.contains("password") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
