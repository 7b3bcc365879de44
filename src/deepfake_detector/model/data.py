"""Face-crop datasets read from the crop shards, joined with the manifest's labels."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, default_collate

from .. import records
from ..media.shards import ShardReader

logger = logging.getLogger(__name__)


def load_face_table(faces_path: Path, manifest: pd.DataFrame, splits: Sequence[str] | None = None) -> pd.DataFrame:
    """Face records joined with each video's label, split, source and manipulation.

    Args:
        faces_path: ``faces.parquet`` written by crop_faces.
        manifest: The manifest (``records.read_manifest``).
        splits: Keep only these splits (None keeps all).

    Returns:
        One row per face crop with ``y`` (1 = fake), sorted by video, frame, face.
    """
    faces = records.read_faces(faces_path)
    meta = manifest[["video_id", "label", "split", "group", "source", "manipulation"]]
    df = faces.merge(meta, on="video_id", how="inner", validate="many_to_one")
    if len(df) != len(faces):
        orphans = sorted(set(faces["video_id"]) - set(manifest["video_id"]))[:5]
        logger.warning("%d face rows belong to videos not in the manifest (e.g. %s): ignored", len(faces) - len(df), orphans)
    if splits is not None:
        df = df[df["split"].isin(list(splits))]
    df = df.assign(y=df["label"].map(records.LABELS).astype(np.int64))
    return df.sort_values(["video_id", "frame_index", "face_index"]).reset_index(drop=True)


class DecodedCrops:
    """Decoded crops by (shard, member), kept in memory up to a byte budget.

    Training reads every crop once per epoch, and decoding a 224-px PNG crop costs about
    2.7 ms, a tenth of a 160-px training step (docs/performance.md, "Training input"): kept
    decoded, later epochs skip it. Crops beyond the budget are decoded each time. Callers
    must not modify the arrays returned. Each loader worker process has its own copy.

    Args:
        crops_dir: Folder of the crop shards.
        max_bytes: Memory budget (0: keep nothing).
    """

    def __init__(self, crops_dir: Path, max_bytes: int = 0) -> None:
        self.reader = ShardReader(crops_dir)
        self.max_bytes = max_bytes
        self.bytes = 0
        self._images: dict[tuple[str, str], np.ndarray] = {}

    def get(self, shard: str, member: str) -> np.ndarray:
        """The RGB uint8 crop stored as ``member`` of ``shard``."""
        key = (shard, member)
        image = self._images.get(key)
        if image is None:
            image = self.reader.read_image(shard, member)
            if self.bytes + image.nbytes <= self.max_bytes:
                self._images[key] = image
                self.bytes += image.nbytes
        return image


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The random draws of one training item: a generator keyed on (seed, epoch, index).

    The same items get the same augmentation in every run, whatever thread, loader worker or
    process (DDP) prepares them, and whatever else draws from torch's global RNG meanwhile.
    """
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class CropDataset(Dataset):
    """Face crops from shards, transformed; yields ``(image (3,S,S), y, row index)``.

    Args:
        rows: Face rows with ``shard``, ``member`` and ``y``.
        crops_dir: Folder of the crop shards.
        transform: Maps an RGB uint8 crop to a tensor (train or eval transform).
        cache_bytes: Keep up to this many bytes of decoded crops in memory (see :class:`DecodedCrops`).
        seed: For a training set: ``transform`` is called as ``transform(image, gen, source_side=...)``
            with :func:`item_generator` of (seed, epoch, index) and the row's ``crop_side``
            (None without that column); None (evaluation): ``transform(image)``.
    """

    def __init__(self, rows: pd.DataFrame, crops_dir: Path, transform: Callable[..., torch.Tensor],
                 cache_bytes: int = 0, seed: int | None = None) -> None:
        self.shards = rows["shard"].to_numpy()
        self.members = rows["member"].to_numpy()
        self.y = rows["y"].to_numpy(dtype=np.float32) if "y" in rows else np.zeros(len(rows), np.float32)
        self.sides = rows["crop_side"].to_numpy(dtype=np.float64) if "crop_side" in rows else None
        self.crops = DecodedCrops(crops_dir, cache_bytes)
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """New augmentation draws for a new epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image = self.crops.get(self.shards[i], self.members[i])
        if self.seed is None:
            return self.transform(image), torch.tensor(self.y[i]), i
        side = None if self.sides is None else float(self.sides[i])
        return self.transform(image, item_generator(self.seed, self.epoch, i), source_side=side), torch.tensor(self.y[i]), i


def collate_channels_last(items: Sequence[tuple[torch.Tensor, torch.Tensor, int]]) -> list[Any]:
    """DataLoader ``collate_fn``: ``default_collate``'s batch, its images in channels_last layout.

    The transforms return each image as a ``(3, S, S)`` view of a pixel-major ``(S, S, 3)``
    buffer (:func:`deepfake_detector.model.transforms.build_eval_transform`). ``default_collate``
    stacks them into a contiguous ``(B, 3, S, S)`` batch, which the training loop then copies
    back into channels_last: two transposing copies per batch, the second one on the thread
    that runs the model. Stacked pixel-major, the batch is channels_last already (same
    values), and the loop's conversion is free.

    Args:
        items: ``(image (3, S, S), y, index)`` items of :class:`CropDataset` or
            :class:`deepfake_detector.model.sbi.SbiCropDataset`.

    Returns:
        ``[images (B, 3, S, S) channels_last, y (B,), index (B,)]``.
    """
    images = torch.stack([item[0].permute(1, 2, 0) for item in items]).permute(0, 3, 1, 2)  # (B, H, W, 3) -> (B, 3, H, W)
    rest = default_collate([item[1:] for item in items])
    return [images, *rest]


class ArrayDataset(Dataset):
    """In-memory crops (the CLI's single-video path), same item format as CropDataset."""

    def __init__(self, crops: Sequence[np.ndarray], transform: Callable[[np.ndarray], torch.Tensor]) -> None:
        self.crops = crops
        self.transform = transform

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.transform(self.crops[i]), torch.tensor(0.0), i
