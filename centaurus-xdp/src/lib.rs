//! The Mizar datapath: XDP programs in C (`bpf/transit.c`: the transit program on the
//! substrate interface, the transit agent on each endpoint's veth) doing Geneve
//! encapsulation, bouncer and divider lookups and direct-path learning; the loader that
//! keeps their maps equal to a host's transit tables; and the userspace reference model
//! the programs are tested against.

pub mod geneve;
pub mod loader;
pub mod maps;
pub mod model;
pub mod testbed;
pub mod transitd;
