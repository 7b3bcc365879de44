"""Device set-up, seeding, and the two plain loops: train_one_epoch and predict_logits.

CPU by default with bf16 autocast + channels_last where the CPU has native bf16
(docs/performance.md: 2x a fp32 step); CUDA with AMP automatically when present. Under
``torchrun`` (WORLD_SIZE > 1) the same code runs DistributedDataParallel: gloo on
CPU, nccl on GPU.

Threads: the loops load and transform their batches with one intra-op thread
(:func:`torch_threads`). Per-image ops on a 3x160x160 tensor are too small to share, and
with two threads on cores another process is using, every op waits for the descheduled
thread: a resize took 7.8 ms instead of 0.1 ms, the training step 3-10x longer
(docs/performance.md, "Threads").
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from ..core.threads import torch_threads

logger = logging.getLogger(__name__)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive NumPy/random seeds from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _batches(loader: DataLoader) -> Iterator[Any]:
    """The loader's batches, its per-image work kept off the compute threads (see the module doc).

    Loader workers already run with one thread each. In-process loading runs in a
    background thread that prepares the next batch while the caller computes on this one,
    when the process runs one intra-op thread (so the two never share a thread team);
    otherwise it runs in turn with the computation, with one thread.
    """
    if loader.num_workers > 0:
        yield from loader
    elif torch.get_num_threads() == 1:
        yield from prefetch(iter(loader))
    else:
        it = iter(loader)
        while True:
            with torch_threads(1):
                batch = next(it, _END)
            if batch is _END:
                return
            yield batch


_END = object()


def prefetch(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Yield ``items`` while a background thread computes up to ``depth`` of the next ones.

    Exceptions raised by ``items`` are re-raised here, in order; closing the generator
    early stops the thread after the item it is computing.

    Args:
        items: Any iterator; its ``next`` runs in the background thread.
        depth: Items computed ahead.
    """
    out: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                out.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put((_END, exc))

    worker = threading.Thread(target=produce, name="prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, exc = out.get()
            if exc is not None:
                raise exc
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        worker.join()


def cpu_has_bf16() -> bool:
    """True when the CPU runs bf16 natively (AVX-512 BF16 or AMX); emulated bf16 is slower."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


@dataclass(frozen=True)
class Runtime:
    """Where and how tensors run: device, autocast dtype, memory format, process group."""

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast context for forward passes (a no-op for fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def describe(self) -> str:
        amp = str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "fp32"
        return f"{self.device.type} {amp}{' channels_last' if self.channels_last else ''} world_size={self.world_size}"


def setup_runtime(precision: str = "auto", device: str = "auto", threads: int = 0) -> Runtime:
    """Pick device and precision; join the process group when launched by torchrun.

    Args:
        precision: ``auto`` (bf16 on CPUs with native bf16, fp16/bf16 AMP on CUDA, else
            fp32), ``fp32`` or ``bf16``.
        device: ``auto``, ``cpu`` or ``cuda``.
        threads: Intra-op CPU threads for this process (0: leave torch's setting, all
            cores unless ``OMP_NUM_THREADS`` says otherwise).

    Returns:
        The runtime to pass to the loops.
    """
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    if threads:
        torch.set_num_threads(threads)
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
        amp = None if precision == "fp32" else (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    else:
        dev = torch.device("cpu")
        if world_size > 1:
            # Two processes on two cores: one thread each, or they fight over the cores.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
        amp = torch.bfloat16 if precision == "bf16" or (precision == "auto" and cpu_has_bf16()) else None
    return Runtime(device=dev, amp_dtype=amp, channels_last=True, rank=rank, world_size=world_size)


def prepare_model(model: nn.Module, rt: Runtime) -> nn.Module:
    """Move to device and memory format; wrap in DDP when distributed."""
    model = model.to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if rt.distributed:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    return model


def _to_device(x: torch.Tensor, rt: Runtime) -> torch.Tensor:
    x = x.to(rt.device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if rt.channels_last else x


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    rt: Runtime,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    desc: str = "train",
) -> dict[str, float]:
    """One pass over ``loader``.

    Returns:
        ``{"loss": mean loss, "images": n, "seconds": wall time, "img_per_s": throughput}``
        (this process's share when distributed).
    """
    model.train()
    total, n, t0 = 0.0, 0, time.perf_counter()
    bar = tqdm(_batches(loader), total=len(loader), desc=desc, leave=False, disable=not rt.is_main)
    for images, y, _ in bar:
        images, y = _to_device(images, rt), y.to(rt.device)
        with rt.autocast():
            logits = model(images).squeeze(1)  # (B,)
        loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item() * len(y)
        n += len(y)
        bar.set_postfix(loss=f"{total / max(n, 1):.4f}")
    secs = time.perf_counter() - t0
    return {"loss": total / max(n, 1), "images": n, "seconds": secs, "img_per_s": n / secs if secs else 0.0}


@torch.no_grad()
def predict_logits(model: nn.Module, dataset: Dataset, rt: Runtime, batch_size: int = 64, num_workers: int = 0,
                   desc: str = "score") -> np.ndarray:
    """Fake logits for every item of ``dataset``, in dataset order.

    Under DDP each rank scores every world_size-th item and the results are gathered,
    so evaluation is not done twice.
    """
    was_training = model.training
    model.eval()
    indices = list(range(rt.rank, len(dataset), rt.world_size)) if rt.distributed else list(range(len(dataset)))
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    out_idx, out_logits = [], []
    for images, _, idx in tqdm(_batches(loader), total=len(loader), desc=desc, leave=False, disable=not rt.is_main):
        with rt.autocast():
            logits = model(_to_device(images, rt)).squeeze(1)
        out_logits.append(logits.float().cpu().numpy())
        out_idx.append(idx.numpy())
    idx_arr = np.concatenate(out_idx) if out_idx else np.zeros(0, np.int64)
    log_arr = np.concatenate(out_logits) if out_logits else np.zeros(0, np.float32)
    if rt.distributed:
        gathered: list[Any] = [None] * rt.world_size
        dist.all_gather_object(gathered, (idx_arr, log_arr))
        idx_arr = np.concatenate([g[0] for g in gathered])
        log_arr = np.concatenate([g[1] for g in gathered])
    result = np.empty(len(dataset), np.float32)
    result[idx_arr] = log_arr
    model.train(was_training)
    return result


@contextlib.contextmanager
def process_group_cleanup(rt: Runtime) -> Iterator[None]:
    """Destroy the process group on exit, even on errors."""
    try:
        yield
    finally:
        if rt.distributed and dist.is_initialized():
            dist.destroy_process_group()
