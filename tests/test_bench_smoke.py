"""benchmarks/smoke.sh (CI's smoke run of the benchmarks) names every benchmark.

The smoke run itself needs the pipeline's outputs and a couple of minutes, so CI runs it after
the metric gate (.ci/run), not here; this only checks that no benchmark is left out of it.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "benchmarks" / "smoke.sh"


def test_every_benchmark_has_a_smoke_entry() -> None:
    entries = set(re.findall(r"^\s+([\w.-]+\.(?:py|sh))\)", SMOKE.read_text(), re.MULTILINE))
    files = {p.name for p in SMOKE.parent.iterdir() if p.suffix in (".py", ".sh") and p != SMOKE}
    assert files, "no benchmarks found"
    assert files <= entries, f"no entry in benchmarks/smoke.sh for {sorted(files - entries)}"


def test_ci_runs_the_smoke_script() -> None:
    assert "bash benchmarks/smoke.sh" in (REPO / ".ci" / "run").read_text()
