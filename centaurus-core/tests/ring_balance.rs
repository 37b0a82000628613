//! Property tests of the hash ring: balance, minimal movement, bounded loads.

use centaurus_core::ring::{HashRing, RingConfig, stable_hash};
use proptest::prelude::*;

const KEYS: usize = 200_000;

fn keys(seed: u64) -> Vec<u64> {
    (0..KEYS as u64)
        .map(|i| stable_hash(&(seed ^ i.rotate_left(17)).to_le_bytes()))
        .collect()
}

fn owners(seed: u64, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("controller-{seed:x}-{i}")).collect()
}

fn counts<'a>(ring: &'a HashRing, keys: &[u64]) -> std::collections::HashMap<&'a str, usize> {
    let mut c = std::collections::HashMap::new();
    for &k in keys {
        *c.entry(ring.get(k).unwrap()).or_default() += 1;
    }
    c
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// With N owners at 200 virtual nodes, each holds within ±10% of K/N keys.
    #[test]
    fn owners_hold_fair_shares(seed in any::<u64>(), n in 2usize..=12) {
        let ring = HashRing::with_owners(RingConfig { vnodes: 200, ..RingConfig::default() }, owners(seed, n));
        let keys = keys(seed);
        let fair = KEYS as f64 / n as f64;
        let c = counts(&ring, &keys);
        prop_assert_eq!(c.len(), n);
        for (owner, &got) in &c {
            let dev = (got as f64 - fair).abs() / fair;
            prop_assert!(dev <= 0.10, "{} holds {} keys, fair share {:.0} ({:.1}% off)", owner, got, fair, dev * 100.0);
        }
    }

    /// Adding an owner moves about K/(N+1) keys, never more than 1.2·K/N, all to the newcomer;
    /// removing one moves only its own keys.
    #[test]
    fn membership_changes_move_only_their_share(seed in any::<u64>(), n in 2usize..=12) {
        let names = owners(seed, n + 1);
        let config = RingConfig { vnodes: 200, ..RingConfig::default() };
        let small = HashRing::with_owners(config, names[..n].iter().cloned());
        let big = HashRing::with_owners(config, names.iter().cloned());
        let keys = keys(seed.wrapping_add(1));
        let bound = 1.2 * KEYS as f64 / n as f64;
        let mut moved = 0usize;
        for &k in &keys {
            let (before, after) = (small.get(k).unwrap(), big.get(k).unwrap());
            if before != after {
                moved += 1;
                prop_assert_eq!(after, names[n].as_str(), "a key moved between old owners");
            }
        }
        prop_assert!(moved as f64 <= bound, "adding moved {} keys, bound {:.0}", moved, bound);
        prop_assert!(moved as f64 >= 0.8 * KEYS as f64 / (n + 1) as f64, "adding moved only {} keys", moved);

        // Removing the newcomer again is the mirror image; removing an old owner moves
        // exactly its keys.
        let mut without = big.clone();
        prop_assert!(without.remove(&names[0]));
        let mut moved = 0usize;
        for &k in &keys {
            let (before, after) = (big.get(k).unwrap(), without.get(k).unwrap());
            if before != after {
                moved += 1;
                prop_assert_eq!(before, names[0].as_str(), "a key of a remaining owner moved");
            }
        }
        prop_assert!(moved as f64 <= 1.2 * KEYS as f64 / (n + 1) as f64, "removing moved {} keys", moved);
    }

    /// Bounded loads never exceed ⌈(1+ε)·K·w/W⌉, whatever the weights.
    #[test]
    fn bounded_loads_respect_capacity(
        seed in any::<u64>(),
        weights in proptest::collection::vec(1u32..=4, 2..=10),
        epsilon in 0.01f64..0.5,
        k in 1usize..20_000,
    ) {
        let mut ring = HashRing::new(RingConfig::default());
        for (i, w) in weights.iter().enumerate() {
            ring.add(format!("o{seed:x}-{i}"), *w);
        }
        let keys: Vec<u64> = keys(seed).into_iter().take(k).collect();
        let assigned = ring.assign_bounded(&keys, epsilon);
        prop_assert_eq!(assigned.len(), keys.len(), "every key is placed");
        let caps = ring.bounded_capacities(k, epsilon);
        let total: u32 = weights.iter().sum();
        let mut load = std::collections::HashMap::new();
        for o in &assigned {
            *load.entry(*o).or_insert(0usize) += 1;
        }
        for (i, name) in ring.members().keys().enumerate() {
            let w = ring.members()[name];
            let cap = ((1.0 + epsilon) * k as f64 * f64::from(w) / f64::from(total)).ceil() as usize;
            prop_assert_eq!(caps[i], cap);
            prop_assert!(load.get(name.as_str()).copied().unwrap_or(0) <= cap, "{} over capacity {}", name, cap);
        }
        // Deterministic: the same input gives the same assignment.
        prop_assert_eq!(ring.assign_bounded(&keys, epsilon), assigned);
    }
}
