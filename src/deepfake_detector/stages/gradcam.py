"""DVC stage ``gradcam``: Grad-CAM reports for a few videos of one split.

Usage:
    python -m deepfake_detector.stages.gradcam --params params.yaml --model models/model.pt \
        --manifest data/manifest.csv --predictions outputs/video_predictions.csv \
        --faces data/faces.parquet --crops-dir data/crops --frames-dir data/frames \
        --frames-table data/frames.csv --masks data/sample/masks.csv \
        --out-dir outputs/gradcam --metrics outputs/gradcam_metrics.json

Writes ``<out-dir>/<video_id>/{montage.png, frame_*.jpg, report.html}`` and
``<out-dir>/index.html`` (skipped videos listed with their reason). ``--masks`` is
optional: without it (or for videos with no mask rows) the faithfulness figure is
omitted, and the metrics say for how many videos.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deepfake_detector.config import load_section
from deepfake_detector.explain import GradcamParams, run_gradcam
from deepfake_detector.logs import setup_logging


def main(argv: list[str] | None = None) -> None:
    """Run the stage (see the module docstring for the flags)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--predictions", type=Path, required=True)
    parser.add_argument("--faces", type=Path, required=True)
    parser.add_argument("--crops-dir", type=Path, required=True)
    parser.add_argument("--frames-dir", type=Path, required=True)
    parser.add_argument("--frames-table", type=Path, required=True)
    parser.add_argument("--masks", type=Path, default=None, help="masks.csv of manipulated regions (optional)")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args(argv)
    setup_logging()
    params = load_section(GradcamParams, "gradcam", args.params)
    run_gradcam(
        args.model, args.manifest, args.predictions, args.faces, args.crops_dir, args.frames_dir,
        args.frames_table, args.masks, args.out_dir, args.metrics, params,
    )


if __name__ == "__main__":
    main()
