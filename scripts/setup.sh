#!/usr/bin/env bash
# Installs what building and testing Centaurus needs on a Debian machine. Idempotent: it
# installs only what is missing. Run as root or with sudo available.
set -euo pipefail

packages=(
  etcd-server        # the distributed store engine; tests start it on loopback
  protobuf-compiler  # protoc, for etcd-client's gRPC code
  libprotobuf-dev    # well-known .proto types
  clang              # BPF programs (centaurus-xdp)
  libbpf-dev         # BPF headers
  pkg-config
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "setup: system packages present (${packages[*]})"
