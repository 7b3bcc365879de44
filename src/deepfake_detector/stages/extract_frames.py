"""DVC stage ``extract_frames``: sample frames of every manifest video into tar shards.

Usage:
    python -m deepfake_detector.stages.extract_frames --params params.yaml \
        --manifest data/manifest.csv --frames-dir data/frames \
        --frames-table data/frames.csv --report outputs/extract_report.csv
"""

from __future__ import annotations

import logging
from pathlib import Path

from .. import records
from ..core.config import load_section
from ..pipeline.batch import log_status_summary
from ..pipeline.cluster import add_scheduler_option, dask_client, scheduler_choice
from ..pipeline.extract_frames import ExtractParams, extract_videos
from . import stage_parser, stage_run

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    """Run the stage (see the module docstring for the flags)."""
    parser = stage_parser(__doc__)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--frames-dir", type=Path, required=True)
    parser.add_argument("--frames-table", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    add_scheduler_option(parser)
    args = parser.parse_args(argv)
    with stage_run("extract_frames", args.verbose):
        params = load_section(ExtractParams, "extract_frames", args.params)
        manifest = records.read_manifest(args.manifest)
        with dask_client(scheduler_choice(args.scheduler)) as client:
            frames, report = extract_videos(manifest, params, args.frames_dir, client=client)
        records.write_frames(frames, args.frames_table)
        records.write_extract_report(report, args.report)
        log_status_summary(report, "extract_frames", records.EXTRACT_STATUSES)
        logger.info("extract_frames: %d frames written to %s", len(frames), args.frames_dir)


if __name__ == "__main__":
    main()
