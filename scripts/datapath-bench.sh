#!/usr/bin/env bash
# Reproduces the datapath figures on this machine and prints two tables: the cost of each
# path through the XDP programs (ns/packet, kernel-measured), then pod-to-pod TCP
# throughput, 64-byte UDP rate at < 1% loss, CPU per packet and TCP round trips over our
# Geneve overlay at the TC hook and at the XDP hook, the kernel's VXLAN overlay and plain
# veth routing, in one run, with ratios to VXLAN. Needs root (network namespaces, BPF).
# Takes about eight minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
cargo bench -p centaurus-benches --bench xdp_paths
cargo bench -p centaurus-benches --bench datapath
