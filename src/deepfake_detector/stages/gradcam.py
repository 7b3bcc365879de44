"""DVC stage ``gradcam``: Grad-CAM reports for a few videos of one split.

Usage:
    python -m deepfake_detector.stages.gradcam --params params.yaml --detector models/detector.pt \
        --manifest data/manifest.csv --predictions outputs/video_predictions.csv \
        --faces data/faces.parquet --scores data/face_scores.parquet --crops-dir data/crops \
        --frames-dir data/frames --frames-table data/frames.csv --masks data/sample/masks.csv \
        --out-dir outputs/gradcam --metrics outputs/gradcam_metrics.json \
        --details outputs/gradcam_details.json

Reads params ``gradcam`` (which videos); how each is explained comes with the detector
(``calibration.explain``, set by calibrate from ``calibrate.explain``).

``--metrics`` gets the headline faithfulness figures and ``--details`` every figure (counts,
timings, per video).

``--masks`` is optional: without it (or for videos with no mask rows) the faithfulness
figure is omitted, and the details say for how many videos.
"""

from __future__ import annotations

from pathlib import Path

from ..core.config import load_section
from ..pipeline.gradcam import GradcamParams, GradcamPaths, run_gradcam
from . import stage_parser, stage_run


def main(argv: list[str] | None = None) -> None:
    """Run the stage (see the module docstring for the flags)."""
    parser = stage_parser(__doc__)
    for flag in ("--detector", "--manifest", "--predictions", "--faces", "--scores", "--crops-dir",
                 "--frames-dir", "--frames-table", "--out-dir", "--metrics"):
        parser.add_argument(flag, type=Path, required=True)
    parser.add_argument("--masks", type=Path, default=None, help="masks.csv of manipulated regions (optional)")
    parser.add_argument("--details", type=Path, required=True, help="every figure (--metrics gets the headline)")
    args = parser.parse_args(argv)
    with stage_run("gradcam", args.verbose):
        params = load_section(GradcamParams, "gradcam", args.params)
        paths = GradcamPaths(args.detector, args.manifest, args.predictions, args.faces, args.scores, args.crops_dir,
                             args.frames_dir, args.frames_table, args.masks, args.out_dir, args.metrics,
                             args.details)
        run_gradcam(paths, params)


if __name__ == "__main__":
    main()
