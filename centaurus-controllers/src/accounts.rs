//! The `default` ServiceAccount of every namespace, as Kubernetes' service account
//! controller keeps it: made when a namespace appears, and made again if deleted.

use async_trait::async_trait;
use centaurus_client::{Api, Client};
use centaurus_core::controller::{Controller, Reconciler, Requeue, Share};
use centaurus_core::model::{
    DEFAULT_SERVICE_ACCOUNT, Namespace, ObjectMeta, Resource, ServiceAccount,
};

/// Keeps a `default` ServiceAccount in every namespace.
pub struct ServiceAccountController {
    accounts: Api<ServiceAccount>,
}

impl ServiceAccountController {
    /// Runs the controller through `client` until dropped, on its `share` of the
    /// namespaces.
    pub async fn run(client: Client, share: Share) {
        let controller = Controller::<Namespace>::new(client.api().source("/registry/namespaces/"))
            .with_workers(2)
            .with_share(&share);
        // A deleted account is made again: its namespace is reconciled.
        let queue = controller.queue().clone();
        let accounts =
            std::sync::Arc::new(centaurus_core::controller::Informer::<ServiceAccount>::new(
                client.api().source("/registry/serviceaccounts/"),
            ));
        accounts.on_change(move |change| {
            if let centaurus_core::controller::Change::Deleted(sa) = change {
                let m = &sa.metadata;
                queue.add(&centaurus_core::model::object_key(
                    Namespace::PLURAL,
                    Namespace::SCOPE,
                    m.tenant_or_system(),
                    "",
                    &m.namespace,
                ));
            }
        });
        let task = tokio::spawn(accounts.clone().run());
        controller
            .run(Self {
                accounts: client.api(),
            })
            .await;
        task.abort();
    }
}

#[async_trait]
impl Reconciler<Namespace> for ServiceAccountController {
    async fn reconcile(&self, _key: &str, ns: Option<Namespace>) -> Result<Requeue, String> {
        let Some(ns) = ns.filter(|n| n.metadata.deletion_timestamp.is_none()) else {
            return Ok(Requeue::Done);
        };
        let meta = ObjectMeta::namespaced(
            ns.metadata.tenant_or_system(),
            &ns.metadata.name,
            DEFAULT_SERVICE_ACCOUNT,
        );
        match self.accounts.create(ServiceAccount::typed(meta)).await {
            Ok(_) => Ok(Requeue::Done),
            Err(e) if e.is_already_exists() => Ok(Requeue::Done),
            // The namespace is going away: nothing to keep.
            Err(e) if e.is_not_found() || e.is_forbidden() => Ok(Requeue::Done),
            Err(e) => Err(e.to_string()),
        }
    }
}
