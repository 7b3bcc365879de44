"""DVC stage ``extract_frames``: sample frames of every manifest video into tar shards.

Usage:
    python -m deepfake_detector.stages.extract_frames --params params.yaml \
        --manifest data/manifest.csv --frames-dir data/frames \
        --frames-table data/frames.csv --report outputs/extract_report.csv

Every manifest video gets one report row (ok / missing / unreadable, with a reason);
a bad file is reported and the batch goes on.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from deepfake_detector import records
from deepfake_detector.config import load_section
from deepfake_detector.logs import setup_logging
from deepfake_detector.video import ExtractParams, extract_videos, log_status_summary

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    """Run the stage (see the module docstring for the flags)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--frames-dir", type=Path, required=True)
    parser.add_argument("--frames-table", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args(argv)
    setup_logging()
    params = load_section(ExtractParams, "extract_frames", args.params)

    manifest = records.read_manifest(args.manifest)
    frames, report = extract_videos(manifest, params, args.frames_dir)
    records.write_csv(frames, args.frames_table, records.FRAME_COLUMNS)
    records.write_csv(report, args.report, records.EXTRACT_REPORT_COLUMNS)
    log_status_summary(
        report, "extract_frames", (records.OK, records.UNREADABLE, records.MISSING)
    )
    logger.info("extract_frames: %d frames written to %s", len(frames), args.frames_dir)


if __name__ == "__main__":
    main()
