//! The node side of the VPC plane: a [`NetworkPlugin`] that starts a pod on a `vpc`
//! network only once its `Endpoint` is `Provisioned` (the readiness gate) and gives the
//! pod the endpoint's address. Pods on `flat` networks go to the wrapped plugin.
//!
//! With `wire` set, it makes the pod's network namespace and a veth pair named as the
//! endpoint says, with the endpoint's address, MAC and gateway; the host side is where the
//! transit agent attaches. Without it (hollow nodes) it only hands out the address.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use centaurus_core::model::{Network, Pod, Resource};
use centaurus_core::objects::Objects;
use centaurus_core::store::Store;
use centaurus_vpc::kinds::{Endpoint, EndpointStatus, FAILED, PROVISIONED};
use centaurus_vpc::network::NETWORK_LABEL;
use centaurus_vpc::plane::veth_name;

use crate::{NetworkPlugin, RuntimeError, SandboxNetwork, run_tool};

/// Attaches pods to VPC endpoints, or to the flat network.
pub struct VpcNetwork {
    store: Arc<dyn Store>,
    flat: Arc<dyn NetworkPlugin>,
    wire: bool,
    timeout: Duration,
}

type Result<T> = std::result::Result<T, RuntimeError>;

async fn ip(args: &[&str]) -> Result<()> {
    run_tool("ip", args).await.map(|_| ())
}

impl VpcNetwork {
    /// Pods on `vpc` networks wait up to `timeout` for their endpoint; `flat` pods use
    /// `flat`. `wire` makes namespaces and veth pairs (real nodes).
    pub fn new(
        store: Arc<dyn Store>,
        flat: Arc<dyn NetworkPlugin>,
        wire: bool,
        timeout: Duration,
    ) -> Self {
        Self {
            store,
            flat,
            wire,
            timeout,
        }
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

    /// Polls `key` until `ready` says the object is ready (`Some`), fails, or time is up.
    async fn poll<R: Resource, T>(
        &self,
        key: &str,
        what: &str,
        ready: impl Fn(&R) -> Result<Option<T>>,
    ) -> Result<T> {
        let objects = Objects::<R>::new(self.store.clone());
        let deadline = Instant::now() + self.timeout;
        let mut delay = Duration::from_millis(5);
        loop {
            if let Some(o) = objects
                .get(key)
                .await
                .map_err(|e| RuntimeError::Unsupported(e.to_string()))?
                && let Some(t) = ready(&o)?
            {
                return Ok(t);
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::Unsupported(format!(
                    "{what} {key} was not ready within {:?}",
                    self.timeout
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(200));
        }
    }

    async fn wire(&self, s: &EndpointStatus) -> Result<PathBuf> {
        let ns = s.netns.as_str();
        let peer = format!("vp{}", &s.veth[2..]);
        // Start clean: a half-made attachment from an earlier try is removed first.
        let _ = ip(&["netns", "del", ns]).await;
        let _ = ip(&["link", "del", &s.veth]).await;
        ip(&["netns", "add", ns]).await?;
        ip(&[
            "link", "add", &s.veth, "type", "veth", "peer", "name", &peer,
        ])
        .await?;
        ip(&["link", "set", &s.veth, "up"]).await?;
        ip(&["link", "set", &peer, "netns", ns]).await?;
        let addr = format!("{}/{}", s.ip, s.prefix_len);
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["link", "set", &peer, "name", "eth0"],
            vec!["link", "set", "eth0", "address", &s.mac],
            vec!["addr", "add", &addr, "dev", "eth0"],
            vec!["link", "set", "eth0", "up"],
            vec!["route", "add", "default", "via", &s.gateway],
        ] {
            let mut all = vec!["netns", "exec", ns, "ip"];
            all.extend(args);
            ip(&all).await?;
        }
        Ok(PathBuf::from(format!("/var/run/netns/{ns}")))
    }
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
            .poll(&key, "endpoint", |e: &Endpoint| {
                if e.spec.pod != pod.metadata.name
                    || e.metadata.creation_timestamp < pod.metadata.creation_timestamp
                {
                    return Ok(None); // an endpoint of an earlier pod of that name
                }
                match e.status.as_ref() {
                    Some(s) if s.progress.phase == PROVISIONED => Ok(Some(s.clone())),
                    Some(s) if s.progress.phase == FAILED => Err(RuntimeError::Unsupported(
                        format!("endpoint {key} failed: {}", s.progress.message),
                    )),
                    _ => Ok(None),
                }
            })
            .await?;
        tracing::debug!(pod = uid, ip = status.ip, "endpoint provisioned");
        let netns = if self.wire {
            Some(self.wire(&status).await?)
        } else {
            None
        };
        Ok(SandboxNetwork {
            netns,
            ip: status.ip,
        })
    }

    async fn detach(&self, pod: &Pod) -> Result<()> {
        if self.wire {
            let id = pod.key().replacen("/registry/pods/", "", 1);
            let veth = veth_name(&id);
            let _ = ip(&["link", "del", &veth]).await;
            let _ = ip(&["netns", "del", &format!("cent-{}", &veth[2..])]).await;
        }
        self.flat.detach(pod).await
    }
}
