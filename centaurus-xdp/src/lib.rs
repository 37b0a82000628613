//! The Mizar datapath: XDP programs in C (transit XDP on the substrate interface, transit
//! agent on each endpoint's veth) doing Geneve encapsulation, bouncer and divider lookups,
//! loaded by a transit daemon that implements `centaurus_vpc::Dataplane`.
//!
//! So far: [`geneve`], the Geneve codec the userspace model, the tests and the fuzz target
//! share. The BPF programs, the loader, the model and the testbed come next.

pub mod geneve;
pub mod maps;
pub mod model;
