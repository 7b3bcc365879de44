"""DVC stage ``train``: fine-tune ResNet-18 on the train split's face crops.

Also runs under ``torchrun --nproc_per_node=N`` (DistributedDataParallel).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import load_section
from ..logs import setup_logging
from ..training import TrainParams, run_training


def main(argv: list[str] | None = None) -> None:
    """Parse paths, load ``train`` params once, train."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--faces", type=Path, required=True)
    ap.add_argument("--crops-dir", type=Path, required=True)
    ap.add_argument("--model-out", type=Path, required=True)
    ap.add_argument("--live-dir", type=Path, required=True)
    args = ap.parse_args(argv)
    setup_logging()
    params = load_section(TrainParams, "train", args.params)
    run_training(params, args.manifest, args.faces, args.crops_dir, args.model_out, args.live_dir)


if __name__ == "__main__":
    main()
