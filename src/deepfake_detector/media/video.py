"""Read evenly spaced, upright RGB frames from a video file (or one still image).

Decoding is sequential: every frame is ``grab()``-ed (demux + decode) and only the
sampled ones are ``retrieve()``-d (colour conversion). Seeking to each sampled frame
re-decodes from the previous keyframe every time, which costs about 10x more on
typical deepfake-dataset files (one keyframe every 250 frames; see docs/performance.md).
A regular H.264 MP4 (the datasets' files) is decoded by :mod:`skipdecode` instead, which
leaves out the non-reference pictures that are not sampled (about half the frames of
FF++ and DFDC files) and gives the same frames, to the bit; any other file, or one that
path gives up on, is decoded frame by frame by OpenCV as above.

Every file is first looked at by :func:`media.probe` (entry type, permissions, format from
the content, image size against :data:`media.MAX_PIXELS`), so the decoders only ever see
regular, readable files of a recognised kind and bounded size. Decoding is bounded too (at
most :data:`MAX_FRAMES_DECODED` frames), and what went wrong while decoding (frames that
fail mid-stream, a stream that ends early, a truncated image) is counted in
:attr:`VideoInfo.decode_errors` and described in :attr:`VideoInfo.notes`, so a damaged
file is never judged as if it were whole.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from . import skipdecode
from .probe import IMAGE, Probe, VideoNotFoundError, VideoReadError, check_pixels, describe_unopenable, image_damage, probe

logger = logging.getLogger(__name__)

__all__ = ["Frame", "VideoInfo", "VideoNotFoundError", "VideoReadError", "check_readable", "read_frames",
           "rotate_upright", "sample_indices"]

# Used for timestamps when a container reports no frame rate.
FALLBACK_FPS = 25.0
# Decoding stops after this many frames (30 minutes at 30 fps): a longer video is sampled
# over its first MAX_FRAMES_DECODED frames, and its notes say so.
MAX_FRAMES_DECODED = 54_000
# This many failed frames in a row end the stream (a failure followed by good frames is
# corrupt data, counted as a decode error; failures to the end are a truncated stream).
MAX_FAILED_RUN = 25
# Containers whose frame count FFmpeg reads from an index; for the others (Matroska, WebM,
# FLV, ...) it is estimated from the duration and the frame rate.
EXACT_COUNT_FORMATS = ("iso-bmff", "avi")
# A stream that ends at most this many frames before an exact count is not damage (edit
# lists can drop a frame or two); for an estimated count, at most this share of it.
EXACT_COUNT_SLACK = 2
ESTIMATED_COUNT_SLACK = 0.1


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
        kind: ``video`` or ``image`` (from the content, not the suffix).
        n_frames_expected: Frames a complete file would have given for the sample:
            ``min(n, frame count)`` for a video, 1 for an image.
        decode_errors: Frames that failed to decode or are missing from a stream that ends
            early, plus sampled frames that would not convert; 1 for a truncated image.
        notes: What went wrong or was limited while decoding, in words (empty when nothing).
    """

    path: Path
    n_frames: int
    fps: float
    width: int
    height: int
    rotation: int
    kind: str = "video"
    n_frames_expected: int = 0
    decode_errors: int = 0
    notes: tuple[str, ...] = ()


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


def _read_still(found: Probe) -> tuple[VideoInfo, list[Frame]]:
    """Read a still image as a one-frame video (EXIF orientation applied by OpenCV).

    Its size was checked against the pixel budget from the header (:func:`media.probe`).
    """
    path = found.path
    damage = image_damage(path, found.format)
    try:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise VideoReadError(f"OpenCV failed to decode the image ({exc}): {path}") from exc
    if bgr is None:
        raise VideoReadError(f"not a decodable image ({found.format}{'; ' + damage if damage else ''}): {path}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    info = VideoInfo(path=path, n_frames=1, fps=0.0, width=w, height=h, rotation=0, kind=IMAGE,
                     n_frames_expected=1, decode_errors=int(damage is not None), notes=(damage,) if damage else ())
    return info, [Frame(frame_index=0, timestamp_s=0.0, image=rgb)]


@dataclass
class _Decoded:
    """One decoding pass.

    Attributes:
        end: Index after the last frame that decoded (0: none did).
        failed: Frames before ``end`` that failed to decode (corrupt data).
        unconverted: Wanted frames that decoded but did not convert to an image.
        images: The wanted frames, RGB, by index.
    """

    end: int = 0
    failed: int = 0
    unconverted: int = 0
    images: dict[int, np.ndarray] = field(default_factory=dict)


class _Capture:
    """An opened ``cv2.VideoCapture`` that yields upright RGB frames, rotated exactly once."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path = path
        try:
            self.cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        except cv2.error as exc:
            raise VideoReadError(f"OpenCV failed to open {path}: {exc}") from exc
        if not self.cap.isOpened():
            self.cap.release()
            raise VideoReadError(f"not a readable video ({describe_unopenable(path, fmt)}): {path}")
        try:  # the frame size is known once the stream is open: refuse huge frames before decoding
            check_pixels(int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), path)
        except VideoReadError:
            self.cap.release()
            raise
        self.rotation = int(round(self.cap.get(cv2.CAP_PROP_ORIENTATION_META))) % 360
        # Ask OpenCV to apply the display matrix; if this backend cannot, rotate ourselves.
        self.cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
        self.auto_rotates = bool(self.cap.get(cv2.CAP_PROP_ORIENTATION_AUTO))
        self.declared_frames = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.pixels = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)) * int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS))

    def decode(self, wanted: list[int], stop: int,
               on_image: Callable[[int, np.ndarray], None] | None = None) -> _Decoded:
        """Decode sequentially, converting only the ``wanted`` frames.

        A frame that fails to decode is skipped (it takes its index); :data:`MAX_FAILED_RUN`
        failures in a row end the stream.

        Args:
            wanted: Sorted frame indices to return.
            stop: Decode at most this many frames.
            on_image: Called with ``(index, rgb)`` as each wanted frame is converted.

        Returns:
            What was decoded; ``end < stop`` means the stream ended early.
        """
        targets = set(wanted)
        out = _Decoded()
        failed: list[int] = []
        index = 0
        while index < stop:
            if not self.cap.grab():
                if len(failed) >= MAX_FAILED_RUN and failed[-MAX_FAILED_RUN] == index - MAX_FAILED_RUN:
                    break
                failed.append(index)
                index += 1
                continue
            if index in targets:
                ok, bgr = self.cap.retrieve()
                if ok and bgr is not None:
                    if not self.auto_rotates:
                        bgr = rotate_upright(bgr, self.rotation)
                    out.images[index] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    if on_image is not None:
                        on_image(index, out.images[index])
                else:
                    logger.debug("%s: frame %d decoded but not converted", self.path, index)
                    out.unconverted += 1
            index += 1
            out.end = index
        # Failures followed by a decoded frame are corrupt data; those after the last one are the end.
        out.failed = sum(1 for i in failed if i < out.end)
        return out

    def release(self) -> None:
        self.cap.release()


def check_readable(path: Path) -> Probe:
    """The cheap part of :func:`read_frames`: is there anything to decode at all?

    :func:`media.probe`, and for a video, opening it and decoding up to its first good
    frame. The CLI calls it before loading any model, so a batch of unreadable files costs
    no model loading.

    Args:
        path: A video or image file.

    Returns:
        The probe.

    Raises:
        VideoReadError: As :func:`read_frames` would (``VideoNotFoundError`` when absent).
    """
    found = probe(Path(path))
    if found.kind == IMAGE:
        return found
    cap = _Capture(found.path, found.format)
    try:
        if not any(cap.cap.grab() for _ in range(MAX_FAILED_RUN + 1)):  # stops at the first good frame
            raise VideoReadError(f"no decodable frame ({cap.declared_frames} declared by the container): {found.path}")
    except cv2.error as exc:
        raise VideoReadError(f"OpenCV failed while decoding {found.path}: {exc}") from exc
    finally:
        cap.release()
    return found


def read_frames(path: Path, n: int, max_frames: int = MAX_FRAMES_DECODED,
                on_frame: Callable[[Frame], None] | None = None,
                max_decoded_pixels: int | None = None) -> tuple[VideoInfo, list[Frame]]:
    """Read ``n`` evenly spaced, upright RGB frames from a video (or one still image).

    Frames are spread with ``np.linspace`` over the *decodable* frames. When the stream
    ends before the container's frame count (a truncated file), the sample is planned
    again over the frames that did decode, so it still spans the whole readable part.
    The file's content decides whether it is read as an image or a video, not its suffix.

    Args:
        path: Video file (anything FFmpeg reads) or still image.
        n: Number of frames wanted (fewer when the video is shorter).
        max_frames: Decode at most this many frames (a longer video is sampled over its
            first ``max_frames`` frames).
        on_frame: Called with each sampled frame as soon as it is decoded, in order, while
            the rest decode. Only during the first pass: when the stream turns out shorter
            than declared, the frames returned (planned again) are not the ones it saw.
        max_decoded_pixels: Also decode at most this many pixels (frames x frame size),
            which bounds decoding time whatever the resolution: the web demo's per-request
            budget (None: no such budget).

    Returns:
        ``(info, frames)`` with frames in increasing ``frame_index`` order; ``info`` counts
        and describes any decoding problem.

    Raises:
        VideoNotFoundError: If the file does not exist.
        VideoReadError: If the file cannot be read (see :func:`media.probe`), is not a
            video or image, is above the pixel budget, or has no decodable frame.
        ValueError: If ``n < 1``.
    """
    path = Path(path)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    found = probe(path)
    if found.kind == IMAGE:
        info, frames = _read_still(found)
        if on_frame is not None:
            on_frame(frames[0])
        return info, frames

    cap = _Capture(path, found.format)
    max_frames, limit = _frame_limit(max_frames, max_decoded_pixels, cap.pixels)
    fps = cap.fps
    if not fps > 0:  # also catches NaN
        logger.debug("%s: container reports fps=%r; using %.0f for timestamps", path, fps, FALLBACK_FPS)
        fps = FALLBACK_FPS
    emitted: list[int] = []

    def emit(i: int, rgb: np.ndarray) -> None:
        emitted.append(i)
        on_frame(Frame(frame_index=i, timestamp_s=i / fps, image=rgb))  # type: ignore[misc]

    notes: list[str] = []
    try:
        declared = cap.declared_frames
        stop = min(declared, max_frames) if declared > 0 else max_frames
        if declared > max_frames:
            notes.append(f"only the first {max_frames} of {declared} frames decoded ({limit})")
        done = _first_pass(found.format, cap, stop, n, emit if on_frame else None)
        if done.end == 0:
            raise VideoReadError(f"no decodable frame ({declared} declared by the container): {path}")
        if declared <= 0 or done.end < stop:
            if declared > 0:
                logger.warning(
                    "%s: stream ends after %d of %d declared frames (truncated file or "
                    "inexact count); sampling over the decoded frames",
                    path, done.end, declared,
                )
            # Re-planning needs a second pass: a fresh capture decodes from the start.
            cap.release()
            cap = _Capture(path, found.format)
            # Unknown length: the frames are handed out now; truncated: the caller sees the difference.
            done = cap.decode(sample_indices(done.end, n), done.end, on_image=emit if on_frame and not emitted else None)
    except cv2.error as exc:
        raise VideoReadError(f"OpenCV failed while decoding {path}: {exc}") from exc
    finally:
        cap.release()

    images = done.images
    if not images:
        raise VideoReadError(f"frames decode but none converts to an image: {path}")
    missing = _missing_at_end(declared, stop, done.end, found.format)
    notes += _decode_notes(done, declared, missing, max_frames, limit)
    frames = [
        Frame(frame_index=i, timestamp_s=i / fps, image=images[i]) for i in sorted(images)
    ]
    h, w = frames[0].image.shape[:2]
    info = VideoInfo(
        path=path, n_frames=done.end, fps=fps, width=w, height=h, rotation=cap.rotation,
        n_frames_expected=min(n, stop if declared > 0 else done.end),
        decode_errors=missing + done.failed + done.unconverted, notes=tuple(notes),
    )
    return info, frames


def _first_pass(fmt: str, cap: _Capture, stop: int, n: int,
                on_image: Callable[[int, np.ndarray], None] | None) -> _Decoded:
    """Decode the sample planned from the container's count (or count the frames when it gives none).

    A regular H.264 MP4 goes through :mod:`skipdecode` (the same frames from about half the
    decoding); everything else, and anything that path gives up on, through OpenCV.
    """
    if cap.declared_frames <= 0:  # unknown length: count the frames first, then sample them
        return cap.decode([], stop)
    wanted = sample_indices(stop, n)
    if fmt == "iso-bmff":
        on_image = _in_order_once(on_image)  # OpenCV gives again what a fast path that gave up handed out
        fast = skipdecode.decode_sampled(cap.path, wanted, cap.declared_frames,
                                         lambda rgb: rotate_upright(rgb, cap.rotation), on_image=on_image, stop=stop)
        if fast is not None:
            logger.debug("%s: %d of %d frames decoded for %d sampled", cap.path, fast.decoded, fast.packets, len(wanted))
            return _Decoded(end=stop, images=fast.images)
    return cap.decode(wanted, stop, on_image=on_image)


def _in_order_once(on_image: Callable[[int, np.ndarray], None] | None) -> Callable[[int, np.ndarray], None] | None:
    """``on_image`` called only for indices above the last one it was called with."""
    if on_image is None:
        return None
    last = [-1]

    def once(index: int, rgb: np.ndarray) -> None:
        if index > last[0]:
            last[0] = index
            on_image(index, rgb)

    return once


def _frame_limit(max_frames: int, max_decoded_pixels: int | None, frame_pixels: int) -> tuple[int, str]:
    """Frames that may be decoded under both budgets, and the binding one in words (for the notes)."""
    if max_decoded_pixels is None or max_decoded_pixels // max(frame_pixels, 1) >= max_frames:
        return max_frames, f"limit {max_frames}"
    frames = max(1, max_decoded_pixels // max(frame_pixels, 1))
    return frames, f"limit {max_decoded_pixels / 1e6:g} Mpx decoded per request: {frames} frames at this size"


def _decode_notes(done: _Decoded, declared: int, missing: int, max_frames: int, limit: str) -> list[str]:
    """What went wrong while decoding, in words (for :attr:`VideoInfo.notes`)."""
    notes = []
    if missing:
        notes.append(f"the stream ends after {done.end} of {declared} declared frames (truncated or corrupt file)")
    if done.failed:
        notes.append(f"{done.failed} frame(s) failed to decode mid-stream (corrupt data)")
    if done.unconverted:
        notes.append(f"{done.unconverted} sampled frame(s) decoded but did not convert to an image")
    if done.end >= max_frames and declared <= 0:
        notes.append(f"only the first {max_frames} frames decoded ({limit}; the container gives no frame count)")
    return notes


def _missing_at_end(declared: int, stop: int, end: int, fmt: str) -> int:
    """Frames missing from a stream that ends before its container's count (0 within slack)."""
    if declared <= 0 or end >= stop:
        return 0
    short = stop - end
    exact = fmt in EXACT_COUNT_FORMATS
    if short <= (EXACT_COUNT_SLACK if exact else max(EXACT_COUNT_SLACK, ESTIMATED_COUNT_SLACK * declared)):
        return 0
    return short


class FrameStream:
    """:func:`read_frames` in a background thread; iterating yields the sampled frames as they decode.

    Decoding is FFmpeg work (OpenCV's or PyAV's) that releases the GIL, so it proceeds on another core
    while the caller works on the frames already out (no torch in the thread). After the
    iteration, :meth:`result` is what :func:`read_frames` returned; :attr:`replanned` is True
    when the stream ended before its declared length and the returned frames are not the
    ones yielded (rare: truncated files): the caller then redoes its work on them.

    Args:
        path: The video (or still image).
        n: Frames wanted.
        max_frames: Decode at most this many frames (as :func:`read_frames`).
        max_decoded_pixels: Decode at most this many pixels (as :func:`read_frames`).

    Raises:
        VideoReadError: While iterating, if the file cannot be read (as :func:`read_frames`).
    """

    def __init__(self, path: Path, n: int, max_frames: int = MAX_FRAMES_DECODED,
                 max_decoded_pixels: int | None = None) -> None:
        self.path, self.n = Path(path), n
        self.max_frames, self.max_decoded_pixels = max_frames, max_decoded_pixels
        self._queue: queue.Queue = queue.Queue()
        self._result: tuple[VideoInfo, list[Frame]] | None = None
        self._error: BaseException | None = None
        self._done = False
        self._yielded: list[int] = []
        self._thread = threading.Thread(target=self._decode, name=f"decode {self.path.name}", daemon=True)
        self._thread.start()

    def _decode(self) -> None:
        try:
            self._result = read_frames(self.path, self.n, max_frames=self.max_frames, on_frame=self._queue.put,
                                       max_decoded_pixels=self.max_decoded_pixels)
        except BaseException as exc:  # re-raised in the consumer's thread
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
