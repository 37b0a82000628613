//! Services and where they lead: `v1` Service (a virtual address and DNS name for the
//! pods a selector picks), `v1` Endpoints and `discovery.k8s.io/v1` EndpointSlice (the
//! addresses of those pods, kept by the endpoints controller).
//!
//! Service addresses are per tenant: every tenant's Services take addresses from its own
//! service range ([`SERVICE_CIDR`]), so two tenants may hold the same address, as they
//! may hold the same pod addresses in their VPCs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validation::{self, Errors};
use super::{FieldError, IntOrString, NoStatus, Object, ObjectMeta, ObjectReference};

/// The range every tenant's Service addresses come from (each tenant has its own).
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// `spec.clusterIP` of a headless Service: DNS names its pods, no virtual address.
pub const CLUSTER_IP_NONE: &str = "None";
/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming the controller that keeps an EndpointSlice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// The API group of EndpointSlices.
pub const DISCOVERY_GROUP: &str = "discovery.k8s.io";
/// The default and largest `sessionAffinityConfig.clientIP.timeoutSeconds` (Kubernetes').
pub const MAX_AFFINITY_SECONDS: i32 = 86_400;
const DEFAULT_AFFINITY_SECONDS: i32 = 10_800;

/// A Service: a stable address and name for the pods its selector picks.
pub type Service = Object<ServiceSpec, ServiceStatus>;
crate::impl_resource!(
    Service,
    kind = "Service",
    group = "",
    version = "v1",
    plural = "services",
    scope = Namespaced,
    short = ["svc"],
    validate = validate_service,
    defaults = default_service
);

/// Desired state of a Service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// `ClusterIP` (the only type served: no node ports or load balancers yet).
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub type_: String,
    /// The labels of the pods the Service leads to; none: its Endpoints are kept by hand.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// The ports it serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// Its virtual address in the tenant's service range; empty: one is allocated;
    /// `None`: headless.
    #[serde(
        default,
        rename = "clusterIP",
        skip_serializing_if = "String::is_empty"
    )]
    pub cluster_ip: String,
    /// `[clusterIP]` (one IPv4 family).
    #[serde(default, rename = "clusterIPs", skip_serializing_if = "Vec::is_empty")]
    pub cluster_ips: Vec<String>,
    /// `["IPv4"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_families: Vec<String>,
    /// `SingleStack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_family_policy: Option<String>,
    /// `None`, or `ClientIP`: a client's connections go to one backend.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session_affinity: String,
    /// How long `ClientIP` affinity lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_config: Option<SessionAffinityConfig>,
    /// Lists pods that are not ready among the addresses too (StatefulSet peers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_not_ready_addresses: Option<bool>,
    /// `Cluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_traffic_policy: Option<String>,
}

/// One port of a Service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// The port's name; required when the Service has more than one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `TCP` (default) or `UDP`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// The port on the Service's address.
    pub port: i32,
    /// The pods' port: a number, or the name of a container port (default: `port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    /// The application protocol, for tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    /// Node ports are not served; must be unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<i32>,
}

/// Session affinity settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SessionAffinityConfig {
    /// `ClientIP` affinity.
    #[serde(default, rename = "clientIP", skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<ClientIpConfig>,
}

/// `ClientIP` affinity settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientIpConfig {
    /// Seconds a client stays with its backend (1–86400, default 10800).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
}

/// Observed state of a Service (load balancers: none are made).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// Always empty: no load balancers.
    #[serde(default)]
    pub load_balancer: NoStatus,
}

impl Service {
    /// True for a headless Service (`clusterIP: None`).
    pub fn is_headless(&self) -> bool {
        self.spec.cluster_ip == CLUSTER_IP_NONE
    }

    /// The virtual address, once allocated (not for headless Services).
    pub fn virtual_ip(&self) -> Option<Ipv4Addr> {
        self.spec.cluster_ip.parse().ok()
    }
}

impl ServicePort {
    /// The protocol, defaulted.
    pub fn protocol(&self) -> &str {
        if self.protocol.is_empty() {
            "TCP"
        } else {
            &self.protocol
        }
    }
}

fn default_service(s: &mut Service) {
    let spec = &mut s.spec;
    if spec.type_.is_empty() {
        spec.type_ = "ClusterIP".into();
    }
    if spec.session_affinity.is_empty() {
        spec.session_affinity = "None".into();
    }
    if spec.session_affinity == "ClientIP" {
        let c = spec
            .session_affinity_config
            .get_or_insert_with(Default::default);
        let ip = c.client_ip.get_or_insert_with(Default::default);
        ip.timeout_seconds.get_or_insert(DEFAULT_AFFINITY_SECONDS);
    }
    for p in &mut spec.ports {
        if p.protocol.is_empty() {
            p.protocol = "TCP".into();
        }
        if p.target_port.is_none() {
            p.target_port = Some(IntOrString::Int(p.port));
        }
    }
    if !spec.cluster_ip.is_empty() && spec.cluster_ips.is_empty() {
        spec.cluster_ips = vec![spec.cluster_ip.clone()];
    }
    if spec.cluster_ip != CLUSTER_IP_NONE || !spec.selector.is_empty() {
        if spec.ip_families.is_empty() {
            spec.ip_families = vec!["IPv4".into()];
        }
        spec.ip_family_policy
            .get_or_insert_with(|| "SingleStack".into());
    }
    spec.internal_traffic_policy
        .get_or_insert_with(|| "Cluster".into());
}

fn check_port(e: &mut Errors, field: String, port: i32) {
    if !(1..=65_535).contains(&port) {
        e.push(field, format!("{port} must be between 1 and 65535"));
    }
}

/// Checks an IANA service name, as a named container port or `targetPort` is: at most 15
/// of `[a-z0-9-]` with a letter, no leading, trailing or double `-`.
pub fn port_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} must be an IANA service name: at most 15 lowercase letters, digits and \
             single inner '-', with a letter"
        ))
    }
}

fn validate_service(s: &Service) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    let spec = &s.spec;
    if !matches!(spec.type_.as_str(), "" | "ClusterIP") {
        e.push(
            "spec.type",
            format!(
                "{:?} is not served: only ClusterIP Services (and headless ones) are",
                spec.type_
            ),
        );
    }
    validation::labels(&mut e, "spec.selector", &spec.selector);
    match spec.cluster_ip.as_str() {
        "" | CLUSTER_IP_NONE => {}
        ip => {
            if ip.parse::<Ipv4Addr>().is_err() {
                e.push("spec.clusterIP", format!("{ip:?} is not an IPv4 address"));
            }
        }
    }
    if spec.cluster_ips.len() > 1 {
        e.push(
            "spec.clusterIPs",
            "one address only: IPv6 is not served yet",
        );
    }
    if spec
        .cluster_ips
        .first()
        .is_some_and(|ip| *ip != spec.cluster_ip)
    {
        e.push("spec.clusterIPs", "must hold clusterIP, as its first entry");
    }
    for (i, f) in spec.ip_families.iter().enumerate() {
        if f != "IPv4" {
            e.push(
                format!("spec.ipFamilies[{i}]"),
                format!("{f:?}: only IPv4 is served"),
            );
        }
    }
    if let Some(p) = &spec.ip_family_policy
        && p != "SingleStack"
    {
        e.push(
            "spec.ipFamilyPolicy",
            format!("{p:?}: only SingleStack is served"),
        );
    }
    match spec.session_affinity.as_str() {
        "" | "None" => {}
        "ClientIP" => {
            let t = (spec.session_affinity_config.as_ref())
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            if let Some(t) = t
                && !(1..=MAX_AFFINITY_SECONDS).contains(&t)
            {
                e.push(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    format!("{t} must be between 1 and {MAX_AFFINITY_SECONDS}"),
                );
            }
        }
        other => e.push(
            "spec.sessionAffinity",
            format!("{other:?}: must be None or ClientIP"),
        ),
    }
    if let Some(p) = &spec.internal_traffic_policy
        && p != "Cluster"
    {
        e.push(
            "spec.internalTrafficPolicy",
            format!("{p:?}: only Cluster is served"),
        );
    }
    if spec.ports.is_empty() && spec.cluster_ip != CLUSTER_IP_NONE {
        e.push(
            "spec.ports",
            "at least one port is required (unless headless)",
        );
    }
    let mut names = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let f = |x: &str| format!("spec.ports[{i}].{x}");
        if spec.ports.len() > 1 && p.name.is_empty() {
            e.push(f("name"), "required when a Service has more than one port");
        }
        if !p.name.is_empty() {
            e.check(f("name"), validation::dns_label(&p.name));
            if !names.insert(&p.name) {
                e.push(f("name"), format!("{:?} is used by another port", p.name));
            }
        }
        match p.protocol() {
            "TCP" | "UDP" => {}
            other => e.push(f("protocol"), format!("{other:?}: must be TCP or UDP")),
        }
        check_port(&mut e, f("port"), p.port);
        if !ports.insert((p.port, p.protocol())) {
            e.push(
                f("port"),
                format!("{}/{} is served by another port", p.port, p.protocol()),
            );
        }
        match &p.target_port {
            None => {}
            Some(IntOrString::Int(n)) => check_port(&mut e, f("targetPort"), *n),
            Some(IntOrString::String(name)) => e.check(f("targetPort"), port_name(name)),
        }
        if p.node_port.is_some() {
            e.push(f("nodePort"), "node ports are not served");
        }
    }
    e.into_result()
}

/// The addresses of a Service's pods, in the `v1` shape (kept by the endpoints
/// controller; by hand for a Service without a selector). Stored apart from the Mizar
/// `Endpoint` kind, whose plural it shares.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// `v1`.
    #[serde(default)]
    pub api_version: String,
    /// `Endpoints`.
    #[serde(default)]
    pub kind: String,
    /// Metadata: the Service's name.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Addresses that share a set of ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<EndpointSubset>,
}
crate::impl_resource!(
    Endpoints,
    kind = "Endpoints",
    group = "",
    version = "v1",
    plural = "endpoints",
    scope = Namespaced,
    store = "serviceendpoints",
    short = ["ep"],
    validate = validate_endpoints
);

/// Addresses and the ports they all serve.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSubset {
    /// Ready addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<EndpointAddress>,
    /// Addresses of pods that are not ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ready_addresses: Vec<EndpointAddress>,
    /// The ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
}

/// One address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointAddress {
    /// The IPv4 address.
    pub ip: String,
    /// The pod's hostname, when it has one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// The node of the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<ObjectReference>,
}

/// One port of an address set.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    /// The Service port's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The port on the addresses.
    pub port: i32,
    /// `TCP` or `UDP`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// The application protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

fn check_ip(e: &mut Errors, field: String, ip: &str) {
    if ip.parse::<Ipv4Addr>().is_err() {
        e.push(field, format!("{ip:?} is not an IPv4 address"));
    }
}

fn validate_endpoints(ep: &Endpoints) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    for (i, s) in ep.subsets.iter().enumerate() {
        let lists = [
            ("addresses", &s.addresses),
            ("notReadyAddresses", &s.not_ready_addresses),
        ];
        for (list, addrs) in lists {
            for (j, a) in addrs.iter().enumerate() {
                check_ip(&mut e, format!("subsets[{i}].{list}[{j}].ip"), &a.ip);
            }
        }
        for (j, p) in s.ports.iter().enumerate() {
            check_port(&mut e, format!("subsets[{i}].ports[{j}].port"), p.port);
        }
    }
    e.into_result()
}

/// A slice of a Service's addresses (`discovery.k8s.io/v1`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    /// `discovery.k8s.io/v1`.
    #[serde(default)]
    pub api_version: String,
    /// `EndpointSlice`.
    #[serde(default)]
    pub kind: String,
    /// Metadata; the label [`SERVICE_NAME_LABEL`] names the Service.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// `IPv4`.
    pub address_type: String,
    /// The endpoints.
    #[serde(default)]
    pub endpoints: Vec<SliceEndpoint>,
    /// The ports every endpoint serves.
    #[serde(default)]
    pub ports: Vec<EndpointPort>,
}
crate::impl_resource!(
    EndpointSlice,
    kind = "EndpointSlice",
    group = "discovery.k8s.io",
    version = "v1",
    plural = "endpointslices",
    scope = Namespaced,
    validate = validate_slice
);

/// One endpoint of a slice.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SliceEndpoint {
    /// Its addresses (one: IPv4).
    pub addresses: Vec<String>,
    /// Whether it takes traffic.
    #[serde(default)]
    pub conditions: SliceConditions,
    /// The pod's hostname, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The pod's node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<ObjectReference>,
}

/// An endpoint's conditions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SliceConditions {
    /// Ready for traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// Serving (ready, or terminating and still able to serve).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<bool>,
    /// Terminating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminating: Option<bool>,
}

fn validate_slice(s: &EndpointSlice) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    if s.address_type != "IPv4" {
        e.push(
            "addressType",
            format!("{:?}: only IPv4 is served", s.address_type),
        );
    }
    if s.endpoints.len() > 1000 {
        e.push("endpoints", "at most 1000 endpoints per slice");
    }
    for (i, ep) in s.endpoints.iter().enumerate() {
        if ep.addresses.len() != 1 {
            e.push(
                format!("endpoints[{i}].addresses"),
                "must hold exactly one address",
            );
        }
        for (j, a) in ep.addresses.iter().enumerate() {
            check_ip(&mut e, format!("endpoints[{i}].addresses[{j}]"), a);
        }
    }
    for (i, p) in s.ports.iter().enumerate() {
        check_port(&mut e, format!("ports[{i}].port"), p.port);
    }
    e.into_result()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Resource;

    fn fields(r: Result<(), Vec<FieldError>>) -> Vec<String> {
        r.err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn defaults_and_rules() {
        let mut s = Service::default();
        s.spec.ports = vec![ServicePort {
            port: 80,
            ..Default::default()
        }];
        s.set_defaults();
        assert_eq!(s.spec.type_, "ClusterIP");
        assert_eq!(s.spec.session_affinity, "None");
        assert_eq!(s.spec.ports[0].protocol, "TCP");
        assert_eq!(s.spec.ports[0].target_port, Some(IntOrString::Int(80)));
        assert_eq!(s.validate(), Ok(()));
        // Headless needs no ports; others do.
        let mut headless = Service::default();
        headless.spec.cluster_ip = CLUSTER_IP_NONE.into();
        assert_eq!(headless.validate(), Ok(()));
        assert!(headless.is_headless() && headless.virtual_ip().is_none());
        assert_eq!(fields(Service::default().validate()), ["spec.ports"]);
        // Two ports: named, distinct, each valid.
        s.spec.ports.push(ServicePort {
            port: 80,
            target_port: Some(IntOrString::String("-bad".into())),
            ..Default::default()
        });
        assert_eq!(
            fields(s.validate()),
            [
                "spec.ports[0].name",
                "spec.ports[1].name",
                "spec.ports[1].port",
                "spec.ports[1].targetPort"
            ]
        );
        s.spec.session_affinity = "ClientIP".into();
        s.set_defaults();
        let timeout = s.spec.session_affinity_config.as_ref().unwrap();
        assert_eq!(
            timeout.client_ip.as_ref().unwrap().timeout_seconds,
            Some(10_800)
        );
    }

    #[test]
    fn port_names_are_iana_service_names() {
        for ok in ["http", "web-1", "a1", "grpc-web-api12"] {
            assert_eq!(port_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "1234",
            "-a",
            "a-",
            "a--b",
            "Http",
            "a_b",
            "abcdefghijklmnop",
        ] {
            assert!(port_name(bad).is_err(), "{bad}");
        }
    }
}
