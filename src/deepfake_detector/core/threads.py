"""Intra-op thread count for a block of torch work.

Work made of many tiny ops (MTCNN on small images, per-crop transforms) runs with one
thread: with two threads on cores another process is using, every op waits for the
descheduled thread (a patch resize took 7.8 ms instead of 0.1 ms; docs/performance.md,
"Threads").
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads, then restore the previous number.

    The setting is process-wide: use it only where no other thread runs torch ops.
    """
    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
