"""The one place where face crops become model input.

``build_eval_transform`` is imported by train (validation), evaluate,
predict_videos, gradcam and the CLI, so training and inference preprocessing
cannot drift apart. Crops arrive as RGB uint8 ``(H, W, 3)`` arrays (the crop
shards store them unnormalised); only these transforms normalise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import cv2
import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

# ImageNet statistics: the normalisation that ResNet18_Weights.IMAGENET1K_V1.transforms()
# uses. Random init keeps them too, so every checkpoint has one well-defined input scale.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class AugmentParams:
    """Training augmentation strengths (params ``train.augment``).

    Attributes:
        crop_scale: Area range of RandomResizedCrop, relative to the face crop.
        hflip: Probability of a horizontal flip.
        color_jitter: Brightness/contrast/saturation jitter strength (0 disables).
        hue: Hue jitter (0 disables).
        blur_prob: Probability of a Gaussian blur.
        blur_sigma: Its sigma range, px at the model's input size.
        downscale_prob: Probability of a downscale and back up (a low-resolution source).
        downscale: Range of the downscale factor (1 = no change).
        sharpen_prob: Probability of an unsharp mask (cameras and encoders that sharpen).
        sharpen: Range of its amount (0 = no change).
        noise_prob: Probability of Gaussian pixel noise.
        noise_sigma: Range of the noise's sigma, in 8-bit levels.
        jpeg_prob: Probability of JPEG re-compression (deepfakes are usually re-encoded).
        jpeg_quality: Quality range for the re-compression.
        bilateral_prob: Probability of an edge-preserving bilateral smoothing (camera and
            app denoisers, beauty filters): smooth skin with crisp edges.
        bilateral_d: Range of its neighbourhood diameter, px.
        bilateral_sigma_color: Range of its colour sigma, in 8-bit levels.
        degrade_scale: ``input``: blur sigmas, downscale factors, the unsharp radius and the
            bilateral diameter are in model-input pixels. ``source``: in the source frame's
            pixels (the crop's ``crop_side``), converted per crop, so a blur is as strong as
            the same blur on the original photo or video: a sigma-1.2 blur of a 150-px LFW face
            is 1.8 px at 224 px input, of a 400-px HD face 0.7 px.

    The global degradations (blur, downscale, sharpen, noise, JPEG) run after self-blending
    on real and fake crops alike, so the sharpness, noise and compression of a whole image
    cannot tell the classes apart: only the local difference a blend leaves can. The sample
    pipeline's params.yaml leaves them off (0); the release's turns them on.
    """

    crop_scale: tuple[float, float]
    hflip: float
    color_jitter: float
    hue: float
    blur_prob: float
    blur_sigma: tuple[float, float]
    downscale_prob: float
    downscale: tuple[float, float]
    sharpen_prob: float
    sharpen: tuple[float, float]
    noise_prob: float
    noise_sigma: tuple[float, float]
    jpeg_prob: float
    jpeg_quality: tuple[int, int]
    bilateral_prob: float
    bilateral_d: tuple[int, int]
    bilateral_sigma_color: tuple[float, float]
    degrade_scale: Literal["input", "source"]

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"augment.crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")
        if not 0 <= self.hue <= 0.5:  # a shift of up to half a turn each way, as torchvision's ColorJitter
            raise ValueError(f"augment.hue must be in [0, 0.5], got {self.hue}")
        for name in ("hflip", "blur_prob", "downscale_prob", "sharpen_prob", "noise_prob", "jpeg_prob", "bilateral_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"augment.{name} must be in [0, 1]")
        # (name, smallest lo, largest hi): a blur sigma or a scale factor of 0 is no image at all.
        for name, lo_ok, hi_ok in (("blur_sigma", 0.01, 10.0), ("downscale", 0.05, 1.0), ("sharpen", 0.0, 5.0),
                                   ("noise_sigma", 0.0, 64.0), ("bilateral_d", 3, 31),
                                   ("bilateral_sigma_color", 1.0, 255.0)):
            lo, hi = getattr(self, name)
            if not lo_ok <= lo <= hi <= hi_ok:
                raise ValueError(f"augment.{name} must satisfy {lo_ok} <= lo <= hi <= {hi_ok}, got {(lo, hi)}")
        q_lo, q_hi = self.jpeg_quality
        if not 1 <= q_lo <= q_hi <= 100:
            raise ValueError(f"augment.jpeg_quality must satisfy 1 <= lo <= hi <= 100, got {self.jpeg_quality}")


def _to_uint8_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(H, W, 3) uint8 array -> (3, H, W) uint8 tensor; (3, H, W) uint8 tensors pass through."""
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected an RGB uint8 (3, H, W) tensor, got {image.dtype} {tuple(image.shape)}")
        return image
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)


def build_eval_transform(
    input_size: int, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> Callable[[np.ndarray | torch.Tensor], torch.Tensor]:
    """Deterministic preprocessing shared by every stage that scores crops.

    Args:
        input_size: Side of the square model input, px.
        mean: Per-channel normalisation mean (from the initialisation's weights).
        std: Per-channel normalisation std.

    Returns:
        A callable mapping an RGB uint8 crop to a normalised float tensor ``(3, S, S)``.
    """
    # torchvision's ToDtype(scale=True) + Normalize map each (channel, uint8 value) to one
    # float32: computed once here, with the same torch ops in the same order (so the same
    # values to the bit), and applied as a table. cv2.LUT does it in one pass over a
    # pixel-major (H, W, 3) buffer, 2.6x faster than the ops per image (0.10 vs 0.27 ms at
    # 160 px): the training input path runs this for every crop of every epoch.
    table = torch.arange(256, dtype=torch.uint8)[:, None].expand(256, 3).to(torch.float32)
    table = table.mul_(1.0 / 255).sub_(torch.tensor(mean)).div_(torch.tensor(std))
    lut = np.ascontiguousarray(table.numpy()).reshape(256, 1, 3)

    def transform(image: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = _to_uint8_tensor(image)  # (3, H, W)
        if tuple(x.shape[-2:]) != (input_size, input_size):
            x = TF.resize(x, [input_size, input_size], antialias=True)
        hwc = cv2.LUT(np.ascontiguousarray(x.permute(1, 2, 0).numpy()), lut)  # (H, W, 3) float32
        # Returned as a (3, H, W) view with channels_last strides: a batch of such views
        # stacks into the layout the model runs in (data.collate_channels_last).
        return torch.from_numpy(hwc).permute(2, 0, 1)

    return transform


def _random_resized_window(h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float],
                           gen: torch.Generator | None = None) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop window ``(top, left, height, width)``, drawn from ``gen``."""
    area = h * w
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(4, generator=gen).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            return int(u[2] * (h - ch + 1)), int(u[3] * (w - cw + 1)), ch, cw
    side = min(h, w)  # fallback: the centred square (ratio 1 lies inside any range given here)
    return (h - side) // 2, (w - side) // 2, side, side


def _jitter_colour(rgb: np.ndarray, cj: float, hue: float, gen: torch.Generator | None = None) -> np.ndarray:
    """Brightness, contrast, saturation (factors in [1 - cj, 1 + cj]) and hue (shift in [-hue, hue]
    turns), in random order, as torchvision's ColorJitter does, computed once in float32.

    In place on one float32 buffer: the same operations in the same order as the
    expressions they replace (so the same values), without a new array per step.
    """
    x = rgb.astype(np.float32)
    x *= 1.0 / 255.0
    factors = (1.0 + cj * (2.0 * torch.rand(3, generator=gen) - 1.0)).tolist()
    shift = hue * (2.0 * torch.rand(1, generator=gen).item() - 1.0)
    for op in torch.randperm(4, generator=gen).tolist():
        if op == 0 and cj > 0:
            x *= factors[0]
            np.clip(x, 0.0, 1.0, out=x)
        elif op == 1 and cj > 0:
            mean = float((x @ _GREY_WEIGHTS).mean())
            x *= factors[1]
            x += (1.0 - factors[1]) * mean
            np.clip(x, 0.0, 1.0, out=x)
        elif op == 2 and cj > 0:
            grey = x @ _GREY_WEIGHTS  # (H, W)
            grey *= 1.0 - factors[2]
            x *= factors[2]
            x += grey[..., None]
            np.clip(x, 0.0, 1.0, out=x)
        elif op == 3 and hue > 0:
            hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)  # float32: H in degrees [0, 360)
            hsv[..., 0] = _wrap_degrees(hsv[..., 0] + 360.0 * shift)
            x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    x *= 255.0
    np.rint(x, out=x)
    np.clip(x, 0, 255, out=x)
    return x.astype(np.uint8)


def _wrap_degrees(a: np.ndarray) -> np.ndarray:
    """``np.mod(a, 360)`` for float32 angles in [-180, 540), the same values, at a seventh of its cost.

    Float fmod took 0.3 ms of a 1.5 ms colour jitter at 160 px. In that range one wrap is
    enough; ``a - 360`` is exact for ``a`` in [180, 720] (Sterbenz), and ``a + 360`` for
    negative ``a`` rounds just as ``np.mod`` does (it adds 360 to ``fmod(a, 360) = a``).
    """
    return np.where(a < 0, a + 360.0, np.where(a >= 360.0, a - 360.0, a))


# ITU-R 601 luma weights, the ones torchvision's rgb_to_grayscale uses.
_GREY_WEIGHTS = np.array([0.2989, 0.587, 0.114], dtype=np.float32)


def build_augment(input_size: int, params: AugmentParams) -> Callable[..., np.ndarray]:
    """The training augmentations, on RGB uint8 ``(H, W, 3)`` arrays, with OpenCV.

    The same operations as torchvision's RandomResizedCrop(ratio 0.9-1.1), RandomHorizontalFlip,
    ColorJitter, RandomApply(GaussianBlur(5)) and RandomApply(JPEG), but 4-5x cheaper: torchvision's hue jitter
    alone took 2.3 ms per 160-px crop, the whole chain 3.7 ms against 0.6-0.8 ms here
    (docs/performance.md, "Training input").

    Args:
        input_size: Side of the square output, px.
        params: Augmentation strengths.

    Every draw comes from the generator passed with the image (the training datasets derive
    one per item from (seed, epoch, index): :func:`data.item_generator`), or from torch's
    global RNG when none is. Per-item generators make training reproducible although batches
    are prepared in a background thread: draws from the global RNG would interleave with the
    model's own (dropout) in an order the thread scheduler decides.

    Returns:
        A callable ``(rgb, gen=None, source_side=None)`` mapping an RGB uint8 crop to an
        augmented ``(input_size, input_size, 3)`` one; ``source_side`` is the crop's side in
        source-frame px (faces.parquet ``crop_side``), used when ``degrade_scale`` is ``source``.
    """
    p = params

    def augment(rgb: np.ndarray, gen: torch.Generator | None = None, source_side: float | None = None) -> np.ndarray:
        h, w = rgb.shape[:2]
        top, left, ch, cw = _random_resized_window(h, w, p.crop_scale, (0.9, 1.1), gen)
        window = rgb[top : top + ch, left : left + cw]
        shrink = ch >= input_size and cw >= input_size
        x = cv2.resize(window, (input_size, input_size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        # Model-input px per source px: the window covers cw / w of the crop, whose side is
        # `source_side` frame px. 1 when the degradations are specified at the input's scale.
        scale = input_size / (source_side * cw / w) if p.degrade_scale == "source" and source_side else 1.0
        u = torch.rand(3, generator=gen).tolist()
        if u[0] < p.hflip:
            x = cv2.flip(x, 1)  # the same pixels as x[:, ::-1], copied 15x faster than numpy's strided copy
        # Photometric changes happen to the picture before it is cropped: the black padding of
        # a window that overhangs the frame stays black, and its edge stays crisp.
        frame = find_padding(x)
        x = fill_padding(x, frame)
        if p.color_jitter > 0 or p.hue > 0:
            x = _jitter_colour(x, p.color_jitter, p.hue, gen)
        if u[1] < p.blur_prob:
            x = _blur(x, _uniform(p.blur_sigma, gen) * scale)
        x = _degrade(x, p, gen, scale)
        if u[2] < p.jpeg_prob:  # last, as a re-encode is the last thing that happens to a shared video
            quality = int(torch.randint(p.jpeg_quality[0], p.jpeg_quality[1] + 1, (1,), generator=gen).item())
            ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(x[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise ValueError("JPEG re-compression failed")
            x = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
        return np.ascontiguousarray(zero_padding(x, frame))

    return augment


# (top, bottom, left, right): the rows and columns of a crop that show the frame.
Rect = tuple[int, int, int, int]


def picture_rect(rgb: np.ndarray) -> Rect | None:
    """The part of a face crop that shows the frame, or None when it all does.

    A crop window that overhangs the frame (:func:`media.imaging.cut_window`) is padded with
    black: whole rows and columns of zeros along the crop's edges (LFW's 150-px photos: about
    half of each crop). Degrading the crop as a whole would soften that padding's edge, which
    no real degradation does (it happens to the picture, before the crop), and a detector
    trained so calls a blurred small photo fake (issue 24: +0.13 P(fake), against +0.06 when
    the blur is simulated on the whole crop). Black rows or columns at the frame's own edge
    count as padding: they stay black either way.

    Args:
        rgb: ``(H, W, C)`` uint8 crop.

    Returns:
        ``(top, bottom, left, right)`` with ``rgb[top:bottom, left:right]`` the picture, or
        None when no edge row or column is all black (or the whole crop is).
    """
    if rgb[0].any() and rgb[-1].any() and rgb[:, 0].any() and rgb[:, -1].any():
        return None  # the common case (video faces), decided from the four edges alone
    rows, cols = rgb.any(axis=(1, 2)), rgb.any(axis=(0, 2))
    if not rows.any():
        return None
    top, bottom = int(rows.argmax()), len(rows) - int(rows[::-1].argmax())
    left, right = int(cols.argmax()), len(cols) - int(cols[::-1].argmax())
    return top, bottom, left, right


@dataclass(frozen=True)
class Padding:
    """Where a crop shows the frame, and how much of the frame its first lines show.

    Attributes:
        rect: The picture, ``(top, bottom, left, right)`` (:func:`picture_rect`).
        inner: ``rect`` without its first line on each padded side. Resizing the window
            mixed black into that line, so fills start inside it.
        share: Per side (top, bottom, left, right), the share of the picture in that first
            line (its brightness against the next line's; 1 where the side is not padded).
    """

    rect: Rect
    inner: Rect
    share: tuple[float, float, float, float]


def find_padding(rgb: np.ndarray) -> Padding | None:
    """The crop's :class:`Padding`, or None when it has none (:func:`picture_rect`)."""
    rect = picture_rect(rgb)
    if rect is None:
        return None
    top, bottom, left, right = rect
    h, w = rgb.shape[:2]
    tall, wide = bottom - top >= 3, right - left >= 3  # a picture under 3 px across keeps its lines
    padded = (top > 0 and tall, bottom < h and tall, left > 0 and wide, right < w and wide)

    def brightness(line: tuple[slice | int, slice | int]) -> np.ndarray:
        # Only the lines read are converted: a whole-crop float copy cost 1 ms per padded crop.
        return rgb[line].astype(np.float32).sum(axis=-1)

    def share(edge: tuple[slice | int, slice | int], after: tuple[slice | int, slice | int]) -> float:
        return float(np.clip(np.median(brightness(edge) / np.maximum(brightness(after), 1.0)), 0.0, 1.0))

    shares = tuple(share(edge, after) if pad else 1.0
                   for pad, edge, after in zip(padded, _edge_lines(rect, 0), _edge_lines(rect, 1)))
    inner = (top + padded[0], bottom - padded[1], left + padded[2], right - padded[3])
    return Padding(rect, inner, shares)  # type: ignore[arg-type]


def _edge_lines(rect: Rect, depth: int) -> tuple[tuple[slice | int, slice | int], ...]:
    """Index of the picture's line ``depth`` px in from each side: top, bottom, left, right."""
    top, bottom, left, right = rect
    return ((top + depth, slice(left, right)), (bottom - 1 - depth, slice(left, right)),
            (slice(top, bottom), left + depth), (slice(top, bottom), right - 1 - depth))


def fill_padding(rgb: np.ndarray, pad: Padding | None) -> np.ndarray:
    """The crop with its padding, and the picture's first lines along it, replaced by the
    picture's edge pixels (replicated), so that filters reaching over the edge see the
    picture, not black."""
    if pad is None:
        return rgb
    top, bottom, left, right = pad.inner
    h, w = rgb.shape[:2]
    return cv2.copyMakeBorder(np.ascontiguousarray(rgb[top:bottom, left:right]), top, h - bottom, left, w - right,
                              cv2.BORDER_REPLICATE)


def zero_padding(rgb: np.ndarray, pad: Padding | None) -> np.ndarray:
    """The crop with its padding black again and the picture's first lines given back their
    share of black, as resizing the window of a degraded frame would have made them: a real
    blur leaves the padding's edge as crisp as it was."""
    if pad is None:
        return rgb
    top, bottom, left, right = pad.rect
    out = np.zeros_like(rgb)
    out[top:bottom, left:right] = rgb[top:bottom, left:right]
    for line, share in zip(_edge_lines(pad.rect, 0), pad.share):
        if share < 1.0:
            out[line] = np.rint(out[line].astype(np.float32) * share).astype(rgb.dtype)
    return out


def _uniform(bounds: tuple[float, float], gen: torch.Generator | None) -> float:
    return bounds[0] + (bounds[1] - bounds[0]) * torch.rand(1, generator=gen).item()


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with a kernel that covers +/-3 sigma (a fixed 5-px kernel cut larger sigmas short)."""
    return cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)


def _degrade(x: np.ndarray, p: AugmentParams, gen: torch.Generator | None, scale: float = 1.0) -> np.ndarray:
    """Bilateral smoothing, downscale-upscale, unsharp mask and Gaussian noise, each with its own
    probability; ``scale`` converts the sizes in ``p`` to ``x``'s pixels (model-input px per
    source px, 1 when they are given at the input's scale).

    Nothing is drawn when all are off, and the bilateral's draws come after the others, so
    recipes without it keep their random stream (and their results) unchanged.
    """
    if p.downscale_prob == 0 and p.sharpen_prob == 0 and p.noise_prob == 0 and p.bilateral_prob == 0:
        return x
    u = torch.rand(3, generator=gen).tolist()
    if p.bilateral_prob > 0 and torch.rand(1, generator=gen).item() < p.bilateral_prob:
        # First: a denoiser or beauty filter runs on the source, before scaling and encoding.
        x = _bilateral(x, _uniform(p.bilateral_d, gen) * scale, _uniform(p.bilateral_sigma_color, gen))
    if u[0] < p.downscale_prob:
        x = _down_up(x, _uniform(p.downscale, gen) / scale, torch.rand(1, generator=gen).item() < 0.5)
    if u[1] < p.sharpen_prob:
        amount = _uniform(p.sharpen, gen)
        x = cv2.addWeighted(x, 1.0 + amount, _blur(x, scale), -amount, 0)  # saturates to [0, 255]
    if u[2] < p.noise_prob:
        sigma = _uniform(p.noise_sigma, gen)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen).item())
        noise = np.random.default_rng(seed).normal(0.0, sigma, x.shape).astype(np.float32)
        x = np.clip(x.astype(np.float32) + noise, 0, 255).round().astype(np.uint8)
    return x


def _bilateral(x: np.ndarray, diameter: float, sigma_color: float) -> np.ndarray:
    """OpenCV's bilateral filter over an odd ``diameter`` (at least 3 px), flat in space within it
    (sigmaSpace = diameter, as denoisers run it): smooths texture, keeps edges."""
    d = max(3, int(round(diameter)) | 1)
    return cv2.bilateralFilter(x, d, sigma_color, float(d))


def _down_up(x: np.ndarray, factor: float, linear: bool) -> np.ndarray:
    """Downscale by ``factor`` (INTER_AREA) and back, bilinear or bicubic as players and encoders
    upscale; a factor of 1 or more (a source already below this resolution) changes nothing."""
    if factor >= 1.0:
        return x
    h, w = x.shape[:2]
    small = cv2.resize(x, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR if linear else cv2.INTER_CUBIC)


# Checkpoint selection's perturbed validation reals (train.val_perturb): the invariance
# benchmark's strengths (benchmarks/bench_invariance.py), in source-frame px.
SOURCE_PERTURBATIONS = ("blur", "bilateral", "downscale")


def perturb_at_source(rgb: np.ndarray, kind: str, source_side: float) -> np.ndarray:
    """A crop as if its source frame had been blurred (sigma 1.2), bilateral-denoised (d 9,
    sigmaColor 75) or downscaled x0.5 and back: the softening a real video or photo may carry.

    Args:
        rgb: RGB uint8 crop.
        kind: One of :data:`SOURCE_PERTURBATIONS`.
        source_side: The crop's side in source-frame px (faces.parquet ``crop_side``).

    Returns:
        The perturbed crop, the same size.
    """
    if kind not in SOURCE_PERTURBATIONS:
        raise ValueError(f"unknown perturbation {kind!r}; expected one of {SOURCE_PERTURBATIONS}")
    scale = rgb.shape[1] / float(source_side)  # crop px per source px
    frame = find_padding(rgb)  # the source is softened, not the crop's padding (as in training)
    x = fill_padding(rgb, frame)
    if kind == "blur":
        x = _blur(x, 1.2 * scale)
    elif kind == "bilateral":
        x = _bilateral(x, 9 * scale, 75.0)
    else:
        x = _down_up(x, 0.5 / scale, linear=True)
    return zero_padding(x, frame)


def build_train_transform(
    input_size: int,
    params: AugmentParams,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> Callable[..., torch.Tensor]:
    """Augmenting preprocessing for training; ends exactly like the eval transform.

    Augmentations (:func:`build_augment`) run on uint8 images before the shared
    normalisation, so the value range the model sees is the same in training and
    inference.

    Args:
        input_size: Side of the square model input, px.
        params: Augmentation strengths.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.

    Returns:
        A callable ``(image, gen=None, source_side=None)`` mapping an RGB uint8 crop to a
        normalised float tensor ``(3, S, S)``, its random draws from ``gen`` (see :func:`build_augment`).
    """
    augment = build_augment(input_size, params)
    finish = build_eval_transform(input_size, mean, std)
    return lambda image, gen=None, source_side=None: finish(augment(_to_numpy(image), gen, source_side))


def _to_numpy(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """(3, H, W) uint8 tensor -> (H, W, 3) array; arrays pass through (checked by the caller's transform)."""
    if isinstance(image, torch.Tensor):
        return image.permute(1, 2, 0).numpy()
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    return image
