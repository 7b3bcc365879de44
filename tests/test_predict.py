"""predict_videos: a verdict per manifest video from the cached face scores and the detector's calibration."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import full_params
from deepfake_detector import records
from deepfake_detector.model.network import CheckpointMeta, build_model, save_checkpoint
from deepfake_detector.scoring.aggregate import sigmoid
from deepfake_detector.stages import predict_videos as stage
from test_calibrate import make_calibration
from test_train_eval import make_crop_set


def _add_failed_videos(d: dict[str, Path]) -> None:
    """A listed-but-missing video and an unreadable one, next to make_crop_set's no_face."""
    manifest = records.read_manifest(d["manifest"])
    report = records.read_detection_report(d["report"])
    extra = [("v18", "real", "test", records.MISSING, "listed in metadata.json but not on disk: v18.mp4"),
             ("v19", "fake", "val", records.UNREADABLE, "not a readable video: v19.mp4")]
    for vid, label, split, status, reason in extra:
        manifest.loc[len(manifest)] = {"video_id": vid, "path": f"{vid}.mp4", "label": label, "split": split, "group": vid,
                                       "source": "synthetic", "manipulation": "original",
                                       "status": "ok" if status != records.MISSING else status,
                                       "reason": reason if status == records.MISSING else "", "size_bytes": "", "signature": ""}
        report.loc[len(report)] = {"video_id": vid, "label": label, "split": split, "status": status, "reason": reason,
                                   "frames_sampled": "0", "frames_with_face": "0", "faces_kept": "0"}
    records.write_manifest(manifest, d["manifest"])
    records.write_detection_report(report, d["report"])


def _scores(d: dict[str, Path], logit_of_video: dict[str, float]) -> Path:
    """face_scores.parquet with a chosen logit per video (what calibrate would have written)."""
    faces = records.read_faces(d["faces"])
    split = records.read_manifest(d["manifest"]).set_index("video_id")["split"]
    rows = faces[records.FACE_KEY].assign(split=faces["video_id"].map(split), logit=faces["video_id"].map(logit_of_video))
    path = d["root"] / f"scores_{len(list(d['root'].glob('scores_*')))}.parquet"
    records.write_face_scores(rows, path)
    return path


def save_detector(path: Path, calibration, input_size: int = 32) -> Path:
    """A random-init ResNet-18 saved as a calibrated detector."""
    torch.manual_seed(0)
    model, _ = build_model("resnet18", "random")
    meta = save_checkpoint(path, model, CheckpointMeta(arch="resnet18", init="random", input_size=input_size))
    save_checkpoint(path, model, replace(meta, calibration=replace(calibration, weights_sha256=meta.weights_sha256).to_dict()))
    return path


@pytest.fixture(scope="module")
def crop_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predict")
    d = {**make_crop_set(root), "root": root}
    _add_failed_videos(d)
    return d


def _run_stage(d: dict[str, Path], out: Path, scores: Path, detector: Path, params: dict | None = None) -> tuple[pd.DataFrame,
                                                                                                                 dict]:
    out.mkdir(parents=True, exist_ok=True)
    params_file = out / "params.yaml"
    full_params.params_file(params_file, predict_videos=params or {}, train={"epochs": 99})
    stage.main(["--params", str(params_file), "--detector", str(detector), "--manifest", str(d["manifest"]),
                "--scores", str(scores), "--detection-report", str(d["report"]),
                "--out", str(out / "video_predictions.csv"), "--metrics", str(out / "predict_metrics.json"),
                "--details", str(out / "predict_details.json")])
    details = json.loads((out / "predict_details.json").read_text())
    # The metrics file (what `dvc metrics show` lists) holds the headline figures only.
    headline = json.loads((out / "predict_metrics.json").read_text())
    assert headline == {"test_verdicts": {k: details["test_verdicts"][k] for k in ("decided", "decided_accuracy", "uncertain")}}
    return records.read_predictions(out / "video_predictions.csv"), details


def _logits_by_label(d: dict[str, Path], fake: float = 3.0, real: float = -3.0) -> dict[str, float]:
    labels = records.read_manifest(d["manifest"]).set_index("video_id")["label"]
    return {vid: fake if label == "fake" else real for vid, label in labels.items()}


def test_stage_writes_a_row_per_video_with_honest_failures(crop_set: dict[str, Path], tmp_path: Path) -> None:
    scores = _scores(crop_set, _logits_by_label(crop_set))
    detector = save_detector(tmp_path / "detector.pt", make_calibration(threshold=0.4, aggregation="mean_logit"))
    df, m = _run_stage(crop_set, tmp_path, scores, detector)
    manifest = records.read_manifest(crop_set["manifest"])
    assert list(df.columns) == records.PREDICTION_COLUMNS
    assert sorted(df["video_id"]) == sorted(manifest["video_id"]) and len(df) == 20
    by_id = df.set_index("video_id")
    assert by_id.loc["v17", "verdict"] == "no_face"
    assert by_id.loc["v18", "verdict"] == "unreadable" and by_id.loc["v18", "reason"].startswith("listed but missing")
    assert by_id.loc["v19", "verdict"] == "unreadable" and "not a readable video" in by_id.loc["v19", "reason"]
    failed = by_id.loc[["v17", "v18", "v19"]]
    assert failed[["prob_fake", "prob_real"]].isna().all().all()  # empty, never a made-up 0.5
    assert list(failed["pred_class"]) == list(failed["verdict"])
    scored = df[df["verdict"].isin(["fake", "real", "uncertain"])]
    assert len(scored) == 17 and scored["prob_fake"].between(0, 1).all()
    np.testing.assert_allclose(scored["prob_fake"] + scored["prob_real"], 1.0)
    assert (scored["n_faces"] == 4).all() and (scored["n_frames_with_face"] == 4).all()
    # Judged by the detector's calibration: its aggregation and threshold in every row.
    assert (df["aggregation"] == "mean_logit").all() and np.allclose(df["threshold"], 0.4)
    assert (scored["verdict"] == scored["true_label"]).all()
    # Counts add up, in the CSV and in the metrics file.
    assert sum(m["verdicts"].values()) == len(df) == m["videos"]
    assert m["verdicts"] == df["verdict"].value_counts().reindex(records.VERDICTS, fill_value=0).to_dict()
    assert m["verdicts_by_split"]["test"]["no_face"] == 1 and m["test_verdicts"]["unscored"] == 2
    assert m["calibration"]["threshold"] == 0.4


def test_stage_abstains_near_the_threshold_and_on_thin_evidence(crop_set: dict[str, Path], tmp_path: Path) -> None:
    logits = _logits_by_label(crop_set)
    logits["v15"] = 0.02  # a fake test video, on the fence
    scores = _scores(crop_set, logits)
    detector = save_detector(tmp_path / "detector.pt", make_calibration(threshold=0.5, band=0.1))
    df, m = _run_stage(crop_set, tmp_path, scores, detector)
    by_id = df.set_index("video_id")
    assert by_id.loc["v15", "verdict"] == "uncertain" and "within 0.1" in by_id.loc["v15", "reason"]
    assert by_id.loc["v15", "pred_class"] in ("fake", "real")  # the hard call is still recorded
    decided = df[df["verdict"].isin(["fake", "real"])]
    assert (decided["verdict"] == decided["true_label"]).all() and len(decided) == 16
    assert m["test_verdicts"]["uncertain"] == 1 and m["test_verdicts"]["decided_accuracy"] == 1.0
    assert sigmoid(-3.0) < 0.5 <= sigmoid(3.0)
    # Every video has 4 faces: asking for 5 makes all of them uncertain, with the reason.
    thin = save_detector(tmp_path / "thin.pt", make_calibration(min_faces=5))
    df, _ = _run_stage(crop_set, tmp_path / "thin", scores, thin)
    scored = df[df["prob_fake"].notna()]
    assert (scored["verdict"] == "uncertain").all() and scored["reason"].str.contains("fewer than min_faces 5").all()


def test_stage_rows_only_for_selected_splits(crop_set: dict[str, Path], tmp_path: Path) -> None:
    scores = _scores(crop_set, _logits_by_label(crop_set))
    detector = save_detector(tmp_path / "detector.pt", make_calibration())
    df, m = _run_stage(crop_set, tmp_path, scores, detector, {"splits": ["test"]})
    assert set(df["split"]) == {"test"} and len(df) == 5 and m["videos"] == 5


def test_stage_abstains_on_damaged_files_and_judges_stills_on_one_face(crop_set: dict[str, Path], tmp_path: Path) -> None:
    """A video that decoded with errors gets no verdict (its score is kept); a still image needs
    one face where a video needs min_faces."""
    scores = _scores(crop_set, _logits_by_label(crop_set))
    report = records.read_detection_report(crop_set["report"])
    ok = report.index[report["status"] == "ok"]
    damaged, still = report.loc[ok[0], "video_id"], report.loc[ok[1], "video_id"]
    report.loc[ok[0], ["decode_errors", "reason"]] = ["5", "the stream ends after 7 of 12 declared frames (truncated file)"]
    report.loc[ok[1], "kind"] = "image"
    d = {**crop_set, "report": tmp_path / "detection_report.csv"}
    records.write_detection_report(report, d["report"])
    detector = save_detector(tmp_path / "detector.pt", make_calibration(min_faces=5))  # every video has 4 faces
    df, _ = _run_stage(d, tmp_path / "out", scores, detector)
    by_id = df.set_index("video_id")
    reason = by_id.loc[damaged, "reason"]
    assert by_id.loc[damaged, "verdict"] == "uncertain" and by_id.loc[damaged, "decode_errors"] == 5
    assert "damaged file (5 decode error(s))" in reason and "ends after 7 of 12" in reason
    assert by_id.loc[damaged, "pred_class"] == by_id.loc[damaged, "true_label"]  # scored, just not trusted
    assert by_id.loc[still, "verdict"] == by_id.loc[still, "true_label"]
    others = df[df["prob_fake"].notna() & ~df["video_id"].isin([damaged, still])]
    assert len(others) and (others["verdict"] == "uncertain").all()
