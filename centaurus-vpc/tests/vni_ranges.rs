//! VNIs in a partitioned region: each tenant partition hands out its own range, refuses a
//! VNI outside it, and never reuses the VNI of a VPC that moved away with its tenant.

use std::sync::Arc;

use centaurus_core::store::{RedbStore, Store};
use centaurus_vpc::admission::{CreateError, NetworkAdmission, RETIRED_VNIS};
use centaurus_vpc::kinds::Vpc;

fn vpc(tenant: &str, name: &str, vni: u32) -> Vpc {
    let mut v = Vpc::default();
    v.metadata.name = name.into();
    v.metadata.tenant = tenant.into();
    v.spec.cidr = "10.0.0.0/16".into();
    v.spec.dividers = 1;
    v.spec.vni = vni;
    v
}

fn store(dir: &tempfile::TempDir, name: &str) -> Arc<dyn Store> {
    Arc::new(RedbStore::open(dir.path().join(name)).unwrap())
}

#[tokio::test]
async fn partitions_hand_out_disjoint_vnis_and_never_reuse_a_retired_one() {
    let dir = tempfile::tempdir().unwrap();
    let (tp1, tp2) = (store(&dir, "tp1.redb"), store(&dir, "tp2.redb"));
    let (a1, a2) = (
        NetworkAdmission::with_vnis(1000, 1002),
        NetworkAdmission::with_vnis(2000, 2999),
    );

    // The same tenant and VPC names in both partitions get VNIs of their own ranges.
    let first = a1.create(&tp1, vpc("acme", "v", 0)).await.unwrap();
    let other = a2.create(&tp2, vpc("acme", "v", 0)).await.unwrap();
    assert_eq!((first.spec.vni, other.spec.vni), (1000, 2000));

    // A VNI named outside the partition's range is refused, with the range in the message.
    let outside = a1.create(&tp1, vpc("acme", "w", 2000)).await.unwrap_err();
    assert!(
        matches!(&outside, CreateError::Invalid(_)) && outside.to_string().contains("1000-1002"),
        "{outside}"
    );

    // A VNI retired by a move is never handed out again, nor accepted by name.
    tp1.create(&format!("{RETIRED_VNIS}1001"), "acme/v".into())
        .await
        .unwrap();
    let next = a1.create(&tp1, vpc("acme", "w", 0)).await.unwrap();
    assert_eq!(next.spec.vni, 1002);
    let named = a1.create(&tp1, vpc("acme", "x", 1001)).await.unwrap_err();
    assert!(named.to_string().contains("already used"), "{named}");

    // The range is spent: a clear refusal, and nothing stored.
    let full = a1.create(&tp1, vpc("acme", "x", 0)).await.unwrap_err();
    assert!(full.to_string().contains("every VNI is in use"), "{full}");
    let stored = centaurus_core::store::range_all(tp1.as_ref(), "/registry/vpcs/")
        .await
        .unwrap();
    assert_eq!(stored.kvs.len(), 2);
}
