"""DVC stage ``calibrate``: score every face once, choose aggregation and threshold on val.

Usage:
    python -m deepfake_detector.stages.calibrate --params params.yaml --model models/model.pt \
        --manifest data/manifest.csv --faces data/faces.parquet --crops-dir data/crops \
        --detector-out models/detector.pt --scores-out data/face_scores.parquet \
        --report outputs/calibration.json

Reads params ``calibrate`` and ``extract_frames.frames_per_video``; the crop settings the
scored crops were made with come with them (recorded by crop_faces in ``faces.parquet``),
and both go into the calibration, as do the Grad-CAM settings ``calibrate.explain``.
"""

from __future__ import annotations

from pathlib import Path

from .. import records
from ..core.config import from_mapping, load_section
from ..faces.detection import CropParams
from ..pipeline.calibrate import CalibrateParams, CalibratePaths, run_calibrate
from ..pipeline.extract_frames import ExtractParams
from . import stage_parser, stage_run


def main(argv: list[str] | None = None) -> None:
    """Run the stage (see the module docstring for the flags)."""
    parser = stage_parser(__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--faces", type=Path, required=True)
    parser.add_argument("--crops-dir", type=Path, required=True)
    parser.add_argument("--detector-out", type=Path, required=True)
    parser.add_argument("--scores-out", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args(argv)
    with stage_run("calibrate", args.verbose):
        params = load_section(CalibrateParams, "calibrate", args.params)
        extract = load_section(ExtractParams, "extract_frames", args.params)
        crop = from_mapping(CropParams, records.read_crop_settings(args.faces), f"{args.faces}: crop settings")
        paths = CalibratePaths(args.model, args.manifest, args.faces, args.crops_dir,
                               args.detector_out, args.scores_out, args.report)
        run_calibrate(paths, params, extract, crop)


if __name__ == "__main__":
    main()
