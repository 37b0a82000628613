//! `RedbStore`: the embedded store, a single redb file with an event log for watches.
//!
//! Writes go to one writer thread that applies every request queued behind the one being
//! committed in a single durable transaction (group commit): a client is answered only
//! after the `fsync` that made its write durable, and concurrent clients share that
//! `fsync`. A batch commits whole or not at all, so a crash never leaves half of it.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::hub::{Hub, Replay, watch_stream};
use super::{
    Event, EventKind, KeyValue, RangeOptions, RangeResult, Result, Revision, Store, StoreError,
    WatchStream, check_write,
};

/// Current state of every key: key -> record.
const KV: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("kv");
/// History of changes for watches: revision -> log entry. Trimmed by compaction.
const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("log");
/// `revision` and `compacted` counters.
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// Tuning of a [`RedbStore`].
#[derive(Clone, Debug)]
pub struct RedbOptions {
    /// Most write requests committed in one transaction.
    pub max_batch: usize,
    /// Events a watcher may fall behind before it is stopped.
    pub watch_lag_capacity: usize,
    /// Recent events kept in memory to start watches without reading the log.
    pub watch_window: usize,
}

impl Default for RedbOptions {
    fn default() -> Self {
        Self {
            max_batch: 1024,
            watch_lag_capacity: 16 * 1024,
            watch_window: 4096,
        }
    }
}

enum Op {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    Compact {
        revision: Revision,
    },
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Option<KeyValue>>>,
}

struct Inner {
    db: Arc<Database>,
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    hub: Arc<Hub>,
    revision: Arc<AtomicI64>,
    compacted: Arc<AtomicI64>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what it holds and exit; joining releases
        // the file so the store can be reopened at once.
        self.requests.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The embedded, durable store (see the module docs).
#[derive(Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("revision", &self.inner.revision.load(Ordering::Acquire))
            .finish()
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl RedbStore {
    /// Opens (or creates) the store file at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, RedbOptions::default())
    }

    /// Opens (or creates) the store file at `path`.
    pub fn open_with(path: impl AsRef<Path>, opts: RedbOptions) -> Result<Self> {
        let path = path.as_ref();
        let db = Database::create(path)
            .map_err(|e| StoreError::Backend(format!("opening {}: {e}", path.display())))?;
        let (revision, compacted) = {
            let txn = db.begin_write().map_err(backend)?;
            let counters = {
                txn.open_table(KV).map_err(backend)?;
                txn.open_table(LOG).map_err(backend)?;
                let meta = txn.open_table(META).map_err(backend)?;
                let read = |name| -> Result<i64> {
                    Ok(meta
                        .get(name)
                        .map_err(backend)?
                        .map_or(0, |v| v.value() as i64))
                };
                (read("revision")?, read("compacted")?)
            };
            txn.commit().map_err(backend)?;
            counters
        };
        let db = Arc::new(db);
        let hub = Arc::new(Hub::new(
            revision,
            opts.watch_lag_capacity,
            opts.watch_window,
        ));
        let revision = Arc::new(AtomicI64::new(revision));
        let compacted = Arc::new(AtomicI64::new(compacted));
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            db: db.clone(),
            hub: hub.clone(),
            revision: revision.clone(),
            compacted: compacted.clone(),
            max_batch: opts.max_batch.max(1),
        };
        let writer = std::thread::Builder::new()
            .name("redb-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(backend)?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                requests: Some(tx),
                writer: Some(writer),
                hub,
                revision,
                compacted,
            }),
        })
    }

    async fn submit(&self, op: Op) -> Result<Option<KeyValue>> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .requests
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(Request { op, reply })
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn submit_kv(&self, op: Op) -> Result<KeyValue> {
        self.submit(op)
            .await?
            .ok_or_else(|| StoreError::Backend("writer returned no record".into()))
    }

    fn read_log(
        db: &Database,
        prefix: &str,
        start: Revision,
        upto: Revision,
    ) -> Result<Vec<Arc<Event>>> {
        let txn = db.begin_read().map_err(backend)?;
        let compacted = txn
            .open_table(META)
            .map_err(backend)?
            .get("compacted")
            .map_err(backend)?
            .map_or(0, |v| v.value() as i64);
        if start < compacted {
            return Err(StoreError::Compacted {
                requested: start,
                compacted,
            });
        }
        let log = txn.open_table(LOG).map_err(backend)?;
        let mut events = Vec::new();
        for entry in log.range(start as u64..=upto as u64).map_err(backend)? {
            let (rev, bytes) = entry.map_err(backend)?;
            let event = decode_event(rev.value() as i64, bytes.value())?;
            if event.kv.key.starts_with(prefix) {
                events.push(Arc::new(event));
            }
        }
        Ok(events)
    }
}

#[async_trait]
impl Store for RedbStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let txn = self.inner.db.begin_read().map_err(backend)?;
        let kv = txn.open_table(KV).map_err(backend)?;
        match kv.get(key).map_err(backend)? {
            Some(v) => Ok(Some(decode_record(key, v.value())?)),
            None => Ok(None),
        }
    }

    async fn range(&self, prefix: &str, opts: RangeOptions) -> Result<RangeResult> {
        let db = self.inner.db.clone();
        let prefix = prefix.to_owned();
        let task = move || -> Result<RangeResult> {
            let txn = db.begin_read().map_err(backend)?;
            let meta = txn.open_table(META).map_err(backend)?;
            let counter = |name| -> Result<i64> {
                Ok(meta
                    .get(name)
                    .map_err(backend)?
                    .map_or(0, |v| v.value() as i64))
            };
            let current = counter("revision")?;
            let at = match opts.revision {
                0 => current,
                at if at > current => {
                    return Err(StoreError::FutureRevision {
                        requested: at,
                        current,
                    });
                }
                at => at,
            };
            let compacted = counter("compacted")?;
            if at < current && at < compacted {
                return Err(StoreError::Compacted {
                    requested: at,
                    compacted,
                });
            }
            let kv = txn.open_table(KV).map_err(backend)?;
            let log = txn.open_table(LOG).map_err(backend)?;
            range_at(&kv, &log, &prefix, &opts, at, current)
        };
        tokio::task::spawn_blocking(task).await.map_err(backend)?
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        check_write(key, Some(&value))?;
        self.submit_kv(Op::Create {
            key: key.to_owned(),
            value,
        })
        .await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        check_write(key, Some(&value))?;
        self.submit_kv(Op::Update {
            key: key.to_owned(),
            value,
            expected,
        })
        .await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        check_write(key, None)?;
        self.submit_kv(Op::Delete {
            key: key.to_owned(),
            expected,
        })
        .await
    }

    async fn watch(&self, prefix: &str, start: Revision) -> Result<WatchStream> {
        if start < 0 {
            return Err(StoreError::InvalidArgument(format!(
                "negative start revision {start}"
            )));
        }
        let (rx, replay, last) = self.inner.hub.subscribe(prefix, start);
        let history = match replay {
            Replay::Covered(events) => {
                let compacted = self.inner.compacted.load(Ordering::Acquire);
                if start != 0 && start < compacted {
                    return Err(StoreError::Compacted {
                        requested: start,
                        compacted,
                    });
                }
                events
            }
            Replay::NotCovered { upto } => {
                let db = self.inner.db.clone();
                let p = prefix.to_owned();
                tokio::task::spawn_blocking(move || Self::read_log(&db, &p, start, upto))
                    .await
                    .map_err(backend)??
            }
        };
        Ok(watch_stream(prefix.to_owned(), start, history, last, rx))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.submit(Op::Compact { revision }).await.map(|_| ())
    }

    async fn revision(&self) -> Result<Revision> {
        Ok(self.inner.revision.load(Ordering::Acquire))
    }
}

/// The single writer: batches queued requests into one durable transaction.
struct Writer {
    db: Arc<Database>,
    hub: Arc<Hub>,
    revision: Arc<AtomicI64>,
    compacted: Arc<AtomicI64>,
    max_batch: usize,
}

/// The outcome of one request inside a batch.
type Outcome = Result<Option<KeyValue>>;

impl Writer {
    fn run(self, requests: mpsc::Receiver<Request>) {
        while let Ok(first) = requests.recv() {
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match requests.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            match self.commit(&batch) {
                Ok((outcomes, events, revision, compacted)) => {
                    // Order matters: the revision is visible before the events, and both
                    // before any client hears back, so a client that wrote can watch from
                    // its own write's revision.
                    self.revision.store(revision, Ordering::Release);
                    self.compacted.store(compacted, Ordering::Release);
                    self.hub.publish(events.into_iter().map(Arc::new));
                    for (req, outcome) in batch.into_iter().zip(outcomes) {
                        let _ = req.reply.send(outcome);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "store commit failed; batch rejected");
                    for req in batch {
                        let _ = req.reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    fn commit(&self, batch: &[Request]) -> Result<(Vec<Outcome>, Vec<Event>, Revision, Revision)> {
        let mut txn = self.db.begin_write().map_err(backend)?;
        txn.set_durability(Durability::Immediate).map_err(backend)?;
        let start_rev = self.revision.load(Ordering::Acquire);
        let start_compacted = self.compacted.load(Ordering::Acquire);
        let mut rev = start_rev;
        let mut compacted = start_compacted;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        {
            let mut kv = txn.open_table(KV).map_err(backend)?;
            let mut log = txn.open_table(LOG).map_err(backend)?;
            for req in batch {
                let outcome = match &req.op {
                    Op::Create { key, value } => {
                        if kv.get(key.as_str()).map_err(backend)?.is_some() {
                            Err(StoreError::AlreadyExists { key: key.clone() })
                        } else {
                            rev += 1;
                            let new = KeyValue {
                                key: key.clone(),
                                value: value.clone(),
                                create_revision: rev,
                                mod_revision: rev,
                                version: 1,
                            };
                            put(&mut kv, &mut log, &new, None)?;
                            events.push(Event {
                                kind: EventKind::Put,
                                kv: new.clone(),
                                prev_value: None,
                            });
                            Ok(Some(new))
                        }
                    }
                    Op::Update {
                        key,
                        value,
                        expected,
                    } => {
                        let old = read_record(&kv, key)?;
                        match old {
                            None => Err(StoreError::NotFound { key: key.clone() }),
                            Some(old) if old.mod_revision != *expected => {
                                Err(StoreError::Conflict {
                                    key: key.clone(),
                                    expected: *expected,
                                    actual: old.mod_revision,
                                })
                            }
                            Some(old) => {
                                rev += 1;
                                let new = KeyValue {
                                    key: key.clone(),
                                    value: value.clone(),
                                    create_revision: old.create_revision,
                                    mod_revision: rev,
                                    version: old.version + 1,
                                };
                                put(&mut kv, &mut log, &new, Some(&old))?;
                                events.push(Event {
                                    kind: EventKind::Put,
                                    kv: new.clone(),
                                    prev_value: Some(old.value),
                                });
                                Ok(Some(new))
                            }
                        }
                    }
                    Op::Delete { key, expected } => {
                        let old = read_record(&kv, key)?;
                        match old {
                            None => Err(StoreError::NotFound { key: key.clone() }),
                            Some(old) if expected.is_some_and(|e| e != old.mod_revision) => {
                                Err(StoreError::Conflict {
                                    key: key.clone(),
                                    expected: expected.unwrap_or_default(),
                                    actual: old.mod_revision,
                                })
                            }
                            Some(old) => {
                                rev += 1;
                                kv.remove(key.as_str()).map_err(backend)?;
                                let before = Before::Record {
                                    mod_revision: old.mod_revision,
                                    version: old.version,
                                };
                                let gone = KeyValue {
                                    mod_revision: rev,
                                    version: 0,
                                    ..old
                                };
                                log.insert(
                                    rev as u64,
                                    encode_event(EventKind::Delete, &gone, None, before).as_slice(),
                                )
                                .map_err(backend)?;
                                events.push(Event {
                                    kind: EventKind::Delete,
                                    kv: gone.clone(),
                                    prev_value: None,
                                });
                                Ok(Some(gone))
                            }
                        }
                    }
                    Op::Compact { revision } => {
                        if *revision > rev {
                            Err(StoreError::FutureRevision {
                                requested: *revision,
                                current: rev,
                            })
                        } else if *revision <= compacted {
                            Err(StoreError::Compacted {
                                requested: *revision,
                                compacted,
                            })
                        } else {
                            log.retain_in(..(*revision as u64), |_, _| false)
                                .map_err(backend)?;
                            compacted = *revision;
                            Ok(None)
                        }
                    }
                };
                outcomes.push(outcome);
            }
        }
        if rev == start_rev && compacted == start_compacted {
            // Nothing changed (every request was refused): no need to touch the disk.
            txn.abort().map_err(backend)?;
        } else {
            {
                let mut meta = txn.open_table(META).map_err(backend)?;
                meta.insert("revision", rev as u64).map_err(backend)?;
                meta.insert("compacted", compacted as u64)
                    .map_err(backend)?;
            }
            txn.commit().map_err(backend)?;
        }
        Ok((outcomes, events, rev, compacted))
    }
}

/// Keys under `prefix` (after `opts.after`, at most `opts.limit`) as they were at revision
/// `at`: the current records, except that a key changed after `at` shows its state before
/// its first change after `at` (absent if that change created it), from the log.
fn range_at(
    kv: &impl ReadableTable<&'static str, &'static [u8]>,
    log: &impl ReadableTable<u64, &'static [u8]>,
    prefix: &str,
    opts: &RangeOptions,
    at: Revision,
    current: Revision,
) -> Result<RangeResult> {
    use std::ops::Bound;
    let after = opts.after.as_deref().filter(|a| *a >= prefix);
    let lower = match after {
        Some(a) => Bound::Excluded(a),
        None => Bound::Included(prefix),
    };
    // Keys changed since `at` → their state at `at`.
    let mut then: std::collections::BTreeMap<String, Option<KeyValue>> = Default::default();
    if at < current {
        for entry in log.range(at as u64 + 1..=current as u64).map_err(backend)? {
            let (rev, bytes) = entry.map_err(backend)?;
            let (event, before) = decode_entry(rev.value() as i64, bytes.value())?;
            let key = event.kv.key.clone();
            if !key.starts_with(prefix)
                || after.is_some_and(|a| key.as_str() <= a)
                || then.contains_key(&key)
            {
                continue;
            }
            // Entries written before the log kept the previous record's revisions cannot
            // say what was there: as if that history were compacted.
            let before = before.ok_or(StoreError::Compacted {
                requested: at,
                compacted: rev.value() as i64,
            })?;
            let state = match (event.kind, before) {
                (EventKind::Put, Before::Absent) => None,
                (_, Before::Absent) => return Err(corrupt("log entry")),
                (
                    kind,
                    Before::Record {
                        mod_revision,
                        version,
                    },
                ) => Some(KeyValue {
                    value: match kind {
                        EventKind::Put => event
                            .prev_value
                            .clone()
                            .ok_or_else(|| corrupt("log entry"))?,
                        EventKind::Delete => event.kv.value.clone(),
                    },
                    mod_revision,
                    version,
                    ..event.kv
                }),
            };
            then.insert(key, state);
        }
    }
    let mut out = RangeResult {
        revision: at,
        ..RangeResult::default()
    };
    let mut changed = then.range::<str, _>((lower, Bound::Unbounded)).peekable();
    let mut stored = kv
        .range::<&str>((lower, Bound::Unbounded))
        .map_err(backend)?
        .peekable();
    loop {
        let next_stored = match stored.peek() {
            Some(Ok((k, _))) if k.value().starts_with(prefix) => Some(k.value().to_owned()),
            Some(Err(_)) => {
                return Err(backend(
                    stored.next().and_then(Result::err).expect("an error"),
                ));
            }
            _ => None,
        };
        let next_changed = changed.peek().map(|(k, _)| k.as_str().to_owned());
        let record = match (next_stored, next_changed) {
            (None, None) => break,
            (Some(s), Some(c)) if c <= s => {
                if c == s {
                    stored.next();
                }
                changed.next().and_then(|(_, state)| state.clone())
            }
            (Some(_), _) => {
                let (k, v) = stored.next().expect("peeked").map_err(backend)?;
                Some(decode_record(k.value(), v.value())?)
            }
            (None, Some(_)) => changed.next().and_then(|(_, state)| state.clone()),
        };
        let Some(record) = record else {
            continue;
        };
        if opts.limit != 0 && out.kvs.len() == opts.limit {
            out.more = true;
            break;
        }
        out.kvs.push(record);
    }
    Ok(out)
}

/// The current record of `key` inside a write transaction.
fn read_record(kv: &redb::Table<'_, &str, &[u8]>, key: &str) -> Result<Option<KeyValue>> {
    kv.get(key)
        .map_err(backend)?
        .map(|v| decode_record(key, v.value()))
        .transpose()
}

/// Writes `new`, which replaces `old` (None: creates it), and logs the change.
fn put(
    kv: &mut redb::Table<'_, &str, &[u8]>,
    log: &mut redb::Table<'_, u64, &[u8]>,
    new: &KeyValue,
    old: Option<&KeyValue>,
) -> Result<()> {
    kv.insert(new.key.as_str(), encode_record(new).as_slice())
        .map_err(backend)?;
    let before = old.map_or(Before::Absent, |o| Before::Record {
        mod_revision: o.mod_revision,
        version: o.version,
    });
    log.insert(
        new.mod_revision as u64,
        encode_event(EventKind::Put, new, old.map(|o| &o.value), before).as_slice(),
    )
    .map_err(backend)?;
    Ok(())
}

// Record: create_revision, mod_revision, version (i64 LE each), then the value.
fn encode_record(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + kv.value.len());
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.version.to_le_bytes());
    out.extend_from_slice(&kv.value);
    out
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("corrupt {what} in store file"))
}

fn i64_at(bytes: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn decode_record(key: &str, bytes: &[u8]) -> Result<KeyValue> {
    let field = |at| i64_at(bytes, at).ok_or_else(|| corrupt("record"));
    Ok(KeyValue {
        key: key.to_owned(),
        create_revision: field(0)?,
        mod_revision: field(8)?,
        version: field(16)?,
        value: Bytes::copy_from_slice(&bytes[24..]),
    })
}

/// What a key held just before a logged change: the state a read at an older revision
/// shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Before {
    /// Nothing: the change created the key.
    Absent,
    /// A record with these revisions (its value is the entry's previous value, or for a
    /// deletion the entry's value).
    Record {
        mod_revision: Revision,
        version: i64,
    },
}

// Log entry: kind (u8: 2 put, 3 delete; 0 and 1 in files written before entries named what
// they replaced), create_revision, version, then for kinds 2 and 3 the replaced record's
// mod_revision (0: none) and version (i64 LE each), key length (u32 LE), key, previous
// value length + 1 (u32 LE, 0 = none), previous value, then the value.
fn encode_event(kind: EventKind, kv: &KeyValue, prev: Option<&Bytes>, before: Before) -> Vec<u8> {
    let prev_len = prev.map_or(0, |p| p.len());
    let mut out = Vec::with_capacity(45 + kv.key.len() + prev_len + kv.value.len());
    out.push(match kind {
        EventKind::Put => 2,
        EventKind::Delete => 3,
    });
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.version.to_le_bytes());
    let (mod_revision, version) = match before {
        Before::Absent => (0, 0),
        Before::Record {
            mod_revision,
            version,
        } => (mod_revision, version),
    };
    out.extend_from_slice(&mod_revision.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(kv.key.len() as u32).to_le_bytes());
    out.extend_from_slice(kv.key.as_bytes());
    out.extend_from_slice(&prev.map_or(0u32, |p| p.len() as u32 + 1).to_le_bytes());
    if let Some(p) = prev {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(&kv.value);
    out
}

fn decode_event(revision: Revision, b: &[u8]) -> Result<Event> {
    decode_entry(revision, b).map(|(event, _)| event)
}

/// A log entry: the change, and what it replaced (None in entries of older files).
fn decode_entry(revision: Revision, b: &[u8]) -> Result<(Event, Option<Before>)> {
    let bad = || corrupt("log entry");
    let u32_at = |at: usize| -> Result<usize> {
        Ok(u32::from_le_bytes(
            b.get(at..at + 4)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ) as usize)
    };
    let (kind, v2) = match b.first() {
        Some(0) => (EventKind::Put, false),
        Some(1) => (EventKind::Delete, false),
        Some(2) => (EventKind::Put, true),
        Some(3) => (EventKind::Delete, true),
        _ => return Err(bad()),
    };
    let create_revision = i64_at(b, 1).ok_or_else(bad)?;
    let version = i64_at(b, 9).ok_or_else(bad)?;
    let mut at = 17;
    let before = if v2 {
        let mod_revision = i64_at(b, 17).ok_or_else(bad)?;
        let version = i64_at(b, 25).ok_or_else(bad)?;
        at = 33;
        Some(if mod_revision == 0 {
            Before::Absent
        } else {
            Before::Record {
                mod_revision,
                version,
            }
        })
    } else {
        None
    };
    let key_len = u32_at(at)?;
    at += 4;
    let key = std::str::from_utf8(b.get(at..at + key_len).ok_or_else(bad)?).map_err(|_| bad())?;
    at += key_len;
    let prev_len = u32_at(at)?;
    at += 4;
    let prev_value = if prev_len == 0 {
        None
    } else {
        let p = b.get(at..at + prev_len - 1).ok_or_else(bad)?;
        at += prev_len - 1;
        Some(Bytes::copy_from_slice(p))
    };
    let value = Bytes::copy_from_slice(b.get(at..).ok_or_else(bad)?);
    Ok((
        Event {
            kind,
            kv: KeyValue {
                key: key.to_owned(),
                value,
                create_revision,
                mod_revision: revision,
                version,
            },
            prev_value,
        },
        before,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_entries_round_trip() {
        let kv = KeyValue {
            key: "/registry/pods/a/b/c".into(),
            value: Bytes::from_static(b"{\"x\":1}"),
            create_revision: 3,
            mod_revision: 9,
            version: 4,
        };
        let replaced = Before::Record {
            mod_revision: 7,
            version: 3,
        };
        for prev in [None, Some(Bytes::new()), Some(Bytes::from_static(b"old"))] {
            for before in [Before::Absent, replaced] {
                let bytes = encode_event(EventKind::Put, &kv, prev.as_ref(), before);
                let (e, b) = decode_entry(9, &bytes).unwrap();
                assert_eq!((e.kv, e.prev_value), (kv.clone(), prev.clone()));
                assert_eq!(b, Some(before));
            }
        }
        assert_eq!(decode_record(&kv.key, &encode_record(&kv)).unwrap(), kv);
        // An entry of a file written before entries named what they replaced.
        let mut old = vec![1u8];
        old.extend_from_slice(&3i64.to_le_bytes());
        old.extend_from_slice(&0i64.to_le_bytes());
        old.extend_from_slice(&(kv.key.len() as u32).to_le_bytes());
        old.extend_from_slice(kv.key.as_bytes());
        old.extend_from_slice(&0u32.to_le_bytes());
        old.extend_from_slice(b"last");
        let (e, b) = decode_entry(9, &old).unwrap();
        assert_eq!(
            (e.kind, e.kv.value.as_ref(), b),
            (EventKind::Delete, &b"last"[..], None)
        );
    }

    #[test]
    fn truncated_entries_are_errors_not_panics() {
        let kv = KeyValue {
            key: "k".into(),
            value: Bytes::from_static(b"v"),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
        };
        let full = encode_event(
            EventKind::Put,
            &kv,
            Some(&Bytes::from_static(b"p")),
            Before::Absent,
        );
        for n in 0..full.len() - 2 {
            let _ = decode_event(1, &full[..n]);
        }
        assert!(decode_record("k", &[0; 10]).is_err());
    }
}
