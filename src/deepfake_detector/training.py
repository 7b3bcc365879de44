"""The train stage's logic: data, model, loop, early stopping, checkpoint.

Best-checkpoint selection and early stopping use the validation **video-level**
AUC: the product's verdict is per video, and frame AUC rewards models that are
right on many frames of a few easy videos.
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
from .data import CropDataset, load_face_table
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
from .metrics import choose_threshold, roc_auc
from .model import CheckpointMeta, build_model, save_checkpoint
from .sbi import SbiCropDataset, SbiParams, with_sbi_twins
from .transforms import AugmentParams, build_eval_transform, build_train_transform

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainParams:
    """Params section ``train``."""

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
    val_aggregation: str = "mean"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    num_workers: int = 0
    seed: int = 0
    deterministic: bool = False
    augment: AugmentParams = field(default_factory=AugmentParams)
    sbi: SbiParams = field(default_factory=SbiParams)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("epochs, batch_size and patience must be >= 1")
        if self.lr <= 0:
            raise ValueError("lr must be > 0")


def _make_optimizer(model: nn.Module, p: TrainParams) -> torch.optim.Optimizer:
    if p.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=p.lr, momentum=0.9, weight_decay=p.weight_decay, nesterov=True)


def _video_auc(rows: pd.DataFrame, logits: np.ndarray, method: str) -> tuple[float | None, pd.Series, pd.Series]:
    """Video-level AUC of per-face logits; returns (auc, scores, labels) indexed by video."""
    scores = video_scores(rows.assign(logit=logits), method, AggregateParams())
    labels = rows.groupby("video_id")["y"].first().loc[scores.index]
    return roc_auc(labels.to_numpy(), scores.to_numpy()), scores, labels


def run_training(
    params: TrainParams,
    manifest_path: Path,
    faces_path: Path,
    crops_dir: Path,
    model_out: Path,
    live_dir: Path,
) -> dict[str, Any]:
    """Fine-tune the classifier on the train split, select on val video AUC, save the best.

    Args:
        params: The ``train`` params.
        manifest_path: ``data/manifest.csv``.
        faces_path: ``data/faces.parquet``.
        crops_dir: Crop shards.
        model_out: Checkpoint path to write (rank 0 only).
        live_dir: dvclive folder for per-epoch metrics.

    Returns:
        A summary dict (best epoch, val metrics, init used).

    Raises:
        ValueError: If the train or val split has no face crops, or only one class in train.
    """
    rt = setup_runtime(params.precision)
    with process_group_cleanup(rt):
        return _run(params, rt, manifest_path, faces_path, crops_dir, model_out, live_dir)


def _run(p: TrainParams, rt: Runtime, manifest_path: Path, faces_path: Path, crops_dir: Path, model_out: Path, live_dir: Path) -> dict[str, Any]:
    seed_everything(p.seed + rt.rank, p.deterministic)
    manifest = records.read_manifest(manifest_path)
    faces = load_face_table(faces_path, manifest)
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
    logger.info(
        "train [%s]: %d crops of %d videos (real %d, fake %d); val: %d crops of %d videos; runtime %s",
        mode, len(train_rows), train_rows["video_id"].nunique(), n_real, n_fake,
        len(val_rows), val_rows["video_id"].nunique(), rt.describe(),
    )

    model, init_used = build_model(p.arch, p.init, p.require_pretrained)
    model = prepare_model(model, rt)
    train_tf = build_train_transform(p.input_size, p.augment)
    eval_tf = build_eval_transform(p.input_size)
    train_ds: CropDataset | SbiCropDataset
    if p.sbi.enabled:
        # Both reals and self-blended fakes then get the same augmentation (JPEG included).
        train_ds = SbiCropDataset(train_rows, crops_dir, train_tf, p.sbi, p.seed, mode="train")
        val_rows = with_sbi_twins(val_rows)
        val_ds: CropDataset | SbiCropDataset = SbiCropDataset(val_rows, crops_dir, eval_tf, p.sbi, p.seed, mode="fixed")
        n_fake, n_real = n_fake + p.sbi.fake_share * n_real, (1 - p.sbi.fake_share) * n_real  # expected per epoch
    else:
        train_ds = CropDataset(train_rows, crops_dir, train_tf)
        val_ds = CropDataset(val_rows, crops_dir, eval_tf)

    generator = torch.Generator().manual_seed(p.seed)
    sampler: Any = None
    if rt.distributed:
        if p.balance == "sampler":
            raise ValueError("train.balance: sampler is not supported with torchrun; use pos_weight")
        sampler = DistributedSampler(train_ds, num_replicas=rt.world_size, rank=rt.rank, shuffle=True, seed=p.seed)
    elif p.balance == "sampler":
        if p.sbi.enabled:
            raise ValueError("train.balance: sampler cannot see SBI labels (drawn on the fly); use pos_weight")
        weights = np.where(train_rows["y"] == 1, 0.5 / n_fake, 0.5 / n_real)
        sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), len(weights), generator=generator)
    loader = DataLoader(
        train_ds, batch_size=p.batch_size, shuffle=sampler is None, sampler=sampler, drop_last=len(train_ds) > p.batch_size,
        num_workers=p.num_workers, worker_init_fn=seed_worker, generator=generator,
    )
    pos_weight = torch.tensor(n_real / n_fake) if p.balance == "pos_weight" else None
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight.to(rt.device) if pos_weight is not None else None)
    optimizer = _make_optimizer(model, p)
    steps = p.epochs * max(1, len(loader))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps) if p.schedule == "cosine" else None

    live = None
    if rt.is_main:
        from dvclive import Live  # imported here: only rank 0 logs

        # dvcyaml=None / save_dvc_exp=False: dvclive must not rewrite dvc.yaml during `dvc repro`.
        live = Live(str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None)
        live.log_params({"init_used": init_used, "runtime": rt.describe(), "train_crops": len(train_rows)})

    best: dict[str, Any] = {"auc": -math.inf, "epoch": 0}
    best_state: dict[str, torch.Tensor] | None = None
    stale = 0
    for epoch in range(1, p.epochs + 1):
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        if isinstance(train_ds, SbiCropDataset):
            train_ds.set_epoch(epoch)
        stats = train_one_epoch(model, loader, optimizer, loss_fn, rt, scheduler, desc=f"epoch {epoch}/{p.epochs}")
        val_logits = predict_logits(model, val_ds, rt, batch_size=max(64, p.batch_size), desc="val")
        vauc, vscores, vlabels = _video_auc(val_rows, val_logits, p.val_aggregation)
        fauc = roc_auc(val_rows["y"].to_numpy(), val_logits)
        # An undefined AUC (one class in val) cannot select; fall back to -loss-like order by epoch.
        key = vauc if vauc is not None else -epoch
        logger.info(
            "epoch %d: loss %.4f, %.1f img/s, val video AUC %s, frame AUC %s",
            epoch, stats["loss"], stats["img_per_s"], _fmt(vauc), _fmt(fauc),
        )
        if live is not None:
            live.log_metric("train/loss", stats["loss"])
            live.log_metric("train/img_per_s", stats["img_per_s"])
            live.log_metric("val/video_auc", vauc if vauc is not None else float("nan"))
            live.log_metric("val/frame_auc", fauc if fauc is not None else float("nan"))
            live.next_step()
        if key > best["auc"]:
            module = model.module if hasattr(model, "module") else model
            best_state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
            threshold = choose_threshold(vlabels.to_numpy(), vscores.to_numpy())
            best = {"auc": key, "epoch": epoch, "video_auc": vauc, "frame_auc": fauc, "threshold": threshold}
            stale = 0
        else:
            stale += 1
            if stale >= p.patience:
                logger.info("early stop: no val video AUC gain for %d epochs", stale)
                break

    summary = {
        "init_used": init_used,
        "best_epoch": best["epoch"],
        "val_video_auc": best.get("video_auc"),
        "val_frame_auc": best.get("frame_auc"),
        "threshold": best.get("threshold", 0.5),
        "runtime": rt.describe(),
    }
    if rt.is_main:
        assert best_state is not None
        module = model.module if hasattr(model, "module") else model
        module.load_state_dict(best_state)
        meta = CheckpointMeta(
            arch=p.arch,
            init=init_used,
            input_size=p.input_size,
            threshold=float(summary["threshold"]),
            aggregation=p.val_aggregation,
            epoch=int(best["epoch"]),
            val_metrics={k: float(v) for k, v in (("video_auc", best.get("video_auc")), ("frame_auc", best.get("frame_auc"))) if v is not None},
            config=to_dict(p),
        )
        meta = save_checkpoint(model_out, module, meta)
        summary["weights_sha256"] = meta.weights_sha256
        assert live is not None
        for k in ("best_epoch", "val_video_auc", "threshold"):
            if summary[k] is not None:
                live.summary[k] = summary[k]
        live.summary["init_used"] = init_used
        live.end()
        logger.info("saved %s (epoch %d, val video AUC %s, threshold %.3f, init %s)", model_out, best["epoch"], _fmt(best.get("video_auc")), summary["threshold"], init_used)
    return summary


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"
