"""Face detection (MTCNN, wrapped once) and square face crops from full-resolution frames.

MTCNN's cost is per-pixel overhead, so it runs on a copy of each frame whose long side
is ``detect_long_side`` (3-4x cheaper at 720p with about the same hit rate, see
docs/performance.md); copies of equal size go through MTCNN in one batched call. Boxes and
landmarks are mapped back to full-resolution pixels by :class:`_DetectionView`, the only
place that scales in either direction, and crops are always cut from the full-resolution
frame. Frames where the small copy found no face are re-detected at full resolution,
which recovers small, dark faces cheaply because it concerns few frames. MTCNN never sees
more than :data:`MAX_DETECT_PIXELS` pixels: its memory grows with them (8 GB for one
144 Mpx image), so the "full-resolution" retry of a larger frame runs on a copy that size.

"No face" is an empty list, never an exception.

Example:
    >>> detector = FaceDetector(CropParams())  # doctest: +SKIP
    >>> crops = detect_and_crop(frames, detector, CropParams())  # doctest: +SKIP
    >>> crops[0].crop.shape  # (224, 224, 3) uint8, not normalised  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from facenet_pytorch import MTCNN

from .imaging import Window, crop_window, cut_window
from .video import Frame

logger = logging.getLogger(__name__)

# MTCNN builds an empty image pyramid and crashes on images smaller than this (or than
# min_face_size) on their short side, so such images are never passed to it.
MIN_DETECT_SIDE = 20
# The most pixels MTCNN is given at once per image (a 4K UHD frame: about 0.5 GB for MTCNN).
MAX_DETECT_PIXELS = 3840 * 2160


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
        window: The square ``(left, top, side)`` in frame pixels the crop was cut from;
            recorded so later steps map frame coordinates into crop pixels exactly.
        crop: ``(crop_size, crop_size, 3)`` RGB uint8 (not normalised).
    """

    frame_index: int
    face_index: int
    face: Face
    window: Window
    crop: np.ndarray

    def record(self) -> dict:
        """The detection fields of this crop's ``faces.parquet`` row (all but video and shard)."""
        x1, y1, x2, y2 = self.face.box
        left, top, side = self.window
        return {
            "frame_index": self.frame_index, "face_index": self.face_index,
            "x1": x1, "y1": y1, "x2": x2, "y2": y2, "det_prob": self.face.prob,
            "landmarks": [float(v) for v in np.asarray(self.face.landmarks).reshape(-1)],
            "crop_left": left, "crop_top": top, "crop_side": side,
        }


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


def _bounded_long_side(image: np.ndarray, long_side: int | None) -> int | None:
    """``long_side`` (None: full size), lowered so the detection copy has at most MAX_DETECT_PIXELS."""
    h, w = image.shape[:2]
    if h * w <= MAX_DETECT_PIXELS:
        return long_side
    budget = int(max(h, w) * (MAX_DETECT_PIXELS / (h * w)) ** 0.5)
    return budget if long_side is None else min(long_side, budget)


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
        views = [_DetectionView.of(img, _bounded_long_side(img, p.detect_long_side)) for img in images]
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
                    retry = _DetectionView.of(images[i], _bounded_long_side(images[i], None))
                    if retry.image.shape != view.image.shape:
                        (results[i],) = self._detect_views([retry])
        return results


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
    crops = []
    for frame, faces in zip(frames, faces_per_frame):
        for k, face in enumerate(faces):
            window = crop_window(face.box, params.margin)
            crops.append(FaceCrop(frame.frame_index, k, face, window, cut_window(frame.image, window, params.crop_size)))
    return crops
