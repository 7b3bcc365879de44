"""Benchmark: decoding a sample of frames, every frame vs non-reference pictures skipped, in the same run.

Usage:
    python benchmarks/bench_decode.py [--video PATH ...] [--frames 32] [--repeats 3]

For each clip, alternating within each repeat (medians reported, since another process on
the same cores slows every method alike):
(opencv) ``video.read_frames`` with OpenCV decoding every frame (``grab()`` each frame,
    ``retrieve()`` the sampled ones): the path before ``skipdecode``, still the one for
    files it does not handle.
(pyav)   PyAV decoding every frame (``skipdecode`` with nothing skipped): what the library
    change alone gives.
(skip)   ``video.read_frames`` as shipped: H.264 non-reference pictures that are not sampled
    are never decoded.
It checks that the three give the same frames, bit for bit. Without ``--video`` it runs the
FF++ c23 and DFDC sample clips under ``../shared/data``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Callable
from unittest import mock

import numpy as np

from deepfake_detector.media import skipdecode, video

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def _default_clips() -> list[Path]:
    return sorted((SHARED / "ffpp_c23_sample").glob("**/*.mp4")) + sorted((SHARED / "dfdc_sample").glob("*/*.mp4"))


def bench_clip(path: Path, frames: int, repeats: int) -> dict:
    """Alternate the three ways ``repeats`` times; wall/CPU medians, frames decoded, equality."""
    calls: list[skipdecode.SkipDecoded | None] = []
    real = skipdecode.decode_sampled

    def spy(*args: object, **kwargs: object) -> skipdecode.SkipDecoded | None:
        calls.append(real(*args, **kwargs))
        return calls[-1]

    def opencv() -> tuple:
        with mock.patch.object(video.skipdecode, "decode_sampled", return_value=None):
            return video.read_frames(path, frames)

    def pyav() -> tuple:
        with mock.patch.object(video.skipdecode, "decode_sampled", spy), \
                mock.patch.object(skipdecode, "is_non_reference", return_value=False):
            return video.read_frames(path, frames)

    def skip() -> tuple:
        with mock.patch.object(video.skipdecode, "decode_sampled", spy):
            return video.read_frames(path, frames)

    runs: dict[str, Callable[[], tuple]] = {"opencv": opencv, "pyav": pyav, "skip": skip}
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    out: dict[str, tuple] = {}
    for _ in range(repeats):
        for key, run in runs.items():
            calls.clear()
            t0, c0 = time.perf_counter(), time.process_time()
            out[key] = run()
            wall[key].append(time.perf_counter() - t0)
            cpu[key].append(time.process_time() - c0)
        fast = calls[-1] if calls else None  # None: not an MP4, so the fast path was never tried
    reference = out["opencv"]
    same = all(_same(out[k], reference) for k in ("pyav", "skip"))
    return {"wall": {k: statistics.median(v) for k, v in wall.items()},
            "cpu": {k: statistics.median(v) for k, v in cpu.items()},
            "info": reference[0], "fast": fast, "same": same}


def _same(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and [f.frame_index for f in a[1]] == [f.frame_index for f in b[1]] and all(
        np.array_equal(x.image, y.image) for x, y in zip(a[1], b[1]))


def main(argv: list[str] | None = None) -> None:
    """Run the three ways on each clip and print times, ratios against OpenCV and frames decoded."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, nargs="+", default=None)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, choices=range(1, 100), metavar="N")
    args = parser.parse_args(argv)
    clips = args.video or _default_clips()
    if not clips:
        raise SystemExit(f"no clips: pass --video (the defaults live under {SHARED})")
    print(f"{args.frames} frames, repeats {args.repeats} (medians); 1-min load average {os.getloadavg()[0]:.1f}")
    print(f"{'clip':28s} {'size':>9s} {'frames':>7s} {'decoded':>7s}  {'opencv s':>8s} {'pyav/opencv':>11s} "
          f"{'skip/opencv':>11s} {'skip/opencv CPU':>15s}  same")
    ratios, cpu_ratios = [], []
    for path in clips:
        r = bench_clip(path, args.frames, args.repeats)
        w, c, info, fast = r["wall"], r["cpu"], r["info"], r["fast"]
        decoded = f"{fast.decoded}" if fast is not None else "all"
        if fast is not None:  # the summary is over the files the fast path decoded; the others run OpenCV's path twice
            ratios.append(w["skip"] / w["opencv"])
            cpu_ratios.append(c["skip"] / c["opencv"])
        print(f"{path.name[:28]:28s} {info.width:>4d}x{info.height:<4d} {info.n_frames:7d} {decoded:>7s}  "
              f"{w['opencv']:8.2f} {w['pyav'] / w['opencv']:11.2f} {w['skip'] / w['opencv']:11.2f} "
              f"{c['skip'] / c['opencv']:15.2f}  {'yes' if r['same'] else 'NO'}")
    if not ratios:
        print(f"\nnone of the {len(clips)} clips took the fast path (not regular 8-bit H.264 MP4s)")
        return
    print(f"\nskip/opencv over the {len(ratios)} of {len(clips)} clips the fast path decoded: wall median "
          f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}), CPU median "
          f"{statistics.median(cpu_ratios):.2f} ({min(cpu_ratios):.2f}-{max(cpu_ratios):.2f}); load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
