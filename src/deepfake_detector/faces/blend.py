"""Synthetic fakes: Self-Blended Images and landmark-aligned face swaps.

Self-Blended Images (SBI; Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended
Images", CVPR 2022) make a pseudo-fake from one real face: a slightly altered copy of the
image (the *source*) is pasted back over the original (the *target*) through a soft face
mask. The only evidence of manipulation is then the generic blending artefact (a colour /
sharpness seam along a face-shaped boundary), which is what a detector should learn.

Both generators here are written so that one call can be reused for every frame of a
video: the random choices are drawn once (:func:`draw_self_blend`, :func:`draw_swap`) into a
small frozen record, and applied per frame (:func:`apply_self_blend`, :func:`apply_swap`)
with that frame's landmarks. All sizes (shifts, blur kernels, erosion) are fractions of the
face size, so a drawn record means the same thing at any resolution and follows the face as
it moves. :func:`self_blend` and :func:`swap_face` are the one-image conveniences (draw +
apply) that online training uses.

Guarantee kept by both: pixels where the returned mask is 0 are exactly the input pixels,
so the fake differs from its real frame only in the (deformed, dilated, blurred) face
region, and that region is returned for measurement.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

logger = logging.getLogger(__name__)

# MTCNN's five points, in its order: left eye, right eye (image left/right), nose,
# left mouth corner, right mouth corner.
N_POINTS_MTCNN = 5

# Rough face outline for five points, in a face frame whose origin is the midpoint of the
# eyes, x along the eye line in units of the eye distance and y towards the mouth in units
# of the eye-to-mouth distance. Chosen to stay inside an MTCNN box on frontal faces (brows
# and upper forehead at the top, chin at the bottom); only a rough hull -- five points say
# nothing about the jaw line, hair line or a turned head's silhouette.
_OUTLINE_5PT = np.array(
    [
        [-0.80, -0.50], [0.00, -0.65], [0.80, -0.50],  # brows / low forehead
        [-0.95, 0.10], [0.95, 0.10],  # temples / outer cheeks at eye level
        [-0.90, 0.75], [0.90, 0.75],  # cheeks at mouth level
        [-0.60, 1.30], [0.60, 1.30],  # jaw
        [0.00, 1.55],  # chin
    ],
    dtype=np.float64,
)
# The five points themselves are also pushed outwards about their centroid, so a turned
# head (nose off-centre) still gets a hull that covers its landmarks with some margin.
_POINT_EXPAND = 1.3

# Extra margin around the face region processed for a mask, in face sizes, on top of the
# worst-case elastic shift, dilation and blur support.
_REGION_MARGIN = 0.05


def _check_range(name: str, rng_: tuple[float, float], lo: float, hi: float) -> None:
    a, b = rng_
    if not lo <= a <= b <= hi:
        raise ValueError(f"blend.{name} must satisfy {lo} <= low <= high <= {hi}, got {rng_}")


@dataclass(frozen=True)
class BlendParams:
    """Strengths of the random alterations behind a synthetic fake (params ``train.sbi.blend``).

    params.yaml follows the SBI paper's augmentations where it gives them, with sizes made
    relative to the face size (square root of the face hull's area) so they hold at any
    resolution.

    Attributes:
        rgb_shift: Largest per-channel additive colour shift of the source, in 0-255 units
            (SBI: RGBShift(20)).
        hue_shift: Largest hue rotation of the source, in degrees (kept small: a few
            degrees already turn skin green or purple).
        saturation: Largest relative saturation change: saturation is scaled by 1 +/- this.
        brightness: Largest additive brightness change, as a fraction of 255.
        contrast: Largest relative contrast change about mid-grey: scaled by 1 +/- this.
        sharpen_prob: Probability that the frequency jitter sharpens the source; otherwise
            the source is downscaled and upscaled back (blurred).
        downscale: Range of the downscale factor (SBI: Downscale(0.25, 0.5)).
        sharpen_amount: Range of the unsharp-mask amount (0 = unchanged).
        translate: Largest shift of the source and mask, per axis, in face sizes (SBI: 3%).
        scale: Range of the source/mask scale about the face centre (SBI: 0.95-1.05).
        elastic_strength: Standard deviation of the mask's elastic displacement, in face
            sizes (clipped at 2 standard deviations).
        elastic_grid: Control points per side of the smooth elastic displacement field.
        erode_dilate: Range of the mask's erosion (negative) / dilation (positive) radius,
            in face sizes.
        blur: Range of the mask's Gaussian blur kernel size, in face sizes.
        blend_ratios: The mask is scaled by one of these, drawn uniformly (repeat a value to
            weight it; SBI uses 0.25, 0.5, 0.75, 1, 1, 1).
    """

    rgb_shift: float
    hue_shift: float
    saturation: float
    brightness: float
    contrast: float
    sharpen_prob: float
    downscale: tuple[float, float]
    sharpen_amount: tuple[float, float]
    translate: float
    scale: tuple[float, float]
    elastic_strength: float
    elastic_grid: int
    erode_dilate: tuple[float, float]
    blur: tuple[float, float]
    blend_ratios: tuple[float, ...]

    def __post_init__(self) -> None:
        if not 0 <= self.rgb_shift <= 255:
            raise ValueError(f"blend.rgb_shift must be in [0, 255], got {self.rgb_shift}")
        if not 0 <= self.hue_shift <= 180:
            raise ValueError(f"blend.hue_shift must be in [0, 180] degrees, got {self.hue_shift}")
        for name in ("saturation", "brightness", "contrast", "sharpen_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"blend.{name} must be in [0, 1], got {getattr(self, name)}")
        _check_range("downscale", self.downscale, 0.05, 1.0)
        _check_range("sharpen_amount", self.sharpen_amount, 0.0, 5.0)
        if not 0 <= self.translate <= 0.5:
            raise ValueError(f"blend.translate must be in [0, 0.5], got {self.translate}")
        _check_range("scale", self.scale, 0.5, 2.0)
        if not 0 <= self.elastic_strength <= 0.2:
            raise ValueError(f"blend.elastic_strength must be in [0, 0.2], got {self.elastic_strength}")
        if not 2 <= self.elastic_grid <= 32:
            raise ValueError(f"blend.elastic_grid must be in [2, 32], got {self.elastic_grid}")
        _check_range("erode_dilate", self.erode_dilate, -0.3, 0.3)
        _check_range("blur", self.blur, 0.0, 1.0)
        if not self.blend_ratios or not all(0 < r <= 1 for r in self.blend_ratios):
            raise ValueError(f"blend.blend_ratios must be a non-empty list of values in (0, 1], got {self.blend_ratios}")


@dataclass(frozen=True)
class MaskDraw:
    """The random mask alterations of one fake (an image, or every frame of one video).

    Attributes:
        elastic: ``(G, G, 2)`` displacement control points (x, y), in face sizes.
        erode_dilate: Erosion (negative) or dilation (positive) radius, in face sizes.
        blur: Gaussian blur kernel size, in face sizes.
        ratio: Peak blend weight; the soft mask is scaled by it.
    """

    elastic: np.ndarray
    erode_dilate: float
    blur: float
    ratio: float


@dataclass(frozen=True)
class SelfBlendDraw:
    """The random choices of one self-blended fake (an image, or every frame of one video).

    Attributes:
        rgb_shift: ``(3,)`` additive shift per RGB channel, 0-255 units.
        hue_shift: Hue rotation, degrees.
        saturation: Saturation factor.
        brightness: Additive brightness, fraction of 255.
        contrast: Contrast factor about mid-grey.
        sharpen: True to sharpen the source, False to downscale-upscale it.
        freq_amount: Unsharp amount if ``sharpen``, else the downscale factor.
        translate: ``(2,)`` shift of source and mask, in face sizes.
        scale: Scale of source and mask about the face centre.
        mask: The mask alterations.
    """

    rgb_shift: np.ndarray
    hue_shift: float
    saturation: float
    brightness: float
    contrast: float
    sharpen: bool
    freq_amount: float
    translate: np.ndarray
    scale: float
    mask: MaskDraw


# ----------------------------------------------------------------------------- masks


def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] < 3:
        raise ValueError(
            f"landmarks must have shape (5, 2) (MTCNN), (68, 2) or (K, 2) outline points with K >= 3, got {pts.shape}"
        )
    if not np.isfinite(pts).all():
        raise ValueError("landmarks contain NaN or infinite values")
    return pts


def face_polygon(landmarks: np.ndarray) -> np.ndarray:
    """Convex face outline from landmarks, in the landmarks' pixel coordinates.

    With 68 points (dlib/iBUG order) this is their convex hull (jaw line up to the brows);
    any other count of at least 3 points (e.g. 68 points plus a face-mesh oval that reaches
    the forehead, like SBI's 81-point variant) is likewise their convex hull.

    With MTCNN's 5 points (eyes, nose, mouth corners) it is only a **rough** hull: a fixed
    face-shaped outline placed in the frame spanned by the eye line and the eye-to-mouth
    direction (so it follows in-plane rotation and scale), extended up to the brows / low
    forehead and down to the chin, joined with the 5 points expanded about their centroid.
    Jaw line, hair line and the silhouette of a turned head are guesses.

    Args:
        landmarks: ``(5, 2)`` MTCNN points, ``(68, 2)`` points or ``(K, 2)`` outline points
            (K >= 3, K != 5), as (x, y) pixels.

    Returns:
        ``(K, 2)`` float64 polygon vertices (convex, in order).

    Raises:
        ValueError: On a wrong shape, non-finite values, degenerate five points (eyes on
            top of each other, mouth not below the eyes) or an outline without area.
    """
    pts = _check_landmarks(landmarks)
    if pts.shape[0] == N_POINTS_MTCNN:
        left_eye, right_eye, _nose, mouth_l, mouth_r = pts
        eyes = (left_eye + right_eye) / 2
        mouth = (mouth_l + mouth_r) / 2
        eye_vec = right_eye - left_eye
        eye_dist = float(np.hypot(*eye_vec))
        if eye_dist < 1e-6:
            raise ValueError("degenerate landmarks: both eyes at the same point")
        x_axis = eye_vec / eye_dist
        y_axis = np.array([-x_axis[1], x_axis[0]])  # eye line turned 90 degrees
        mouth_dist = float(np.dot(mouth - eyes, y_axis))
        if mouth_dist < 0:  # image y points down; flip if the mouth lies on the other side
            y_axis, mouth_dist = -y_axis, -mouth_dist
        if mouth_dist < 1e-6:
            raise ValueError("degenerate landmarks: mouth on the eye line")
        outline = (
            eyes
            + _OUTLINE_5PT[:, :1] * eye_dist * x_axis
            + _OUTLINE_5PT[:, 1:] * mouth_dist * y_axis
        )
        centroid = pts.mean(axis=0)
        expanded = centroid + _POINT_EXPAND * (pts - centroid)
        pts = np.concatenate([outline, expanded])
    hull = cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2)
    if len(hull) < 3 or cv2.contourArea(hull) < 1e-6:
        raise ValueError("degenerate landmarks: their outline encloses no area")
    return hull.astype(np.float64)


def _rasterize(shape_hw: tuple[int, int], polygon: np.ndarray, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Fill a convex polygon into a float32 {0, 1} mask; ``offset`` (x0, y0) is subtracted."""
    mask = np.zeros(shape_hw, dtype=np.float32)
    shift = 4  # sub-pixel vertex precision (1/16 px) without anti-aliasing
    pts = np.rint((polygon - np.asarray(offset, dtype=np.float64)) * (1 << shift)).astype(np.int32)
    cv2.fillConvexPoly(mask, pts, 1.0, lineType=cv2.LINE_8, shift=shift)
    return mask


def face_mask(shape_hw: tuple[int, int], landmarks: np.ndarray) -> np.ndarray:
    """Binary face mask from landmarks (see :func:`face_polygon` for the hull used).

    Args:
        shape_hw: ``(H, W)`` of the image.
        landmarks: ``(5, 2)`` MTCNN points (rough hull) or ``(68, 2)`` points (convex hull).

    Returns:
        ``(H, W)`` float32 mask, 1 inside the face hull and 0 outside.

    Raises:
        ValueError: On invalid landmarks (see :func:`face_polygon`).
    """
    return _rasterize((int(shape_hw[0]), int(shape_hw[1])), face_polygon(landmarks))


def _face_size(polygon: np.ndarray) -> float:
    """Square root of the hull's area: the unit of every size in :class:`BlendParams`."""
    return float(np.sqrt(max(cv2.contourArea(polygon.astype(np.float32)), 1.0)))


def _odd(n: float) -> int:
    k = int(round(n))
    return k + 1 if k % 2 == 0 else k


def _region(polygon: np.ndarray, margin: float, shape_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1) of ``polygon`` grown by ``margin`` px, clipped to the image."""
    h, w = shape_hw
    x0 = max(int(np.floor(polygon[:, 0].min() - margin)), 0)
    y0 = max(int(np.floor(polygon[:, 1].min() - margin)), 0)
    x1 = min(int(np.ceil(polygon[:, 0].max() + margin)) + 1, w)
    y1 = min(int(np.ceil(polygon[:, 1].max() + margin)) + 1, h)
    if x1 <= x0 or y1 <= y0:
        raise ValueError("face region lies outside the image")
    return x0, y0, x1, y1


def _draw_mask(rng: np.random.Generator, params: BlendParams, ratio: float | None) -> MaskDraw:
    g = params.elastic_grid
    elastic = np.clip(rng.normal(0.0, 1.0, size=(g, g, 2)), -2.0, 2.0) * params.elastic_strength
    erode_dilate = float(rng.uniform(*params.erode_dilate))
    blur = float(rng.uniform(*params.blur))
    drawn_ratio = float(params.blend_ratios[int(rng.integers(len(params.blend_ratios)))])
    return MaskDraw(
        elastic=elastic,
        erode_dilate=erode_dilate,
        blur=blur,
        ratio=drawn_ratio if ratio is None else ratio,
    )


def _soft_mask(
    shape_hw: tuple[int, int], polygon: np.ndarray, draw: MaskDraw, face_size: float
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Deform, erode/dilate, blur and scale the hull mask, inside a padded face region.

    Returns:
        The soft mask of the region and the region (x0, y0, x1, y1); the mask is 0 outside.
    """
    elastic_max = float(np.abs(draw.elastic).max(initial=0.0)) * 1.2  # cubic upsampling overshoot
    margin = face_size * (elastic_max + max(draw.erode_dilate, 0.0) + draw.blur / 2 + _REGION_MARGIN) + 2
    x0, y0, x1, y1 = _region(polygon, margin, shape_hw)
    rh, rw = y1 - y0, x1 - x0
    mask = _rasterize((rh, rw), polygon, (x0, y0))

    if elastic_max > 0:
        # Smooth displacement field from a coarse grid laid over the face's padded box
        # (before clipping to the image), so the same drawn grid bends the same part of the
        # face in every frame of a video, wherever the face is.
        ux0 = int(np.floor(polygon[:, 0].min() - margin))
        uy0 = int(np.floor(polygon[:, 1].min() - margin))
        uw = int(np.ceil(polygon[:, 0].max() + margin)) + 1 - ux0
        uh = int(np.ceil(polygon[:, 1].max() + margin)) + 1 - uy0
        field = cv2.resize(draw.elastic.astype(np.float32), (uw, uh), interpolation=cv2.INTER_CUBIC)
        field = field[y0 - uy0 : y0 - uy0 + rh, x0 - ux0 : x0 - ux0 + rw]
        dx, dy = field[..., 0], field[..., 1]
        xs, ys = np.meshgrid(np.arange(rw, dtype=np.float32), np.arange(rh, dtype=np.float32))
        mask = cv2.remap(
            mask, xs + dx * face_size, ys + dy * face_size, interpolation=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )
        mask = (mask > 0.5).astype(np.float32)

    radius = int(round(abs(draw.erode_dilate) * face_size))
    if radius >= 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = cv2.dilate(mask, kernel) if draw.erode_dilate > 0 else cv2.erode(mask, kernel)

    ksize = _odd(draw.blur * face_size)
    if ksize >= 3:
        mask = cv2.GaussianBlur(mask, (ksize, ksize), 0)
    if not mask.max(initial=0.0) > 0:
        raise ValueError(f"blend mask vanished (face size {face_size:.1f} px is too small to blend)")
    mask = np.clip(mask, 0.0, 1.0) * np.float32(draw.ratio)
    return mask.astype(np.float32), (x0, y0, x1, y1)


def _blend_region(
    target: np.ndarray, source: np.ndarray, mask: np.ndarray, region: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Blend inside ``region``; ``source`` and ``mask`` cover the region only.

    Returns:
        The fake (``mask*source + (1-mask)*target``, target pixels untouched where the mask
        is 0) and the mask placed in a full-size zero image.
    """
    x0, y0, x1, y1 = region
    fake = target.copy()
    tgt = target[y0:y1, x0:x1]
    m = mask[..., None]
    mixed = np.clip(np.rint(m * source.astype(np.float32) + (1.0 - m) * tgt.astype(np.float32)), 0, 255)
    fake[y0:y1, x0:x1] = np.where(m > 0, mixed.astype(np.uint8), tgt)
    full = np.zeros(target.shape[:2], dtype=np.float32)
    full[y0:y1, x0:x1] = mask
    return fake, full


def _check_image(image: np.ndarray, name: str) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", None)
        raise ValueError(f"{name} must be an RGB uint8 array (H, W, 3), got shape {shape} dtype {dtype}")


# ----------------------------------------------------------------------------- self-blend


def is_greyscale(image: np.ndarray, tol: float = 2.0) -> bool:
    """True when the RGB channels are equal up to ``tol`` (mean absolute difference, 0-255).

    Args:
        image: RGB uint8 ``(H, W, 3)``.
        tol: Largest mean absolute difference between channels still called grey.

    Returns:
        Whether the image is (near-)greyscale.
    """
    img = image.astype(np.int16)
    return bool(
        np.abs(img[..., 0] - img[..., 1]).mean() <= tol and np.abs(img[..., 1] - img[..., 2]).mean() <= tol
    )


def draw_self_blend(rng: np.random.Generator, params: BlendParams) -> SelfBlendDraw:
    """Draw the random choices of one self-blended fake.

    Draw once per video and apply to each frame for a temporally consistent artefact.

    Args:
        rng: Source of randomness (consumed).
        params: Strengths.

    Returns:
        The drawn record, for :func:`apply_self_blend`.
    """
    rgb_shift = rng.uniform(-params.rgb_shift, params.rgb_shift, size=3)
    hue_shift = float(rng.uniform(-params.hue_shift, params.hue_shift))
    saturation = float(1 + rng.uniform(-params.saturation, params.saturation))
    brightness = float(rng.uniform(-params.brightness, params.brightness))
    contrast = float(1 + rng.uniform(-params.contrast, params.contrast))
    sharpen = bool(rng.random() < params.sharpen_prob)
    freq_amount = float(rng.uniform(*(params.sharpen_amount if sharpen else params.downscale)))
    translate = rng.uniform(-params.translate, params.translate, size=2)
    scale = float(rng.uniform(*params.scale))
    mask = _draw_mask(rng, params, ratio=None)
    return SelfBlendDraw(
        rgb_shift=rgb_shift, hue_shift=hue_shift, saturation=saturation, brightness=brightness,
        contrast=contrast, sharpen=sharpen, freq_amount=freq_amount, translate=translate,
        scale=scale, mask=mask,
    )


def _jitter_source(image: np.ndarray, draw: SelfBlendDraw, grey: bool) -> np.ndarray:
    """Colour and frequency jitter of the source, float32 0-255."""
    img = image.astype(np.float32)
    if not grey:
        # Colour jitter on a grey face would be a give-away, so grey faces skip it.
        img = np.clip(img + draw.rgb_shift.astype(np.float32), 0, 255)
        hsv = cv2.cvtColor(img / 255.0, cv2.COLOR_RGB2HSV)  # H in degrees, S and V in [0, 1]
        hsv[..., 0] = np.mod(hsv[..., 0] + draw.hue_shift, 360.0)
        hsv[..., 1] = np.clip(hsv[..., 1] * draw.saturation, 0, 1)
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
    img = np.clip((img - 128.0) * draw.contrast + 128.0 + draw.brightness * 255.0, 0, 255)
    if draw.sharpen:
        blurred = cv2.GaussianBlur(img, (0, 0), 1.0)
        img = img + draw.freq_amount * (img - blurred)
    else:
        h, w = img.shape[:2]
        small = (max(int(round(w * draw.freq_amount)), 1), max(int(round(h * draw.freq_amount)), 1))
        img = cv2.resize(cv2.resize(img, small, interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(img, 0, 255).astype(np.float32)


def apply_self_blend(image: np.ndarray, landmarks: np.ndarray, draw: SelfBlendDraw) -> tuple[np.ndarray, np.ndarray]:
    """Self-blend one image with drawn choices (see :func:`self_blend`).

    Args:
        image: RGB uint8 ``(H, W, 3)``.
        landmarks: ``(5, 2)`` or ``(68, 2)`` face landmarks in ``image`` pixels.
        draw: Choices from :func:`draw_self_blend`.

    Returns:
        ``(fake, mask)``: the RGB uint8 fake and the float32 ``(H, W)`` soft mask actually
        used (blend ratio included); ``fake == image`` exactly where ``mask == 0``.

    Raises:
        ValueError: On a malformed image, invalid landmarks, or a face too small to blend.
    """
    _check_image(image, "image")
    polygon = face_polygon(landmarks)
    size = _face_size(polygon)
    centre = polygon.mean(axis=0)
    # Source and mask move together (SBI's RandomAffine on both), so the pasted face is
    # slightly offset/rescaled against the face underneath.
    s = draw.scale
    affine = np.array(
        [
            [s, 0.0, (1 - s) * centre[0] + draw.translate[0] * size],
            [0.0, s, (1 - s) * centre[1] + draw.translate[1] * size],
        ]
    )
    h, w = image.shape[:2]
    moved = polygon @ affine[:, :2].T + affine[:, 2]
    mask, region = _soft_mask((h, w), moved, draw.mask, size * s)
    x0, y0, x1, y1 = region

    # Only the source pixels that land in the region are jittered: the region's corners
    # mapped back through the affine, padded for the blur/resampling support.
    inverse = cv2.invertAffineTransform(affine)
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], dtype=np.float64) @ inverse[:, :2].T + inverse[:, 2]
    pad = 8
    sx0, sy0 = np.maximum(np.floor(corners.min(axis=0)).astype(int) - pad, 0)
    sx1 = min(int(np.ceil(corners[:, 0].max())) + pad, w)
    sy1 = min(int(np.ceil(corners[:, 1].max())) + pad, h)
    crop = image[sy0:sy1, sx0:sx1]
    source = _jitter_source(crop, draw, grey=is_greyscale(crop))
    # The affine expressed from crop pixels to region pixels.
    local = affine.copy()
    local[:, 2] += affine[:, :2] @ np.array([sx0, sy0], dtype=np.float64) - np.array([x0, y0], dtype=np.float64)
    source = cv2.warpAffine(source, local, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return _blend_region(image, source, mask, region)


def self_blend(
    image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator, params: BlendParams
) -> tuple[np.ndarray, np.ndarray]:
    """Make a Self-Blended Image (SBI) pseudo-fake from one real face image.

    Source and target are the same image. The source gets colour jitter (RGB shift,
    hue/saturation, brightness/contrast; brightness/contrast only for greyscale images) and
    frequency jitter (downscale-upscale or sharpen), then source and mask a small shared
    affine jitter. The face-hull mask is elastically deformed, eroded or dilated, blurred and
    scaled by a random blend ratio; the output is ``mask*source + (1-mask)*target``.

    Deviation from the paper, on purpose: SBI jitters the source *or* the target at random.
    Jittering the target would change pixels outside the mask, so only the source is
    jittered here; colour shifts are drawn with both signs and a blurred target is the same
    seam as a sharpened source, so the relative artefacts are the same set.

    Args:
        image: RGB uint8 ``(H, W, 3)``.
        landmarks: ``(5, 2)`` MTCNN or ``(68, 2)`` landmarks, in ``image`` pixels.
        rng: Source of randomness; the same seed gives the same output.
        params: Strengths.

    Returns:
        ``(fake, mask)``: RGB uint8 fake and the float32 ``(H, W)`` soft mask in [0, 1]
        actually used; pixels where ``mask == 0`` equal the input exactly.

    Raises:
        ValueError: On a malformed image, invalid landmarks, or a face too small to blend.
    """
    return apply_self_blend(image, landmarks, draw_self_blend(rng, params))


# ----------------------------------------------------------------------------- face swap


def draw_swap(rng: np.random.Generator, params: BlendParams) -> MaskDraw:
    """Draw the mask alterations of one face swap (draw once per video).

    The blend ratio is fixed at 1: a swap replaces the face, a partial one would be a ghost.

    Args:
        rng: Source of randomness (consumed).
        params: Strengths (only the mask fields are used).

    Returns:
        The drawn mask record, for :func:`apply_swap`.
    """
    return _draw_mask(rng, params, ratio=1.0)


def _match_colour_lab(source: np.ndarray, target: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Match the source's LAB mean/std to the target's, both measured where ``weight`` > 0.5."""
    inside = (weight > 0.5).astype(np.uint8)
    if int(inside.sum()) < 16:
        return source.astype(np.float32)
    src_lab = cv2.cvtColor(source.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    tgt_lab = cv2.cvtColor(target.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    s_mean, s_std = (v.reshape(3) for v in cv2.meanStdDev(src_lab, mask=inside))
    t_mean, t_std = (v.reshape(3) for v in cv2.meanStdDev(tgt_lab, mask=inside))
    matched = (src_lab - s_mean) / (s_std + 1e-3) * t_std + t_mean
    matched[..., 0] = np.clip(matched[..., 0], 0, 100)
    rgb = cv2.cvtColor(matched.astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(rgb * 255.0, 0, 255).astype(np.float32)


def apply_swap(
    target: np.ndarray,
    target_landmarks: np.ndarray,
    source: np.ndarray,
    source_landmarks: np.ndarray,
    draw: MaskDraw,
) -> tuple[np.ndarray, np.ndarray]:
    """Swap the source face onto the target with drawn mask choices (see :func:`swap_face`).

    Args:
        target: RGB uint8 image whose face is replaced.
        target_landmarks: Target landmarks, ``(5, 2)`` or ``(68, 2)``.
        source: RGB uint8 image giving the new face.
        source_landmarks: Source landmarks, same number of points as the target's.
        draw: Mask choices from :func:`draw_swap`.

    Returns:
        ``(fake, mask)`` as in :func:`swap_face`.

    Raises:
        ValueError: On malformed inputs, mismatched landmark counts or when no similarity
            transform can be estimated.
    """
    _check_image(target, "target")
    _check_image(source, "source")
    tgt_pts = _check_landmarks(target_landmarks)
    src_pts = _check_landmarks(source_landmarks)
    if tgt_pts.shape != src_pts.shape:
        raise ValueError(f"landmark counts differ: target {tgt_pts.shape}, source {src_pts.shape}")
    # A large threshold keeps every point an inlier; the refinement then gives the
    # least-squares similarity, without RANSAC dropping one of only five points.
    matrix, _ = cv2.estimateAffinePartial2D(
        src_pts.astype(np.float32), tgt_pts.astype(np.float32),
        method=cv2.RANSAC, ransacReprojThreshold=1e4, refineIters=20,
    )
    if matrix is None or not np.isfinite(matrix).all():
        raise ValueError("could not estimate a similarity transform between the landmarks")
    h, w = target.shape[:2]
    polygon = face_polygon(tgt_pts)
    mask, region = _soft_mask((h, w), polygon, draw, _face_size(polygon))
    x0, y0, x1, y1 = region
    # Warp straight into the region: the similarity shifted by the region's origin.
    local = matrix.astype(np.float64)
    local[:, 2] -= (x0, y0)
    warped = cv2.warpAffine(source, local, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    # Where the warped source came from outside the source image it holds no real face.
    valid = cv2.warpAffine(
        np.ones(source.shape[:2], dtype=np.float32), local, (x1 - x0, y1 - y0),
        flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )
    mask = mask * valid
    matched = _match_colour_lab(warped, target[y0:y1, x0:x1], mask)
    return _blend_region(target, matched, mask, region)


def swap_face(
    target: np.ndarray,
    target_landmarks: np.ndarray,
    source: np.ndarray,
    source_landmarks: np.ndarray,
    rng: np.random.Generator,
    params: BlendParams,
) -> tuple[np.ndarray, np.ndarray]:
    """Paste the source's face onto the target, aligned by a landmark similarity transform.

    The source is warped onto the target by the similarity (rotation, uniform scale,
    translation) that best maps the source landmarks onto the target's
    (``cv2.estimateAffinePartial2D``), colour-matched to the target inside the mask (LAB
    mean/std), and blended through the target's face-hull mask, deformed, eroded/dilated and
    blurred as drawn from ``params`` (blend ratio 1).

    Args:
        target: RGB uint8 ``(H, W, 3)`` image whose face is replaced.
        target_landmarks: ``(5, 2)`` or ``(68, 2)`` target landmarks, target pixels.
        source: RGB uint8 image giving the new face (any size).
        source_landmarks: Source landmarks (same point count), source pixels.
        rng: Source of randomness; the same seed gives the same output.
        params: Strengths (mask fields).

    Returns:
        ``(fake, mask)``: RGB uint8 fake of the target's size and the float32 ``(H, W)``
        soft mask in [0, 1] actually used; pixels where ``mask == 0`` equal the target.

    Raises:
        ValueError: On malformed inputs or when the transform cannot be estimated.
    """
    return apply_swap(target, target_landmarks, source, source_landmarks, draw_swap(rng, params))
