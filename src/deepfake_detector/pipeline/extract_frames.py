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
from typing import TYPE_CHECKING, Literal

import pandas as pd

from .. import records
from ..media.imaging import encode_image
from ..media.video import VideoNotFoundError, VideoReadError, read_frames
from .batch import VideoHandler, VideoResult, code_fingerprint, plan_shards, records_of, run_shards, shard_key

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

SHARD_PREFIX = "frames"


@dataclass(frozen=True)
class ExtractParams:
    """Params section ``extract_frames``.

    Attributes:
        frames_per_video: Frames sampled evenly over each video's decodable frames.
        image_format: ``png`` (lossless: keeps the forensic traces) or ``jpg``
            (quality 95).
        videos_per_shard: About this many videos per frame shard (the number of hash
            partitions is the power of two that gives at most this on average).
    """

    frames_per_video: int
    image_format: Literal["png", "jpg"]
    videos_per_shard: int

    def __post_init__(self) -> None:
        if self.frames_per_video < 1:
            raise ValueError(f"frames_per_video must be >= 1, got {self.frames_per_video}")
        if self.videos_per_shard < 1:
            raise ValueError(f"videos_per_shard must be >= 1, got {self.videos_per_shard}")
        if self.image_format not in ("png", "jpg"):
            raise ValueError(f"image_format must be png or jpg, got {self.image_format!r}")


# What a frame shard's bytes depend on, per video: the manifest's fields that extraction reads
# (``signature`` changes when the file's content does).
_INPUT_FIELDS = ("video_id", "path", "status", "reason", "signature")


@dataclass(frozen=True)
class _Extractor(VideoHandler):
    """Samples one video's frames (the per-video step of the stage; sent to the workers)."""

    params: ExtractParams

    def failed(self, video: dict, reason: str) -> dict:
        return {"video_id": video["video_id"], "status": records.UNREADABLE, "reason": reason}

    def __call__(self, video: dict) -> VideoResult:
        report: dict = {"video_id": video["video_id"]}
        if video["status"] == records.MISSING:
            reason = video["reason"] or f"listed but not found: {video['path']}"
            return {**report, "status": records.MISSING, "reason": reason}, [], []
        try:
            info, frames = read_frames(Path(video["path"]), self.params.frames_per_video)
        except VideoNotFoundError as exc:
            return {**report, "status": records.MISSING, "reason": str(exc)}, [], []
        except VideoReadError as exc:
            return {**report, "status": records.UNREADABLE, "reason": str(exc)}, [], []
        frame_rows, members = [], []
        for frame in frames:
            member = f"{video['video_id']}/{frame.frame_index:06d}.{self.params.image_format}"
            members.append((member, encode_image(frame.image, self.params.image_format)))
            h, w = frame.image.shape[:2]
            frame_rows.append({
                "video_id": video["video_id"], "frame_index": frame.frame_index,
                "timestamp_s": frame.timestamp_s, "width": w, "height": h, "member": member,
            })
        report.update(
            status=records.OK, reason="; ".join(info.notes), kind=info.kind, n_frames_total=info.n_frames,
            n_frames_expected=info.n_frames_expected, n_frames_sampled=len(frames), decode_errors=info.decode_errors,
            fps=info.fps, width=info.width, height=info.height, rotation=info.rotation,
        )
        return report, frame_rows, members


def extract_videos(
    manifest: pd.DataFrame, params: ExtractParams, frames_dir: Path, client: Client | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sample the frames of every manifest video and store them in tar shards.

    Videos go to ``frames-<i>-of-<n>.tar`` by a hash of their id (about
    ``params.videos_per_shard`` per shard), members ``<video_id>/<frame_index:06d>.<png|jpg>``;
    an unreadable or missing video gets a report row with the reason and the batch goes on. Shards whose inputs did
    not change since the last run in ``frames_dir`` are kept, not decoded again
    (:mod:`batch`).

    Args:
        manifest: Rows of ``manifest.csv``.
        params: ``extract_frames`` params.
        frames_dir: Folder for the frame shards.
        client: A Dask client to build the shards on; None: in this process, one after the other.

    Returns:
        ``(frames table, report)`` with ``records.FRAME_COLUMNS`` and
        ``records.EXTRACT_REPORT_COLUMNS``, sorted by video id (and frame index).

    Raises:
        IncompleteShardsError: If some shards could not be built (the others are kept).
    """
    code = code_fingerprint(__name__.split(".", 1)[1])
    videos = [{k: row.get(k, "") for k in _INPUT_FIELDS} for row in records_of(manifest)]
    tasks = plan_shards(frames_dir, SHARD_PREFIX, videos, params.videos_per_shard,
                        lambda part: shard_key("extract_frames", code, params, part))
    report_rows, frame_rows = run_shards(frames_dir, SHARD_PREFIX, tasks, _Extractor(params), "extract_frames", client)
    frames_df = pd.DataFrame(frame_rows, columns=records.FRAME_COLUMNS)
    report_df = pd.DataFrame(report_rows, columns=records.EXTRACT_REPORT_COLUMNS)
    return frames_df, report_df
