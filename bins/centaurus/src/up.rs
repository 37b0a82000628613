//! `centaurus up`: the all-in-one region. So far: the embedded store, the `system` tenant
//! and the multi-tenant API server over HTTPS; the scheduler, controllers and node agent
//! join as they land.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use centaurus_api::ApiConfig;
use centaurus_api::region::{self, Region, RegionOptions};
use centaurus_core::store::{RedbStore, Store};

/// Runs the region until Ctrl-C (or until ready, with `exit_when_ready`).
pub async fn run(data_dir: &Path, listen: SocketAddr, exit_when_ready: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir).context("creating the data directory")?;
    let db = data_dir.join("store.redb");
    let store: Arc<dyn Store> =
        Arc::new(RedbStore::open(&db).with_context(|| format!("opening {}", db.display()))?);
    let created = region::bootstrap(&*store).await?;
    let registry = region::registry();
    let mut counts = Vec::new();
    for info in registry.kinds() {
        let n = store
            .range(&info.prefix(None, None), Default::default())
            .await?
            .kvs
            .len();
        if n > 0 {
            counts.push(format!("{n} {}", info.plural));
        }
    }
    let revision = store.revision().await?;
    println!(
        "centaurus: store {} at revision {revision} ({}): {}",
        db.display(),
        if created { "initialized" } else { "reopened" },
        counts.join(", "),
    );
    let region = Region::start(
        store,
        RegionOptions {
            data_dir: data_dir.to_owned(),
            listen,
            config: ApiConfig::default(),
            compact_every: Duration::from_secs(300),
        },
    )
    .await?;
    println!(
        "centaurus: API server listening on https://{} ({} kinds)",
        region.addr,
        registry.kinds().count()
    );
    println!(
        "centaurus: admin kubeconfig (system tenant) at {}",
        region.admin_kubeconfig.display()
    );
    println!(
        "centaurus: region ready; try: kubectl --kubeconfig {} get tenants",
        region.admin_kubeconfig.display()
    );
    println!("centaurus: the scheduler, controllers and node agent are not part of this build yet");
    if !exit_when_ready {
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
    }
    println!("centaurus: stopping");
    region.stop().await;
    println!("centaurus: stopped");
    Ok(())
}
