"""The manifest: every source scanned by its adapter, ids, groups and splits assigned, the report written."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter, defaultdict
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

import pandas as pd

from ... import records
from ...core import config
from .celebdf import scan_celebdf
from .dfdc import scan_dfdc
from .ffpp import scan_ffpp
from .files import given_path
from .folder import scan_folder
from .sample import scan_sample
from .sources import (
    ID_COLLISION,
    INDEX_ERROR,
    INVALID_RECORD,
    MISSING,
    SKIPPED,
    SPLIT_CONFLICT,
    Adapter,
    Format,
    IngestError,
    IngestParams,
    SourceParams,
    SourceScan,
    VideoEntry,
)
from .splits import SPLIT_PRIORITY, leakage_check, leakage_groups, split_groups

logger = logging.getLogger(__name__)

# Dispatch by name (never through globals()).
ADAPTERS: dict[Format, Adapter] = {
    "sample": scan_sample,
    "folder": scan_folder,
    "ffpp": scan_ffpp,
    "dfdc": scan_dfdc,
    "celebdf": scan_celebdf,
}


def _source_names(sources: tuple[SourceParams, ...]) -> list[str]:
    """Prefix per source: the format name, numbered when a format is used more than once."""
    totals = Counter(s.format for s in sources)
    seen: Counter[str] = Counter()
    names = []
    for s in sources:
        seen[s.format] += 1
        names.append(s.format if totals[s.format] == 1 else f"{s.format}{seen[s.format]}")
    return names


def _safe_id(text: str) -> str:
    """Filesystem-safe id: shard members are named after video ids."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).lstrip(".") or "_"


def _default_local_id(rel: str) -> str:
    return PurePosixPath(rel).with_suffix("").as_posix().replace("/", "-")


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
        logger.warning("%s: no content signature (%s)", given_path(source, entry.rel_path), exc)
        return "", ""
    return str(size), signature


def _assign_source(
    name: str, source: SourceParams, scan: SourceScan, params: IngestParams
) -> tuple[list[dict[str, str]], dict[str, Any], list[dict[str, str]]]:
    """Ids, groups and splits for one source's entries.

    Returns:
        (manifest rows, summary dict, problems raised while assigning).
    """
    problems = [{"file": given_path(source, e.rel_path), "kind": MISSING, "reason": e.reason}
                for e in scan.entries if e.status == records.MISSING]
    group_of = leakage_groups(name, scan.entries)
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
                              given_path(source, entry.rel_path), problems)
        size, signature = _size_and_signature(source, entry)
        rows.append({
            "video_id": video_id, "path": given_path(source, entry.rel_path), "label": entry.label,
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
