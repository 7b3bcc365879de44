"""`make setup`'s installer (tools/install.py): which packages a CPU build of PyTorch leaves out;
`make lock-check`: uv.lock in step with pyproject.toml, requirements.txt (pip users) with uv.lock."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
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


def test_requirements_txt_is_the_export_of_the_lock(install) -> None:
    """requirements.txt (pip users) holds exactly what `make lock` writes from uv.lock (offline: --frozen)."""
    assert install.requirements_drift(install.find_uv()) == []
    pinned = {line.split("==")[0] for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line}
    # The core, the web demo (demo extra) and an S3 remote (s3 extra); not the test tools.
    assert {"torch", "torchvision", "facenet-pytorch", "dvc", "gradio", "s3fs"} <= pinned
    assert not pinned & {"pytest", "moto", "ruff"}
    # What [tool.uv] exclude-dependencies leaves out stays out (pip gets --no-deps, see the header).
    assert not pinned & {"jax", "jaxlib", "opencv-contrib-python"}


def test_lock_check_catches_a_stale_requirements_txt(install, tmp_path: Path) -> None:
    """`make lock-check` runs `tools/install.py --check-lock`, which fails on a requirements.txt that is
    not a fresh export of uv.lock (a pin edited by hand, a package dropped, a lock re-resolved without
    `make lock`) and shows what differs; the same check passes on the committed file. No network."""
    dry = subprocess.run(["make", "-n", "lock-check"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "tools/install.py --check-lock" in dry

    current = (ROOT / "requirements.txt").read_text()
    torch_pin = next(line for line in current.splitlines() if line.startswith("torch=="))
    stale = tmp_path / "requirements.txt"
    cmd = [sys.executable, str(ROOT / "tools" / "install.py"), "--check-lock", "--requirements"]

    stale.write_text(current.replace(torch_pin + "\n", "torch==2.5.0\n"))  # an old pin
    proc = subprocess.run(cmd + [str(stale)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "requirements.txt is not the export of uv.lock: run `make lock`" in proc.stdout
    assert "-torch==2.5.0" in proc.stdout and f"+{torch_pin}" in proc.stdout

    stale.write_text(current.replace(torch_pin + "\n", ""))  # a package dropped
    proc = subprocess.run(cmd + [str(stale)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and f"+{torch_pin}" in proc.stdout, proc.stdout + proc.stderr

    proc = subprocess.run(cmd + [str(ROOT / "requirements.txt")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
