"""Shared test helpers: synthetic clips written with cv2, a real portrait, bad files.

MTCNN does not find faces in drawn cartoons, so "has a face" media is built from a real
portrait that ships with matplotlib (Grace Hopper), moved a little from frame to frame.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

# Stages run in-process in the tests (no Dask cluster on the shared 2-core machines), also
# under `dvc repro` in subprocesses; tests of the cluster path ask for one explicitly.
os.environ.setdefault("DFD_DASK_SCHEDULER", "none")

# `make test` runs the files on 2 processes (pytest-xdist, one file per process, handed out in
# collection order): the longest files go first, so that the last one to start is a short one
# and neither process waits at the end (the round trips alone take about 5 minutes).
LONGEST_FIRST = ("test_remote.py", "test_train_eval.py", "test_web.py", "test_corpus.py", "test_scale_out.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keeps its order


# Real sample media live next to the repository, never inside it.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def portrait_image() -> np.ndarray:
    """A real face photo (Grace Hopper, 600x512), RGB uint8."""
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        buf = np.frombuffer(fh.read(), dtype=np.uint8)
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def portrait_frames(n: int, width: int = 320, height: int = 240, step: int = 2) -> list[np.ndarray]:
    """``n`` RGB frames: the portrait scaled to the frame height, sliding ``step`` px per frame."""
    face = portrait_image()
    scale = height / face.shape[0]
    face = cv2.resize(face, (round(face.shape[1] * scale), height), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(n):
        canvas = np.full((height, width, 3), 90, dtype=np.uint8)
        x = max(0, (width - face.shape[1]) // 2 - n * step // 2 + i * step)
        part = face[:, : max(0, min(face.shape[1], width - x))]
        canvas[:, x : x + part.shape[1]] = part
        frames.append(canvas)
    return frames


def noise_frames(n: int, width: int = 320, height: int = 240, seed: int = 0) -> list[np.ndarray]:
    """``n`` frames of smooth random blobs: a valid video with no face in it."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(n, height // 16, width // 16, 3), dtype=np.uint8)
    return [cv2.resize(s, (width, height), interpolation=cv2.INTER_CUBIC) for s in small]


def write_clip(
    path: Path, frames: list[np.ndarray], fps: float = 10.0, fourcc: str = "mp4v"
) -> Path:
    """Write RGB frames to a video file with OpenCV (``mp4v`` for .mp4, ``MJPG`` for .avi)."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"cv2 cannot write {path}"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_h264(path: Path, frames: list[np.ndarray], fps: int = 10, faststart: bool = False,
               pix_fmt: str = "yuv420p") -> Path:
    """Write RGB frames as H.264 with PyAV (x264's defaults, which make many B-frames non-reference pictures).

    OpenCV's wheels carry no H.264 encoder; the datasets' files are H.264, so the decoding
    paths that depend on it are tested on these. ``faststart`` puts the index (moov) first,
    so a truncated copy still opens.
    """
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        for rgb in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)))
        out.mux(stream.encode(None))
    return path


def set_mp4_rotation(path: Path, degrees: int) -> None:
    """Give an mp4 a display matrix that rotates it ``degrees`` clockwise, in place.

    Rewrites the matrix of the first ``tkhd`` box (what phones do for portrait videos);
    no re-encoding, so the stored frames stay as they were.
    """
    # (a, b, u, c, d, v, x, y, w) in 16.16 / 2.30 fixed point, as FFmpeg reads them.
    matrices = {
        0: (0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000),
        90: (0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000),
        180: (-0x10000, 0, 0, 0, -0x10000, 0, 0, 0, 0x40000000),
        270: (0, -0x10000, 0, 0x10000, 0, 0, 0, 0, 0x40000000),
    }
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    assert at > 0, f"no tkhd box in {path}"
    version = data[at + 4]
    # type, version+flags, times/track id/duration, reserved, layer..volume..reserved
    offset = at + 4 + 4 + (20 if version == 0 else 32) + 8 + 8
    data[offset : offset + 36] = struct.pack(">9i", *matrices[degrees % 360])
    path.write_bytes(bytes(data))


# Python source that evaluates to the peak resident memory of the running process, in KiB.
# VmHWM belongs to the process's own address space; ru_maxrss would not do in a subprocess:
# Linux carries it over from the parent across fork and exec (a child of a 2 GB pytest
# process would report 2 GB).
PEAK_RSS_KB = "int(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')))"


def unprivileged() -> list[str]:
    """A command prefix that runs a subprocess without the power to ignore file permissions.

    As root, permission bits do not apply, so an unreadable file would be read: run under
    ``setpriv`` (util-linux) without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH. Skips the test
    when that is not possible.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv (util-linux) is not installed: cannot test unreadable files")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all"]


@pytest.fixture(scope="session")
def portrait() -> np.ndarray:
    """The real portrait, RGB uint8 (read-only: copy before drawing on it)."""
    image = portrait_image()
    image.setflags(write=False)
    return image


@pytest.fixture
def portrait_clip(tmp_path: Path) -> Path:
    """A 20-frame 320x240 mp4 with a real, slowly moving face."""
    return write_clip(tmp_path / "portrait.mp4", portrait_frames(20))


@pytest.fixture
def noise_clip(tmp_path: Path) -> Path:
    """A 12-frame 320x240 mp4 with no face."""
    return write_clip(tmp_path / "noise.mp4", noise_frames(12))
