//! An operator replica's local store (redb): what it provisioned, and the addresses and
//! placements it decided before programming hosts, so a restarted replica resumes with the
//! same decisions instead of leaking table entries.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

const RECORDS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("records");

/// What a replica remembers of one object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The object's uid (a recreated object with the same name is another object).
    pub uid: String,
    /// True once the final state was written to the API.
    pub provisioned: bool,
    /// An endpoint's address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip: String,
    /// Droplets of a subnet's bouncers or a VPC's dividers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placed: Vec<String>,
}

/// A durable write waiting for its group commit.
type Write = (
    String,
    Vec<u8>,
    tokio::sync::oneshot::Sender<Result<(), String>>,
);

/// The local store. Durable writes from concurrent reconciles are committed together by
/// one thread, so they share an fsync.
pub struct LocalStore {
    db: Arc<Database>,
    writes: Option<std::sync::mpsc::Sender<Write>>,
    committer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LocalStore {
    fn drop(&mut self) {
        // Closing the channel ends the committer, which releases the database file.
        self.writes.take();
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
    }
}

fn commit_all(db: &Database, batch: &[Write]) -> Result<(), LocalError> {
    let txn = db.begin_write().map_err(e)?;
    {
        let mut table = txn.open_table(RECORDS).map_err(e)?;
        for (key, bytes, _) in batch {
            table.insert(key.as_str(), bytes.as_slice()).map_err(e)?;
        }
    }
    txn.commit().map_err(e)
}

fn committer(db: Arc<Database>, writes: std::sync::mpsc::Receiver<Write>) {
    while let Ok(first) = writes.recv() {
        let mut batch = vec![first];
        batch.extend(writes.try_iter());
        let result = commit_all(&db, &batch).map_err(|x| x.to_string());
        for (_, _, done) in batch {
            let _ = done.send(result.clone());
        }
    }
}

/// A local store failure.
#[derive(Debug, thiserror::Error)]
#[error("local store: {0}")]
pub struct LocalError(String);

fn e(x: impl std::fmt::Display) -> LocalError {
    LocalError(x.to_string())
}

impl LocalStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, LocalError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(e)?;
        }
        let db = Database::create(path).map_err(e)?;
        let txn = db.begin_write().map_err(e)?;
        txn.open_table(RECORDS).map_err(e)?;
        txn.commit().map_err(e)?;
        let db = Arc::new(db);
        let (writes, rx) = std::sync::mpsc::channel();
        let d = db.clone();
        let committer = std::thread::Builder::new()
            .name("vpc-local-commit".into())
            .spawn(move || committer(d, rx))
            .map_err(e)?;
        Ok(Self {
            db,
            writes: Some(writes),
            committer: Some(committer),
        })
    }

    /// The record of `key`.
    pub fn get(&self, key: &str) -> Result<Option<Record>, LocalError> {
        let txn = self.db.begin_read().map_err(e)?;
        let table = txn.open_table(RECORDS).map_err(e)?;
        match table.get(key).map_err(e)? {
            Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(e),
            None => Ok(None),
        }
    }

    /// Writes the record of `key` and returns once it is on disk (decisions made before
    /// programming hosts). Concurrent calls share one commit.
    pub async fn put_durable(&self, key: &str, record: &Record) -> Result<(), LocalError> {
        let bytes = serde_json::to_vec(record).map_err(e)?;
        let (done, wait) = tokio::sync::oneshot::channel();
        self.writes
            .as_ref()
            .ok_or_else(|| LocalError("closed".into()))?
            .send((key.to_owned(), bytes, done))
            .map_err(|_| LocalError("the committer stopped".into()))?;
        wait.await
            .map_err(|_| LocalError("the committer stopped".into()))?
            .map_err(LocalError)
    }

    /// Writes the record of `key` without waiting for the disk: a crash may lose it (marks
    /// the API store also holds).
    pub fn put(&self, key: &str, record: &Record) -> Result<(), LocalError> {
        let bytes = serde_json::to_vec(record).map_err(e)?;
        let mut txn = self.db.begin_write().map_err(e)?;
        txn.set_durability(Durability::None).map_err(e)?;
        txn.open_table(RECORDS)
            .map_err(e)?
            .insert(key, bytes.as_slice())
            .map_err(e)?;
        txn.commit().map_err(e)
    }

    /// Forgets `key`.
    pub fn remove(&self, key: &str) -> Result<(), LocalError> {
        let txn = self.db.begin_write().map_err(e)?;
        txn.open_table(RECORDS).map_err(e)?.remove(key).map_err(e)?;
        txn.commit().map_err(e)
    }

    /// Number of records.
    pub fn len(&self) -> Result<usize, LocalError> {
        let txn = self.db.begin_read().map_err(e)?;
        let table = txn.open_table(RECORDS).map_err(e)?;
        Ok(table.len().map_err(e)? as usize)
    }

    /// True when the store holds no record.
    pub fn is_empty(&self) -> Result<bool, LocalError> {
        self.len().map(|n| n == 0)
    }
}
