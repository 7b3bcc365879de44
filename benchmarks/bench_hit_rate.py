"""Face hit rate and detection time over the shared real clips: the previous default vs the current detector.

Usage:
    python benchmarks/bench_hit_rate.py [--frames 32] [--params params.yaml] [--set k=v ...] [--limit N]
        [--clips PATH ...]

``--clips`` measures the given files instead, as one group (CI's smoke run: one clip of the
embedded sample, a few frames).

For every clip under ``../shared/data/real_clips`` and ``../shared/data/real_talking``
(real people, faces in every frame as far as is known; with ``--other``, also the FF++ and
DFDC clips, reported apart), the same decoded frames go through:

(old) the previous default, as shipped before issue 13: facenet-pytorch's MTCNN driver on
    640-px copies (batches of 16 equal-size copies), ``min_face_size`` 20, and every frame
    where the copy found nothing searched again at full resolution; faces kept with
    probability >= 0.9, largest first, at least half the largest face's size, at most 4;
(new) :class:`faces.FaceDetector` with ``crop_faces`` from ``--params`` (and ``--set``
    overrides, e.g. ``--set detect_every=1``).

A frame is a hit when at least one face is kept; faces counts every face kept (several
people in a frame). Both run with one torch thread, one after
the other on each clip, so CPU seconds compare the work; the largest faces' IoU says
whether the two find the same face. Hit rates must not fall: the new default is only
worth its speed at a hit rate no lower than the old one's.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from deepfake_detector import records
from deepfake_detector.core.config import from_mapping, read_params
from deepfake_detector.faces.detection import CropParams, Face, FaceDetector
from deepfake_detector.media.video import VideoReadError, read_frames

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
# The target set: real people, a face in every frame as far as is known.
REAL = ("real_clips", "real_talking")
# Reported apart: FF++ c23 and DFDC clips (fakes included), the dark DFDC one among them.
OTHER = ("ffpp_c23_sample", "dfdc_sample")


class OldDefault:
    """The detection shipped before issue 13 (detect_long_side 640, full_res_retry, min_face_size 20)."""

    LONG_SIDE, BATCH = 640, 16

    def __init__(self, mtcnn: object) -> None:
        self.mtcnn = mtcnn  # facenet-pytorch's MTCNN, min_face_size 20
        self.full_res_runs = 0

    def _run(self, batch: np.ndarray) -> list[list[Face]]:
        boxes, probs, points = self.mtcnn.detect(batch, landmarks=True)
        out = []
        for b, p, pts in zip(boxes, probs, points):
            faces = [] if b is None else [Face(tuple(float(v) for v in bb), float(pp), np.asarray(pt))
                                          for bb, pp, pt in zip(b, p, pts) if pp >= 0.9]
            faces.sort(key=lambda f: (-f.size, -f.prob, f.box))
            out.append([f for f in faces if f.size >= 0.5 * faces[0].size][:4] if faces else [])
        return out

    def detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        h, w = images[0].shape[:2]
        scale = min(1.0, self.LONG_SIDE / max(h, w))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = [img if scale == 1.0 else cv2.resize(img, size, interpolation=cv2.INTER_AREA) for img in images]
        sx, sy = size[0] / w, size[1] / h
        found: list[list[Face]] = []
        for start in range(0, len(small), self.BATCH):
            for faces in self._run(np.stack(small[start : start + self.BATCH])):
                found.append([Face((f.box[0] / sx, f.box[1] / sy, f.box[2] / sx, f.box[3] / sy), f.prob,
                                   f.landmarks / [sx, sy]) for f in faces])
        for i, image in enumerate(images):
            if not found[i] and scale != 1.0:
                self.full_res_runs += 1
                (found[i],) = self._run(image[None])
        return found


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def load_params(path: Path, overrides: list[str]) -> CropParams:
    """``crop_faces`` from ``path`` with ``key=value`` overrides (ints, floats, true/false)."""
    data = dict(read_params(path).get("crop_faces") or {})
    for item in overrides:
        key, value = item.split("=", 1)
        data[key] = {"true": True, "false": False}.get(value.lower(), None)
        if data[key] is None:
            data[key] = float(value) if "." in value else int(value)
    return from_mapping(CropParams, data, "crop_faces")


def main(argv: list[str] | None = None) -> None:
    """Print per-clip and total hit rates, CPU seconds per frame and face agreement."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override crop_faces keys")
    ap.add_argument("--other", action="store_true", help="also the FF++ and DFDC clips, reported apart")
    ap.add_argument("--limit", type=int, default=None, help="first N clips of each group only")
    ap.add_argument("--quiet", action="store_true", help="totals only")
    ap.add_argument("--clips", type=Path, nargs="+", default=None, help="these clips instead of the shared folders")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    params = load_params(args.params, args.set)
    groups = {"real clips": REAL, **({"FF++/DFDC clips": OTHER} if args.other else {})}
    new = FaceDetector(params, device="cpu")
    old = OldDefault(FaceDetector(dataclasses.replace(params, min_face_size=20), device="cpu").mtcnn)
    print(f"{args.frames} frames per clip; new: {params}; 1 torch thread; 1-min load average {os.getloadavg()[0]:.1f}")
    if args.clips:
        _run_group("given clips", args.clips[: args.limit], args, old, new)
        return
    for group, folders in groups.items():
        clips = sorted(p for folder in folders if (SHARED / folder).is_dir() for p in (SHARED / folder).rglob("*")
                       if p.suffix.lower() in records.VIDEO_SUFFIXES)[: args.limit]
        if not clips:
            raise SystemExit(f"no clips under {SHARED}/{{{','.join(folders)}}}")
        new.searches = dict.fromkeys(new.searches, 0)
        old.full_res_runs = 0
        _run_group(group, clips, args, old, new)


def _run_group(group: str, clips: list[Path], args: argparse.Namespace, old: OldDefault, new: FaceDetector) -> None:
    totals = dict.fromkeys(("frames", "old_hits", "new_hits", "old_faces", "new_faces", "old_cpu", "new_cpu"), 0.0)
    ious: list[float] = []
    print(f"\n== {group}: {len(clips)} clips")
    for clip in clips:
        try:
            _, frames = read_frames(clip, args.frames)
        except VideoReadError as exc:
            print(f"skipped: {exc}")
            continue
        images = [f.image for f in frames]
        c0 = time.process_time()
        old_faces = old.detect(images)
        c1 = time.process_time()
        new_faces = new.detect(images)
        c2 = time.process_time()
        old_hits, new_hits = sum(bool(f) for f in old_faces), sum(bool(f) for f in new_faces)
        ious += [iou(a[0].box, b[0].box) for a, b in zip(old_faces, new_faces) if a and b]
        for key, value in (("frames", len(images)), ("old_hits", old_hits), ("new_hits", new_hits),
                           ("old_faces", sum(map(len, old_faces))), ("new_faces", sum(map(len, new_faces))),
                           ("old_cpu", c1 - c0), ("new_cpu", c2 - c1)):
            totals[key] += value
        if not args.quiet:
            h, w = images[0].shape[:2]
            print(f"{clip.parent.name[:14]}/{clip.name[:40]:40s} {w:4d}x{h:<4d} hits old {old_hits:2d} new {new_hits:2d} of "
                  f"{len(images)}, faces old {sum(map(len, old_faces)):3d} new {sum(map(len, new_faces)):3d}; "
                  f"CPU s old {c1 - c0:5.2f} new {c2 - c1:5.2f}")
    n = int(totals["frames"])
    print(f"hit rate: old {totals['old_hits'] / n:.2%} ({int(totals['old_hits'])}/{n}), new {totals['new_hits'] / n:.2%} "
          f"({int(totals['new_hits'])}/{n}); faces kept: old {int(totals['old_faces'])}, new {int(totals['new_faces'])}")
    print(f"CPU ms per frame: old {1000 * totals['old_cpu'] / n:.1f}, new {1000 * totals['new_cpu'] / n:.1f}; "
          f"new/old = {totals['new_cpu'] / totals['old_cpu']:.2f}")
    print(f"searches: new {new.searches}; old: full-resolution re-runs {old.full_res_runs}")
    if ious:
        print(f"largest face, new vs old: median IoU {statistics.median(ious):.3f}, "
              f"IoU < 0.5 in {sum(i < 0.5 for i in ious)} of {len(ious)} frames")


if __name__ == "__main__":
    main()
