"""Per-video work of extract_frames and crop_faces: independent shards, built in-process or on Dask.

A video's shard is a hash of its id (:func:`shards.partition_of`), so a shard's videos, and
its bytes, depend only on those videos and the stage's params, never on the other videos
or on scheduling. Each shard is one task (:func:`build_shard`): its videos in ``video_id``
order, each handled by the stage's :class:`VideoHandler` (a bad video, or one whose handler
raises, becomes a report row with its reason), the images to ``<name>.tar`` and what was
found (report rows, table rows, a digest of each video's members) to ``<name>.json``, both
written under a temporary name and renamed into place, the JSON last.

The JSON also holds the shard's ``key``: a hash of everything its bytes depend on (the
videos' inputs, e.g. the manifest's content ``signature``, the params, the source of the
stage's modules). A rerun (:func:`run_shards`) rebuilds only the shards whose key changed
or that have no JSON (an interrupted run), deletes the shards of partitions that no longer
exist, and reads the rest back: with the shard folders declared ``persist: true`` in
``dvc.yaml``, adding a video to a big manifest decodes that video's shard only, while the
folder's hash (and so ``dvc.lock``) still changes exactly when a shard's bytes do.

A worker process that dies inside a video (a decoder crash, the OOM killer) takes its shard
task with it; the video it was in is read from the shard's journal, the shard is built again
without it, and the video's row says what happened. Other failures of a whole shard are
collected, the other shards finish, and :class:`IncompleteShardsError` names them: a rerun
builds only those.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from .. import records
from ..core.errors import InputError
from ..media.shards import ShardWriter, partition_count, partition_of, shard_name

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

# Bumped when the JSON's layout changes, so that shards written by an older layout are rebuilt.
SIDECAR_FORMAT = 1
# The package root: code fingerprints name modules relative to it (``pipeline.crop_faces``).
_PACKAGE_DIR = Path(__file__).resolve().parents[1]
# Times a shard task is sent again when its worker died before the task started (in another shard's video).
_MAX_ORPHANED = 3
_PACKAGE = _PACKAGE_DIR.name

# A video's result: its report row, its rows of the stage's table (without ``shard``), and
# the (member name, bytes) it stores, in order.
VideoResult = tuple[dict, list[dict], list[tuple[str, bytes]]]


class IncompleteShardsError(InputError):
    """Some shards could not be built; the others are complete and kept for the rerun.

    An :class:`InputError` so that the stage ends with its one line (which shards, why) and
    exit status 1, like bad input, rather than a traceback.
    """


class VideoHandler:
    """A stage's per-video step; instances are sent to the workers, so they hold only params and paths."""

    def __call__(self, video: dict) -> VideoResult:
        """Handle one video (a row of the shard's inputs); a bad video is a report row, never an exception."""
        raise NotImplementedError

    def failed(self, video: dict, reason: str) -> dict:
        """The report row of a video that could not be handled (its handler raised, or its worker died)."""
        raise NotImplementedError


@dataclass(frozen=True)
class ShardTask:
    """One shard to build: everything the task needs, and nothing that depends on other shards.

    Attributes:
        folder: The stage's shard folder.
        name: The tar file's name (``<prefix>-<i>-of-<n>.tar``); the JSON is ``<stem>.json``.
        key: Hash of the shard's inputs (:func:`shard_key`); None: never counted as up to date.
        videos: The videos' inputs, sorted by ``video_id``.
        left_out: ``(video_id, reason)`` of videos whose worker died: not handled again in this run.
    """

    folder: str
    name: str
    key: str | None
    videos: tuple[dict, ...]
    left_out: tuple[tuple[str, str], ...] = ()

    @property
    def tar(self) -> Path:
        return Path(self.folder) / self.name

    @property
    def sidecar(self) -> Path:
        return Path(self.folder) / f"{Path(self.name).stem}.json"

    @property
    def journal(self) -> Path:
        """Names the video being handled while the task runs; left behind if its process dies."""
        return Path(self.folder) / f".{Path(self.name).stem}.current"


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and arrays (pandas and detection results carry them)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in a shard's JSON")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=_plain, separators=(",", ":"))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _imports(name: str, tree: ast.AST) -> set[str]:
    """The package modules (relative names, e.g. ``faces.detection``) that module ``name`` imports."""
    found = set()
    # Relative imports start from the module's package: for a package's __init__.py, that is itself.
    base = name.split(".") if _module_file(name).name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base[: len(base) - node.level + 1]
            elif (node.module or "").split(".")[0] == _PACKAGE:
                parent = []
            else:
                continue
            module = (node.module or "").split(".")
            module = module[1:] if not node.level else [m for m in module if m]
            found.add(".".join(parent + module))
            found.update(".".join(parent + module + [alias.name]) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith(f"{_PACKAGE}."))
    # Python runs the __init__.py of every package on the way to a module (``faces`` for ``faces.detection``).
    found |= {".".join(m.split(".")[:i]) for m in list(found) for i in range(1, m.count(".") + 1)}
    return {m for m in found if m and _module_file(m).is_file()}


def _module_file(name: str) -> Path:
    """The file of package module ``name`` (e.g. ``faces.detection``); a subpackage's is its ``__init__.py``."""
    path = _PACKAGE_DIR / name.replace(".", "/")
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def code_fingerprint(module: str) -> str:
    """SHA-256 of the source of package module ``module`` and every package module it imports, transitively.

    Part of every shard key: when the code that makes a shard changes, DVC reruns the stage
    (the modules are its deps) and this makes the rerun rebuild the shards instead of
    keeping them.
    """
    sources: dict[str, bytes] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in sources:
            continue
        sources[name] = _module_file(name).read_bytes()
        todo.extend(_imports(name, ast.parse(sources[name])))
    return _named_digest((name, sources[name]) for name in sorted(sources))


def _named_digest(items: Iterable[tuple[str, bytes]]) -> str:
    """SHA-256 of named byte strings, in order: each name and length, then the bytes."""
    digest = hashlib.sha256()
    for name, data in items:
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def add_members(writer: ShardWriter, members: Sequence[tuple[str, bytes]]) -> str:
    """Add one video's members to a shard, in order; returns their digest (a shard JSON's per-video entry)."""
    for member, data in members:
        writer.add(member, data)
    return _named_digest(members)


def shard_key(stage: str, code: str, params: Any, videos: Sequence[dict]) -> str:
    """Hash of what a shard's bytes depend on: the stage, its code, its params and its videos' inputs."""
    params = dataclasses.asdict(params) if dataclasses.is_dataclass(params) else params
    blob = _dumps({"format": SIDECAR_FORMAT, "stage": stage, "code": code, "params": params, "videos": list(videos)})
    return hashlib.sha256(blob.encode()).hexdigest()


def plan_shards(folder: Path, prefix: str, videos: Sequence[dict], videos_per_shard: int,
                key: Callable[[tuple[dict, ...]], str | None]) -> list[ShardTask]:
    """Spread ``videos`` over hash partitions: one task per partition that holds any.

    Args:
        folder: The stage's shard folder.
        prefix: Shard name prefix (``frames``, ``crops``).
        videos: One input dict per video, with ``video_id``.
        videos_per_shard: Target average videos per shard (:func:`shards.partition_count`).
        key: Maps a partition's sorted videos to its key (or None when it cannot be known).

    Returns:
        The tasks, by partition.
    """
    count = partition_count(len(videos), videos_per_shard)
    parts: dict[int, list[dict]] = {}
    for video in videos:
        parts.setdefault(partition_of(video["video_id"], count), []).append(video)
    tasks = []
    for index in sorted(parts):
        members = tuple(sorted(parts[index], key=lambda v: v["video_id"]))
        tasks.append(ShardTask(str(folder), shard_name(prefix, index, count), key(members), members))
    return tasks


def build_shard(task: ShardTask, handler: VideoHandler) -> dict:
    """Build one shard: handle its videos, write its tar and then its JSON. Runs on a worker.

    Returns:
        The JSON's content.
    """
    if not task.left_out and is_done(task):
        # Dask runs a finished task again when the worker holding its result dies: nothing to redo.
        return read_sidecar(task.sidecar) or {}
    task.sidecar.unlink(missing_ok=True)  # from here on the shard is unfinished until its new JSON lands
    left_out = dict(task.left_out)
    writer: ShardWriter | None = None
    reports: list[dict] = []
    rows: list[dict] = []
    digests: dict[str, str] = {}
    try:
        for video in task.videos:
            vid = video["video_id"]
            if vid in left_out:
                reports.append(handler.failed(video, left_out[vid]))
                continue
            task.journal.write_text(vid, encoding="utf-8")
            try:
                report, video_rows, members = handler(video)
            except Exception as exc:  # a bug or a library error on one video is that video's row
                logger.exception("%s: handling %s failed", task.name, vid)
                reason = f"failed on {vid} ({video.get('path', '')}): {type(exc).__name__}: {exc}"
                report, video_rows, members = handler.failed(video, reason), [], []
            if members:
                writer = writer or ShardWriter(task.tar)
                digests[vid] = add_members(writer, members)
            reports.append(report)
            rows.extend({**row, "shard": task.name} for row in video_rows)
        if writer is not None:
            writer.close()
        else:
            task.tar.unlink(missing_ok=True)  # nothing stored: no tar (a previous run's would be stale)
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    finally:
        task.journal.unlink(missing_ok=True)
    sidecar = {
        "format": SIDECAR_FORMAT, "key": task.key, "videos": [v["video_id"] for v in task.videos],
        "left_out": dict(task.left_out), "tar_size": task.tar.stat().st_size if writer is not None else None,
        "digests": digests, "report": reports, "rows": rows,
    }
    _write_atomic(task.sidecar, _dumps(sidecar))
    return sidecar


def read_sidecar(path: Path) -> dict | None:
    """A shard's JSON, or None when it is absent or unreadable (the shard is then unfinished)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_done(task: ShardTask) -> bool:
    """Whether the shard on disk was built, completely, from exactly this task's inputs."""
    if task.key is None:
        return False
    sidecar = read_sidecar(task.sidecar)
    if sidecar is None or sidecar.get("format") != SIDECAR_FORMAT or sidecar.get("key") != task.key:
        return False
    if sidecar.get("left_out"):
        return False  # a video whose worker died is tried again by the next run
    size = sidecar.get("tar_size")
    if size is None:
        return not task.tar.exists()
    return task.tar.is_file() and task.tar.stat().st_size == size


def prune(folder: Path, prefix: str, tasks: Sequence[ShardTask]) -> None:
    """Delete the shards of partitions not in ``tasks`` and leftovers of interrupted runs.

    Only this stage's files are removed (``<prefix>-*.tar``/``.json``, hidden temporary files
    and journals), so a mistyped path cannot wipe unrelated files; anything else is named in
    a warning and left alone.
    """
    folder.mkdir(parents=True, exist_ok=True)
    keep = {name for t in tasks for name in (t.tar.name, t.sidecar.name)}
    for entry in sorted(folder.iterdir()):
        ours = entry.is_file() and entry.name.lstrip(".").startswith(f"{prefix}-")
        if ours and entry.name.startswith("."):
            entry.unlink()
        elif ours and entry.suffix in (".tar", ".json"):
            if entry.name not in keep:
                logger.info("%s: removing %s (no such partition any more)", folder, entry.name)
                entry.unlink()
        else:
            logger.warning("%s: unexpected entry %s left in place", folder, entry.name)


def _run_serial(tasks: Sequence[ShardTask], handler: VideoHandler, desc: str) -> dict[str, str]:
    failures = {}
    for task in tqdm(tasks, desc=desc, unit="shard"):
        try:
            build_shard(task, handler)
        except Exception as exc:  # the other shards go on; the stage fails at the end, naming this one
            logger.exception("%s: shard %s failed", desc, task.name)
            failures[task.name] = f"{type(exc).__name__}: {exc}"
    return failures


def _run_on_dask(tasks: Sequence[ShardTask], handler: VideoHandler, desc: str, client: Client) -> dict[str, str]:
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    failures = {}
    orphaned: dict[str, int] = {}  # shard -> times its worker died before the task started
    pending = {client.submit(build_shard, task, handler, pure=False): task for task in tasks}
    progress = tqdm(total=len(tasks), desc=desc, unit="shard")
    try:  # closed on Ctrl-C too, so the stage's 'interrupted' line starts a line of its own
        queue = as_completed(list(pending))
        for future in queue:
            task = pending.pop(future)
            try:
                future.result()
                # Forget the result at once: a finished task whose result still lives on a worker that
                # dies later would be run again by Dask, rewriting a complete shard.
                future.release()
                progress.update()
            except KilledWorker as exc:
                culprit = task.journal.read_text(encoding="utf-8").strip() if task.journal.is_file() else None
                task.journal.unlink(missing_ok=True)
                if culprit is None:
                    # Queued on a worker that died in another shard's video, never started: run it again.
                    orphaned[task.name] = orphaned.get(task.name, 0) + 1
                    if orphaned[task.name] > _MAX_ORPHANED:
                        failures[task.name] = f"its worker died {orphaned[task.name]} times before it started ({exc})"
                        progress.update()
                        continue
                    retry = task
                else:  # never a video left out before: those are not handled, so no journal names them
                    path = next((v.get("path", "") for v in task.videos if v["video_id"] == culprit), "")
                    reason = (f"the worker process died while handling {culprit} ({path}; killed or crashed, "
                              f"retried on other workers first): left out, a rerun tries it again")
                    logger.warning("%s: %s: %s", desc, task.name, reason)
                    retry = dataclasses.replace(task, left_out=task.left_out + ((culprit, reason),))
                future = client.submit(build_shard, retry, handler, pure=False)
                pending[future] = retry
                queue.add(future)
            except Exception as exc:  # the other shards go on; the stage fails at the end, naming this one
                logger.error("%s: shard %s failed: %s: %s", desc, task.name, type(exc).__name__, exc)
                failures[task.name] = f"{type(exc).__name__}: {exc}"
                progress.update()
    finally:
        progress.close()
    return failures


def run_shards(
    folder: Path, prefix: str, tasks: Sequence[ShardTask], handler: VideoHandler, desc: str,
    client: Client | None = None,
) -> tuple[list[dict], list[dict]]:
    """Build the shards that are not up to date, then read every shard's rows back.

    Args:
        folder: The stage's shard folder (its stale shards and leftovers are deleted first).
        prefix: Shard name prefix.
        tasks: All shards of the run (:func:`plan_shards`).
        handler: The stage's per-video step.
        desc: Progress bar label and log prefix.
        client: A Dask client to run the shards on; None: one after the other, in this process.

    Returns:
        ``(report rows, table rows)``, in ``video_id`` order (table rows keep their order within a video).

    Raises:
        IncompleteShardsError: If some shards could not be built (after the others were).
    """
    folder = Path(folder)
    prune(folder, prefix, tasks)
    todo = [t for t in tasks if not is_done(t)]
    n_videos = sum(len(t.videos) for t in todo)
    logger.info("%s: %d of %d shards to build (%d videos), %d up to date", desc, len(todo), len(tasks), n_videos,
                len(tasks) - len(todo))
    failures = _run_serial(todo, handler, desc) if client is None else _run_on_dask(todo, handler, desc, client)
    if failures:
        listed = "; ".join(f"{name}: {why}" for name, why in sorted(failures.items()))
        raise IncompleteShardsError(f"{len(failures)} of {len(tasks)} shards in {folder} could not be built ({listed}); "
                                    "the others are complete and a rerun builds only these")
    reports: list[dict] = []
    rows: list[dict] = []
    for task in tasks:
        sidecar = read_sidecar(task.sidecar)
        if sidecar is None:
            raise IncompleteShardsError(f"{task.sidecar} vanished during the run")
        reports.extend(sidecar["report"])
        rows.extend(sidecar["rows"])
    reports.sort(key=lambda r: r["video_id"])
    rows.sort(key=lambda r: r["video_id"])  # stable: a video's rows keep their order
    return reports, rows


def frame_digests(folder: Path) -> dict[str, str]:
    """The digest of every video's members, from the JSONs of the shards in ``folder``."""
    digests: dict[str, str] = {}
    for path in sorted(Path(folder).glob("*.json")):
        sidecar = read_sidecar(path)
        if sidecar is not None:
            digests.update(sidecar.get("digests", {}))
    return digests


def records_of(df: pd.DataFrame) -> list[dict]:
    """A table's rows as dicts of plain values (NaN as None), in row order."""
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
            for row in df.to_dict("records")]


def log_status_summary(report: pd.DataFrame, stage: str, statuses: Sequence[str]) -> None:
    """Log a line per status with its count, then every video that is not ok, with its reason.

    Args:
        report: A per-video report with ``video_id``, ``status`` and ``reason``.
        stage: Name used as the log prefix.
        statuses: The statuses this stage can give, in display order.
    """
    logger.info("%s: %d videos", stage, len(report))
    for status in statuses:
        rows = report[report["status"] == status]
        level = logging.INFO if status == records.OK or rows.empty else logging.WARNING
        logger.log(level, "%s: %d %s", stage, len(rows), status)
        for row in rows.itertuples(index=False):
            if status != records.OK:
                logger.warning("%s:   %s %s: %s", stage, status, row.video_id, row.reason)
