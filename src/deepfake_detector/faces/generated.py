"""Synthetic fakes with a generator's traces: autoencoder renderings blended into real faces.

Self-blending (:func:`deepfake_detector.faces.blend.self_blend`) pastes a jittered copy of the face
back onto itself, so its only evidence is the blending seam. Here the pasted source is the
face autoencoder's rendering of the same crop (:mod:`deepfake_detector.model.autoencoder`): aligned
with the face by construction, colour-matched to it inside the mask, so what is left to see is
the decoder's texture (bottleneck smoothing, upsampling traces) and, for partial blends, a seam.

Two kinds, both through the face hull of the SBI mask:

* ``generated``: the same mask alterations as SBI (elastic deformation, erosion/dilation,
  blur, blend ratio), drawn with :class:`~deepfake_detector.faces.blend.BlendParams`: a face swap
  in miniature.
* ``whole``: the whole face hull replaced (ratio 1), slightly dilated and barely feathered:
  a face re-renderer's output. Its harder edge is left for the crop's global degradations
  (blur, downscale, JPEG: ``train.augment``) to hide, as they hide a real re-render's.

The guarantee of :mod:`deepfake_detector.faces.blend` holds: pixels where the returned mask is 0 are
the input pixels.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

# The mask machinery of blend.py, shared rather than copied: the generated fakes must be
# deformed and feathered exactly as the self-blended ones are.
from .blend import (
    BlendParams,
    _blend_region,
    _check_image,
    _draw_mask,
    _face_size,
    _match_colour_lab,
    _soft_mask,
    face_polygon,
)

GENERATED_KINDS = ("generated", "whole")


def generated_blend(
    image: np.ndarray,
    rendering: np.ndarray,
    landmarks: np.ndarray,
    rng: np.random.Generator,
    params: BlendParams,
    kind: str = "generated",
    whole_dilate: tuple[float, float] = (0.0, 0.06),
    whole_blur: tuple[float, float] = (0.0, 0.03),
) -> tuple[np.ndarray, np.ndarray]:
    """Blend a generator's rendering of ``image`` back into it through a face mask.

    Args:
        image: RGB uint8 ``(H, W, 3)`` real face crop.
        rendering: RGB uint8 ``(H, W, 3)``: the generator's rendering of ``image`` (aligned).
        landmarks: ``(5, 2)``, ``(68, 2)`` or ``(K, 2)`` hull points in ``image`` pixels.
        rng: Source of randomness; the same seed gives the same output.
        params: Mask strengths (``kind="generated"``: all mask fields; ``"whole"``: the
            elastic deformation only).
        kind: ``generated`` (SBI's mask alterations) or ``whole`` (the whole hull, ratio 1).
        whole_dilate: With ``whole``: range of the hull's dilation, in face sizes.
        whole_blur: With ``whole``: range of the edge's blur kernel, in face sizes.

    Returns:
        ``(fake, mask)``: the RGB uint8 fake and the float32 ``(H, W)`` soft mask used;
        ``fake == image`` where ``mask == 0``.

    Raises:
        ValueError: On malformed images or landmarks, an unknown kind, or a face too small.
    """
    _check_image(image, "image")
    _check_image(rendering, "rendering")
    if rendering.shape != image.shape:
        raise ValueError(f"rendering shape {rendering.shape} differs from the image's {image.shape}")
    if kind not in GENERATED_KINDS:
        raise ValueError(f"kind must be one of {GENERATED_KINDS}, got {kind!r}")
    polygon = face_polygon(landmarks)
    size = _face_size(polygon)
    if kind == "generated":
        draw = _draw_mask(rng, params, ratio=None)
    else:
        draw = replace(_draw_mask(rng, params, ratio=1.0), erode_dilate=float(rng.uniform(*whole_dilate)),
                       blur=float(rng.uniform(*whole_blur)))
    mask, region = _soft_mask(image.shape[:2], polygon, draw, size)
    x0, y0, x1, y1 = region
    # The rendering's colour drift would be one more seam, which SBI already teaches.
    source = _match_colour_lab(rendering[y0:y1, x0:x1], image[y0:y1, x0:x1], mask)
    return _blend_region(image, source, mask, region)
