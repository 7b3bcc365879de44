"""The released detector's generalization report, as markdown tables (for release/MODEL_CARD.md).

Reads what `cd release && dvc repro` wrote: the manifest, every face's score
(data/face_scores.parquet), the detector's calibration and the video predictions. Test
items were never trained on nor used to choose anything (threshold, aggregation, epoch).

Every test item gets a family from its manifest row: the fake's dataset and method, or for
reals the folder it came from (photos are one-frame videos). Reported:
- each fake family against the scored test real *videos* (held-out talking heads and clips,
  the FF++ originals), against the FF++ originals only, and against every test real
  (photos included), at video level (faces aggregated as calibrated) and at face level;
- every real family at the calibrated threshold: how many are called fake or uncertain;
- the verdict of every test video (photos summarised, not listed);
- the threshold rule against one that weighs validation photos and videos equally (issue 24:
  the val reals are about 1,870 photos and 8 videos, so the plain quantile is the photos'):
  what each rule calls fake among val and test reals, and among the test fakes.

Usage: python benchmarks/release_report.py [--release release]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import yaml

from deepfake_detector import records
from deepfake_detector.scoring.metrics import roc_auc

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def _auc(y: pd.Series, s: pd.Series) -> str:
    value = roc_auc(y.to_numpy(), s.to_numpy())
    return "n/a" if value is None else f"{value:.3f}"


def family(row: pd.Series) -> str:
    """A test item's family: ``FF++ Deepfakes``, ``DFDC``, ``photos lfw``, ``videos real_talking``..."""
    path = PurePosixPath(str(row["path"]))
    if row["source"] == "ffpp":
        return "FF++ original" if row["label"] == "real" else f"FF++ {row['manipulation']}"
    if row["source"] == "dfdc":
        return f"DFDC {row['label']}"
    if path.suffix.lower() in PHOTO_SUFFIXES:
        return f"photos {path.parent.name}"
    return f"videos {path.parent.name}"


def balanced_quantile(scores: np.ndarray, groups: np.ndarray, q: float) -> float:
    """The ``q`` quantile of ``scores`` when each group carries the same total weight (numpy's
    weighted quantile; ``inverted_cdf`` is the method that takes weights)."""
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    return float(np.quantile(scores, q, weights=1.0 / counts[inverse], method="inverted_cdf"))


def _called(g: pd.DataFrame, threshold: float) -> str:
    return f"{int((g['prob_fake'] >= threshold).sum())}/{len(g)}"


def threshold_rules(preds: pd.DataFrame, cal: dict, target_fpr: float) -> None:
    """Print what the calibrated threshold and a photo/video-balanced one call fake."""
    val = preds[(preds["split"] == "val") & (preds["true_label"] == "real") & preds["prob_fake"].notna()]
    test = preds[(preds["split"] == "test") & preds["prob_fake"].notna()]
    kinds = np.where(val["photo"], "photo", "video")
    rules = [("calibrated (plain quantile of val reals)", cal["threshold"]),
             ("photos and videos weighed equally", balanced_quantile(val["prob_fake"].to_numpy(), kinds, 1 - target_fpr))]
    print(f"\n| threshold rule (target {target_fpr:g}) | threshold | val real photos called fake | val real videos "
          "| test real photos | test real videos | test fakes |")
    print("|---|---|---|---|---|---|---|")
    reals, fakes = test[test["true_label"] == "real"], test[test["true_label"] == "fake"]
    for name, t in rules:
        print(f"| {name} | {t:.3f} | {_called(val[val['photo']], t)} | {_called(val[~val['photo']], t)} | "
              f"{_called(reals[reals['photo']], t)} | {_called(reals[~reals['photo']], t)} | {_called(fakes, t)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--release", type=Path, default=Path("release"))
    args = ap.parse_args()
    root = args.release
    manifest = records.read_manifest(root / "data" / "manifest.csv")
    manifest = manifest.assign(family=manifest.apply(family, axis=1))
    preds = records.read_predictions(root / "outputs" / "video_predictions.csv")
    scores = records.read_face_scores(root / "data" / "face_scores.parquet")
    calibration = json.loads((root / "outputs" / "calibration.json").read_text())
    cal = calibration["calibration"]
    info = manifest[["video_id", "source", "manipulation", "family"]]
    test_all = preds[preds["split"] == "test"].merge(info, on="video_id")
    test = test_all[test_all["prob_fake"].notna()]
    faces = scores[scores["split"] == "test"].merge(manifest[["video_id", "label", "family"]], on="video_id")
    faces = faces.assign(y=(faces["label"] == "fake").astype(int), p=1 / (1 + np.exp(-faces["logit"])))
    test = test.assign(y=(test["true_label"] == "fake").astype(int), photo=test["family"].str.startswith("photos"))
    reals = test[test["y"] == 0]
    video_reals = reals[~reals["photo"]]
    ffpp_reals = reals[reals["family"] == "FF++ original"]
    print(f"threshold {cal['threshold']:.4f} ({cal['aggregation']}); {cal['how']}\n")
    print("| fakes | n | video AUC vs test real videos | vs FF++ originals | vs all test reals (photos too) "
          "| face AUC vs test real videos |")
    print("|---|---|---|---|---|---|")
    fakes_all = test[test["y"] == 1]
    groups = [(m, fakes_all[fakes_all["family"] == m]) for m in sorted(fakes_all["family"].unique())]
    groups += [("FF++ (4 methods)", fakes_all[fakes_all["source"] == "ffpp"]), ("all fakes", fakes_all)]
    for name, fakes in groups:
        vs_videos = pd.concat([fakes, video_reals])
        f = faces[faces["video_id"].isin(set(vs_videos["video_id"]))]
        print(f"| {name} | {len(fakes)} | {_auc(vs_videos['y'], vs_videos['prob_fake'])} | "
              f"{_auc(pd.concat([fakes, ffpp_reals])['y'], pd.concat([fakes, ffpp_reals])['prob_fake'])} | "
              f"{_auc(pd.concat([fakes, reals])['y'], pd.concat([fakes, reals])['prob_fake'])} | {_auc(f['y'], f['p'])} |")
    print(f"\nScored test reals: {len(video_reals)} videos ({len(ffpp_reals)} FF++ originals) and "
          f"{int(reals['photo'].sum())} photos; {len(test_all) - len(test)} test items not scored "
          f"(missing/unreadable/no face): {test_all[test_all['prob_fake'].isna()]['family'].value_counts().to_dict()}.\n")
    print("| test reals | n scored | called fake | uncertain | mean P(fake) |")
    print("|---|---|---|---|---|")
    for name, g in [*reals.groupby("family"), ("all real videos", video_reals), ("all real photos", reals[reals["photo"]])]:
        if len(g):
            print(f"| {name} | {len(g)} | {(g['verdict'] == 'fake').mean():.1%} | {(g['verdict'] == 'uncertain').mean():.1%} "
                  f"| {g['prob_fake'].mean():.3f} |")
    print("\n| video | family | label | P(fake) | verdict |")
    print("|---|---|---|---|---|")
    for row in test[~test["photo"]].sort_values(["y", "family", "prob_fake"]).itertuples():
        print(f"| {row.video_id} | {row.family} | {row.true_label} | {row.prob_fake:.3f} | {row.verdict} |")
    target_fpr = yaml.safe_load((root / "params.yaml").read_text())["calibrate"]["target_fpr"]
    every = preds.merge(info, on="video_id")
    threshold_rules(every.assign(photo=every["family"].str.startswith("photos")), cal, target_fpr)


if __name__ == "__main__":
    main()
