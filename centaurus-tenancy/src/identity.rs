//! The identities of the region's own components. Each component runs as its own user
//! of the `system` tenant, with the group that names its role, so that requests, logs
//! and authorization decisions say which component made them.

use crate::{Identity, SYSTEM_TENANT};

/// The group of node agents (Kubernetes' `system:nodes`).
pub const NODES_GROUP: &str = "system:nodes";

/// The group of bootstrap tokens (Kubernetes' `system:bootstrappers`): they may only ask
/// for a node's credentials (`POST /api/v1/nodes/{name}/join`).
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";

/// The identity of a bootstrap token `id` (Kubernetes' `system:bootstrap:ID`).
pub fn bootstrap(id: &str) -> Identity {
    Identity {
        user: format!("system:bootstrap:{id}"),
        tenant: SYSTEM_TENANT.into(),
        groups: vec![BOOTSTRAPPERS_GROUP.into()],
        tenant_uid: None,
    }
}

/// True for the identity of a bootstrap token.
pub fn is_bootstrapper(id: &Identity) -> bool {
    id.tenant == SYSTEM_TENANT && id.groups.iter().any(|g| g == BOOTSTRAPPERS_GROUP)
}

/// A component's user and group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Component {
    /// User name.
    pub user: &'static str,
    /// Group.
    pub group: &'static str,
}

impl Component {
    /// The identity the component authenticates as.
    pub fn identity(&self) -> Identity {
        Identity {
            user: self.user.into(),
            tenant: SYSTEM_TENANT.into(),
            groups: vec![self.group.into()],
            tenant_uid: None,
        }
    }
}

/// The API servers, as clients of the node agents' endpoints (pod logs). It may call
/// nothing of the API itself.
pub const API_SERVER: Component = Component {
    user: "system:centaurus:apiserver",
    group: "system:centaurus:apiservers",
};

/// The region's front door (`centaurus gateway`): it authenticates callers itself and
/// forwards their requests as this identity naming them in the headers of
/// [`crate::authn::FrontDoor`], which API servers believe from this identity only. It may
/// do nothing else.
pub const GATEWAY: Component = Component {
    user: "system:centaurus:gateway",
    group: "system:centaurus:gateways",
};

/// The scheduler.
pub const SCHEDULER: Component = Component {
    user: "system:kube-scheduler",
    group: "system:schedulers",
};

/// The workload and node-lifecycle controllers.
pub const CONTROLLERS: Component = Component {
    user: "system:kube-controller-manager",
    group: "system:controllers",
};

/// The VPC operator replicas.
pub const VPC_OPERATOR: Component = Component {
    user: "system:centaurus:vpc-operator",
    group: "system:centaurus:vpc",
};

/// The network controller (networks, droplets and endpoints for tenants, nodes and pods).
pub const NETWORK_CONTROLLER: Component = Component {
    user: "system:centaurus:network-controller",
    group: "system:centaurus:vpc",
};

/// The cluster DNS of a region on droplets: each tenant's `kube-system/kube-dns` Service,
/// its endpoint and slice, and the names it answers.
pub const CLUSTER_DNS: Component = Component {
    user: "system:centaurus:cluster-dns",
    group: "system:centaurus:dns",
};

/// A process that hosts many node agents at once (the all-in-one region, hollow fleets).
pub const NODE_FLEET: Component = Component {
    user: "system:centaurus:node-fleet",
    group: "system:centaurus:fleets",
};

/// The user of the node agent of node `name` (Kubernetes' `system:node:NAME`).
pub fn node(name: &str) -> Identity {
    Identity {
        user: format!("system:node:{name}"),
        tenant: SYSTEM_TENANT.into(),
        groups: vec![NODES_GROUP.into()],
        tenant_uid: None,
    }
}

/// The node a `system:node:NAME` user of the `system` tenant speaks for. The name alone
/// decides (as the group a certificate cannot carry beside its tenant would not): such a
/// user is confined to its node, never taken for a system administrator.
pub fn node_name(id: &Identity) -> Option<&str> {
    if id.tenant != SYSTEM_TENANT {
        return None;
    }
    id.user
        .strip_prefix("system:node:")
        .filter(|n| !n.is_empty())
}
