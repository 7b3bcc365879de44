"""The calibrate stage: score every face once, choose how scores become verdicts, on validation.

1. Every face crop of every split goes through the trained model once, with the model's
   own eval transform; the logits are written to ``data/face_scores.parquet``, which
   evaluate, predict_videos and gradcam read instead of scoring crops again.
2. On the validation split, each aggregation (:data:`aggregate.AGGREGATORS`) turns face
   logits into video scores; ``aggregation: auto`` keeps the best validation video AUC
   (ties go to the simplest, ``mean``).
3. The threshold is the one that maximises balanced accuracy on the validation videos.
   When validation has no fake videos (training on real videos with Self-Blended Images),
   it is set so that ``target_fpr`` of the validation real videos would be called fake.
4. The :class:`calibration.Calibration` (with the frames per video and the detection and
   crop settings the scores were made with, and the Grad-CAM settings ``explain``) is
   stored inside a copy of the checkpoint: ``models/detector.pt``, the one file that judges
   (and explains) videos. A readable copy with the
   per-aggregation table goes to ``outputs/calibration.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from .. import records
from ..faces.detection import CropParams
from ..model.data import CropDataset, load_face_table
from ..model.engine import predict_logits, prepare_model, setup_runtime
from ..model.network import CheckpointMeta, load_model, save_checkpoint
from ..model.transforms import build_eval_transform
from ..scoring.aggregate import AGGREGATORS, AggregateParams, video_scores
from ..scoring.metrics import choose_threshold, roc_auc
from ..verdicts.calibration import Calibration, ExplainParams
from .extract_frames import ExtractParams

logger = logging.getLogger(__name__)

# Candidate aggregations in tie-break order: on equal validation AUC the first wins, so
# the simplest strategy (mean) is preferred.
AGGREGATIONS = tuple(AGGREGATORS)
assert AGGREGATIONS[0] == "mean", "the tie-break relies on mean coming first"


@dataclass(frozen=True)
class CalibrateParams:
    """Params section ``calibrate``.

    Attributes:
        aggregation: ``auto`` (best validation video AUC, ties -> ``mean``) or one of
            ``mean``, ``mean_logit``, ``confident``, ``max_face_mean``.
        abstain_band: A video whose score lies strictly within this distance of the
            threshold is ``uncertain`` (0 disables abstention).
        min_faces: A video with fewer scored faces is ``uncertain`` (capped at the frames
            sampled: a still image needs one face, a video sampled at 12 frames needs 3).
        target_fpr: When validation has no fake videos, the threshold calls this share of
            the validation real videos fake.
        batch_size: Face crops per forward pass (speed only).
        aggregate: Cut-offs of the ``confident`` strategy.
        explain: How verdicts are explained (Grad-CAM settings), stored in the detector.
    """

    aggregation: str
    abstain_band: float
    min_faces: int
    target_fpr: float
    batch_size: int
    aggregate: AggregateParams
    explain: ExplainParams

    def __post_init__(self) -> None:
        if self.aggregation != "auto" and self.aggregation not in AGGREGATORS:
            raise ValueError(f"aggregation must be auto or one of {list(AGGREGATIONS)}, got {self.aggregation!r}")
        if not 0.0 <= self.abstain_band < 0.5:
            raise ValueError(f"abstain_band must be in [0, 0.5), got {self.abstain_band!r}")
        if self.min_faces < 1 or self.batch_size < 1:
            raise ValueError("min_faces and batch_size must be >= 1")
        if not 0.0 < self.target_fpr < 1.0:
            raise ValueError(f"target_fpr must be in (0, 1), got {self.target_fpr!r}")


@dataclass(frozen=True)
class CalibratePaths:
    """The calibrate stage's inputs and outputs (all declared in ``dvc.yaml``)."""

    model: Path
    manifest: Path
    faces: Path
    crops_dir: Path
    detector_out: Path
    scores_out: Path
    report_out: Path


def score_faces(model: nn.Module, meta: CheckpointMeta, faces: pd.DataFrame, crops_dir: Path, batch_size: int) -> pd.DataFrame:
    """The fake logit of every given face crop, with the model's own eval transform.

    Args:
        model: The classifier.
        meta: Its checkpoint meta (input size, normalisation).
        faces: Face rows (``data.load_face_table``) with ``shard``, ``member``, ``split``, ``y``.
        crops_dir: Crop shards.
        batch_size: Crops per forward pass.

    Returns:
        ``records.FACE_SCORES_SCHEMA`` columns plus ``y`` (1 = fake), in the order of ``faces``.
    """
    rt = setup_runtime("auto")
    model = prepare_model(model, rt)
    logger.info("calibrate: scoring %d face crops of %d videos on %s", len(faces), faces["video_id"].nunique(), rt.describe())
    transform = build_eval_transform(meta.input_size, tuple(meta.mean), tuple(meta.std))
    logits = predict_logits(model, CropDataset(faces, crops_dir, transform), rt, batch_size=batch_size, desc="calibrate")
    return faces[[*records.FACE_KEY, "split", "y"]].assign(logit=logits.astype(np.float64))


def compare_aggregations(scores: pd.DataFrame, params: AggregateParams) -> dict[str, dict[str, Any]]:
    """Each aggregation's validation video AUC and balanced-accuracy threshold.

    Args:
        scores: Validation face scores with ``video_id``, ``frame_index``, ``logit``, ``y``.
        params: Cut-offs of ``confident``.

    Returns:
        ``{name: {"val_auc", "val_threshold", "n_val"}}``; AUC and threshold are None when
        validation has one class only.
    """
    labels = scores.groupby("video_id")["y"].first()
    table = {}
    for name in AGGREGATIONS:
        s = video_scores(scores, name, params)
        y = labels.loc[s.index].to_numpy()
        both = len(np.unique(y)) == 2
        table[name] = {
            "val_auc": roc_auc(y, s.to_numpy()),
            "val_threshold": float(choose_threshold(y, s.to_numpy())) if both else None,
            "n_val": int(len(s)),
        }
    return table


def choose_aggregation(table: dict[str, dict[str, Any]], requested: str) -> tuple[str, str]:
    """The aggregation in params, or (``auto``) the best on validation; returns ``(name, how)``."""
    if requested != "auto":
        return requested, "fixed in params"
    aucs = {name: table[name]["val_auc"] for name in AGGREGATIONS if table[name]["val_auc"] is not None}
    if not aucs:
        return "mean", "auto, but validation has one class: mean"
    best = max(aucs.values())
    # Exact float ties are common on small validation sets (e.g. several strategies at 1.0).
    name = next(n for n in AGGREGATIONS if n in aucs and aucs[n] >= best - 1e-12)
    return name, f"auto: best val video AUC ({best:.4f})"


def real_only_threshold(real_scores: np.ndarray, target_fpr: float) -> float:
    """The threshold at which ``target_fpr`` of these real videos' scores lie at or above it."""
    if len(real_scores) == 0:
        raise ValueError("no validation video was scored: cannot calibrate a threshold")
    return float(np.quantile(np.asarray(real_scores, dtype=float), 1.0 - target_fpr))


def calibrate(scores: pd.DataFrame, params: CalibrateParams) -> tuple[str, str, float, str, dict[str, dict[str, Any]]]:
    """Choose the aggregation and the threshold on the validation faces in ``scores``.

    Returns:
        ``(aggregation, how it was chosen, threshold, threshold rule, per-aggregation table)``.

    Raises:
        ValueError: If no validation video has a scored face.
    """
    val = scores[scores["split"] == "val"]
    if val.empty:
        raise ValueError("no face crops in the validation split: cannot calibrate")
    table = compare_aggregations(val, params.aggregate)
    aggregation, how = choose_aggregation(table, params.aggregation)
    threshold = table[aggregation]["val_threshold"]
    if threshold is not None:
        return aggregation, how, float(threshold), "val balanced accuracy", table
    video = video_scores(val, aggregation, params.aggregate)
    labels = val.groupby("video_id")["y"].first().loc[video.index]
    if (labels == 1).all():
        raise ValueError("validation has fake videos only: cannot calibrate a threshold")
    threshold = real_only_threshold(video[labels == 0].to_numpy(), params.target_fpr)
    rule = f"val has no fake videos: {params.target_fpr:g} of its {int((labels == 0).sum())} real videos at or above"
    return aggregation, how, threshold, rule, table


def run_calibrate(paths: CalibratePaths, params: CalibrateParams, extract: ExtractParams, crop: CropParams) -> Calibration:
    """The calibrate stage (see the module docstring).

    Args:
        paths: Inputs and outputs.
        params: The ``calibrate`` params.
        extract: The ``extract_frames`` params the crops were made with (frames per video).
        crop: The ``crop_faces`` params the crops were made with.

    Returns:
        The calibration stored in the detector.
    """
    model, meta = load_model(paths.model)
    faces = load_face_table(paths.faces, records.read_manifest(paths.manifest))
    scores = score_faces(model, meta, faces, paths.crops_dir, params.batch_size)
    records.write_face_scores(scores, paths.scores_out)
    aggregation, how, threshold, rule, table = calibrate(scores, params)
    calibration = Calibration(
        weights_sha256=meta.weights_sha256, frames_per_video=extract.frames_per_video, crop=crop,
        aggregation=aggregation, aggregate=params.aggregate, threshold=threshold,
        abstain_band=params.abstain_band, explain=params.explain, min_faces=params.min_faces,
        how=f"{how}; threshold: {rule}",
    )
    save_checkpoint(paths.detector_out, model, replace(meta, calibration=calibration.to_dict()))
    val_videos = scores[scores["split"] == "val"].groupby("video_id")["y"].first()
    report = {
        "calibration": calibration.to_dict(),
        "aggregations": table,
        "threshold_rule": rule,
        "val_videos": {"real": int((val_videos == 0).sum()), "fake": int((val_videos == 1).sum())},
        "faces_scored": {s: int((scores["split"] == s).sum()) for s in records.SPLITS},
        "checkpoint": {"weights_sha256": meta.weights_sha256, "epoch": meta.epoch, "init": meta.init},
    }
    paths.report_out.parent.mkdir(parents=True, exist_ok=True)
    paths.report_out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    for name in AGGREGATIONS:
        logger.info("calibrate: %-13s val AUC %s", name, table[name]["val_auc"])
    logger.info("calibrate: %s (%s; threshold: %s) -> %s", calibration.describe(), how, rule, paths.detector_out)
    return calibration
