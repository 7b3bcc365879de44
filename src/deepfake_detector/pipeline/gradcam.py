"""The gradcam stage: Grad-CAM reports for a few videos of one split.

Videos are chosen from ``video_predictions.csv`` (up to ``max_videos``, taken in turn from
the fake, real and uncertain verdicts). Their per-face scores come from the calibrate
stage's ``face_scores.parquet``, so no crop is scored again; only the crops of the frames
that are explained are read, and Grad-CAM runs on those alone
(:func:`explain.build_explanation`), with the detector's settings (``calibration.explain``,
as the CLI and the web demo use them). Writes ``<out-dir>/<video_id>/{montage.png,
frame_*.jpg, report.html}``, ``<out-dir>/index.html`` (skipped videos listed with their
reason), a metrics file with the headline faithfulness figures (:data:`HEADLINE`, declared as
metrics in ``dvc.yaml``) and a details file with counts, timings and per-video figures.
"""

from __future__ import annotations

import json
import logging
import shutil
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
from tqdm import tqdm

from .. import records
from ..explanations.explain import EXPLAINABLE, VideoExplanation, build_explanation
from ..explanations.report import REPORT_FILE, IndexEntry, write_index
from ..media.shards import ShardReader
from ..model.engine import setup_runtime
from ..scoring.aggregate import sigmoid
from ..verdicts.calibration import load_detector
from .metric_files import write_metric_files

logger = logging.getLogger(__name__)

# The figures `dvc metrics show` lists, by section; the details file has every figure.
HEADLINE: dict[str, tuple[str, ...]] = {"faithfulness": ("mean_cam_share_in_mask", "mean_mask_area_share", "mean_lift")}


@dataclass(frozen=True)
class GradcamParams:
    """Params section ``gradcam``.

    Attributes:
        split: Explain videos of this split.
        max_videos: Explain at most this many videos (balanced over fake/real/uncertain
            verdicts, then by ``video_id``).

    How each video is explained (``top_k``, ``alpha``, ...) is the detector's
    (``calibration.explain``, from ``calibrate.explain``), as for the CLI and the web demo.
    """

    split: str
    max_videos: int

    def __post_init__(self) -> None:
        if self.split not in records.SPLITS:
            raise ValueError(f"split must be one of {records.SPLITS}, got {self.split!r}")
        if self.max_videos < 1:
            raise ValueError(f"max_videos must be >= 1, got {self.max_videos!r}")


@dataclass(frozen=True)
class GradcamPaths:
    """The gradcam stage's inputs and outputs (all declared in ``dvc.yaml``).

    ``metrics`` gets the headline figures and ``details`` every figure.
    """

    detector: Path
    manifest: Path
    predictions: Path
    faces: Path
    scores: Path
    crops_dir: Path
    frames_dir: Path
    frames_table: Path
    masks: Path | None
    out_dir: Path
    metrics: Path
    details: Path


class _ShardFrames(Mapping):
    """One video's full frames, read from the frame shards only when asked for."""

    def __init__(self, rows: pd.DataFrame | None, reader: ShardReader) -> None:
        self._where = {} if rows is None else {
            int(r.frame_index): (r.shard, r.member) for r in rows.itertuples(index=False)
        }
        self._reader = reader

    def __getitem__(self, frame_index: int) -> np.ndarray:
        shard, member = self._where[frame_index]
        return self._reader.read_image(shard, member)

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._where))

    def __len__(self) -> int:
        return len(self._where)


class _ShardCrops(Sequence):
    """One video's face crops by row position, read from the crop shards only when asked for."""

    def __init__(self, rows: pd.DataFrame, reader: ShardReader) -> None:
        self._where = list(zip(rows["shard"], rows["member"]))
        self._reader = reader

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        shard, member = self._where[i]
        return self._reader.read_image(shard, member)

    def __len__(self) -> int:
        return len(self._where)


def load_masks(masks_path: Path, manifest: pd.DataFrame) -> dict[str, dict[int, np.ndarray]]:
    """``masks.csv`` polygons by ``video_id`` and ``frame_index``.

    ``file`` is relative to the masks file's folder and is matched to the manifest's
    ``path`` (both resolved), so no id is parsed out of a name.

    Args:
        masks_path: ``masks.csv`` with ``file, frame_index, polygon`` (JSON ``[[x, y], ...]``).
        manifest: The manifest.

    Returns:
        ``{video_id: {frame_index: (K, 2) float array}}``; empty polygons are left out.

    Raises:
        ValueError: If a column is missing.
    """
    df = pd.read_csv(masks_path, dtype={"file": str, "polygon": str}, keep_default_na=False)
    missing = [c for c in records.SAMPLE_MASK_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{masks_path}: missing column(s) {missing}")
    by_path = {Path(p).resolve(): vid for vid, p in zip(manifest["video_id"], manifest["path"])}
    out: dict[str, dict[int, np.ndarray]] = {}
    unmatched: set[str] = set()
    base = Path(masks_path).parent
    for file, rows in df.groupby("file", sort=True):
        vid = by_path.get((base / file).resolve())
        if vid is None:
            unmatched.add(file)
            continue
        polys = {int(fi): np.asarray(json.loads(poly), dtype=np.float64).reshape(-1, 2)
                 for fi, poly in zip(rows["frame_index"], rows["polygon"])}
        out[vid] = {fi: p for fi, p in polys.items() if len(p) >= 3}
    if unmatched:
        logger.warning("%s: %d file(s) match no manifest video (ignored), e.g. %s",
                       masks_path, len(unmatched), sorted(unmatched)[:3])
    return out


def select_videos(eligible: pd.DataFrame, max_videos: int) -> pd.DataFrame:
    """Up to ``max_videos`` rows, taken in turn from the fake, real and uncertain verdicts
    (each in ``video_id`` order), returned sorted by ``video_id``."""
    pools = [eligible[eligible["verdict"] == v].sort_values("video_id")["video_id"].tolist() for v in EXPLAINABLE]
    chosen: list[str] = []
    while len(chosen) < max_videos and any(pools):
        for pool in pools:
            if pool and len(chosen) < max_videos:
                chosen.append(pool.pop(0))
    return eligible[eligible["video_id"].isin(chosen)].sort_values("video_id")


def _clear_reports(out_dir: Path) -> None:
    """Remove a previous run's reports (folders holding a ``report.html``, the index)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for entry in sorted(out_dir.iterdir()):
        if entry.is_dir() and (entry / REPORT_FILE).is_file():
            shutil.rmtree(entry)
        elif entry.is_file() and entry.name == "index.html":
            entry.unlink()
        else:
            logger.warning("%s: unexpected entry %s left in place", out_dir, entry.name)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def faithfulness_metrics(results: Sequence[VideoExplanation]) -> dict[str, Any]:
    """Counts and means over videos of the per-video faithfulness figures."""
    with_mask = [r.faithfulness for r in results if r.faithfulness is not None]
    return {
        "videos_with_mask": len(with_mask),
        "videos_without_mask": len(results) - len(with_mask),
        "faces": int(sum(f["n_faces"] for f in with_mask)),
        "mean_cam_share_in_mask": _mean([f["cam_share_in_mask"] for f in with_mask]),
        "mean_mask_area_share": _mean([f["mask_area_share"] for f in with_mask]),
        "mean_lift": _mean([f["lift"] for f in with_mask]),
        "mean_cam_share_in_mask_high": _mean([f["high"]["cam_share_in_mask"] for f in with_mask if f["high"]["n_faces"]]),
    }


def _scored_faces(faces: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """Face rows (boxes, crop windows, shard members) joined with their cached logits."""
    joined = faces.merge(scores[[*records.FACE_KEY, "logit"]], on=records.FACE_KEY, how="inner", validate="one_to_one")
    return joined.assign(prob_fake=sigmoid(joined["logit"].to_numpy()))


def _not_explained(preds: pd.DataFrame, chosen: pd.DataFrame, max_videos: int) -> list[IndexEntry]:
    """Index rows for the split's videos that are not explained, with the reason."""
    entries = []
    for r in preds[~preds["video_id"].isin(chosen["video_id"])].itertuples(index=False):
        prob = None if pd.isna(r.prob_fake) else float(r.prob_fake)
        if r.verdict in EXPLAINABLE:
            reason = f"not selected: gradcam.max_videos is {max_videos}"
        else:
            reason = f"verdict {r.verdict}" + (f": {r.reason}" if r.reason else "")
        entries.append(IndexEntry(r.video_id, r.verdict, prob, r.true_label, None, reason))
    return entries


def run_gradcam(paths: GradcamPaths, params: GradcamParams) -> dict[str, Any]:
    """The gradcam stage: explain up to ``max_videos`` videos of one split.

    Args:
        paths: Inputs and outputs (``masks`` None: no faithfulness figures).
        params: ``gradcam`` params.

    Returns:
        Every figure (the details).
    """
    detector = load_detector(paths.detector)
    model, meta = detector.model, detector.meta
    model.to(setup_runtime("auto").device)
    manifest = records.read_manifest(paths.manifest)
    preds = records.read_predictions(paths.predictions)
    preds = preds[preds["split"] == params.split].sort_values("video_id")
    if preds.empty:
        logger.warning("%s has no %s videos: nothing to explain (is %s in predict_videos.splits?)",
                       paths.predictions, params.split, params.split)
    eligible = preds[preds["verdict"].isin(EXPLAINABLE)]
    chosen = select_videos(eligible, params.max_videos)
    faces = records.read_faces(paths.faces)
    faces = _scored_faces(faces[faces["video_id"].isin(chosen["video_id"])], records.read_face_scores(paths.scores))
    faces_by_video = {v: g for v, g in faces.groupby("video_id", sort=True)}
    frames_by_video = {v: g for v, g in records.read_frames(paths.frames_table).groupby("video_id", sort=True)}
    masks = load_masks(paths.masks, manifest) if paths.masks is not None else {}

    entries = _not_explained(preds, chosen, params.max_videos)
    _clear_reports(paths.out_dir)
    crop_reader, frame_reader = ShardReader(paths.crops_dir), ShardReader(paths.frames_dir)
    results: list[VideoExplanation] = []
    failed = 0
    for v in tqdm(list(chosen.itertuples(index=False)), desc="gradcam", unit="video"):
        rows = faces_by_video.get(v.video_id)
        t0 = time.perf_counter()
        try:
            if rows is None:
                raise ValueError(f"verdict {v.verdict} but no scored faces in {paths.scores}")
            rows = rows.sort_values(["frame_index", "face_index"]).reset_index(drop=True)
            result = build_explanation(
                model, meta, v, rows, _ShardCrops(rows, crop_reader),
                _ShardFrames(frames_by_video.get(v.video_id), frame_reader),
                paths.out_dir / v.video_id, detector.calibration.explain, masks.get(v.video_id),
            )
        except (KeyError, ValueError, OSError, tarfile.TarError) as exc:
            logger.error("%s: explanation failed: %s", v.video_id, exc)
            entries.append(IndexEntry(v.video_id, v.verdict, float(v.prob_fake), v.true_label, None,
                                      f"explanation failed: {exc}"))
            failed += 1
            continue
        result.seconds = time.perf_counter() - t0  # reading the crops and frames included
        results.append(result)
        entries.append(result.index_entry(paths.out_dir))
    write_index(paths.out_dir, entries)
    metrics = _metrics(params, preds, eligible, chosen, results, failed, manifest, paths.masks)
    write_metric_files(metrics, HEADLINE, paths.metrics, paths.details)
    fa = metrics["faithfulness"]
    logger.info(
        "gradcam: %d of %d %s videos explained (%d explainable, %d failed, %d not explainable); "
        "faithfulness on %d video(s): CAM share in mask %s vs mask area %s",
        len(results), len(preds), params.split, len(eligible), failed, len(preds) - len(eligible),
        fa["videos_with_mask"], fa["mean_cam_share_in_mask"], fa["mean_mask_area_share"],
    )
    return metrics


def _metrics(params: GradcamParams, preds: pd.DataFrame, eligible: pd.DataFrame, chosen: pd.DataFrame,
             results: list[VideoExplanation], failed: int, manifest: pd.DataFrame, masks_path: Path | None) -> dict[str, Any]:
    manipulation = manifest.set_index("video_id")["manipulation"]
    per_video = {}
    for r in results:
        f = r.faithfulness or {}
        per_video[r.video_id] = {
            "verdict": r.verdict, "prob_fake": r.prob_fake, "true_label": r.true_label,
            "manipulation": str(manipulation.get(r.video_id, "")), "seconds": round(r.seconds, 3),
            "faithfulness_faces": f.get("n_faces", 0), "cam_share_in_mask": f.get("cam_share_in_mask"),
            "mask_area_share": f.get("mask_area_share"), "lift": f.get("lift"),
            "cam_share_in_mask_high": (f.get("high") or {}).get("cam_share_in_mask"),
            "faithfulness_note": "" if r.faithfulness else r.faithfulness_note,
        }
    not_explainable = preds.loc[~preds["verdict"].isin(EXPLAINABLE), "verdict"]
    return {
        "split": params.split,
        "videos": {
            "in_split": int(len(preds)),
            "explainable": int(len(eligible)),
            "selected": int(len(chosen)),
            "explained": len(results),
            "failed": failed,
            "not_explainable": {str(k): int(n) for k, n in not_explainable.value_counts().sort_index().items()},
        },
        "seconds_per_video": _mean([r.seconds for r in results]),
        "faithfulness": {"masks_file": str(masks_path) if masks_path is not None else None,
                         **faithfulness_metrics(results)},
        "per_video": per_video,
    }
