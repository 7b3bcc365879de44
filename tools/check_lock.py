"""CI reproducibility check: is ``dvc.lock`` up to date with the code, params and dvc.yaml?

Fails when code, params or ``dvc.yaml`` changed but ``dvc.lock`` was not updated (someone
forgot ``dvc repro`` before committing).

Runs on a fresh clone with no DVC cache and no remote. ``dvc status`` there also reports
every output as "not in cache"/"deleted", which only means the data has not been pulled;
this check ignores those and fails only on what a stale lock looks like:

* a stage of dvc.yaml that dvc.lock does not have,
* a changed command,
* a dependency (code, config) or param whose hash/value differs from dvc.lock,
* a git-tracked output (metrics, reports) that differs from dvc.lock,
* a dependency recorded with another hash than its producing stage's output (a partial
  ``dvc repro STAGE`` committed without rerunning what follows it),
* a missing dependency that no stage produces.

Usage::

    python tools/check_lock.py [--repo .]

It runs ``dvc status --json`` and ``dvc stage list --name-only`` itself, with the ``dvc``
next to the running Python (the project's .venv/bin) when there is one, else the one on
PATH. Needs only the standard library and PyYAML; it never imports ``deepfake_detector``.

Exit status: 0 when the lock is up to date, 1 when it is stale; when ``git`` or ``dvc``
fails, that command's own exit status (127 when ``dvc`` is not found).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

ABSENT = "(absent)"


class CommandError(Exception):
    """``git`` or ``dvc`` failed; the check exits with that command's status.

    Attributes:
        returncode: The failed command's exit status.
    """

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode


def dvc_executable() -> str:
    """The ``dvc`` to run: the one beside ``sys.executable``, else the one on PATH.

    The venv's ``bin`` is often not on PATH when someone runs ``.venv/bin/python
    tools/check_lock.py``; the dvc installed with that Python is the one that matches the
    lock's format. ``sys.executable`` is deliberately not resolved: a venv's python is a
    symlink to the base interpreter, whose directory has no dvc.

    Raises:
        CommandError: If neither exists (status 127, like a shell's "command not found").
    """
    beside = Path(sys.executable).parent / "dvc"
    if beside.is_file():
        return str(beside)
    found = shutil.which("dvc")
    if found:
        return found
    raise CommandError(f"dvc not found next to {sys.executable} nor on PATH", 127)


def _run(cmd: list[str], cwd: Path) -> str:
    """Run ``cmd`` and return its stdout; its stderr goes straight to ours.

    Raises:
        CommandError: If it exits non-zero or cannot be started.
    """
    try:
        proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, text=True, check=False)
    except OSError as exc:
        raise CommandError(f"cannot run {cmd[0]}: {exc}", 127) from exc
    if proc.returncode != 0:
        raise CommandError(f"`{' '.join(cmd)}` failed with exit status {proc.returncode}", proc.returncode)
    return proc.stdout


def repo_root(path: Path) -> Path:
    """The git working tree that contains ``path`` (dvc.yaml and dvc.lock live at its top)."""
    return Path(_run(["git", "rev-parse", "--show-toplevel"], cwd=path).strip())


def dvc_state(root: Path) -> tuple[dict[str, Any], list[str]]:
    """``(dvc status --json, dvc stage list --name-only)`` of the top-level ``dvc.yaml`` at ``root``.

    Only that pipeline: the released detector's (``release/dvc.yaml``, a DVC subrepo of its
    own) records in ``release/dvc.lock`` what the committed release was made with, and is
    rerun to make a new release, not after every code change.
    """
    dvc = dvc_executable()
    status_json = _run([dvc, "status", "dvc.yaml", "--json"], cwd=root)
    stages = _run([dvc, "stage", "list", "dvc.yaml", "--name-only"], cwd=root).split()
    return json.loads(status_json.strip() or "{}"), stages


def _hash_of(entry: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(entry.get(k) for k in ("md5", "etag", "checksum"))


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}"))
        return out
    return {prefix: value}


def param_diff(root: Path, lock: dict[str, Any], stage: str, file: str, key: str) -> str:
    """Which leaf values of a params section differ from the lock.

    Args:
        root: Repository root (``file`` is relative to it).
        lock: The ``stages:`` mapping of dvc.lock.
        stage: Stage name.
        file: Params file, e.g. ``params.yaml``.
        key: Params section or key as dvc.yaml names it, e.g. ``train``.

    Returns:
        e.g. ``" (train.lr: 0.0003 -> 0.001)"``; empty when nothing can be said.
    """
    try:
        current = yaml.safe_load((root / file).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return ""
    old = lock.get(stage, {}).get("params", {}).get(file) or {}
    for part in key.split("."):
        current = current.get(part) if isinstance(current, dict) else None
    was, now = _flatten(old.get(key), key), _flatten(current, key)
    changed = [f"{k}: {was.get(k, ABSENT)} -> {now.get(k, ABSENT)}"
               for k in sorted(set(was) | set(now)) if was.get(k, ABSENT) != now.get(k, ABSENT)]
    return f" ({', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''})" if changed else ""


def _declared_outputs(root: Path, lock: dict[str, Any]) -> set[str]:
    """Outputs recorded in the lock or declared in dvc.yaml (templated stages: the lock covers them)."""
    declared = {o["path"] for s in lock.values() for o in s.get("outs", [])}
    for s in ((yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages") or {}).values():
        for kind in ("outs", "metrics", "plots"):
            for out in (s.get(kind) or []) if isinstance(s, dict) else []:
                declared.update([out] if isinstance(out, str) else out)
    return declared


def _status_reasons(root: Path, name: str, entry: Any, lock: dict[str, Any], declared: set[str]) -> list[str]:
    """What one ``dvc status`` entry of stage ``name`` says, in words."""
    if entry == "changed command":
        return ["command changed"]
    if entry == "changed checksum":
        return ["stage definition changed"]
    if not isinstance(entry, dict):
        return []

    def is_produced(path: str) -> bool:
        return any(path == out or path.startswith(out.rstrip("/") + "/") for out in declared)

    reasons = []
    for kind, changes in entry.items():
        for path, state in changes.items():
            if kind == "changed deps" and isinstance(state, dict):  # a params file
                reasons += [f"param {key} {what}{param_diff(root, lock, name, path, key)}" for key, what in state.items()]
            elif kind == "changed deps" and name in lock:  # else "not in dvc.lock" says it
                if state != "deleted":
                    reasons.append(f"dependency {path} {state}")
                elif not is_produced(path):  # else an upstream output, not pulled
                    reasons.append(f"dependency {path} is missing and no stage produces it")
            elif kind == "changed outs" and state not in ("deleted", "not in cache") and name in lock:
                reasons.append(f"output {path} {state} (differs from dvc.lock)")
    return reasons


def _partial_repros(lock: dict[str, Any]) -> list[tuple[str, str]]:
    """(stage, reason) where a dependency's hash differs from what its upstream stage recorded.

    dvc status does not compare the lock with itself: such a mismatch means a partial repro
    was committed.
    """
    produced = {o["path"]: (name, o) for name, s in lock.items() for o in s.get("outs", [])}
    found = []
    for name, s in lock.items():
        for dep in s.get("deps", []):
            up = produced.get(dep["path"])
            if up and up[0] != name and _hash_of(dep) != _hash_of(up[1]):
                found.append((name, f"dependency {dep['path']} differs from what stage {up[0]} recorded (rerun after {up[0]})"))
    return found


def find_problems(
    root: Path, status: dict[str, Any], stages: Sequence[str], lock: dict[str, Any]
) -> dict[str, list[str]]:
    """Why each stale stage is stale.

    Args:
        root: Repository root, holding dvc.yaml and the params files.
        status: Parsed ``dvc status --json``.
        stages: Stage names, from ``dvc stage list --name-only``.
        lock: The ``stages:`` mapping of dvc.lock (empty when there is no lock).

    Returns:
        Stage name -> reasons, in the order found (may repeat; the caller deduplicates).
    """
    problems: dict[str, list[str]] = {}
    for name in stages:
        if name not in lock:
            problems.setdefault(name, []).append("not in dvc.lock")
    declared = _declared_outputs(root, lock)
    for name, entries in status.items():
        for entry in entries:
            for why in _status_reasons(root, name, entry, lock, declared):
                problems.setdefault(name, []).append(why)
    for name, why in _partial_repros(lock):
        problems.setdefault(name, []).append(why)
    return problems


def check(root: Path, status: dict[str, Any], stages: Sequence[str]) -> int:
    """Compare dvc.lock at ``root`` with ``dvc status``; print the verdict.

    Args:
        root: Repository root.
        status: Parsed ``dvc status --json``.
        stages: Stage names, from ``dvc stage list --name-only``.

    Returns:
        0 when the lock is up to date, 1 when it is stale.
    """
    stages = list(stages)
    lock_path = root / "dvc.lock"
    lock = (yaml.safe_load(lock_path.read_text()) or {}).get("stages", {}) if lock_path.is_file() else {}
    if not lock_path.is_file():
        print("ERROR: dvc.lock is missing.", file=sys.stderr)
    problems = find_problems(root, status, stages, lock)

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
        return 1
    print(f"dvc.lock is up to date with code, params and dvc.yaml ({len(stages)} stages).")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check from the command line.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status (see the module docstring).
    """
    ap = argparse.ArgumentParser(prog="python tools/check_lock.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, default=Path("."), help="inside the git repository (its root is used)")
    args = ap.parse_args(argv)
    try:
        root = repo_root(args.repo)
        status, stages = dvc_state(root)
    except CommandError as exc:
        # The failing command already explained itself on stderr; say which one it was.
        print(f"ERROR: {exc}", file=sys.stderr)
        return exc.returncode
    return check(root, status, stages)


if __name__ == "__main__":
    raise SystemExit(main())
