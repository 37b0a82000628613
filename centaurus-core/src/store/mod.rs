//! The revisioned key-value store every control-plane component reads and writes.
//!
//! Semantics follow etcd's v3 API: one global revision counts every change; each key
//! carries the revision that created it and the one that last modified it; writes are
//! guarded by compare-and-swap on the modification revision; a watch delivers every change
//! under a prefix from a start revision in order, with no gaps, until the history it needs
//! has been compacted away.
//!
//! Implementations: [`RedbStore`] (embedded, durable, the default), `EtcdStore` (feature
//! `etcd`), [`WatchCache`], a wrapper that serves many watchers from one upstream watch,
//! and [`Sealed`], a wrapper that encrypts the values of confidential kinds at rest.

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "etcd")]
mod etcd;
mod hub;
mod redb;
mod sealed;
mod watch_cache;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

#[cfg(feature = "etcd")]
pub use self::etcd::{EtcdConfig, EtcdStore};
pub use self::redb::{RedbOptions, RedbStore};
pub use self::sealed::{SEALED_PREFIXES, Sealed, SealingKey, SealingKeyError};
pub use self::watch_cache::WatchCache;

/// A store revision. Starts above zero and only grows.
pub type Revision = i64;

/// Largest value a store accepts: 1 MiB, safely below etcd's default 1.5 MiB request limit.
pub const MAX_VALUE_SIZE: usize = 1024 * 1024;

/// One key's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Bytes,
    /// Revision of the write that created the key.
    pub create_revision: Revision,
    /// Revision of the last write to the key (the object's `resourceVersion`).
    pub mod_revision: Revision,
    /// Number of writes since creation, starting at 1.
    pub version: i64,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Created or updated.
    Put,
    /// Deleted.
    Delete,
}

/// One change, as a watch delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// For a put, the key's new state. For a delete, the key's last value, with
    /// `mod_revision` set to the deletion's revision and `version` 0.
    pub kv: KeyValue,
    /// For a put that updated an existing key, its previous value.
    pub prev_value: Option<Bytes>,
}

impl Event {
    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// Store failures. Variants other than [`StoreError::Backend`], [`StoreError::Corrupt`] and
/// [`StoreError::Closed`] are answers about the data, not faults.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The key does not exist.
    #[error("key {key:?} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// A create found the key present.
    #[error("key {key:?} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// A guarded write found another revision than the one expected.
    #[error("key {key:?} is at revision {actual}, not {expected}")]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: Revision,
        /// The key's revision now.
        actual: Revision,
    },
    /// The requested history is gone (Kubernetes' 410 Gone).
    #[error("revision {requested} has been compacted (history starts at {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision still available.
        compacted: Revision,
    },
    /// A revision beyond the current one was asked for where that is not allowed.
    #[error("revision {requested} is in the future (current is {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The current revision.
        current: Revision,
    },
    /// A watcher fell so far behind that the events it needs were dropped; it must list
    /// again (treated like [`StoreError::Compacted`] by clients).
    #[error("watcher fell behind by {missed} events and was stopped")]
    WatchLagged {
        /// Events it missed.
        missed: u64,
    },
    /// A stored value cannot be read back as written (a sealed value that does not open
    /// under the region's key, or was moved under another key). Retrying does not help.
    #[error("corrupt value: {0}")]
    Corrupt(String),
    /// A request that can never succeed (empty key, oversized value).
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// The engine failed (I/O, corruption, unreachable etcd). The write may or may not
    /// have happened only if the engine says so; the redb engine never half-applies.
    #[error("storage backend: {0}")]
    Backend(String),
    /// The store was shut down, or the watch source ended.
    #[error("store closed")]
    Closed,
}

impl StoreError {
    /// True when a watcher must re-list because history it needs is gone.
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            StoreError::Compacted { .. } | StoreError::WatchLagged { .. }
        )
    }
}

/// Result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Options of a [`Store::range`].
#[derive(Clone, Debug, Default)]
pub struct RangeOptions {
    /// Most keys to return; 0 means all.
    pub limit: usize,
    /// Start strictly after this key (the last key of the previous page).
    pub after: Option<String>,
    /// Read the keys as they were at this revision (0: the current one), so that every
    /// page of one listing shows one state: the first page's. Fails with
    /// [`StoreError::Compacted`] once that revision's history is gone, and with
    /// [`StoreError::FutureRevision`] for a revision not reached yet.
    pub revision: Revision,
}

/// A page of a range.
#[derive(Clone, Debug, Default)]
pub struct RangeResult {
    /// Keys in order.
    pub kvs: Vec<KeyValue>,
    /// True when keys remain after the last one returned.
    pub more: bool,
    /// The store revision the page was read at.
    pub revision: Revision,
}

/// A stream of changes, in revision order. It ends after yielding an error.
pub struct WatchStream(Pin<Box<dyn Stream<Item = Result<Arc<Event>>> + Send>>);

impl WatchStream {
    /// Wraps any stream of events.
    pub fn new(stream: impl Stream<Item = Result<Arc<Event>>> + Send + 'static) -> Self {
        Self(Box::pin(stream))
    }
}

impl Stream for WatchStream {
    type Item = Result<Arc<Event>>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchStream")
    }
}

/// A revisioned key-value store with etcd semantics.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The key's current state.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Keys starting with `prefix`, in key order, a page at a time.
    async fn range(&self, prefix: &str, opts: RangeOptions) -> Result<RangeResult>;

    /// Creates `key`; fails with [`StoreError::AlreadyExists`] if it exists.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue>;

    /// Replaces `key`'s value if its `mod_revision` is `expected`; fails with
    /// [`StoreError::Conflict`] otherwise and [`StoreError::NotFound`] if absent.
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue>;

    /// Deletes `key`, only at revision `expected` when given. Returns the key's last state
    /// with `mod_revision` set to the deletion's revision.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue>;

    /// Changes under `prefix` from revision `start` on (inclusive); `start` 0 means from the
    /// next change. Fails with [`StoreError::Compacted`] when `start` is older than the
    /// retained history.
    async fn watch(&self, prefix: &str, start: Revision) -> Result<WatchStream>;

    /// Discards history older than `revision`: watches may start at `revision` or later.
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The current revision.
    async fn revision(&self) -> Result<Revision>;
}

#[async_trait]
impl<S: Store + ?Sized> Store for Arc<S> {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        (**self).get(key).await
    }
    async fn range(&self, prefix: &str, opts: RangeOptions) -> Result<RangeResult> {
        (**self).range(prefix, opts).await
    }
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        (**self).create(key, value).await
    }
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        (**self).update(key, value, expected).await
    }
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        (**self).delete(key, expected).await
    }
    async fn watch(&self, prefix: &str, start: Revision) -> Result<WatchStream> {
        (**self).watch(prefix, start).await
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        (**self).compact(revision).await
    }
    async fn revision(&self) -> Result<Revision> {
        (**self).revision().await
    }
}

/// Every key under `prefix`, read in pages of 1,000, all at the first page's revision (so
/// the result is one state of the store, and a watch from `revision + 1` sees every later
/// change exactly once).
pub async fn range_all(store: &dyn Store, prefix: &str) -> Result<RangeResult> {
    let mut all = RangeResult::default();
    let mut after = None;
    loop {
        let page = store
            .range(
                prefix,
                RangeOptions {
                    limit: 1000,
                    after: after.take(),
                    revision: all.revision,
                },
            )
            .await?;
        all.revision = page.revision;
        after = page.kvs.last().map(|kv| kv.key.clone());
        all.kvs.extend(page.kvs);
        if !page.more {
            return Ok(all);
        }
    }
}

pub(crate) fn check_write(key: &str, value: Option<&Bytes>) -> Result<()> {
    if key.is_empty() {
        return Err(StoreError::InvalidArgument("empty key".into()));
    }
    // The limit is on the value before sealing: an envelope may carry its overhead.
    let limit = |v: &Bytes| {
        MAX_VALUE_SIZE
            + if v.starts_with(sealed::ENVELOPE) {
                sealed::OVERHEAD
            } else {
                0
            }
    };
    if let Some(v) = value
        && v.len() > limit(v)
    {
        return Err(StoreError::InvalidArgument(format!(
            "value of {} bytes exceeds the limit of {MAX_VALUE_SIZE}",
            v.len()
        )));
    }
    Ok(())
}

/// The smallest key greater than every key starting with `prefix` (etcd's range end), or
/// `None` when the prefix is empty or all 0xFF (range to the end).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
