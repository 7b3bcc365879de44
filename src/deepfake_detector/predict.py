"""Per-video verdicts: the logic shared by the ``predict_videos`` stage and the CLI.

Both paths turn face crops into fake logits with the checkpoint's own eval transform
(:func:`transforms.build_eval_transform`) and :func:`engine.predict_logits`, aggregate
them per video with a named strategy (:func:`aggregate.video_scores`) and turn the
score into a verdict with :func:`decide`:

* ``fake`` / ``real``: the score is at least ``abstain_band`` away from the threshold;
* ``uncertain``: it lies inside the band around the threshold (the model abstains);
* ``no_face``: the video was read but no sampled frame had a face;
* ``unreadable``: the file could not be decoded (or is listed but missing).

A video that could not be judged says so: its probabilities are empty, never 0.5.

The pipeline (:func:`run_predict_videos`) scores the cached crops of the manifest's
videos, compares the four aggregations on the validation split, picks one (``auto``:
best validation video AUC, ties go to ``mean``) and calibrates its threshold on
validation. It records the choice in its metrics file under ``"chosen"`` so the CLI
(:func:`predict_paths`, which decodes and detects on the fly) can use the same
aggregation and threshold (:func:`load_calibration`).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import pandas as pd
from torch import nn

from . import records
from .aggregate import AGGREGATORS, AggregateParams, sigmoid, video_scores
from .data import ArrayDataset, CropDataset, load_face_table
from .engine import Runtime, predict_logits, prepare_model, setup_runtime
from .evaluation import video_status
from .faces import CropParams, FaceDetector, crop_window, detect_and_crop
from .metrics import binary_metrics, choose_threshold, roc_auc
from .model import CheckpointMeta, load_model
from .transforms import build_eval_transform
from .video import VideoReadError, read_frames

logger = logging.getLogger(__name__)

FAKE, REAL, UNCERTAIN = "fake", "real", "uncertain"
NO_FACE, UNREADABLE = records.NO_FACE, records.UNREADABLE
VERDICTS = (FAKE, REAL, UNCERTAIN, NO_FACE, UNREADABLE)

# Candidate aggregations in tie-break order: on equal validation AUC the first wins,
# so the simplest strategy (mean) is preferred.
AGGREGATIONS = tuple(AGGREGATORS)
assert AGGREGATIONS[0] == "mean", "the tie-break relies on mean coming first"

# outputs/video_predictions.csv (and the CLI's --csv/--json): the seed project's
# columns first, so its consumers keep working, then the verdict details.
PREDICTION_COLUMNS = [
    "video_path", "true_label", "pred_class", "prob_fake", "prob_real",
    "video_id", "split", "verdict", "reason",
    "n_frames_sampled", "n_frames_with_face", "n_faces", "aggregation", "threshold",
]

# Columns of the per-face table that predict_paths yields (and explain consumes).
FACE_SCORE_COLUMNS = [
    "video_id", "frame_index", "face_index", "x1", "y1", "x2", "y2", "det_prob",
    "crop_left", "crop_top", "crop_side", "logit", "prob_fake",
]


@dataclass(frozen=True)
class PredictParams:
    """Params section ``predict_videos``.

    Attributes:
        aggregation: ``auto`` (choose on validation video AUC among the four strategies,
            ties -> ``mean``) or one of ``mean``, ``mean_logit``, ``confident``,
            ``max_face_mean``.
        abstain_band: A video whose score lies strictly within this distance of the
            threshold is ``uncertain`` (0 disables abstention).
        splits: Splits whose videos get a row in the predictions. Validation is always
            scored as well, because the aggregation and threshold are chosen on it.
        batch_size: Face crops per forward pass.
        aggregate: Cut-offs of the ``confident`` strategy.
    """

    aggregation: str = "auto"
    abstain_band: float = 0.05
    splits: tuple[str, ...] = records.SPLITS
    batch_size: int = 64
    aggregate: AggregateParams = field(default_factory=AggregateParams)

    def __post_init__(self) -> None:
        if self.aggregation != "auto" and self.aggregation not in AGGREGATORS:
            raise ValueError(f"aggregation must be auto or one of {list(AGGREGATIONS)}, got {self.aggregation!r}")
        if not 0.0 <= self.abstain_band < 0.5:
            raise ValueError(f"abstain_band must be in [0, 0.5), got {self.abstain_band!r}")
        if not self.splits or len(set(self.splits)) != len(self.splits) or not set(self.splits) <= set(records.SPLITS):
            raise ValueError(f"splits must be distinct values from {list(records.SPLITS)}, got {list(self.splits)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size!r}")


@dataclass(frozen=True)
class Calibration:
    """The aggregation and threshold that turn face logits into a verdict.

    Attributes:
        aggregation: A key of :data:`aggregate.AGGREGATORS`.
        threshold: Fake when the video score is >= this (outside the abstain band).
        source: Where they come from, for people (shown in the CLI's header).
    """

    aggregation: str
    threshold: float
    source: str


def calibration_from_checkpoint(meta: CheckpointMeta) -> Calibration:
    """The aggregation and threshold the train stage stored in the checkpoint."""
    return Calibration(meta.aggregation, float(meta.threshold), "checkpoint")


def load_calibration(path: Path, meta: CheckpointMeta) -> Calibration:
    """Read the choice the predict_videos stage recorded for this checkpoint.

    Args:
        path: ``predict_metrics.json`` written by :func:`run_predict_videos`.
        meta: The loaded checkpoint's meta; the file must name the same weights.

    Returns:
        The recorded aggregation and threshold.

    Raises:
        ValueError: If the file is unreadable, has no ``chosen`` entry, or was made for
            other weights (a stale file would silently mis-calibrate the verdicts).
    """
    path = Path(path)
    try:
        chosen = json.loads(path.read_text())["chosen"]
        aggregation, threshold, sha = chosen["aggregation"], float(chosen["threshold"]), chosen["weights_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a predict_videos metrics file with a 'chosen' entry ({exc})") from exc
    if aggregation not in AGGREGATORS:
        raise ValueError(f"{path}: unknown aggregation {aggregation!r}")
    if sha != meta.weights_sha256:
        raise ValueError(
            f"{path}: made for other weights (sha256 {str(sha)[:12]}, the model has {meta.weights_sha256[:12]}); "
            "re-run `dvc repro` or pass --calibration"
        )
    return Calibration(aggregation, threshold, f"{path}")


@dataclass
class VideoVerdict:
    """The judgement of one video (one row of ``video_predictions.csv``).

    Attributes:
        video_id: Manifest id (pipeline) or the path as given (CLI).
        video_path: The file.
        true_label: ``real`` / ``fake`` when known (pipeline), else None.
        split: Manifest split (pipeline), else None.
        verdict: One of :data:`VERDICTS`.
        reason: Why, in words (the score against the threshold, or what went wrong).
        prob_fake: Aggregated fake probability; None when the video was not scored.
        threshold: Decision threshold in use.
        aggregation: Aggregation in use.
        n_frames_sampled: Frames decoded and searched for faces.
        n_frames_with_face: Sampled frames with at least one kept face.
        n_faces: Face crops scored.
    """

    video_id: str
    video_path: str
    true_label: str | None
    split: str | None
    verdict: str
    reason: str
    prob_fake: float | None
    threshold: float
    aggregation: str
    n_frames_sampled: int = 0
    n_frames_with_face: int = 0
    n_faces: int = 0

    @property
    def pred_class(self) -> str:
        """``fake``/``real`` by the threshold alone when scored (also for ``uncertain``,
        which ``verdict`` flags), else the verdict (``no_face``/``unreadable``)."""
        if self.prob_fake is None:
            return self.verdict
        return FAKE if self.prob_fake >= self.threshold else REAL

    def to_row(self) -> dict[str, Any]:
        """The :data:`PREDICTION_COLUMNS` of this video (None where not scored)."""
        row = asdict(self)
        row["pred_class"] = self.pred_class
        row["prob_real"] = None if self.prob_fake is None else 1.0 - self.prob_fake
        return {c: row[c] for c in PREDICTION_COLUMNS}


def decide(prob: float, threshold: float, band: float) -> str:
    """Verdict of a scored video.

    Args:
        prob: Aggregated fake probability.
        threshold: Calibrated decision threshold.
        band: Abstain band half-width.

    Returns:
        ``uncertain`` when ``|prob - threshold| < band``, else ``fake`` when
        ``prob >= threshold``, else ``real``.
    """
    if abs(prob - threshold) < band:
        return UNCERTAIN
    return FAKE if prob >= threshold else REAL


def _scored_reason(verdict: str, prob: float, threshold: float, band: float) -> str:
    if verdict == UNCERTAIN:
        return f"prob_fake {prob:.3f} is within {band:g} of the threshold {threshold:.3f}"
    side = ">=" if verdict == FAKE else "<"
    return f"prob_fake {prob:.3f} {side} threshold {threshold:.3f}"


def scored_verdict(prob: float, calibration: Calibration, band: float) -> tuple[str, str]:
    """``(verdict, reason)`` of a scored video (see :func:`decide`)."""
    verdict = decide(prob, calibration.threshold, band)
    return verdict, _scored_reason(verdict, prob, calibration.threshold, band)


def calibrate(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Validation-calibrated threshold (balanced accuracy, :func:`metrics.choose_threshold`).

    Args:
        scores: Video fake probabilities.
        labels: 0/1 labels (1 = fake).

    Returns:
        The threshold, or None when it cannot be estimated (fewer than two classes):
        the caller then says which fallback it uses instead of inventing 0.5.
    """
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return None
    return float(choose_threshold(labels, np.asarray(scores, dtype=float)))


def compare_aggregations(
    faces: pd.DataFrame, videos: pd.DataFrame, params: AggregateParams, fallback_threshold: float
) -> tuple[dict[str, pd.Series], dict[str, dict[str, Any]]]:
    """Score every video with each aggregation and measure it on val and test.

    Args:
        faces: One row per face with ``video_id``, ``frame_index`` and ``logit``.
        videos: Indexed by ``video_id``, with ``split`` and ``y`` (1 = fake).
        params: Cut-offs of ``confident``.
        fallback_threshold: Threshold used for test accuracy when val cannot calibrate one.

    Returns:
        ``(scores, table)``: per aggregation the video scores (indexed by video_id), and
        ``{val_auc, val_threshold, test_auc, test_accuracy, test_balanced_accuracy,
        n_val, n_test}`` (AUC None when a split has one class or no video).
    """
    scores: dict[str, pd.Series] = {}
    table: dict[str, dict[str, Any]] = {}
    for name in AGGREGATIONS:
        s = video_scores(faces, name, params)
        scores[name] = s
        split = videos["split"].reindex(s.index)
        y = videos["y"].reindex(s.index)
        val, test = (split == "val").to_numpy(), (split == "test").to_numpy()
        thr = calibrate(s.to_numpy()[val], y.to_numpy()[val])
        test_m = binary_metrics(y.to_numpy()[test], s.to_numpy()[test], fallback_threshold if thr is None else thr)
        table[name] = {
            "val_auc": roc_auc(y.to_numpy()[val], s.to_numpy()[val]),
            "val_threshold": thr,
            "test_auc": test_m.get("auc"),
            "test_accuracy": test_m.get("accuracy"),
            "test_balanced_accuracy": test_m.get("balanced_accuracy"),
            "n_val": int(val.sum()),
            "n_test": int(test.sum()),
        }
    return scores, table


def choose_aggregation(table: dict[str, dict[str, Any]], requested: str, fallback: str) -> tuple[str, str]:
    """Pick the aggregation: the one in params, or the best on validation.

    Args:
        table: :func:`compare_aggregations`' table.
        requested: ``auto`` or a fixed name.
        fallback: Used by ``auto`` when no validation AUC exists (the checkpoint's).

    Returns:
        ``(name, how it was chosen)``.
    """
    if requested != "auto":
        return requested, "fixed in params"
    aucs = {name: table[name]["val_auc"] for name in AGGREGATIONS if table[name]["val_auc"] is not None}
    if not aucs:
        return fallback, "auto, but val video AUC is undefined (one class): the checkpoint's aggregation"
    best = max(aucs.values())
    # Exact float ties are common on small val sets (e.g. several strategies at 1.0).
    name = next(n for n in AGGREGATIONS if n in aucs and aucs[n] >= best - 1e-12)
    return name, f"auto: best val video AUC ({best:.4f})"


def _manifest_verdict(
    row: Any, status: str, reason: str, n_sampled: int, faces: pd.DataFrame | None,
    prob: float | None, cal: Calibration, band: float,
) -> VideoVerdict:
    """The verdict of one manifest video from its detection status and (when ok) its score."""
    common = dict(video_id=row.video_id, video_path=row.path, true_label=row.label, split=row.split,
                  threshold=cal.threshold, aggregation=cal.aggregation, n_frames_sampled=n_sampled)
    if status == records.OK and prob is not None and faces is not None:
        verdict, why = scored_verdict(float(prob), cal, band)
        return VideoVerdict(**common, verdict=verdict, reason=why, prob_fake=float(prob),
                            n_frames_with_face=int(faces["frame_index"].nunique()), n_faces=len(faces))
    if status == records.NO_FACE:
        return VideoVerdict(**common, verdict=NO_FACE, reason=reason or "no face found", prob_fake=None)
    if status == records.MISSING:
        reason = f"listed but missing: {reason or row.path}"
    elif status == records.OK:  # ok in the detection report but no crops: inputs out of step
        reason = "status ok in the detection report but no face crops in the faces table: re-run crop_faces"
    return VideoVerdict(**common, verdict=UNREADABLE, reason=reason or "unreadable", prob_fake=None)


def run_predict_videos(
    model_path: Path,
    manifest_path: Path,
    faces_path: Path,
    crops_dir: Path,
    detection_report: Path,
    params: PredictParams,
    out_csv: Path,
    metrics_out: Path,
) -> dict[str, Any]:
    """Score the cached face crops, choose aggregation and threshold on val, judge every video.

    Args:
        model_path: Checkpoint from train.
        manifest_path: ``data/manifest.csv``.
        faces_path: ``data/faces.parquet``.
        crops_dir: Crop shards.
        detection_report: crop_faces' per-video report (statuses, reasons, counts).
        params: The ``predict_videos`` params.
        out_csv: ``video_predictions.csv`` to write (:data:`PREDICTION_COLUMNS`), one row
            per manifest video of ``params.splits``.
        metrics_out: ``predict_metrics.json`` to write: all four aggregations on val and
            test, the choice (``chosen``), verdict counts.

    Returns:
        The metrics dict that was written.
    """
    model, meta = load_model(model_path)
    rt = setup_runtime("auto")
    model = prepare_model(model, rt)
    manifest = records.read_manifest(manifest_path).sort_values("video_id", kind="stable").reset_index(drop=True)
    selected = manifest[manifest["split"].isin(params.splits)].reset_index(drop=True)
    report = pd.read_csv(detection_report, dtype=str, keep_default_na=False).set_index("video_id")
    frames_sampled = pd.to_numeric(report["frames_sampled"], errors="coerce").fillna(0).astype(int)
    status = video_status(manifest, detection_report)
    ok_ids = set(status[status == records.OK].index)

    scored_splits = sorted(set(params.splits) | {"val"})
    faces = load_face_table(faces_path, manifest, splits=scored_splits)
    faces = faces[faces["video_id"].isin(ok_ids)].reset_index(drop=True)
    logger.info("predict_videos: scoring %d crops of %d videos (splits %s) on %s", len(faces), faces["video_id"].nunique(), scored_splits, rt.describe())
    ds = CropDataset(faces, crops_dir, build_eval_transform(meta.input_size, tuple(meta.mean), tuple(meta.std)))
    faces = faces.assign(logit=predict_logits(model, ds, rt, batch_size=params.batch_size, desc="predict_videos"))

    videos = manifest.set_index("video_id").assign(y=lambda d: d["label"].map(records.LABELS))
    scores, table = compare_aggregations(faces, videos, params.aggregate, float(meta.threshold))
    aggregation, how = choose_aggregation(table, params.aggregation, meta.aggregation)
    threshold = table[aggregation]["val_threshold"]
    if threshold is None:
        threshold_source = f"checkpoint (val has one class or no scored video; the checkpoint's threshold was set for {meta.aggregation})"
        threshold = float(meta.threshold)
        logger.warning("predict_videos: cannot calibrate on val (one class): using the checkpoint threshold %.3f", threshold)
    else:
        threshold_source = "val (balanced accuracy)"
    cal = Calibration(aggregation, float(threshold), f"{metrics_out} ({how})")
    logger.info("predict_videos: aggregation %s (%s), threshold %.4f from %s", aggregation, how, cal.threshold, threshold_source)

    chosen_scores = scores[aggregation]
    faces_by_video = {vid: g for vid, g in faces.groupby("video_id")}
    verdicts = []
    for row in selected.itertuples(index=False):
        vid = row.video_id
        reason = str(report.at[vid, "reason"]) if vid in report.index else f"not in {detection_report} (stale inputs? re-run crop_faces)"
        verdict = _manifest_verdict(
            row, status[vid], reason, int(frames_sampled.get(vid, 0)),
            faces_by_video.get(vid), chosen_scores.get(vid), cal, params.abstain_band,
        )
        verdicts.append(verdict)

    out = pd.DataFrame([v.to_row() for v in verdicts], columns=PREDICTION_COLUMNS)
    counts = {v: int((out["verdict"] == v).sum()) for v in VERDICTS}
    # Every selected manifest video has exactly one row: none is dropped silently.
    assert sum(counts.values()) == len(selected) == len(out), (counts, len(selected))
    records.write_csv(out, out_csv, PREDICTION_COLUMNS)

    by_split = {s: {v: int(((out["split"] == s) & (out["verdict"] == v)).sum()) for v in VERDICTS} for s in params.splits}
    test = out[(out["split"] == "test") & out["verdict"].isin([FAKE, REAL])]
    n_test = int((out["split"] == "test").sum())
    metrics: dict[str, Any] = {
        "checkpoint": {"weights_sha256": meta.weights_sha256, "epoch": meta.epoch, "init": meta.init,
                       "aggregation": meta.aggregation, "threshold": float(meta.threshold)},
        "chosen": {"aggregation": aggregation, "threshold": cal.threshold, "how": how, "threshold_source": threshold_source,
                   "abstain_band": params.abstain_band, "weights_sha256": meta.weights_sha256},
        "aggregations": table,
        "videos": len(out),
        "verdicts": counts,
        "verdicts_by_split": by_split,
        "test_verdicts": {
            "videos": n_test,
            "decided": len(test),
            # Accuracy over the videos the model committed to (fake/real); abstentions and
            # unscored videos are reported next to it, not hidden in it.
            "decided_accuracy": float((test["verdict"] == test["true_label"]).mean()) if len(test) else None,
            "uncertain": by_split.get("test", {}).get(UNCERTAIN, 0),
            "unscored": by_split.get("test", {}).get(NO_FACE, 0) + by_split.get("test", {}).get(UNREADABLE, 0),
        },
    }
    metrics_out.parent.mkdir(parents=True, exist_ok=True)
    metrics_out.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    for name in AGGREGATIONS:
        t = table[name]
        logger.info("predict_videos: %-13s val AUC %s, test AUC %s, test accuracy %s", name, _fmt(t["val_auc"]), _fmt(t["test_auc"]), _fmt(t["test_accuracy"]))
    logger.info("predict_videos: %d videos: %s", len(out), ", ".join(f"{n} {v}" for v, n in counts.items()))
    for row in out[out["verdict"].isin([NO_FACE, UNREADABLE])].itertuples(index=False):
        logger.warning("predict_videos:   %s %s: %s", row.verdict, row.video_id, row.reason)
    return metrics


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


# --- Single files (the CLI) -------------------------------------------------------


class PathPrediction(NamedTuple):
    """What :func:`predict_paths` yields per file.

    Attributes:
        verdict: The video's verdict.
        faces: One row per scored face (:data:`FACE_SCORE_COLUMNS`), aligned with ``crops``.
        crops: The face crops, RGB uint8 (not normalised).
        frames: Full sampled frames by frame index when ``keep_frames``, else None.
    """

    verdict: VideoVerdict
    faces: pd.DataFrame
    crops: list[np.ndarray]
    frames: dict[int, np.ndarray] | None


def predict_paths(
    paths: Iterable[Path],
    model: nn.Module,
    meta: CheckpointMeta,
    detector: FaceDetector,
    crop_params: CropParams,
    params: PredictParams,
    n_frames: int,
    keep_frames: bool = False,
    calibration: Calibration | None = None,
    runtime: Runtime | None = None,
) -> Iterator[PathPrediction]:
    """Judge video (or image) files one by one, with the pipeline's own steps.

    Frames are decoded sequentially (:func:`video.read_frames`), faces found and cropped
    by :func:`faces.detect_and_crop` (as in crop_faces), crops scored in batches through
    the checkpoint's eval transform and aggregated like the predict_videos stage.

    Args:
        paths: Files to judge.
        model: The classifier (loaded once by the caller).
        meta: Its checkpoint meta (input size, normalisation, default calibration).
        detector: The face detector (built once by the caller).
        crop_params: Crop settings (margin, crop size) matching ``detector``.
        params: Abstain band, batch size and ``confident`` cut-offs.
        n_frames: Frames sampled per video.
        keep_frames: Also return the full frames (for Grad-CAM overlays).
        calibration: Aggregation and threshold; default the checkpoint's.
        runtime: Device/precision; default ``setup_runtime("auto")``.

    Yields:
        One :class:`PathPrediction` per path, in order. An unreadable file yields the
        verdict ``unreadable`` with the reason; a video without faces ``no_face``.
    """
    rt = runtime or setup_runtime("auto")
    model = prepare_model(model, rt)
    cal = calibration or calibration_from_checkpoint(meta)
    transform = build_eval_transform(meta.input_size, tuple(meta.mean), tuple(meta.std))
    for path in paths:
        yield _predict_one(Path(path), model, transform, rt, detector, crop_params, params, n_frames, keep_frames, cal)


def _predict_one(
    path: Path, model: nn.Module, transform: Any, rt: Runtime, detector: FaceDetector,
    crop_params: CropParams, params: PredictParams, n_frames: int, keep_frames: bool, cal: Calibration,
) -> PathPrediction:
    common = dict(video_id=str(path), video_path=str(path), true_label=None, split=None,
                  threshold=cal.threshold, aggregation=cal.aggregation)
    empty = pd.DataFrame(columns=FACE_SCORE_COLUMNS)
    try:
        _, frames = read_frames(path, n_frames)
    except VideoReadError as exc:
        return PathPrediction(VideoVerdict(**common, verdict=UNREADABLE, reason=str(exc), prob_fake=None), empty, [], None)
    kept = {f.frame_index: f.image for f in frames} if keep_frames else None
    crops = detect_and_crop(frames, detector, crop_params)
    if not crops:
        reason = f"no face with probability >= {crop_params.prob_threshold} in any of {len(frames)} sampled frames of {path}"
        v = VideoVerdict(**common, verdict=NO_FACE, reason=reason, prob_fake=None, n_frames_sampled=len(frames))
        return PathPrediction(v, empty, [], kept)
    images = [c.crop for c in crops]
    logits = predict_logits(model, ArrayDataset(images, transform), rt, batch_size=params.batch_size, desc=path.name)
    faces = pd.DataFrame({
        "video_id": str(path),
        "frame_index": [c.frame_index for c in crops],
        "face_index": [c.face_index for c in crops],
        **{k: [c.face.box[i] for c in crops] for i, k in enumerate(("x1", "y1", "x2", "y2"))},
        "det_prob": [c.face.prob for c in crops],
        # the crop windows, so Grad-CAM maps frames to crops exactly as they were cut
        **dict(zip(("crop_left", "crop_top", "crop_side"), zip(*(crop_window(c.face.box, crop_params.margin) for c in crops)))),
        "logit": logits.astype(np.float64),
        "prob_fake": sigmoid(logits),
    }, columns=FACE_SCORE_COLUMNS)
    prob = float(video_scores(faces, cal.aggregation, params.aggregate).iloc[0])
    verdict, why = scored_verdict(prob, cal, params.abstain_band)
    v = VideoVerdict(**common, verdict=verdict, reason=why, prob_fake=prob, n_frames_sampled=len(frames),
                     n_frames_with_face=int(faces["frame_index"].nunique()), n_faces=len(faces))
    return PathPrediction(v, faces, images, kept)


def summarize(verdicts: Sequence[VideoVerdict]) -> dict[str, int]:
    """Count of each verdict (all of :data:`VERDICTS`, zeros included)."""
    return {v: sum(1 for x in verdicts if x.verdict == v) for v in VERDICTS}
