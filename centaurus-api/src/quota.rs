//! Admission of namespaces' LimitRanges and ResourceQuotas and of tenants' quotas: a new pod
//! gets the defaults of its namespace's LimitRanges and must keep their bounds; every new
//! namespaced object is charged to the quotas of its namespace, and a pod to its tenant's,
//! by a compare-and-swap on their `status.used` ([`centaurus_core::model::quota`]).

use centaurus_core::model::quota::{self, Amounts, Ledger};
use centaurus_core::model::{self, LimitRange, PodSpec, Resource, ResourceQuota, Tenant};
use std::sync::Arc;

use centaurus_core::controller::{Cache, Informer};
use centaurus_core::store::{KeyValue, Store, StoreError, range_all};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::server::{ApiServer, Target};

/// Informer caches of every ResourceQuota and LimitRange, so that a create in a namespace
/// with neither (the common case) reads nothing more from the store. A namespace the caches
/// show any in is read from the store, which decides.
pub(crate) struct Limits {
    quotas: Cache<ResourceQuota>,
    ranges: Cache<LimitRange>,
}

/// Starts an informer of `R` over `store` on the current runtime; its cache, once loaded.
async fn cached<R: Resource>(store: &Arc<dyn Store>) -> Cache<R> {
    let informer = Arc::new(Informer::<R>::from_store(
        store.clone(),
        format!("/registry/{}/", R::PLURAL),
    ));
    let cache = informer.cache();
    tokio::spawn(informer.clone().run());
    informer.wait_synced().await;
    cache
}

/// Attempts at charging one quota before a busy quota is the caller's conflict.
const CHARGE_ATTEMPTS: usize = 16;

/// Tenant, namespace and name of a new object.
fn coordinates(obj: &Value) -> (String, String, String) {
    let at = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let tenant = match at("/metadata/tenant") {
        t if t.is_empty() => model::SYSTEM_TENANT.to_owned(),
        t => t,
    };
    (tenant, at("/metadata/namespace"), at("/metadata/name"))
}

impl ApiServer {
    /// The caches of quotas and limit ranges, started at the first create that needs them.
    async fn limits(&self) -> &Limits {
        self.limits
            .get_or_init(|| async {
                Limits {
                    quotas: cached(&self.store).await,
                    ranges: cached(&self.store).await,
                }
            })
            .await
    }

    /// After this server created the quota or limit range at `key`: returns once its caches
    /// hold it (at most 2 s), so that the creator's next request here is held to it.
    pub(crate) async fn await_cached(&self, plural: &str, key: &str) {
        if !matches!(plural, "resourcequotas" | "limitranges") {
            return;
        }
        let limits = self.limits().await;
        for _ in 0..2000 {
            let seen = match plural {
                "resourcequotas" => limits.quotas.get(key).is_some(),
                _ => limits.ranges.get(key).is_some(),
            };
            if seen {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        tracing::warn!(%key, "the quota caches did not see a new object within 2 s");
    }

    /// True when the caches hold an object of `R` in the namespace.
    async fn any_in<R: Resource>(&self, tenant: &str, namespace: &str) -> bool {
        let prefix = format!("/registry/{}/{tenant}/{namespace}/", R::PLURAL);
        let limits = self.limits().await;
        match R::PLURAL {
            "resourcequotas" => !limits.quotas.list_prefix(&prefix).is_empty(),
            _ => !limits.ranges.list_prefix(&prefix).is_empty(),
        }
    }

    /// The objects of kind `plural` in one namespace (or all of a tenant's), straight from
    /// the store.
    async fn in_space(
        &self,
        plural: &str,
        tenant: &str,
        namespace: Option<&str>,
    ) -> ApiResult<Vec<KeyValue>> {
        let prefix = match namespace {
            Some(ns) => format!("/registry/{plural}/{tenant}/{ns}/"),
            None => format!("/registry/{plural}/{tenant}/"),
        };
        Ok(range_all(&*self.store, &prefix)
            .await
            .map_err(|e| ApiError::from_store(e, plural, ""))?
            .kvs)
    }

    /// Gives a new pod its namespace's LimitRange defaults and refuses one that breaks their
    /// bounds.
    pub(crate) async fn limit_pod(&self, target: &Target, pod: &mut Value) -> ApiResult<()> {
        if target.info.plural != "pods" {
            return Ok(());
        }
        let (tenant, namespace, name) = coordinates(pod);
        if !self.any_in::<LimitRange>(&tenant, &namespace).await {
            return Ok(());
        }
        let ranges: Vec<LimitRange> = self
            .in_space("limitranges", &tenant, Some(&namespace))
            .await?
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect();
        if ranges.is_empty() {
            return Ok(());
        }
        for range in &ranges {
            range.default_pod(pod);
        }
        let spec: PodSpec = serde_json::from_value(pod["spec"].clone())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let broken: Vec<String> = ranges.iter().flat_map(|r| r.violations(&spec)).collect();
        if broken.is_empty() {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "pods \"{name}\" is forbidden: [{}]",
                broken.join(", ")
            )))
        }
    }

    /// Charges what a new object uses to every quota of its namespace, or refuses it
    /// (403, naming the quota) when that would exceed one.
    pub(crate) async fn charge_quotas(&self, target: &Target, obj: &Value) -> ApiResult<()> {
        if target.info.scope != model::Scope::Namespaced {
            return Ok(());
        }
        let (tenant, namespace, _) = coordinates(obj);
        if !self.any_in::<ResourceQuota>(&tenant, &namespace).await {
            return Ok(());
        }
        let quotas = self
            .in_space(ResourceQuota::PLURAL, &tenant, Some(&namespace))
            .await?;
        let delta = quota::usage_of(target.info.group, target.info.plural, obj);
        for kv in quotas {
            self.charge::<ResourceQuota>(kv, target, obj, &delta)
                .await?;
        }
        Ok(())
    }

    /// Charges a new pod to its tenant's quota (`spec.quota`, kept in `status.used`).
    pub(crate) async fn charge_tenant(&self, target: &Target, pod: &Value) -> ApiResult<()> {
        let (tenant, _, _) = coordinates(pod);
        let key = model::object_key(Tenant::PLURAL, Tenant::SCOPE, "", "", &tenant);
        let kv = self
            .store
            .get(&key)
            .await
            .map_err(|e| ApiError::from_store(e, Tenant::PLURAL, &tenant))?
            .ok_or_else(|| ApiError::not_found(Tenant::PLURAL, &tenant))?;
        let delta = quota::usage_of(target.info.group, target.info.plural, pod);
        self.charge::<Tenant>(kv, target, pod, &delta).await
    }

    /// Gives back to the quotas of its namespace the counts of a removed object other than
    /// a pod (the quota controller recounts pods, which also end without being removed).
    /// A failure is logged: the count stays too high, never too low.
    pub(crate) async fn refund_quotas(&self, target: &Target, obj: &Value) {
        if target.info.scope != model::Scope::Namespaced || target.info.plural == "pods" {
            return;
        }
        let (tenant, namespace, name) = coordinates(obj);
        if !self.any_in::<ResourceQuota>(&tenant, &namespace).await {
            return;
        }
        let quotas = match self
            .in_space(ResourceQuota::PLURAL, &tenant, Some(&namespace))
            .await
        {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(%tenant, %namespace, error = %e.message, "quota refund skipped");
                return;
            }
        };
        let delta = quota::usage_of(target.info.group, target.info.plural, obj);
        for mut kv in quotas {
            for _ in 0..CHARGE_ATTEMPTS {
                let Ok(mut q) = serde_json::from_slice::<ResourceQuota>(&kv.value) else {
                    break;
                };
                let Some(status) = q.status.as_mut() else {
                    break;
                };
                let mut used = quota::amounts(&status.used);
                let mut changed = false;
                for (k, v) in &delta {
                    if let Some(u) = used.get_mut(k) {
                        *u = (*u - v).max(0);
                        changed = true;
                    }
                }
                if !changed {
                    break;
                }
                status.used = quota::resource_list(&used);
                let Ok(bytes) = serde_json::to_vec(&q) else {
                    break;
                };
                match self
                    .store
                    .update(&kv.key, bytes.into(), kv.mod_revision)
                    .await
                {
                    Err(StoreError::Conflict { .. }) => match self.store.get(&kv.key).await {
                        Ok(Some(now)) => kv = now,
                        _ => break,
                    },
                    Ok(_) | Err(StoreError::NotFound { .. }) => break,
                    Err(e) => {
                        tracing::warn!(key = %kv.key, object = %name, error = %e, "quota refund failed");
                        break;
                    }
                }
            }
        }
    }

    /// Charges `delta`, what `obj` uses, to the ledger at `kv` by compare-and-swap, or
    /// refuses `obj` when that would exceed the ledger's limits.
    async fn charge<L: Ledger>(
        &self,
        mut kv: KeyValue,
        target: &Target,
        obj: &Value,
        delta: &Amounts,
    ) -> ApiResult<()> {
        let (tenant, _, name) = coordinates(obj);
        let plural = target.info.plural;
        for _ in 0..CHARGE_ATTEMPTS {
            let mut ledger: L = serde_json::from_slice(&kv.value)
                .map_err(|e| ApiError::internal(format!("{} is corrupt: {e}", kv.key)))?;
            let hard = ledger.hard().clone();
            let wanted: Amounts = delta
                .iter()
                .filter(|(k, _)| hard.contains_key(*k))
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            if wanted.is_empty() {
                return Ok(());
            }
            let refused = |why: String| {
                ApiError::forbidden(format!("{plural} \"{name}\" is forbidden: {why}"))
            };
            if plural == "pods" && L::PLURAL == ResourceQuota::PLURAL {
                let spec: PodSpec = serde_json::from_value(obj["spec"].clone())
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                let missing = quota::unstated(&hard, &spec);
                if !missing.is_empty() {
                    return Err(refused(format!(
                        "failed quota{}: must specify {}",
                        ledger.named().trim_end_matches(','),
                        missing.join(",")
                    )));
                }
            }
            let recorded = ledger.used().cloned().unwrap_or_default();
            let mut used = quota::amounts(&recorded);
            // What nobody has counted yet (a new ledger) is counted here, once.
            let uncounted: Vec<&str> = hard
                .keys()
                .filter(|k| !recorded.contains_key(*k))
                .map(String::as_str)
                .collect();
            if !uncounted.is_empty() {
                let namespace = ledger.counts_namespace().map(str::to_owned);
                used.extend(
                    self.count(&tenant, namespace.as_deref(), &uncounted)
                        .await?,
                );
            }
            quota::check(&hard, &used, &wanted)
                .map_err(|m| refused(format!("exceeded quota{} {m}", ledger.named())))?;
            for (k, v) in wanted {
                *used.entry(k).or_default() += v;
            }
            ledger.set_used(quota::resource_list(&used));
            ledger.meta_mut().annotations.insert(
                quota::ANNOTATION_CHARGED_AT.into(),
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            );
            let bytes =
                serde_json::to_vec(&ledger).map_err(|e| ApiError::internal(e.to_string()))?;
            match self
                .store
                .update(&kv.key, bytes.into(), kv.mod_revision)
                .await
            {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. }) => {
                    match self
                        .store
                        .get(&kv.key)
                        .await
                        .map_err(|e| ApiError::from_store(e, L::PLURAL, ""))?
                    {
                        Some(now) => kv = now,
                        // The ledger went away meanwhile: nothing to charge.
                        None => return Ok(()),
                    }
                }
                Err(StoreError::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(ApiError::from_store(e, L::PLURAL, "")),
            }
        }
        Err(ApiError::conflict(
            L::PLURAL,
            &name,
            "the quota is too busy; try again",
        ))
    }

    /// What a namespace's (or a tenant's) objects use of `names`, counted from the store.
    async fn count(
        &self,
        tenant: &str,
        namespace: Option<&str>,
        names: &[&str],
    ) -> ApiResult<Amounts> {
        let mut kinds: Vec<(String, String)> =
            names.iter().filter_map(|n| quota::counted_by(n)).collect();
        kinds.sort();
        kinds.dedup();
        let mut used: Amounts = names.iter().map(|n| ((*n).to_owned(), 0)).collect();
        for (group, plural) in kinds {
            for kv in self.in_space(&plural, tenant, namespace).await? {
                // Only a pod's usage depends on the object (a Secret's bytes are sealed).
                let obj = if plural == "pods" {
                    match serde_json::from_slice::<Value>(&kv.value) {
                        Ok(obj) => obj,
                        Err(_) => continue,
                    }
                } else {
                    Value::Null
                };
                for (k, v) in quota::usage_of(&group, &plural, &obj) {
                    if let Some(total) = used.get_mut(&k) {
                        *total += v;
                    }
                }
            }
        }
        Ok(used)
    }
}
