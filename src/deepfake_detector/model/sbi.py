"""Online Self-Blended Images (SBI) for training from real faces only.

Shiohara & Yamasaki (CVPR 2022): a real face blended with a jittered copy of itself
inside a (deformed, blurred) face mask shows the generic traces of face blending —
seams, colour and frequency mismatch — without any one generator's fingerprint, and
detectors trained on them generalise across datasets better than ones trained on the
fakes themselves. The blending itself lives in :mod:`deepfake_detector.faces.blend`, shared
with the embedded sample.

Masks (``train.sbi.mask``): ``landmarks`` takes the dense landmarks the ``landmarks`` stage
cached per crop (MediaPipe Face Mesh mapped to the 68 iBUG points, plus the mesh's face
oval up to the hairline). As in the paper's reference code, the hull includes the forehead
with probability ``forehead`` (its 81-point variant) and stops at the brows otherwise (68
points). Crops where the landmark model found no face fall back to MTCNN's five points,
counted. ``five_points`` uses only MTCNN's five points, a rough face hull.

Fakes with a generator's traces (``generated_share``, ``whole_face_share``): a synthesised
fake may take the face autoencoder's rendering of the crop as its source instead of the
jittered self-copy (:mod:`deepfake_detector.faces.generated`), through the same mask. With both
shares 0 nothing new is drawn: the random streams, and so the fakes, are those of plain SBI.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .. import records
from ..faces.blend import BlendParams, self_blend
from ..faces.generated import generated_blend
from ..scoring.metrics import roc_auc
from .data import DecodedCrops, item_generator
from .transforms import SOURCE_PERTURBATIONS, perturb_at_source

logger = logging.getLogger(__name__)

SBI_SUFFIX = "#sbi"  # pseudo-video id of a validation video's self-blended twin
PERTURBED_SUFFIX = "#perturbed"  # pseudo-video id of a validation real video's softened copy
GENERATED_SUFFIX = "#generated"  # pseudo-video id of a validation video's generated-fake twin (logged only)


@dataclass(frozen=True)
class SbiParams:
    """Params ``train.sbi``.

    Attributes:
        enabled: Synthesise self-blended fakes from real training crops.
        fake_share: Probability that a real training crop is turned into a fake.
        drop_real_fakes: Train on real videos only (ignore real deepfakes in train/val):
            the "real videos + SBI" mode. With ``enabled`` and real fakes kept: "mixed".
        mask: ``landmarks`` (the landmarks stage's dense points; needs its table) or
            ``five_points`` (MTCNN's five points: a rough hull).
        forehead: With ``landmarks``, probability that the mask hull includes the forehead
            (the face oval); otherwise it is the 68 points' hull (SBI: 0.75).
        blend: Blend strengths (see :class:`deepfake_detector.faces.blend.BlendParams`).
        generated_share: Probability that a synthesised training fake blends the face
            autoencoder's rendering of the crop (through the same deformed, blurred mask)
            instead of SBI's jittered self-copy. Needs the autoencoder stage's checkpoint.
        whole_face_share: Probability that a synthesised training fake replaces the whole
            face hull with the rendering (ratio 1, a barely feathered edge): a re-rendered face.
        whole_face_dilate: Range of the whole-face hull's dilation, in face sizes.
        whole_face_blur: Range of the whole-face edge's blur kernel, in face sizes.
    """

    enabled: bool
    fake_share: float
    drop_real_fakes: bool
    mask: Literal["landmarks", "five_points"]
    forehead: float
    blend: BlendParams
    generated_share: float
    whole_face_share: float
    whole_face_dilate: tuple[float, float]
    whole_face_blur: tuple[float, float]

    def __post_init__(self) -> None:
        if not 0 < self.fake_share < 1:
            raise ValueError(f"sbi.fake_share must be in (0, 1), got {self.fake_share}")
        if self.drop_real_fakes and not self.enabled:
            raise ValueError("sbi.drop_real_fakes needs sbi.enabled: without SBI there would be no fakes")
        if not 0 <= self.forehead <= 1:
            raise ValueError(f"sbi.forehead must be in [0, 1], got {self.forehead}")
        for name in ("generated_share", "whole_face_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"sbi.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.generated_share + self.whole_face_share > 1:
            raise ValueError("sbi.generated_share + sbi.whole_face_share must be <= 1 (the rest are plain SBI fakes)")
        if self.uses_generator and not self.enabled:
            raise ValueError("sbi.generated_share and sbi.whole_face_share need sbi.enabled")
        for name in ("whole_face_dilate", "whole_face_blur"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi <= 0.3:
                raise ValueError(f"sbi.{name} must satisfy 0 <= low <= high <= 0.3, got {getattr(self, name)}")

    @property
    def uses_generator(self) -> bool:
        """Whether some training fakes come from the face autoencoder."""
        return self.generated_share > 0 or self.whole_face_share > 0

    def fake_kind(self, rng: np.random.Generator) -> str:
        """``sbi``, ``generated`` or ``whole`` for one training fake; draws nothing when both shares are 0."""
        if not self.uses_generator:
            return "sbi"
        u = rng.random()
        if u < self.generated_share:
            return "generated"
        return "whole" if u < self.generated_share + self.whole_face_share else "sbi"


def crop_landmarks(row: Mapping[str, Any], crop_side_px: int, column: str = "landmarks") -> np.ndarray:
    """A face's landmarks (frame pixels, flat) in its crop's pixels, via the crop window
    recorded by crop_faces; ``column`` is ``landmarks`` (MTCNN's 5), ``points68`` or ``oval``."""
    points = np.asarray(row[column], dtype=np.float32).reshape(-1, 2)
    origin = np.array([row["crop_left"], row["crop_top"]], dtype=np.float32)
    return (points - origin) * (crop_side_px / float(row["crop_side"]))


def attach_landmarks(rows: pd.DataFrame, landmarks: pd.DataFrame) -> pd.DataFrame:
    """Face rows with the landmarks stage's ``points68`` and ``oval`` (empty where it found none)."""
    out = rows.drop(columns=["points68", "oval"], errors="ignore").merge(
        landmarks[[*records.FACE_KEY, "points68", "oval"]], on=records.FACE_KEY, how="left", validate="one_to_one")
    for column in ("points68", "oval"):
        out[column] = [v if isinstance(v, (list, np.ndarray)) else [] for v in out[column]]
    return out


def mask_points(row: Mapping[str, Any], crop_side_px: int, params: SbiParams,
                rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """The points whose hull is this face's SBI mask, in crop pixels.

    Returns:
        ``(points, dense)``: 68 points (plus the face oval with probability
        ``params.forehead``) when dense landmarks are wanted and exist, else MTCNN's five
        points; ``dense`` says which.
    """
    if params.mask == "landmarks" and len(row["points68"]) == 136:
        points = crop_landmarks(row, crop_side_px, "points68")
        if len(row["oval"]) and rng.random() < params.forehead:
            points = np.concatenate([points, crop_landmarks(row, crop_side_px, "oval")])
        return points, True
    return crop_landmarks(row, crop_side_px), False


def with_sbi_twins(rows: pd.DataFrame) -> pd.DataFrame:
    """Add, for every real row, a self-blended twin in a pseudo-video ``<id>#sbi`` (label fake).

    Used for validation, where the twins are synthesised deterministically so the video-level
    AUC that selects the checkpoint is stable across epochs.
    """
    real = rows[rows["y"] == 0]
    twins = real.assign(video_id=real["video_id"] + SBI_SUFFIX, y=1, sbi=True)
    out = pd.concat([rows.assign(sbi=False), twins], ignore_index=True)
    return out


def with_perturbed_reals(rows: pd.DataFrame, kinds: tuple[str, ...]) -> pd.DataFrame:
    """Add, for every real video, a copy softened at its source's scale (label real).

    The copy of the k-th real video (in sorted id order) gets ``kinds[k % len(kinds)]``
    (:func:`deepfake_detector.model.transforms.perturb_at_source`), in a pseudo-video
    ``<id>#perturbed``. Checkpoint selection then scores SBI twins against reals that
    include blurred, denoised and downscaled ones: a model that calls soft footage fake
    loses validation AUC for it, whatever its training loss says.

    Args:
        rows: Validation face rows (``with_sbi_twins``' output or plain); only ``y == 0``
            rows of non-twin videos are copied.
        kinds: Perturbations to cycle through; empty adds nothing.

    Returns:
        ``rows`` with the copies appended and a ``perturb`` column ("" where unperturbed).
    """
    out = rows.assign(perturb="")
    if not kinds:
        return out
    unknown = sorted(set(kinds) - set(SOURCE_PERTURBATIONS))
    if unknown:
        raise ValueError(f"unknown perturbations {unknown}; expected some of {SOURCE_PERTURBATIONS}")
    sbi = out["sbi"] if "sbi" in out else pd.Series(False, index=out.index)
    real = out[(out["y"] == 0) & ~sbi.astype(bool)]
    videos = sorted(real["video_id"].unique())
    kind_of = {v: kinds[k % len(kinds)] for k, v in enumerate(videos)}
    copies = real.assign(video_id=real["video_id"] + PERTURBED_SUFFIX, perturb=real["video_id"].map(kind_of))
    return pd.concat([out, copies], ignore_index=True)


def _plain_reals(rows: pd.DataFrame) -> np.ndarray:
    """Which rows are real faces as stored: no SBI twin, no perturbed copy."""
    plain = (rows["y"] == 0).to_numpy(copy=True)
    for column in ("sbi", "perturb"):
        if column in rows:
            plain &= ~rows[column].astype(bool).to_numpy()
    return plain


def generated_twins(rows: pd.DataFrame) -> pd.DataFrame:
    """A generated-fake twin (``fake_kind="generated"``, label fake) of every plain validation real.

    Only logged (:func:`twin_auc`), never used for checkpoint selection: selection keeps the
    plain SBI twins, so runs with and without generated fakes are selected alike.

    Args:
        rows: Validation rows (plain, or with SBI twins and perturbed copies: those are skipped).

    Returns:
        The twins alone, in pseudo-videos ``<id>#generated``.
    """
    real = rows[_plain_reals(rows)]
    return real.assign(video_id=real["video_id"] + GENERATED_SUFFIX, y=1, sbi=True, perturb="",
                       fake_kind="generated").reset_index(drop=True)


def twin_auc(rows: pd.DataFrame, logits: np.ndarray, twins: pd.DataFrame, twin_logits: np.ndarray) -> float | None:
    """Frame AUC of the plain reals of ``rows`` against their twins (:func:`generated_twins`)."""
    plain = _plain_reals(rows)
    scores = np.concatenate([np.asarray(logits)[plain], np.asarray(twin_logits)])
    labels = np.concatenate([np.zeros(int(plain.sum())), np.ones(len(twins))])
    return roc_auc(labels, scores)


def perturbed_shift(rows: pd.DataFrame, probs: np.ndarray) -> float | None:
    """Mean P(fake) of the perturbed copies minus that of their originals, per video (None if none).

    Args:
        rows: Rows from :func:`with_perturbed_reals`.
        probs: P(fake) per row, aligned with ``rows``.
    """
    if "perturb" not in rows or not (rows["perturb"] != "").any():
        return None
    per_video = pd.Series(probs, index=rows.index).groupby(rows["video_id"]).mean()
    copies = [v for v in per_video.index if v.endswith(PERTURBED_SUFFIX)]
    originals = [v.removesuffix(PERTURBED_SUFFIX) for v in copies]
    return float((per_video[copies].to_numpy() - per_video[originals].to_numpy()).mean())


# What SbiCropDataset.__getitem__ reads of a face row.
_ITEM_COLUMNS = ("shard", "member", "y", "sbi", "perturb", "landmarks", "crop_left", "crop_top", "crop_side",
                 "points68", "oval", "fake_kind")


class SbiCropDataset(Dataset):
    """Face crops where real ones may become self-blended fakes.

    In ``train`` mode every real crop becomes a fake with probability ``fake_share``, drawn
    from a generator keyed on (seed, epoch, index) so a run is reproducible with any number
    of workers. In ``fixed`` mode, rows with ``sbi=True`` are synthesised with a generator
    keyed on (seed, index) only: the same fakes every epoch. In ``train`` mode ``transform``
    is called as ``transform(image, gen)`` (the augmentation's draws, keyed on the same
    (seed, epoch, index): :func:`deepfake_detector.model.data.item_generator`) with the crop's
    ``source_side``; in ``fixed`` mode as ``transform(image)``, after the perturbation a
    row's ``perturb`` names (:func:`with_perturbed_reals`), if any.

    Yields ``(image, y, index)`` like :class:`deepfake_detector.model.data.CropDataset`, and keeps
    up to ``cache_bytes`` of decoded crops in memory as it does (self-blending starts from the
    stored crop, never from an earlier blend).

    ``generator`` (``crop -> rendering``, :func:`deepfake_detector.model.autoencoder.reconstructor`)
    is needed when ``params`` has a generated or whole-face share (train mode) or ``rows`` a
    ``fake_kind`` column naming one of those kinds (fixed mode).
    """

    def __init__(
        self,
        rows: pd.DataFrame,
        crops_dir: Path,
        transform: Callable[..., torch.Tensor],
        params: SbiParams,
        seed: int,
        mode: str = "train",
        cache_bytes: int = 0,
        generator: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        missing = [c for c in ("landmarks", "crop_left", "crop_top", "crop_side") if c not in rows]
        if missing:
            raise ValueError(f"SBI needs faces.parquet columns {missing}: rerun crop_faces")
        if params.mask == "landmarks" and not {"points68", "oval"} <= set(rows.columns):
            raise ValueError("sbi.mask: landmarks needs the landmarks stage's table (attach_landmarks)")
        if mode not in ("train", "fixed"):
            raise ValueError(f"mode must be train or fixed, got {mode!r}")
        wants_generator = params.uses_generator if mode == "train" else (
            "fake_kind" in rows and rows["fake_kind"].isin(["generated", "whole"]).any())
        if wants_generator and generator is None:
            raise ValueError("train.sbi.generated_share / whole_face_share need the face autoencoder (--autoencoder)")
        self.rows = rows.reset_index(drop=True)
        # Plain dicts of the columns an item reads: ``DataFrame.iloc[i]`` took about 1 ms per
        # item here (the landmark lists are Arrow-backed), as long as the augmentation.
        columns = [c for c in _ITEM_COLUMNS if c in self.rows]
        self._records: list[dict[str, Any]] = self.rows[columns].to_dict("records")
        self.crops = DecodedCrops(crops_dir, cache_bytes)
        self.transform = transform
        self.params = params
        self.seed = seed
        self.mode = mode
        self.epoch = 0
        self.failed = 0
        self.sparse = 0  # fakes whose mask fell back to five points (no dense landmarks)
        self.generator = generator
        self.kinds = {"sbi": 0, "generated": 0, "whole": 0}  # fakes made, by kind (this process)

    def set_epoch(self, epoch: int) -> None:
        """New random draws for a new epoch (train mode)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def _wants_fake(self, i: int, row: Mapping[str, Any], rng: np.random.Generator) -> bool:
        if self.mode == "fixed":
            return bool(row.get("sbi", False))
        return int(row["y"]) == 0 and rng.random() < self.params.fake_share

    def _fake_kind(self, row: Mapping[str, Any], rng: np.random.Generator) -> str:
        if self.mode == "fixed":
            return row.get("fake_kind") or "sbi"
        return self.params.fake_kind(rng)

    def _synthesise(self, image: np.ndarray, points: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
        if kind == "sbi":
            return self_blend(image, points, rng, self.params.blend)[0]
        assert self.generator is not None  # checked in __init__
        p = self.params
        return generated_blend(image, self.generator(image), points, rng, p.blend, kind, p.whole_face_dilate,
                               p.whole_face_blur)[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        row = self._records[i]
        image = self.crops.get(row["shard"], row["member"])
        key = [self.seed, i] if self.mode == "fixed" else [self.seed, self.epoch, i]
        rng = np.random.default_rng(key)
        y = float(row["y"])
        if self._wants_fake(i, row, rng):
            points, dense = mask_points(row, image.shape[0], self.params, rng)
            if self.params.mask == "landmarks" and not dense:
                self.sparse += 1
            kind = self._fake_kind(row, rng)
            try:
                image = self._synthesise(image, points, kind, rng)
                self.kinds[kind] += 1
                y = 1.0
            except ValueError as exc:
                # A face too small or landmarks off the crop: keep the real crop with its
                # real label (never a fake label on an unaltered face) and count it.
                self.failed += 1
                y = 0.0
                if self.failed <= 3:
                    logger.warning("SBI failed on %s (%s): used as a real crop", row["member"], exc)
        if self.mode == "train":  # augmentation draws keyed like the SBI ones (data.item_generator)
            gen = item_generator(self.seed, self.epoch, i)
            return self.transform(image, gen, source_side=float(row["crop_side"])), torch.tensor(y), i
        if row.get("perturb"):
            image = perturb_at_source(image, row["perturb"], float(row["crop_side"]))
        return self.transform(image), torch.tensor(y), i
