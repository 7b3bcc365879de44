"""A stage's two metric files: the headline that ``dvc metrics show`` lists, and every figure.

``evaluate``, ``predict_videos`` and ``gradcam`` each declare a metrics file (a handful of
headline numbers, so ``dvc metrics show`` and ``dvc metrics diff`` stay readable) and a details
file (a plain, versioned output with every figure, the headline included).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

# Section -> the keys of that section that are headline figures.
HeadlineKeys = Mapping[str, tuple[str, ...]]


def headline(metrics: Mapping[str, Any], keys: HeadlineKeys) -> dict[str, Any]:
    """The ``keys`` subset of a stage's full metrics dict, in the same layout."""
    return {section: {key: metrics[section][key] for key in names} for section, names in keys.items()}


def write_metric_files(metrics: Mapping[str, Any], keys: HeadlineKeys, metrics_out: Path, details_out: Path) -> None:
    """Write the headline figures to ``metrics_out`` and every figure to ``details_out`` (sorted JSON).

    Args:
        metrics: Every figure the stage computed, by section.
        keys: Which figures are headline ones.
        metrics_out: The stage's declared metrics file.
        details_out: The stage's details file.
    """
    for path, data in ((metrics_out, headline(metrics, keys)), (details_out, metrics)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
