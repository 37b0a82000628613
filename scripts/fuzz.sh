#!/usr/bin/env bash
# Replays every fuzz target's corpus, then fuzzes each for SECONDS (default 30).
# Needs the nightly toolchain and cargo-fuzz (installed here if missing).
set -euo pipefail
seconds="${1:-30}"
cd "$(dirname "$0")/../fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi

for target in $(cargo fuzz list); do
  new="$(mktemp -d)"
  echo "fuzz: $target: replaying corpus/$target"
  cargo +nightly fuzz run "$target" "corpus/$target" -- -runs=0
  echo "fuzz: $target: fuzzing for ${seconds}s"
  # New inputs go to a scratch directory; the seed corpus stays as committed.
  cargo +nightly fuzz run "$target" "$new" "corpus/$target" -- -max_total_time="$seconds"
  rm -rf "$new"
done
