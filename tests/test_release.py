"""The committed released detector (release/detector.pt), as a user gets it from a clone.

No other test loads it: these check that the file is the one release/dvc.lock says the
release pipeline made (so the model card's figures describe it), that it loads safely, and
that the CLI judges real shared clips with it end to end.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import SHARED_DATA
from deepfake_detector.interfaces import cli
from deepfake_detector.verdicts.calibration import load_detector

RELEASE = Path(__file__).resolve().parents[1] / "release"
DETECTOR = RELEASE / "detector.pt"
# A real talking head and a face swap, both never trained on (FF++ is test-only in the recipe).
REAL_CLIP = SHARED_DATA / "ffpp_c23_sample" / "original_sequences" / "youtube" / "c23" / "videos" / "634.mp4"
FAKE_CLIP = SHARED_DATA / "ffpp_c23_sample" / "manipulated_sequences" / "Deepfakes" / "c23" / "videos"


def _lock_md5(path: str) -> str:
    """The md5 release/dvc.lock records for ``path`` as an output of its stage."""
    lock = yaml.safe_load((RELEASE / "dvc.lock").read_text())
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            if out["path"] == path:
                return out["md5"]
    raise AssertionError(f"release/dvc.lock lists no output {path}")


def test_committed_detector_is_the_one_the_release_pipeline_made() -> None:
    assert hashlib.md5(DETECTOR.read_bytes()).hexdigest() == _lock_md5("detector.pt")
    detector = load_detector(DETECTOR)  # weights_only loading: a stranger's file cannot run code
    meta = detector.meta
    assert meta.arch == "efficientnet_lite0" and meta.init == "imagenet"
    params = yaml.safe_load((RELEASE / "params.yaml").read_text())
    assert meta.input_size == params["train"]["input_size"]
    assert detector.calibration.frames_per_video == params["extract_frames"]["frames_per_video"]


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared sample media not found at {SHARED_DATA}")
def test_cli_judges_a_real_and_a_fake_clip_with_the_released_detector(tmp_path: Path, capsys) -> None:
    fake = sorted(FAKE_CLIP.glob("*.mp4"))[0]
    out = tmp_path / "verdicts.json"
    assert cli.main(["predict", str(REAL_CLIP), str(fake), "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert Path(payload["model"]).resolve() == DETECTOR.resolve()  # the default without --model
    assert payload["weights_sha256"] == load_detector(DETECTOR).meta.weights_sha256
    rows = {Path(r["video_path"]).name: r for r in payload["videos"]}
    real, fake_row = rows[REAL_CLIP.name], rows[fake.name]
    for row in (real, fake_row):
        assert row["verdict"] in ("fake", "real", "uncertain") and row["n_faces"] >= 8
    assert fake_row["prob_fake"] > real["prob_fake"]
    printed = capsys.readouterr()
    assert "MODEL_CARD.md" in printed.err + printed.out  # the model line says where its card is


@pytest.mark.slow
def test_released_detector_is_a_registry_artifact_fetchable_by_name(tmp_path: Path) -> None:
    # A clone as a team member gets it, with the version tag a release registers (GTO's format).
    repo_root = RELEASE.parent
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo_root), str(clone)], check=True)
    if not (clone / "release" / "detector.pt").is_file():
        pytest.skip("release/detector.pt is not committed in this checkout's HEAD")
    git_id = ["-c", "user.email=ci@example.invalid", "-c", "user.name=ci"]
    subprocess.run(["git", *git_id, "tag", "-a", "detector@v0.0.1", "-m", "Registering artifact detector version v0.0.1"],
                   cwd=clone, check=True)
    from dvc.repo import Repo

    with Repo(str(clone)) as repo:
        artifact = repo.artifacts.read()["dvc.yaml"]["detector"]
    assert artifact.type == "model" and artifact.path == "release/detector.pt"
    out = tmp_path / "fetched.pt"
    dvc = Path(sys.executable).with_name("dvc")
    run = subprocess.run([str(dvc), "artifacts", "get", str(clone), "detector", "-o", str(out)],
                         cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == (clone / "release" / "detector.pt").read_bytes()
