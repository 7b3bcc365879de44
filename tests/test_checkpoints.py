"""Broken, crafted and hostile checkpoints: a CheckpointError naming the file, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from deepfake_detector.interfaces import cli
from deepfake_detector.model.network import (
    CheckpointError,
    CheckpointMeta,
    build_model,
    load_model,
    save_checkpoint,
    weights_hash,
)
from test_calibrate import make_calibration
from test_predict import save_detector


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = tmp_path_factory.mktemp("ckpt") / "m.pt"
    save_checkpoint(path, build_model("resnet18", "random")[0], CheckpointMeta(arch="resnet18", init="random", input_size=32))
    return torch.load(path, weights_only=True)


def _resave(path: Path, payload: dict) -> Path:
    """Save a payload with its hashes recomputed, as a careless tool (or an attacker) would:
    the hash checks pass, so what follows them must hold on its own."""
    meta_keys = set(CheckpointMeta.__dataclass_fields__)
    state = payload.get("model")
    if isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()):
        payload["weights_sha256"] = weights_hash(state)
    try:
        payload["content_sha256"] = CheckpointMeta(**{k: payload[k] for k in meta_keys if k in payload}).content_hash()
    except TypeError:
        pass
    torch.save(payload, path)
    return path


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt: not a deepfake-detector checkpoint \(empty file"):
        load_model(path)


def test_truncated_file(tmp_path: Path, payload: dict) -> None:
    whole = _resave(tmp_path / "whole.pt", dict(payload))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt: not a deepfake-detector checkpoint \(unreadable, truncated") as exc:
        load_model(cut)
    assert "likelihood" not in str(exc.value)  # one sentence of the cause, not torch's guesses cut mid-sentence


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.pop("model"), "no weights"),
        (lambda p: p.update(model={"fc.weight": "not a tensor"}), "no weights"),
        (lambda p: p.pop("arch"), r"missing field\(s\) \['arch'\]"),
        (lambda p: p.update(input_size="160"), "field input_size has the wrong type"),
        (lambda p: p.update(arch="vit_b_16"), "unknown arch 'vit_b_16'"),
        (lambda p: p["model"].update({"fc.weight": torch.zeros(2, 512), "fc.bias": torch.zeros(2)}),
         "weights do not fit a resnet18"),
        (lambda p: p["model"].pop("layer4.1.bn2.bias"), "weights do not fit a resnet18"),
    ],
)
def test_tagged_but_unusable(tmp_path: Path, payload: dict, change, message: str) -> None:
    edited = {k: (dict(v) if isinstance(v, dict) else v) for k, v in payload.items()}
    change(edited)
    path = _resave(tmp_path / "edited.pt", edited)
    with pytest.raises(CheckpointError, match=message) as exc:
        load_model(path)
    assert str(exc.value).startswith(str(path))


def test_hostile_pickle_is_refused_without_advice_to_load_it_unsafely(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "deepfake-detector/checkpoint-v2", "model": Evil()}, path)
    with pytest.raises(CheckpointError) as exc:
        load_model(path)
    message = str(exc.value)
    assert "Do not load it with weights_only=False" in message and "arbitrary code" in message
    assert "will likely succeed" not in message and "Re-running" not in message
    assert "posix.system" in message or "GLOBAL" in message  # what was refused
    assert not marker.exists()


def test_cli_reports_a_bad_model_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    clip = tmp_path / "x.mp4"
    clip.write_bytes(b"")  # never judged: the model is checked first
    for name, data in (("empty.pt", b""), ("notzip.pt", b"\x80\x04K\x01.")):
        (tmp_path / name).write_bytes(data)
        assert cli.main(["predict", str(clip), "--model", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("deepfake-detector: error: --model: ") and name in err and len(err.strip().splitlines()) == 1
    # A calibrated detector whose calibration was edited (hash recomputed) to something invalid.
    det = save_detector(tmp_path / "det.pt", make_calibration())
    p = torch.load(det, weights_only=True)
    p["calibration"] = {**p["calibration"], "threshold": 7.0}
    _resave(det, p)
    from deepfake_detector.verdicts.calibration import load_detector

    with pytest.raises(CheckpointError, match="unusable calibration"):
        load_detector(det)
