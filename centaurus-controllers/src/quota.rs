//! The resource quota controller: keeps each quota's `status.used` true for what pods use.
//!
//! The API servers charge a quota when they admit an object and give back the counts of
//! objects other than pods when those are removed. Pods also stop using their share when they
//! finish, so this controller recounts a namespace's pods when one goes away or finishes
//! (and every [`RESYNC`]), and writes what they use. A recount that is lower than the charged
//! usage waits until the last charge is [`quota::CHARGE_SETTLE_SECS`] old, so that a pod
//! admitted a moment ago but not yet seen here is not counted out.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use centaurus_client::{Api, Client};
use centaurus_core::controller::{Cache, Change, Controller, Informer, Reconciler, Requeue, Share};
use centaurus_core::model::quota::{self, Amounts};
use centaurus_core::model::{self, Pod, Resource, ResourceQuota};

/// How often every quota is recounted, whatever happens.
pub const RESYNC: Duration = Duration::from_secs(60);

/// The names a recount of pods decides (the others are charged and refunded by the API).
fn pod_names(name: &str) -> bool {
    quota::counted_by(name).is_some_and(|(g, p)| g.is_empty() && p == "pods")
}

/// Keeps the pod usage of every quota.
pub struct ResourceQuotaController {
    quotas: Api<ResourceQuota>,
    pods: Cache<Pod>,
}

impl ResourceQuotaController {
    /// Runs the controller through `client` until dropped, on its `share` of the quotas.
    pub async fn run(client: Client, share: Share) {
        let controller =
            Controller::<ResourceQuota>::new(client.api().source("/registry/resourcequotas/"))
                .with_workers(2)
                .with_share(&share);
        let quotas = controller.informer().cache();
        let pods = Arc::new(Informer::<Pod>::new(client.api().source("/registry/pods/")));
        let queue = controller.queue().clone();
        // A pod that is removed or finishes frees its share: recount its namespace.
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
            let prefix = format!(
                "/registry/{}/{}/{}/",
                ResourceQuota::PLURAL,
                m.tenant_or_system(),
                m.namespace
            );
            for q in quotas.list_prefix(&prefix) {
                let m = &q.metadata;
                queue.add(&model::object_key(
                    ResourceQuota::PLURAL,
                    ResourceQuota::SCOPE,
                    m.tenant_or_system(),
                    &m.namespace,
                    &m.name,
                ));
            }
        });
        let cache = pods.cache();
        let task = tokio::spawn(pods.clone().run());
        pods.wait_synced().await;
        controller
            .run(Self {
                quotas: client.api(),
                pods: cache,
            })
            .await;
        task.abort();
    }

    /// What the namespace's pods use of the pod-counted names of `hard`.
    fn recount(&self, q: &ResourceQuota) -> Amounts {
        let m = &q.metadata;
        let mut used: Amounts = q
            .spec
            .hard
            .keys()
            .filter(|n| pod_names(n))
            .map(|n| (n.clone(), 0))
            .collect();
        let prefix = format!("/registry/pods/{}/{}/", m.tenant_or_system(), m.namespace);
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

/// Seconds since the quota's last charge, if it has one.
fn since_charge(q: &ResourceQuota) -> Option<i64> {
    let at = q.metadata.annotations.get(quota::ANNOTATION_CHARGED_AT)?;
    let at = chrono::DateTime::parse_from_rfc3339(at).ok()?;
    Some((chrono::Utc::now() - at.with_timezone(&chrono::Utc)).num_seconds())
}

#[async_trait]
impl Reconciler<ResourceQuota> for ResourceQuotaController {
    async fn reconcile(&self, key: &str, q: Option<ResourceQuota>) -> Result<Requeue, String> {
        let Some(q) = q else {
            return Ok(Requeue::Done);
        };
        let counted = self.recount(&q);
        let used = q
            .status
            .as_ref()
            .map(|s| quota::amounts(&s.used))
            .unwrap_or_default();
        let lowers = counted
            .iter()
            .any(|(k, v)| used.get(k).is_some_and(|u| v < u));
        if lowers
            && let Some(age) = since_charge(&q)
            && age < quota::CHARGE_SETTLE_SECS
        {
            let wait = (quota::CHARGE_SETTLE_SECS - age).max(1) as u64;
            return Ok(Requeue::After(Duration::from_secs(wait)));
        }
        let hard = q.spec.hard.clone();
        self.quotas
            .modify_status(key, |q| {
                let status = q.status.get_or_insert_default();
                let mut used = quota::amounts(&status.used);
                // Names no longer limited are dropped; the API's counts are kept.
                used.retain(|k, _| hard.contains_key(k));
                // Only pods are counted here: a name the API has not counted yet stays
                // absent, for the next admission to count from the store.
                used.extend(counted.iter().map(|(k, v)| (k.clone(), *v)));
                let next = quota::resource_list(&used);
                if status.used == next && status.hard == hard {
                    return false;
                }
                status.used = next;
                status.hard = hard.clone();
                true
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
