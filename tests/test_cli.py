"""The ``deepfake-detector`` CLI: plumbing, not accuracy (a random-init 32 px checkpoint)."""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SHARED_DATA, noise_frames, portrait_frames, write_clip

from deepfake_detector import cli, predict
from deepfake_detector.data import CropDataset
from deepfake_detector.engine import predict_logits, setup_runtime
from deepfake_detector.faces import CropParams, FaceDetector
from deepfake_detector.model import CheckpointMeta, build_model, load_model, save_checkpoint
from deepfake_detector.shards import ShardWriter, encode_image, shard_name
from deepfake_detector.transforms import build_eval_transform


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model, _ = build_model("resnet18", "random")
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, model, CheckpointMeta(arch="resnet18", init="random", input_size=32, threshold=0.4, aggregation="mean_logit"))
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A clip with a real face, a corrupt mp4, and a folder with a photo, a faceless clip and a text file."""
    root = tmp_path_factory.mktemp("media")
    good = write_clip(root / "good.mp4", portrait_frames(12))
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    folder = root / "dir"
    (folder / "sub").mkdir(parents=True)
    cv2.imwrite(str(folder / "b_face.JPG"), cv2.cvtColor(portrait_frames(1)[0], cv2.COLOR_RGB2BGR))
    write_clip(folder / "sub" / "a_noise.mp4", noise_frames(6))
    (folder / "notes.txt").write_text("not media")
    return {"good": good, "corrupt": corrupt, "dir": folder, "image": folder / "b_face.JPG", "noise": folder / "sub" / "a_noise.mp4"}


def _run(args: list[str]) -> int:
    return cli.main(["predict", *args])


@pytest.fixture(scope="module")
def json_run(checkpoint: Path, media: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One CLI run over every kind of input, with --json and --explain (a stand-in explain module)."""
    root = tmp_path_factory.mktemp("json_run")
    calls = []

    def explain_video(model, meta, verdict, faces, crops, frames, out_dir, params):  # noqa: ANN001, ANN202
        calls.append({"verdict": verdict, "faces": faces, "crops": crops, "frames": frames, "out_dir": out_dir, "params": params})
        out_dir.mkdir(parents=True)
        (out_dir / "report.html").write_text("<html></html>")
        return out_dir / "report.html"

    fake = types.ModuleType("deepfake_detector.explain")
    fake.explain_video = explain_video
    fake.GradcamParams = lambda: "gradcam-defaults"
    out = root / "out.json"
    args = [str(media["good"]), str(media["corrupt"]), str(media["dir"]), "--model", str(checkpoint), "--frames", "2",
            "--json", str(out), "--explain", str(root / "cam")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "deepfake_detector.explain", fake)
        mp.setattr(sys, "stdout", io.StringIO())
        rc = _run(args)
        table = sys.stdout.getvalue()
    return {"rc": rc, "payload": json.loads(out.read_text()), "table": table, "calls": calls, "cam": root / "cam"}


def test_predict_json_one_row_per_file(json_run: dict, media: dict[str, Path]) -> None:
    assert json_run["rc"] == 0
    payload = json_run["payload"]
    rows = {Path(r["video_path"]).name: r for r in payload["videos"]}
    # The folder is searched recursively and sorted; the text file is not media.
    assert [Path(r["video_path"]).name for r in payload["videos"]] == ["good.mp4", "corrupt.mp4", "b_face.JPG", "a_noise.mp4"]
    good, bad, image, noise = rows["good.mp4"], rows["corrupt.mp4"], rows["b_face.JPG"], rows["a_noise.mp4"]
    assert good["verdict"] in ("fake", "real", "uncertain") and 0 <= good["prob_fake"] <= 1
    assert good["n_frames_sampled"] == 2 and good["n_faces"] >= 2 and good["aggregation"] == "mean_logit"
    assert bad["verdict"] == "unreadable" and "corrupt.mp4" in bad["reason"] and bad["prob_fake"] is None
    assert image["verdict"] in ("fake", "real", "uncertain") and image["n_frames_sampled"] == 1 and image["n_faces"] >= 1
    assert noise["verdict"] == "no_face" and noise["prob_fake"] is None and noise["prob_real"] is None
    assert payload["verdicts"]["unreadable"] == 1 and sum(payload["verdicts"].values()) == 4
    assert payload["threshold"] == 0.4 and payload["calibration"] == "checkpoint"
    table = json_run["table"]
    assert "from checkpoint" in table and "4 file(s)" in table
    assert all(str(p) in table for p in (media["good"], media["corrupt"], media["image"], media["noise"]))


def test_predict_csv_has_the_pipeline_columns(checkpoint: Path, media: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    assert _run([str(media["corrupt"]), str(media["image"]), "--model", str(checkpoint), "--csv", str(out)]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == predict.PREDICTION_COLUMNS and len(df) == 2
    assert df.loc[0, "verdict"] == "unreadable" and pd.isna(df.loc[0, "prob_fake"]) and df.loc[0, "pred_class"] == "unreadable"
    assert df.loc[1, "pred_class"] in ("fake", "real") and df.loc[1, "prob_fake"] + df.loc[1, "prob_real"] == pytest.approx(1.0)


def test_usage_errors_exit_2(checkpoint: Path, media: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    not_a_model = tmp_path / "weights.pt"
    torch.save({"weights": torch.zeros(3)}, not_a_model)
    assert _run([str(media["good"]), "--model", str(not_a_model)]) == 2
    assert "not a deepfake-detector checkpoint" in capsys.readouterr().err
    assert _run([str(media["good"]), "--model", str(checkpoint), "--frames", "0"]) == 2
    assert _run([str(media["good"]), "--json", "a.json", "--csv", "a.csv"]) == 2
    assert cli.main([]) == 2
    monkeypatch.chdir(tmp_path)  # no models/model.pt here
    assert _run([str(media["good"])]) == 2
    err = capsys.readouterr().err
    assert "models/model.pt" in err and "make demo" in err and "dvc repro" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run([str(empty), "--model", str(checkpoint)]) == 2
    assert "no video or image files" in capsys.readouterr().err


def test_calibration_from_the_pipeline_is_used_only_for_its_model(checkpoint: Path, media: dict[str, Path], tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    _, meta = load_model(checkpoint)
    monkeypatch.chdir(tmp_path)
    metrics = tmp_path / "outputs" / "predict_metrics.json"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps({"chosen": {"aggregation": "max_face_mean", "threshold": 0.61, "weights_sha256": meta.weights_sha256}}))
    out = tmp_path / "o.json"
    assert _run([str(media["image"]), "--model", str(checkpoint), "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert (payload["aggregation"], payload["threshold"]) == ("max_face_mean", 0.61)
    assert payload["videos"][0]["aggregation"] == "max_face_mean" and "outputs/predict_metrics.json" in capsys.readouterr().out
    # Made for other weights: the default file is ignored (with a warning), an explicit one refused.
    metrics.write_text(json.dumps({"chosen": {"aggregation": "max_face_mean", "threshold": 0.61, "weights_sha256": "0" * 64}}))
    assert _run([str(media["image"]), "--model", str(checkpoint), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["calibration"] == "checkpoint"
    assert _run([str(media["image"]), "--model", str(checkpoint), "--calibration", str(metrics)]) == 2
    assert "other weights" in capsys.readouterr().err


def test_explain_gets_aligned_faces_crops_and_frames(json_run: dict, media: dict[str, Path]) -> None:
    calls = json_run["calls"]
    # Only the files with scored faces are explained (not the unreadable or faceless ones).
    assert [Path(c["verdict"].video_path).name for c in calls] == ["good.mp4", "b_face.JPG"]
    c = calls[0]
    assert c["out_dir"] == json_run["cam"] / "good" and c["params"] == "gradcam-defaults"
    assert len(c["faces"]) == len(c["crops"]) >= 2
    assert {"frame_index", "face_index", "x1", "y1", "x2", "y2", "logit", "prob_fake"} <= set(c["faces"].columns)
    assert set(c["faces"]["frame_index"]) <= set(c["frames"]) and len(c["frames"]) == 2
    assert all(f.dtype == np.uint8 and f.shape == (240, 320, 3) for f in c["frames"].values())
    assert all(cr.dtype == np.uint8 and cr.shape == (224, 224, 3) for cr in c["crops"])
    rows = {Path(r["video_path"]).name: r for r in json_run["payload"]["videos"]}
    assert rows["good.mp4"]["explain_report"].endswith("report.html") and "explain_report" not in rows["corrupt.mp4"]
    assert f"Grad-CAM {media['good']}:" in json_run["table"]


def test_cli_scores_crops_like_the_pipeline(checkpoint: Path, media: dict[str, Path], tmp_path: Path) -> None:
    """The CLI's face logits equal what the pipeline computes from the same crops stored in a shard."""
    model, meta = load_model(checkpoint)
    params = CropParams()
    pred = next(predict.predict_paths([media["image"]], model, meta, FaceDetector(params), params, predict.PredictParams(), 2))
    assert pred.crops
    shard = shard_name("crops", 0)
    with ShardWriter(tmp_path / shard) as w:
        for i, crop in enumerate(pred.crops):
            w.add(f"v/{i:02d}.png", encode_image(crop))
    rows = pd.DataFrame({"shard": shard, "member": [f"v/{i:02d}.png" for i in range(len(pred.crops))]})
    ds = CropDataset(rows, tmp_path, build_eval_transform(meta.input_size, tuple(meta.mean), tuple(meta.std)))
    pipeline = predict_logits(model, ds, setup_runtime("auto"))
    np.testing.assert_allclose(pred.faces["logit"].to_numpy(), pipeline, rtol=1e-3, atol=1e-3)


def test_find_media_recursive_sorted_case_insensitive(media: dict[str, Path]) -> None:
    found = cli.find_media([media["dir"], media["good"]])
    assert found == [media["image"], media["noise"], media["good"]]


@pytest.mark.slow  # decodes a whole 12 s 720p clip
def test_real_ffpp_clip(checkpoint: Path, tmp_path: Path) -> None:
    clip = SHARED_DATA / "ffpp_c23_sample" / "original_sequences" / "youtube" / "c23" / "videos" / "004.mp4"
    if not clip.is_file():
        pytest.skip(f"real sample clip not found: {clip}")
    out = tmp_path / "o.json"
    assert _run([str(clip), "--model", str(checkpoint), "--frames", "2", "--json", str(out)]) == 0
    row = json.loads(out.read_text())["videos"][0]
    assert row["n_frames_sampled"] == 2 and row["n_frames_with_face"] == 2 and row["prob_fake"] is not None


def test_json_to_stdout_and_rows_printed_as_reached(checkpoint: Path, media: dict[str, Path], capsys: pytest.CaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`--json -` writes the JSON (only) to stdout; each file's table row is out before the next file is judged."""
    real_predict_paths = predict.predict_paths
    seen_before_next: list[str] = []

    def spying_predict_paths(paths, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        for i, pred in enumerate(real_predict_paths(paths, *args, **kwargs)):
            if i == 1:
                seen_before_next.append(capsys.readouterr().err)
            yield pred

    monkeypatch.setattr(cli, "predict_paths", spying_predict_paths)
    assert _run([str(media["corrupt"]), str(media["noise"]), "--model", str(checkpoint), "--frames", "2", "--json", "-"]) == 0
    captured = capsys.readouterr()
    payload = json.loads(captured.out)  # nothing but the JSON on stdout
    assert [Path(r["video_path"]).name for r in payload["videos"]] == ["corrupt.mp4", "a_noise.mp4"]
    assert not Path("-").exists()
    assert str(media["corrupt"]) in seen_before_next[0] and "unreadable" in seen_before_next[0]
    assert str(media["noise"]) not in seen_before_next[0] and str(media["noise"]) in captured.err


def test_version(capsys: pytest.CaptureFixture) -> None:
    from deepfake_detector import __version__

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"deepfake-detector {__version__}"
