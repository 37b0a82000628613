//! Property test: any sequence of operations gives the same answers from RedbStore as from
//! a plain in-memory model of etcd semantics, and the watch history replays the model's log.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use centaurus_core::store::{EventKind, RangeOptions, RedbStore, Store, StoreError};
use futures::StreamExt;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Create(usize, u8),
    /// Update guarded by the current revision (true) or a wrong one (false).
    Update(usize, u8, bool),
    Delete(usize, Option<bool>),
    Get(usize),
    Range(usize, usize),
    /// Every key under a prefix as it was this many revisions ago, in pages of two.
    RangeAt(usize, i64),
}

const KEYS: [&str; 6] = ["/m/a/1", "/m/a/2", "/m/a/3", "/m/b/1", "/m/ab", "/n/1"];
const PREFIXES: [&str; 4] = ["/m/", "/m/a/", "/m/b/", "/"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..KEYS.len(), any::<u8>()).prop_map(|(k, v)| Op::Create(k, v)),
        (0..KEYS.len(), any::<u8>(), any::<bool>()).prop_map(|(k, v, ok)| Op::Update(k, v, ok)),
        (0..KEYS.len(), proptest::option::of(any::<bool>())).prop_map(|(k, g)| Op::Delete(k, g)),
        (0..KEYS.len()).prop_map(Op::Get),
        (0..PREFIXES.len(), 0..4usize).prop_map(|(p, l)| Op::Range(p, l)),
        (0..PREFIXES.len(), 0..8i64).prop_map(|(p, b)| Op::RangeAt(p, b)),
    ]
}

#[derive(Clone, Debug, PartialEq)]
struct Entry {
    value: Bytes,
    create: i64,
    modified: i64,
    version: i64,
}

#[derive(Default)]
struct Model {
    rev: i64,
    kv: BTreeMap<String, Entry>,
    log: Vec<(i64, EventKind, String)>,
    /// The keys as they were at each revision.
    at: BTreeMap<i64, BTreeMap<String, Entry>>,
}

fn kind(e: &StoreError) -> String {
    match e {
        StoreError::NotFound { .. } => "NotFound".into(),
        StoreError::AlreadyExists { .. } => "AlreadyExists".into(),
        StoreError::Conflict { actual, .. } => format!("Conflict@{actual}"),
        other => format!("{other}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn redb_store_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = RedbStore::open(dir.path().join("s.redb")).unwrap();
            let mut m = Model::default();
            for op in &ops {
                match op {
                    Op::Create(k, v) => {
                        let key = KEYS[*k];
                        let got = store.create(key, Bytes::from(vec![*v])).await;
                        let want = if m.kv.contains_key(key) {
                            Err("AlreadyExists".to_string())
                        } else {
                            m.rev += 1;
                            let e = Entry { value: Bytes::from(vec![*v]), create: m.rev, modified: m.rev, version: 1 };
                            m.kv.insert(key.into(), e.clone());
                            m.log.push((m.rev, EventKind::Put, key.into()));
                            Ok(Some((key.to_string(), e.value, e.create, e.modified, e.version)))
                        };
                        let got = got.map(|kv| Some((kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version))).map_err(|e| kind(&e));
                        assert_eq!(got, want, "{op:?}");
                    }
                    Op::Update(k, v, right) => {
                        let key = KEYS[*k];
                        let current = m.kv.get(key).map(|e| e.modified);
                        let expected = if *right { current.unwrap_or(1) } else { current.unwrap_or(1) + 1000 };
                        let got = store.update(key, Bytes::from(vec![*v]), expected).await;
                        let want = match m.kv.get(key).cloned() {
                            None => Err("NotFound".to_string()),
                            Some(e) if e.modified != expected => Err(format!("Conflict@{}", e.modified)),
                            Some(e) => {
                                m.rev += 1;
                                let n = Entry { value: Bytes::from(vec![*v]), create: e.create, modified: m.rev, version: e.version + 1 };
                                m.kv.insert(key.into(), n.clone());
                                m.log.push((m.rev, EventKind::Put, key.into()));
                                Ok(Some((key.to_string(), n.value, n.create, n.modified, n.version)))
                            }
                        };
                        let got = got.map(|kv| Some((kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version))).map_err(|e| kind(&e));
                        assert_eq!(got, want, "{op:?}");
                    }
                    Op::Delete(k, guard) => {
                        let key = KEYS[*k];
                        let current = m.kv.get(key).map(|e| e.modified);
                        let expected = guard.map(|right| if right { current.unwrap_or(1) } else { current.unwrap_or(1) + 1000 });
                        let got = store.delete(key, expected).await;
                        let want = match m.kv.get(key).cloned() {
                            None => Err("NotFound".to_string()),
                            Some(e) if expected.is_some_and(|x| x != e.modified) => Err(format!("Conflict@{}", e.modified)),
                            Some(e) => {
                                m.rev += 1;
                                m.kv.remove(key);
                                m.log.push((m.rev, EventKind::Delete, key.into()));
                                Ok(Some((key.to_string(), e.value, e.create, m.rev, 0)))
                            }
                        };
                        let got = got.map(|kv| Some((kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version))).map_err(|e| kind(&e));
                        assert_eq!(got, want, "{op:?}");
                    }
                    Op::Get(k) => {
                        let key = KEYS[*k];
                        let got = store.get(key).await.unwrap().map(|kv| (kv.value, kv.create_revision, kv.mod_revision, kv.version));
                        let want = m.kv.get(key).map(|e| (e.value.clone(), e.create, e.modified, e.version));
                        assert_eq!(got, want, "{op:?}");
                    }
                    Op::RangeAt(p, back) => {
                        let prefix = PREFIXES[*p];
                        let at = (m.rev - back).max(1);
                        let want: Vec<(String, Entry)> = m.at.get(&at).into_iter().flatten()
                            .filter(|(k, _)| k.starts_with(prefix))
                            .map(|(k, e)| (k.clone(), e.clone()))
                            .collect();
                        let mut got = Vec::new();
                        let mut after = None;
                        loop {
                            let page = store.range(prefix, RangeOptions { limit: 2, after: after.take(), revision: at }).await;
                            let page = match page {
                                Err(StoreError::FutureRevision { .. }) if m.rev == 0 => break,
                                other => other.unwrap(),
                            };
                            assert_eq!(page.revision, at, "{op:?}");
                            after = page.kvs.last().map(|kv| kv.key.clone());
                            got.extend(page.kvs.into_iter().map(|kv| (kv.key, Entry { value: kv.value, create: kv.create_revision, modified: kv.mod_revision, version: kv.version })));
                            if !page.more {
                                break;
                            }
                        }
                        assert_eq!(got, want, "{op:?} at {at}");
                    }
                    Op::Range(p, limit) => {
                        let prefix = PREFIXES[*p];
                        let got = store.range(prefix, RangeOptions { limit: *limit, ..Default::default() }).await.unwrap();
                        let all: Vec<&String> = m.kv.keys().filter(|k| k.starts_with(prefix)).collect();
                        let n = if *limit == 0 { all.len() } else { all.len().min(*limit) };
                        assert_eq!(got.kvs.iter().map(|kv| &kv.key).collect::<Vec<_>>(), all[..n].to_vec(), "{op:?}");
                        assert_eq!(got.more, n < all.len(), "{op:?}");
                        assert_eq!(got.revision, m.rev, "{op:?}");
                    }
                }
                assert_eq!(store.revision().await.unwrap(), m.rev);
                m.at.insert(m.rev, m.kv.clone());
            }
            // The watch history is exactly the model's log.
            if m.rev > 0 {
                let mut w = store.watch("/", 1).await.unwrap();
                for (rev, kind, key) in &m.log {
                    let e = tokio::time::timeout(Duration::from_secs(5), w.next()).await.unwrap().unwrap().unwrap();
                    assert_eq!((e.revision(), e.kind, &e.kv.key), (*rev, *kind, key));
                }
            }
        });
    }
}
