"""Benchmark: CLI start-up, a batch of unreadable files vs one real clip, with and without bytecode caching.

Usage:
    python benchmarks/bench_startup.py [--unreadable 20] [--repeats 3] [--video PATH] [--model PATH]

Each measurement is a fresh ``python`` process (what a user pays per call), timed wall-clock:

(i)   ``import deepfake_detector.interfaces.cli``: what every call pays before looking at any input;
(u)   ``deepfake-detector predict`` on N unreadable files (random bytes, empty, text, a missing
      path, ...): inputs are checked first and no model is loaded, so PyTorch is never imported;
(v)   ``deepfake-detector predict`` on one real clip: imports PyTorch, loads the detector and
      MTCNN, judges the clip.

Each is run twice: with the interpreter's bytecode cache as this environment has it, and with
``PYTHONPYCACHEPREFIX`` pointing at a warmed cache (``PYTHONDONTWRITEBYTECODE`` unset), because
on machines where ``.pyc`` files are neither shipped nor written, every call compiles PyTorch's
sources again, and that, not the model, is most of a cold start. The methods alternate within
each repeat and medians are reported (another process on the same cores slows every method
alike): quote the ratios. The clip is the FF++ c23 sample from ``../shared/data`` when present,
else a synthetic 5 s 640x360 clip of a real portrait; the model is ``models/detector.pt`` when
present, else a random-init calibrated detector (start-up does not depend on the weights).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "ffpp_c23_sample" / "original_sequences" / "youtube" / "c23" / "videos" / "004.mp4"


def unreadable_files(folder: Path, n: int) -> list[Path]:
    """``n`` files no decoder can read (cycling through kinds), one of them a missing path."""
    makers = [
        lambda p: p.write_bytes(os.urandom(20_000)),
        lambda p: p.write_bytes(b""),
        lambda p: p.write_text("just text\n" * 50),
        lambda p: p.write_bytes(b"\x00\x00\x00\x18ftypisom" + os.urandom(4000)),
    ]
    paths = []
    for i in range(n - 1):
        path = folder / f"bad_{i:03d}.mp4"
        makers[i % len(makers)](path)
        paths.append(path)
    return [*paths, folder / "missing.mp4"]


def synthetic_clip(folder: Path) -> Path:
    """A 5 s 640x360 mp4 of a real portrait on a plain background."""
    import cv2
    import numpy as np
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        face = cv2.imdecode(np.frombuffer(fh.read(), np.uint8), cv2.IMREAD_COLOR)
    face = cv2.resize(face, (200, 234), interpolation=cv2.INTER_AREA)
    path = folder / "synthetic_360p.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 360))
    for i in range(125):
        frame = np.full((360, 640, 3), 90, np.uint8)
        x = 100 + 2 * i
        frame[60:294, x : x + 200] = face
        writer.write(frame)
    writer.release()
    return path


def random_detector(folder: Path) -> Path:
    """A calibrated random-init detector (the benchmark times start-up, not accuracy)."""
    from dataclasses import replace

    from deepfake_detector.core.config import load_section
    from deepfake_detector.faces.detection import CropParams
    from deepfake_detector.model.network import CheckpointMeta, build_model, save_checkpoint
    from deepfake_detector.pipeline.calibrate import CalibrateParams
    from deepfake_detector.verdicts.calibration import Calibration

    path = folder / "detector.pt"
    model, _ = build_model("resnet18", "random")
    meta = save_checkpoint(path, model, CheckpointMeta(arch="resnet18", init="random", input_size=160))
    crop = load_section(CropParams, "crop_faces", REPO / "params.yaml")
    calibrate = load_section(CalibrateParams, "calibrate", REPO / "params.yaml")
    cal = Calibration(weights_sha256=meta.weights_sha256, frames_per_video=12, crop=crop, aggregation="mean",
                      aggregate=calibrate.aggregate, threshold=0.5, abstain_band=0.05, explain=calibrate.explain)
    save_checkpoint(path, model, replace(meta, calibration=cal.to_dict()))
    return path


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"failed ({run.returncode}): {' '.join(cmd[:4])} ...\n{run.stderr[-2000:]}")
    return elapsed


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark; print the medians in seconds and their ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unreadable", type=int, default=20, help="unreadable files in the batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--video", type=Path, default=None)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = args.video or (SAMPLE if SAMPLE.is_file() else synthetic_clip(tmp))
        model = args.model or (REPO / "models" / "detector.pt")
        model_note = str(model)
        if not model.is_file():
            model, model_note = random_detector(tmp), "random-init calibrated ResNet-18 (models/detector.pt absent)"
        bad = unreadable_files(tmp, args.unreadable)
        cli = [sys.executable, "-m", "deepfake_detector.interfaces.cli", "predict", "--model", str(model)]
        cmds = {
            "i": [sys.executable, "-c", "import deepfake_detector.interfaces.cli"],
            "u": [*cli, *map(str, bad)],
            "v": [*cli, str(video)],
        }
        base = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        cached = {k: v for k, v in base.items() if k != "PYTHONDONTWRITEBYTECODE"}
        cached["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
        envs = {"as is": base, "bytecode cached": cached}
        timed(cmds["v"], cached)  # fills the bytecode cache (and the OS file cache for both)
        times: dict[tuple[str, str], list[float]] = {(e, k): [] for e in envs for k in cmds}
        for _ in range(args.repeats):
            for env_name, env in envs.items():
                for key, cmd in cmds.items():
                    times[(env_name, key)].append(timed(cmd, env))

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"video: {video}; model: {model_note}; {args.unreadable} unreadable files; repeats {args.repeats} (medians, "
          f"wall s, each a fresh process); PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for env_name in envs:
        i, u, v = (med[(env_name, k)] for k in "iuv")
        print(f"[{env_name}] (i) import cli {i:5.2f} s | (u) {args.unreadable} unreadable files {u:5.2f} s | "
              f"(v) one clip {v:5.2f} s | u/v = {u / v:.3f}, i/u = {i / u:.2f}")
    a, c = med[("as is", "v")], med[("bytecode cached", "v")]
    print(f"one clip, bytecode cached / as is = {c / a:.3f}; unreadable batch, cached / as is = "
          f"{med[('bytecode cached', 'u')] / med[('as is', 'u')]:.3f}")


if __name__ == "__main__":
    main()
