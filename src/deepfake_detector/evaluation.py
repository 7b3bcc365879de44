"""The evaluate stage's logic: test-split metrics at frame and video level, and plots."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import records
from .aggregate import AggregateParams, video_scores
from .data import CropDataset, load_face_table
from .engine import predict_logits, setup_runtime
from .metrics import binary_metrics
from .model import load_model
from .transforms import build_eval_transform

logger = logging.getLogger(__name__)


def video_status(manifest: pd.DataFrame, detection_report: Path) -> pd.Series:
    """Per-video status (ok / no_face / unreadable / missing) from crop_faces' report.

    A manifest video absent from the report is ``unreadable`` with a warning, never dropped.
    """
    report = pd.read_csv(detection_report, dtype=str, keep_default_na=False)
    status = report.set_index("video_id")["status"].reindex(manifest["video_id"])
    absent = status[status.isna()].index.tolist()
    if absent:
        logger.warning("%d videos are missing from %s (counted as unreadable), e.g. %s", len(absent), detection_report, absent[:5])
    return status.fillna(records.UNREADABLE)


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
    model_path: Path,
    manifest_path: Path,
    faces_path: Path,
    crops_dir: Path,
    detection_report: Path,
    metrics_out: Path,
    plots_dir: Path,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Score the test split and write metrics and plot data.

    Args:
        model_path: Checkpoint from train.
        manifest_path: The manifest.
        faces_path: ``faces.parquet``.
        crops_dir: Crop shards.
        detection_report: crop_faces' per-video report (for no_face/unreadable counts).
        metrics_out: ``metrics.json`` to write.
        plots_dir: Folder for ``roc.json``, ``pr.json``, ``confusion.csv``.
        batch_size: Inference batch size.

    Returns:
        The metrics dict that was written.
    """
    model, meta = load_model(model_path)
    rt = setup_runtime("auto")
    model = model.to(rt.device)
    manifest = records.read_manifest(manifest_path)
    test = manifest[manifest["split"] == "test"]
    status = video_status(test, detection_report)
    rows = load_face_table(faces_path, manifest, splits=["test"])
    ds = CropDataset(rows, crops_dir, build_eval_transform(meta.input_size, tuple(meta.mean), tuple(meta.std)))
    logits = predict_logits(model, ds, rt, batch_size=batch_size, desc="test")
    rows = rows.assign(logit=logits)
    frame_prob = 1 / (1 + np.exp(-logits.astype(np.float64)))

    scores = video_scores(rows, meta.aggregation, AggregateParams())
    vid = test.set_index("video_id").loc[scores.index]
    y_video = vid["label"].map(records.LABELS).to_numpy()
    threshold = float(meta.threshold)

    counts = status.value_counts().to_dict()
    n_test = int(len(test))
    unscored = n_test - len(scores)
    video_m = binary_metrics(y_video, scores.to_numpy(), threshold)
    correct = int(((scores.to_numpy() >= threshold).astype(int) == y_video).sum())
    metrics: dict[str, Any] = {
        "checkpoint": {"init": meta.init, "epoch": meta.epoch, "threshold": threshold, "aggregation": meta.aggregation, "weights_sha256": meta.weights_sha256},
        "coverage": {
            "test_videos": n_test,
            "scored": int(len(scores)),
            "no_face": int(counts.get(records.NO_FACE, 0)),
            "unreadable": int(counts.get(records.UNREADABLE, 0)),
            "missing": int(counts.get(records.MISSING, 0)),
            # Videos that could not be scored count as errors here, so a detector cannot
            # look better by failing to read the hard videos.
            "accuracy_all_videos": correct / n_test if n_test else None,
        },
        "video": video_m,
        "video_at_0.5": binary_metrics(y_video, scores.to_numpy(), 0.5),
        "frame": binary_metrics(rows["y"].to_numpy(), frame_prob, threshold),
        "frame_at_0.5": binary_metrics(rows["y"].to_numpy(), frame_prob, 0.5),
        "by_manipulation": {},
        "by_source": {},
    }
    if unscored:
        logger.warning("%d of %d test videos could not be scored: %s", unscored, n_test, {k: v for k, v in counts.items() if k != records.OK})
    real_mask = y_video == 0
    for col, key in (("manipulation", "by_manipulation"), ("source", "by_source")):
        for value in sorted(vid[col].unique()):
            sel = (vid[col] == value).to_numpy()
            # Per manipulation: that method's fakes against all real test videos (AUC needs both).
            if col == "manipulation" and value != "original":
                sel = sel | real_mask
            m = binary_metrics(y_video[sel], scores.to_numpy()[sel], threshold)
            metrics[key][value] = {k: m.get(k) for k in ("n", "auc", "accuracy", "balanced_accuracy")}

    metrics_out.parent.mkdir(parents=True, exist_ok=True)
    metrics_out.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    plots_dir.mkdir(parents=True, exist_ok=True)
    roc, pr = _curves(y_video, scores.to_numpy())
    (plots_dir / "roc.json").write_text(json.dumps(roc, indent=1) + "\n")
    (plots_dir / "pr.json").write_text(json.dumps(pr, indent=1) + "\n")
    inv = {v: k for k, v in records.LABELS.items()}
    confusion = pd.DataFrame(
        {"actual": [inv[i] for i in y_video], "predicted": [inv[int(s >= threshold)] for s in scores.to_numpy()]}
    )
    confusion.to_csv(plots_dir / "confusion.csv", index=False, lineterminator="\n")
    logger.info(
        "test: %d/%d videos scored, video AUC %s, accuracy %.3f at threshold %.3f",
        len(scores), n_test, video_m.get("auc"), video_m.get("accuracy", float("nan")), threshold,
    )
    return metrics
