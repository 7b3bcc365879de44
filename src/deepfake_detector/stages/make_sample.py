"""DVC stage ``make_sample``: build the embedded sample (real + synthetic fake clips) offline.

    python -m deepfake_detector.stages.make_sample --params params.yaml --out data/sample
"""

from __future__ import annotations

from pathlib import Path

from ..core.config import load_section
from ..pipeline.make_sample import SampleParams, make_sample
from . import stage_parser, stage_run


def main(argv: list[str] | None = None) -> None:
    """Parse the paths, load params ``sample`` and write the sample to ``--out``."""
    parser = stage_parser(__doc__)
    parser.add_argument("--out", type=Path, required=True, help="output folder (cleared and rewritten)")
    args = parser.parse_args(argv)
    with stage_run("make_sample", args.verbose):
        make_sample(args.out, load_section(SampleParams, "sample", args.params))


if __name__ == "__main__":
    main()
