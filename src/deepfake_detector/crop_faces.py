"""The crop_faces stage: detect faces in the extracted frames and store square crops.

Every manifest video gets one detection-report row: ok, no_face, or the unreadable /
missing status (and reason) carried over from extract_frames. Crops are cut by
:func:`faces.detect_and_crop`, the path single-file prediction uses too, and each face
row records its crop window, so later stages map frame coordinates (landmarks, blend
masks, Grad-CAM overlays) into crop pixels without knowing this stage's margin.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from . import records
from .batch import VideoResult, for_each_video
from .faces import CropParams, FaceCrop, FaceDetector, detect_and_crop
from .imaging import encode_image
from .shards import ShardReader, ShardSequence, prepare_shard_dir
from .video import Frame

logger = logging.getLogger(__name__)

SHARD_PREFIX = "crops"


def _load_frames(rows: pd.DataFrame, reader: ShardReader) -> list[Frame]:
    """Decode one video's frames from the frame shards, in frame order."""
    return [
        Frame(frame_index=int(r.frame_index), timestamp_s=float(r.timestamp_s), image=reader.read_image(r.shard, r.member))
        for r in rows.sort_values("frame_index").itertuples(index=False)
    ]


def _store_crops(video_id: str, crops: list[FaceCrop], shards: ShardSequence) -> list[dict]:
    """Write one video's crops as PNG shard members; returns their faces rows."""
    writer = shards.next_video()
    rows = []
    for c in crops:
        member = f"{video_id}/{c.frame_index:06d}_{c.face_index:02d}.png"
        writer.add(member, encode_image(c.crop, "png"))
        rows.append({"video_id": video_id, **c.record(), "shard": writer.path.name, "member": member})
    return rows


def _count(value: object) -> int:
    """A count from the extract report (text; blank when the video was not decoded)."""
    try:
        return int(float(value))  # "12", or "12.0" from a float column
    except (TypeError, ValueError):  # blank or NaN: not decoded
        return 0


class _Cropper:
    """Detects and crops one manifest video at a time (the per-video step of the stage)."""

    def __init__(self, extract: pd.DataFrame, frames: pd.DataFrame, frames_dir: Path,
                 detector: FaceDetector, shards: ShardSequence) -> None:
        self.extract = extract.set_index("video_id")
        self.frames_by_video = {vid: rows for vid, rows in frames.groupby("video_id", sort=True)}
        self.reader = ShardReader(frames_dir)
        self.detector = detector
        self.shards = shards

    def __call__(self, row: Any) -> VideoResult:
        params = self.detector.params
        extracted = self.extract.loc[row.video_id]
        report: dict = {"video_id": row.video_id, "label": row.label, "split": row.split, "kind": extracted["kind"],
                        "frames_expected": _count(extracted["n_frames_expected"]), "frames_sampled": 0,
                        "decode_errors": _count(extracted["decode_errors"]), "frames_with_face": 0, "faces_kept": 0}
        status, reason = extracted["status"], extracted["reason"]
        video_frames = self.frames_by_video.get(row.video_id)
        if status == records.OK and video_frames is None:
            status, reason = records.UNREADABLE, f"no frames of {row.video_id} in the frames table"
        if status != records.OK:
            return {**report, "status": status, "reason": reason}, []
        frames = _load_frames(video_frames, self.reader)
        crops = detect_and_crop(frames, self.detector, params)
        report["frames_sampled"] = len(frames)
        # An ok video's extract reason, when it has one, says what went wrong while decoding it.
        if not crops:
            reason = "; ".join(filter(None, [f"no face with probability >= {params.prob_threshold} in any of "
                                             f"{len(frames)} sampled frames of {row.path}", reason]))
            return {**report, "status": records.NO_FACE, "reason": reason}, []
        report.update(status=records.OK, reason=reason,
                      frames_with_face=len({c.frame_index for c in crops}), faces_kept=len(crops))
        return report, _store_crops(row.video_id, crops, self.shards)


def crop_videos(
    manifest: pd.DataFrame,
    frames_table: pd.DataFrame,
    extract_report: pd.DataFrame,
    frames_dir: Path,
    crops_dir: Path,
    params: CropParams,
    detector: FaceDetector | None = None,
) -> tuple[list[dict], pd.DataFrame]:
    """Detect and crop the faces of every manifest video's extracted frames.

    Videos are handled in ``video_id`` order; the crops of ``videos_per_shard`` videos
    with faces go to each ``crops-NNNNN.tar`` (members
    ``<video_id>/<frame_index:06d>_<face_index:02d>.png``). Videos that extract_frames
    could not read keep its status and reason.

    Args:
        manifest: Rows of ``manifest.csv`` (for labels and splits).
        frames_table: ``frames.csv`` rows.
        extract_report: ``extract_report.csv`` rows.
        frames_dir: Folder of the frame shards.
        crops_dir: Folder for the crop shards (its old shards are replaced).
        params: ``crop_faces`` params.
        detector: A detector built with ``params`` to reuse; built here when None.

    Returns:
        ``(face rows, report)``: the ``faces.parquet`` rows (by video, frame, face) and the
        detection report (``records.DETECTION_REPORT_COLUMNS``, one row per manifest video).

    Raises:
        ValueError: If a manifest video has no row in the extract report (stale inputs),
            or ``detector`` was built with other params.
    """
    absent = sorted(set(manifest["video_id"]) - set(extract_report["video_id"]))
    if absent:
        raise ValueError(
            f"{len(absent)} manifest video(s) missing from the extract report, e.g. "
            f"{absent[:5]}: re-run extract_frames"
        )
    detector = detector or FaceDetector(params)
    if detector.params != params:
        raise ValueError("detector was built with other crop params than the ones given")
    logger.info("MTCNN on %s, detection copies with long side %d", detector.device, params.detect_long_side)
    prepare_shard_dir(crops_dir, SHARD_PREFIX)
    shards = ShardSequence(crops_dir, SHARD_PREFIX, params.videos_per_shard)
    cropper = _Cropper(extract_report, frames_table, frames_dir, detector, shards)
    report_rows, face_rows = for_each_video(manifest, shards, "crop_faces", cropper)
    return face_rows, pd.DataFrame(report_rows, columns=records.DETECTION_REPORT_COLUMNS)
