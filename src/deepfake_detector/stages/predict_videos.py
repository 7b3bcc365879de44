"""DVC stage ``predict_videos``: a verdict for every manifest video of the chosen splits.

Usage:
    python -m deepfake_detector.stages.predict_videos --params params.yaml \
        --detector models/detector.pt --manifest data/manifest.csv \
        --scores data/face_scores.parquet --detection-report outputs/detection_report.csv \
        --out outputs/video_predictions.csv --metrics outputs/predict_metrics.json \
        --details outputs/predict_details.json

``--metrics`` gets the headline figures (what ``dvc metrics show`` lists) and ``--details``
every figure.
"""

from __future__ import annotations

from pathlib import Path

from ..core.config import load_section
from ..pipeline.predict_videos import PredictParams, run_predict_videos
from . import stage_parser, stage_run


def main(argv: list[str] | None = None) -> None:
    """Run the stage (see the module docstring for the flags)."""
    parser = stage_parser(__doc__)
    parser.add_argument("--detector", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--scores", type=Path, required=True)
    parser.add_argument("--detection-report", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--details", type=Path, required=True, help="every figure (--metrics gets the headline)")
    args = parser.parse_args(argv)
    with stage_run("predict_videos", args.verbose):
        params = load_section(PredictParams, "predict_videos", args.params)
        run_predict_videos(args.detector, args.manifest, args.scores, args.detection_report, params, args.out, args.metrics,
                           args.details)


if __name__ == "__main__":
    main()
