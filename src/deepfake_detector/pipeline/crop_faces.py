"""The crop_faces stage: detect faces in the extracted frames and store square crops.

Every manifest video gets one detection-report row: ok, no_face, or the unreadable /
missing status (and reason) carried over from extract_frames. Crops are cut by
:func:`faces.detect_and_crop`, the path single-file prediction uses too, and each face
row records its crop window, so later stages map frame coordinates (landmarks, blend
masks, Grad-CAM overlays) into crop pixels without knowing this stage's margin.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from .. import records
from ..faces.detection import CropParams, FaceDetector, detect_and_crop
from ..media.imaging import encode_image
from ..media.shards import ShardReader
from ..media.video import Frame
from .batch import VideoHandler, VideoResult, code_fingerprint, frame_digests, plan_shards, records_of, run_shards, shard_key

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

SHARD_PREFIX = "crops"


# One detector per process (a worker's, or this one in serial mode), built on first use:
# building MTCNN costs more than a short video.
_DETECTORS: dict[CropParams, FaceDetector] = {}


_READERS: dict[str, ShardReader] = {}


def _reader(frames_dir: str) -> ShardReader:
    """This process's reader of the frame shards (it indexes each shard once, again when it is replaced)."""
    return _READERS.setdefault(frames_dir, ShardReader(Path(frames_dir)))


def _detector(params: CropParams) -> FaceDetector:
    if params not in _DETECTORS:
        _DETECTORS[params] = FaceDetector(params)
        logger.info("MTCNN on %s, detection copies with long side %d", _DETECTORS[params].device, params.detect_long_side)
    return _DETECTORS[params]


def _load_frames(rows: list[dict], reader: ShardReader) -> list[Frame]:
    """Decode one video's frames from the frame shards, in frame order."""
    return [
        Frame(frame_index=int(r["frame_index"]), timestamp_s=float(r["timestamp_s"]),
              image=reader.read_image(r["shard"], r["member"]))
        for r in sorted(rows, key=lambda r: int(r["frame_index"]))
    ]


def _count(value: object) -> int:
    """A count from the extract report (text; blank when the video was not decoded)."""
    try:
        return int(float(value))  # "12", or "12.0" from a float column
    except (TypeError, ValueError):  # blank or NaN: not decoded
        return 0


def _text(value: object) -> str:
    """An extract report value as the stage reads it from the CSV: a count that pandas made a float
    (its column has blanks) is ``12``, not ``12.0``, so that a video's shard key does not depend on
    whether other videos failed."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class _Cropper(VideoHandler):
    """Detects and crops one manifest video at a time (the per-video step of the stage; sent to the workers).

    A video's input holds its manifest fields, its extract report row (``extract``), its
    frame rows (``frames``) and the digest of its frames' bytes (``frames_digest``).
    """

    params: CropParams
    frames_dir: str

    def _report(self, video: dict) -> dict:
        extracted = video["extract"]
        return {"video_id": video["video_id"], "kind": extracted["kind"],
                "frames_expected": _count(extracted["n_frames_expected"]), "frames_sampled": 0,
                "decode_errors": _count(extracted["decode_errors"]), "frames_with_face": 0, "faces_kept": 0}

    def failed(self, video: dict, reason: str) -> dict:
        return {**self._report(video), "status": records.UNREADABLE, "reason": reason}

    def __call__(self, video: dict) -> VideoResult:
        params = self.params
        report = self._report(video)
        status, reason = video["extract"]["status"], video["extract"]["reason"]
        if status == records.OK and not video["frames"]:
            status, reason = records.UNREADABLE, f"no frames of {video['video_id']} in the frames table"
        if status != records.OK:
            return {**report, "status": status, "reason": reason}, [], []
        frames = _load_frames(video["frames"], _reader(self.frames_dir))
        crops = detect_and_crop(frames, _detector(params), params)
        report["frames_sampled"] = len(frames)
        # An ok video's extract reason, when it has one, says what went wrong while decoding it.
        if not crops:
            reason = "; ".join(filter(None, [f"no face with probability >= {params.prob_threshold} in any of "
                                             f"{len(frames)} sampled frames of {video['path']}", reason]))
            return {**report, "status": records.NO_FACE, "reason": reason}, [], []
        report.update(status=records.OK, reason=reason,
                      frames_with_face=len({c.frame_index for c in crops}), faces_kept=len(crops))
        rows, members = [], []
        for c in crops:
            member = f"{video['video_id']}/{c.frame_index:06d}_{c.face_index:02d}.png"
            members.append((member, encode_image(c.crop, "png")))
            rows.append({"video_id": video["video_id"], **c.record(), "member": member})
        return report, rows, members


def video_inputs(manifest: pd.DataFrame, frames_table: pd.DataFrame, extract_report: pd.DataFrame,
                 frames_dir: Path) -> list[dict]:
    """Each manifest video's input to the per-video step (:class:`_Cropper`), in manifest order.

    ``video_id`` and ``path``, ``extract`` (its extract report row, values as the stage reads
    them from the CSV), ``frames`` (its frame table rows) and ``frames_digest``. Labels and
    splits are not inputs of a shard (a new split detects nothing again): :func:`crop_videos`
    adds them to the report rows afterwards.
    """
    extracted = {row["video_id"]: {k: _text(v) for k, v in row.items()} for row in records_of(extract_report)}
    frames_by_video: dict[str, list[dict]] = {}
    for row in records_of(frames_table):
        frames_by_video.setdefault(row["video_id"], []).append(row)
    digests = frame_digests(frames_dir)
    return [{"video_id": row["video_id"], "path": row["path"],
             "extract": extracted[row["video_id"]], "frames": frames_by_video.get(row["video_id"], []),
             "frames_digest": digests.get(row["video_id"])}
            for row in records_of(manifest)]


def crop_videos(
    manifest: pd.DataFrame,
    frames_table: pd.DataFrame,
    extract_report: pd.DataFrame,
    frames_dir: Path,
    crops_dir: Path,
    params: CropParams,
    detector: FaceDetector | None = None,
    client: Client | None = None,
) -> tuple[list[dict], pd.DataFrame]:
    """Detect and crop the faces of every manifest video's extracted frames.

    Videos go to ``crops-<i>-of-<n>.tar`` by a hash of their id (about ``videos_per_shard``
    per shard; members ``<video_id>/<frame_index:06d>_<face_index:02d>.png``). Videos that
    extract_frames could not read keep its status and reason. Shards whose inputs (the
    videos' frames, by digest, and extract rows, the params, the code) did not change since
    the last run in ``crops_dir`` are kept, not detected again (:mod:`batch`).

    Args:
        manifest: Rows of ``manifest.csv`` (for labels and splits).
        frames_table: ``frames.csv`` rows.
        extract_report: ``extract_report.csv`` rows.
        frames_dir: Folder of the frame shards (on a cluster: a path every worker reads).
        crops_dir: Folder for the crop shards (on a cluster: a path every worker writes).
        params: ``crop_faces`` params.
        detector: A detector built with ``params`` to reuse in this process; built on first use when None.
        client: A Dask client to build the shards on; None: in this process, one after the other.

    Returns:
        ``(face rows, report)``: the ``faces.parquet`` rows (by video, frame, face) and the
        detection report (``records.DETECTION_REPORT_COLUMNS``, one row per manifest video).

    Raises:
        ValueError: If a manifest video has no row in the extract report (stale inputs),
            or ``detector`` was built with other params.
        IncompleteShardsError: If some shards could not be built (the others are kept).
    """
    absent = sorted(set(manifest["video_id"]) - set(extract_report["video_id"]))
    if absent:
        raise ValueError(
            f"{len(absent)} manifest video(s) missing from the extract report, e.g. "
            f"{absent[:5]}: re-run extract_frames"
        )
    if detector is not None:
        if detector.params != params:
            raise ValueError("detector was built with other crop params than the ones given")
        _DETECTORS[params] = detector
    code = code_fingerprint(__name__.split(".", 1)[1])
    videos = video_inputs(manifest, frames_table, extract_report, frames_dir)

    def key(part: tuple[dict, ...]) -> str | None:
        # Frames of unknown content (shards without their JSON): never counted as up to date.
        if any(v["frames"] and v["frames_digest"] is None for v in part):
            return None
        # Which frame shard holds a frame is not an input (the digest is): frame shards renamed
        # when their count doubles leave the crops as they are.
        inputs = [{**v, "frames": [{k: f for k, f in row.items() if k != "shard"} for row in v["frames"]]} for v in part]
        return shard_key("crop_faces", code, params, inputs)

    tasks = plan_shards(crops_dir, SHARD_PREFIX, videos, params.videos_per_shard, key)
    report_rows, face_rows = run_shards(crops_dir, SHARD_PREFIX, tasks, _Cropper(params, str(frames_dir)), "crop_faces",
                                        client)
    labels = manifest.set_index("video_id")[["label", "split"]].to_dict("index")
    report_rows = [{**row, **labels[row["video_id"]]} for row in report_rows]
    return face_rows, pd.DataFrame(report_rows, columns=records.DETECTION_REPORT_COLUMNS)
