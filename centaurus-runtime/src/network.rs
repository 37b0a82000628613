//! Attaching pod sandboxes to networks. Until the VPC plane programs endpoints, a node
//! gives each pod its own network namespace with an address from a host-local range on a
//! bridge ([`HostLocalNetwork`]); hollow nodes only hand out addresses ([`NoNetwork`]).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;

use async_trait::async_trait;
use centaurus_core::model::Pod;

use crate::ledger::{Attachment, AttachmentLedger};
use crate::{Result, RuntimeError};
use centaurus_netdev::{LinkChange, Netlink, PodLink};

/// A sandbox's place in the network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SandboxNetwork {
    /// The network namespace workloads join; `None` shares the host's (hollow pods).
    pub netns: Option<PathBuf>,
    /// The pod's address.
    pub ip: String,
    /// A VM guest's network device, when the network gives it one.
    pub nic: Option<GuestNic>,
}

/// A VM guest's network interface: a tap device on the host, which the guest's virtio-net
/// device is, with the settings the guest gives its end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestNic {
    /// The tap device.
    pub tap: String,
    /// The network namespace the tap is in; None: this process's own.
    pub netns: Option<PathBuf>,
    /// The guest interface's MAC.
    pub mac: String,
    /// Its address with the prefix length (`10.0.0.5/24`).
    pub address: String,
    /// Its default gateway.
    pub gateway: String,
    /// Its MTU; None: the default.
    pub mtu: Option<u32>,
}

/// Attaches sandboxes to networks and detaches them.
#[async_trait]
pub trait NetworkPlugin: Send + Sync + 'static {
    /// Gives the pod a network namespace and address.
    async fn attach(&self, pod: &Pod) -> Result<SandboxNetwork>;
    /// Releases what `attach` made; detaching what is gone succeeds.
    async fn detach(&self, pod: &Pod) -> Result<()>;
    /// Releases every attachment still held (a clean stop of the node; the next agent
    /// attaches its pods afresh).
    async fn release_all(&self) {}
    /// Removes what an earlier agent's instance of this plugin left on the host (it was
    /// killed, say), as its [`crate::AttachmentLedger`] recorded; the fleet calls it before
    /// the node's pods are attached. Returns how many attachments it removed.
    async fn reap(&self) -> usize {
        0
    }
}

/// A pool of host-local addresses in one /16.
struct Pool {
    base: u32,
    used: BTreeSet<u32>,
    owner: std::collections::HashMap<String, u32>,
}

impl Pool {
    fn new(base: Ipv4Addr) -> Self {
        Self {
            base: u32::from(base) & 0xffff_0000,
            used: BTreeSet::new(),
            owner: Default::default(),
        }
    }

    /// The next free host address (.0.2 to .255.254), the same one for the same pod.
    fn take(&mut self, uid: &str) -> Option<Ipv4Addr> {
        if let Some(&a) = self.owner.get(uid) {
            return Some(Ipv4Addr::from(self.base + a));
        }
        let a =
            (2..0xfffe).find(|a| !self.used.contains(a) && a & 0xff != 0xff && a & 0xff != 0)?;
        self.used.insert(a);
        self.owner.insert(uid.to_owned(), a);
        Some(Ipv4Addr::from(self.base + a))
    }

    fn give_back(&mut self, uid: &str) {
        if let Some(a) = self.owner.remove(uid) {
            self.used.remove(&a);
        }
    }
}

/// Hands out addresses without touching the host: for hollow pods.
pub struct NoNetwork {
    pool: Mutex<Pool>,
}

impl NoNetwork {
    /// Addresses from the /16 of `base`.
    pub fn new(base: Ipv4Addr) -> Self {
        Self {
            pool: Mutex::new(Pool::new(base)),
        }
    }
}

#[async_trait]
impl NetworkPlugin for NoNetwork {
    async fn attach(&self, pod: &Pod) -> Result<SandboxNetwork> {
        let ip = self
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(&pod.metadata.uid)
            .ok_or_else(|| RuntimeError::Unsupported("the address pool is exhausted".into()))?;
        Ok(SandboxNetwork {
            netns: None,
            ip: ip.to_string(),
            nic: None,
        })
    }

    async fn detach(&self, pod: &Pod) -> Result<()> {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .give_back(&pod.metadata.uid);
        Ok(())
    }
}

/// One network namespace per pod, joined to a host bridge by a veth pair, with an address
/// from the bridge's /16 and a default route through the bridge — what the CNI bridge
/// plugin does, over netlink.
pub struct HostLocalNetwork {
    bridge: String,
    gateway: Ipv4Addr,
    pool: Mutex<Pool>,
    ledger: Option<AttachmentLedger>,
}

/// The short IDs used in namespace and interface names.
fn short(uid: &str) -> String {
    uid.chars()
        .filter(char::is_ascii_hexdigit)
        .take(10)
        .collect()
}

impl HostLocalNetwork {
    /// Pods on `bridge` with addresses from the /16 of `gateway`, which the bridge holds.
    pub fn new(bridge: impl Into<String>, gateway: Ipv4Addr) -> Self {
        Self {
            bridge: bridge.into(),
            gateway,
            pool: Mutex::new(Pool::new(gateway)),
            ledger: None,
        }
    }

    /// Records what it makes in `ledger`, so the next instance removes what this one
    /// leaves if it is killed.
    pub fn with_ledger(mut self, ledger: AttachmentLedger) -> Self {
        self.ledger = Some(ledger);
        self
    }

    fn attachment(uid: &str) -> Attachment {
        Attachment {
            netns: Self::netns_name(uid),
            veth: format!("cv{}", short(uid)),
            host_netns: None,
        }
    }

    /// The namespace name of a pod.
    pub fn netns_name(pod_uid: &str) -> String {
        format!("cent-{}", short(pod_uid))
    }

    async fn ensure_bridge(&self) -> Result<()> {
        let nl = Netlink::open(None).await?;
        if nl.index(&self.bridge).await?.is_some() {
            return Ok(());
        }
        nl.add_bridge(&self.bridge).await?;
        nl.add_address(&self.bridge, self.gateway.into(), 16)
            .await?;
        nl.set_link(&self.bridge, LinkChange::UP).await?;
        Ok(())
    }
}

#[async_trait]
impl NetworkPlugin for HostLocalNetwork {
    async fn attach(&self, pod: &Pod) -> Result<SandboxNetwork> {
        self.ensure_bridge().await?;
        let uid = &pod.metadata.uid;
        let ip = self
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(uid)
            .ok_or_else(|| RuntimeError::Unsupported("the address pool is exhausted".into()))?;
        let attachment = Self::attachment(uid);
        let (ns, host_if) = (attachment.netns.clone(), attachment.veth.clone());
        // Start clean: a half-made attachment from an earlier try is removed first.
        attachment.remove().await;
        if let Some(l) = &self.ledger {
            l.record(&attachment);
        }
        let link = PodLink {
            netns: &ns,
            veth: &host_if,
            host_netns: None,
            bridge: Some(&self.bridge),
            mtu: None,
            mac: None,
            address: (ip, 16),
            gateway: self.gateway,
            xdp: None,
        };
        let path = link.make().await?;
        Ok(SandboxNetwork {
            netns: Some(path),
            ip: ip.to_string(),
            nic: None,
        })
    }

    async fn detach(&self, pod: &Pod) -> Result<()> {
        self.release(&pod.metadata.uid).await;
        Ok(())
    }

    async fn release_all(&self) {
        let uids: Vec<String> = {
            let pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            pool.owner.keys().cloned().collect()
        };
        for uid in uids {
            self.release(&uid).await;
        }
    }

    async fn reap(&self) -> usize {
        match &self.ledger {
            Some(l) => l.reap().await,
            None => 0,
        }
    }
}

impl HostLocalNetwork {
    /// Removes pod `uid`'s veth and namespace and frees its address.
    async fn release(&self, uid: &str) {
        let attachment = Self::attachment(uid);
        attachment.remove().await;
        if let Some(l) = &self.ledger {
            l.forget(&attachment.netns);
        }
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .give_back(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_reuses_addresses_per_pod_and_after_release() {
        let mut p = Pool::new(Ipv4Addr::new(10, 88, 0, 1));
        let a = p.take("a").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(p.take("a").unwrap(), a);
        let b = p.take("b").unwrap();
        assert_ne!(a, b);
        p.give_back("a");
        assert_eq!(p.take("c").unwrap(), a);
    }
}
