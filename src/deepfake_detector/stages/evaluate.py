"""DVC stage ``evaluate``: frame- and video-level metrics on the test split."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..logs import setup_logging
from ..evaluation import run_evaluation


def main(argv: list[str] | None = None) -> None:
    """Parse paths and evaluate (the checkpoint carries its own threshold and preprocessing)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--faces", type=Path, required=True)
    ap.add_argument("--crops-dir", type=Path, required=True)
    ap.add_argument("--detection-report", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--plots-dir", type=Path, required=True)
    args = ap.parse_args(argv)
    setup_logging()
    run_evaluation(args.model, args.manifest, args.faces, args.crops_dir, args.detection_report, args.metrics, args.plots_dir)


if __name__ == "__main__":
    main()
