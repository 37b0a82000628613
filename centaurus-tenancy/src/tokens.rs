//! Bearer tokens kept in the region's store, so that every API server of a region knows
//! the tokens any of them issued.
//!
//! A token is kept only as its SHA-256 digest, under `/centaurus/tokens/{hex}` (outside
//! `/registry/`, so no kind's list or watch ever shows it). Each server keeps a table of
//! the digests it has seen, fed by a watch of that prefix; a token the table does not know
//! yet (issued a moment ago by another server) is looked up in the store once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use centaurus_core::store::{self, EventKind, KeyValue, Revision, Store, StoreError};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::Identity;
use crate::authn::{Authenticator, Credentials};

/// Where the digests live in the store.
pub const PREFIX: &str = "/centaurus/tokens/";

/// What the store keeps of one token: whom it identifies, never the token.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    user: String,
    tenant: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default, rename = "tenantUID")]
    tenant_uid: Option<String>,
    issued: centaurus_core::model::Time,
    /// After this the token opens nothing (bootstrap tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<centaurus_core::model::Time>,
}

impl Entry {
    fn known(self) -> Known {
        Known {
            expires: self.expires,
            identity: Identity {
                user: self.user,
                tenant: self.tenant,
                groups: self.groups,
                tenant_uid: self.tenant_uid,
            },
        }
    }
}

/// A token as the table knows it.
#[derive(Clone, Debug)]
struct Known {
    identity: Identity,
    expires: Option<centaurus_core::model::Time>,
}

impl Known {
    fn live(&self) -> Option<Identity> {
        match self.expires {
            Some(t) if t <= centaurus_core::model::now() => None,
            _ => Some(self.identity.clone()),
        }
    }
}

/// The lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn digest(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

/// Tokens in the store, watched: issue on any API server, accepted by all.
pub struct StoredTokens {
    store: Arc<dyn Store>,
    table: Arc<RwLock<HashMap<String, Known>>>,
    watch: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for StoredTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredTokens")
            .field("known", &self.len())
            .finish()
    }
}

impl Drop for StoredTokens {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

/// Decodes one stored entry; a damaged one is skipped (and logged), never trusted.
fn decode(kv: &KeyValue) -> Option<(String, Known)> {
    let hex = kv.key.strip_prefix(PREFIX)?;
    match serde_json::from_slice::<Entry>(&kv.value) {
        Ok(e) => Some((hex.to_owned(), e.known())),
        Err(e) => {
            tracing::warn!(key = %kv.key, error = %e, "skipping a damaged token entry");
            None
        }
    }
}

impl StoredTokens {
    /// Loads the tokens of `store` and keeps following them.
    pub async fn start(store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let table = Arc::new(RwLock::new(HashMap::new()));
        let revision = Self::relist(&*store, &table).await?;
        let watch = tokio::spawn(Self::follow(store.clone(), table.clone(), revision));
        Ok(Self {
            store,
            table,
            watch,
        })
    }

    /// Replaces the table with the store's tokens; returns the revision read.
    async fn relist(
        store: &dyn Store,
        table: &RwLock<HashMap<String, Known>>,
    ) -> Result<Revision, StoreError> {
        let all = store::range_all(store, PREFIX).await?;
        let fresh: HashMap<_, _> = all.kvs.iter().filter_map(decode).collect();
        *table.write().expect("token table lock") = fresh;
        Ok(all.revision)
    }

    /// Applies the store's changes to the table, re-listing when history is gone and
    /// reconnecting after a failure.
    async fn follow(
        store: Arc<dyn Store>,
        table: Arc<RwLock<HashMap<String, Known>>>,
        mut revision: Revision,
    ) {
        let mut delay = Duration::from_millis(100);
        loop {
            let mut relist = false;
            match store.watch(PREFIX, revision + 1).await {
                Ok(mut events) => {
                    while let Some(event) = events.next().await {
                        match event {
                            Ok(e) => {
                                delay = Duration::from_millis(100);
                                revision = e.revision();
                                let hex = e.kv.key.strip_prefix(PREFIX).unwrap_or_default();
                                let mut t = table.write().expect("token table lock");
                                match e.kind {
                                    EventKind::Delete => {
                                        t.remove(hex);
                                    }
                                    EventKind::Put => {
                                        if let Some((hex, id)) = decode(&e.kv) {
                                            t.insert(hex, id);
                                        }
                                    }
                                }
                            }
                            Err(e) => {
                                relist = e.is_gone();
                                tracing::warn!(error = %e, "token watch ended");
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    relist = e.is_gone();
                    tracing::warn!(error = %e, "cannot watch tokens");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            if relist {
                match Self::relist(&*store, &table).await {
                    Ok(r) => revision = r,
                    Err(e) => tracing::warn!(error = %e, "cannot re-list tokens"),
                }
            }
        }
    }

    /// Issues a new random token for `identity`, stored (as its digest) before it is
    /// returned.
    pub async fn issue(&self, identity: Identity) -> Result<String, StoreError> {
        self.issue_until(identity, None).await
    }

    /// As [`StoredTokens::issue`], for a token that opens nothing after `expires`.
    pub async fn issue_until(
        &self,
        identity: Identity,
        expires: Option<centaurus_core::model::Time>,
    ) -> Result<String, StoreError> {
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let hex = digest(&token);
        let entry = Entry {
            user: identity.user.clone(),
            tenant: identity.tenant.clone(),
            groups: identity.groups.clone(),
            tenant_uid: identity.tenant_uid.clone(),
            issued: centaurus_core::model::now(),
            expires,
        };
        let value = Bytes::from(serde_json::to_vec(&entry).expect("a token entry encodes"));
        self.store.create(&format!("{PREFIX}{hex}"), value).await?;
        self.table
            .write()
            .expect("token table lock")
            .insert(hex, Known { identity, expires });
        Ok(token)
    }

    /// Removes every token of `tenant` (its deletion) from the store. Returns how many.
    pub async fn revoke_tenant(&self, tenant: &str) -> Result<usize, StoreError> {
        let all = store::range_all(&*self.store, PREFIX).await?;
        let mut revoked = 0;
        for kv in &all.kvs {
            let Some((hex, id)) = decode(kv) else {
                continue;
            };
            if id.identity.tenant != tenant {
                continue;
            }
            match self.store.delete(&kv.key, None).await {
                Ok(_) | Err(StoreError::NotFound { .. }) => revoked += 1,
                Err(e) => return Err(e),
            }
            self.table.write().expect("token table lock").remove(&hex);
        }
        Ok(revoked)
    }

    /// The identity of a live token: from the table, or else from the store.
    pub async fn lookup(&self, token: &str) -> Result<Option<Identity>, StoreError> {
        let hex = digest(token);
        if let Some(known) = self.table.read().expect("token table lock").get(&hex) {
            return Ok(known.live());
        }
        let Some(kv) = self.store.get(&format!("{PREFIX}{hex}")).await? else {
            return Ok(None);
        };
        Ok(decode(&kv).and_then(|(hex, known)| {
            let live = known.live();
            self.table
                .write()
                .expect("token table lock")
                .insert(hex, known);
            live
        }))
    }

    /// Number of tokens this server knows.
    pub fn len(&self) -> usize {
        self.table.read().expect("token table lock").len()
    }

    /// True when no token is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl Authenticator for StoredTokens {
    async fn authenticate(&self, c: &Credentials) -> Result<Option<Identity>, String> {
        let Some(token) = &c.bearer_token else {
            return Ok(None);
        };
        match self.lookup(token).await {
            Ok(Some(id)) => Ok(Some(id)),
            // Another authenticator (the static token file) may know it.
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::warn!(error = %e, "cannot look a token up");
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use centaurus_core::store::RedbStore;

    fn acme() -> Identity {
        Identity {
            user: "admin".into(),
            tenant: "acme".into(),
            groups: vec![crate::TENANT_ADMINS_GROUP.into()],
            tenant_uid: Some("u1".into()),
        }
    }

    async fn eventually(what: &str, f: impl Fn() -> bool) {
        for _ in 0..200 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what}");
    }

    #[tokio::test]
    async fn a_token_issued_by_one_server_is_known_to_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
        let a = StoredTokens::start(store.clone()).await.unwrap();
        let b = StoredTokens::start(store.clone()).await.unwrap();
        let token = a.issue(acme()).await.unwrap();
        // At once, through the store, before b's watch has delivered it.
        assert_eq!(b.lookup(&token).await.unwrap(), Some(acme()));
        let other = a.issue(acme()).await.unwrap();
        eventually("b's watch learns the second token", || b.len() == 2).await;
        assert_eq!(b.lookup(&other).await.unwrap(), Some(acme()));
        assert_eq!(b.lookup("not-a-token").await.unwrap(), None);
        // Only digests are stored.
        let kept = store::range_all(&*store, PREFIX).await.unwrap();
        assert_eq!(kept.kvs.len(), 2);
        for kv in &kept.kvs {
            let text = String::from_utf8_lossy(&kv.value);
            assert!(!text.contains(&token) && !kv.key.contains(&token));
        }
        // A third server starting later lists them.
        let c = StoredTokens::start(store.clone()).await.unwrap();
        assert_eq!(c.len(), 2);

        assert_eq!(b.revoke_tenant("acme").await.unwrap(), 2);
        // The others learn it from their watches (TenantBound refuses a deleted tenant's
        // credentials meanwhile).
        eventually("the watches learn the revocation", || {
            a.is_empty() && c.is_empty()
        })
        .await;
        assert_eq!(a.lookup(&token).await.unwrap(), None);
        assert_eq!(c.lookup(&other).await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_expired_token_opens_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
        let t = StoredTokens::start(store.clone()).await.unwrap();
        let now = centaurus_core::model::now();
        let gone = t
            .issue_until(acme(), Some(now - std::time::Duration::from_secs(1)))
            .await
            .unwrap();
        let live = t
            .issue_until(acme(), Some(now + std::time::Duration::from_secs(3600)))
            .await
            .unwrap();
        assert_eq!(t.lookup(&gone).await.unwrap(), None);
        assert_eq!(t.lookup(&live).await.unwrap(), Some(acme()));
        // Another server reads the expiry from the store.
        let other = StoredTokens::start(store).await.unwrap();
        assert_eq!(other.lookup(&gone).await.unwrap(), None);
        assert_eq!(other.lookup(&live).await.unwrap(), Some(acme()));
    }

    #[tokio::test]
    async fn a_damaged_entry_opens_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
        let hex = digest("forged");
        store
            .create(&format!("{PREFIX}{hex}"), Bytes::from_static(b"{not json"))
            .await
            .unwrap();
        let t = StoredTokens::start(store).await.unwrap();
        assert_eq!(t.lookup("forged").await.unwrap(), None);
    }
}
