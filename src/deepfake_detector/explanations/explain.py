"""Grad-CAM explanations of video verdicts, with a faithfulness check (the library).

For an explained video the ``top_k`` frames with the highest fake probability and the
``top_k`` lowest (per frame its most suspicious face) get a Grad-CAM map of the raw fake
logit at the architecture's last block before pooling (:func:`model.cam_target_layer`;
pytorch-grad-cam's ``GradCAM`` used as a context manager, so its hooks are removed on exit).
Crops go through the shared eval transform, exactly as in prediction. Outputs per video: a
montage, the per-frame fake probability plot, the maps placed back on the full frames at
each face's recorded crop window, and a self-contained ``report.html``
(:mod:`deepfake_detector.explanations.report`).

Faithfulness: where the manipulated region is known (the embedded sample's ``masks.csv``
polygons, frame pixels), the mask is cut out at the crop's recorded window, so it lands
in crop coordinates with exactly the crop's geometry, and the share of CAM mass inside it
is compared with the share of the crop it covers (what a uniform map would give).

Used by the gradcam stage (:mod:`deepfake_detector.pipeline.gradcam`) and the CLI's ``--explain``.

The settings (:class:`verdicts.calibration.ExplainParams`: ``top_k``, ``batch_size``, ``alpha``) come
from the detector being explained (``detector.calibration.explain``, stored by calibrate from
params.yaml's ``calibrate.explain``), so every caller explains alike.

Example:
    >>> result = build_explanation(detector.model, detector.meta, verdict, faces, crops, frames,
    ...                            Path("out/v1"), detector.calibration.explain)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import cv2
import numpy as np
import pandas as pd
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from .. import records
from ..media.imaging import Window, cut_window, encode_image
from ..model.network import CheckpointMeta, cam_target_layer
from ..model.transforms import build_eval_transform
from ..verdicts.calibration import ExplainParams
from .report import REPORT_FILE, IndexEntry, probability_plot, render_video_report

logger = logging.getLogger(__name__)

# Verdicts that come with face scores, hence something to explain.
EXPLAINABLE = records.SCORED_VERDICTS
# A crop must match its frame recut at its window to this mean |difference| (grey levels)
# before its CAM is placed on the frame or compared with a mask: crops and frames are
# stored losslessly, so a larger gap means a wrong window (stale data, wrong margin).
GEOMETRY_TOLERANCE = 2.0
MASK_COLOUR = (0, 255, 0)  # outline of the known manipulated region on full-frame overlays
# Files written next to report.html (the web demo shows them as they are).
MONTAGE_FILE = "montage.png"
PLOT_FILE = "probability.png"


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
) -> np.ndarray:
    """Grad-CAM maps of the fake logit for face crops.

    The target is ``ClassifierOutputTarget(0)`` on the one-logit head, i.e. the raw logit
    (not its sigmoid: a saturated sigmoid has vanishing gradients). The model's weights,
    gradients and train/eval mode are as before on return, and no hook is left behind.

    Args:
        model: The classifier (one fake logit).
        meta: Its checkpoint meta (input size, mean, std for the shared eval transform).
        crops: RGB uint8 ``(H, W, 3)`` face crops.
        target_layer: Layer whose activations are weighted; default the architecture's
            (:func:`model.cam_target_layer`).
        batch_size: Crops per forward/backward pass.
        detach_head: Cut the autograd graph at the target layer so backward covers only the
            head (same maps, about 3x faster; docs/performance.md).

    Returns:
        ``(N, S, S)`` float32 maps in [0, 1] at the model input size (each scaled to its
        own maximum).

    Raises:
        RuntimeError: If the CAM library returned fewer maps than crops.
    """
    n = len(crops)
    size = int(meta.input_size)
    if n == 0:
        return np.zeros((0, size, size), np.float32)
    layer = target_layer if target_layer is not None else cam_target_layer(model, meta.arch)[0]
    transform = build_eval_transform(size, tuple(meta.mean), tuple(meta.std))
    was_training = model.training
    saved_grads = [(p, p.grad) for p in model.parameters()]
    # Registered first (prepend) so the library's hooks see, and hook, the cut tensor.
    handle = layer.register_forward_hook(_cut_graph, prepend=True) if detach_head else None
    cams: list[np.ndarray] = []
    try:
        with torch.enable_grad(), GradCAM(model=model, target_layers=[layer]) as cam:
            for start in range(0, n, batch_size):
                batch = torch.stack([transform(c) for c in crops[start : start + batch_size]])  # (B, 3, S, S)
                maps = cam(input_tensor=batch, targets=[ClassifierOutputTarget(0)] * len(batch))
                cams.append(np.asarray(maps, dtype=np.float32))
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
    return out


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


def face_window(face: Any) -> Window:
    """The square ``(left, top, side)`` a face's crop was cut from (recorded with every face)."""
    return int(face.crop_left), int(face.crop_top), int(face.crop_side)


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
    params: ExplainParams,
    masks: Mapping[int, np.ndarray] | None = None,
) -> VideoExplanation:
    """Explain one video and write its montage, probability plot, full-frame overlays and ``report.html``.

    Args:
        model: The classifier.
        meta: Its checkpoint meta.
        verdict: The video's verdict (``records.VideoVerdict`` or a predictions row).
        faces: That video's scored faces (:data:`records.SCORED_FACE_COLUMNS`).
        crops: RGB uint8 face crops, indexable by the position of their row in ``faces``
            (a list, or a lazy sequence that reads only the crops asked for).
        frames: Full frames by ``frame_index`` (only the explained ones are read); None
            skips the full-frame overlays and the faithfulness check.
        out_dir: The video's output folder (created).
        params: How to explain.
        masks: Manipulated-region polygons ``(K, 2)`` in frame pixels by ``frame_index``
            (None: no faithfulness figure).

    Returns:
        What was written and measured.

    Raises:
        ValueError: If ``faces`` lacks a column, has no rows, or differs from ``crops`` in length.
    """
    t0 = time.perf_counter()
    missing = [c for c in records.SCORED_FACE_COLUMNS if c not in faces.columns]
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
    cams = explain_crops(model, meta, sel_crops, batch_size=params.batch_size)
    _, method = cam_target_layer(model, meta.arch)
    drawn = _draw_faces(selected, cams, sel_crops, frames, masks, out_dir, params.alpha)
    selected = selected.assign(cam_share_in_mask=drawn.shares, mask_area_share=drawn.areas)
    if drawn.geometry_bad:
        logger.error(
            "%s: crops do not match their frames cut at the recorded crop window at %s (stale frames or "
            "crops?). Full-frame overlays and faithfulness skipped for those frames.",
            verdict.video_id, ", ".join(drawn.geometry_bad),
        )
    faith = _faithfulness_summary(selected)
    note = _faithfulness_note(faith, drawn.geometry_bad, frames, masks)
    montage = _montage(drawn.tiles, params.top_k)
    (out_dir / MONTAGE_FILE).write_bytes(encode_image(montage, "png"))
    summary = {
        "video_id": verdict.video_id, "verdict": verdict.verdict, "reason": _attr(verdict, "reason") or "",
        "prob_fake": float(verdict.prob_fake), "threshold": float(verdict.threshold),
        "aggregation": verdict.aggregation, "true_label": _attr(verdict, "true_label") or "",
        "split": _attr(verdict, "split") or "", "video_path": str(_attr(verdict, "video_path") or ""),
        "n_frames_sampled": _attr(verdict, "n_frames_sampled"),
        "n_frames_with_face": _attr(verdict, "n_frames_with_face"),
        "n_faces": _attr(verdict, "n_faces"), "top_k": params.top_k, "method": method,
        "weights": (meta.weights_sha256 or "")[:12],
    }
    plot = probability_plot(faces, float(verdict.threshold), selected)
    (out_dir / PLOT_FILE).write_bytes(plot)
    report = out_dir / REPORT_FILE
    report.write_text(render_video_report(summary, plot, montage, drawn.overlays, faith, note, selected), encoding="utf-8")
    return VideoExplanation(
        video_id=verdict.video_id, verdict=verdict.verdict, prob_fake=float(verdict.prob_fake),
        true_label=str(summary["true_label"]), report=report,
        selected=selected.drop(columns=["row"]), faithfulness=faith, faithfulness_note=note,
        overlays_written=[o["file"] for o in drawn.overlays], seconds=time.perf_counter() - t0,
    )


@dataclass
class _Drawn:
    """Per explained face: its montage tile, its full-frame overlay, its faithfulness figures."""

    tiles: dict[str, list[np.ndarray]] = field(default_factory=dict)
    overlays: list[dict[str, Any]] = field(default_factory=list)
    shares: list[float] = field(default_factory=list)
    areas: list[float] = field(default_factory=list)
    geometry_bad: list[str] = field(default_factory=list)


def _draw_faces(
    selected: pd.DataFrame, cams: np.ndarray, crops: list[np.ndarray], frames: Mapping[int, np.ndarray] | None,
    masks: Mapping[int, np.ndarray] | None, out_dir: Path, alpha: float,
) -> _Drawn:
    """Tiles for the montage; overlays on the full frames (written as JPEG) with the mask outline."""
    drawn = _Drawn()
    for r, cam, crop in zip(selected.itertuples(index=False), cams, crops):
        colour = (198, 40, 40) if r.group == "high" else (21, 101, 192)
        tile = cam_overlay(crop, cam, alpha)
        drawn.tiles.setdefault(r.group, []).append(_label_tile(tile, f"frame {int(r.frame_index)}  p={r.prob_fake:.2f}", colour))
        share = area = math.nan
        frame = frames.get(int(r.frame_index)) if frames is not None else None
        window = face_window(r)
        gap = _geometry_gap(crop, frame, window) if frame is not None else math.nan
        if gap > GEOMETRY_TOLERANCE:
            drawn.geometry_bad.append(f"frame {int(r.frame_index)} (mean |diff| {gap:.1f})")
        elif frame is not None:
            image = overlay_on_frame(frame, cam, window, (float(r.x1), float(r.y1), float(r.x2), float(r.y2)), alpha)
            polygon = masks.get(int(r.frame_index)) if masks is not None else None
            if polygon is not None and len(polygon) >= 3:
                mask = mask_in_crop(polygon, frame.shape[:2], window, crop.shape[0])
                share, area = cam_mass_share(_resize_cam(cam, crop.shape[:2]), mask), float(mask.mean())
                outline = np.round(polygon).astype(np.int32).reshape(-1, 1, 2)
                cv2.polylines(image, [outline], True, MASK_COLOUR, max(1, round(max(frame.shape[:2]) / 300)))
            name = f"frame_{int(r.frame_index):06d}_face{int(r.face_index):02d}.jpg"
            (out_dir / name).write_bytes(encode_image(image, "jpg", jpeg_quality=90))
            drawn.overlays.append({"frame_index": int(r.frame_index), "prob_fake": float(r.prob_fake),
                                   "group": r.group, "file": name, "image": image})
        drawn.shares.append(share)
        drawn.areas.append(area)
    return drawn


def _faithfulness_note(faith: dict[str, Any] | None, geometry_bad: list[str],
                       frames: Mapping[int, np.ndarray] | None, masks: Mapping[int, np.ndarray] | None) -> str:
    """How to read the faithfulness figure, or why there is none."""
    if faith is not None:
        return ("Share of Grad-CAM mass inside the known manipulated region (crop pixels), against the share "
                "of the crop that region covers: a map that ignored the region would score its area share; "
                "a ratio above 1 means the heat concentrates on the manipulation.")
    if geometry_bad:
        return "the crops do not match their frames at the crop window (see the log)"
    if frames is None:
        return "no full frames were given"
    if not masks:
        return "no manipulation mask is known for this video"
    return "no explained face overlaps the manipulation mask"
