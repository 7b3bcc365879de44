"""Adapter ``sample``: the embedded sample (``labels.csv`` written by make_sample)."""

from __future__ import annotations

from pathlib import Path

from ... import records
from .files import clean_rel, given_path, is_media, list_files, parse_labels, read_csv_index
from .sources import (
    INVALID_RECORD,
    SKIPPED,
    IngestError,
    IngestParams,
    SourceParams,
    SourceScan,
    VideoEntry,
)


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
    shown = given_path(source, records.SAMPLE_LABELS_FILE)
    if not index.is_file():
        raise IngestError(f"{shown}: not found; a sample source needs labels.csv (make_sample writes it)")
    scan = SourceScan()
    rows = read_csv_index(index, shown, tuple(records.SAMPLE_LABEL_COLUMNS), scan)
    labels = parse_labels(rows, shown, {"real": "real", "fake": "fake"})
    on_disk = set(list_files(source, scan))
    seen: set[str] = set()
    for (line, row), label in zip(rows, labels):
        rel, why = clean_rel(row["file"])
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
                clean, why = clean_rel(origin)
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
    for rel in sorted(r for r in on_disk - seen if is_media(r)):
        scan.problem(given_path(source, rel), SKIPPED, f"not listed in {shown}")
    return scan
