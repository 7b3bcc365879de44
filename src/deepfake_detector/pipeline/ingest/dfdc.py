"""Adapter ``dfdc``: the DeepFake Detection Challenge (folders with ``metadata.json``)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from ... import records
from .files import clean_rel, given_path, list_files, read_json
from .sources import (
    INDEX_ERROR,
    INVALID_RECORD,
    SKIPPED,
    IngestError,
    IngestParams,
    Label,
    SourceParams,
    SourceScan,
    VideoEntry,
)

_DFDC_LABELS: dict[str, Label] = {"real": "real", "fake": "fake"}


def _read_dfdc_metadata(path: Path, shown: str) -> dict[str, tuple[Label, str | None]]:
    """Validate one DFDC ``metadata.json``; file name -> (label, original or None).

    Raises:
        IngestError: Bad JSON, wrong structure or an unknown label (message names the file).
    """
    data = read_json(path, shown, dict, "an object mapping file names to entries")
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
    files = list_files(source, scan)
    meta_files = [rel for rel in files if PurePosixPath(rel).name == "metadata.json"]
    if not meta_files:
        raise IngestError(f"{source.root}: no metadata.json found (DFDC layout expected)")
    on_disk = set(files)
    listed: set[str] = set()
    folder_state: dict[str, str] = {}  # folder -> why its unlisted files are skipped
    for meta_rel in meta_files:
        folder = PurePosixPath(meta_rel).parent
        shown = given_path(source, meta_rel)
        try:
            entries = _read_dfdc_metadata(root / meta_rel, shown)
        except IngestError as exc:
            scan.problem(shown, INDEX_ERROR, f"{exc}; folder skipped")
            folder_state[folder.as_posix()] = f"{shown} is malformed"
            continue
        folder_state[folder.as_posix()] = f"not listed in {shown}"
        for name, (label, original) in entries.items():
            clean, why = clean_rel(name)
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
        scan.problem(given_path(source, rel), SKIPPED, why)
    scan.entries.sort(key=lambda e: e.rel_path)
    return scan
