"""Judge single video or image files: the path the CLI and the web demo share.

A file goes through the pipeline's own steps with the detector's own calibration:
sequential decoding of ``calibration.frames_per_video`` frames (:func:`video.read_frames`,
in a background thread: :class:`video.FrameStream`), face detection and cropping with
``calibration.crop`` as each frame arrives (:func:`faces.detect_and_crop`, as in the
crop_faces stage, on the same frames in the same order), the checkpoint's eval transform
and batched classification, the calibrated aggregation and verdict rule
(:meth:`calibration.Calibration.decide`, as in the predict_videos stage). So a video gets
the same verdict here as in the pipeline, and decoding overlaps detection.

Example:
    >>> detector = load_detector(Path("models/detector.pt"))  # doctest: +SKIP
    >>> for pred in judge_paths([Path("clip.mp4")], detector):  # doctest: +SKIP
    ...     print(pred.verdict.verdict, pred.verdict.prob_fake)
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import numpy as np
import pandas as pd

from .. import records
from ..faces.detection import FaceCrop, FaceDetector, detect_and_crop
from ..media.video import MAX_FRAMES_DECODED, FrameStream, VideoReadError
from ..model.data import ArrayDataset
from ..model.engine import Runtime, predict_logits, prepare_model, setup_runtime
from ..model.transforms import build_eval_transform
from ..scoring.aggregate import sigmoid, video_scores
from .calibration import Detector

# Face crops per forward pass.
BATCH_SIZE = 64


class PathPrediction(NamedTuple):
    """What :func:`judge_paths` yields per file.

    Attributes:
        verdict: The file's verdict.
        faces: One row per scored face (:data:`records.SCORED_FACE_COLUMNS`), aligned with ``crops``.
        crops: The face crops, RGB uint8 (not normalised).
        frames: Full sampled frames by frame index when ``keep_frames``, else None.
    """

    verdict: records.VideoVerdict
    faces: pd.DataFrame
    crops: list[np.ndarray]
    frames: dict[int, np.ndarray] | None


def _faces_table(video_id: str, crops: list[FaceCrop], logits: np.ndarray) -> pd.DataFrame:
    rows = [{"video_id": video_id, **c.record()} for c in crops]
    return pd.DataFrame(rows).assign(logit=logits.astype(np.float64), prob_fake=sigmoid(logits))[records.SCORED_FACE_COLUMNS]


def judge_paths(
    paths: Iterable[Path],
    detector: Detector,
    face_detector: FaceDetector | None = None,
    n_frames: int | None = None,
    keep_frames: bool = False,
    runtime: Runtime | None = None,
    max_frames: int = MAX_FRAMES_DECODED,
    max_decoded_pixels: int | None = None,
) -> Iterator[PathPrediction]:
    """Judge video (or image) files one by one.

    Args:
        paths: Files to judge.
        detector: The calibrated model (loaded once by the caller).
        face_detector: MTCNN built with ``detector.calibration.crop`` (built here when None;
            pass one to reuse it across calls).
        n_frames: Frames sampled per video; default the calibration's. Another number
            departs from what the threshold was calibrated on.
        keep_frames: Also return the full frames (for Grad-CAM overlays).
        runtime: Device/precision; default ``setup_runtime("auto")``.
        max_frames: Decode at most this many frames per video (:func:`video.read_frames`).
        max_decoded_pixels: Decode at most this many pixels per video (the web demo's
            per-request budget; None: none).

    Yields:
        One :class:`PathPrediction` per path, in order. An unreadable file yields the
        verdict ``unreadable`` with the reason; a video without faces ``no_face``.

    Raises:
        ValueError: If ``face_detector`` was built with other settings than the calibration's.
    """
    cal = detector.calibration
    face_detector = face_detector or FaceDetector(cal.crop)
    if face_detector.params != cal.crop:
        raise ValueError("face_detector was built with other crop settings than the detector's calibration")
    rt = runtime or setup_runtime("auto")
    model = prepare_model(detector.model, rt)
    meta = detector.meta
    transform = build_eval_transform(meta.input_size, tuple(meta.mean), tuple(meta.std))
    n_frames = n_frames or cal.frames_per_video
    for path in paths:
        path = Path(path)
        common = dict(video_id=str(path), video_path=str(path), true_label=None, split=None,
                      threshold=cal.threshold, aggregation=cal.aggregation)
        empty = pd.DataFrame(columns=records.SCORED_FACE_COLUMNS)
        stream = FrameStream(path, n_frames, max_frames=max_frames, max_decoded_pixels=max_decoded_pixels)
        try:
            crops = detect_and_crop(stream, face_detector, cal.crop)
            info, frames = stream.result()
        except VideoReadError as exc:
            yield PathPrediction(records.VideoVerdict(**common, verdict=records.UNREADABLE, reason=str(exc), prob_fake=None),
                                 empty, [], None)
            continue
        if stream.replanned:  # the stream ended early and its frames were sampled again
            crops = detect_and_crop(frames, face_detector, cal.crop)
        common.update(n_frames_expected=info.n_frames_expected, n_frames_sampled=len(frames), decode_errors=info.decode_errors)
        kept = {f.frame_index: f.image for f in frames} if keep_frames else None
        if not crops:
            reason = f"no face with probability >= {cal.crop.prob_threshold} in any of {len(frames)} sampled frames of {path}"
            v = records.VideoVerdict(**common, verdict=records.NO_FACE, reason="; ".join([reason, *info.notes]), prob_fake=None)
            yield PathPrediction(v, empty, [], kept)
            continue
        images = [c.crop for c in crops]
        logits = predict_logits(model, ArrayDataset(images, transform), rt, batch_size=BATCH_SIZE, desc=path.name)
        faces = _faces_table(str(path), crops, logits)
        prob = float(video_scores(faces, cal.aggregation, cal.aggregate).iloc[0])
        planned = 1 if info.kind == records.KIND_IMAGE else n_frames  # a still image needs one face
        verdict, why = cal.decide(prob, len(faces), planned, info.decode_errors)
        v = records.VideoVerdict(**common, verdict=verdict, reason="; ".join([why, *info.notes]), prob_fake=prob,
                                 n_frames_with_face=int(faces["frame_index"].nunique()), n_faces=len(faces))
        yield PathPrediction(v, faces, images, kept)
