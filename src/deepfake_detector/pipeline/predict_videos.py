"""The predict_videos stage: one verdict for every manifest video of the chosen splits.

Reads the face scores the calibrate stage computed (``data/face_scores.parquet``) and
judges each video with the detector's calibration (:meth:`calibration.Calibration.decide`),
the same rule the CLI applies to single files. A video that could not be judged keeps its
status as the verdict (``no_face`` / ``unreadable``, listed-but-missing included) and its
reason: its probabilities are empty, never 0.5.

The metrics file holds the headline figures (:data:`HEADLINE`, declared as metrics in
``dvc.yaml``); the verdict counts per split and the calibration used go to a details file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .. import records
from ..scoring.aggregate import video_scores
from ..verdicts.calibration import Calibration, load_detector
from .metric_files import write_metric_files

logger = logging.getLogger(__name__)

# The figures `dvc metrics show` lists, by section; the details file has every figure.
HEADLINE: dict[str, tuple[str, ...]] = {"test_verdicts": ("decided", "decided_accuracy", "uncertain")}


@dataclass(frozen=True)
class PredictParams:
    """Params section ``predict_videos``.

    Attributes:
        splits: Splits whose videos get a row in the predictions.
    """

    splits: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.splits or len(set(self.splits)) != len(self.splits) or not set(self.splits) <= set(records.SPLITS):
            raise ValueError(f"splits must be distinct values from {list(records.SPLITS)}, got {list(self.splits)}")


def manifest_verdict(row: Any, status: str, reason: str, n_sampled: int, faces: pd.DataFrame | None,
                     prob: float | None, cal: Calibration, kind: str = "video", n_expected: int = 0,
                     decode_errors: int = 0) -> records.VideoVerdict:
    """The verdict of one manifest video from its detection status and (when ok) its score.

    Args:
        row: The manifest row (``video_id``, ``path``, ``label``, ``split``).
        status: Its status in the detection report.
        reason: The report's reason (for an ok video: what went wrong while decoding it, if anything).
        n_sampled: Frames sampled.
        faces: Its face scores (None when it has none).
        prob: Its aggregated fake probability (None when not scored).
        cal: The detector's calibration.
        kind: ``video`` or ``image`` (a still image needs one face).
        n_expected: Frames a complete file gives for the sample.
        decode_errors: Frames that failed to decode or are missing (a damaged file gets no verdict).
    """
    common = dict(video_id=row.video_id, video_path=row.path, true_label=row.label, split=row.split,
                  threshold=cal.threshold, aggregation=cal.aggregation, n_frames_sampled=n_sampled,
                  n_frames_expected=n_expected, decode_errors=decode_errors)
    if status == records.OK and prob is not None and faces is not None:
        planned = 1 if kind == records.KIND_IMAGE else cal.frames_per_video
        verdict, why = cal.decide(float(prob), len(faces), planned, decode_errors)
        why = "; ".join(filter(None, [why, reason]))
        return records.VideoVerdict(**common, verdict=verdict, reason=why, prob_fake=float(prob),
                                    n_frames_with_face=int(faces["frame_index"].nunique()), n_faces=len(faces))
    if status == records.NO_FACE:
        return records.VideoVerdict(**common, verdict=records.NO_FACE, reason=reason or "no face found", prob_fake=None)
    if status == records.MISSING:
        reason = f"listed but missing: {reason or row.path}"
    elif status == records.OK:  # ok in the detection report but no scores: inputs out of step
        reason = "status ok in the detection report but no face scores: re-run crop_faces and calibrate"
    return records.VideoVerdict(**common, verdict=records.UNREADABLE, reason=reason or "unreadable", prob_fake=None)


def run_predict_videos(
    detector_path: Path,
    manifest_path: Path,
    scores_path: Path,
    detection_report: Path,
    params: PredictParams,
    out_csv: Path,
    metrics_out: Path,
    details_out: Path,
) -> dict[str, Any]:
    """Judge every manifest video of ``params.splits`` from its face scores.

    Args:
        detector_path: The calibrated checkpoint (its calibration decides).
        manifest_path: ``data/manifest.csv``.
        scores_path: ``data/face_scores.parquet``.
        detection_report: crop_faces' per-video report (statuses, reasons, counts).
        params: The ``predict_videos`` params.
        out_csv: ``video_predictions.csv`` to write, one row per selected manifest video.
        metrics_out: ``predict_metrics.json`` to write: the headline figures
            (:data:`HEADLINE`: the decided test videos and their accuracy).
        details_out: ``predict_details.json`` to write with every figure (verdict counts per
            split, the calibration used).

    Returns:
        Every figure (the details).
    """
    cal = load_detector(detector_path).calibration
    manifest = records.read_manifest(manifest_path).sort_values("video_id", kind="stable").reset_index(drop=True)
    selected = manifest[manifest["split"].isin(params.splits)].reset_index(drop=True)
    report = records.read_detection_report(detection_report).set_index("video_id")
    counts_of = {c: pd.to_numeric(report[c], errors="coerce").fillna(0).astype(int)
                 for c in ("frames_sampled", "frames_expected", "decode_errors")}
    status = records.video_status(manifest, detection_report)
    scores = records.read_face_scores(scores_path)
    scores = scores[scores["video_id"].isin(status[status == records.OK].index)]
    probs = video_scores(scores, cal.aggregation, cal.aggregate)
    faces_by_video = {vid: g for vid, g in scores.groupby("video_id")}

    verdicts = []
    for row in selected.itertuples(index=False):
        vid = row.video_id
        stale = f"not in {detection_report} (stale inputs? re-run crop_faces)"
        reason = str(report.at[vid, "reason"]) if vid in report.index else stale
        count = {c: int(v.get(vid, 0)) for c, v in counts_of.items()}
        kind = str(report.at[vid, "kind"]) if vid in report.index else ""
        verdicts.append(manifest_verdict(row, status[vid], reason, count["frames_sampled"], faces_by_video.get(vid),
                                         probs.get(vid), cal, kind, count["frames_expected"], count["decode_errors"]))
    out = pd.DataFrame([v.to_row() for v in verdicts], columns=records.PREDICTION_COLUMNS)
    counts = records.count_verdicts(out["verdict"])
    # Every selected manifest video has exactly one row: none is dropped silently.
    assert sum(counts.values()) == len(selected) == len(out), (counts, len(selected))
    records.write_predictions(out, out_csv)

    by_split = {s: records.count_verdicts(out.loc[out["split"] == s, "verdict"]) for s in params.splits}
    test = out[(out["split"] == "test") & out["verdict"].isin([records.FAKE, records.REAL])]
    test_counts = by_split.get("test", {})
    metrics: dict[str, Any] = {
        "calibration": {"aggregation": cal.aggregation, "threshold": cal.threshold, "abstain_band": cal.abstain_band,
                        "min_faces": cal.min_faces, "weights_sha256": cal.weights_sha256},
        "videos": len(out),
        "verdicts": counts,
        "verdicts_by_split": by_split,
        "test_verdicts": {
            "videos": int((out["split"] == "test").sum()),
            "decided": len(test),
            # Accuracy over the videos the model committed to (fake/real); abstentions and
            # unscored videos are reported next to it, not hidden in it.
            "decided_accuracy": float((test["verdict"] == test["true_label"]).mean()) if len(test) else None,
            "uncertain": test_counts.get(records.UNCERTAIN, 0),
            "unscored": test_counts.get(records.NO_FACE, 0) + test_counts.get(records.UNREADABLE, 0),
        },
    }
    write_metric_files(metrics, HEADLINE, metrics_out, details_out)
    logger.info("predict_videos: %d videos: %s", len(out), ", ".join(f"{n} {v}" for v, n in counts.items()))
    for row in out[out["verdict"].isin([records.NO_FACE, records.UNREADABLE])].itertuples(index=False):
        logger.warning("predict_videos:   %s %s: %s", row.verdict, row.video_id, row.reason)
    return metrics
