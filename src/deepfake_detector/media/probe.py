"""What a file is before anything decodes it: the checks every input gets first.

:func:`probe` looks at a path without decoding it: what kind of directory entry it is
(a dangling symlink, a symlink loop, a FIFO, a folder named ``.mp4`` are not files),
whether it can be read, and what its first bytes say it is (the content decides, not
the suffix: a video named ``.jpg`` is read as a video). For images it reads the
dimensions from the header and refuses, before decoding, any image above
:data:`MAX_PIXELS` (a 445 KB PNG can declare 12000x12000 pixels). It also finds truncated
JPEG/PNG data, which decoders fill in silently, and says why FFmpeg refused an MP4 (no
``moov`` box, or no video track). Every refusal is a :class:`VideoReadError` whose message
names the file.

Example:
    >>> probe(Path("clip.jpg")).kind  # a video named .jpg  # doctest: +SKIP
    'video'
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from PIL import Image, UnidentifiedImageError

from .. import records

logger = logging.getLogger(__name__)

# An image or video frame above this many pixels is refused before it is decoded: 8192 x
# 8192 (67 Mpx) holds any camera photo (61 Mpx full-frame sensors) and 8K video
# (7680 x 4320), and decodes into 200 MB of RGB.
MAX_PIXELS = 8192 * 8192
# Bytes read from the start of a file to recognise its format.
HEAD_BYTES = 4096
# Largest MP4 'moov' box read to say why FFmpeg refused a file (moov is small: tables only).
MAX_MOOV_BYTES = 64 << 20
# Chunk size when scanning JPEG data for its end marker.
SCAN_CHUNK = 1 << 20

IMAGE, VIDEO = records.KIND_IMAGE, records.KIND_VIDEO
# HEIF/AVIF stills are ISO files too (an 'ftyp' box): their major brands.
_IMAGE_BRANDS = {b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}
_ISO_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"}
_MP4_HANDLERS = {b"vide": "video", b"soun": "audio", b"text": "text", b"sbtl": "subtitles", b"subt": "subtitles",
                 b"meta": "metadata", b"hint": "hint", b"tmcd": "timecode"}


class VideoReadError(Exception):
    """A file could not be read as a video or image; ``str(exc)`` is a human reason naming the file."""


class VideoNotFoundError(VideoReadError):
    """The file does not exist (a "listed but missing" video, not a broken one)."""


@dataclass(frozen=True)
class Probe:
    """What the first look at a file found.

    Attributes:
        path: The file.
        kind: ``image`` or ``video``: how it is decoded (from its content; from its suffix
            when the content is not recognised).
        format: The recognised format (``jpeg``, ``png``, ``iso-bmff``, ...) or ``unknown``.
        size_bytes: File size.
        width: Image width from the header (0 for videos: known once FFmpeg opens it).
        height: Image height from the header (0 for videos).
    """

    path: Path
    kind: str
    format: str
    size_bytes: int
    width: int = 0
    height: int = 0


def entry_problem(path: Path) -> str | None:
    """Why a directory entry is not a readable regular file, or None when it is one.

    Follows symlinks. Used to give every listed entry a reason (the CLI's directory search,
    ingest's folder source) and by :func:`probe`.

    Args:
        path: The entry.

    Returns:
        None for a regular file (or a symlink to one), else a reason that names the path.
    """
    try:
        _stat_regular(Path(path))
    except VideoReadError as exc:
        return str(exc)
    return None


def _stat_regular(path: Path) -> os.stat_result:
    """``stat`` a path that must be a regular file; raise the precise error otherwise."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise VideoReadError(f"dangling symlink (its target {_link_target(path)} does not exist): {path}") from None
        raise VideoNotFoundError(f"file not found: {path}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise VideoReadError(f"symlink loop (the link never reaches a file): {path}") from None
        if exc.errno == errno.EACCES:
            raise VideoReadError(f"permission denied (a folder on its path cannot be searched): {path}") from None
        raise VideoReadError(f"cannot access it ({exc.strerror}): {path}") from None
    if stat.S_ISDIR(st.st_mode):
        raise VideoReadError(f"not a regular file (a folder): {path}")
    if not stat.S_ISREG(st.st_mode):
        what = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a special file")
        raise VideoReadError(f"not a regular file ({what}): {path}")
    return st


def list_entries(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Everything under a folder that is not a folder, and the folders that could not be listed.

    Unlike ``Path.rglob`` plus ``is_file()``, nothing is dropped silently: broken symlinks,
    symlink loops, FIFOs and sockets are listed (:func:`entry_problem` says what is wrong
    with them), and a folder that cannot be read is returned with the reason. Symlinked
    folders are followed, each real folder once (a link back to a parent is not a loop here).

    Args:
        root: The folder to search recursively.

    Returns:
        ``(entries, folder problems)``: entries in no particular order (callers sort), and
        ``(folder, reason)`` pairs.
    """
    entries: list[Path] = []
    problems: list[tuple[Path, str]] = []
    seen: set[tuple[int, int]] = set()
    pending = [Path(root)]
    while pending:
        folder = pending.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                logger.debug("%s: already listed through another path (symlinked folder)", folder)
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                items = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            problems.append((folder, f"cannot list folder ({exc.strerror or exc}): {folder}"))
            continue
        for item in items:
            try:
                is_dir = item.is_dir()  # follows symlinks
            except OSError:  # e.g. a symlink loop: an entry with a problem, not a folder
                is_dir = False
            (pending if is_dir else entries).append(Path(item.path))
    return entries, problems


def _link_target(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


# "BM" alone is too weak for a BMP: also require a known DIB header size.
_BMP_DIB_SIZES = (12, 40, 52, 56, 64, 108, 124)

# Content signatures, checked in order: (matches the first bytes?, kind, format).
_SIGNATURES: list[tuple[Callable[[bytes], bool], str, str]] = [
    (lambda h: h.startswith(b"\x89PNG\r\n\x1a\n"), IMAGE, "png"),
    (lambda h: h.startswith(b"\xff\xd8\xff"), IMAGE, "jpeg"),
    (lambda h: h[:4] == b"RIFF" and h[8:12] == b"WEBP", IMAGE, "webp"),
    (lambda h: h[:4] in (b"II*\x00", b"MM\x00*"), IMAGE, "tiff"),
    (lambda h: h[:2] == b"BM" and len(h) >= 18 and int.from_bytes(h[14:18], "little") in _BMP_DIB_SIZES, IMAGE, "bmp"),
    (lambda h: h[4:8] == b"ftyp" and h[8:12] in _IMAGE_BRANDS, IMAGE, "heif"),
    (lambda h: h[4:8] in _ISO_BOXES, VIDEO, "iso-bmff"),
    (lambda h: h[:4] == b"RIFF" and h[8:12] == b"AVI ", VIDEO, "avi"),
    (lambda h: h.startswith(b"\x1a\x45\xdf\xa3"), VIDEO, "matroska"),
    (lambda h: h.startswith(b"FLV"), VIDEO, "flv"),
    # FFmpeg decodes (animated) GIFs; OpenCV's image reader may not.
    (lambda h: h.startswith((b"GIF87a", b"GIF89a")), VIDEO, "gif"),
    (lambda h: h.startswith((b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")), VIDEO, "mpeg"),
    (lambda h: h.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"), VIDEO, "asf"),
    (lambda h: len(h) > 376 and h[0] == h[188] == h[376] == 0x47, VIDEO, "mpeg-ts"),
]


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the end of the head is still text.
        try:
            text = head[:-3].decode("utf-8") if len(head) > 3 else None
        except UnicodeDecodeError:
            text = None
    return bool(text) and all(c.isprintable() or c in "\r\n\t\f" for c in text)


def sniff(head: bytes) -> tuple[str | None, str]:
    """Recognise a format from a file's first bytes.

    Args:
        head: The first bytes (up to :data:`HEAD_BYTES`).

    Returns:
        ``(kind, format)``: kind ``image``, ``video``, ``text`` or None (not recognised).
    """
    for matches, kind, fmt in _SIGNATURES:
        if matches(head):
            return kind, fmt
    if _is_text(head):
        return "text", "text"
    return None, "unknown"


def probe(path: Path) -> Probe:
    """Look at a file without decoding it: entry type, permissions, format, image size.

    Args:
        path: A video or image file.

    Returns:
        What was found.

    Raises:
        VideoNotFoundError: If nothing exists at ``path``.
        VideoReadError: If it is not a readable regular file, is empty or plain text, or is
            an image whose header is unreadable or declares more than :data:`MAX_PIXELS`.
    """
    path = Path(path)
    st = _stat_regular(path)
    try:
        with path.open("rb") as fh:
            head = fh.read(HEAD_BYTES)
    except PermissionError:
        raise VideoReadError(f"permission denied: cannot read {path}") from None
    except OSError as exc:
        raise VideoReadError(f"cannot read it ({exc.strerror or exc}): {path}") from None
    if not head:
        raise VideoReadError(f"empty file (0 bytes): {path}")
    kind, fmt = sniff(head)
    if kind == "text":
        raise VideoReadError(f"plain text, not a video or image: {path}")
    if kind is None:  # not recognised: the suffix decides, and the decoder has the last word
        kind = IMAGE if path.suffix.lower() in records.IMAGE_SUFFIXES else VIDEO
    if kind == VIDEO:
        return Probe(path, VIDEO, fmt, st.st_size)
    width, height = image_size(path)
    check_pixels(width, height, path)
    return Probe(path, IMAGE, fmt, st.st_size, width, height)


def image_size(path: Path) -> tuple[int, int]:
    """An image's ``(width, height)`` from its header, without decoding its pixels.

    Raises:
        VideoReadError: If the header cannot be read or declares an absurd size.
    """
    try:
        with warnings.catch_warnings():
            # Pillow warns about (and above twice its own limit refuses) large images; the
            # pixel budget here is ours (check_pixels), so its warning is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return im.size
    except Image.DecompressionBombError as exc:
        raise VideoReadError(f"image too large to decode ({exc}; limit {MAX_PIXELS / 1e6:.0f} Mpx): {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise VideoReadError(f"not a decodable image (its header is unreadable: {exc}): {path}") from None


def check_pixels(width: int, height: int, path: Path) -> None:
    """Refuse an image or video frame of more than :data:`MAX_PIXELS` before decoding it.

    Raises:
        VideoReadError: Naming the size, the limit and the file.
    """
    if width * height > MAX_PIXELS:
        raise VideoReadError(
            f"{width}x{height} pixels ({width * height / 1e6:.0f} Mpx) is above the limit of "
            f"{MAX_PIXELS / 1e6:.0f} Mpx per image or frame; not decoded: {path}"
        )


def image_damage(path: Path, fmt: str) -> str | None:
    """Say whether a JPEG or PNG file ends before its image data does.

    Decoders fill a truncated image in (grey or black rows) and carry on, so a cut photo
    would otherwise be judged as if it were whole. Other formats are not checked.

    Args:
        path: The image file.
        fmt: Its format from :func:`sniff`.

    Returns:
        A short description of the damage, or None when none was found.
    """
    try:
        with open(path, "rb") as fh:
            if fmt == "jpeg":
                return _jpeg_damage(fh)
            if fmt == "png":
                return _png_damage(fh)
    except OSError as exc:
        return f"cannot be read to the end ({exc.strerror or exc})"
    return None


def _jpeg_damage(fh) -> str | None:  # a binary file
    """Walk the JPEG header segments to the scan data, then look for the end-of-image marker."""
    pos = 2
    while True:
        fh.seek(pos)
        marker = fh.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return "truncated or corrupt JPEG header"
        code = marker[1]
        if code == 0xFF:  # fill byte
            pos += 1
            continue
        if code == 0xD9:
            return "JPEG ends before any image data"
        if code == 0x01 or 0xD0 <= code <= 0xD7:  # markers without a length
            pos += 2
            continue
        length = fh.read(2)
        if len(length) < 2:
            return "truncated JPEG header"
        pos += 2 + int.from_bytes(length, "big")
        if code == 0xDA:  # start of scan: entropy-coded data follows
            break
    # In entropy-coded data 0xFF is always followed by 0x00 or a restart marker, so the
    # first FF D9 after the scan header is the end of the image (data after it, such as a
    # motion photo's video, is allowed).
    fh.seek(pos)
    tail = b""
    while chunk := fh.read(SCAN_CHUNK):
        if b"\xff\xd9" in tail + chunk:
            return None
        tail = chunk[-1:]
    return "truncated JPEG: the image data ends before its end marker (rows are missing)"


def _png_damage(fh) -> str | None:  # a binary file
    """Walk the PNG chunks to IEND."""
    pos = 8
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    while pos + 12 <= size:
        fh.seek(pos)
        header = fh.read(8)
        length, ctype = int.from_bytes(header[:4], "big"), header[4:8]
        if ctype == b"IEND":
            return None
        pos += 12 + length
    return "truncated PNG: the file ends before its last chunk (IEND)"


def describe_unopenable(path: Path, fmt: str) -> str:
    """Say why FFmpeg may have refused a file (for the reason of an unreadable row).

    Args:
        path: The file FFmpeg could not open.
        fmt: Its format from :func:`sniff` (``unknown`` when not recognised).
    """
    if fmt == "iso-bmff":
        tracks = mp4_tracks(path)
        if tracks is None:
            return "an MP4/MOV file without a 'moov' box (the index FFmpeg needs): truncated, or never finalised"
        if "video" not in tracks:
            return f"an MP4/MOV file without a video track (it holds: {', '.join(tracks) or 'no tracks'})"
        return "an MP4/MOV file whose video track FFmpeg cannot open (corrupt or unsupported codec)"
    if fmt != "unknown":
        return f"FFmpeg cannot open this {fmt} file: truncated, corrupt or without a video stream"
    return "FFmpeg cannot open it: unknown format, or a truncated/corrupt container"


def _boxes(fh, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:  # a binary file
    """ISO-BMFF boxes in ``[start, end)``: ``(type, payload start, box end)``; stops at damage."""
    pos = start
    while pos + 8 <= end:
        fh.seek(pos)
        header = fh.read(8)
        if len(header) < 8:
            return
        size, btype, payload = int.from_bytes(header[:4], "big"), header[4:8], pos + 8
        if size == 1:
            large = fh.read(8)
            if len(large) < 8:
                return
            size, payload = int.from_bytes(large, "big"), pos + 16
        elif size == 0:
            size = end - pos
        if size < payload - pos or pos + size > end:
            return
        yield btype, payload, pos + size
        pos += size


def mp4_tracks(path: Path) -> list[str] | None:
    """The kinds of tracks an MP4/MOV file declares (``video``, ``audio``, ...).

    Returns:
        One entry per track, or None when the file has no complete ``moov`` box.
    """
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            moov = next(((p, e) for t, p, e in _boxes(fh, 0, size) if t == b"moov"), None)
            if moov is None or moov[1] - moov[0] > MAX_MOOV_BYTES:
                return None
            tracks = []
            for t, p, e in _boxes(fh, *moov):
                if t != b"trak":
                    continue
                kind = "unknown"
                for mt, mp, me in _boxes(fh, p, e):
                    if mt != b"mdia":
                        continue
                    for ht, hp, _ in _boxes(fh, mp, me):
                        if ht == b"hdlr":
                            fh.seek(hp + 8)  # version/flags, pre_defined
                            handler = fh.read(4)
                            kind = _MP4_HANDLERS.get(handler, handler.decode("latin-1"))
                tracks.append(kind)
            return tracks
    except OSError:
        return None
