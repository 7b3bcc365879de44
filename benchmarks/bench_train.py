"""Training throughput: the train stage's own loop vs a bare PyTorch loop, same crops, same model, same run.

Usage:
    python benchmarks/bench_train.py [--images 160] [--repeats 2] [--threads 1 2] [--workers 0 1]
        [--precision auto fp32] [--params params.yaml] [--data-dir data]
    python benchmarks/bench_train.py --params release/params.yaml --data-dir release/data   # the released recipe
    python benchmarks/bench_train.py --params release/params.yaml --data-dir release/data \
        --threads 2 --workers 0 --precision auto --models efficientnet_lite0@224 efficientnet_lite2@260
        # what another architecture or input size would cost the release, against its own in one run

(ours) one epoch of :func:`engine.train_one_epoch` over the loader the train stage builds
    (:func:`train.build_loop`: crops read from the tar shards, PNG decode, the stage's
    augmentations, SBI when enabled, ``num_workers`` loader processes), on ``--images`` of
    the sample's training crops.
(bare) forward/backward/step over the same crops, decoded and resized once beforehand
    (no shard reads, no augmentation, no DataLoader): what the model costs on its own.

Both use the same architecture, batch size, optimiser, precision, channels_last and
thread count, and alternate within each repeat, so the ratio ours/bare is meaningful on
a busy machine (another process on the same cores slows both). ``--models ARCH@SIZE ...``
runs each setting for each architecture and input size in turn (the crops are resized to it,
as the stage would resize them), so their img/s compare within one run. Needs the pipeline's
``data/faces.parquet`` and ``data/crops`` (``dvc pull`` or ``dvc repro crop_faces``).
Target (issue 13): ours/bare >= 0.9. The stage's first epoch decodes the crops (later epochs
keep them in memory, as the bare loop's tensors are): its ratio is printed apart from the
later epochs' (``--repeats 5`` matches the sample's 5 epochs).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import statistics
import time
from pathlib import Path

import torch

from deepfake_detector.core.config import load_section
from deepfake_detector.model.data import CropDataset
from deepfake_detector.model.engine import Runtime, cpu_has_bf16, prepare_model, setup_runtime, train_one_epoch
from deepfake_detector.model.network import build_model
from deepfake_detector.model.train import Loop, TrainParams, build_loop, load_splits
from deepfake_detector.model.transforms import build_eval_transform

REPO = Path(__file__).resolve().parents[1]


def bare_epoch(model: torch.nn.Module, loop: Loop, images: torch.Tensor, labels: torch.Tensor, batch: int, rt: Runtime) -> float:
    """Forward/backward/step over preloaded tensors; returns img/s."""
    model.train()
    n = len(images) // batch * batch
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        x = images[i : i + batch].contiguous(memory_format=torch.channels_last) if rt.channels_last else images[i : i + batch]
        with rt.autocast():
            logits = model(x).squeeze(1)
        loss = loop.loss_fn(logits.float(), labels[i : i + batch])
        loop.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        loop.optimizer.step()
    return n / (time.perf_counter() - t0)


def measure(params: TrainParams, images: int, repeats: int, data_dir: Path) -> tuple[list[float], list[float], str]:
    """Alternate (ours, bare) epochs ``repeats`` times; returns their img/s and the runtime."""
    rt = setup_runtime(params.precision, threads=params.threads)
    landmarks = data_dir / "landmarks.parquet"
    data = load_splits(params, data_dir / "manifest.csv", data_dir / "faces.parquet", landmarks if landmarks.is_file() else None)
    rows = data.train.sample(n=min(images, len(data.train)), random_state=0).reset_index(drop=True)
    data = dataclasses.replace(data, train=rows)
    torch.manual_seed(params.seed)
    model = prepare_model(build_model(params.arch, "random")[0], rt)
    loop = build_loop(params, rt, data, data_dir / "crops", model)
    plain = CropDataset(rows, data_dir / "crops", build_eval_transform(params.input_size))
    x = torch.stack([plain[i][0] for i in range(len(plain))])
    y = torch.stack([plain[i][1] for i in range(len(plain))])
    bare_epoch(model, loop, x[: params.batch_size], y[: params.batch_size], params.batch_size, rt)  # warm-up
    ours, bare = [], []
    for _ in range(repeats):
        ours.append(train_one_epoch(model, loop.loader, loop.optimizer, loop.loss_fn, rt)["img_per_s"])
        bare.append(bare_epoch(model, loop, x, y, params.batch_size, rt))
    return ours, bare, rt.describe()


def parse_model(text: str) -> tuple[str, int]:
    """``efficientnet_lite2@260`` -> (architecture, input size in px)."""
    arch, sep, size = text.partition("@")
    if not sep or not size.isdigit():
        raise argparse.ArgumentTypeError(f"expected ARCH@SIZE such as efficientnet_lite2@260, got {text!r}")
    return arch, int(size)


def main(argv: list[str] | None = None) -> None:
    """Run every (precision, threads, workers, model) setting and print img/s and ours/bare."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=160, help="training crops per epoch")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--precision", nargs="+", default=["auto", "fp32"], choices=["auto", "fp32", "bf16"])
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--models", nargs="+", type=parse_model, default=None, metavar="ARCH@SIZE",
                    help="architectures and input sizes to measure in turn (default: the params' own)")
    ap.add_argument("--data-dir", type=Path, default=REPO / "data",
                    help="the pipeline's data folder (release/data for the released recipe, which trains with SBI)")
    args = ap.parse_args(argv)
    base = load_section(TrainParams, "train", args.params)
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, native CPU bf16: {cpu_has_bf16()}; arch {base.arch}, "
          f"input {base.input_size} px, batch {base.batch_size}, SBI {base.sbi.enabled}, {args.images} crops, "
          f"repeats {args.repeats} (medians); params.yaml: threads {base.threads}, num_workers {base.num_workers}")
    models = args.models or [(base.arch, base.input_size)]
    for precision, threads, workers, (arch, size) in itertools.product(
            dict.fromkeys(args.precision), args.threads, args.workers, models):
        params = dataclasses.replace(base, precision=precision, threads=threads, num_workers=workers,
                                     arch=arch, input_size=size)
        load0 = os.getloadavg()[0]
        ours, bare, runtime = measure(params, args.images, args.repeats, args.data_dir)
        o, b = statistics.median(ours), statistics.median(bare)
        ratio = statistics.median(a / c for a, c in zip(ours, bare))
        # The stage's first epoch also decodes every crop (later ones find them in memory), which the
        # bare loop did untimed beforehand: its ratio is given apart from the later epochs'.
        later = (f" (first epoch {ours[0] / bare[0]:.2f}, later epochs "
                 f"{statistics.median(a / c for a, c in zip(ours[1:], bare[1:])):.2f})") if len(ours) > 1 else ""
        print(f"{arch}@{size} {runtime:<40} threads {threads} workers {workers}: ours {o:5.1f} img/s, bare {b:5.1f} img/s, "
              f"ours/bare {ratio:.2f}{later}  (load {load0:.1f})", flush=True)


if __name__ == "__main__":
    main()
