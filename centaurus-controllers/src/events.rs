//! Expiry of [`Event`]s: each lives for a time to live after it last happened (Kubernetes
//! keeps events an hour), then a sweep deletes it. Sweeps read the events a page at a
//! time, so their memory is bounded however many there are; with a [`Share`], each
//! instance sweeps only the events it owns on the ring.

use std::time::Duration;

use centaurus_client::{Api, Client};
use centaurus_core::controller::Share;
use centaurus_core::model::{self, Event, Resource};

/// How long an event is kept after it last happened, unless configured otherwise.
pub const DEFAULT_EVENT_TTL: Duration = Duration::from_secs(3600);

/// Events read per page of a sweep.
const PAGE: usize = 500;

/// Deletes events older than their time to live.
pub struct EventExpiry {
    events: Api<Event>,
    ttl: Duration,
}

impl EventExpiry {
    /// Expiry through `client` after `ttl`.
    pub fn new(client: &Client, ttl: Duration) -> Self {
        Self {
            events: client.api(),
            ttl,
        }
    }

    /// Sweeps every `ttl / 4` (between 1 s and a minute) until dropped.
    pub async fn run(self, share: Share) {
        let every = (self.ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.sweep(&share).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(expired = n, "events expired"),
                Err(e) => tracing::warn!(error = %e, "event expiry sweep failed"),
            }
        }
    }

    /// One sweep: deletes the owned events last seen more than the TTL ago; returns how
    /// many it deleted.
    pub async fn sweep(&self, share: &Share) -> Result<usize, centaurus_client::ClientError> {
        let cutoff =
            model::now() - chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX);
        let mut next = None;
        let mut expired = 0;
        loop {
            let page = self
                .events
                .list_page("/registry/events/", PAGE, next)
                .await?;
            for e in &page.items {
                let old = e.last_seen().is_some_and(|at| at < cutoff);
                if old && share.ownership.owns(e.metadata.ring_position()) {
                    // Guarded by the revision read: a repeat written since keeps it.
                    let seen = e.metadata.resource_version.parse().ok();
                    match self.events.delete(&e.key(), seen).await {
                        Ok(()) => expired += 1,
                        Err(err) if err.is_not_found() || err.is_conflict() => {}
                        Err(err) => return Err(err),
                    }
                }
            }
            match page.next {
                Some(n) => next = Some(n),
                None => return Ok(expired),
            }
        }
    }
}
