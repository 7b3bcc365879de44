"""Image helpers with no model behind them: face crop geometry and image encoding.

Importable without torch or MTCNN, so the crop geometry can be used (by Grad-CAM
overlays, SBI landmarks, reports) without loading a face detector.
"""

from __future__ import annotations

import cv2
import numpy as np

# A crop's square in frame pixels: (left, top, side).
Window = tuple[int, int, int]


def crop_window(box: tuple[float, float, float, float], margin: float) -> Window:
    """The square that :func:`crop_face` cuts: centred on the box, its side the box's longer
    side enlarged by ``margin`` of it on each side.

    Args:
        box: ``(x1, y1, x2, y2)``, frame pixels.
        margin: Fraction of the box size added on each side.

    Returns:
        ``(left, top, side)`` in frame pixels (may lie partly outside the frame).

    Raises:
        ValueError: On a negative margin.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    x1, y1, x2, y2 = box
    side = max(1, int(round(max(x2 - x1, y2 - y1) * (1.0 + 2.0 * margin))))
    left = int(round((x1 + x2) / 2.0 - side / 2.0))
    top = int(round((y1 + y2) / 2.0 - side / 2.0))
    return left, top, side


def cut_window(image: np.ndarray, window: Window, size: int) -> np.ndarray:
    """Cut the square ``window`` out of ``image`` and resize it to ``size``.

    Parts outside the image are black (0). It is resized with INTER_AREA when shrinking,
    INTER_LINEAR when enlarging.

    Args:
        image: ``(H, W, C)`` array.
        window: ``(left, top, side)`` in the image's pixels.
        size: Output side, px.

    Returns:
        ``(size, size, C)`` array of the image's dtype.

    Raises:
        ValueError: On a size below 1.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    left, top, side = window
    h, w = image.shape[:2]
    if left >= 0 and top >= 0 and left + side <= w and top + side <= h:
        square = image[top : top + side, left : left + side]  # inside the frame: no copy needed
    else:
        square = np.zeros((side, side, image.shape[2]), dtype=image.dtype)
        sx0, sy0 = max(left, 0), max(top, 0)
        sx1, sy1 = min(left + side, w), min(top + side, h)
        if sx1 > sx0 and sy1 > sy0:
            square[sy0 - top : sy1 - top, sx0 - left : sx1 - left] = image[sy0:sy1, sx0:sx1]
    if side == size:
        return np.array(square)  # a copy, never a view of the frame
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    resized = cv2.resize(square, (size, size), interpolation=interpolation)
    return resized.reshape(size, size, image.shape[2])  # cv2 drops a single channel axis


def crop_face(
    image: np.ndarray, box: tuple[float, float, float, float], margin: float, size: int
) -> np.ndarray:
    """Cut a square face crop from a full-resolution frame (:func:`crop_window`'s square).

    Args:
        image: ``(H, W, 3)`` uint8 frame.
        box: ``(x1, y1, x2, y2)`` in the frame's pixels.
        margin: Fraction of the box size added on each side.
        size: Output side, px.

    Returns:
        ``(size, size, 3)`` uint8 crop (values as in ``image``).

    Raises:
        ValueError: On a negative margin or a size below 1.
    """
    return cut_window(image, crop_window(box, margin), size)


def encode_image(rgb: np.ndarray, fmt: str = "png", jpeg_quality: int = 95) -> bytes:
    """Encode an RGB uint8 image; PNG is lossless so no new compression traces are added.

    Args:
        rgb: ``(H, W, 3)`` RGB uint8 image.
        fmt: ``png`` or ``jpg``.
        jpeg_quality: JPEG quality, when ``fmt`` is ``jpg``.

    Returns:
        The encoded bytes.

    Raises:
        ValueError: On an unknown format or when encoding fails.
    """
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if fmt == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    elif fmt == "jpg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    else:
        raise ValueError(f"unknown image format {fmt!r} (png or jpg)")
    if not ok:
        raise ValueError("image encoding failed")
    return buf.tobytes()


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Decode encoded image bytes to an RGB uint8 array ``(H, W, 3)``.

    Args:
        data: PNG/JPEG/... bytes.
        name: What to call the image in the error message.

    Raises:
        ValueError: If the bytes are not a decodable image.
    """
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot decode {name}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
