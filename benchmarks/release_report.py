"""The released detector's generalization report, as markdown tables (for release/MODEL_CARD.md).

Reads what `cd release && dvc repro` wrote: the manifest, every face's score
(data/face_scores.parquet), the detector's calibration and the video predictions. Test
videos were never trained on nor used to choose anything (threshold, aggregation, epoch).

Reported, at video level (faces aggregated as calibrated) and at frame (face) level:
each FF++ method and DFDC against all scored test real videos (3 FF++ originals + the
held-out real identities), and against the 3 FF++ originals only; then the verdicts.

Usage: python benchmarks/release_report.py [--release release]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from deepfake_detector import records
from deepfake_detector.metrics import roc_auc


def _auc(y: pd.Series, s: pd.Series) -> str:
    value = roc_auc(y.to_numpy(), s.to_numpy())
    return "n/a" if value is None else f"{value:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--release", type=Path, default=Path("release"))
    args = ap.parse_args()
    root = args.release
    manifest = records.read_manifest(root / "data" / "manifest.csv")
    preds = records.read_predictions(root / "outputs" / "video_predictions.csv")
    scores = records.read_face_scores(root / "data" / "face_scores.parquet")
    cal = json.loads((root / "outputs" / "calibration.json").read_text())["calibration"]
    test = preds[(preds["split"] == "test") & preds["prob_fake"].notna()].merge(
        manifest[["video_id", "source", "manipulation"]], on="video_id")
    faces = scores[scores["split"] == "test"].merge(manifest[["video_id", "label", "source", "manipulation"]], on="video_id")
    faces = faces.assign(y=(faces["label"] == "fake").astype(int), p=1 / (1 + np.exp(-faces["logit"])))
    test = test.assign(y=(test["true_label"] == "fake").astype(int))
    reals = test[test["y"] == 0]
    ffpp_reals = reals[reals["source"] == "ffpp"]
    print(f"threshold {cal['threshold']:.4f} ({cal['aggregation']}); {cal['how']}\n")
    print("| fakes | n | video AUC vs all test reals | vs FF++ originals | frame AUC vs all test reals |")
    print("|---|---|---|---|---|")
    groups = [(m, test[test["manipulation"] == m]) for m in sorted(test.loc[test["y"] == 1, "manipulation"].unique())]
    groups += [("FF++ (4 methods)", test[(test["source"] == "ffpp") & (test["y"] == 1)]),
               ("all fakes", test[test["y"] == 1])]
    for name, fakes in groups:
        vs_all = pd.concat([fakes, reals])
        vs_ffpp = pd.concat([fakes, ffpp_reals])
        ids = set(vs_all["video_id"])
        f = faces[faces["video_id"].isin(ids)]
        print(f"| {name} | {len(fakes)} | {_auc(vs_all['y'], vs_all['prob_fake'])} | "
              f"{_auc(vs_ffpp['y'], vs_ffpp['prob_fake'])} | {_auc(f['y'], f['p'])} |")
    print(f"\n{len(reals)} scored test real videos ({len(ffpp_reals)} FF++ originals); "
          f"{int((preds['split'] == 'test').sum()) - len(test)} test videos not scored (missing/unreadable/no face).\n")
    print("| video | source | label | P(fake) | verdict |")
    print("|---|---|---|---|---|")
    for row in test.sort_values(["y", "source", "prob_fake"]).itertuples():
        print(f"| {row.video_id} | {row.source} {row.manipulation} | {row.true_label} | {row.prob_fake:.3f} | {row.verdict} |")


if __name__ == "__main__":
    main()
