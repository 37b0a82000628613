//! `centaurus up` initializes a region once and keeps it across restarts.

use std::process::Command;

fn up(dir: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_centaurus"))
        .args([
            "up",
            "--api-only",
            "--exit-when-ready",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn up_initializes_once_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let first = up(dir.path());
    assert!(
        first.contains("region ready") && first.contains("(initialized)"),
        "{first}"
    );
    assert!(
        first.contains("1 tenants") && first.contains("3 namespaces"),
        "{first}"
    );
    let second = up(dir.path());
    assert!(
        second.contains("(reopened)") && second.contains("1 tenants"),
        "{second}"
    );
    // Same revision: reopening wrote nothing.
    let rev = |s: &str| {
        s.split("at revision ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(rev(&first), rev(&second));
}

#[test]
fn up_reports_an_unusable_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_centaurus"))
        .args([
            "up",
            "--exit-when-ready",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("data directory"), "{err}");
}
