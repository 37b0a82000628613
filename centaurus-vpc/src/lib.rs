//! The Mizar management plane: VPCs, subnets, endpoints, droplets, bouncers and dividers.
//!
//! - [`kinds`]: the objects, served by the API like any other kind.
//! - [`ipam`]: CIDRs, endpoint addresses and MACs, VNIs.
//! - [`tables`]: a host's transit tables and the updates that program them.
//! - [`plane`]: the operators' pipeline as function calls over one in-memory plane:
//!   placement of bouncers and dividers, addresses, and the programming each change needs.
//! - [`operator`]: the active-active operator replicas (VPCs sharded over the hash ring,
//!   a local redb store of decisions, resume) that run the plane against the store.
//! - [`network`]: the network controller: default networks per tenant, droplets per node,
//!   endpoints per pod.
//! - [`admission`]: the checks of VPCs, subnets and endpoints against each other.
//! - [`policy`]: NetworkPolicy resolved per endpoint and compiled into the datapath's
//!   lookup tables.
//! - [`services`]: each tenant's service range, and Services' addresses in it.
//! - [`dataplane`]: the [`Dataplane`] interface hosts are programmed through, and
//!   [`SimDataplane`], which forwards packets from the tables as the XDP datapath does.

pub mod admission;
pub mod dataplane;
pub mod ipam;
pub mod kinds;
pub mod local;
pub mod maglev;
pub mod network;
pub mod operator;
pub mod plane;
pub mod policy;
pub mod services;
pub mod tables;

pub use dataplane::{Dataplane, DataplaneError, Delivery, Outcome, SimDataplane};
