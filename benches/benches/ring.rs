//! Ring lookups on a large region: 1,000 owners × 200 virtual nodes.

use centaurus_core::ring::{HashRing, RingConfig, stable_hash};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn ring_get(c: &mut Criterion) {
    let owners: Vec<String> = (0..1000).map(|i| format!("controller-{i}")).collect();
    let keys: Vec<u64> = (0..4096u64)
        .map(|i| stable_hash(&i.to_le_bytes()))
        .collect();
    let mut group = c.benchmark_group("ring_get_1000x200");
    for probes in [8, 1] {
        let ring = HashRing::with_owners(
            RingConfig {
                vnodes: 200,
                probes,
            },
            owners.iter().cloned(),
        );
        let mut i = 0;
        group.bench_function(format!("probes_{probes}"), |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                black_box(ring.get(black_box(keys[i])))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, ring_get);
criterion_main!(benches);
