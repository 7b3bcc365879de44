"""`dvc metrics show` stays readable: a few headline metrics, all of them in the README's table.

The headline files are the ones ``dvc.yaml`` declares as ``metrics:``; everything else (per
aggregation, per manipulation, per video, calibration internals) lives in plain outputs. The
count is taken from the committed files, as ``dvc metrics show`` counts them: every leaf,
strings and nulls included.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tools.gate import declared_metrics

REPO = Path(__file__).resolve().parents[1]
MAX_METRICS = 30
README_SECTION = "## What `make demo` reports"


def _leaves(data: Any, prefix: str = "") -> list[str]:
    """Dotted keys of every non-mapping value, as `dvc metrics show` lists them."""
    if isinstance(data, dict):
        return [key for k, v in data.items() for key in _leaves(v, f"{prefix}.{k}" if prefix else str(k))]
    return [prefix]


def _declared() -> dict[str, list[str]]:
    return {f: _leaves(json.loads((REPO / f).read_text())) for f in declared_metrics(REPO) if (REPO / f).is_file()}


def test_at_most_30_metrics_are_declared() -> None:
    files = declared_metrics(REPO)
    assert files, "dvc.yaml declares no metrics"
    missing = [f for f in files if not (REPO / f).is_file()]
    assert not missing, f"declared but not committed: {missing}"
    counts = {f: len(keys) for f, keys in _declared().items()}
    assert sum(counts.values()) <= MAX_METRICS, (
        f"{sum(counts.values())} metrics declared ({counts}): keep <= {MAX_METRICS} headline figures in the "
        "files dvc.yaml declares as metrics and move the rest to a details file (a plain output)")


def _readme_table() -> set[tuple[str, str]]:
    """``(file, key)`` pairs of the README's metric table; files are named relative to outputs/."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(README_SECTION):]
    section = section[: section.find("\n## ", 1)]
    pairs: set[tuple[str, str]] = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("what", "---"):
            continue
        file = None
        for token, colon in re.findall(r"`([^`]+)`(:?)", cells[1]):
            if colon:
                file = f"outputs/{token}"
            else:
                assert file is not None, f"README row names a key before its file: {line}"
                pairs.add((file, token))
    return pairs


def test_readme_table_lists_the_declared_metrics() -> None:
    declared = {(f, k) for f, keys in _declared().items() for k in keys}
    table = _readme_table()
    assert table - declared == set(), "README's table names metrics that dvc.yaml does not declare"
    assert declared - table == set(), "declared metrics missing from README's table"


def test_dvc_metrics_show_agrees() -> None:
    dvc = Path(sys.executable).parent / "dvc"
    if not dvc.is_file():
        pytest.skip(f"no dvc next to {sys.executable}")
    proc = subprocess.run([str(dvc), "metrics", "show", "--json"], cwd=REPO, capture_output=True, text=True,
                          check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (shown,) = json.loads(proc.stdout).values()  # the workspace
    listed = {f: _leaves(v.get("data", {})) for f, v in shown["data"].items()}
    assert sum(map(len, listed.values())) <= MAX_METRICS, {f: len(k) for f, k in listed.items()}
    assert listed == _declared()
