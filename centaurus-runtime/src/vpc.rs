//! The node side of the VPC plane: a [`NetworkPlugin`] that starts a pod on a `vpc`
//! network only once its `Endpoint` is `Provisioned` (the readiness gate) and gives the
//! pod the endpoint's address. Pods on `flat` networks go to the wrapped plugin.
//!
//! With a [`Wiring`] (real nodes), it makes the pod's network namespace and a veth pair
//! named as the endpoint says, with the endpoint's address, MAC and gateway; the host side,
//! in this process's namespace or the node's droplet's, is where the transit agent
//! attaches. A VM pod gets a tap device of that name there instead, which its guest's
//! virtio-net device is ([`GuestNic`]): the agent attaches to it as to a veth, and the
//! guest takes the endpoint's address, MAC and gateway. Without a wiring (hollow nodes) it
//! only hands out the address.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use centaurus_client::Client;
use centaurus_core::controller::Informer;
use centaurus_core::model::{Network, Pod, Resource};
use centaurus_vpc::kinds::{Endpoint, EndpointStatus, FAILED, PROVISIONED};
use centaurus_vpc::network::NETWORK_LABEL;
use centaurus_vpc::plane::veth_name;
use tokio::sync::Notify;

use crate::ledger::{Attachment, AttachmentLedger};
use crate::{GuestNic, NetworkPlugin, RuntimeError, SandboxNetwork};
use centaurus_netdev::netlink::parse_mac;
use centaurus_netdev::netns::{create_tap, netns_path};
use centaurus_netdev::{LinkChange, Netlink, PodLink};

/// Attaches pods to VPC endpoints, or to the flat network.
pub struct VpcNetwork {
    /// Where pods' networks and endpoints are: the region, or each tenant partition.
    clients: Vec<Client>,
    flat: Arc<dyn NetworkPlugin>,
    wiring: Option<Wiring>,
    timeout: Duration,
    /// The veths and namespaces wired so far.
    wired: std::sync::Mutex<Claims>,
    ledger: Option<AttachmentLedger>,
    /// Endpoints as watched in each partition, when the identity may watch them.
    endpoints: Option<EndpointWatch>,
}

/// The endpoints of each partition as a watch shows them (for an identity that may watch
/// them all, a node fleet's), so a pod waits for its endpoint's changes instead of polling
/// the API for it: polling pods cost the API a GET each every 200 ms, which thousands of
/// pods waiting at once turn into a load that starves everything else.
struct EndpointWatch {
    informers: Vec<Arc<Informer<Endpoint>>>,
    /// The pods waiting, by endpoint key.
    waiting: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for EndpointWatch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl EndpointWatch {
    /// Watches the endpoints of every partition of `clients` (needs a Tokio runtime).
    fn start(clients: &[Client]) -> Self {
        let waiting: Arc<Mutex<HashMap<String, Arc<Notify>>>> = Arc::default();
        let mut tasks = Vec::new();
        let informers = clients
            .iter()
            .map(|c| {
                let informer = Arc::new(Informer::new(
                    c.api::<Endpoint>().source("/registry/endpoints/"),
                ));
                let waiting = waiting.clone();
                informer.on_change(move |change| {
                    let key = change.object().key();
                    if let Some(n) = waiting.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
                        n.notify_waiters();
                    }
                });
                tasks.push(tokio::spawn(informer.clone().run()));
                informer
            })
            .collect();
        Self {
            informers,
            waiting,
            tasks,
        }
    }

    /// The endpoint at `key` in any partition's cache.
    fn cached(&self, key: &str) -> Option<Endpoint> {
        self.informers.iter().find_map(|i| i.cache().get(key))
    }
}

/// A pod's place among the waiting: leaves it when dropped.
struct Waiting<'a> {
    watch: &'a EndpointWatch,
    key: &'a str,
    notify: Arc<Notify>,
}

impl<'a> Waiting<'a> {
    fn join(watch: &'a EndpointWatch, key: &'a str) -> Self {
        let notify = watch
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_owned())
            .or_default()
            .clone();
        Self { watch, key, notify }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut waiting = self.watch.waiting.lock().unwrap_or_else(|e| e.into_inner());
        // The map's and this one's: no other pod waits for the key.
        if waiting
            .get(self.key)
            .is_some_and(|n| Arc::strong_count(n) <= 2)
        {
            waiting.remove(self.key);
        }
    }
}

/// The pods' claims on the veths and namespaces their endpoints name (host-side veth →
/// namespace and pod uid). The names come from the endpoint's, so a pod made again under
/// a name (a StatefulSet's) has its predecessor's: a claim says whose they are, and only
/// that pod unwires them.
#[derive(Debug, Default)]
struct Claims(std::collections::BTreeMap<String, (String, String)>);

impl Claims {
    /// Claims `veth` and `netns` for pod `uid`, before they are made. Refused (NotReady:
    /// the pod tries again) while an earlier pod of the same name still holds them, until
    /// its teardown has removed them.
    fn claim(&mut self, veth: &str, netns: &str, uid: &str) -> Result<()> {
        if let Some((_, owner)) = self.0.get(veth)
            && owner != uid
        {
            return Err(RuntimeError::NotReady(format!(
                "an earlier pod of this name (uid {owner}) is still being removed from this node"
            )));
        }
        self.0
            .insert(veth.to_owned(), (netns.to_owned(), uid.to_owned()));
        Ok(())
    }

    /// The namespace pod `uid` claimed with `veth`, if it holds it.
    fn held_by(&self, veth: &str, uid: &str) -> Option<String> {
        let (netns, owner) = self.0.get(veth)?;
        (owner == uid).then(|| netns.clone())
    }

    fn release(&mut self, veth: &str) {
        self.0.remove(veth);
    }
}

/// How a real node wires its pods to their endpoints.
#[derive(Clone, Debug, Default)]
pub struct Wiring {
    /// The network namespace the host side of each pod's veth goes in (the node's droplet
    /// in a testbed region); None: this process's own.
    pub host_netns: Option<String>,
    /// The MTU of each pod's interface and its host side (the substrate's less the
    /// overlay's headers); None: the kernel's default.
    pub mtu: Option<u32>,
    /// A loaded XDP program to attach to each container pod's interface. A datapath that
    /// redirects frames into the host side of a veth needs a program on the pod's side
    /// for them to be delivered; the offloads XDP cannot carry (transmit checksums,
    /// segmentation) are turned off with it.
    pub pod_xdp: Option<Arc<OwnedFd>>,
}

type Result<T> = std::result::Result<T, RuntimeError>;

impl VpcNetwork {
    /// Pods on `vpc` networks wait for their endpoint, `timeout` at a time (then the node
    /// agent reports why and tries again); `flat` pods use `flat`. `wiring` makes namespaces and veth pairs (real nodes).
    pub fn new(
        client: Client,
        flat: Arc<dyn NetworkPlugin>,
        wiring: Option<Wiring>,
        timeout: Duration,
    ) -> Self {
        Self::across(vec![client], flat, wiring, timeout)
    }

    /// As [`VpcNetwork::new`] in a partitioned region: a pod's network and endpoint are
    /// read from whichever of the tenant partitions `clients` holds its tenant.
    pub fn across(
        clients: Vec<Client>,
        flat: Arc<dyn NetworkPlugin>,
        wiring: Option<Wiring>,
        timeout: Duration,
    ) -> Self {
        Self {
            clients,
            flat,
            wiring,
            timeout,
            wired: Default::default(),
            ledger: None,
            endpoints: None,
        }
    }

    /// Follows the endpoints of its partitions with a watch (its clients' identity must
    /// be allowed to watch every endpoint there, as a node fleet's is), so pods wait for
    /// their endpoint's changes rather than polling for it. Needs a Tokio runtime.
    pub fn watching_endpoints(mut self) -> Self {
        self.endpoints = Some(EndpointWatch::start(&self.clients));
        self
    }

    /// Waits until `ready` says the endpoint at `key` is ready, as [`VpcNetwork::poll`]
    /// does, from the watched endpoints when there are any.
    async fn endpoint<T>(
        &self,
        key: &str,
        ready: impl Fn(&Endpoint) -> Result<Option<T>>,
    ) -> Result<T> {
        let Some(watch) = &self.endpoints else {
            return self.poll(key, "endpoint", ready).await;
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        let waiting = Waiting::join(watch, key);
        loop {
            let changed = waiting.notify.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(e) = watch.cached(key)
                && let Some(t) = ready(&e)?
            {
                return Ok(t);
            }
            // A change wakes it; a broken watch is covered by a look every few seconds.
            let look = tokio::time::Instant::now() + Duration::from_secs(5);
            if tokio::time::timeout_at(look.min(deadline), changed)
                .await
                .is_err()
            {
                if tokio::time::Instant::now() >= deadline {
                    return Err(RuntimeError::NotReady(format!(
                        "endpoint {key} is not ready after {:?}",
                        self.timeout
                    )));
                }
                for client in &self.clients {
                    if let Ok(Some(e)) = client.api::<Endpoint>().get(key).await
                        && let Some(t) = ready(&e)?
                    {
                        return Ok(t);
                    }
                }
            }
        }
    }

    /// Records what it wires in `ledger`, so the next instance removes what this one
    /// leaves if it is killed.
    pub fn with_ledger(mut self, ledger: AttachmentLedger) -> Self {
        self.ledger = Some(ledger);
        self
    }

    fn wired_mut(&self) -> std::sync::MutexGuard<'_, Claims> {
        self.wired.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pod's network, once it exists.
    async fn network(&self, pod: &Pod) -> Result<Network> {
        let tenant = pod.meta().tenant_or_system();
        let name = pod
            .metadata
            .labels
            .get(NETWORK_LABEL)
            .map_or("default", String::as_str);
        let key = format!("/registry/networks/{tenant}/{name}");
        self.poll(&key, "network", |n: &Network| Ok(Some(n.clone())))
            .await
    }

    /// Polls `key` until `ready` says the object is ready (`Some`), fails, or time is up
    /// ([`RuntimeError::NotReady`]: the caller tries again later).
    async fn poll<R: Resource, T>(
        &self,
        key: &str,
        what: &str,
        ready: impl Fn(&R) -> Result<Option<T>>,
    ) -> Result<T> {
        let deadline = Instant::now() + self.timeout;
        let mut delay = Duration::from_millis(5);
        loop {
            // A partition that does not hold the pod's tenant refuses its node (403): the
            // refusal counts only when every partition refuses.
            let (mut found, mut refused) = (None, None);
            let mut refusals = 0;
            for client in &self.clients {
                match client.api::<R>().get(key).await {
                    Ok(Some(o)) => {
                        found = Some(o);
                        break;
                    }
                    Ok(None) => {}
                    // An API server restarting or busy: look again.
                    Err(e) if e.is_transient() => {}
                    Err(e) => {
                        refusals += 1;
                        refused.get_or_insert(e);
                    }
                }
            }
            if found.is_none()
                && refusals == self.clients.len()
                && let Some(e) = refused
            {
                return Err(RuntimeError::Unsupported(e.to_string()));
            }
            if let Some(o) = found
                && let Some(t) = ready(&o)?
            {
                return Ok(t);
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::NotReady(format!(
                    "{what} {key} is not ready after {:?}",
                    self.timeout
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(200));
        }
    }

    /// Wires a container pod (its namespace) or a VM pod (its guest's NIC).
    async fn wire(
        &self,
        w: &Wiring,
        s: &EndpointStatus,
        vm: bool,
    ) -> Result<(Option<PathBuf>, Option<GuestNic>)> {
        let ns = s.netns.as_str();
        // Start clean: a half-made attachment from an earlier try is removed first.
        self.unwire(w, &s.veth, ns).await;
        if let Some(l) = &self.ledger {
            l.record(&attachment(w, &s.veth, ns));
        }
        if vm {
            Ok((None, Some(wire_guest(w, s).await?)))
        } else {
            Ok((Some(wire(w, s).await?), None))
        }
    }

    /// Removes a pod's veth pair and namespace, if present.
    async fn unwire(&self, w: &Wiring, veth: &str, ns: &str) {
        attachment(w, veth, ns).remove().await;
        if let Some(l) = &self.ledger {
            l.forget(ns);
        }
    }
}

/// The attachment of a provisioned endpoint: its veth pair and network namespace.
fn attachment(w: &Wiring, veth: &str, ns: &str) -> Attachment {
    Attachment {
        netns: ns.to_owned(),
        veth: veth.to_owned(),
        host_netns: w.host_netns.clone(),
    }
}

/// Makes a provisioned endpoint's network namespace and veth pair, with its address, MAC
/// and default route through its gateway, as the endpoint's status names them; returns the
/// namespace's path. The host side is where the transit agent attaches.
pub async fn wire(w: &Wiring, s: &EndpointStatus) -> Result<PathBuf> {
    let (address, gateway) = addresses(s)?;
    let host = w.host_netns.as_deref().map(netns_path);
    let link = PodLink {
        netns: &s.netns,
        veth: &s.veth,
        host_netns: host.as_deref(),
        bridge: None,
        mtu: w.mtu,
        mac: Some(&s.mac),
        address: (address, s.prefix_len),
        gateway,
        xdp: w.pod_xdp.as_ref().map(|p| p.as_fd()),
    };
    Ok(link.make().await?)
}

/// The endpoint's address and gateway.
fn addresses(s: &EndpointStatus) -> Result<(Ipv4Addr, Ipv4Addr)> {
    let parse = |what: &str, a: &str| {
        a.parse::<Ipv4Addr>().map_err(|_| {
            RuntimeError::Unsupported(format!(
                "the endpoint's {what} {a:?} is not an IPv4 address"
            ))
        })
    };
    Ok((parse("address", &s.ip)?, parse("gateway", &s.gateway)?))
}

/// Makes a provisioned endpoint's tap device, named as its host-side veth would be, for a
/// VM guest: the guest's NIC, with the endpoint's address, MAC and gateway.
pub async fn wire_guest(w: &Wiring, s: &EndpointStatus) -> Result<GuestNic> {
    // Checked first: the guest's init reads them as shell assignments, QEMU's command line
    // takes the MAC.
    let (address, gateway) = addresses(s)?;
    parse_mac(&s.mac)?;
    let host = w.host_netns.as_deref().map(netns_path);
    create_tap(&s.veth, host.as_deref()).await?;
    let tap = LinkChange {
        mtu: w.mtu,
        up: true,
        ..Default::default()
    };
    Netlink::open(host.as_deref())
        .await?
        .set_link(&s.veth, tap)
        .await?;
    Ok(GuestNic {
        tap: s.veth.clone(),
        netns: host,
        mac: s.mac.clone(),
        address: format!("{address}/{}", s.prefix_len),
        gateway: gateway.to_string(),
        mtu: w.mtu,
    })
}

/// Removes an endpoint's veth pair (or tap) and network namespace, if present.
pub async fn unwire(w: &Wiring, veth: &str, ns: &str) {
    attachment(w, veth, ns).remove().await;
}

#[async_trait]
impl NetworkPlugin for VpcNetwork {
    async fn attach(&self, pod: &Pod) -> Result<SandboxNetwork> {
        let net = self.network(pod).await?;
        if net.spec.type_ != "vpc" {
            return self.flat.attach(pod).await;
        }
        let key = pod
            .key()
            .replacen("/registry/pods/", "/registry/endpoints/", 1);
        let uid = pod.metadata.uid.clone();
        let status = self
            .endpoint(&key, |e: &Endpoint| {
                if e.spec.pod != pod.metadata.name
                    || e.metadata.creation_timestamp < pod.metadata.creation_timestamp
                {
                    return Ok(None); // an endpoint of an earlier pod of that name
                }
                match e.status.as_ref() {
                    Some(s) if s.progress.phase == PROVISIONED => Ok(Some(s.clone())),
                    // The operator looks at a failed endpoint again (on its changes and at
                    // each resync): the pod waits on, with the reason in its status.
                    Some(s) if s.progress.phase == FAILED => Err(RuntimeError::NotReady(format!(
                        "endpoint {key} failed: {}",
                        s.progress.message
                    ))),
                    _ => Ok(None),
                }
            })
            .await?;
        tracing::debug!(pod = uid, ip = status.ip, "endpoint provisioned");
        let (netns, nic) = match &self.wiring {
            Some(w) => {
                self.wired_mut().claim(&status.veth, &status.netns, &uid)?;
                let vm = pod.spec.virtual_machine.is_some();
                self.wire(w, &status, vm).await?
            }
            None => (None, None),
        };
        Ok(SandboxNetwork {
            netns,
            ip: status.ip,
            nic,
        })
    }

    /// Unwires what the pod claimed; a later pod's wiring under the same names stays.
    async fn detach(&self, pod: &Pod) -> Result<()> {
        if let Some(w) = &self.wiring {
            let veth = veth_name(&pod.key().replacen("/registry/pods/", "", 1));
            let mine = self.wired_mut().held_by(&veth, &pod.metadata.uid);
            if let Some(netns) = mine {
                self.unwire(w, &veth, &netns).await;
                self.wired_mut().release(&veth);
            }
        }
        self.flat.detach(pod).await
    }

    async fn release_all(&self) {
        if let Some(w) = &self.wiring {
            let wired = std::mem::take(&mut *self.wired_mut());
            for (veth, (netns, _)) in wired.0 {
                self.unwire(w, &veth, &netns).await;
            }
        }
        self.flat.release_all().await
    }

    async fn reap(&self) -> usize {
        let mine = match &self.ledger {
            Some(l) => l.reap().await,
            None => 0,
        };
        mine + self.flat.reap().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_one_pods_until_its_teardown_releases_it() {
        let mut c = Claims::default();
        c.claim("ve1", "cent-1", "old").unwrap();
        // A retry of the same pod keeps its claim.
        c.claim("ve1", "cent-1", "old").unwrap();
        // The pod made again under the name waits for the old one's teardown.
        let refused = c.claim("ve1", "cent-1", "new").unwrap_err();
        assert!(matches!(refused, RuntimeError::NotReady(_)), "{refused}");
        assert_eq!(c.held_by("ve1", "new"), None, "not the new pod's to unwire");
        assert_eq!(c.held_by("ve1", "old").as_deref(), Some("cent-1"));
        c.release("ve1");
        c.claim("ve1", "cent-1", "new").unwrap();
        // The old pod's teardown, late, finds nothing of its own.
        assert_eq!(c.held_by("ve1", "old"), None);
        assert_eq!(c.held_by("ve1", "new").as_deref(), Some("cent-1"));
    }
}
