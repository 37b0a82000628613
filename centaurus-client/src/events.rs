//! Recording [`Event`]s, as Kubernetes' event recorder does: in the background, never
//! delaying the work being reported, with repeats counted on one object.
//!
//! [`Recorder::record`] only queues; a task writes. Each event is named by
//! [`Event::dedup_name`], so a repeat, from this process or any other instance of the
//! component, finds the existing object and raises its `count` and `lastTimestamp`. When
//! the queue is full (the API slow or down) events are dropped and counted, never waited
//! for.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use centaurus_core::model::{
    self, EVENT_NORMAL, EVENT_WARNING, Event, EventSource, ObjectMeta, ObjectReference, Scope,
};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::{Api, Client};

/// Events queued and not yet written, at most; more are dropped.
const QUEUE: usize = 4096;
/// Writes in flight at once.
const CONCURRENT_WRITES: usize = 16;
/// Names of events this recorder knows exist, at most (then it forgets them all).
const KNOWN: usize = 16_384;

struct Pending {
    host: Arc<str>,
    regarding: ObjectReference,
    type_: &'static str,
    reason: String,
    message: String,
    at: model::Time,
}

/// Records events about objects for one component (`default-scheduler`, `kubelet`, ...).
/// Cheap to clone; every clone feeds one writer.
#[derive(Clone)]
pub struct Recorder {
    queue: Option<mpsc::Sender<Pending>>,
    host: Arc<str>,
    dropped: Arc<AtomicU64>,
}

impl Recorder {
    /// A recorder writing through `client` as `component`. Spawns its writer on the
    /// current Tokio runtime (outside one it records nothing); the writer ends when every
    /// clone is dropped.
    pub fn new(client: Client, component: impl Into<String>) -> Self {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no Tokio runtime: events are not recorded");
            return Self::disabled();
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = Writer {
            events: client.api(),
            component: component.into(),
            known: std::sync::Mutex::new(HashSet::new()),
        };
        runtime.spawn(writer.run(rx));
        Self {
            queue: Some(tx),
            host: "".into(),
            dropped: Arc::default(),
        }
    }

    /// The same recorder, reporting from `host` (a node agent's node).
    pub fn on_host(&self, host: &str) -> Self {
        Self {
            host: host.into(),
            ..self.clone()
        }
    }

    /// A recorder that records nothing (tools, tests, `--no-events`).
    pub fn disabled() -> Self {
        Self {
            queue: None,
            host: "".into(),
            dropped: Arc::default(),
        }
    }

    /// Records a `Normal` event about `regarding`.
    pub fn normal(&self, regarding: ObjectReference, reason: &str, message: impl Into<String>) {
        self.record(regarding, EVENT_NORMAL, reason, message.into());
    }

    /// Records a `Warning` event about `regarding`.
    pub fn warning(&self, regarding: ObjectReference, reason: &str, message: impl Into<String>) {
        self.record(regarding, EVENT_WARNING, reason, message.into());
    }

    fn record(
        &self,
        regarding: ObjectReference,
        type_: &'static str,
        reason: &str,
        message: String,
    ) {
        let Some(queue) = &self.queue else { return };
        let pending = Pending {
            host: self.host.clone(),
            regarding,
            type_,
            reason: reason.to_owned(),
            message: model::event_message(&message),
            at: model::now(),
        };
        if queue.try_send(pending).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

struct Writer {
    events: Api<Event>,
    component: String,
    known: std::sync::Mutex<HashSet<String>>,
}

impl Writer {
    async fn run(self, rx: mpsc::Receiver<Pending>) {
        tokio_stream::wrappers::ReceiverStream::new(rx)
            .for_each_concurrent(CONCURRENT_WRITES, |p| async {
                if let Err(e) = self.write(p).await {
                    tracing::debug!(error = %e, "event not recorded");
                }
            })
            .await;
    }

    async fn write(&self, p: Pending) -> Result<(), crate::ClientError> {
        let name = Event::dedup_name(
            &p.regarding,
            p.type_,
            &p.reason,
            &p.message,
            &self.component,
        );
        let source = EventSource {
            component: self.component.clone(),
            host: p.host.to_string(),
        };
        let (tenant, namespace) = Event::space_of(&p.regarding);
        let key = model::object_key("events", Scope::Namespaced, tenant, namespace, &name);
        let event = || Event {
            metadata: ObjectMeta::namespaced(tenant, namespace, &name),
            involved_object: p.regarding.clone(),
            reason: p.reason.clone(),
            message: p.message.clone(),
            source: source.clone(),
            first_timestamp: Some(p.at),
            last_timestamp: Some(p.at),
            count: 1,
            type_: p.type_.to_owned(),
            reporting_component: source.component.clone(),
            reporting_instance: source.host.clone(),
            ..Default::default()
        };
        let known = self.known.lock().expect("known events").contains(&key);
        if !known {
            match self.events.create(event()).await {
                Ok(_) => {
                    self.remember(key);
                    return Ok(());
                }
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(e),
            }
        }
        // A repeat: count it on the existing object.
        let found = self
            .events
            .modify(&key, |e| {
                e.count = e.count.max(1).saturating_add(1);
                e.last_timestamp = Some(p.at);
                e.involved_object.resource_version = p.regarding.resource_version.clone();
                true
            })
            .await?;
        if found.is_none() {
            // Expired since: this is its first time again.
            match self.events.create(event()).await {
                Err(e) if !e.is_already_exists() => return Err(e),
                _ => {}
            }
        }
        self.remember(key);
        Ok(())
    }

    fn remember(&self, key: String) {
        let mut known = self.known.lock().expect("known events");
        if known.len() >= KNOWN {
            known.clear();
        }
        known.insert(key);
    }
}
