"""The one place where face crops become model input.

``build_eval_transform`` is imported by train (validation), evaluate,
predict_videos, gradcam and the CLI, so training and inference preprocessing
cannot drift apart. Crops arrive as RGB uint8 ``(H, W, 3)`` arrays (the crop
shards store them unnormalised); only these transforms normalise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torchvision.transforms.v2 as T

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
        jpeg_prob: Probability of JPEG re-compression (deepfakes are usually re-encoded).
        jpeg_quality: Quality range for the re-compression.
    """

    crop_scale: tuple[float, float] = (0.8, 1.0)
    hflip: float = 0.5
    color_jitter: float = 0.1
    hue: float = 0.02
    blur_prob: float = 0.1
    jpeg_prob: float = 0.3
    jpeg_quality: tuple[int, int] = (60, 95)

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"augment.crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")
        for name in ("hflip", "blur_prob", "jpeg_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"augment.{name} must be in [0, 1]")
        q_lo, q_hi = self.jpeg_quality
        if not 1 <= q_lo <= q_hi <= 100:
            raise ValueError(f"augment.jpeg_quality must satisfy 1 <= lo <= hi <= 100, got {self.jpeg_quality}")


def _to_uint8_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(H, W, 3) uint8 array -> (3, H, W) uint8 tensor; tensors pass through."""
    if isinstance(image, torch.Tensor):
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
    pipeline = T.Compose(
        [
            T.Resize((input_size, input_size), antialias=True),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(mean=list(mean), std=list(std)),
        ]
    )
    return lambda image: pipeline(_to_uint8_tensor(image))


def build_train_transform(
    input_size: int,
    params: AugmentParams,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> Callable[[np.ndarray | torch.Tensor], torch.Tensor]:
    """Augmenting preprocessing for training; ends exactly like the eval transform.

    Augmentations run on uint8 tensors (JPEG needs them) before the shared
    normalisation, so the value range the model sees is the same in training and
    inference.

    Args:
        input_size: Side of the square model input, px.
        params: Augmentation strengths.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.

    Returns:
        A callable mapping an RGB uint8 crop to a normalised float tensor ``(3, S, S)``.
    """
    ops: list[torch.nn.Module] = [
        T.RandomResizedCrop(input_size, scale=params.crop_scale, ratio=(0.9, 1.1), antialias=True),
        T.RandomHorizontalFlip(params.hflip),
    ]
    if params.color_jitter > 0 or params.hue > 0:
        cj = params.color_jitter
        ops.append(T.ColorJitter(brightness=cj, contrast=cj, saturation=cj, hue=params.hue))
    if params.blur_prob > 0:
        ops.append(T.RandomApply([T.GaussianBlur(5, sigma=(0.1, 1.5))], p=params.blur_prob))
    if params.jpeg_prob > 0:
        ops.append(T.RandomApply([T.JPEG(list(params.jpeg_quality))], p=params.jpeg_prob))
    augment = T.Compose(ops)
    finish = build_eval_transform(input_size, mean, std)
    return lambda image: finish(augment(_to_uint8_tensor(image)))
