//! Durability: every write the store acknowledged survives SIGKILL of the process in the
//! middle of a stream of concurrent writes, and nothing half-written appears after reopen.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use centaurus_core::store::{EventKind, RangeOptions, RedbStore, Store};
use futures::StreamExt;

const CHILD_ENV: &str = "CENTAURUS_DURABILITY_CHILD";
const TEST_NAME: &str = "acknowledged_writes_survive_sigkill";

/// The value written under `key`: deterministic, a few KiB, so that a torn write shows.
fn payload(key: &str) -> Bytes {
    let mut v = Vec::with_capacity(3000);
    while v.len() < 2900 {
        v.extend_from_slice(key.as_bytes());
        v.push(b'|');
    }
    Bytes::from(v)
}

/// The writer process: concurrent writers creating keys as fast as the store acknowledges,
/// printing each acknowledgement, until killed.
fn child(path: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = RedbStore::open(path).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let writers = (0..8).map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let key = format!("/durability/{w}/{i:08}");
                    let kv = store.create(&key, payload(&key)).await.unwrap();
                    // One write(2) per line: the parent sees whole lines only.
                    println!("ACK {key} {}", kv.mod_revision);
                    i += 1;
                }
            })
        });
        futures::future::join_all(writers).await;
    });
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child(&path);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(proc.stdout.take().unwrap()).lines();
    let mut acked: Vec<(String, i64)> = Vec::new();
    let parse = |line: &str| {
        let mut parts = line.strip_prefix("ACK ")?.split(' ');
        Some((parts.next()?.to_owned(), parts.next()?.parse::<i64>().ok()?))
    };
    // Let the stream get going, then kill it mid-flight.
    for line in lines.by_ref() {
        if let Some(a) = parse(&line.unwrap()) {
            acked.push(a);
            if acked.len() == 400 {
                break;
            }
        }
    }
    assert_eq!(acked.len(), 400, "writer died before 400 acknowledgements");
    // SIGKILL through kill(1): the writer gets no chance to flush or clean up.
    let status = Command::new("kill")
        .args(["-9", &proc.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Acknowledgements printed before the kill are still in the pipe.
    for line in lines {
        match line {
            Ok(l) => acked.extend(parse(&l)),
            Err(_) => break,
        }
    }
    let exit = proc.wait().unwrap();
    assert!(
        !exit.success(),
        "the writer must have been killed, not finished"
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = RedbStore::open(&path).unwrap();
        for (key, rev) in &acked {
            let kv = store
                .get(key)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged {key} lost"));
            assert_eq!(kv.mod_revision, *rev, "{key}");
            assert_eq!(kv.value, payload(key), "{key} value");
        }
        // Nothing half-written: every present key holds its whole value, and the history
        // is one gap-free run of revisions ending at the store revision.
        let all = store
            .range("/durability/", RangeOptions::default())
            .await
            .unwrap();
        assert!(all.kvs.len() >= acked.len());
        for kv in &all.kvs {
            assert_eq!(kv.value, payload(&kv.key), "{} torn", kv.key);
        }
        let max_acked = acked.iter().map(|a| a.1).max().unwrap();
        let revision = store.revision().await.unwrap();
        assert!(revision >= max_acked);
        assert_eq!(
            revision as usize,
            all.kvs.len(),
            "one revision per surviving create"
        );
        let mut watch = store.watch("/durability/", 1).await.unwrap();
        for expected in 1..=revision {
            let e = tokio::time::timeout(Duration::from_secs(10), watch.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!((e.revision(), e.kind), (expected, EventKind::Put));
        }
        // And the store goes on from there.
        let next = store
            .create("/durability/after", Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(next.mod_revision, revision + 1);
        eprintln!(
            "durability: {} acknowledged, {} present after SIGKILL at revision {revision}",
            acked.len(),
            all.kvs.len()
        );
    });
}
