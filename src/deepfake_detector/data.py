"""Face-crop datasets read from the crop shards, joined with the manifest's labels."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from . import records
from .shards import ShardReader

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


class CropDataset(Dataset):
    """Face crops from shards, transformed; yields ``(image (3,S,S), y, row index)``.

    Args:
        rows: Face rows with ``shard``, ``member`` and ``y``.
        crops_dir: Folder of the crop shards.
        transform: Maps an RGB uint8 crop to a tensor (train or eval transform).
    """

    def __init__(self, rows: pd.DataFrame, crops_dir: Path, transform: Callable[[np.ndarray], torch.Tensor]) -> None:
        self.shards = rows["shard"].to_numpy()
        self.members = rows["member"].to_numpy()
        self.y = rows["y"].to_numpy(dtype=np.float32) if "y" in rows else np.zeros(len(rows), np.float32)
        self.reader = ShardReader(crops_dir)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image = self.reader.read_image(self.shards[i], self.members[i])
        return self.transform(image), torch.tensor(self.y[i]), i


class ArrayDataset(Dataset):
    """In-memory crops (the CLI's single-video path), same item format as CropDataset."""

    def __init__(self, crops: Sequence[np.ndarray], transform: Callable[[np.ndarray], torch.Tensor]) -> None:
        self.crops = crops
        self.transform = transform

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.transform(self.crops[i]), torch.tensor(0.0), i
