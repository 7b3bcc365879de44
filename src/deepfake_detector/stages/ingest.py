"""DVC stage ``ingest``: list the datasets' videos into ``data/manifest.csv`` with labels,
leakage groups and group-level splits, plus a JSON report of counts and problems.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..config import ConfigError, load_section
from ..ingest import IngestError, IngestParams, ingest
from ..logs import setup_logging

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    """Parse paths, load ``ingest`` params once, write the manifest and the report.

    Raises:
        SystemExit: With a message naming the offending file, when params or an index file
            (labels.csv, metadata.json, split files, ...) cannot be used.
    """
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--report", type=Path, required=True)
    args = ap.parse_args(argv)
    setup_logging()
    try:
        params = load_section(IngestParams, "ingest", args.params)
        ingest(params, args.manifest, args.report)
    except (ConfigError, IngestError) as exc:
        # The message names the file; a traceback would add nothing for a data error.
        logger.error("ingest failed: %s", exc)
        raise SystemExit(f"ingest failed: {exc}") from None


if __name__ == "__main__":
    main()
