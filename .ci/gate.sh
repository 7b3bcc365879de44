#!/usr/bin/env bash
# CI metric gate: reproduce the pipeline on the embedded sample, then compare the fresh
# metrics with the committed baseline (.ci/metrics_baseline.json, the last landed metrics: it
# moves only with `python tools/gate.py --update-baseline`), rule by rule (.ci/metric_rules.yaml).
# The gate's table says which baseline it used.
#
# Usage: .ci/gate.sh [--no-repro] [gate options, e.g. --baseline-rev HEAD^]
#   --no-repro  gate the metrics already in the working tree (after your own `dvc repro`)
# When $GITHUB_STEP_SUMMARY is set, the table is appended to it as well.
# Needs `dvc` and the package's `python` on PATH (the project's .venv/bin).
set -euo pipefail
# The gate is found next to this script, not in the repository being gated (the current
# directory's checkout), so that this checkout's gate can judge another clone too.
gate="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tools/gate.py"
cd "$(git rev-parse --show-toplevel)"

repro=1
if [[ "${1:-}" == "--no-repro" ]]; then
  repro=0
  shift
fi
if (( repro )); then
  # --force: every stage runs on this machine, so the metrics are measured here, not
  # restored from the run cache or a remote; that is what the gate is meant to judge.
  dvc repro --force
fi

extra=()
if [[ -n "${GITHUB_STEP_SUMMARY:-}" ]]; then
  extra+=(--markdown-out "$GITHUB_STEP_SUMMARY")
fi
exec python "$gate" "${extra[@]}" "$@"
