"""Benchmark: MTCNN on full-resolution frames vs our FaceDetector (downscaled copy, batched,
full-resolution retry) on the same sampled frames of one clip.

Usage:
    python benchmarks/bench_crop_faces.py [--video PATH] [--frames 32] [--repeats 3] [--threads N]

Without ``--video`` it uses the FF++ c23 720p sample from ``../shared/data`` when present,
else a synthetic 1280x720 clip of a moving real portrait. Timings alternate between the
two detectors and report medians, because another process on the same cores can slow
either one (docs/performance.md): the ratio is the figure to quote.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from deepfake_detector.config import load_section
from deepfake_detector.faces import CropParams, FaceDetector
from deepfake_detector.video import read_frames

REPO = Path(__file__).resolve().parents[1]
SAMPLE_720P = (
    REPO.parent / "shared" / "data" / "ffpp_c23_sample"
    / "original_sequences" / "youtube" / "c23" / "videos" / "004.mp4"
)


def synthetic_720p_clip(folder: Path, n_frames: int = 120) -> Path:
    """Write a 1280x720 clip of a real portrait (matplotlib's Grace Hopper) drifting across."""
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        face = cv2.imdecode(np.frombuffer(fh.read(), np.uint8), cv2.IMREAD_COLOR)
    face = cv2.resize(face, (300, 352), interpolation=cv2.INTER_AREA)  # face ~150 px tall
    path = folder / "synthetic_720p.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (1280, 720))
    for i in range(n_frames):
        canvas = np.full((720, 1280, 3), 70, np.uint8)
        x, y = 100 + 6 * i, 150 + int(60 * np.sin(i / 10))
        canvas[y : y + face.shape[0], x : x + face.shape[1]] = face
        writer.write(canvas)
    writer.release()
    return path


def baseline_detect(detector: FaceDetector, images: list[np.ndarray]) -> list[np.ndarray | None]:
    """MTCNN on each full-resolution frame, one frame per call (the naive pipeline).

    Returns:
        Per frame, the box of the most probable face with prob >= threshold, or None.
    """
    threshold = detector.params.prob_threshold
    out: list[np.ndarray | None] = []
    for image in images:
        boxes, probs = detector.mtcnn.detect(image[None])
        if boxes[0] is None:
            out.append(None)
            continue
        p = np.asarray(probs[0], dtype=float)
        out.append(np.asarray(boxes[0], dtype=float)[p.argmax()] if p.max() >= threshold else None)
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print frames/s, the speed ratio and the hit rates."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=None)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    params = CropParams()
    if args.params.is_file():
        params = load_section(CropParams, "crop_faces", args.params)

    with tempfile.TemporaryDirectory() as tmp:
        video = args.video
        if video is None:
            video = SAMPLE_720P if SAMPLE_720P.is_file() else synthetic_720p_clip(Path(tmp))
        t0 = time.perf_counter()
        info, frames = read_frames(video, args.frames)
        decode_s = time.perf_counter() - t0
    images = [f.image for f in frames]
    detector = FaceDetector(params)
    detector.detect(images[:1])  # warm-up: first-call allocations are not what we measure
    baseline_detect(detector, images[:1])

    # Alternate the two so a burst of load from another process hits both alike.
    base_times, ours_times = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        base = baseline_detect(detector, images)
        base_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ours = detector.detect(images)
        ours_times.append(time.perf_counter() - t0)

    n = len(images)
    base_s, ours_s = statistics.median(base_times), statistics.median(ours_times)
    base_hits = sum(b is not None for b in base) / n
    ours_hits = sum(bool(f) for f in ours) / n
    agree = [iou(b, np.array(f[0].box)) for b, f in zip(base, ours) if b is not None and f]
    print(f"video: {video} ({info.width}x{info.height}, {info.n_frames} frames)")
    print(f"device: {detector.device}, torch threads: {torch.get_num_threads()}, "
          f"repeats: {args.repeats}, 1-min load average: {os.getloadavg()[0]:.1f}")
    print(f"sampled frames: {n} (sequential decode {decode_s:.2f} s)")
    print(f"params: detect_long_side={params.detect_long_side} batch_size={params.batch_size} "
          f"full_res_retry={params.full_res_retry} min_face_size={params.min_face_size} "
          f"prob_threshold={params.prob_threshold}")
    for name, secs, hits in (("(a) MTCNN, full resolution", base_s, base_hits),
                             ("(b) FaceDetector", ours_s, ours_hits)):
        print(f"{name:27s}: {n / secs:7.2f} frames/s ({1000 * secs / n:6.1f} ms/frame), "
              f"frames with a face {hits:.1%}")
    print(f"speed ratio (b) vs (a): {base_s / ours_s:.2f}x")
    if agree:
        print(f"largest face, (b) vs (a): median IoU {statistics.median(agree):.3f} "
              f"over {len(agree)} frames")


if __name__ == "__main__":
    main()
