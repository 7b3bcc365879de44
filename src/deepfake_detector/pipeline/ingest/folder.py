"""Adapter ``folder``: plain folders (``real/``, ``fake/`` or one labelled folder), optional group index."""

from __future__ import annotations

import typing
from pathlib import Path, PurePosixPath

from ... import records
from .files import clean_rel, given_path, is_media, list_files, read_csv_index
from .sources import (
    INVALID_RECORD,
    SKIPPED,
    IngestError,
    IngestParams,
    Label,
    SourceParams,
    SourceScan,
    VideoEntry,
)


def _groups_index(source: SourceParams) -> tuple[Path, str] | None:
    """The group index of a folder source and how to name it, or None when it has none.

    Raises:
        IngestError: If ``source.groups`` is set but the file does not exist.
    """
    if source.groups is None:
        path = Path(source.root) / "groups.csv"
        return (path, given_path(source, "groups.csv")) if path.is_file() else None
    given = Path(source.groups)
    path = given if given.is_absolute() else Path(source.root) / given
    shown = str(given) if given.is_absolute() else given_path(source, source.groups)
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
    for line, row in read_csv_index(path, shown, ("file", column), scan):
        rel, why = clean_rel(row["file"])
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
                f"{source.root}: label: {source.label} is set but {given_path(source, other)}/ exists; "
                "drop label: to read real/ and fake/, or point root at a single-class folder"
            )
    scan = SourceScan()
    groups = _read_groups_csv(source, scan)
    index = _groups_index(source)
    index_rel = None
    if index is not None and index[0].resolve().is_relative_to(root.resolve()):
        index_rel = index[0].resolve().relative_to(root.resolve()).as_posix()
    used: set[str] = set()
    for rel in list_files(source, scan):
        if rel in ("groups.csv", index_rel):
            continue
        label: str | None = source.label
        if label is None:
            top = rel.split("/", 1)[0]
            if "/" not in rel or top not in records.LABELS:
                scan.problem(given_path(source, rel), SKIPPED,
                             "not under real/ or fake/ (set label: for a single-class folder)")
                continue
            label = top
        if not is_media(rel):
            suffix = PurePosixPath(rel).suffix
            scan.problem(given_path(source, rel), SKIPPED,
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
