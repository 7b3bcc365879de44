"""DVC stage ``predict_videos``: a verdict for every manifest video, aggregation chosen on val.

Usage:
    python -m deepfake_detector.stages.predict_videos --params params.yaml \
        --model models/model.pt --manifest data/manifest.csv --faces data/faces.parquet \
        --crops-dir data/crops --detection-report outputs/detection_report.csv \
        --out outputs/video_predictions.csv --metrics outputs/predict_metrics.json

Reads only the ``predict_videos`` params section. The metrics file records the chosen
aggregation and threshold (``chosen``), which the ``deepfake-detector`` CLI reuses.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import load_section
from ..logs import setup_logging
from ..predict import PredictParams, run_predict_videos


def main(argv: list[str] | None = None) -> None:
    """Run the stage (see the module docstring for the flags)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--faces", type=Path, required=True)
    ap.add_argument("--crops-dir", type=Path, required=True)
    ap.add_argument("--detection-report", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    args = ap.parse_args(argv)
    setup_logging()
    params = load_section(PredictParams, "predict_videos", args.params)
    run_predict_videos(
        args.model, args.manifest, args.faces, args.crops_dir, args.detection_report,
        params, args.out, args.metrics,
    )


if __name__ == "__main__":
    main()
