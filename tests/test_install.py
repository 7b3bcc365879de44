"""`make setup`'s installer (tools/install.py): which packages a CPU build of PyTorch leaves out."""

from __future__ import annotations

import importlib.util
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def install():
    spec = importlib.util.spec_from_file_location("install", ROOT / "tools" / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def lock() -> dict:
    return tomllib.loads((ROOT / "uv.lock").read_text())


def test_cuda_only_packages_are_torchs_gpu_runtime(install, lock: dict) -> None:
    cuda = install.cuda_only_packages(lock)
    names = {p["name"] for p in lock["package"]}
    assert cuda <= names
    # The CUDA runtime and its helpers go ...
    assert {"triton", "cuda-bindings", "cuda-pathfinder", "nvidia-cudnn-cu13", "nvidia-nccl-cu13"} <= cuda
    assert all(n.startswith(("nvidia-", "cuda-", "triton")) for n in cuda), cuda
    # ... what the CPU build or another package needs stays (dvclive reads GPU stats via nvidia-ml-py).
    assert not cuda & {"torch", "torchvision", "numpy", "filelock", "sympy", "jinja2", "nvidia-ml-py"}


def test_cpu_export_has_torch_and_no_cuda_runtime(install, lock: dict, tmp_path: Path) -> None:
    uv = install.find_uv()
    cmd = [uv, "export", "--frozen", "--quiet", "--format", "requirements-txt", "--no-emit-project",
           "--no-header", "--no-annotate", "--no-hashes", "--extra", "test"]
    for name in sorted(install.cuda_only_packages(lock)):
        cmd += ["--no-emit-package", name]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    pinned = {line.split("==")[0] for line in out.splitlines() if "==" in line}
    assert {"torch", "torchvision", "facenet-pytorch", "dvc", "pytest"} <= pinned
    assert not {n for n in pinned if n.startswith(("nvidia-cu", "nvidia-cudnn", "cuda-", "triton"))}


def test_lock_is_up_to_date_with_pyproject(install) -> None:
    """What CI checks first (`make lock-check`): editing the deps without `make lock` fails."""
    proc = subprocess.run([install.find_uv(), "lock", "--check", "--offline"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
