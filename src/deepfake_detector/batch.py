"""Per-video batch work shared by the extract_frames and crop_faces stages.

Both stages walk the manifest in ``video_id`` order, handle one video at a time (a bad
video becomes a report row with its reason, never an exception that stops the batch),
store what they make in tar shards and log a per-status summary at the end.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import pandas as pd
from tqdm import tqdm

from . import records
from .shards import ShardSequence

logger = logging.getLogger(__name__)

# A video's result: its report row and its rows of the stage's table.
VideoResult = tuple[dict, list[dict]]


def for_each_video(
    manifest: pd.DataFrame,
    shards: ShardSequence,
    desc: str,
    handle: Callable[[Any], VideoResult],
) -> tuple[list[dict], list[dict]]:
    """Run ``handle`` on every manifest row in ``video_id`` order, with a progress bar.

    Args:
        manifest: Rows of ``manifest.csv``.
        shards: The shard sequence ``handle`` writes to; closed at the end, even on error.
        desc: Progress bar label.
        handle: Maps a row (namedtuple) to its report row and its table rows.

    Returns:
        ``(report rows, table rows)`` in ``video_id`` order.
    """
    report_rows: list[dict] = []
    table_rows: list[dict] = []
    manifest = manifest.sort_values("video_id", kind="stable")
    try:
        for row in tqdm(manifest.itertuples(index=False), total=len(manifest), desc=desc, unit="video"):
            report, rows = handle(row)
            report_rows.append(report)
            table_rows.extend(rows)
    finally:
        shards.close()
    return report_rows, table_rows


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
