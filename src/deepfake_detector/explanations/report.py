"""Self-contained HTML for Grad-CAM explanations: one report per video and an index.

Reports are opened from disk, sent by mail or archived with a DVC run, so they load
nothing from the network: no scripts, no web fonts, inline CSS only. Plots and the
montage are embedded as base64 ``data:`` URIs; the full-resolution full-frame overlays
sit next to the report and are linked relatively (their thumbnails are embedded).
Every string that comes from data goes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..media.imaging import encode_image

INDEX_FILE = "index.html"
REPORT_FILE = "report.html"
# Embedded full-frame thumbnails are at most this wide/high: the full files are linked.
THUMB_LONG_SIDE = 480
_VERDICT_COLOURS = {"fake": "#c62828", "real": "#2e7d32", "uncertain": "#ef6c00"}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; word-break: break-all; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: .25em .8em; text-align: left;
        border-bottom: 1px solid #ddd; vertical-align: top; }
th { background: #f4f4f4; } .badge { color: #fff; padding: .15em .6em; border-radius: .3em;
        font-weight: 600; } .note { color: #555; font-size: .92em; max-width: 60em; }
img { max-width: 100%; } img.zoom { image-rendering: pixelated; }
figure { display: inline-block; margin: .4em; } figcaption { font-size: .85em; }
"""


@dataclass(frozen=True)
class IndexEntry:
    """One row of ``index.html``.

    Attributes:
        video_id: The video.
        verdict: ``fake`` / ``real`` / ``uncertain`` / ``no_face`` / ``unreadable`` ...
        prob_fake: Video-level fake probability (None when the video was not scored).
        true_label: Known label (``real`` / ``fake``) or ``""``.
        report: Path of the report relative to the index, or None when not explained.
        reason: Why the video was not explained (empty for explained videos).
        cam_share_in_mask: Faithfulness: share of CAM mass inside the manipulation mask.
        mask_area_share: Share of the crop the mask covers (the uniform-CAM baseline).
    """

    video_id: str
    verdict: str
    prob_fake: float | None
    true_label: str = ""
    report: str | None = None
    reason: str = ""
    cam_share_in_mask: float | None = None
    mask_area_share: float | None = None


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 3) -> str:
    """Numbers to short text; None/NaN to an em dash."""
    if value is None:
        return "&mdash;"
    if isinstance(value, (float, np.floating)):
        return "&mdash;" if math.isnan(value) else f"{value:.{digits}f}"
    return _e(value)


def data_uri(image: np.ndarray, fmt: str = "png") -> str:
    """An RGB uint8 image as a ``data:`` URI (``png`` or ``jpg``)."""
    mime = "image/png" if fmt == "png" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(encode_image(image, fmt, jpeg_quality=85)).decode('ascii')}"


def thumbnail(image: np.ndarray, long_side: int = THUMB_LONG_SIDE) -> np.ndarray:
    """Downscale so the long side is at most ``long_side`` (never upscale)."""
    h, w = image.shape[:2]
    if max(h, w) <= long_side:
        return image
    scale = long_side / max(h, w)
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def probability_plot(faces: pd.DataFrame, threshold: float, selected: pd.DataFrame) -> bytes:
    """PNG of the fake probability over the video's sampled frames.

    Uses :class:`matplotlib.figure.Figure` directly (no pyplot), so no global figure
    registry grows when thousands of videos are plotted in one process.

    Args:
        faces: One row per face with ``frame_index`` and ``prob_fake``.
        threshold: The decision threshold (drawn as a dashed line).
        selected: Explained faces with ``frame_index``, ``prob_fake`` and ``group``
            (``high`` / ``low``), marked on the curve.

    Returns:
        PNG bytes.
    """
    fig = Figure(figsize=(7.5, 2.6), dpi=100)
    ax = fig.add_subplot()
    per_frame = faces.groupby("frame_index", sort=True)["prob_fake"].max()
    ax.plot(per_frame.index, per_frame.to_numpy(), "-", color="#444", lw=1.2, label="most suspicious face")
    ax.scatter(faces["frame_index"], faces["prob_fake"], s=10, color="#888", label="each face", zorder=2)
    for group, colour, marker in (("high", "#c62828", "^"), ("low", "#1565c0", "v")):
        part = selected[selected["group"] == group]
        if len(part):
            ax.scatter(part["frame_index"], part["prob_fake"], s=60, color=colour, marker=marker,
                       label=f"explained ({group})", zorder=3)
    ax.axhline(threshold, ls="--", color="#c62828", lw=1, label=f"threshold {threshold:.2f}")
    ax.set_ylim(-0.03, 1.03)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("frame index")
    ax.set_ylabel("P(fake)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.subplots_adjust(left=0.08, right=0.76, bottom=0.19, top=0.96)  # fixed: tight_layout costs more than the plot
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _min_width(image: np.ndarray, width: int = 480) -> str:
    """Attributes that show a small image at ``width`` px (pixelated), else nothing."""
    return f' width="{width}" class="zoom"' if image.shape[1] < width else ""


def _rows(pairs: Sequence[tuple[str, str]]) -> str:
    return "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in pairs)


def _badge(verdict: str) -> str:
    colour = _VERDICT_COLOURS.get(verdict, "#616161")
    return f'<span class="badge" style="background:{colour}">{_e(verdict)}</span>'


def render_video_report(
    summary: dict[str, Any],
    plot_png: bytes,
    montage: np.ndarray,
    overlays: Sequence[dict[str, Any]],
    faithfulness: dict[str, Any] | None,
    faithfulness_note: str,
    selected: pd.DataFrame,
) -> str:
    """HTML of one video's report.

    Args:
        summary: ``video_id, verdict, reason, prob_fake, threshold, aggregation, true_label,
            split, video_path, n_frames_sampled, n_frames_with_face, n_faces, top_k, method,
            weights``.
        plot_png: The probability-over-time plot.
        montage: The CAM montage, RGB uint8.
        overlays: Full-frame overlays: ``frame_index, prob_fake, group, file, image`` (RGB).
        faithfulness: Per-video faithfulness figures, or None.
        faithfulness_note: Why faithfulness is absent, or how to read it.
        selected: The explained faces (``group, frame_index, face_index, prob_fake``, and
            ``cam_share_in_mask`` / ``mask_area_share`` when known).

    Returns:
        A complete, self-contained HTML document.
    """
    s = summary
    k = s["top_k"]
    facts = [
        ("verdict", _badge(s["verdict"])),
        ("fake probability", _fmt(s["prob_fake"])),
        ("threshold", _fmt(s["threshold"])),
        ("aggregation", _e(s["aggregation"])),
    ]
    if s.get("reason"):
        facts.append(("reason", _e(s["reason"])))
    facts += [("true label", _e(s.get("true_label") or "unknown")), ("split", _e(s.get("split") or "")),
              ("video", _e(s.get("video_path") or ""))]
    stats = [
        ("frames sampled", _fmt(s.get("n_frames_sampled"))),
        ("frames with a face", _fmt(s.get("n_frames_with_face"))),
        ("faces scored", _fmt(s.get("n_faces"))),
        ("faces explained", _fmt(len(selected))),
    ]
    sel_rows = "".join(
        f"<tr><td>{_e(r.group)}</td><td>{int(r.frame_index)}</td><td>{int(r.face_index)}</td>"
        f"<td>{_fmt(float(r.prob_fake))}</td><td>{_fmt(getattr(r, 'cam_share_in_mask', None))}</td>"
        f"<td>{_fmt(getattr(r, 'mask_area_share', None))}</td></tr>"
        for r in selected.itertuples(index=False)
    )
    if faithfulness:
        f = faithfulness
        faith_rows = [
            ("faces with a mask", _fmt(f["n_faces"])),
            ("CAM mass inside the mask", _fmt(f["cam_share_in_mask"])),
            ("mask share of the crop", _fmt(f["mask_area_share"])),
            ("ratio (1 = no better than uniform)", _fmt(f["lift"], 2)),
        ]
        faith_html = f"<table>{_rows(faith_rows)}</table>" f'<p class="note">{_e(faithfulness_note)}</p>'
    else:
        faith_html = f'<p class="note">Not available: {_e(faithfulness_note)}</p>'
    overlay_note = "Green outline: the known manipulated region. " if faithfulness else ""
    figs = "".join(
        f'<figure><a href="{_e(o["file"])}"><img src="{data_uri(thumbnail(o["image"]), "jpg")}" '
        f'alt="frame {int(o["frame_index"])}"></a><figcaption>frame {int(o["frame_index"])}, '
        f'P(fake) {o["prob_fake"]:.3f} ({_e(o["group"])})</figcaption></figure>'
        for o in overlays
    ) or '<p class="note">No full frames were available, so no full-frame overlays were drawn.</p>'
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Grad-CAM report: {_e(s['video_id'])}</title><style>{_CSS}</style></head>
<body>
<p><a href="../{INDEX_FILE}">&larr; all reports</a></p>
<h1>{_e(s['video_id'])} {_badge(s['verdict'])}</h1>
<table>{_rows(facts)}</table>
<h2>Detection</h2>
<table>{_rows(stats)}</table>
<h2>Fake probability over time</h2>
<img src="data:image/png;base64,{base64.b64encode(plot_png).decode('ascii')}" alt="fake probability per frame">
<h2>Grad-CAM montage</h2>
<p class="note">Top row: the {k} frames with the highest fake probability; bottom row: the {k}
lowest (per frame, its most suspicious face). Heat: Grad-CAM of the raw fake logit at
{_e(s['method'])}; red regions pushed the score towards <em>fake</em>. Each map is scaled to its own
maximum, so compare where the heat is, not how hot it is, across tiles.</p>
<img src="{data_uri(montage, 'jpg')}" alt="Grad-CAM montage"{_min_width(montage)}>
<table><tr><th>group</th><th>frame</th><th>face</th><th>P(fake)</th><th>CAM in mask</th><th>mask area</th></tr>{sel_rows}</table>
<h2>Faithfulness</h2>
{faith_html}
<h2>Full-frame overlays</h2>
<p class="note">{overlay_note}The heat covers the crop window (face box, white, plus the crop margin);
click a frame for full resolution.</p>
{figs}
<p class="note">Model weights {_e(s.get('weights') or 'unknown')}. Generated by deepfake_detector.explain.</p>
</body></html>
"""


def write_index(out_root: Path, entries: Sequence[IndexEntry], title: str = "Grad-CAM reports") -> Path:
    """Write ``<out_root>/index.html`` linking every report, and listing skipped videos.

    Args:
        out_root: Folder holding one sub-folder per explained video.
        entries: Explained videos (``report`` set) and skipped ones (``reason`` set).
        title: Page title.

    Returns:
        The index path.
    """
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    done = sorted((e for e in entries if e.report), key=lambda e: e.video_id)
    skipped = sorted((e for e in entries if not e.report), key=lambda e: e.video_id)
    done_rows = "".join(
        f'<tr><td><a href="{_e(e.report)}">{_e(e.video_id)}</a></td><td>{_badge(e.verdict)}</td>'
        f"<td>{_fmt(e.prob_fake)}</td><td>{_e(e.true_label or 'unknown')}</td>"
        f"<td>{_fmt(e.cam_share_in_mask)}</td><td>{_fmt(e.mask_area_share)}</td></tr>"
        for e in done
    )
    skip_rows = "".join(
        f"<tr><td>{_e(e.video_id)}</td><td>{_e(e.verdict)}</td><td>{_e(e.reason)}</td></tr>" for e in skipped
    )
    skipped_html = (
        f"<table><tr><th>video</th><th>verdict</th><th>reason</th></tr>{skip_rows}</table>"
        if skipped else '<p class="note">None.</p>'
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{_e(title)}</h1>
<p class="note">{len(done)} video(s) explained, {len(skipped)} not explained. "CAM in mask" is the
share of Grad-CAM mass inside the known manipulated region; "mask area" is the share that a
uniform map would put there.</p>
<table><tr><th>video</th><th>verdict</th><th>P(fake)</th><th>true label</th><th>CAM in mask</th>
<th>mask area</th></tr>{done_rows}</table>
<h2>Not explained</h2>
{skipped_html}
</body></html>
"""
    path = out_root / INDEX_FILE
    path.write_text(page, encoding="utf-8")
    return path
