//! The Mizar kinds: `Vpc` and `Subnet` (a tenant's network, tenant-scoped), `Endpoint` (a
//! pod's interface, in the pod's namespace) and the cluster-scoped infrastructure only the
//! system tenant sees: `Droplet` (a host's substrate interface), `Bouncer` and `Divider`.
//!
//! Each has `status.phase` moving from `Init` through its operator's steps to
//! `Provisioned` (or `Failed` with a message), and `status.provisionDelay`, the seconds
//! from creation to `Provisioned`.

use centaurus_core::impl_resource;
use centaurus_core::model::validation::{self, Errors};
use centaurus_core::model::{FieldError, Registry, RegistryError, Resource};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ipam::{Ipv4Cidr, MAX_VNI};

/// API group of the Mizar kinds.
pub const GROUP: &str = "mizar.centaurus.io";

/// Phase of an object the operators have finished.
pub const PROVISIONED: &str = "Provisioned";
/// Phase of an object the operators refused; `status.message` says why.
pub const FAILED: &str = "Failed";

/// Observed state every Mizar kind shares.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// `Init`, an operator step, `Provisioned` or `Failed`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// Why the object failed, for a person.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Seconds from creation to `Provisioned`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provision_delay: Option<f64>,
}

centaurus_core::define_object!(
    /// A tenant's virtual private cloud: an address range and a VNI.
    pub struct Vpc {
        spec: VpcSpec,
        status: VpcStatus,
    }
);
impl_resource!(
    Vpc,
    kind = "Vpc",
    group = "mizar.centaurus.io",
    version = "v1",
    plural = "vpcs",
    scope = Tenant,
    short = ["vpc"],
    validate = validate_vpc
);

/// Desired state of a VPC.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VpcSpec {
    /// The VPC's IPv4 range, `10.0.0.0/16`.
    pub cidr: String,
    /// The VXLAN/Geneve network identifier; 0 lets the operator choose one.
    #[serde(default)]
    pub vni: u32,
    /// How many dividers route between the VPC's subnets (default 1).
    #[serde(default = "one")]
    pub dividers: u32,
}

/// Observed state of a VPC.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VpcStatus {
    /// Phase, message and provisioning delay.
    #[serde(flatten)]
    pub progress: Progress,
    /// The VNI in use.
    #[serde(default)]
    pub vni: u32,
    /// Droplets holding the VPC's dividers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dividers: Vec<String>,
}

fn one() -> u32 {
    1
}

fn check_cidr(e: &mut Errors, field: &str, cidr: &str) {
    e.check(
        field,
        cidr.parse::<Ipv4Cidr>()
            .map(|_| ())
            .map_err(|x| x.to_string()),
    );
}

/// Most dividers a VPC may have (what a host's transit tables hold per VPC).
pub const MAX_DIVIDERS: u32 = 16;
/// Most bouncers a subnet may have (what a host's transit tables hold per subnet).
pub const MAX_BOUNCERS: u32 = 16;

fn validate_vpc(v: &Vpc) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    check_cidr(&mut e, "spec.cidr", &v.spec.cidr);
    if v.spec.vni > MAX_VNI {
        e.push("spec.vni", format!("must be at most {MAX_VNI} (24 bits)"));
    }
    if !(1..=MAX_DIVIDERS).contains(&v.spec.dividers) {
        e.push(
            "spec.dividers",
            format!("must be between 1 and {MAX_DIVIDERS}"),
        );
    }
    e.into_result()
}

centaurus_core::define_object!(
    /// A subnet of a VPC.
    pub struct Subnet {
        spec: SubnetSpec,
        status: SubnetStatus,
    }
);
impl_resource!(
    Subnet,
    kind = "Subnet",
    group = "mizar.centaurus.io",
    version = "v1",
    plural = "subnets",
    scope = Tenant,
    short = ["subnet"],
    validate = validate_subnet
);

/// Desired state of a subnet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubnetSpec {
    /// The subnet's range; it lies inside its VPC's.
    pub cidr: String,
    /// The VPC, in the same tenant.
    pub vpc: String,
    /// How many bouncers hold the subnet's endpoints (default 1).
    #[serde(default = "one")]
    pub bouncers: u32,
}

/// Observed state of a subnet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubnetStatus {
    /// Phase, message and provisioning delay.
    #[serde(flatten)]
    pub progress: Progress,
    /// The VPC's VNI.
    #[serde(default)]
    pub vni: u32,
    /// The gateway address pods route through.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    /// Droplets holding the subnet's bouncers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bouncers: Vec<String>,
}

fn validate_subnet(s: &Subnet) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    check_cidr(&mut e, "spec.cidr", &s.spec.cidr);
    if let Ok(c) = s.spec.cidr.parse::<Ipv4Cidr>()
        && c.prefix_len() > 30
    {
        e.push(
            "spec.cidr",
            "a subnet needs at least a /30: network, gateway, broadcast and one endpoint",
        );
    }
    e.check("spec.vpc", validation::dns_subdomain(&s.spec.vpc));
    if !(1..=MAX_BOUNCERS).contains(&s.spec.bouncers) {
        e.push(
            "spec.bouncers",
            format!("must be between 1 and {MAX_BOUNCERS}"),
        );
    }
    e.into_result()
}

centaurus_core::define_object!(
    /// A pod's (or any workload's) interface on a subnet.
    pub struct Endpoint {
        spec: EndpointSpec,
        status: EndpointStatus,
    }
);
impl_resource!(
    Endpoint,
    kind = "Endpoint",
    group = "mizar.centaurus.io",
    version = "v1",
    plural = "endpoints",
    scope = Namespaced,
    validate = validate_endpoint
);

/// Desired state of an endpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSpec {
    /// The subnet, in the same tenant.
    pub subnet: String,
    /// The subnet's VPC; filled from the subnet when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vpc: String,
    /// The droplet (host) the endpoint lives on.
    pub droplet: String,
    /// A requested address; empty lets the operator allocate one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip: String,
    /// The pod, in the same namespace, when the endpoint is a pod's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
}

/// Observed state of an endpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    /// Phase, message and provisioning delay.
    #[serde(flatten)]
    pub progress: Progress,
    /// The endpoint's address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip: String,
    /// The subnet's prefix length.
    #[serde(default)]
    pub prefix_len: u8,
    /// The endpoint's MAC.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// The subnet's gateway.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    /// The VPC's VNI.
    #[serde(default)]
    pub vni: u32,
    /// The VPC the endpoint belongs to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vpc: String,
    /// The droplet's substrate address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
    /// The droplet's substrate MAC.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_mac: String,
    /// The host side of the endpoint's veth pair.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub veth: String,
    /// The network namespace the endpoint's interface lives in.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub netns: String,
    /// Substrate addresses of the subnet's bouncers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bouncers: Vec<String>,
}

fn validate_endpoint(ep: &Endpoint) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    e.check("spec.subnet", validation::dns_subdomain(&ep.spec.subnet));
    if !ep.spec.vpc.is_empty() {
        e.check("spec.vpc", validation::dns_subdomain(&ep.spec.vpc));
    }
    e.check("spec.droplet", validation::dns_subdomain(&ep.spec.droplet));
    if !ep.spec.ip.is_empty() && ep.spec.ip.parse::<std::net::Ipv4Addr>().is_err() {
        e.push(
            "spec.ip",
            format!("{:?} is not an IPv4 address", ep.spec.ip),
        );
    }
    e.into_result()
}

centaurus_core::define_object!(
    /// A host's substrate interface, where its transit XDP program runs.
    pub struct Droplet {
        spec: DropletSpec,
        status: Progress,
    }
);
impl_resource!(
    Droplet,
    kind = "Droplet",
    group = "mizar.centaurus.io",
    version = "v1",
    plural = "droplets",
    scope = Cluster,
    validate = validate_droplet
);

/// Desired state of a droplet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DropletSpec {
    /// Substrate IPv4 address.
    pub ip: String,
    /// Substrate MAC.
    pub mac: String,
    /// Substrate interface name.
    #[serde(default = "default_ifname")]
    pub ifname: String,
    /// The node it belongs to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
}

fn default_ifname() -> String {
    "eth0".into()
}

fn validate_droplet(d: &Droplet) -> Result<(), Vec<FieldError>> {
    let mut e = Errors::default();
    if d.spec.ip.parse::<std::net::Ipv4Addr>().is_err() {
        e.push("spec.ip", format!("{:?} is not an IPv4 address", d.spec.ip));
    }
    if crate::ipam::parse_mac(&d.spec.mac).is_none() {
        e.push(
            "spec.mac",
            format!("{:?} is not a MAC address (aa:bb:cc:dd:ee:ff)", d.spec.mac),
        );
    }
    if d.spec.ifname.is_empty() || d.spec.ifname.len() > 15 {
        e.push("spec.ifname", "must be 1 to 15 characters");
    }
    e.into_result()
}

centaurus_core::define_object!(
    /// A bouncer: a droplet holding a subnet's endpoint table.
    pub struct Bouncer {
        spec: BouncerSpec,
        status: Progress,
    }
);
impl_resource!(
    Bouncer,
    kind = "Bouncer",
    group = "mizar.centaurus.io",
    version = "v1",
    plural = "bouncers",
    scope = Cluster
);

/// Desired state of a bouncer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BouncerSpec {
    /// The subnet's tenant.
    pub tenant: String,
    /// The subnet.
    pub subnet: String,
    /// The subnet's VPC.
    pub vpc: String,
    /// The VPC's VNI.
    pub vni: u32,
    /// The droplet it runs on.
    pub droplet: String,
}

centaurus_core::define_object!(
    /// A divider: a droplet holding a VPC's subnet table.
    pub struct Divider {
        spec: DividerSpec,
        status: Progress,
    }
);
impl_resource!(
    Divider,
    kind = "Divider",
    group = "mizar.centaurus.io",
    version = "v1",
    plural = "dividers",
    scope = Cluster
);

/// Desired state of a divider.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DividerSpec {
    /// The VPC's tenant.
    pub tenant: String,
    /// The VPC.
    pub vpc: String,
    /// The VPC's VNI.
    pub vni: u32,
    /// The droplet it runs on.
    pub droplet: String,
}

/// A role a droplet plays for a network object: a subnet's [`Bouncer`] or a VPC's
/// [`Divider`]. Role objects are named `{tenant}.{owner}.{droplet}` (hashed when longer
/// than a name may be) and created `Provisioned`.
pub trait Role: Resource + Default {
    /// The role object of `owner` (a subnet or VPC of `tenant` in `vpc`) on `droplet`.
    fn of(tenant: &str, vpc: &str, owner: &str, vni: u32, droplet: &str) -> Self;

    /// The name of that object.
    fn name(tenant: &str, owner: &str, droplet: &str) -> String {
        let name = format!("{tenant}.{owner}.{droplet}");
        if name.len() <= 253 {
            name
        } else {
            format!(
                "{tenant}-{:016x}",
                centaurus_core::ring::stable_hash(name.as_bytes())
            )
        }
    }
}

fn provisioned() -> Option<Progress> {
    Some(Progress {
        phase: PROVISIONED.into(),
        ..Default::default()
    })
}

impl Role for Bouncer {
    fn of(tenant: &str, vpc: &str, owner: &str, vni: u32, droplet: &str) -> Self {
        let mut o = Self::default();
        o.metadata.name = Self::name(tenant, owner, droplet);
        o.spec = BouncerSpec {
            tenant: tenant.into(),
            subnet: owner.into(),
            vpc: vpc.into(),
            vni,
            droplet: droplet.into(),
        };
        o.status = provisioned();
        o
    }
}

impl Role for Divider {
    fn of(tenant: &str, vpc: &str, _: &str, vni: u32, droplet: &str) -> Self {
        let mut o = Self::default();
        o.metadata.name = Self::name(tenant, vpc, droplet);
        o.spec = DividerSpec {
            tenant: tenant.into(),
            vpc: vpc.into(),
            vni,
            droplet: droplet.into(),
        };
        o.status = provisioned();
        o
    }
}

/// Adds the Mizar kinds to a region's registry.
pub fn register_kinds(r: &mut Registry) -> Result<(), RegistryError> {
    r.register::<Vpc>()?;
    r.register::<Subnet>()?;
    r.register::<Endpoint>()?;
    r.register::<Droplet>()?;
    r.register::<Bouncer>()?;
    r.register::<Divider>()?;
    Ok(())
}
