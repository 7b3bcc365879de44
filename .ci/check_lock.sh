#!/usr/bin/env bash
# CI reproducibility check: fail when code, params or dvc.yaml changed but dvc.lock was
# not updated (someone forgot `dvc repro` before committing).
#
# Runs on a fresh clone with no DVC cache and no remote. `dvc status` there also reports
# every output as "not in cache"/"deleted", which only means the data has not been
# pulled; this script ignores those and fails only on what a stale lock looks like:
#   - a stage of dvc.yaml that dvc.lock does not have,
#   - a changed command,
#   - a dependency (code, config) or param whose hash/value differs from dvc.lock,
#   - a git-tracked output (metrics, reports) that differs from dvc.lock,
#   - a dependency recorded with another hash than its producing stage's output
#     (a partial `dvc repro STAGE` committed without rerunning what follows it),
#   - a missing dependency that no stage produces.
# Needs `dvc` and a `python` with PyYAML on PATH (the project's .venv/bin).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"

STATUS_JSON="$(dvc status --json)"
STAGES="$(dvc stage list --name-only)"
export STATUS_JSON STAGES

exec "${PYTHON:-python}" - <<'PY'
import json
import os
import sys
from pathlib import Path

import yaml

status = json.loads(os.environ["STATUS_JSON"] or "{}")
stages = os.environ["STAGES"].split()
lock_path = Path("dvc.lock")
lock = (yaml.safe_load(lock_path.read_text()) or {}).get("stages", {}) if lock_path.is_file() else {}

problems: dict[str, list[str]] = {}


def add(stage: str, why: str) -> None:
    problems.setdefault(stage, []).append(why)


def hash_of(entry: dict) -> tuple:
    return tuple(entry.get(k) for k in ("md5", "etag", "checksum"))


# Outputs recorded in the lock: path -> (stage, entry).
produced = {o["path"]: (name, o) for name, s in lock.items() for o in s.get("outs", [])}
# Outputs declared in dvc.yaml (plain stages; templated ones are covered by the lock).
declared = set(produced)
for s in ((yaml.safe_load(Path("dvc.yaml").read_text()) or {}).get("stages") or {}).values():
    for kind in ("outs", "metrics", "plots"):
        for out in (s.get(kind) or []) if isinstance(s, dict) else []:
            declared.update([out] if isinstance(out, str) else out)


def is_produced(path: str) -> bool:
    return any(path == out or path.startswith(out.rstrip("/") + "/") for out in declared)


ABSENT = "(absent)"


def flatten(value, prefix: str) -> dict:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}"))
        return out
    return {prefix: value}


def param_diff(stage: str, file: str, key: str) -> str:
    """Which leaf values of a params section differ from the lock, e.g. ' (train.lr: 0.0003 -> 0.001)'."""
    try:
        current = yaml.safe_load(Path(file).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return ""
    old = (lock.get(stage, {}).get("params", {}).get(file) or {})
    for part in key.split("."):
        current = current.get(part) if isinstance(current, dict) else None
    was, now = flatten(old.get(key), key), flatten(current, key)
    changed = [f"{k}: {was.get(k, ABSENT)} -> {now.get(k, ABSENT)}"
               for k in sorted(set(was) | set(now)) if was.get(k, ABSENT) != now.get(k, ABSENT)]
    return f" ({', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''})" if changed else ""


if not lock_path.is_file():
    print("ERROR: dvc.lock is missing.", file=sys.stderr)
for name in stages:
    if name not in lock:
        add(name, "not in dvc.lock")

for name, entries in status.items():
    for entry in entries:
        if entry == "changed command":
            add(name, "command changed")
        elif entry == "changed checksum":
            add(name, "stage definition changed")
        elif isinstance(entry, dict):
            for kind, changes in entry.items():
                for path, state in changes.items():
                    if kind == "changed deps" and isinstance(state, dict):  # a params file
                        for key, what in state.items():
                            add(name, f"param {key} {what}{param_diff(name, path, key)}")
                    elif kind == "changed deps" and name in lock:  # else "not in dvc.lock" says it
                        if state != "deleted":
                            add(name, f"dependency {path} {state}")
                        elif not is_produced(path):  # else an upstream output, not pulled
                            add(name, f"dependency {path} is missing and no stage produces it")
                    elif kind == "changed outs" and state not in ("deleted", "not in cache") and name in lock:
                        add(name, f"output {path} {state} (differs from dvc.lock)")

# dvc status does not compare the lock with itself: a dependency recorded with another
# hash than the output its upstream stage recorded means a partial repro was committed.
for name, s in lock.items():
    for dep in s.get("deps", []):
        up = produced.get(dep["path"])
        if up and up[0] != name and hash_of(dep) != hash_of(up[1]):
            add(name, f"dependency {dep['path']} differs from what stage {up[0]} recorded (rerun after {up[0]})")

gone = sorted(set(lock) - set(stages))
if gone:
    print(f"note: dvc.lock still has stage(s) no longer in dvc.yaml: {', '.join(gone)}", file=sys.stderr)

if problems:
    print("ERROR: dvc.lock is out of date with the code, params or dvc.yaml in this commit.", file=sys.stderr)
    print("Stale stages (everything downstream of them reruns too):", file=sys.stderr)
    for name in stages + sorted(set(problems) - set(stages)):
        if name in problems:
            print(f"  - {name}: {'; '.join(dict.fromkeys(problems[name]))}", file=sys.stderr)
    print("Fix: run `dvc repro` and commit dvc.lock (git add dvc.lock && git commit).", file=sys.stderr)
    sys.exit(1)
print(f"dvc.lock is up to date with code, params and dvc.yaml ({len(stages)} stages).")
PY
