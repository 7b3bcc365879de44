"""What the adapters share to read a source: its files, paths from index files, CSV and JSON indexes."""

from __future__ import annotations

import csv
import json
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from ... import records
from ...media.probe import entry_problem, list_entries
from .sources import (
    INVALID_RECORD,
    SKIPPED,
    IngestError,
    Label,
    SourceParams,
    SourceScan,
)


def given_path(source: SourceParams, rel: str) -> str:
    """The root as given joined with a relative path, with forward slashes (portable)."""
    return (PurePosixPath(source.root.replace("\\", "/")) / rel).as_posix()


def list_files(source: SourceParams, scan: SourceScan) -> list[str]:
    """The regular files under a source's root, as sorted POSIX paths relative to it.

    Nothing is dropped silently: every other entry (a broken symlink, a symlink loop, a
    FIFO, ...) and every folder that cannot be listed is reported as skipped, with why.
    """
    root = Path(source.root)
    entries, unlisted = list_entries(root)
    for folder, reason in sorted(unlisted):
        scan.problem(given_path(source, folder.relative_to(root).as_posix()), SKIPPED, reason)
    files = []
    for path in entries:
        rel = path.relative_to(root).as_posix()
        problem = entry_problem(path)
        if problem is None:
            files.append(rel)
        else:
            scan.problem(given_path(source, rel), SKIPPED, problem)
    return sorted(files)


def is_media(rel: str) -> bool:
    # Case-insensitive; images are accepted because a folder of stills is a valid (one-frame) input.
    return records.is_media_name(rel)


def clean_rel(value: str) -> tuple[str | None, str]:
    """Normalise a relative path read from an index; return (path, "") or (None, why)."""
    value = value.strip().replace("\\", "/")
    if not value:
        return None, "empty file name"
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts:
        return None, f"path {value!r} is not inside the dataset root"
    return path.as_posix(), ""


def read_csv_index(
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


def read_json(path: Path, shown: str, kind: type, what: str) -> Any:
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


def parse_labels(
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
