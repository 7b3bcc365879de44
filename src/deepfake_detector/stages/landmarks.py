"""DVC stage ``landmarks``: dense face landmarks of every face crop, once, for SBI masks.

Usage:
    python -m deepfake_detector.stages.landmarks --faces data/faces.parquet \
        --crops-dir data/crops --out data/landmarks.parquet
"""

from __future__ import annotations

from pathlib import Path

from .. import records
from ..faces.landmarks import compute_landmarks, open_landmarker
from . import stage_parser, stage_run


def main(argv: list[str] | None = None) -> None:
    """Run the stage (see the module docstring for the flags)."""
    parser = stage_parser(__doc__, params=False)
    parser.add_argument("--faces", type=Path, required=True)
    parser.add_argument("--crops-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    with stage_run("landmarks", args.verbose):
        with open_landmarker() as landmarker:
            table = compute_landmarks(records.read_faces(args.faces), args.crops_dir, landmarker)
        records.write_landmarks(table, args.out)


if __name__ == "__main__":
    main()
