//! Embedding the hash ring: split objects over active-active controller instances, see how
//! little moves when an instance joins, and place keys with bounded loads.
//!
//! Run: `cargo run -p centaurus-examples --example ring`

use centaurus_core::ring::{HashRing, RingConfig, stable_hash};

fn main() {
    let mut ring = HashRing::with_owners(RingConfig::default(), ["ctrl-a", "ctrl-b", "ctrl-c"]);
    let keys: Vec<u64> = (0..30_000)
        .map(|i| stable_hash(format!("pod-{i}").as_bytes()))
        .collect();

    let share = |ring: &HashRing| {
        let mut counts = std::collections::BTreeMap::new();
        for &k in &keys {
            *counts
                .entry(ring.get(k).unwrap().to_owned())
                .or_insert(0usize) += 1;
        }
        counts
    };
    println!("3 instances: {:?}", share(&ring));

    let before: Vec<String> = keys
        .iter()
        .map(|&k| ring.get(k).unwrap().to_owned())
        .collect();
    ring.add("ctrl-d", 1);
    let moved = keys
        .iter()
        .zip(&before)
        .filter(|&(&k, b)| ring.get(k).unwrap() != b)
        .count();
    println!(
        "ctrl-d joined: {moved} of {} keys moved ({:.1}%; the ideal is {:.1}%)",
        keys.len(),
        100.0 * moved as f64 / keys.len() as f64,
        100.0 / 4.0
    );
    println!("4 instances: {:?}", share(&ring));

    let pod = stable_hash(b"acme/dev/web-0");
    println!(
        "acme/dev/web-0 -> {} (replicas {:?})",
        ring.get(pod).unwrap(),
        ring.get_n(pod, 2)
    );
    println!("ctrl-a owns it: {}", ring.owns("ctrl-a", pod));

    let assigned = ring.assign_bounded(&keys, 0.05);
    let mut loads = std::collections::BTreeMap::new();
    for o in assigned {
        *loads.entry(o).or_insert(0usize) += 1;
    }
    println!(
        "bounded loads (eps 0.05, cap {}): {loads:?}",
        ring.bounded_capacities(keys.len(), 0.05)[0]
    );
}
