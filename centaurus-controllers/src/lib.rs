//! The region's controllers, on the core controller runtime:
//!
//! - [`ReplicaSetController`]: keeps `replicas` pods of a template (containers or a VM).
//! - [`DeploymentController`]: rolling updates through replica sets.
//! - [`DaemonSetController`]: a pod on each fitting node, rolled node by node.
//! - [`StatefulSetController`]: pods with stable ordinal names, in order.
//! - [`JobController`]: pods run to completion, in parallel, indexed, with back-off.
//! - [`CronJobController`]: jobs on a cron schedule, with concurrency policy and history.
//! - [`NodeLifecycleController`]: NotReady on lease expiry, eviction after a timeout.
//! - [`EventExpiry`]: deletes events after their time to live.
//! - [`ServiceAccountController`]: a `default` ServiceAccount in every namespace.
//! - [`ResourceQuotaController`]: what pods use of each namespace's and tenant's quota.
//! - [`EndpointsController`]: the Endpoints and EndpointSlices of Services' pods.
//!
//! [`run_all`] starts them together, as `centaurus up` does; with a [`Membership`], several
//! instances share the objects over the hash ring of their live Leases.

pub mod accounts;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod events;
mod expectations;
pub mod job;
pub mod membership;
pub mod nodelifecycle;
pub mod quota;
pub mod replicaset;
pub mod statefulset;

pub use centaurus_core::controller::Share;

use centaurus_client::{Api, Client};
use centaurus_core::controller::{Cache, Change, WorkQueue};
use centaurus_core::model::{self, OwnerReference, Pod, Resource};

pub use accounts::ServiceAccountController;
pub use cronjob::CronJobController;
pub use daemonset::DaemonSetController;
pub use deployment::DeploymentController;
pub use endpoints::EndpointsController;
pub use events::{DEFAULT_EVENT_TTL, EventExpiry};
pub use job::JobController;
pub use membership::{Membership, MembershipConfig};
pub use nodelifecycle::{LifecycleScope, NodeLifecycleConfig, NodeLifecycleController};
pub use quota::ResourceQuotaController;
pub use replicaset::ReplicaSetController;
pub use statefulset::StatefulSetController;

/// True when the pod's `Ready` condition is `True`.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// Tenant, namespace and name of a namespaced object's store key.
pub(crate) fn split_key(key: &str) -> Option<(&str, &str, &str)> {
    let rest = key.strip_prefix("/registry/")?;
    let mut parts = rest.split('/');
    let _plural = parts.next()?;
    Some((parts.next()?, parts.next()?, parts.next()?))
}

/// The reference that makes `owner` the controller of an object it creates.
pub(crate) fn controller_ref<R: Resource>(owner: &R) -> OwnerReference {
    let m = owner.meta();
    OwnerReference {
        api_version: R::api_version(),
        kind: R::KIND.into(),
        name: m.name.clone(),
        uid: m.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A change handler that queues, for each changed object a `K` controls, that `K`.
pub(crate) fn enqueue_controller<K: Resource, O: Resource>(
    queue: WorkQueue,
) -> impl Fn(&Change<O>) + Send + Sync + 'static {
    move |change| {
        let m = change.object().meta();
        if let Some(owner) = m.controller_ref()
            && owner.kind == K::KIND
        {
            queue.add(&model::object_key(
                K::STORE,
                K::SCOPE,
                m.tenant_or_system(),
                &m.namespace,
                &owner.name,
            ));
        }
    }
}

/// Deletes the pods in `tenant`/`ns` whose controller is the `kind` named `name`: what
/// garbage collection by owner does once the owner is gone.
pub(crate) async fn delete_owned(
    pods: &Api<Pod>,
    cache: &Cache<Pod>,
    tenant: &str,
    ns: &str,
    kind: &str,
    name: &str,
) -> Result<(), String> {
    for p in cache.list_prefix(&format!("/registry/pods/{tenant}/{ns}/")) {
        if p.metadata
            .controller_ref()
            .is_some_and(|r| r.kind == kind && r.name == name)
        {
            pods.delete(&p.key(), None)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Runs every controller through `client` until dropped, on its `share` of the objects.
pub async fn run_all(client: Client, lifecycle: NodeLifecycleConfig, share: Share) {
    run_in(client, LifecycleScope::Region, lifecycle, share).await
}

/// Runs the controllers of the region or of a partition (`scope`) through `client` until
/// dropped: a resource partition's look after its nodes only; the region's and a tenant
/// partition's run the workload controllers too.
pub async fn run_in(
    client: Client,
    scope: LifecycleScope,
    lifecycle: NodeLifecycleConfig,
    share: Share,
) {
    let workloads = async {
        if !matches!(scope, LifecycleScope::Nodes) {
            tokio::join!(
                ReplicaSetController::run(client.clone(), 4, share.clone()),
                DeploymentController::run(client.clone(), 2, share.clone()),
                JobController::run(client.clone(), 2, share.clone()),
                CronJobController::run(client.clone(), share.clone()),
                DaemonSetController::run(client.clone(), share.clone()),
                StatefulSetController::run(client.clone(), share.clone()),
                EventExpiry::new(&client, DEFAULT_EVENT_TTL).run(share.clone()),
                ServiceAccountController::run(client.clone(), share.clone()),
                EndpointsController::run(client.clone(), share.clone()),
                quota::run(client.clone(), share.clone()),
            );
        }
    };
    tokio::join!(
        workloads,
        NodeLifecycleController::run_in(
            client.clone(),
            scope.clone(),
            lifecycle,
            share.ownership.clone()
        ),
    );
}
