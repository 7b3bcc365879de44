"""Face detection (MTCNN, wrapped once) and square face crops from full-resolution frames.

MTCNN's cost is per-pixel overhead, so it runs on a copy of each frame whose long side
is ``detect_long_side`` (3-4x cheaper at 720p with about the same hit rate, see
docs/performance.md); copies of equal size go through MTCNN in one batched call. Boxes and
landmarks are mapped back to full-resolution pixels by :class:`_DetectionView`, the only
place that scales in either direction, and crops are always cut from the full-resolution
frame. Frames where the small copy found no face are re-detected at full resolution,
which recovers small, dark faces cheaply because it concerns few frames.

"No face" is an empty list, never an exception.

Example:
    >>> detector = FaceDetector(CropParams())  # doctest: +SKIP
    >>> crops = detect_and_crop(frames, detector, CropParams())  # doctest: +SKIP
    >>> crops[0].crop.shape  # (224, 224, 3) uint8, not normalised  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from facenet_pytorch import MTCNN

from deepfake_detector import records
from deepfake_detector.shards import ShardReader, ShardSequence, encode_image, prepare_shard_dir
from deepfake_detector.video import Frame, for_each_video

logger = logging.getLogger(__name__)

# MTCNN builds an empty image pyramid and crashes on images smaller than this (or than
# min_face_size) on their short side, so such images are never passed to it.
MIN_DETECT_SIDE = 20


@dataclass(frozen=True)
class CropParams:
    """Params section ``crop_faces``.

    Attributes:
        detect_long_side: MTCNN runs on a copy with this long side (never upscaled).
        full_res_retry: Re-detect at full resolution the frames where the copy found nothing.
        prob_threshold: Keep faces whose MTCNN probability is at least this.
        min_face_size: Smallest face MTCNN looks for, px on the image it is given.
        margin: Fraction of the box size added on each side before cropping.
        crop_size: Side of the square output crops, px.
        min_face_ratio: Keep faces at least this fraction of the frame's largest face.
        max_faces_per_frame: Keep at most this many faces per frame (largest first).
        batch_size: Frames per batched MTCNN call (equal-size detection copies only).
        videos_per_shard: Videos per crops tar shard.
    """

    detect_long_side: int = 640
    full_res_retry: bool = True
    prob_threshold: float = 0.9
    min_face_size: int = 20
    margin: float = 0.3
    crop_size: int = 224
    min_face_ratio: float = 0.5
    max_faces_per_frame: int = 4
    batch_size: int = 16
    videos_per_shard: int = 64

    def __post_init__(self) -> None:
        rules = {  # key: (valid?, the rule, for the message)
            "detect_long_side": (self.detect_long_side >= MIN_DETECT_SIDE, f">= {MIN_DETECT_SIDE}"),
            "prob_threshold": (0.0 <= self.prob_threshold <= 1.0, "in [0, 1]"),
            "min_face_size": (self.min_face_size >= 1, ">= 1"),
            "margin": (self.margin >= 0.0, ">= 0"),
            "crop_size": (self.crop_size >= 1, ">= 1"),
            "min_face_ratio": (0.0 <= self.min_face_ratio <= 1.0, "in [0, 1]"),
            "max_faces_per_frame": (self.max_faces_per_frame >= 1, ">= 1"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "videos_per_shard": (self.videos_per_shard >= 1, ">= 1"),
        }
        for key, (ok, rule) in rules.items():
            if not ok:
                raise ValueError(f"{key} must be {rule}, got {getattr(self, key)!r}")


@dataclass(frozen=True, eq=False)  # eq=False: comparing ndarray fields is ambiguous
class Face:
    """One detected face, in full-resolution frame pixels.

    Attributes:
        box: ``(x1, y1, x2, y2)``; may extend past the frame border.
        prob: MTCNN face probability.
        landmarks: ``(5, 2)`` float array of (x, y): eyes, nose, mouth corners.
    """

    box: tuple[float, float, float, float]
    prob: float
    landmarks: np.ndarray

    @property
    def size(self) -> float:
        """Longer side of the box, px (faces are ranked and filtered by it)."""
        x1, y1, x2, y2 = self.box
        return max(x2 - x1, y2 - y1)


@dataclass(eq=False)
class FaceCrop:
    """A face cut out of one sampled frame.

    Attributes:
        frame_index: The frame's index in its video.
        face_index: Rank of the face in its frame, 0 = largest.
        face: The detection, full-resolution pixels.
        crop: ``(crop_size, crop_size, 3)`` RGB uint8 (not normalised).
    """

    frame_index: int
    face_index: int
    face: Face
    crop: np.ndarray


@dataclass(frozen=True, eq=False)
class _DetectionView:
    """An image as MTCNN sees it, and the one mapping back to full-resolution pixels.

    Attributes:
        image: The detection copy (the full frame itself when it is small enough).
        sx: Detection-copy pixels per full-resolution pixel along x.
        sy: Same along y.
    """

    image: np.ndarray
    sx: float
    sy: float

    @classmethod
    def of(cls, full: np.ndarray, long_side: int | None) -> "_DetectionView":
        """Shrink ``full`` so its long side is ``long_side`` (never upscale; None: as is)."""
        h, w = full.shape[:2]
        if long_side is None or max(h, w) <= long_side:
            return cls(full, 1.0, 1.0)
        scale = long_side / max(h, w)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        small = cv2.resize(full, (new_w, new_h), interpolation=cv2.INTER_AREA)
        return cls(small, new_w / w, new_h / h)

    @property
    def is_scaled(self) -> bool:
        return self.sx != 1.0 or self.sy != 1.0

    def to_full(self, boxes: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map ``(k, 4)`` boxes and ``(k, 5, 2)`` landmarks to full-resolution pixels."""
        return boxes / [self.sx, self.sy, self.sx, self.sy], points / [self.sx, self.sy]


def _detectable(image: np.ndarray, min_face_size: int) -> bool:
    return min(image.shape[:2]) >= max(MIN_DETECT_SIDE, min_face_size)


class FaceDetector:
    """MTCNN, built once, run on downscaled, batched copies with a full-resolution retry.

    Args:
        params: Detection and selection settings.
        device: Torch device; default CUDA when available, else CPU.
    """

    def __init__(self, params: CropParams, device: str | torch.device | None = None) -> None:
        self.params = params
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        # post_process=False keeps pixel values; keep_all=True returns every face.
        self.mtcnn = MTCNN(
            keep_all=True,
            post_process=False,
            min_face_size=params.min_face_size,
            device=self.device,
        )

    def _run(self, batch: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """One MTCNN call on ``(N, H, W, 3)`` uint8 images of equal size.

        Returns:
            Per image: boxes ``(k, 4)``, probs ``(k,)``, landmarks ``(k, 5, 2)`` (k may be 0),
            in the pixels of ``batch``.
        """
        boxes, probs, points = self.mtcnn.detect(batch, landmarks=True)
        out = []
        for b, p, pts in zip(boxes, probs, points):
            if b is None:
                out.append((np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))))
                continue
            # MTCNN packs ragged per-image results into object arrays: make them numeric.
            b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
            out.append(
                (b, np.asarray(p, dtype=np.float64).reshape(-1),
                 np.asarray(pts, dtype=np.float64).reshape(-1, 5, 2))
            )
        return out

    def _detect_views(self, views: list[_DetectionView]) -> list[list[Face]]:
        """One batched MTCNN call on equal-size views; faces in full-resolution pixels."""
        batch = np.stack([v.image for v in views])  # (B, h, w, 3)
        out = []
        for view, (boxes, probs, points) in zip(views, self._run(batch)):
            full_boxes, full_points = view.to_full(boxes, points)
            out.append(self._select(full_boxes, probs, full_points))
        return out

    def _select(self, boxes: np.ndarray, probs: np.ndarray, points: np.ndarray) -> list[Face]:
        """Apply the probability threshold, the size ranking and the per-frame caps."""
        p = self.params
        faces = [
            Face(box=tuple(float(v) for v in b), prob=float(pr), landmarks=pt)
            for b, pr, pt in zip(boxes, probs, points)
            if pr >= p.prob_threshold
        ]
        faces.sort(key=lambda f: (-f.size, -f.prob, f.box))
        if not faces:
            return []
        floor = p.min_face_ratio * faces[0].size
        return [f for f in faces if f.size >= floor][: p.max_faces_per_frame]

    def detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        """Detect faces in RGB uint8 frames.

        Args:
            images: ``(H, W, 3)`` RGB uint8 frames, any sizes.

        Returns:
            Per frame, the kept faces (largest first) in full-resolution pixels; an empty
            list when there is none, including frames too small for MTCNN.

        Raises:
            ValueError: If an image is not ``(H, W, 3)`` uint8.
        """
        p = self.params
        for i, img in enumerate(images):
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(
                    f"image {i}: expected (H, W, 3) uint8, got {img.shape} {img.dtype}"
                )
        views = [_DetectionView.of(img, p.detect_long_side) for img in images]
        results: list[list[Face]] = [[] for _ in images]

        groups: dict[tuple[int, ...], list[int]] = {}
        for i, view in enumerate(views):
            if _detectable(view.image, p.min_face_size):
                groups.setdefault(view.image.shape, []).append(i)
            else:
                logger.debug("frame %d: %s too small for MTCNN", i, view.image.shape[:2])
        for shape in sorted(groups):
            members = groups[shape]
            for start in range(0, len(members), p.batch_size):
                chunk = members[start : start + p.batch_size]
                for i, faces in zip(chunk, self._detect_views([views[i] for i in chunk])):
                    results[i] = faces

        if p.full_res_retry:
            for i, view in enumerate(views):
                # Full-resolution frames are run one by one: batching them is slower.
                if not results[i] and view.is_scaled and _detectable(images[i], p.min_face_size):
                    (results[i],) = self._detect_views([_DetectionView.of(images[i], None)])
        return results


def crop_window(box: tuple[float, float, float, float], margin: float) -> tuple[int, int, int]:
    """The square that :func:`crop_face` cuts: centred on the box, its side the box's longer
    side enlarged by ``margin`` of it on each side.

    Args:
        box: ``(x1, y1, x2, y2)``, frame pixels.
        margin: Fraction of the box size added on each side.

    Returns:
        ``(left, top, side)`` in frame pixels (may lie partly outside the frame).

    Raises:
        ValueError: On a negative margin.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    x1, y1, x2, y2 = box
    side = max(1, int(round(max(x2 - x1, y2 - y1) * (1.0 + 2.0 * margin))))
    left = int(round((x1 + x2) / 2.0 - side / 2.0))
    top = int(round((y1 + y2) / 2.0 - side / 2.0))
    return left, top, side


def crop_face(
    image: np.ndarray, box: tuple[float, float, float, float], margin: float, size: int
) -> np.ndarray:
    """Cut a square face crop from a full-resolution frame.

    The square is :func:`crop_window`'s; parts outside the frame are black (0). It is
    resized with INTER_AREA when shrinking, INTER_LINEAR when enlarging.

    Args:
        image: ``(H, W, 3)`` uint8 frame.
        box: ``(x1, y1, x2, y2)`` in the frame's pixels.
        margin: Fraction of the box size added on each side.
        size: Output side, px.

    Returns:
        ``(size, size, 3)`` uint8 crop (values as in ``image``).

    Raises:
        ValueError: On a negative margin or a size below 1.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    left, top, side = crop_window(box, margin)
    h, w = image.shape[:2]
    square = np.zeros((side, side, image.shape[2]), dtype=image.dtype)
    sx0, sy0 = max(left, 0), max(top, 0)
    sx1, sy1 = min(left + side, w), min(top + side, h)
    if sx1 > sx0 and sy1 > sy0:
        square[sy0 - top : sy1 - top, sx0 - left : sx1 - left] = image[sy0:sy1, sx0:sx1]
    if side == size:
        return square
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=interpolation)


def detect_and_crop(
    frames: list[Frame], detector: FaceDetector, params: CropParams
) -> list[FaceCrop]:
    """Detect faces in a video's sampled frames and crop them: the one path used by the
    ``crop_faces`` stage and by single-video prediction.

    Args:
        frames: Decoded frames of one video (detection is batched across them).
        detector: The detector (built once by the caller).
        params: Crop settings (``margin``, ``crop_size``).

    Returns:
        Crops ordered by frame, then face rank; empty when no frame has a face.
    """
    faces_per_frame = detector.detect([f.image for f in frames])
    return [
        FaceCrop(
            frame_index=frame.frame_index,
            face_index=k,
            face=face,
            crop=crop_face(frame.image, face.box, params.margin, params.crop_size),
        )
        for frame, faces in zip(frames, faces_per_frame)
        for k, face in enumerate(faces)
    ]


# --- Batch cropping for the crop_faces stage -------------------------------------

SHARD_PREFIX = "crops"

# faces.parquet column types, in records.FACE_COLUMNS order.
FACES_SCHEMA = pa.schema([
    ("video_id", pa.string()),
    ("frame_index", pa.int64()),
    ("face_index", pa.int64()),
    ("x1", pa.float64()),
    ("y1", pa.float64()),
    ("x2", pa.float64()),
    ("y2", pa.float64()),
    ("det_prob", pa.float64()),
    ("landmarks", pa.list_(pa.float64())),
    ("crop_left", pa.int64()),
    ("crop_top", pa.int64()),
    ("crop_side", pa.int64()),
    ("shard", pa.string()),
    ("member", pa.string()),
])
assert FACES_SCHEMA.names == records.FACE_COLUMNS, "FACES_SCHEMA out of step with records"


def _load_frames(rows: pd.DataFrame, reader: ShardReader) -> list[Frame]:
    """Decode one video's frames from the frame shards, in frame order."""
    return [
        Frame(
            frame_index=int(r.frame_index),
            timestamp_s=float(r.timestamp_s),
            image=reader.read_image(r.shard, r.member),
        )
        for r in rows.sort_values("frame_index").itertuples(index=False)
    ]


def _store_crops(video_id: str, crops: list[FaceCrop], shards: ShardSequence, margin: float) -> list[dict]:
    """Write one video's crops as PNG shard members; returns their faces rows.

    Each row records its crop window so later stages map frame coordinates (landmarks,
    blend masks) into crop pixels without knowing this stage's margin.
    """
    writer = shards.next_video()
    rows = []
    for c in crops:
        member = f"{video_id}/{c.frame_index:06d}_{c.face_index:02d}.png"
        writer.add(member, encode_image(c.crop, "png"))
        x1, y1, x2, y2 = c.face.box
        left, top, side = crop_window(c.face.box, margin)
        rows.append({
            "video_id": video_id, "frame_index": c.frame_index, "face_index": c.face_index,
            "x1": x1, "y1": y1, "x2": x2, "y2": y2, "det_prob": c.face.prob,
            "landmarks": [float(v) for v in np.asarray(c.face.landmarks).reshape(-1)],
            "crop_left": left, "crop_top": top, "crop_side": side,
            "shard": writer.path.name, "member": member,
        })
    return rows


def _crop_one(
    row: Any,
    extract: pd.DataFrame,
    frames_by_video: dict[str, pd.DataFrame],
    reader: ShardReader,
    detector: FaceDetector,
    shards: ShardSequence,
) -> tuple[dict, list[dict]]:
    """Detect and crop one manifest video; returns its report row and its faces rows."""
    params = detector.params
    report: dict = {"video_id": row.video_id, "label": row.label, "split": row.split,
                    "frames_sampled": 0, "frames_with_face": 0, "faces_kept": 0}
    status, reason = extract.at[row.video_id, "status"], extract.at[row.video_id, "reason"]
    video_frames = frames_by_video.get(row.video_id)
    if status == records.OK and video_frames is None:
        status, reason = records.UNREADABLE, f"no frames of {row.video_id} in the frames table"
    if status != records.OK:
        return {**report, "status": status, "reason": reason}, []
    frames = _load_frames(video_frames, reader)
    crops = detect_and_crop(frames, detector, params)
    report["frames_sampled"] = len(frames)
    if not crops:
        reason = (f"no face with probability >= {params.prob_threshold} in any of "
                  f"{len(frames)} sampled frames of {row.path}")
        return {**report, "status": records.NO_FACE, "reason": reason}, []
    report.update(
        status=records.OK, reason="",
        frames_with_face=len({c.frame_index for c in crops}), faces_kept=len(crops),
    )
    return report, _store_crops(row.video_id, crops, shards, params.margin)


def crop_videos(
    manifest: pd.DataFrame,
    frames_table: pd.DataFrame,
    extract_report: pd.DataFrame,
    frames_dir: Path,
    crops_dir: Path,
    params: CropParams,
    detector: FaceDetector | None = None,
) -> tuple[pa.Table, pd.DataFrame]:
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
        ``(faces, report)``: the faces table (``FACES_SCHEMA``, sorted by video, frame,
        face) and the detection report (``records.DETECTION_REPORT_COLUMNS``, one row per
        manifest video).

    Raises:
        ValueError: If a manifest video has no row in the extract report (stale inputs),
            or ``detector`` was built with other params.
    """
    extract = extract_report.set_index("video_id")
    absent = sorted(set(manifest["video_id"]) - set(extract.index))
    if absent:
        raise ValueError(
            f"{len(absent)} manifest video(s) missing from the extract report, e.g. "
            f"{absent[:5]}: re-run extract_frames"
        )
    detector = detector or FaceDetector(params)
    if detector.params != params:
        raise ValueError("detector was built with other crop params than the ones given")
    logger.info(
        "MTCNN on %s, detection copies with long side %d",
        detector.device, params.detect_long_side,
    )
    frames_by_video = {vid: rows for vid, rows in frames_table.groupby("video_id", sort=True)}
    reader = ShardReader(frames_dir)
    prepare_shard_dir(crops_dir, SHARD_PREFIX)
    shards = ShardSequence(crops_dir, SHARD_PREFIX, params.videos_per_shard)
    report_rows, face_rows = for_each_video(
        manifest, shards, "crop_faces",
        lambda row: _crop_one(row, extract, frames_by_video, reader, detector, shards),
    )
    faces = pa.Table.from_pylist(face_rows, schema=FACES_SCHEMA)
    return faces, pd.DataFrame(report_rows, columns=records.DETECTION_REPORT_COLUMNS)


def write_faces(faces: pa.Table, path: Path) -> None:
    """Write the faces table as Parquet, deterministically (no pandas index, zstd).

    Args:
        faces: Table with ``FACES_SCHEMA``.
        path: Output file (parent folders are made).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(faces, path, compression="zstd")
