"""Grad-CAM explanations: region sanity, no side effects, faithfulness math, reports, stage."""

from __future__ import annotations

import gc
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from deepfake_detector import records
from deepfake_detector.core.config import ConfigError
from deepfake_detector.explanations.explain import (
    build_explanation,
    cam_mass_share,
    explain_crops,
    face_window,
    mask_in_crop,
    select_frames,
)
from deepfake_detector.media.imaging import crop_face, crop_window, cut_window, encode_image
from deepfake_detector.media.shards import ShardWriter, shard_name
from deepfake_detector.model.network import CheckpointMeta, build_model, weights_hash
from deepfake_detector.pipeline.gradcam import GradcamParams
from deepfake_detector.stages import gradcam as gradcam_stage
from deepfake_detector.verdicts.calibration import ExplainParams
from full_params import crop_settings, full, params_file
from test_calibrate import make_calibration
from test_predict import save_detector

INPUT = 64  # ResNet-18 layer4 is 2x2 here: coarse, but the code path is the real one


class RegionNet(nn.Module):
    """Looks only at one quadrant of its input: everything else is zeroed before the convs.

    No conv bias, so activations outside the quadrant are zero (up to a 1-px conv spill);
    positive head weights make every channel push the logit up.
    """

    def __init__(self, quadrant: tuple[slice, slice], size: int = INPUT) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), nn.AvgPool2d(4))
        self.fc = nn.Linear(8, 1)
        with torch.no_grad():
            self.fc.weight.uniform_(0.5, 1.0)
        window = torch.zeros(1, 1, size, size)
        window[..., quadrant[0], quadrant[1]] = 1.0
        self.register_buffer("window", window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.features(x * self.window)  # (B, 8, S/4, S/4)
        return self.fc(a.mean(dim=(2, 3)))  # (B, 1)


def _meta(size: int = INPUT) -> CheckpointMeta:
    return CheckpointMeta(arch="resnet18", init="random", input_size=size)


def _crops(n: int, size: int = 48, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    model, _ = build_model("resnet18", init="random")
    return model.eval()


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


H, W = 64, 64
QUADRANTS = {
    "top_right": (slice(0, H // 2), slice(W // 2, W)),
    "bottom_left": (slice(H // 2, H), slice(0, W // 2)),
}


@pytest.mark.parametrize("name", sorted(QUADRANTS))
@pytest.mark.parametrize("detach_head", [True, False])
def test_cam_peaks_in_the_region_the_model_looks_at(name: str, detach_head: bool) -> None:
    torch.manual_seed(1)
    quadrant = QUADRANTS[name]
    model = RegionNet(quadrant).eval()
    cams = explain_crops(model, _meta(), _crops(4), target_layer=model.features, detach_head=detach_head)
    assert cams.shape == (4, H, W)
    inside = np.zeros((H, W), bool)
    inside[quadrant] = True
    for cam in cams:
        peak = np.unravel_index(np.argmax(cam), cam.shape)
        assert inside[peak], f"CAM peaks at {peak}, outside the {name} quadrant"
        assert cam[inside].mean() > 5 * cam[~inside].mean()


def test_target_is_the_raw_fake_logit(resnet: nn.Module) -> None:
    out = torch.tensor([[2.5], [-3.0]])
    # How BaseCAM applies targets: one per image, on that image's (1,) output row.
    assert [float(ClassifierOutputTarget(0)(o)) for o in out] == [2.5, -3.0]
    # The default target layer is the architecture's last block before pooling.
    crops = _crops(3)
    default = explain_crops(resnet, _meta(), crops)
    explicit = explain_crops(resnet, _meta(), crops, target_layer=resnet.layer4[-1])
    np.testing.assert_allclose(default, explicit, atol=1e-6)


def test_detached_head_gives_the_same_maps(resnet: nn.Module) -> None:
    crops = _crops(3, seed=3)
    fast = explain_crops(resnet, _meta(), crops, batch_size=2, detach_head=True)
    full = explain_crops(resnet, _meta(), crops, batch_size=2, detach_head=False)
    np.testing.assert_allclose(fast, full, atol=1e-5)


@pytest.mark.parametrize("detach_head", [True, False])
def test_explaining_leaves_weights_grads_mode_and_hooks_as_they_were(resnet: nn.Module, detach_head: bool) -> None:
    before = weights_hash(resnet.state_dict())
    assert _hooks(resnet) == 0
    explain_crops(resnet, _meta(), _crops(3), detach_head=detach_head)
    assert weights_hash(resnet.state_dict()) == before
    assert _hooks(resnet) == 0
    assert all(p.grad is None for p in resnet.parameters())
    assert not resnet.training
    resnet.train()  # BaseCAM calls model.eval(); the caller's mode must come back
    try:
        explain_crops(resnet, _meta(), _crops(2), detach_head=detach_head)
        assert resnet.training
    finally:
        resnet.eval()


def _live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))  # type(): no __class__ lookups


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * 4096 / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc for RSS")
def test_memory_stays_flat_over_many_videos(resnet: nn.Module, tmp_path: Path) -> None:
    faces, crops = _video_faces(6, seed=5)
    params = full(ExplainParams, top_k=1, batch_size=4)
    for i in range(2):  # warm-up: allocator pools, matplotlib font cache
        build_explanation(resnet, _meta(), _verdict(f"w{i}"), faces, crops, None, tmp_path / f"w{i}", params)
    start, tensors = _rss_mb(), _live_tensors()
    for i in range(6):
        build_explanation(resnet, _meta(), _verdict(f"v{i}"), faces, crops, None, tmp_path / f"v{i}", params)
    assert _live_tensors() <= tensors  # nothing (activations, gradients, outputs) is kept per video
    grown = _rss_mb() - start
    # A retained autograd graph or pyplot figure per video would add several MB each.
    assert grown < 20, f"RSS grew {grown:.1f} MB over 6 videos"
    assert _hooks(resnet) == 0 and all(p.grad is None for p in resnet.parameters())


# ----------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("box", [(40.2, 35.7, 80.9, 90.1), (-12.0, 5.0, 30.0, 41.0), (70.0, 60.0, 118.5, 99.0)])
@pytest.mark.parametrize("margin", [0.0, 0.3])
@pytest.mark.parametrize("size", [24, 48, 160])
def test_cutting_at_the_window_is_the_crop(box: tuple[float, float, float, float], margin: float, size: int) -> None:
    frame = np.random.default_rng(0).integers(0, 256, (100, 120, 3), dtype=np.uint8)
    np.testing.assert_array_equal(cut_window(frame, crop_window(box, margin), size), crop_face(frame, box, margin, size))


def test_face_window_is_the_recorded_window() -> None:
    row = next(pd.DataFrame([{"x1": 40.0, "y1": 40.0, "x2": 80.0, "y2": 80.0, "crop_left": 5, "crop_top": 7,
                              "crop_side": 99}]).itertuples())
    assert face_window(row) == (5, 7, 99)


def test_mask_lands_in_crop_coordinates() -> None:
    window = (30, 30, 60)  # box (40, 40, 80, 80) with margin 0.25
    square = np.array([[40, 40], [79, 40], [79, 79], [40, 79]])
    mask = mask_in_crop(square, (120, 150), window, 60)
    expected = np.zeros((60, 60), bool)
    expected[10:50, 10:50] = True
    np.testing.assert_array_equal(mask, expected)
    # Scaled to another crop size the region keeps its share of the crop.
    assert mask_in_crop(square, (120, 150), window, 120).mean() == pytest.approx(expected.mean(), abs=0.01)


def test_faithfulness_share_against_mask_area() -> None:
    mask = np.zeros((40, 40), bool)
    mask[5:25, 10:30] = True
    area = mask.mean()
    assert cam_mass_share(np.ones((40, 40)), mask) == pytest.approx(area)  # uniform map = area share
    inside = np.where(mask, 1.0, 0.0)
    assert cam_mass_share(inside, mask) == pytest.approx(1.0)
    mostly = np.where(mask, 1.0, 0.05)
    assert area < cam_mass_share(mostly, mask) < 1.0
    assert cam_mass_share(np.where(mask, 0.0, 1.0), mask) == 0.0
    assert np.isnan(cam_mass_share(np.zeros((40, 40)), mask))


# ----------------------------------------------------------------------------- selection / params


def test_select_frames_high_and_low_are_disjoint_and_ordered() -> None:
    faces = pd.DataFrame({
        "frame_index": [0, 0, 3, 6, 9, 12],
        "face_index": [0, 1, 0, 0, 0, 0],
        "prob_fake": [0.2, 0.95, 0.5, 0.1, 0.7, 0.3],
    })
    sel = select_frames(faces, 2)
    assert sel["group"].tolist() == ["high", "high", "low", "low"]
    assert sel["frame_index"].tolist() == [0, 9, 6, 12]
    assert sel.loc[0, "face_index"] == 1 and sel.loc[0, "row"] == 1  # the frame's most suspicious face
    short = select_frames(faces.iloc[:3], 3)  # two frames only: no frame in both groups
    assert sorted(short["frame_index"]) == [0, 3] and short["frame_index"].is_unique


def test_params_validate() -> None:
    assert full(GradcamParams, split="val").split == "val"
    with pytest.raises(ConfigError, match="gradcam.top_k"):  # the detector's now (calibrate.explain)
        full(GradcamParams, top_k=2)
    with pytest.raises(ConfigError, match="split"):
        full(GradcamParams, split="dev")
    assert full(ExplainParams, top_k=2).top_k == 2
    with pytest.raises(ConfigError, match="calibrate.explain.topk"):
        full(ExplainParams, topk=2)
    with pytest.raises(ConfigError, match="alpha"):
        full(ExplainParams, alpha=1.5)


# ----------------------------------------------------------------------------- one video


def _verdict(video_id: str, verdict: str = "fake", prob: float = 0.8) -> pd.Series:
    return pd.Series({
        "video_id": video_id, "video_path": f"{video_id}.mp4", "true_label": "fake", "split": "test",
        "verdict": verdict, "reason": "", "prob_fake": prob, "threshold": 0.5, "aggregation": "mean",
        "n_frames_sampled": 6, "n_frames_with_face": 6, "n_faces": 6,
    })


def _video_faces(n: int, seed: int = 0, size: int = 48) -> tuple[pd.DataFrame, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=n)
    left, top, side = crop_window((10.0, 10.0, 40.0, 40.0), 0.3)
    faces = pd.DataFrame({
        "video_id": "v", "frame_index": np.arange(n) * 5, "face_index": 0, "x1": 10.0, "y1": 10.0, "x2": 40.0, "y2": 40.0,
        "det_prob": 0.99, "crop_left": left, "crop_top": top, "crop_side": side,
        "logit": logits, "prob_fake": 1 / (1 + np.exp(-logits)),
    })
    return faces, _crops(n, size, seed)


def _assert_self_contained(html: str) -> None:
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower() and "@font-face" not in html and "@import" not in html
    for src in re.findall(r'src="([^"]*)"', html):
        assert src.startswith("data:image/"), src  # every image embedded
    for href in re.findall(r'href="([^"]*)"', html):
        assert not re.match(r"[a-z]+:", href) and not href.startswith("/"), href  # links stay relative


def test_explain_video_without_frames(resnet: nn.Module, tmp_path: Path) -> None:
    faces, crops = _video_faces(5)
    out = tmp_path / "v1"
    report = build_explanation(resnet, _meta(), _verdict("v1"), faces, crops, None, out, full(ExplainParams, top_k=2)).report
    assert report == out / "report.html"
    html = report.read_text()
    _assert_self_contained(html)
    assert "fake" in html and "data:image/png;base64," in html and "no full frames were given" in html
    montage = cv2.imread(str(out / "montage.png"))
    assert montage is not None and montage.shape[1] == 2 * 48  # top_k tiles per row
    assert not list(out.glob("frame_*"))
    with pytest.raises(ValueError, match="2 crops"):
        build_explanation(resnet, _meta(), _verdict("v1"), faces, crops[:2], None, out, full(ExplainParams))
    with pytest.raises(ValueError, match="crop_side"):
        build_explanation(resnet, _meta(), _verdict("v1"), faces.drop(columns=["crop_side"]), crops, None, out,
                          full(ExplainParams))


def test_explain_video_with_the_cli_verdict_and_frames(resnet: nn.Module, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    frames = {i * 3: rng.integers(0, 256, (90, 120, 3), dtype=np.uint8) for i in range(4)}
    boxes = {fi: (30.0 + fi, 20.0, 70.0 + fi, 62.0) for fi in frames}
    crops = [crop_face(frames[fi], boxes[fi], 0.3, 48) for fi in frames]
    windows = [crop_window(boxes[fi], 0.3) for fi in frames]
    logits = rng.normal(size=len(frames))
    faces = pd.DataFrame({"video_id": "clip.mp4", "frame_index": list(frames), "face_index": 0,
                          **{k: [boxes[fi][i] for fi in frames] for i, k in enumerate(("x1", "y1", "x2", "y2"))},
                          "det_prob": 0.99, **{k: [w[i] for w in windows] for i, k in enumerate(records.CROP_WINDOW_COLUMNS)},
                          "logit": logits, "prob_fake": 1 / (1 + np.exp(-logits))})
    verdict = records.VideoVerdict(video_id="clip.mp4", video_path="clip.mp4", true_label=None, split=None,
                                   verdict="uncertain", reason="0.52 is within 0.05 of 0.50", prob_fake=0.52,
                                   threshold=0.5, aggregation="mean", n_frames_sampled=4, n_frames_with_face=4, n_faces=4)
    report = build_explanation(resnet, _meta(), verdict, faces, crops, frames, tmp_path / "clip",
                               full(ExplainParams, top_k=2)).report
    html = report.read_text()
    _assert_self_contained(html)
    assert "uncertain" in html and "within 0.05" in html and "unknown" in html  # true label None
    assert "layer4[-1]" in html  # the method names the architecture's target layer
    overlays = sorted((tmp_path / "clip").glob("frame_*.jpg"))
    assert len(overlays) == 4 and cv2.imread(str(overlays[0])).shape[:2] == (90, 120)
    # A window that is not the one the crops were cut at: caught against the frames, never drawn.
    shifted = faces.assign(crop_left=faces["crop_left"] + 9)
    report = build_explanation(resnet, _meta(), verdict, shifted, crops, frames, tmp_path / "wrong",
                               full(ExplainParams, top_k=2)).report
    assert "the crops do not match their frames" in report.read_text()
    assert not list((tmp_path / "wrong").glob("frame_*.jpg"))


# ----------------------------------------------------------------------------- the stage

FRAME = 96
CROP = 48
MARGIN = 0.3


def _box(i: int, f: int) -> tuple[float, float, float, float]:
    return (28.0 + f, 26.0 + i, 62.0 + f, 66.0 + i)


def _make_stage_set(root: Path, top_k: int = 2) -> dict[str, Path]:
    """Five test videos (2 fake with masks, 2 real, 1 no face) with frames, crops, faces,
    predictions and masks, all consistent with crop_face's geometry, and a detector that
    explains ``top_k`` frames each way."""
    rng = np.random.default_rng(0)
    sample = root / "sample"
    sample.mkdir(parents=True)
    manifest, preds, faces, frames_rows, masks = [], [], [], [], []
    with ShardWriter(root / "frames" / shard_name("frames", 0)) as fw, \
            ShardWriter(root / "crops" / shard_name("crops", 0)) as cw:
        for i in range(5):
            vid = f"v{i}"
            label = "fake" if i % 2 else "real"
            no_face = i == 4
            path = sample / f"{vid}.mp4"
            manifest.append({"video_id": vid, "path": str(path), "label": label, "split": "test", "group": vid,
                             "source": "synthetic", "manipulation": "sbi" if label == "fake" else "original",
                             "status": "ok", "reason": ""})
            verdict = "no_face" if no_face else label
            preds.append({"video_path": str(path), "true_label": label, "pred_class": "" if no_face else label,
                          "prob_fake": np.nan if no_face else (0.8 if label == "fake" else 0.2),
                          "prob_real": np.nan if no_face else (0.2 if label == "fake" else 0.8), "video_id": vid,
                          "verdict": verdict, "reason": "no face in 4 sampled frames" if no_face else "",
                          "n_frames_sampled": 4, "n_frames_with_face": 0 if no_face else 4,
                          "n_faces": 0 if no_face else 4, "aggregation": "mean", "threshold": 0.5, "split": "test"})
            for f in range(4):
                frame = cv2.GaussianBlur(rng.integers(0, 256, (FRAME, FRAME, 3), dtype=np.uint8), (5, 5), 0)
                fmember = f"{vid}/{f:06d}.png"
                fw.add(fmember, encode_image(frame))
                frames_rows.append({"video_id": vid, "frame_index": f, "timestamp_s": f / 10, "width": FRAME,
                                    "height": FRAME, "shard": shard_name("frames", 0), "member": fmember})
                if no_face:
                    continue
                box = _box(i, f)
                member = f"{vid}/{f:06d}_00.png"
                cw.add(member, encode_image(crop_face(frame, box, MARGIN, CROP)))
                left, top, side = crop_window(box, MARGIN)
                faces.append({"video_id": vid, "frame_index": f, "face_index": 0, "x1": box[0], "y1": box[1],
                              "x2": box[2], "y2": box[3], "det_prob": 0.99, "landmarks": [0.0] * 10,
                              "crop_left": left, "crop_top": top, "crop_side": side,
                              "shard": shard_name("crops", 0), "member": member})
                if label == "fake":
                    x1, y1, x2, y2 = (int(v) for v in box)
                    poly = [[x1 + 4, y1 + 4], [x2 - 4, y1 + 4], [x2 - 4, y2 - 12], [x1 + 4, y2 - 12]]
                    masks.append({"file": f"{vid}.mp4", "frame_index": f, "polygon": json.dumps(poly)})
    records.write_manifest(pd.DataFrame(manifest), root / "manifest.csv")
    records.write_predictions(pd.DataFrame(preds), root / "video_predictions.csv")
    records.write_faces(faces, root / "faces.parquet", crop_settings())
    scores = pd.DataFrame(faces)[records.FACE_KEY].assign(split="test", logit=rng.normal(size=len(faces)))
    records.write_face_scores(scores, root / "face_scores.parquet")
    records.write_frames(pd.DataFrame(frames_rows), root / "frames.csv")
    pd.DataFrame(masks).to_csv(sample / "masks.csv", index=False)
    explain = full(ExplainParams, top_k=top_k, batch_size=4)
    save_detector(root / "detector.pt", make_calibration(explain=explain), input_size=INPUT)
    return {"root": root, "masks": sample / "masks.csv"}


def _stage_args(root: Path, params: Path, masks: Path | None) -> list[str]:
    args = ["--params", str(params), "--detector", str(root / "detector.pt"), "--manifest", str(root / "manifest.csv"),
            "--predictions", str(root / "video_predictions.csv"), "--faces", str(root / "faces.parquet"),
            "--scores", str(root / "face_scores.parquet"), "--crops-dir", str(root / "crops"), "--frames-dir",
            str(root / "frames"),
            "--frames-table", str(root / "frames.csv"), "--out-dir", str(root / "gradcam"),
            "--metrics", str(root / "gradcam_metrics.json"), "--details", str(root / "gradcam_details.json")]
    return args + (["--masks", str(masks)] if masks else [])


def _params(root: Path, **gradcam: object) -> Path:
    section = {"split": "test", "max_videos": 3}
    return params_file(root / "params.yaml", gradcam={**section, **gradcam}, train={"bogus": "other sections are not read"})


def test_stage_writes_reports_index_and_metrics(tmp_path: Path) -> None:
    d = _make_stage_set(tmp_path)
    root = d["root"]
    gradcam_stage.main(_stage_args(root, _params(root), d["masks"]))
    out = root / "gradcam"
    metrics = json.loads((root / "gradcam_details.json").read_text())
    # The metrics file (what `dvc metrics show` lists) holds the headline faithfulness figures only.
    headline = json.loads((root / "gradcam_metrics.json").read_text())
    assert headline == {"faithfulness": {k: metrics["faithfulness"][k] for k in
                                         ("mean_cam_share_in_mask", "mean_mask_area_share", "mean_lift")}}
    # Balanced then by id: fake v1, real v0, fake v3; v2 is left for max_videos, v4 has no face.
    assert sorted(metrics["per_video"]) == ["v0", "v1", "v3"]
    assert metrics["videos"] == {"in_split": 5, "explainable": 4, "selected": 3, "explained": 3, "failed": 0,
                                 "not_explainable": {"no_face": 1}}
    fa = metrics["faithfulness"]
    assert fa["videos_with_mask"] == 2 and fa["videos_without_mask"] == 1 and fa["faces"] == 8
    assert 0 < fa["mean_mask_area_share"] < 1 and 0 <= fa["mean_cam_share_in_mask"] <= 1
    assert metrics["per_video"]["v0"]["cam_share_in_mask"] is None
    assert "no manipulation mask" in metrics["per_video"]["v0"]["faithfulness_note"]
    for vid in ("v0", "v1", "v3"):
        folder = out / vid
        montage = cv2.imread(str(folder / "montage.png"))
        assert montage is not None and montage.shape[1] == 2 * CROP
        overlays = sorted(folder.glob("frame_*.jpg"))
        assert len(overlays) == 4  # 2 high + 2 low frames, each on its full frame
        assert cv2.imread(str(overlays[0])).shape[:2] == (FRAME, FRAME)
        html = (folder / "report.html").read_text()
        _assert_self_contained(html)
        assert metrics["per_video"][vid]["verdict"] in html and "data:image/png;base64," in html
        assert 'href="frame_' in html and 'href="../index.html"' in html
    index = (out / "index.html").read_text()
    _assert_self_contained(index)
    for vid in ("v0", "v1", "v3"):
        assert f'href="{vid}/report.html"' in index
    assert "v2" in index and "max_videos" in index
    assert "v4" in index and "no face in 4 sampled frames" in index
    assert not list(out.glob("v2")) and not list(out.glob("v4"))


def test_stage_without_masks(tmp_path: Path) -> None:
    d = _make_stage_set(tmp_path)
    root = d["root"]
    gradcam_stage.main(_stage_args(root, _params(root, max_videos=1), None))
    metrics = json.loads((root / "gradcam_details.json").read_text())
    assert json.loads((root / "gradcam_metrics.json").read_text()) == {
        "faithfulness": {"mean_cam_share_in_mask": None, "mean_mask_area_share": None, "mean_lift": None}}
    (vid,) = metrics["per_video"]
    assert metrics["faithfulness"]["videos_with_mask"] == 0 and metrics["faithfulness"]["masks_file"] is None
    assert "no manipulation mask" in metrics["per_video"][vid]["faithfulness_note"]
    assert len(list((root / "gradcam" / vid).glob("frame_*.jpg"))) == 4


def test_stage_reads_cached_scores_and_only_the_explained_crops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No crop is scored again, and only the crops of the explained frames are read."""
    from deepfake_detector.media.shards import ShardReader
    from deepfake_detector.model import engine
    from deepfake_detector.pipeline import gradcam

    d = _make_stage_set(tmp_path, top_k=1)  # the detector's explain settings rule, as for the CLI
    root = d["root"]

    def no_scoring(*args, **kwargs):
        raise AssertionError("the gradcam stage must not score crops: they are in face_scores.parquet")

    monkeypatch.setattr(engine, "predict_logits", no_scoring)
    read: list[str] = []
    real_read_image = ShardReader.read_image

    def counting(self, shard, member):
        read.append(f"{self.root.name}/{member}")
        return real_read_image(self, shard, member)

    monkeypatch.setattr(gradcam.ShardReader, "read_image", counting)
    gradcam_stage.main(_stage_args(root, _params(root, max_videos=2), d["masks"]))
    crops_read = [r for r in read if r.startswith("crops/")]
    # 2 videos x (1 high + 1 low frame): 4 crops, not the 16 crops of the explained videos' faces.
    assert len(crops_read) == 4 and len(set(crops_read)) == 4
    scores = records.read_face_scores(root / "face_scores.parquet").set_index(records.FACE_KEY)["logit"]
    metrics = json.loads((root / "gradcam_details.json").read_text())
    assert len(metrics["per_video"]) == 2 and len(scores) == 16
