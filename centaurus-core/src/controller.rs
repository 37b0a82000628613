//! Controller runtime: informers (list + watch + local cache) and reconcile loops with a
//! deduplicating work queue, retries with backoff, and an ownership filter so that several
//! active-active instances split objects by `hashKey` over a hash ring.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::{Notify, watch};

use crate::model::Resource;
use crate::ring::HashRing;
use crate::store::{EventKind, RangeOptions, Revision, Store, StoreError};

/// A change the informer observed.
#[derive(Clone, Debug)]
pub enum Change<R> {
    /// A new object (also reported for every object after a re-list that was not cached).
    Added(R),
    /// An object changed.
    Modified {
        /// The cached state before.
        old: R,
        /// The state now.
        new: R,
    },
    /// An object went away.
    Deleted(R),
}

impl<R> Change<R> {
    /// The object as it is now (or was last, for a deletion).
    pub fn object(&self) -> &R {
        match self {
            Change::Added(o) | Change::Deleted(o) | Change::Modified { new: o, .. } => o,
        }
    }
}

type Handler<R> = Arc<dyn Fn(&Change<R>) + Send + Sync>;

/// One page of a listing, as an informer's source answers it.
#[derive(Clone, Debug)]
pub struct ListPage<R> {
    /// The objects of the page, each with its `resourceVersion`.
    pub items: Vec<R>,
    /// The revision the whole listing shows (the first page's).
    pub revision: Revision,
    /// The token of the next page, when there is one.
    pub next: Option<String>,
}

/// A change as a source's watch delivers it.
#[derive(Clone, Debug)]
pub enum WatchEvent<R> {
    /// Created or updated.
    Put(R),
    /// Deleted: the object's last state, its `resourceVersion` the deletion's revision.
    Delete(R),
    /// Nothing changed for the watcher up to this revision (Kubernetes' bookmark).
    Bookmark(Revision),
}

/// Why a source could not list or watch.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SourceError {
    /// The history asked for is gone: list again (Kubernetes' 410 Gone).
    #[error("gone: {0}")]
    Gone(String),
    /// Anything else (transport, refusal); retried with backoff.
    #[error("{0}")]
    Failed(String),
}

impl From<StoreError> for SourceError {
    fn from(e: StoreError) -> Self {
        if e.is_gone() {
            SourceError::Gone(e.to_string())
        } else {
            SourceError::Failed(e.to_string())
        }
    }
}

/// A stream of watch events.
pub type WatchStream<R> = futures::stream::BoxStream<'static, Result<WatchEvent<R>, SourceError>>;

/// Where an informer lists and watches one kind: the API through `centaurus-client` (what
/// every component uses), or a [`Store`] directly ([`StoreSource`], for code that runs
/// beside the store).
#[async_trait]
pub trait ListWatch<R>: Send + Sync + 'static {
    /// A page of at most `limit` objects; `next` is the token of the previous page.
    async fn list(&self, limit: usize, next: Option<String>) -> Result<ListPage<R>, SourceError>;
    /// Every change strictly after revision `after`, in order.
    async fn watch(&self, after: Revision) -> Result<WatchStream<R>, SourceError>;
}

/// A [`ListWatch`] over the objects under a key prefix of a [`Store`].
pub struct StoreSource {
    store: Arc<dyn Store>,
    prefix: String,
}

impl StoreSource {
    /// The objects under `prefix` in `store`.
    pub fn new(store: Arc<dyn Store>, prefix: impl Into<String>) -> Self {
        Self {
            store,
            prefix: prefix.into(),
        }
    }
}

fn decode_or_skip<R: Resource>(key: &str, value: &[u8], revision: Revision) -> Option<R> {
    crate::objects::decode(key, value, revision)
        .map_err(|e| tracing::warn!(error = %e, kind = R::KIND, "skipping an undecodable object"))
        .ok()
}

#[async_trait]
impl<R: Resource> ListWatch<R> for StoreSource {
    async fn list(&self, limit: usize, next: Option<String>) -> Result<ListPage<R>, SourceError> {
        // The token is "{revision}/{last key}".
        let (revision, after) = match next.as_deref().and_then(|t| t.split_once('/')) {
            Some((rev, key)) => (
                rev.parse()
                    .map_err(|_| SourceError::Failed(format!("bad page token {next:?}")))?,
                Some(format!("/{key}")),
            ),
            None => (0, None),
        };
        let page = self
            .store
            .range(
                &self.prefix,
                RangeOptions {
                    limit,
                    after,
                    revision,
                },
            )
            .await?;
        let next = match (page.more, page.kvs.last()) {
            (true, Some(kv)) => Some(format!("{}{}", page.revision, kv.key)),
            _ => None,
        };
        Ok(ListPage {
            items: page
                .kvs
                .iter()
                .filter_map(|kv| decode_or_skip(&kv.key, &kv.value, kv.mod_revision))
                .collect(),
            revision: page.revision,
            next,
        })
    }

    async fn watch(&self, after: Revision) -> Result<WatchStream<R>, SourceError> {
        let stream = self.store.watch(&self.prefix, after + 1).await?;
        Ok(stream
            .filter_map(|item| async move {
                match item {
                    Err(e) => Some(Err(SourceError::from(e))),
                    Ok(event) => {
                        let o =
                            decode_or_skip::<R>(&event.kv.key, &event.kv.value, event.revision())?;
                        Some(Ok(match event.kind {
                            EventKind::Put => WatchEvent::Put(o),
                            EventKind::Delete => WatchEvent::Delete(o),
                        }))
                    }
                }
            })
            .boxed())
    }
}

/// Keeps a local, eventually consistent copy of every object a [`ListWatch`] source
/// serves and tells handlers about each change. After a watch failure it resumes from the
/// last revision; when that history is gone it lists again and reports the difference.
pub struct Informer<R: Resource> {
    source: Arc<dyn ListWatch<R>>,
    cache: Arc<RwLock<BTreeMap<String, R>>>,
    handlers: Arc<RwLock<Vec<Handler<R>>>>,
    synced: watch::Sender<bool>,
    page: usize,
}

impl<R: Resource> Informer<R> {
    /// An informer of what `source` lists and watches.
    pub fn new(source: Arc<dyn ListWatch<R>>) -> Self {
        Self {
            source,
            cache: Arc::default(),
            handlers: Arc::default(),
            synced: watch::channel(false).0,
            page: 500,
        }
    }

    /// An informer of the objects under `prefix` (see `ResourceInfo::prefix`) of a store
    /// it reads directly.
    pub fn from_store(store: Arc<dyn Store>, prefix: impl Into<String>) -> Self {
        Self::new(Arc::new(StoreSource::new(store, prefix)))
    }

    /// Registers a handler; it runs on the informer's task, so it must not block.
    pub fn on_change(&self, handler: impl Fn(&Change<R>) + Send + Sync + 'static) {
        self.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(handler));
    }

    /// A read handle on the cache.
    pub fn cache(&self) -> Cache<R> {
        Cache(self.cache.clone())
    }

    /// Waits until the first list has been loaded.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    fn notify(&self, change: Change<R>) {
        let handlers = self
            .handlers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for h in handlers {
            h(&change);
        }
    }

    /// Lists everything and replaces the cache, reporting the difference. Returns the
    /// revision to watch after.
    async fn relist(&self) -> Result<Revision, SourceError> {
        let mut fresh = BTreeMap::new();
        let mut next = None;
        let mut revision = None;
        loop {
            let page = self.source.list(self.page, next.take()).await?;
            // Every page shows the first page's revision: the list is one state, and the
            // watch after it brings every later change once.
            revision.get_or_insert(page.revision);
            for o in page.items {
                fresh.insert(o.key(), o);
            }
            match page.next {
                Some(token) => next = Some(token),
                None => break,
            }
        }
        let changes = {
            let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
            let mut changes = Vec::new();
            for (k, old) in cache.iter() {
                if !fresh.contains_key(k) {
                    changes.push(Change::Deleted(old.clone()));
                }
            }
            for (k, new) in &fresh {
                match cache.get(k) {
                    None => changes.push(Change::Added(new.clone())),
                    Some(old) if old.meta().resource_version != new.meta().resource_version => {
                        changes.push(Change::Modified {
                            old: old.clone(),
                            new: new.clone(),
                        })
                    }
                    Some(_) => {}
                }
            }
            *cache = fresh;
            changes
        };
        for c in changes {
            self.notify(c);
        }
        self.synced.send_replace(true);
        Ok(revision.unwrap_or_default())
    }

    /// Runs until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        let mut last: Option<Revision> = None;
        loop {
            let from = match last {
                Some(rev) => rev,
                None => match self.relist().await {
                    Ok(rev) => rev,
                    Err(e) => {
                        tracing::warn!(kind = R::KIND, error = %e, "informer list failed");
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                },
            };
            last = Some(from);
            let mut stream = match self.source.watch(from).await {
                Ok(s) => s,
                Err(e) => {
                    if matches!(e, SourceError::Gone(_)) {
                        last = None;
                    }
                    tracing::warn!(kind = R::KIND, error = %e, "informer watch failed");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            while let Some(item) = stream.next().await {
                match item {
                    Ok(event) => {
                        backoff.reset();
                        last = Some(self.apply(event));
                    }
                    Err(e) => {
                        if matches!(e, SourceError::Gone(_)) {
                            last = None;
                        }
                        tracing::info!(kind = R::KIND, error = %e, "informer watch ended; resuming");
                        break;
                    }
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Applies one event to the cache and returns its revision.
    fn apply(&self, event: WatchEvent<R>) -> Revision {
        let revision_of = |o: &R| o.meta().resource_version.parse().unwrap_or(0);
        let (revision, change) = match event {
            WatchEvent::Bookmark(rev) => return rev,
            WatchEvent::Put(new) => {
                let old = self
                    .cache
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(new.key(), new.clone());
                let rev = revision_of(&new);
                match old {
                    None => (rev, Change::Added(new)),
                    Some(old) if old.meta().resource_version == new.meta().resource_version => {
                        return rev;
                    }
                    Some(old) => (rev, Change::Modified { old, new }),
                }
            }
            WatchEvent::Delete(gone) => {
                let rev = revision_of(&gone);
                let old = self
                    .cache
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&gone.key());
                (rev, Change::Deleted(old.unwrap_or(gone)))
            }
        };
        self.notify(change);
        revision
    }
}

/// A read handle on an informer's cache, keyed by store key.
#[derive(Clone)]
pub struct Cache<R>(Arc<RwLock<BTreeMap<String, R>>>);

impl<R: Clone> Cache<R> {
    /// The cached object at `key`.
    pub fn get(&self, key: &str) -> Option<R> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<R> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Cached objects whose key starts with `prefix`.
    pub fn list_prefix(&self, prefix: &str) -> Vec<R> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Clones of the cached objects `keep` selects, which sees each in place (under the
    /// cache's read lock: it must not block). Cheaper than [`Cache::list`] when few match.
    pub fn select(&self, mut keep: impl FnMut(&R) -> bool) -> Vec<R> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|v| keep(v))
            .cloned()
            .collect()
    }

    /// What `f` makes of the object at `key`, read in place (under the read lock).
    pub fn read<T>(&self, key: &str, f: impl FnOnce(&R) -> T) -> Option<T> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .map(f)
    }

    /// True when an object is cached at `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(key)
    }

    /// True when some cached object's key starts with `prefix`.
    pub fn has_prefix(&self, prefix: &str) -> bool {
        (self.0.read().unwrap_or_else(|e| e.into_inner()))
            .range(prefix.to_owned()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(prefix))
    }

    /// Number of cached objects.
    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Exponential backoff with a ceiling.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `base`, doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// The delay of a given attempt (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        self.base
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max)
    }

    /// Back to the base delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[derive(Default)]
struct QueueState {
    queue: VecDeque<String>,
    queued: HashSet<String>,
    processing: HashSet<String>,
    /// Keys added while being processed: queued again when done.
    dirty: HashSet<String>,
    failures: HashMap<String, u32>,
    shut_down: bool,
}

/// A work queue of keys: a key is queued at most once, never handed to two workers at
/// once, and re-queued if it changed while being processed.
#[derive(Clone)]
pub struct WorkQueue {
    state: Arc<Mutex<QueueState>>,
    ready: Arc<Notify>,
    backoff: Backoff,
}

impl Default for WorkQueue {
    fn default() -> Self {
        Self::new(Backoff::new(
            Duration::from_millis(5),
            Duration::from_secs(60),
        ))
    }
}

impl WorkQueue {
    /// A queue whose failed keys are retried after `backoff`'s delays.
    pub fn new(backoff: Backoff) -> Self {
        Self {
            state: Arc::default(),
            ready: Arc::new(Notify::new()),
            backoff,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `key` unless it is already queued.
    pub fn add(&self, key: &str) {
        let mut s = self.lock();
        if s.shut_down {
            return;
        }
        if s.processing.contains(key) {
            s.dirty.insert(key.to_owned());
            return;
        }
        if s.queued.insert(key.to_owned()) {
            s.queue.push_back(key.to_owned());
            drop(s);
            self.ready.notify_one();
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(&self, key: &str, delay: Duration) {
        let this = self.clone();
        let key = key.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            this.add(&key);
        });
    }

    /// Queues `key` again after its next backoff delay; returns the delay.
    pub fn retry(&self, key: &str) -> Duration {
        let attempt = {
            let mut s = self.lock();
            let n = s.failures.entry(key.to_owned()).or_default();
            *n += 1;
            *n - 1
        };
        let delay = self.backoff.delay(attempt);
        self.add_after(key, delay);
        delay
    }

    /// Clears `key`'s failure count after a success.
    pub fn forget(&self, key: &str) {
        self.lock().failures.remove(key);
    }

    /// The next key to process; `None` once shut down.
    pub async fn next(&self) -> Option<String> {
        loop {
            let notified = self.ready.notified();
            {
                let mut s = self.lock();
                if s.shut_down {
                    return None;
                }
                if let Some(key) = s.queue.pop_front() {
                    s.queued.remove(&key);
                    s.processing.insert(key.clone());
                    if !s.queue.is_empty() {
                        self.ready.notify_one();
                    }
                    return Some(key);
                }
            }
            notified.await;
        }
    }

    /// Marks `key` processed; queues it again if it was added meanwhile.
    pub fn done(&self, key: &str) {
        let mut s = self.lock();
        s.processing.remove(key);
        if s.dirty.remove(key) && s.queued.insert(key.to_owned()) {
            s.queue.push_back(key.to_owned());
            drop(s);
            self.ready.notify_one();
        }
    }

    /// Keys waiting (not counting those being processed).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops handing out keys; workers' `next` returns `None`.
    pub fn shut_down(&self) {
        self.lock().shut_down = true;
        self.ready.notify_waiters();
    }
}

/// Decides whether this instance handles an object, by its `hashKey`.
pub trait Ownership: Send + Sync + 'static {
    /// True when this instance reconciles objects with this ring position.
    fn owns(&self, position: u64) -> bool;
}

impl Ownership for Arc<dyn Ownership> {
    fn owns(&self, position: u64) -> bool {
        (**self).owns(position)
    }
}

/// Told of every reconcile a controller ran: the key, when it started and when it ended.
pub type Observer = Arc<dyn Fn(&str, std::time::Instant, std::time::Instant) + Send + Sync>;

/// Every object (a single instance).
#[derive(Clone, Copy, Debug, Default)]
pub struct OwnAll;

impl Ownership for OwnAll {
    fn owns(&self, _: u64) -> bool {
        true
    }
}

/// The share of the work an instance of active-active controllers takes.
#[derive(Clone)]
pub struct Share {
    /// Which objects it reconciles.
    pub ownership: Arc<dyn Ownership>,
    /// How often it looks at every owned object again (to pick up what it gains).
    pub resync: Option<Duration>,
    /// Told of every reconcile.
    pub observer: Option<Observer>,
}

impl Share {
    /// Everything: the only instance.
    pub fn all() -> Self {
        Self::new(Arc::new(OwnAll), None)
    }

    /// What `ownership` gives, looked at again every `resync`.
    pub fn new(ownership: Arc<dyn Ownership>, resync: Option<Duration>) -> Self {
        Self {
            ownership,
            resync,
            observer: None,
        }
    }
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Share")
            .field("resync", &self.resync)
            .field("observed", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

/// Ownership by a hash ring shared by the active-active instances: this instance handles
/// the objects the ring gives to `me`. Update the ring as instances come and go.
#[derive(Clone, Debug)]
pub struct RingOwnership {
    /// The shared ring of instance names.
    pub ring: Arc<RwLock<HashRing>>,
    /// This instance's name on the ring.
    pub me: String,
}

impl Ownership for RingOwnership {
    fn owns(&self, position: u64) -> bool {
        self.ring
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .owns(&self.me, position)
    }
}

/// What a reconcile asks for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// Nothing until the object changes.
    Done,
    /// Look again after this long (polling external state).
    After(Duration),
}

/// The logic of a controller: bring the world in line with one object.
#[async_trait]
pub trait Reconciler<R: Resource>: Send + Sync + 'static {
    /// Reconciles the object at store key `key`; `object` is the cached state, `None`
    /// when it was deleted. An error retries the key with backoff.
    async fn reconcile(&self, key: &str, object: Option<R>) -> Result<Requeue, String>;
}

/// An informer, a work queue and worker tasks running a [`Reconciler`].
pub struct Controller<R: Resource> {
    informer: Arc<Informer<R>>,
    queue: WorkQueue,
    ownership: Arc<dyn Ownership>,
    workers: usize,
    resync: Option<Duration>,
    observer: Option<Observer>,
    _kind: PhantomData<R>,
}

impl<R: Resource> Controller<R> {
    /// A controller of what `source` lists and watches.
    pub fn new(source: Arc<dyn ListWatch<R>>) -> Self {
        Self {
            informer: Arc::new(Informer::new(source)),
            queue: WorkQueue::default(),
            ownership: Arc::new(OwnAll),
            workers: 2,
            resync: None,
            observer: None,
            _kind: PhantomData,
        }
    }

    /// A controller of the objects under `prefix` of a store it reads directly.
    pub fn from_store(store: Arc<dyn Store>, prefix: impl Into<String>) -> Self {
        Self::new(Arc::new(StoreSource::new(store, prefix)))
    }

    /// Handles only the objects `ownership` gives this instance.
    pub fn with_ownership(mut self, ownership: impl Ownership) -> Self {
        self.ownership = Arc::new(ownership);
        self
    }

    /// Reconciles `share`'s objects: its ownership, resync and observer.
    pub fn with_share(mut self, share: &Share) -> Self {
        self = self
            .with_ownership(share.ownership.clone())
            .with_observer(share.observer.clone());
        if let Some(period) = share.resync {
            self = self.with_resync(period);
        }
        self
    }

    /// Number of concurrent reconciles (of distinct keys).
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Re-queues every owned cached object this often (picks up ownership changes and
    /// drift in external state).
    pub fn with_resync(mut self, period: Duration) -> Self {
        self.resync = Some(period);
        self
    }

    /// Tells `observer` of every reconcile (what an instance did, for audits and tests).
    pub fn with_observer(mut self, observer: Option<Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// The informer, for its cache or more handlers.
    pub fn informer(&self) -> &Arc<Informer<R>> {
        &self.informer
    }

    /// The work queue, to queue keys from other sources (watches of dependent kinds).
    pub fn queue(&self) -> &WorkQueue {
        &self.queue
    }

    /// Runs until the returned future is dropped.
    pub async fn run(self, reconciler: impl Reconciler<R>) {
        let reconciler = Arc::new(reconciler);
        let informer = self.informer.clone();
        let cache = informer.cache();
        {
            let queue = self.queue.clone();
            let ownership = self.ownership.clone();
            informer.on_change(move |change| {
                let object = change.object();
                if ownership.owns(object.meta().ring_position()) {
                    queue.add(&object.key());
                }
            });
        }
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(informer.clone().run());
        informer.wait_synced().await;
        if let Some(period) = self.resync {
            let (queue, ownership, cache) =
                (self.queue.clone(), self.ownership.clone(), cache.clone());
            tasks.spawn(async move {
                loop {
                    tokio::time::sleep(period).await;
                    for o in cache.list() {
                        if ownership.owns(o.meta().ring_position()) {
                            queue.add(&o.key());
                        }
                    }
                }
            });
        }
        for _ in 0..self.workers {
            let (queue, cache, reconciler) =
                (self.queue.clone(), cache.clone(), reconciler.clone());
            let (ownership, observer) = (self.ownership.clone(), self.observer.clone());
            tasks.spawn(async move {
                while let Some(key) = queue.next().await {
                    let object = cache.get(&key);
                    // Ownership may have moved since the key was queued.
                    if object
                        .as_ref()
                        .is_some_and(|o| !ownership.owns(o.meta().ring_position()))
                    {
                        queue.forget(&key);
                        queue.done(&key);
                        continue;
                    }
                    let started = std::time::Instant::now();
                    let outcome = reconciler.reconcile(&key, object).await;
                    if let Some(observe) = &observer {
                        observe(&key, started, std::time::Instant::now());
                    }
                    match outcome {
                        Ok(Requeue::Done) => queue.forget(&key),
                        Ok(Requeue::After(d)) => {
                            queue.forget(&key);
                            queue.add_after(&key, d);
                        }
                        Err(e) => {
                            let delay = queue.retry(&key);
                            tracing::warn!(key, error = %e, ?delay, kind = R::KIND, "reconcile failed; retrying");
                        }
                    }
                    queue.done(&key);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}
