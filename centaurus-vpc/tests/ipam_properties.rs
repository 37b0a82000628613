//! IPAM invariants: a subnet pool hands out only assignable addresses of its subnet, never
//! one that is taken, and reports exhaustion exactly when every address is taken — under
//! random sequences of allocations, reservations and releases, and under threads racing
//! over one pool.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use centaurus_vpc::ipam::{IpamError, Ipv4Cidr, SubnetPool, VniPool};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Allocate,
    Reserve(u32),
    Release(u32),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            4 => Just(Op::Allocate),
            1 => (0u32..80).prop_map(Op::Reserve),
            2 => (0u32..80).prop_map(Op::Release),
        ],
        1..300,
    )
}

proptest! {
    #[test]
    fn pools_follow_a_set_model(len in 26u8..=30, ops in ops()) {
        let cidr = Ipv4Cidr::new(Ipv4Addr::new(10, 7, 0, 0), len).unwrap();
        let pool = SubnetPool::new(cidr);
        let base = u32::from(cidr.network());
        let assignable = |ip: u32| ip >= base + 2 && ip < u32::from(cidr.last());
        let mut model: BTreeSet<u32> = BTreeSet::new();
        for op in ops {
            match op {
                Op::Allocate => match pool.allocate() {
                    Ok(ip) => {
                        let n = u32::from(ip);
                        prop_assert!(assignable(n), "{ip} is not assignable in {cidr}");
                        prop_assert!(model.insert(n), "{ip} handed out twice");
                    }
                    Err(IpamError::Exhausted(_)) => {
                        prop_assert_eq!(model.len() as u64, pool.capacity());
                    }
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                },
                Op::Reserve(offset) => {
                    let n = base + offset;
                    match pool.reserve(Ipv4Addr::from(n)) {
                        Ok(()) => {
                            prop_assert!(assignable(n));
                            prop_assert!(model.insert(n));
                        }
                        Err(IpamError::InUse(_)) => prop_assert!(model.contains(&n)),
                        Err(IpamError::OutOfRange { .. }) => prop_assert!(!assignable(n)),
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    }
                }
                Op::Release(offset) => {
                    let n = base + offset;
                    prop_assert_eq!(pool.release(Ipv4Addr::from(n)), model.remove(&n));
                }
            }
            prop_assert_eq!(pool.allocated(), model.len());
        }
    }

    #[test]
    fn racing_threads_never_share_an_address(
        len in 22u8..=26,
        threads in 2usize..8,
        per_thread in 1usize..120,
        churn in 0usize..40,
    ) {
        let cidr = Ipv4Cidr::new(Ipv4Addr::new(10, 9, 0, 0), len).unwrap();
        let pool = Arc::new(SubnetPool::new(cidr));
        let vnis = Arc::new(VniPool::default());
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (pool, vnis) = (pool.clone(), vnis.clone());
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..per_thread {
                        match pool.allocate() {
                            Ok(ip) => mine.push(ip),
                            Err(_) => break,
                        }
                        // Give some back and take again, so releases race allocations.
                        if i < churn {
                            let ip = mine.remove(mine.len() / 2);
                            assert!(pool.release(ip));
                        }
                    }
                    let vni = vnis.allocate().unwrap();
                    (mine, vni)
                })
            })
            .collect();
        let mut all = BTreeSet::new();
        let mut held = 0;
        let mut seen_vnis = BTreeSet::new();
        for h in handles {
            let (mine, vni) = h.join().unwrap();
            held += mine.len();
            all.extend(mine);
            prop_assert!(seen_vnis.insert(vni), "VNI {vni} handed out twice");
        }
        prop_assert_eq!(all.len(), held, "an address is held by two threads");
        prop_assert_eq!(pool.allocated(), held);
        prop_assert!(all.iter().all(|ip| cidr.contains_addr(*ip)));
    }
}
