"""Thin DVC stage entry points: ``python -m deepfake_detector.stages.<name>``.

Each stage parses the paths ``dvc.yaml`` gives it, loads its declared params once and
calls the stage's logic in ``deepfake_detector.pipeline.<name>`` (train's is in
``deepfake_detector.model.train``, landmarks' in ``deepfake_detector.faces.landmarks``). Bad
input (params, a table, a checkpoint, a dataset index) ends the stage with one line naming
the file and a non-zero exit; Ctrl-C ends it with one line and status 130 (the shell's for SIGINT). ``--verbose``
adds the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path
from typing import Iterator

from ..core.errors import EXIT_INTERRUPTED, InputError
from ..core.logs import setup_logging

logger = logging.getLogger(__name__)


def stage_parser(doc: str | None, params: bool = True) -> argparse.ArgumentParser:
    """An argument parser with the options every stage has (``--params``, ``--verbose``)."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    if params:
        parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, and a traceback on errors")
    return parser


@contextlib.contextmanager
def stage_run(name: str, verbose: bool) -> Iterator[None]:
    """Set up logging for a stage; turn bad input into one clean line and exit status 1, Ctrl-C into status 130."""
    setup_logging("DEBUG" if verbose else None)
    try:
        yield
    except InputError as exc:
        if verbose:
            logger.exception("%s failed", name)
        print(f"{name}: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:  # the stage's Dask workers, if any, were stopped on the way out (cluster.dask_client)
        if verbose:
            logger.debug("%s interrupted", name, exc_info=True)
        print(f"{name}: interrupted", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
