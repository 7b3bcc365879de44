"""Logging set-up for entry points (stages and the CLI); modules only call getLogger."""

from __future__ import annotations

import logging
import os


def setup_logging(level: str | None = None) -> None:
    """Configure root logging once, for an entry point.

    Args:
        level: Log level name; defaults to ``$DFD_LOG_LEVEL`` or ``INFO``.
    """
    level = level or os.environ.get("DFD_LOG_LEVEL", "INFO")
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
