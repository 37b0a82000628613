//! `centaurus density` runs end to end on a small hollow region and reports every pod of
//! both phases as started, the heartbeat cost, and the scheduler's counters. (The figures
//! themselves are for people; this checks the tool works.)

use std::process::Command;

#[test]
fn density_reports_every_pod_started() {
    let out = Command::new(env!("CARGO_BIN_EXE_centaurus"))
        .args([
            "density",
            "--nodes",
            "20",
            "--zones",
            "2",
            "--pods",
            "300",
            "--latency-pods",
            "40",
            "--rate",
            "200",
            "--heartbeat",
            "1",
            "--soak",
            "2",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("density: 20 nodes registered"), "{text}");
    assert!(text.contains("heartbeat: 20 nodes every 1s"), "{text}");
    assert!(
        text.contains("saturation: 300 of 300 pods started"),
        "{text}"
    );
    assert!(
        text.contains("latency at 200 pods/s: 40 of 40 pods started"),
        "{text}"
    );
    assert!(text.contains("scheduler: 340 bound, 0 conflicts"), "{text}");

    // Real workloads without a node agent able to run them: a clear error.
    let out = Command::new(env!("CARGO_BIN_EXE_centaurus"))
        .args(["density", "--workload", "vm", "--no-agents", "--pods", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--no-agents applies to hollow pods only")
    );
}
