"""train / calibrate / evaluate on a tiny synthetic crop set (no MTCNN, no network)."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from deepfake_detector import records
from deepfake_detector.core.config import to_dict
from deepfake_detector.media.imaging import encode_image
from deepfake_detector.media.shards import ShardWriter, shard_name
from deepfake_detector.model import train as train_mod
from deepfake_detector.model.network import CheckpointError, CheckpointMeta, build_model, load_model, save_checkpoint
from deepfake_detector.pipeline import evaluate, metric_files
from deepfake_detector.pipeline.extract_frames import ExtractParams
from deepfake_detector.scoring.aggregate import video_scores
from deepfake_detector.stages import calibrate as calibrate_stage
from deepfake_detector.stages import evaluate as evaluate_stage
from deepfake_detector.stages import train as train_stage
from deepfake_detector.verdicts.calibration import load_detector
from full_params import crop_settings, full, params_file

TINY_TRAIN = {
    "init": "random", "input_size": 32, "epochs": 2, "batch_size": 8, "lr": 1e-3, "patience": 2,
    "precision": "fp32", "augment": {"jpeg_prob": 0.0, "blur_prob": 0.0},
}


def make_crop_set(root: Path, n_videos: int = 18, frames: int = 4, size: int = 48) -> dict[str, Path]:
    """Manifest + faces.parquet + crop shards; fakes carry a bright patch the model can learn."""
    rng = np.random.default_rng(0)
    splits = ["train"] * 10 + ["val"] * 4 + ["test"] * 4
    rows, faces, report = [], [], []
    crops_dir = root / "crops"
    with ShardWriter(crops_dir / shard_name("crops", 0)) as w:
        for i in range(n_videos):
            label = "fake" if i % 2 else "real"
            vid = f"v{i:02d}"
            split = splits[i]
            # the last test video has no face: it must be counted, not dropped
            status = records.NO_FACE if i == n_videos - 1 else records.OK
            rows.append({"video_id": vid, "path": f"{vid}.mp4", "label": label, "split": split, "group": f"g{i // 2}",
                         "source": "synthetic", "manipulation": "patch" if label == "fake" else "original", "status": "ok",
                         "reason": ""})
            report.append({"video_id": vid, "label": label, "split": split, "status": status,
                           "reason": "" if status == "ok" else "no face",
                           "frames_sampled": frames, "frames_with_face": 0 if status != "ok" else frames,
                           "faces_kept": 0 if status != "ok" else frames})
            if status != records.OK:
                continue
            for f in range(frames):
                img = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
                if label == "fake":
                    img[size // 4: size // 2, size // 4: size // 2] = 250
                member = f"{vid}/{f:06d}_00.png"
                w.add(member, encode_image(img))
                faces.append({"video_id": vid, "frame_index": f, "face_index": 0, "x1": 0.0, "y1": 0.0, "x2": 10.0, "y2": 10.0,
                              "det_prob": 0.99, "landmarks": [0.0] * 10, "crop_left": 0, "crop_top": 0, "crop_side": size,
                              "shard": shard_name("crops", 0), "member": member})
    # groups g0..g8 pair videos (2i, 2i+1): make sure pairs never straddle splits in this fixture
    manifest = pd.DataFrame(rows)
    records.write_csv(manifest, root / "manifest.csv", records.MANIFEST_COLUMNS)
    records.write_faces(faces, root / "faces.parquet", crop_settings())
    records.write_csv(pd.DataFrame(report), root / "detection_report.csv", records.DETECTION_REPORT_COLUMNS)
    return {"manifest": root / "manifest.csv", "faces": root / "faces.parquet", "crops": crops_dir,
            "report": root / "detection_report.csv"}


# Not the committed values, so the detector is seen to carry params.yaml's.
TINY_EXPLAIN = {"top_k": 2, "batch_size": 4, "alpha": 0.25}


def write_params(path: Path, train: dict, **sections: dict) -> Path:
    """The committed params.yaml with these train keys (and other sections' keys) changed."""
    return params_file(path, train=train, **sections)


def calibrate_args(d: dict[str, Path], root: Path, params: Path, model: Path) -> list[str]:
    return ["--params", str(params), "--model", str(model), "--manifest", str(d["manifest"]), "--faces", str(d["faces"]),
            "--crops-dir", str(d["crops"]), "--detector-out", str(root / "detector.pt"),
            "--scores-out", str(root / "face_scores.parquet"), "--report", str(root / "calibration.json")]


def train_args(d: dict[str, Path], root: Path, params: Path) -> list[str]:
    return ["--params", str(params), "--manifest", str(d["manifest"]), "--faces", str(d["faces"]), "--crops-dir", str(d["crops"]),
            "--model-out", str(root / "model.pt"), "--live-dir", str(root / "live")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train")
    d = make_crop_set(root)
    params = write_params(root / "params.yaml", TINY_TRAIN, calibrate={"explain": TINY_EXPLAIN})
    train_stage.main(train_args(d, root, params))
    calibrate_stage.main(calibrate_args(d, root, params, root / "model.pt"))
    return {**d, "root": root, "model": root / "model.pt", "detector": root / "detector.pt",
            "scores": root / "face_scores.parquet"}


def test_checkpoint_describes_itself_and_loads_weights_only(trained: dict[str, Path]) -> None:
    raw = torch.load(trained["model"], map_location="cpu", weights_only=True)
    for key in ("model", "arch", "init", "input_size", "mean", "std", "label_map", "epoch", "val_metrics",
                "weights_sha256", "content_sha256", "config", "calibration"):
        assert key in raw, key
    assert raw["label_map"] == {"real": 0, "fake": 1}
    assert raw["init"] == "random" and raw["input_size"] == 32
    assert raw["calibration"] is None  # training does not calibrate; the calibrate stage does
    model, meta = load_model(trained["model"])
    assert not model.training and meta.weights_sha256 == raw["weights_sha256"]
    live = json.loads((trained["root"] / "live" / "metrics.json").read_text())
    assert live["init_used"] == "random" and "best_epoch" in live and "threshold" not in live
    with pytest.raises(CheckpointError, match="without calibration"):
        load_detector(trained["model"])


def test_calibrate_makes_a_detector_from_the_same_weights(trained: dict[str, Path]) -> None:
    detector = load_detector(trained["detector"])
    _, meta = load_model(trained["model"])
    cal = detector.calibration
    assert detector.meta.weights_sha256 == meta.weights_sha256 == cal.weights_sha256
    # How the scored crops were made, recorded: frames from params.yaml, crops from faces.parquet.
    assert cal.frames_per_video == full(ExtractParams).frames_per_video
    assert to_dict(cal.crop) == records.read_crop_settings(trained["faces"]) == crop_settings()
    # How its verdicts are explained (the CLI and the web demo read it here): params.yaml's.
    assert to_dict(cal.explain) == TINY_EXPLAIN
    assert 0.0 <= cal.threshold <= 1.0 and cal.aggregation in ("mean", "mean_logit", "confident", "max_face_mean")
    scores = records.read_face_scores(trained["scores"])
    faces = records.read_faces(trained["faces"])
    # Every face of every split scored exactly once.
    assert len(scores) == len(faces) and not scores.duplicated(records.FACE_KEY).any()
    assert set(scores["split"]) == {"train", "val", "test"}
    report = json.loads((trained["root"] / "calibration.json").read_text())
    assert report["calibration"] == cal.to_dict() and set(report["aggregations"]) == {"mean", "mean_logit", "confident",
                                                                                      "max_face_mean"}


def test_edited_checkpoint_settings_are_refused(trained: dict[str, Path], tmp_path: Path) -> None:
    """The hash covers what inference uses, not only the weights."""
    for key, value in (("input_size", 64), ("calibration", {"threshold": 0.01})):
        payload = torch.load(trained["detector"], weights_only=True)
        payload[key] = value if key != "calibration" else {**payload["calibration"], **value}
        edited = tmp_path / f"edited_{key}.pt"
        torch.save(payload, edited)
        with pytest.raises(CheckpointError, match="content_sha256"):
            load_model(edited)


def test_no_test_or_val_video_reaches_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = make_crop_set(tmp_path)
    seen: list[list[str]] = []

    class SpyDataset(train_mod.CropDataset):
        def __init__(self, rows, crops_dir, transform, **kwargs):
            super().__init__(rows, crops_dir, transform, **kwargs)
            seen.append(list(rows["video_id"]))

    monkeypatch.setattr(train_mod, "CropDataset", SpyDataset)
    train_stage.main(train_args(d, tmp_path, write_params(tmp_path / "p.yaml", {**TINY_TRAIN, "epochs": 1})))
    manifest = records.read_manifest(d["manifest"])
    train_videos = set(seen[0])  # the first dataset built is the training set
    held_out = manifest[manifest["split"] != "train"]
    assert train_videos and train_videos.isdisjoint(held_out["video_id"])
    train_groups = set(manifest.set_index("video_id").loc[sorted(train_videos), "group"])
    assert train_groups.isdisjoint(set(manifest.loc[manifest["split"] == "test", "group"]))


def test_arbitrary_pickle_is_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps({"model": Evil()}))
    with pytest.raises(CheckpointError, match="not a deepfake-detector checkpoint"):
        load_model(bad)
    assert not (tmp_path / "pwned").exists()
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="format tag"):
        load_model(plain)


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    model, _ = build_model("resnet18", "random")
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, CheckpointMeta(arch="resnet18", init="random", input_size=32))
    payload = torch.load(path, weights_only=True)
    payload["model"]["fc.bias"] += 1.0
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="sha256"):
        load_model(path)


def test_imagenet_unavailable_falls_back_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.models import ResNet18_Weights

    from deepfake_detector.model import network as model_mod

    def offline(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1, "get_state_dict", offline)
    m, used = model_mod.build_model("resnet18", "imagenet")
    assert used == "random (imagenet unavailable)" and m.fc.out_features == 1
    with pytest.raises(model_mod.PretrainedUnavailable):
        model_mod.build_model("resnet18", "imagenet", require_pretrained=True)


def test_evaluate_counts_unscored_videos(trained: dict[str, Path]) -> None:
    root = trained["root"]
    common = ["--detector", str(trained["detector"]), "--manifest", str(trained["manifest"]),
              "--scores", str(trained["scores"]), "--detection-report", str(trained["report"]),
              "--plots-dir", str(root / "plots")]
    evaluate_stage.main([*common, "--metrics", str(root / "metrics.json"), "--details", str(root / "eval_details.json")])
    m = json.loads((root / "eval_details.json").read_text())
    # The metrics file (what `dvc metrics show` lists) holds the headline figures alone, as in the details.
    headline = json.loads((root / "metrics.json").read_text())
    assert {s: sorted(v) for s, v in headline.items()} == {s: sorted(k) for s, k in evaluate.HEADLINE.items()}
    assert headline == metric_files.headline(m, evaluate.HEADLINE)
    # Both files are declared outputs: a command without --details is a usage error (argparse: exit 2).
    with pytest.raises(SystemExit) as exit_info:
        evaluate_stage.main([*common, "--metrics", str(root / "other_metrics.json")])
    assert exit_info.value.code == 2 and not (root / "other_metrics.json").exists()
    cal = load_detector(trained["detector"]).calibration
    # Judged with the detector's own calibration, not with defaults.
    assert m["checkpoint"]["threshold"] == cal.threshold and m["checkpoint"]["aggregation"] == cal.aggregation
    assert m["video"]["threshold"] == cal.threshold
    cov = m["coverage"]
    assert cov["test_videos"] == 4 and cov["scored"] == 3 and cov["no_face"] == 1
    assert m["video"]["n"] == 3 and m["frame"]["n"] == 12
    assert sum(map(sum, m["video"]["confusion"])) == 3
    conf = pd.read_csv(root / "plots" / "confusion.csv")
    assert len(conf) == 3 and set(conf.columns) == {"actual", "predicted"}
    assert "patch" in m["by_manipulation"]


def test_evaluate_verdicts_are_the_calibrations(trained: dict[str, Path], tmp_path: Path) -> None:
    """evaluate judges with Calibration.decide: a video within the abstain band is uncertain
    there too (accuracy_all_videos and the confusion plot), as in predict_videos and the CLI."""
    model, meta = load_model(trained["detector"])
    cal = load_detector(trained["detector"]).calibration
    rows = records.read_face_scores(trained["scores"])
    probs = video_scores(rows[rows["video_id"].isin(["v14", "v15", "v16"])], cal.aggregation, cal.aggregate)
    # The threshold on one test video's score: that video falls within the band.
    cal = dataclasses.replace(cal, threshold=float(probs.iloc[0]), abstain_band=1e-6)
    detector = tmp_path / "detector.pt"
    save_checkpoint(detector, model, dataclasses.replace(meta, calibration=cal.to_dict()))
    evaluate_stage.main(["--detector", str(detector), "--manifest", str(trained["manifest"]),
                         "--scores", str(trained["scores"]), "--detection-report", str(trained["report"]),
                         "--plots-dir", str(tmp_path / "plots"), "--metrics", str(tmp_path / "metrics.json"),
                         "--details", str(tmp_path / "details.json")])
    m = json.loads((tmp_path / "details.json").read_text())
    expected = [cal.decide(float(p), int((rows["video_id"] == v).sum()))[0] for v, p in probs.items()]
    assert expected[0] == records.UNCERTAIN
    conf = pd.read_csv(tmp_path / "plots" / "confusion.csv")
    assert conf["predicted"].tolist() == expected
    assert m["verdicts"][records.UNCERTAIN] == 1 and sum(m["verdicts"][v] for v in records.SCORED_VERDICTS) == 3
    truth = records.read_manifest(trained["manifest"]).set_index("video_id")["label"]
    right = sum(e == truth[v] for v, e in zip(probs.index, expected))
    assert m["coverage"]["accuracy_all_videos"] == right / 4  # the uncertain and the no-face video count as errors


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not found next to the interpreter")
    d = make_crop_set(tmp_path)
    params = write_params(tmp_path / "p.yaml", {**TINY_TRAIN, "epochs": 1})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", "-m", "deepfake_detector.stages.train", *train_args(d, tmp_path,
                                                                                                             params)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world_size=2" in proc.stderr
    model, meta = load_model(tmp_path / "model.pt")
    assert meta.epoch == 1 and meta.config["input_size"] == 32


@pytest.mark.slow
def test_torchrun_two_nodes_meet_at_a_rendezvous_endpoint(tmp_path: Path) -> None:
    """The multi-node launch of docs/scale-out.md (one torchrun per node, c10d rendezvous), with both
    "nodes" on this machine: 2 processes, gloo over loopback."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not found next to the interpreter")
    d = make_crop_set(tmp_path)
    params = write_params(tmp_path / "p.yaml", {**TINY_TRAIN, "epochs": 1})
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    launch = [torchrun, "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
              "--rdzv-id=test", "-m", "deepfake_detector.stages.train", *train_args(d, tmp_path, params)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(launch, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    logs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert all("world_size=2" in log for log in logs)
    model, meta = load_model(tmp_path / "model.pt")
    assert meta.epoch == 1
