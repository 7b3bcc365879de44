"""DVC stage ``train``: fine-tune the face classifier on the train split's crops.

Also runs under ``torchrun --nproc_per_node=N`` (DistributedDataParallel).
"""

from __future__ import annotations

from pathlib import Path

from ..core.config import load_section
from ..model.train import TrainParams, run_training
from . import stage_parser, stage_run


def main(argv: list[str] | None = None) -> None:
    """Parse paths, load ``train`` params once, train."""
    parser = stage_parser(__doc__)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--faces", type=Path, required=True)
    parser.add_argument("--crops-dir", type=Path, required=True)
    parser.add_argument("--model-out", type=Path, required=True)
    parser.add_argument("--live-dir", type=Path, required=True)
    parser.add_argument("--landmarks", type=Path, default=None, help="the landmarks stage's table (train.sbi.mask: landmarks)")
    parser.add_argument("--autoencoder", type=Path, default=None,
                        help="the autoencoder stage's checkpoint (train.sbi.generated_share / whole_face_share > 0)")
    args = parser.parse_args(argv)
    with stage_run("train", args.verbose):
        params = load_section(TrainParams, "train", args.params)
        run_training(params, args.manifest, args.faces, args.crops_dir, args.model_out, args.live_dir, args.landmarks,
                     args.autoencoder)


if __name__ == "__main__":
    main()
