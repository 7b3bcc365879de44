"""A small face autoencoder, the classic face-swap pipeline in miniature, as a fake generator.

Self-Blended Images teach a detector blending boundaries; talking-head generators and face
re-renderers leave none, and what they do leave is a decoder's texture: the smoothing of a
bottleneck that cannot keep every pore, and the periodic traces of learned upsampling
(pixel shuffle, transposed convolutions). This module trains such a decoder on the train
split's real faces only (never val or test), so that training can make fakes carrying a
generator's traces from real faces alone (:mod:`deepfake_detector.faces.generated`).

The network is the face-swap autoencoder's shape at a small size: strided 5x5 convolutions
down to ``size/16``, a dense bottleneck of ``latent`` values (it forces the lossy,
identity-level code that makes a reconstruction a rendering rather than a copy), and a
decoder of "upscale" blocks (3x3 convolution to 4x the channels, then ``PixelShuffle(2)``),
as faceswap/DeepFaceLab build theirs. One encoder and one decoder: a face is reconstructed
as itself (a swap would need two identities per model).

Checkpoints describe themselves (``{"format", "model", "config", "params", "epoch",
"val_metrics", "weights_sha256"}``) and :func:`load_autoencoder` reads them with
``torch.load(..., weights_only=True)`` and refuses weights that do not match their hash.
Training is deterministic given the seed and thread count, and resumable per epoch
(``<out>.resume.pt``, like the train stage's).
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .. import records
from ..core.config import to_dict
from ..core.errors import InputError
from .data import DecodedCrops, load_face_table
from .network import weights_hash
from .resume import file_digest, read_state, resume_path, write_state

logger = logging.getLogger(__name__)

AE_FORMAT = "deepfake-detector/autoencoder/1"
RESUME_FORMAT = "deepfake-detector/autoencoder-resume/1"

# Resized training crops kept in memory after the first epoch (128 px: 48 KiB each, so
# 1 GiB holds about 21,000); beyond it crops are decoded and resized every epoch.
CACHE_BYTES = 2**30


class AutoencoderError(InputError):
    """An autoencoder checkpoint that cannot be used (missing, not ours, edited)."""


@dataclass(frozen=True)
class AutoencoderParams:
    """Params section ``autoencoder``.

    Attributes:
        size: Side of the square face crop the network sees, px (a multiple of 16); crops
            are resized to it and reconstructions back to the crop's size.
        width: Channels of the first encoder layer; doubled at each of the 4 downsamplings.
        latent: Size of the dense bottleneck.
        epochs: Passes over the training crops.
        batch_size: Crops per step.
        lr: Adam learning rate (betas 0.5, 0.999 as in faceswap).
        ssim_weight: Weight of the structural term ``(1 - SSIM) / 2`` added to the L1 loss.
        hflip: Probability that a training crop is mirrored.
        max_items: Train on at most this many crops (evenly spaced over the sorted table);
            0: all of the train split's real crops.
        val_items: Reconstruction metrics on at most this many val real crops.
        seed: Initialisation, shuffling and flips.
        threads: Intra-op threads (0: torch's default). Speed only, but results are
            bit-identical only for the same count.
    """

    size: int
    width: int
    latent: int
    epochs: int
    batch_size: int
    lr: float
    ssim_weight: float
    hflip: float
    max_items: int
    val_items: int
    seed: int
    threads: int

    def __post_init__(self) -> None:
        if self.size < 32 or self.size % 16:
            raise ValueError(f"autoencoder.size must be a multiple of 16 and >= 32, got {self.size}")
        if self.width < 4 or self.latent < 8:
            raise ValueError(f"autoencoder.width must be >= 4 and latent >= 8, got {self.width}, {self.latent}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("autoencoder.epochs and batch_size must be >= 1")
        if self.lr <= 0:
            raise ValueError(f"autoencoder.lr must be > 0, got {self.lr}")
        if self.ssim_weight < 0 or not 0 <= self.hflip <= 1:
            raise ValueError("autoencoder.ssim_weight must be >= 0 and hflip in [0, 1]")
        if self.max_items < 0 or self.val_items < 0 or self.threads < 0:
            raise ValueError("autoencoder.max_items, val_items and threads must be >= 0")

    def arch(self) -> dict[str, int]:
        """What the network's shape depends on (stored in the checkpoint)."""
        return {"size": self.size, "width": self.width, "latent": self.latent}


# Params that only change speed: a run may resume with another thread count.
SPEED_ONLY_PARAMS = ("threads",)


# ----------------------------------------------------------------------------- network


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 5, stride=2, padding=2), nn.LeakyReLU(0.1))


def _up(cin: int, cout: int) -> nn.Sequential:
    """faceswap's upscale block: a convolution to 4x the channels, then pixel shuffle (2x)."""
    return nn.Sequential(nn.Conv2d(cin, 4 * cout, 3, padding=1), nn.LeakyReLU(0.1), nn.PixelShuffle(2))


class FaceAutoencoder(nn.Module):
    """Encoder (4 strided convs + dense bottleneck) and pixel-shuffle decoder.

    Args:
        size: Input side, px (a multiple of 16).
        width: Channels of the first encoder layer.
        latent: Bottleneck size.

    Input and output are ``(B, 3, size, size)`` floats in [0, 1].
    """

    def __init__(self, size: int = 128, width: int = 32, latent: int = 256) -> None:
        super().__init__()
        self.size, self.grid = size, size // 16
        w = width
        self.encoder = nn.Sequential(_down(3, w), _down(w, 2 * w), _down(2 * w, 4 * w), _down(4 * w, 8 * w))
        self.to_latent = nn.Linear(8 * w * self.grid**2, latent)
        self.from_latent = nn.Linear(latent, 8 * w * self.grid**2)
        self.decoder = nn.Sequential(_up(8 * w, 4 * w), _up(4 * w, 2 * w), _up(2 * w, w), _up(w, w // 2))
        self.to_rgb = nn.Conv2d(w // 2, 3, 5, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        z = self.to_latent(self.encoder(x).flatten(1))  # (B, latent)
        h = self.from_latent(z).view(b, -1, self.grid, self.grid)  # (B, 8w, S/16, S/16)
        return torch.sigmoid(self.to_rgb(self.decoder(h)))  # (B, 3, S, S)


def build_autoencoder(arch: dict[str, int]) -> FaceAutoencoder:
    """The network for ``{"size", "width", "latent"}`` (:meth:`AutoencoderParams.arch`)."""
    return FaceAutoencoder(int(arch["size"]), int(arch["width"]), int(arch["latent"]))


# ----------------------------------------------------------------------------- losses


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Mean SSIM of two ``(B, C, H, W)`` batches in [0, 1], with a box window (cheap)."""
    c1, c2 = 0.01**2, 0.03**2
    pool = lambda t: F.avg_pool2d(t, window, stride=1)  # noqa: E731
    mu_a, mu_b = pool(a), pool(b)
    var_a = pool(a * a) - mu_a**2
    var_b = pool(b * b) - mu_b**2
    cov = pool(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean()


def reconstruction_loss(out: torch.Tensor, target: torch.Tensor, ssim_weight: float) -> torch.Tensor:
    """L1, plus ``ssim_weight`` times the structural dissimilarity ``(1 - SSIM) / 2``."""
    loss = F.l1_loss(out, target)
    if ssim_weight > 0:
        loss = loss + ssim_weight * (1 - ssim(out, target)) / 2
    return loss


def psnr(out: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio of [0, 1] images, dB (over the whole batch)."""
    mse = float(F.mse_loss(out, target))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


# ----------------------------------------------------------------------------- use


def _to_batch(images: np.ndarray) -> torch.Tensor:
    """``(B, S, S, 3)`` uint8 -> ``(B, 3, S, S)`` float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def resize_crop(crop: np.ndarray, size: int) -> np.ndarray:
    """A crop resized to the autoencoder's side (area filter down, linear up)."""
    if crop.shape[0] == size and crop.shape[1] == size:
        return crop
    interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)


def reconstruct(model: FaceAutoencoder, crop: np.ndarray) -> np.ndarray:
    """The autoencoder's rendering of a face crop, at the crop's size.

    Args:
        model: A trained autoencoder (:func:`load_autoencoder`), in eval mode.
        crop: RGB uint8 ``(H, W, 3)`` face crop.

    Returns:
        RGB uint8 ``(H, W, 3)``: the crop resized to ``model.size``, run through the
        network, and resized back (cubic: the decoder's texture survives better than with
        linear interpolation).
    """
    h, w = crop.shape[:2]
    small = resize_crop(crop, model.size)
    # inference_mode is thread-local: this runs in the loader's thread as well as the main one.
    with torch.inference_mode():
        out = model(_to_batch(small[None]))[0]  # (3, S, S)
    rgb = (out.permute(1, 2, 0).mul(255.0).round().clamp(0, 255).to(torch.uint8)).numpy()
    if (h, w) != rgb.shape[:2]:
        rgb = np.clip(cv2.resize(rgb, (w, h), interpolation=cv2.INTER_CUBIC), 0, 255)
    return rgb


def reconstructor(model: FaceAutoencoder) -> Callable[[np.ndarray], np.ndarray]:
    """``crop -> reconstruction`` for :class:`deepfake_detector.model.sbi.SbiCropDataset` (picklable for loader workers)."""
    return _Reconstructor(model)


class _Reconstructor:
    def __init__(self, model: FaceAutoencoder) -> None:
        self.model = model.eval()

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        return reconstruct(self.model, crop)


# ----------------------------------------------------------------------------- checkpoints


def save_autoencoder(path: Path, model: FaceAutoencoder, params: AutoencoderParams, epoch: int,
                     val_metrics: dict[str, float]) -> str:
    """Write a self-describing checkpoint (atomically); returns its weights hash."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    digest = weights_hash(state)
    payload = {"format": AE_FORMAT, "model": state, "config": params.arch(), "params": to_dict(params),
               "epoch": int(epoch), "val_metrics": {k: float(v) for k, v in val_metrics.items()}, "weights_sha256": digest}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return digest


def load_autoencoder(path: Path) -> tuple[FaceAutoencoder, dict[str, Any]]:
    """Load a checkpoint of :func:`save_autoencoder` safely (weights only, hash checked).

    Args:
        path: The ``autoencoder`` stage's ``models/autoencoder.pt``.

    Returns:
        ``(model in eval mode, payload without the weights)``.

    Raises:
        AutoencoderError: If the file is missing, unreadable with ``weights_only=True``, not
            an autoencoder checkpoint, or its weights do not match ``weights_sha256``.
    """
    path = Path(path)
    if not path.is_file():
        raise AutoencoderError(f"{path}: autoencoder checkpoint not found (run the autoencoder stage)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise AutoencoderError(f"{path}: not a loadable autoencoder checkpoint ({detail})") from exc
    if not isinstance(payload, dict) or payload.get("format") != AE_FORMAT:
        raise AutoencoderError(f"{path}: not an autoencoder checkpoint (no '{AE_FORMAT}' format tag)")
    state, config = payload.get("model"), payload.get("config")
    if not isinstance(state, dict) or not isinstance(config, dict):
        raise AutoencoderError(f"{path}: no weights or config")
    if weights_hash(state) != payload.get("weights_sha256"):
        raise AutoencoderError(f"{path}: weights do not match the checkpoint's weights_sha256 (corrupt or edited)")
    try:
        model = build_autoencoder(config)
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise AutoencoderError(f"{path}: weights do not fit its config {config} ({str(exc)[:200]})") from exc
    return model.eval(), {k: v for k, v in payload.items() if k != "model"}


# ----------------------------------------------------------------------------- data


def spaced(rows: pd.DataFrame, n: int) -> pd.DataFrame:
    """At most ``n`` rows, evenly spaced (all of them when ``n`` is 0 or not smaller)."""
    if n <= 0 or len(rows) <= n:
        return rows.reset_index(drop=True)
    return rows.iloc[np.linspace(0, len(rows) - 1, n).round().astype(int)].reset_index(drop=True)


def real_rows(faces_path: Path, manifest_path: Path, split: str) -> pd.DataFrame:
    """The real face crops of one split (sorted by video, frame, face)."""
    faces = load_face_table(faces_path, records.read_manifest(manifest_path), splits=[split])
    return faces[faces["y"] == 0].reset_index(drop=True)


class ResizedCrops:
    """Face crops of ``rows`` at the autoencoder's side, kept in memory up to a budget."""

    def __init__(self, rows: pd.DataFrame, crops_dir: Path, size: int, max_bytes: int = CACHE_BYTES) -> None:
        self.rows = rows.reset_index(drop=True)
        self.crops = DecodedCrops(crops_dir, 0)
        self.size = size
        fits = len(rows) * size * size * 3 <= max_bytes
        self._cache = np.zeros((len(rows), size, size, 3), np.uint8) if fits else None
        self._have = np.zeros(len(rows), bool)

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, i: int) -> np.ndarray:
        if self._cache is not None and self._have[i]:
            return self._cache[i]
        row = self.rows.iloc[i]
        image = resize_crop(self.crops.get(row["shard"], row["member"]), self.size)
        if self._cache is not None:
            self._cache[i], self._have[i] = image, True
        return image

    def batch(self, indices: np.ndarray, flips: np.ndarray | None = None) -> torch.Tensor:
        """``(B, 3, S, S)`` floats of the crops at ``indices``, mirrored where ``flips``."""
        images = np.stack([self.get(int(i)) for i in indices])
        if flips is not None and flips.any():
            images[flips] = images[flips, :, ::-1]
        return _to_batch(images)


# ----------------------------------------------------------------------------- training


def _epoch_draws(p: AutoencoderParams, epoch: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The epoch's order and flips, keyed on (seed, epoch): a resumed run draws the same."""
    rng = np.random.default_rng([p.seed, epoch])
    return rng.permutation(n), rng.random(n) < p.hflip


def train_one_epoch(model: FaceAutoencoder, data: ResizedCrops, optimizer: torch.optim.Optimizer, p: AutoencoderParams,
                    epoch: int) -> dict[str, float]:
    """One pass over ``data`` in the epoch's order; returns the mean loss and L1, and img/s."""
    model.train()
    order, flips = _epoch_draws(p, epoch, len(data))
    total = l1_sum = 0.0
    seen, t0 = 0, time.perf_counter()
    starts = range(0, len(order), p.batch_size)
    for start in tqdm(starts, desc=f"autoencoder epoch {epoch}/{p.epochs}", unit="batch", leave=False):
        idx = order[start:start + p.batch_size]
        x = data.batch(idx, flips[idx])
        out = model(x)
        loss = reconstruction_loss(out, x, p.ssim_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(idx)
        l1_sum += float(F.l1_loss(out.detach(), x)) * len(idx)
        seen += len(idx)
    dt = time.perf_counter() - t0
    return {"loss": total / max(seen, 1), "l1": l1_sum / max(seen, 1), "img_per_s": seen / dt if dt > 0 else 0.0}


def evaluate(model: FaceAutoencoder, data: ResizedCrops, batch_size: int = 64) -> dict[str, float]:
    """Reconstruction L1 (0-1 scale) and PSNR (dB) at the autoencoder's side."""
    model.eval()
    if len(data) == 0:
        return {}
    l1_sum = se_sum = 0.0
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            x = data.batch(np.arange(start, min(start + batch_size, len(data))))
            out = model(x)
            l1_sum += float((out - x).abs().mean(dim=(1, 2, 3)).sum())
            se_sum += float(((out - x) ** 2).mean(dim=(1, 2, 3)).sum())
    mse = se_sum / len(data)
    return {"l1": l1_sum / len(data), "psnr": math.inf if mse == 0 else 10 * math.log10(1.0 / mse)}


def _fingerprint(p: AutoencoderParams, manifest_path: Path, faces_path: Path) -> dict[str, Any]:
    return {"params": {k: v for k, v in to_dict(p).items() if k not in SPEED_ONLY_PARAMS},
            # Bare digests (not file_digest's dict): states written before keep resuming.
            "manifest": file_digest(manifest_path)["sha256"], "faces": file_digest(faces_path)["sha256"]}


def run_autoencoder(p: AutoencoderParams, manifest_path: Path, faces_path: Path, crops_dir: Path,
                    out: Path) -> dict[str, Any]:
    """Train the face autoencoder on the train split's real crops; save it; return its metrics.

    Args:
        p: The ``autoencoder`` params.
        manifest_path: ``data/manifest.csv`` (splits and labels).
        faces_path: ``data/faces.parquet``.
        crops_dir: Crop shards.
        out: Checkpoint to write (``models/autoencoder.pt``).

    Returns:
        ``{"train": {...}, "val": {...}, "weights_sha256": ...}``: the last epoch's training
        loss, L1 and throughput, and the val reconstruction L1/PSNR.

    Raises:
        InputError: If the train split has no real crops.
    """
    if p.threads:
        torch.set_num_threads(p.threads)
    train_rows = spaced(real_rows(faces_path, manifest_path, "train"), p.max_items)
    # The guarantee the detector's evaluation rests on: val/test faces never train the generator.
    assert set(train_rows["split"]) <= {"train"}
    if train_rows.empty:
        raise InputError(f"{faces_path}: no real face crops in the train split to train the autoencoder on")
    val_rows = spaced(real_rows(faces_path, manifest_path, "val"), p.val_items)
    train_data = ResizedCrops(train_rows, crops_dir, p.size)
    val_data = ResizedCrops(val_rows, crops_dir, p.size)
    logger.info("autoencoder: %d train crops, %d val crops, %d px, %d thread(s)", len(train_data), len(val_data), p.size,
                torch.get_num_threads())

    torch.manual_seed(p.seed)
    model = build_autoencoder(p.arch())
    optimizer = torch.optim.Adam(model.parameters(), lr=p.lr, betas=(0.5, 0.999))
    fingerprint = _fingerprint(p, manifest_path, faces_path)
    state = read_state(resume_path(out), RESUME_FORMAT, fingerprint)
    start, history = 0, []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, history = int(state["epoch"]), list(state["history"])
        logger.info("resuming after epoch %d of %d", start, p.epochs)
    for epoch in range(start + 1, p.epochs + 1):
        stats = train_one_epoch(model, train_data, optimizer, p, epoch)
        history.append(stats)
        logger.info("autoencoder epoch %d/%d: loss %.4f, L1 %.4f, %.1f img/s", epoch, p.epochs, stats["loss"], stats["l1"],
                    stats["img_per_s"])
        write_state(resume_path(out), RESUME_FORMAT, {"fingerprint": fingerprint, "epoch": epoch, "history": history,
                                        "model": model.state_dict(), "optimizer": optimizer.state_dict()})
    val = evaluate(model, val_data)
    if val:
        logger.info("autoencoder val: L1 %.4f, PSNR %.2f dB on %d crops", val["l1"], val["psnr"], len(val_data))
    digest = save_autoencoder(out, model, p, p.epochs, val)
    resume_path(out).unlink(missing_ok=True)
    last = history[-1] if history else {}
    return {
        "train": {"crops": len(train_data), "epochs": p.epochs, "loss": last.get("loss"), "l1": last.get("l1"),
                  "img_per_s": last.get("img_per_s")},
        "val": {"crops": len(val_data), **val},
        "params": asdict(p),
        "weights_sha256": digest,
    }
