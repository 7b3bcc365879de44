"""Adapter ``ffpp``: FaceForensics++ (original and manipulated sequences, official split files)."""

from __future__ import annotations

import re
import typing
from pathlib import Path, PurePosixPath

from ... import records
from .files import given_path, is_media, list_files, read_json
from .sources import (
    NOT_COVERED,
    SKIPPED,
    IngestError,
    IngestParams,
    Label,
    SourceParams,
    SourceScan,
    Split,
    VideoEntry,
)

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
        pairs = read_json(path, str(path), list, "a list of [target, source] id pairs")
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
    for rel in list_files(source, scan):
        shown = given_path(source, rel)
        parts = PurePosixPath(rel).parts
        if len(parts) != 5 or parts[0] not in ("original_sequences", "manipulated_sequences") \
                or parts[3] != "videos":
            scan.problem(shown, SKIPPED, f"not in the FF++ layout {expected}")
            continue
        top, kind, quality, _, name = parts
        if quality == "masks":
            scan.problem(shown, SKIPPED, "manipulation mask, not a sample video")
            continue
        if not is_media(rel):
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
