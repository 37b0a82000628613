//! Active-active controller instances over Leases.
//!
//! Each instance renews a Lease named `{group}.{name}` in the `kube-system` namespace of
//! the `system` tenant; the instances of a group with live Leases form the hash ring, and
//! an instance reconciles only the objects whose `hashKey` the ring gives it. A dead
//! instance's Lease expires and its share goes to the others.
//!
//! Handover never has two instances reconcile one object at once, given the clocks of
//! one region: a member counts only once its Lease is `settle` old (a Lease renewed after
//! it expired starts a new term), so every instance starts counting it from the same
//! moment; an instance gives up what a new ring takes from it at its next check, but takes
//! what a new ring gives it only one check later, when every other instance has given it
//! up (it owns an object only in both the ring of now and the ring of its previous check).
//! An instance that cannot renew its own Lease stops reconciling a period before the Lease
//! expires, before anyone else may take its share.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use centaurus_client::{Api, Client};
use centaurus_core::controller::{Ownership, Share};
use centaurus_core::model::{self, Lease, LeaseSpec, ObjectMeta, Resource};
use centaurus_core::ring::{HashRing, RingConfig};

/// How an instance takes part.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// The group of instances that share the work (`controllers`).
    pub group: String,
    /// This instance's name, unique in the group.
    pub name: String,
    /// How often the Lease is renewed and the members are read.
    pub period: Duration,
    /// How long a Lease stays valid after a renewal.
    pub lease: Duration,
    /// How old a member's Lease must be before the member counts.
    pub settle: Duration,
}

impl MembershipConfig {
    /// Timings for a region: renew every 2 s, Leases of 10 s, members count after 4 s.
    pub fn new(group: &str, name: &str) -> Self {
        Self {
            group: group.into(),
            name: name.into(),
            period: Duration::from_secs(2),
            lease: Duration::from_secs(10),
            settle: Duration::from_secs(4),
        }
    }
}

#[derive(Default)]
struct View {
    /// The ring of this check and of the previous one.
    now: Option<HashRing>,
    before: Option<HashRing>,
    members: Vec<String>,
    /// Until when this instance may act on its last renewal.
    valid_until: Option<Instant>,
}

/// One instance's membership; as an [`Ownership`], what it may reconcile now.
#[derive(Clone)]
pub struct Membership {
    config: Arc<MembershipConfig>,
    leases: Api<Lease>,
    view: Arc<RwLock<View>>,
}

impl Membership {
    /// The membership of the instance `config.name` through `client`; [`Membership::run`]
    /// keeps it.
    pub fn new(client: &Client, config: MembershipConfig) -> Self {
        Self {
            config: Arc::new(config),
            leases: client.api(),
            view: Arc::default(),
        }
    }

    /// What this instance reconciles: the objects the membership gives it, looked at
    /// again every period (to pick up what it gains).
    pub fn share(&self) -> Share {
        Share::new(Arc::new(self.clone()), Some(self.config.period))
    }

    /// How often the membership is checked.
    pub fn period(&self) -> Duration {
        self.config.period
    }

    /// The members of the current ring.
    pub fn members(&self) -> Vec<String> {
        self.view
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .members
            .clone()
    }

    fn lease_key(&self) -> String {
        model::object_key(
            Lease::PLURAL,
            Lease::SCOPE,
            model::SYSTEM_TENANT,
            "kube-system",
            &format!("{}.{}", self.config.group, self.config.name),
        )
    }

    /// Renews this instance's Lease (a new term when it had expired).
    async fn renew(&self) -> Result<(), centaurus_client::ClientError> {
        let now = model::now();
        let secs = self.config.lease.as_secs().max(1) as i32;
        let renewed = self
            .leases
            .modify(&self.lease_key(), |l| {
                if !l.is_valid_at(now) {
                    l.spec.acquire_time = Some(now);
                    l.spec.lease_transitions = Some(l.spec.lease_transitions.unwrap_or(0) + 1);
                }
                l.spec.renew_time = Some(now);
                l.spec.lease_duration_seconds = Some(secs);
                true
            })
            .await?;
        if renewed.is_none() {
            let mut lease = Lease::typed(ObjectMeta::namespaced(
                model::SYSTEM_TENANT,
                "kube-system",
                format!("{}.{}", self.config.group, self.config.name),
            ));
            lease.spec = LeaseSpec {
                holder_identity: Some(self.config.name.clone()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(now),
                renew_time: Some(now),
                lease_transitions: Some(0),
            };
            match self.leases.create(lease).await {
                Ok(_) => {}
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The members that count now: live Leases of the group at least `settle` old.
    async fn read_members(&self) -> Result<Vec<String>, centaurus_client::ClientError> {
        let now = model::now();
        let settle = chrono::Duration::from_std(self.config.settle).unwrap_or_default();
        let prefix = format!("{}.", self.config.group);
        let all = self
            .leases
            .list(&format!(
                "/registry/leases/{}/kube-system/",
                model::SYSTEM_TENANT
            ))
            .await?;
        let mut members: Vec<String> = all
            .iter()
            .filter(|l| l.metadata.name.starts_with(&prefix) && l.is_valid_at(now))
            .filter(|l| l.spec.acquire_time.is_some_and(|t| t + settle <= now))
            .map(|l| l.metadata.name[prefix.len()..].to_owned())
            .collect();
        members.sort();
        Ok(members)
    }

    /// One check: renew, read the members, and move the rings on.
    async fn check(&self) {
        let started = Instant::now();
        match self.renew().await {
            Ok(()) => {
                let until = started + self.config.lease.saturating_sub(self.config.period);
                self.view
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .valid_until = Some(until);
            }
            Err(e) => {
                tracing::warn!(member = %self.config.name, error = %e, "cannot renew the lease")
            }
        }
        let members = match self.read_members().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(member = %self.config.name, error = %e, "cannot read the members");
                return;
            }
        };
        let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
        if members != view.members {
            tracing::info!(member = %self.config.name, ?members, "controller ring changed");
        }
        let ring = HashRing::with_owners(RingConfig::default(), members.iter().cloned());
        view.before = view.now.replace(ring);
        view.members = members;
    }

    /// Keeps the membership until dropped.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(self.config.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.check().await;
        }
    }
}

impl Ownership for Membership {
    fn owns(&self, position: u64) -> bool {
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        if view.valid_until.is_none_or(|t| Instant::now() >= t) {
            return false;
        }
        let me = &self.config.name;
        match (&view.now, &view.before) {
            (Some(now), Some(before)) => now.owns(me, position) && before.owns(me, position),
            _ => false,
        }
    }
}
