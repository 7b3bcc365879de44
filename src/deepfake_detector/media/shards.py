"""Deterministic tar shards for frames and face crops.

Thousands of loose image files make every DVC command slow, so images are stored
in a few uncompressed tar files. They are written deterministically (members in
the order given, which callers sort; fixed mtime, uid, gid, mode, no user names)
so that re-running a stage on unchanged input gives byte-identical shards and DVC
sees the same hash. A video's shard is a hash of its id (:func:`partition_of`), so
a shard can be built, and rebuilt, alone (:mod:`batch`).

Example:
    >>> with ShardWriter(Path("crops-00000.tar")) as w:  # doctest: +SKIP
    ...     w.add("vid/000003_00.png", png_bytes)
    >>> ShardReader(Path("crops")).read("crops-00000.tar", "vid/000003_00.png")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tarfile
import threading
from pathlib import Path

import numpy as np

from .imaging import decode_image

logger = logging.getLogger(__name__)

_FIXED_MTIME = 0


class ShardWriter:
    """Append named byte blobs to one tar file, deterministically.

    The tar is written under a hidden temporary name and renamed into place by
    :meth:`close`, so ``path`` is either the previous complete file or the new complete
    one, and a file that DVC's cache shares (hard link, symlink) is never written into.

    Args:
        path: The tar file to create (parent folders are made).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        # GNU format: no pax headers with timestamps; USTAR caps names at 100 chars.
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.GNU_FORMAT)
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
        """Finish the tar file and move it into place."""
        if self._tar.closed:
            return
        self._tar.close()
        os.replace(self._tmp, self.path)

    def discard(self) -> None:
        """Drop what was written; ``path`` is left as it was."""
        self._tar.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


class ShardReader:
    """Random access to members of the shards in one folder.

    Each shard's member offsets are indexed on first use, after which a read is one
    seek and one read. Safe to use from DataLoader workers (each opens its own files).

    Args:
        root: Folder holding the ``*.tar`` shards.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        # shard -> (the file's identity when indexed, member -> (offset, size))
        self._index: dict[str, tuple[tuple[int, int, int], dict[str, tuple[int, int]]]] = {}
        self._lock = threading.Lock()

    def _members(self, shard: str) -> dict[str, tuple[int, int]]:
        path = self.root / shard
        st = path.stat()
        # Shards are replaced, never edited, when a stage rebuilds them: a reader kept across
        # runs (a worker's) indexes the new file instead of reading at the old offsets.
        identity = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            cached = self._index.get(shard)
            if cached is None or cached[0] != identity:
                with tarfile.open(path, "r") as tar:
                    members = {m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()}
                cached = self._index[shard] = (identity, members)
            return cached[1]

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


def shard_name(prefix: str, index: int, count: int | None = None) -> str:
    """Stable shard file name: ``crops-00003-of-00016.tar`` (partition 3 of 16), or ``crops-00003.tar``."""
    return f"{prefix}-{index:05d}.tar" if count is None else f"{prefix}-{index:05d}-of-{count:05d}.tar"


def partition_count(n_videos: int, videos_per_shard: int) -> int:
    """The number of shards for ``n_videos``: the power of two that gives at most ``videos_per_shard`` each on average.

    A power of two, so that when the manifest outgrows it and the count doubles, partition
    ``i`` splits into ``i`` and ``i + count`` (:func:`partition_of` keeps the low bits).
    """
    needed = max(1, -(-n_videos // videos_per_shard))
    return 1 << (needed - 1).bit_length()


def partition_of(video_id: str, count: int) -> int:
    """The shard of a video: a hash of its id, so it never depends on which other videos exist."""
    digest = hashlib.sha256(video_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count
