"""Column contracts of the tables that stages hand to each other.

Stages pass explicit records, never meaning parsed out of file paths. Every table
carries ``video_id``; boxes are in original-frame pixels (after rotation).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable

import pandas as pd

# Video-level status values, in the order a video can fail.
OK = "ok"
MISSING = "missing"  # listed (e.g. in metadata.json) but not on disk
UNREADABLE = "unreadable"  # not a video, empty, truncated, zero decodable frames
NO_FACE = "no_face"  # readable, but no face in any sampled frame
STATUSES = (OK, MISSING, UNREADABLE, NO_FACE)

LABELS = {"real": 0, "fake": 1}
SPLITS = ("train", "val", "test")

# data/manifest.csv, written by ingest. One row per listed video, missing ones included.
MANIFEST_COLUMNS = [
    "video_id",  # unique, filesystem-safe (used as a shard member prefix)
    "path",  # path to the file as given (relative to the repo when inside it)
    "label",  # "real" | "fake"
    "split",  # "train" | "val" | "test"
    "group",  # leakage group: a fake, its originals and one identity share a group
    "source",  # dataset adapter: sample | folder | ffpp | dfdc | celebdf
    "manipulation",  # "original" for real videos, else the method (Deepfakes, sbi, swap, ...)
    "status",  # ok | missing
    "reason",  # human-readable reason when status != ok, else ""
    "size_bytes",  # file size when ingested (empty when missing)
    "signature",  # cheap content signature (records.file_signature); a replaced file changes it
]

# data/frames.csv, written by extract_frames. One row per sampled, decoded frame.
FRAME_COLUMNS = ["video_id", "frame_index", "timestamp_s", "width", "height", "shard", "member"]

# outputs/extract_report.csv: one row per manifest video.
EXTRACT_REPORT_COLUMNS = [
    "video_id", "status", "reason", "n_frames_total", "n_frames_sampled",
    "fps", "width", "height", "rotation",
]

# data/faces.parquet, written by crop_faces. One row per kept face crop.
FACE_COLUMNS = [
    "video_id", "frame_index", "face_index", "x1", "y1", "x2", "y2",
    "det_prob", "landmarks",  # landmarks: flat list of 10 floats (5 x,y points), frame pixels
    "crop_left", "crop_top", "crop_side",  # the square (frame pixels) the crop was cut from
    "shard", "member",
]

# outputs/detection_report.csv: one row per manifest video.
DETECTION_REPORT_COLUMNS = [
    "video_id", "label", "split", "status", "reason",
    "frames_sampled", "frames_with_face", "faces_kept",
]


# Bytes read from each of the start, middle and end of a file for its signature.
SIGNATURE_CHUNK = 1 << 16


def file_signature(path: Path) -> tuple[int, str]:
    """A cheap content signature of a media file: its size and a hash of three samples.

    Hashing whole videos would make ``ingest`` read every byte of a large dataset; a
    BLAKE2b of the size and 64 KiB from the start, the middle and the end changes whenever
    a file is replaced or re-encoded, at a cost of three reads per file. (An edit that keeps
    the size and touches none of those bytes goes unnoticed: that is the price.)

    Args:
        path: The file.

    Returns:
        ``(size in bytes, 32-hex-digit signature)``.

    Raises:
        OSError: If the file cannot be read.
    """
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        h.update(str(size).encode())
        for offset in sorted({0, max(0, size // 2 - SIGNATURE_CHUNK // 2), max(0, size - SIGNATURE_CHUNK)}):
            fh.seek(offset)
            h.update(fh.read(SIGNATURE_CHUNK))
    return size, h.hexdigest()


def write_csv(df: pd.DataFrame, path: Path, columns: Iterable[str]) -> None:
    """Write ``df`` with exactly ``columns`` in that order (deterministic bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df = df.reindex(columns=list(columns))
    df.to_csv(path, index=False, lineterminator="\n")


def read_manifest(path: Path) -> pd.DataFrame:
    """Read and check ``manifest.csv``.

    Raises:
        ValueError: If a required column is missing or a label/split is unknown.
    """
    path = Path(path)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    bad_labels = sorted(set(df["label"]) - set(LABELS))
    if bad_labels:
        raise ValueError(f"{path}: unknown label(s) {bad_labels}; expected real/fake")
    bad_splits = sorted(set(df["split"]) - set(SPLITS))
    if bad_splits:
        raise ValueError(f"{path}: unknown split(s) {bad_splits}")
    if df["video_id"].duplicated().any():
        dup = df.loc[df["video_id"].duplicated(), "video_id"].tolist()[:5]
        raise ValueError(f"{path}: duplicate video_id(s) {dup}")
    return df
