"""Benchmark (issue 26): would rounding face boxes before cropping make the crops stable across CPUs?

Usage:
    python benchmarks/bench_box_rounding.py [--faces N] [--deltas 1e-4,1e-3,1e-2] [--grids 0.25,1,4]
        [--trials 10] [--seed 0] [--params params.yaml] [--data-dir data] [--threads 1]

On CPUs of another maker MTCNN's floating point differs slightly, so the boxes in
``faces.parquet`` differ in their last digits and some crops with them (docs/team.md,
"Reproducible across machines"). This measures, without touching the pipeline, how often a
box moved by a tiny amount still gives the same crop bytes:

(a) today: the crop cut as the stage cuts it, :func:`imaging.crop_window` on the box, then
    :func:`imaging.cut_window` on the frame (``crop_faces`` margin and crop size from ``--params``);
(b) rounded: the same, after each box coordinate is rounded to a grid of ``g`` px (``--grids``).

For each of ``--faces`` rows of ``data/faces.parquet`` (all by default; evenly spaced in table
order otherwise) the frame is read from the extract_frames shards with the project's
:class:`shards.ShardReader`, and for each ``delta`` in ``--deltas``, ``--trials`` times, every box
coordinate gets an independent uniform offset in ``[-delta, +delta]`` px. A crop counts as
identical when its bytes equal the crop of the unjittered box under the same variant; the mean
absolute pixel difference is over the crops that differ (all 224x224x3 values of each).

Rounding happens after detection: it keeps every box MTCNN found, so the hit rate (frames with
a face, faces kept) is the same by construction. What it costs is one change of the crops
themselves: the table's last part compares each variant on the stored box with the stored
window and the stored crop (``data/crops``), i.e. the crops, and all that is trained and
scored on them, that adopting it would remake once. The first lines check that (a) on the
stored box reproduces the stored window and crop bytes, so the figures are the stage's own.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from deepfake_detector import records
from deepfake_detector.core.config import load_section
from deepfake_detector.faces.detection import CropParams
from deepfake_detector.media.imaging import Window, crop_window, cut_window
from deepfake_detector.media.shards import ShardReader

REPO = Path(__file__).resolve().parents[1]

Box = tuple[float, float, float, float]


def round_box(box: Box, grid: float | None) -> Box:
    """``box`` with each coordinate rounded to a multiple of ``grid`` px (None: as it is)."""
    if grid is None:
        return box
    return tuple(float(np.round(v / grid) * grid) for v in box)  # type: ignore[return-value]


def crop(image: np.ndarray, box: Box, grid: float | None, params: CropParams) -> tuple[Window, np.ndarray]:
    """The stage's window and crop for ``box`` (rounded to ``grid`` first, unless None)."""
    window = crop_window(round_box(box, grid), params.margin)
    return window, cut_window(image, window, params.crop_size)


def load_faces(data_dir: Path, n_faces: int | None) -> tuple[list[dict], ShardReader, ShardReader]:
    """The face rows to measure, each with its frame's shard and member.

    Args:
        data_dir: Folder with ``faces.parquet``, ``frames.csv``, ``frames/`` and ``crops/``.
        n_faces: How many rows, evenly spaced in table order; None: all.

    Returns:
        ``(rows, frame reader, crop reader)``; a row holds the face row's fields and
        ``frame_shard`` / ``frame_member``.

    Raises:
        SystemExit: If an input is missing or a face has no frame row.
    """
    paths = [data_dir / "faces.parquet", data_dir / "frames.csv", data_dir / "frames", data_dir / "crops"]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"missing pipeline outputs {missing}: run `dvc repro` (or `dvc pull`)")
    faces = records.read_faces(data_dir / "faces.parquet").reset_index(drop=True)
    frames = records.read_frames(data_dir / "frames.csv")[["video_id", "frame_index", "shard", "member"]]
    frames = frames.rename(columns={"shard": "frame_shard", "member": "frame_member"})
    table = faces.merge(frames, on=["video_id", "frame_index"], how="left", validate="many_to_one")
    if table["frame_shard"].isna().any():
        raise SystemExit(f"{int(table['frame_shard'].isna().sum())} face rows have no frame in frames.csv: stale outputs")
    if n_faces is not None and n_faces < len(table):
        picks = sorted({round(i * (len(table) - 1) / max(n_faces - 1, 1)) for i in range(n_faces)})
        table = table.iloc[picks]
    return table.to_dict("records"), ShardReader(data_dir / "frames"), ShardReader(data_dir / "crops")


def measure(rows: list[dict], frame_reader: ShardReader, crop_reader: ShardReader, params: CropParams,
            deltas: list[float], grids: list[float | None], trials: int, seed: int) -> dict:
    """Crop every face with its stored box and with jittered boxes, under each variant.

    Returns:
        ``{"checks": {...}, "stored": {grid: {...}}, "jitter": {(delta, grid): {...}}}``: see :func:`main`'s table.
    """
    rng = np.random.default_rng(seed)
    checks = {"faces": len(rows), "window_as_stored": 0, "crop_as_stored": 0}
    stored = {g: {"crop_differs": 0, "window_differs": 0, "max_move": 0, "mad": []} for g in grids}
    jitter = {(d, g): {"n": 0, "differs": 0, "mad": []} for d in deltas for g in grids}
    for row in rows:
        image = frame_reader.read_image(row["frame_shard"], row["frame_member"])
        box: Box = (row["x1"], row["y1"], row["x2"], row["y2"])
        stored_window = (int(row["crop_left"]), int(row["crop_top"]), int(row["crop_side"]))
        stored_crop = crop_reader.read_image(row["shard"], row["member"])
        base = {g: crop(image, box, g, params) for g in grids}
        checks["window_as_stored"] += base[None][0] == stored_window
        checks["crop_as_stored"] += np.array_equal(base[None][1], stored_crop)
        for g in grids:
            window, img = base[g]
            s = stored[g]
            s["window_differs"] += window != stored_window
            s["max_move"] = max(s["max_move"], *(abs(a - b) for a, b in zip(window, stored_window)))
            if not np.array_equal(img, stored_crop):
                s["crop_differs"] += 1
                s["mad"].append(float(np.abs(img.astype(np.int16) - stored_crop).mean()))
        for d in deltas:
            for _ in range(trials):
                moved: Box = tuple(v + o for v, o in zip(box, rng.uniform(-d, d, 4)))  # type: ignore[assignment]
                for g in grids:  # every variant sees the same jittered box
                    _, img = crop(image, moved, g, params)
                    cell = jitter[(d, g)]
                    cell["n"] += 1
                    if not np.array_equal(img, base[g][1]):
                        cell["differs"] += 1
                        cell["mad"].append(float(np.abs(img.astype(np.int16) - base[g][1]).mean()))
    return {"checks": checks, "stored": stored, "jitter": jitter}


def _grid_name(grid: float | None) -> str:
    return "(a) as today" if grid is None else f"(b) round to {grid:g} px"


def _mad(values: list[float]) -> str:
    return f"{np.mean(values):.3f}" if values else "-"


def report(result: dict, deltas: list[float], grids: list[float | None]) -> None:
    """Print the figures as tables."""
    c = result["checks"]
    print(f"faces: {c['faces']}; (a) on the stored box gives the stored window for {c['window_as_stored']} "
          f"and the stored crop bytes for {c['crop_as_stored']}")
    print("\nJittered boxes (each coordinate + uniform[-delta, delta] px): crops byte-identical to the unjittered box's crop")
    print(f"{'delta px':>9} | {'variant':<22} | {'crops':>6} | {'identical':>9} | {'differ':>6} | {'mean |diff| if differ':>21}")
    print("-" * 87)
    for d in deltas:
        for g in grids:
            cell = result["jitter"][(d, g)]
            share = 100.0 * (cell["n"] - cell["differs"]) / cell["n"]
            print(f"{d:>9.0e} | {_grid_name(g):<22} | {cell['n']:>6} | {share:>8.2f}% | {cell['differs']:>6} | "
                  f"{_mad(cell['mad']):>21}")
    print("\nUnjittered stored box, each variant vs the stored window and crop (the one-time cost of adopting it)")
    print(f"{'variant':<22} | {'windows moved':>13} | {'max |move| px':>13} | {'crops differ':>12} | "
          f"{'mean |diff| if differ':>21}")
    print("-" * 93)
    n = c["faces"]
    for g in grids:
        s = result["stored"][g]
        print(f"{_grid_name(g):<22} | {100.0 * s['window_differs'] / n:>12.1f}% | {s['max_move']:>13} | "
              f"{100.0 * s['crop_differs'] / n:>11.1f}% | {_mad(s['mad']):>21}")
    print("\nHit rate: unchanged by construction (rounding acts on the boxes MTCNN found; no face is added or dropped).")


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=None, help="face rows to measure (default: all)")
    ap.add_argument("--deltas", default="1e-4,1e-3,1e-2", help="jitter sizes, px, comma-separated")
    ap.add_argument("--grids", default="0.25,1,4", help="rounding grids for (b), px, comma-separated")
    ap.add_argument("--trials", type=int, default=10, help="jittered boxes per face and delta")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--data-dir", type=Path, default=REPO / "data")
    ap.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads")
    args = ap.parse_args(argv)
    if args.faces is not None and args.faces < 1 or args.trials < 1:
        ap.error("--faces and --trials must be >= 1")
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    params = load_section(CropParams, "crop_faces", args.params)
    deltas = _floats(args.deltas)
    grids: list[float | None] = [None, *_floats(args.grids)]
    t0 = time.perf_counter()
    rows, frame_reader, crop_reader = load_faces(args.data_dir, args.faces)
    result = measure(rows, frame_reader, crop_reader, params, deltas, grids, args.trials, args.seed)
    print(f"crop_faces margin {params.margin}, crop size {params.crop_size}; {args.trials} jittered boxes per face "
          f"and delta, seed {args.seed}")
    report(result, deltas, grids)
    print(f"\n{time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
