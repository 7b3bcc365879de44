"""What a dataset adapter is given and returns: source and ingest params, entries, scans, problem kinds.

One interface for every dataset layout (:class:`Adapter`): a function from a
:class:`SourceParams` (and the :class:`IngestParams`) to a :class:`SourceScan`.
"""

from __future__ import annotations

import logging
import typing
from dataclasses import dataclass, field
from typing import Literal, Protocol

from ... import records
from ...core.errors import InputError

logger = logging.getLogger(__name__)

Format = Literal["sample", "folder", "ffpp", "dfdc", "celebdf"]
Label = Literal["real", "fake"]
Split = Literal["train", "val", "test"]

# Kinds of entries in the report's ``problems`` list.
MISSING = records.MISSING  # listed by an index but absent on disk (still a manifest row)
SKIPPED = "skipped"  # a file on disk that is not turned into a row
INVALID_RECORD = "invalid_record"  # one bad line/entry of an index file, skipped
INDEX_ERROR = "index_error"  # a whole index file unusable (e.g. malformed metadata.json)
LABEL_MISMATCH = "label_mismatch"  # two sources of truth disagree on a label
NOT_COVERED = "not_covered"  # FF++ video absent from the official split files
SPLIT_CONFLICT = "split_conflict"  # one group forced into several splits
ID_COLLISION = "id_collision"  # two files mapped to one video_id; a suffix was added


class IngestError(InputError):
    """A dataset or index file that cannot be ingested at all; the message names the file."""


@dataclass(frozen=True)
class SourceParams:
    """One dataset to ingest.

    Attributes:
        format: Layout adapter name.
        root: Dataset folder; relative paths are relative to the current directory.
        label: ``folder`` only: every video under ``root`` gets this label (single-class folder).
        split: Force every video of this source into one split (e.g. ``test``).
        groups: ``folder`` only: a CSV index (relative to ``root`` unless absolute) with a
            ``file`` column (path relative to ``root``) and ``group_column``; files that share
            a value land in the same split (e.g. ``identities.csv`` naming each clip's person).
            Default: ``<root>/groups.csv`` with a ``group`` column, when it exists.
        group_column: The column of ``groups`` that names the leakage group.
        limit: Use at most this many of the source's files: a deterministic sample keyed on
            ``ingest.seed`` and each file's path (so the same files whatever the listing order,
            and a larger limit keeps every file a smaller one kept). For running one recipe
            small (CI, demo) and large (the release) on a big photo folder. ``null``: all.
    """

    format: Format
    root: str
    label: Label | None = None
    split: Split | None = None
    groups: str | None = None
    group_column: str = "group"
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.format not in typing.get_args(Format):
            raise ValueError(f"source.format: {self.format!r} is not one of {typing.get_args(Format)}")
        if not self.root:
            raise ValueError("source.root must not be empty")
        if self.label is not None:
            if self.label not in records.LABELS:
                raise ValueError(f"source.label: {self.label!r} is not one of {tuple(records.LABELS)}")
            if self.format != "folder":
                raise ValueError(
                    f"source.label is only for format: folder (got format: {self.format}); "
                    "the other layouts carry their own labels"
                )
        if self.split is not None and self.split not in records.SPLITS:
            raise ValueError(f"source.split: {self.split!r} is not one of {records.SPLITS}")
        if (self.groups is not None or self.group_column != "group") and self.format != "folder":
            raise ValueError(f"source.groups/group_column are only for format: folder (got format: {self.format})")
        if not self.group_column:
            raise ValueError("source.group_column must not be empty")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"source.limit must be >= 1 (or null for all files), got {self.limit}")


@dataclass(frozen=True)
class IngestParams:
    """Params section ``ingest``.

    Attributes:
        sources: Datasets to combine into one manifest.
        val_fraction: Share of each source's (unforced) videos for validation.
        test_fraction: Share of each source's (unforced) videos for test.
        seed: Seed of the group shuffle.
        ffpp_splits: Folder with FF++'s official ``train.json``/``val.json``/``test.json``.
    """

    sources: tuple[SourceParams, ...]
    val_fraction: float
    test_fraction: float
    seed: int
    ffpp_splits: str | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.sources))
        if not self.sources:
            raise ValueError("sources: at least one source is required")
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{key} must be in [0, 1), got {value}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"val_fraction + test_fraction must be < 1 (train needs videos), "
                f"got {self.val_fraction} + {self.test_fraction}"
            )
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


@dataclass(frozen=True)
class VideoEntry:
    """One video found on disk or listed by an index, before ids, groups and splits.

    Attributes:
        rel_path: POSIX path relative to the source root.
        label: ``real`` or ``fake``.
        manipulation: ``original`` for real videos, else the method.
        links: Union-find nodes; the first is the video's own node, the others (originals,
            identities, declared groups) are joined to it.
        status: ``records.OK`` or ``records.MISSING``.
        reason: Why the status is not ok, else empty.
        local_id: Id inside the source (default: ``rel_path`` without extension).
        forced_split: Split imposed by the dataset (official split files, test lists).
        forced_by: What imposed ``forced_split``, for the report.
    """

    rel_path: str
    label: Label
    manipulation: str
    links: tuple[str, ...]
    status: str = records.OK
    reason: str = ""
    local_id: str | None = None
    forced_split: Split | None = None
    forced_by: str = ""


@dataclass
class SourceScan:
    """What an adapter found.

    Attributes:
        entries: One per video row (missing ones included).
        problems: Dicts with ``file``, ``kind``, ``reason``.
        random_test: False when the dataset has an official test set, so the remaining
            videos are split into train/val only.
    """

    entries: list[VideoEntry] = field(default_factory=list)
    problems: list[dict[str, str]] = field(default_factory=list)
    random_test: bool = True

    def problem(self, file: str, kind: str, reason: str) -> None:
        """Record one problem (logged at DEBUG: large datasets have thousands; counts are logged)."""
        logger.debug("%s: %s (%s)", file, reason, kind)
        self.problems.append({"file": file, "kind": kind, "reason": reason})


class Adapter(Protocol):
    """What every dataset adapter is: a function from one source (and the ingest params) to its scan.

    An adapter reads only file names and the dataset's own index files (nothing is decoded),
    and reports every file it does not turn into an entry. The adapters are registered by
    format name in :data:`deepfake_detector.pipeline.ingest.manifest.ADAPTERS`.
    """

    def __call__(self, source: SourceParams, params: IngestParams) -> SourceScan: ...
