"""Deterministic tar shards for frames and face crops.

Thousands of loose image files make every DVC command slow, so images are stored
in a few uncompressed tar files. They are written deterministically (members in
the order given, which callers sort; fixed mtime, uid, gid, mode, no user names)
so that re-running a stage on unchanged input gives byte-identical shards and DVC
sees the same hash.

Example:
    >>> with ShardWriter(Path("crops-00000.tar")) as w:  # doctest: +SKIP
    ...     w.add("vid/000003_00.png", png_bytes)
    >>> ShardReader(Path("crops")).read("crops-00000.tar", "vid/000003_00.png")  # doctest: +SKIP
"""

from __future__ import annotations

import io
import logging
import tarfile
import threading
from pathlib import Path

import numpy as np

from .imaging import decode_image

logger = logging.getLogger(__name__)

_FIXED_MTIME = 0


class ShardWriter:
    """Append named byte blobs to one tar file, deterministically.

    Args:
        path: The tar file to create (parent folders are made).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # GNU format: no pax headers with timestamps; USTAR caps names at 100 chars.
        self._tar = tarfile.open(self.path, "w", format=tarfile.GNU_FORMAT)
        self._names: set[str] = set()

    def add(self, name: str, data: bytes) -> None:
        """Add one member.

        Raises:
            ValueError: If ``name`` was already added to this shard.
        """
        if name in self._names:
            raise ValueError(f"duplicate shard member {name} in {self.path}")
        self._names.add(name)
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = _FIXED_MTIME
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self._tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        """Finish the tar file."""
        self._tar.close()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ShardReader:
    """Random access to members of the shards in one folder.

    Each shard's member offsets are indexed on first use, after which a read is one
    seek and one read. Safe to use from DataLoader workers (each opens its own files).

    Args:
        root: Folder holding the ``*.tar`` shards.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._index: dict[str, dict[str, tuple[int, int]]] = {}
        self._lock = threading.Lock()

    def _members(self, shard: str) -> dict[str, tuple[int, int]]:
        with self._lock:
            if shard not in self._index:
                with tarfile.open(self.root / shard, "r") as tar:
                    self._index[shard] = {
                        m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()
                    }
            return self._index[shard]

    def read(self, shard: str, member: str) -> bytes:
        """Return the bytes of one member.

        Raises:
            KeyError: If the member is not in the shard.
        """
        offset, size = self._members(shard)[member]
        with open(self.root / shard, "rb") as fh:
            fh.seek(offset)
            return fh.read(size)

    def read_image(self, shard: str, member: str) -> np.ndarray:
        """Decode one image member to an RGB uint8 array ``(H, W, 3)``."""
        return decode_image(self.read(shard, member), f"{member} in {self.root / shard}")


def shard_name(prefix: str, index: int) -> str:
    """Stable shard file name, e.g. ``crops-00003.tar``."""
    return f"{prefix}-{index:05d}.tar"


def prepare_shard_dir(folder: Path, prefix: str) -> None:
    """Create ``folder`` and delete the ``<prefix>-*.tar`` shards a previous run left there.

    Only this stage's own shards are removed, so a mistyped path cannot wipe unrelated
    files; anything else found there is left alone and named in a warning.

    Args:
        folder: The stage's shard folder.
        prefix: Shard name prefix (``frames``, ``crops``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and entry.name.startswith(f"{prefix}-") and entry.suffix == ".tar":
            entry.unlink()
        else:
            logger.warning("%s: unexpected entry %s left in place", folder, entry.name)


class ShardSequence:
    """Opens ``<prefix>-00000.tar``, ``-00001.tar``, ... as videos are added, N per shard.

    Only videos that store something take a place, so no shard is empty.

    Args:
        folder: Shard folder.
        prefix: Shard name prefix.
        videos_per_shard: Videos per shard.
    """

    def __init__(self, folder: Path, prefix: str, videos_per_shard: int) -> None:
        self.folder, self.prefix, self.per_shard = folder, prefix, videos_per_shard
        self.n_videos = 0
        self.writer: ShardWriter | None = None

    def next_video(self) -> ShardWriter:
        """The writer for the next video (a new shard every ``videos_per_shard`` videos)."""
        name = shard_name(self.prefix, self.n_videos // self.per_shard)
        self.n_videos += 1
        if self.writer is None or self.writer.path.name != name:
            self.close()
            self.writer = ShardWriter(self.folder / name)
        return self.writer

    def close(self) -> None:
        """Finish the open shard, if any."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
