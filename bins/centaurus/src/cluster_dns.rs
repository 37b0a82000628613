//! The cluster DNS of a region on droplets. Every tenant gets, in its `kube-system`
//! namespace, the Service `kube-dns` at [`DNS_IP`] (port 53 over UDP and TCP), without a
//! selector, whose one endpoint is an Endpoint of the tenant's default VPC on a droplet.
//! This process makes that endpoint's network namespace and veth as a node makes a pod's,
//! and answers the tenant's names there (`centaurus-dns`) on sockets opened inside the
//! namespace: the address a query reaches is the tenant's own, so no tenant can ask for
//! another's names. The VPC operator programs the Service like any other, so every pod of
//! the VPC reaches it at [`DNS_IP`] through its transit agent.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use centaurus_client::{Client, ClientError};
use centaurus_core::model::{EndpointSlice, Namespace, Network, Service, Tenant};
use centaurus_dns::Zone;
use centaurus_runtime::Wiring;
use centaurus_vpc::ipam::Ipv4Cidr;
use centaurus_vpc::kinds::{Endpoint, PROVISIONED, Subnet};
use serde_json::json;
use tokio::task::JoinHandle;

/// The address of every tenant's cluster DNS: Kubernetes' convention, the tenth address
/// of the service range.
pub const DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const NAMESPACE: &str = "kube-system";
const SERVICE: &str = "kube-dns";
/// The Endpoint (Mizar's) the tenant's DNS listens on.
const ENDPOINT: &str = "cluster-dns";

/// One tenant's DNS being served.
struct Served {
    task: JoinHandle<()>,
    veth: String,
    netns: String,
}

/// The cluster DNS of every tenant, being served; [`ClusterDns::stop`] removes what it
/// wired.
pub struct ClusterDns {
    tasks: Vec<JoinHandle<()>>,
    served: Arc<tokio::sync::Mutex<BTreeMap<String, Served>>>,
    wiring: Wiring,
}

impl ClusterDns {
    /// Serves every tenant's cluster DNS on droplet `droplet`, wired as `wiring` says,
    /// through `client` (the [`centaurus_tenancy::identity::CLUSTER_DNS`] identity).
    pub fn start(client: Client, wiring: Wiring, droplet: String) -> Self {
        let zone = Arc::new(Zone::new());
        let served: Arc<tokio::sync::Mutex<BTreeMap<String, Served>>> = Default::default();
        let follow = tokio::spawn(zone.clone().follow(client.clone()));
        let serve = tokio::spawn(serve_tenants(
            client,
            zone,
            wiring.clone(),
            droplet,
            served.clone(),
        ));
        Self {
            tasks: vec![follow, serve],
            served,
            wiring,
        }
    }

    /// Stops serving and removes every tenant's DNS namespace and veth.
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        for (_, s) in std::mem::take(&mut *self.served.lock().await) {
            s.task.abort();
            centaurus_runtime::vpc::unwire(&self.wiring, &s.veth, &s.netns).await;
        }
    }
}

/// Once a second: starts serving each tenant not served yet, and stops serving the
/// tenants that are gone.
async fn serve_tenants(
    client: Client,
    zone: Arc<Zone>,
    wiring: Wiring,
    droplet: String,
    served: Arc<tokio::sync::Mutex<BTreeMap<String, Served>>>,
) {
    loop {
        match client.api::<Tenant>().list("/registry/tenants/").await {
            Ok(list) => {
                let tenants: Vec<String> = list
                    .into_iter()
                    .filter(|t| t.metadata.deletion_timestamp.is_none())
                    .map(|t| t.metadata.name)
                    .filter(|t| t != centaurus_core::model::SYSTEM_TENANT)
                    .collect();
                let mut served = served.lock().await;
                let gone: Vec<String> = served
                    .keys()
                    .filter(|t| !tenants.contains(t))
                    .cloned()
                    .collect();
                for t in gone {
                    let s = served.remove(&t).expect("listed above");
                    s.task.abort();
                    centaurus_runtime::vpc::unwire(&wiring, &s.veth, &s.netns).await;
                }
                for t in tenants {
                    if served.contains_key(&t) {
                        continue;
                    }
                    match ensure(&client, &zone, &wiring, &droplet, &t).await {
                        Ok(s) => {
                            tracing::info!(tenant = t, "cluster DNS serving at {DNS_IP}");
                            served.insert(t, s);
                        }
                        Err(e) => tracing::debug!(tenant = t, "cluster DNS: {e}"),
                    }
                }
            }
            Err(e) => tracing::warn!("cluster DNS: listing tenants: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn created<R>(r: Result<R, ClientError>) -> Result<(), String> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.is_already_exists() => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

fn typed<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| e.to_string())
}

/// Makes what `tenant`'s DNS needs, in order, and starts serving it once its endpoint is
/// provisioned; an error says what it waits for (the next round tries again).
async fn ensure(
    client: &Client,
    zone: &Arc<Zone>,
    wiring: &Wiring,
    droplet: &str,
    tenant: &str,
) -> Result<Served, String> {
    let err = |e: ClientError| e.to_string();
    let net = client
        .api::<Network>()
        .get(&format!("/registry/networks/{tenant}/default"))
        .await
        .map_err(err)?
        .filter(|n| n.spec.type_ == "vpc")
        .ok_or("no default vpc network yet")?;
    let ns: Namespace = typed(json!({"metadata": {"name": NAMESPACE, "tenant": tenant}}))?;
    created(client.api::<Namespace>().create(ns).await)?;
    let endpoints = client.api::<Endpoint>();
    let key = format!("/registry/endpoints/{tenant}/{NAMESPACE}/{ENDPOINT}");
    if endpoints.get(&key).await.map_err(err)?.is_none() {
        let mut e = Endpoint::default();
        e.metadata.name = ENDPOINT.into();
        e.metadata.namespace = NAMESPACE.into();
        e.metadata.tenant = tenant.into();
        // What NetworkPolicies select the cluster DNS by, as in Kubernetes.
        e.metadata.labels = [("k8s-app".to_owned(), "kube-dns".to_owned())].into();
        e.spec.subnet = "default".into();
        e.spec.vpc = net.spec.vpc_id.clone();
        e.spec.droplet = droplet.into();
        // The subnet's last usable address, out of the way of pods' (lowest first); any
        // other when a pod holds it.
        let subnet = client
            .api::<Subnet>()
            .get(&format!("/registry/subnets/{tenant}/default"))
            .await
            .map_err(err)?
            .ok_or("no default subnet yet")?;
        if let Ok(cidr) = subnet.spec.cidr.parse::<Ipv4Cidr>() {
            e.spec.ip = Ipv4Addr::from(u32::from(cidr.last()) - 1).to_string();
        }
        if created(endpoints.create(e.clone()).await).is_err() {
            e.spec.ip.clear();
            created(endpoints.create(e).await)?;
        }
    }
    let status = endpoints
        .get(&key)
        .await
        .map_err(err)?
        .and_then(|e| e.status)
        .filter(|s| s.progress.phase == PROVISIONED)
        .ok_or("its endpoint is not provisioned yet")?;
    let ip: Ipv4Addr = status.ip.parse().map_err(|_| "endpoint without address")?;
    let ports = json!([
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
    ]);
    let svc: Service = typed(json!({
        "metadata": {"name": SERVICE, "namespace": NAMESPACE, "tenant": tenant,
                     "labels": {"k8s-app": "kube-dns"}},
        "spec": {"clusterIP": DNS_IP.to_string(), "ports": ports},
    }))?;
    let slice: EndpointSlice = typed(json!({
        "metadata": {"name": format!("{SERVICE}-{ENDPOINT}"), "namespace": NAMESPACE,
                     "tenant": tenant,
                     "labels": {"kubernetes.io/service-name": SERVICE}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}],
        "ports": ports,
    }))?;
    // The Service first: a tenant whose 10.96.0.10 is taken gets no namespace wired.
    created(client.api::<Service>().create(svc).await)?;
    created(client.api::<EndpointSlice>().create(slice).await)?;
    // A namespace left by an earlier region is made again.
    centaurus_runtime::vpc::unwire(wiring, &status.veth, &status.netns).await;
    let netns = centaurus_runtime::vpc::wire(wiring, &status)
        .await
        .map_err(|e| e.to_string())?;
    let (udp, tcp) = sockets_in(&netns, SocketAddr::from((ip, 53)))
        .await
        .map_err(|e| format!("listening in {}: {e}", netns.display()))?;
    let mut server = centaurus_dns::serve(zone.clone(), tenant, udp, tcp);
    let task = tokio::spawn(async move {
        if let Err(e) = server.block_until_done().await {
            tracing::warn!("cluster DNS server stopped: {e}");
        }
    });
    Ok(Served {
        task,
        veth: status.veth,
        netns: status.netns,
    })
}

/// A UDP socket and a TCP listener bound to `addr` inside the network namespace at
/// `netns` (opened by a thread that enters it and ends; sockets keep their namespace).
async fn sockets_in(
    netns: &Path,
    addr: SocketAddr,
) -> std::io::Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    let netns: PathBuf = netns.to_owned();
    // The thread enters the namespace and ends; the blocking pool's threads never do.
    let open = move || -> std::io::Result<_> {
        let ns = std::fs::File::open(&netns)?;
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )?;
        let udp = std::net::UdpSocket::bind(addr)?;
        let tcp = std::net::TcpListener::bind(addr)?;
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        Ok((udp, tcp))
    };
    let (udp, tcp) = tokio::task::spawn_blocking(move || std::thread::spawn(open).join())
        .await
        .map_err(std::io::Error::other)?
        .map_err(|_| std::io::Error::other("the namespace thread panicked"))??;
    Ok((
        tokio::net::UdpSocket::from_std(udp)?,
        tokio::net::TcpListener::from_std(tcp)?,
    ))
}
