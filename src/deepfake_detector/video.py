"""Read evenly spaced, upright RGB frames from a video file (or one still image).

Decoding is sequential: every frame is ``grab()``-ed (demux + decode) and only the
sampled ones are ``retrieve()``-d (colour conversion). Seeking to each sampled frame
re-decodes from the previous keyframe every time, which costs about 10x more on
typical deepfake-dataset files (one keyframe every 250 frames; see docs/performance.md).

:class:`FrameStream` runs :func:`read_frames` in a background thread and hands out the
sampled frames as they decode, so a caller can detect faces in one frame while the next
ones decode.

Example:
    >>> info, frames = read_frames(Path("clip.mp4"), 16)  # doctest: +SKIP
    >>> frames[0].image.shape  # (H, W, 3) RGB uint8, upright  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from . import records

logger = logging.getLogger(__name__)

# Used for timestamps when a container reports no frame rate.
FALLBACK_FPS = 25.0


class VideoReadError(Exception):
    """A file could not be read as a video; ``str(exc)`` is a human reason naming the file."""


class VideoNotFoundError(VideoReadError):
    """The file does not exist (a "listed but missing" video, not a broken one)."""


@dataclass(frozen=True)
class VideoInfo:
    """What was learned about a file while reading it.

    Attributes:
        path: The file read.
        n_frames: Decodable frames (the container's count when the stream is intact,
            the number actually decoded when it ends early); 1 for a still image.
        fps: Frame rate used for timestamps (``FALLBACK_FPS`` when the container says 0;
            0.0 for a still image).
        width: Width of the upright frames, px.
        height: Height of the upright frames, px.
        rotation: Clockwise rotation (0, 90, 180, 270) from the container's display
            matrix; already applied to the returned frames.
    """

    path: Path
    n_frames: int
    fps: float
    width: int
    height: int
    rotation: int


@dataclass
class Frame:
    """One decoded frame.

    Attributes:
        frame_index: 0-based index among the decoded frames of the video.
        timestamp_s: ``frame_index / fps``.
        image: Upright RGB uint8 array ``(H, W, 3)``.
    """

    frame_index: int
    timestamp_s: float
    image: np.ndarray


def sample_indices(n_available: int, n: int) -> list[int]:
    """Pick ``n`` evenly spaced frame indices in ``[0, n_available)``, first and last included.

    Args:
        n_available: Number of decodable frames.
        n: Number of frames wanted (all frames when ``n >= n_available``).

    Returns:
        Sorted, unique indices.

    Raises:
        ValueError: If ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n_available <= 0:
        return []
    if n >= n_available:
        return list(range(n_available))
    return sorted({int(i) for i in np.linspace(0, n_available - 1, n).round()})


def rotate_upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate a frame clockwise by ``rotation`` degrees (OpenCV/FFmpeg convention).

    Used only when the OpenCV backend cannot auto-rotate, so frames are turned exactly
    once.

    Args:
        image: ``(H, W, C)`` array.
        rotation: Clockwise degrees, a multiple of 90 (negative values allowed).

    Returns:
        The rotated image (the input itself when ``rotation % 360 == 0``).

    Raises:
        ValueError: If ``rotation`` is not a multiple of 90.
    """
    rotation %= 360
    if rotation == 0:
        return image
    flags = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}
    if rotation not in flags:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {rotation}")
    return cv2.rotate(image, flags[rotation])


def _check_file(path: Path) -> None:
    """Raise the precise error for a path that cannot hold a video at all."""
    if not path.exists():
        raise VideoNotFoundError(f"file not found: {path}")
    if not path.is_file():
        raise VideoReadError(f"not a regular file: {path}")
    if path.stat().st_size == 0:
        raise VideoReadError(f"empty file (0 bytes): {path}")


def _read_still(path: Path) -> tuple[VideoInfo, list[Frame]]:
    """Read a still image as a one-frame video (EXIF orientation applied by OpenCV)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise VideoReadError(f"not a decodable image: {path}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    info = VideoInfo(path=path, n_frames=1, fps=0.0, width=w, height=h, rotation=0)
    return info, [Frame(frame_index=0, timestamp_s=0.0, image=rgb)]


def _timestamp_fps(path: Path, fps: float) -> float:
    """The frame rate timestamps use: the container's, or ``FALLBACK_FPS`` when it says 0 or NaN."""
    if fps > 0:
        return fps
    logger.debug("%s: container reports fps=%r; using %.0f for timestamps", path, fps, FALLBACK_FPS)
    return FALLBACK_FPS


def _describe_unopenable(path: Path) -> str:
    """Say why FFmpeg may have refused a file, from its first bytes (for the report)."""
    with path.open("rb") as fh:
        head = fh.read(512)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
        return "FFmpeg cannot open it; the content is plain text"
    return "FFmpeg cannot open it: unknown format, or a truncated/corrupt container"


class _Capture:
    """An opened ``cv2.VideoCapture`` that yields upright RGB frames, rotated exactly once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        if not self.cap.isOpened():
            self.cap.release()
            raise VideoReadError(f"not a readable video ({_describe_unopenable(path)}): {path}")
        self.rotation = int(round(self.cap.get(cv2.CAP_PROP_ORIENTATION_META))) % 360
        # Ask OpenCV to apply the display matrix; if this backend cannot, rotate ourselves.
        self.cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
        self.auto_rotates = bool(self.cap.get(cv2.CAP_PROP_ORIENTATION_AUTO))
        self.declared_frames = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS))

    def decode(self, wanted: list[int], stop: int | None,
               on_image: Callable[[int, np.ndarray], None] | None = None) -> tuple[int, dict[int, np.ndarray]]:
        """Decode sequentially, converting only the ``wanted`` frames.

        Args:
            wanted: Sorted frame indices to return.
            stop: Decode at most this many frames (``None``: until the stream ends).
            on_image: Called with ``(index, rgb)`` as each wanted frame is converted.

        Returns:
            ``(n_decoded, {index: rgb})``; ``n_decoded < stop`` means the stream ended early.
        """
        targets = set(wanted)
        images: dict[int, np.ndarray] = {}
        index = 0
        while stop is None or index < stop:
            if not self.cap.grab():
                break
            if index in targets:
                ok, bgr = self.cap.retrieve()
                if ok and bgr is not None:
                    if not self.auto_rotates:
                        bgr = rotate_upright(bgr, self.rotation)
                    images[index] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    if on_image is not None:
                        on_image(index, images[index])
                else:
                    logger.debug("%s: frame %d decoded but not converted", self.path, index)
            index += 1
        return index, images

    def release(self) -> None:
        self.cap.release()


def read_frames(path: Path, n: int, on_frame: Callable[[Frame], None] | None = None) -> tuple[VideoInfo, list[Frame]]:
    """Read ``n`` evenly spaced, upright RGB frames from a video (or one still image).

    Frames are spread with ``np.linspace`` over the *decodable* frames. When the stream
    ends before the container's frame count (a truncated file), the sample is planned
    again over the frames that did decode, so it still spans the whole readable part.

    Args:
        path: Video file (anything FFmpeg reads) or still image (``records.IMAGE_SUFFIXES``).
        n: Number of frames wanted (fewer when the video is shorter).
        on_frame: Called with each sampled frame as soon as it is decoded, in order, while
            the rest decode. Only during the first pass: when the stream turns out shorter
            than declared, the frames returned (planned again) are not the ones it saw.

    Returns:
        ``(info, frames)`` with frames in increasing ``frame_index`` order.

    Raises:
        VideoNotFoundError: If the file does not exist.
        VideoReadError: If the file is empty, not a video, or has no decodable frame.
        ValueError: If ``n < 1``.
    """
    path = Path(path)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _check_file(path)
    if path.suffix.lower() in records.IMAGE_SUFFIXES:
        info, frames = _read_still(path)
        if on_frame is not None:
            on_frame(frames[0])
        return info, frames

    try:
        cap = _Capture(path)
    except cv2.error as exc:
        raise VideoReadError(f"OpenCV failed to open {path}: {exc}") from exc
    fps = _timestamp_fps(path, cap.fps)
    emitted: list[int] = []

    def emit(i: int, rgb: np.ndarray) -> None:
        emitted.append(i)
        on_frame(Frame(frame_index=i, timestamp_s=i / fps, image=rgb))  # type: ignore[misc]

    try:
        declared = cap.declared_frames
        if declared > 0:
            n_decoded, images = cap.decode(sample_indices(declared, n), stop=declared, on_image=emit if on_frame else None)
        else:
            # Unknown length: count the frames first, then sample them.
            n_decoded, images = cap.decode([], stop=None)
        if n_decoded == 0:
            raise VideoReadError(
                f"no decodable frame ({declared} declared by the container): {path}"
            )
        if n_decoded != declared:
            if declared > 0:
                logger.warning(
                    "%s: stream ends after %d of %d declared frames (truncated file or "
                    "inexact count); sampling over the decoded frames",
                    path, n_decoded, declared,
                )
            # Re-planning needs a second pass: a fresh capture decodes from the start.
            cap.release()
            cap = _Capture(path)
            # Unknown length: the frames are handed out now; truncated: the caller sees the difference.
            _, images = cap.decode(sample_indices(n_decoded, n), stop=n_decoded, on_image=emit if on_frame and not emitted else None)
    except cv2.error as exc:
        raise VideoReadError(f"OpenCV failed while decoding {path}: {exc}") from exc
    finally:
        cap.release()

    if not images:
        raise VideoReadError(f"frames decode but none converts to an image: {path}")
    frames = [
        Frame(frame_index=i, timestamp_s=i / fps, image=images[i]) for i in sorted(images)
    ]
    h, w = frames[0].image.shape[:2]
    info = VideoInfo(
        path=path, n_frames=n_decoded, fps=fps, width=w, height=h, rotation=cap.rotation
    )
    return info, frames


class FrameStream:
    """:func:`read_frames` in a background thread; iterating yields the sampled frames as they decode.

    Decoding is OpenCV/FFmpeg work that releases the GIL, so it proceeds on another core
    while the caller works on the frames already out (no torch in the thread). After the
    iteration, :meth:`result` is what :func:`read_frames` returned; :attr:`replanned` is True
    when the stream ended before its declared length and the returned frames are not the
    ones yielded (rare: truncated files): the caller then redoes its work on them.

    Args:
        path: The video (or still image).
        n: Frames wanted.

    Raises:
        VideoReadError: While iterating, if the file cannot be read (as :func:`read_frames`).
    """

    def __init__(self, path: Path, n: int) -> None:
        self.path, self.n = Path(path), n
        self._queue: queue.Queue = queue.Queue()
        self._result: tuple[VideoInfo, list[Frame]] | None = None
        self._error: BaseException | None = None
        self._done = False
        self._yielded: list[int] = []
        self._thread = threading.Thread(target=self._decode, name=f"decode {self.path.name}", daemon=True)
        self._thread.start()

    def _decode(self) -> None:
        try:
            self._result = read_frames(self.path, self.n, on_frame=self._queue.put)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
            self._error = exc
        self._queue.put(None)

    def __iter__(self) -> Iterator[Frame]:
        while not self._done:
            item = self._queue.get()
            if item is None:
                self._done = True
                break
            self._yielded.append(item.frame_index)
            yield item
        if self._error is not None:
            raise self._error

    def result(self) -> tuple[VideoInfo, list[Frame]]:
        """``(info, frames)`` as :func:`read_frames` returns them (waits for decoding to end).

        Raises:
            VideoReadError: If the file could not be read.
        """
        for _ in self:  # drain what was not taken; re-raises a decoding error
            pass
        self._thread.join()
        assert self._result is not None
        return self._result

    @property
    def replanned(self) -> bool:
        """Whether the frames returned differ from the frames yielded (after :meth:`result`)."""
        return self._result is not None and [f.frame_index for f in self._result[1]] != self._yielded
