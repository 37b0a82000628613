//! Pod creations and deletions a controller made but has not yet seen in its pod cache, per
//! owner, so that a reconcile running before the watch catches up neither creates nor
//! deletes twice.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an unseen creation or deletion is waited for before it is forgotten.
const TTL: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Pending {
    created: HashMap<String, Instant>,
    deleted: HashMap<String, Instant>,
}

/// Unseen pod creations and deletions by owner key.
#[derive(Default)]
pub(crate) struct Expectations(Mutex<HashMap<String, Pending>>);

/// What an owner's unseen changes mean for the pods in the cache.
pub(crate) struct Unseen {
    /// Creations not yet in the cache.
    pub created: usize,
    /// Pod keys deleted but still in the cache.
    pub deleted: HashSet<String>,
}

impl Expectations {
    fn with<T>(&self, owner: &str, f: impl FnOnce(&mut Pending) -> T) -> T {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(all.entry(owner.to_owned()).or_default())
    }

    /// Notes that `owner` created the pod at `key`.
    pub fn created(&self, owner: &str, key: String) {
        self.with(owner, |p| p.created.insert(key, Instant::now()));
    }

    /// Notes that `owner` deleted the pod at `key`.
    pub fn deleted(&self, owner: &str, key: String) {
        self.with(owner, |p| p.deleted.insert(key, Instant::now()));
    }

    /// Settles `owner`'s expectations against the keys of its pods in the cache.
    pub fn unseen(&self, owner: &str, present: &HashSet<String>) -> Unseen {
        self.with(owner, |p| {
            p.created
                .retain(|k, t| !present.contains(k) && t.elapsed() < TTL);
            p.deleted
                .retain(|k, t| present.contains(k) && t.elapsed() < TTL);
            Unseen {
                created: p.created.len(),
                deleted: p.deleted.keys().cloned().collect(),
            }
        })
    }

    /// Forgets an owner that is gone.
    pub fn forget(&self, owner: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(owner);
    }
}
