"""Tests for deepfake_detector.faces.detection: detection in full-resolution pixels, bad frame sizes,
selection rules, crops."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import SHARED_DATA, noise_frames, portrait_frames, portrait_image
from deepfake_detector.core.config import ConfigError, load_section
from deepfake_detector.faces.detection import CropParams, FaceDetector, detect_and_crop, pyramid_scales
from deepfake_detector.media.imaging import crop_face, crop_window
from deepfake_detector.media.video import read_frames
from full_params import full

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(full(CropParams), device="cpu")


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
    frame = portrait_frames(1, width=1280, height=720)[0]  # searched on a 360x203 copy
    (found,) = detector.detect([frame])
    assert len(found) == 1
    boxes, _ = detector.mtcnn.detect(frame[None])  # MTCNN on the full frame
    assert iou(found[0].box, tuple(boxes[0][0])) > 0.7
    assert found[0].box[2] > 360, "box must not be in detection-copy pixels"


def test_a_list_of_unrelated_frames_gives_each_its_own_faces(detector: FaceDetector) -> None:
    frames = portrait_frames(2, width=480, height=240, step=80)
    together = detector.detect(frames)
    for frame, found in zip(frames, together):
        (alone,) = detector.detect([frame])
        assert len(found) == len(alone) == 1
        assert iou(found[0].box, alone[0].box) > 0.8


def test_tiny_frames_give_no_face_without_crashing(detector: FaceDetector) -> None:
    frames = [
        np.zeros((10, 10, 3), np.uint8),
        np.zeros((19, 200, 3), np.uint8),
        np.full((20, 3000, 3), 128, np.uint8),  # its 360-px copy is 2 px tall
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


def test_pyramid_scales() -> None:
    # MTCNN's pyramid: 12 / min_face, then x0.709 while the image stays >= 12 px.
    scales = pyramid_scales(360, 20)
    assert scales[0] == pytest.approx(0.6) and 360 * scales[-1] >= 12 > 360 * scales[-1] * 0.709
    assert np.allclose(np.diff(np.log(scales)), np.log(0.709))
    assert len(pyramid_scales(360, 40)) < len(scales)  # a larger min_face_size cuts the pyramid
    assert pyramid_scales(10, 20) == []


# ----------------------------------------------------------------------------- following faces
def moving_face_frames(n: int, dx: int, width: int = 640, height: int = 360) -> list[np.ndarray]:
    """The portrait (face about 110 px) moving ``dx`` px per frame across a grey frame."""
    face = cv2.resize(portrait_image(), (256, 300), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(n):
        canvas = np.full((height, width, 3), 90, np.uint8)
        x = 40 + i * dx
        canvas[30:330, x : x + 256] = face[:, : max(0, min(256, width - x))]
        frames.append(canvas)
    return frames


def test_keyframes_find_what_searching_every_frame_finds() -> None:
    frames = moving_face_frames(12, dx=25)  # about a fifth of the face per sampled frame
    keyed = FaceDetector(full(CropParams, detect_every=4), device="cpu")
    search = FaceDetector(full(CropParams, detect_every=1), device="cpu")
    found, searched = keyed.detect(frames), search.detect(frames)
    assert [len(f) for f in found] == [len(f) for f in searched] == [1] * 12
    assert all(iou(a[0].box, b[0].box) > 0.8 for a, b in zip(found, searched))
    assert all(f[0].prob >= 0.9 and f[0].landmarks.shape == (5, 2) for f in found)
    centres = [(f[0].box[0] + f[0].box[2]) / 2 for f in found]
    assert np.all(np.diff(centres) > 15)  # the boxes move with the face
    # Whole-frame searches on keyframes 0, 4 and 8 only, not on the last frame; ONet alone
    # confirmed the face where the keyframes put it on the 6 frames between. After keyframe 8 the
    # face is expected where that one has it: ONet confirms it 25 px off (frame 9); 50 px off
    # (10) the RNet/ONet grid finds it, 75 px off (11) PNet in the wider window.
    assert keyed.searches == {"frame": 3, "full_res": 0, "follow": 2, "local": 1, "verify": 9}
    assert search.searches["frame"] == 12 and search.searches["verify"] == 0


def test_a_face_between_keyframes_is_followed_where_onet_misses_it() -> None:
    frames = moving_face_frames(5, dx=25)
    frames[2] = moving_face_frames(3, dx=45)[2]  # 40 px (about half the face) off the line between keyframes 0 and 4
    det = FaceDetector(full(CropParams, detect_every=4), device="cpu")
    found = det.detect(frames)
    assert [len(f) for f in found] == [1] * 5
    (alone,) = FaceDetector(full(CropParams), device="cpu").detect([frames[2]])  # searched on its own
    assert iou(found[2][0].box, alone[0].box) > 0.8
    # ONet alone misses the face 40 px off the expected box; the RNet/ONet grid around it finds it.
    assert det.searches == {"frame": 2, "full_res": 0, "follow": 1, "local": 0, "verify": 3}


def test_a_face_that_moved_further_than_the_grid_reaches_is_searched_for_around_its_box() -> None:
    frames = moving_face_frames(5, dx=25)
    frames[2] = moving_face_frames(3, dx=70)[2]  # 90 px (0.85 of the face) off the line: a quick turn of the head
    det = FaceDetector(full(CropParams, detect_every=4), device="cpu")
    found = det.detect(frames)
    assert [len(f) for f in found] == [1] * 5
    (alone,) = FaceDetector(full(CropParams), device="cpu").detect([frames[2]])
    assert iou(found[2][0].box, alone[0].box) > 0.8
    # ONet alone and the RNet/ONet grid both miss it; PNet on the 4x window around the box finds it.
    assert det.searches == {"frame": 2, "full_res": 0, "follow": 1, "local": 1, "verify": 3}


def test_a_face_that_jumps_between_keyframes_is_found_on_both_sides() -> None:
    frames = moving_face_frames(3, dx=10)
    jumped = moving_face_frames(4, dx=120)[3]  # the face jumps 3 face widths away
    det = FaceDetector(full(CropParams, detect_every=3), device="cpu")
    found = det.detect(frames + [jumped])
    assert [len(f) for f in found] == [1, 1, 1, 1]
    assert found[3][0].box[0] > found[2][0].box[0] + 250
    # Frames 0 and 3 are keyframes (searched; frame 3 also follows frame 0's face,
    # which its search did not find there); frames 1 and 2 check both keyframes' boxes (no pair:
    # too far apart), find the face at the first, follow the second in vain (grid, then PNet around it).
    assert det.searches == {"frame": 2, "full_res": 0, "follow": 3, "local": 3, "verify": 4}


def test_the_last_frame_is_searched_after_a_keyframe_without_a_face() -> None:
    frames = noise_frames(4, width=640, height=360) + moving_face_frames(2, dx=10)  # a face from frame 4 on
    det = FaceDetector(full(CropParams, detect_every=8, detect_every_no_face=8), device="cpu")
    found = det.detect(frames)
    # Keyframe 0 has no face, so the last frame (5) is a keyframe too, and frame 4 is checked where frame 5 has the face.
    assert [len(f) for f in found] == [0, 0, 0, 0, 1, 1]
    assert det.searches["frame"] == 2


def test_what_frames_without_a_face_cost() -> None:
    frames = moving_face_frames(2, dx=10, width=1280, height=720) + noise_frames(4, width=1280, height=720)
    for retry in (False, True):
        det = FaceDetector(full(CropParams, detect_every=4, full_res_retry=retry), device="cpu")
        found = det.detect(frames)
        assert [len(f) for f in found] == [1, 1, 0, 0, 0, 0]
        # Keyframes 0, 4 and 5 (the last) are searched on the 360-px copy (4 and 5, without a face, at full
        # resolution too when asked for), and keyframe 4 follows keyframe 0's face; frames 1-3 check the
        # face where keyframe 0 had it, and 2-3, where it is gone, follow it (grid, then PNet around
        # it): what a lost face costs.
        assert det.searches == {"frame": 3, "full_res": 2 if retry else 0, "follow": 3, "local": 3, "verify": 3}
    det = FaceDetector(full(CropParams, detect_every=4), device="cpu")
    assert det.detect(noise_frames(9, width=1280, height=720)) == [[]] * 9
    # Nothing between keyframes 0, 4 and 8 without a face is searched at all.
    assert det.searches == {"frame": 3, "full_res": 0, "follow": 0, "local": 0, "verify": 0}
    assert len(det.frame_cpu) == 9 and all(t >= 0 for t in det.frame_cpu)  # a CPU cost per frame, for benchmarks


def test_keyframes_come_sooner_while_no_face_is_known() -> None:
    frames = noise_frames(5, width=640, height=360) + moving_face_frames(7, dx=10)  # a face from frame 5 on
    sooner = FaceDetector(full(CropParams, detect_every=8, detect_every_no_face=4), device="cpu")
    found = sooner.detect(frames)
    assert [len(f) for f in found] == [0] * 5 + [1] * 7
    # Keyframes 0 and 4 (no face: the next comes 4 frames on) and 8 (a face: the next would be 16,
    # and the frames after it are checked where it has the face, no last search); frames 5-7 and
    # 9-11 check the face where keyframe 8 has it.
    assert sooner.searches == {"frame": 3, "full_res": 0, "follow": 0, "local": 0, "verify": 6}
    evenly = FaceDetector(full(CropParams, detect_every=8, detect_every_no_face=8), device="cpu")
    assert [len(f) for f in evenly.detect(frames)] == [len(f) for f in found]
    assert evenly.searches["frame"] == 2  # keyframes 0 and 8


def test_faces_are_detected_as_frames_arrive(detector: FaceDetector, portrait_clip: Path) -> None:
    _, frames = read_frames(portrait_clip, 6)
    taken = []

    def arriving():
        for f in frames:
            taken.append(f.frame_index)
            yield f.image

    every = detector.params.detect_every
    for k, faces in enumerate(detector.track(arriving())):
        # Frames are held only until the next keyframe, at most detect_every frames ahead.
        assert k + 1 <= len(taken) <= min(k + every, len(frames))
        assert len(faces) == 1
    streamed = detect_and_crop(iter(frames), detector, full(CropParams))
    listed = detect_and_crop(frames, detector, full(CropParams))
    assert [(c.frame_index, c.face_index, c.window) for c in streamed] == [(c.frame_index, c.face_index,
                                                                            c.window) for c in listed]
    assert all(np.array_equal(a.crop, b.crop) for a, b in zip(streamed, listed))


def test_selection_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    det = FaceDetector(full(CropParams, prob_threshold=0.9, min_face_ratio=0.5, max_faces_per_frame=2), device="cpu")
    # Sizes 100, 80, 40, 90 px; the 90 px one is below the threshold; a duplicate of the 100 px one.
    boxes = np.array([[0, 0, 100, 100], [200, 0, 280, 80], [400, 0, 440, 40], [500, 0, 590, 90], [2, 2, 101, 101]], float)
    probs = np.array([0.99, 0.95, 0.99, 0.5, 0.97])
    points = np.tile(np.array([[10.0, 20.0]]), (5, 5, 1))
    monkeypatch.setattr(det, "_propose", lambda searches, limit=None: [np.zeros((1, 4))] * len(searches))
    monkeypatch.setattr(det, "_refine", lambda images, searches, cands, limit=None: [(boxes, probs, points)] * len(searches))
    (found,) = det.detect([np.zeros((720, 1280, 3), np.uint8)])
    # Largest first; the duplicate merged into the more probable box; 40 px < 0.5 * 100 dropped.
    assert [f.box for f in found] == [(0.0, 0.0, 100.0, 100.0), (200.0, 0.0, 280.0, 80.0)]
    assert [f.prob for f in found] == pytest.approx([0.99, 0.95])
    assert np.allclose(found[0].landmarks, [[10.0, 20.0]] * 5)
    monkeypatch.setattr(det, "params", full(CropParams, min_face_ratio=0.0, max_faces_per_frame=4))
    (found,) = det.detect([np.zeros((720, 1280, 3), np.uint8)])
    assert [f.size for f in found] == [100.0, 80.0, 40.0]


def test_multiface_photo() -> None:
    path = SHARED_DATA / "stills" / "multiface.jpg"
    if not path.is_file():
        pytest.skip(f"sample photo absent: {path}")
    _, (frame,) = read_frames(path, 1)
    # The whole-frame search once (it is slow); only the selection rules change.
    raw = FaceDetector(full(CropParams, min_face_ratio=0.0, max_faces_per_frame=50))._search_frame(frame.image)

    def select(**changes: float) -> list:
        return FaceDetector(full(CropParams, **changes))._select(raw)

    everyone = select(min_face_ratio=0.0, max_faces_per_frame=50)
    assert len(everyone) >= 4
    sizes = [f.size for f in everyone]
    assert sizes == sorted(sizes, reverse=True)
    assert len(select()) == 4  # max_faces_per_frame
    large_only = select(min_face_ratio=0.9, max_faces_per_frame=50)
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
    params = full(CropParams, crop_size=96)
    crops = detect_and_crop(frames, detector, params)
    assert [(c.frame_index, c.face_index) for c in crops] == [(f.frame_index, 0) for f in frames[:3]]
    for c, frame in zip(crops, frames):
        assert c.crop.shape == (96, 96, 3) and c.crop.dtype == np.uint8
        assert np.array_equal(c.crop, crop_face(frame.image, c.face.box, params.margin, 96))


@pytest.mark.parametrize(
    ("key", "value"),
    [("detect_long_side", 10), ("prob_threshold", 1.5), ("margin", -0.1), ("crop_size", 0),
     ("min_face_ratio", 2.0), ("max_faces_per_frame", 0), ("detect_every", 0), ("min_face_size", 8),
     ("videos_per_shard", 0), ("detect_every_no_face", 0)],
)
def test_crop_params_validation(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=key):
        full(CropParams, **{key: value})


def test_crop_params_match_params_yaml() -> None:
    path = REPO / "params.yaml"
    if not path.is_file():
        pytest.skip("params.yaml absent")
    assert isinstance(load_section(CropParams, "crop_faces", path), CropParams)


def test_no_whole_frame_search_scans_more_than_the_pixel_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full-resolution search of a frame above MAX_DETECT_PIXELS runs on a copy of that size
    (on a 12000x12000 image MTCNN took 8 GB); frames within the budget keep their size."""
    from deepfake_detector.faces import detection as faces

    monkeypatch.setattr(faces, "MAX_DETECT_PIXELS", 400_000)
    det = FaceDetector(full(CropParams, detect_long_side=4000, full_res_retry=True), device="cpu")
    big = np.zeros((720, 1280, 3), np.uint8)
    for long_side in (None, 4000, 640):
        search = det._frame_search(big, long_side)
        h, w = search.image.shape[:2]
        assert h * w <= 400_000 and w == min(long_side or 1280, 843)
        assert search.scale == pytest.approx(w / 1280)
    small = np.zeros((360, 640, 3), np.uint8)
    assert det._frame_search(small, None).image.shape == small.shape


def test_the_caller_keeps_its_threads_between_frames(detector: FaceDetector) -> None:
    # Detection runs on one intra-op thread; while the generator waits for the caller, the
    # caller's own setting holds (it classifies with it).
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = [torch.get_num_threads() for _ in detector.track(moving_face_frames(6, dx=10))]
    finally:
        torch.set_num_threads(before)
    assert seen == [2] * 6
