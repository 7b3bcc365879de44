"""params.yaml: every section known, every mistake one clean line naming the file, key and rule."""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deepfake_detector.core import config
from deepfake_detector.core.config import ConfigError, load_section, read_params
from deepfake_detector.faces.detection import CropParams
from deepfake_detector.pipeline.extract_frames import ExtractParams
from deepfake_detector.stages import extract_frames
from full_params import SECTION_OF, full, params_file

REPO = Path(__file__).resolve().parents[1]
STAGES = REPO / "src" / "deepfake_detector" / "stages"


def test_the_registry_is_what_the_stages_read_and_params_yaml_holds() -> None:
    read = set()
    for path in STAGES.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "load_section":
                read.add(node.args[1].value)
    assert read == set(config.SECTIONS)
    assert list(yaml.safe_load((REPO / "params.yaml").read_text())) == list(config.SECTIONS)
    assert set(read_params(REPO / "release" / "params.yaml")) <= set(config.SECTIONS)  # no gradcam stage there


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # A misspelt section elsewhere in the file is an error even for a stage that reads another one.
        ("extract_frames: {frames_per_video: 4}\ncrop_face: {margin: 0.2}\n",
         "unknown section 'crop_face' (did you mean crop_faces?)"),
        ("extract_frame: {frames_per_video: 4}\n", "unknown section 'extract_frame' (did you mean extract_frames?)"),
        ("something_else: 1\n", "unknown section 'something_else'; known sections: sample, ingest"),
        ("extract_frames: 12\n", "section extract_frames must be a mapping of keys, got 12"),
        ("extract_frames: [1, 2]\n", "section extract_frames must be a mapping of keys, got [1, 2]"),
        ("extract_frames:\n  frames_per_video: 4\n  frames_per_video: 8\n",
         "line 3, column 3: key 'frames_per_video' appears twice"),
        ("extract_frames: {frames_per_video: 4\n", "not valid YAML (line 2, column 1"),
        ("extract_frames:\n\tframes_per_video: 4\n", "not valid YAML (line 2"),
        ("- just\n- a list\n", "top level must be a mapping of sections"),
        ("extract_frames: {frames_per_video: 0, image_format: png, videos_per_shard: 64}\n",
         "extract_frames: frames_per_video must be >= 1, got 0"),
        ("extract_frames: {frames_per_video: 4}\n", "missing key extract_frames.image_format"),
        ("extract_frames: {fps: 5}\n", "unknown key(s) extract_frames.fps; allowed: frames_per_video, image_format"),
    ],
)
def test_bad_params_name_the_file_and_the_rule(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_section(ExtractParams, "extract_frames", path)
    assert str(exc.value).startswith(f"{path}: ") and message in str(exc.value)


def test_non_utf8_params(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes("extract_frames:\n  # caf\xe9\n  frames_per_video: 4\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"p\.yaml: not UTF-8 text \(byte 0xe9 on line 2\)"):
        load_section(ExtractParams, "extract_frames", path)


def test_a_good_file_loads_and_an_empty_section_names_a_missing_key(tmp_path: Path) -> None:
    path = params_file(tmp_path / "p.yaml", crop_faces={"margin": 0.2})
    assert load_section(ExtractParams, "extract_frames", path) == full(ExtractParams)
    assert load_section(CropParams, "crop_faces", path) == full(CropParams, margin=0.2)
    with pytest.raises(ValueError, match="not a params section"):
        load_section(CropParams, "crop_face", path)
    path.write_text("extract_frames:\n")
    with pytest.raises(ConfigError, match=r"p\.yaml: missing key extract_frames\.frames_per_video"):
        load_section(ExtractParams, "extract_frames", path)


# Each stage's loader: (section, its params class). calibrate reads extract_frames too.
STAGE_LOADERS = [(section, cls) for cls, section in SECTION_OF.items() if "." not in section]


def _leaf_keys(data: dict, prefix: str = "") -> list[str]:
    """Dotted keys of a params section, nested mappings walked (a list is one key)."""
    out = []
    for key, value in data.items():
        out += _leaf_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return out


@pytest.mark.parametrize(("section", "key"), [
    (section, key) for section, _ in STAGE_LOADERS for key in _leaf_keys(read_params(REPO / "params.yaml")[section])
])
def test_every_key_of_params_yaml_is_required(tmp_path: Path, section: str, key: str) -> None:
    """No setting has a second source in the code: without the key, the stage's loader stops and names it."""
    data = read_params(REPO / "params.yaml")
    parent = data[section]
    *path, last = key.split(".")
    for part in path:
        parent = parent[part]
    del parent[last]
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(data, sort_keys=False))
    cls = dict(STAGE_LOADERS)[section]
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(params))}: missing key {re.escape(section)}\.{re.escape(key)} "):
        load_section(cls, section, params)


@pytest.mark.parametrize("params", ["params.yaml", "release/params.yaml"])
def test_both_params_files_hold_every_key_their_stages_read(params: str) -> None:
    data = read_params(REPO / params)
    for section, cls in STAGE_LOADERS:
        if section in data:
            load_section(cls, section, REPO / params)
    # The release has no make_sample or gradcam stage; it runs every other stage.
    assert set(data) == set(config.SECTIONS) - ({"sample", "gradcam"} if params.startswith("release") else set())


def test_params_dataclasses_have_no_defaults() -> None:
    for cls in SECTION_OF:
        defaults = [f.name for f in dataclasses.fields(cls)
                    if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING]
        assert not defaults, f"{cls.__name__}: {defaults} have a default; params.yaml is their one source"


@pytest.mark.parametrize("text", ["crop_face: {margin: 0.2}\n", "extract_frames: {frames_per_video: 4\n",
                                  "extract_frames: oops\n"])
def test_a_stage_prints_one_line_and_exits_1(tmp_path: Path, text: str, capsys: pytest.CaptureFixture) -> None:
    """Through the stage's entry point (as `dvc repro` runs it): one line, no traceback, exit 1."""
    args = _stage_args(tmp_path, text)
    with pytest.raises(SystemExit) as exc:
        extract_frames.main(args)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert exc.value.code == 1 and "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"extract_frames: error: {args[1]}: ")


def test_verbose_stage_error_has_the_traceback(tmp_path: Path) -> None:
    args = _stage_args(tmp_path, "crop_face: {margin: 0.2}\n")
    run = subprocess.run([sys.executable, "-m", "deepfake_detector.stages.extract_frames", *args, "--verbose"],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "Traceback" in run.stderr and "unknown section 'crop_face'" in run.stderr


def _stage_args(tmp_path: Path, params_text: str) -> list[str]:
    params = tmp_path / "params.yaml"
    params.write_text(params_text)
    return ["--params", str(params), "--manifest", str(tmp_path / "m.csv"), "--frames-dir", str(tmp_path / "f"),
            "--frames-table", str(tmp_path / "f.csv"), "--report", str(tmp_path / "r.csv")]
