"""DVC stage ``ingest``: list the datasets' videos into ``data/manifest.csv`` with labels,
leakage groups and group-level splits, plus a JSON report of counts and problems.
"""

from __future__ import annotations

from pathlib import Path

from ..core.config import load_section
from ..pipeline.ingest import IngestParams, ingest
from . import stage_parser, stage_run


def main(argv: list[str] | None = None) -> None:
    """Parse paths, load ``ingest`` params once, write the manifest and the report."""
    parser = stage_parser(__doc__)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args(argv)
    with stage_run("ingest", args.verbose):
        ingest(load_section(IngestParams, "ingest", args.params), args.manifest, args.report)


if __name__ == "__main__":
    main()
