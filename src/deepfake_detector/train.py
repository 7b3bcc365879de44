"""The train stage: data, model, loop, early stopping, checkpoint.

Best-checkpoint selection and early stopping use the validation **video-level** AUC of
the mean fake probability: the product's verdict is per video, and frame AUC rewards
models that are right on many frames of a few easy videos. The frame AUC only breaks ties
(a small validation set often ranks every video right). Choosing the aggregation and
the threshold is not training's business: the calibrate stage does it, once, for the
checkpoint written here.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, WeightedRandomSampler

from . import records
from .aggregate import AggregateParams, video_scores
from .config import to_dict
from .data import CropDataset, collate_channels_last, load_face_table
from .engine import (
    Runtime,
    predict_logits,
    prepare_model,
    process_group_cleanup,
    seed_everything,
    seed_worker,
    setup_runtime,
    train_one_epoch,
)
from .metrics import roc_auc
from .model import ARCHS, CheckpointMeta, build_model, get_arch, save_checkpoint
from .sbi import SbiCropDataset, SbiParams, attach_landmarks, with_sbi_twins
from .transforms import AugmentParams, build_eval_transform, build_train_transform

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainParams:
    """Params section ``train``.

    ``threads`` and ``num_workers`` only change speed: ``threads`` is the intra-op thread
    count of the training process (0: torch's default, all cores), ``num_workers`` the
    DataLoader processes that decode and augment the next batches meanwhile (one thread
    each). On a machine whose cores other jobs share, one thread for the step and one
    worker beat two threads 3-10x (docs/performance.md, "Threads").
    """

    arch: str = "resnet18"
    init: str = "imagenet"  # imagenet | random | path to a weights file
    require_pretrained: bool = False
    input_size: int = 224
    epochs: int = 6
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-4
    optimizer: Literal["adamw", "sgd"] = "adamw"
    schedule: Literal["cosine", "constant"] = "cosine"
    patience: int = 3
    balance: Literal["pos_weight", "sampler", "none"] = "pos_weight"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    num_workers: int = 0
    threads: int = 0
    seed: int = 0
    deterministic: bool = False
    augment: AugmentParams = field(default_factory=AugmentParams)
    sbi: SbiParams = field(default_factory=SbiParams)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch: {self.arch!r} is not one of {sorted(ARCHS)}")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("epochs, batch_size and patience must be >= 1")
        if self.lr <= 0:
            raise ValueError("lr must be > 0")
        if self.num_workers < 0 or self.threads < 0:
            raise ValueError("num_workers and threads must be >= 0")


# Decoded crops kept in memory by each of the train and val datasets, so that epochs after
# the first skip PNG decoding (data.DecodedCrops); 1 GiB holds about 7000 224-px crops.
CROP_CACHE_BYTES = 2**30

# Checkpoint selection aggregates a validation video's faces by their mean probability:
# the simplest strategy, and a fixed one, so selection does not depend on calibration.
SELECTION_AGGREGATION = "mean"


def selection_key(video_auc: float | None, frame_auc: float | None, epoch: int) -> tuple[float, float]:
    """What checkpoint selection maximises: validation video AUC, then frame AUC.

    Small validation sets saturate the video AUC (1.0 after one epoch of SBI training is
    common); the frame AUC then still tells a sharper model from the first one that ranked
    every video right. An undefined AUC (one class in val) cannot select: the latest epoch
    wins then.
    """
    if video_auc is None:
        return (-1.0 / epoch, -math.inf)
    return (video_auc, frame_auc if frame_auc is not None else -math.inf)


def _make_optimizer(model: nn.Module, p: TrainParams) -> torch.optim.Optimizer:
    if p.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=p.lr, momentum=0.9, weight_decay=p.weight_decay, nesterov=True)


def _video_auc(rows: pd.DataFrame, logits: np.ndarray) -> float | None:
    """Video-level AUC of per-face logits (mean probability per video)."""
    scores = video_scores(rows.assign(logit=logits), SELECTION_AGGREGATION, AggregateParams())
    labels = rows.groupby("video_id")["y"].first().loc[scores.index]
    return roc_auc(labels.to_numpy(), scores.to_numpy())


def run_training(
    params: TrainParams,
    manifest_path: Path,
    faces_path: Path,
    crops_dir: Path,
    model_out: Path,
    live_dir: Path,
    landmarks_path: Path | None = None,
) -> dict[str, Any]:
    """Fine-tune the classifier on the train split, select on val video AUC, save the best.

    Args:
        params: The ``train`` params.
        manifest_path: ``data/manifest.csv``.
        faces_path: ``data/faces.parquet``.
        crops_dir: Crop shards.
        model_out: Checkpoint path to write (rank 0 only).
        live_dir: dvclive folder for per-epoch metrics.
        landmarks_path: ``data/landmarks.parquet`` (the landmarks stage); needed by
            ``sbi.mask: landmarks``.

    Returns:
        A summary dict (best epoch, val metrics, init used).

    Raises:
        ValueError: If the train or val split has no face crops, or only one class in train.
    """
    rt = setup_runtime(params.precision, threads=params.threads)
    with process_group_cleanup(rt):
        seed_everything(params.seed + rt.rank, params.deterministic)
        data = load_splits(params, manifest_path, faces_path, landmarks_path)
        logger.info(
            "train [%s]: %d crops of %d videos (real %d, fake %d); val: %d crops of %d videos; runtime %s, %d thread(s), "
            "%d loader worker(s)", data.mode, len(data.train), data.train["video_id"].nunique(), data.n_real, data.n_fake,
            len(data.val), data.val["video_id"].nunique(), rt.describe(), torch.get_num_threads(), params.num_workers,
        )
        model, init_used = build_model(params.arch, params.init, params.require_pretrained)
        model = prepare_model(model, rt)
        loop = build_loop(params, rt, data, crops_dir, model)
        live = _start_live(live_dir, rt, init_used, len(data.train))
        best, best_state = _fit(params, rt, model, loop, data, live)
        summary = {"init_used": init_used, "best_epoch": best["epoch"], "val_video_auc": best.get("video_auc"),
                   "val_frame_auc": best.get("frame_auc"), "runtime": rt.describe()}
        if isinstance(loop.train_ds, SbiCropDataset) and params.sbi.mask == "landmarks":
            logger.info("SBI masks: %d training fakes had no dense landmarks and used MTCNN's five points",
                        loop.train_ds.sparse)
        if rt.is_main:
            summary["weights_sha256"] = _save(params, model, best, best_state, init_used, model_out)
            _end_live(live, summary)
        return summary


@dataclass
class Splits:
    """Training and validation face rows, with the class counts the loss is balanced on."""

    train: pd.DataFrame
    val: pd.DataFrame
    n_real: float
    n_fake: float
    mode: str


def load_splits(p: TrainParams, manifest_path: Path, faces_path: Path, landmarks_path: Path | None = None) -> Splits:
    """The train and val face rows the stage trains and selects on (val with SBI twins when SBI is on).

    Raises:
        ValueError: If a split has no crops, or train has one class and SBI is off, or the
            SBI mask needs landmarks and none were given.
    """
    manifest = records.read_manifest(manifest_path)
    faces = load_face_table(faces_path, manifest)
    if p.sbi.enabled and p.sbi.mask == "landmarks":
        if landmarks_path is None:
            raise ValueError("train.sbi.mask: landmarks needs the landmarks stage's table (--landmarks)")
        faces = attach_landmarks(faces, records.read_landmarks(landmarks_path))
    train_rows = faces[faces["split"] == "train"].reset_index(drop=True)
    val_rows = faces[faces["split"] == "val"].reset_index(drop=True)
    # The guarantee the evaluation rests on: nothing from val/test reaches the optimiser.
    assert set(train_rows["split"]) <= {"train"}
    if p.sbi.drop_real_fakes:
        train_rows = train_rows[train_rows["y"] == 0].reset_index(drop=True)
        val_rows = val_rows[val_rows["y"] == 0].reset_index(drop=True)
    if train_rows.empty or val_rows.empty:
        raise ValueError(f"need face crops in both train and val splits; got train={len(train_rows)} val={len(val_rows)}")
    n_fake = int(train_rows["y"].sum())
    n_real = len(train_rows) - n_fake
    if n_real == 0 or (n_fake == 0 and not p.sbi.enabled):
        raise ValueError(f"train split has only one class (real={n_real}, fake={n_fake}) and SBI is off")
    mode = "deepfakes" if not p.sbi.enabled else ("real + SBI" if n_fake == 0 else "mixed (deepfakes + SBI)")
    if p.sbi.enabled:
        # Validation gets a self-blended twin of every real video, so its video AUC is
        # defined even when there are no real fakes; expected class counts per epoch.
        val_rows = with_sbi_twins(val_rows)
        return Splits(train_rows, val_rows, (1 - p.sbi.fake_share) * n_real, n_fake + p.sbi.fake_share * n_real, mode)
    return Splits(train_rows, val_rows, n_real, n_fake, mode)


@dataclass
class Loop:
    """What one epoch needs: data, loss, optimiser and schedule."""

    loader: DataLoader
    sampler: Any
    train_ds: CropDataset | SbiCropDataset
    val_ds: CropDataset | SbiCropDataset
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None


def build_loop(p: TrainParams, rt: Runtime, data: Splits, crops_dir: Path, model: nn.Module) -> Loop:
    """The stage's datasets, loader, loss, optimiser and schedule for ``model``."""
    # The normalisation the backbone's ImageNet weights were trained with (and recorded in
    # the checkpoint, so every stage that scores faces uses it too).
    arch = get_arch(p.arch)
    train_tf = build_train_transform(p.input_size, p.augment, arch.mean, arch.std)
    eval_tf = build_eval_transform(p.input_size, arch.mean, arch.std)
    train_ds: CropDataset | SbiCropDataset
    val_ds: CropDataset | SbiCropDataset
    if p.sbi.enabled:
        # Both reals and self-blended fakes then get the same augmentation (JPEG included).
        train_ds = SbiCropDataset(data.train, crops_dir, train_tf, p.sbi, p.seed, mode="train", cache_bytes=CROP_CACHE_BYTES)
        val_ds = SbiCropDataset(data.val, crops_dir, eval_tf, p.sbi, p.seed, mode="fixed", cache_bytes=CROP_CACHE_BYTES)
    else:
        train_ds = CropDataset(data.train, crops_dir, train_tf, cache_bytes=CROP_CACHE_BYTES, seed=p.seed)
        val_ds = CropDataset(data.val, crops_dir, eval_tf, cache_bytes=CROP_CACHE_BYTES)

    generator = torch.Generator().manual_seed(p.seed)
    sampler: Any = None
    if rt.distributed:
        if p.balance == "sampler":
            raise ValueError("train.balance: sampler is not supported with torchrun; use pos_weight")
        sampler = DistributedSampler(train_ds, num_replicas=rt.world_size, rank=rt.rank, shuffle=True, seed=p.seed)
    elif p.balance == "sampler":
        if p.sbi.enabled:
            raise ValueError("train.balance: sampler cannot see SBI labels (drawn on the fly); use pos_weight")
        weights = np.where(data.train["y"] == 1, 0.5 / data.n_fake, 0.5 / data.n_real)
        sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), len(weights), generator=generator)
    loader = DataLoader(
        train_ds, batch_size=p.batch_size, shuffle=sampler is None, sampler=sampler, drop_last=len(train_ds) > p.batch_size,
        num_workers=p.num_workers, worker_init_fn=seed_worker, generator=generator,
        collate_fn=collate_channels_last if rt.channels_last else None,
    )
    pos_weight = torch.tensor(data.n_real / data.n_fake, device=rt.device) if p.balance == "pos_weight" else None
    optimizer = _make_optimizer(model, p)
    steps = p.epochs * max(1, len(loader))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps) if p.schedule == "cosine" else None
    return Loop(loader, sampler, train_ds, val_ds, nn.BCEWithLogitsLoss(pos_weight=pos_weight), optimizer, scheduler)


def _start_live(live_dir: Path, rt: Runtime, init_used: str, n_train: int) -> Any:
    """dvclive logger on rank 0 (None elsewhere)."""
    if not rt.is_main:
        return None
    from dvclive import Live  # imported here: only rank 0 logs

    # dvcyaml=None / save_dvc_exp=False: dvclive must not rewrite dvc.yaml during `dvc repro`.
    live = Live(str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None)
    live.log_params({"init_used": init_used, "runtime": rt.describe(), "train_crops": n_train})
    return live


def _fit(p: TrainParams, rt: Runtime, model: nn.Module, loop: Loop, data: Splits, live: Any) -> tuple[dict[str, Any], dict[str,
                                                                                                                           torch.Tensor]]:
    """Train epoch by epoch; keep the weights of the best :func:`selection_key`; stop early."""
    best: dict[str, Any] = {"key": (-math.inf, -math.inf), "epoch": 0}
    best_state: dict[str, torch.Tensor] = {}
    stale = 0
    for epoch in range(1, p.epochs + 1):
        if isinstance(loop.sampler, DistributedSampler):
            loop.sampler.set_epoch(epoch)
        loop.train_ds.set_epoch(epoch)
        stats = train_one_epoch(model, loop.loader, loop.optimizer, loop.loss_fn, rt, loop.scheduler,
                                desc=f"epoch {epoch}/{p.epochs}")
        val_logits = predict_logits(model, loop.val_ds, rt, batch_size=max(64, p.batch_size), desc="val")
        vauc = _video_auc(data.val, val_logits)
        fauc = roc_auc(data.val["y"].to_numpy(), val_logits)
        logger.info("epoch %d: loss %.4f, %.1f img/s, val video AUC %s, frame AUC %s",
                    epoch, stats["loss"], stats["img_per_s"], _fmt(vauc), _fmt(fauc))
        if live is not None:
            live.log_metric("train/loss", stats["loss"])
            live.log_metric("train/img_per_s", stats["img_per_s"])
            live.log_metric("val/video_auc", vauc if vauc is not None else float("nan"))
            live.log_metric("val/frame_auc", fauc if fauc is not None else float("nan"))
            live.next_step()
        key = selection_key(vauc, fauc, epoch)
        if key > best["key"]:
            module = model.module if hasattr(model, "module") else model
            best_state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
            best = {"key": key, "epoch": epoch, "video_auc": vauc, "frame_auc": fauc}
            stale = 0
        else:
            stale += 1
            if stale >= p.patience:
                logger.info("early stop: no val video (then frame) AUC gain for %d epochs", stale)
                break
    return best, best_state


def _save(p: TrainParams, model: nn.Module, best: dict[str, Any], best_state: dict[str, torch.Tensor],
          init_used: str, model_out: Path) -> str:
    """Write the best epoch's weights as a self-describing checkpoint; returns the weights hash."""
    module = model.module if hasattr(model, "module") else model
    module.load_state_dict(best_state)
    val_metrics = {k: float(best[k]) for k in ("video_auc", "frame_auc") if best.get(k) is not None}
    arch = get_arch(p.arch)
    meta = CheckpointMeta(arch=p.arch, init=init_used, input_size=p.input_size, mean=list(arch.mean), std=list(arch.std),
                          epoch=int(best["epoch"]), val_metrics=val_metrics, config=to_dict(p))
    meta = save_checkpoint(model_out, module, meta)
    logger.info("saved %s (epoch %d, val video AUC %s, init %s)", model_out, best["epoch"], _fmt(best.get("video_auc")),
                init_used)
    return meta.weights_sha256


def _end_live(live: Any, summary: dict[str, Any]) -> None:
    for k in ("best_epoch", "val_video_auc"):
        if summary[k] is not None:
            live.summary[k] = summary[k]
    live.summary["init_used"] = summary["init_used"]
    live.end()


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"
