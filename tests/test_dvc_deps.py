"""tools/dvc_deps.py: each stage's import closure, derived from the code, against its deps."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from tools.dvc_deps import PackageIndex, cmd_modules, main, missing_deps, stale_deps

REPO = Path(__file__).resolve().parents[1]
PKG = "src/deepfake_detector"

# A small package that uses every kind of import the tool must follow, and two that it
# must not (an import only for type checkers, a module nobody imports).
FILES = {
    "__init__.py": '"""fake package."""\n',
    "stages/__init__.py": "",
    "stages/run.py": """\
        from __future__ import annotations

        import argparse
        import importlib
        from typing import TYPE_CHECKING

        import yaml  # third-party: not the package's business

        from ..core import compute  # relative, two levels; compute is a function
        from .. import util  # from-package import of a submodule
        from . import common  # sibling module

        if TYPE_CHECKING:  # never runs
            from deepfake_detector import typing_only

        PLUGIN = "deepfake_detector.plugins.extra"


        def main() -> None:
            from deepfake_detector.lazy import late  # lazy, inside a function

            importlib.import_module(PLUGIN)
            importlib.import_module("deepfake_detector.dynamic")
        """,
    "stages/common.py": "",
    "core.py": "from .deep.leaf import value\n\n\ndef compute():\n    return value\n",
    "deep/__init__.py": "",
    "deep/leaf.py": "value = 1\n",
    "util.py": "",
    "lazy.py": "late = 1\n",
    "plugins/__init__.py": "",
    "plugins/extra.py": "",
    "dynamic.py": "",
    "typing_only.py": "",
    "unused.py": "",
}
# What `python -m deepfake_detector.stages.run` can execute.
CLOSURE = sorted(
    f"{PKG}/{name}"
    for name in [
        "__init__.py", "stages/__init__.py", "stages/run.py", "stages/common.py", "core.py",
        "deep/__init__.py", "deep/leaf.py", "util.py", "lazy.py", "plugins/__init__.py",
        "plugins/extra.py", "dynamic.py",
    ]
)


def _repo(tmp_path: Path, deps: list[str], cmd: str | list[str] = "python -m deepfake_detector.stages.run --out out.txt",
          files: dict[str, str] | None = None) -> Path:
    """A repository with the fake package and a one-stage dvc.yaml; returns its dvc.yaml."""
    for name, text in (FILES if files is None else files).items():
        path = tmp_path / PKG / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "in.csv").write_text("a\n")
    dvc = {
        "stages": {
            "run": {"cmd": cmd, "deps": ["data/in.csv", *deps], "outs": ["out.txt"]},
            "other": {"cmd": "python scripts/other.py", "deps": ["scripts/other.py"], "outs": ["other.txt"]},
        }
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    return tmp_path / "dvc.yaml"


def test_reports_the_whole_closure_when_no_module_is_listed(tmp_path: Path) -> None:
    dvc_yaml = _repo(tmp_path, deps=[])
    # Not typing_only.py (TYPE_CHECKING), not unused.py; `other` runs no package module.
    assert missing_deps(dvc_yaml, tmp_path) == {"run": CLOSURE}


def test_reports_exactly_the_one_missing_module(tmp_path: Path) -> None:
    deps = [f"{PKG}/{n}" for n in ["__init__.py", "stages", "core.py", "deep/", "util.py", "plugins", "dynamic.py"]]
    dvc_yaml = _repo(tmp_path, deps=deps)
    assert missing_deps(dvc_yaml, tmp_path) == {"run": [f"{PKG}/lazy.py"]}


@pytest.mark.parametrize("covering", [PKG, f"{PKG}/", f"./{PKG}", "src"])
def test_directory_dep_covers_the_files_below_it(tmp_path: Path, covering: str) -> None:
    dvc_yaml = _repo(tmp_path, deps=[covering])
    assert missing_deps(dvc_yaml, tmp_path) == {}


def test_directory_dep_covers_only_its_own_folder(tmp_path: Path) -> None:
    # `.../deep` must not cover `.../deeper.py`: a prefix match on the path string would.
    files = {**FILES, "core.py": "from .deep.leaf import value\nfrom . import deeper\n", "deeper.py": ""}
    deps = [f"{PKG}/{n}" for n in ["__init__.py", "stages", "core.py", "deep", "util.py", "plugins", "dynamic.py", "lazy.py"]]
    dvc_yaml = _repo(tmp_path, deps=deps, files=files)
    assert missing_deps(dvc_yaml, tmp_path) == {"run": [f"{PKG}/deeper.py"]}


def test_lazy_and_dynamic_imports_count(tmp_path: Path) -> None:
    deps = [f"{PKG}/{n}" for n in ["__init__.py", "stages", "core.py", "deep", "util.py"]]
    dvc_yaml = _repo(tmp_path, deps=deps)
    assert missing_deps(dvc_yaml, tmp_path) == {
        "run": [f"{PKG}/dynamic.py", f"{PKG}/lazy.py", f"{PKG}/plugins/__init__.py", f"{PKG}/plugins/extra.py"]
    }


@pytest.mark.parametrize(
    "cmd",
    [
        "python src/deepfake_detector/stages/run.py --out out.txt",
        ["python prepare.py", "python -m deepfake_detector.stages.run --out out.txt"],
        'python -c "from deepfake_detector.stages.run import main; main()"',
    ],
)
def test_other_command_forms_are_checked(tmp_path: Path, cmd: str | list[str]) -> None:
    dvc_yaml = _repo(tmp_path, deps=[], cmd=cmd)
    assert missing_deps(dvc_yaml, tmp_path) == {"run": CLOSURE}


def test_cmd_modules() -> None:
    assert cmd_modules("python -m deepfake_detector.stages.train --params params.yaml") == [
        "deepfake_detector.stages.train"
    ]
    assert cmd_modules("python src/deepfake_detector/stages/x.py --out deepfake_detector_out/a") == [
        "deepfake_detector.stages.x"
    ]
    assert cmd_modules("python -m other.deepfake_detector.x && cp a b") == []
    assert cmd_modules("python -m mypkg.run", package="mypkg") == ["mypkg.run"]


def test_stale_source_deps(tmp_path: Path) -> None:
    dvc_yaml = _repo(tmp_path, deps=[PKG, f"{PKG}/gone.py", "data/not_made_yet.csv"])
    # Only entries under src/ are expected to exist already; data comes from other stages.
    assert stale_deps(dvc_yaml, tmp_path) == {"run": [f"{PKG}/gone.py"]}
    assert missing_deps(dvc_yaml, tmp_path) == {}


def test_main_prints_and_exits(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dvc_yaml = _repo(tmp_path, deps=[f"{PKG}/gone.py"])
    assert main(["--repo", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"run: deps miss {len(CLOSURE)} module(s)" in out
    assert f"  - {PKG}/lazy.py\n" in out
    assert f"run: deps name source file(s) that do not exist:\n  - {PKG}/gone.py\n" in out

    dvc_yaml.write_text(dvc_yaml.read_text().replace(f"- {PKG}/gone.py", f"- {PKG}"))
    assert main(["--repo", str(tmp_path)]) == 0
    assert "every stage's deps cover" in capsys.readouterr().out

    assert main(["--repo", str(tmp_path), "--dvc-yaml", "nope.yaml"]) == 2


# -- the repository's own pipeline ----------------------------------------------------------


PIPELINES = ["dvc.yaml", "release/dvc.yaml"]  # the embedded sample's and the released detector's


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_repository_dvc_yaml_lists_every_imported_module(pipeline: str) -> None:
    assert missing_deps(REPO / pipeline, REPO) == {}


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_repository_source_deps_exist(pipeline: str) -> None:
    assert stale_deps(REPO / pipeline, REPO) == {}


# Keys a stage may leave out of its declared params: they change speed, never results.
SPEED_ONLY = {"train.num_workers", "train.threads", "autoencoder.threads", "calibrate.batch_size", "gradcam.batch_size"}


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_stages_declaring_single_keys_declare_every_key_that_changes_results(pipeline: str) -> None:
    """A stage that lists ``section.key`` params (not the whole section) lists every key of that
    section except the speed-only ones: a key left out would change results without a rerun
    (``train.val_perturb`` once was)."""
    stages = yaml.safe_load((REPO / pipeline).read_text(encoding="utf-8"))["stages"]
    params = yaml.safe_load((REPO / pipeline).with_name("params.yaml").read_text(encoding="utf-8"))
    undeclared = {}
    for name, stage in stages.items():
        keyed = [k for k in stage.get("params") or [] if isinstance(k, str) and "." in k]
        for section in {k.split(".")[0] for k in keyed}:
            missing = {f"{section}.{key}" for key in params[section]} - set(keyed) - SPEED_ONLY
            if missing:
                undeclared[name] = sorted(missing)
    assert undeclared == {}


def test_deps_of_a_pipeline_in_a_subfolder_are_relative_to_it(tmp_path: Path) -> None:
    dvc_yaml = _repo(tmp_path, deps=[])
    sub = tmp_path / "sub"
    sub.mkdir()
    dvc = yaml.safe_load(dvc_yaml.read_text())
    dvc["stages"]["run"]["deps"] = [f"../{PKG}"]
    (sub / "dvc.yaml").write_text(yaml.safe_dump(dvc))
    assert missing_deps(sub / "dvc.yaml", tmp_path) == {}
    dvc["stages"]["run"]["deps"] = [PKG]  # would be sub/src/...: nothing there
    (sub / "dvc.yaml").write_text(yaml.safe_dump(dvc))
    assert missing_deps(sub / "dvc.yaml", tmp_path) == {"run": CLOSURE}


# Imports each stage's entry module in turn, forgetting the package's modules in between,
# and prints which of them Python actually loaded (third-party modules stay cached: fast).
RUNTIME_CLOSURE = """\
import importlib
import json
import sys

out = {}
for stage, modules in json.loads(sys.argv[1]).items():
    for name in [m for m in sys.modules if m.split(".")[0] == "deepfake_detector"]:
        del sys.modules[name]
    for module in modules:
        importlib.import_module(module)
    out[stage] = sorted(m for m in sys.modules if m.split(".")[0] == "deepfake_detector")
print(json.dumps(out))
"""


@pytest.mark.slow  # imports torch and the whole package: tens of seconds
def test_static_closure_holds_what_python_imports() -> None:
    """The ast closure of each real stage includes every module importing it really loads.

    The static closure may hold more (lazy imports that importing does not trigger), never
    less: a module Python loads that the parser missed would be a hole in the check.
    """
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    entries = {name: cmd_modules(s["cmd"]) for name, s in dvc["stages"].items() if cmd_modules(s["cmd"])}
    assert entries, "no stage of dvc.yaml runs a package module"
    proc = subprocess.run(
        [sys.executable, "-c", RUNTIME_CLOSURE, json.dumps(entries)],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    index = PackageIndex.find(REPO)
    for stage, modules in entries.items():
        static = {index.relative(p) for p in index.closure(modules)}
        runtime = {index.relative(index.file_of(m)) for m in loaded[stage]}
        assert runtime <= static, f"{stage}: {sorted(runtime - static)} loaded but not found by the parser"
