"""Benchmark: Grad-CAM with the full backward pass vs the graph cut at layer4 (``detach_head``).

Usage:
    python benchmarks/bench_gradcam.py [--size 224] [--batch 16] [--images 32] [--repeats 3] [--threads N]

Random-init ResNet-18 with the one-logit head on random crops (timings do not depend on
the weights). The two variants alternate and medians are reported, because another
process on the same cores can slow either one (docs/performance.md): the ratio is the figure
to quote. Also checks that both give the same maps.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from deepfake_detector.explanations.explain import explain_crops
from deepfake_detector.model.network import CheckpointMeta, build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224, help="model input and crop side, px")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, _ = build_model("resnet18", init="random")
    model.eval()
    meta = CheckpointMeta(arch="resnet18", init="random", input_size=args.size)
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8) for _ in range(args.images)]

    explain_crops(model, meta, crops[: args.batch], batch_size=args.batch)  # warm-up
    times: dict[bool, list[float]] = {True: [], False: []}
    maps: dict[bool, np.ndarray] = {}
    for _ in range(args.repeats):
        for detach in (False, True):
            t0 = time.perf_counter()
            maps[detach] = explain_crops(model, meta, crops, batch_size=args.batch, detach_head=detach)
            times[detach].append((time.perf_counter() - t0) / len(crops))
    full, cut = statistics.median(times[False]), statistics.median(times[True])
    diff = float(np.abs(maps[True] - maps[False]).max())
    print(f"torch threads {torch.get_num_threads()}, {args.images} crops of {args.size} px, batch {args.batch}")
    print(f"full backward      : {1000 * full:7.1f} ms/image")
    print(f"cut at layer4[-1]  : {1000 * cut:7.1f} ms/image  ({full / cut:.2f}x faster, max |map diff| {diff:.2e})")


if __name__ == "__main__":
    main()
