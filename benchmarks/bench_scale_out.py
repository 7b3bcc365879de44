"""Benchmark (issue 16): what preprocessing costs per video, how it scales on Dask workers, and what DVC does.

Four measurements, in one run:

1. **Per video, real clips** (serial, one process, MTCNN built beforehand): extract_frames and
   crop_faces time and the bytes of frame and crop shards, per clip of ``../shared/data``
   at 720p and 1080p, with the release's 16 frames per video and the default crop params.
2. **1 worker vs 2 workers**: crop_faces on the same extracted frames on a LocalCluster of 1
   and then 2 worker processes (warmed: torch imported and MTCNN built on every worker
   before the clock starts); prints the ratio, and checks that both wrote the same bytes.
3. **Many tiny clips** (``--tiny``, default 10000 synthetic 64x48 clips of 3 frames, no
   face): extract_frames and crop_faces on a LocalCluster (``--workers``), a rerun with
   nothing changed, and a rerun after adding one clip (how many videos were decoded again).
4. **DVC on the shard folders** of (3) and of (1): ``dvc add`` (hashing plus the copy into
   the cache), ``dvc status`` with nothing changed, ``dvc commit`` after the one-clip change,
   ``dvc push`` to a local folder remote.

Usage:
    python benchmarks/bench_scale_out.py [--tiny 10000] [--workers 2] [--frames 16] [--no-real] [--keep DIR]

The shared machines are busy (other processes on the same cores): quote the ratios measured
here and the load average printed with them, not absolute times alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from deepfake_detector import records
from deepfake_detector.core.config import load_section
from deepfake_detector.faces.detection import CropParams
from deepfake_detector.pipeline.crop_faces import _detector, crop_videos
from deepfake_detector.pipeline.extract_frames import ExtractParams, extract_videos

REPO = Path(__file__).resolve().parents[1]


def settings(frames: int, videos_per_shard: int | None = None) -> tuple[ExtractParams, CropParams]:
    """params.yaml's extract_frames and crop_faces, with these frames per video (and videos per shard)."""
    params = load_section(ExtractParams, "extract_frames", REPO / "params.yaml")
    crop = load_section(CropParams, "crop_faces", REPO / "params.yaml")
    shards = {} if videos_per_shard is None else {"videos_per_shard": videos_per_shard}
    return dataclasses.replace(params, frames_per_video=frames, **shards), dataclasses.replace(crop, **shards)
SHARED = REPO.parent / "shared" / "data"
REAL = [  # (label, path): FF++ c23 originals (1280x720), DFDC (1920x1080 and portrait 1080x1920)
    ("720p", SHARED / "ffpp_c23_sample/original_sequences/youtube/c23/videos/004.mp4"),
    ("720p", SHARED / "ffpp_c23_sample/original_sequences/youtube/c23/videos/634.mp4"),
    ("1080p", SHARED / "dfdc_sample/train_sample_videos/widuwuoiur.mp4"),
    ("1080p", SHARED / "dfdc_sample/train_sample_videos/abqwwspghj.mp4"),
    ("1080p", SHARED / "dfdc_sample/train_sample_videos/abofeumbvv.mp4"),
    ("1080p", SHARED / "dfdc_sample/dfdc_train_part_0/brtujopkby.mp4"),
]


def manifest_of(paths: list[Path]) -> pd.DataFrame:
    rows = [{"video_id": p.stem, "path": str(p), "label": "real", "split": "train", "group": p.stem,
             "source": "folder", "manipulation": "original", "status": "ok", "reason": "",
             "size": p.stat().st_size, "signature": records.file_signature(p)[1]} for p in paths]
    return pd.DataFrame(rows, columns=records.MANIFEST_COLUMNS)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def load() -> str:
    return "load average %.1f %.1f %.1f" % os.getloadavg()


def warm(params: CropParams) -> None:
    """Runs on every worker (by value): torch imported and MTCNN built before timing."""
    from deepfake_detector.pipeline.crop_faces import _detector as build

    build(params)


def cluster(workers: int):
    from distributed import Client, LocalCluster

    c = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
    return c, Client(c)


def per_video(work: Path, frames: int) -> tuple[pd.DataFrame, list[Path]]:
    """(1): serial extract and crop time, and shard bytes, per real clip."""
    params, crop = settings(frames)
    _detector(crop)
    rows, paths = [], []
    for label, path in REAL:
        if not path.is_file():
            continue
        paths.append(path)
        manifest, out = manifest_of([path]), work / "one" / path.stem
        t_ext, (fr, ex) = timed(extract_videos, manifest, params, out / "frames")
        t_crop, (faces, _) = timed(crop_videos, manifest, fr, ex, out / "frames", out / "crops", crop)
        h, w = int(ex["height"].iloc[0]), int(ex["width"].iloc[0])
        rows.append({"clip": path.name, "size": f"{w}x{h}", "class": label, "extract_s": t_ext, "crop_s": t_crop,
                     "faces": len(faces), "frames_MB": folder_bytes(out / "frames") / 1e6,
                     "crops_MB": folder_bytes(out / "crops") / 1e6})
    return pd.DataFrame(rows), paths


def workers_ratio(work: Path, paths: list[Path], frames: int) -> dict:
    """(2): crop_faces with 1 then 2 workers on the same frames."""
    manifest = manifest_of(paths)
    params, crop = settings(frames, videos_per_shard=1)  # one video per shard: the shards are the tasks
    fr, ex = extract_videos(manifest, params, work / "ratio" / "frames")
    times, files = {}, {}
    for n in (1, 2):
        c, client = cluster(n)
        try:
            client.run(warm, crop)
            out = work / "ratio" / f"crops{n}"
            times[n], _ = timed(crop_videos, manifest, fr, ex, work / "ratio" / "frames", out, crop, client=client)
            files[n] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
        finally:
            client.close()
            c.close()
    return {"videos": len(paths), "shards": sum(name.endswith(".json") for name in files[1]), "t1": times[1],
            "t2": times[2], "ratio": times[1] / times[2], "same_bytes": files[1] == files[2]}


def tiny_clips(folder: Path, n: int, start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    paths = []
    for i in range(start, start + n):
        path = folder / f"c{i:06d}.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
        for _ in range(3):
            writer.write(cv2.resize(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8), (64, 48)))
        writer.release()
        paths.append(path)
    return paths


def simulate(work: Path, n: int, workers: int) -> dict:
    """(3): extract and crop on many tiny clips, a no-op rerun and a one-clip rerun."""
    from deepfake_detector.pipeline import extract_frames

    paths = tiny_clips(work / "tiny" / "clips", n)
    manifest = manifest_of(paths)
    params, crop = settings(2)
    frames_dir, crops_dir = work / "tiny" / "frames", work / "tiny" / "crops"
    out: dict = {"clips": n, "workers": workers}
    c, client = cluster(workers)
    try:
        client.run(warm, crop)
        out["extract_s"], (fr, ex) = timed(extract_videos, manifest, params, frames_dir, client=client)
        out["crop_s"], _ = timed(crop_videos, manifest, fr, ex, frames_dir, crops_dir, crop, client=client)
        out["noop_extract_s"], (fr, ex) = timed(extract_videos, manifest, params, frames_dir, client=client)
        out["noop_crop_s"], _ = timed(crop_videos, manifest, fr, ex, frames_dir, crops_dir, crop, client=client)
        for name in ("frames", "crops"):  # the state before the one-clip change, for (4)
            shutil.copytree(work / "tiny" / name, work / "tiny-before" / name)
        # Count decodes in this process: the one-clip rerun runs serially (client=None).
        decoded: list[str] = []
        read = extract_frames.read_frames
        extract_frames.read_frames = lambda path, k: (decoded.append(Path(path).stem), read(path, k))[1]
        manifest = manifest_of(paths + tiny_clips(work / "tiny" / "clips", 1, start=n))
        out["plus_one_extract_s"], (fr, ex) = timed(extract_videos, manifest, params, frames_dir)
        out["plus_one_crop_s"], _ = timed(crop_videos, manifest, fr, ex, frames_dir, crops_dir, crop)
        extract_frames.read_frames = read
        out["plus_one_decoded"] = len(decoded)
    finally:
        client.close()
        c.close()
    out["frame_shards"] = len(list(frames_dir.glob("*.tar")))
    out["frames_MB"], out["crops_MB"] = folder_bytes(frames_dir) / 1e6, folder_bytes(crops_dir) / 1e6
    return out


def dvc(repo: Path, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run(["dvc", *args], cwd=repo, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def dvc_costs(work: Path, label: str, folders: list[Path], change=None) -> dict:
    """(4): dvc add / status / commit / push on copies of ``folders`` in a fresh DVC project."""
    repo = work / f"dvc-{label}"
    repo.mkdir()
    for folder in folders:
        shutil.copytree(folder, repo / folder.name)
    dvc(repo, "init", "--no-scm", "-q")
    dvc(repo, "remote", "add", "-d", "store", str(work / f"remote-{label}"))
    names = [f.name for f in folders]
    out = {"what": label, "MB": sum(folder_bytes(repo / n) for n in names) / 1e6,
           "files": sum(len(list((repo / n).iterdir())) for n in names)}
    out["add_s"] = dvc(repo, "add", *names)
    out["status_s"] = dvc(repo, "status")
    if change is not None:
        change(repo)
        out["status_after_change_s"] = dvc(repo, "status")
        out["commit_after_change_s"] = dvc(repo, "commit", "-f", *(f"{n}.dvc" for n in names))
    out["push_s"] = dvc(repo, "push", "-q")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", type=int, default=10000, help="synthetic tiny clips for (3) and (4)")
    parser.add_argument("--workers", type=int, default=2, help="workers for (3)")
    parser.add_argument("--frames", type=int, default=16, help="frames per real video")
    parser.add_argument("--no-real", action="store_true", help="skip (1), (2) and the real clips' DVC figures")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("distributed").setLevel(logging.WARNING)  # dask's config makes it INFO
    os.environ.setdefault("TQDM_DISABLE", "1")
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_scale_out_"))
    pd.set_option("display.width", 200)
    try:
        paths: list[Path] = []
        if not args.no_real:
            print(f"(1) per video, serial, {args.frames} frames, default crop params; {load()}")
            table, paths = per_video(work, args.frames)
            print(table.round(3).to_string(index=False))
            print(table.groupby("class")[["extract_s", "crop_s", "frames_MB", "crops_MB"]].mean().round(3).to_string())
        if paths:
            print(f"\n(2) crop_faces, 1 vs 2 workers, {load()}")
            print(workers_ratio(work, paths, args.frames))
        print(f"\n(3) {args.tiny} tiny clips on {args.workers} workers, {load()}")
        sim = simulate(work, args.tiny, args.workers)
        print(sim)

        def one_more(repo: Path) -> None:
            # The folders after the one-clip rerun replace the copies: one frame shard and one crop shard changed.
            for name in ("frames", "crops"):
                shutil.rmtree(repo / name)
                shutil.copytree(work / "tiny" / name, repo / name)

        print(f"\n(4) DVC, {load()}")
        print(dvc_costs(work, "tiny", [work / "tiny-before" / "frames", work / "tiny-before" / "crops"], change=one_more))
        if paths:
            print(dvc_costs(work, "real", [work / "ratio" / "frames"]))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
