//! Typed access to one kind's objects in a [`Store`], for control-plane components that run
//! beside the store (scheduler, controllers, node agents): decode, stamp server-owned
//! metadata on create, and compare-and-swap on `resourceVersion`.

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;

use crate::model::{self, FieldError, Resource};
use crate::store::{self, Revision, Store, StoreError};

/// Why a typed store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The store refused or failed (not found, conflict, backend).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored bytes are not an object of the kind.
    #[error("{key}: cannot decode: {message}")]
    Decode {
        /// The key.
        key: String,
        /// The decoder's message.
        message: String,
    },
    /// The object breaks its kind's rules.
    #[error("invalid object: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
}

impl ObjectError {
    /// True for a compare-and-swap conflict (someone else wrote first).
    pub fn is_conflict(&self) -> bool {
        matches!(self, ObjectError::Store(StoreError::Conflict { .. }))
    }

    /// True when the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ObjectError::Store(StoreError::NotFound { .. }))
    }
}

/// Typed reads and writes of kind `R`.
pub struct Objects<R> {
    store: Arc<dyn Store>,
    _kind: PhantomData<fn() -> R>,
}

impl<R> Clone for Objects<R> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            _kind: PhantomData,
        }
    }
}

/// Decodes a stored object; its `resourceVersion` is the store's modification revision.
pub fn decode<R: Resource>(key: &str, value: &[u8], revision: Revision) -> Result<R, ObjectError> {
    let mut o: R = serde_json::from_slice(value).map_err(|e| ObjectError::Decode {
        key: key.to_owned(),
        message: e.to_string(),
    })?;
    o.meta_mut().resource_version = revision.to_string();
    Ok(o)
}

fn encode<R: Resource>(obj: &R) -> Bytes {
    let mut obj = obj.clone();
    obj.set_type_meta();
    obj.meta_mut().resource_version.clear();
    Bytes::from(serde_json::to_vec(&obj).expect("objects always encode"))
}

impl<R: Resource> Objects<R> {
    /// Access to `R` in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            _kind: PhantomData,
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The object at `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<R>, ObjectError> {
        match self.store.get(key).await? {
            Some(kv) => decode(key, &kv.value, kv.mod_revision).map(Some),
            None => Ok(None),
        }
    }

    /// Every object under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<R>, ObjectError> {
        let page = store::range_all(self.store.as_ref(), prefix).await?;
        page.kvs
            .iter()
            .map(|kv| decode(&kv.key, &kv.value, kv.mod_revision))
            .collect()
    }

    /// Creates `obj` as the API server would: a fresh `uid`, `hashKey`,
    /// `creationTimestamp` and `generation` 1, a generated name when only `generateName` is
    /// set, and the kind's validation.
    pub async fn create(&self, mut obj: R) -> Result<R, ObjectError> {
        {
            let m = obj.meta_mut();
            if m.name.is_empty() && !m.generate_name.is_empty() {
                let suffix = &uuid::Uuid::new_v4().simple().to_string()[..5];
                m.name = format!("{}{suffix}", m.generate_name);
            }
            m.uid = model::new_uid();
            m.hash_key = model::hash_key_of(&m.uid);
            m.creation_timestamp = Some(model::now());
            m.generation = 1;
        }
        obj.validate().map_err(ObjectError::Invalid)?;
        let key = obj.key();
        let kv = self.store.create(&key, encode(&obj)).await?;
        obj.set_type_meta();
        obj.meta_mut().resource_version = kv.mod_revision.to_string();
        Ok(obj)
    }

    /// Writes `obj` if it is still at its `resourceVersion`; fails with a conflict otherwise.
    pub async fn update(&self, obj: &R) -> Result<R, ObjectError> {
        let expected: Revision = obj.meta().resource_version.parse().unwrap_or(0);
        let kv = self.store.update(&obj.key(), encode(obj), expected).await?;
        let mut out = obj.clone();
        out.set_type_meta();
        out.meta_mut().resource_version = kv.mod_revision.to_string();
        Ok(out)
    }

    /// Reads the object at `key`, lets `change` edit it, and writes it back, again on each
    /// conflict. `change` returns false to leave the object as it is. Returns the object
    /// as stored, or `None` when it does not exist.
    pub async fn modify(
        &self,
        key: &str,
        mut change: impl FnMut(&mut R) -> bool,
    ) -> Result<Option<R>, ObjectError> {
        loop {
            let Some(mut obj) = self.get(key).await? else {
                return Ok(None);
            };
            if !change(&mut obj) {
                return Ok(Some(obj));
            }
            match self.update(&obj).await {
                Ok(o) => return Ok(Some(o)),
                Err(e) if e.is_conflict() => continue,
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// Deletes the object at `key` (at `expected` when given). Deleting what is gone is
    /// not an error.
    pub async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(), ObjectError> {
        match self.store.delete(key, expected).await {
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Container, ObjectMeta, Pod, PodSpec};
    use crate::store::RedbStore;

    fn pod(name: &str) -> Pod {
        let mut p = Pod::typed(ObjectMeta::namespaced("acme", "dev", name));
        p.spec = PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: "busybox".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        p
    }

    #[tokio::test]
    async fn create_stamps_and_update_compares_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
        let pods = Objects::<Pod>::new(store);
        let created = pods.create(pod("a")).await.unwrap();
        assert!(!created.metadata.uid.is_empty());
        assert_eq!(
            created.metadata.hash_key,
            model::hash_key_of(&created.metadata.uid)
        );
        assert_eq!(created.kind, "Pod");
        let key = created.key();
        assert_eq!(key, "/registry/pods/acme/dev/a");

        let mut stale = created.clone();
        let mut fresh = created.clone();
        fresh.spec.node_name = "n1".into();
        let fresh = pods.update(&fresh).await.unwrap();
        stale.spec.node_name = "n2".into();
        assert!(pods.update(&stale).await.unwrap_err().is_conflict());

        let bound = pods
            .modify(&key, |p| {
                p.metadata.labels.insert("x".into(), "y".into());
                true
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(bound.spec.node_name, "n1");
        assert_ne!(
            bound.metadata.resource_version,
            fresh.metadata.resource_version
        );

        let mut bad = pod("b");
        bad.spec.containers.clear();
        assert!(matches!(
            pods.create(bad).await,
            Err(ObjectError::Invalid(_))
        ));
        pods.delete(&key, None).await.unwrap();
        pods.delete(&key, None).await.unwrap();
        assert!(pods.get(&key).await.unwrap().is_none());
        assert!(pods.modify(&key, |_| true).await.unwrap().is_none());
    }
}
