"""Training throughput: our train_one_epoch (shards + augmentation + loop) vs a bare loop.

Both run in this process, on the same crops, at the same precision, so the ratio is
meaningful even on a busy machine. Target (issue 3): >= 30 img/s on 2 cores and
>= 0.8 of the bare loop.

Usage: python benchmarks/bench_train.py [--images 256] [--batch 32] [--size 224]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from deepfake_detector.data import CropDataset
from deepfake_detector.engine import cpu_has_bf16, prepare_model, setup_runtime, train_one_epoch
from deepfake_detector.model import build_model
from deepfake_detector.shards import ShardWriter, encode_image, shard_name
from deepfake_detector.transforms import AugmentParams, build_train_transform


def make_crops(root: Path, n: int, size: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    with ShardWriter(root / shard_name("crops", 0)) as w:
        for i in range(n):
            member = f"v{i // 8:04d}/{i % 8:06d}_00.png"
            w.add(member, encode_image(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)))
            rows.append({"shard": shard_name("crops", 0), "member": member, "y": i % 2})
    return pd.DataFrame(rows)


def bare_loop(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int, rt) -> float:  # noqa: ANN001
    """Forward/backward/step over preloaded tensors: no decode, no augmentation, no logging."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    t0 = time.perf_counter()
    for i in range(0, len(images) - batch + 1, batch):
        x = images[i : i + batch].contiguous(memory_format=torch.channels_last) if rt.channels_last else images[i : i + batch]
        with rt.autocast():
            logits = model(x).squeeze(1)
        loss = loss_fn(logits.float(), labels[i : i + batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (len(images) // batch * batch) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, native CPU bf16: {cpu_has_bf16()}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = make_crops(Path(tmp), args.images, args.size)
        for precision in ("fp32", "auto"):
            rt = setup_runtime(precision)
            ds = CropDataset(rows, Path(tmp), build_train_transform(args.size, AugmentParams()))
            loader = DataLoader(ds, batch_size=args.batch, shuffle=True, drop_last=True)
            model = prepare_model(build_model("resnet18", "random")[0], rt)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            train_one_epoch(model, DataLoader(ds, batch_size=args.batch, drop_last=True), opt, nn.BCEWithLogitsLoss(), rt)  # warm-up
            ours = train_one_epoch(model, loader, opt, nn.BCEWithLogitsLoss(), rt)["img_per_s"]
            eval_ds = [ds[i] for i in range(len(ds))]
            images = torch.stack([x for x, _, _ in eval_ds])
            labels = torch.stack([y for _, y, _ in eval_ds])
            bare = bare_loop(model, images, labels, args.batch, rt)
            print(f"{rt.describe():<45} ours {ours:6.1f} img/s | bare loop {bare:6.1f} img/s | ratio {ours / bare:.2f}")


if __name__ == "__main__":
    main()
