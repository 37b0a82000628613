//! An operator replica's local store (redb): what it provisioned, and the addresses and
//! placements it decided before programming hosts, so a restarted replica resumes with the
//! same decisions instead of leaking table entries.

use std::path::Path;

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

/// The local store.
pub struct LocalStore {
    db: Database,
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
        Ok(Self { db })
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

    /// Writes the record of `key`; `durable` waits for the disk (decisions made before
    /// programming hosts), otherwise the write may be lost in a crash (marks the API also
    /// holds).
    pub fn put(&self, key: &str, record: &Record, durable: bool) -> Result<(), LocalError> {
        let bytes = serde_json::to_vec(record).map_err(e)?;
        let mut txn = self.db.begin_write().map_err(e)?;
        if !durable {
            txn.set_durability(Durability::None).map_err(e)?;
        }
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
