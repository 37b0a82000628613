//! The Mizar management plane: VPCs, subnets, endpoints, droplets, bouncers and dividers,
//! and the [`Dataplane`] interface through which a host's transit daemon is programmed.
//!
//! So far: [`ipam`] (CIDRs, endpoint addresses and MACs, VNIs) and the [`Dataplane`]
//! interface; the kinds, operators and `SimDataplane` come next.

use async_trait::async_trait;

pub mod ipam;

/// Programs one host's transit tables.
#[async_trait]
pub trait Dataplane: Send + Sync + 'static {
    /// Adds or replaces an endpoint entry (`vni`, `ip`) -> host address.
    async fn update_endpoint(
        &self,
        vni: u32,
        ip: std::net::IpAddr,
        host: std::net::IpAddr,
    ) -> Result<(), String>;
    /// Removes an endpoint entry.
    async fn delete_endpoint(&self, vni: u32, ip: std::net::IpAddr) -> Result<(), String>;
}
