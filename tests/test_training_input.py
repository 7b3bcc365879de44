"""The training input path: OpenCV augmentations, decoded-crop cache, batch loading threads."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.transforms.v2 as T
from torch.utils.data import DataLoader, Dataset, default_collate

from deepfake_detector.core.threads import torch_threads
from deepfake_detector.media.imaging import encode_image
from deepfake_detector.media.shards import ShardWriter
from deepfake_detector.model.data import CropDataset, DecodedCrops, collate_channels_last
from deepfake_detector.model.engine import predict_logits, prefetch, setup_runtime
from deepfake_detector.model.transforms import (
    AugmentParams,
    _wrap_degrees,
    build_augment,
    build_eval_transform,
    build_train_transform,
)
from full_params import full

OFF = full(AugmentParams, crop_scale=(1.0, 1.0), hflip=0.0, color_jitter=0.0, hue=0.0, blur_prob=0.0, jpeg_prob=0.0)


@pytest.fixture
def crop(portrait: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(portrait[100:260, 180:340])  # 160x160, a face


def test_train_transform_without_augmentation_is_the_eval_transform(crop: np.ndarray) -> None:
    # A full-frame window of a square crop, no flip, no jitter: exactly what inference sees.
    assert torch.equal(build_train_transform(160, OFF)(crop), build_eval_transform(160)(crop))


@pytest.mark.parametrize("side", [160, 224, 97])  # as is, shrunk, enlarged
@pytest.mark.parametrize("as_tensor", [False, True])
def test_eval_transform_is_torchvisions_resize_todtype_normalize(crop: np.ndarray, side: int, as_tensor: bool) -> None:
    """The table-based normalisation gives torchvision's values to the bit, in any input size."""
    image = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA if side < 160 else cv2.INTER_LINEAR)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    reference = T.Compose([T.Resize((160, 160), antialias=True), T.ToDtype(torch.float32, scale=True),
                           T.Normalize(mean=list(mean), std=list(std))])
    chw = torch.from_numpy(image).permute(2, 0, 1)
    arg = chw.contiguous() if as_tensor else image
    got = build_eval_transform(160, mean, std)(arg)
    assert got.shape == (3, 160, 160) and got.dtype == torch.float32
    assert torch.equal(got, reference(chw.contiguous() if as_tensor else chw))


def test_eval_transform_rejects_what_is_not_an_rgb_uint8_image() -> None:
    with pytest.raises(ValueError, match="uint8"):
        build_eval_transform(16)(torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match="uint8"):
        build_eval_transform(16)(np.zeros((16, 16), np.uint8))


def test_hue_wrap_is_np_mod() -> None:
    rng = np.random.default_rng(0)
    edges = [-180.0, -1e-30, -1e-6, 0.0, 179.99, 359.99997, 360.0, 360.00003, 539.99]
    a = np.concatenate([rng.uniform(-180, 540, 10**5), edges]).astype(np.float32)
    got = _wrap_degrees(a)
    assert got.dtype == np.float32 and np.array_equal(got, np.mod(a, 360.0))
    with pytest.raises(ValueError, match="hue"):
        full(AugmentParams, hue=0.6)


def test_collate_channels_last_is_default_collate_in_channels_last(crop: np.ndarray) -> None:
    tf = build_train_transform(64, full(AugmentParams))
    items = [(tf(crop), torch.tensor(float(i % 2)), i) for i in range(5)]
    images, y, idx = collate_channels_last(items)
    ref_images, ref_y, ref_idx = default_collate(items)
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(images, ref_images) and torch.equal(y, ref_y) and torch.equal(idx, ref_idx)
    # Already in the layout the training loop converts to: no copy left for the compute thread.
    assert images.contiguous(memory_format=torch.channels_last).data_ptr() == images.data_ptr()


def test_augmentations_do_what_they_say(crop: np.ndarray) -> None:
    torch.manual_seed(0)
    flipped = build_augment(160, full(AugmentParams, **{**OFF.__dict__, "hflip": 1.0}))(crop)
    assert np.array_equal(flipped, crop[:, ::-1])
    jpeg = build_augment(160, full(AugmentParams, **{**OFF.__dict__, "jpeg_prob": 1.0, "jpeg_quality": (60, 60)}))(crop)
    diff = np.abs(jpeg.astype(int) - crop).mean()
    assert 0 < diff < 6  # re-compressed: changed, but the same picture
    blur = build_augment(160, full(AugmentParams, **{**OFF.__dict__, "blur_prob": 1.0}))(crop)
    assert np.abs(np.diff(blur.astype(float), axis=1)).mean() < np.abs(np.diff(crop.astype(float), axis=1)).mean()
    small = build_augment(96, full(AugmentParams, **{**OFF.__dict__, "crop_scale": (0.5, 0.6)}))(crop)
    assert small.shape == (96, 96, 3) and small.dtype == np.uint8


def _sharpness(x: np.ndarray) -> float:
    return float(np.abs(np.diff(x.astype(float), axis=1)).mean())


def test_global_degradations_do_what_they_say(crop: np.ndarray) -> None:
    torch.manual_seed(0)
    down = build_augment(160, full(AugmentParams, **{**OFF.__dict__, "downscale_prob": 1.0, "downscale": (0.4, 0.4)}))(crop)
    assert down.shape == crop.shape and _sharpness(down) < _sharpness(crop)
    sharp = build_augment(160, full(AugmentParams, **{**OFF.__dict__, "sharpen_prob": 1.0, "sharpen": (1.0, 1.0)}))(crop)
    assert _sharpness(sharp) > _sharpness(crop)
    noisy = build_augment(160, full(AugmentParams, **{**OFF.__dict__, "noise_prob": 1.0, "noise_sigma": (6.0, 6.0)}))(crop)
    residual = noisy.astype(float) - crop
    assert 4.5 < residual[(crop > 30) & (crop < 225)].std() < 7.5  # sigma 6 where nothing clips
    # A blur of sigma 2 reaches further than the old fixed 5-px kernel allowed.
    wide = build_augment(160, full(AugmentParams, **{**OFF.__dict__, "blur_prob": 1.0, "blur_sigma": (2.0, 2.0)}))(crop)
    narrow = build_augment(160, full(AugmentParams, **{**OFF.__dict__, "blur_prob": 1.0, "blur_sigma": (0.5, 0.5)}))(crop)
    assert _sharpness(wide) < _sharpness(narrow) < _sharpness(crop)


def test_degradations_off_draw_nothing(crop: np.ndarray) -> None:
    # Recipes without the new degradations keep their random stream, so their results.
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    build_augment(96, full(AugmentParams))(crop, gen_a)
    build_augment(96, full(AugmentParams, downscale=(0.3, 0.5), noise_sigma=(2.0, 3.0)))(crop, gen_b)
    assert torch.equal(gen_a.get_state(), gen_b.get_state())


@pytest.mark.parametrize("kwargs", [{"downscale": (0.0, 0.5)}, {"downscale": (0.5, 1.5)}, {"blur_sigma": (0.0, 1.0)},
                                    {"noise_sigma": (5.0, 2.0)}, {"sharpen_prob": 1.5}])
def test_degradation_params_are_checked(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="augment"):
        full(AugmentParams, **kwargs)


def test_colour_jitter_moves_colours_but_keeps_grey_grey() -> None:
    jitter = build_augment(64, full(AugmentParams, **{**OFF.__dict__, "color_jitter": 0.3, "hue": 0.1}))
    grey = np.tile(np.linspace(20, 230, 64, dtype=np.uint8)[None, :, None], (64, 1, 3))
    torch.manual_seed(1)
    out = jitter(grey).astype(int)
    assert np.abs(out[..., 0] - out[..., 1]).max() <= 1 and np.abs(out[..., 1] - out[..., 2]).max() <= 1
    assert not np.array_equal(out, grey)  # brightness/contrast still apply


def test_train_transform_is_reproducible_from_torch_seed(crop: np.ndarray) -> None:
    tf = build_train_transform(128, full(AugmentParams, jpeg_prob=0.5, blur_prob=0.5))
    torch.manual_seed(7)
    a = [tf(crop) for _ in range(4)]
    torch.manual_seed(7)
    b = [tf(crop) for _ in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], a[1])  # and random from one call to the next
    assert a[0].shape == (3, 128, 128) and a[0].dtype == torch.float32


def _write_crops(folder: Path, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    with ShardWriter(folder / "crops-00000.tar") as w:
        for i in range(n):
            member = f"v/{i:06d}_00.png"
            w.add(member, encode_image(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)))
            rows.append({"shard": "crops-00000.tar", "member": member, "y": i % 2})
    return pd.DataFrame(rows)


def test_decoded_crops_stay_within_their_budget(tmp_path: Path) -> None:
    rows = _write_crops(tmp_path, 4)
    one = 32 * 32 * 3
    cache = DecodedCrops(tmp_path, max_bytes=2 * one + 10)
    first = [cache.get(r.shard, r.member) for r in rows.itertuples()]
    assert cache.bytes == 2 * one and len(cache._images) == 2
    again = [cache.get(r.shard, r.member) for r in rows.itertuples()]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert again[0] is first[0] and again[3] is not first[3]  # kept vs decoded again
    assert DecodedCrops(tmp_path).get(rows.shard[0], rows.member[0]).shape == (32, 32, 3)


class _ThreadSpy(Dataset):
    """Records the intra-op thread count and the thread each item is made in."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        self.seen.append((torch.get_num_threads(), threading.current_thread().name))
        return torch.zeros(3, 8, 8), torch.tensor(0.0), i


@pytest.mark.parametrize("threads", [1, 2])
def test_in_process_loading_runs_single_threaded(threads: int) -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 1))
    data = _ThreadSpy(10)
    rt = setup_runtime("fp32", device="cpu")
    with torch_threads(threads):
        logits = predict_logits(model, data, rt, batch_size=4)
        assert torch.get_num_threads() == threads  # restored for the computation
    assert logits.shape == (10,)
    assert {t for t, _ in data.seen} == {1}
    # One thread: a background thread prepares batches; two: loading takes turns with compute.
    assert {name for _, name in data.seen} == ({"prefetch"} if threads == 1 else {threading.main_thread().name})


def test_prefetch_keeps_order_raises_and_stops() -> None:
    assert list(prefetch(iter(range(7)), depth=2)) == list(range(7))

    def failing():
        yield 1
        raise ValueError("bad crop")

    got = []
    with pytest.raises(ValueError, match="bad crop"):
        for item in prefetch(failing()):
            got.append(item)
    assert got == [1]
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    gen = prefetch(endless(), depth=2)
    assert next(gen) == 0
    gen.close()  # joins the thread: it stopped after at most depth + 2 items
    assert len(produced) <= 4


def test_crop_dataset_reads_through_the_cache(tmp_path: Path) -> None:
    rows = _write_crops(tmp_path, 3)
    ds = CropDataset(rows, tmp_path, build_eval_transform(16), cache_bytes=10**6)
    loader = DataLoader(ds, batch_size=3)
    (x, y, idx), = list(loader)
    assert x.shape == (3, 3, 16, 16) and y.tolist() == [0.0, 1.0, 0.0] and ds.crops.bytes == 3 * 32 * 32 * 3


def test_cached_and_decoded_training_batches_are_identical(tmp_path: Path) -> None:
    """Keeping decoded crops changes nothing a batch holds, in the first epoch or later ones."""
    rows = _write_crops(tmp_path, 6)
    tf = build_train_transform(16, full(AugmentParams, jpeg_prob=0.5, blur_prob=0.5, hflip=0.5))
    epochs = {}
    for budget in (0, 10**6):
        ds = CropDataset(rows, tmp_path, tf, cache_bytes=budget, seed=3)
        loader = DataLoader(ds, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0),
                            collate_fn=collate_channels_last)
        epochs[budget] = []
        for epoch in (1, 2):
            ds.set_epoch(epoch)
            epochs[budget].append([(x.clone(), y, i) for x, y, i in loader])
    assert ds.crops.bytes == 6 * 32 * 32 * 3
    for uncached, cached in zip(epochs[0], epochs[10**6]):
        for (xa, ya, ia), (xb, yb, ib) in zip(uncached, cached, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)


def test_training_items_are_keyed_not_drawn_from_the_global_rng(tmp_path: Path) -> None:
    """Batches are prepared in a background thread while the model draws from torch's global RNG
    (dropout): the augmentation must not depend on how those draws interleave."""
    rows = _write_crops(tmp_path, 3)
    tf = build_train_transform(16, full(AugmentParams, jpeg_prob=0.5, blur_prob=0.5, hflip=0.5))
    ds = CropDataset(rows, tmp_path, tf, seed=5)
    torch.manual_seed(0)
    first = [ds[i][0] for i in range(3)]
    torch.manual_seed(1)
    torch.rand(100)  # another thread's draws in between
    assert all(torch.equal(a, ds[i][0]) for i, a in enumerate(first))
    ds.set_epoch(1)
    assert not all(torch.equal(a, ds[i][0]) for i, a in enumerate(first))  # a new epoch, new draws
    other = CropDataset(rows, tmp_path, tf, seed=6)
    assert not all(torch.equal(a, other[i][0]) for i, a in enumerate(first))
