"""DVC stage ``crop_faces``: detect faces in the extracted frames and store square crops.

Usage:
    python -m deepfake_detector.stages.crop_faces --params params.yaml \
        --manifest data/manifest.csv --frames-dir data/frames --frames-table data/frames.csv \
        --extract-report outputs/extract_report.csv --crops-dir data/crops \
        --faces data/faces.parquet --report outputs/detection_report.csv \
        [--scheduler local|local:N|none|tcp://host:8786]

Shards whose inputs did not change since the last run in ``--crops-dir`` are kept
(``persist: true`` in dvc.yaml); see :mod:`deepfake_detector.pipeline.batch` and, for
``--scheduler``, :mod:`deepfake_detector.pipeline.cluster`.
"""

from __future__ import annotations

from pathlib import Path

from .. import records
from ..core.config import load_section, to_dict
from ..faces.detection import CropParams
from ..pipeline.batch import log_status_summary
from ..pipeline.cluster import add_scheduler_option, dask_client, scheduler_choice
from ..pipeline.crop_faces import crop_videos
from . import stage_parser, stage_run


def main(argv: list[str] | None = None) -> None:
    """Run the stage (see the module docstring for the flags)."""
    parser = stage_parser(__doc__)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--frames-dir", type=Path, required=True)
    parser.add_argument("--frames-table", type=Path, required=True)
    parser.add_argument("--extract-report", type=Path, required=True)
    parser.add_argument("--crops-dir", type=Path, required=True)
    parser.add_argument("--faces", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    add_scheduler_option(parser)
    args = parser.parse_args(argv)
    with stage_run("crop_faces", args.verbose):
        params = load_section(CropParams, "crop_faces", args.params)
        manifest, frames = records.read_manifest(args.manifest), records.read_frames(args.frames_table)
        extract = records.read_extract_report(args.extract_report)
        with dask_client(scheduler_choice(args.scheduler)) as client:
            faces, report = crop_videos(manifest, frames, extract, args.frames_dir, args.crops_dir, params, client=client)
        records.write_faces(faces, args.faces, to_dict(params))
        records.write_detection_report(report, args.report)
        log_status_summary(report, "crop_faces", records.STATUSES)


if __name__ == "__main__":
    main()
