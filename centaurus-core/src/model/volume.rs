//! What a container pod takes from its tenant's configuration: environment variables from
//! ConfigMaps, Secrets and the pod's own fields, and volumes (`configMap`, `secret`,
//! `emptyDir`) mounted into its containers.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::config::config_key;
use super::validation::{self, Errors};
use super::{Container, PodSpec};

/// Where an environment variable's value comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    /// A key of a ConfigMap in the pod's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeySelector>,
    /// A key of a Secret in the pod's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeySelector>,
    /// A field of the pod (`metadata.name`, `metadata.namespace`, `metadata.uid`,
    /// `metadata.labels['KEY']`, `metadata.annotations['KEY']`, `spec.nodeName`,
    /// `spec.serviceAccountName`, `status.hostIP`, `status.podIP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<FieldSelector>,
}

/// A key of a ConfigMap or Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeySelector {
    /// The object's name.
    pub name: String,
    /// The key.
    pub key: String,
    /// When true, a missing object or key leaves the variable unset instead of keeping
    /// the container from starting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// A field of the pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldSelector {
    /// The field's path.
    pub field_path: String,
    /// The version the path is in (`v1`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
}

/// Every key of a ConfigMap or Secret as environment variables.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvFromSource {
    /// Put before each key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// The ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ObjectRef>,
    /// The Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<ObjectRef>,
}

/// A ConfigMap or Secret by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// Its name.
    pub name: String,
    /// When true, a missing object is no error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// A volume of a pod. Exactly one source is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// Unique within the pod (a DNS label); mounts name it.
    pub name: String,
    /// The keys of a ConfigMap as files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapVolumeSource>,
    /// The keys of a Secret as files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretVolumeSource>,
    /// An empty directory that lives as long as the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A ConfigMap's keys as files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapVolumeSource {
    /// The ConfigMap.
    pub name: String,
    /// The keys to project and their paths; every key, named as itself, when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<KeyToPath>,
    /// File mode bits (default 0644).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_mode: Option<i32>,
    /// When true, a missing ConfigMap gives an empty volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// A Secret's keys as files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretVolumeSource {
    /// The Secret.
    pub secret_name: String,
    /// The keys to project and their paths; every key, named as itself, when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<KeyToPath>,
    /// File mode bits (default 0644).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_mode: Option<i32>,
    /// When true, a missing Secret gives an empty volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// One key projected to a file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyToPath {
    /// The key.
    pub key: String,
    /// The file's path inside the volume (relative, no `..`).
    pub path: String,
    /// File mode bits; the volume's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<i32>,
}

/// A volume mounted into a container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    /// The volume.
    pub name: String,
    /// Where in the container (an absolute path).
    pub mount_path: String,
    /// Mounted read-only (ConfigMap and Secret volumes always are).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// A path inside the volume to mount instead of its root.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sub_path: String,
}

/// Which kind of configuration object a pod refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfigKind {
    /// A ConfigMap.
    ConfigMap,
    /// A Secret.
    Secret,
}

impl ConfigKind {
    /// The kind's plural.
    pub fn plural(self) -> &'static str {
        match self {
            Self::ConfigMap => "configmaps",
            Self::Secret => "secrets",
        }
    }
}

impl PodSpec {
    /// Every ConfigMap and Secret the pod refers to (from env, envFrom and volumes), with
    /// repeats.
    pub fn config_refs(&self) -> impl Iterator<Item = (ConfigKind, &str)> {
        let containers = self.containers.iter().flat_map(Container::config_refs);
        let volumes = self.volumes.iter().filter_map(|v| {
            v.config_map
                .as_ref()
                .map(|c| (ConfigKind::ConfigMap, c.name.as_str()))
                .or_else(|| {
                    v.secret
                        .as_ref()
                        .map(|s| (ConfigKind::Secret, s.secret_name.as_str()))
                })
        });
        containers.chain(volumes)
    }
}

impl Container {
    fn config_refs(&self) -> impl Iterator<Item = (ConfigKind, &str)> {
        let env = self.env.iter().filter_map(|e| {
            let from = e.value_from.as_ref()?;
            from.config_map_key_ref
                .as_ref()
                .map(|k| (ConfigKind::ConfigMap, k.name.as_str()))
                .or_else(|| {
                    from.secret_key_ref
                        .as_ref()
                        .map(|k| (ConfigKind::Secret, k.name.as_str()))
                })
        });
        let env_from = self.env_from.iter().filter_map(|e| {
            e.config_map_ref
                .as_ref()
                .map(|r| (ConfigKind::ConfigMap, r.name.as_str()))
                .or_else(|| {
                    e.secret_ref
                        .as_ref()
                        .map(|r| (ConfigKind::Secret, r.name.as_str()))
                })
        });
        env.chain(env_from)
    }
}

/// The pod fields an environment variable may take (`fieldRef.fieldPath`).
pub const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.podIP",
];

/// A relative path inside a volume: not empty, not absolute, no `..` element.
fn relative_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("must not be empty".into());
    }
    if path.starts_with('/') {
        return Err(format!("{path:?} must be a relative path"));
    }
    if path.split('/').any(|p| p == "..") {
        return Err(format!("{path:?} must not contain '..'"));
    }
    Ok(())
}

fn mode(errors: &mut Errors, field: String, mode: Option<i32>) {
    if let Some(m) = mode
        && !(0..=0o777).contains(&m)
    {
        errors.push(field, format!("{m} must be a file mode between 0 and 0777"));
    }
}

/// Checks a pod's env, envFrom, volumes and mounts.
pub(crate) fn validate_pod_config(errors: &mut Errors, field: &str, spec: &PodSpec) {
    let mut volumes = std::collections::BTreeSet::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        let f = format!("{field}.volumes[{i}]");
        errors.check(format!("{f}.name"), validation::dns_label(&v.name));
        if !volumes.insert(v.name.as_str()) {
            errors.push(
                format!("{f}.name"),
                format!("duplicate volume name {:?}", v.name),
            );
        }
        let sources = [
            v.config_map.is_some(),
            v.secret.is_some(),
            v.empty_dir.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            errors.push(
                f.clone(),
                "must have exactly one of configMap, secret and emptyDir (other volume types are not supported)",
            );
        }
        let projected = match (&v.config_map, &v.secret) {
            (Some(c), _) => Some((&c.name, &c.items, c.default_mode, "configMap.name")),
            (None, Some(s)) => Some((
                &s.secret_name,
                &s.items,
                s.default_mode,
                "secret.secretName",
            )),
            _ => None,
        };
        if let Some((name, items, default_mode, name_field)) = projected {
            let source = name_field.split('.').next().unwrap_or_default();
            errors.check(format!("{f}.{name_field}"), validation::dns_subdomain(name));
            mode(errors, format!("{f}.{source}.defaultMode"), default_mode);
            for (j, item) in items.iter().enumerate() {
                let g = format!("{f}.{source}.items[{j}]");
                errors.check(format!("{g}.key"), config_key(&item.key));
                errors.check(format!("{g}.path"), relative_path(&item.path));
                mode(errors, format!("{g}.mode"), item.mode);
            }
        }
    }
    for (i, c) in spec.containers.iter().enumerate() {
        let f = format!("{field}.containers[{i}]");
        for (j, e) in c.env.iter().enumerate() {
            let g = format!("{f}.env[{j}]");
            if e.name.is_empty() {
                errors.push(format!("{g}.name"), "must not be empty");
            }
            let Some(from) = &e.value_from else { continue };
            if !e.value.is_empty() {
                errors.push(
                    format!("{g}.valueFrom"),
                    "may not be specified when `value` is not empty",
                );
            }
            let set = [
                from.config_map_key_ref.is_some(),
                from.secret_key_ref.is_some(),
                from.field_ref.is_some(),
            ];
            if set.iter().filter(|s| **s).count() != 1 {
                errors.push(
                    format!("{g}.valueFrom"),
                    "must have exactly one of configMapKeyRef, secretKeyRef and fieldRef",
                );
            }
            for (sel, which) in [
                (&from.config_map_key_ref, "configMapKeyRef"),
                (&from.secret_key_ref, "secretKeyRef"),
            ] {
                if let Some(k) = sel {
                    errors.check(
                        format!("{g}.valueFrom.{which}.name"),
                        validation::dns_subdomain(&k.name),
                    );
                    errors.check(format!("{g}.valueFrom.{which}.key"), config_key(&k.key));
                }
            }
            if let Some(fr) = &from.field_ref {
                let p = fr.field_path.as_str();
                let labeled = ["metadata.labels['", "metadata.annotations['"]
                    .iter()
                    .any(|s| p.starts_with(s) && p.ends_with("']"));
                if !labeled && !ENV_FIELD_PATHS.contains(&p) {
                    errors.push(
                        format!("{g}.valueFrom.fieldRef.fieldPath"),
                        format!(
                            "{p:?} is not supported: one of {}, metadata.labels['KEY'], metadata.annotations['KEY']",
                            ENV_FIELD_PATHS.join(", ")
                        ),
                    );
                }
            }
        }
        for (j, e) in c.env_from.iter().enumerate() {
            let g = format!("{f}.envFrom[{j}]");
            match (&e.config_map_ref, &e.secret_ref) {
                (Some(r), None) | (None, Some(r)) => {
                    errors.check(g.clone(), validation::dns_subdomain(&r.name))
                }
                _ => errors.push(g, "must have exactly one of configMapRef and secretRef"),
            }
        }
        validate_mounts(errors, &f, &volumes, &c.volume_mounts);
    }
    if let Some(vm) = &spec.virtual_machine {
        let f = format!("{field}.virtualMachine");
        validate_mounts(errors, &f, &volumes, &vm.volume_mounts);
        for (j, m) in vm.volume_mounts.iter().enumerate() {
            if !m.sub_path.is_empty() {
                errors.push(
                    format!("{f}.volumeMounts[{j}].subPath"),
                    "is not supported in a VM guest",
                );
            }
        }
    }
}

/// Checks the mounts of a container or a VM (`field`) against the pod's volumes.
fn validate_mounts(
    errors: &mut Errors,
    field: &str,
    volumes: &std::collections::BTreeSet<&str>,
    mounts: &[VolumeMount],
) {
    let mut paths = std::collections::BTreeSet::new();
    for (j, m) in mounts.iter().enumerate() {
        let g = format!("{field}.volumeMounts[{j}]");
        if !volumes.contains(m.name.as_str()) {
            errors.push(
                format!("{g}.name"),
                format!("no volume {:?} in the pod", m.name),
            );
        }
        if !m.mount_path.starts_with('/') {
            errors.push(
                format!("{g}.mountPath"),
                format!("{:?} must be an absolute path", m.mount_path),
            );
        } else if m.mount_path.split('/').any(|p| p == "..") {
            errors.push(format!("{g}.mountPath"), "must not contain '..'");
        }
        if !paths.insert(m.mount_path.trim_end_matches('/')) {
            errors.push(
                format!("{g}.mountPath"),
                format!("{:?}: must be unique", m.mount_path),
            );
        }
        if !m.sub_path.is_empty() {
            errors.check(format!("{g}.subPath"), relative_path(&m.sub_path));
        }
    }
}
