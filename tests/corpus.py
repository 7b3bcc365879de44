"""A corpus of bad (and awkward but good) inputs, written at test time: no media is committed.

:func:`write_corpus` writes every kind into a folder with cv2, numpy, Pillow and hand-built
bytes (no FFmpeg binary): random bytes, empty and text files, broken and damaged videos
and images, an audio-only MP4 built box by box, broken symlinks, a symlink loop, a FIFO,
an unreadable file and folder, a 144 Mpx PNG of 450 KB, awkward names (shell
metacharacters, a newline, unicode, 250 characters) and good files in unusual forms
(rotated, VFR, greyscale, 16 faces, RGBA, 16-bit, CMYK, a video named ``.jpg``, an image
named ``.mp4``). Each :class:`Entry` says what the CLI must answer for it (the verdicts
allowed and a fragment the reason must contain) and what the stages must make of it.

Not generated here: a real 10-minute clip (a 600-frame clip stands in; memory does not
depend on the length because frames are decoded one at a time) and a real phone video with
an edit list.
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from conftest import noise_frames, portrait_frames, portrait_image, set_mp4_rotation, write_clip

SCORED = frozenset({"fake", "real", "uncertain"})
UNREADABLE = frozenset({"unreadable"})
NO_FACE = frozenset({"no_face"})
# Damaged but partly decodable: scored files are uncertain (never fake/real), faceless ones no_face.
DAMAGED = frozenset({"uncertain", "no_face"})

SHELL_NAME = "a'b\"c $(touch PWNED) `touch PWNED2`; ls | cat & x*?.mp4"
NEWLINE_NAME = "line\nbreak.mp4"
UNICODE_NAME = "видео_顔_🎭.mp4"
LONG_NAME = "l" * 246 + "ong.mp4"  # 253 bytes: near the 255-byte limit of a file name


@dataclass
class Entry:
    """One corpus item.

    Attributes:
        name: Path relative to the corpus folder.
        kind: What it is, in words (for the table of outcomes).
        verdicts: CLI verdicts allowed.
        fragment: Text the reason must contain ("" when any reason will do).
        stage: What the stages make of it: ``ok``/``unreadable``/``missing`` (the
            extract report's status of its manifest row), or ``skipped`` (ingest reports it
            as a problem with a reason and makes no row).
        in_dir: Found by a directory search (media name, inside the corpus folder).
        privileged_ok: Readable when permission bits do not apply (root with its
            capabilities): then it is judged like a good file, and only the row is checked.
        extra: Extra facts a test checks (e.g. ``kind`` read from content, decode_errors > 0).
    """

    name: str
    kind: str
    verdicts: frozenset[str]
    fragment: str = ""
    stage: str = "ok"
    in_dir: bool = True
    privileged_ok: bool = False
    extra: dict = field(default_factory=dict)


def _bgr(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def _box(btype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + btype + payload


def _full_box(btype: bytes, payload: bytes, version: int = 0, flags: int = 0) -> bytes:
    return _box(btype, struct.pack(">I", (version << 24) | flags) + payload)


def audio_only_mp4(path: Path, seconds: float = 1.0, rate: int = 8000) -> Path:
    """An ISO MP4 with one track of 16-bit PCM audio ('sowt') and no video, built box by box."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isommp41")
    mdat = _box(b"mdat", pcm)
    matrix = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    mvhd = _full_box(b"mvhd", struct.pack(">IIII", 0, 0, 1000, int(seconds * 1000)) + struct.pack(">IH", 0x10000, 0x100)
                     + bytes(10) + matrix + bytes(24) + struct.pack(">I", 2))
    tkhd = _full_box(b"tkhd", struct.pack(">IIIII", 0, 0, 1, 0, int(seconds * 1000)) + bytes(8)
                     + struct.pack(">HHHH", 0, 0, 0x100, 0) + matrix + struct.pack(">II", 0, 0), flags=3)
    mdhd = _full_box(b"mdhd", struct.pack(">IIII", 0, 0, rate, n) + struct.pack(">HH", 0x55C4, 0))
    hdlr = _full_box(b"hdlr", struct.pack(">I", 0) + b"soun" + bytes(12) + b"SoundHandler\x00")
    sowt = _box(b"sowt", bytes(6) + struct.pack(">H", 1) + struct.pack(">HHI", 0, 0, 0)
                + struct.pack(">HHHHI", 1, 16, 0, 0, rate << 16))
    stbl = _box(b"stbl", _full_box(b"stsd", struct.pack(">I", 1) + sowt)
                + _full_box(b"stts", struct.pack(">III", 1, n, 1))
                + _full_box(b"stsc", struct.pack(">IIII", 1, 1, n, 1))
                + _full_box(b"stsz", struct.pack(">II", 2, n))
                + _full_box(b"stco", struct.pack(">II", 1, len(ftyp) + 8)))
    dinf = _box(b"dinf", _full_box(b"dref", struct.pack(">I", 1) + _full_box(b"url ", b"", flags=1)))
    minf = _box(b"minf", _full_box(b"smhd", struct.pack(">HH", 0, 0)) + dinf + stbl)
    moov = _box(b"moov", mvhd + _box(b"trak", tkhd + _box(b"mdia", mdhd + hdlr + minf)))
    path.write_bytes(ftyp + mdat + moov)
    return path


def _find_box(data: bytes, start: int, end: int, btype: bytes) -> tuple[int, int]:
    pos = start
    while pos + 8 <= end:
        size = struct.unpack(">I", data[pos : pos + 4])[0]
        if data[pos + 4 : pos + 8] == btype:
            return pos, pos + size
        pos += size
    raise ValueError(f"no {btype!r} box")


def make_vfr(path: Path) -> Path:
    """Turn a constant-rate mp4 (moov after mdat, as OpenCV writes it) into a variable-rate one:
    the second half of the frames lasts three times as long (two 'stts' entries)."""
    data = bytearray(path.read_bytes())
    chain = [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stts"]
    spans, start, end = [], 0, len(data)
    for btype in chain:
        start, end = _find_box(bytes(data), start, end, btype)
        spans.append(start)
        start, end = start + 8, end
    stts_at = spans[-1]
    count, delta = struct.unpack(">II", data[stts_at + 16 : stts_at + 24])
    first = count // 2
    new = _full_box(b"stts", struct.pack(">IIIII", 2, first, delta, count - first, 3 * delta))
    old_size = struct.unpack(">I", data[stts_at : stts_at + 4])[0]
    grow = len(new) - old_size
    data[stts_at : stts_at + old_size] = new
    for at in spans[:-1]:  # the boxes that hold stts grow with it (mdat is before moov: no offsets move)
        struct.pack_into(">I", data, at, struct.unpack(">I", data[at : at + 4])[0] + grow)
    # The edit list still says the old duration, which would hide the slower frames: drop it
    # (renamed to a 'free' box of the same size).
    edts = data.find(b"edts")
    if edts > 0:
        data[edts : edts + 4] = b"free"
    path.write_bytes(bytes(data))
    return path


def huge_png(path: Path, width: int = 12000, height: int = 12000) -> Path:
    """A valid, mostly black PNG of ``width`` x ``height`` px that is a few hundred KB (never in memory whole)."""
    def chunk(ctype: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = bytes(1 + 3 * width)  # filter byte 0, then black pixels
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def _face_photo(size: tuple[int, int] = (160, 120)) -> np.ndarray:
    return portrait_frames(1, *size)[0]


def write_corpus(root: Path) -> list[Entry]:
    """Write every kind into ``root`` (created) and return the entries.

    The entries with a stage status ``missing`` or kind ``listed-but-missing`` are paths
    that do not exist; the malformed DFDC index lives in :func:`write_dfdc_indexes`.
    """
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:  # OpenCV picks its writer by suffix: write there, then move
        return _write_corpus(root, Path(scratch))


def _write_corpus(root: Path, scratch: Path) -> list[Entry]:
    e: list[Entry] = []
    # Small frames: MTCNN's cost grows with the pixels, and the corpus runs several times.
    face = face_small = portrait_frames(12, 160, 120)

    def add(name: str, kind: str, verdicts: frozenset[str], fragment: str = "", **kw: object) -> Path:
        e.append(Entry(name, kind, verdicts, fragment, **kw))
        return root / name

    # --- not media at all
    rng = np.random.default_rng(0)
    add("random.mp4", "random bytes", UNREADABLE, "FFmpeg cannot open it", stage="unreadable").write_bytes(
        rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    add("random.png", "random bytes named .png", UNREADABLE, "not a decodable image", stage="unreadable").write_bytes(
        rng.integers(0, 256, 5_000, dtype=np.uint8).tobytes())
    add("empty.mp4", "empty file", UNREADABLE, "empty file", stage="unreadable").write_bytes(b"")
    add("empty.png", "zero-byte image", UNREADABLE, "empty file", stage="unreadable").write_bytes(b"")
    add("text.mp4", "text named .mp4", UNREADABLE, "plain text", stage="unreadable").write_text("hello\n" * 100)
    add("page.jpg", "HTML named .jpg", UNREADABLE, "plain text", stage="unreadable").write_text(
        "<html><body>not a photo</body></html>\n")
    (root / "notes.txt").write_text("not media: ignored by a directory search, skipped by ingest\n")

    # --- videos that do not decode
    zeroed = write_clip(root / "zero_frames.mp4", noise_frames(10))
    data = bytearray(zeroed.read_bytes())
    at = data.find(b"mdat")
    size = struct.unpack(">I", data[at - 4 : at])[0]
    data[at + 4 : at - 4 + size] = bytes(size - 8)
    zeroed.write_bytes(bytes(data))
    add("zero_frames.mp4", "zero decodable frames", UNREADABLE, "no decodable frame", stage="unreadable")
    whole = write_clip(scratch / "whole.mp4", face)  # mp4v: the index (moov) is written last
    add("truncated.mp4", "truncated mp4 (index lost)", UNREADABLE, "without a 'moov' box", stage="unreadable").write_bytes(
        whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    audio_only_mp4(root / "audio_only.mp4")
    add("audio_only.mp4", "audio-only mp4", UNREADABLE, "without a video track (it holds: audio)", stage="unreadable")

    # --- damaged but partly decodable: never a confident verdict
    avi = write_clip(scratch / "full.avi", portrait_frames(40, 160, 120), fourcc="MJPG")
    add("truncated.avi", "truncated video (stream ends early)", DAMAGED, "ends after", extra={"decode_errors": True}).write_bytes(
        avi.read_bytes()[: avi.stat().st_size // 2])
    avi.unlink()
    mid = write_clip(root / "corrupt_mid.mp4", portrait_frames(40, 160, 120))
    data = bytearray(mid.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 2000):
        data[i] ^= 0xFF
    mid.write_bytes(bytes(data))
    add("corrupt_mid.mp4", "mid-file corrupt video", DAMAGED, "failed to decode mid-stream", extra={"decode_errors": True})
    ok, jpg = cv2.imencode(".jpg", _bgr(_face_photo((240, 180))))
    add("truncated.jpg", "truncated JPEG", DAMAGED, "truncated JPEG", extra={"decode_errors": True}).write_bytes(
        jpg.tobytes()[: int(len(jpg) * 0.6)])
    ok, png = cv2.imencode(".png", _bgr(_face_photo()))
    add("truncated.png", "truncated PNG", DAMAGED | UNREADABLE, "truncated PNG", stage="unreadable").write_bytes(
        png.tobytes()[: int(len(png) * 0.6)])

    # --- thin evidence
    write_clip(add("one_frame.mp4", "one-frame video", frozenset({"uncertain"}), "fewer than"), face[:1])

    # --- good files in unusual forms
    rotated = write_clip(add("rotated.mp4", "rotation tag (90 degrees)", SCORED), face)
    set_mp4_rotation(rotated, 90)
    make_vfr(write_clip(add("vfr.mp4", "variable frame rate", SCORED), face))
    grey = add("grey.mp4", "greyscale video", SCORED)
    writer = cv2.VideoWriter(str(grey), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120), isColor=False)
    for frame in face:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
    writer.release()
    write_clip(add("clip.mkv", "Matroska (frame count estimated)", SCORED), face, fourcc="MJPG")
    write_clip(add("long.mp4", "long clip (600 frames; stands in for 10 minutes)", SCORED),
               portrait_frames(600, 160, 120, step=0))
    write_clip(add("faceless.mp4", "video without a face", NO_FACE, "no face"), noise_frames(12, 160, 120))
    tiles = cv2.resize(portrait_image(), (100, 112), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(add("sixteen_faces.png", "16 faces in one image", SCORED)), _bgr(np.tile(tiles, (4, 4, 1))))
    add("video_named.jpg", "video named .jpg", SCORED, extra={"kind": "video"}).write_bytes(
        write_clip(scratch / "video.mp4", face).read_bytes())
    (root / "image_named.mp4").write_bytes(jpg.tobytes())
    add("image_named.mp4", "JPEG named .mp4", SCORED, extra={"kind": "image"})
    photo = _face_photo()
    rgba = np.dstack([_bgr(photo), np.full(photo.shape[:2], 200, np.uint8)])
    cv2.imwrite(str(add("rgba.png", "RGBA PNG", SCORED)), rgba)
    cv2.imwrite(str(add("sixteen_bit.png", "16-bit PNG", SCORED)), _bgr(photo).astype(np.uint16) * 257)
    Image.fromarray(photo).convert("CMYK").save(add("cmyk.jpg", "CMYK JPEG", SCORED | NO_FACE), quality=95)
    cv2.imwrite(str(add("grey.jpg", "greyscale JPEG", SCORED)), cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY))
    cv2.imwrite(str(add("photo.webp", "WebP", SCORED)), _bgr(photo))
    cv2.imwrite(str(add("photo.bmp", "BMP", SCORED)), _bgr(photo))
    # A JPEG followed by other data (as in motion photos): whole, not truncated.
    add("motion_photo.jpg", "JPEG with trailing data", SCORED).write_bytes(
        jpg.tobytes() + b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    cv2.imwrite(str(add("tiny_1x1.png", "1x1 image", NO_FACE, "no face")), np.zeros((1, 1, 3), np.uint8))
    cv2.imwrite(str(add("tiny_8x8.jpg", "8x8 image", NO_FACE, "no face")), np.full((8, 8, 3), 128, np.uint8))
    # Within the pixel budget but above MTCNN's: the full-resolution retry must be bounded.
    cv2.imwrite(str(add("large_plain.png", "24 Mpx plain image (bounded detection)", NO_FACE, "no face")),
                np.full((4000, 6000, 3), 90, np.uint8))
    huge_png(add("huge.png", "12000x12000 PNG of 450 KB (pixel budget)", UNREADABLE, "above the limit", stage="unreadable"))

    # --- awkward names
    write_clip(add(SHELL_NAME, "shell metacharacters in the name", SCORED), face_small)
    write_clip(add(NEWLINE_NAME, "newline in the name", SCORED), face_small)
    write_clip(add(UNICODE_NAME, "unicode name", SCORED), face_small)
    write_clip(add(LONG_NAME, "253-byte name", NO_FACE, "no face"), noise_frames(4, 64, 48))

    # --- entries that are not regular files
    os.symlink("loop.mp4", add("loop.mp4", "symlink loop", UNREADABLE, "symlink loop", stage="skipped"))
    os.symlink("nowhere/gone.mp4", add("dangling.mp4", "dangling symlink", UNREADABLE, "dangling symlink", stage="skipped"))
    os.mkfifo(add("fifo.mp4", "FIFO named .mp4", UNREADABLE, "FIFO", stage="skipped"))
    os.symlink("rotated.mp4", add("link.mp4", "symlink to a good clip", SCORED))
    (root / "folder.mp4").mkdir()
    cv2.imwrite(str(add("folder.mp4/inner.png", "folder named .mp4 (searched; its image judged)", SCORED)), _bgr(photo))
    os.symlink(".", root / "folder.mp4" / "self")  # a symlinked folder pointing back: listed once
    locked = add("no_read.mp4", "no read permission", UNREADABLE, "permission denied", stage="unreadable", privileged_ok=True)
    write_clip(locked, face_small)
    os.chmod(locked, 0)
    (root / "locked_dir").mkdir()
    write_clip(add("locked_dir/inside.mp4", "clip in a folder without permission", UNREADABLE,
                   "permission denied (a folder on its path cannot be searched)", stage="unreadable", privileged_ok=True),
               face_small)
    os.chmod(root / "locked_dir", 0)
    add("missing.mp4", "listed but missing (a path that does not exist)", UNREADABLE, "file not found",
        stage="missing", in_dir=False)
    return e


def write_dfdc_indexes(root: Path, clip: Path) -> dict[str, str]:
    """A DFDC-style source with a listed-but-missing video and a folder with a malformed index.

    Returns:
        Paths (relative to ``root``) by what they show: ``missing``, ``malformed``, ``ok``.
    """
    good, bad = root / "part0", root / "part1"
    good.mkdir(parents=True)
    bad.mkdir(parents=True)
    (good / "real.mp4").write_bytes(clip.read_bytes())
    (good / "metadata.json").write_text('{"real.mp4": {"label": "REAL"}, "gone.mp4": {"label": "FAKE", "original": "real.mp4"}}')
    (bad / "metadata.json").write_text('{"x.mp4": {"label": "FAKE"')  # cut short: not JSON
    (bad / "x.mp4").write_bytes(clip.read_bytes())
    return {"ok": "part0/real.mp4", "missing": "part0/gone.mp4", "malformed": "part1/metadata.json"}


def unlock(root: Path) -> None:
    """Give back the permissions the corpus took away (so tmp_path can be cleaned up)."""
    for path in (root / "no_read.mp4", root / "locked_dir"):
        if path.exists():
            os.chmod(path, 0o755)
