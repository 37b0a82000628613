//! The Mizar datapath: XDP programs in C (transit XDP on the substrate interface, transit
//! agent on each endpoint's veth) doing Geneve encapsulation, bouncer and divider lookups,
//! loaded by a transit daemon that implements `centaurus_vpc::Dataplane`.
//!
//! Not built yet: this crate is filled by the datapath work.
