"""The train stage: data, model, loop, early stopping, checkpoint.

Best-checkpoint selection and early stopping use the validation **video-level** AUC of
the mean fake probability: the product's verdict is per video, and frame AUC rewards
models that are right on many frames of a few easy videos. The frame AUC only breaks ties
(a small validation set often ranks every video right). With ``val_perturb``, the real side
of that AUC also holds a copy of every validation real softened at its source's scale
(blur, bilateral denoise, downscale): a checkpoint that calls soft footage fake loses
validation AUC for it. Choosing the aggregation and
the threshold is not training's business: the calibrate stage does it, once, for the
checkpoint written here.

A release run outlasts a working session, so the stage checkpoints at the end of every
epoch (``<model_out>.resume.pt``, scratch, not a DVC output) and a rerun with the same
recipe and data continues after the last finished epoch, with the same result bit for bit
as a run that was never interrupted.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, WeightedRandomSampler

from .. import records
from ..core.config import to_dict
from ..core.errors import InputError
from ..scoring.aggregate import sigmoid, video_scores
from ..scoring.metrics import roc_auc
from .autoencoder import load_autoencoder, reconstructor
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
from .network import ARCHS, CheckpointMeta, build_model, get_arch, save_checkpoint
from .resume import file_digest, read_state, resume_path, write_state
from .sbi import (
    SbiCropDataset,
    SbiParams,
    attach_landmarks,
    generated_twins,
    perturbed_shift,
    twin_auc,
    with_perturbed_reals,
    with_sbi_twins,
)
from .transforms import SOURCE_PERTURBATIONS, AugmentParams, build_eval_transform, build_train_transform

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

    arch: str
    init: str  # imagenet | random | path to a weights file
    require_pretrained: bool
    input_size: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    optimizer: Literal["adamw", "sgd"]
    schedule: Literal["cosine", "constant"]
    patience: int
    balance: Literal["pos_weight", "sampler", "none"]
    precision: Literal["auto", "fp32", "bf16"]
    num_workers: int
    threads: int
    seed: int
    deterministic: bool
    augment: AugmentParams
    sbi: SbiParams
    val_perturb: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch: {self.arch!r} is not one of {sorted(ARCHS)}")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("epochs, batch_size and patience must be >= 1")
        if self.lr <= 0:
            raise ValueError("lr must be > 0")
        if self.num_workers < 0 or self.threads < 0:
            raise ValueError("num_workers and threads must be >= 0")
        unknown = sorted(set(self.val_perturb) - set(SOURCE_PERTURBATIONS))
        if unknown:
            raise ValueError(f"val_perturb: {unknown} not among {list(SOURCE_PERTURBATIONS)}")
        if self.val_perturb and not self.sbi.enabled:
            raise ValueError("val_perturb needs sbi.enabled (the perturbed copies are scored against SBI twins)")


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
    scores = video_scores(rows.assign(logit=logits), SELECTION_AGGREGATION, None)
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
    autoencoder_path: Path | None = None,
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
        autoencoder_path: ``models/autoencoder.pt`` (the autoencoder stage); needed by
            ``sbi.generated_share`` / ``sbi.whole_face_share`` > 0, unused otherwise.

    Returns:
        A summary dict (best epoch, val metrics, init used).

    Raises:
        ValueError: If the train or val split has no face crops, or only one class in train.
        InputError: If the recipe needs the autoencoder and ``autoencoder_path`` is missing.
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
        generator, autoencoder_used = _generator(params.sbi, autoencoder_path)
        model, init_used = build_model(params.arch, params.init, params.require_pretrained)
        model = prepare_model(model, rt)
        loop = build_loop(params, rt, data, crops_dir, model, generator)
        resume = ResumeFile(resume_path(model_out), run_fingerprint(params, rt, manifest_path, faces_path, landmarks_path,
                                                                    model_out, autoencoder_used))
        payload = load_resume(resume, rt)
        start = FitState() if payload is None else restore(payload, rt, model, loop)
        if payload is not None:
            logger.info("resuming after epoch %d of %d (%s)", start.epoch, params.epochs, resume.path)
        live = _start_live(live_dir, rt, init_used, len(data.train), resume_step=None if payload is None else start.epoch)
        best, best_state = _fit(params, rt, model, loop, data, live, resume, start)
        summary = {"init_used": init_used, "best_epoch": best["epoch"], "val_video_auc": best.get("video_auc"),
                   "val_frame_auc": best.get("frame_auc"), "runtime": rt.describe()}
        if isinstance(loop.train_ds, SbiCropDataset) and params.sbi.mask == "landmarks":
            logger.info("SBI masks: %d training fakes had no dense landmarks and used MTCNN's five points",
                        loop.train_ds.sparse)
        if isinstance(loop.train_ds, SbiCropDataset) and generator is not None:
            logger.info("synthetic training fakes by kind (made in this process): %s", loop.train_ds.kinds)
        if rt.is_main:
            summary["weights_sha256"] = _save(params, model, best, best_state, init_used, model_out)
            # Only now is the epoch-by-epoch state no longer needed: the checkpoint holds the result.
            resume_path(model_out).unlink(missing_ok=True)
            _end_live(live, summary)
        return summary


def _generator(p: SbiParams, autoencoder_path: Path | None) -> tuple[Any, Path | None]:
    """The face autoencoder's ``crop -> rendering`` when the recipe wants generated fakes, and its path.

    Raises:
        InputError: If ``sbi.generated_share`` or ``sbi.whole_face_share`` is > 0 and no
            checkpoint was given or it is missing; AutoencoderError if it cannot be used.
    """
    if not (p.enabled and p.uses_generator):
        if autoencoder_path is not None:
            logger.info("%s not used: train.sbi.generated_share and whole_face_share are 0", autoencoder_path)
        return None, None
    shares = f"train.sbi.generated_share={p.generated_share}, train.sbi.whole_face_share={p.whole_face_share}"
    if autoencoder_path is None:
        raise InputError(f"{shares} need the autoencoder stage's checkpoint: pass --autoencoder models/autoencoder.pt")
    if not Path(autoencoder_path).is_file():
        raise InputError(f"{autoencoder_path}: not found, and {shares} need it (run the autoencoder stage)")
    model, meta = load_autoencoder(autoencoder_path)
    logger.info("generated fakes from %s (%s, weights %s, val PSNR %s)", autoencoder_path, meta["config"],
                meta["weights_sha256"][:8], meta["val_metrics"].get("psnr"))
    return reconstructor(model), Path(autoencoder_path)


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
        # Softened copies of the val reals (val_perturb): selection penalises a softness shortcut.
        val_rows = with_perturbed_reals(with_sbi_twins(val_rows), p.val_perturb)
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
    # Logged only, never selects: generated-fake twins of the val reals (with a generator).
    val_generated: SbiCropDataset | None = None


def build_loop(p: TrainParams, rt: Runtime, data: Splits, crops_dir: Path, model: nn.Module,
               generator: Any = None) -> Loop:
    """The stage's datasets, loader, loss, optimiser and schedule for ``model``.

    ``generator`` (the face autoencoder's ``crop -> rendering``) makes the ``sbi`` recipe's
    generated and whole-face fakes, and a logged-only validation set of generated twins;
    validation for checkpoint selection keeps plain SBI twins, comparable with runs without it.
    """
    # The normalisation the backbone's ImageNet weights were trained with (and recorded in
    # the checkpoint, so every stage that scores faces uses it too).
    arch = get_arch(p.arch)
    train_tf = build_train_transform(p.input_size, p.augment, arch.mean, arch.std)
    eval_tf = build_eval_transform(p.input_size, arch.mean, arch.std)
    train_ds: CropDataset | SbiCropDataset
    val_ds: CropDataset | SbiCropDataset
    val_generated = None
    if p.sbi.enabled:
        # Both reals and self-blended fakes then get the same augmentation (JPEG included).
        train_ds = SbiCropDataset(data.train, crops_dir, train_tf, p.sbi, p.seed, mode="train", cache_bytes=CROP_CACHE_BYTES,
                                  generator=generator)
        val_ds = SbiCropDataset(data.val, crops_dir, eval_tf, p.sbi, p.seed, mode="fixed", cache_bytes=CROP_CACHE_BYTES)
        if generator is not None:
            val_generated = SbiCropDataset(generated_twins(data.val), crops_dir, eval_tf, p.sbi, p.seed, mode="fixed",
                                           generator=generator)
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
    return Loop(loader, sampler, train_ds, val_ds, nn.BCEWithLogitsLoss(pos_weight=pos_weight), optimizer, scheduler,
                val_generated)


def _start_live(live_dir: Path, rt: Runtime, init_used: str, n_train: int, resume_step: int | None = None) -> Any:
    """dvclive logger on rank 0 (None elsewhere); ``resume_step``: epochs already logged by an interrupted run."""
    if not rt.is_main:
        return None
    from dvclive import Live  # imported here: only rank 0 logs

    if resume_step is not None:
        _trim_live_history(live_dir / "plots" / "metrics", resume_step)
    # dvcyaml=None / save_dvc_exp=False: dvclive must not rewrite dvc.yaml during `dvc repro`.
    live = Live(str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None, resume=resume_step is not None)
    if resume_step is not None:
        # Epoch e is step e - 1. dvclive's own resume guesses the step from metrics.json and
        # is one short after a single epoch (it reads step 0 as "nothing logged yet").
        live.step = resume_step
    live.log_params({"init_used": init_used, "runtime": rt.describe(), "train_crops": n_train})
    return live


def _trim_live_history(metrics_dir: Path, steps: int) -> None:
    """Keep the first ``steps`` rows of each dvclive metric history.

    A run killed after logging an epoch but before saving its resume state logged a row
    that the resumed run logs again.
    """
    for tsv in sorted(metrics_dir.rglob("*.tsv")):
        with tsv.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t")
            fields = list(reader.fieldnames or [])
            rows = [row for row in reader if int(row["step"]) < steps]
        with tsv.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fields, delimiter="\t", lineterminator=os.linesep)
            writer.writeheader()
            writer.writerows(rows)


RESUME_FORMAT = "deepfake-detector/train-resume/1"

# Params that only change speed (dvc.yaml leaves them out of the stage's params too): a run
# may resume with another thread or worker count.
SPEED_ONLY_PARAMS = ("num_workers", "threads")


def run_fingerprint(p: TrainParams, rt: Runtime, manifest_path: Path, faces_path: Path, landmarks_path: Path | None,
                    model_out: Path, autoencoder_path: Path | None = None) -> dict[str, Any]:
    """What a training run's result depends on; a resume state is used only when this matches.

    The crop shards are not hashed (gigabytes): the crop stage rewrites ``faces.parquet``
    whenever it rewrites them, and the table names every member the run reads.
    """
    fingerprint = {
        "config": {k: v for k, v in to_dict(p).items() if k not in SPEED_ONLY_PARAMS},
        "runtime": rt.describe(),  # precision "auto" resolves per machine
        "manifest": file_digest(manifest_path),
        "faces": file_digest(faces_path),
        "landmarks": None if landmarks_path is None else file_digest(landmarks_path),
        "model_out": str(model_out),
    }
    if autoencoder_path is not None:  # only when used: a run without it keeps its fingerprint
        fingerprint["autoencoder"] = file_digest(autoencoder_path)
    return fingerprint


@dataclass
class FitState:
    """Where training stands after ``epoch`` finished epochs: what an interrupted run resumes from."""

    epoch: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"key": (-math.inf, -math.inf), "epoch": 0})
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    stale: int = 0  # epochs since the best one (early stopping)
    elapsed_s: float = 0.0  # training time so far, interrupted sessions included


@dataclass(frozen=True)
class ResumeFile:
    """The per-epoch resume state's path and the fingerprint of the run that writes it."""

    path: Path
    fingerprint: dict[str, Any]


def load_resume(resume: ResumeFile, rt: Runtime) -> dict[str, Any] | None:
    """Rank 0 reads and checks the resume state and hands it to every rank (other nodes may not see the file)."""
    payload = read_state(resume.path, RESUME_FORMAT, resume.fingerprint) if rt.is_main else None
    if rt.distributed:
        box = [payload]
        dist.broadcast_object_list(box, src=0)
        payload = box[0]
    return payload


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def _rng_states(rt: Runtime, loop: Loop) -> list[dict[str, torch.Tensor]]:
    """Every rank's random state: torch's (dropout), CUDA's, and the loader generator's (shuffling)."""
    mine = {"torch": torch.get_rng_state(), "loader": loop.loader.generator.get_state()}
    if rt.device.type == "cuda":
        mine["cuda"] = torch.cuda.get_rng_state(rt.device)
    if not rt.distributed:
        return [mine]
    everyone: list[Any] = [None] * rt.world_size
    dist.all_gather_object(everyone, mine)
    return everyone


def restore(payload: dict[str, Any], rt: Runtime, model: nn.Module, loop: Loop) -> FitState:
    """Put model, optimiser, schedule and random state back as they were after the stored epoch.

    Raises:
        RuntimeError: If the stored state does not fit the model or optimiser (code changed).
    """
    try:
        _unwrap(model).load_state_dict(payload["model"])
        loop.optimizer.load_state_dict(payload["optimizer"])
        if loop.scheduler is not None:
            loop.scheduler.load_state_dict(payload["scheduler"])
        rng = payload["rng"][rt.rank]
    except (KeyError, IndexError, ValueError, RuntimeError) as exc:
        raise RuntimeError(f"resume state does not fit this model ({exc}); delete it to start fresh") from exc
    torch.set_rng_state(rng["torch"])
    loop.loader.generator.set_state(rng["loader"])
    if "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], rt.device)
    best = {**payload["best"], "key": tuple(payload["best"]["key"])}  # compared with selection_key's tuples
    return FitState(epoch=int(payload["epoch"]), best=best, best_state=payload["best_state"],
                    stale=int(payload["stale"]), elapsed_s=float(payload["elapsed_s"]))


def save_resume(resume: ResumeFile, st: FitState, rt: Runtime, model: nn.Module, loop: Loop) -> None:
    """Write the state after ``st.epoch`` atomically (rank 0; every rank must call it)."""
    rng = _rng_states(rt, loop)
    if not rt.is_main:
        return
    payload = {
        "fingerprint": resume.fingerprint, "epoch": st.epoch,
        "model": {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()},
        "optimizer": loop.optimizer.state_dict(),
        "scheduler": None if loop.scheduler is None else loop.scheduler.state_dict(),
        "best": st.best, "best_state": st.best_state, "stale": st.stale, "elapsed_s": st.elapsed_s, "rng": rng,
    }
    write_state(resume.path, RESUME_FORMAT, payload)


def _run_epoch(p: TrainParams, rt: Runtime, model: nn.Module, loop: Loop, data: Splits, live: Any,
               epoch: int) -> tuple[float | None, float | None]:
    """Train one epoch, score val, log; returns the val (video AUC, frame AUC)."""
    if isinstance(loop.sampler, DistributedSampler):
        loop.sampler.set_epoch(epoch)
    loop.train_ds.set_epoch(epoch)
    stats = train_one_epoch(model, loop.loader, loop.optimizer, loop.loss_fn, rt, loop.scheduler,
                            desc=f"epoch {epoch}/{p.epochs}")
    val_logits = predict_logits(model, loop.val_ds, rt, batch_size=max(64, p.batch_size), desc="val")
    vauc = _video_auc(data.val, val_logits)
    fauc = roc_auc(data.val["y"].to_numpy(), val_logits)
    shift = perturbed_shift(data.val, sigmoid(np.asarray(val_logits, dtype=np.float64)))
    gauc = None
    if loop.val_generated is not None:
        gen_logits = predict_logits(model, loop.val_generated, rt, batch_size=max(64, p.batch_size), desc="val generated")
        gauc = twin_auc(data.val, val_logits, loop.val_generated.rows, gen_logits)
    logger.info("epoch %d: loss %.4f, %.1f img/s, val video AUC %s, frame AUC %s, perturbed reals' P(fake) shift %s%s",
                epoch, stats["loss"], stats["img_per_s"], _fmt(vauc), _fmt(fauc), _fmt(shift),
                "" if loop.val_generated is None else f", generated-fake frame AUC {_fmt(gauc)}")
    if live is not None:
        live.log_metric("train/loss", stats["loss"])
        live.log_metric("train/img_per_s", stats["img_per_s"])
        live.log_metric("val/video_auc", vauc if vauc is not None else float("nan"))
        live.log_metric("val/frame_auc", fauc if fauc is not None else float("nan"))
        if shift is not None:
            live.log_metric("val/perturbed_shift", shift)
        if loop.val_generated is not None:
            live.log_metric("val/generated_frame_auc", gauc if gauc is not None else float("nan"))
        live.next_step()
    return vauc, fauc


def _fit(p: TrainParams, rt: Runtime, model: nn.Module, loop: Loop, data: Splits, live: Any, resume: ResumeFile,
         st: FitState) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Train epoch by epoch after ``st``; keep the weights of the best :func:`selection_key`; stop early.

    The state after every epoch goes to ``resume.path``, so an interrupted run continues there.
    """
    first, t0 = st.epoch, time.perf_counter()
    while st.epoch < p.epochs and st.stale < p.patience:
        epoch, t_epoch = st.epoch + 1, time.perf_counter()
        vauc, fauc = _run_epoch(p, rt, model, loop, data, live, epoch)
        key = selection_key(vauc, fauc, epoch)
        if key > st.best["key"]:
            st.best_state = {k: v.detach().cpu().clone() for k, v in _unwrap(model).state_dict().items()}
            st.best = {"key": key, "epoch": epoch, "video_auc": vauc, "frame_auc": fauc}
            st.stale = 0
        else:
            st.stale += 1
        st.epoch, st.elapsed_s = epoch, st.elapsed_s + time.perf_counter() - t_epoch
        save_resume(resume, st, rt, model, loop)
        if st.stale >= p.patience:
            logger.info("early stop: no val video (then frame) AUC gain for %d epochs", st.stale)
        else:
            _log_eta(st, p.epochs, (time.perf_counter() - t0) / (epoch - first))
    return st.best, st.best_state


def _log_eta(st: FitState, epochs: int, per_epoch_s: float) -> None:
    """Elapsed training time and the time the remaining epochs take at this session's pace."""
    left = epochs - st.epoch
    logger.info("epoch %d/%d done: %s of training so far, about %s left for %d more epoch(s) (less on an early stop)",
                st.epoch, epochs, _hms(st.elapsed_s), _hms(left * per_epoch_s), left)


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _save(p: TrainParams, model: nn.Module, best: dict[str, Any], best_state: dict[str, torch.Tensor],
          init_used: str, model_out: Path) -> str:
    """Write the best epoch's weights as a self-describing checkpoint; returns the weights hash."""
    module = _unwrap(model)
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
