"""DVC stage ``evaluate``: frame- and video-level metrics on the test split.

The detector carries its own calibration, so this stage has no params of its own.
``--metrics`` gets the headline figures (what ``dvc metrics show`` lists) and ``--details``
every figure.
"""

from __future__ import annotations

from pathlib import Path

from ..pipeline.evaluate import run_evaluation
from . import stage_parser, stage_run


def main(argv: list[str] | None = None) -> None:
    """Parse paths and evaluate."""
    parser = stage_parser(__doc__, params=False)
    parser.add_argument("--detector", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--scores", type=Path, required=True)
    parser.add_argument("--detection-report", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--plots-dir", type=Path, required=True)
    parser.add_argument("--details", type=Path, required=True, help="every figure (--metrics gets the headline)")
    args = parser.parse_args(argv)
    with stage_run("evaluate", args.verbose):
        run_evaluation(args.detector, args.manifest, args.scores, args.detection_report, args.metrics, args.plots_dir,
                       args.details)


if __name__ == "__main__":
    main()
