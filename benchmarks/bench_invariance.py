"""Invariance benchmark (issue 24): does the verdict on REAL videos move when global image quality changes?

Usage:
    python benchmarks/bench_invariance.py [--model release/detector.pt] [--manifest release/data/manifest.csv]
        [--root DIR] [--splits val test] [--max-photos 200] [--limit N] [--perturbations blur ...] [--seed 0]
        [--threads 2] [--out report.json]
    python benchmarks/bench_invariance.py --files CLIP_OR_PHOTO... [...]
    python benchmarks/bench_invariance.py --smoke   # one short clip and one photo from ../shared/data (CI)

``--limit N`` keeps the first N items taking a video and a photo in turn, so that a short
run has both kinds. Cost: seven judgements per item (the original, the identity clip, five
perturbations): about 5 s an item for the 512-px clips and 250-px photos on one core here;
``--smoke`` takes about 20 s with the imports.

A detector trained on self-blended images can learn "softer texture = fake": blurring a real
video raised its mean P(fake) by +0.17. This measures it. Each REAL item of ``--splits`` in
the manifest (all videos, and a deterministic sample of at most ``--max-photos`` photos:
ranked by sha256 of ``seed/video_id``, as ingest's source ``limit``) is judged once as it is
with :class:`service.Judge` (the CLI's and web demo's path, the detector's own calibration),
which also hands back the frames it sampled (``keep_frames``: the calibration's
``frames_per_video`` frames, :func:`video.sample_indices` over the decodable frames): each
item is decoded once. From those frames, for each item, clips are written to a temporary
folder: an unperturbed "identity" clip and one clip per perturbation, each frame perturbed
in RGB uint8. Videos become FFV1 in AVI (lossless; AVI because FFmpeg reads its frame count
from the index, so the detector samples exactly the written frames), padded by one
replicated row/column where a side is odd (OpenCV's writer crops odd sides); photos become
PNG (lossless, read as one-frame stills as the original). Every clip is judged by the same
Judge, and the decoded frames it returns are compared with the frames written (the codec
check in the header: must be 0). Each perturbation is compared with the identity clip, not
with the original file, so re-encoding is not counted as the perturbation's effect (the
identity clip's own gap to the original file is printed too).

Perturbations (:data:`PERTURBATIONS`): Gaussian blur sigma 1.2 px (OpenCV's kernel for that
sigma, 9x9); bilateral denoise ``cv2.bilateralFilter(d=9, sigmaColor=75, sigmaSpace=75)``;
Gaussian noise sigma 6 (per pixel and channel, rounded and clipped; ``--seed`` for every
clip); JPEG quality 35 (OpenCV encode/decode of each frame, 4:2:0); downscale x0.5
(INTER_AREA) and back up (INTER_LINEAR).

Reported per perturbation, for videos, photos and all: items, items scored (identity and
perturbed both got a P(fake)), mean P(fake) identity -> perturbed, mean change, mean
absolute change, verdict flips (called ``fake`` in one and not in the other, the verdicts
being the calibration's :meth:`calibration.Calibration.decide`: ``uncertain`` is not
``fake``), the share called fake, and the median PSNR of the perturbed frames; with the
issue's targets, ``|mean change| < 0.05`` and ``flips <= 5 %`` of the items scored. Items that
fail (missing, unreadable, no face, before or after a perturbation) are counted and listed,
never dropped silently. ``--out`` writes all of it as JSON, with one row per item.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import cv2
import numpy as np
from tqdm import tqdm

from deepfake_detector import records
from deepfake_detector.media.probe import VideoReadError, probe
from deepfake_detector.service import Judge, UsageError

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
# --smoke: the smallest real clip (48 KB, 512x512) and one LFW photo, a few seconds per clip on CPU.
SMOKE_FILES = [SHARED / "real_clips" / "liveportrait_driving_d2.mp4", SHARED / "real_faces" / "lfw" / "AJ_Lamas_0001.jpg"]

# Issue 24's targets on real items.
TARGET_MEAN_DELTA = 0.05  # |mean change of P(fake)| strictly below this
TARGET_FLIP_SHARE = 0.05  # at most this share of the scored items flips verdict

# Lossless clip codec: FFV1 in AVI (exact frame count from the index; see the module docstring).
CLIP_FOURCC, CLIP_SUFFIX, CLIP_FPS = "FFV1", ".avi", 25.0
IDENTITY = "identity"


@dataclass(frozen=True)
class Perturbation:
    """One global image-quality change, applied to every frame.

    Attributes:
        name: Short name (table rows, JSON keys, ``--perturbations``).
        description: Its exact settings, for the report.
        apply: ``(rgb, rng) -> rgb``: an RGB uint8 frame ``(H, W, 3)`` to one of the same shape
            and dtype; ``rng`` is the clip's generator (only the noise draws from it).
    """

    name: str
    description: str
    apply: Callable[[np.ndarray, np.random.Generator], np.ndarray]


def blur(rgb: np.ndarray, rng: np.random.Generator, sigma: float = 1.2) -> np.ndarray:
    """Gaussian blur; kernel size from sigma (OpenCV: 9x9 at 1.2 px for uint8)."""
    return cv2.GaussianBlur(rgb, (0, 0), sigmaX=sigma, sigmaY=sigma)


def bilateral(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Edge-preserving denoise, the usual "beauty filter" settings."""
    return cv2.bilateralFilter(rgb, 9, 75, 75)


def noise(rgb: np.ndarray, rng: np.random.Generator, sigma: float = 6.0) -> np.ndarray:
    """Additive Gaussian noise, independent per pixel and channel, rounded and clipped to uint8."""
    noisy = rgb.astype(np.float32) + rng.normal(0.0, sigma, rgb.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def jpeg(rgb: np.ndarray, rng: np.random.Generator, quality: int = 35) -> np.ndarray:
    """JPEG encode/decode at ``quality`` (BGR order for OpenCV, whose YCbCr conversion assumes it)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode a frame")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def downscale(rgb: np.ndarray, rng: np.random.Generator, factor: float = 0.5) -> np.ndarray:
    """Down by ``factor`` (INTER_AREA) and back to the original size (INTER_LINEAR)."""
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


PERTURBATIONS: dict[str, Perturbation] = {p.name: p for p in (
    Perturbation("blur", "Gaussian blur, sigma 1.2 px (cv2.GaussianBlur, ksize (0, 0): 9x9)", blur),
    Perturbation("bilateral", "bilateral denoise, cv2.bilateralFilter(d=9, sigmaColor=75, sigmaSpace=75)", bilateral),
    Perturbation("noise", "Gaussian noise, sigma 6 per pixel and channel (seeded per clip)", noise),
    Perturbation("jpeg35", "JPEG quality 35, encoded/decoded per frame (cv2.imencode, 4:2:0)", jpeg),
    Perturbation("down0.5", "downscale x0.5 (INTER_AREA), back up (INTER_LINEAR)", downscale),
)}


def perturb(frames: list[np.ndarray], p: Perturbation, seed: int) -> list[np.ndarray]:
    """Apply ``p`` to every frame of one clip; the noise generator starts from ``seed`` for every clip."""
    rng = np.random.default_rng(seed)
    return [p.apply(f, rng) for f in frames]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images, dB (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# --- writing the clips ---------------------------------------------------------------------


def even_sides(rgb: np.ndarray) -> np.ndarray:
    """Pad an odd height/width by one replicated row/column (OpenCV's video writer crops odd sides)."""
    h, w = rgb.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return rgb
    return cv2.copyMakeBorder(rgb, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)


def write_item(frames: list[np.ndarray], kind: str, stem: Path) -> tuple[Path, list[np.ndarray]]:
    """Write one clip losslessly: a PNG for a photo, FFV1/AVI for a video.

    Args:
        frames: RGB uint8 frames, all the same size (one for a photo).
        kind: ``image`` or ``video`` (:data:`records.KIND_IMAGE` / ``KIND_VIDEO``).
        stem: Path without suffix.

    Returns:
        The file written and the frames as written (padded to even sides for a video), to
        compare with what the decoder gives back.

    Raises:
        RuntimeError: If OpenCV cannot write the file.
    """
    if kind == records.KIND_IMAGE:
        path = stem.parent / f"{stem.name}.png"
        if not cv2.imwrite(str(path), cv2.cvtColor(frames[0], cv2.COLOR_RGB2BGR)):
            raise RuntimeError(f"OpenCV could not write {path}")
        return path, frames[:1]
    path = stem.parent / f"{stem.name}{CLIP_SUFFIX}"
    written = [even_sides(f) for f in frames]
    h, w = written[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*CLIP_FOURCC), CLIP_FPS, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {CLIP_FOURCC} {CLIP_SUFFIX} here (its FFmpeg lacks the encoder?)")
    try:
        for f in written:
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path, written


def max_abs_diff(written: list[np.ndarray], decoded: dict[int, np.ndarray] | None) -> int | None:
    """Largest pixel difference between the frames written and the frames the Judge decoded (None: not decoded
    or not the same number/size of frames)."""
    if decoded is None or len(decoded) != len(written):
        return None
    got = [decoded[i] for i in sorted(decoded)]
    if any(a.shape != b.shape for a, b in zip(written, got)):
        return None
    return max(int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) for a, b in zip(written, got))


# --- choosing the items --------------------------------------------------------------------


@dataclass
class Item:
    """One real file to test."""

    video_id: str
    path: Path
    kind: str
    split: str = ""
    source: str = ""
    status: str = records.OK
    reason: str = ""


def _kind(path: Path) -> str:
    """``image`` or ``video`` from the content (:func:`media.probe`); from the suffix when it cannot be read
    (such a file is judged anyway, and reported unreadable)."""
    try:
        return probe(path).kind
    except VideoReadError:
        return records.KIND_IMAGE if path.suffix.lower() in records.IMAGE_SUFFIXES else records.KIND_VIDEO


def items_from_files(paths: Iterable[Path]) -> list[Item]:
    """Explicit files: each its own item, id = the path as given."""
    return [Item(video_id=str(p), path=Path(p), kind=_kind(Path(p))) for p in paths]


def items_from_manifest(manifest: Path, root: Path, splits: list[str], max_photos: int, seed: int) -> tuple[list[Item], int]:
    """The real items of ``splits``: every video, and at most ``max_photos`` photos.

    Photos are ranked by sha256 of ``"{seed}/{video_id}"`` (independent of the manifest's
    order; a larger ``max_photos`` keeps every photo a smaller one kept).

    Args:
        manifest: ``manifest.csv`` (:func:`records.read_manifest`).
        root: Folder the manifest's relative paths are relative to (the DVC project its ingest ran in).
        splits: Splits to take.
        max_photos: Most photos taken.
        seed: Seed of the photo sample.

    Returns:
        ``(items, photos left out)``, in manifest order; listed-but-missing files included
        (with their status), to be reported as failures.
    """
    df = records.read_manifest(manifest)
    real = df[(df["label"] == "real") & df["split"].isin(splits)]
    items = []
    for row in real.itertuples(index=False):
        path = Path(row.path) if Path(row.path).is_absolute() else root / row.path
        kind = _kind(path) if row.status == records.OK else (
            records.KIND_IMAGE if path.suffix.lower() in records.IMAGE_SUFFIXES else records.KIND_VIDEO)
        items.append(Item(row.video_id, path, kind, row.split, row.source, row.status, row.reason))
    photos = [i for i in items if i.kind == records.KIND_IMAGE]
    ranked = sorted(photos, key=lambda i: hashlib.sha256(f"{seed}/{i.video_id}".encode()).hexdigest())
    keep = {i.video_id for i in ranked[:max_photos]}
    chosen = [i for i in items if i.kind != records.KIND_IMAGE or i.video_id in keep]
    return chosen, len(photos) - len(keep)


def take(items: list[Item], limit: int) -> list[Item]:
    """At most ``limit`` items, alternately a video and a photo (each in order), so that a small run has both."""
    videos = [i for i in items if i.kind != records.KIND_IMAGE]
    photos = [i for i in items if i.kind == records.KIND_IMAGE]
    mixed = [i for pair in itertools.zip_longest(videos, photos) for i in pair if i is not None]
    return mixed[:limit]


# --- judging -------------------------------------------------------------------------------


def _judged(v: records.VideoVerdict) -> dict[str, Any]:
    return {"verdict": v.verdict, "prob_fake": v.prob_fake, "n_faces": v.n_faces, "n_frames_sampled": v.n_frames_sampled,
            "reason": v.reason}


def run_item(item: Item, judge: Judge, perturbations: list[Perturbation], tmp: Path, seed: int) -> dict[str, Any]:
    """Judge one item as it is, then its identity clip and one clip per perturbation.

    Returns:
        The item's row: ``original``, ``identity`` and one entry per perturbation, each the
        Judge's verdict, P(fake) and reason, plus ``delta`` (perturbed minus identity P(fake))
        and ``flip`` where both were scored; ``failed`` names the first step that could not be
        scored (None when the identity was scored).
    """
    row: dict[str, Any] = {"video_id": item.video_id, "path": str(item.path), "kind": item.kind, "split": item.split,
                           "source": item.source, "failed": None}
    if item.status != records.OK:
        row["failed"] = f"original: {item.status}: {item.reason}"
        return row
    original = judge(item.path)  # decodes the file once; keep_frames hands back the sampled frames
    row["original"] = _judged(original.verdict)
    if original.verdict.prob_fake is None or not original.frames:
        row["failed"] = f"original: {original.verdict.verdict}: {original.verdict.reason}"
        return row
    frames = [original.frames[i] for i in sorted(original.frames)]
    del original
    clips = [(IDENTITY, frames)] + [(p.name, perturb(frames, p, seed)) for p in perturbations]
    ident: records.VideoVerdict | None = None
    for name, clip in clips:
        path, written = write_item(clip, item.kind, tmp / name)
        pred = judge(path)
        entry = _judged(pred.verdict)
        entry["roundtrip_max_diff"] = max_abs_diff(written, pred.frames)
        if name == IDENTITY:
            ident = pred.verdict
        else:
            entry["psnr_db"] = statistics.median(psnr(a, b) for a, b in zip(frames, clip))
            if ident.prob_fake is not None and pred.verdict.prob_fake is not None:
                entry["delta"] = pred.verdict.prob_fake - ident.prob_fake
                entry["flip"] = (pred.verdict.verdict == records.FAKE) != (ident.verdict == records.FAKE)
        row[name] = entry
        path.unlink()
        if name == IDENTITY and pred.verdict.prob_fake is None:
            row["failed"] = f"identity clip: {pred.verdict.verdict}: {pred.verdict.reason}"
            break
    return row


# --- the report ----------------------------------------------------------------------------


def summarize(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """One perturbation over some items: counts, mean change, flips, targets.

    Args:
        rows: Item rows from :func:`run_item`.
        name: The perturbation.

    Returns:
        ``n_items``, ``n_scored``, ``n_failed``, means of P(fake) (identity, perturbed), of the
        change and of its absolute value, ``flips`` (and how many became ``fake``),
        the shares called fake, the median PSNR, and ``mean_delta_met`` / ``flips_met``
        (None when nothing was scored).
    """
    scored = [r for r in rows if "delta" in r.get(name, {})]
    out: dict[str, Any] = {"perturbation": name, "n_items": len(rows), "n_scored": len(scored),
                           "n_failed": len(rows) - len(scored)}
    if not scored:
        return {**out, "mean_delta_met": None, "flips_met": None}
    deltas = np.array([r[name]["delta"] for r in scored])
    flips = [r for r in scored if r[name]["flip"]]
    out.update(
        mean_prob_identity=float(np.mean([r[IDENTITY]["prob_fake"] for r in scored])),
        mean_prob_perturbed=float(np.mean([r[name]["prob_fake"] for r in scored])),
        mean_delta=float(deltas.mean()), mean_abs_delta=float(np.abs(deltas).mean()),
        flips=len(flips), flips_to_fake=sum(r[name]["verdict"] == records.FAKE for r in flips),
        flip_share=len(flips) / len(scored),
        fake_share_identity=sum(r[IDENTITY]["verdict"] == records.FAKE for r in scored) / len(scored),
        fake_share_perturbed=sum(r[name]["verdict"] == records.FAKE for r in scored) / len(scored),
        median_psnr_db=float(statistics.median(r[name]["psnr_db"] for r in scored)),
    )
    out["mean_delta_met"] = abs(out["mean_delta"]) < TARGET_MEAN_DELTA
    out["flips_met"] = out["flip_share"] <= TARGET_FLIP_SHARE
    return out


def _met(value: bool | None) -> str:
    return "n/a" if value is None else ("met" if value else "**not met**")


def markdown_table(summaries: list[tuple[str, dict[str, Any]]]) -> str:
    """The model card's table: one row per (perturbation, group)."""
    lines = [f"| perturbation | items | scored | mean P(fake) identity → perturbed | mean Δ | mean abs Δ | flips "
             f"(to fake) | called fake identity → perturbed | PSNR dB | mean Δ < {TARGET_MEAN_DELTA:g} | "
             f"flips ≤ {TARGET_FLIP_SHARE:.0%} |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for group, s in summaries:
        label = f"{s['perturbation']} ({group})"
        if not s["n_scored"]:
            lines.append(f"| {label} | {s['n_items']} | 0 | - | - | - | - | - | - | n/a | n/a |")
            continue
        lines.append(
            f"| {label} | {s['n_items']} | {s['n_scored']} | {s['mean_prob_identity']:.3f} → {s['mean_prob_perturbed']:.3f} "
            f"| {s['mean_delta']:+.3f} | {s['mean_abs_delta']:.3f} | {s['flips']} ({s['flips_to_fake']}) = "
            f"{s['flip_share']:.1%} | {s['fake_share_identity']:.1%} → {s['fake_share_perturbed']:.1%} | "
            f"{s['median_psnr_db']:.1f} | {_met(s['mean_delta_met'])} | {_met(s['flips_met'])} |")
    return "\n".join(lines)


def _groups(rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Videos and photos apart (those that have items), and all together."""
    groups = [(label, [r for r in rows if r["kind"] == kind])
              for label, kind in (("videos", records.KIND_VIDEO), ("photos", records.KIND_IMAGE))]
    return [(label, g) for label, g in groups if g] + [("all", rows)]


def failures(rows: list[dict[str, Any]], names: list[str]) -> list[str]:
    """One line per item and step that could not be scored, with its verdict and reason."""
    lines = []
    for r in rows:
        if r["failed"]:
            lines.append(f"{r['video_id']} ({r['kind']}): {r['failed']}")
            continue
        for name in names:
            e = r.get(name, {})
            if "delta" not in e:
                lines.append(f"{r['video_id']} ({r['kind']}): {name}: {e.get('verdict')}: {e.get('reason', '')}")
    return lines


def _identity_gap(rows: list[dict[str, Any]]) -> str:
    gaps = [abs(r[IDENTITY]["prob_fake"] - r["original"]["prob_fake"]) for r in rows
            if r.get(IDENTITY, {}).get("prob_fake") is not None]
    if not gaps:
        return "identity clip vs original file: nothing scored"
    return (f"identity clip vs original file: |P(fake) difference| mean {np.mean(gaps):.4f}, max {max(gaps):.4f} "
            f"over {len(gaps)} item(s) (0 unless a side was odd and padded, or the original is damaged)")


def _codec_check(rows: list[dict[str, Any]], names: list[str]) -> str:
    diffs = [r[n]["roundtrip_max_diff"] for r in rows for n in [IDENTITY, *names] if n in r]
    unknown = sum(d is None for d in diffs)
    known = [d for d in diffs if d is not None]
    worst = max(known) if known else None
    verdict = "lossless" if worst == 0 and not unknown else "NOT LOSSLESS: the comparison is not clean"
    return (f"codec check ({CLIP_FOURCC}{CLIP_SUFFIX} / PNG): max |decoded - written| = {worst} over {len(known)} clip(s)"
            + (f", {unknown} not compared (decoded frames differ in number or size)" if unknown else "") + f": {verdict}")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "release" / "detector.pt", help="calibrated detector checkpoint")
    parser.add_argument("--manifest", type=Path, default=REPO / "release" / "data" / "manifest.csv")
    parser.add_argument("--root", type=Path, default=None,
                        help="folder the manifest's relative paths are relative to (default: the manifest folder's parent, "
                             "the DVC project its ingest stage ran in)")
    parser.add_argument("--splits", nargs="+", default=["val", "test"], choices=records.SPLITS)
    parser.add_argument("--max-photos", type=int, default=200, metavar="N", help="at most this many photos (seeded sample)")
    parser.add_argument("--files", type=Path, nargs="+", default=None, help="judge these files instead of a manifest")
    parser.add_argument("--smoke", action="store_true", help=f"--files {' '.join(str(p) for p in SMOKE_FILES)}")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="at most this many items: alternately the next video and the next photo")
    parser.add_argument("--perturbations", nargs="+", default=list(PERTURBATIONS), choices=list(PERTURBATIONS))
    parser.add_argument("--seed", type=int, default=0, help="photo sample and noise")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", type=Path, default=None, help="also write the summary and per-item rows as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Judge each item and its perturbed copies; print the markdown table and the failures."""
    import torch  # here, not at the top: the perturbations and their tests need no PyTorch

    args = _parse_args(argv)
    torch.set_num_threads(args.threads)
    left_out = 0
    if args.smoke or args.files:
        items = items_from_files(args.files or SMOKE_FILES)
        where = "--files" if args.files else "--smoke"
    elif args.manifest.is_file():
        root = args.root or args.manifest.resolve().parent.parent
        items, left_out = items_from_manifest(args.manifest, root, args.splits, args.max_photos, args.seed)
        where = f"{args.manifest}, real items of {'/'.join(args.splits)}"
    else:
        raise SystemExit(f"no manifest at {args.manifest} (release: `cd release && dvc repro ingest`); "
                         "or pass --files or --smoke")
    items = take(items, args.limit) if args.limit else items
    if not items:
        raise SystemExit(f"nothing to judge in {where}")
    perturbations = [PERTURBATIONS[n] for n in args.perturbations]
    names = [p.name for p in perturbations]

    judge = Judge(args.model, "given with --model", frames=None, keep_frames=True, table=sys.stdout)
    try:
        detector = judge.load()
    except UsageError as exc:
        raise SystemExit(f"error: {exc}") from None
    n_videos = sum(i.kind == records.KIND_VIDEO for i in items)
    print(f"items: {where}: {n_videos} video(s), {len(items) - n_videos} photo(s)"
          + (f" ({left_out} more photos not sampled, --max-photos {args.max_photos})" if left_out else "")
          + f"; torch threads {torch.get_num_threads()}; 1-min load average {os.getloadavg()[0]:.1f}")
    for p in perturbations:
        print(f"  {p.name}: {p.description}")

    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_invariance_") as tmp:
        for item in tqdm(items, desc="items", unit="item"):
            rows.append(run_item(item, judge, perturbations, Path(tmp), args.seed))
    elapsed = time.perf_counter() - t0

    summaries = [(group, summarize(g, n)) for n in names for group, g in _groups(rows)]
    print(f"\n{len(rows)} item(s) in {elapsed:.0f} s; {_codec_check(rows, names)}")
    print(_identity_gap(rows) + "\n")
    print(f"Invariance on real items ({detector.calibration.frames_per_video} frames per video, threshold "
          f"{detector.calibration.threshold:.3f}, {detector.calibration.aggregation}; change = perturbed minus identity "
          "clip; flips: called fake in one and not in the other):\n")
    print(markdown_table(summaries))
    failed = failures(rows, names)
    print(f"\n{sum(r['failed'] is not None for r in rows)} item(s) not scored at all; {len(failed)} line(s) of "
          "item and step not scored" + (" (item: step: verdict: reason):" if failed else ""))
    for line in failed[:20]:
        print(f"  {line}")
    if len(failed) > 20:
        print(f"  ... and {len(failed) - 20} more" + (f" (in {args.out})" if args.out else " (--out has them all)"))

    if args.out is not None:
        payload = {
            "model": str(args.model), "weights_sha256": detector.meta.weights_sha256,
            "calibration": detector.calibration.to_dict(), "items_from": where, "photos_left_out": left_out,
            "seed": args.seed, "clip_codec": f"{CLIP_FOURCC} in {CLIP_SUFFIX} (videos), PNG (photos)",
            "perturbations": {p.name: p.description for p in perturbations},
            "targets": {"abs_mean_delta_below": TARGET_MEAN_DELTA, "flip_share_at_most": TARGET_FLIP_SHARE},
            "summary": [{"group": g, **s} for g, s in summaries], "items": rows,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
        print(f"wrote {args.out}")


def _json_default(value: object) -> object:
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


if __name__ == "__main__":
    main()
