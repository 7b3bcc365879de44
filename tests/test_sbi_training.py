"""Online SBI in training: landmark mapping, determinism, real-only training."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepfake_detector import records
from deepfake_detector.media.imaging import crop_face, crop_window, encode_image
from deepfake_detector.media.shards import ShardWriter, shard_name
from deepfake_detector.model.sbi import SbiCropDataset, SbiParams, crop_landmarks, with_sbi_twins
from deepfake_detector.model.train import selection_key
from deepfake_detector.stages import train as train_stage
from full_params import crop_settings, full, params_file

# Grace Hopper's face in matplotlib's sample portrait (512x600): box and MTCNN landmarks,
# measured once; they only need to be roughly right for a blend mask.
BOX = (150.0, 95.0, 370.0, 390.0)
LANDMARKS = np.array([[210, 215], [305, 212], [262, 270], [222, 330], [300, 328]], dtype=np.float32)


def portrait() -> np.ndarray:
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        return np.asarray(Image.open(fh).convert("RGB"))


def real_crop_set(root: Path, n_videos: int, size: int = 96) -> tuple[pd.DataFrame, Path]:
    """Real-only crops of the portrait (slightly shifted per video) with crop windows."""
    image = portrait()
    rows, manifest = [], []
    with ShardWriter(root / "crops" / shard_name("crops", 0)) as w:
        for v in range(n_videos):
            split = ("train", "train", "val", "val", "test")[v % 5] if n_videos >= 5 else "train"
            vid = f"r{v:02d}"
            manifest.append({"video_id": vid, "path": f"{vid}.mp4", "label": "real", "split": split, "group": vid,
                             "source": "folder", "manipulation": "original", "status": "ok", "reason": ""})
            for f in range(3):
                dx = 4 * v + f
                box = (BOX[0] + dx, BOX[1], BOX[2] + dx, BOX[3])
                left, top, side = crop_window(box, 0.3)
                member = f"{vid}/{f:06d}_00.png"
                w.add(member, encode_image(crop_face(image, box, 0.3, size)))
                rows.append({"video_id": vid, "frame_index": f, "face_index": 0, "x1": box[0], "y1": box[1], "x2": box[2],
                             "y2": box[3],
                             "det_prob": 0.99, "landmarks": (LANDMARKS + [dx, 0]).reshape(-1).tolist(),
                             "crop_left": left, "crop_top": top, "crop_side": side, "shard": shard_name("crops",
                                                                                                        0), "member": member})
    faces = pd.DataFrame(rows)
    records.write_faces(faces, root / "faces.parquet", crop_settings())
    records.write_csv(pd.DataFrame(manifest), root / "manifest.csv", records.MANIFEST_COLUMNS)
    return faces.assign(y=0), root / "crops"


def test_crop_landmarks_land_on_the_face_in_crop_pixels(tmp_path: Path) -> None:
    rows, _ = real_crop_set(tmp_path, 1)
    row = rows.iloc[0]
    pts = crop_landmarks(row, 96)
    assert pts.shape == (5, 2) and (pts > 0).all() and (pts < 96).all()
    # eyes above the mouth, left eye left of the right eye: the mapping kept orientation
    assert pts[0, 0] < pts[1, 0] and pts[0, 1] < pts[3, 1]


def test_sbi_dataset_is_deterministic_and_only_alters_fakes(tmp_path: Path) -> None:
    rows, crops = real_crop_set(tmp_path, 2)
    ident = lambda im, gen=None, source_side=None: im  # noqa: E731 - raw crops, so pixels can be compared
    params = full(SbiParams, enabled=True, fake_share=0.5)
    a = SbiCropDataset(rows, crops, ident, params, seed=3, cache_bytes=10**9)  # a keeps decoded crops, b does not
    b = SbiCropDataset(rows, crops, ident, params, seed=3)
    ys = []
    for i in range(len(rows)):
        (xa, ya, _), (xb, yb, _) = a[i], b[i]
        assert np.array_equal(xa, xb) and float(ya) == float(yb)
        original = b.crops.reader.read_image(rows.iloc[i]["shard"], rows.iloc[i]["member"])
        assert np.array_equal(xa, original) == (float(ya) == 0.0)
        ys.append(float(ya))
    assert 0 < sum(ys) < len(ys)  # both real and synthetic fakes drawn
    a.set_epoch(1)
    assert any(float(a[i][1]) != ys[i] or not np.array_equal(a[i][0], b[i][0]) for i in range(len(rows)))
    # Blending never altered a kept crop: every one still equals the stored crop.
    assert a.crops.bytes > 0
    for (shard, member), kept in a.crops._images.items():
        assert np.array_equal(kept, b.crops.reader.read_image(shard, member))


def test_validation_twins_are_fixed_fakes(tmp_path: Path) -> None:
    rows, crops = real_crop_set(tmp_path, 2)
    twins = with_sbi_twins(rows)
    assert len(twins) == 2 * len(rows) and twins["y"].sum() == len(rows)
    assert set(twins.loc[twins["sbi"], "video_id"]) == {"r00#sbi", "r01#sbi"}
    ds = SbiCropDataset(twins, crops, lambda im: im, full(SbiParams, enabled=True), seed=0, mode="fixed")
    i = int(np.flatnonzero(twins["sbi"].to_numpy())[0])
    first = ds[i][0].copy()
    ds.set_epoch(5)
    assert np.array_equal(ds[i][0], first)


def test_sbi_params_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="fake_share"):
        full(SbiParams, enabled=True, fake_share=1.5)
    with pytest.raises(ValueError, match="drop_real_fakes"):
        full(SbiParams, enabled=False, drop_real_fakes=True)


def test_train_from_real_videos_only(tmp_path: Path) -> None:
    real_crop_set(tmp_path, 10, size=64)
    params_file(tmp_path / "p.yaml", train={
        "init": "random", "input_size": 32, "epochs": 1, "batch_size": 8, "precision": "fp32",
        "augment": {"jpeg_prob": 0.0}, "sbi": {"enabled": True, "drop_real_fakes": True}})
    train_stage.main(["--params", str(tmp_path / "p.yaml"), "--manifest", str(tmp_path / "manifest.csv"),
                      "--faces", str(tmp_path / "faces.parquet"), "--crops-dir", str(tmp_path / "crops"),
                      "--model-out", str(tmp_path / "m.pt"), "--live-dir", str(tmp_path / "live")])
    live = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert live["best_epoch"] == 1 and "val_video_auc" in live  # AUC defined: val had SBI twins as fakes


def test_selection_breaks_saturated_video_auc_ties_on_frame_auc() -> None:
    assert selection_key(1.0, 0.91, 3) > selection_key(1.0, 0.84, 1)  # both rank every val video right
    assert selection_key(0.99, 0.99, 2) < selection_key(1.0, 0.5, 1)  # the video AUC comes first
    assert selection_key(None, None, 3) > selection_key(None, None, 2)  # undefined: the latest epoch
