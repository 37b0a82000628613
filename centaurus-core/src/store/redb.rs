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
            use std::ops::Bound;
            let txn = db.begin_read().map_err(backend)?;
            let revision = txn
                .open_table(META)
                .map_err(backend)?
                .get("revision")
                .map_err(backend)?
                .map_or(0, |v| v.value() as i64);
            let kv = txn.open_table(KV).map_err(backend)?;
            let lower = match &opts.after {
                Some(after) if after.as_str() >= prefix.as_str() => Bound::Excluded(after.as_str()),
                _ => Bound::Included(prefix.as_str()),
            };
            let mut out = RangeResult {
                revision,
                ..RangeResult::default()
            };
            for entry in kv
                .range::<&str>((lower, Bound::Unbounded))
                .map_err(backend)?
            {
                let (k, v) = entry.map_err(backend)?;
                let key = k.value();
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                if opts.limit != 0 && out.kvs.len() == opts.limit {
                    out.more = true;
                    break;
                }
                out.kvs.push(decode_record(key, v.value())?);
            }
            Ok(out)
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
                                put(&mut kv, &mut log, &new, Some(&old.value))?;
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
                                let gone = KeyValue {
                                    mod_revision: rev,
                                    version: 0,
                                    ..old
                                };
                                log.insert(
                                    rev as u64,
                                    encode_event(EventKind::Delete, &gone, None).as_slice(),
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

/// The current record of `key` inside a write transaction.
fn read_record(kv: &redb::Table<'_, &str, &[u8]>, key: &str) -> Result<Option<KeyValue>> {
    kv.get(key)
        .map_err(backend)?
        .map(|v| decode_record(key, v.value()))
        .transpose()
}

fn put(
    kv: &mut redb::Table<'_, &str, &[u8]>,
    log: &mut redb::Table<'_, u64, &[u8]>,
    new: &KeyValue,
    prev: Option<&Bytes>,
) -> Result<()> {
    kv.insert(new.key.as_str(), encode_record(new).as_slice())
        .map_err(backend)?;
    log.insert(
        new.mod_revision as u64,
        encode_event(EventKind::Put, new, prev).as_slice(),
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

// Log entry: kind (u8), create_revision, version (i64 LE), key length (u32 LE), key,
// previous value length + 1 (u32 LE, 0 = none), previous value, then the value.
fn encode_event(kind: EventKind, kv: &KeyValue, prev: Option<&Bytes>) -> Vec<u8> {
    let prev_len = prev.map_or(0, |p| p.len());
    let mut out = Vec::with_capacity(29 + kv.key.len() + prev_len + kv.value.len());
    out.push(match kind {
        EventKind::Put => 0,
        EventKind::Delete => 1,
    });
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.version.to_le_bytes());
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
    let bad = || corrupt("log entry");
    let u32_at = |at: usize| -> Result<usize> {
        Ok(u32::from_le_bytes(
            b.get(at..at + 4)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ) as usize)
    };
    let kind = match b.first() {
        Some(0) => EventKind::Put,
        Some(1) => EventKind::Delete,
        _ => return Err(bad()),
    };
    let create_revision = i64_at(b, 1).ok_or_else(bad)?;
    let version = i64_at(b, 9).ok_or_else(bad)?;
    let key_len = u32_at(17)?;
    let key = std::str::from_utf8(b.get(21..21 + key_len).ok_or_else(bad)?).map_err(|_| bad())?;
    let mut at = 21 + key_len;
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
    Ok(Event {
        kind,
        kv: KeyValue {
            key: key.to_owned(),
            value,
            create_revision,
            mod_revision: revision,
            version,
        },
        prev_value,
    })
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
        for prev in [None, Some(Bytes::new()), Some(Bytes::from_static(b"old"))] {
            let e = decode_event(9, &encode_event(EventKind::Put, &kv, prev.as_ref())).unwrap();
            assert_eq!(e.kv, kv);
            assert_eq!(e.prev_value, prev);
        }
        assert_eq!(decode_record(&kv.key, &encode_record(&kv)).unwrap(), kv);
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
        let full = encode_event(EventKind::Put, &kv, Some(&Bytes::from_static(b"p")));
        for n in 0..full.len() - 2 {
            let _ = decode_event(1, &full[..n]);
        }
        assert!(decode_record("k", &[0; 10]).is_err());
    }
}
