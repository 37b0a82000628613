//! Watch fan-out: one ordered event source shared by any number of watchers.
//!
//! Publishing an event costs one broadcast slot, whatever the number of watchers; each
//! watcher reads the shared ring at its own pace and filters by its prefix. A recent-event
//! window lets new watchers start slightly in the past without touching the store.
//!
//! Watchers of one resource (a prefix with two whole segments, `/registry/pods/…`) read a
//! ring of that resource's events only, so how far they may fall behind counts their own
//! kind's writes, not every kind's: a burst of events or leases cannot stop a pod watcher.
//! Watchers of broader prefixes read the ring of every event.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures::stream;
use tokio::sync::broadcast;

use super::{Event, Revision, StoreError, WatchStream};

/// How far a new watcher's start revision is from what the hub holds.
pub(crate) enum Replay {
    /// The hub holds every event the watcher needs: these, then live ones.
    Covered(Vec<Arc<Event>>),
    /// Events from the start up to and including `upto` must come from elsewhere.
    NotCovered {
        /// Last revision published before the watcher subscribed.
        upto: Revision,
    },
}

struct State {
    /// Every event.
    sender: broadcast::Sender<Arc<Event>>,
    /// The events of each resource someone watches ([`resource_of`]).
    resources: HashMap<String, broadcast::Sender<Arc<Event>>>,
    /// Revision of the last event published (or the revision the hub started at).
    last: Revision,
    /// Recent events, oldest first.
    window: VecDeque<Arc<Event>>,
    /// Every event with a revision at or above this is in `window` or later.
    window_start: Revision,
    window_capacity: usize,
    lag_capacity: usize,
}

/// Fan-out of one ordered event source.
pub(crate) struct Hub {
    state: Mutex<State>,
}

impl Hub {
    /// A hub whose source is at revision `current`. `lag_capacity` bounds how far a watcher
    /// may fall behind before it is stopped; `window` is the replay window.
    pub fn new(current: Revision, lag_capacity: usize, window: usize) -> Self {
        let (sender, _) = broadcast::channel(lag_capacity.max(1));
        Self {
            state: Mutex::new(State {
                sender,
                resources: HashMap::new(),
                last: current,
                window: VecDeque::with_capacity(window),
                window_start: current + 1,
                window_capacity: window,
                lag_capacity: lag_capacity.max(1),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes events, in revision order, after they are durable.
    pub fn publish(&self, events: impl IntoIterator<Item = Arc<Event>>) {
        let mut s = self.lock();
        for event in events {
            s.last = event.revision();
            if s.window_capacity > 0 {
                if s.window.len() == s.window_capacity
                    && let Some(old) = s.window.pop_front()
                {
                    s.window_start = old.revision() + 1;
                }
                s.window.push_back(event.clone());
            } else {
                s.window_start = s.last + 1;
            }
            // No receivers is not an error: nobody is watching.
            if let Some(r) = resource_of(&event.kv.key).and_then(|r| s.resources.get(r)) {
                let _ = r.send(event.clone());
            }
            let _ = s.sender.send(event);
        }
    }

    /// The revision of the last published event.
    pub fn last(&self) -> Revision {
        self.lock().last
    }

    /// Subscribes a watcher of `prefix` from `start` (0: from the next event).
    pub fn subscribe(
        &self,
        prefix: &str,
        start: Revision,
    ) -> (broadcast::Receiver<Arc<Event>>, Replay, Revision) {
        let mut s = self.lock();
        let rx = match resource_of(prefix) {
            Some(r) => {
                if s.resources.len() >= MAX_RESOURCE_RINGS {
                    s.resources.retain(|_, tx| tx.receiver_count() > 0);
                }
                let capacity = s.lag_capacity;
                s.resources
                    .entry(r.to_owned())
                    .or_insert_with(|| broadcast::channel(capacity).0)
                    .subscribe()
            }
            None => s.sender.subscribe(),
        };
        let replay = if start == 0 || start > s.last {
            Replay::Covered(Vec::new())
        } else if start >= s.window_start {
            Replay::Covered(
                s.window
                    .iter()
                    .filter(|e| e.revision() >= start && e.kv.key.starts_with(prefix))
                    .cloned()
                    .collect(),
            )
        } else {
            Replay::NotCovered { upto: s.last }
        };
        (rx, replay, s.last)
    }

    /// Ends every watcher's stream (with [`StoreError::Closed`]) and starts afresh at
    /// `current`. Used when the source lost continuity.
    pub fn reset(&self, current: Revision) {
        let mut s = self.lock();
        let (sender, _) = broadcast::channel(s.lag_capacity);
        s.sender = sender;
        // Dropping the senders ends their watchers too.
        s.resources.clear();
        s.last = current;
        s.window.clear();
        s.window_start = current + 1;
    }
}

/// Rings of resources kept at most before those nobody watches are dropped.
const MAX_RESOURCE_RINGS: usize = 256;

/// The resource a key or prefix belongs to: its first two whole segments
/// (`/registry/pods/` of `/registry/pods/acme/dev/web`), or None for a prefix shorter
/// than that.
fn resource_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix('/')?;
    let first = rest.find('/')?;
    let second = rest[first + 1..].find('/')?;
    Some(&key[..first + second + 3])
}

/// A watch stream: `history` first, then live events after `after`, filtered by `prefix` and
/// `start`. Ends with an error when the watcher lags or the source closes.
pub(crate) fn watch_stream(
    prefix: String,
    start: Revision,
    history: Vec<Arc<Event>>,
    after: Revision,
    rx: broadcast::Receiver<Arc<Event>>,
) -> WatchStream {
    let live = stream::unfold(Some((rx, prefix)), move |state| async move {
        let (mut rx, prefix) = state?;
        loop {
            match rx.recv().await {
                Ok(e) => {
                    if e.revision() > after
                        && e.revision() >= start
                        && e.kv.key.starts_with(prefix.as_str())
                    {
                        return Some((Ok(e), Some((rx, prefix))));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Some((Err(StoreError::WatchLagged { missed }), None));
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return Some((Err(StoreError::Closed), None));
                }
            }
        }
    });
    WatchStream::new(futures::StreamExt::chain(
        stream::iter(history.into_iter().map(Ok)),
        live,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EventKind, KeyValue};
    use futures::StreamExt;

    fn put(key: &str, revision: Revision) -> Arc<Event> {
        Arc::new(Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.into(),
                value: bytes::Bytes::from_static(b"{}"),
                create_revision: revision,
                mod_revision: revision,
                version: 1,
            },
            prev_value: None,
        })
    }

    #[test]
    fn resources_are_the_first_two_segments() {
        assert_eq!(
            resource_of("/registry/pods/acme/dev/web"),
            Some("/registry/pods/")
        );
        assert_eq!(resource_of("/registry/pods/"), Some("/registry/pods/"));
        assert_eq!(resource_of("/registry/pods"), None);
        assert_eq!(resource_of("/registry/"), None);
        assert_eq!(resource_of(""), None);
        assert_eq!(resource_of("relative/a/b"), None);
    }

    #[tokio::test]
    async fn other_resources_writes_do_not_make_a_watcher_lag() {
        let hub = Hub::new(0, 8, 0);
        let subscribe = |prefix: &str| {
            let (rx, _, last) = hub.subscribe(prefix, 0);
            watch_stream(prefix.into(), 0, Vec::new(), last, rx)
        };
        let mut pods = subscribe("/registry/pods/");
        let mut everything = subscribe("/registry");
        // Far more events of another kind than a watcher may fall behind by.
        hub.publish((1..=100).map(|r| put(&format!("/registry/events/acme/dev/e{r}"), r)));
        hub.publish([put("/registry/pods/acme/dev/web", 101)]);
        let e = pods.next().await.unwrap().unwrap();
        assert_eq!(
            (e.kv.key.as_str(), e.revision()),
            ("/registry/pods/acme/dev/web", 101)
        );
        assert!(matches!(
            everything.next().await.unwrap(),
            Err(StoreError::WatchLagged { .. })
        ));
        // Resetting ends the resource's watchers too.
        hub.reset(200);
        assert!(matches!(pods.next().await, Some(Err(StoreError::Closed))));
    }
}
