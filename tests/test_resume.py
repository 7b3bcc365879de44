"""The train stage survives an interruption: per-epoch resume state, same weights bit for bit."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import yaml

from deepfake_detector.model import resume as resume_mod
from deepfake_detector.model import train as train_mod
from deepfake_detector.stages import train as train_stage
from full_params import full
from test_train_eval import TINY_TRAIN, make_crop_set, train_args, write_params

REPO = Path(__file__).resolve().parents[1]
RECIPE = {**TINY_TRAIN, "epochs": 3, "patience": 5, "threads": 1}


class Interrupted(Exception):
    """Stands in for a kill between epochs."""


def interrupt_after(monkeypatch: pytest.MonkeyPatch, epochs: int) -> list[int]:
    """Make the stage die when it starts epoch ``epochs + 1``; returns the epochs it began."""
    real = train_mod.train_one_epoch
    begun: list[int] = []

    def one_epoch(*args, **kwargs):
        begun.append(len(begun) + 1)
        if len(begun) > epochs:
            raise Interrupted
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_one_epoch", one_epoch)
    return begun


def spy_epochs(monkeypatch: pytest.MonkeyPatch, die_at: int | None = None) -> dict[int, dict[str, torch.Tensor]]:
    """Record the weights after each epoch as the stage saves its resume state.

    With ``die_at``, the stage dies while saving the state after that epoch (dvclive has
    logged the epoch by then). The final checkpoint holds the *best* epoch, which on this
    tiny set is often epoch 1 whatever happens later, so the test compares the last epoch.
    """
    real = train_mod.save_resume
    seen: dict[int, dict[str, torch.Tensor]] = {}

    def save(resume, st, rt, model, loop):
        if st.epoch == die_at:
            raise Interrupted
        seen[st.epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        real(resume, st, rt, model, loop)

    monkeypatch.setattr(train_mod, "save_resume", save)
    return seen


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def count_epochs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    real = train_mod.train_one_epoch
    descs: list[str] = []

    def one_epoch(*args, **kwargs):
        descs.append(kwargs["desc"])
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_one_epoch", one_epoch)
    return descs


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def metric_steps(root: Path) -> list[int]:
    rows = (root / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()[1:]
    return [int(row.split("\t")[-2]) for row in rows]


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_crop_set(tmp_path_factory.mktemp("crops"), n_videos=14, frames=3)


def test_interrupted_run_resumes_to_the_same_weights(crops: dict[str, Path], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    for root in (whole, cut):
        root.mkdir()
    with monkeypatch.context() as m:
        uninterrupted = spy_epochs(m)
        train_stage.main(train_args(crops, whole, write_params(whole / "params.yaml", RECIPE)))
    assert not resume_mod.resume_path(whole / "model.pt").exists()
    assert not same(uninterrupted[1], uninterrupted[3])  # the weights did move after epoch 1

    params = write_params(cut / "params.yaml", RECIPE)
    with monkeypatch.context() as m:
        spy_epochs(m, die_at=2)
        with pytest.raises(Interrupted):
            train_stage.main(train_args(crops, cut, params))
    assert metric_steps(cut) == [0, 1]
    state = resume_mod.resume_path(cut / "model.pt")
    assert state.is_file() and not (cut / "model.pt").exists()
    assert not list(cut.glob("*.tmp"))
    assert torch.load(state, weights_only=True)["epoch"] == 1

    descs = count_epochs(monkeypatch)
    resumed = spy_epochs(monkeypatch)
    with caplog.at_level(logging.INFO, logger="deepfake_detector.model.train"):
        train_stage.main(train_args(crops, cut, params))
    assert "resuming after epoch 1 of 3" in caplog.text
    assert descs == ["epoch 2/3", "epoch 3/3"]
    assert not state.exists()  # deleted once the checkpoint is saved
    assert sorted(resumed) == [2, 3] and all(same(uninterrupted[e], resumed[e]) for e in (2, 3))
    assert same(weights(whole / "model.pt"), weights(cut / "model.pt"))
    # dvclive went on at the right step: one row per epoch, epoch 2 (logged before the kill) not twice
    assert metric_steps(cut) == metric_steps(whole) == [0, 1, 2]


def test_changed_recipe_ignores_a_stale_resume_state(crops: dict[str, Path], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    recipe = {**RECIPE, "epochs": 2}
    with monkeypatch.context() as m:
        interrupt_after(m, 1)
        with pytest.raises(Interrupted):
            train_stage.main(train_args(crops, tmp_path, write_params(tmp_path / "params.yaml", recipe)))
    assert resume_mod.resume_path(tmp_path / "model.pt").is_file()

    descs = count_epochs(monkeypatch)
    params = write_params(tmp_path / "params.yaml", {**recipe, "lr": 2e-3})
    with caplog.at_level(logging.INFO, logger="deepfake_detector.model"):
        train_stage.main(train_args(crops, tmp_path, params))
    assert "changed: config.lr" in caplog.text and "starting fresh" in caplog.text
    assert "resuming" not in caplog.text
    assert descs == ["epoch 1/2", "epoch 2/2"]
    assert metric_steps(tmp_path) == [0, 1]


def test_fingerprint_sees_data_but_not_speed_params(crops: dict[str, Path], tmp_path: Path) -> None:
    rt = train_mod.setup_runtime("fp32")
    p = full(train_mod.TrainParams)

    def fp(params: train_mod.TrainParams, faces: Path) -> dict:
        return train_mod.run_fingerprint(params, rt, crops["manifest"], faces, None, tmp_path / "model.pt")

    base = fp(p, crops["faces"])
    assert resume_mod.fingerprint_changes(base, fp(full(train_mod.TrainParams, threads=1, num_workers=2), crops["faces"])) == []
    other = tmp_path / "faces.parquet"
    other.write_bytes(crops["faces"].read_bytes() + b"\0")
    assert resume_mod.fingerprint_changes(base, fp(p, other)) == ["faces.bytes", "faces.sha256"]


@pytest.mark.parametrize("dvc_yaml", ["dvc.yaml", "release/dvc.yaml"])
def test_dvc_keeps_the_logged_epochs_for_a_resumed_run(dvc_yaml: str) -> None:
    """`dvc repro` deletes a stage's outputs before it runs unless they persist: a resumed train
    stage would then find no history and log only the epochs after the break (it did, for v6)."""
    stage = yaml.safe_load((REPO / dvc_yaml).read_text())["stages"]["train"]
    cmd = " ".join(stage["cmd"]) if isinstance(stage["cmd"], list) else stage["cmd"]
    live_dir = cmd.split("--live-dir", 1)[1].split()[0]
    live_outs = {path: flags for kind in ("outs", "metrics", "plots") for out in stage.get(kind, [])
                 for path, flags in (out.items() if isinstance(out, dict) else [(out, {})])
                 if path.startswith(live_dir + "/")}
    assert live_outs, f"{dvc_yaml}: the train stage declares nothing under its --live-dir {live_dir}"
    kept = {path: bool((flags or {}).get("persist")) for path, flags in live_outs.items()}
    assert all(kept.values()), f"{dvc_yaml}: train's live outputs not persisted: {kept}"
