//! The network controller, the Arktos side of the VPC plane:
//!
//! - every tenant gets a `Network` named `default` of type `vpc`, backed by a `Vpc` and a
//!   `Subnet` named `default` ([`DEFAULT_CIDR`]); the network turns `Ready` when its VPC
//!   is provisioned;
//! - every node gets a `Droplet` of the same name (its `InternalIP`, a MAC derived from it);
//! - every scheduled pod on a `vpc` network (its tenant's `default`, or the one its
//!   [`NETWORK_LABEL`] names) gets an `Endpoint` of the same name in its namespace, on the
//!   subnet named like the network and the droplet of its node; the endpoint goes with
//!   the pod. Pods on `flat` networks get none.

use std::net::Ipv4Addr;

use async_trait::async_trait;
use centaurus_client::{Client, ClientError};
use centaurus_core::controller::{Controller, Reconciler, Requeue, Share};
use centaurus_core::model::{Network, Node, Pod, Resource, Tenant};

use crate::ipam::format_mac;
use crate::kinds::{Droplet, Endpoint, PROVISIONED, Subnet, Vpc};

/// The pod label naming the network a pod joins (default: `default`).
pub const NETWORK_LABEL: &str = "arktos.futurewei.com/network";
/// The range of each tenant's default VPC and subnet.
pub const DEFAULT_CIDR: &str = "10.0.0.0/16";

fn created<R>(r: Result<R, ClientError>) -> Result<(), String> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.is_already_exists() => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs the network controller through `client` until dropped, on its `share` of the
/// objects (replicas split them by `hashKey`). What it creates passes the API server's
/// Mizar admission like any other request.
pub async fn run(client: Client, share: Share) {
    tokio::join!(
        run_tenants(client.clone(), share.clone()),
        run_hosts(client, share)
    );
}

/// The hosts' half of the network controller: a `Droplet` for every node (a resource
/// partition's).
pub async fn run_hosts(client: Client, share: Share) {
    let nodes = Controller::<Node>::new(client.api().source("/registry/nodes/")).with_share(&share);
    nodes.run(NetworkController { client }).await;
}

/// The tenants' half of the network controller: default networks, and an `Endpoint` for
/// every scheduled pod (a tenant partition's).
pub async fn run_tenants(client: Client, share: Share) {
    let tenants =
        Controller::<Tenant>::new(client.api().source("/registry/tenants/")).with_share(&share);
    // A VPC turning Provisioned marks its tenant's network Ready.
    let vpcs = Controller::<Vpc>::new(client.api().source("/registry/vpcs/"));
    {
        let queue = tenants.queue().clone();
        vpcs.informer().on_change(move |c| {
            queue.add(&format!("/registry/tenants/{}", c.object().metadata.tenant));
        });
    }
    let pods = Controller::<Pod>::new(client.api().source("/registry/pods/"))
        .with_share(&share)
        // Three round trips a pod: enough in flight to follow a scheduler's pace.
        .with_workers(32);
    let n = NetworkController { client };
    tokio::join!(tenants.run(n.clone()), vpcs.run(Ignore), pods.run(n));
}

struct Ignore;

#[async_trait]
impl Reconciler<Vpc> for Ignore {
    async fn reconcile(&self, _: &str, _: Option<Vpc>) -> Result<Requeue, String> {
        Ok(Requeue::Done)
    }
}

#[derive(Clone)]
struct NetworkController {
    client: Client,
}

#[async_trait]
impl Reconciler<Tenant> for NetworkController {
    async fn reconcile(&self, _: &str, tenant: Option<Tenant>) -> Result<Requeue, String> {
        let Some(t) = tenant else {
            return Ok(Requeue::Done);
        };
        if t.metadata.deletion_timestamp.is_some()
            || t.status.as_ref().is_some_and(|s| s.phase == "Terminating")
        {
            return Ok(Requeue::Done);
        }
        let name = t.metadata.name.clone();
        let networks = self.client.api::<Network>();
        let key = format!("/registry/networks/{name}/default");
        if networks
            .get(&key)
            .await
            .map_err(|e| e.to_string())?
            .is_none()
        {
            let mut n = Network::default();
            n.metadata.name = "default".into();
            n.metadata.tenant = name.clone();
            n.spec.type_ = "vpc".into();
            n.spec.vpc_id = "default".into();
            n.spec.cidrs = vec![DEFAULT_CIDR.into()];
            created(networks.create(n).await)?;
        }
        let Some(net) = networks.get(&key).await.map_err(|e| e.to_string())? else {
            return Ok(Requeue::Done);
        };
        if net.spec.type_ != "vpc" {
            return Ok(Requeue::Done);
        }
        let vpc_key = format!("/registry/vpcs/{name}/{}", net.spec.vpc_id);
        let vpc = self
            .client
            .api::<Vpc>()
            .get(&vpc_key)
            .await
            .map_err(|e| e.to_string())?;
        if vpc.is_none() {
            let mut v = Vpc::default();
            v.metadata.name = net.spec.vpc_id.clone();
            v.metadata.tenant = name.clone();
            v.spec.cidr = DEFAULT_CIDR.into();
            v.spec.dividers = 1;
            created(self.client.api().create(v).await)?;
            let mut s = Subnet::default();
            s.metadata.name = "default".into();
            s.metadata.tenant = name.clone();
            s.spec.cidr = DEFAULT_CIDR.into();
            s.spec.vpc = net.spec.vpc_id.clone();
            s.spec.bouncers = 1;
            created(self.client.api().create(s).await)?;
        }
        let ready = vpc
            .and_then(|v| v.status)
            .is_some_and(|s| s.progress.phase == PROVISIONED);
        if ready {
            networks
                .modify_status(&key, |n| {
                    let s = n.status.get_or_insert_with(Default::default);
                    if s.phase == "Ready" {
                        return false;
                    }
                    s.phase = "Ready".into();
                    true
                })
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(Requeue::Done)
    }
}

/// A droplet's MAC when the host's is not known: `02:fe` then the IPv4 address.
fn droplet_mac(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format_mac([0x02, 0xfe, o[0], o[1], o[2], o[3]])
}

#[async_trait]
impl Reconciler<Node> for NetworkController {
    async fn reconcile(&self, key: &str, node: Option<Node>) -> Result<Requeue, String> {
        let droplets = self.client.api::<Droplet>();
        let name = key.rsplit('/').next().unwrap_or_default();
        let Some(node) = node else {
            droplets
                .delete(&format!("/registry/droplets/{name}"), None)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(Requeue::Done);
        };
        let Some(ip) = node.status.as_ref().and_then(|s| {
            s.addresses
                .iter()
                .find(|a| a.type_ == "InternalIP")
                .and_then(|a| a.address.parse::<Ipv4Addr>().ok())
        }) else {
            return Ok(Requeue::Done);
        };
        if droplets
            .get(&format!("/registry/droplets/{name}"))
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Ok(Requeue::Done);
        }
        let mut d = Droplet::default();
        d.metadata.name = name.to_owned();
        d.spec.ip = ip.to_string();
        d.spec.mac = droplet_mac(ip);
        d.spec.ifname = "eth0".into();
        d.spec.node = name.to_owned();
        created(droplets.create(d).await)?;
        Ok(Requeue::Done)
    }
}

#[async_trait]
impl Reconciler<Pod> for NetworkController {
    async fn reconcile(&self, key: &str, pod: Option<Pod>) -> Result<Requeue, String> {
        let endpoints = self.client.api::<Endpoint>();
        let ep_key = key.replacen("/registry/pods/", "/registry/endpoints/", 1);
        let Some(pod) = pod.filter(|p| p.metadata.deletion_timestamp.is_none()) else {
            endpoints
                .delete(&ep_key, None)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(Requeue::Done);
        };
        if pod.spec.node_name.is_empty()
            || endpoints
                .get(&ep_key)
                .await
                .map_err(|e| e.to_string())?
                .is_some()
        {
            return Ok(Requeue::Done);
        }
        let tenant = pod.meta().tenant_or_system().to_owned();
        let network = pod
            .metadata
            .labels
            .get(NETWORK_LABEL)
            .map_or("default", String::as_str);
        let net = self
            .client
            .api::<Network>()
            .get(&format!("/registry/networks/{tenant}/{network}"))
            .await
            .map_err(|e| e.to_string())?;
        let Some(net) = net else {
            // The tenant's default network is on its way; a named one may come later.
            return Ok(Requeue::After(std::time::Duration::from_millis(500)));
        };
        if net.spec.type_ != "vpc" {
            return Ok(Requeue::Done);
        }
        let mut e = Endpoint::default();
        e.metadata.name = pod.metadata.name.clone();
        e.metadata.tenant = tenant;
        e.metadata.namespace = pod.metadata.namespace.clone();
        e.spec.subnet = network.to_owned();
        e.spec.vpc = net.spec.vpc_id.clone();
        e.spec.droplet = pod.spec.node_name.clone();
        e.spec.pod = pod.metadata.name.clone();
        created(self.client.api().create(e).await)?;
        Ok(Requeue::Done)
    }
}
