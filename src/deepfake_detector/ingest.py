"""Ingest: list dataset videos into one manifest with labels, leakage groups and splits.

Each dataset layout has an adapter (``sample``, ``folder``, ``ffpp``, ``dfdc``, ``celebdf``)
that reads only file names and the dataset's own index files (no decoding) and returns
:class:`VideoEntry` records plus the problems it met. :func:`build_manifest` then

1. joins videos into leakage groups with union-find over the links each adapter gives
   (a fake and its originals; an identity where the layout names one),
2. applies forced splits (``SourceParams.split``, FF++ official splits, Celeb-DF's test list),
   where a group whose members are forced into different splits goes wholly to the
   highest-priority one (test > val > train) and the conflict is reported,
3. splits the remaining groups of each source by ``val_fraction``/``test_fraction``
   (:func:`split_groups`), so every split holds videos of every source,
4. checks that no group appears in two splits.

Every file an adapter does not turn into a row is reported with a reason; videos listed by
an index but absent on disk become rows with status ``missing``. An ingest that finds no
usable video at all (every index broken, no media in the folders, every listed file absent)
writes its report and fails with the reason, instead of a manifest that later stages trip over.

Example:
    >>> params = load_section(IngestParams, "ingest")  # doctest: +SKIP
    >>> manifest = ingest(params, Path("data/manifest.csv"), Path("outputs/ingest_report.json"))  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
import typing
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Literal, Mapping

import numpy as np
import pandas as pd

from . import config, records
from .errors import InputError
from .media import entry_problem, list_entries

logger = logging.getLogger(__name__)

Format = Literal["sample", "folder", "ffpp", "dfdc", "celebdf"]
Label = Literal["real", "fake"]
Split = Literal["train", "val", "test"]

# When forced splits disagree inside one group, the group follows the first of these:
# a video officially held out for testing must never be trained on.
SPLIT_PRIORITY: tuple[Split, ...] = ("test", "val", "train")

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


# --------------------------------------------------------------------------- helpers


def _given(source: SourceParams, rel: str) -> str:
    """The root as given joined with a relative path, with forward slashes (portable)."""
    return (PurePosixPath(source.root.replace("\\", "/")) / rel).as_posix()


def _list_files(source: SourceParams, scan: SourceScan) -> list[str]:
    """The regular files under a source's root, as sorted POSIX paths relative to it.

    Nothing is dropped silently: every other entry (a broken symlink, a symlink loop, a
    FIFO, ...) and every folder that cannot be listed is reported as skipped, with why.
    """
    root = Path(source.root)
    entries, unlisted = list_entries(root)
    for folder, reason in sorted(unlisted):
        scan.problem(_given(source, folder.relative_to(root).as_posix()), SKIPPED, reason)
    files = []
    for path in entries:
        rel = path.relative_to(root).as_posix()
        problem = entry_problem(path)
        if problem is None:
            files.append(rel)
        else:
            scan.problem(_given(source, rel), SKIPPED, problem)
    return sorted(files)


def _is_media(rel: str) -> bool:
    # Case-insensitive; images are accepted because a folder of stills is a valid (one-frame) input.
    return records.is_media_name(rel)


def _clean_rel(value: str) -> tuple[str | None, str]:
    """Normalise a relative path read from an index; return (path, "") or (None, why)."""
    value = value.strip().replace("\\", "/")
    if not value:
        return None, "empty file name"
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts:
        return None, f"path {value!r} is not inside the dataset root"
    return path.as_posix(), ""


def _safe_id(text: str) -> str:
    """Filesystem-safe id: shard members are named after video ids."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).lstrip(".") or "_"


def _default_local_id(rel: str) -> str:
    return PurePosixPath(rel).with_suffix("").as_posix().replace("/", "-")


def _read_csv_index(
    path: Path, shown: str, columns: tuple[str, ...], scan: SourceScan
) -> list[tuple[int, dict[str, str]]]:
    """Read a small CSV index; structural errors raise, bad lines are reported and skipped.

    Returns:
        ``(line_number, row)`` pairs with stripped values for ``columns``.

    Raises:
        IngestError: Unreadable/unparseable file or missing columns.
    """
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise IngestError(f"{shown}: empty file; expected header {','.join(columns)}")
            header = [h.strip() for h in header]
            missing = [c for c in columns if c not in header]
            if missing:
                raise IngestError(
                    f"{shown}: missing column(s) {missing}; expected {list(columns)}, found {header}"
                )
            rows = []
            for raw in reader:
                if not any(cell.strip() for cell in raw):
                    continue
                if len(raw) != len(header):
                    scan.problem(shown, INVALID_RECORD,
                                 f"line {reader.line_num}: {len(raw)} fields, expected {len(header)}")
                    continue
                cells = dict(zip(header, (c.strip() for c in raw)))
                rows.append((reader.line_num, {c: cells[c] for c in columns}))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise IngestError(f"{shown}: cannot read as UTF-8 CSV: {exc}") from exc
    return rows


def _read_json(path: Path, shown: str, kind: type, what: str) -> Any:
    """Load a JSON index file whose top level must be ``kind``.

    Raises:
        IngestError: Unreadable, not JSON, or the wrong top-level type (names ``shown``).
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IngestError(f"{shown}: not valid JSON: {exc}") from exc
    if not isinstance(data, kind):
        raise IngestError(f"{shown}: expected {what}")
    return data


def _parse_labels(
    rows: list[tuple[int, dict[str, str]]], shown: str, mapping: Mapping[str, Label]
) -> list[Label]:
    """Map each row's ``label`` through ``mapping`` (case-insensitive).

    Raises:
        IngestError: Naming the file and the first offending lines, on any unknown value.
    """
    labels: list[Label] = []
    bad: list[str] = []
    for line, row in rows:
        label = mapping.get(row["label"].lower())
        if label is None:
            bad.append(f"line {line}: {row['label']!r}")
        else:
            labels.append(label)
    if bad:
        raise IngestError(
            f"{shown}: unknown label value(s) ({'; '.join(bad[:5])}"
            f"{'; ...' if len(bad) > 5 else ''}); expected one of {sorted(mapping)}"
        )
    return labels


class _UnionFind:
    """Union-find over string nodes; a component's root is its smallest node (stable names)."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, node: str) -> str:
        self.parent.setdefault(node, node)
        root = node
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[node] != root:  # path compression
            self.parent[node], node = root, self.parent[node]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = sorted((ra, rb))
            self.parent[hi] = lo


# --------------------------------------------------------------------------- adapters


def scan_sample(source: SourceParams, params: IngestParams) -> SourceScan:
    """The embedded sample: ``<root>/labels.csv`` with ``file,label,manipulation,identity,origin``.

    Args:
        source: The source (``root`` holds ``labels.csv`` and the clips).
        params: Ingest params (unused; adapters share one signature).

    Returns:
        One entry per listed clip; groups follow ``origin`` links only. Unlisted media files
        are reported as skipped; other files (side tables such as ``masks.csv``) are ignored.

    Raises:
        IngestError: If ``labels.csv`` is absent, unparseable, lacks a column or has an
            unknown label.
    """
    root = Path(source.root)
    index = root / records.SAMPLE_LABELS_FILE
    shown = _given(source, records.SAMPLE_LABELS_FILE)
    if not index.is_file():
        raise IngestError(f"{shown}: not found; a sample source needs labels.csv (make_sample writes it)")
    scan = SourceScan()
    rows = _read_csv_index(index, shown, tuple(records.SAMPLE_LABEL_COLUMNS), scan)
    labels = _parse_labels(rows, shown, {"real": "real", "fake": "fake"})
    on_disk = set(_list_files(source, scan))
    seen: set[str] = set()
    for (line, row), label in zip(rows, labels):
        rel, why = _clean_rel(row["file"])
        if rel is None:
            scan.problem(shown, INVALID_RECORD, f"line {line}: {why}")
            continue
        if rel in seen:
            scan.problem(shown, INVALID_RECORD, f"line {line}: duplicate entry for {rel}")
            continue
        seen.add(rel)
        origins = []
        for origin in row["origin"].split(";"):
            if origin.strip():
                clean, why = _clean_rel(origin)
                if clean is None:
                    scan.problem(shown, INVALID_RECORD, f"line {line}: origin ignored: {why}")
                else:
                    origins.append(clean)
        # Group by origin links only, NOT by identity: the sample has two identities, each
        # shown in both real and swapped clips, so identity carries no label; grouping by it
        # would leave two groups and no room for a test split.
        status, reason = records.OK, ""
        if rel not in on_disk:
            status, reason = records.MISSING, f"listed in {shown} but not found"
        scan.entries.append(VideoEntry(
            rel_path=rel, label=label,
            manipulation="original" if label == "real" else (row["manipulation"] or "unknown"),
            links=(rel, *origins), status=status, reason=reason,
        ))
    # Only media files: the sample keeps side tables (e.g. masks.csv) next to its clips.
    for rel in sorted(r for r in on_disk - seen if _is_media(r)):
        scan.problem(_given(source, rel), SKIPPED, f"not listed in {shown}")
    return scan


def _groups_index(source: SourceParams) -> tuple[Path, str] | None:
    """The group index of a folder source and how to name it, or None when it has none.

    Raises:
        IngestError: If ``source.groups`` is set but the file does not exist.
    """
    if source.groups is None:
        path = Path(source.root) / "groups.csv"
        return (path, _given(source, "groups.csv")) if path.is_file() else None
    given = Path(source.groups)
    path = given if given.is_absolute() else Path(source.root) / given
    shown = str(given) if given.is_absolute() else _given(source, source.groups)
    if not path.is_file():
        raise IngestError(f"{shown}: group index not found (source.groups of {source.root})")
    return path, shown


def _read_groups_csv(source: SourceParams, scan: SourceScan) -> dict[str, str]:
    """File -> group of a folder source, from its group index (see :class:`SourceParams`)."""
    index = _groups_index(source)
    if index is None:
        return {}
    path, shown = index
    column = source.group_column
    groups: dict[str, str] = {}
    for line, row in _read_csv_index(path, shown, ("file", column), scan):
        rel, why = _clean_rel(row["file"])
        if rel is None or not row[column]:
            scan.problem(shown, INVALID_RECORD, f"line {line}: {why or f'empty {column}'}")
        elif rel in groups:
            scan.problem(shown, INVALID_RECORD, f"line {line}: duplicate entry for {rel}")
        else:
            groups[rel] = row[column]
    return groups


def scan_folder(source: SourceParams, params: IngestParams) -> SourceScan:
    """Plain folders: ``<root>/real/**`` and ``<root>/fake/**``, or all of ``root`` with ``label``.

    Each file is its own group unless a group index joins files: ``source.groups`` (e.g.
    ``identities.csv`` with ``group_column: identity``), else ``<root>/groups.csv``
    (``file,group``) when present. The index itself is not a video and is not reported.

    Args:
        source: The source; ``source.label`` makes ``root`` a single-class folder.
        params: Ingest params (unused).

    Returns:
        One entry per media file; other files are reported as skipped.

    Raises:
        IngestError: If neither ``real/`` nor ``fake/`` exists (and no ``label``), or if
            ``label`` is set while the opposite class folder exists (a likely mislabel).
    """
    root = Path(source.root)
    if source.label is None:
        if not any((root / c).is_dir() for c in records.LABELS):
            raise IngestError(
                f"{source.root}: a folder source needs real/ and/or fake/ subfolders, "
                "or label: real|fake for a single-class folder"
            )
    else:
        other = "fake" if source.label == "real" else "real"
        if (root / other).is_dir():
            raise IngestError(
                f"{source.root}: label: {source.label} is set but {_given(source, other)}/ exists; "
                "drop label: to read real/ and fake/, or point root at a single-class folder"
            )
    scan = SourceScan()
    groups = _read_groups_csv(source, scan)
    index = _groups_index(source)
    index_rel = None
    if index is not None and index[0].resolve().is_relative_to(root.resolve()):
        index_rel = index[0].resolve().relative_to(root.resolve()).as_posix()
    used: set[str] = set()
    for rel in _list_files(source, scan):
        if rel in ("groups.csv", index_rel):
            continue
        label: str | None = source.label
        if label is None:
            top = rel.split("/", 1)[0]
            if "/" not in rel or top not in records.LABELS:
                scan.problem(_given(source, rel), SKIPPED,
                             "not under real/ or fake/ (set label: for a single-class folder)")
                continue
            label = top
        if not _is_media(rel):
            suffix = PurePosixPath(rel).suffix
            scan.problem(_given(source, rel), SKIPPED,
                         f"not a video or image (extension {suffix or 'none'!r})")
            continue
        used.add(rel)
        links: tuple[str, ...] = (f"file:{rel}",)
        if rel in groups:
            links += (f"group:{groups[rel]}",)
        scan.entries.append(VideoEntry(
            rel_path=rel, label=typing.cast(Label, label),
            manipulation="original" if label == "real" else "unknown", links=links,
        ))
    for rel in sorted(set(groups) - used):
        scan.problem(index[1] if index else "", INVALID_RECORD, f"lists {rel}, which is not an ingested video")
    return scan


_FFPP_PAIR = re.compile(r"^(?P<target>[^_]+)_(?P<source>[^_]+)$")
# DeepFakeDetection: <target actor>_<source actor>__<scene>__<hash>
_FFPP_DFD = re.compile(r"^(?P<target>[^_]+)_(?P<source>[^_]+)__(?P<scene>.+)__(?P<hash>[^_]+)$")


def load_ffpp_splits(folder: str | Path) -> dict[str, Split]:
    """FF++ official split files: ``{train,val,test}.json``, each a list of ``[target, source]``.

    Args:
        folder: Folder holding the three JSON files.

    Returns:
        YouTube video id (e.g. ``"004"``) -> split.

    Raises:
        IngestError: A file is absent, not JSON, not a list of id pairs, or an id is in two splits.
    """
    mapping: dict[str, Split] = {}
    for split in records.SPLITS:
        path = Path(folder) / f"{split}.json"
        if not path.is_file():
            raise IngestError(f"ffpp_splits: {path} not found (expected train.json, val.json, test.json)")
        pairs = _read_json(path, str(path), list, "a list of [target, source] id pairs")
        for i, pair in enumerate(pairs):
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                raise IngestError(f"{path}: item {i} is {pair!r}, expected [target, source] string ids")
            for vid in pair:
                previous = mapping.setdefault(vid, typing.cast(Split, split))
                if previous != split:
                    raise IngestError(f"{path}: id {vid} is also in {previous}.json")
    return mapping


def scan_ffpp(source: SourceParams, params: IngestParams) -> SourceScan:
    """FaceForensics++: ``original_sequences/<youtube|actors>/<quality>/videos/<id>.mp4`` (real)
    and ``manipulated_sequences/<method>/<quality>/videos/<target>_<source>.mp4`` (fake).

    A fake joins the groups of both its target and its source originals (FF++'s official
    splits keep such pairs together); the same video at several qualities shares a group.
    DeepFakeDetection fakes (``<a>_<b>__<scene>__<hash>``) join the actor originals
    ``<a>__<scene>`` and ``<b>__<scene>``. With ``params.ffpp_splits``, YouTube videos take
    their official split; videos the split files do not cover are reported and split at random.

    Args:
        source: The source (``root`` is the FF++ folder).
        params: Ingest params (``ffpp_splits``).

    Returns:
        One entry per video; masks and files off the layout are reported as skipped.

    Raises:
        IngestError: If the official split files are unusable.
    """
    official = load_ffpp_splits(params.ffpp_splits) if params.ffpp_splits else None
    scan = SourceScan()
    expected = "<original|manipulated>_sequences/<kind>/<quality>/videos/<name>"
    for rel in _list_files(source, scan):
        shown = _given(source, rel)
        parts = PurePosixPath(rel).parts
        if len(parts) != 5 or parts[0] not in ("original_sequences", "manipulated_sequences") \
                or parts[3] != "videos":
            scan.problem(shown, SKIPPED, f"not in the FF++ layout {expected}")
            continue
        top, kind, quality, _, name = parts
        if quality == "masks":
            scan.problem(shown, SKIPPED, "manipulation mask, not a sample video")
            continue
        if not _is_media(rel):
            scan.problem(shown, SKIPPED, "not a video file")
            continue
        stem = PurePosixPath(name).stem
        local_id = f"{kind}-{quality}-{stem}"
        if top == "original_sequences":
            label, manipulation = "real", "original"
            links: tuple[str, ...] = (f"{kind}/{stem}",)
            official_ids = (stem,) if kind == "youtube" else ()
        elif kind == "DeepFakeDetection":
            match = _FFPP_DFD.match(stem)
            if match is None:
                scan.problem(shown, SKIPPED,
                             "DeepFakeDetection name does not match <target>_<source>__<scene>__<hash>")
                continue
            label, manipulation = "fake", kind
            scene = match["scene"]
            links = (f"{kind}/{stem}", f"actors/{match['target']}__{scene}",
                     f"actors/{match['source']}__{scene}")
            official_ids = ()
        else:
            match = _FFPP_PAIR.match(stem)
            if match is None:
                scan.problem(shown, SKIPPED, "name does not match <target>_<source>")
                continue
            label, manipulation = "fake", kind
            links = (f"{kind}/{stem}", f"youtube/{match['target']}", f"youtube/{match['source']}")
            official_ids = (match["target"], match["source"])
        forced: Split | None = None
        if official is not None:
            covered = [official[i] for i in official_ids if i in official]
            if covered:
                forced = covered[0]  # a disagreeing pair surfaces as a group conflict
            else:
                scan.problem(shown, NOT_COVERED,
                             f"not in {params.ffpp_splits}/{{train,val,test}}.json; split at random")
        scan.entries.append(VideoEntry(
            rel_path=rel, label=typing.cast(Label, label), manipulation=manipulation, links=links,
            local_id=local_id, forced_split=forced,
            forced_by="ffpp official splits" if forced else "",
        ))
    return scan


_DFDC_LABELS: dict[str, Label] = {"real": "real", "fake": "fake"}


def _read_dfdc_metadata(path: Path, shown: str) -> dict[str, tuple[Label, str | None]]:
    """Validate one DFDC ``metadata.json``; file name -> (label, original or None).

    Raises:
        IngestError: Bad JSON, wrong structure or an unknown label (message names the file).
    """
    data = _read_json(path, shown, dict, "an object mapping file names to entries")
    out: dict[str, tuple[Label, str | None]] = {}
    for name, entry in sorted(data.items()):
        if not isinstance(entry, dict) or not isinstance(entry.get("label"), str):
            raise IngestError(f"{shown}: entry {name!r} has no string 'label'")
        label = _DFDC_LABELS.get(entry["label"].lower())
        if label is None:
            raise IngestError(f"{shown}: entry {name!r} has unknown label {entry['label']!r}; "
                              "expected REAL or FAKE")
        original = entry.get("original")
        if original is not None and not isinstance(original, str):
            raise IngestError(f"{shown}: entry {name!r} has a non-string 'original' {original!r}")
        out[name] = (label, original or None)
    return out


def scan_dfdc(source: SourceParams, params: IngestParams) -> SourceScan:
    """DFDC: folders with ``metadata.json`` (``{"x.mp4": {"label": "FAKE", "original": ...}}``).

    ``metadata.json`` files are searched recursively. A fake is grouped with its original by
    file name (DFDC names are unique across parts). The metadata ``split`` field is ignored:
    it reads ``train`` for every video of DFDC's training parts. A malformed metadata.json is
    reported and its folder skipped; the other folders continue.

    Args:
        source: The source (``root`` holds the DFDC part folders).
        params: Ingest params (unused).

    Returns:
        One entry per listed video (absent ones with status ``missing``).

    Raises:
        IngestError: If no metadata.json exists under ``root``.
    """
    root = Path(source.root)
    scan = SourceScan()
    files = _list_files(source, scan)
    meta_files = [rel for rel in files if PurePosixPath(rel).name == "metadata.json"]
    if not meta_files:
        raise IngestError(f"{source.root}: no metadata.json found (DFDC layout expected)")
    on_disk = set(files)
    listed: set[str] = set()
    folder_state: dict[str, str] = {}  # folder -> why its unlisted files are skipped
    for meta_rel in meta_files:
        folder = PurePosixPath(meta_rel).parent
        shown = _given(source, meta_rel)
        try:
            entries = _read_dfdc_metadata(root / meta_rel, shown)
        except IngestError as exc:
            scan.problem(shown, INDEX_ERROR, f"{exc}; folder skipped")
            folder_state[folder.as_posix()] = f"{shown} is malformed"
            continue
        folder_state[folder.as_posix()] = f"not listed in {shown}"
        for name, (label, original) in entries.items():
            clean, why = _clean_rel(name)
            if clean is None:
                scan.problem(shown, INVALID_RECORD, f"entry {name!r}: {why}")
                continue
            rel = (folder / clean).as_posix()
            if rel in listed:
                scan.problem(shown, INVALID_RECORD, f"{rel} is listed twice")
                continue
            listed.add(rel)
            links: tuple[str, ...] = (PurePosixPath(clean).name,)
            if original:
                links += (PurePosixPath(original).name,)
            status, reason = records.OK, ""
            if rel not in on_disk:
                status, reason = records.MISSING, f"listed in {shown} but not found"
            scan.entries.append(VideoEntry(
                rel_path=rel, label=label, manipulation="original" if label == "real" else "dfdc",
                links=links, status=status, reason=reason,
            ))
    meta_set = set(meta_files)
    for rel in files:
        if rel in listed or rel in meta_set:
            continue
        parent = PurePosixPath(rel).parent.as_posix()
        why = folder_state.get(parent, "no metadata.json in its folder")
        scan.problem(_given(source, rel), SKIPPED, why)
    scan.entries.sort(key=lambda e: e.rel_path)
    return scan


_CELEB_REAL = re.compile(r"^(?P<id>id\d+)_(?P<num>\d+)$")
_CELEB_FAKE = re.compile(r"^(?P<target>id\d+)_(?P<source>id\d+)_(?P<num>\d+)$")
_CELEB_FOLDERS: dict[str, Label] = {"Celeb-real": "real", "YouTube-real": "real", "Celeb-synthesis": "fake"}
# Celeb-DF's List_of_testing_videos.txt marks REAL videos with 1 and synthesized ones with 0
# (the reverse of this project's fake=1), e.g. "1 YouTube-real/00170.mp4".
_CELEB_TEST_LABELS: dict[str, Label] = {"1": "real", "0": "fake"}


def _celeb_entry(rel: str) -> tuple[VideoEntry | None, str]:
    """Entry for a Celeb-DF path from its folder and name, or (None, why)."""
    parts = PurePosixPath(rel).parts
    if len(parts) != 2 or parts[0] not in _CELEB_FOLDERS:
        return None, f"not in {'/, '.join(_CELEB_FOLDERS)}/"
    if not _is_media(rel):
        return None, "not a video file"
    folder, stem = parts[0], PurePosixPath(rel).stem
    if folder == "YouTube-real":
        return VideoEntry(rel, "real", "original", (rel,)), ""  # identity unknown: own group
    if folder == "Celeb-real":
        match = _CELEB_REAL.match(stem)
        if match is None:
            return None, "name does not match idX_NNNN"
        return VideoEntry(rel, "real", "original", (rel, f"identity:{match['id']}")), ""
    match = _CELEB_FAKE.match(stem)
    if match is None:
        return None, "name does not match idX_idY_NNNN"
    # Target idX's video NNNN with idY's face: both people are in it, so both identities join.
    origin = f"Celeb-real/{match['target']}_{match['num']}{PurePosixPath(rel).suffix}"
    links = (rel, f"identity:{match['target']}", f"identity:{match['source']}", origin)
    return VideoEntry(rel, "fake", "celebdf", links), ""


_CELEB_TEST_LIST = "List_of_testing_videos.txt"


def _read_celeb_test_list(source: SourceParams, scan: SourceScan) -> dict[str, str]:
    """Celeb-DF's test list: path -> its label token; bad lines are counted problems.

    Raises:
        IngestError: If the list is not UTF-8 or holds a label other than 0/1.
    """
    shown = _given(source, _CELEB_TEST_LIST)
    try:
        lines = (Path(source.root) / _CELEB_TEST_LIST).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise IngestError(f"{shown}: cannot read as UTF-8 text: {exc}") from exc
    test_rels: dict[str, str] = {}
    bad_labels = []
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 2:
            scan.problem(shown, INVALID_RECORD, f"line {number}: expected '<0|1> <path>', got {line!r}")
            continue
        if tokens[0] not in _CELEB_TEST_LABELS:
            bad_labels.append(f"line {number}: {tokens[0]!r}")
            continue
        rel, why = _clean_rel(tokens[1])
        if rel is None:
            scan.problem(shown, INVALID_RECORD, f"line {number}: {why}")
        elif rel in test_rels:
            scan.problem(shown, INVALID_RECORD, f"line {number}: duplicate entry for {rel}")
        else:
            test_rels[rel] = tokens[0]
    if bad_labels:
        raise IngestError(f"{shown}: unknown label value(s) ({'; '.join(bad_labels[:5])}); "
                          "expected 1 (real) or 0 (fake)")
    return test_rels


def scan_celebdf(source: SourceParams, params: IngestParams) -> SourceScan:
    """Celeb-DF: ``Celeb-real/``, ``YouTube-real/``, ``Celeb-synthesis/`` and the test list.

    Groups are identities (a fake joins both of its identities). ``List_of_testing_videos.txt``
    (``<1 real | 0 fake> <path>``), when present, forces its videos into test and the rest is
    split into train/val only; a listed video absent on disk becomes a ``missing`` row.

    Args:
        source: The source (``root`` is the Celeb-DF folder).
        params: Ingest params (unused).

    Returns:
        One entry per video.

    Raises:
        IngestError: If the test list is not UTF-8 or holds a label other than 0/1.
    """
    root = Path(source.root)
    scan = SourceScan()
    test_name = _CELEB_TEST_LIST
    test_rels: dict[str, str] = {}  # path -> list label
    if (root / test_name).is_file():
        scan.random_test = False
        test_rels = _read_celeb_test_list(source, scan)
    on_disk = [rel for rel in _list_files(source, scan) if rel != test_name]
    for rel in sorted(set(on_disk) | set(test_rels)):
        entry, why = _celeb_entry(rel)
        shown = _given(source, rel)
        if entry is None:
            where = f"listed in {_given(source, test_name)} but " if rel in test_rels else ""
            scan.problem(shown, SKIPPED, f"{where}{why}")
            continue
        if rel in test_rels:
            listed = _CELEB_TEST_LABELS[test_rels[rel]]
            if listed != entry.label:
                scan.problem(shown, LABEL_MISMATCH,
                             f"{test_name} says {listed}, folder says {entry.label}; folder kept")
            status, reason = records.OK, ""
            if rel not in on_disk:
                status, reason = records.MISSING, f"listed in {_given(source, test_name)} but not found"
            entry = VideoEntry(entry.rel_path, entry.label, entry.manipulation, entry.links,
                               status=status, reason=reason, forced_split="test",
                               forced_by="celebdf test list")
        scan.entries.append(entry)
    return scan


# Dispatch by name (never through globals()).
ADAPTERS: dict[str, Callable[[SourceParams, IngestParams], SourceScan]] = {
    "sample": scan_sample,
    "folder": scan_folder,
    "ffpp": scan_ffpp,
    "dfdc": scan_dfdc,
    "celebdf": scan_celebdf,
}


# --------------------------------------------------------------------------- splits


def split_groups(
    group_sizes: Mapping[str, int], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, Split]:
    """Assign whole groups to splits so that each split's share of videos meets its fraction.

    Groups are sorted by id, shuffled with ``np.random.default_rng(seed)``, then each goes
    greedily to the split furthest below its target video count. When there are at least as
    many non-empty groups as splits with a positive fraction, every such split is made
    non-empty by moving the smallest group of the most over-filled split.

    Args:
        group_sizes: Group id -> number of videos (0 allowed, e.g. only missing videos).
        val_fraction: Target share of videos in val.
        test_fraction: Target share of videos in test.
        seed: Shuffle seed; the same inputs and seed give the same assignment.

    Returns:
        Group id -> split.
    """
    ids = sorted(group_sizes)
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    position = {g: i for i, g in enumerate(order)}
    fractions = {"test": test_fraction, "val": val_fraction, "train": 1.0 - val_fraction - test_fraction}
    active = [s for s in SPLIT_PRIORITY if fractions[s] > 0]
    total = sum(group_sizes.values())
    target = {s: fractions[s] * total for s in active}
    count = dict.fromkeys(active, 0)
    members: dict[str, list[str]] = {s: [] for s in active}
    for g in order:
        best = max(active, key=lambda s: target[s] - count[s])  # ties: test, val, train
        members[best].append(g)
        count[best] += group_sizes[g]
    nonempty = [g for g in ids if group_sizes[g] > 0]
    if len(nonempty) < len(active):
        if nonempty:
            logger.warning("only %d non-empty group(s) for %d splits: some split stays empty",
                           len(nonempty), len(active))
    else:
        for split in active:
            if count[split] > 0:
                continue
            donors = [s for s in active if sum(group_sizes[g] > 0 for g in members[s]) > 1]
            donor = max(donors, key=lambda s: count[s] - target[s])
            moved = min((g for g in members[donor] if group_sizes[g] > 0),
                        key=lambda g: (group_sizes[g], position[g]))
            members[donor].remove(moved)
            members[split].append(moved)
            count[donor] -= group_sizes[moved]
            count[split] += group_sizes[moved]
    return {g: typing.cast(Split, s) for s, gs in members.items() for g in gs}


def _source_names(sources: tuple[SourceParams, ...]) -> list[str]:
    """Prefix per source: the format name, numbered when a format is used more than once."""
    totals = Counter(s.format for s in sources)
    seen: Counter[str] = Counter()
    names = []
    for s in sources:
        seen[s.format] += 1
        names.append(s.format if totals[s.format] == 1 else f"{s.format}{seen[s.format]}")
    return names


def _leakage_groups(name: str, entries: list[VideoEntry]) -> list[str]:
    """Group id of each entry: union-find over its links, prefixed with the source name."""
    uf = _UnionFind()
    for entry in entries:
        uf.find(entry.links[0])
        for link in entry.links[1:]:
            uf.union(entry.links[0], link)
    # Name a group after its smallest original/identity node when it has one (e.g. the FF++
    # original "youtube/004" rather than the fake "NeuralTextures/004_982").
    fake_nodes = {e.links[0] for e in entries if e.label == "fake"}
    component_nodes: dict[str, list[str]] = defaultdict(list)
    for node in uf.parent:
        component_nodes[uf.find(node)].append(node)
    group_name = {root: min([n for n in nodes if n not in fake_nodes] or nodes)
                  for root, nodes in component_nodes.items()}
    return [f"{name}-{group_name[uf.find(e.links[0])]}" for e in entries]


def _unique_id(base: str, used: set[str], shown: str, problems: list[dict[str, str]]) -> str:
    """``base``, or ``base-2``, ``base-3``... when taken (a counted ID_COLLISION problem); marks it used."""
    video_id, k = base, 1
    while video_id in used:
        k += 1
        video_id = f"{base}-{k}"
    if k > 1:
        problems.append({"file": shown, "kind": ID_COLLISION, "reason": f"id {base} already used; this video is {video_id}"})
    used.add(video_id)
    return video_id


def _size_and_signature(source: SourceParams, entry: VideoEntry) -> tuple[str, str]:
    """The manifest's ``size_bytes`` and ``signature`` of a video on disk ("" when it is not)."""
    if entry.status != records.OK:
        return "", ""
    try:
        size, signature = records.file_signature(Path(source.root) / entry.rel_path)
    except OSError as exc:  # reported by extract_frames, which reads the file anyway
        logger.warning("%s: no content signature (%s)", _given(source, entry.rel_path), exc)
        return "", ""
    return str(size), signature


def _assign_source(
    name: str, source: SourceParams, scan: SourceScan, params: IngestParams
) -> tuple[list[dict[str, str]], dict[str, Any], list[dict[str, str]]]:
    """Ids, groups and splits for one source's entries.

    Returns:
        (manifest rows, summary dict, problems raised while assigning).
    """
    problems = [{"file": _given(source, e.rel_path), "kind": MISSING, "reason": e.reason}
                for e in scan.entries if e.status == records.MISSING]
    group_of = _leakage_groups(name, scan.entries)
    forced: dict[str, Counter[str]] = defaultdict(Counter)
    for entry, group in zip(scan.entries, group_of):
        split = source.split or entry.forced_split
        if split:
            forced[group][split] += 1
    group_split: dict[str, str] = {}
    pulled = 0
    for group, splits in sorted(forced.items()):
        chosen = next(s for s in SPLIT_PRIORITY if s in splits)
        group_split[group] = chosen
        if len(splits) > 1:
            reason = (f"group {group} is forced into {dict(sorted(splits.items()))} videos per split; "
                      f"the whole group goes to {chosen}")
            logger.warning(reason)
            # "file" names the group here: the conflict belongs to no single file.
            problems.append({"file": group, "kind": SPLIT_CONFLICT, "reason": reason})
    sizes: Counter[str] = Counter()
    for entry, group in zip(scan.entries, group_of):
        sizes[group] += entry.status == records.OK
        if group in group_split and not (source.split or entry.forced_split):
            pulled += 1
    free = {g: sizes[g] for g in sorted(set(group_of)) if g not in group_split}
    val, test = params.val_fraction, params.test_fraction
    if not scan.random_test:  # official test set: the rest keeps train:val at the set ratio
        val, test = val / (1.0 - test), 0.0
    if free:
        group_split.update(split_groups(free, val, test, params.seed))

    rows: list[dict[str, str]] = []
    used: set[str] = set()
    for entry, group in zip(scan.entries, group_of):
        video_id = _unique_id(f"{name}-{_safe_id(entry.local_id or _default_local_id(entry.rel_path))}", used,
                              _given(source, entry.rel_path), problems)
        size, signature = _size_and_signature(source, entry)
        rows.append({
            "video_id": video_id, "path": _given(source, entry.rel_path), "label": entry.label,
            "split": group_split[group], "group": group, "source": source.format,
            "manipulation": entry.manipulation, "status": entry.status, "reason": entry.reason,
            "size_bytes": size, "signature": signature,
        })
    kinds = Counter(p["kind"] for p in scan.problems)
    largest = max(sizes.values(), default=0)
    n_ok = sum(sizes.values())
    summary = {
        "format": source.format, "root": source.root,
        "videos": len(rows),
        "ok": n_ok,
        "real": sum(r["label"] == "real" for r in rows),
        "fake": sum(r["label"] == "fake" for r in rows),
        "missing": sum(r["status"] == records.MISSING for r in rows),
        "skipped": kinds[SKIPPED] + kinds[INVALID_RECORD],
        "index_errors": kinds[INDEX_ERROR],
        "groups": len(set(group_of)),
        "largest_group_fraction": round(largest / n_ok, 4) if n_ok else 0.0,
        "forced_videos": dict(sorted(Counter(
            "source split" if source.split else e.forced_by
            for e in scan.entries if source.split or e.forced_split).items())),
        "videos_following_a_forced_group": pulled,
        "splits": dict(sorted(Counter(r["split"] for r in rows).items())),
    }
    if n_ok and largest / n_ok > 0.5 and len(sizes) > 1:
        logger.warning("source %s: one leakage group holds %d of %d videos; splits will be lopsided",
                       name, largest, n_ok)
    return rows, summary, problems


def apply_limit(scan: SourceScan, limit: int | None, seed: int) -> int:
    """Keep at most ``limit`` of a scan's entries, chosen by a hash of (seed, path); in place.

    Ranking every file by its own hash (not by a shuffle of the listing) makes the sample
    independent of the listing order and nested: raising the limit only adds files.

    Returns:
        How many entries were left out (counted in the report, not dropped silently).
    """
    if limit is None or len(scan.entries) <= limit:
        return 0
    rank = sorted(scan.entries, key=lambda e: hashlib.sha256(f"{seed}/{e.rel_path}".encode()).hexdigest())
    keep = {id(e) for e in rank[:limit]}
    left_out = len(scan.entries) - limit
    scan.entries = [e for e in scan.entries if id(e) in keep]  # listing order kept
    return left_out


def leakage_check(manifest: pd.DataFrame) -> dict[str, Any]:
    """Count groups that appear in more than one split (must be 0).

    Args:
        manifest: Manifest with ``group`` and ``split`` columns.

    Returns:
        ``{"groups_in_multiple_splits": n, "groups": [...], "n_groups": total}``.
    """
    splits_per_group = manifest.groupby("group")["split"].nunique()
    leaking = sorted(splits_per_group[splits_per_group > 1].index)
    return {"groups_in_multiple_splits": len(leaking), "groups": leaking,
            "n_groups": int(splits_per_group.size)}


def build_manifest(params: IngestParams) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Scan every source and build the manifest and the report.

    Args:
        params: Ingest params.

    Returns:
        ``(manifest, report)``: the manifest has exactly ``records.MANIFEST_COLUMNS``.

    Raises:
        IngestError: A root is not a folder or an index file is unusable.
    """
    if params.ffpp_splits and not any(s.format == "ffpp" for s in params.sources):
        logger.warning("ffpp_splits is set but no source has format: ffpp; it is ignored")
    rows: list[dict[str, str]] = []
    problems: list[dict[str, str]] = []
    summaries: dict[str, Any] = {}
    for name, source in zip(_source_names(params.sources), params.sources):
        if not Path(source.root).is_dir():
            raise IngestError(f"source {name}: root {source.root} is not a folder")
        logger.info("scanning %s (%s)", source.root, source.format)
        scan = ADAPTERS[source.format](source, params)
        limited = apply_limit(scan, source.limit, params.seed)
        src_rows, summary, src_problems = _assign_source(name, source, scan, params)
        summary["not_used_by_limit"] = limited
        if limited:
            logger.info("source %s: limit %d: %d of %d files used", name, source.limit, len(scan.entries),
                        len(scan.entries) + limited)
        rows += src_rows
        summaries[name] = summary
        problems += [{"source": name, **p} for p in scan.problems + src_problems]
    manifest = pd.DataFrame(rows, columns=records.MANIFEST_COLUMNS)
    leak = leakage_check(manifest)

    def counts(column: str) -> dict[str, int]:
        return {str(k): int(v) for k, v in sorted(Counter(manifest[column]).items())}

    report = {
        "params": config.to_dict(params),
        "n_videos": len(manifest),
        "counts": {
            "by_source": summaries,
            "by_label": counts("label"),
            "by_split": counts("split"),
            "by_status": counts("status"),
            "by_split_label": {
                split: {label: int(((manifest["split"] == split) & (manifest["label"] == label)).sum())
                        for label in records.LABELS}
                for split in records.SPLITS
            },
            "problems_by_kind": dict(sorted(Counter(p["kind"] for p in problems).items())),
        },
        "problems": problems,
        "leakage_check": leak,
    }
    return manifest, report


def log_summary(report: Mapping[str, Any]) -> None:
    """Log one line per source and per split from a report made by :func:`build_manifest`."""
    for name, s in report["counts"]["by_source"].items():
        logger.info("source %s: %d videos (real %d, fake %d), missing %d, skipped %d, "
                    "index errors %d, %d groups", name, s["videos"], s["real"], s["fake"],
                    s["missing"], s["skipped"], s["index_errors"], s["groups"])
    for split, labels in report["counts"]["by_split_label"].items():
        logger.info("split %s: %d videos (real %d, fake %d)", split, sum(labels.values()),
                    labels["real"], labels["fake"])
    kinds = report["counts"]["problems_by_kind"]
    if kinds:
        logger.warning("problems (details in the report): %s",
                       ", ".join(f"{k} {v}" for k, v in kinds.items()))
    for name, s in report["counts"]["by_source"].items():
        if not s["ok"]:
            logger.warning("source %s (%s): no usable video", name, s["root"])
    logger.info("leakage check: %d group(s) in more than one split",
                report["leakage_check"]["groups_in_multiple_splits"])


def nothing_usable(report: Mapping[str, Any], report_path: Path, shown: int = 3) -> str:
    """Why an ingest found no usable video: per source, what was listed and its first problems.

    Args:
        report: What :func:`build_manifest` reported.
        report_path: Where the report was written (named for the rest of the problems).
        shown: Problems quoted per source.
    """
    parts = []
    for name, s in report["counts"]["by_source"].items():
        problems = [p for p in report["problems"] if p["source"] == name]
        quoted = [p["reason"] if p["reason"].startswith(p["file"]) else f"{p['file']}: {p['reason']}"
                  for p in problems[:shown]]
        if len(problems) > shown:
            quoted.append(f"{len(problems) - shown} more")
        if not problems:
            quoted.append(f"no video or image files ({' '.join(records.MEDIA_SUFFIXES)}) under it")
        listed = f"{s['videos']} video(s) listed, {s['missing']} of them missing" if s["videos"] else "no video listed"
        parts.append(f"source {name} ({s['format']} at {s['root']}): {listed}; " + "; ".join(quoted))
    return (f"no usable video in any source, so no manifest was written (details in {report_path}): "
            + " | ".join(parts))


def ingest(params: IngestParams, manifest_path: Path, report_path: Path) -> pd.DataFrame:
    """Build the manifest and write it (CSV) and its report (JSON), deterministically.

    Args:
        params: Ingest params.
        manifest_path: Where to write ``manifest.csv``.
        report_path: Where to write the JSON report.

    Returns:
        The manifest.

    Raises:
        IngestError: See :func:`build_manifest`; also if a group landed in two splits (a bug),
            or if no source gave a usable video (:func:`nothing_usable` says why): the report
            is written then, the manifest is not.
    """
    manifest, report = build_manifest(params)
    report_path = Path(report_path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    with report_path.open("w", encoding="utf-8", newline="\n") as fh:
        fh.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
    log_summary(report)
    leak = report["leakage_check"]
    if leak["groups_in_multiple_splits"]:
        raise IngestError(f"groups in more than one split: {leak['groups'][:5]} (see {report_path})")
    if not (manifest["status"] == records.OK).any():
        raise IngestError(nothing_usable(report, report_path))
    records.write_manifest(manifest, Path(manifest_path))
    return manifest
