"""The calibration: how a detector turns face logits into one verdict per video.

One :class:`Calibration` per model, chosen on validation by the ``calibrate`` stage and
stored inside the detector checkpoint it makes (``models/detector.pt``). Everything that
judges videos reads it from there: evaluate, predict_videos, gradcam, the CLI and the web
demo. It holds every decision between a video file and its verdict that is not a weight:
frames sampled per video, detection and crop settings, the aggregation and its cut-offs,
the threshold and the abstain band, so the CLI and the pipeline judge a video the same way.
It also says how a verdict is explained (:class:`ExplainParams`, the Grad-CAM settings), so
the gradcam stage, the CLI's ``--explain`` and the web demo draw the same maps.

Verdicts (:meth:`Calibration.decide`):

* ``fake`` / ``real``: the score is at least ``abstain_band`` away from the threshold;
* ``uncertain``: inside the band around the threshold; or too little evidence: fewer than
  ``min_faces`` faces scored (never more than one per sampled frame is asked: a still image
  needs one), or a damaged file (frames that failed to decode, a stream or image that ends
  early), whose score is reported but not turned into a verdict;
* ``no_face`` / ``unreadable``: decided before scoring, never from a made-up score.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import records
from ..core.config import ConfigError, from_mapping
from ..faces.detection import CropParams
from ..model.network import CheckpointError, CheckpointMeta, load_model
from ..scoring.aggregate import AGGREGATORS, AggregateParams

# Crop settings that older checkpoints do not record, and how those checkpoints' crops were
# made: before detect_every_no_face (fee5b32), keyframes without a face came every detect_every.
_CROP_BEFORE: dict[str, Any] = {"detect_every_no_face": lambda crop: crop.get("detect_every")}
# How checkpoints that do not record their Grad-CAM settings were explained: what the CLI
# and the web demo used before calibrate stored ``calibrate.explain`` (then a code copy).
_EXPLAIN_BEFORE: dict[str, Any] = {"top_k": 3, "batch_size": 16, "alpha": 0.5}


@dataclass(frozen=True)
class ExplainParams:
    """Params section ``calibrate.explain``: how a verdict is explained (Grad-CAM).

    Stored in the detector by calibrate, so whatever loads the detector explains alike.
    Defined here rather than in :mod:`explain` so that loading a detector does not import
    pytorch_grad_cam and matplotlib.

    Attributes:
        top_k: Explain the k frames with the highest fake probability and the k lowest.
        batch_size: Crops per Grad-CAM batch (speed and memory only).
        alpha: Opacity of the heat map over the image, in [0, 1].
    """

    top_k: int
    batch_size: int
    alpha: float

    def __post_init__(self) -> None:
        for key in ("top_k", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha!r}")


@dataclass(frozen=True)
class Calibration:
    """Everything between a video file and its verdict that is not a weight (and how the
    verdict is explained).

    Attributes:
        weights_sha256: The weights this calibration was made for.
        frames_per_video: Frames sampled evenly over each video.
        crop: Face detection and crop settings.
        aggregation: A key of :data:`aggregate.AGGREGATORS`.
        aggregate: Cut-offs of the ``confident`` aggregation.
        threshold: A video is fake when its score is >= this (outside the abstain band).
        abstain_band: Scores strictly within this distance of the threshold are ``uncertain``.
        min_faces: Fewer scored faces than this give ``uncertain`` (too little evidence);
            capped at the frames sampled, so a still image needs one face.
        explain: How a verdict is explained (Grad-CAM settings).
        how: How the aggregation and the threshold were chosen, for people.
    """

    weights_sha256: str
    frames_per_video: int
    crop: CropParams
    aggregation: str
    aggregate: AggregateParams
    threshold: float
    abstain_band: float
    explain: ExplainParams
    min_faces: int = 3
    how: str = ""

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATORS:
            raise ValueError(f"aggregation must be one of {sorted(AGGREGATORS)}, got {self.aggregation!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold!r}")
        if not 0.0 <= self.abstain_band < 0.5:
            raise ValueError(f"abstain_band must be in [0, 0.5), got {self.abstain_band!r}")
        if self.frames_per_video < 1 or self.min_faces < 1:
            raise ValueError("frames_per_video and min_faces must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for the checkpoint and the JSON report)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "calibration") -> Calibration:
        """Inverse of :meth:`to_dict`; unknown or missing keys are errors.

        A checkpoint is not params.yaml: one written before a setting existed is read with
        the value it was made with (:data:`_CROP_BEFORE`, :data:`_EXPLAIN_BEFORE`), never
        with today's params.

        Raises:
            ConfigError: If the dict does not describe a calibration.
        """
        crop = data.get("crop")
        if isinstance(crop, dict):
            crop = {**{k: rule(crop) for k, rule in _CROP_BEFORE.items() if k not in crop}, **crop}
            data = {**data, "crop": crop}
        if "explain" not in data:
            data = {**data, "explain": _EXPLAIN_BEFORE}
        return from_mapping(cls, data, where)

    def faces_needed(self, frames_planned: int | None = None) -> int:
        """Scored faces a verdict needs: ``min_faces``, but never more than the frames sampled.

        Args:
            frames_planned: Frames the sample asks for: 1 for a still image, else the frames
                per video in use (default the calibration's). A one-frame *video* is asked
                for the usual number, so it needs ``min_faces``.
        """
        return max(1, min(self.min_faces, frames_planned or self.frames_per_video))

    def decide(self, prob: float, n_faces: int, frames_planned: int | None = None,
               decode_errors: int = 0) -> tuple[str, str]:
        """The verdict of a scored video and its reason.

        Args:
            prob: Aggregated fake probability.
            n_faces: Face crops that were scored.
            frames_planned: See :meth:`faces_needed`.
            decode_errors: Frames of the file that failed to decode or are missing (1 for
                a truncated image).

        Returns:
            ``(verdict, reason)``: ``uncertain`` for a damaged file, when fewer faces than
            :meth:`faces_needed` were scored or when ``|prob - threshold| < abstain_band``,
            else ``fake`` when ``prob >= threshold``, else ``real``.
        """
        t, band = self.threshold, self.abstain_band
        if decode_errors > 0:
            return records.UNCERTAIN, (f"damaged file ({decode_errors} decode error(s)): prob_fake {prob:.3f} "
                                       "is not trusted for a verdict")
        needed = self.faces_needed(frames_planned)
        if n_faces < needed:
            rule = (f"min_faces {needed}" if needed == self.min_faces
                    else f"{needed} (min_faces {self.min_faces}, one per sampled frame)")
            return records.UNCERTAIN, f"only {n_faces} face(s) scored, fewer than {rule}"
        if abs(prob - t) < band:
            return records.UNCERTAIN, f"prob_fake {prob:.3f} is within {band:g} of the threshold {t:.3f}"
        if prob >= t:
            return records.FAKE, f"prob_fake {prob:.3f} >= threshold {t:.3f}"
        return records.REAL, f"prob_fake {prob:.3f} < threshold {t:.3f}"

    def describe(self) -> str:
        """One line for logs and the CLI header."""
        return (f"aggregation {self.aggregation}, threshold {self.threshold:.3f}, abstain band +/-{self.abstain_band:g}, "
                f"min {self.min_faces} face(s), {self.frames_per_video} frames per video, "
                f"detection at {self.crop.detect_long_side} px")


@dataclass
class Detector:
    """A calibrated model, ready to judge videos.

    Attributes:
        model: The classifier, in eval mode.
        meta: Its checkpoint meta (input transform, training config, weights hash).
        calibration: How its scores become verdicts.
        path: The checkpoint file it was loaded from.
    """

    model: nn.Module
    meta: CheckpointMeta
    calibration: Calibration
    path: Path = field(default_factory=Path)


def load_detector(path: Path, device: str | torch.device = "cpu") -> Detector:
    """Load a calibrated checkpoint (written by the calibrate stage).

    Args:
        path: The detector checkpoint.
        device: Where to put the model.

    Raises:
        CheckpointError: If the file is not a checkpoint (see :func:`model.load_model`), has
            no calibration (a bare training checkpoint) or one made for other weights.
    """
    model, meta = load_model(path, device)
    if meta.calibration is None:
        raise CheckpointError(
            f"{path}: a training checkpoint without calibration; use the detector the calibrate stage "
            "writes (models/detector.pt)"
        )
    try:
        calibration = Calibration.from_dict(meta.calibration)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: unusable calibration ({exc})") from exc
    if calibration.weights_sha256 != meta.weights_sha256:
        raise CheckpointError(f"{path}: its calibration was made for other weights")
    return Detector(model=model, meta=meta, calibration=calibration, path=Path(path))
