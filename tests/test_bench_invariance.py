"""benchmarks/bench_invariance.py: the perturbations do what they say, clips round-trip losslessly, the summary counts right.

No model and no face detection here (the benchmark's judging is the CLI's Judge, tested in test_cli.py).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from benchmarks import bench_invariance as bench

from deepfake_detector import records
from deepfake_detector.media.video import read_frames

RNG = np.random.default_rng(0)


def _textured(h: int = 64, w: int = 96) -> np.ndarray:
    """Mid-grey RGB uint8 with fine texture, away from 0 and 255 so nothing clips."""
    return RNG.integers(80, 176, (h, w, 3), dtype=np.uint8)


def _lap_var(rgb: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


@pytest.mark.parametrize("name", list(bench.PERTURBATIONS))
def test_perturbation_changes_pixels_keeps_shape(name: str) -> None:
    img = _textured()
    out = bench.perturb([img], bench.PERTURBATIONS[name], seed=0)[0]
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img.astype(int)).mean() > 1


def test_blur_is_gaussian_sigma_1_2_and_softens() -> None:
    img = _textured()
    out = bench.blur(img, RNG)
    assert np.array_equal(out, cv2.GaussianBlur(img, (9, 9), 1.2))  # OpenCV's kernel for sigma 1.2 on uint8 is 9x9
    assert _lap_var(out) < 0.2 * _lap_var(img)


def test_noise_sigma_6_seeded() -> None:
    img = np.full((200, 200, 3), 128, np.uint8)
    p = bench.PERTURBATIONS["noise"]
    a, b, c = (bench.perturb([img], p, seed)[0] for seed in (0, 0, 1))
    residual = a.astype(float) - 128
    assert abs(residual.std() - 6.0) < 0.1 and abs(residual.mean()) < 0.1
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_jpeg_35_matches_an_encode_decode() -> None:
    img = _textured()
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 35])
    assert ok
    assert np.array_equal(bench.jpeg(img, RNG), cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))


def test_downscale_removes_detail_finer_than_half_resolution() -> None:
    checker = (np.indices((64, 96)).sum(0) % 2 * 255).astype(np.uint8)
    out = bench.downscale(np.dstack([checker] * 3), RNG)
    assert out.shape == (64, 96, 3) and np.abs(out.astype(int) - 128).max() <= 1  # 1-px checkerboard: flat grey
    ramp = np.dstack([np.tile(np.linspace(0, 255, 96).astype(np.uint8), (64, 1))] * 3)
    assert np.abs(bench.downscale(ramp, RNG).astype(int) - ramp.astype(int))[:, 2:-2].max() <= 2  # smooth content stays


def test_bilateral_smooths_flat_areas_keeps_edges() -> None:
    img = np.zeros((64, 96, 3), np.uint8)
    img[:, 48:] = 200
    noisy = bench.noise(img.copy() + 20, np.random.default_rng(0))
    out = bench.bilateral(noisy, RNG)
    assert out[:, 4:40].std() < 0.5 * noisy[:, 4:40].std()
    assert out[:, 52:].mean() - out[:, :44].mean() > 170


@pytest.mark.parametrize("size", [(48, 64), (47, 61)])
def test_video_clip_roundtrips_losslessly(tmp_path: Path, size: tuple[int, int]) -> None:
    frames = [RNG.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(16)]
    path, written = bench.write_item(frames, records.KIND_VIDEO, tmp_path / "down0.5")
    assert path.name == "down0.5.avi"
    info, got = read_frames(path, 16)  # the detector's own reader and sampling: all 16 frames
    assert [f.frame_index for f in got] == list(range(16)) and info.decode_errors == 0
    assert bench.max_abs_diff(written, {f.frame_index: f.image for f in got}) == 0
    assert all(np.array_equal(w[: size[0], : size[1]], f) for w, f in zip(written, frames))  # odd sides: padded only


def test_photo_roundtrips_as_a_still(tmp_path: Path) -> None:
    img = _textured(51, 37)
    path, written = bench.write_item([img], records.KIND_IMAGE, tmp_path / "identity")
    info, got = read_frames(path, 16)
    assert info.kind == records.KIND_IMAGE and np.array_equal(got[0].image, img)


def _row(kind: str, ident: float, pert: float, threshold: float = 0.5) -> dict:
    def verdict(p: float) -> str:
        return records.FAKE if p >= threshold else records.REAL

    return {"kind": kind, "failed": None, bench.IDENTITY: {"prob_fake": ident, "verdict": verdict(ident)},
            "blur": {"prob_fake": pert, "verdict": verdict(pert), "delta": pert - ident, "psnr_db": 35.0,
                     "flip": verdict(ident) != verdict(pert)}}


def test_summary_counts_flips_and_failures() -> None:
    rows = [_row("video", 0.1, 0.2), _row("video", 0.45, 0.55), _row("image", 0.3, 0.3),
            {"kind": "video", "failed": "original: no_face: ..."}]
    s = bench.summarize(rows, "blur")
    assert (s["n_items"], s["n_scored"], s["n_failed"], s["flips"], s["flips_to_fake"]) == (4, 3, 1, 1, 1)
    assert s["mean_delta"] == pytest.approx(0.2 / 3) and s["mean_delta_met"] is False and s["flips_met"] is False
    assert bench.summarize(rows[2:], "blur")["mean_delta_met"] is True
    assert bench.summarize(rows[3:], "blur")["mean_delta_met"] is None
    assert "**not met**" in bench.markdown_table([("all", s)])
