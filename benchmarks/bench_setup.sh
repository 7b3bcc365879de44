#!/usr/bin/env bash
# Benchmark (not a test): `make setup` as a new user meets it, in a fresh clone with empty
# package caches. Prints the wall time, the size of .venv and the PyTorch build it chose.
#
# Usage: benchmarks/bench_setup.sh [CLONE_DIR]    (default: a new temporary folder, removed after)
# It clones the current commit (commit your work first); uv is used from PATH when present,
# else bootstrapped with pip as on a fresh machine (run `pip uninstall uv` first to see that).
set -euo pipefail
repo="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
dest="${1:-$(mktemp -d)/deepfake-detector}"
caches="$(mktemp -d)"
trap 'rm -rf "$caches"' EXIT

git clone -q "$repo" "$dest"
cd "$dest"
echo "clone: $dest at $(git rev-parse --short HEAD)"
start=$(date +%s.%N)
# Empty caches: uv and pip download everything, as on a new machine.
UV_CACHE_DIR="$caches/uv" UV_NO_CACHE=1 PIP_NO_CACHE_DIR=1 make setup > "$caches/setup.log" 2>&1 \
  || { tail -40 "$caches/setup.log"; exit 1; }
end=$(date +%s.%N)
grep -E '^\[setup\] (PyTorch build|uv not found|Falling back)|^torch ' "$caches/setup.log" || true
printf 'make setup: %.0f s wall\n' "$(echo "$end - $start" | bc)"
echo ".venv: $(du -sh .venv | cut -f1)"
if [ -z "${1:-}" ]; then rm -rf "$(dirname "$dest")"; fi
