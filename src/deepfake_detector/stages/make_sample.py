"""DVC stage ``make_sample``: build the embedded sample (real + synthetic fake clips) offline.

    python -m deepfake_detector.stages.make_sample --params params.yaml --out data/sample
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deepfake_detector import config, logs
from deepfake_detector.sample import SampleParams, make_sample


def main(argv: list[str] | None = None) -> None:
    """Parse the paths, load params ``sample`` and write the sample to ``--out``.

    Args:
        argv: Command-line arguments (``sys.argv[1:]`` when None).
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    parser.add_argument("--out", type=Path, required=True, help="output folder (cleared and rewritten)")
    args = parser.parse_args(argv)
    logs.setup_logging()
    params = config.load_section(SampleParams, "sample", args.params)
    make_sample(args.out, params)


if __name__ == "__main__":
    main()
