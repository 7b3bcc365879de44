"""The extract_frames stage: sample frames of every manifest video into tar shards.

Videos are decoded sequentially (:func:`video.read_frames`) and their sampled frames
stored losslessly (PNG by default), so the crops cut from them later carry no new
compression traces. Every manifest video gets one report row (ok / missing / unreadable,
with a reason; an ok video that decoded with errors counts them in ``decode_errors`` and
says what they were in its reason); a bad file is reported and the batch goes on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from . import records
from .batch import VideoResult, for_each_video
from .imaging import encode_image
from .shards import ShardSequence, prepare_shard_dir
from .video import VideoNotFoundError, VideoReadError, read_frames

logger = logging.getLogger(__name__)

# Frame shards hold this many videos each (crop shards take theirs from params).
VIDEOS_PER_SHARD = 64
SHARD_PREFIX = "frames"


@dataclass(frozen=True)
class ExtractParams:
    """Params section ``extract_frames``.

    Attributes:
        frames_per_video: Frames sampled evenly over each video's decodable frames.
        image_format: ``png`` (lossless: keeps the forensic traces; default) or ``jpg``
            (quality 95).
    """

    frames_per_video: int = 16
    image_format: Literal["png", "jpg"] = "png"

    def __post_init__(self) -> None:
        if self.frames_per_video < 1:
            raise ValueError(f"frames_per_video must be >= 1, got {self.frames_per_video}")
        if self.image_format not in ("png", "jpg"):
            raise ValueError(f"image_format must be png or jpg, got {self.image_format!r}")


def _extract_one(row: Any, params: ExtractParams, shards: ShardSequence) -> VideoResult:
    """Extract one manifest row; returns its report row and its frame rows."""
    report: dict = {"video_id": row.video_id}
    if row.status == records.MISSING:
        reason = row.reason or f"listed but not found: {row.path}"
        return {**report, "status": records.MISSING, "reason": reason}, []
    try:
        info, frames = read_frames(Path(row.path), params.frames_per_video)
    except VideoNotFoundError as exc:
        return {**report, "status": records.MISSING, "reason": str(exc)}, []
    except VideoReadError as exc:
        return {**report, "status": records.UNREADABLE, "reason": str(exc)}, []
    writer = shards.next_video()
    frame_rows = []
    for frame in frames:
        member = f"{row.video_id}/{frame.frame_index:06d}.{params.image_format}"
        writer.add(member, encode_image(frame.image, params.image_format))
        h, w = frame.image.shape[:2]
        frame_rows.append({
            "video_id": row.video_id, "frame_index": frame.frame_index,
            "timestamp_s": frame.timestamp_s, "width": w, "height": h,
            "shard": writer.path.name, "member": member,
        })
    report.update(
        status=records.OK, reason="; ".join(info.notes), kind=info.kind, n_frames_total=info.n_frames,
        n_frames_expected=info.n_frames_expected, n_frames_sampled=len(frames), decode_errors=info.decode_errors,
        fps=info.fps, width=info.width, height=info.height, rotation=info.rotation,
    )
    return report, frame_rows


def extract_videos(
    manifest: pd.DataFrame, params: ExtractParams, frames_dir: Path
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sample the frames of every manifest video and store them in tar shards.

    Videos are handled in ``video_id`` order, ``VIDEOS_PER_SHARD`` readable videos per
    shard, members ``<video_id>/<frame_index:06d>.<png|jpg>``; an unreadable or missing
    video gets a report row with the reason and the batch goes on.

    Args:
        manifest: Rows of ``manifest.csv``.
        params: ``extract_frames`` params.
        frames_dir: Folder for the frame shards (its old shards are replaced).

    Returns:
        ``(frames table, report)`` with ``records.FRAME_COLUMNS`` and
        ``records.EXTRACT_REPORT_COLUMNS``, sorted by video id (and frame index).
    """
    prepare_shard_dir(frames_dir, SHARD_PREFIX)
    shards = ShardSequence(frames_dir, SHARD_PREFIX, VIDEOS_PER_SHARD)
    report_rows, frame_rows = for_each_video(
        manifest, shards, "extract_frames", lambda row: _extract_one(row, params, shards)
    )
    frames_df = pd.DataFrame(frame_rows, columns=records.FRAME_COLUMNS)
    report_df = pd.DataFrame(report_rows, columns=records.EXTRACT_REPORT_COLUMNS)
    return frames_df, report_df
