"""Tests of the synthetic-fake generators (Self-Blended Images and face swaps)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from deepfake_detector.core import config
from deepfake_detector.faces import blend
from deepfake_detector.faces.blend import BlendParams
from full_params import full

# MTCNN's detection on skimage's astronaut portrait (box x1, y1, x2, y2 and the five
# points, rounded), measured once so these tests need no detector.
ASTRONAUT_BOX = np.array([181.0, 62.0, 268.0, 172.0])
ASTRONAUT_LANDMARKS = np.array([[205.0, 102.0], [247.0, 104.0], [225.0, 129.0], [202.0, 139.0], [245.0, 142.0]])
# The mask may leave the box by this fraction of the box side (dilation, blur, jitter).
BOX_TOLERANCE = 0.15


def _astronaut() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.ascontiguousarray(skimage.data.astronaut()), ASTRONAUT_LANDMARKS, ASTRONAUT_BOX


def _textured(seed: int = 0, size: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smooth random colour texture with a face-like landmark layout and its box."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(size // 8, size // 8, 3), dtype=np.uint8)
    image = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    image = np.clip(image.astype(np.int16) + rng.integers(-10, 11, size=image.shape), 0, 255).astype(np.uint8)
    c = size / 2
    landmarks = np.array([[c - 20, c - 15], [c + 20, c - 15], [c, c + 3], [c - 17, c + 22], [c + 17, c + 22]])
    box = np.array([c - 42, c - 55, c + 42, c + 52])
    return image, landmarks, box


def _landmarks_68(centre: tuple[float, float], rx: float, ry: float) -> np.ndarray:
    """68 points on an ellipse (only the hull matters to the mask)."""
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    return np.stack([centre[0] + rx * np.cos(angles), centre[1] + ry * np.sin(angles)], axis=1)


def _assert_changes_only_inside(original: np.ndarray, fake: np.ndarray, mask: np.ndarray) -> None:
    assert fake.dtype == np.uint8 and fake.shape == original.shape
    assert mask.dtype == np.float32 and mask.shape == original.shape[:2]
    assert mask.min() >= 0 and mask.max() <= 1
    changed = np.any(fake != original, axis=2)
    assert changed.any(), "the fake is identical to its source"
    assert not (changed & (mask == 0)).any(), "pixels outside the mask changed"


def _assert_within_box(mask: np.ndarray, box: np.ndarray) -> None:
    ys, xs = np.nonzero(mask)
    w, h = box[2] - box[0], box[3] - box[1]
    assert xs.min() >= box[0] - BOX_TOLERANCE * w and xs.max() <= box[2] + BOX_TOLERANCE * w
    assert ys.min() >= box[1] - BOX_TOLERANCE * h and ys.max() <= box[3] + BOX_TOLERANCE * h


@pytest.mark.parametrize("make", [_astronaut, _textured], ids=["astronaut", "texture"])
@pytest.mark.parametrize("seed", range(6))
def test_self_blend_changes_only_inside_mask_and_box(make, seed):
    image, landmarks, box = make()
    fake, mask = blend.self_blend(image, landmarks, np.random.default_rng(seed), full(BlendParams))
    _assert_changes_only_inside(image, fake, mask)
    _assert_within_box(mask, box)
    # The face itself is covered: the soft mask is positive at every landmark.
    pts = np.rint(landmarks).astype(int)
    assert (mask[pts[:, 1], pts[:, 0]] > 0).all()


def test_self_blend_with_68_landmarks():
    image, _, _ = _textured(1)
    landmarks = _landmarks_68((100, 100), 40, 50)
    fake, mask = blend.self_blend(image, landmarks, np.random.default_rng(0), full(BlendParams))
    _assert_changes_only_inside(image, fake, mask)
    _assert_within_box(mask, np.array([60.0, 50.0, 140.0, 150.0]))


def test_self_blend_same_seed_same_output_different_seed_differs():
    image, landmarks, _ = _astronaut()
    params = full(BlendParams)
    fake_a, mask_a = blend.self_blend(image, landmarks, np.random.default_rng(7), params)
    fake_b, mask_b = blend.self_blend(image, landmarks, np.random.default_rng(7), params)
    fake_c, mask_c = blend.self_blend(image, landmarks, np.random.default_rng(8), params)
    np.testing.assert_array_equal(fake_a, fake_b)
    np.testing.assert_array_equal(mask_a, mask_b)
    assert not np.array_equal(fake_a, fake_c)
    assert not np.array_equal(mask_a, mask_c)


@pytest.mark.parametrize("seed", range(4))
def test_greyscale_face_gets_no_colour_jitter(seed):
    image, landmarks, _ = _astronaut()
    grey = np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    assert blend.is_greyscale(grey) and not blend.is_greyscale(image)
    fake, mask = blend.self_blend(grey, landmarks, np.random.default_rng(seed), full(BlendParams))
    _assert_changes_only_inside(grey, fake, mask)
    np.testing.assert_array_equal(fake[..., 0], fake[..., 1])
    np.testing.assert_array_equal(fake[..., 1], fake[..., 2])


def test_colour_face_gets_colour_jitter():
    # The counterpart of the greyscale test: on a colour face, channels shift differently.
    image, landmarks, _ = _astronaut()
    params = full(BlendParams, blend_ratios=(1.0,), brightness=0.0, contrast=0.0)
    fake, mask = blend.self_blend(image, landmarks, np.random.default_rng(3), params)
    inside = mask > 0.99
    shift = fake[inside].astype(float).mean(axis=0) - image[inside].astype(float).mean(axis=0)
    assert np.ptp(shift) > 1.0


def test_drawn_mask_follows_the_face():
    # One draw per video: moving the face moves the mask by the same amount.
    image, landmarks, _ = _textured(2, size=240)
    draw = blend.draw_self_blend(np.random.default_rng(0), full(BlendParams))
    _, mask = blend.apply_self_blend(image, landmarks, draw)
    dx, dy = 17, -9
    moved_image = np.roll(image, (dy, dx), axis=(0, 1))
    _, moved_mask = blend.apply_self_blend(moved_image, landmarks + [dx, dy], draw)
    np.testing.assert_allclose(np.roll(mask, (dy, dx), axis=(0, 1)), moved_mask, atol=1e-6)


@pytest.mark.parametrize("shift", [(-95, 0), (0, 90), (92, -92)], ids=["left", "bottom", "top-right"])
def test_face_cut_by_the_image_border(shift):
    # Half the face outside the frame: the mask is clipped, never wraps or crashes.
    image, landmarks, _ = _textured(3)
    fake, mask = blend.self_blend(image, landmarks + shift, np.random.default_rng(0), full(BlendParams))
    _assert_changes_only_inside(image, fake, mask)
    source, source_lm, _ = _textured(4)
    fake, mask = blend.swap_face(image, landmarks + shift, source, source_lm, np.random.default_rng(0), full(BlendParams))
    _assert_changes_only_inside(image, fake, mask)


@pytest.mark.parametrize("seed", range(4))
def test_swap_changes_only_inside_mask(seed):
    target, target_lm, box = _astronaut()
    source, source_lm, _ = _textured(seed, size=300)
    params = full(BlendParams)
    fake, mask = blend.swap_face(target, target_lm, source, source_lm, np.random.default_rng(seed), params)
    _assert_changes_only_inside(target, fake, mask)
    _assert_within_box(mask, box)
    again, mask_again = blend.swap_face(target, target_lm, source, source_lm, np.random.default_rng(seed), params)
    np.testing.assert_array_equal(fake, again)
    np.testing.assert_array_equal(mask, mask_again)
    other, _ = blend.swap_face(target, target_lm, source, source_lm, np.random.default_rng(seed + 100), params)
    assert not np.array_equal(fake, other)


def test_swap_aligns_the_source_face():
    # Swapping an image onto a shifted copy of itself: inside the mask, the fake shows the
    # source content moved onto the target's landmarks (colour matching changes little).
    target, target_lm, _ = _astronaut()
    dx, dy = 12, 8
    source = np.roll(target, (-dy, -dx), axis=(0, 1))
    source_lm = target_lm - [dx, dy]
    fake, mask = blend.swap_face(target, target_lm, source, source_lm, np.random.default_rng(0), full(BlendParams))
    inside = mask > 0.99
    err = np.abs(fake[inside].astype(float) - target[inside].astype(float)).mean()
    assert err < 4.0


def test_face_mask_hulls():
    _, landmarks, _ = _astronaut()
    mask = blend.face_mask((512, 512), landmarks)
    assert mask.dtype == np.float32 and set(np.unique(mask)) == {0.0, 1.0}
    pts = landmarks.astype(int)
    assert (mask[pts[:, 1], pts[:, 0]] == 1).all()
    # The rough hull reaches above the eyes (brows) and below the mouth (chin).
    ys = np.nonzero(mask)[0]
    assert ys.min() < landmarks[:2, 1].min() - 15 and ys.max() > landmarks[3:, 1].max() + 15

    pts68 = _landmarks_68((100, 100), 30, 40)
    mask68 = blend.face_mask((200, 200), pts68)
    assert 0.9 < mask68.sum() / (np.pi * 30 * 40) < 1.05


def test_face_mask_follows_rotation():
    _, landmarks, _ = _astronaut()
    rot = cv2.getRotationMatrix2D((256.0, 256.0), 90, 1.0)  # counter-clockwise in the image
    rotated = landmarks @ rot[:, :2].T + rot[:, 2]
    mask = blend.face_mask((512, 512), landmarks)
    mask_rot = blend.face_mask((512, 512), rotated)
    expected = cv2.warpAffine(mask, rot, (512, 512), flags=cv2.INTER_NEAREST)
    overlap = (expected * mask_rot).sum() / np.maximum(expected, mask_rot).sum()
    assert overlap > 0.95


@pytest.mark.parametrize(
    "landmarks",
    [np.zeros((4, 2)), np.full((5, 2), np.nan), np.array([[10.0, 10], [10, 10], [10, 20], [5, 30], [15, 30]])],
    ids=["shape", "nan", "eyes-together"],
)
def test_bad_landmarks_raise(landmarks):
    with pytest.raises(ValueError):
        blend.face_mask((64, 64), landmarks)


def test_bad_image_raises():
    _, landmarks, _ = _astronaut()
    with pytest.raises(ValueError, match="RGB uint8"):
        blend.self_blend(np.zeros((512, 512), np.uint8), landmarks, np.random.default_rng(0), full(BlendParams))


@pytest.mark.parametrize(
    "override, key",
    [({"downscale": [0.5, 0.25]}, "downscale"), ({"blend_ratios": []}, "blend_ratios"),
     ({"sharpen_prob": 1.5}, "sharpen_prob"), ({"elastic_grid": 1}, "elastic_grid")],
)
def test_blend_params_validation(override, key):
    with pytest.raises(config.ConfigError, match=key):
        full(BlendParams, **override)


def test_blend_params_from_mapping():
    params = full(BlendParams, blend_ratios=[0.5, 1], scale=[0.9, 1.1])
    assert params.blend_ratios == (0.5, 1.0) and params.scale == (0.9, 1.1)
    assert config.from_mapping(BlendParams, config.to_dict(params)) == params
