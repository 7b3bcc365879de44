"""Benchmark: the crop_faces stage's per-video work vs its decode floor, same videos, same run.

Usage:
    python benchmarks/bench_crop_faces.py [--videos 12] [--repeats 2] [--params params.yaml]
        [--data-dir data] [--extract-report outputs/extract_report.csv]

(stage) the stage's own per-video step, called as the stage calls it: ``crop_faces._Cropper``
    (built like :func:`crop_faces.crop_videos` builds it, from the ``crop_faces`` section of
    ``--params``; its MTCNN is the process's ``crop_faces._detector(params)``) on each video's
    input dict, built as ``crop_videos`` builds it (manifest fields, ``extract`` row, ``frames``
    rows, ``frames_digest``): the sampled frames read from the extract_frames tar shards and
    decoded, faces detected and cropped by :func:`faces.detect_and_crop`, the crops
    PNG-encoded; then, as the shard task (:func:`batch.build_shard`) does with a video's
    members, each crop added to a crop tar shard by :class:`shards.ShardWriter` and digested
    (one shard per pass, in a temporary folder, not in ``data/crops``).
(floor) the decode floor: the same frame rows read from the same shards with the same reader
    and decoded to arrays (the stage's own ``_load_frames``), nothing else.
(output) the floor of the stage's whole job without detection, as predict's (c) is
    decoding and classifying without detection: the frames read and decoded as (floor),
    the same crops as (stage) cut from them at the windows the stage found, PNG-encoded,
    added to a crop shard and digested.

Inputs are the pipeline's outputs (``data/manifest.csv``, ``data/frames.csv``,
``data/frames/`` and ``outputs/extract_report.csv``: ``dvc repro extract_frames`` or
``dvc pull``); only videos extract_frames decoded are used, ``--videos`` of them evenly spaced
in ``video_id`` order. The two alternate within each repeat (video by video, their order
swapped every other repeat) and medians of wall and CPU seconds are reported, because another
process on the same cores slows all three (docs/performance.md): the ratios stage/floor and
stage/output are the figures to quote. Target (issue 13): at most 1.5, as predict's a/c. The
per-frame detection cost is measured afterwards on its own: :func:`faces.detect_and_crop` on
frames decoded beforehand.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from deepfake_detector import records
from deepfake_detector.core.config import load_section
from deepfake_detector.faces.detection import CropParams, detect_and_crop
from deepfake_detector.media.imaging import cut_window, encode_image
from deepfake_detector.media.shards import ShardWriter, shard_name
from deepfake_detector.media.video import Frame
from deepfake_detector.pipeline.batch import add_members

# Private on purpose: the benchmark measures the stage's own per-video step, frame loader,
# reader and detector, not copies of them (crop_videos only exposes the whole manifest walk).
from deepfake_detector.pipeline.crop_faces import SHARD_PREFIX, _Cropper, _detector, _load_frames, _reader, video_inputs

REPO = Path(__file__).resolve().parents[1]


def load_inputs(data_dir: Path, extract_report: Path, n_videos: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read the pipeline's tables and pick the videos to time.

    Args:
        data_dir: Folder with ``manifest.csv``, ``frames.csv`` and ``frames/``.
        extract_report: extract_frames' ``extract_report.csv``.
        n_videos: How many videos to pick, evenly spaced in ``video_id`` order among the ones
            extract_frames decoded (status ok, rows in ``frames.csv``).

    Returns:
        ``(picked manifest rows, frames table, extract report)``.

    Raises:
        SystemExit: If an input is missing (e.g. while ``dvc repro`` rewrites ``data/``) or no
            video has frames.
    """
    paths = [data_dir / "manifest.csv", data_dir / "frames.csv", data_dir / "frames", extract_report]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"missing pipeline outputs {missing}: run `dvc repro extract_frames` (or wait for a running one)")
    manifest = records.read_manifest(data_dir / "manifest.csv")
    frames = records.read_frames(data_dir / "frames.csv")
    extract = records.read_extract_report(extract_report)
    ok = set(extract.loc[extract["status"] == records.OK, "video_id"]) & set(frames["video_id"])
    usable = manifest[manifest["video_id"].isin(ok)].sort_values("video_id", kind="stable").reset_index(drop=True)
    if usable.empty:
        raise SystemExit(f"no video of {data_dir / 'manifest.csv'} has extracted frames")
    n = min(n_videos, len(usable))
    picks = sorted({round(i * (len(usable) - 1) / max(n - 1, 1)) for i in range(n)})
    return usable.iloc[picks].reset_index(drop=True), frames, extract


def alternate(runs: dict[str, Callable[[dict], object]], videos: list[dict], repeats: int,
              start_pass: Callable[[], None]) -> dict[str, dict[str, list[list[float]]]]:
    """Time each of ``runs`` on every video, alternating video by video, ``repeats`` times.

    Args:
        runs: Name -> the per-video work to time.
        videos: The videos' input dicts (:func:`crop_faces.video_inputs`).
        repeats: Number of passes over ``videos``; the order of the runs is reversed every other pass.
        start_pass: Called before each pass, untimed (fresh crop shards).

    Returns:
        ``{name: {"wall"|"cpu": [per repeat: [seconds per video]]}}``.
    """
    times: dict[str, dict[str, list[list[float]]]] = {k: {"wall": [], "cpu": []} for k in runs}
    for rep in range(repeats):
        start_pass()
        for per in times.values():
            per["wall"].append([])
            per["cpu"].append([])
        order = list(runs) if rep % 2 == 0 else list(reversed(runs))
        for video in videos:
            for key in order:
                t0, c0 = time.perf_counter(), time.process_time()
                runs[key](video)
                times[key]["wall"][-1].append(time.perf_counter() - t0)
                times[key]["cpu"][-1].append(time.process_time() - c0)
    return times


def median_per_video(per_repeat: list[list[float]]) -> list[float]:
    """Per video, the median over repeats of ``[repeat][video]`` seconds."""
    return [statistics.median(col) for col in zip(*per_repeat)]


def median_total(per_repeat: list[list[float]]) -> float:
    """The median over repeats of each repeat's total seconds."""
    return statistics.median(sum(r) for r in per_repeat)


def detection_cost(frames_dir: str, videos: list[dict], params: CropParams) -> tuple[float, float, int, dict[str, int]]:
    """:func:`faces.detect_and_crop` alone, once per video, on frames decoded beforehand, with the stage's detector.

    Returns:
        ``(wall s, CPU s, frames, detector search counts)`` over all ``videos``.
    """
    decoded = [_load_frames(v["frames"], _reader(frames_dir)) for v in videos]
    detector = _detector(params)
    detector.searches = dict.fromkeys(detector.searches, 0)
    wall = cpu = 0.0
    for frames in decoded:
        t0, c0 = time.perf_counter(), time.process_time()
        detect_and_crop(frames, detector, params)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
    return wall, cpu, sum(len(f) for f in decoded), dict(detector.searches)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print per-video and total wall/CPU medians, stage/floor and the detection cost."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=12, choices=range(1, 100_000), metavar="N")
    parser.add_argument("--repeats", type=int, default=2, choices=range(1, 100), metavar="N")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml", help="take crop_faces from this file")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data", help="manifest.csv, frames.csv, frames/")
    parser.add_argument("--extract-report", type=Path, default=None,
                        help="extract_report.csv (default: outputs/ next to --data-dir)")
    args = parser.parse_args(argv)
    extract_path = args.extract_report or args.data_dir.resolve().parent / "outputs" / "extract_report.csv"
    params = load_section(CropParams, "crop_faces", args.params)
    picked, frames_table, extract = load_inputs(args.data_dir, extract_path, args.videos)
    videos = video_inputs(picked, frames_table, extract, args.data_dir / "frames")

    with tempfile.TemporaryDirectory() as tmp:
        folders = itertools.count()

        def crop_shard() -> ShardWriter:
            # One crop shard per pass, in a fresh folder (a shard may hold each video once, as in the stage).
            return ShardWriter(Path(tmp) / f"pass-{next(folders)}" / shard_name(SHARD_PREFIX, 0, 1))

        # Built as crop_videos builds it (frames_dir as a str, like the stage's task sends it).
        cropper = _Cropper(params, str(args.data_dir / "frames"))
        reports: dict[str, dict] = {}
        rows_of: dict[str, list[dict]] = {}
        writers = {"stage": crop_shard(), "output": crop_shard()}

        def start_pass() -> None:
            for key, old in writers.items():
                old.close()
                writers[key] = crop_shard()

        def stage(video: dict) -> None:
            # As batch.build_shard handles one video (its journal file aside): the handler, then its
            # members added to the shard's tar and digested.
            report, rows, members = cropper(video)
            add_members(writers["stage"], members)
            reports[video["video_id"]], rows_of[video["video_id"]] = report, rows

        def floor(video: dict) -> list[Frame]:
            return _load_frames(video["frames"], _reader(cropper.frames_dir))

        def output(video: dict) -> None:
            images = {f.frame_index: f.image for f in floor(video)}
            crops = [(r["member"], cut_window(images[r["frame_index"]], (r["crop_left"], r["crop_top"], r["crop_side"]),
                                              params.crop_size)) for r in rows_of[video["video_id"]]]
            add_members(writers["output"], [(member, encode_image(crop)) for member, crop in crops])

        # Warm-up: index every frame shard and warm the page cache (floor); build MTCNN and
        # first-call allocations, and the crop windows (output) cuts (stage).
        for video in videos:
            floor(video)
            stage(video)
        times = alternate({"stage": stage, "floor": floor, "output": output}, videos, args.repeats, start_pass)
        for writer in writers.values():
            writer.close()
        det_wall, det_cpu, det_frames, searches = detection_cost(cropper.frames_dir, videos, params)

    print_report(videos, reports, frames_table, times, (det_wall, det_cpu, det_frames, searches), params, args.repeats)


def print_report(videos: list[dict], reports: dict[str, dict], frames_table: pd.DataFrame,
                 times: dict[str, dict[str, list[list[float]]]], detection: tuple[float, float, int, dict[str, int]],
                 params: CropParams, repeats: int) -> None:
    """Print per-video and total medians, the ratios stage/floor and stage/output, and the detection cost."""
    det_wall, det_cpu, det_frames, searches = detection
    ids = [v["video_id"] for v in videos]
    n_frames = [reports[vid]["frames_sampled"] for vid in ids]
    sizes = frames_table.drop_duplicates("video_id").set_index("video_id")
    print(f"device: {_detector(params).device}; torch threads {torch.get_num_threads()} (detection 1); {len(videos)} videos, "
          f"{sum(n_frames)} frames; repeats {repeats} (medians); 1-min load average {os.getloadavg()[0]:.1f}")
    print(f"detection: {params}")
    med = {k: {m: median_per_video(times[k][m]) for m in ("wall", "cpu")} for k in times}
    print(f"\n{'video':30s} {'size':>9s} {'frames':>6s} {'faces':>5s}   {'stage wall/CPU s':>16s}   "
          f"{'floor wall/CPU s':>16s}   {'output wall/CPU s':>17s}   {'stage/floor':>11s} {'stage/output':>12s}")
    for i, vid in enumerate(ids):
        rep, size = reports[vid], sizes.loc[vid]
        (sw, sc), (fw, fc), (ow, oc) = ((med[k]["wall"][i], med[k]["cpu"][i]) for k in ("stage", "floor", "output"))
        print(f"{vid:30s} {f'{size.width}x{size.height}':>9s} {n_frames[i]:6d} {rep['faces_kept']:5d}   "
              f"{sw:7.3f} / {sc:6.3f}   {fw:7.3f} / {fc:6.3f}   {ow:8.3f} / {oc:6.3f}   {sw / fw:11.2f} {sw / ow:12.2f}")
    (sw, sc), (fw, fc), (ow, oc) = ((median_total(times[k]["wall"]), median_total(times[k]["cpu"]))
                                    for k in ("stage", "floor", "output"))
    frames_total = sum(n_frames)
    labels = {"stage": "crop_faces per-video step  ", "floor": "shard read + decode        ",
              "output": "decode + the same crops out"}
    for key, wall, cpu in (("stage", sw, sc), ("floor", fw, fc), ("output", ow, oc)):
        print(f"({key}) {labels[key]}: {wall:7.2f} s wall, {cpu:7.2f} s CPU  ({1000 * wall / frames_total:.1f} ms/frame)  "
              f"runs {_runs(times[key]['wall'])}")
    print(f"detection per frame: {1000 * det_wall / det_frames:.1f} ms wall, {1000 * det_cpu / det_frames:.1f} ms CPU "
          f"(detect_and_crop alone, {det_frames} frames; searches {searches}); "
          f"stage - output: {1000 * (sw - ow) / frames_total:.1f} ms/frame (detection)")
    print(f"stage/floor = {sw / fw:.2f}, CPU {sc / fc:.2f}; stage/output = {sw / ow:.2f}, CPU {sc / oc:.2f} (target <= 1.5)")


def _runs(per_repeat: list[list[float]]) -> str:
    return "[" + ", ".join(f"{sum(r):.2f}" for r in per_repeat) + "]"


if __name__ == "__main__":
    main()
