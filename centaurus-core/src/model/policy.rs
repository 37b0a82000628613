//! `networking.k8s.io/v1` NetworkPolicy: which traffic the pods a policy selects may take
//! in and send out. A pod selected by no policy of a direction is not isolated in it; a
//! selected pod takes only what one of the rules of the policies that select it allows,
//! and replies of allowed connections. The VPC plane compiles them into each endpoint's
//! host (`centaurus_vpc::policy`).

use std::collections::BTreeSet;
use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validation::{self, Errors};
use super::{FieldError, IntOrString, LabelSelector, Object, port_name};

/// A NetworkPolicy.
pub type NetworkPolicy = Object<NetworkPolicySpec>;

crate::impl_resource!(
    NetworkPolicy,
    kind = "NetworkPolicy",
    group = "networking.k8s.io",
    version = "v1",
    plural = "networkpolicies",
    scope = Namespaced,
    short = ["netpol"],
    validate = validate_policy,
    defaults = default_policy
);

/// Policy types.
pub const POLICY_INGRESS: &str = "Ingress";
/// Egress.
pub const POLICY_EGRESS: &str = "Egress";
/// Protocols a policy port names.
pub const POLICY_PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];

/// What a NetworkPolicy selects and allows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// The pods of the policy's namespace it applies to; empty selects them all.
    #[serde(default)]
    pub pod_selector: LabelSelector,
    /// What the selected pods may take in (when `Ingress` is a policy type).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<NetworkPolicyIngressRule>,
    /// What they may send out (when `Egress` is a policy type).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<NetworkPolicyEgressRule>,
    /// `Ingress`, `Egress` or both; defaulted to `Ingress`, and `Egress` when there are
    /// egress rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_types: Vec<String>,
}

/// Traffic a rule lets in: from any of `from` (anyone when empty), to any of `ports` (any
/// port when empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NetworkPolicyIngressRule {
    /// The ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<NetworkPolicyPort>,
    /// The sources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<NetworkPolicyPeer>,
}

/// Traffic a rule lets out: to any of `to` (anywhere when empty), on any of `ports`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NetworkPolicyEgressRule {
    /// The ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<NetworkPolicyPort>,
    /// The destinations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<NetworkPolicyPeer>,
}

/// Pods (by pod and namespace labels) or an address block.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicyPeer {
    /// Pods by their labels: in the policy's namespace, or in the namespaces
    /// `namespaceSelector` selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// Namespaces by their labels (all their pods, or those `podSelector` selects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// An address block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

/// A CIDR without some of its sub-ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IpBlock {
    /// The block.
    pub cidr: String,
    /// Ranges inside it that are not part of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

/// A port, a named port, or a range of ports, of one protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicyPort {
    /// `TCP` (the default), `UDP` or `SCTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// A number, or a container port's name; every port of the protocol when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<IntOrString>,
    /// The last port of a range starting at `port` (a number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<i32>,
}

impl NetworkPolicyPort {
    /// The protocol, defaulted.
    pub fn protocol(&self) -> &str {
        self.protocol.as_deref().unwrap_or("TCP")
    }
}

impl NetworkPolicySpec {
    /// True when the policy isolates its pods' ingress.
    pub fn isolates_ingress(&self) -> bool {
        self.policy_types.iter().any(|t| t == POLICY_INGRESS)
    }

    /// True when the policy isolates its pods' egress.
    pub fn isolates_egress(&self) -> bool {
        self.policy_types.iter().any(|t| t == POLICY_EGRESS)
    }
}

fn default_policy(p: &mut NetworkPolicy) {
    let spec = &mut p.spec;
    if spec.policy_types.is_empty() {
        spec.policy_types.push(POLICY_INGRESS.into());
        if !spec.egress.is_empty() {
            spec.policy_types.push(POLICY_EGRESS.into());
        }
    }
    let ports = (spec.ingress.iter_mut().flat_map(|r| &mut r.ports))
        .chain(spec.egress.iter_mut().flat_map(|r| &mut r.ports));
    for port in ports {
        port.protocol.get_or_insert_with(|| "TCP".into());
    }
}

fn validate_selector(e: &mut Errors, field: &str, s: &LabelSelector) {
    validation::labels(e, &format!("{field}.matchLabels"), &s.match_labels);
    for (i, r) in s.match_expressions.iter().enumerate() {
        let f = format!("{field}.matchExpressions[{i}]");
        e.check(format!("{f}.key"), validation::qualified_name(&r.key));
        match r.operator.as_str() {
            "In" | "NotIn" if r.values.is_empty() => {
                e.push(format!("{f}.values"), "must be non-empty for In and NotIn")
            }
            "Exists" | "DoesNotExist" if !r.values.is_empty() => e.push(
                format!("{f}.values"),
                "must be empty for Exists and DoesNotExist",
            ),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            op => e.push(
                format!("{f}.operator"),
                format!("{op:?}: must be In, NotIn, Exists or DoesNotExist"),
            ),
        }
        for (j, v) in r.values.iter().enumerate() {
            e.check(format!("{f}.values[{j}]"), validation::label_value(v));
        }
    }
}

/// Parses an IPv4 CIDR of an ipBlock; IPv6 blocks are refused (VPCs carry IPv4).
fn block_cidr(text: &str) -> Result<(u32, u8), String> {
    match validation::cidr(text)? {
        (IpAddr::V4(ip), len) => Ok((u32::from(ip), len)),
        (IpAddr::V6(_), _) => Err(format!(
            "{text:?}: IPv6 blocks are not served (VPCs carry IPv4)"
        )),
    }
}

fn validate_peer(e: &mut Errors, field: &str, p: &NetworkPolicyPeer) {
    let selects = p.pod_selector.is_some() || p.namespace_selector.is_some();
    match (&p.ip_block, selects) {
        (None, false) => e.push(field, "must name podSelector, namespaceSelector or ipBlock"),
        (Some(_), true) => e.push(
            field,
            "ipBlock cannot be combined with podSelector or namespaceSelector",
        ),
        _ => {}
    }
    if let Some(s) = &p.pod_selector {
        validate_selector(e, &format!("{field}.podSelector"), s);
    }
    if let Some(s) = &p.namespace_selector {
        validate_selector(e, &format!("{field}.namespaceSelector"), s);
    }
    let Some(b) = &p.ip_block else { return };
    let outer = match block_cidr(&b.cidr) {
        Ok(c) => c,
        Err(m) => return e.push(format!("{field}.ipBlock.cidr"), m),
    };
    for (i, x) in b.except.iter().enumerate() {
        let f = format!("{field}.ipBlock.except[{i}]");
        match block_cidr(x) {
            Err(m) => e.push(f, m),
            Ok((ip, len)) => {
                let mask = |l: u8| if l == 0 { 0 } else { u32::MAX << (32 - l) };
                if len <= outer.1 || ip & mask(outer.1) != outer.0 {
                    e.push(f, format!("must be a strict subset of {}", b.cidr));
                }
            }
        }
    }
}

fn validate_port(e: &mut Errors, field: &str, p: &NetworkPolicyPort) {
    if !POLICY_PROTOCOLS.contains(&p.protocol()) {
        e.push(
            format!("{field}.protocol"),
            format!("{:?}: must be TCP, UDP or SCTP", p.protocol()),
        );
    }
    let number = |e: &mut Errors, f: String, n: i32| {
        if !(1..=65_535).contains(&n) {
            e.push(f, format!("{n} must be between 1 and 65535"));
        }
    };
    match (&p.port, p.end_port) {
        (Some(IntOrString::Int(n)), end) => {
            number(e, format!("{field}.port"), *n);
            if let Some(end) = end {
                number(e, format!("{field}.endPort"), end);
                if end < *n {
                    e.push(
                        format!("{field}.endPort"),
                        format!("{end} is below port {n}"),
                    );
                }
            }
        }
        (Some(IntOrString::String(name)), end) => {
            e.check(format!("{field}.port"), port_name(name));
            if end.is_some() {
                e.push(format!("{field}.endPort"), "needs a numeric port");
            }
        }
        (None, Some(_)) => e.push(format!("{field}.endPort"), "needs a numeric port"),
        (None, None) => {}
    }
}

fn validate_policy(p: &NetworkPolicy) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    let spec = &p.spec;
    validate_selector(&mut e, "spec.podSelector", &spec.pod_selector);
    let mut types = BTreeSet::new();
    for (i, t) in spec.policy_types.iter().enumerate() {
        if t != POLICY_INGRESS && t != POLICY_EGRESS {
            e.push(
                format!("spec.policyTypes[{i}]"),
                format!("{t:?}: must be Ingress or Egress"),
            );
        } else if !types.insert(t) {
            e.push(format!("spec.policyTypes[{i}]"), format!("{t} is repeated"));
        }
    }
    for (i, r) in spec.ingress.iter().enumerate() {
        for (j, peer) in r.from.iter().enumerate() {
            validate_peer(&mut e, &format!("spec.ingress[{i}].from[{j}]"), peer);
        }
        for (j, port) in r.ports.iter().enumerate() {
            validate_port(&mut e, &format!("spec.ingress[{i}].ports[{j}]"), port);
        }
    }
    for (i, r) in spec.egress.iter().enumerate() {
        for (j, peer) in r.to.iter().enumerate() {
            validate_peer(&mut e, &format!("spec.egress[{i}].to[{j}]"), peer);
        }
        for (j, port) in r.ports.iter().enumerate() {
            validate_port(&mut e, &format!("spec.egress[{i}].ports[{j}]"), port);
        }
    }
    e.into_result()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Resource;

    fn policy(json: serde_json::Value) -> NetworkPolicy {
        let mut p: NetworkPolicy = serde_json::from_value(json).unwrap();
        p.set_defaults();
        p
    }

    fn fields(p: &NetworkPolicy) -> Vec<String> {
        p.validate()
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn defaults_follow_kubernetes() {
        let p = policy(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}
        }));
        assert_eq!(p.spec.policy_types, ["Ingress", "Egress"]);
        assert_eq!(p.spec.egress[0].ports[0].protocol.as_deref(), Some("TCP"));
        assert!(p.spec.isolates_ingress() && p.spec.isolates_egress());
        let p = policy(serde_json::json!({"metadata": {"name": "p"}, "spec": {}}));
        assert_eq!(p.spec.policy_types, ["Ingress"]);
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn bad_policies_name_their_fields() {
        let p = policy(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]},
                "policyTypes": ["Ingress", "Sideways", "Ingress"],
                "ingress": [{
                    "from": [
                        {},
                        {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}},
                        {"ipBlock": {"cidr": "10.0.0.1/8"}},
                        {"ipBlock": {"cidr": "fd00::/8"}},
                        {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24", "10.0.0.0/16"]}}
                    ],
                    "ports": [
                        {"protocol": "ICMP"},
                        {"port": 0},
                        {"port": 90, "endPort": 80},
                        {"port": "http", "endPort": 90},
                        {"port": "-x"}
                    ]
                }]
            }
        }));
        assert_eq!(
            fields(&p),
            [
                "spec.podSelector.matchExpressions[0].operator",
                "spec.policyTypes[1]",
                "spec.policyTypes[2]",
                "spec.ingress[0].from[0]",
                "spec.ingress[0].from[1]",
                "spec.ingress[0].from[2].ipBlock.cidr",
                "spec.ingress[0].from[3].ipBlock.cidr",
                "spec.ingress[0].from[4].ipBlock.except[0]",
                "spec.ingress[0].from[4].ipBlock.except[1]",
                "spec.ingress[0].ports[0].protocol",
                "spec.ingress[0].ports[1].port",
                "spec.ingress[0].ports[2].endPort",
                "spec.ingress[0].ports[3].endPort",
                "spec.ingress[0].ports[4].port",
            ]
        );
    }
}
