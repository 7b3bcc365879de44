"""Degradations at the source's scale, edge-preserving smoothing, and softened val reals in selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from deepfake_detector.model.sbi import (
    PERTURBED_SUFFIX,
    SbiCropDataset,
    SbiParams,
    perturbed_shift,
    with_perturbed_reals,
    with_sbi_twins,
)
from deepfake_detector.model.train import TrainParams
from deepfake_detector.model.transforms import AugmentParams, build_augment, perturb_at_source, picture_rect
from full_params import full
from test_sbi_training import real_crop_set

# Everything but the degradation under test switched off, so outputs can be compared.
QUIET = dict(crop_scale=(1.0, 1.0), hflip=0.0, color_jitter=0.0, hue=0.0, jpeg_prob=0.0)


def texture(size: int = 64, seed: int = 0) -> np.ndarray:
    """A fine random texture (RGB uint8): what a blur removes."""
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def detail(x: np.ndarray) -> float:
    """Mean absolute difference of horizontal neighbours: the fine detail left in an image."""
    return float(np.abs(np.diff(x.astype(np.float32), axis=1)).mean())


def test_source_scale_blurs_a_small_face_more_than_a_large_one() -> None:
    image = texture()
    params = full(AugmentParams, **QUIET, blur_prob=1.0, blur_sigma=(1.5, 1.5), degrade_scale="source")
    augment = build_augment(64, params)
    # The same 64-px crop, cut from a 32-px face (upscaled 2x) and from a 256-px face (shrunk 4x).
    small = augment(image, torch.Generator().manual_seed(0), source_side=32.0)
    large = augment(image, torch.Generator().manual_seed(0), source_side=256.0)
    assert detail(small) < 0.7 * detail(large) < 0.7 * detail(image)


def test_input_scale_ignores_the_source_side() -> None:
    image = texture()
    augment = build_augment(64, full(AugmentParams, **QUIET, blur_prob=1.0, downscale_prob=1.0, bilateral_prob=1.0))
    a = augment(image, torch.Generator().manual_seed(1), source_side=32.0)
    b = augment(image, torch.Generator().manual_seed(1), source_side=256.0)
    assert np.array_equal(a, b) and not np.array_equal(a, image)


def test_a_source_larger_than_the_downscale_reaches_is_left_alone() -> None:
    image = texture()
    augment = build_augment(64, full(AugmentParams, **QUIET, blur_prob=0.0, downscale_prob=1.0, downscale=(0.5, 0.5),
                                               degrade_scale="source"))
    # 0.5 of a 256-px face is still 128 px: more than the 64-px input holds.
    assert np.array_equal(augment(image, torch.Generator().manual_seed(0), source_side=256.0), image)
    assert not np.array_equal(augment(image, torch.Generator().manual_seed(0), source_side=64.0), image)


def test_bilateral_smooths_texture_but_keeps_an_edge() -> None:
    rng = np.random.default_rng(0)
    step = np.where(np.arange(64)[None, :, None] < 32, 60, 190).repeat(64, axis=0).repeat(3, axis=2)
    noisy = np.clip(step + rng.normal(0, 6, step.shape), 0, 255).astype(np.uint8)
    augment = build_augment(64, full(AugmentParams, **QUIET, blur_prob=0.0, bilateral_prob=1.0, bilateral_d=(9, 9),
                                              bilateral_sigma_color=(40.0, 40.0)))
    out = augment(noisy, torch.Generator().manual_seed(0)).astype(np.float32)
    flat = out[:, 4:26]
    assert flat.std() < 0.6 * noisy[:, 4:26].astype(np.float32).std()  # the noise is smoothed away
    assert out[:, 33:36].mean() - out[:, 28:31].mean() > 0.9 * 130  # the step stays a step


def test_perturb_at_source_depends_on_the_source_size() -> None:
    crop = texture()
    for kind in ("blur", "bilateral", "downscale"):
        from_small = perturb_at_source(crop, kind, source_side=48.0)
        assert from_small.shape == crop.shape and detail(from_small) < detail(crop), kind
    # A 1,000-px face shrunk to 64 px: a 1.2-px blur or a halving of the source barely reach the crop.
    assert detail(perturb_at_source(crop, "blur", 1000.0)) > 0.9 * detail(crop)
    assert np.array_equal(perturb_at_source(crop, "downscale", 1000.0), crop)
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb_at_source(crop, "sepia", 64.0)


def overhanging_crop(value: int = 128) -> np.ndarray:
    """A flat grey picture in a crop whose window overhangs the frame's top and left edges
    (black padding, as media.imaging.cut_window pads): rows 0-9 and columns 0-19."""
    crop = np.full((64, 64, 3), value, np.uint8)
    crop[:10], crop[:, :20] = 0, 0
    return crop


def test_picture_rect_finds_the_frame_inside_the_padding() -> None:
    assert picture_rect(overhanging_crop()) == (10, 64, 20, 64)
    assert picture_rect(texture()) is None  # no black edge: all picture
    assert picture_rect(np.zeros((8, 8, 3), np.uint8)) is None


def test_degradations_soften_the_picture_not_the_padding_edge() -> None:
    # A real photo is blurred before it is cropped: its padding stays black and its edge crisp.
    # Degrading the whole crop would darken the picture's first columns (and light the padding),
    # which the detector then never sees in training but meets in every blurred small photo.
    crop = overhanging_crop()
    strong = dict(blur_sigma=(2.5, 2.5), downscale=(0.3, 0.3), bilateral_d=(13, 13), noise_sigma=(8.0, 8.0))
    for name in ("blur_prob", "downscale_prob", "bilateral_prob", "noise_prob", "jpeg_prob"):
        params = full(AugmentParams, **{**QUIET, **strong, "blur_prob": 0.0, name: 1.0})
        out = build_augment(64, params)(crop, torch.Generator().manual_seed(0), source_side=64.0)
        assert not out[:10].any() and not out[:, :20].any(), name  # the padding is exactly black
        edge = out[10:, 20:23].astype(np.float32)
        assert abs(edge.mean() - 128) < 4, (name, edge.mean())  # the picture's edge is not darkened
    for kind in ("blur", "bilateral", "downscale"):
        out = perturb_at_source(crop, kind, source_side=32.0)
        assert not out[:10].any() and not out[:, :20].any(), kind
        assert np.array_equal(out[10:, 20:], crop[10:, 20:]), kind  # flat grey stays flat grey


def test_the_first_picture_line_keeps_its_share_of_black() -> None:
    # Resizing a window that overhangs the frame mixes black into the picture's first line
    # (here half: 64 of 128). A real blur happens before that resize: the line stays half
    # black and the next one stays the picture's, a 1-px edge that v5's fill softened into a
    # ramp (a detector trained so read a real blur of a photo as +0.07, the crop's as +0.04).
    crop = overhanging_crop()
    crop[10, 20:], crop[10:, 20] = 64, 64
    for kind in ("blur", "bilateral", "downscale"):
        out = perturb_at_source(crop, kind, source_side=32.0).astype(np.float32)
        assert not out[:10].any() and not out[:, :20].any(), kind
        assert abs(out[10, 30:].mean() - 64) < 2 and abs(out[11, 30:].mean() - 128) < 2, kind
        assert abs(out[30:, 20].mean() - 64) < 2 and abs(out[30:, 21].mean() - 128) < 2, kind
    params = full(AugmentParams, **{**QUIET, "blur_prob": 1.0, "blur_sigma": (2.5, 2.5)})
    out = build_augment(64, params)(crop, torch.Generator().manual_seed(0), source_side=64.0).astype(np.float32)
    assert abs(out[10, 30:].mean() - 64) < 2 and abs(out[11, 30:].mean() - 128) < 2


def _val_rows() -> pd.DataFrame:
    return pd.DataFrame({"video_id": ["a", "a", "b", "c", "f"], "y": [0, 0, 0, 0, 1]})


def test_with_perturbed_reals_copies_each_real_video_once_cycling_kinds() -> None:
    rows = with_sbi_twins(_val_rows())
    out = with_perturbed_reals(rows, ("blur", "bilateral"))
    copies = out[out["perturb"] != ""]
    assert len(out) == len(rows) + 4  # the 4 real rows (a, a, b, c), not the fake nor the SBI twins
    assert set(copies["video_id"]) == {f"{v}{PERTURBED_SUFFIX}" for v in "abc"}
    assert (copies["y"] == 0).all() and not copies["sbi"].any()
    assert copies.groupby("video_id")["perturb"].first().to_dict() == {
        f"a{PERTURBED_SUFFIX}": "blur", f"b{PERTURBED_SUFFIX}": "bilateral", f"c{PERTURBED_SUFFIX}": "blur"}
    assert len(with_perturbed_reals(rows, ())) == len(rows)
    with pytest.raises(ValueError, match="unknown perturbations"):
        with_perturbed_reals(rows, ("sepia",))


def test_perturbed_shift_is_the_mean_per_video_change() -> None:
    rows = with_perturbed_reals(_val_rows(), ("blur",))
    probs = np.zeros(len(rows))
    copy_a = (rows["video_id"] == f"a{PERTURBED_SUFFIX}").to_numpy()
    probs[copy_a] = [0.3, 0.5]  # a's copy: mean 0.4; b's and c's copies unchanged
    assert perturbed_shift(rows, probs) == pytest.approx(0.4 / 3)
    assert perturbed_shift(_val_rows(), np.zeros(5)) is None


def test_fixed_dataset_softens_the_perturbed_copies(tmp_path: Path) -> None:
    rows, crops = real_crop_set(tmp_path, 1)
    # As if the 96-px crops came from a 48-px face (a 472-px one barely feels a 1.2-px blur).
    rows = with_perturbed_reals(rows.assign(sbi=False, crop_side=48), ("blur",))
    ds = SbiCropDataset(rows, crops, lambda im: im, full(SbiParams, enabled=True), seed=0, mode="fixed")
    n = len(rows) // 2
    original, softened = ds[0][0], ds[n][0]
    assert float(ds[n][1]) == 0.0 and detail(softened) < detail(original)


def test_val_perturb_is_checked() -> None:
    with pytest.raises(ValueError, match="val_perturb"):
        full(TrainParams, val_perturb=("blur",))  # no SBI: nothing to score the copies against
    with pytest.raises(ValueError, match="val_perturb"):
        full(TrainParams, sbi=full(SbiParams, enabled=True), val_perturb=("sepia",))
    perturbed = full(TrainParams, sbi=full(SbiParams, enabled=True), val_perturb=("blur", "downscale"))
    assert perturbed.val_perturb == ("blur", "downscale")
