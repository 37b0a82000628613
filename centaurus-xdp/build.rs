//! Compiles the BPF programs in `bpf/` with clang into `$OUT_DIR/transit.o`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for f in ["bpf/transit.c", "bpf/maps.h"] {
        println!("cargo::rerun-if-changed={f}");
    }
    println!("cargo::rerun-if-env-changed=CLANG");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    if Command::new(&clang).arg("--version").output().is_err() {
        panic!(
            "centaurus-xdp compiles its BPF programs with clang, which was not found.\n\
             Install clang and the libbpf headers (Debian: `apt-get install clang libbpf-dev`, \
             or run scripts/setup.sh), or point CLANG at a clang binary."
        );
    }
    // linux/types.h includes asm/types.h, which lives under the multiarch include directory.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let obj = out.join("transit.o");
    let result = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror", "-Ibpf"])
        .arg(format!("-I{multiarch}"))
        .args(["-c", "bpf/transit.c", "-o"])
        .arg(&obj)
        .output()
        .expect("clang runs");
    if !result.status.success() {
        panic!(
            "clang failed to compile bpf/transit.c:\n{}\n(the libbpf headers come from \
             Debian's libbpf-dev; scripts/setup.sh installs them)",
            String::from_utf8_lossy(&result.stderr)
        );
    }
}
