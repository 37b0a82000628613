//! The endpoints controller: for every Service with a selector, the `v1` Endpoints (named
//! like the Service) and the `discovery.k8s.io/v1` EndpointSlices of the pods it selects.
//!
//! - A pod counts once it has an address and while it is neither finished nor being
//!   deleted; it is a ready address when its `Ready` condition is true (or the Service
//!   publishes addresses that are not ready), else a not-ready one.
//! - A `targetPort` given by name is resolved on each pod's containers; a pod without that
//!   port is left out of that port's addresses only.
//! - Pods that resolve the ports alike share an Endpoints subset and a slice; a slice holds
//!   at most [`SLICE_SIZE`] endpoints. Slices are named `{service}-{hash of the ports}` and
//!   numbered from the second on, labelled with [`SERVICE_NAME_LABEL`], and owned by the
//!   Service; slices of the Service it no longer needs are deleted.
//! - A Service without a selector is left alone (its Endpoints are kept by hand); a
//!   deleted Service's Endpoints and slices are deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use centaurus_client::{Api, Client};
use centaurus_core::controller::{Cache, Change, Controller, Informer, Reconciler, Requeue, Share};
use centaurus_core::model::{
    self, EndpointAddress, EndpointPort, EndpointSlice, EndpointSubset, Endpoints, IntOrString,
    MANAGED_BY_LABEL, ObjectMeta, ObjectReference, Pod, Resource, SERVICE_NAME_LABEL, Service,
    SliceConditions, SliceEndpoint,
};

use crate::{controller_ref, is_ready, split_key};

/// Most endpoints one slice holds (Kubernetes' default).
pub const SLICE_SIZE: usize = 100;
/// The value of [`MANAGED_BY_LABEL`] on the slices this controller keeps.
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// Reconciles Services' Endpoints and EndpointSlices.
pub struct EndpointsController {
    endpoints: Api<Endpoints>,
    slices: Api<EndpointSlice>,
    pods: Cache<Pod>,
    endpoints_cache: Cache<Endpoints>,
    slice_cache: Cache<EndpointSlice>,
}

/// One pod's place in a Service: its address and the ports it resolves.
struct Backend<'p> {
    pod: &'p Pod,
    ready: bool,
    ports: Vec<EndpointPort>,
}

impl EndpointsController {
    /// Runs the controller through `client` until dropped, on its `share` of the
    /// Services.
    pub async fn run(client: Client, share: Share) {
        let controller = Controller::<Service>::new(
            client
                .api()
                .source(format!("/registry/{}/", Service::STORE)),
        )
        .with_workers(2)
        .with_share(&share);
        let pods = Arc::new(Informer::<Pod>::new(client.api().source("/registry/pods/")));
        let endpoints = Arc::new(Informer::<Endpoints>::new(
            client
                .api()
                .source(format!("/registry/{}/", Endpoints::STORE)),
        ));
        let slices = Arc::new(Informer::<EndpointSlice>::new(
            client
                .api()
                .source(format!("/registry/{}/", EndpointSlice::STORE)),
        ));
        // A pod's change concerns the Services of its namespace that select it, before or
        // after the change (its labels may have left a selector).
        {
            let queue = controller.queue().clone();
            let services = controller.informer().cache();
            pods.on_change(move |c| {
                let (before, after) = match c {
                    Change::Modified { old, new } => (Some(old), new),
                    Change::Added(p) | Change::Deleted(p) => (None, p),
                };
                let m = after.meta();
                let prefix = format!(
                    "/registry/{}/{}/{}/",
                    Service::STORE,
                    m.tenant_or_system(),
                    m.namespace
                );
                for s in services.list_prefix(&prefix) {
                    let picks = |p: &Pod| selects(&s, p);
                    if picks(after) || before.is_some_and(picks) {
                        queue.add(&s.key());
                    }
                }
            });
        }
        let reconciler = Self {
            endpoints: client.api(),
            slices: client.api(),
            pods: pods.cache(),
            endpoints_cache: endpoints.cache(),
            slice_cache: slices.cache(),
        };
        let tasks = [
            tokio::spawn(pods.clone().run()),
            tokio::spawn(endpoints.clone().run()),
            tokio::spawn(slices.clone().run()),
        ];
        pods.wait_synced().await;
        endpoints.wait_synced().await;
        slices.wait_synced().await;
        controller.run(reconciler).await;
        for t in tasks {
            t.abort();
        }
    }

    fn backends<'p>(svc: &Service, pods: &'p [Pod]) -> Vec<Backend<'p>> {
        let publish = svc.spec.publish_not_ready_addresses == Some(true);
        pods.iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && !matches!(p.phase(), "Succeeded" | "Failed")
                    && p.status.as_ref().is_some_and(|s| !s.pod_ip.is_empty())
                    && selects(svc, p)
            })
            .map(|pod| Backend {
                pod,
                ready: publish || is_ready(pod),
                ports: resolve_ports(svc, pod),
            })
            .collect()
    }

    async fn sync_endpoints(&self, svc: &Service, backends: &[Backend<'_>]) -> Result<(), String> {
        let mut subsets: BTreeMap<Vec<EndpointPort>, EndpointSubset> = BTreeMap::new();
        for b in backends.iter().filter(|b| !b.ports.is_empty()) {
            let s = subsets.entry(b.ports.clone()).or_default();
            let list = if b.ready {
                &mut s.addresses
            } else {
                &mut s.not_ready_addresses
            };
            list.push(address(b.pod));
        }
        let subsets: Vec<EndpointSubset> = subsets
            .into_iter()
            .map(|(ports, mut s)| {
                s.ports = ports;
                s.addresses.sort_by(|a, b| a.ip.cmp(&b.ip));
                s.not_ready_addresses.sort_by(|a, b| a.ip.cmp(&b.ip));
                s
            })
            .collect();
        let m = &svc.metadata;
        let key = model::object_key(
            Endpoints::STORE,
            Endpoints::SCOPE,
            m.tenant_or_system(),
            &m.namespace,
            &m.name,
        );
        match self.endpoints_cache.get(&key) {
            Some(old) if old.subsets == subsets && old.metadata.labels == m.labels => Ok(()),
            Some(mut old) => {
                old.subsets = subsets;
                old.metadata.labels = m.labels.clone();
                self.endpoints.update(&old).await.map(drop)
            }
            None => {
                let mut ep = Endpoints::typed(ObjectMeta {
                    name: m.name.clone(),
                    tenant: m.tenant.clone(),
                    namespace: m.namespace.clone(),
                    labels: m.labels.clone(),
                    ..Default::default()
                });
                ep.subsets = subsets;
                // One made meanwhile fails this; the retry finds it cached and updates it.
                self.endpoints.create(ep).await.map(drop)
            }
        }
        .map_err(|e| e.to_string())
    }

    async fn sync_slices(&self, svc: &Service, backends: &[Backend<'_>]) -> Result<(), String> {
        let mut groups: BTreeMap<Vec<EndpointPort>, Vec<SliceEndpoint>> = BTreeMap::new();
        for b in backends {
            groups
                .entry(b.ports.clone())
                .or_default()
                .push(slice_endpoint(b));
        }
        if groups.is_empty() {
            groups.insert(Vec::new(), Vec::new());
        }
        let m = &svc.metadata;
        let mut labels = m.labels.clone();
        labels.insert(SERVICE_NAME_LABEL.into(), m.name.clone());
        labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
        let mut want = BTreeSet::new();
        for (ports, mut eps) in groups {
            eps.sort_by(|a, b| a.addresses.cmp(&b.addresses));
            let base = format!("{}-{:08x}", m.name, ports_hash(&ports));
            let chunks: Vec<&[SliceEndpoint]> = if eps.is_empty() {
                vec![&[]]
            } else {
                eps.chunks(SLICE_SIZE).collect()
            };
            for (i, chunk) in chunks.into_iter().enumerate() {
                let name = if i == 0 {
                    base.clone()
                } else {
                    format!("{base}-{i}")
                };
                let mut slice = EndpointSlice::typed(ObjectMeta {
                    name,
                    tenant: m.tenant.clone(),
                    namespace: m.namespace.clone(),
                    labels: labels.clone(),
                    owner_references: vec![controller_ref(svc)],
                    ..Default::default()
                });
                slice.address_type = "IPv4".into();
                slice.endpoints = chunk.to_vec();
                slice.ports = ports.clone();
                let key = slice.key();
                want.insert(key.clone());
                match self.slice_cache.get(&key) {
                    Some(old)
                        if old.endpoints == slice.endpoints
                            && old.ports == slice.ports
                            && old.metadata.labels == slice.metadata.labels => {}
                    Some(old) => {
                        slice.metadata = ObjectMeta {
                            labels: slice.metadata.labels,
                            ..old.metadata
                        };
                        self.slices
                            .update(&slice)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    None => {
                        self.slices.create(slice).await.map_err(|e| e.to_string())?;
                    }
                }
            }
        }
        for old in self.owned_slices(m.tenant_or_system(), &m.namespace, &m.name) {
            if !want.contains(&old.key()) {
                self.slices
                    .delete(&old.key(), None)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// The slices this controller keeps for the Service `name`.
    fn owned_slices(&self, tenant: &str, ns: &str, name: &str) -> Vec<EndpointSlice> {
        let prefix = format!("/registry/{}/{tenant}/{ns}/", EndpointSlice::STORE);
        self.slice_cache
            .list_prefix(&prefix)
            .into_iter()
            .filter(|s| {
                s.metadata
                    .labels
                    .get(SERVICE_NAME_LABEL)
                    .map(String::as_str)
                    == Some(name)
                    && s.metadata.labels.get(MANAGED_BY_LABEL).map(String::as_str)
                        == Some(MANAGED_BY)
            })
            .collect()
    }

    async fn forget(&self, key: &str) -> Result<(), String> {
        let Some((tenant, ns, name)) = split_key(key) else {
            return Ok(());
        };
        let ep_key = model::object_key(Endpoints::STORE, Endpoints::SCOPE, tenant, ns, name);
        self.endpoints
            .delete(&ep_key, None)
            .await
            .map_err(|e| e.to_string())?;
        for s in self.owned_slices(tenant, ns, name) {
            self.slices
                .delete(&s.key(), None)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// True when the Service's selector (not empty) picks the pod.
fn selects(svc: &Service, pod: &Pod) -> bool {
    !svc.spec.selector.is_empty()
        && (svc.spec.selector.iter()).all(|(k, v)| pod.metadata.labels.get(k) == Some(v))
}

/// The pod's address entry.
fn address(pod: &Pod) -> EndpointAddress {
    EndpointAddress {
        ip: pod
            .status
            .as_ref()
            .map(|s| s.pod_ip.clone())
            .unwrap_or_default(),
        hostname: String::new(),
        node_name: Some(pod.spec.node_name.clone()).filter(|n| !n.is_empty()),
        target_ref: Some(ObjectReference::to(pod)),
    }
}

fn slice_endpoint(b: &Backend<'_>) -> SliceEndpoint {
    let a = address(b.pod);
    SliceEndpoint {
        addresses: vec![a.ip],
        conditions: SliceConditions {
            ready: Some(b.ready),
            serving: Some(b.ready),
            terminating: Some(false),
        },
        hostname: None,
        node_name: a.node_name,
        target_ref: a.target_ref,
    }
}

/// The Service's ports as `pod` serves them: a named `targetPort` looked up among its
/// containers' ports (same protocol); ports it cannot resolve are left out.
pub fn resolve_ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let mut ports: Vec<EndpointPort> = svc
        .spec
        .ports
        .iter()
        .filter_map(|sp| {
            let port = match &sp.target_port {
                None => sp.port,
                Some(IntOrString::Int(n)) => *n,
                Some(IntOrString::String(name)) => {
                    pod.spec
                        .containers
                        .iter()
                        .flat_map(|c| &c.ports)
                        .find(|cp| {
                            cp.name == *name
                                && cp.protocol.as_deref().unwrap_or("TCP") == sp.protocol()
                        })?
                        .container_port
                }
            };
            Some(EndpointPort {
                name: sp.name.clone(),
                port,
                protocol: sp.protocol().to_owned(),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect();
    ports.sort();
    ports
}

/// A stable hash of a port set (FNV-1a), naming its slice.
fn ports_hash(ports: &[EndpointPort]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for p in ports {
        let text = format!("{}/{}/{};", p.name, p.port, p.protocol);
        for b in text.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    }
    h
}

#[async_trait]
impl Reconciler<Service> for EndpointsController {
    async fn reconcile(&self, key: &str, svc: Option<Service>) -> Result<Requeue, String> {
        let Some(svc) = svc.filter(|s| s.metadata.deletion_timestamp.is_none()) else {
            self.forget(key).await?;
            return Ok(Requeue::Done);
        };
        if svc.spec.selector.is_empty() {
            return Ok(Requeue::Done);
        }
        let m = &svc.metadata;
        let pods = self.pods.list_prefix(&format!(
            "/registry/pods/{}/{}/",
            m.tenant_or_system(),
            m.namespace
        ));
        let backends = Self::backends(&svc, &pods);
        self.sync_endpoints(&svc, &backends).await?;
        self.sync_slices(&svc, &backends).await?;
        Ok(Requeue::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use centaurus_core::model::{Container, ContainerPort, ServicePort};

    fn svc(ports: Vec<ServicePort>) -> Service {
        let mut s = Service::typed(ObjectMeta::named("web"));
        s.spec.ports = ports;
        s
    }

    fn port(name: &str, port: i32, target: Option<IntOrString>) -> ServicePort {
        ServicePort {
            name: name.into(),
            protocol: "TCP".into(),
            port,
            target_port: target,
            ..Default::default()
        }
    }

    #[test]
    fn named_target_ports_resolve_per_pod_and_unresolved_ones_are_left_out() {
        let s = svc(vec![
            port("http", 80, Some(IntOrString::String("web".into()))),
            port("metrics", 9090, Some(IntOrString::Int(9100))),
            port("admin", 81, Some(IntOrString::String("admin".into()))),
        ]);
        let mut pod = Pod::typed(ObjectMeta::named("p"));
        pod.spec.containers.push(Container {
            name: "c".into(),
            ports: vec![
                ContainerPort {
                    name: "web".into(),
                    container_port: 8080,
                    protocol: None,
                },
                ContainerPort {
                    name: "admin".into(),
                    container_port: 7000,
                    protocol: Some("UDP".into()),
                },
            ],
            ..Default::default()
        });
        let got: Vec<(String, i32)> = resolve_ports(&s, &pod)
            .into_iter()
            .map(|p| (p.name, p.port))
            .collect();
        assert_eq!(got, [("http".into(), 8080), ("metrics".into(), 9100)]);
        // The port set names the slice: the same set, the same name; another, another.
        let a = resolve_ports(&s, &pod);
        assert_eq!(ports_hash(&a), ports_hash(&resolve_ports(&s, &pod)));
        assert_ne!(ports_hash(&a), ports_hash(&a[..1]));
    }
}
