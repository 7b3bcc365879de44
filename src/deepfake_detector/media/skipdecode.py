"""Decode only what a sample needs: H.264 frames nothing refers to are skipped unless sampled.

An H.264 picture whose slices all have ``nal_ref_idc == 0`` is a *non-reference* picture:
no other picture is predicted from it, so leaving it out changes no other decoded frame
(FFmpeg's own ``skip_frame=nonref`` rests on the same rule). About half the frames of
FF++ c23 and DFDC files are such (x264's B-frames), and a sample of 32 frames from a
300-frame clip needs only the few of them that are sampled: decoding costs 0.56-0.81x
the CPU of decoding every frame (docs/performance.md "Decoding"). The frames returned are the
ones decoding every frame gives, to the bit (tests compare them with OpenCV's path).

This is a fast path for regular files only: 8-bit H.264 in an ISO-BMFF container (MP4/MOV,
length-prefixed NAL units), one video stream, every packet timestamped and none marked
for discarding, and as many packets as the container declares. Anything else, or any
FFmpeg error, returns ``None`` and :mod:`video` decodes every frame with OpenCV, which
counts and describes damage. Damage inside a skipped picture is not seen: it cannot reach
a sampled frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    import av

logger = logging.getLogger(__name__)

__all__ = ["SkipDecoded", "decode_sampled", "is_non_reference"]

# NAL unit types (H.264 Table 7-1): coded slices of a non-IDR / IDR picture, and the
# SVC/MVC extensions, whose dependencies this module does not follow (decoded, never skipped).
_SLICE_TYPES = (1, 5)
_EXTENSION_TYPES = (14, 15, 20, 21)
# A frame leaves the decoder at most this many frames after its place in presentation order
# (H.264 keeps at most 16 in its decoded picture buffer), so that many packets past a
# sample's last frame fix the presentation order of all frames before it.
_MAX_REORDER = 32
# Pixel formats whose RGB conversion by PyAV equals OpenCV's to the bit (tests); OpenCV and
# PyAV round 10-bit frames to 8 bits differently (up to 17 levels apart), so those go to OpenCV.
SAME_AS_OPENCV = ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p")


@dataclass
class SkipDecoded:
    """A sample decoded by :func:`decode_sampled`.

    Attributes:
        images: The wanted frames, upright RGB, by index (presentation order).
        packets: Frames the sample was planned over (the stream's, or its first ``stop``).
        decoded: Packets handed to the decoder (the rest were skipped, or came after the
            last wanted frame).
    """

    packets: int
    images: dict[int, np.ndarray] = field(default_factory=dict)
    decoded: int = 0


def is_non_reference(data: bytes, length_size: int = 4) -> bool:
    """Whether an H.264 access unit (length-prefixed NAL units) is a non-reference picture.

    Args:
        data: One packet of an ISO-BMFF H.264 stream.
        length_size: Bytes of each NAL unit's length prefix (from the ``avcC`` box).

    Returns:
        True only when the packet parses cleanly, holds at least one slice and every slice
        has ``nal_ref_idc == 0``; anything else (a reference picture, an SVC/MVC extension,
        bytes that do not parse) is False, so it gets decoded.
    """
    at, slices = 0, 0
    while at + length_size < len(data):
        size = int.from_bytes(data[at:at + length_size], "big")
        if size == 0 or at + length_size + size > len(data):
            return False
        header = data[at + length_size]
        kind = header & 0x1F
        if kind in _EXTENSION_TYPES:
            return False
        if kind in _SLICE_TYPES:
            if header & 0x60:  # nal_ref_idc != 0
                return False
            slices += 1
        at += length_size + size
    return slices > 0 and at == len(data)


def decode_sampled(path: Path, wanted: list[int], declared: int, rotate: Callable[[np.ndarray], np.ndarray],
                   on_image: Callable[[int, np.ndarray], None] | None = None, stop: int | None = None,
                   ) -> SkipDecoded | None:
    """Decode the ``wanted`` frames of a regular H.264 MP4, skipping non-reference pictures not wanted.

    Args:
        path: The video (already probed and opened by :mod:`video`).
        wanted: Sorted frame indices (presentation order) to return.
        declared: Frames the container declares (OpenCV's count): a stream with another
            number of packets is not regular.
        rotate: Turns a decoded frame upright (the container's display matrix).
        on_image: Called with ``(index, rgb)`` as each wanted frame is decoded, in order.
        stop: Only frames before this one matter (``declared`` when None): a long file is
            not read to its end to sample its beginning.

    Returns:
        The frames, or ``None`` when the file is not one this path handles or FFmpeg
        reports an error: the caller then decodes every frame (``on_image`` may already
        have seen some frames, which that decoding gives again, identical).
    """
    import av  # here, not at import: the CLI checks unreadable files without loading FFmpeg's libraries

    try:
        with av.open(str(path)) as container:
            plan = _plan(container, declared, declared if stop is None else stop)
        if plan is None:
            return None
        length_size, order = plan
        targets = {order[i]: i for i in wanted if i < len(order)}
        if len(targets) != len(wanted):
            return None
        done = SkipDecoded(packets=len(order))
        with av.open(str(path)) as container:
            _decode(container, length_size, targets, done, rotate, on_image)
    except (av.FFmpegError, OSError, ValueError) as exc:
        logger.debug("%s: decoding every frame instead (%s)", path, exc)
        return None
    if targets:
        logger.debug("%s: decoding every frame instead (frames %s did not decode)", path, sorted(targets.values()))
        return None
    return done


def _decode(container: av.container.InputContainer, length_size: int, targets: dict[int, int], done: SkipDecoded,
            rotate: Callable[[np.ndarray], np.ndarray], on_image: Callable[[int, np.ndarray], None] | None) -> None:
    """Decode until every target (timestamp -> index) is out, skipping unwanted non-reference pictures.

    Targets found are popped from ``targets`` into ``done.images``.
    """
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame + slice threads, as OpenCV's decoder uses

    def take(frames: list[av.VideoFrame]) -> None:
        for frame in frames:
            index = targets.pop(frame.pts, None)
            if index is not None:
                done.images[index] = rotate(frame.to_ndarray(format="rgb24"))
                if on_image is not None:
                    on_image(index, done.images[index])

    for packet in container.demux(stream):
        if not targets:
            return
        if packet.size == 0:
            continue
        if packet.pts not in targets and is_non_reference(bytes(packet), length_size):
            continue
        done.decoded += 1
        take(stream.decode(packet))
    take(stream.decode(None))  # the frames still held for reordering


def _plan(container: av.container.InputContainer, declared: int, stop: int) -> tuple[int, list[int]] | None:
    """The NAL length size and the first ``stop`` frames' timestamps in presentation order, if the file is regular.

    The demuxer reads the packets (no decoding: a few ms for a 10 s clip): all of them, or
    :data:`_MAX_REORDER` past ``stop`` when that is fewer.
    """
    videos = container.streams.video
    if len(videos) != 1 or videos[0].codec_context.name != "h264" or "mp4" not in container.format.name.split(","):
        return None
    if videos[0].codec_context.pix_fmt not in SAME_AS_OPENCV:
        return None
    extradata = videos[0].codec_context.extradata
    if not extradata or len(extradata) < 7 or extradata[0] != 1:  # not an avcC record: Annex B start codes
        return None
    need = min(declared, stop + _MAX_REORDER)
    stamps = []
    for packet in container.demux(videos[0]):
        if packet.size == 0:
            continue
        if packet.pts is None or packet.is_discard or packet.is_corrupt:
            return None
        stamps.append(packet.pts)
        if len(stamps) == need < declared:
            break
    if len(stamps) != need or len(set(stamps)) != len(stamps):
        return None
    return (extradata[4] & 0x03) + 1, sorted(stamps)[:stop]
