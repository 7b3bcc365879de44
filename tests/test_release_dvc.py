"""release/dvc.yaml is generated from dvc.yaml (tools/release_dvc.py), never edited by hand."""

from __future__ import annotations

from pathlib import Path

import yaml
from tools import release_dvc

REPO = Path(__file__).resolve().parents[1]


def test_committed_release_dvc_yaml_is_the_generated_one() -> None:
    """A dependency, param or flag changed in dvc.yaml changes the release's pipeline too."""
    assert (REPO / "release" / "dvc.yaml").read_text() == release_dvc.render(), "run `make release-dvc`"
    assert release_dvc.main(["--check"]) == 0


def test_a_change_in_dvc_yaml_reaches_the_release(tmp_path: Path) -> None:
    root = yaml.safe_load((REPO / "dvc.yaml").read_text())
    root["stages"]["calibrate"]["params"].append("calibrate.batch_size")
    root["stages"]["train"]["deps"].append("src/deepfake_detector/new_module.py")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(root, sort_keys=False))
    release = yaml.safe_load(release_dvc.render(tmp_path / "dvc.yaml"))["stages"]
    assert "calibrate.batch_size" in release["calibrate"]["params"]
    assert "../src/deepfake_detector/new_module.py" in release["train"]["deps"]
    assert "make_sample" not in release and "gradcam" not in release and "landmarks" in release
    assert release["calibrate"]["outs"][0] == {"detector.pt": {"cache": False}}
