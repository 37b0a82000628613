//! `centaurus up`: the all-in-one region. So far: the embedded store, the built-in kinds
//! and the `system` tenant; the API server, scheduler, controllers and node agent join as
//! they land.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use centaurus_core::model::{
    Namespace, ObjectMeta, Registry, Resource, SYSTEM_TENANT, Tenant, TenantStatus, hash_key_of,
    new_uid, now,
};
use centaurus_core::store::{RedbStore, Store, StoreError};

/// Creates `object` unless it exists; returns true if it was created.
async fn ensure<R: Resource>(store: &dyn Store, mut object: R) -> anyhow::Result<bool> {
    object.set_type_meta();
    let key = object.key();
    let meta = object.meta_mut();
    meta.uid = new_uid();
    meta.hash_key = hash_key_of(&meta.uid);
    meta.creation_timestamp = Some(now());
    let value = serde_json::to_vec(&object)?;
    match store.create(&key, value.into()).await {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("creating {key}")),
    }
}

/// Runs the region until Ctrl-C (or until ready, with `exit_when_ready`).
pub async fn run(data_dir: &Path, exit_when_ready: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir).context("creating the data directory")?;
    let db = data_dir.join("store.redb");
    let store: Arc<dyn Store> =
        Arc::new(RedbStore::open(&db).with_context(|| format!("opening {}", db.display()))?);
    let registry = Registry::builtin();

    let mut tenant = Tenant::typed(ObjectMeta::named(SYSTEM_TENANT));
    tenant.status = Some(TenantStatus {
        phase: "Active".into(),
    });
    let created = ensure(&*store, tenant).await?;
    for ns in ["default", "kube-system"] {
        let mut meta = ObjectMeta::named(ns);
        meta.tenant = SYSTEM_TENANT.into();
        ensure(&*store, Namespace::typed(meta)).await?;
    }

    let revision = store.revision().await?;
    let mut counts = Vec::new();
    for info in registry.kinds() {
        let n = store
            .range(&info.prefix(None, None), Default::default())
            .await?
            .kvs
            .len();
        counts.push(format!("{} {}", n, info.plural));
    }
    println!(
        "centaurus: region ready: store {} at revision {revision} ({}); {} kinds registered: {}",
        db.display(),
        if created { "initialized" } else { "reopened" },
        registry.kinds().count(),
        counts.join(", "),
    );
    println!("centaurus: the API server, scheduler and node agent are not part of this build yet");
    if exit_when_ready {
        return Ok(());
    }
    println!("centaurus: running; press Ctrl-C to stop");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    println!("centaurus: stopping");
    Ok(())
}
