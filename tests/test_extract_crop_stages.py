"""Smoke tests of the extract_frames and crop_faces stages on good and bad files."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import noise_frames, portrait_frames, unprivileged, write_clip
from deepfake_detector import records
from deepfake_detector.faces.detection import CropParams
from deepfake_detector.media.shards import ShardReader, partition_of, shard_name
from deepfake_detector.pipeline.crop_faces import crop_videos
from deepfake_detector.stages import crop_faces, extract_frames
from full_params import full, params_file

REPO = Path(__file__).resolve().parents[1]
FRAMES = 4


def _manifest_row(video_id: str, path: Path, status: str = "ok", reason: str = "") -> dict:
    return {
        "video_id": video_id, "path": str(path), "label": "fake" if video_id == "face_b" else "real",
        "split": "val" if video_id == "face_b" else "train", "group": video_id,
        "source": "folder", "manipulation": "original", "status": status, "reason": reason,
    }


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A manifest over two face clips, a no-face clip and every kind of bad file."""
    media = tmp_path / "media"
    media.mkdir()
    write_clip(media / "face_a.mp4", portrait_frames(12))
    write_clip(media / "face_b.mp4", portrait_frames(12, width=400, height=300, step=3))
    write_clip(media / "noise.mp4", noise_frames(8))
    data = (media / "face_a.mp4").read_bytes()
    (media / "corrupt.mp4").write_bytes(data[: len(data) // 2])
    (media / "empty.mp4").write_bytes(b"")
    (media / "text.mp4").write_text("just some text, renamed\n")
    rows = [
        _manifest_row("face_a", media / "face_a.mp4"),
        _manifest_row("face_b", media / "face_b.mp4"),
        _manifest_row("noise", media / "noise.mp4"),
        _manifest_row("corrupt", media / "corrupt.mp4"),
        _manifest_row("empty", media / "empty.mp4"),
        _manifest_row("text", media / "text.mp4"),
        _manifest_row("listed", media / "listed.mp4", "missing", "listed in metadata.json but absent"),
        _manifest_row("vanished", media / "vanished.mp4"),
    ]
    records.write_csv(pd.DataFrame(rows[::-1]), tmp_path / "data" / "manifest.csv", records.MANIFEST_COLUMNS)
    params_file(tmp_path / "params.yaml", extract_frames={"frames_per_video": FRAMES, "image_format": "png"},
                crop_faces={"videos_per_shard": 1, "crop_size": 112})
    return tmp_path


def _run_stages(ws: Path) -> None:
    extract_frames.main([
        "--params", str(ws / "params.yaml"), "--manifest", str(ws / "data/manifest.csv"),
        "--frames-dir", str(ws / "data/frames"), "--frames-table", str(ws / "data/frames.csv"),
        "--report", str(ws / "outputs/extract_report.csv"),
    ])
    crop_faces.main([
        "--params", str(ws / "params.yaml"), "--manifest", str(ws / "data/manifest.csv"),
        "--frames-dir", str(ws / "data/frames"), "--frames-table", str(ws / "data/frames.csv"),
        "--extract-report", str(ws / "outputs/extract_report.csv"), "--crops-dir", str(ws / "data/crops"),
        "--faces", str(ws / "data/faces.parquet"), "--report", str(ws / "outputs/detection_report.csv"),
    ])


def _hashes(ws: Path) -> dict[str, str]:
    files = sorted(p for d in ("data", "outputs") for p in (ws / d).rglob("*") if p.is_file())
    return {str(p.relative_to(ws)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_stages_report_every_video_and_are_deterministic(workspace: Path) -> None:
    ws = workspace
    _run_stages(ws)

    extract = pd.read_csv(ws / "outputs/extract_report.csv", dtype={"video_id": str})
    assert list(extract.columns) == records.EXTRACT_REPORT_COLUMNS
    assert extract["video_id"].tolist() == sorted(extract["video_id"])
    ext = extract.set_index("video_id")
    assert ext.loc["face_a", ["status", "n_frames_total", "n_frames_sampled"]].tolist() == ["ok", 12, FRAMES]
    assert ext.loc["face_b", ["width", "height"]].tolist() == [400, 300]

    report = pd.read_csv(ws / "outputs/detection_report.csv", keep_default_na=False)
    assert list(report.columns) == records.DETECTION_REPORT_COLUMNS
    rep = report.set_index("video_id")
    expected = {
        "face_a": ("ok", ""), "face_b": ("ok", ""),
        "noise": ("no_face", "noise.mp4"), "corrupt": ("unreadable", "corrupt.mp4"),
        "empty": ("unreadable", "empty file"), "text": ("unreadable", "plain text"),
        "listed": ("missing", "listed in metadata.json"), "vanished": ("missing", "vanished.mp4"),
    }
    assert sorted(rep.index) == sorted(expected)
    for vid, (status, reason_part) in expected.items():
        assert rep.loc[vid, "status"] == status, vid
        assert reason_part in rep.loc[vid, "reason"], (vid, rep.loc[vid, "reason"])
    assert rep.loc["face_b", ["label", "split"]].tolist() == ["fake", "val"]
    assert rep.loc["face_a", ["frames_sampled", "frames_with_face", "faces_kept"]].tolist() == [FRAMES] * 3
    assert rep.loc["noise", ["frames_sampled", "faces_kept"]].tolist() == [FRAMES, 0]

    frames = pd.read_csv(ws / "data/frames.csv", dtype={"video_id": str})
    assert list(frames.columns) == records.FRAME_COLUMNS
    assert sorted(frames["video_id"].unique()) == ["face_a", "face_b", "noise"]
    assert frames.groupby("video_id").size().tolist() == [FRAMES] * 3
    first = frames.iloc[0]
    assert ShardReader(ws / "data/frames").read_image(first.shard, first.member).shape == (240, 320, 3)

    faces = pd.read_parquet(ws / "data/faces.parquet")
    assert list(faces.columns) == records.FACE_COLUMNS
    assert faces["video_id"].unique().tolist() == ["face_a", "face_b"]
    keys = faces[["video_id", "frame_index", "face_index"]].apply(tuple, axis=1).tolist()
    assert keys == sorted(keys)
    assert all(len(lm) == 10 for lm in faces["landmarks"])
    assert (faces["det_prob"] >= 0.9).all() and (faces["x2"] > faces["x1"]).all()
    # videos_per_shard=1, 8 videos: 8 partitions by a hash of the video id, members named as promised.
    shards = faces.groupby("video_id")["shard"].first()
    assert shards.tolist() == [shard_name("crops", partition_of(vid, 8), 8) for vid in ("face_a", "face_b")]
    with tarfile.open(ws / "data/crops" / shards["face_b"]) as tar:
        names = tar.getnames()
    assert names == sorted(names) and names[0].startswith("face_b/") and names[0].endswith("_00.png")
    row = faces.iloc[0]
    crop = ShardReader(ws / "data/crops").read_image(row.shard, row.member)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8

    # Re-running on the same input gives byte-identical outputs; stale shards are removed.
    before = _hashes(ws)
    (ws / "data/crops/crops-00099.tar").write_bytes(b"stale")
    _run_stages(ws)
    assert _hashes(ws) == before


def test_crop_videos_refuses_a_stale_extract_report(tmp_path: Path) -> None:
    manifest = pd.DataFrame([_manifest_row("a", tmp_path / "a.mp4"), _manifest_row("b", tmp_path / "b.mp4")])
    extract = pd.DataFrame([{"video_id": "a", "status": "ok", "reason": ""}])
    frames = pd.DataFrame(columns=records.FRAME_COLUMNS)
    with pytest.raises(ValueError, match=r"missing from the extract report.*'b'"):
        crop_videos(manifest, frames, extract, tmp_path / "frames", tmp_path / "crops", full(CropParams))


def test_reports_carry_the_kind_and_the_decode_errors(tmp_path: Path, portrait: np.ndarray) -> None:
    """A truncated clip is extracted (ok) with its decode errors counted and described, and crop_faces
    carries them on; a JPEG named .mp4 is read as the image it is."""
    from deepfake_detector.pipeline.extract_frames import ExtractParams, extract_videos

    whole = write_clip(tmp_path / "whole.avi", portrait_frames(40, 160, 120), fourcc="MJPG")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    photo = tmp_path / "photo.mp4"
    photo.write_bytes(cv2.imencode(".jpg", cv2.cvtColor(portrait, cv2.COLOR_RGB2BGR))[1].tobytes())
    manifest = pd.DataFrame([_manifest_row("cut", cut), _manifest_row("photo", photo), _manifest_row("whole", whole)])
    frames, extract = extract_videos(manifest, full(ExtractParams, frames_per_video=FRAMES), tmp_path / "frames")
    ext = extract.set_index("video_id")
    assert ext.loc["cut", "status"] == "ok" and ext.loc["cut", "decode_errors"] == 40 - ext.loc["cut", "n_frames_total"] > 0
    assert "ends after" in ext.loc["cut", "reason"] and ext.loc["cut", "n_frames_expected"] == FRAMES
    assert ext.loc["photo", ["kind", "n_frames_expected", "n_frames_sampled", "decode_errors"]].tolist() == ["image", 1, 1, 0]
    assert ext.loc["whole", ["kind", "decode_errors", "reason"]].tolist() == ["video", 0, ""]
    _, report = crop_videos(manifest, frames, extract, tmp_path / "frames", tmp_path / "crops", full(CropParams))
    rep = report.set_index("video_id")
    assert rep.loc["cut", "status"] == "ok" and rep.loc["cut", "decode_errors"] > 0 and "ends after" in rep.loc["cut", "reason"]
    assert rep.loc["photo", ["kind", "frames_expected", "decode_errors"]].tolist() == ["image", 1, 0]


def test_extract_frames_goes_on_past_a_file_it_may_not_read(tmp_path: Path) -> None:
    """Run as a user without the right to read one file: a report row saying so, the rest extracted."""
    prefix = unprivileged()
    good = write_clip(tmp_path / "good.mp4", portrait_frames(6, 160, 120))
    locked = tmp_path / "locked.mp4"
    locked.write_bytes(good.read_bytes())
    os.chmod(locked, 0)
    manifest = tmp_path / "manifest.csv"
    records.write_csv(pd.DataFrame([_manifest_row("good", good), _manifest_row("locked", locked)]), manifest,
                      records.MANIFEST_COLUMNS)
    params = tmp_path / "params.yaml"
    params_file(params, extract_frames={"frames_per_video": FRAMES})
    try:
        run = subprocess.run([*prefix, sys.executable, "-m", "deepfake_detector.stages.extract_frames", "--params", str(params),
                              "--manifest", str(manifest), "--frames-dir", str(tmp_path / "frames"),
                              "--frames-table", str(tmp_path / "frames.csv"), "--report", str(tmp_path / "report.csv")],
                             capture_output=True, text=True)
    finally:
        os.chmod(locked, 0o644)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    report = records.read_extract_report(tmp_path / "report.csv").set_index("video_id")
    assert report.loc["good", "status"] == "ok" and report.loc["locked", "status"] == "unreadable"
    assert report.loc["locked", "reason"] == f"permission denied: cannot read {locked}"
