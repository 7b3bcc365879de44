"""predict_videos: aggregation choice on val, calibration, verdicts, the stage's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_train_eval import make_crop_set

from deepfake_detector import predict, records
from deepfake_detector.aggregate import AggregateParams, sigmoid
from deepfake_detector.config import ConfigError, load_section
from deepfake_detector.model import CheckpointMeta, build_model, load_model, save_checkpoint
from deepfake_detector.stages import predict_videos as stage


@pytest.mark.parametrize(
    ("prob", "threshold", "band", "expected"),
    [
        (0.90, 0.50, 0.05, "fake"),
        (0.53, 0.50, 0.05, "uncertain"),
        (0.47, 0.50, 0.05, "uncertain"),
        (0.44, 0.50, 0.05, "real"),
        (0.30, 0.20, 0.05, "fake"),  # the calibrated threshold, not 0.5, decides
        (0.50, 0.50, 0.00, "fake"),  # no band: no abstention
        (0.49, 0.50, 0.00, "real"),
    ],
)
def test_decide(prob: float, threshold: float, band: float, expected: str) -> None:
    assert predict.decide(prob, threshold, band) == expected


def _two_face_videos(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fakes: one clearly fake face and one clearly real face per frame; reals: two mildly
    suspicious faces. Only max_face_mean separates them (mean and mean_logit invert them,
    confident falls back to the mean because no face reaches its high cut-off)."""
    faces, videos = [], []
    for i in range(16):
        vid, fake = f"v{i:02d}", i % 2 == 1
        videos.append({"video_id": vid, "split": "val" if i < 8 else "test", "y": int(fake)})
        for f in range(4):
            pair = (1.0, -4.0) if fake else (0.5, 0.5)
            for k, logit in enumerate(pair):
                faces.append({"video_id": vid, "frame_index": f, "face_index": k, "logit": logit + rng.normal(0, 0.05)})
    return pd.DataFrame(faces), pd.DataFrame(videos).set_index("video_id")


def test_aggregation_clearly_best_on_val_is_chosen_and_calibrated() -> None:
    faces, videos = _two_face_videos(np.random.default_rng(0))
    scores, table = predict.compare_aggregations(faces, videos, AggregateParams(), fallback_threshold=0.5)
    assert set(table) == {"mean", "mean_logit", "confident", "max_face_mean"}
    assert table["max_face_mean"]["val_auc"] == 1.0 and table["max_face_mean"]["test_auc"] == 1.0
    assert table["mean"]["val_auc"] < 0.5
    name, how = predict.choose_aggregation(table, "auto", fallback="mean")
    assert name == "max_face_mean" and "val" in how
    # The threshold separates the val videos of the chosen aggregation.
    s = scores["max_face_mean"]
    val = videos.loc[s.index, "split"] == "val"
    y = videos.loc[s.index, "y"]
    thr = table["max_face_mean"]["val_threshold"]
    assert s[val & (y == 0)].max() < thr <= s[val & (y == 1)].min()
    assert table["max_face_mean"]["test_accuracy"] == 1.0


def test_ties_go_to_mean_and_fixed_names_are_respected() -> None:
    faces, videos = _two_face_videos(np.random.default_rng(1))
    faces = faces[faces["face_index"] == 0]  # one face per frame: every strategy separates
    _, table = predict.compare_aggregations(faces, videos, AggregateParams(), fallback_threshold=0.5)
    assert all(t["val_auc"] == 1.0 for t in table.values())
    assert predict.choose_aggregation(table, "auto", fallback="confident")[0] == "mean"
    assert predict.choose_aggregation(table, "mean_logit", fallback="mean") == ("mean_logit", "fixed in params")


def test_one_class_val_falls_back_and_says_so() -> None:
    assert predict.calibrate(np.array([0.2, 0.9]), np.array([1, 1])) is None
    table = {name: {"val_auc": None} for name in predict.AGGREGATIONS}
    name, how = predict.choose_aggregation(table, "auto", fallback="mean_logit")
    assert name == "mean_logit" and "checkpoint" in how


def test_params_validation(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"predict_videos": {"aggregation": "median"}}))
    with pytest.raises(ConfigError, match="aggregation"):
        load_section(predict.PredictParams, "predict_videos", path)
    path.write_text(yaml.safe_dump({"predict_videos": {"abstain_band": 0.6}}))
    with pytest.raises(ConfigError, match="abstain_band"):
        load_section(predict.PredictParams, "predict_videos", path)
    path.write_text(yaml.safe_dump({"predict_videos": {"aggregate": {"confident_hgih": 0.9}}}))
    with pytest.raises(ConfigError, match="confident_hgih"):
        load_section(predict.PredictParams, "predict_videos", path)
    path.write_text(yaml.safe_dump({"predict_videos": {"splits": ["test"], "aggregate": {"confident_high": 0.7}}}))
    p = load_section(predict.PredictParams, "predict_videos", path)
    assert p.splits == ("test",) and p.aggregate.confident_high == 0.7


# --- the stage, end to end on the synthetic crop set --------------------------------


def _add_failed_videos(d: dict[str, Path]) -> None:
    """A listed-but-missing video and an unreadable one, next to make_crop_set's no_face."""
    manifest = pd.read_csv(d["manifest"], dtype=str, keep_default_na=False)
    report = pd.read_csv(d["report"], dtype=str, keep_default_na=False)
    extra = [("v18", "real", "test", records.MISSING, "listed in metadata.json but not on disk: v18.mp4"),
             ("v19", "fake", "val", records.UNREADABLE, "not a readable video: v19.mp4")]
    for vid, label, split, status, reason in extra:
        manifest.loc[len(manifest)] = {"video_id": vid, "path": f"{vid}.mp4", "label": label, "split": split, "group": vid,
                                       "source": "synthetic", "manipulation": "original", "status": "ok" if status != records.MISSING else status,
                                       "reason": reason if status == records.MISSING else ""}
        report.loc[len(report)] = {"video_id": vid, "label": label, "split": split, "status": status, "reason": reason,
                                   "frames_sampled": "0", "frames_with_face": "0", "faces_kept": "0"}
    records.write_csv(manifest, d["manifest"], records.MANIFEST_COLUMNS)
    records.write_csv(report, d["report"], records.DETECTION_REPORT_COLUMNS)


@pytest.fixture(scope="module")
def crop_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predict")
    d = make_crop_set(root)
    _add_failed_videos(d)
    model, _ = build_model("resnet18", "random")
    save_checkpoint(root / "model.pt", model, CheckpointMeta(arch="resnet18", init="random", input_size=32, threshold=0.37))
    return {**d, "root": root, "model": root / "model.pt"}


def _run_stage(d: dict[str, Path], out: Path, params: dict | None = None) -> tuple[pd.DataFrame, dict]:
    out.mkdir(parents=True, exist_ok=True)
    params_file = out / "params.yaml"
    params_file.write_text(yaml.safe_dump({"predict_videos": params or {}, "train": {"epochs": 99}}))
    stage.main(["--params", str(params_file), "--model", str(d["model"]), "--manifest", str(d["manifest"]),
                "--faces", str(d["faces"]), "--crops-dir", str(d["crops"]), "--detection-report", str(d["report"]),
                "--out", str(out / "video_predictions.csv"), "--metrics", str(out / "predict_metrics.json")])
    df = pd.read_csv(out / "video_predictions.csv", dtype={"video_id": str})
    return df, json.loads((out / "predict_metrics.json").read_text())


def test_stage_writes_a_row_per_video_with_honest_failures(crop_set: dict[str, Path], tmp_path: Path) -> None:
    df, m = _run_stage(crop_set, tmp_path)
    manifest = records.read_manifest(crop_set["manifest"])
    assert list(df.columns) == predict.PREDICTION_COLUMNS
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
    # Counts add up, in the CSV and in the metrics file.
    assert sum(m["verdicts"].values()) == len(df) == m["videos"]
    assert m["verdicts"] == df["verdict"].value_counts().reindex(predict.VERDICTS, fill_value=0).to_dict()
    assert m["verdicts_by_split"]["test"]["no_face"] == 1 and m["test_verdicts"]["unscored"] == 2
    # All four aggregations are reported on val and test; the choice is recorded for the CLI.
    assert set(m["aggregations"]) == set(predict.AGGREGATIONS)
    assert all({"val_auc", "test_auc", "test_accuracy"} <= set(t) for t in m["aggregations"].values())
    chosen = m["chosen"]
    assert chosen["aggregation"] in predict.AGGREGATIONS and (df["aggregation"] == chosen["aggregation"]).all()
    assert np.allclose(df["threshold"], chosen["threshold"])
    _, meta = load_model(crop_set["model"])
    cal = predict.load_calibration(tmp_path / "predict_metrics.json", meta)
    assert (cal.aggregation, cal.threshold) == (chosen["aggregation"], chosen["threshold"])


def test_stage_chooses_on_val_and_abstains_near_the_threshold(
    crop_set: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With controlled logits: perfect separation (every strategy ties -> mean), a val-calibrated
    threshold between the classes, and one test video scored right at it -> uncertain."""
    faces = pd.read_parquet(crop_set["faces"])
    labels = records.read_manifest(crop_set["manifest"]).set_index("video_id")["label"]
    logit_of = {r.member: (3.0 if labels[r.video_id] == "fake" else -3.0) for r in faces.itertuples()}
    for r in faces[faces["video_id"] == "v15"].itertuples():  # a fake test video, on the fence
        logit_of[r.member] = 0.02

    def fake_logits(model, dataset, rt, batch_size=64, num_workers=0, desc=""):  # noqa: ANN001, ANN202
        return np.array([logit_of[m] for m in dataset.members], dtype=np.float32)

    monkeypatch.setattr(predict, "predict_logits", fake_logits)
    df, m = _run_stage(crop_set, tmp_path, {"abstain_band": 0.1})
    assert m["chosen"]["aggregation"] == "mean" and m["chosen"]["threshold_source"].startswith("val")
    thr = m["chosen"]["threshold"]
    assert sigmoid(-3.0) < thr <= sigmoid(3.0) and abs(thr - 0.5) < 0.1
    by_id = df.set_index("video_id")
    assert by_id.loc["v15", "verdict"] == "uncertain" and "within 0.1" in by_id.loc["v15", "reason"]
    assert by_id.loc["v15", "pred_class"] in ("fake", "real")  # the hard call is still recorded
    decided = df[df["verdict"].isin(["fake", "real"])]
    assert (decided["verdict"] == decided["true_label"]).all() and len(decided) == 16
    assert m["test_verdicts"]["uncertain"] == 1 and m["test_verdicts"]["decided_accuracy"] == 1.0


def test_stage_rows_only_for_selected_splits_but_calibrates_on_val(crop_set: dict[str, Path], tmp_path: Path) -> None:
    df, m = _run_stage(crop_set, tmp_path, {"splits": ["test"], "aggregation": "max_face_mean"})
    assert set(df["split"]) == {"test"} and len(df) == 5 and m["videos"] == 5
    assert m["chosen"]["aggregation"] == "max_face_mean" and m["chosen"]["how"] == "fixed in params"
    assert m["aggregations"]["mean"]["n_val"] == 4  # val was scored for the calibration
