//! Watch fan-out: one ordered event source shared by any number of watchers.
//!
//! Publishing an event costs one broadcast slot, whatever the number of watchers; each
//! watcher reads the shared ring at its own pace and filters by its prefix. A recent-event
//! window lets new watchers start slightly in the past without touching the store.

use std::collections::VecDeque;
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
    sender: broadcast::Sender<Arc<Event>>,
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
        let s = self.lock();
        let rx = s.sender.subscribe();
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
        s.last = current;
        s.window.clear();
        s.window_start = current + 1;
    }
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
