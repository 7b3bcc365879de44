"""The face autoencoder on a pipeline's crops: training throughput, val PSNR, cost per generated fake.

Usage:
    python benchmarks/bench_autoencoder.py --params release/params.yaml --data-dir release/data \
        [--train-items 1500] [--val-items 256] [--fake-items 40] [--examples /tmp/ae_examples]

1. Trains the ``autoencoder`` section's network for ``--epochs`` on ``--train-items`` of the
   train split's real crops (decoded and resized first, timed apart): img/s of the step alone.
2. Reconstruction L1/PSNR on ``--val-items`` val real crops (never trained on).
3. The train stage's per-item cost of a synthesised fake, by kind (plain SBI, generated,
   whole face), with the ``train`` section's mask recipe and no augmentation: the extra ms a
   generated fake costs inside the training loop.
4. With ``--examples``: PNGs of val crops, their renderings and the fakes of each kind.

Run it with ``nice -n 19`` and ``OMP_NUM_THREADS=1`` on a shared machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from deepfake_detector import records
from deepfake_detector.core.config import load_section
from deepfake_detector.model.autoencoder import (
    AutoencoderParams,
    ResizedCrops,
    build_autoencoder,
    evaluate,
    real_rows,
    reconstruct,
    reconstructor,
    spaced,
    train_one_epoch,
)
from deepfake_detector.model.sbi import SbiCropDataset, attach_landmarks, mask_points
from deepfake_detector.model.train import TrainParams


def _item_ms(ds: SbiCropDataset, n: int) -> dict[str, float]:
    """Wall and CPU ms per item (CPU time is what a core of its own would take on a busy machine)."""
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        ds[i]
    return {"wall_ms": 1000 * (time.perf_counter() - t0) / n, "cpu_ms": 1000 * (time.process_time() - c0) / n}


def fake_costs(tp: TrainParams, rows, crops_dir: Path, generator, n: int) -> dict[str, dict[str, float]]:
    """ms per training item when every real becomes a fake of one kind (no augmentation)."""
    ident = lambda im, gen=None, source_side=None: im  # noqa: E731
    out = {}
    warm = SbiCropDataset(rows, crops_dir, ident, tp.sbi, tp.seed, cache_bytes=2**30, generator=generator)
    _item_ms(warm, n)  # decodes and keeps the crops: what follows is synthesis only
    for kind, shares in {"sbi": (0.0, 0.0), "generated": (1.0, 0.0), "whole": (0.0, 1.0)}.items():
        sbi = dataclasses.replace(tp.sbi, fake_share=0.999, generated_share=shares[0], whole_face_share=shares[1])
        ds = SbiCropDataset(rows, crops_dir, ident, sbi, tp.seed, cache_bytes=2**30, generator=generator)
        ds.crops = warm.crops
        out[kind] = _item_ms(ds, n)
    return out


def save_examples(model, tp: TrainParams, rows, crops_dir: Path, out_dir: Path, n: int = 6) -> None:
    """real | rendering | generated fake | whole-face fake, one row per val crop."""
    from deepfake_detector.faces.generated import generated_blend
    from deepfake_detector.media.shards import ShardReader

    reader = ShardReader(crops_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    picks = spaced(rows, n)
    lines = []
    for i, row in picks.iterrows():
        crop = reader.read_image(row["shard"], row["member"])
        rec = reconstruct(model, crop)
        rng = np.random.default_rng(i)
        points, _ = mask_points(row, crop.shape[0], tp.sbi, rng)
        gen, _ = generated_blend(crop, rec, points, rng, tp.sbi.blend, "generated")
        whole, _ = generated_blend(crop, rec, points, rng, tp.sbi.blend, "whole", tp.sbi.whole_face_dilate,
                                   tp.sbi.whole_face_blur)
        line = np.concatenate([crop, rec, gen, whole], axis=1)
        cv2.imwrite(str(out_dir / f"example_{i}.png"), cv2.cvtColor(line, cv2.COLOR_RGB2BGR))
        lines.append(line)
    cv2.imwrite(str(out_dir / "grid.png"), cv2.cvtColor(np.concatenate(lines, axis=0), cv2.COLOR_RGB2BGR))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--data-dir", type=Path, default=Path("data"))
    ap.add_argument("--train-items", type=int, default=1500)
    ap.add_argument("--val-items", type=int, default=256)
    ap.add_argument("--fake-items", type=int, default=40)
    ap.add_argument("--examples", type=Path, default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override an autoencoder param, e.g. --set batch_size=8 --set lr=0.001")
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()
    p = load_section(AutoencoderParams, "autoencoder", args.params)
    for item in args.set:
        key, value = item.split("=", 1)
        p = dataclasses.replace(p, **{key: type(getattr(p, key))(value)})
    tp = load_section(TrainParams, "train", args.params)
    torch.set_num_threads(max(p.threads, 1))
    d = args.data_dir
    manifest, faces, crops = d / "manifest.csv", d / "faces.parquet", d / "crops"
    train = ResizedCrops(spaced(real_rows(faces, manifest, "train"), args.train_items), crops, p.size)
    val = ResizedCrops(spaced(real_rows(faces, manifest, "val"), args.val_items), crops, p.size)
    t0 = time.perf_counter()
    for i in range(len(train)):
        train.get(i)
    decode_ms = 1000 * (time.perf_counter() - t0) / len(train)
    torch.manual_seed(p.seed)
    model = build_autoencoder(p.arch())
    opt = torch.optim.Adam(model.parameters(), lr=p.lr, betas=(0.5, 0.999))
    before = evaluate(model, val)
    c0 = time.process_time()
    curve = []
    for epoch in range(1, args.epochs + 1):
        stats = train_one_epoch(model, train, opt, p, epoch)
        curve.append(evaluate(model, val)["psnr"])
    stats["img_per_cpu_s"] = args.epochs * len(train) / (time.process_time() - c0)
    after = evaluate(model, val)
    model.eval()
    result = {"arch": p.arch(), "threads": torch.get_num_threads(), "train_items": len(train),
              "decode_resize_ms_per_crop": decode_ms, "train": stats, "val_before": before, "val_after": after,
              "val_psnr_per_epoch": curve, "params": dataclasses.asdict(p)}
    if tp.sbi.enabled:
        rows = real_rows(faces, manifest, "train").iloc[: args.fake_items]
        if tp.sbi.mask == "landmarks":
            rows = attach_landmarks(rows, records.read_landmarks(d / "landmarks.parquet"))
        full = [val.crops.get(r["shard"], r["member"]) for _, r in val.rows.iterrows()]
        t0, c0 = time.perf_counter(), time.process_time()
        for crop in full:
            reconstruct(model, crop)
        result["reconstruct_ms_per_crop"] = {"wall_ms": 1000 * (time.perf_counter() - t0) / max(len(full), 1),
                                             "cpu_ms": 1000 * (time.process_time() - c0) / max(len(full), 1)}
        result["fake_ms_per_item"] = fake_costs(tp, rows, crops, reconstructor(model), len(rows))
        if args.examples:
            vrows = real_rows(faces, manifest, "val")
            if tp.sbi.mask == "landmarks":
                vrows = attach_landmarks(vrows, records.read_landmarks(d / "landmarks.parquet"))
            save_examples(model, tp, vrows, crops, args.examples)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
