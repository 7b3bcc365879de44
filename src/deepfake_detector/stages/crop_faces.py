"""DVC stage ``crop_faces``: detect faces in the extracted frames and store square crops.

Usage:
    python -m deepfake_detector.stages.crop_faces --params params.yaml \
        --manifest data/manifest.csv --frames-dir data/frames --frames-table data/frames.csv \
        --extract-report outputs/extract_report.csv --crops-dir data/crops \
        --faces data/faces.parquet --report outputs/detection_report.csv

Every manifest video gets one detection-report row: ok, no_face, or the unreadable /
missing status (and reason) carried over from extract_frames.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from deepfake_detector import records
from deepfake_detector.config import load_section
from deepfake_detector.faces import CropParams, crop_videos, write_faces
from deepfake_detector.logs import setup_logging
from deepfake_detector.video import log_status_summary


def main(argv: list[str] | None = None) -> None:
    """Run the stage (see the module docstring for the flags)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--frames-dir", type=Path, required=True)
    parser.add_argument("--frames-table", type=Path, required=True)
    parser.add_argument("--extract-report", type=Path, required=True)
    parser.add_argument("--crops-dir", type=Path, required=True)
    parser.add_argument("--faces", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args(argv)
    setup_logging()
    params = load_section(CropParams, "crop_faces", args.params)

    manifest = records.read_manifest(args.manifest)
    frames = pd.read_csv(args.frames_table, dtype={"video_id": str, "shard": str, "member": str})
    extract_report = pd.read_csv(args.extract_report, dtype=str, keep_default_na=False)
    faces, report = crop_videos(
        manifest, frames, extract_report, args.frames_dir, args.crops_dir, params
    )
    write_faces(faces, args.faces)
    records.write_csv(report, args.report, records.DETECTION_REPORT_COLUMNS)
    log_status_summary(report, "crop_faces", records.STATUSES)


if __name__ == "__main__":
    main()
