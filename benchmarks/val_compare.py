"""Detectors compared on ONE validation set: the release's val reals, their SBI twins, and
copies softened at the source's scale (blur, bilateral, downscale), the set checkpoint
selection uses with ``train.val_perturb``.

Each model's own selection figure is measured on its own recipe's validation set, so two
recipes' figures cannot be compared; this scores every given checkpoint on the same
items. Prints, per model: the video AUC of SBI twins against reals (plain and with the
softened copies), and per softening the mean change of the video score and the share of real
videos whose score crosses the model's calibrated threshold upwards. Scores are aggregated
as each detector's calibration aggregates them (the release's: mean P(fake)).

With ``--autoencoder``, also fakes that carry a generator's traces: every plain val real
gets a ``generated`` twin (the autoencoder's rendering blended through an SBI mask) and a
``whole`` twin (the whole face hull re-rendered), each scored against the plain reals. Those
twins are of identities no training split holds, but a model trained with this
autoencoder's fakes has seen its renderer: the figure says what it learned, and for a model
trained without them, how far self-blending alone carries to rendered faces.

    python benchmarks/val_compare.py --release release --models /tmp/v2.pt release/detector.pt \
        [--autoencoder release/models/autoencoder.pt]

The figures describe validation items (photos and videos of people in no training split),
never the test deepfakes; a model whose recipe selected on this set is favoured by it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from deepfake_detector.core.config import load_section
from deepfake_detector.model.autoencoder import load_autoencoder, reconstructor
from deepfake_detector.model.engine import predict_logits, prepare_model, setup_runtime
from deepfake_detector.model.sbi import (
    GENERATED_SUFFIX,
    PERTURBED_SUFFIX,
    SBI_SUFFIX,
    SbiCropDataset,
    generated_twins,
)
from deepfake_detector.model.train import TrainParams, load_splits
from deepfake_detector.model.transforms import SOURCE_PERTURBATIONS, build_eval_transform
from deepfake_detector.scoring.aggregate import video_scores
from deepfake_detector.scoring.metrics import roc_auc
from deepfake_detector.verdicts.calibration import Calibration, load_detector


def video_table(rows: pd.DataFrame, logits: np.ndarray, calibration: Calibration) -> pd.DataFrame:
    """Each (pseudo-)video's score, aggregated as the detector's calibration aggregates (the
    score its threshold applies to), with its label and softening kind."""
    prob = video_scores(rows.assign(logit=logits), calibration.aggregation, calibration.aggregate)
    first = rows.groupby("video_id")[["y", "perturb"]].first()
    return first.loc[prob.index].assign(prob=prob)


def summarise(videos: pd.DataFrame, threshold: float) -> dict[str, float]:
    """The figures printed per model (see the module docstring)."""
    ids = videos.index.to_series()
    plain = videos[~ids.str.endswith(PERTURBED_SUFFIX)]
    out = {"auc_twins_vs_reals": roc_auc(plain["y"].to_numpy(), plain["prob"].to_numpy()),
           "auc_with_softened": roc_auc(videos["y"].to_numpy(), videos["prob"].to_numpy())}
    copies = videos[ids.str.endswith(PERTURBED_SUFFIX)]
    originals = videos.loc[[v.removesuffix(PERTURBED_SUFFIX) for v in copies.index]]
    for kind in SOURCE_PERTURBATIONS:
        mask = (copies["perturb"] == kind).to_numpy()
        if not mask.any():
            continue
        before, after = originals["prob"].to_numpy()[mask], copies["prob"].to_numpy()[mask]
        out[f"{kind}_shift"] = float((after - before).mean())
        out[f"{kind}_flips_to_fake"] = float(((before < threshold) & (after >= threshold)).mean())
    return out


WHOLE_SUFFIX = "#whole"


def rendered_twins(rows: pd.DataFrame) -> pd.DataFrame:
    """A ``generated`` and a ``whole`` twin of every plain val real, in pseudo-videos ``<id>#generated`` / ``#whole``."""
    generated = generated_twins(rows)
    base = generated["video_id"].str.removesuffix(GENERATED_SUFFIX)
    return pd.concat([generated, generated.assign(video_id=base + WHOLE_SUFFIX, fake_kind="whole")], ignore_index=True)


def twin_aucs(videos: pd.DataFrame, twins: pd.DataFrame) -> dict[str, float | None]:
    """Video AUC of each kind of rendered twin against the plain reals of ``videos``."""
    ids = videos.index.to_series()
    reals = videos[(videos["y"] == 0) & ~ids.str.endswith(PERTURBED_SUFFIX)]
    out = {}
    for kind, suffix in (("generated", GENERATED_SUFFIX), ("whole", WHOLE_SUFFIX)):
        fakes = twins[twins.index.to_series().str.endswith(suffix)]
        both = pd.concat([reals, fakes])
        out[f"auc_{kind}_twins_vs_reals"] = roc_auc(both["y"].to_numpy(), both["prob"].to_numpy())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", type=Path, default=Path("release"), help="the DVC project whose val split is used")
    parser.add_argument("--models", type=Path, nargs="+", required=True)
    parser.add_argument("--kinds", nargs="+", default=list(SOURCE_PERTURBATIONS), choices=SOURCE_PERTURBATIONS)
    parser.add_argument("--limit", type=int, default=None, help="at most this many val real videos (smoke runs)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--autoencoder", type=Path, default=None,
                        help="also score twins rendered by this autoencoder checkpoint (models/autoencoder.pt)")
    args = parser.parse_args(argv)

    root = args.release
    params = load_section(TrainParams, "train", root / "params.yaml")
    params = dataclasses.replace(params, val_perturb=tuple(args.kinds))
    data = load_splits(params, root / "data/manifest.csv", root / "data/faces.parquet", root / "data/landmarks.parquet")
    rows = data.val
    if args.limit is not None:
        base = rows["video_id"].str.removesuffix(SBI_SUFFIX).str.removesuffix(PERTURBED_SUFFIX)
        keep = sorted(base.unique())[: args.limit]
        rows = rows[base.isin(keep)].reset_index(drop=True)
    print(f"validation: {rows['video_id'].nunique()} (pseudo-)videos, {len(rows)} crops "
          f"({(rows['y'] == 0).sum()} real incl. softened, {(rows['y'] == 1).sum()} SBI twins)")
    rt = setup_runtime("auto", threads=args.threads)
    generator, twins = None, None
    if args.autoencoder is not None:
        generator, twins = reconstructor(load_autoencoder(args.autoencoder)[0]), rendered_twins(rows)
        print(f"rendered twins: {twins['video_id'].nunique()} pseudo-videos by {args.autoencoder}")
    table = []
    for path in args.models:
        detector = load_detector(path)  # calibrated detectors only: the threshold and aggregation are theirs
        model, meta = prepare_model(detector.model, rt), detector.meta
        transform = build_eval_transform(meta.input_size, tuple(meta.mean), tuple(meta.std))
        dataset = SbiCropDataset(rows, root / "data/crops", transform, params.sbi, params.seed, mode="fixed")
        logits = predict_logits(model, dataset, rt, batch_size=64, desc=path.name)
        videos = video_table(rows, np.asarray(logits, dtype=np.float64), detector.calibration)
        figures = summarise(videos, detector.calibration.threshold)
        if generator is not None:
            rendered = SbiCropDataset(twins, root / "data/crops", transform, params.sbi, params.seed, mode="fixed",
                                      generator=generator)
            twin_logits = predict_logits(model, rendered, rt, batch_size=64, desc=f"{path.name} rendered")
            figures.update(twin_aucs(videos, video_table(twins, np.asarray(twin_logits, dtype=np.float64),
                                                         detector.calibration)))
        table.append({"model": str(path), **figures})
    print(pd.DataFrame(table).set_index("model").T.to_string(float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
