"""The embedded sample: small real and fake clips built offline from packaged portraits.

The pipeline's default data, so that ``dvc repro`` runs end to end with no download. Two
portraits ship with installed packages (matplotlib's ``grace_hopper.jpg`` and
scikit-image's ``astronaut``). Each real clip is a smooth virtual camera move over one
portrait (pan, zoom, slight rotation, lighting drift, sensor noise, JPEG re-compression);
its MTCNN landmarks are detected once on the portrait and carried through the same
per-frame affine. Fakes are made from the real clips' frames before video encoding, so
real and fake videos go through exactly one identical encode:

* ``<identity>_<i>_sbi.mp4``: every frame self-blended (:mod:`deepfake_detector.faces.blend`)
  with one draw per video, so the artefact is temporally consistent;
* ``<target>_<i>_swap.mp4``: the other identity's clip ``i`` face, swapped onto this clip
  frame by frame.

Each index ``i`` thus gives a group of 2 real + 4 fake videos. ``labels.csv`` lists every
video (``LABEL_COLUMNS``); ``masks.csv`` gives, for every fake frame, the outer contour of
the region where the blend mask exceeds half its peak (``mask > 0.5 * blend ratio``: the
ratio scales the whole mask, so a 0.25 blend never exceeds 0.5 itself).

Videos are MPEG-4 Part 2 (fourcc ``mp4v``): OpenCV's pip wheels carry no H.264 software
encoder (``avc1`` only maps to hardware encoders, absent here and not reproducible), and
FFmpeg's own ``mpeg4`` encoder writes byte-identical files for identical frames.
Everything is drawn from ``np.random.default_rng([seed, identity, clip, stream])``, so a
clip does not change when ``clips_per_identity`` grows.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import matplotlib.cbook
import numpy as np
import pandas as pd
import skimage.data
from tqdm import tqdm

from .. import records
from ..faces import blend

logger = logging.getLogger(__name__)

IDENTITIES = ("grace_hopper", "astronaut")
LABEL_COLUMNS = records.SAMPLE_LABEL_COLUMNS
MASK_COLUMNS = records.SAMPLE_MASK_COLUMNS
LABELS_FILE = records.SAMPLE_LABELS_FILE
MASKS_FILE = records.SAMPLE_MASKS_FILE
FOURCC = "mp4v"

# Independent random streams per (identity, clip).
_STREAM_CAMERA, _STREAM_SBI, _STREAM_SWAP = 0, 1, 2
# Landmark order after a horizontal flip: the eyes and mouth corners change sides.
_FLIP_ORDER = [1, 0, 2, 4, 3]


@dataclass(frozen=True)
class SampleParams:
    """Size of the embedded sample (params ``sample``).

    Attributes:
        clips_per_identity: Real clips per portrait; each index gives 2 real + 4 fake videos.
        frames: Frames per clip.
        fps: Frame rate written into the videos.
        size: Side of the square output frames, px.
        seed: Seed of every random choice.
        blend: Strengths of the synthetic fakes.
    """

    clips_per_identity: int
    frames: int
    fps: int
    size: int
    seed: int
    blend: blend.BlendParams

    def __post_init__(self) -> None:
        if self.clips_per_identity < 2:
            raise ValueError(f"sample.clips_per_identity must be >= 2, got {self.clips_per_identity}")
        if self.frames < 1:
            raise ValueError(f"sample.frames must be >= 1, got {self.frames}")
        if not 1 <= self.fps <= 120:
            raise ValueError(f"sample.fps must be in [1, 120], got {self.fps}")
        if not 64 <= self.size <= 2048:
            raise ValueError(f"sample.size must be in [64, 2048] px, got {self.size}")
        if self.seed < 0:
            raise ValueError(f"sample.seed must be >= 0, got {self.seed}")


@dataclass(frozen=True)
class Portrait:
    """One packaged portrait and its detected face.

    Attributes:
        identity: Name used in file names and ``labels.csv``.
        image: RGB uint8 ``(H, W, 3)``.
        box: ``(4,)`` face box ``x1, y1, x2, y2``, px.
        landmarks: ``(5, 2)`` MTCNN landmarks, px.
    """

    identity: str
    image: np.ndarray
    box: np.ndarray
    landmarks: np.ndarray


@dataclass(frozen=True)
class Clip:
    """One rendered real clip, before encoding.

    Attributes:
        identity: The portrait's identity.
        index: Clip index within the identity.
        frames: ``(T, size, size, 3)`` RGB uint8 frames.
        landmarks: ``(T, 5, 2)`` landmarks per frame, frame pixels.
    """

    identity: str
    index: int
    frames: np.ndarray
    landmarks: np.ndarray

    @property
    def file(self) -> str:
        """File name of the real clip."""
        return clip_file(self.identity, self.index)


def clip_file(identity: str, index: int, manipulation: str = "original") -> str:
    """File name of a sample video.

    Args:
        identity: Identity shown (the target's, for swaps).
        index: Clip index.
        manipulation: ``original``, ``sbi`` or ``swap``.

    Returns:
        e.g. ``grace_hopper_03.mp4`` or ``astronaut_03_swap.mp4``.
    """
    suffix = "" if manipulation == "original" else f"_{manipulation}"
    return f"{identity}_{index:02d}{suffix}.mp4"


def _portrait_images() -> dict[str, np.ndarray]:
    """The packaged portraits, RGB uint8, keyed by identity."""
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        buf = np.frombuffer(fh.read(), dtype=np.uint8)
    grace = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return {"grace_hopper": grace, "astronaut": np.ascontiguousarray(skimage.data.astronaut())}


def load_portraits() -> list[Portrait]:
    """Load the packaged portraits and detect each one's face once with MTCNN.

    Returns:
        One :class:`Portrait` per identity, in ``IDENTITIES`` order. Boxes and landmarks
        are rounded to whole pixels, so last-bit float differences between CPUs cannot
        change the sample's bytes.

    Raises:
        RuntimeError: If MTCNN finds no face in a portrait.
    """
    # Imported here: torch is slow to import and only this function needs it.
    import torch
    from facenet_pytorch import MTCNN

    images = _portrait_images()
    detector = MTCNN(post_process=False, keep_all=True, device="cpu")
    portraits = []
    with torch.inference_mode():
        for identity in IDENTITIES:
            boxes, probs, points = detector.detect(images[identity], landmarks=True)
            if boxes is None or len(boxes) == 0:
                raise RuntimeError(f"MTCNN found no face in the packaged portrait {identity!r}")
            best = int(np.argmax(probs))
            box = np.round(np.asarray(boxes[best], dtype=np.float64))
            landmarks = np.round(np.asarray(points[best], dtype=np.float64))
            logger.info("portrait %s: face box %s (p=%.3f)", identity, box.astype(int).tolist(), probs[best])
            portraits.append(Portrait(identity, images[identity], box, landmarks))
    return portraits


def _smoothstep(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def render_clip(portrait: Portrait, identity_index: int, index: int, params: SampleParams) -> Clip:
    """Render one real clip: a smooth camera move over the portrait.

    Per clip, start and end values of zoom, pan and roll (and of brightness, contrast and
    gamma) are drawn and eased between over the clip; a small hand-held wobble, an optional
    mirror flip, per-frame sensor noise and a per-frame JPEG re-compression (quality 70-95)
    complete it. Landmarks follow the same per-frame affine.

    Args:
        portrait: The portrait and its face.
        identity_index: Position of the identity in ``IDENTITIES`` (seeds the stream).
        index: Clip index (seeds the stream).
        params: Sample size and seed.

    Returns:
        The rendered clip.
    """
    rng = np.random.default_rng([params.seed, identity_index, index, _STREAM_CAMERA])
    img_h, img_w = portrait.image.shape[:2]
    box_side = float(max(portrait.box[2] - portrait.box[0], portrait.box[3] - portrait.box[1]))
    face_centre = portrait.landmarks.mean(axis=0)

    zoom = rng.uniform(1.6, 2.6, size=2)  # window side, in face-box sides
    pan = rng.uniform(-0.15, 0.15, size=(2, 2))  # window centre offset, in face-box sides
    roll = rng.uniform(-6.0, 6.0, size=2)  # degrees
    wobble_amp = 0.01 * box_side
    wobble_freq = rng.uniform(0.3, 1.0, size=2)  # Hz
    wobble_phase = rng.uniform(0, 2 * np.pi, size=2)
    flip = bool(rng.random() < 0.5)
    brightness = rng.uniform(-20.0, 20.0, size=2)
    contrast = rng.uniform(0.85, 1.15, size=2)
    gamma = rng.uniform(0.8, 1.25, size=2)
    noise_sigma = float(rng.uniform(1.0, 3.0))

    n, size = params.frames, params.size
    ease = _smoothstep(np.linspace(0.0, 1.0, n)) if n > 1 else np.zeros(1)
    levels = np.arange(256, dtype=np.float64) / 255.0
    frames = np.empty((n, size, size, 3), dtype=np.uint8)
    landmarks = np.empty((n, 5, 2), dtype=np.float64)
    for t in range(n):
        w = ease[t]
        window = min((zoom[0] + w * (zoom[1] - zoom[0])) * box_side, 0.9 * min(img_h, img_w))
        secs = t / params.fps
        centre = (
            face_centre
            + (pan[0] + w * (pan[1] - pan[0])) * box_side
            + wobble_amp * np.sin(2 * np.pi * wobble_freq * secs + wobble_phase)
        )
        # Keep the window inside the portrait where it fits, so reflected borders stay rare.
        centre = np.clip(centre, window / 2, np.array([img_w, img_h]) - window / 2)
        angle = roll[0] + w * (roll[1] - roll[0])
        matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(angle), size / window)
        matrix[:, 2] += size / 2.0 - centre
        pts = portrait.landmarks @ matrix[:, :2].T + matrix[:, 2]
        if flip:
            matrix[0] = -matrix[0]
            matrix[0, 2] += size - 1
            pts[:, 0] = size - 1 - pts[:, 0]
            pts = pts[_FLIP_ORDER]
        frame = cv2.warpAffine(
            portrait.image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )

        g = gamma[0] + w * (gamma[1] - gamma[0])
        c = contrast[0] + w * (contrast[1] - contrast[0])
        b = brightness[0] + w * (brightness[1] - brightness[0])
        lut = np.clip(np.rint((levels**g * 255.0 - 128.0) * c + 128.0 + b), 0, 255).astype(np.uint8)
        frame = cv2.LUT(frame, lut).astype(np.float32)
        frame += rng.standard_normal(size=frame.shape, dtype=np.float32) * np.float32(noise_sigma)
        frame = np.clip(np.rint(frame), 0, 255).astype(np.uint8)

        quality = int(rng.integers(70, 96))
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {clip_file(portrait.identity, index)} frame {t}")
        frames[t] = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        landmarks[t] = pts
    return Clip(portrait.identity, index, frames, landmarks)


def write_video(path: Path, frames: np.ndarray, fps: int) -> None:
    """Write RGB frames to an ``mp4v`` MP4 and check it decodes to the same frame count.

    Args:
        path: Output file.
        frames: ``(T, H, W, 3)`` RGB uint8.
        fps: Frame rate.

    Raises:
        RuntimeError: If the writer cannot open or the file does not read back fully.
    """
    n, h, w = frames.shape[:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*FOURCC), float(fps), (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter could not open {path} with fourcc {FOURCC!r}")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    cap = cv2.VideoCapture(str(path))
    decoded = 0
    try:
        while cap.grab():
            decoded += 1
    finally:
        cap.release()
    if decoded != n:
        raise RuntimeError(f"{path}: wrote {n} frames but {decoded} decode back")


def mask_polygon(mask: np.ndarray, level: float) -> list[list[int]]:
    """Outer contour of the largest region where ``mask > level``.

    Args:
        mask: ``(H, W)`` float mask.
        level: Threshold.

    Returns:
        ``[[x, y], ...]`` frame-pixel vertices (simplified to within 1 px); empty if no
        pixel exceeds ``level``.
    """
    binary = (mask > level).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return []
    largest = max(contours, key=cv2.contourArea)
    approx = cv2.approxPolyDP(largest, 1.0, True).reshape(-1, 2)
    return approx.astype(int).tolist()


def _mask_rows(file: str, masks: list[np.ndarray], level: float) -> list[dict]:
    rows = []
    for t, mask in enumerate(masks):
        polygon = mask_polygon(mask, level)
        if not polygon:
            logger.warning("%s frame %d: blend mask never exceeds %.3f; empty polygon", file, t, level)
        rows.append({"file": file, "frame_index": t, "polygon": json.dumps(polygon, separators=(",", ":"))})
    return rows


def _clear_output(out_dir: Path) -> None:
    """Remove a previous sample from ``out_dir``; refuse to delete anything else."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise NotADirectoryError(f"--out {out_dir} exists and is not a directory")
    entries = sorted(out_dir.iterdir())
    ours = [p for p in entries if p.is_file() and (p.suffix == ".mp4" or p.name in (LABELS_FILE, MASKS_FILE))]
    foreign = [p.name for p in entries if p not in ours]
    if foreign:
        raise FileExistsError(
            f"{out_dir} holds files the sample did not write ({', '.join(foreign[:5])}); "
            "refusing to clear it -- point --out at an empty or sample-only folder"
        )
    for path in ours:
        path.unlink()


def make_sample(out_dir: Path, params: SampleParams) -> pd.DataFrame:
    """Build the embedded sample into ``out_dir`` (cleared first), deterministically.

    Args:
        out_dir: Output folder; previous sample files there are removed.
        params: Sample size, seed and the strengths of its synthetic fakes.

    Returns:
        The ``labels.csv`` table that was written.

    Raises:
        FileExistsError: If ``out_dir`` holds files other than a previous sample.
        RuntimeError: If a portrait has no face or a video fails to encode.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    blend_params = params.blend
    _clear_output(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    portraits = load_portraits()
    labels: list[dict] = []
    mask_rows: list[dict] = []
    for i in tqdm(range(params.clips_per_identity), desc="sample clips", unit="group"):
        clips = [render_clip(p, k, i, params) for k, p in enumerate(portraits)]
        for k, clip in enumerate(clips):
            write_video(out_dir / clip.file, clip.frames, params.fps)
            labels.append(
                {"file": clip.file, "label": "real", "manipulation": "original", "identity": clip.identity, "origin": ""}
            )

            # Self-blend: one draw per video, applied to every frame.
            draw = blend.draw_self_blend(np.random.default_rng([params.seed, k, i, _STREAM_SBI]), blend_params)
            fakes, masks = zip(*(blend.apply_self_blend(f, lm, draw) for f, lm in zip(clip.frames, clip.landmarks)))
            file = clip_file(clip.identity, i, "sbi")
            write_video(out_dir / file, np.stack(fakes), params.fps)
            mask_rows += _mask_rows(file, list(masks), 0.5 * draw.mask.ratio)
            labels.append(
                {"file": file, "label": "fake", "manipulation": "sbi", "identity": clip.identity, "origin": clip.file}
            )

            # Swap: the other identity's clip i face onto this clip, frame by frame.
            other = clips[1 - k]
            mask_draw = blend.draw_swap(np.random.default_rng([params.seed, k, i, _STREAM_SWAP]), blend_params)
            fakes, masks = zip(
                *(
                    blend.apply_swap(f, lm, sf, slm, mask_draw)
                    for f, lm, sf, slm in zip(clip.frames, clip.landmarks, other.frames, other.landmarks)
                )
            )
            file = clip_file(clip.identity, i, "swap")
            write_video(out_dir / file, np.stack(fakes), params.fps)
            mask_rows += _mask_rows(file, list(masks), 0.5 * mask_draw.ratio)
            labels.append(
                {
                    "file": file, "label": "fake", "manipulation": "swap", "identity": clip.identity,
                    "origin": ";".join(sorted([clip.file, other.file])),
                }
            )

    labels_df = pd.DataFrame(labels, columns=LABEL_COLUMNS).sort_values("file", ignore_index=True)
    masks_df = pd.DataFrame(mask_rows, columns=MASK_COLUMNS).sort_values(["file", "frame_index"], ignore_index=True)
    records.write_csv(labels_df, out_dir / LABELS_FILE, LABEL_COLUMNS)
    records.write_csv(masks_df, out_dir / MASKS_FILE, MASK_COLUMNS)

    n_bytes = sum(p.stat().st_size for p in sorted(out_dir.iterdir()))
    counts = labels_df["manipulation"].value_counts().to_dict()
    logger.info(
        "sample: %d videos (%d original, %d sbi, %d swap), %d frames each, %dx%d px, fourcc %s, "
        "%.1f MB, %.1f s -> %s",
        len(labels_df), counts.get("original", 0), counts.get("sbi", 0), counts.get("swap", 0),
        params.frames, params.size, params.size, FOURCC, n_bytes / 1e6, time.perf_counter() - started, out_dir,
    )
    return labels_df
