"""Tests of the embedded sample generator and its ``make_sample`` stage."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

import full_params
from deepfake_detector.core import config
from deepfake_detector.pipeline import make_sample as sample
from deepfake_detector.pipeline.make_sample import SampleParams
from deepfake_detector.stages import make_sample as stage
from full_params import full

TINY = full(SampleParams, clips_per_identity=2, frames=6, fps=12, size=128, seed=0)


def _read_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    return frames


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def tiny_sample(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    sample.make_sample(out, TINY)
    return out


@pytest.fixture(scope="module")
def portraits() -> list[sample.Portrait]:
    return sample.load_portraits()


def _labels(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / sample.LABELS_FILE, dtype=str, keep_default_na=False)


def test_videos_decode_with_expected_frames_and_size(tiny_sample):
    labels = _labels(tiny_sample)
    videos = sorted(p.name for p in tiny_sample.glob("*.mp4"))
    assert videos == sorted(labels["file"])
    assert len(videos) == 6 * TINY.clips_per_identity
    for name in videos:
        frames = _read_frames(tiny_sample / name)
        assert len(frames) == TINY.frames, name
        assert all(f.shape == (TINY.size, TINY.size, 3) for f in frames), name


def test_labels_rows_and_origins(tiny_sample):
    labels = _labels(tiny_sample)
    assert list(labels.columns) == sample.LABEL_COLUMNS
    assert labels["file"].is_unique
    real = labels[labels["label"] == "real"]
    fake = labels[labels["label"] == "fake"]
    n = TINY.clips_per_identity
    assert len(real) == 2 * n and len(fake) == 4 * n
    assert (real["manipulation"] == "original").all() and (real["origin"] == "").all()
    assert sorted(fake["manipulation"].value_counts().items()) == [("sbi", 2 * n), ("swap", 2 * n)]
    real_by_file = real.set_index("file")
    for row in fake.itertuples():
        origins = row.origin.split(";")
        assert origins == sorted(origins) and set(origins) <= set(real_by_file.index), row.file
        if row.manipulation == "sbi":
            assert len(origins) == 1 and real_by_file.loc[origins[0], "identity"] == row.identity
        else:
            # A swap comes from one clip of each identity with the same clip index; its
            # identity is the target's, whose real clip is among the origins.
            assert sorted(real_by_file.loc[origins, "identity"]) == sorted(sample.IDENTITIES)
            assert row.identity in set(real_by_file.loc[origins, "identity"])
            assert len({o.rsplit("_", 1)[1] for o in origins}) == 1


def test_masks_cover_every_fake_frame(tiny_sample):
    labels = _labels(tiny_sample)
    masks = pd.read_csv(tiny_sample / sample.MASKS_FILE, keep_default_na=False)
    assert list(masks.columns) == sample.MASK_COLUMNS
    fakes = sorted(labels.loc[labels["label"] == "fake", "file"])
    assert sorted(masks["file"].unique()) == fakes
    for file, group in masks.groupby("file"):
        assert sorted(group["frame_index"]) == list(range(TINY.frames)), file
        for text in group["polygon"]:
            polygon = np.array(json.loads(text))
            assert polygon.ndim == 2 and polygon.shape[0] >= 3 and polygon.shape[1] == 2, file
            assert polygon.min() >= 0 and polygon.max() < TINY.size, file
            # A face-sized region, not a speck and not the whole frame.
            area = cv2.contourArea(polygon.astype(np.float32))
            assert 0.02 * TINY.size**2 < area < 0.6 * TINY.size**2, file


def test_fakes_differ_from_their_real_clip_around_the_mask(tiny_sample):
    masks = pd.read_csv(tiny_sample / sample.MASKS_FILE, keep_default_na=False)
    for real_name, fake_name in [("astronaut_00.mp4", "astronaut_00_sbi.mp4"), ("grace_hopper_01.mp4",
                                                                                "grace_hopper_01_swap.mp4")]:
        real = _read_frames(tiny_sample / real_name)[0].astype(float)
        fake = _read_frames(tiny_sample / fake_name)[0].astype(float)
        row = masks[(masks["file"] == fake_name) & (masks["frame_index"] == 0)].iloc[0]
        inside = np.zeros(real.shape[:2], np.uint8)
        cv2.fillPoly(inside, [np.array(json.loads(row["polygon"]), np.int32)], 1)
        far = cv2.dilate(inside, np.ones((25, 25), np.uint8)) == 0
        diff = np.abs(real - fake).mean(axis=2)
        # The encoder adds small differences everywhere; the manipulation is inside.
        assert diff[inside == 1].mean() > 2 * diff[far].mean() + 1.0, fake_name


def test_landmarks_track_the_face(portraits):
    from facenet_pytorch import MTCNN

    detector = MTCNN(post_process=False, keep_all=True, device="cpu")
    for k, portrait in enumerate(portraits):
        clip = sample.render_clip(portrait, k, 1, full(SampleParams, clips_per_identity=2, frames=5, size=160))
        for t in (0, 4):
            boxes, probs, points = detector.detect(clip.frames[t], landmarks=True)
            assert boxes is not None, f"{portrait.identity} frame {t}: no face"
            best = np.asarray(points[int(np.argmax(probs))], dtype=np.float64)
            err = np.linalg.norm(best - clip.landmarks[t], axis=1).max()
            eye_dist = np.linalg.norm(clip.landmarks[t][1] - clip.landmarks[t][0])
            assert err < 0.2 * eye_dist, f"{portrait.identity} frame {t}: landmark error {err:.1f} px"


def test_stage_main_is_deterministic(tiny_sample, tmp_path):
    # The stage entry point, run on the same params, gives byte-identical files.
    params_file = tmp_path / "params.yaml"
    full_params.params_file(params_file, sample={"clips_per_identity": 2, "frames": 6, "fps": 12, "size": 128, "seed": 0},
                            train={"epochs": 1})
    out = tmp_path / "out"
    stage.main(["--params", str(params_file), "--out", str(out)])
    assert _digests(out) == _digests(tiny_sample)


def test_clips_do_not_depend_on_clip_count(portraits):
    a = sample.render_clip(portraits[0], 0, 1, full(SampleParams, clips_per_identity=2, frames=3, size=96))
    b = sample.render_clip(portraits[0], 0, 1, full(SampleParams, clips_per_identity=5, frames=3, size=96))
    c = sample.render_clip(portraits[0], 0, 1, full(SampleParams, clips_per_identity=2, frames=3, size=96, seed=1))
    np.testing.assert_array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)


def test_refuses_to_clear_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / "old.mp4").write_bytes(b"")
    with pytest.raises(FileExistsError, match="notes.txt"):
        sample.make_sample(tmp_path, TINY)
    assert (tmp_path / "notes.txt").exists() and (tmp_path / "old.mp4").exists()


@pytest.mark.parametrize(
    "override, key",
    [({"clips_per_identity": 1}, "clips_per_identity"), ({"frames": 0}, "frames"), ({"size": 16}, "size"),
     ({"colour": True}, "colour")],
)
def test_sample_params_validation(override, key):
    with pytest.raises(config.ConfigError, match=key):
        full(SampleParams, **override)
