//! `Sealed`: encryption at rest for the keys of confidential kinds (Secrets).
//!
//! Values under the sealed prefixes are written as an envelope,
//! `k8s:enc:aesgcm:v1:KEYID:` + a random 96-bit nonce + AES-256-GCM ciphertext and tag,
//! with the store key as associated data (a sealed value copied under another key does
//! not open). Reads, lists, deletes and watches open them again, so everything above the
//! wrapper sees plain objects and everything below (redb files, etcd, its backups) sees
//! only ciphertext. Values written before sealing was on are read as they are and sealed
//! by their next write. A value sealed with another key is a [`StoreError::Corrupt`] that
//! names both key ids; nothing is overwritten.
//!
//! Random nonces bound one key to about 2^32 writes before rotation is due (NIST SP
//! 800-38D); the envelope's key id is what a rotation will select keys by.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use super::{
    Event, KeyValue, RangeOptions, RangeResult, Result, Revision, Store, StoreError, WatchStream,
};

/// The key prefixes a region seals: the Secrets of every tenant.
pub const SEALED_PREFIXES: &[&str] = &["/registry/secrets/"];

/// What a sealed value starts with.
pub(crate) const ENVELOPE: &[u8] = b"k8s:enc:aesgcm:v1:";

/// The most bytes sealing adds to a value: the envelope, an 8-digit key id and `:`, the
/// nonce and the tag, rounded up.
pub(crate) const OVERHEAD: usize = 64;
const _: () = assert!(ENVELOPE.len() + 8 + 1 + NONCE_LEN + 16 <= OVERHEAD);

/// A region's key for values at rest (AES-256-GCM). Its bytes are never shown.
pub struct SealingKey {
    key: LessSafeKey,
    id: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingKey").field("id", &self.id).finish()
    }
}

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SealingKeyError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
    /// The file is not 32 bytes of base64.
    #[error("{path} is not a sealing key (expected 32 bytes, base64-encoded)")]
    Malformed {
        /// The file.
        path: String,
    },
}

impl SealingKey {
    /// A key from 32 bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let id = digest.as_ref()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self {
            key: LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes is an AES-256 key"),
            ),
            id,
            rng: SystemRandom::new(),
        }
    }

    /// A new random key, held only in memory.
    pub fn generate() -> Self {
        Self::from_bytes(&random_key())
    }

    /// The key in `path` (base64 of 32 bytes), made (mode 0600) when the file is absent.
    pub fn load_or_create(path: &Path) -> Result<Self, SealingKeyError> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let io = |source| SealingKeyError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes: [u8; 32] = b64
                    .decode(text.trim())
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| SealingKeyError::Malformed {
                        path: path.display().to_string(),
                    })?;
                Ok(Self::from_bytes(&bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let bytes = random_key();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let mut file = std::fs::OpenOptions::new();
                file.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
                let mut f = file.open(path).map_err(io)?;
                std::io::Write::write_all(&mut f, format!("{}\n", b64.encode(bytes)).as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(io)?;
                Ok(Self::from_bytes(&bytes))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The key's id: the first 4 bytes of its SHA-256, in hex (it names the key in
    /// envelopes and errors, never reveals it).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plain` for the store key `key`.
    pub fn seal(&self, key: &str, plain: &[u8]) -> Bytes {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .expect("the system's random source works");
        let mut out =
            Vec::with_capacity(ENVELOPE.len() + self.id.len() + 1 + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(ENVELOPE);
        out.extend_from_slice(self.id.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plain);
        let mut body = out.split_off(start);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.as_bytes()),
                &mut body,
            )
            .expect("AES-GCM seals any value below 64 GiB");
        out.extend_from_slice(&body);
        Bytes::from(out)
    }

    /// Opens `value` of the store key `key`: a sealed envelope is decrypted; any other
    /// value (written before sealing) is returned as it is.
    pub fn open(&self, key: &str, value: Bytes) -> Result<Bytes> {
        let Some(rest) = value.strip_prefix(ENVELOPE) else {
            return Ok(value);
        };
        let cannot = |why: String| StoreError::Corrupt(format!("sealed value of {key:?}: {why}"));
        let colon = rest
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| cannot("malformed envelope".into()))?;
        let (id, rest) = (&rest[..colon], &rest[colon + 1..]);
        if id != self.id.as_bytes() {
            return Err(cannot(format!(
                "sealed with key {}, but this server holds key {}",
                String::from_utf8_lossy(id),
                self.id
            )));
        }
        if rest.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(cannot("truncated envelope".into()));
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).expect("NONCE_LEN bytes");
        let mut body = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(key.as_bytes()), &mut body)
            .map_err(|_| cannot("does not open (tampered, or moved from another key)".into()))?;
        let n = plain.len();
        body.truncate(n);
        Ok(Bytes::from(body))
    }
}

fn random_key() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    bytes
}

/// A store wrapper that seals the values under some prefixes (see the module docs).
pub struct Sealed<S> {
    inner: S,
    key: Arc<SealingKey>,
    prefixes: Vec<String>,
}

impl<S> std::fmt::Debug for Sealed<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("key", &self.key)
            .field("prefixes", &self.prefixes)
            .finish()
    }
}

impl<S: Store> Sealed<S> {
    /// Seals the values of `inner` under `prefixes` with `key`.
    pub fn new(inner: S, key: Arc<SealingKey>, prefixes: &[&str]) -> Self {
        Self {
            inner,
            key,
            prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn sealed(&self, key: &str) -> bool {
        self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }

    fn seal(&self, key: &str, value: Bytes) -> Bytes {
        if self.sealed(key) {
            self.key.seal(key, &value)
        } else {
            value
        }
    }

    fn open(&self, mut kv: KeyValue) -> Result<KeyValue> {
        if self.sealed(&kv.key) {
            kv.value = self.key.open(&kv.key, kv.value)?;
        }
        Ok(kv)
    }

    fn open_event(key: &SealingKey, event: Arc<Event>) -> Result<Arc<Event>> {
        let mut e = Arc::unwrap_or_clone(event);
        e.kv.value = key.open(&e.kv.key, e.kv.value)?;
        if let Some(prev) = e.prev_value.take() {
            e.prev_value = Some(key.open(&e.kv.key, prev)?);
        }
        Ok(Arc::new(e))
    }
}

#[async_trait]
impl<S: Store> Store for Sealed<S> {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner
            .get(key)
            .await?
            .map(|kv| self.open(kv))
            .transpose()
    }

    async fn range(&self, prefix: &str, opts: RangeOptions) -> Result<RangeResult> {
        let mut page = self.inner.range(prefix, opts).await?;
        page.kvs = page
            .kvs
            .into_iter()
            .map(|kv| self.open(kv))
            .collect::<Result<_>>()?;
        Ok(page)
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        super::check_write(key, Some(&value))?;
        let kv = self
            .inner
            .create(key, self.seal(key, value.clone()))
            .await?;
        Ok(KeyValue { value, ..kv })
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        super::check_write(key, Some(&value))?;
        let kv = self
            .inner
            .update(key, self.seal(key, value.clone()), expected)
            .await?;
        Ok(KeyValue { value, ..kv })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        let kv = self.inner.delete(key, expected).await?;
        self.open(kv)
    }

    async fn watch(&self, prefix: &str, start: Revision) -> Result<WatchStream> {
        let upstream = self.inner.watch(prefix, start).await?;
        let covers = |p: &String| p.starts_with(prefix) || prefix.starts_with(p.as_str());
        if !self.prefixes.iter().any(covers) {
            return Ok(upstream);
        }
        let (key, prefixes) = (self.key.clone(), self.prefixes.clone());
        Ok(WatchStream::new(upstream.map(move |item| {
            let event = item?;
            if prefixes
                .iter()
                .any(|p| event.kv.key.starts_with(p.as_str()))
            {
                Self::open_event(&key, event)
            } else {
                Ok(event)
            }
        })))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }

    async fn revision(&self) -> Result<Revision> {
        self.inner.revision().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EventKind, RedbStore};

    fn sealed() -> (Sealed<Arc<RedbStore>>, Arc<RedbStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let raw = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
        let key = Arc::new(SealingKey::generate());
        (Sealed::new(raw.clone(), key, SEALED_PREFIXES), raw, dir)
    }

    #[tokio::test]
    async fn secrets_are_ciphertext_below_and_plain_above() {
        let (store, raw, _dir) = sealed();
        let key = "/registry/secrets/acme/default/db";
        let plain = Bytes::from_static(b"{\"data\":{\"password\":\"aHVudGVyMg==\"}}");
        let mut watch = store.watch("/registry/", 0).await.unwrap();
        let made = store.create(key, plain.clone()).await.unwrap();
        assert_eq!(made.value, plain);
        let below = raw.get(key).await.unwrap().unwrap().value;
        assert!(below.starts_with(ENVELOPE));
        assert!(!below.windows(8).any(|w| w == b"aHVudGVy"));
        assert_eq!(store.get(key).await.unwrap().unwrap().value, plain);
        let listed = store.range("/registry/", Default::default()).await.unwrap();
        assert_eq!(listed.kvs[0].value, plain);
        let next = Bytes::from_static(b"{\"data\":{}}");
        store
            .update(key, next.clone(), made.mod_revision)
            .await
            .unwrap();
        // Other kinds pass through untouched.
        store
            .create(
                "/registry/configmaps/acme/default/c",
                Bytes::from_static(b"{}"),
            )
            .await
            .unwrap();
        assert_eq!(
            raw.get("/registry/configmaps/acme/default/c")
                .await
                .unwrap()
                .unwrap()
                .value,
            Bytes::from_static(b"{}")
        );
        let gone = store.delete(key, None).await.unwrap();
        assert_eq!(gone.value, next);
        let events: Vec<_> = (&mut watch).take(4).collect().await;
        let events: Vec<_> = events.into_iter().map(Result::unwrap).collect();
        assert_eq!(events[0].kv.value, plain);
        assert_eq!(events[1].kv.value, next);
        assert_eq!(events[1].prev_value.as_ref(), Some(&plain));
        assert_eq!(events[3].kind, EventKind::Delete);
        assert_eq!(events[3].kv.value, next);
    }

    #[tokio::test]
    async fn a_value_under_another_key_or_tampered_never_opens() {
        let (store, raw, _dir) = sealed();
        let (a, b) = ("/registry/secrets/t1/ns/a", "/registry/secrets/t2/ns/a");
        store.create(a, Bytes::from_static(b"{}")).await.unwrap();
        let ciphertext = raw.get(a).await.unwrap().unwrap().value;
        raw.create(b, ciphertext.clone()).await.unwrap();
        let e = store.get(b).await.unwrap_err();
        assert!(e.to_string().contains("does not open"), "{e}");
        let other = SealingKey::generate();
        let e = other.open(a, ciphertext.clone()).unwrap_err();
        assert!(e.to_string().contains(other.id()), "{e}");
        for cut in 0..ciphertext.len() {
            assert!(store.key.open(a, ciphertext.slice(..cut)).is_err() || cut < ENVELOPE.len());
        }
        // A value written before sealing reads as it was.
        raw.create(
            "/registry/secrets/t1/ns/old",
            Bytes::from_static(b"{\"old\":1}"),
        )
        .await
        .unwrap();
        assert_eq!(
            store
                .get("/registry/secrets/t1/ns/old")
                .await
                .unwrap()
                .unwrap()
                .value,
            Bytes::from_static(b"{\"old\":1}")
        );
    }

    #[test]
    fn a_key_file_is_made_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pki/secrets.key");
        let made = SealingKey::load_or_create(&path).unwrap();
        let again = SealingKey::load_or_create(&path).unwrap();
        assert_eq!(made.id(), again.id());
        let sealed = made.seal("/k", b"v");
        assert_eq!(again.open("/k", sealed).unwrap(), Bytes::from_static(b"v"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "short").unwrap();
        assert!(matches!(
            SealingKey::load_or_create(&path),
            Err(SealingKeyError::Malformed { .. })
        ));
        assert!(!format!("{made:?}").contains("key: "), "{made:?}");
    }
}
