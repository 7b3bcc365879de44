"""The ``deepfake-detector`` CLI: plumbing, not accuracy (a random-init 32 px checkpoint)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import SHARED_DATA, noise_frames, portrait_frames, unprivileged, write_clip
from deepfake_detector import records, service
from deepfake_detector.core.config import to_dict
from deepfake_detector.interfaces import cli
from deepfake_detector.media.imaging import encode_image
from deepfake_detector.media.shards import ShardWriter, shard_name
from deepfake_detector.model.data import CropDataset
from deepfake_detector.model.engine import predict_logits, setup_runtime
from deepfake_detector.model.network import CheckpointMeta, build_model, save_checkpoint
from deepfake_detector.model.transforms import build_eval_transform
from deepfake_detector.verdicts import judge
from deepfake_detector.verdicts.calibration import ExplainParams, load_detector
from full_params import full
from test_calibrate import make_calibration
from test_predict import save_detector

# Not params.yaml's values: --explain is seen to take the detector's settings.
CLI_EXPLAIN = full(ExplainParams, top_k=2, alpha=0.3)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A calibrated random-init detector: 2 frames per video, threshold 0.4, mean_logit, its
    own Grad-CAM settings."""
    path = tmp_path_factory.mktemp("ckpt") / "detector.pt"
    return save_detector(path, make_calibration(threshold=0.4, aggregation="mean_logit", frames=2, explain=CLI_EXPLAIN))


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
    return {"good": good, "corrupt": corrupt, "dir": folder, "image": folder / "b_face.JPG",
            "noise": folder / "sub" / "a_noise.mp4"}


def _run(args: list[str]) -> int:
    return cli.main(["predict", *args])


@pytest.fixture(scope="module")
def json_run(checkpoint: Path, media: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One CLI run over every kind of input, with --json and --explain (a stand-in explain module)."""
    root = tmp_path_factory.mktemp("json_run")
    calls = []

    def build_explanation(model, meta, verdict, faces, crops, frames, out_dir, params):
        calls.append({"verdict": verdict, "faces": faces, "crops": crops, "frames": frames, "out_dir": out_dir, "params": params})
        out_dir.mkdir(parents=True)
        (out_dir / "report.html").write_text("<html></html>")
        return types.SimpleNamespace(report=out_dir / "report.html")

    fake = types.ModuleType("deepfake_detector.explanations.explain")
    fake.build_explanation = build_explanation
    out = root / "out.json"
    args = [str(media["good"]), str(media["corrupt"]), str(media["dir"]), "--model", str(checkpoint),
            "--json", str(out), "--explain", str(root / "cam")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "deepfake_detector.explanations.explain", fake)
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
    assert payload["threshold"] == 0.4 and payload["calibration"]["aggregation"] == "mean_logit"
    assert payload["frames_per_video"] == 2  # the detector's calibration, not a CLI default
    table = json_run["table"]
    assert "calibration: aggregation mean_logit, threshold 0.400" in table and "4 file(s)" in table
    assert all(str(p) in table for p in (media["good"], media["corrupt"], media["image"], media["noise"]))


def test_predict_csv_has_the_pipeline_columns(checkpoint: Path, media: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    assert _run([str(media["corrupt"]), str(media["image"]), "--model", str(checkpoint), "--csv", str(out)]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == records.PREDICTION_COLUMNS and len(df) == 2
    assert df.loc[0, "verdict"] == "unreadable" and pd.isna(df.loc[0, "prob_fake"]) and df.loc[0, "pred_class"] == "unreadable"
    assert df.loc[1, "pred_class"] in ("fake", "real") and df.loc[1, "prob_fake"] + df.loc[1, "prob_real"] == pytest.approx(1.0)


def test_usage_errors_exit_2(checkpoint: Path, media: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    not_a_model = tmp_path / "weights.pt"
    torch.save({"weights": torch.zeros(3)}, not_a_model)
    assert _run([str(media["good"]), "--model", str(not_a_model)]) == 2
    assert "not a deepfake-detector checkpoint" in capsys.readouterr().err
    uncalibrated = tmp_path / "model.pt"  # what the train stage writes: not yet a detector
    save_checkpoint(uncalibrated, build_model("resnet18", "random")[0], CheckpointMeta(arch="resnet18", init="random",
                                                                                       input_size=32))
    assert _run([str(media["good"]), "--model", str(uncalibrated)]) == 2
    assert "without calibration" in capsys.readouterr().err
    assert _run([str(media["good"]), "--model", str(checkpoint), "--frames", "0"]) == 2
    assert _run([str(media["good"]), "--json", "a.json", "--csv", "a.csv"]) == 2
    assert cli.main([]) == 2
    monkeypatch.chdir(tmp_path)  # no release/detector.pt here
    monkeypatch.setattr(service, "CHECKOUT", tmp_path)  # nor in the checkout
    assert _run([str(media["good"])]) == 2
    err = capsys.readouterr().err  # how to get a model: restore the released one, or name the pipeline's
    assert "no released detector at release/detector.pt" in err and "git checkout -- release/detector.pt" in err
    assert "--model models/detector.pt after `make demo`" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run([str(empty), "--model", str(checkpoint)]) == 2
    assert "no video or image files" in capsys.readouterr().err


def test_default_model_is_the_released_one_even_with_the_pipelines(checkpoint: Path, media: dict[str, Path],
                                                                    tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """After `make demo` both detectors are there: only --model picks the pipeline's. The line that
    names the model (on stderr with `--json -`) names its model card too."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(service, "CHECKOUT", tmp_path / "elsewhere")
    for folder in ("release", "models"):
        (tmp_path / folder).mkdir()
        shutil.copy(checkpoint, tmp_path / folder / "detector.pt")
    (tmp_path / "release" / "MODEL_CARD.md").write_text("# Model card\n")
    assert _run([str(media["image"]), "--json", "-"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["model"] == "release/detector.pt"  # stdout: the JSON only
    model_line = next(line for line in captured.err.splitlines() if line.startswith("model: "))
    assert model_line.startswith("model: release/detector.pt, the released detector (the default; "
                                 "--model models/detector.pt for the sample pipeline's) (resnet18, input 32 px")
    assert model_line.endswith("; model card release/MODEL_CARD.md")
    assert _run([str(media["image"]), "--model", "models/detector.pt"]) == 0
    model_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("model: "))
    assert model_line.startswith("model: models/detector.pt, given with --model (resnet18")
    assert model_line.endswith("; no model card")
    # Without the released detector, no silent fall-back to the pipeline's: an error saying how.
    (tmp_path / "release" / "detector.pt").unlink()
    assert _run([str(media["image"])]) == 2
    assert "pass --model models/detector.pt to use the sample pipeline's detector" in capsys.readouterr().err
    # From another directory, the checkout's released detector, and its card beside it.
    monkeypatch.setattr(service, "CHECKOUT", tmp_path)
    shutil.copy(checkpoint, tmp_path / "release" / "detector.pt")
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    assert service.default_model() == (tmp_path / "release" / "detector.pt", "the released detector")
    assert service.model_card(service.default_model()[0]) == tmp_path / "release" / "MODEL_CARD.md"
    assert service.model_card(tmp_path / "models" / "detector.pt") is None


def test_output_paths_are_checked_before_any_work(checkpoint: Path, media: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    judged: list[Path] = []
    monkeypatch.setattr(judge, "judge_paths", lambda paths, *a, **k: judged.extend(paths) or iter(()))
    assert _run([str(media["good"]), "--model", str(checkpoint), "--json", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err and not judged


def test_explain_gets_aligned_faces_crops_and_frames(json_run: dict, media: dict[str, Path]) -> None:
    calls = json_run["calls"]
    # Only the files with scored faces are explained (not the unreadable or faceless ones).
    assert [Path(c["verdict"].video_path).name for c in calls] == ["good.mp4", "b_face.JPG"]
    c = calls[0]
    # Built in a hidden folder next to its place, then renamed onto it whole.
    assert c["out_dir"].parent == json_run["cam"] and c["out_dir"].name.startswith(".good.")
    assert sorted(p.name for p in json_run["cam"].iterdir()) == ["b_face", "good"]
    assert c["params"] == CLI_EXPLAIN  # the detector's Grad-CAM settings, as the gradcam stage uses them
    assert len(c["faces"]) == len(c["crops"]) >= 2
    assert list(c["faces"].columns) == records.SCORED_FACE_COLUMNS
    assert set(c["faces"]["frame_index"]) <= set(c["frames"]) and len(c["frames"]) == 2
    assert all(f.dtype == np.uint8 and f.shape == (240, 320, 3) for f in c["frames"].values())
    assert all(cr.dtype == np.uint8 and cr.shape == (224, 224, 3) for cr in c["crops"])
    rows = {Path(r["video_path"]).name: r for r in json_run["payload"]["videos"]}
    assert rows["good.mp4"]["explain_report"] == str(json_run["cam"] / "good" / "report.html")
    assert "explain_report" not in rows["corrupt.mp4"] and (json_run["cam"] / "good" / "report.html").is_file()
    assert f"Grad-CAM {media['good']}:" in json_run["table"]


def test_cli_scores_crops_like_the_pipeline(checkpoint: Path, media: dict[str, Path], tmp_path: Path) -> None:
    """The CLI's face logits equal what the pipeline computes from the same crops stored in a shard."""
    detector = load_detector(checkpoint)
    pred = next(judge.judge_paths([media["image"]], detector))
    assert pred.crops
    shard = shard_name("crops", 0)
    with ShardWriter(tmp_path / shard) as w:
        for i, crop in enumerate(pred.crops):
            w.add(f"v/{i:02d}.png", encode_image(crop))
    rows = pd.DataFrame({"shard": shard, "member": [f"v/{i:02d}.png" for i in range(len(pred.crops))]})
    meta = detector.meta
    ds = CropDataset(rows, tmp_path, build_eval_transform(meta.input_size, tuple(meta.mean), tuple(meta.std)))
    pipeline = predict_logits(detector.model, ds, setup_runtime("auto"))
    np.testing.assert_allclose(pred.faces["logit"].to_numpy(), pipeline, rtol=1e-3, atol=1e-3)


def test_find_media_recursive_sorted_case_insensitive(media: dict[str, Path]) -> None:
    found, unlisted = cli.find_media([media["dir"], media["good"]])
    assert found == [media["image"], media["noise"], media["good"]] and not unlisted


@pytest.mark.slow  # decodes a whole 12 s 720p clip
def test_real_ffpp_clip(checkpoint: Path, tmp_path: Path) -> None:
    clip = SHARED_DATA / "ffpp_c23_sample" / "original_sequences" / "youtube" / "c23" / "videos" / "004.mp4"
    if not clip.is_file():
        pytest.skip(f"real sample clip not found: {clip}")
    out = tmp_path / "o.json"
    assert _run([str(clip), "--model", str(checkpoint), "--json", str(out)]) == 0
    row = json.loads(out.read_text())["videos"][0]
    assert row["n_frames_sampled"] == 2 and row["n_frames_with_face"] == 2 and row["prob_fake"] is not None


def test_json_to_stdout_and_rows_printed_as_reached(checkpoint: Path, media: dict[str, Path], capsys: pytest.CaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`--json -` writes the JSON (only) to stdout; each file's table row is out before the next file is judged."""
    real_judge_paths = judge.judge_paths
    seen_before: list[tuple[list[Path], str]] = []

    def spying_judge_paths(paths, *args, **kwargs):
        seen_before.append((list(paths), capsys.readouterr().err))
        yield from real_judge_paths(paths, *args, **kwargs)

    monkeypatch.setattr(judge, "judge_paths", spying_judge_paths)
    assert _run([str(media["corrupt"]), str(media["noise"]), "--model", str(checkpoint), "--json", "-"]) == 0
    captured = capsys.readouterr()
    payload = json.loads(captured.out)  # nothing but the JSON on stdout
    assert [Path(r["video_path"]).name for r in payload["videos"]] == ["corrupt.mp4", "a_noise.mp4"]
    assert not Path("-").exists()
    # The corrupt file is refused without the model; the faceless clip is judged after its row is out.
    assert [paths for paths, _ in seen_before] == [[media["noise"]]]
    assert str(media["corrupt"]) in seen_before[0][1] and "unreadable" in seen_before[0][1]
    assert str(media["noise"]) not in seen_before[0][1] and str(media["noise"]) in captured.err


def test_version(capsys: pytest.CaptureFixture) -> None:
    from deepfake_detector import __version__

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"deepfake-detector {__version__}"


def test_cli_and_pipeline_give_the_same_verdict_on_a_real_clip(checkpoint: Path, tmp_path: Path) -> None:
    """The same real video through the stages (extract_frames -> crop_faces -> calibrate's
    scoring -> predict_videos' rule) and through the CLI's path: same faces, score, verdict."""
    from deepfake_detector.model.data import load_face_table
    from deepfake_detector.pipeline.calibrate import score_faces
    from deepfake_detector.pipeline.crop_faces import crop_videos
    from deepfake_detector.pipeline.extract_frames import ExtractParams, extract_videos
    from deepfake_detector.pipeline.predict_videos import manifest_verdict

    clip = SHARED_DATA / "real_talking" / "spectre__samples__MEAD__M003_level_1_happy_024.mp4"
    if not clip.is_file():
        pytest.skip(f"real sample clip not found: {clip} (expected ../shared/data next to the repo)")
    detector = load_detector(checkpoint)
    cal = detector.calibration
    manifest = pd.DataFrame([{"video_id": "clip", "path": str(clip), "label": "real", "split": "test", "group": "g",
                              "source": "folder", "manipulation": "original", "status": "ok", "reason": ""}])
    frames, extract = extract_videos(manifest, full(ExtractParams, frames_per_video=cal.frames_per_video), tmp_path / "frames")
    faces, report = crop_videos(manifest, frames, extract.astype(str), tmp_path / "frames", tmp_path / "crops", cal.crop)
    records.write_faces(faces, tmp_path / "faces.parquet", to_dict(cal.crop))
    records.write_manifest(manifest, tmp_path / "manifest.csv")
    rows = load_face_table(tmp_path / "faces.parquet", records.read_manifest(tmp_path / "manifest.csv"))
    scores = score_faces(detector.model, detector.meta, rows, tmp_path / "crops", batch_size=8)
    prob = float(judge.video_scores(scores, cal.aggregation, cal.aggregate).iloc[0])
    pipeline = manifest_verdict(next(manifest.itertuples()), report.loc[0, "status"], "", len(frames), scores, prob, cal)

    cli_pred = next(judge.judge_paths([clip], detector))
    assert report.loc[0, "status"] == "ok" and cli_pred.verdict.n_faces == len(scores) > 0
    np.testing.assert_allclose(cli_pred.faces["logit"].to_numpy(), scores["logit"].to_numpy(), rtol=1e-4, atol=1e-4)
    assert cli_pred.verdict.prob_fake == pytest.approx(pipeline.prob_fake, abs=1e-5)
    assert (cli_pred.verdict.verdict, cli_pred.verdict.n_frames_sampled) == (pipeline.verdict, pipeline.n_frames_sampled)


def test_more_output_paths_checked_before_any_work(checkpoint: Path, media: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    judged: list[Path] = []
    monkeypatch.setattr(judge, "judge_paths", lambda paths, *a, **k: judged.extend(paths) or iter(()))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    cases = [(["--json", str(a_file / "out.json")], "is not a directory"),
             (["--csv", str(media["good"])], "is one of the inputs"),
             (["--explain", str(a_file)], "is not a folder")]
    for extra, message in cases:
        assert _run([str(media["good"]), "--model", str(checkpoint), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not judged and media["good"].stat().st_size > 1000


def test_directory_search_gives_every_media_entry_a_row(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Broken symlinks, a symlink loop and a FIFO named like media are rows, not silent drops."""
    folder = tmp_path / "in"
    folder.mkdir()
    os.symlink("loop.mp4", folder / "loop.mp4")
    os.symlink("gone.mp4", folder / "dangling.mp4")
    os.mkfifo(folder / "fifo.mp4")
    (folder / "readme.txt").write_text("not media")
    out = tmp_path / "o.json"
    assert _run([str(folder), "--model", str(checkpoint), "--json", str(out)]) == 0
    rows = {Path(r["video_path"]).name: r for r in json.loads(out.read_text())["videos"]}
    assert set(rows) == {"loop.mp4", "dangling.mp4", "fifo.mp4"}
    assert "symlink loop" in rows["loop.mp4"]["reason"] and "dangling symlink" in rows["dangling.mp4"]["reason"]
    assert "FIFO" in rows["fifo.mp4"]["reason"] and all(r["verdict"] == "unreadable" for r in rows.values())


def test_a_batch_of_unreadable_files_loads_no_model(checkpoint: Path, media: dict[str, Path], tmp_path: Path) -> None:
    """Inputs are checked first; PyTorch and the model load only for a file that decodes."""
    out = tmp_path / "o.json"
    code = ("import sys; from deepfake_detector.interfaces import cli; rc = cli.main(sys.argv[1:]); "
            "print(rc, [m for m in ('torch', 'torchvision', 'facenet_pytorch') if m in sys.modules])")
    args = ["predict", str(media["corrupt"]), str(tmp_path / "nowhere.mp4"), "--model", str(checkpoint), "--json", str(out)]
    run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert run.stdout.strip().splitlines()[-1] == "0 []", run.stdout + run.stderr
    payload = json.loads(out.read_text())
    assert [r["verdict"] for r in payload["videos"]] == ["unreadable", "unreadable"]
    assert payload["model"] == str(checkpoint) and payload["threshold"] is None and "model:" not in run.stdout


def test_unreadable_files_and_folders_without_permission(checkpoint: Path, media: dict[str, Path], tmp_path: Path) -> None:
    """As a user without the right to read them: a row each, the batch goes on; an output folder
    without write permission is refused before any work."""
    prefix = unprivileged()
    folder = tmp_path / "in"
    (folder / "locked").mkdir(parents=True)
    (folder / "locked" / "clip.mp4").write_bytes(media["good"].read_bytes())
    (folder / "no_read.mp4").write_bytes(media["good"].read_bytes())
    (folder / "broken.mp4").write_bytes(media["corrupt"].read_bytes())
    read_only = tmp_path / "ro"
    read_only.mkdir()
    os.chmod(folder / "no_read.mp4", 0)
    os.chmod(folder / "locked", 0)
    os.chmod(read_only, 0o555)
    try:
        cmd = [*prefix, sys.executable, "-m", "deepfake_detector.interfaces.cli", "predict", "--model", str(checkpoint)]
        refused = subprocess.run([*cmd, str(folder), "--json", str(read_only / "o.json")], capture_output=True, text=True)
        assert refused.returncode == 2 and "cannot create files in" in refused.stderr and "VERDICT" not in refused.stdout
        out = tmp_path / "o.json"
        run = subprocess.run([*cmd, str(folder), str(folder / "locked" / "clip.mp4"), "--json", str(out)],
                             capture_output=True, text=True)
    finally:
        for path in (folder / "no_read.mp4", folder / "locked", read_only):
            os.chmod(path, 0o755)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    rows = {r["video_path"]: r for r in json.loads(out.read_text())["videos"]}
    assert rows[str(folder / "no_read.mp4")]["reason"].startswith("permission denied: cannot read")
    assert rows[str(folder / "locked")]["reason"].startswith("cannot list folder (Permission denied)")
    assert "permission denied (a folder on its path cannot be searched)" in rows[str(folder / "locked" / "clip.mp4")]["reason"]
    assert rows[str(folder / "broken.mp4")]["verdict"] == "unreadable" and len(rows) == 4


def test_results_that_cannot_be_written_exit_1(checkpoint: Path, media: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(path: Path, text: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli, "_write_text", full_disk)
    assert _run([str(media["corrupt"]), "--model", str(checkpoint), "--json", str(tmp_path / "o.json")]) == 1
    captured = capsys.readouterr()
    assert "No space left on device" in captured.err and "the verdicts are in the table above" in captured.err
    assert str(media["corrupt"]) in captured.out and "Traceback" not in captured.err


# ----------------------------------------------------------------------------- whole outputs, Ctrl-C, the terminal


@pytest.mark.parametrize(("error", "status"), [(KeyboardInterrupt, cli.EXIT_INTERRUPTED), (OSError(28, "No space left"), 1)])
def test_a_results_write_that_fails_halfway_keeps_the_previous_file(
        checkpoint: Path, media: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture, error: BaseException, status: int) -> None:
    """Ctrl-C or a full disk while the CSV is being written: the previous results, byte for byte."""
    out = tmp_path / "results.csv"
    old = b"video_id,verdict\nlast-run,fake\n"
    out.write_bytes(old)
    real_write = records.write_predictions

    def half_then_fail(rows: pd.DataFrame, path: Path) -> None:
        real_write(rows, path)
        with open(path, "r+b") as fh:  # half of it is on disk when the serializer fails
            fh.truncate(path.stat().st_size // 2)
        raise error

    monkeypatch.setattr(records, "write_predictions", half_then_fail)
    assert _run([str(media["corrupt"]), "--model", str(checkpoint), "--csv", str(out)]) == status
    assert out.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]
    err = capsys.readouterr().err
    assert "Traceback" not in err and ("interrupted" in err if status == cli.EXIT_INTERRUPTED else "No space left" in err)


# A `predict` whose judging takes a minute: it says "judging" (stderr) and waits.
SLOW_PREDICT = """
import sys, time
from deepfake_detector import service
from deepfake_detector.interfaces import cli

def judge_slowly(self, path):
    print("judging", path, file=sys.stderr, flush=True)
    time.sleep(60)

service.Judge.judge_file = judge_slowly
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_second_run_on_the_same_output_is_refused_and_ctrl_c_exits_130(checkpoint: Path, media: dict[str, Path],
                                                                         tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Two runs on one --json path: the second is refused (status 2, the path and the first run's pid).
    Ctrl-C in the first: one line, status 130, no traceback, the previous results untouched."""
    out = tmp_path / "results.json"
    out.write_text('{"previous": true}\n')
    args = ["predict", str(media["good"]), "--model", str(checkpoint), "--json", str(out)]
    first = subprocess.Popen([sys.executable, "-c", SLOW_PREDICT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        assert first.stderr.readline().startswith("judging"), first.stderr.read()
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert f"{out}: another run (pid {first.pid}) is writing it" in err and len(err.strip().splitlines()) == 1
        first.send_signal(signal.SIGINT)
        stdout, stderr = first.communicate(timeout=20)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == 130 and "Traceback" not in stderr, stderr
    assert stderr.strip() == "deepfake-detector: interrupted"
    assert out.read_text() == '{"previous": true}\n' and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def _screen(raw: str) -> list[str]:
    """The lines a terminal shows for ``raw`` (carriage returns overwrite the line; no escapes needed here)."""
    lines, line, col = [], [], 0
    for ch in raw:
        if ch == "\n":
            lines.append("".join(line).rstrip())
            line, col = [], 0
        elif ch == "\r":
            col = 0
        else:
            line[col:col + 1] = [ch]
            col += 1
    return [*lines, "".join(line).rstrip()]


# `predict` on two files with a stand-in judge that leaves a progress bar (stderr) up while the
# file's row (stdout) is printed, and logs a warning while the first file's bar is up.
BAR_PREDICT = """
import logging, sys
from tqdm import tqdm
from deepfake_detector import service
from deepfake_detector.interfaces import cli

bars = []

def judge_with_a_bar(self, path):
    if bars:
        bars.pop().close()
    bar = tqdm(total=4, desc=path.name, leave=False)
    bar.update(1)
    if path.suffix == ".mp4":
        logging.getLogger("deepfake_detector.verdicts.judge").warning("a warning while the bar is up")
    bar.update(1)
    bars.append(bar)
    return self.unreadable(path, "stand-in"), None

service.Judge.judge_file = judge_with_a_bar
sys.exit(cli.main(sys.argv[1:]))
"""


def test_progress_bar_and_table_never_share_a_line_on_a_terminal(checkpoint: Path, media: dict[str, Path]) -> None:
    import fcntl
    import pty
    import struct
    import termios

    args = ["predict", str(media["good"]), str(media["image"]), "--model", str(checkpoint)]
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdout and stderr are the terminal, 100 columns wide
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        os.execv(sys.executable, [sys.executable, "-c", BAR_PREDICT, *args])
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    raw = b"".join(chunks).decode()
    assert os.waitstatus_to_exitcode(status) == 0, raw
    assert "it/s]" in raw or "%|" in raw  # a bar was drawn
    screen = [line for line in _screen(raw) if line]
    rows = [line for line in screen if "unreadable" in line or "file(s):" in line or "WARNING" in line]
    assert len(rows) == 4, screen  # two rows, a warning, the footer
    for line in rows:
        assert "%|" not in line and "it/s" not in line, screen  # no bar on a row's line
        assert line.startswith(("unreadable", "2 file(s)")) or "WARNING" in line[:30], screen
