//! Kubeconfig files, as kubectl reads them.

use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// A kubeconfig with the fields Centaurus writes and reads.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct Kubeconfig {
    /// `v1`.
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    /// `Config`.
    #[serde(default)]
    pub kind: String,
    /// Named clusters.
    #[serde(default)]
    pub clusters: Vec<NamedCluster>,
    /// Named users.
    #[serde(default)]
    pub users: Vec<NamedUser>,
    /// Named contexts.
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
    /// The context in use.
    #[serde(default)]
    pub current_context: String,
}

/// A cluster entry.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NamedCluster {
    /// Entry name.
    pub name: String,
    /// The cluster.
    pub cluster: Cluster,
}

/// Where the API server is and which CA signs it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    /// `https://host:port`.
    pub server: String,
    /// Base64 of the CA's PEM.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub certificate_authority_data: String,
    /// Extensions; [`SERVERS_EXTENSION`] lists more servers of the region.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<NamedExtension>,
}

/// The cluster extension that lists more API servers of the same region
/// (`extension: {servers: [https://..., ...]}`), tried in order when `server` cannot be
/// reached. kubectl ignores it.
pub const SERVERS_EXTENSION: &str = "centaurus.io/servers";

/// A named extension of a kubeconfig entry.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NamedExtension {
    /// Extension name.
    pub name: String,
    /// Its content.
    pub extension: serde_json::Value,
}

impl Cluster {
    /// The servers of [`SERVERS_EXTENSION`], other than `server`.
    pub fn fallback_servers(&self) -> Vec<String> {
        self.extensions
            .iter()
            .filter(|e| e.name == SERVERS_EXTENSION)
            .filter_map(|e| e.extension.get("servers").and_then(|s| s.as_array()))
            .flatten()
            .filter_map(|s| s.as_str())
            .filter(|s| *s != self.server)
            .map(str::to_owned)
            .collect()
    }

    /// Lists `servers` in [`SERVERS_EXTENSION`].
    pub fn set_fallback_servers(&mut self, servers: &[String]) {
        self.extensions.retain(|e| e.name != SERVERS_EXTENSION);
        if !servers.is_empty() {
            self.extensions.push(NamedExtension {
                name: SERVERS_EXTENSION.into(),
                extension: serde_json::json!({ "servers": servers }),
            });
        }
    }
}

/// A user entry.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NamedUser {
    /// Entry name.
    pub name: String,
    /// Credentials.
    pub user: User,
}

/// Credentials: a bearer token or a client certificate.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct User {
    /// Bearer token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// Base64 of the client certificate's PEM.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_certificate_data: String,
    /// Base64 of the client key's PEM.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_key_data: String,
}

/// A context entry.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NamedContext {
    /// Entry name.
    pub name: String,
    /// The context.
    pub context: Context,
}

/// A cluster and user pair.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Context {
    /// Cluster entry name.
    pub cluster: String,
    /// User entry name.
    pub user: String,
    /// Default namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// What a client needs to connect: resolved from the current context.
#[derive(Clone, Debug)]
pub struct Connection {
    /// `https://host:port`.
    pub server: String,
    /// More servers of the same region, tried in order when `server` cannot be reached
    /// (from the cluster's `centaurus.io/servers` extension).
    pub fallback_servers: Vec<String>,
    /// CA PEM.
    pub ca_pem: Vec<u8>,
    /// Bearer token.
    pub token: Option<String>,
    /// Client certificate and key PEM.
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
    /// Default namespace.
    pub namespace: String,
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn unb64(field: &str, s: &str) -> anyhow::Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| anyhow::anyhow!("{field} is not valid base64: {e}"))
}

impl Kubeconfig {
    /// A kubeconfig with one cluster, one user and one context named `name`.
    pub fn single(name: &str, server: &str, ca_pem: &str, user: User) -> Self {
        Self {
            api_version: "v1".into(),
            kind: "Config".into(),
            clusters: vec![NamedCluster {
                name: name.into(),
                cluster: Cluster {
                    server: server.into(),
                    certificate_authority_data: b64(ca_pem),
                    extensions: Vec::new(),
                },
            }],
            users: vec![NamedUser {
                name: name.into(),
                user,
            }],
            contexts: vec![NamedContext {
                name: name.into(),
                context: Context {
                    cluster: name.into(),
                    user: name.into(),
                    namespace: String::new(),
                },
            }],
            current_context: name.into(),
        }
    }

    /// User credentials from a bearer token.
    pub fn token_user(token: &str) -> User {
        User {
            token: token.into(),
            ..Default::default()
        }
    }

    /// User credentials from a client certificate and key (PEM).
    pub fn cert_user(cert_pem: &str, key_pem: &str) -> User {
        User {
            client_certificate_data: b64(cert_pem),
            client_key_data: b64(key_pem),
            ..Default::default()
        }
    }

    /// Reads a kubeconfig file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read kubeconfig {}: {e}", path.display()))?;
        serde_yaml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))
    }

    /// The YAML text.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("kubeconfig encodes")
    }

    /// Writes the file with owner-only permissions.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_yaml())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    }

    /// Resolves the current context.
    pub fn connection(&self) -> anyhow::Result<Connection> {
        let ctx = self
            .contexts
            .iter()
            .find(|c| c.name == self.current_context)
            .ok_or_else(|| {
                anyhow::anyhow!("current context {:?} not found", self.current_context)
            })?;
        let cluster = self
            .clusters
            .iter()
            .find(|c| c.name == ctx.context.cluster)
            .ok_or_else(|| anyhow::anyhow!("cluster {:?} not found", ctx.context.cluster))?;
        let user = self
            .users
            .iter()
            .find(|u| u.name == ctx.context.user)
            .ok_or_else(|| anyhow::anyhow!("user {:?} not found", ctx.context.user))?;
        let client_cert = if user.user.client_certificate_data.is_empty() {
            None
        } else {
            Some((
                unb64(
                    "client-certificate-data",
                    &user.user.client_certificate_data,
                )?,
                unb64("client-key-data", &user.user.client_key_data)?,
            ))
        };
        Ok(Connection {
            server: cluster.cluster.server.clone(),
            fallback_servers: cluster.cluster.fallback_servers(),
            ca_pem: unb64(
                "certificate-authority-data",
                &cluster.cluster.certificate_authority_data,
            )?,
            token: (!user.user.token.is_empty()).then(|| user.user.token.clone()),
            client_cert,
            namespace: if ctx.context.namespace.is_empty() {
                "default".into()
            } else {
                ctx.context.namespace.clone()
            },
        })
    }
}
