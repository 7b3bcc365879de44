"""The tables stages hand to each other, and their vocabulary: the only home of both.

Stages pass explicit records, never meaning parsed out of file paths. Every table carries
``video_id``; boxes are in original-frame pixels (after rotation). Each table has its
column list here and exactly one reader and one writer, which check the columns, so a stage
that is out of step with its inputs fails with the file's name instead of a ``KeyError``.

| table | written by | one row per |
|---|---|---|
| ``data/manifest.csv`` | ingest | listed video (missing ones included) |
| ``data/frames.csv`` | extract_frames | sampled, decoded frame |
| ``outputs/extract_report.csv`` | extract_frames | manifest video |
| ``data/faces.parquet`` | crop_faces | kept face crop |
| ``data/landmarks.parquet`` | landmarks | kept face crop (its dense landmarks) |
| ``outputs/detection_report.csv`` | crop_faces | manifest video |
| ``data/face_scores.parquet`` | calibrate | face crop (its fake logit) |
| ``outputs/video_predictions.csv`` | predict_videos (and the CLI's ``--csv``) | video |
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .core.errors import InputError

logger = logging.getLogger(__name__)

# --- vocabulary -------------------------------------------------------------------------

# Video-level status values, in the order a video can fail.
OK = "ok"
MISSING = "missing"  # listed (e.g. in metadata.json) but not on disk
UNREADABLE = "unreadable"  # not a video, empty, truncated, zero decodable frames
NO_FACE = "no_face"  # readable, but no face in any sampled frame
STATUSES = (OK, MISSING, UNREADABLE, NO_FACE)
EXTRACT_STATUSES = (OK, UNREADABLE, MISSING)

# Verdicts: a scored video is fake, real or uncertain (within the abstain band of the
# threshold); a video that could not be scored says why instead.
FAKE, REAL, UNCERTAIN = "fake", "real", "uncertain"
VERDICTS = (FAKE, REAL, UNCERTAIN, NO_FACE, UNREADABLE)
SCORED_VERDICTS = (FAKE, REAL, UNCERTAIN)

LABELS = {"real": 0, "fake": 1}

# What a file is decoded as, from its content (not its suffix): a still image is a one-frame video.
KIND_VIDEO, KIND_IMAGE = "video", "image"
SPLITS = ("train", "val", "test")

# File suffixes read as media, case-insensitively. Still images are one-frame videos
# (users ask to score photos too).
VIDEO_SUFFIXES = (".avi", ".flv", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".webm", ".wmv")
IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".webp")
MEDIA_SUFFIXES = VIDEO_SUFFIXES + IMAGE_SUFFIXES


def is_media_name(name: str | Path) -> bool:
    """True when a file name has one of :data:`MEDIA_SUFFIXES` (case-insensitive)."""
    return Path(name).suffix.lower() in MEDIA_SUFFIXES


# --- columns ----------------------------------------------------------------------------

# The embedded sample (make_sample): labels.csv, one row per clip, read by ingest's
# `sample` source; masks.csv, the manipulated region of every fake frame, read by gradcam.
SAMPLE_LABELS_FILE = "labels.csv"
SAMPLE_LABEL_COLUMNS = ["file", "label", "manipulation", "identity", "origin"]
SAMPLE_MASKS_FILE = "masks.csv"
SAMPLE_MASK_COLUMNS = ["file", "frame_index", "polygon"]  # polygon: JSON [[x, y], ...] in frame pixels

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
    "signature",  # cheap content signature (file_signature); a replaced file changes it
]

# data/frames.csv, written by extract_frames. One row per sampled, decoded frame.
FRAME_COLUMNS = ["video_id", "frame_index", "timestamp_s", "width", "height", "shard", "member"]

# outputs/extract_report.csv: one row per manifest video. ``reason`` also describes what
# went wrong while decoding a video whose status is ok (frames that failed, an early end).
EXTRACT_REPORT_COLUMNS = [
    "video_id", "status", "reason",
    "kind",  # video | image (from the content, not the suffix)
    "n_frames_total",  # frames in the stream (decoded to its end, or to the decoding limit)
    "n_frames_expected",  # frames a complete file gives for the sample: min(frames_per_video, count); 1 for an image
    "n_frames_sampled",  # frames actually decoded for the sample
    "decode_errors",  # frames that failed to decode or are missing from an early end; 1 for a truncated image
    "fps", "width", "height", "rotation",
]
_EXTRACT_INT_COLUMNS = ("n_frames_total", "n_frames_expected", "n_frames_sampled", "decode_errors", "width", "height",
                        "rotation")

# data/faces.parquet, written by crop_faces. One row per kept face crop.
FACES_SCHEMA = pa.schema([
    ("video_id", pa.string()),
    ("frame_index", pa.int64()),
    ("face_index", pa.int64()),  # rank in its frame, 0 = largest
    ("x1", pa.float64()),
    ("y1", pa.float64()),
    ("x2", pa.float64()),
    ("y2", pa.float64()),
    ("det_prob", pa.float64()),
    ("landmarks", pa.list_(pa.float64())),  # flat list of 10 floats (5 x,y points), frame pixels
    ("crop_left", pa.int64()),  # the square (frame pixels) the crop was cut from
    ("crop_top", pa.int64()),
    ("crop_side", pa.int64()),
    ("shard", pa.string()),
    ("member", pa.string()),
])
FACE_COLUMNS = FACES_SCHEMA.names
# A face's identity in every per-face table.
FACE_KEY = ["video_id", "frame_index", "face_index"]
CROP_WINDOW_COLUMNS = ["crop_left", "crop_top", "crop_side"]

# data/landmarks.parquet, written by the landmarks stage: dense landmarks of every face
# crop, for Self-Blended-Image masks. Frame pixels, like the boxes; empty lists where the
# landmark model found no plausible face.
LANDMARKS_SCHEMA = pa.schema([
    ("video_id", pa.string()),
    ("frame_index", pa.int64()),
    ("face_index", pa.int64()),
    ("points68", pa.list_(pa.float64())),  # 68 x,y points, iBUG-300W order (136 floats)
    ("oval", pa.list_(pa.float64())),  # the face outline up to the hairline (36 x,y points)
])

# outputs/detection_report.csv: one row per manifest video (kind, frames_expected and
# decode_errors carried over from the extract report, so a verdict can weigh the evidence).
DETECTION_REPORT_COLUMNS = [
    "video_id", "label", "split", "status", "reason", "kind",
    "frames_expected", "frames_sampled", "decode_errors", "frames_with_face", "faces_kept",
]

# data/face_scores.parquet, written by calibrate: the fake logit of every face crop of
# every split, computed once and read by evaluate, predict_videos and gradcam.
FACE_SCORES_SCHEMA = pa.schema([
    ("video_id", pa.string()),
    ("frame_index", pa.int64()),
    ("face_index", pa.int64()),
    ("split", pa.string()),
    ("logit", pa.float64()),
])

# A video's scored faces in memory (single-file prediction -> Grad-CAM): detection, crop
# window and score of each face, aligned with its crops.
SCORED_FACE_COLUMNS = [*FACE_KEY, "x1", "y1", "x2", "y2", "det_prob", *CROP_WINDOW_COLUMNS, "logit", "prob_fake"]

# outputs/video_predictions.csv (and the CLI's --csv/--json): the seed project's columns
# first, so its consumers keep working, then the verdict details.
PREDICTION_COLUMNS = [
    "video_path", "true_label", "pred_class", "prob_fake", "prob_real",
    "video_id", "split", "verdict", "reason",
    "n_frames_expected", "n_frames_sampled", "decode_errors", "n_frames_with_face", "n_faces", "aggregation", "threshold",
]
_PREDICTION_TEXT_COLUMNS = ["video_path", "true_label", "pred_class", "video_id", "split", "verdict", "reason", "aggregation"]


# --- reading and writing ----------------------------------------------------------------


class RecordError(InputError):
    """A table is missing, unreadable or out of step with its contract; the message names the file."""


def write_csv(df: pd.DataFrame, path: Path, columns: Iterable[str]) -> None:
    """Write ``df`` with exactly ``columns`` in that order (deterministic bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df = df.reindex(columns=list(columns))
    df.to_csv(path, index=False, lineterminator="\n")


def _read_csv(path: Path, columns: Iterable[str], **kwargs: Any) -> pd.DataFrame:
    path = Path(path)
    try:
        df = pd.read_csv(path, **kwargs)
    except FileNotFoundError:
        raise RecordError(f"{path}: file not found (run the stage that writes it)") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise RecordError(f"{path}: not a readable CSV table ({exc})") from exc
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise RecordError(f"{path}: missing column(s) {missing} (written by an older version? re-run its stage)")
    return df


def read_manifest(path: Path) -> pd.DataFrame:
    """Read and check ``manifest.csv`` (all columns as text).

    Raises:
        RecordError: If a column is missing, a label/split is unknown or an id repeats.
    """
    path = Path(path)
    df = _read_csv(path, MANIFEST_COLUMNS, dtype=str, keep_default_na=False)
    bad_labels = sorted(set(df["label"]) - set(LABELS))
    if bad_labels:
        raise RecordError(f"{path}: unknown label(s) {bad_labels}; expected real/fake")
    bad_splits = sorted(set(df["split"]) - set(SPLITS))
    if bad_splits:
        raise RecordError(f"{path}: unknown split(s) {bad_splits}")
    if df["video_id"].duplicated().any():
        dup = df.loc[df["video_id"].duplicated(), "video_id"].tolist()[:5]
        raise RecordError(f"{path}: duplicate video_id(s) {dup}")
    return df


def write_manifest(df: pd.DataFrame, path: Path) -> None:
    """Write ``manifest.csv``."""
    write_csv(df, path, MANIFEST_COLUMNS)


def read_frames(path: Path) -> pd.DataFrame:
    """Read ``frames.csv`` (ids and shard names as text)."""
    return _read_csv(path, FRAME_COLUMNS, dtype={"video_id": str, "shard": str, "member": str})


def write_frames(df: pd.DataFrame, path: Path) -> None:
    """Write ``frames.csv``."""
    write_csv(df, path, FRAME_COLUMNS)


def read_extract_report(path: Path) -> pd.DataFrame:
    """Read ``extract_report.csv`` (all columns as text; blanks are ``""``)."""
    return _read_csv(path, EXTRACT_REPORT_COLUMNS, dtype=str, keep_default_na=False)


def write_extract_report(df: pd.DataFrame, path: Path) -> None:
    """Write ``extract_report.csv``; counts of failed videos stay blank, not NaN floats."""
    df = df.reindex(columns=EXTRACT_REPORT_COLUMNS)
    for col in _EXTRACT_INT_COLUMNS:
        df[col] = df[col].astype("Int64")
    write_csv(df, path, EXTRACT_REPORT_COLUMNS)


def read_detection_report(path: Path) -> pd.DataFrame:
    """Read ``detection_report.csv`` (all columns as text; blanks are ``""``)."""
    return _read_csv(path, DETECTION_REPORT_COLUMNS, dtype=str, keep_default_na=False)


def video_status(manifest: pd.DataFrame, detection_report: Path) -> pd.Series:
    """Per-video status (ok / no_face / unreadable / missing) from crop_faces' report.

    Args:
        manifest: Manifest rows whose status is wanted.
        detection_report: ``detection_report.csv``.

    Returns:
        Status by ``video_id``, in manifest order. A manifest video absent from the report
        is ``unreadable`` (with a warning), never dropped.
    """
    report = read_detection_report(detection_report)
    status = report.set_index("video_id")["status"].reindex(manifest["video_id"])
    absent = status[status.isna()].index.tolist()
    if absent:
        logger.warning("%d videos are missing from %s (counted as unreadable), e.g. %s", len(absent), detection_report,
                       absent[:5])
    return status.fillna(UNREADABLE)


def write_detection_report(df: pd.DataFrame, path: Path) -> None:
    """Write ``detection_report.csv``."""
    write_csv(df, path, DETECTION_REPORT_COLUMNS)


def _read_parquet(path: Path, schema: pa.Schema) -> pd.DataFrame:
    path = Path(path)
    try:
        df = pd.read_parquet(path)
    except FileNotFoundError:
        raise RecordError(f"{path}: file not found (run the stage that writes it)") from None
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise RecordError(f"{path}: not a readable Parquet table ({exc})") from exc
    missing = [c for c in schema.names if c not in df.columns]
    if missing:
        raise RecordError(f"{path}: missing column(s) {missing} (written by an older version? re-run its stage)")
    return df


def _write_parquet(rows: pd.DataFrame | list[dict], path: Path, schema: pa.Schema,
                   metadata: dict[bytes, bytes] | None = None) -> None:
    """Write a table with ``schema`` deterministically (no pandas index, zstd), with
    ``metadata`` added to the file's schema metadata."""
    if metadata:
        schema = schema.with_metadata({**(schema.metadata or {}), **metadata})
    if isinstance(rows, pd.DataFrame):
        table = pa.Table.from_pandas(rows.reindex(columns=schema.names), schema=schema, preserve_index=False)
    else:
        table = pa.Table.from_pylist(rows, schema=schema)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")


def read_faces(path: Path) -> pd.DataFrame:
    """Read ``faces.parquet``."""
    return _read_parquet(path, FACES_SCHEMA)


# faces.parquet's schema metadata key for the crop_faces settings the crops were made with.
CROP_SETTINGS_KEY = b"deepfake_detector.crop_settings"


def write_faces(rows: pd.DataFrame | list[dict], path: Path, crop_settings: dict[str, Any]) -> None:
    """Write ``faces.parquet`` (:data:`FACES_SCHEMA`) with how its crops were made.

    Args:
        rows: One row per kept face.
        path: The file to write.
        crop_settings: The ``crop_faces`` params (a plain dict) the crops were made with:
            later stages read them from here (:func:`read_crop_settings`), not from params.yaml.
    """
    settings = json.dumps(crop_settings, sort_keys=True, separators=(",", ":")).encode()
    _write_parquet(rows, path, FACES_SCHEMA, {CROP_SETTINGS_KEY: settings})


def read_crop_settings(path: Path) -> dict[str, Any]:
    """The ``crop_faces`` settings recorded in ``faces.parquet`` by :func:`write_faces`.

    Raises:
        RecordError: If the file is unreadable or records none (an older crop_faces wrote it).
    """
    try:
        metadata = pq.read_schema(path).metadata or {}
    except FileNotFoundError:
        raise RecordError(f"{path}: file not found (run the stage that writes it)") from None
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise RecordError(f"{path}: not a readable Parquet table ({exc})") from exc
    if CROP_SETTINGS_KEY not in metadata:
        raise RecordError(f"{path}: records no crop settings (written by an older version? re-run crop_faces)")
    return json.loads(metadata[CROP_SETTINGS_KEY])


def read_landmarks(path: Path) -> pd.DataFrame:
    """Read ``landmarks.parquet``."""
    return _read_parquet(path, LANDMARKS_SCHEMA)


def write_landmarks(rows: pd.DataFrame, path: Path) -> None:
    """Write ``landmarks.parquet`` (:data:`LANDMARKS_SCHEMA`)."""
    _write_parquet(rows, path, LANDMARKS_SCHEMA)


def read_face_scores(path: Path) -> pd.DataFrame:
    """Read ``face_scores.parquet``."""
    return _read_parquet(path, FACE_SCORES_SCHEMA)


def write_face_scores(rows: pd.DataFrame, path: Path) -> None:
    """Write ``face_scores.parquet`` (:data:`FACE_SCORES_SCHEMA`)."""
    _write_parquet(rows, path, FACE_SCORES_SCHEMA)


def read_predictions(path: Path) -> pd.DataFrame:
    """Read ``video_predictions.csv``; empty text cells are ``""``, empty numbers NaN."""
    df = _read_csv(path, PREDICTION_COLUMNS, dtype={c: str for c in _PREDICTION_TEXT_COLUMNS})
    df[_PREDICTION_TEXT_COLUMNS] = df[_PREDICTION_TEXT_COLUMNS].fillna("")
    return df


def write_predictions(rows: pd.DataFrame, path: Path) -> None:
    """Write ``video_predictions.csv``."""
    write_csv(rows, path, PREDICTION_COLUMNS)


# --- the verdict of one video -----------------------------------------------------------


@dataclass
class VideoVerdict:
    """The judgement of one video: one row of ``video_predictions.csv``.

    Attributes:
        video_id: Manifest id (pipeline) or the path as given (CLI).
        video_path: The file.
        true_label: ``real`` / ``fake`` when known (pipeline), else None.
        split: Manifest split (pipeline), else None.
        verdict: One of :data:`VERDICTS`.
        reason: Why, in words (the score against the threshold, or what went wrong).
        prob_fake: Aggregated fake probability; None when the video was not scored.
        threshold: Decision threshold in use (None when no detector was needed: the CLI
            loads one only for the first file that decodes).
        aggregation: Aggregation in use (None likewise).
        n_frames_expected: Frames a complete file gives for the sample (1 for an image).
        n_frames_sampled: Frames decoded and searched for faces.
        decode_errors: Frames that failed to decode or are missing (1 for a truncated image).
        n_frames_with_face: Sampled frames with at least one kept face.
        n_faces: Face crops scored.
    """

    video_id: str
    video_path: str
    true_label: str | None
    split: str | None
    verdict: str
    reason: str
    prob_fake: float | None
    threshold: float | None
    aggregation: str | None
    n_frames_expected: int = 0
    n_frames_sampled: int = 0
    decode_errors: int = 0
    n_frames_with_face: int = 0
    n_faces: int = 0

    @property
    def pred_class(self) -> str:
        """``fake``/``real`` by the threshold alone when scored (also for ``uncertain``,
        which ``verdict`` flags), else the verdict (``no_face``/``unreadable``)."""
        if self.prob_fake is None or self.threshold is None:
            return self.verdict
        return FAKE if self.prob_fake >= self.threshold else REAL

    def to_row(self) -> dict[str, Any]:
        """The :data:`PREDICTION_COLUMNS` of this video (None where not scored)."""
        row = asdict(self)
        row["pred_class"] = self.pred_class
        row["prob_real"] = None if self.prob_fake is None else 1.0 - self.prob_fake
        return {c: row[c] for c in PREDICTION_COLUMNS}


def count_verdicts(verdicts: Iterable[str]) -> dict[str, int]:
    """How many of each of :data:`VERDICTS` (zeros included, in that order)."""
    values = list(verdicts)
    return {v: sum(1 for x in values if x == v) for v in VERDICTS}


# --- file identity ----------------------------------------------------------------------

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
