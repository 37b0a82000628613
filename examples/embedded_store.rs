//! Embedding the durable store: write Kubernetes-shaped objects and watch the changes.
//!
//! Run: `cargo run -p centaurus-examples --example embedded_store`

use centaurus_core::model::{Container, ObjectMeta, Pod, Resource};
use centaurus_core::store::{EventKind, RedbStore, Store};
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = RedbStore::open(dir.path().join("region.redb"))?;

    // Watch everything tenant "acme" keeps in namespace "dev".
    let mut watch = store.watch("/registry/pods/acme/dev/", 0).await?;

    let mut pod = Pod::typed(ObjectMeta::namespaced("acme", "dev", "web"));
    pod.spec.containers.push(Container {
        name: "web".into(),
        image: "busybox".into(),
        ..Default::default()
    });
    let created = store
        .create(&pod.key(), serde_json::to_vec(&pod)?.into())
        .await?;

    pod.metadata.labels.insert("tier".into(), "frontend".into());
    // Compare-and-swap: only succeeds if nobody changed the pod since we read it.
    let updated = store
        .update(
            &pod.key(),
            serde_json::to_vec(&pod)?.into(),
            created.mod_revision,
        )
        .await?;
    let stale = store
        .update(
            &pod.key(),
            serde_json::to_vec(&pod)?.into(),
            created.mod_revision,
        )
        .await;
    println!(
        "a second update from the old revision is refused: {}",
        stale.unwrap_err()
    );

    store.delete(&pod.key(), Some(updated.mod_revision)).await?;

    for _ in 0..3 {
        let event = watch.next().await.expect("watch open")?;
        let obj: Pod = serde_json::from_slice(&event.kv.value)?;
        let verb = match event.kind {
            EventKind::Put if event.prev_value.is_none() => "ADDED",
            EventKind::Put => "MODIFIED",
            EventKind::Delete => "DELETED",
        };
        println!(
            "rev {:>2} {verb:<8} {} labels={:?}",
            event.revision(),
            event.kv.key,
            obj.metadata.labels
        );
    }
    Ok(())
}
