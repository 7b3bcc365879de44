"""The evaluate stage: test-split metrics at frame and video level, and plot data.

Reads the face scores the calibrate stage computed once (``data/face_scores.parquet``) and
judges them with the detector's own calibration (aggregation, cut-offs, threshold), so the
figures describe exactly the verdicts the detector gives. Videos that could not be scored
(no face, unreadable, missing) are counted, never dropped.

Two files: the headline figures (:data:`HEADLINE`), which ``dvc.yaml`` declares as the stage's
metrics so that ``dvc metrics show`` stays readable, and every figure (per aggregation, per
manipulation and source, at 0.5, per class, confusion matrices) in a details file, a plain
output that is still versioned.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import records
from ..scoring.aggregate import AGGREGATORS, sigmoid, video_scores
from ..scoring.metrics import binary_metrics, roc_auc
from ..verdicts.calibration import Calibration, load_detector
from .metric_files import write_metric_files

logger = logging.getLogger(__name__)

# The figures `dvc metrics show` lists, by section: the metrics file holds these alone, the
# details file everything (these included). The gate's rules (.ci/metric_rules.yaml) read them.
HEADLINE: dict[str, tuple[str, ...]] = {
    "video": ("auc", "accuracy", "balanced_accuracy", "log_loss", "threshold"),
    "frame": ("auc", "log_loss"),
    "coverage": ("test_videos", "scored", "no_face", "unreadable", "missing", "accuracy_all_videos"),
}


def _curves(y: np.ndarray, prob: np.ndarray) -> tuple[list[dict], list[dict]]:
    from sklearn.metrics import precision_recall_curve, roc_curve

    if len(np.unique(y)) < 2:
        return [], []
    fpr, tpr, thr = roc_curve(y, prob)
    roc = [{"fpr": float(a), "tpr": float(b), "threshold": float(min(c, 1.0))} for a, b, c in zip(fpr, tpr, thr)]
    prec, rec, _ = precision_recall_curve(y, prob)
    pr = [{"recall": float(r), "precision": float(p)} for p, r in zip(prec, rec)]
    return roc, pr


def run_evaluation(
    detector_path: Path,
    manifest_path: Path,
    scores_path: Path,
    detection_report: Path,
    metrics_out: Path,
    plots_dir: Path,
    details_out: Path,
) -> dict[str, Any]:
    """Judge the test split's face scores with the detector's calibration; write metrics and plots.

    Args:
        detector_path: The calibrated checkpoint (``models/detector.pt``).
        manifest_path: The manifest.
        scores_path: ``face_scores.parquet`` from the calibrate stage.
        detection_report: crop_faces' per-video report (for no_face/unreadable counts).
        metrics_out: ``metrics.json`` to write: the headline figures (:data:`HEADLINE`).
        plots_dir: Folder for ``roc.json``, ``pr.json``, ``confusion.csv``.
        details_out: ``eval_details.json`` to write with every figure.

    Returns:
        Every figure (the details).
    """
    detector = load_detector(detector_path)
    cal, meta = detector.calibration, detector.meta
    manifest = records.read_manifest(manifest_path)
    test = manifest[manifest["split"] == "test"]
    status = records.video_status(test, detection_report)
    rows = records.read_face_scores(scores_path)
    rows = rows[rows["video_id"].isin(test["video_id"])]
    rows = rows.assign(y=rows["video_id"].map(test.set_index("video_id")["label"]).map(records.LABELS))

    scores = video_scores(rows, cal.aggregation, cal.aggregate)
    vid = test.set_index("video_id").loc[scores.index]
    y_video = vid["label"].map(records.LABELS).to_numpy()
    prob = scores.to_numpy()
    threshold = cal.threshold
    counts = status.value_counts().to_dict()
    n_test = int(len(test))
    video_m = binary_metrics(y_video, prob, threshold)
    verdicts = _verdicts(cal, scores, rows, detection_report)
    truth = vid["label"].to_numpy()
    correct = int((verdicts == truth).sum())
    decided = verdicts != records.UNCERTAIN
    frame_prob = sigmoid(rows["logit"].to_numpy())
    metrics: dict[str, Any] = {
        "checkpoint": {"init": meta.init, "epoch": meta.epoch, "weights_sha256": meta.weights_sha256,
                       "threshold": threshold, "aggregation": cal.aggregation},
        "coverage": {
            "test_videos": n_test,
            "scored": int(len(scores)),
            "no_face": int(counts.get(records.NO_FACE, 0)),
            "unreadable": int(counts.get(records.UNREADABLE, 0)),
            "missing": int(counts.get(records.MISSING, 0)),
            # The verdicts the detector gives (Calibration.decide: the abstain band and
            # min_faces apply). Videos that could not be scored and uncertain verdicts count
            # as errors here, so a detector cannot look better by failing to read, or
            # declining to judge, the hard videos.
            "accuracy_all_videos": correct / n_test if n_test else None,
        },
        # Verdicts of the scored videos; decided_accuracy over the fake/real ones only.
        "verdicts": {
            **{v: int((verdicts == v).sum()) for v in records.SCORED_VERDICTS},
            "decided_accuracy": float((verdicts[decided] == truth[decided]).mean()) if decided.any() else None,
        },
        # The score at the threshold, without abstention: how well the threshold splits the scores.
        "video": video_m,
        "video_at_0.5": binary_metrics(y_video, prob, 0.5),
        "frame": binary_metrics(rows["y"].to_numpy(), frame_prob, threshold),
        "frame_at_0.5": binary_metrics(rows["y"].to_numpy(), frame_prob, 0.5),
        # For information only: the calibrate stage chose the aggregation on validation.
        "test_auc_by_aggregation": {
            name: roc_auc(y_video, video_scores(rows, name, cal.aggregate).loc[scores.index].to_numpy())
            for name in AGGREGATORS
        },
        "by_manipulation": {},
        "by_source": {},
    }
    unscored = n_test - len(scores)
    if unscored:
        logger.warning("%d of %d test videos could not be scored: %s", unscored, n_test, {k: v for k,
                                                                                          v in counts.items() if k != records.OK})
    real_mask = y_video == 0
    for col, key in (("manipulation", "by_manipulation"), ("source", "by_source")):
        for value in sorted(vid[col].unique()):
            sel = (vid[col] == value).to_numpy()
            # Per manipulation: that method's fakes against all real test videos (AUC needs both).
            if col == "manipulation" and value != "original":
                sel = sel | real_mask
            m = binary_metrics(y_video[sel], prob[sel], threshold)
            metrics[key][value] = {k: m.get(k) for k in ("n", "auc", "accuracy", "balanced_accuracy")}

    write_metric_files(metrics, HEADLINE, metrics_out, details_out)
    _write_plots(plots_dir, truth, verdicts, y_video, prob)
    logger.info(
        "test: %d/%d videos scored, video AUC %s, accuracy %.3f at threshold %.3f (%s)",
        len(scores), n_test, video_m.get("auc"), video_m.get("accuracy", float("nan")), threshold, cal.aggregation,
    )
    return metrics


def _verdicts(cal: Calibration, scores: pd.Series, rows: pd.DataFrame, detection_report: Path) -> np.ndarray:
    """The verdict (fake / real / uncertain) of each scored video, in ``scores`` order, as
    predict_videos and the CLI give it: :meth:`Calibration.decide` with the video's face count,
    its kind (a still image needs one face) and its decode errors."""
    report = records.read_detection_report(detection_report).set_index("video_id")
    n_faces = rows.groupby("video_id").size()
    out = []
    for vid, prob in scores.items():
        kind = str(report.at[vid, "kind"]) if vid in report.index else ""
        errors = pd.to_numeric(report.at[vid, "decode_errors"], errors="coerce") if vid in report.index else 0
        planned = 1 if kind == records.KIND_IMAGE else cal.frames_per_video
        out.append(cal.decide(float(prob), int(n_faces[vid]), planned, 0 if pd.isna(errors) else int(errors))[0])
    return np.array(out, dtype=object)


def _write_plots(plots_dir: Path, truth: np.ndarray, verdicts: np.ndarray, y_video: np.ndarray, prob: np.ndarray) -> None:
    plots_dir.mkdir(parents=True, exist_ok=True)
    roc, pr = _curves(y_video, prob)
    (plots_dir / "roc.json").write_text(json.dumps(roc, indent=1) + "\n")
    (plots_dir / "pr.json").write_text(json.dumps(pr, indent=1) + "\n")
    # The detector's verdicts, uncertain included (a third predicted class).
    confusion = pd.DataFrame({"actual": truth, "predicted": verdicts})
    confusion.to_csv(plots_dir / "confusion.csv", index=False, lineterminator="\n")
