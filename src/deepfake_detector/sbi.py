"""Online Self-Blended Images (SBI) for training from real faces only.

Shiohara & Yamasaki (CVPR 2022): a real face blended with a jittered copy of itself
inside a (deformed, blurred) face mask shows the generic traces of face blending —
seams, colour and frequency mismatch — without any one generator's fingerprint, and
detectors trained on them generalise across datasets better than ones trained on the
fakes themselves. The blending itself lives in :mod:`deepfake_detector.blend`, shared
with the embedded sample.

Masks come from MTCNN's five landmarks (eyes, nose, mouth corners), which give only a
rough face hull; no landmark model that ships inside a PyPI wheel and runs offline was
found to be worth its weight here (see README, "Train from real videos only").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .blend import BlendParams, self_blend
from .data import DecodedCrops

logger = logging.getLogger(__name__)

SBI_SUFFIX = "#sbi"  # pseudo-video id of a validation video's self-blended twin


@dataclass(frozen=True)
class SbiParams:
    """Params ``train.sbi``.

    Attributes:
        enabled: Synthesise self-blended fakes from real training crops.
        fake_share: Probability that a real training crop is turned into a fake.
        drop_real_fakes: Train on real videos only (ignore real deepfakes in train/val):
            the "real videos + SBI" mode. With ``enabled`` and real fakes kept: "mixed".
        blend: Blend strengths (see :class:`deepfake_detector.blend.BlendParams`).
    """

    enabled: bool = False
    fake_share: float = 0.5
    drop_real_fakes: bool = False
    blend: BlendParams = field(default_factory=BlendParams)

    def __post_init__(self) -> None:
        if not 0 < self.fake_share < 1:
            raise ValueError(f"sbi.fake_share must be in (0, 1), got {self.fake_share}")
        if self.drop_real_fakes and not self.enabled:
            raise ValueError("sbi.drop_real_fakes needs sbi.enabled: without SBI there would be no fakes")


def crop_landmarks(row: pd.Series, crop_side_px: int) -> np.ndarray:
    """A face's five landmarks in its crop's pixels, from the crop window recorded by crop_faces."""
    points = np.asarray(row["landmarks"], dtype=np.float32).reshape(-1, 2)
    origin = np.array([row["crop_left"], row["crop_top"]], dtype=np.float32)
    return (points - origin) * (crop_side_px / float(row["crop_side"]))


def with_sbi_twins(rows: pd.DataFrame) -> pd.DataFrame:
    """Add, for every real row, a self-blended twin in a pseudo-video ``<id>#sbi`` (label fake).

    Used for validation, where the twins are synthesised deterministically so the video-level
    AUC that selects the checkpoint is stable across epochs.
    """
    real = rows[rows["y"] == 0]
    twins = real.assign(video_id=real["video_id"] + SBI_SUFFIX, y=1, sbi=True)
    out = pd.concat([rows.assign(sbi=False), twins], ignore_index=True)
    return out


class SbiCropDataset(Dataset):
    """Face crops where real ones may become self-blended fakes.

    In ``train`` mode every real crop becomes a fake with probability ``fake_share``, drawn
    from a generator keyed on (seed, epoch, index) so a run is reproducible with any number
    of workers. In ``fixed`` mode, rows with ``sbi=True`` are synthesised with a generator
    keyed on (seed, index) only: the same fakes every epoch.

    Yields ``(image, y, index)`` like :class:`deepfake_detector.data.CropDataset`, and keeps
    up to ``cache_bytes`` of decoded crops in memory as it does (self-blending starts from the
    stored crop, never from an earlier blend).
    """

    def __init__(
        self,
        rows: pd.DataFrame,
        crops_dir: Path,
        transform: Callable[[np.ndarray], torch.Tensor],
        params: SbiParams,
        seed: int,
        mode: str = "train",
        cache_bytes: int = 0,
    ) -> None:
        missing = [c for c in ("landmarks", "crop_left", "crop_top", "crop_side") if c not in rows]
        if missing:
            raise ValueError(f"SBI needs faces.parquet columns {missing}: rerun crop_faces")
        if mode not in ("train", "fixed"):
            raise ValueError(f"mode must be train or fixed, got {mode!r}")
        self.rows = rows.reset_index(drop=True)
        self.crops = DecodedCrops(crops_dir, cache_bytes)
        self.transform = transform
        self.params = params
        self.seed = seed
        self.mode = mode
        self.epoch = 0
        self.failed = 0

    def set_epoch(self, epoch: int) -> None:
        """New random draws for a new epoch (train mode)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def _wants_fake(self, i: int, row: pd.Series, rng: np.random.Generator) -> bool:
        if self.mode == "fixed":
            return bool(row.get("sbi", False))
        return int(row["y"]) == 0 and rng.random() < self.params.fake_share

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        row = self.rows.iloc[i]
        image = self.crops.get(row["shard"], row["member"])
        key = [self.seed, i] if self.mode == "fixed" else [self.seed, self.epoch, i]
        rng = np.random.default_rng(key)
        y = float(row["y"])
        if self._wants_fake(i, row, rng):
            try:
                image, _ = self_blend(image, crop_landmarks(row, image.shape[0]), rng, self.params.blend)
                y = 1.0
            except ValueError as exc:
                # A face too small or landmarks off the crop: keep the real crop with its
                # real label (never a fake label on an unaltered face) and count it.
                self.failed += 1
                y = 0.0
                if self.failed <= 3:
                    logger.warning("SBI failed on %s (%s): used as a real crop", row["member"], exc)
        return self.transform(image), torch.tensor(y), i
