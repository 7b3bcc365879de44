"""Adapter ``celebdf``: Celeb-DF (``Celeb-real``, ``YouTube-real``, ``Celeb-synthesis``, the test list)."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from ... import records
from .files import clean_rel, given_path, is_media, list_files
from .sources import (
    INVALID_RECORD,
    LABEL_MISMATCH,
    SKIPPED,
    IngestError,
    IngestParams,
    Label,
    SourceParams,
    SourceScan,
    VideoEntry,
)

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
    if not is_media(rel):
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
    shown = given_path(source, _CELEB_TEST_LIST)
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
        rel, why = clean_rel(tokens[1])
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
    on_disk = [rel for rel in list_files(source, scan) if rel != test_name]
    for rel in sorted(set(on_disk) | set(test_rels)):
        entry, why = _celeb_entry(rel)
        shown = given_path(source, rel)
        if entry is None:
            where = f"listed in {given_path(source, test_name)} but " if rel in test_rels else ""
            scan.problem(shown, SKIPPED, f"{where}{why}")
            continue
        if rel in test_rels:
            listed = _CELEB_TEST_LABELS[test_rels[rel]]
            if listed != entry.label:
                scan.problem(shown, LABEL_MISMATCH,
                             f"{test_name} says {listed}, folder says {entry.label}; folder kept")
            status, reason = records.OK, ""
            if rel not in on_disk:
                status, reason = records.MISSING, f"listed in {given_path(source, test_name)} but not found"
            entry = VideoEntry(entry.rel_path, entry.label, entry.manipulation, entry.links,
                               status=status, reason=reason, forced_split="test",
                               forced_by="celebdf test list")
        scan.entries.append(entry)
    return scan
