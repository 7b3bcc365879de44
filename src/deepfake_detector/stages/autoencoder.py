"""DVC stage ``autoencoder``: a small face autoencoder trained on the train split's real crops.

Its reconstructions carry a decoder's traces; the train stage blends them into real faces
as extra synthetic fakes (``train.sbi.generated_share``, ``train.sbi.whole_face_share``).

Usage:
    python -m deepfake_detector.stages.autoencoder --params params.yaml --manifest data/manifest.csv \
        --faces data/faces.parquet --crops-dir data/crops --out models/autoencoder.pt \
        --details outputs/autoencoder.json
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.config import load_section
from ..model.autoencoder import AutoencoderParams, run_autoencoder
from . import stage_parser, stage_run


def main(argv: list[str] | None = None) -> None:
    """Parse paths, load ``autoencoder`` params once, train and save."""
    parser = stage_parser(__doc__)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--faces", type=Path, required=True)
    parser.add_argument("--crops-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="checkpoint (models/autoencoder.pt)")
    parser.add_argument("--details", type=Path, required=True, help="training and val reconstruction figures (JSON)")
    args = parser.parse_args(argv)
    with stage_run("autoencoder", args.verbose):
        params = load_section(AutoencoderParams, "autoencoder", args.params)
        summary = run_autoencoder(params, args.manifest, args.faces, args.crops_dir, args.out)
        args.details.parent.mkdir(parents=True, exist_ok=True)
        args.details.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
