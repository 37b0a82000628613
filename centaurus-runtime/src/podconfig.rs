//! A pod's configuration resolved on its node: the ConfigMaps and Secrets it names, read
//! from its tenant partition with the node's identity (the node authorizer lets a node
//! read only what its own pods name), turned into environment values and volume files.
//!
//! A missing object that is not `optional` keeps the pod waiting (Kubernetes'
//! `CreateContainerConfigError`), with the reason in its status; it starts once the
//! object exists.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use centaurus_client::Client;
use centaurus_core::model::{self, ConfigKind, ConfigMap, EnvVar, Pod, Secret};

/// One file of a projected volume.
#[derive(Clone, PartialEq, Eq)]
pub struct VolumeFile {
    /// Path inside the volume.
    pub path: String,
    /// Contents.
    pub data: Vec<u8>,
    /// Mode bits.
    pub mode: u32,
}

impl std::fmt::Debug for VolumeFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeFile")
            .field("path", &self.path)
            .field("bytes", &self.data.len())
            .field("mode", &format_args!("{:o}", self.mode))
            .finish()
    }
}

/// What a volume holds: files projected from a ConfigMap or Secret (read-only in the
/// container), or an empty directory the containers write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeContent {
    /// Files from a ConfigMap or Secret.
    Projected(Vec<VolumeFile>),
    /// An `emptyDir`.
    Empty,
}

/// The ConfigMaps and Secrets a pod names, as read now.
#[derive(Default)]
struct Objects {
    config_maps: HashMap<String, Option<ConfigMap>>,
    secrets: HashMap<String, Option<Secret>>,
}

impl Objects {
    fn value(&self, kind: ConfigKind, name: &str, key: &str) -> Option<Vec<u8>> {
        match kind {
            ConfigKind::ConfigMap => self
                .config_maps
                .get(name)?
                .as_ref()?
                .value(key)
                .map(<[u8]>::to_vec),
            ConfigKind::Secret => self.secrets.get(name)?.as_ref()?.data.get(key).cloned(),
        }
    }

    fn entries(&self, kind: ConfigKind, name: &str) -> Option<Vec<(String, Vec<u8>)>> {
        Some(match kind {
            ConfigKind::ConfigMap => {
                let cm = self.config_maps.get(name)?.as_ref()?;
                let mut all: Vec<_> = cm
                    .data
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                    .collect();
                all.extend(cm.binary_data.iter().map(|(k, v)| (k.clone(), v.clone())));
                all
            }
            ConfigKind::Secret => {
                let s = self.secrets.get(name)?.as_ref()?;
                s.data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
            }
        })
    }
}

/// Reads the ConfigMaps and Secrets `pod` names, once each.
async fn read(client: &Client, pod: &Pod) -> Result<Objects, String> {
    let meta = &pod.metadata;
    let mut objects = Objects::default();
    for (kind, name) in pod.spec.config_refs() {
        let key = model::object_key(
            kind.plural(),
            model::Scope::Namespaced,
            meta.tenant_or_system(),
            &meta.namespace,
            name,
        );
        let failed =
            |e: centaurus_client::ClientError| format!("reading {} {name}: {e}", kind.plural());
        match kind {
            ConfigKind::ConfigMap if !objects.config_maps.contains_key(name) => {
                let cm = client.api::<ConfigMap>().get(&key).await.map_err(failed)?;
                objects.config_maps.insert(name.to_owned(), cm);
            }
            ConfigKind::Secret if !objects.secrets.contains_key(name) => {
                let s = client.api::<Secret>().get(&key).await.map_err(failed)?;
                objects.secrets.insert(name.to_owned(), s);
            }
            _ => {}
        }
    }
    Ok(objects)
}

fn missing(kind: ConfigKind, name: &str, key: Option<&str>) -> String {
    let what = match kind {
        ConfigKind::ConfigMap => "configmap",
        ConfigKind::Secret => "secret",
    };
    match key {
        Some(k) => format!("CreateContainerConfigError: couldn't find key {k} in {what} {name:?}"),
        None => format!("CreateContainerConfigError: {what} {name:?} not found"),
    }
}

fn field_value(pod: &Pod, path: &str, pod_ip: &str, host_ip: &str) -> String {
    let meta = &pod.metadata;
    let quoted = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("']"))
    };
    if let Some(k) = quoted("metadata.labels['") {
        return meta.labels.get(k).cloned().unwrap_or_default();
    }
    if let Some(k) = quoted("metadata.annotations['") {
        return meta.annotations.get(k).cloned().unwrap_or_default();
    }
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => pod.spec.node_name.clone(),
        "spec.serviceAccountName" => "default".into(),
        "status.podIP" => pod_ip.into(),
        "status.hostIP" => host_ip.into(),
        _ => String::new(),
    }
}

/// `pod` with every container's environment resolved to plain values (`envFrom` first,
/// then `env`, later names winning, as the kubelet orders them), and the contents of its
/// volumes. Err is why the pod cannot start yet.
pub async fn resolve(
    client: &Client,
    pod: &Pod,
    pod_ip: &str,
    host_ip: &str,
) -> Result<(Pod, BTreeMap<String, VolumeContent>), String> {
    if pod.spec.config_refs().next().is_none()
        && pod.spec.volumes.is_empty()
        && !pod
            .spec
            .containers
            .iter()
            .any(|c| c.env.iter().any(|e| e.value_from.is_some()))
    {
        return Ok((pod.clone(), BTreeMap::new()));
    }
    let objects = read(client, pod).await?;
    let mut resolved = pod.clone();
    for c in &mut resolved.spec.containers {
        let mut env: Vec<EnvVar> = Vec::new();
        let set = |env: &mut Vec<EnvVar>, name: String, value: String| {
            env.retain(|e| e.name != name);
            env.push(EnvVar {
                name,
                value,
                value_from: None,
            });
        };
        for from in std::mem::take(&mut c.env_from) {
            let (kind, r) = match (&from.config_map_ref, &from.secret_ref) {
                (Some(r), _) => (ConfigKind::ConfigMap, r),
                (None, Some(r)) => (ConfigKind::Secret, r),
                _ => continue,
            };
            match objects.entries(kind, &r.name) {
                Some(entries) => {
                    for (k, v) in entries {
                        let name = format!("{}{k}", from.prefix);
                        // Keys that cannot be variable names are skipped, as the kubelet does.
                        if name.contains('=') || name.is_empty() {
                            continue;
                        }
                        set(&mut env, name, String::from_utf8_lossy(&v).into_owned());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(missing(kind, &r.name, None)),
            }
        }
        for e in std::mem::take(&mut c.env) {
            let Some(from) = &e.value_from else {
                set(&mut env, e.name, e.value);
                continue;
            };
            if let Some(f) = &from.field_ref {
                let v = field_value(pod, &f.field_path, pod_ip, host_ip);
                set(&mut env, e.name, v);
                continue;
            }
            let (kind, sel) = match (&from.config_map_key_ref, &from.secret_key_ref) {
                (Some(k), _) => (ConfigKind::ConfigMap, k),
                (None, Some(k)) => (ConfigKind::Secret, k),
                _ => continue,
            };
            match objects.value(kind, &sel.name, &sel.key) {
                Some(v) => set(&mut env, e.name, String::from_utf8_lossy(&v).into_owned()),
                None if sel.optional == Some(true) => {}
                None => return Err(missing(kind, &sel.name, Some(&sel.key))),
            }
        }
        c.env = env;
    }
    let mut volumes = BTreeMap::new();
    for v in &pod.spec.volumes {
        let (kind, name, items, default_mode, optional) = match (&v.config_map, &v.secret) {
            (Some(c), _) => (
                ConfigKind::ConfigMap,
                &c.name,
                &c.items,
                c.default_mode,
                c.optional,
            ),
            (None, Some(s)) => (
                ConfigKind::Secret,
                &s.secret_name,
                &s.items,
                s.default_mode,
                s.optional,
            ),
            _ => {
                volumes.insert(v.name.clone(), VolumeContent::Empty);
                continue;
            }
        };
        let mode_of = |m: Option<i32>| m.or(default_mode).unwrap_or(0o644) as u32 & 0o777;
        let files = match objects.entries(kind, name) {
            None if optional == Some(true) => Vec::new(),
            None => return Err(missing(kind, name, None)),
            Some(entries) if items.is_empty() => entries
                .into_iter()
                .map(|(k, data)| VolumeFile {
                    path: k,
                    data,
                    mode: mode_of(None),
                })
                .collect(),
            Some(entries) => {
                let mut files = Vec::new();
                for item in items {
                    match entries.iter().find(|(k, _)| *k == item.key) {
                        Some((_, data)) => files.push(VolumeFile {
                            path: item.path.clone(),
                            data: data.clone(),
                            mode: mode_of(item.mode),
                        }),
                        None if optional == Some(true) => {}
                        None => return Err(missing(kind, name, Some(&item.key))),
                    }
                }
                files
            }
        };
        volumes.insert(v.name.clone(), VolumeContent::Projected(files));
    }
    Ok((resolved, volumes))
}

/// Makes `dir` hold exactly `files`: each written beside its place and renamed over it
/// (a reader in the container sees the old or the new file, never a torn one), files no
/// longer projected removed. Returns whether anything changed.
pub fn write_projected(dir: &Path, files: &[VolumeFile]) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    let mut changed = false;
    let mut keep = std::collections::HashSet::new();
    for f in files {
        let path = dir.join(&f.path);
        keep.insert(path.clone());
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let same = std::fs::read(&path).is_ok_and(|have| have == f.data)
            && std::fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o777 == f.mode);
        if same {
            continue;
        }
        let tmp = path.with_file_name(format!(
            ".{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
        ));
        std::fs::write(&tmp, &f.data)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(f.mode))?;
        std::fs::rename(&tmp, &path)?;
        changed = true;
    }
    for entry in walk(dir)? {
        if !keep.contains(&entry) {
            std::fs::remove_file(&entry)?;
            changed = true;
        }
    }
    Ok(changed)
}

/// Every file under `dir`.
fn walk(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            out.extend(walk(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}

/// True when a pod's volumes may change while it runs (ConfigMap and Secret volumes).
pub fn has_projected_volumes(pod: &Pod) -> bool {
    pod.spec
        .volumes
        .iter()
        .any(|v| v.config_map.is_some() || v.secret.is_some())
}

/// The volume a pod's ServiceAccount token is projected into.
pub const ACCOUNT_VOLUME: &str = "kube-api-access";

/// True when the pod gets its ServiceAccount's token (unless the pod says
/// `automountServiceAccountToken: false`).
pub fn wants_account_token(pod: &Pod) -> bool {
    pod.spec.automount_service_account_token != Some(false)
}

/// Adds the ServiceAccount volume (`token` and `namespace`, read-only at
/// [`model::SERVICE_ACCOUNT_MOUNT`] in every container, and the VM guest, that does not
/// mount something there itself) to a resolved pod and its volumes.
pub fn project_account_token(
    pod: &mut Pod,
    volumes: &mut BTreeMap<String, VolumeContent>,
    token: &str,
) {
    let file = |path: &str, data: &[u8]| VolumeFile {
        path: path.into(),
        data: data.to_vec(),
        mode: 0o644,
    };
    volumes.insert(
        ACCOUNT_VOLUME.into(),
        VolumeContent::Projected(vec![
            file("token", token.as_bytes()),
            file("namespace", pod.metadata.namespace.as_bytes()),
        ]),
    );
    if !pod.spec.volumes.iter().any(|v| v.name == ACCOUNT_VOLUME) {
        pod.spec.volumes.push(model::Volume {
            name: ACCOUNT_VOLUME.into(),
            ..Default::default()
        });
    }
    let mounts = pod
        .spec
        .containers
        .iter_mut()
        .map(|c| &mut c.volume_mounts)
        .chain(
            pod.spec
                .virtual_machine
                .iter_mut()
                .map(|vm| &mut vm.volume_mounts),
        );
    for mounts in mounts {
        if !mounts
            .iter()
            .any(|m| m.mount_path.trim_end_matches('/') == model::SERVICE_ACCOUNT_MOUNT)
        {
            mounts.push(model::VolumeMount {
                name: ACCOUNT_VOLUME.into(),
                mount_path: model::SERVICE_ACCOUNT_MOUNT.into(),
                read_only: true,
                ..Default::default()
            });
        }
    }
}

/// The cluster's DNS domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Resolves the pod's DNS policy, on a node whose cluster DNS is `cluster_dns`, into the
/// settings its resolv.conf gets, written back as `dnsPolicy: None` with that `dnsConfig`
/// (so the runtime renders it as it is):
///
/// - `ClusterFirst` (and `ClusterFirstWithHostNet`): the cluster DNS first, the Kubernetes
///   search path (`NS.svc.cluster.local svc.cluster.local cluster.local`) and `ndots:5`,
///   then the pod's own `dnsConfig` (its options replacing those of the same name);
/// - `None`: the pod's `dnsConfig` alone;
/// - `Default`, and `ClusterFirst` on a node without a cluster DNS: the pod's
///   `dnsConfig` if it has one, else nothing (the image's resolv.conf stays).
pub fn resolve_dns(pod: &mut Pod, cluster_dns: Option<std::net::Ipv4Addr>) {
    let own = pod.spec.dns_config.take().unwrap_or_default();
    let cluster_first = matches!(
        pod.spec.dns_policy.as_str(),
        "" | "ClusterFirst" | "ClusterFirstWithHostNet"
    );
    let config = match cluster_dns {
        Some(dns) if cluster_first => {
            let ns = match pod.metadata.namespace.as_str() {
                "" => "default".to_owned(),
                ns => ns.to_owned(),
            };
            let mut c = model::PodDnsConfig {
                nameservers: vec![dns.to_string()],
                searches: vec![
                    format!("{ns}.svc.{CLUSTER_DOMAIN}"),
                    format!("svc.{CLUSTER_DOMAIN}"),
                    CLUSTER_DOMAIN.to_owned(),
                ],
                options: vec![model::PodDnsConfigOption {
                    name: "ndots".into(),
                    value: Some("5".into()),
                }],
            };
            for n in own.nameservers {
                if !c.nameservers.contains(&n) {
                    c.nameservers.push(n);
                }
            }
            c.nameservers.truncate(model::MAX_NAMESERVERS);
            for d in own.searches {
                if !c.searches.contains(&d) {
                    c.searches.push(d);
                }
            }
            for o in own.options {
                c.options.retain(|x| x.name != o.name);
                c.options.push(o);
            }
            Some(c)
        }
        _ => (own != model::PodDnsConfig::default()).then_some(own),
    };
    if let Some(c) = config {
        pod.spec.dns_policy = "None".into();
        pod.spec.dns_config = Some(c);
    }
}

/// The text of a resolv.conf holding `c`.
pub fn resolv_conf(c: &model::PodDnsConfig) -> String {
    let mut out = String::new();
    for n in &c.nameservers {
        out += &format!("nameserver {n}\n");
    }
    if !c.searches.is_empty() {
        out += &format!("search {}\n", c.searches.join(" "));
    }
    if !c.options.is_empty() {
        let options: Vec<String> = c
            .options
            .iter()
            .map(|o| match &o.value {
                Some(v) => format!("{}:{v}", o.name),
                None => o.name.clone(),
            })
            .collect();
        out += &format!("options {}\n", options.join(" "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns_pod(policy: &str, config: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "dev"},
            "spec": {"containers": [{"name": "a", "image": "busybox"}],
                     "dnsPolicy": policy, "dnsConfig": config},
        }))
        .unwrap()
    }

    #[test]
    fn dns_policies_resolve_into_the_resolv_conf_kubernetes_writes() {
        let dns = Some(std::net::Ipv4Addr::new(10, 96, 0, 10));
        let conf = |p: &Pod| resolv_conf(p.spec.dns_config.as_ref().unwrap());
        // ClusterFirst: the cluster DNS and search path first, the pod's own after; its
        // options replace the defaults of the same name.
        let mut p = dns_pod(
            "ClusterFirst",
            serde_json::json!({"nameservers": ["1.1.1.1"], "searches": ["corp.example"],
                               "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}),
        );
        resolve_dns(&mut p, dns);
        assert_eq!(p.spec.dns_policy, "None");
        assert_eq!(
            conf(&p),
            "nameserver 10.96.0.10\nnameserver 1.1.1.1\n\
             search dev.svc.cluster.local svc.cluster.local cluster.local corp.example\n\
             options ndots:2 edns0\n"
        );
        // None: the pod's alone; Default and a node without cluster DNS: the pod's if any.
        let own = serde_json::json!({"nameservers": ["9.9.9.9"]});
        for (policy, node) in [("None", dns), ("Default", dns), ("ClusterFirst", None)] {
            let mut p = dns_pod(policy, own.clone());
            resolve_dns(&mut p, node);
            assert_eq!(conf(&p), "nameserver 9.9.9.9\n", "{policy}");
        }
        let mut p = dns_pod("Default", serde_json::Value::Null);
        resolve_dns(&mut p, dns);
        assert_eq!(
            (p.spec.dns_policy.as_str(), &p.spec.dns_config),
            ("Default", &None)
        );
        // At most three nameservers.
        let mut p = dns_pod(
            "ClusterFirst",
            serde_json::json!({"nameservers": ["1.1.1.1", "2.2.2.2", "3.3.3.3"]}),
        );
        resolve_dns(&mut p, dns);
        assert_eq!(p.spec.dns_config.unwrap().nameservers.len(), 3);
    }

    #[test]
    fn the_account_token_is_mounted_read_only_where_nothing_else_is() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "dev"},
            "spec": {"containers": [
                {"name": "a", "image": "busybox"},
                {"name": "b", "image": "busybox", "volumeMounts": [
                    {"name": "own", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount/"}]},
            ], "volumes": [{"name": "own", "emptyDir": {}}]},
        }))
        .unwrap();
        assert!(wants_account_token(&pod));
        let mut volumes = BTreeMap::new();
        project_account_token(&mut pod, &mut volumes, "ey.token");
        let VolumeContent::Projected(files) = &volumes[ACCOUNT_VOLUME] else {
            panic!("{volumes:?}");
        };
        let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(names, ["token", "namespace"]);
        assert_eq!(files[1].data, b"dev");
        let a = &pod.spec.containers[0].volume_mounts;
        assert_eq!(a.len(), 1);
        assert!(a[0].read_only && a[0].mount_path == model::SERVICE_ACCOUNT_MOUNT);
        assert_eq!(
            pod.spec.containers[1].volume_mounts.len(),
            1,
            "b keeps its own"
        );
        pod.spec.automount_service_account_token = Some(false);
        assert!(!wants_account_token(&pod));
    }

    #[test]
    fn projected_files_are_replaced_whole_and_stale_ones_removed() {
        let dir = tempfile::tempdir().unwrap();
        let v = dir.path().join("vol");
        let file = |path: &str, data: &[u8], mode| VolumeFile {
            path: path.into(),
            data: data.to_vec(),
            mode,
        };
        assert!(write_projected(&v, &[file("a", b"1", 0o644), file("d/b", b"2", 0o400)]).unwrap());
        assert!(!write_projected(&v, &[file("a", b"1", 0o644), file("d/b", b"2", 0o400)]).unwrap());
        assert!(write_projected(&v, &[file("a", b"one", 0o644)]).unwrap());
        assert_eq!(std::fs::read(v.join("a")).unwrap(), b"one");
        assert!(!v.join("d/b").exists());
        use std::os::unix::fs::PermissionsExt;
        assert!(write_projected(&v, &[file("a", b"one", 0o600)]).unwrap());
        let mode = std::fs::metadata(v.join("a")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
