"""Tests for deepfake_detector.faces: detection in full-resolution pixels, bad frame sizes,
selection rules, crops."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import SHARED_DATA, noise_frames, portrait_frames

from deepfake_detector.config import ConfigError, from_mapping, load_section
from deepfake_detector.faces import CropParams, FaceDetector, _DetectionView, detect_and_crop
from deepfake_detector.imaging import crop_face, crop_window
from deepfake_detector.video import read_frames

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(CropParams(), device="cpu")


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_faces_in_a_real_clip(detector: FaceDetector, portrait_clip: Path) -> None:
    _, frames = read_frames(portrait_clip, 4)
    faces = detector.detect([f.image for f in frames])
    assert [len(f) for f in faces] == [1, 1, 1, 1]
    for f in (fs[0] for fs in faces):
        assert f.prob >= 0.9 and f.landmarks.shape == (5, 2)
        x1, y1, x2, y2 = f.box
        assert x1 < f.landmarks[:, 0].min() and f.landmarks[:, 0].max() < x2
        assert y1 < f.landmarks[:, 1].min() and f.landmarks[:, 1].max() < y2
    # The face slides right by 2 px per frame: the boxes follow it.
    centres = [(fs[0].box[0] + fs[0].box[2]) / 2 for fs in faces]
    assert centres == sorted(centres)


def test_boxes_are_in_full_resolution_pixels(detector: FaceDetector) -> None:
    frame = portrait_frames(1, width=1280, height=720)[0]  # detected on a 640x360 copy
    (found,) = detector.detect([frame])
    assert len(found) == 1
    boxes, _ = detector.mtcnn.detect(frame[None])  # MTCNN on the full frame
    assert iou(found[0].box, tuple(boxes[0][0])) > 0.7
    assert found[0].box[2] > 640, "box must not be in detection-copy pixels"


def test_batched_results_belong_to_their_frames(detector: FaceDetector) -> None:
    frames = portrait_frames(2, width=480, height=240, step=80)
    batched = detector.detect(frames)
    for frame, found in zip(frames, batched):
        (alone,) = detector.detect([frame])
        assert np.allclose(found[0].box, alone[0].box, atol=1.0)


def test_tiny_frames_give_no_face_without_crashing(detector: FaceDetector) -> None:
    frames = [
        np.zeros((10, 10, 3), np.uint8),
        np.zeros((19, 200, 3), np.uint8),
        np.full((20, 3000, 3), 128, np.uint8),  # its 640-px copy is 4 px tall
        portrait_frames(1)[0],
    ]
    found = detector.detect(frames)
    assert [len(f) for f in found] == [0, 0, 0, 1]
    assert detector.detect([]) == []


def test_huge_frame(detector: FaceDetector, portrait: np.ndarray) -> None:
    big = cv2.resize(portrait, (2560, 3000), interpolation=cv2.INTER_LINEAR)
    big = cv2.copyMakeBorder(big, 0, 0, 720, 720, cv2.BORDER_CONSTANT, value=(90, 90, 90))
    assert big.shape == (3000, 4000, 3)
    (found,) = detector.detect([big])
    assert len(found) == 1
    (small,) = detector.detect([portrait.copy()])
    # Same face, at the 5x scale and 720 px offset of the big frame.
    x1, y1, x2, y2 = small[0].box
    expected = (x1 * 5 + 720, y1 * 5, x2 * 5 + 720, y2 * 5)
    assert iou(found[0].box, expected) > 0.7


def test_no_face_is_an_empty_list(detector: FaceDetector) -> None:
    assert detector.detect(noise_frames(2)) == [[], []]


def test_rejects_non_rgb_uint8(detector: FaceDetector) -> None:
    with pytest.raises(ValueError, match="uint8"):
        detector.detect([np.zeros((50, 50, 3), np.float32)])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        detector.detect([np.zeros((50, 50), np.uint8)])


class _FakeMTCNN:
    """Records the shapes FaceDetector passes to MTCNN; returns fixed detections."""

    def __init__(self, detections: list) -> None:
        self.calls: list[tuple[int, ...]] = []
        self.detections = detections

    def __call__(self, batch: np.ndarray) -> list:
        self.calls.append(batch.shape)
        return [self.detections(batch.shape) for _ in range(batch.shape[0])]


def _none(shape: tuple[int, ...]) -> tuple:
    return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))


@pytest.mark.parametrize("retry", [True, False])
def test_full_resolution_retry_only_where_the_copy_found_nothing(retry: bool, monkeypatch) -> None:
    det = FaceDetector(CropParams(full_res_retry=retry, batch_size=2), device="cpu")

    def only_full_res_finds(shape: tuple[int, ...]) -> tuple:
        if shape[1:3] == (720, 1280):
            return np.array([[100.0, 100, 300, 330]]), np.array([0.99]), np.zeros((1, 5, 2))
        return _none(shape)

    fake = _FakeMTCNN(only_full_res_finds)
    monkeypatch.setattr(det, "_run", fake)
    frames = [np.zeros((720, 1280, 3), np.uint8)] * 3 + [np.zeros((200, 300, 3), np.uint8)]
    found = det.detect(frames)
    copy_calls = [(1, 200, 300, 3), (2, 360, 640, 3), (1, 360, 640, 3)]  # batches by size
    if retry:
        # Each big frame once at full resolution; the small one is already full size.
        assert fake.calls == copy_calls + [(1, 720, 1280, 3)] * 3
        assert [len(f) for f in found] == [1, 1, 1, 0]
        assert found[0][0].box == (100.0, 100.0, 300.0, 330.0)  # full-res run: not rescaled
    else:
        assert fake.calls == copy_calls
        assert found == [[], [], [], []]


def test_mtcnn_never_sees_more_than_the_pixel_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """The full-resolution retry of a frame above MAX_DETECT_PIXELS runs on a copy of that size
    (on a 12000x12000 image it took 8 GB), found faces mapped back to full-resolution pixels."""
    from deepfake_detector import faces

    monkeypatch.setattr(faces, "MAX_DETECT_PIXELS", 400_000, raising=False)  # raising=False: also runs on old code
    det = FaceDetector(CropParams(), device="cpu")

    def found_on_the_retry(shape: tuple[int, ...]) -> tuple:
        if shape[1:3] == (474, 843):
            return np.array([[100.0, 100, 200, 200]]), np.array([0.99]), np.zeros((1, 5, 2))
        return _none(shape)

    fake = _FakeMTCNN(found_on_the_retry)
    monkeypatch.setattr(det, "_run", fake)
    (found,) = det.detect([np.zeros((720, 1280, 3), np.uint8)])
    assert fake.calls == [(1, 360, 640, 3), (1, 474, 843, 3)]  # not (1, 720, 1280, 3)
    assert all(h * w <= 400_000 for _, h, w, _ in fake.calls)
    assert found[0].box == pytest.approx((100 * 1280 / 843, 100 * 720 / 474, 200 * 1280 / 843, 200 * 720 / 474))


def test_selection_and_scaling(monkeypatch) -> None:
    params = CropParams(prob_threshold=0.9, min_face_ratio=0.5, max_faces_per_frame=2)
    det = FaceDetector(params, device="cpu")
    # Sizes 50, 40, 20, 45 on the 640x360 copy; the 45 px one is below the threshold.
    boxes = np.array(
        [[0, 0, 50, 50], [100, 0, 140, 40], [200, 0, 220, 20], [300, 0, 345, 45]], float
    )
    probs = np.array([0.99, 0.95, 0.99, 0.5])
    points = np.tile(np.array([[10.0, 20.0]]), (4, 5, 1))
    monkeypatch.setattr(det, "_run", _FakeMTCNN(lambda s: (boxes, probs, points)))
    (found,) = det.detect([np.zeros((720, 1280, 3), np.uint8)])
    # Copy pixels x2 -> full resolution; largest first; 20 px < 0.5 * 50 dropped.
    assert [f.box for f in found] == [(0.0, 0.0, 100.0, 100.0), (200.0, 0.0, 280.0, 80.0)]
    assert [f.prob for f in found] == pytest.approx([0.99, 0.95])
    assert np.allclose(found[0].landmarks, [[20.0, 40.0]] * 5)

    monkeypatch.setattr(det, "params", CropParams(min_face_ratio=0.0, max_faces_per_frame=4))
    (found,) = det.detect([np.zeros((720, 1280, 3), np.uint8)])
    assert [f.size for f in found] == [100.0, 80.0, 40.0]


def test_multiface_photo(monkeypatch: pytest.MonkeyPatch) -> None:
    path = SHARED_DATA / "stills" / "multiface.jpg"
    if not path.is_file():
        pytest.skip(f"sample photo absent: {path}")
    _, (frame,) = read_frames(path, 1)
    first = FaceDetector(CropParams(min_face_ratio=0.0, max_faces_per_frame=50))
    raw = first._run(_DetectionView.of(frame.image, first.params.detect_long_side).image[None])

    def detect_with(**changes: float) -> list:
        # Same MTCNN output each time (it is slow); only the selection rules change.
        det = FaceDetector(CropParams(**changes))
        monkeypatch.setattr(det, "_run", lambda batch: raw)
        (faces,) = det.detect([frame.image])
        return faces

    everyone = detect_with(min_face_ratio=0.0, max_faces_per_frame=50)
    assert len(everyone) >= 4
    sizes = [f.size for f in everyone]
    assert sizes == sorted(sizes, reverse=True)
    assert len(detect_with()) == 4  # max_faces_per_frame
    large_only = detect_with(min_face_ratio=0.9, max_faces_per_frame=50)
    assert 1 <= len(large_only) < len(everyone)
    assert all(f.size >= 0.9 * large_only[0].size for f in large_only)


def test_crop_face_pads_outside_the_frame() -> None:
    image = np.full((100, 100, 3), 200, np.uint8)
    crop = crop_face(image, (-10.0, -10.0, 30.0, 30.0), margin=0.0, size=40)
    assert crop.shape == (40, 40, 3) and crop.dtype == np.uint8
    assert (crop[:10] == 0).all() and (crop[:, :10] == 0).all()
    assert (crop[10:, 10:] == 200).all()  # values as in the frame, not normalised


def test_crop_face_margin_and_resize(portrait: np.ndarray) -> None:
    image = np.ascontiguousarray(portrait)
    box = (200.0, 150.0, 300.0, 250.0)  # 100 px square; margin 0.3 -> 160 px square
    assert crop_window(box, 0.3) == (170, 120, 160)  # (left, top, side)
    exact = crop_face(image, box, margin=0.3, size=160)
    assert np.array_equal(exact, image[120:280, 170:330])
    for size in (64, 224):  # shrinking (INTER_AREA) and enlarging (INTER_LINEAR)
        out = crop_face(image, box, margin=0.3, size=size)
        assert out.shape == (size, size, 3) and out.dtype == np.uint8
        assert abs(float(out.mean()) - float(exact.mean())) < 3
    with pytest.raises(ValueError, match="margin"):
        crop_face(image, box, margin=-0.1, size=64)


def test_detect_and_crop(detector: FaceDetector, portrait_clip: Path) -> None:
    _, frames = read_frames(portrait_clip, 3)
    frames.append(type(frames[0])(frame_index=99, timestamp_s=9.9, image=noise_frames(1)[0]))
    params = CropParams(crop_size=96)
    crops = detect_and_crop(frames, detector, params)
    assert [(c.frame_index, c.face_index) for c in crops] == [(f.frame_index, 0) for f in frames[:3]]
    for c, frame in zip(crops, frames):
        assert c.crop.shape == (96, 96, 3) and c.crop.dtype == np.uint8
        assert np.array_equal(c.crop, crop_face(frame.image, c.face.box, params.margin, 96))


@pytest.mark.parametrize(
    ("key", "value"),
    [("detect_long_side", 10), ("prob_threshold", 1.5), ("margin", -0.1), ("crop_size", 0),
     ("min_face_ratio", 2.0), ("max_faces_per_frame", 0), ("batch_size", 0), ("videos_per_shard", 0)],
)
def test_crop_params_validation(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=key):
        from_mapping(CropParams, {key: value}, "crop_faces")


def test_crop_params_match_params_yaml() -> None:
    path = REPO / "params.yaml"
    if not path.is_file():
        pytest.skip("params.yaml absent")
    assert isinstance(load_section(CropParams, "crop_faces", path), CropParams)
