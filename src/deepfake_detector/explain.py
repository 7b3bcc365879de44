"""Grad-CAM explanations of video verdicts, with a faithfulness check.

For each explained video the ``top_k`` frames with the highest fake probability and the
``top_k`` lowest (per frame its most suspicious face) get a Grad-CAM map of the raw fake
logit at ``layer4[-1]`` (pytorch-grad-cam's ``GradCAM`` used as a context manager, so its
hooks are removed on exit). Crops go through the shared eval transform, exactly as in
prediction. Outputs per video: a montage, the maps placed back on the full frames at the
face's crop window, and a self-contained ``report.html`` (:mod:`deepfake_detector.report`).

Faithfulness: where the manipulated region is known (the embedded sample's
``masks.csv`` polygons, frame pixels), the mask is cut out with ``faces.crop_face`` at the
crop's recorded window (``crop_left, crop_top, crop_side`` in faces.parquet), so it lands
in crop coordinates with exactly the crop's geometry, and the share of CAM mass inside it
is compared with the share of the crop it covers (what a uniform map would give).

Example:
    >>> report = explain_video(model, meta, verdict, faces, crops, frames, Path("out/v1"),
    ...                        GradcamParams())  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import cv2
import numpy as np
import pandas as pd
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from tqdm import tqdm

from . import records
from .aggregate import sigmoid
from .data import ArrayDataset
from .engine import predict_logits, setup_runtime
from .faces import CropParams, crop_face, crop_window
from .model import CheckpointMeta, load_model
from .report import REPORT_FILE, IndexEntry, probability_plot, render_video_report, write_index
from .shards import ShardReader, encode_image
from .transforms import build_eval_transform

logger = logging.getLogger(__name__)

__all__ = [
    "GradcamParams", "VideoExplanation", "IndexEntry", "explain_crops", "select_frames",
    "face_window", "cut_window", "overlay_on_frame", "mask_in_crop", "cam_mass_share", "explain_video", "build_explanation", "write_index",
    "run_gradcam",
]

# Verdicts that come with face scores, hence something to explain.
EXPLAINABLE = ("fake", "real", "uncertain")
METHOD = "layer4[-1] (last ResNet block)"
# A crop must match its frame recut at its window to this mean |difference| (grey levels)
# before its CAM is placed on the frame or compared with a mask: crops and frames are
# stored losslessly, so a larger gap means a wrong window (stale data, wrong margin).
GEOMETRY_TOLERANCE = 2.0
MASK_COLOUR = (0, 255, 0)  # outline of the known manipulated region on full-frame overlays


@dataclass(frozen=True)
class GradcamParams:
    """Params section ``gradcam``.

    Attributes:
        split: Explain videos of this split.
        max_videos: Explain at most this many videos (balanced over fake/real/uncertain
            verdicts, then by ``video_id``).
        top_k: Per video, explain the k frames with the highest fake probability and the k
            lowest.
        batch_size: Crops per Grad-CAM batch (also the scoring batch).
        alpha: Opacity of the heat map over the image, in [0, 1].
        crop_margin: Margin the crops were cut with, used only for faces that carry no
            recorded crop window (the CLI's per-face table; faces.parquet records it).
            Checked against the frames at run time.
        detach_head: Cut the autograd graph at the target layer so backward covers only the
            head (same maps, ~3x faster; docs/performance.md).
    """

    split: str = "test"
    max_videos: int = 8
    top_k: int = 3
    batch_size: int = 16
    alpha: float = 0.5
    crop_margin: float = CropParams().margin
    detach_head: bool = True

    def __post_init__(self) -> None:
        if self.split not in records.SPLITS:
            raise ValueError(f"split must be one of {records.SPLITS}, got {self.split!r}")
        for key in ("max_videos", "top_k", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha!r}")
        if self.crop_margin < 0:
            raise ValueError(f"crop_margin must be >= 0, got {self.crop_margin!r}")


class Verdict(Protocol):
    """What the report reads from a verdict: ``predict.VideoVerdict`` or a row of
    ``video_predictions.csv`` (``itertuples``) both fit."""

    @property
    def video_id(self) -> str: ...
    @property
    def verdict(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def prob_fake(self) -> float: ...
    @property
    def threshold(self) -> float: ...
    @property
    def aggregation(self) -> str: ...
    @property
    def n_frames_sampled(self) -> int: ...
    @property
    def n_frames_with_face(self) -> int: ...
    @property
    def n_faces(self) -> int: ...


# ----------------------------------------------------------------------------- Grad-CAM


def _cut_graph(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
    # Grad-CAM needs d(logit)/d(activations) only: a fresh leaf here stops backward at the
    # target layer instead of running it through the whole backbone (identical maps).
    return output.detach().requires_grad_(True)


def explain_crops(
    model: nn.Module,
    meta: CheckpointMeta,
    crops: Sequence[np.ndarray],
    target_layer: nn.Module | None = None,
    batch_size: int = 16,
    detach_head: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps of the fake logit for face crops.

    The target is ``ClassifierOutputTarget(0)`` on the one-logit head, i.e. the raw logit
    (not its sigmoid: a saturated sigmoid has vanishing gradients). The model's weights,
    gradients and train/eval mode are as before on return, and no hook is left behind.

    Args:
        model: The classifier (one fake logit).
        meta: Its checkpoint meta (input size, mean, std for the shared eval transform).
        crops: RGB uint8 ``(H, W, 3)`` face crops.
        target_layer: Layer whose activations are weighted; default ``model.layer4[-1]``.
        batch_size: Crops per forward/backward pass.
        detach_head: Backward through the head only (see :class:`GradcamParams`).

    Returns:
        ``(cams, logits)``: ``(N, S, S)`` float32 maps in [0, 1] at the model input size
        (each scaled to its own maximum), and the ``(N,)`` fake logits of the same pass.

    Raises:
        RuntimeError: If the CAM library returned fewer maps than crops.
    """
    n = len(crops)
    size = int(meta.input_size)
    if n == 0:
        return np.zeros((0, size, size), np.float32), np.zeros(0, np.float32)
    layer = target_layer if target_layer is not None else model.layer4[-1]
    transform = build_eval_transform(size, tuple(meta.mean), tuple(meta.std))
    was_training = model.training
    saved_grads = [(p, p.grad) for p in model.parameters()]
    # Registered first (prepend) so the library's hooks see, and hook, the cut tensor.
    handle = layer.register_forward_hook(_cut_graph, prepend=True) if detach_head else None
    cams: list[np.ndarray] = []
    logits: list[np.ndarray] = []
    try:
        with torch.enable_grad(), GradCAM(model=model, target_layers=[layer]) as cam:
            for start in range(0, n, batch_size):
                batch = torch.stack([transform(c) for c in crops[start : start + batch_size]])  # (B, 3, S, S)
                maps = cam(input_tensor=batch, targets=[ClassifierOutputTarget(0)] * len(batch))
                cams.append(np.asarray(maps, dtype=np.float32))
                logits.append(cam.outputs.detach()[:, 0].float().cpu().numpy())
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)  # BaseCAM switches the model to eval mode
        for p, g in saved_grads:  # backward filled .grad; inference callers expect none
            p.grad = g
    out = np.concatenate(cams) if cams else np.zeros((0, size, size), np.float32)
    if len(out) != n:
        # GradCAM.__exit__ swallows IndexError: never hand back a short result silently.
        raise RuntimeError(f"Grad-CAM returned {len(out)} maps for {n} crops")
    return out, np.concatenate(logits)


def _resize_cam(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """CAM to ``(h, w)``, values kept in [0, 1]."""
    h, w = size
    if cam.shape == (h, w):
        return cam
    return np.clip(cv2.resize(cam, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


def cam_overlay(image: np.ndarray, cam: np.ndarray, alpha: float) -> np.ndarray:
    """Heat map over an RGB uint8 image (the library's ``show_cam_on_image``).

    Args:
        image: RGB uint8 ``(H, W, 3)``.
        cam: ``(h, w)`` map in [0, 1] (resized to the image).
        alpha: Heat-map opacity.

    Returns:
        RGB uint8 ``(H, W, 3)``.
    """
    cam = _resize_cam(cam, image.shape[:2])
    return show_cam_on_image(image.astype(np.float32) / 255.0, cam, use_rgb=True, image_weight=1.0 - alpha)


# ----------------------------------------------------------------------------- selection


def select_frames(faces: pd.DataFrame, top_k: int) -> pd.DataFrame:
    """The ``top_k`` frames with the highest fake probability and the ``top_k`` lowest.

    A frame's probability is that of its most suspicious face, which is the face explained.
    The two groups never share a frame (short videos give fewer low frames).

    Args:
        faces: One row per face with ``frame_index``, ``face_index``, ``prob_fake``, in the
            order of the crops.

    Returns:
        The chosen rows with ``row`` (position in ``faces``/crops) and ``group``
        (``high``, highest first, then ``low``, lowest first).
    """
    f = faces.reset_index(drop=True).assign(row=np.arange(len(faces)))
    best = f.sort_values(["frame_index", "prob_fake", "face_index"], ascending=[True, False, True], kind="stable")
    best = best.drop_duplicates("frame_index")
    high = best.sort_values(["prob_fake", "frame_index"], ascending=[False, True], kind="stable").head(top_k)
    rest = best[~best["frame_index"].isin(high["frame_index"])]
    low = rest.sort_values(["prob_fake", "frame_index"], ascending=[True, True], kind="stable").head(top_k)
    return pd.concat([high.assign(group="high"), low.assign(group="low")], ignore_index=True)


# ----------------------------------------------------------------------------- geometry


Window = tuple[int, int, int]  # (left, top, side) of a crop's square, frame pixels


def face_window(face: Any, margin: float) -> Window:
    """The square a face's crop was cut from.

    crop_faces records it (``crop_left, crop_top, crop_side``); a per-face table without
    it (the CLI's) falls back to ``faces.crop_window(box, margin)``.

    Args:
        face: A face row (attribute access: ``x1, y1, x2, y2`` and optionally the window).
        margin: Crop margin for the fallback.

    Returns:
        ``(left, top, side)``, frame pixels.
    """
    recorded = [getattr(face, k, None) for k in ("crop_left", "crop_top", "crop_side")]
    if all(v is not None and not pd.isna(v) for v in recorded):
        left, top, side = (int(v) for v in recorded)
        return left, top, side
    return crop_window((float(face.x1), float(face.y1), float(face.x2), float(face.y2)), margin)


def cut_window(image: np.ndarray, window: Window, size: int) -> np.ndarray:
    """``faces.crop_face`` on the square ``window``.

    A square integer box with zero margin is its own crop window, so this is the very cut
    (padding and resizing included) that made the crop.
    """
    left, top, side = window
    return crop_face(image, (left, top, left + side, top + side), 0.0, size)


def overlay_on_frame(
    frame: np.ndarray, cam: np.ndarray, window: Window, box: tuple[float, float, float, float], alpha: float
) -> np.ndarray:
    """Place a crop's CAM back on the full frame at its crop window, and draw the face box.

    Args:
        frame: RGB uint8 full frame.
        cam: The crop's map in [0, 1] (any size; it covers the whole window).
        window: The crop's ``(left, top, side)``, frame pixels.
        box: The face box, frame pixels (drawn in white).
        alpha: Heat-map opacity.

    Returns:
        A new RGB uint8 frame.
    """
    left, top, side = window
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + side, w), min(top + side, h)
    out = frame.copy()
    if x1 > x0 and y1 > y0:
        heat = _resize_cam(cam, (side, side))[y0 - top : y1 - top, x0 - left : x1 - left]
        out[y0:y1, x0:x1] = cam_overlay(frame[y0:y1, x0:x1], heat, alpha)
    thickness = max(1, round(max(h, w) / 400))
    bx = [int(round(v)) for v in box]
    cv2.rectangle(out, (bx[0], bx[1]), (bx[2], bx[3]), (255, 255, 255), thickness)
    return out


def mask_in_crop(polygon: np.ndarray, frame_hw: tuple[int, int], window: Window, crop_size: int) -> np.ndarray:
    """A frame-pixel polygon as a boolean mask in crop coordinates.

    The polygon is rasterised at frame size and cut exactly like the crop (``faces.crop_face``
    on the crop's window), so the mask has the crop's geometry by construction.

    Args:
        polygon: ``(K, 2)`` x, y vertices, frame pixels.
        frame_hw: Frame height and width.
        window: The crop's ``(left, top, side)``.
        crop_size: Crop side, px.

    Returns:
        ``(crop_size, crop_size)`` bool: crop pixels at least half inside the polygon.
    """
    canvas = np.zeros((int(frame_hw[0]), int(frame_hw[1]), 1), np.uint8)  # crop_face wants a channel axis
    pts = np.round(np.asarray(polygon, dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)
    if len(pts) >= 3:
        cv2.fillPoly(canvas, [pts], 255)
    return cut_window(canvas, window, crop_size).reshape(crop_size, crop_size) >= 128


def cam_mass_share(cam: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's mass inside ``mask`` (NaN when the map is all zero).

    A uniform map gives exactly the mask's area share; a map concentrated in the mask gives 1.
    """
    cam = np.asarray(cam, dtype=np.float64)
    total = cam.sum()
    if total <= 0:
        return math.nan
    return float(cam[np.asarray(mask, dtype=bool)].sum() / total)


def _geometry_gap(crop: np.ndarray, frame: np.ndarray, window: Window) -> float:
    """Mean |difference| between a crop and the crop recut from its frame at ``window``."""
    recut = cut_window(frame, window, crop.shape[0])
    return float(np.abs(recut.astype(np.int16) - crop.astype(np.int16)).mean())


# ----------------------------------------------------------------------------- one video


@dataclass
class VideoExplanation:
    """What :func:`build_explanation` wrote and measured for one video.

    Attributes:
        video_id: The video.
        verdict: Its verdict.
        prob_fake: Its video-level fake probability.
        true_label: Known label or ``""``.
        report: Path of ``report.html``.
        selected: The explained faces (see :func:`select_frames`) with their figures.
        faithfulness: ``n_faces, cam_share_in_mask, mask_area_share, lift`` (all explained
            faces) and the same for the ``high`` group; None when no mask applied.
        faithfulness_note: Why faithfulness is None, else how to read it.
        overlays_written: Full-frame overlay files written.
        seconds: Wall time for this video.
    """

    video_id: str
    verdict: str
    prob_fake: float
    true_label: str
    report: Path
    selected: pd.DataFrame
    faithfulness: dict[str, Any] | None
    faithfulness_note: str
    overlays_written: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def index_entry(self, out_root: Path) -> IndexEntry:
        """The index row for this video, its report linked relative to ``out_root``."""
        f = self.faithfulness or {}
        return IndexEntry(
            video_id=self.video_id, verdict=self.verdict, prob_fake=self.prob_fake, true_label=self.true_label,
            report=self.report.relative_to(out_root).as_posix(),
            cam_share_in_mask=f.get("cam_share_in_mask"), mask_area_share=f.get("mask_area_share"),
        )


def _label_tile(tile: np.ndarray, text: str, colour: tuple[int, int, int]) -> np.ndarray:
    """A bar with ``text`` above ``tile``, and a coloured border (red: high, blue: low)."""
    w = tile.shape[1]
    scale = max(0.3, w / 520)
    bar_h = max(12, int(28 * scale) + 4)
    bar = np.full((bar_h, w, 3), 255, np.uint8)
    cv2.putText(bar, text, (3, bar_h - max(3, bar_h // 4)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    out = np.vstack([bar, tile])
    b = max(1, w // 75)
    out[:b], out[-b:], out[:, :b], out[:, -b:] = colour, colour, colour, colour
    return out


def _montage(tiles: dict[str, list[np.ndarray]], top_k: int) -> np.ndarray:
    """Rows ``high`` then ``low``, ``top_k`` tiles each; missing tiles are blank."""
    sample = next(t for row in tiles.values() for t in row)
    blank = np.full_like(sample, 255)
    rows = []
    for group in ("high", "low"):
        row = tiles.get(group, []) + [blank] * (top_k - len(tiles.get(group, [])))
        rows.append(np.hstack(row))
    return np.vstack(rows)


def _faithfulness_summary(selected: pd.DataFrame) -> dict[str, Any] | None:
    """Per-video figures over the explained faces that have a mask (and some CAM mass)."""
    ok = selected.dropna(subset=["cam_share_in_mask", "mask_area_share"])
    ok = ok[ok["mask_area_share"] > 0]
    if ok.empty:
        return None

    def figures(part: pd.DataFrame) -> dict[str, Any]:
        if part.empty:
            return {"n_faces": 0, "cam_share_in_mask": None, "mask_area_share": None, "lift": None}
        share, area = float(part["cam_share_in_mask"].mean()), float(part["mask_area_share"].mean())
        return {"n_faces": int(len(part)), "cam_share_in_mask": share, "mask_area_share": area, "lift": share / area}

    return {**figures(ok), "high": figures(ok[ok["group"] == "high"])}


def _attr(obj: Any, name: str) -> Any:
    """An optional verdict field; None when absent or NaN (a CSV row's empty cell)."""
    value = getattr(obj, name, None)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def build_explanation(
    model: nn.Module,
    meta: CheckpointMeta,
    verdict: Verdict,
    faces: pd.DataFrame,
    crops: Sequence[np.ndarray],
    frames: Mapping[int, np.ndarray] | None,
    out_dir: Path,
    params: GradcamParams,
    masks: Mapping[int, np.ndarray] | None = None,
) -> VideoExplanation:
    """Explain one video and write its montage, full-frame overlays and ``report.html``.

    Args:
        model: The classifier.
        meta: Its checkpoint meta.
        verdict: The video's verdict (``predict.VideoVerdict`` or a predictions row).
        faces: That video's face rows (``frame_index, face_index, x1, y1, x2, y2, logit,
            prob_fake``, and ``crop_left, crop_top, crop_side`` when known) aligned with
            ``crops``.
        crops: RGB uint8 face crops, one per row of ``faces``.
        frames: Full frames by ``frame_index`` (only the explained ones are read); None
            skips the full-frame overlays and the faithfulness check.
        out_dir: The video's output folder (created).
        params: Grad-CAM settings.
        masks: Manipulated-region polygons ``(K, 2)`` in frame pixels by ``frame_index``
            (None: no faithfulness figure).

    Returns:
        What was written and measured.

    Raises:
        ValueError: If ``faces`` and ``crops`` differ in length, ``faces`` lacks a column
            or the video has no faces.
    """
    t0 = time.perf_counter()
    need = ["frame_index", "face_index", "x1", "y1", "x2", "y2", "prob_fake"]
    missing = [c for c in need if c not in faces.columns]
    if missing:
        raise ValueError(f"{verdict.video_id}: faces table lacks column(s) {missing}")
    if len(faces) != len(crops):
        raise ValueError(f"{verdict.video_id}: {len(faces)} face rows but {len(crops)} crops")
    if len(faces) == 0:
        raise ValueError(f"{verdict.video_id}: no faces to explain")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    faces = faces.reset_index(drop=True)
    selected = select_frames(faces, params.top_k)
    sel_crops = [crops[int(r)] for r in selected["row"]]
    cams, _ = explain_crops(model, meta, sel_crops, batch_size=params.batch_size, detach_head=params.detach_head)

    tiles: dict[str, list[np.ndarray]] = {}
    overlays: list[dict[str, Any]] = []
    shares, areas = [], []
    geometry_bad: list[str] = []
    for r, cam, crop in zip(selected.itertuples(index=False), cams, sel_crops):
        colour = (198, 40, 40) if r.group == "high" else (21, 101, 192)
        tile = cam_overlay(crop, cam, params.alpha)
        tiles.setdefault(r.group, []).append(_label_tile(tile, f"frame {int(r.frame_index)}  p={r.prob_fake:.2f}", colour))
        share = area = math.nan
        frame = frames.get(int(r.frame_index)) if frames is not None else None
        if frame is not None:
            box = (float(r.x1), float(r.y1), float(r.x2), float(r.y2))
            window = face_window(r, params.crop_margin)
            gap = _geometry_gap(crop, frame, window)
            if gap > GEOMETRY_TOLERANCE:
                geometry_bad.append(f"frame {int(r.frame_index)} (mean |diff| {gap:.1f})")
            else:
                name = f"frame_{int(r.frame_index):06d}_face{int(r.face_index):02d}.jpg"
                image = overlay_on_frame(frame, cam, window, box, params.alpha)
                polygon = masks.get(int(r.frame_index)) if masks is not None else None
                if polygon is not None and len(polygon) >= 3:
                    crop_cam = _resize_cam(cam, crop.shape[:2])
                    mask = mask_in_crop(polygon, frame.shape[:2], window, crop.shape[0])
                    share, area = cam_mass_share(crop_cam, mask), float(mask.mean())
                    outline = np.round(polygon).astype(np.int32).reshape(-1, 1, 2)
                    cv2.polylines(image, [outline], True, MASK_COLOUR, max(1, round(max(frame.shape[:2]) / 300)))
                (out_dir / name).write_bytes(encode_image(image, "jpg", jpeg_quality=90))
                overlays.append({"frame_index": int(r.frame_index), "prob_fake": float(r.prob_fake),
                                 "group": r.group, "file": name, "image": image})
        shares.append(share)
        areas.append(area)
    selected = selected.assign(cam_share_in_mask=shares, mask_area_share=areas)
    if geometry_bad:
        logger.error(
            "%s: crops do not match their frames cut at the crop window at %s (no recorded window: is "
            "GradcamParams.crop_margin %s the margin the crops were cut with?). Full-frame overlays and "
            "faithfulness skipped for those frames.",
            verdict.video_id, ", ".join(geometry_bad), params.crop_margin,
        )
    faith = _faithfulness_summary(selected)
    if faith is not None:
        note = ("Share of Grad-CAM mass inside the known manipulated region (crop pixels), against the share "
                "of the crop that region covers: a map that ignored the region would score its area share; "
                "a ratio above 1 means the heat concentrates on the manipulation.")
    elif geometry_bad:
        note = "the crops do not match their frames at the crop window (see the log)"
    elif frames is None:
        note = "no full frames were given"
    elif not masks:
        note = "no manipulation mask is known for this video"
    else:
        note = "no explained face overlaps the manipulation mask"

    montage = _montage(tiles, params.top_k)
    (out_dir / "montage.png").write_bytes(encode_image(montage, "png"))
    plot = probability_plot(faces, float(verdict.threshold), selected)
    summary = {
        "video_id": verdict.video_id, "verdict": verdict.verdict, "reason": _attr(verdict, "reason") or "",
        "prob_fake": float(verdict.prob_fake), "threshold": float(verdict.threshold),
        "aggregation": verdict.aggregation, "true_label": _attr(verdict, "true_label") or "",
        "split": _attr(verdict, "split") or "", "video_path": str(_attr(verdict, "video_path") or ""),
        "n_frames_sampled": _attr(verdict, "n_frames_sampled"),
        "n_frames_with_face": _attr(verdict, "n_frames_with_face"),
        "n_faces": _attr(verdict, "n_faces"), "top_k": params.top_k, "method": METHOD,
        "weights": (meta.weights_sha256 or "")[:12],
    }
    report = out_dir / REPORT_FILE
    report.write_text(render_video_report(summary, plot, montage, overlays, faith, note, selected), encoding="utf-8")
    return VideoExplanation(
        video_id=verdict.video_id, verdict=verdict.verdict, prob_fake=float(verdict.prob_fake),
        true_label=str(summary["true_label"]), report=report,
        selected=selected.drop(columns=["row"]), faithfulness=faith, faithfulness_note=note,
        overlays_written=[o["file"] for o in overlays], seconds=time.perf_counter() - t0,
    )


def explain_video(
    model: nn.Module,
    meta: CheckpointMeta,
    verdict: Verdict,
    faces: pd.DataFrame,
    crops: Sequence[np.ndarray],
    frames: Mapping[int, np.ndarray] | None,
    out_dir: Path,
    params: GradcamParams,
    masks: Mapping[int, np.ndarray] | None = None,
) -> Path:
    """Explain one video (the CLI's ``--explain DIR``); see :func:`build_explanation`.

    Returns:
        Path of the written ``report.html``.
    """
    return build_explanation(model, meta, verdict, faces, crops, frames, out_dir, params, masks).report


# ----------------------------------------------------------------------------- the stage


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
    missing = [c for c in ("file", "frame_index", "polygon") if c not in df.columns]
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


def read_predictions(path: Path, split: str) -> pd.DataFrame:
    """The rows of ``video_predictions.csv`` for one split, by ``video_id``; empty text is ``""``.

    Raises:
        ValueError: If a column explain needs is missing.
    """
    text_columns = ["video_id", "verdict", "split", "reason", "true_label", "video_path", "aggregation"]
    preds = pd.read_csv(path, dtype={c: str for c in text_columns})
    missing = [c for c in text_columns + ["prob_fake", "threshold"] if c not in preds.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    preds[text_columns] = preds[text_columns].fillna("")
    preds = preds[preds["split"] == split].sort_values("video_id")
    if preds.empty:
        logger.warning("%s has no %s videos: nothing to explain (is %s in predict_videos.splits?)", path, split, split)
    return preds


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


def run_gradcam(
    model_path: Path,
    manifest_path: Path,
    predictions_path: Path,
    faces_path: Path,
    crops_dir: Path,
    frames_dir: Path,
    frames_table: Path,
    masks_path: Path | None,
    out_dir: Path,
    metrics_path: Path,
    params: GradcamParams,
) -> dict[str, Any]:
    """The gradcam stage: explain up to ``max_videos`` videos of one split.

    Args:
        model_path: Checkpoint.
        manifest_path: The manifest (labels, manipulation, paths for the masks).
        predictions_path: ``video_predictions.csv`` (verdicts).
        faces_path: ``faces.parquet``.
        crops_dir: Crop shards.
        frames_dir: Frame shards.
        frames_table: ``frames.csv``.
        masks_path: ``masks.csv`` of manipulated regions, or None.
        out_dir: ``<out_dir>/<video_id>/`` reports and ``index.html``.
        metrics_path: JSON with counts, timings and faithfulness.
        params: ``gradcam`` params.

    Returns:
        The metrics written.
    """
    model, meta = load_model(model_path)
    rt = setup_runtime("auto")
    model = model.to(rt.device)
    transform = build_eval_transform(meta.input_size, tuple(meta.mean), tuple(meta.std))
    manifest = records.read_manifest(manifest_path)
    preds = read_predictions(predictions_path, params.split)
    faces_all = pd.read_parquet(faces_path)
    faces_by_video = {v: g for v, g in faces_all.groupby("video_id", sort=True)}
    frame_rows = pd.read_csv(frames_table, dtype={"video_id": str, "shard": str, "member": str})
    frames_by_video = {v: g for v, g in frame_rows.groupby("video_id", sort=True)}
    masks = load_masks(masks_path, manifest) if masks_path is not None else {}
    manipulation = manifest.set_index("video_id")["manipulation"]

    eligible = preds[preds["verdict"].isin(EXPLAINABLE)]
    chosen = select_videos(eligible, params.max_videos)
    entries: list[IndexEntry] = []
    for r in preds[~preds["video_id"].isin(chosen["video_id"])].itertuples(index=False):
        prob = None if pd.isna(r.prob_fake) else float(r.prob_fake)
        if r.verdict in EXPLAINABLE:
            reason = f"not selected: gradcam.max_videos is {params.max_videos}"
        else:
            reason = f"verdict {r.verdict}" + (f": {r.reason}" if r.reason else "")
        entries.append(IndexEntry(r.video_id, r.verdict, prob, r.true_label, None, reason))

    _clear_reports(out_dir)
    crop_reader, frame_reader = ShardReader(crops_dir), ShardReader(frames_dir)
    results: list[VideoExplanation] = []
    failed = 0
    for v in tqdm(list(chosen.itertuples(index=False)), desc="gradcam", unit="video"):
        rows = faces_by_video.get(v.video_id)
        if rows is None:
            entries.append(IndexEntry(v.video_id, v.verdict, float(v.prob_fake), v.true_label, None,
                                      f"verdict {v.verdict} but no face rows in {faces_path}"))
            failed += 1
            continue
        rows = rows.sort_values(["frame_index", "face_index"]).reset_index(drop=True)
        t0 = time.perf_counter()
        try:
            crops = [crop_reader.read_image(s, m) for s, m in zip(rows["shard"], rows["member"])]
            logits = predict_logits(model, ArrayDataset(crops, transform), rt, batch_size=params.batch_size, desc="score")
            rows = rows.assign(logit=logits, prob_fake=sigmoid(logits))
            result = build_explanation(
                model, meta, v, rows, crops, _ShardFrames(frames_by_video.get(v.video_id), frame_reader),
                out_dir / v.video_id, params, masks.get(v.video_id),
            )
        except (KeyError, ValueError, OSError, tarfile.TarError) as exc:
            logger.error("%s: explanation failed: %s", v.video_id, exc)
            entries.append(IndexEntry(v.video_id, v.verdict, float(v.prob_fake), v.true_label, None,
                                      f"explanation failed: {exc}"))
            failed += 1
            continue
        result.seconds = time.perf_counter() - t0  # reading and scoring the crops included
        results.append(result)
        entries.append(result.index_entry(out_dir))
    write_index(out_dir, entries)

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
    metrics = {
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
    metrics_path = Path(metrics_path)
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    fa = metrics["faithfulness"]
    logger.info(
        "gradcam: %d of %d %s videos explained (%d explainable, %d failed, %d not explainable); "
        "faithfulness on %d video(s): CAM share in mask %s vs mask area %s",
        len(results), len(preds), params.split, len(eligible), failed, len(preds) - len(eligible),
        fa["videos_with_mask"], fa["mean_cam_share_in_mask"], fa["mean_mask_area_share"],
    )
    return metrics
