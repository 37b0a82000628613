//! ServiceAccount tokens: JSON Web Tokens signed by the region (ES256), as Kubernetes'
//! bound service account tokens are.
//!
//! A token names its account (namespace, name, uid), the account's tenant (and that
//! tenant's uid) and, when bound, the pod it was issued for. [`AccountTokens`] accepts one
//! as the user `system:serviceaccount:NS:NAME` **of that tenant**, so everything the token
//! can reach goes through the tenant gate like any other user of the tenant: it never
//! reaches another tenant's space. A token is accepted only until it expires and while its
//! account, and its pod, still exist with the uids it names; deleting either revokes it.
//!
//! The signing key is the region's (`pki/sa.key`, PKCS#8), shared by every API server of
//! the region as the sealing key is.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use centaurus_core::model::{
    self, Pod, SERVICE_ACCOUNTS_GROUP, Scope, ServiceAccount, service_account_user,
};
use centaurus_core::store::Store;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::{Deserialize, Serialize};

use crate::Identity;
use crate::authn::{Authenticator, Credentials};

/// The `iss` of the region's tokens.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The audience tokens are issued for unless a request names others; the API servers
/// accept only tokens for it.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
/// The longest life a token may be given.
pub const MAX_TOKEN_LIFE: Duration = Duration::from_secs(48 * 3600);
/// The shortest (Kubernetes' minimum).
pub const MIN_TOKEN_LIFE: Duration = Duration::from_secs(600);

/// Why the signing key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum AccountKeyError {
    /// Reading or writing the key file.
    #[error("service account key {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The file holds no P-256 PKCS#8 key.
    #[error("service account key {path}: not a P-256 PKCS#8 key")]
    Invalid {
        /// The file.
        path: String,
    },
}

/// The region's key for signing service account tokens.
pub struct AccountKey {
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

impl std::fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountKey").finish_non_exhaustive()
    }
}

impl AccountKey {
    /// A new random key.
    pub fn generate() -> Self {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("the system's random source works");
        Self::from_pkcs8(pkcs8.as_ref()).expect("a key just made parses")
    }

    /// The key in PKCS#8 DER.
    pub fn from_pkcs8(der: &[u8]) -> Option<Self> {
        let rng = ring::rand::SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng).ok()?;
        Some(Self {
            pkcs8: der.to_vec(),
            public: pair.public_key().as_ref().to_vec(),
        })
    }

    /// The key in `path`, made there (mode 0600) when the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, AccountKeyError> {
        let io = |source| AccountKeyError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read(path) {
            Ok(der) => Self::from_pkcs8(&der).ok_or_else(|| AccountKeyError::Invalid {
                path: path.display().to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                write_private(path, &key.pkcs8).map_err(io)?;
                Ok(key)
            }
            Err(e) => Err(io(e)),
        }
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path)?.write_all(bytes)
}

/// The `kubernetes.io` claims: what the token is of and bound to.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct KubernetesClaims {
    namespace: String,
    serviceaccount: Named,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pod: Option<Named>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Named {
    name: String,
    uid: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Vec<String>,
    exp: i64,
    iat: i64,
    nbf: i64,
    #[serde(rename = "kubernetes.io")]
    kubernetes: KubernetesClaims,
    #[serde(rename = "centaurus.io/tenant")]
    tenant: String,
    #[serde(
        rename = "centaurus.io/tenant-uid",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    tenant_uid: Option<String>,
}

/// A token issued, and when it expires.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    /// The token.
    pub token: String,
    /// When it stops being accepted.
    pub expires: model::Time,
}

/// Issues and accepts the region's service account tokens.
pub struct AccountTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    store: Arc<dyn Store>,
}

impl AccountTokens {
    /// Tokens signed with `key`, checked against the accounts and pods in `store`.
    pub fn new(key: &AccountKey, store: Arc<dyn Store>) -> Self {
        Self {
            encoding: EncodingKey::from_ec_der(&key.pkcs8),
            decoding: DecodingKey::from_ec_der(&key.public),
            store,
        }
    }

    /// A token of `account` (of tenant `tenant`, whose uid is `tenant_uid`), bound to
    /// `pod` when given, living `life` (clamped to [`MIN_TOKEN_LIFE`]..[`MAX_TOKEN_LIFE`]),
    /// for `audiences` (the API's when empty).
    pub fn issue(
        &self,
        account: &ServiceAccount,
        tenant_uid: Option<&str>,
        pod: Option<&Pod>,
        life: Duration,
        audiences: &[String],
    ) -> Result<IssuedToken, String> {
        let m = &account.metadata;
        let life = life.clamp(MIN_TOKEN_LIFE, MAX_TOKEN_LIFE);
        let now = model::now();
        let expires = now + chrono::Duration::from_std(life).map_err(|e| e.to_string())?;
        let claims = Claims {
            iss: ISSUER.into(),
            sub: service_account_user(&m.namespace, &m.name),
            aud: if audiences.is_empty() {
                vec![API_AUDIENCE.into()]
            } else {
                audiences.to_vec()
            },
            exp: expires.timestamp(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            kubernetes: KubernetesClaims {
                namespace: m.namespace.clone(),
                serviceaccount: Named {
                    name: m.name.clone(),
                    uid: m.uid.clone(),
                },
                pod: pod.map(|p| Named {
                    name: p.metadata.name.clone(),
                    uid: p.metadata.uid.clone(),
                }),
            },
            tenant: m.tenant_or_system().to_owned(),
            tenant_uid: tenant_uid.map(str::to_owned),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.encoding)
            .map_err(|e| format!("signing the token: {e}"))?;
        Ok(IssuedToken { token, expires })
    }

    /// The uid of the object at `plural/name` in the token's space, if it exists.
    async fn uid_of(
        &self,
        plural: &str,
        claims: &Claims,
        name: &str,
    ) -> Result<Option<String>, String> {
        let key = model::object_key(
            plural,
            Scope::Namespaced,
            &claims.tenant,
            &claims.kubernetes.namespace,
            name,
        );
        let kv = self
            .store
            .get(&key)
            .await
            .map_err(|e| format!("cannot check the service account token: {e}"))?;
        Ok(kv.and_then(|kv| {
            serde_json::from_slice::<serde_json::Value>(&kv.value)
                .ok()?
                .pointer("/metadata/uid")?
                .as_str()
                .map(str::to_owned)
        }))
    }

    /// The identity a token speaks for: `Ok(None)` for tokens that are not the region's
    /// service account tokens, `Err` for ones that are and are not valid (any longer).
    pub async fn verify(&self, token: &str) -> Result<Option<Identity>, String> {
        // Not a JWT of ours (a stored or static token): another authenticator's.
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Ok(None);
        };
        if header.alg != Algorithm::ES256 {
            return Ok(None);
        }
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[API_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| format!("invalid service account token: {e}"))?
            .claims;
        let k = &claims.kubernetes;
        if claims.sub != service_account_user(&k.namespace, &k.serviceaccount.name) {
            return Err("invalid service account token: its subject is not its account".into());
        }
        let account = self
            .uid_of("serviceaccounts", &claims, &k.serviceaccount.name)
            .await?;
        if account.as_deref() != Some(k.serviceaccount.uid.as_str()) {
            return Err(format!(
                "service account {}/{} of the token no longer exists",
                k.namespace, k.serviceaccount.name
            ));
        }
        if let Some(pod) = &k.pod
            && self.uid_of("pods", &claims, &pod.name).await?.as_deref() != Some(pod.uid.as_str())
        {
            return Err(format!(
                "pod {}/{} the token was bound to no longer exists",
                k.namespace, pod.name
            ));
        }
        Ok(Some(Identity {
            user: claims.sub.clone(),
            tenant: claims.tenant.clone(),
            groups: vec![
                SERVICE_ACCOUNTS_GROUP.to_owned(),
                format!("{SERVICE_ACCOUNTS_GROUP}:{}", k.namespace),
            ],
            tenant_uid: claims.tenant_uid.clone(),
        }))
    }
}

#[async_trait]
impl Authenticator for AccountTokens {
    async fn authenticate(&self, c: &Credentials) -> Result<Option<Identity>, String> {
        match &c.bearer_token {
            Some(token) => self.verify(token).await,
            None => Ok(None),
        }
    }
}
