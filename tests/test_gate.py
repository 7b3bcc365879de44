"""The CI metric gate: rules, lookups, the baseline file, and the CLI against real git baselines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tools.gate import GateError, MetricRule, check_rule, declared_metrics, load_rules, lookup, main, update_baseline

REPO = Path(__file__).resolve().parents[1]

BASELINE = {
    "video": {"auc": 0.90, "log_loss": 0.40},
    "video_at_0.5": {"auc": 0.90},
    "coverage": {"scored": 12, "test_videos": 12},
}

RULES = """\
rules:
  - {file: outputs/metrics.json, key: video.auc, direction: higher, max_drop: 0.1, floor: 0.6}
  - {file: outputs/metrics.json, key: video.log_loss, direction: lower, max_drop: 0.2, ceiling: 1.0}
  - {file: outputs/metrics.json, key: coverage.scored, direction: higher, max_drop: 0}
"""


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
        cwd=repo, check=True, capture_output=True,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repo with the rules, the metrics and the baseline file made from them, committed at HEAD."""
    (tmp_path / ".ci").mkdir()
    (tmp_path / ".ci" / "metric_rules.yaml").write_text(RULES)
    _write(tmp_path, BASELINE)
    _git(tmp_path, "init", "-q")
    update_baseline(tmp_path, tmp_path / BASELINE_FILE, load_rules(tmp_path / ".ci" / "metric_rules.yaml"))
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "baseline")
    return tmp_path


BASELINE_FILE = ".ci/metrics_baseline.json"


def _write(repo: Path, metrics: dict) -> Path:
    path = repo / "outputs" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics))
    return path


def _with(**changes: object) -> dict:
    """BASELINE with dotted keys replaced, e.g. ``_with(**{"video.auc": 0.7})``."""
    data = json.loads(json.dumps(BASELINE))
    for key, value in changes.items():
        section, name = key.rsplit(".", 1)
        data[section][name] = value
    return data


def _run(repo: Path, capsys: pytest.CaptureFixture, *extra: str) -> tuple[int, str]:
    code = main(["--repo", str(repo), *extra])
    return code, capsys.readouterr().out


def test_unchanged_metrics_pass(repo: Path, capsys: pytest.CaptureFixture) -> None:
    code, out = _run(repo, capsys)
    assert code == 0
    assert "Metric gate: passed" in out
    assert out.count("| pass |") == 3


def test_improvement_passes(repo: Path, capsys: pytest.CaptureFixture) -> None:
    _write(repo, _with(**{"video.auc": 0.97, "video.log_loss": 0.2}))
    code, out = _run(repo, capsys)
    assert code == 0
    assert "+0.0700" in out and "-0.2000" in out


def test_regression_beyond_rule_fails(repo: Path, capsys: pytest.CaptureFixture) -> None:
    _write(repo, _with(**{"video.auc": 0.75}))
    code, out = _run(repo, capsys)
    assert code == 1
    row = next(line for line in out.splitlines() if line.startswith("| video.auc "))
    assert "0.9000 | 0.7500 | -0.1500" in row
    assert "dropped by 0.1500, allowed 0.1" in row


def test_drop_within_rule_passes_but_floor_still_applies(repo: Path, capsys: pytest.CaptureFixture) -> None:
    _write(repo, _with(**{"video.auc": 0.80}))  # a drop of exactly the allowed 0.1
    assert _run(repo, capsys)[0] == 0
    (repo / ".ci" / "metric_rules.yaml").write_text(RULES.replace("floor: 0.6", "floor: 0.85"))
    code, out = _run(repo, capsys)
    assert code == 1 and "below floor 0.85" in out


def test_lower_is_better_rule(repo: Path, capsys: pytest.CaptureFixture) -> None:
    _write(repo, _with(**{"video.log_loss": 0.65}))
    code, out = _run(repo, capsys)
    assert code == 1 and "rose by 0.2500, allowed 0.2" in out


def test_coverage_must_not_drop_at_all(repo: Path, capsys: pytest.CaptureFixture) -> None:
    _write(repo, _with(**{"coverage.scored": 11}))
    code, out = _run(repo, capsys)
    assert code == 1
    assert "| coverage.scored | 12 | 11 | -1 |" in out


def test_deleted_metrics_file_fails(repo: Path, capsys: pytest.CaptureFixture) -> None:
    (repo / "outputs" / "metrics.json").unlink()
    code, out = _run(repo, capsys)
    assert code == 1
    assert out.count("outputs/metrics.json is missing from the working tree") == 3


def test_unreadable_metrics_file_fails(repo: Path, capsys: pytest.CaptureFixture) -> None:
    (repo / "outputs" / "metrics.json").write_text('{"video": {"auc": 0.9')
    code, out = _run(repo, capsys)
    assert code == 1 and "is unreadable: not valid JSON" in out


@pytest.mark.parametrize("value", [None, "0.9", float("nan"), True])
def test_null_or_non_numeric_metric_fails(repo: Path, capsys: pytest.CaptureFixture, value: object) -> None:
    _write(repo, _with(**{"video.auc": value}))
    code, out = _run(repo, capsys)
    assert code == 1
    row = next(line for line in out.splitlines() if line.startswith("| video.auc "))
    assert "**FAIL**: current video.auc is" in row


def test_absent_metric_key_fails(repo: Path, capsys: pytest.CaptureFixture) -> None:
    data = _with()
    del data["video"]["auc"]
    _write(repo, data)
    code, out = _run(repo, capsys)
    assert code == 1 and "current has no metric video.auc" in out


def test_null_baseline_fails(repo: Path, capsys: pytest.CaptureFixture) -> None:
    _write(repo, _with(**{"video.auc": None}))
    _git(repo, "commit", "-q", "-am", "null auc")
    _write(repo, BASELINE)
    code, out = _run(repo, capsys, "--baseline-rev", "HEAD")
    assert code == 1 and "baseline video.auc is null" in out
    baseline = json.loads((repo / BASELINE_FILE).read_text())
    baseline["metrics"]["outputs/metrics.json"]["video.auc"] = None
    (repo / BASELINE_FILE).write_text(json.dumps(baseline))
    code, out = _run(repo, capsys)
    assert code == 1 and "baseline video.auc is null" in out


def test_worse_committed_metrics_fail_against_the_baseline(repo: Path, capsys: pytest.CaptureFixture) -> None:
    # A change commits worse metrics of its own (video AUC 0.90 -> 0.70) and CI's repro gives them again.
    _write(repo, _with(**{"video.auc": 0.70}))
    _git(repo, "commit", "-q", "-am", "worse")
    code, out = _run(repo, capsys)
    assert code == 1
    assert "Baseline: .ci/metrics_baseline.json (committed; measured on top of" in out
    assert "| metric | baseline (.ci/metrics_baseline.json) | current |" in out
    row = next(line for line in out.splitlines() if line.startswith("| video.auc "))
    assert "0.9000 | 0.7000 | -0.2000" in row and "dropped by 0.2000" in row
    # Against the change's own commit (the gate's old baseline) the same metrics pass: the hole closed.
    code, out = _run(repo, capsys, "--baseline-rev", "HEAD")
    assert code == 0
    head = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert f"Baseline: the metrics files as committed at HEAD ({head})" in out
    # The change's first parent is the last landed state: against it, they fail too.
    code, out = _run(repo, capsys, "--baseline-rev", "HEAD^")
    assert code == 1 and "| metric | baseline (HEAD^) | current |" in out


def test_file_absent_at_baseline_rev(repo: Path, capsys: pytest.CaptureFixture) -> None:
    _git(repo, "rm", "-q", "outputs/metrics.json")
    _git(repo, "commit", "-q", "-m", "drop metrics")
    _write(repo, BASELINE)
    code, out = _run(repo, capsys, "--baseline-rev", "HEAD")
    assert code == 1 and "outputs/metrics.json is not committed at HEAD" in out


def test_update_baseline_moves_it_on_purpose(repo: Path, capsys: pytest.CaptureFixture) -> None:
    _write(repo, _with(**{"video.auc": 0.97}))
    code, out = _run(repo, capsys, "--update-baseline")
    assert code == 0
    assert "outputs/metrics.json: video.auc: 0.9000 -> 0.9700" in out and "1 metric(s) changed" in out
    saved = json.loads((repo / BASELINE_FILE).read_text())
    assert saved["metrics"]["outputs/metrics.json"] == {"coverage.scored": 12, "video.auc": 0.97, "video.log_loss": 0.4}
    _git(repo, "commit", "-q", "-am", "better model, baseline moved")
    # The gate now names what this change moved, against its first parent.
    code, out = _run(repo, capsys)
    assert code == 0
    assert "This change moves the baseline" in out and "- outputs/metrics.json: video.auc: 0.9000 -> 0.9700" in out
    # A later drop to 0.85 is judged against 0.97: beyond the rule, though within it of the old 0.90.
    _write(repo, _with(**{"video.auc": 0.85}))
    _git(repo, "commit", "-q", "-am", "worse again")
    code, out = _run(repo, capsys)
    assert code == 1 and "dropped by 0.1200, allowed 0.1" in out
    assert "This change moves the baseline" not in out


def test_update_baseline_needs_every_rule_metric(repo: Path, capsys: pytest.CaptureFixture) -> None:
    before = (repo / BASELINE_FILE).read_text()
    data = _with()
    del data["video"]["log_loss"]
    _write(repo, data)
    assert _run(repo, capsys, "--update-baseline") == (2, "")
    assert (repo / BASELINE_FILE).read_text() == before


def test_missing_baseline_file_is_a_usage_error(repo: Path, capsys: pytest.CaptureFixture,
                                                caplog: pytest.LogCaptureFixture) -> None:
    (repo / BASELINE_FILE).unlink()
    assert _run(repo, capsys) == (2, "")
    assert "python tools/gate.py --update-baseline" in caplog.text


def test_baseline_holds_the_declared_headline_metrics(repo: Path, capsys: pytest.CaptureFixture) -> None:
    (repo / "dvc.yaml").write_text(
        "stages:\n  train:\n    cmd: x\n    metrics:\n      - outputs/train.json:\n          cache: false\n"
        "  evaluate:\n    cmd: y\n    metrics: [outputs/metrics.json]\n")
    (repo / "outputs" / "train.json").write_text(json.dumps({"img_per_s": 20.5, "init": "random", "val": {"auc": 1.0}}))
    assert declared_metrics(repo) == ["outputs/train.json", "outputs/metrics.json"]
    assert _run(repo, capsys, "--update-baseline")[0] == 0
    saved = json.loads((repo / BASELINE_FILE).read_text())["metrics"]
    # Numbers only (strings are not compared); every headline key, not only the rules' ones.
    assert saved["outputs/train.json"] == {"img_per_s": 20.5, "val.auc": 1.0}
    assert saved["outputs/metrics.json"]["video_at_0.5.auc"] == 0.9
    assert _run(repo, capsys)[0] == 0


def test_usage_errors_exit_2(repo: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture) -> None:
    assert main(["--repo", str(repo), "--baseline-rev", "no-such-rev"]) == 2
    (repo / BASELINE_FILE).write_text('{"metrics": [1, 2]}')
    assert main(["--repo", str(repo)]) == 2
    assert main(["--repo", str(tmp_path_factory.mktemp("not_git"))]) == 2
    (repo / ".ci" / "metric_rules.yaml").write_text(RULES.replace("max_drop: 0}", "max_dorp: 0}"))
    assert main(["--repo", str(repo)]) == 2
    assert capsys.readouterr().out == ""  # no table when the gate cannot run


def test_markdown_out_appends(repo: Path, capsys: pytest.CaptureFixture, tmp_path_factory: pytest.TempPathFactory) -> None:
    summary = tmp_path_factory.mktemp("ci") / "summary.md"
    summary.write_text("# CI\n")
    code, out = _run(repo, capsys, "--markdown-out", str(summary))
    assert code == 0
    assert summary.read_text() == "# CI\n" + out


def test_lookup_handles_dots_inside_keys() -> None:
    data = {"video_at_0.5": {"auc": 0.7}, "video": {"auc": 0.8}, "a.b": {"c": 1}, "a": {"b": {"d": 2}}}
    assert lookup(data, "video_at_0.5.auc") == 0.7
    assert lookup(data, "video.auc") == 0.8
    assert lookup(data, "a.b.c") == 1
    assert lookup(data, "a.b.d") == 2  # "a.b" has no "d": falls back to data["a"]["b"]["d"]
    with pytest.raises(KeyError):
        lookup(data, "video.eer")


def test_rule_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="checks nothing"):
        MetricRule(file="m.json", key="video.auc")
    with pytest.raises(ValueError, match="max_drop must be >= 0"):
        MetricRule(file="m.json", key="video.auc", max_drop=-0.1)
    with pytest.raises(ValueError, match="above ceiling"):
        MetricRule(file="m.json", key="video.auc", floor=0.9, ceiling=0.5)
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - {file: m.json, key: a, max_drop: 0}\n  - {file: m.json, key: a, floor: 1}\n")
    with pytest.raises(GateError, match="two rules for m.json:a"):
        load_rules(path)
    path.write_text("rules: []\n")
    with pytest.raises(GateError, match="non-empty"):
        load_rules(path)


def test_floor_only_rule_ignores_missing_baseline() -> None:
    rule = MetricRule(file="m.json", key="video.auc", floor=0.5)
    result = check_rule(rule, (None, "m.json is not committed at HEAD"), ({"video": {"auc": 0.6}}, None))
    assert result.ok and result.baseline is None and result.change is None


def test_repository_rules_file_is_valid() -> None:
    rules = load_rules(REPO / ".ci" / "metric_rules.yaml")
    keys = {r.key: r for r in rules}
    assert keys["coverage.scored"].max_drop == 0
    assert keys["video.auc"].floor is not None
    # Every rule names a metric that the pipeline writes (checked when the file is there), and
    # one that the committed baseline holds.
    baseline = json.loads((REPO / BASELINE_FILE).read_text())["metrics"]
    for rule in rules:
        committed = REPO / rule.file
        if committed.is_file():
            assert isinstance(lookup(json.loads(committed.read_text()), rule.key), (int, float)), rule.key
        assert isinstance(lookup(baseline[rule.file], rule.key), (int, float)), rule.key
    # The baseline holds every headline metrics file dvc.yaml declares.
    assert set(declared_metrics(REPO)) <= set(baseline)


def test_script_entry_point(repo: Path) -> None:
    _write(repo, _with(**{"video.auc": 0.5}))
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "gate.py"), "--repo", str(repo)],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 1
    assert "| video.auc | 0.9000 | 0.5000 | -0.4000 |" in proc.stdout
    assert "metric gate failed" in proc.stderr


# Runs a tools/ script with every import of deepfake_detector made to fail, so that a CI
# tool that quietly depends on the runtime package it judges is caught here.
WITHOUT_PACKAGE = """\
import runpy
import sys


class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "deepfake_detector":
            raise ImportError(f"{name} is blocked: CI tools must not import the package")


sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _without_package(script: str, *args: str, cwd: Path | None = None,
                     env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_PACKAGE, str(REPO / "tools" / script), *args],
        cwd=cwd, env=env, capture_output=True, text=True, check=False,
    )


def test_gate_runs_without_the_package(repo: Path) -> None:
    proc = _without_package("gate.py", "--repo", str(repo))
    assert proc.returncode == 0, proc.stderr
    assert "Metric gate: passed" in proc.stdout


def test_gate_sh_runs_gate_without_repro(repo: Path) -> None:
    _write(repo, _with(**{"coverage.scored": 10}))
    proc = subprocess.run(
        ["bash", str(REPO / ".ci" / "gate.sh"), "--no-repro"],
        cwd=repo, capture_output=True, text=True, check=False,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "| coverage.scored | 12 | 10 | -2 |" in proc.stdout


# -- tools/check_lock.py -------------------------------------------------------------------

GEN = """\
import sys
from pathlib import Path

import yaml

n = yaml.safe_load(Path("params.yaml").read_text())["gen"]["n"]
Path(sys.argv[1]).parent.mkdir(parents=True, exist_ok=True)
Path(sys.argv[1]).write_text(str(n) * n)
"""

PIPELINE = """\
stages:
  gen:
    cmd: python gen.py out/a.txt
    deps: [gen.py]
    params: [gen]
    outs: [out/a.txt]
  count:
    cmd: python -c "import sys, pathlib; pathlib.Path('count.txt').write_text(str(len(pathlib.Path('out/a.txt').read_text())))"
    deps: [out/a.txt]
    outs:
      - count.txt:
          cache: false
"""


def _lock_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHON": sys.executable, "DVC_NO_ANALYTICS": "1"}


def _dvc(repo: Path, *args: str) -> None:
    subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=repo, env=_lock_env(), check=True, capture_output=True)


def _check_lock(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / "check_lock.py")], cwd=repo, env=_lock_env(),
                          capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def lock_origin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-stage DVC repo, reproduced, with dvc.lock committed (shared: tests only clone it)."""
    origin = tmp_path_factory.mktemp("lock") / "origin"
    origin.mkdir()
    _git(origin, "init", "-q")
    _dvc(origin, "init", "-q")
    (origin / "gen.py").write_text(GEN)
    (origin / "params.yaml").write_text("gen:\n  n: 3\n")
    (origin / "dvc.yaml").write_text(PIPELINE)
    _dvc(origin, "repro", "-q")
    _git(origin, "add", ".")
    _git(origin, "commit", "-q", "-m", "pipeline")
    return origin


def _clone(origin: Path, dest: Path) -> Path:
    """A fresh clone: no DVC cache, no remote, no cached outputs."""
    subprocess.run(["git", "clone", "-q", str(origin), str(dest)], check=True, capture_output=True)
    assert not (dest / "out" / "a.txt").exists() and not (dest / ".dvc" / "cache").exists()
    return dest


def test_check_lock_on_fresh_clone(lock_origin: Path, tmp_path: Path) -> None:
    clone = _clone(lock_origin, tmp_path / "clone")
    ok = _check_lock(clone)
    assert ok.returncode == 0, ok.stderr
    assert "dvc.lock is up to date" in ok.stdout

    (clone / "gen.py").write_text(GEN + "# changed\n")
    stale = _check_lock(clone)
    assert stale.returncode == 1
    assert "  - gen: dependency gen.py modified" in stale.stderr
    assert "count" not in stale.stderr  # only the stage whose own inputs changed is named
    assert "run `dvc repro` and commit dvc.lock" in stale.stderr

    _git(clone, "checkout", "--", "gen.py")
    assert _check_lock(clone).returncode == 0


def test_check_lock_runs_without_the_package(lock_origin: Path, tmp_path: Path) -> None:
    clone = _clone(lock_origin, tmp_path / "clone")
    proc = _without_package("check_lock.py", cwd=clone, env=_lock_env())
    assert proc.returncode == 0, proc.stderr
    assert "dvc.lock is up to date" in proc.stdout


def test_check_lock_names_changed_params(lock_origin: Path, tmp_path: Path) -> None:
    clone = _clone(lock_origin, tmp_path / "clone")
    (clone / "params.yaml").write_text("gen:\n  n: 4\n")
    proc = _check_lock(clone)
    assert proc.returncode == 1
    assert "  - gen: param gen modified (gen.n: 3 -> 4)" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ("command", "  - gen: command changed"),
        ("new_stage", "  - copy: not in dvc.lock"),
        ("partial_repro", "  - count: dependency out/a.txt differs from what stage gen recorded"),
    ],
)
def test_check_lock_names_stale_stages(lock_origin: Path, tmp_path: Path, edit: str, expected: str) -> None:
    clone = _clone(lock_origin, tmp_path / "clone")
    if edit == "command":
        (clone / "dvc.yaml").write_text(PIPELINE.replace("python gen.py out/a.txt", "python gen.py  out/a.txt"))
    elif edit == "new_stage":
        stage = "  copy:\n    cmd: cp count.txt copy.txt\n    deps: [count.txt]\n    outs: [copy.txt]\n"
        (clone / "dvc.yaml").write_text(PIPELINE + stage)
    elif edit == "partial_repro":
        # Someone changed a param, reran only `gen` and committed that lock; CI clones it.
        (clone / "params.yaml").write_text("gen:\n  n: 4\n")
        _dvc(clone, "repro", "-q", "--single-item", "gen")
        _git(clone, "commit", "-q", "-am", "partial repro")
        clone = _clone(clone, tmp_path / "ci")
    proc = _check_lock(clone)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert expected in proc.stderr
