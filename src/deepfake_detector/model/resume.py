"""Per-epoch resume states, shared by the train and autoencoder stages.

A long run on 2 CPU cores may outlive a session, so both training loops save their state
after every epoch next to their output (scratch, not a DVC output) and a rerun resumes
there. A state is used only when it was written by the same run: same format and the same
fingerprint (what the result depends on: params, input digests). States are read with
``torch.load(..., weights_only=True)``: tensors and plain Python types only, never
pickled code, and written atomically: a kill mid-write leaves the previous epoch's whole.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)


def resume_path(out: Path) -> Path:
    """Where the per-epoch state of the run writing ``out`` is kept: ``<out>.resume.pt``."""
    return out.with_name(out.name + ".resume.pt")


def file_digest(path: Path) -> dict[str, Any]:
    """Size and SHA-256 of a file's content."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return {"bytes": Path(path).stat().st_size, "sha256": h.hexdigest()}


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def fingerprint_changes(old: Any, new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two fingerprints (e.g. ``config.lr``)."""
    a, b = _flatten(old), _flatten(new)
    missing = object()
    return sorted(k for k in a.keys() | b.keys() if a.get(k, missing) != b.get(k, missing))


def read_state(path: Path, fmt: str, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The state stored at ``path`` if it belongs to this run; None (the reason logged) if not.

    Args:
        path: The resume state (a missing file is no state, silently).
        fmt: The ``format`` the state must carry.
        fingerprint: The running run's fingerprint; the stored one must equal it.
    """
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        logger.warning("%s: unreadable resume state (%s); starting fresh", path, exc)
        return None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        logger.warning("%s: not a resume state of this version; starting fresh", path)
        return None
    changed = fingerprint_changes(payload.get("fingerprint"), fingerprint)
    if changed:
        logger.info("%s: written for another recipe or data (changed: %s); starting fresh", path, ", ".join(changed))
        return None
    return payload


def write_state(path: Path, fmt: str, payload: dict[str, Any]) -> None:
    """Save ``payload`` (with its ``format``) to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder, then rename: a kill mid-write leaves the previous epoch's state whole.
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        torch.save({"format": fmt, **payload}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
