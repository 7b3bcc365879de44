"""Complete params for tests: a section of the repository's params.yaml, with overrides.

The params dataclasses have no defaults (params.yaml is the one source of every setting),
so a test that needs, say, crop settings with ``detect_every=1`` takes the committed section
and changes that key alone::

    full(CropParams, detect_every=1)
    full(TrainParams, sbi=full(SbiParams, enabled=True), val_perturb=("blur",))
    params_file(tmp_path / "params.yaml", train={"epochs": 2, "augment": {"jpeg_prob": 0.0}})
"""

from __future__ import annotations

import copy
import dataclasses
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import yaml

from deepfake_detector.core.config import from_mapping, read_params, to_dict
from deepfake_detector.faces.blend import BlendParams
from deepfake_detector.faces.detection import CropParams
from deepfake_detector.model.autoencoder import AutoencoderParams
from deepfake_detector.model.sbi import SbiParams
from deepfake_detector.model.train import TrainParams
from deepfake_detector.model.transforms import AugmentParams
from deepfake_detector.pipeline.calibrate import CalibrateParams
from deepfake_detector.pipeline.extract_frames import ExtractParams
from deepfake_detector.pipeline.gradcam import GradcamParams
from deepfake_detector.pipeline.ingest import IngestParams
from deepfake_detector.pipeline.make_sample import SampleParams
from deepfake_detector.pipeline.predict_videos import PredictParams
from deepfake_detector.scoring.aggregate import AggregateParams
from deepfake_detector.verdicts.calibration import ExplainParams

T = TypeVar("T")

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"

# Where each params dataclass lives in params.yaml (dotted path of its section).
SECTION_OF: dict[type, str] = {
    SampleParams: "sample", IngestParams: "ingest", ExtractParams: "extract_frames", CropParams: "crop_faces",
    AutoencoderParams: "autoencoder",
    TrainParams: "train", AugmentParams: "train.augment", SbiParams: "train.sbi", BlendParams: "train.sbi.blend",
    CalibrateParams: "calibrate", AggregateParams: "calibrate.aggregate", ExplainParams: "calibrate.explain",
    PredictParams: "predict_videos",
    GradcamParams: "gradcam",
}


@cache
def _repo_params() -> dict[str, Any]:
    return read_params(REPO_PARAMS)


def section(dotted: str) -> dict[str, Any]:
    """A copy of the committed params.yaml's section ``dotted`` (e.g. ``train.sbi``)."""
    data: Any = _repo_params()
    for part in dotted.split("."):
        data = data[part]
    return copy.deepcopy(data)


def _plain(value: Any) -> Any:
    """Params dataclasses as mappings, tuples as lists (what YAML would have given)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied; a mapping (or params dataclass) given for a
    mapping key is merged key by key, anything else replaces the value."""
    out = dict(base)
    for key, value in overrides.items():
        value = _plain(value)
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def full(cls: type[T], **overrides: Any) -> T:
    """``cls`` built from its committed params.yaml section with ``overrides`` applied."""
    where = SECTION_OF[cls]
    return from_mapping(cls, merged(section(where), overrides), where)


def crop_settings(**overrides: Any) -> dict[str, Any]:
    """What crop_faces records in faces.parquet: the committed crop_faces section (with overrides)."""
    return to_dict(full(CropParams, **overrides))


def params_file(path: Path, **sections: dict[str, Any]) -> Path:
    """Write a complete params file: the committed params.yaml with each given section's keys
    overridden (merged key by key, see :func:`merged`)."""
    data = merged(copy.deepcopy(_repo_params()), sections)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
