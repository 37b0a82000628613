//! The scheduling queue: pods by priority (then age), with backoff for pods that found no
//! node, moved back when the region changes.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    priority: i32,
    seq: u64,
    key: String,
}

impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        self.priority
            .cmp(&o.priority)
            .then_with(|| o.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Where {
    Active,
    /// Handed out by `pop`, being scheduled or bound.
    InFlight,
    /// Waiting until the instant, then active.
    Backoff(Instant),
    /// Waiting for a change in the region (or the flush period).
    Unschedulable(Instant),
}

#[derive(Debug)]
struct Pending {
    priority: i32,
    attempts: u32,
    at: Where,
}

#[derive(Default)]
struct Inner {
    active: BinaryHeap<Entry>,
    pending: HashMap<String, Pending>,
    seq: u64,
    /// The earliest instant a waiting pod becomes due.
    next_due: Option<Instant>,
    closed: bool,
}

impl Inner {
    fn wait(&mut self, key: &str, at: Where) {
        if let Some(p) = self.pending.get_mut(key) {
            p.at = at;
            if let Where::Backoff(t) | Where::Unschedulable(t) = at {
                self.next_due = Some(self.next_due.map_or(t, |d| d.min(t)));
            }
        }
    }
}

/// Pods waiting for a node. A key is in the queue at most once.
pub struct SchedulingQueue {
    inner: Mutex<Inner>,
    ready: Notify,
    backoff_base: Duration,
    backoff_max: Duration,
    /// Unschedulable pods are retried at least this often.
    flush_after: Duration,
}

impl Default for SchedulingQueue {
    fn default() -> Self {
        Self::new(
            Duration::from_millis(250),
            Duration::from_secs(10),
            Duration::from_secs(30),
        )
    }
}

impl SchedulingQueue {
    /// A queue with backoff from `base` doubling to `max`; unschedulable pods are retried
    /// after `flush_after` even when nothing changed.
    pub fn new(base: Duration, max: Duration, flush_after: Duration) -> Self {
        Self {
            inner: Mutex::default(),
            ready: Notify::new(),
            backoff_base: base,
            backoff_max: max,
            flush_after,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn activate(&self, inner: &mut Inner, key: String, priority: i32) {
        inner.seq += 1;
        let seq = inner.seq;
        inner.active.push(Entry { priority, seq, key });
        self.ready.notify_one();
    }

    /// Queues a pod unless it is queued already (then only its priority is updated for
    /// the next time it waits).
    pub fn add(&self, key: &str, priority: i32) {
        let mut inner = self.lock();
        if let Some(p) = inner.pending.get_mut(key) {
            p.priority = priority;
            return;
        }
        inner.pending.insert(
            key.to_owned(),
            Pending {
                priority,
                attempts: 0,
                at: Where::Active,
            },
        );
        self.activate(&mut inner, key.to_owned(), priority);
    }

    /// Takes the pod with the highest priority (the oldest among equals); `None` once
    /// closed. The key stays known to the queue until [`Self::done`],
    /// [`Self::unschedulable`] or [`Self::retry`].
    pub async fn pop(&self) -> Option<String> {
        loop {
            let notified = self.ready.notified();
            {
                let mut inner = self.lock();
                if inner.closed {
                    return None;
                }
                self.promote(&mut inner, Instant::now());
                while let Some(e) = inner.active.pop() {
                    // Entries of keys forgotten or moved since they were pushed are stale.
                    if inner
                        .pending
                        .get(&e.key)
                        .is_some_and(|p| p.at == Where::Active)
                    {
                        if let Some(p) = inner.pending.get_mut(&e.key) {
                            p.at = Where::InFlight;
                        }
                        return Some(e.key);
                    }
                }
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }

    /// Moves due waiting pods to the active heap.
    fn promote(&self, inner: &mut Inner, now: Instant) {
        if inner.next_due.is_none_or(|t| t > now) {
            return;
        }
        inner.next_due = inner
            .pending
            .values()
            .filter_map(|p| match p.at {
                Where::Backoff(t) | Where::Unschedulable(t) if t > now => Some(t),
                _ => None,
            })
            .min();
        let due: Vec<(String, i32)> = inner
            .pending
            .iter()
            .filter(|(_, p)| match p.at {
                Where::Backoff(t) | Where::Unschedulable(t) => t <= now,
                Where::Active | Where::InFlight => false,
            })
            .map(|(k, p)| (k.clone(), p.priority))
            .collect();
        for (key, priority) in due {
            if let Some(p) = inner.pending.get_mut(&key) {
                p.at = Where::Active;
            }
            self.activate(inner, key, priority);
        }
    }

    fn delay(&self, attempts: u32) -> Duration {
        self.backoff_base
            .saturating_mul(1 << attempts.min(16))
            .min(self.backoff_max)
    }

    /// The pod was bound (or no longer needs a node): forget it.
    pub fn done(&self, key: &str) {
        self.lock().pending.remove(key);
    }

    /// No node fits: wait for a change in the region, at least the pod's backoff.
    pub fn unschedulable(&self, key: &str) {
        let mut inner = self.lock();
        if let Some(p) = inner.pending.get_mut(key) {
            let delay = self.delay(p.attempts);
            p.attempts += 1;
            inner.wait(
                key,
                Where::Unschedulable(Instant::now() + self.flush_after.max(delay)),
            );
        }
    }

    /// Binding failed for a passing reason (a conflict): try again after the backoff.
    pub fn retry(&self, key: &str) {
        let mut inner = self.lock();
        if let Some(p) = inner.pending.get_mut(key) {
            let delay = self.delay(p.attempts);
            p.attempts += 1;
            inner.wait(key, Where::Backoff(Instant::now() + delay));
        }
    }

    /// Something changed that may let unschedulable pods fit (a node came or changed, a
    /// pod went): they go back after their backoff.
    pub fn region_changed(&self) {
        let mut inner = self.lock();
        if inner.next_due.is_none() {
            return;
        }
        let now = Instant::now();
        let delays: Vec<(String, Duration)> = inner
            .pending
            .iter()
            .filter(|(_, p)| matches!(p.at, Where::Unschedulable(_)))
            .map(|(k, p)| (k.clone(), self.delay(p.attempts.saturating_sub(1))))
            .collect();
        for (key, delay) in delays {
            inner.wait(&key, Where::Backoff(now + delay));
        }
    }

    /// Pods known to the queue: waiting, backing off or being scheduled.
    pub fn len(&self) -> usize {
        self.lock().pending.len()
    }

    /// True when no pod waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pods waiting for a region change.
    pub fn unschedulable_count(&self) -> usize {
        self.lock()
            .pending
            .values()
            .filter(|p| matches!(p.at, Where::Unschedulable(_)))
            .count()
    }

    /// Wakes every `pop` with `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn priority_then_age_and_no_duplicates() {
        let q = SchedulingQueue::default();
        q.add("a", 0);
        q.add("b", 10);
        q.add("c", 0);
        q.add("a", 0);
        assert_eq!(q.pop().await.as_deref(), Some("b"));
        assert_eq!(q.pop().await.as_deref(), Some("a"));
        assert_eq!(q.pop().await.as_deref(), Some("c"));
        assert_eq!(q.len(), 3, "popped keys stay known until done");
        q.add("a", 0);
        q.done("a");
        q.done("b");
        q.done("c");
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn unschedulable_waits_for_a_change_then_backs_off() {
        let q = SchedulingQueue::new(
            Duration::from_millis(20),
            Duration::from_millis(40),
            Duration::from_secs(60),
        );
        q.add("p", 0);
        assert_eq!(q.pop().await.as_deref(), Some("p"));
        q.unschedulable("p");
        assert_eq!(q.unschedulable_count(), 1);
        let waited = tokio::time::timeout(Duration::from_millis(150), q.pop()).await;
        assert!(waited.is_err(), "an unschedulable pod waits for a change");
        q.region_changed();
        let t = Instant::now();
        assert_eq!(q.pop().await.as_deref(), Some("p"));
        assert!(t.elapsed() >= Duration::from_millis(15));
        q.retry("p");
        assert_eq!(q.pop().await.as_deref(), Some("p"));
    }
}
