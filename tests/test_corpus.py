"""The bad-input corpus (tests/corpus.py) through the CLI (directory, batch, per file) and the stages.

For every entry: a row (or, in ingest, a counted problem) with a status or verdict from the
allowed family, a reason that names the file and says what is wrong, no traceback; in the
stages, the same verdict as the CLI. The run as an unprivileged user also measures the
peak memory of the whole corpus.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import PEAK_RSS_KB, unprivileged
from corpus import SCORED, SHELL_NAME, Entry, unlock, write_corpus, write_dfdc_indexes
from deepfake_detector import records
from deepfake_detector.interfaces import cli
from full_params import params_file
from test_calibrate import make_calibration
from test_predict import save_detector

FRAMES = 2
# Peak RSS allowed for the whole corpus in one CLI process: PyTorch, the model and MTCNN
# take about 1.2 GB; the 12000x12000 PNG alone took 8.3 GB before the pixel budget.
MAX_RSS_KB = 3_000_000
PRIVILEGED = os.geteuid() == 0  # permission bits do not apply to this process


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Entry]]:
    root = tmp_path_factory.mktemp("corpus") / "media"
    entries = write_corpus(root)
    yield root, entries
    unlock(root)


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two frames per video, at least 3 faces (so 2 for a video sampled at 2 frames, 1 for an image)."""
    return save_detector(tmp_path_factory.mktemp("det") / "detector.pt",
                         make_calibration(threshold=0.4, aggregation="mean_logit", frames=FRAMES, min_faces=3))


def check_row(entry: Entry, row: dict, path: Path, readable: bool = PRIVILEGED) -> None:
    """One CLI row against what the corpus entry allows."""
    where = f"{entry.kind} ({entry.name!r}): {row['verdict']} / {row['reason']!r}"
    assert row["video_path"] == str(path), where
    if entry.privileged_ok and readable:  # e.g. an unreadable file, read anyway by root
        assert row["verdict"] in records.VERDICTS, where
        return
    assert row["verdict"] in entry.verdicts, where
    assert entry.fragment in row["reason"], where
    if row["verdict"] not in SCORED:
        assert str(path) in row["reason"], where  # the reason names the file
    if "kind" in entry.extra:
        assert row["n_frames_expected"] == (1 if entry.extra["kind"] == "image" else FRAMES), where
    if entry.extra.get("decode_errors"):
        assert row["decode_errors"] > 0 and row["verdict"] in ("uncertain", "no_face"), where


def _run_cli(args: list[str], out: Path, capfd: pytest.CaptureFixture) -> dict:
    assert cli.main(["predict", *args, "--json", str(out)]) == 0
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def directory_rows(corpus: tuple[Path, list[Entry]], detector: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """The CLI's rows for the corpus folder, by path (one in-process run)."""
    out = tmp_path_factory.mktemp("dir_run") / "o.json"
    with pytest.MonkeyPatch.context() as mp:
        captured = io.StringIO()
        mp.setattr(sys, "stdout", captured)
        assert cli.main(["predict", str(corpus[0]), "--model", str(detector), "--json", str(out)]) == 0
    assert "Traceback" not in captured.getvalue()
    return {r["video_path"]: r for r in json.loads(out.read_text())["videos"]}


def test_cli_directory(corpus: tuple[Path, list[Entry]], directory_rows: dict[str, dict]) -> None:
    """A directory search finds every media-named entry, broken ones included (a row each)."""
    root, entries = corpus
    rows = directory_rows
    expected = {str(root / e.name): e for e in entries if e.in_dir}
    assert set(rows) == set(expected)
    for path, entry in expected.items():
        check_row(entry, rows[path], Path(path))
    # The shell-metacharacter name was judged as a file, never run (a `touch` would land here or in cwd).
    assert rows[str(root / SHELL_NAME)]["verdict"] in SCORED
    assert not list(root.glob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))


@pytest.mark.slow  # one CLI call per entry: about 45 model loads
def test_cli_one_file_per_call(corpus: tuple[Path, list[Entry]], detector: Path, tmp_path: Path,
                               capfd: pytest.CaptureFixture) -> None:
    root, entries = corpus
    for i, entry in enumerate(entries):
        path = root / entry.name
        payload = _run_cli([str(path), "--model", str(detector)], tmp_path / f"{i}.json", capfd)
        (row,) = payload["videos"]
        check_row(entry, row, path)


@pytest.mark.slow  # a fresh process that imports PyTorch and judges the whole corpus
def test_cli_batch_unprivileged_bounded_memory(corpus: tuple[Path, list[Entry]], detector: Path, tmp_path: Path) -> None:
    """All entries in one call, as a user without the right to read no_read.mp4 and locked_dir/:
    a row for each (saying so for those), none run as a shell command, and the peak memory of
    the process measured."""
    root, entries = corpus
    paths = [root / e.name for e in entries]
    out, rss = tmp_path / "o.json", tmp_path / "rss.txt"
    code = ("import sys\nfrom deepfake_detector.interfaces import cli\nrc = cli.main(sys.argv[2:])\n"
            f"open(sys.argv[1], 'w').write(str({PEAK_RSS_KB}))\nsys.exit(rc)")
    run = subprocess.run([*unprivileged(), sys.executable, "-c", code, str(rss), "predict", *map(str, paths),
                          str(root / "locked_dir"), "--model", str(detector), "--json", str(out)],
                         capture_output=True, text=True, cwd=tmp_path)  # cwd: where an injected `touch` would land
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr[-3000:]
    payload = json.loads(out.read_text())
    rows = payload["videos"]
    assert len(rows) == len(entries) + 1 >= 40 and sum(payload["verdicts"].values()) == len(rows)
    for entry, path, row in zip(entries, paths, rows):
        check_row(entry, row, path, readable=False)
    assert rows[-1]["video_path"] == str(root / "locked_dir")
    assert rows[-1]["reason"].startswith("cannot list folder (Permission denied)")
    assert not list(tmp_path.glob("PWNED*")) and not list(root.glob("PWNED*")) and (root / SHELL_NAME).is_file()
    peak_kb = int(rss.read_text())
    print(f"peak RSS of the CLI over the corpus: {peak_kb / 1024:.0f} MiB")
    assert peak_kb < MAX_RSS_KB


def _stage_args(ws: Path, **paths: Path) -> list[str]:
    return [x for k, v in paths.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def test_stages_account_for_every_entry(corpus: tuple[Path, list[Entry]], detector: Path, directory_rows: dict[str, dict],
                                        tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """ingest -> extract_frames -> crop_faces -> (scores) -> predict_videos: each entry is a row
    with the CLI's verdict, or a problem counted in ingest's report with its reason."""
    from deepfake_detector.model.data import load_face_table
    from deepfake_detector.pipeline.calibrate import score_faces
    from deepfake_detector.stages import crop_faces, extract_frames, ingest, predict_videos
    from deepfake_detector.verdicts.calibration import load_detector

    root, entries = corpus
    dfdc = write_dfdc_indexes(tmp_path / "dfdc", root / "rotated.mp4")
    ws = tmp_path / "ws"
    params = ws / "params.yaml"
    ws.mkdir()
    params_file(
        params,
        ingest={"sources": [{"format": "folder", "root": str(root), "label": "real"},
                            {"format": "dfdc", "root": str(tmp_path / "dfdc")}]},
        extract_frames={"frames_per_video": FRAMES}, crop_faces={"videos_per_shard": 8},
        predict_videos={"splits": ["train", "val", "test"]},
    )
    d = {name: ws / rel for name, rel in (("manifest", "manifest.csv"), ("ingest_report", "ingest.json"),
                                          ("frames_dir", "frames"), ("frames_table", "frames.csv"),
                                          ("extract_report", "extract.csv"), ("crops_dir", "crops"), ("faces", "faces.parquet"),
                                          ("detection_report", "detection.csv"), ("scores", "scores.parquet"),
                                          ("out", "predictions.csv"), ("metrics", "metrics.json"),
                                          ("details", "details.json"))}
    p = ["--params", str(params)]
    ingest.main([*p, "--manifest", str(d["manifest"]), "--report", str(d["ingest_report"])])
    extract_frames.main([*p, *_stage_args(ws, manifest=d["manifest"], frames_dir=d["frames_dir"],
                                          frames_table=d["frames_table"], report=d["extract_report"])])
    crop_faces.main([*p, *_stage_args(ws, manifest=d["manifest"], frames_dir=d["frames_dir"], frames_table=d["frames_table"],
                                      extract_report=d["extract_report"], crops_dir=d["crops_dir"], faces=d["faces"],
                                      report=d["detection_report"])])
    det = load_detector(detector)
    manifest = records.read_manifest(d["manifest"])
    scores = score_faces(det.model, det.meta, load_face_table(d["faces"], manifest), d["crops_dir"], batch_size=16)
    records.write_face_scores(scores, d["scores"])
    predict_videos.main([*p, *_stage_args(ws, detector=detector, manifest=d["manifest"], scores=d["scores"],
                                          detection_report=d["detection_report"], out=d["out"], metrics=d["metrics"],
                                          details=d["details"])])
    assert "Traceback" not in capfd.readouterr().err

    report = json.loads(d["ingest_report"].read_text())
    problems = {p["file"]: p for p in report["problems"]}
    extract = records.read_extract_report(d["extract_report"]).set_index("video_id")
    predictions = records.read_predictions(d["out"])
    assert len(predictions) == len(manifest) == len(extract)
    by_path = manifest.set_index("path")
    pred_by_path = predictions.set_index("video_path")
    cli_rows = directory_rows
    for entry in (e for e in entries if e.in_dir):
        path = str(root / entry.name)
        where = f"{entry.kind} ({entry.name!r})"
        if entry.stage == "skipped":
            assert problems[path]["kind"] == "skipped" and entry.fragment in problems[path]["reason"], where
            continue
        vid = by_path.loc[path, "video_id"]
        status = extract.loc[vid, "status"]
        expected = "ok" if entry.privileged_ok and PRIVILEGED else entry.stage
        assert status == expected, (where, status, extract.loc[vid, "reason"])
        if status != "ok":
            assert entry.fragment in extract.loc[vid, "reason"] and path in extract.loc[vid, "reason"], where
        pred = pred_by_path.loc[path]
        assert pred["verdict"] == cli_rows[path]["verdict"], (where, pred["reason"], cli_rows[path]["reason"])
        if entry.extra.get("decode_errors"):
            assert int(extract.loc[vid, "decode_errors"]) > 0 and int(pred["decode_errors"]) > 0, where
    assert problems[str(root / "notes.txt")]["kind"] == "skipped"
    summary = report["counts"]["by_source"]
    assert summary["folder"]["skipped"] == sum(e.stage == "skipped" for e in entries) + 1  # + notes.txt
    missing = pred_by_path.loc[str(tmp_path / "dfdc" / dfdc["missing"])]
    assert missing["verdict"] == "unreadable" and "listed but missing" in missing["reason"]
    malformed = problems[str(tmp_path / "dfdc" / dfdc["malformed"])]
    assert malformed["kind"] == "index_error" and "not valid JSON" in malformed["reason"]
    assert summary["dfdc"]["index_errors"] == 1 and summary["dfdc"]["missing"] == 1
    assert pd.Series(predictions["verdict"]).isin(records.VERDICTS).all()
