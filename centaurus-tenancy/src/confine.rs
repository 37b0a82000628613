//! Confinement of the region's own components, in front of the tenant gate.
//!
//! Users of the `system` tenant may do anything, except the components' identities:
//!
//! - a node agent (`system:node:NAME`, the node authorizer) reads every Node and writes only
//!   its own Node and Lease; it lists and watches pods and actions only with the field
//!   selector `spec.nodeName=NAME`, reads and writes the status of the pods bound to it
//!   only, reads those pods' endpoints, ConfigMaps, Secrets and ServiceAccounts, the
//!   actions of its node,
//!   and the tenant networks its pods join, and records events about those pods; nothing
//!   else of any tenant (the API server checks at create that the Node or Lease it makes
//!   is its own, and that an event is about one of its pods);
//! - each service identity ([`identity::SCHEDULER`], ...) has the verbs its work needs;
//!   Leases it may write only in the `system` tenant's `kube-system` (controller
//!   membership), never a node's (only the node fleet writes node Leases).

use std::sync::Arc;

use async_trait::async_trait;
use centaurus_core::model::{self, Scope};
use centaurus_core::store::Store;

use crate::gate::{Attributes, Authorizer, Denied, Verb};
use crate::identity::{self, Component};
use crate::{Identity, PolicyRule};

/// Plurals that more than one group serves (core `endpoints`, and Mizar's): components'
/// rules name the other group's as `plural.group`, see [`qualified`].
const SHARED_PLURALS: [&str; 1] = ["endpoints"];

/// The resource as components' rules name it: `plural[/sub]`, or `plural.group[/sub]` for
/// a non-core kind whose plural core also serves.
fn qualified<'a>(req: &Attributes<'a>) -> std::borrow::Cow<'a, str> {
    let (base, sub) = match req.resource.split_once('/') {
        Some((b, s)) => (b, Some(s)),
        None => (req.resource, None),
    };
    if req.group.is_empty() || !SHARED_PLURALS.contains(&base) {
        return req.resource.into();
    }
    match sub {
        Some(sub) => format!("{base}.{}/{sub}", req.group).into(),
        None => format!("{base}.{}", req.group).into(),
    }
}

/// Mizar's endpoints, as components' rules name them ([`qualified`]).
const MIZAR_ENDPOINTS: &str = "endpoints.mizar.centaurus.io";

/// The verbs of each service identity.
fn service_rules(c: Component) -> Vec<PolicyRule> {
    let rule = |verbs: &str, resources: &str| PolicyRule {
        verbs: verbs.split(',').map(str::to_owned).collect(),
        resources: resources.split(',').map(str::to_owned).collect(),
    };
    const READ: &str = "get,list,watch";
    const WRITE: &str = "get,list,watch,create,update,patch,delete";
    const STATUS: &str = "get,update,patch";
    match c {
        identity::SCHEDULER => vec![
            rule(READ, "pods,nodes"),
            rule("create", "pods/binding"),
            rule(STATUS, "pods/status"),
            rule(WRITE, "nodeledgers"),
            rule("get,create,update,patch", "events"),
        ],
        identity::CONTROLLERS => vec![
            rule(
                WRITE,
                "pods,replicasets,deployments,daemonsets,statefulsets,jobs,cronjobs",
            ),
            rule(
                STATUS,
                "replicasets/status,deployments/status,daemonsets/status,statefulsets/status,\
                 jobs/status,cronjobs/status,nodes/status",
            ),
            rule("get,list,watch,update,patch", "nodes"),
            // Reading node Leases; writing its own membership Leases (in kube-system only).
            rule("get,list,watch,create,update,patch", "leases"),
            // Recording events, and expiring them.
            rule(WRITE, "events"),
            // A default ServiceAccount in every namespace.
            rule(READ, "namespaces"),
            rule("get,list,watch,create", "serviceaccounts"),
            // What pods use of each namespace's and tenant's quotas.
            rule(READ, "resourcequotas,tenants"),
            rule(STATUS, "resourcequotas/status,tenants/status"),
            // Services' Endpoints and EndpointSlices (core endpoints: see `qualified`).
            rule(READ, "services"),
            rule(WRITE, "endpoints,endpointslices"),
        ],
        identity::VPC_OPERATOR => vec![
            rule(READ, &format!("droplets,vpcs,subnets,{MIZAR_ENDPOINTS}")),
            // Services' scaled endpoints: their networks' VPCs and their slices' backends.
            rule(READ, "networks,services,endpointslices"),
            // NetworkPolicies, resolved against pods' and namespaces' labels.
            rule(READ, "networkpolicies,pods,namespaces"),
            rule(
                STATUS,
                &format!(
                    "droplets/status,vpcs/status,subnets/status,{MIZAR_ENDPOINTS}/status,\
                     bouncers/status,dividers/status"
                ),
            ),
            rule("get,list,watch,create,delete", "bouncers,dividers"),
            // The replicas' membership Leases (in kube-system only).
            rule("get,list,watch,create,update,patch", "leases"),
        ],
        identity::NETWORK_CONTROLLER => vec![
            rule(READ, "tenants,nodes,pods,vpcs,networks"),
            rule("create", "networks,vpcs,subnets"),
            rule(STATUS, "networks/status"),
            rule("get,create,delete", &format!("droplets,{MIZAR_ENDPOINTS}")),
        ],
        identity::CLUSTER_DNS => vec![
            rule(
                READ,
                &format!("tenants,networks,subnets,services,endpointslices,{MIZAR_ENDPOINTS}"),
            ),
            rule(
                "get,create",
                &format!("namespaces,services,endpointslices,{MIZAR_ENDPOINTS}"),
            ),
        ],
        // A tenant partition's API server finds the agents of its pods' nodes in the
        // resource partitions.
        identity::API_SERVER => vec![rule("get", "nodes")],
        // The front door learns which tenant partition holds each tenant.
        identity::GATEWAY => vec![rule(READ, "tenants")],
        identity::NODE_FLEET => vec![
            rule(
                READ,
                &format!("pods,nodes,actions,networks,{MIZAR_ENDPOINTS}"),
            ),
            // What the pods of its nodes take their environment and volumes from.
            rule("get", "configmaps,secrets"),
            rule(STATUS, "pods/status,nodes/status,actions/status"),
            rule("get,create,update,patch", "nodes,leases"),
            rule("update,patch", "actions"),
            rule("get,create,update,patch", "events"),
            // Tokens of the pods' accounts, bound to the pods.
            rule("get", "serviceaccounts"),
            rule("create", "serviceaccounts/token"),
        ],
        _ => Vec::new(),
    }
}

/// The service identities; the API server's (toward agents and, in a partitioned region,
/// other partitions) may only read Nodes, the front door's only Tenants (otherwise it
/// speaks for its callers, [`crate::authn::FrontDoor`]).
const SERVICES: [Component; 8] = [
    identity::API_SERVER,
    identity::GATEWAY,
    identity::SCHEDULER,
    identity::CONTROLLERS,
    identity::VPC_OPERATOR,
    identity::NETWORK_CONTROLLER,
    identity::NODE_FLEET,
    identity::CLUSTER_DNS,
];

/// The tenant gate behind the node authorizer and the service identities' rules.
pub struct Confined {
    inner: Arc<dyn Authorizer>,
    store: Arc<dyn Store>,
}

impl Confined {
    /// Confines the components in front of `inner`, reading pods and actions from `store`
    /// to decide what a node may reach.
    pub fn new(inner: Arc<dyn Authorizer>, store: Arc<dyn Store>) -> Self {
        Self { inner, store }
    }

    /// The `spec.nodeName` of the namespaced object `plural/name` the request addresses.
    async fn node_of(&self, plural: &str, req: &Attributes<'_>) -> Result<Option<String>, Denied> {
        self.node_of_named(plural, req, req.name).await
    }

    /// The `spec.nodeName` of the namespaced object `plural/name` in the request's space.
    async fn node_of_named(
        &self,
        plural: &str,
        req: &Attributes<'_>,
        name: Option<&str>,
    ) -> Result<Option<String>, Denied> {
        let (Some(tenant), Some(ns), Some(name)) = (req.tenant, req.namespace, name) else {
            return Ok(None);
        };
        let key = model::object_key(plural, Scope::Namespaced, tenant, ns, name);
        let kv = self
            .store
            .get(&key)
            .await
            .map_err(|e| Denied(format!("authorization unavailable: {e}")))?;
        Ok(kv.and_then(|kv| {
            serde_json::from_slice::<serde_json::Value>(&kv.value)
                .ok()?
                .pointer("/spec/nodeName")?
                .as_str()
                .map(str::to_owned)
        }))
    }

    /// True when a pod bound to `node` in the request's namespace names the ConfigMap,
    /// Secret or ServiceAccount the request addresses (Kubernetes' node authorizer: a node
    /// reads only the configuration and accounts of its own pods).
    async fn named_by_pod_on(&self, node: &str, req: &Attributes<'_>) -> Result<bool, Denied> {
        let (Some(tenant), Some(ns), Some(name)) = (req.tenant, req.namespace, req.name) else {
            return Ok(false);
        };
        let names = |p: &model::Pod| match req.resource {
            "configmaps" => p
                .spec
                .config_refs()
                .any(|r| r == (model::ConfigKind::ConfigMap, name)),
            "secrets" => p
                .spec
                .config_refs()
                .any(|r| r == (model::ConfigKind::Secret, name)),
            _ => {
                let account = match p.spec.service_account_name.as_str() {
                    "" => model::DEFAULT_SERVICE_ACCOUNT,
                    account => account,
                };
                account == name
            }
        };
        let prefix = model::object_key("pods", Scope::Namespaced, tenant, ns, "");
        let pods = centaurus_core::store::range_all(self.store.as_ref(), &prefix)
            .await
            .map_err(|e| Denied(format!("authorization unavailable: {e}")))?;
        Ok(pods.kvs.iter().any(|kv| {
            serde_json::from_slice::<model::Pod>(&kv.value)
                .is_ok_and(|p| p.spec.node_name == node && names(&p))
        }))
    }

    async fn node(&self, node: &str, req: &Attributes<'_>) -> Result<(), Denied> {
        let own = req.name == Some(node);
        let lease = req.tenant == Some(model::SYSTEM_TENANT)
            && req.namespace == Some(model::NODE_LEASE_NAMESPACE);
        let selected = req.field("spec.nodeName") == Some(node);
        let allowed = match (qualified(req).as_ref(), req.verb) {
            ("nodes", Verb::Get | Verb::List | Verb::Watch) => true,
            // The server checks that the Node or Lease made is the node's own.
            ("nodes", Verb::Create) => true,
            ("nodes" | "nodes/status", Verb::Get | Verb::Update | Verb::Patch) => own,
            // A node renews its own credentials.
            ("nodes/join", Verb::Create) => own,
            ("leases", Verb::Create) => lease,
            ("leases", Verb::Get | Verb::Update | Verb::Patch) => lease && own,
            ("pods" | "actions", Verb::List | Verb::Watch) => selected,
            ("pods" | "pods/status", Verb::Get) | ("pods/status", Verb::Update | Verb::Patch) => {
                self.node_of("pods", req).await?.as_deref() == Some(node)
            }
            // A pod's endpoint has the pod's name.
            (MIZAR_ENDPOINTS, Verb::Get) => {
                self.node_of("pods", req).await?.as_deref() == Some(node)
            }
            ("actions" | "actions/status", Verb::Get | Verb::Update | Verb::Patch) => {
                self.node_of("actions", req).await?.as_deref() == Some(node)
            }
            ("networks", Verb::Get) => true,
            ("configmaps" | "secrets" | "serviceaccounts", Verb::Get) => {
                self.named_by_pod_on(node, req).await?
            }
            // The server checks that a new event is about a pod bound to the node; an
            // event's name starts with its pod's ([`model::Event::dedup_name`]).
            ("events", Verb::Create) => true,
            // The server checks that the token is bound to a pod bound to the node.
            ("serviceaccounts/token", Verb::Create) => true,
            ("events", Verb::Get | Verb::Update | Verb::Patch) => {
                let pod = req.name.and_then(model::Event::regarding_name);
                self.node_of_named("pods", req, pod).await?.as_deref() == Some(node)
            }
            _ => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(Denied(format!(
                "node {node} cannot {} {}{}: a node reaches only its own Node and Lease and the pods bound to it",
                req.verb.as_str(),
                req.resource,
                req.name.map(|n| format!(" {n:?}")).unwrap_or_default()
            )))
        }
    }
}

/// True for the identities of the region's components (node agents and services), which
/// are users of the `system` tenant confined to their work.
pub fn is_component(caller: &Identity) -> bool {
    identity::node_name(caller).is_some()
        || service(caller).is_some()
        || identity::is_bootstrapper(caller)
}

/// The component an identity is, if it is one of [`SERVICES`].
fn service(caller: &Identity) -> Option<Component> {
    if caller.tenant != model::SYSTEM_TENANT {
        return None;
    }
    SERVICES.into_iter().find(|c| c.user == caller.user)
}

#[async_trait]
impl Authorizer for Confined {
    async fn authorize(&self, caller: &Identity, req: &Attributes<'_>) -> Result<(), Denied> {
        if identity::is_bootstrapper(caller) {
            return if req.verb == Verb::Create && req.resource == "nodes/join" {
                Ok(())
            } else {
                Err(Denied(format!(
                    "{} is a bootstrap token: it may only join a node (create nodes/join)",
                    caller.user
                )))
            };
        }
        if let Some(node) = identity::node_name(caller) {
            return self.node(node, req).await;
        }
        if let Some(c) = service(caller) {
            let verb = req.verb.as_str();
            // Leases: the fleet writes node heartbeats, the others their membership.
            let leases = if c == identity::NODE_FLEET {
                model::NODE_LEASE_NAMESPACE
            } else {
                "kube-system"
            };
            let allowed = req.tenant == Some(model::SYSTEM_TENANT) && req.namespace == Some(leases);
            if req.resource == "leases" && req.verb.is_write() && !allowed {
                return Err(Denied(format!(
                    "{} may write the Leases of {leases} only, not of {:?}",
                    caller.user, req.namespace
                )));
            }
            let resource = qualified(req);
            return if service_rules(c).iter().any(|r| r.allows(verb, &resource)) {
                Ok(())
            } else {
                Err(Denied(format!(
                    "{} cannot {verb} {}: not among the verbs of its component",
                    caller.user, req.resource
                )))
            };
        }
        self.inner.authorize(caller, req).await
    }

    async fn confirm_rbac(
        &self,
        caller: &Identity,
        tenant: &str,
        plural: &str,
        obj: &serde_json::Value,
    ) -> Result<(), Denied> {
        self.inner.confirm_rbac(caller, tenant, plural, obj).await
    }
}
