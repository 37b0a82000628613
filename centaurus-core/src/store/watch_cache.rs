//! `WatchCache`: serves any number of watchers of a store from one upstream watch.
//!
//! Reads and writes pass through to the inner store. Watches are answered from a shared
//! broadcast ring fed by a single watch on the whole key space, with a window of recent
//! events for watchers that start slightly in the past; a watcher that starts before the
//! window gets its own upstream watch, so the answer is always complete.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::hub::{Hub, Replay, watch_stream};
use super::{
    KeyValue, RangeOptions, RangeResult, Result, Revision, Store, StoreError, WatchStream,
};

/// A store wrapper that fans one upstream watch out to many watchers (see the module docs).
pub struct WatchCache<S: Store> {
    inner: Arc<S>,
    hub: Arc<Hub>,
    compacted: Arc<AtomicI64>,
    pump: tokio::task::AbortHandle,
}

impl<S: Store> Drop for WatchCache<S> {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl<S: Store> std::fmt::Debug for WatchCache<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchCache")
            .field("last", &self.hub.last())
            .finish()
    }
}

impl<S: Store> WatchCache<S> {
    /// Starts the upstream watch. `window` recent events are kept for replay; a watcher
    /// that falls more than `lag_capacity` events behind is stopped (it must re-list).
    /// Must be called inside a tokio runtime.
    pub async fn new(inner: S, window: usize, lag_capacity: usize) -> Result<Self> {
        let inner = Arc::new(inner);
        let current = inner.revision().await?;
        let hub = Arc::new(Hub::new(current, lag_capacity, window));
        let upstream = inner.watch("", current + 1).await?;
        let pump = tokio::spawn(pump(inner.clone(), hub.clone(), upstream)).abort_handle();
        Ok(Self {
            inner,
            hub,
            compacted: Arc::new(AtomicI64::new(0)),
            pump,
        })
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

/// Feeds the hub from the upstream watch, resuming after transient failures. When the
/// upstream lost history (compacted), current watchers are ended so they re-list.
async fn pump<S: Store>(inner: Arc<S>, hub: Arc<Hub>, mut upstream: WatchStream) {
    loop {
        while let Some(item) = upstream.next().await {
            match item {
                Ok(event) => hub.publish([event]),
                Err(e) => {
                    tracing::warn!(error = %e, "watch cache lost its upstream watch");
                    break;
                }
            }
        }
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            match inner.watch("", hub.last() + 1).await {
                Ok(w) => {
                    upstream = w;
                    break;
                }
                Err(e) if e.is_gone() => match inner.revision().await {
                    Ok(current) => hub.reset(current),
                    Err(e) => tracing::warn!(error = %e, "watch cache cannot reach its store"),
                },
                Err(e) => tracing::warn!(error = %e, "watch cache cannot re-watch its store"),
            }
        }
    }
}

#[async_trait]
impl<S: Store> Store for WatchCache<S> {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner.get(key).await
    }

    async fn range(&self, prefix: &str, opts: RangeOptions) -> Result<RangeResult> {
        self.inner.range(prefix, opts).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        self.inner.create(key, value).await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        self.inner.update(key, value, expected).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        self.inner.delete(key, expected).await
    }

    async fn watch(&self, prefix: &str, start: Revision) -> Result<WatchStream> {
        if start < 0 {
            return Err(StoreError::InvalidArgument(format!(
                "negative start revision {start}"
            )));
        }
        let compacted = self.compacted.load(Ordering::Acquire);
        if start != 0 && start < compacted {
            return Err(StoreError::Compacted {
                requested: start,
                compacted,
            });
        }
        let (rx, replay, last) = self.hub.subscribe(prefix, start);
        match replay {
            Replay::Covered(history) => {
                Ok(watch_stream(prefix.to_owned(), start, history, last, rx))
            }
            Replay::NotCovered { .. } => self.inner.watch(prefix, start).await,
        }
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await?;
        self.compacted.fetch_max(revision, Ordering::AcqRel);
        Ok(())
    }

    async fn revision(&self) -> Result<Revision> {
        self.inner.revision().await
    }
}
