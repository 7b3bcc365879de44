"""The face autoencoder and the generated fakes it makes (issue 24)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from deepfake_detector.faces.blend import face_mask, self_blend
from deepfake_detector.faces.generated import generated_blend
from deepfake_detector.model import autoencoder as ae
from deepfake_detector.model.resume import resume_path
from deepfake_detector.model.sbi import SbiCropDataset, SbiParams, generated_twins, mask_points, with_sbi_twins
from deepfake_detector.stages import autoencoder as ae_stage
from deepfake_detector.stages import train as train_stage
from full_params import full, params_file
from test_sbi_training import LANDMARKS, portrait, real_crop_set

TINY = {"size": 32, "width": 8, "latent": 16, "epochs": 1, "batch_size": 4, "val_items": 4, "threads": 1}


def ident(image, gen=None, source_side=None):  # raw crops, so pixels can be compared
    return image


def _train_tiny_ae(tmp_path: Path, **overrides) -> Path:
    real_crop_set(tmp_path, 10, size=64)
    params = params_file(tmp_path / "ae.yaml", autoencoder={**TINY, **overrides})
    out = tmp_path / "models" / "autoencoder.pt"
    ae_stage.main(["--params", str(params), "--manifest", str(tmp_path / "manifest.csv"), "--faces",
                   str(tmp_path / "faces.parquet"), "--crops-dir", str(tmp_path / "crops"), "--out", str(out),
                   "--details", str(tmp_path / "autoencoder.json")])
    return out


def test_reconstruction_loss_falls_over_a_few_steps() -> None:
    torch.manual_seed(0)
    crop = cv2.resize(portrait()[95:390, 150:370], (32, 32), interpolation=cv2.INTER_AREA)
    x = ae._to_batch(np.stack([crop, crop[:, ::-1]]))
    model = ae.FaceAutoencoder(32, 8, 16)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.5, 0.999))
    losses = []
    for _ in range(30):
        loss = ae.reconstruction_loss(model(x), x, ssim_weight=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0]
    assert model(x).shape == x.shape


def test_reconstruct_keeps_the_crop_size_and_dtype() -> None:
    model = ae.FaceAutoencoder(32, 8, 16).eval()
    crop = portrait()[:100, :100].copy()
    rec = ae.reconstruct(model, crop)
    assert rec.shape == crop.shape and rec.dtype == np.uint8


def test_stage_trains_deterministically_and_writes_a_checkable_checkpoint(tmp_path: Path) -> None:
    out = _train_tiny_ae(tmp_path / "a")
    again = _train_tiny_ae(tmp_path / "b")
    details = json.loads((tmp_path / "a" / "autoencoder.json").read_text())
    assert details["train"]["crops"] == 12 and details["val"]["crops"] == 4  # train reals only; val apart
    assert np.isfinite(details["val"]["psnr"])
    payload = torch.load(out, weights_only=True)
    assert payload["config"] == {"size": 32, "width": 8, "latent": 16}
    assert payload["weights_sha256"] == details["weights_sha256"]
    assert torch.load(again, weights_only=True)["weights_sha256"] == details["weights_sha256"]  # same seed, same weights
    model, meta = ae.load_autoencoder(out)
    assert meta["epoch"] == 1 and model.size == 32
    assert not resume_path(out).exists()


def test_tampered_checkpoint_is_refused(tmp_path: Path) -> None:
    out = _train_tiny_ae(tmp_path)
    payload = torch.load(out, weights_only=True)
    name = next(iter(payload["model"]))
    payload["model"][name] = payload["model"][name] + 0.01
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(ae.AutoencoderError, match="weights_sha256"):
        ae.load_autoencoder(tmp_path / "edited.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ae.AutoencoderError, match="format tag"):
        ae.load_autoencoder(tmp_path / "other.pt")
    with pytest.raises(ae.AutoencoderError, match="not found"):
        ae.load_autoencoder(tmp_path / "missing.pt")


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = _train_tiny_ae(tmp_path / "whole", epochs=2)
    expected = torch.load(whole, weights_only=True)["weights_sha256"]
    real_epoch = ae.train_one_epoch

    def dies_in_epoch_2(model, data, optimizer, p, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(model, data, optimizer, p, epoch)

    monkeypatch.setattr(ae, "train_one_epoch", dies_in_epoch_2)
    with pytest.raises(SystemExit):
        _train_tiny_ae(tmp_path / "cut", epochs=2)
    out = tmp_path / "cut" / "models" / "autoencoder.pt"
    assert resume_path(out).is_file() and not out.exists()
    monkeypatch.setattr(ae, "train_one_epoch", real_epoch)
    _train_tiny_ae(tmp_path / "cut", epochs=2)
    assert torch.load(out, weights_only=True)["weights_sha256"] == expected


@pytest.mark.parametrize("kind", ["generated", "whole"])
def test_generated_fakes_differ_only_inside_the_dilated_face_mask(kind: str) -> None:
    image = portrait()
    rendering = cv2.GaussianBlur(image, (0, 0), 3.0)[..., ::-1].copy()  # blurred, channels swapped: differs everywhere
    for seed in range(5):
        fake, mask = generated_blend(image, rendering, LANDMARKS, np.random.default_rng(seed), full(SbiParams).blend, kind)
        changed = (fake != image).any(axis=2)
        assert changed.any() and not changed[mask == 0].any()
        # The mask stays near the face hull: inside the hull dilated by 30% of the face size.
        hull = face_mask(image.shape[:2], LANDMARKS).astype(np.uint8)
        radius = int(0.3 * np.sqrt(hull.sum()))
        near = cv2.dilate(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2))
        assert not changed[near == 0].any()
    if kind == "whole":
        assert mask.max() == pytest.approx(1.0)


def test_shares_zero_give_exactly_the_plain_sbi_items(tmp_path: Path) -> None:
    rows, crops = real_crop_set(tmp_path, 2)

    def never(crop):
        raise AssertionError("the generator must not run when both shares are 0")

    params = full(SbiParams, enabled=True, fake_share=0.5)
    ds = SbiCropDataset(rows, crops, ident, params, seed=3, generator=never)
    ds.set_epoch(2)
    for i in range(len(rows)):
        image, y, _ = ds[i]
        # The plain SBI item as written before generated fakes existed: same draws, same order.
        rng = np.random.default_rng([3, 2, i])
        original = ds.crops.reader.read_image(rows.iloc[i]["shard"], rows.iloc[i]["member"])
        expected, expected_y = original, 0.0
        if rng.random() < params.fake_share:
            points, _ = mask_points(ds._records[i], original.shape[0], params, rng)
            expected, expected_y = self_blend(original, points, rng, params.blend)[0], 1.0
        assert np.array_equal(image, expected) and float(y) == expected_y


def test_generated_shares_use_the_generator_and_keep_labels_honest(tmp_path: Path) -> None:
    rows, crops = real_crop_set(tmp_path, 3)
    calls = []

    def flat_grey(crop):
        calls.append(crop.shape)
        return np.full_like(crop, 128)

    params = full(SbiParams, enabled=True, fake_share=0.9, generated_share=0.5, whole_face_share=0.5)
    ds = SbiCropDataset(rows, crops, ident, params, seed=0, generator=flat_grey)
    for i in range(len(rows)):
        image, y, _ = ds[i]
        original = ds.crops.reader.read_image(rows.iloc[i]["shard"], rows.iloc[i]["member"])
        assert np.array_equal(image, original) == (float(y) == 0.0)
    assert calls and ds.kinds["generated"] + ds.kinds["whole"] == len(calls) and ds.kinds["sbi"] == 0
    with pytest.raises(ValueError, match="autoencoder"):
        SbiCropDataset(rows, crops, ident, params, seed=0)


def test_generated_validation_twins_are_fixed(tmp_path: Path) -> None:
    rows, crops = real_crop_set(tmp_path, 2)
    twins = generated_twins(with_sbi_twins(rows))
    assert len(twins) == len(rows) and set(twins["fake_kind"]) == {"generated"} and twins["y"].eq(1).all()
    ds = SbiCropDataset(twins, crops, lambda im: im, full(SbiParams, enabled=True), seed=0, mode="fixed",
                        generator=lambda crop: np.full_like(crop, 128))
    first = ds[0][0].copy()
    ds.set_epoch(4)
    assert np.array_equal(ds[0][0], first) and float(ds[0][1]) == 1.0


def test_sbi_params_check_the_shares() -> None:
    with pytest.raises(ValueError, match="<= 1"):
        full(SbiParams, enabled=True, generated_share=0.7, whole_face_share=0.5)
    with pytest.raises(ValueError, match="need sbi.enabled"):
        full(SbiParams, enabled=False, generated_share=0.3)
    assert not dataclasses.replace(full(SbiParams, enabled=True), generated_share=0.0).uses_generator


def _train_args(tmp_path: Path, params: Path) -> list[str]:
    return ["--params", str(params), "--manifest", str(tmp_path / "manifest.csv"), "--faces",
            str(tmp_path / "faces.parquet"), "--crops-dir", str(tmp_path / "crops"), "--model-out",
            str(tmp_path / "m.pt"), "--live-dir", str(tmp_path / "live")]


def _train_params(tmp_path: Path, **sbi) -> Path:
    return params_file(tmp_path / "p.yaml", train={
        "init": "random", "input_size": 32, "epochs": 1, "batch_size": 8, "precision": "fp32", "threads": 1,
        "augment": {"jpeg_prob": 0.0}, "sbi": {"enabled": True, "drop_real_fakes": True, **sbi}})


def test_train_stage_with_generated_fakes_end_to_end(tmp_path: Path) -> None:
    out = _train_tiny_ae(tmp_path)
    params = _train_params(tmp_path, generated_share=0.5, whole_face_share=0.2)
    train_stage.main(_train_args(tmp_path, params) + ["--autoencoder", str(out)])
    live = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert live["best_epoch"] == 1 and "val_video_auc" in live  # selection still on the plain SBI twins
    assert "generated_frame_auc" in live["val"]


def test_shares_without_the_autoencoder_are_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    real_crop_set(tmp_path, 10, size=64)
    params = _train_params(tmp_path, generated_share=0.3)
    with pytest.raises(SystemExit) as exc:
        train_stage.main(_train_args(tmp_path, params))
    assert exc.value.code == 1
    assert "train.sbi.generated_share=0.3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_stage.main(_train_args(tmp_path, params) + ["--autoencoder", str(tmp_path / "models" / "missing.pt")])
    err = capsys.readouterr().err
    assert "missing.pt: not found" in err and "generated_share" in err
