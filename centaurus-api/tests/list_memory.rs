//! A list of every pod streams: the server's memory while it answers is a small multiple
//! of one page, whatever the list's size, and it gives the memory back. One test in its own
//! process, so the process's resident memory is the server's.
//!
//! `LIST_MEMORY_PODS=200000 cargo test --release -p centaurus-api --test list_memory --
//! --nocapture` prints the figures for a larger region.

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use common::{Harness, PeakRss, fill_pods, rss};
use http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

const MIB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_list_streams_in_bounded_memory() {
    let pods: usize = std::env::var("LIST_MEMORY_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40_000);
    let h = Harness::new().await;
    let started = Instant::now();
    fill_pods(&h.store, "acme", "default", pods).await;
    let filled = started.elapsed();
    let before = rss();
    let sampler = PeakRss::start();
    let listing = Instant::now();
    let req = Request::get("/api/v1/tenants/acme/pods")
        .header("authorization", format!("Bearer {}", h.system))
        .body(Body::empty())
        .unwrap();
    let res = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    // Read as a client would, keeping only the count and the end.
    let mut body = res.into_body();
    let (mut bytes, mut tail) = (0usize, Vec::new());
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            bytes += data.len();
            tail.extend_from_slice(&data);
            let keep = tail.len().saturating_sub(200);
            tail.drain(..keep);
        }
    }
    let listed = listing.elapsed();
    let peak = sampler.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss();
    let tail = String::from_utf8_lossy(&tail);
    println!(
        "{pods} pods written in {filled:.1?}; listed {} MB in {listed:.2?}; RSS {} MiB before, peak +{} MiB, after +{} MiB",
        bytes / 1_000_000,
        before / MIB,
        (peak - before) / MIB,
        after.saturating_sub(before) / MIB,
    );
    assert!(tail.ends_with("}}"), "the list is whole: …{tail}");
    assert!(tail.contains("\"resourceVersion\""), "…{tail}");
    assert!(bytes > pods * 400, "{bytes} bytes for {pods} pods");
    // Before lists streamed, the whole list was built as JSON values and then copied into
    // one body: about 25 times its size.
    assert!(
        peak - before < 64 * MIB,
        "a {} MB list took {} MiB",
        bytes / 1_000_000,
        (peak - before) / MIB
    );
}
