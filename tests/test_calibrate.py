"""calibrate: the verdict rule, the aggregation choice and threshold on validation, the params."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepfake_detector import records
from deepfake_detector.core.config import ConfigError, load_section
from deepfake_detector.faces.detection import CropParams
from deepfake_detector.pipeline import calibrate
from deepfake_detector.scoring.aggregate import AggregateParams
from deepfake_detector.verdicts.calibration import Calibration, ExplainParams
from full_params import crop_settings, full, params_file


def make_calibration(threshold: float = 0.5, band: float = 0.05, min_faces: int = 1, aggregation: str = "mean",
                     frames: int = 16, crop: CropParams | None = None, sha: str = "0" * 64,
                     explain: ExplainParams | None = None) -> Calibration:
    return Calibration(weights_sha256=sha, frames_per_video=frames, crop=crop or full(CropParams), aggregation=aggregation,
                       aggregate=full(AggregateParams), threshold=threshold, abstain_band=band, min_faces=min_faces,
                       explain=explain or full(ExplainParams))


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
    verdict, reason = make_calibration(threshold, band).decide(prob, n_faces=10)
    assert verdict == expected and f"{prob:.3f}" in reason


def test_too_few_faces_abstain() -> None:
    cal = make_calibration(min_faces=3)
    assert cal.decide(0.99, n_faces=2) == ("uncertain", "only 2 face(s) scored, fewer than min_faces 3")
    assert cal.decide(0.99, n_faces=3)[0] == "fake"


def test_thin_evidence_and_damaged_files_abstain() -> None:
    """min_faces is capped at the frames sampled: a still image needs one face, a one-frame video
    min_faces; a file that decoded with errors gets no verdict."""
    cal = make_calibration(min_faces=3, frames=12)
    assert cal.decide(0.99, n_faces=1, frames_planned=1)[0] == "fake"  # a still image
    verdict, reason = cal.decide(0.99, n_faces=1, frames_planned=12)  # a one-frame video
    assert verdict == "uncertain" and reason == "only 1 face(s) scored, fewer than min_faces 3"
    assert cal.decide(0.99, n_faces=2, frames_planned=2)[0] == "fake"  # --frames 2
    assert cal.decide(0.99, n_faces=1, frames_planned=2) == (
        "uncertain", "only 1 face(s) scored, fewer than 2 (min_faces 3, one per sampled frame)")
    verdict, reason = cal.decide(0.99, n_faces=10, decode_errors=3)
    assert verdict == "uncertain" and reason.startswith("damaged file (3 decode error(s)): prob_fake 0.990")


def test_calibration_round_trips_and_rejects_unknown_keys() -> None:
    cal = make_calibration(threshold=0.37, aggregation="confident", crop=full(CropParams, detect_long_side=360))
    assert Calibration.from_dict(cal.to_dict()) == cal
    with pytest.raises(ConfigError, match="thresold"):
        Calibration.from_dict({**cal.to_dict(), "thresold": 0.2})
    with pytest.raises(ConfigError, match="aggregation"):
        Calibration.from_dict({**cal.to_dict(), "aggregation": "median"})


def _two_face_videos(rng: np.random.Generator) -> pd.DataFrame:
    """Fakes: one clearly fake face and one clearly real face per frame; reals: two mildly
    suspicious faces. Only max_face_mean separates them (mean and mean_logit invert them,
    confident falls back to the mean because no face reaches its high cut-off)."""
    faces = []
    for i in range(8):
        vid, fake = f"v{i:02d}", i % 2 == 1
        for f in range(4):
            pair = (1.0, -4.0) if fake else (0.5, 0.5)
            for k, logit in enumerate(pair):
                faces.append({"video_id": vid, "frame_index": f, "face_index": k, "split": "val", "y": int(fake),
                              "logit": logit + rng.normal(0, 0.05)})
    return pd.DataFrame(faces)


def test_aggregation_clearly_best_on_val_is_chosen_and_calibrated() -> None:
    scores = _two_face_videos(np.random.default_rng(0))
    aggregation, how, threshold, rule, table = calibrate.calibrate(scores, full(calibrate.CalibrateParams))
    assert set(table) == {"mean", "mean_logit", "confident", "max_face_mean"}
    assert table["max_face_mean"]["val_auc"] == 1.0 and table["mean"]["val_auc"] < 0.5
    assert aggregation == "max_face_mean" and "val" in how and rule == "val balanced accuracy"
    # The threshold separates the val videos of the chosen aggregation.
    s = calibrate.video_scores(scores, "max_face_mean", full(AggregateParams))
    y = scores.groupby("video_id")["y"].first().loc[s.index]
    assert s[y == 0].max() < threshold <= s[y == 1].min()


def test_ties_go_to_mean_and_fixed_names_are_respected() -> None:
    scores = _two_face_videos(np.random.default_rng(1))
    scores = scores[scores["face_index"] == 0]  # one face per frame: every strategy separates
    table = calibrate.compare_aggregations(scores, full(AggregateParams))
    assert all(t["val_auc"] == 1.0 for t in table.values())
    assert calibrate.choose_aggregation(table, "auto")[0] == "mean"
    assert calibrate.choose_aggregation(table, "mean_logit") == ("mean_logit", "fixed in params")


def test_real_only_validation_uses_the_false_positive_target() -> None:
    """Training on real videos with SBI leaves validation without fakes: the threshold then
    calls target_fpr of the validation real videos fake, and the rule says so."""
    rng = np.random.default_rng(2)
    rows = [{"video_id": f"r{i:02d}", "frame_index": 0, "face_index": 0, "split": "val", "y": 0, "logit": float(x)}
            for i, x in enumerate(rng.normal(-2, 1, 40))]
    params = full(calibrate.CalibrateParams, target_fpr=0.1)
    aggregation, how, threshold, rule, _ = calibrate.calibrate(pd.DataFrame(rows), params)
    assert aggregation == "mean" and "one class" in how and "no fake videos" in rule
    probs = 1 / (1 + np.exp(-pd.DataFrame(rows)["logit"]))
    assert (probs >= threshold).mean() == pytest.approx(0.1, abs=0.03)


def test_no_validation_faces_is_an_error() -> None:
    rows = pd.DataFrame([{"video_id": "a", "frame_index": 0, "face_index": 0, "split": "train", "y": 0, "logit": 0.0}])
    with pytest.raises(ValueError, match="validation"):
        calibrate.calibrate(rows, full(calibrate.CalibrateParams))


def test_params_validation(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    for section, match in (({"aggregation": "median"}, "aggregation"), ({"abstain_band": 0.6}, "abstain_band"),
                           ({"aggregate": {"confident_hgih": 0.9}}, "confident_hgih"), ({"target_fpr": 0}, "target_fpr")):
        params_file(path, calibrate=section)
        with pytest.raises(ConfigError, match=match):
            load_section(calibrate.CalibrateParams, "calibrate", path)
    params_file(path, calibrate={"min_faces": 3, "aggregate": {"confident_high": 0.7}})
    p = load_section(calibrate.CalibrateParams, "calibrate", path)
    assert p.min_faces == 3 and p.aggregate.confident_high == 0.7


def test_a_checkpoint_from_before_detect_every_no_face_reads_as_it_was_made() -> None:
    """Checkpoint reading is tolerant (it is not params.yaml): a calibration written before
    detect_every_no_face existed searched face-less keyframes every detect_every frames."""
    data = make_calibration(crop=full(CropParams, detect_every=4)).to_dict()
    del data["crop"]["detect_every_no_face"]
    assert Calibration.from_dict(data).crop.detect_every_no_face == 4


def test_a_checkpoint_from_before_it_recorded_its_gradcam_settings_reads_as_it_was_explained() -> None:
    """The CLI and the web demo explained such detectors with top_k 3, batch_size 16, alpha 0.5."""
    data = make_calibration(explain=full(ExplainParams, top_k=5)).to_dict()
    assert Calibration.from_dict(data).explain.top_k == 5
    del data["explain"]
    assert Calibration.from_dict(data).explain == ExplainParams(top_k=3, batch_size=16, alpha=0.5)
    with pytest.raises(ConfigError, match="explain.alpha"):  # recorded, it is read as recorded: all of it
        Calibration.from_dict({**data, "explain": {"top_k": 3, "batch_size": 16}})


def test_faces_parquet_carries_its_crop_settings(tmp_path: Path) -> None:
    """calibrate takes the crop settings from crop_faces' output, not from params.yaml."""
    settings = crop_settings(margin=0.25)
    records.write_faces([], tmp_path / "faces.parquet", settings)
    assert records.read_crop_settings(tmp_path / "faces.parquet") == settings
    assert records.read_faces(tmp_path / "faces.parquet").empty
    pd.DataFrame({"video_id": ["a"]}).to_parquet(tmp_path / "old.parquet")
    with pytest.raises(records.RecordError, match="records no crop settings.*re-run crop_faces"):
        records.read_crop_settings(tmp_path / "old.parquet")
