"""Frame scores -> one score per video, by named strategies.

Each strategy is a small function of one video's face records: the frame index
and the fake logit of every kept face. Their cut-offs live in params
(:class:`AggregateParams`), never in the code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class AggregateParams:
    """Cut-offs of the ``confident`` strategy (DFDC-winner style).

    Attributes:
        confident_high: A face with p >= this is a confident fake.
        confident_low: A face with p <= this is a confident real.
        confident_high_share: Use the mean of confident fakes when they are at least this
            share of the faces...
        confident_high_min: ...and at least this many.
        confident_low_share: Else use the mean of confident reals when they are at least
            this share; else the plain mean.
    """

    confident_high: float
    confident_low: float
    confident_high_share: float
    confident_high_min: int
    confident_low_share: float

    def __post_init__(self) -> None:
        if not 0 <= self.confident_low < self.confident_high <= 1:
            raise ValueError("need 0 <= confident_low < confident_high <= 1")
        for name in ("confident_high_share", "confident_low_share"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1]")


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def agg_mean(frames: np.ndarray, logits: np.ndarray, p: AggregateParams) -> float:
    """Mean fake probability over all faces."""
    return float(sigmoid(logits).mean())


def agg_mean_logit(frames: np.ndarray, logits: np.ndarray, p: AggregateParams) -> float:
    """Probability of the mean logit (a geometric-mean-like vote, less swayed by one face)."""
    return float(sigmoid(np.mean(logits)))


def agg_confident(frames: np.ndarray, logits: np.ndarray, p: AggregateParams) -> float:
    """Mean of the confident faces when enough of them agree, else the plain mean.

    Deepfakes are often visible in only part of a video; when many faces are confidently
    fake, averaging them with the rest would dilute the evidence.
    """
    probs = sigmoid(logits)
    n = len(probs)
    high = probs[probs >= p.confident_high]
    if len(high) >= max(p.confident_high_min, p.confident_high_share * n):
        return float(high.mean())
    low = probs[probs <= p.confident_low]
    if len(low) >= p.confident_low_share * n:
        return float(low.mean())
    return float(probs.mean())


def agg_max_face_mean(frames: np.ndarray, logits: np.ndarray, p: AggregateParams) -> float:
    """Per frame the most suspicious face, then the mean over frames.

    With several people in a video, often only one face is manipulated.
    """
    per_frame = pd.Series(sigmoid(logits)).groupby(np.asarray(frames)).max()
    return float(per_frame.mean())


AGGREGATORS: dict[str, Callable[[np.ndarray, np.ndarray, AggregateParams], float]] = {
    "mean": agg_mean,
    "mean_logit": agg_mean_logit,
    "confident": agg_confident,
    "max_face_mean": agg_max_face_mean,
}


def video_scores(faces: pd.DataFrame, method: str, params: AggregateParams | None) -> pd.Series:
    """Aggregate per-face logits into one fake probability per video.

    Args:
        faces: Rows with ``video_id``, ``frame_index`` and ``logit`` (one row per face).
        method: A key of :data:`AGGREGATORS`.
        params: Cut-offs for ``confident`` (params ``calibrate.aggregate``); None for the
            strategies that have none.

    Returns:
        Series indexed by ``video_id`` (only videos with at least one face).

    Raises:
        ValueError: Unknown method, or ``confident`` without its cut-offs.
    """
    if method not in AGGREGATORS:
        raise ValueError(f"unknown aggregation {method!r}; choose one of {sorted(AGGREGATORS)}")
    if params is None and method == "confident":
        raise ValueError("the confident aggregation needs its cut-offs (params calibrate.aggregate)")
    fn = AGGREGATORS[method]
    scores = {
        vid: fn(g["frame_index"].to_numpy(), g["logit"].to_numpy(), params)
        for vid, g in faces.groupby("video_id", sort=True)
    }
    return pd.Series(scores, name="prob_fake", dtype=float)
