//! The resource quota controller: keeps the pod usage of each namespace's quotas and each
//! tenant's quota true.
//!
//! The API servers charge a quota when they admit an object and give back the counts of
//! objects other than pods when those are removed. Pods also stop using their share when they
//! finish, so this controller recounts a namespace's (or tenant's) pods when one goes away or
//! finishes (and every [`RESYNC`]), and writes what they use. A recount lower than the
//! charged usage waits until the last charge is [`quota::CHARGE_SETTLE_SECS`] old, so that a
//! pod admitted a moment ago but not yet seen here is not counted out.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use centaurus_client::{Api, Client};
use centaurus_core::controller::{
    Cache, Change, Controller, Informer, Reconciler, Requeue, Share, WorkQueue,
};
use centaurus_core::model::quota::{self, Amounts, Ledger};
use centaurus_core::model::{self, Pod, Resource, ResourceQuota, Tenant};

/// How often every quota is recounted, whatever happens.
pub const RESYNC: Duration = Duration::from_secs(60);

/// The names a recount of pods decides (the others are charged and refunded by the API).
fn pod_names(name: &str) -> bool {
    quota::counted_by(name).is_some_and(|(g, p)| g.is_empty() && p == "pods")
}

/// Keeps the pod usage of the ledgers of kind `L` (namespaces' quotas, or tenants').
pub struct ResourceQuotaController<L: Ledger> {
    ledgers: Api<L>,
    pods: Cache<Pod>,
}

/// Queues, for each pod that goes away or finishes, the ledgers that count it.
fn on_freed(
    pods: &Informer<Pod>,
    quotas: (Cache<ResourceQuota>, WorkQueue),
    tenants: (Cache<Tenant>, WorkQueue),
) {
    pods.on_change(move |change| {
        let (pod, freed) = match change {
            Change::Deleted(p) => (p, true),
            Change::Modified { old, new } => (new, !finished(old) && finished(new)),
            Change::Added(p) => (p, false),
        };
        if !freed {
            return;
        }
        let m = &pod.metadata;
        let tenant = m.tenant_or_system();
        let prefix = format!(
            "/registry/{}/{tenant}/{}/",
            ResourceQuota::PLURAL,
            m.namespace
        );
        for q in quotas.0.list_prefix(&prefix) {
            quotas.1.add(&key_of(&q));
        }
        let key = model::object_key(Tenant::PLURAL, Tenant::SCOPE, "", "", tenant);
        if tenants
            .0
            .get(&key)
            .is_some_and(|t| !t.spec.quota.is_empty())
        {
            tenants.1.add(&key);
        }
    });
}

fn key_of<R: Resource>(r: &R) -> String {
    let m = r.meta();
    model::object_key(
        R::PLURAL,
        R::SCOPE,
        m.tenant_or_system(),
        &m.namespace,
        &m.name,
    )
}

/// Runs the controllers of namespaces' and tenants' quotas through `client` until dropped,
/// on their `share` of the quotas and tenants.
pub async fn run(client: Client, share: Share) {
    let quotas = Controller::<ResourceQuota>::new(client.api().source("/registry/resourcequotas/"))
        .with_workers(2)
        .with_share(&share);
    let tenants =
        Controller::<Tenant>::new(client.api().source("/registry/tenants/")).with_share(&share);
    let pods = Arc::new(Informer::<Pod>::new(client.api().source("/registry/pods/")));
    on_freed(
        &pods,
        (quotas.informer().cache(), quotas.queue().clone()),
        (tenants.informer().cache(), tenants.queue().clone()),
    );
    let cache = pods.cache();
    let task = tokio::spawn(pods.clone().run());
    pods.wait_synced().await;
    tokio::join!(
        quotas.run(ResourceQuotaController {
            ledgers: client.api(),
            pods: cache.clone(),
        }),
        tenants.run(ResourceQuotaController {
            ledgers: client.api(),
            pods: cache,
        }),
    );
    task.abort();
}

impl<L: Ledger> ResourceQuotaController<L> {
    /// What the pods a ledger counts use of its pod-counted names.
    fn recount(&self, ledger: &L) -> Amounts {
        let mut used: Amounts = ledger
            .hard()
            .keys()
            .filter(|n| pod_names(n))
            .map(|n| (n.clone(), 0))
            .collect();
        let tenant = match L::SCOPE {
            model::Scope::Cluster => ledger.meta().name.as_str(),
            _ => ledger.meta().tenant_or_system(),
        };
        let prefix = match ledger.counts_namespace() {
            Some(ns) => format!("/registry/pods/{tenant}/{ns}/"),
            None => format!("/registry/pods/{tenant}/"),
        };
        for pod in self.pods.list_prefix(&prefix) {
            let Ok(obj) = serde_json::to_value(&pod) else {
                continue;
            };
            for (k, v) in quota::usage_of("", "pods", &obj) {
                if let Some(total) = used.get_mut(&k) {
                    *total += v;
                }
            }
        }
        used
    }
}

fn finished(pod: &Pod) -> bool {
    matches!(pod.phase(), "Succeeded" | "Failed")
}

/// Seconds since the ledger's last charge, if it has one.
fn since_charge<L: Ledger>(ledger: &L) -> Option<i64> {
    let at = ledger
        .meta()
        .annotations
        .get(quota::ANNOTATION_CHARGED_AT)?;
    let at = chrono::DateTime::parse_from_rfc3339(at).ok()?;
    Some((chrono::Utc::now() - at.with_timezone(&chrono::Utc)).num_seconds())
}

#[async_trait]
impl<L: Ledger + PartialEq> Reconciler<L> for ResourceQuotaController<L> {
    async fn reconcile(&self, key: &str, ledger: Option<L>) -> Result<Requeue, String> {
        let Some(ledger) = ledger.filter(|l| !l.hard().is_empty()) else {
            return Ok(Requeue::Done);
        };
        let counted = self.recount(&ledger);
        let used = quota::amounts(&ledger.used().cloned().unwrap_or_default());
        let lowers = counted
            .iter()
            .any(|(k, v)| used.get(k).is_some_and(|u| v < u));
        if lowers
            && let Some(age) = since_charge(&ledger)
            && age < quota::CHARGE_SETTLE_SECS
        {
            let wait = (quota::CHARGE_SETTLE_SECS - age).max(1) as u64;
            return Ok(Requeue::After(Duration::from_secs(wait)));
        }
        self.ledgers
            .modify_status(key, |l| {
                let hard = l.hard().clone();
                let mut used = quota::amounts(&l.used().cloned().unwrap_or_default());
                // Names no longer limited are dropped; the API's counts are kept; a name the
                // API has not counted yet stays absent, for the next admission to count.
                used.retain(|k, _| hard.contains_key(k));
                used.extend(counted.iter().map(|(k, v)| (k.clone(), *v)));
                let was = l.clone();
                l.set_used(quota::resource_list(&used));
                *l != was
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(Requeue::After(RESYNC))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_decide_compute_and_pod_counts_only() {
        for n in ["pods", "count/pods", "requests.cpu", "limits.memory", "vms"] {
            assert!(pod_names(n), "{n}");
        }
        for n in ["configmaps", "count/jobs.batch", "secrets"] {
            assert!(!pod_names(n), "{n}");
        }
    }
}
