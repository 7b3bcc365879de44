"""Where extract_frames and crop_faces run their shards: in-process, a local Dask cluster, or a scheduler.

The choice is not a param (it changes where the work runs, never its result; the output
bytes are the same everywhere), so it comes from the stage's ``--scheduler`` option or
else the ``DFD_DASK_SCHEDULER`` environment variable:

* ``local`` (the default): a ``LocalCluster`` of one single-threaded worker process per
  core this process may use (``local:N`` for N workers). Dask's nanny starts each worker
  with ``OMP_NUM_THREADS=1`` (and MKL/OpenBLAS likewise), and MTCNN runs with one torch
  thread anyway (:mod:`faces`), so N workers use N cores.
* ``none``: one shard after the other in the stage's own process, no Dask at all.
* an address such as ``tcp://10.0.0.5:8786``: an existing cluster's scheduler. Its workers
  need this package (the same version) and must see the stage's paths (manifest videos,
  shard folders) at the same place, e.g. a shared file system.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from typing import TYPE_CHECKING, Iterator

from .errors import InputError

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

ENV_VAR = "DFD_DASK_SCHEDULER"
SERIAL = "none"
LOCAL = "local"


def add_scheduler_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--scheduler`` to a stage's command line."""
    parser.add_argument(
        "--scheduler", default=None,
        help=f"where shards are built: '{LOCAL}' (a local Dask cluster, one worker per core; 'local:N' for N), "
             f"'{SERIAL}' (in this process) or a Dask scheduler address (tcp://host:8786); "
             f"default ${ENV_VAR}, else '{LOCAL}'",
    )


def scheduler_choice(option: str | None) -> str:
    """The ``--scheduler`` value, else ``$DFD_DASK_SCHEDULER``, else ``local``."""
    return (option or os.environ.get(ENV_VAR) or LOCAL).strip()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def local_workers(choice: str) -> int | None:
    """Workers of a ``local`` / ``local:N`` choice; None for any other choice.

    Raises:
        InputError: If N is not a positive integer.
    """
    if choice == LOCAL:
        return _cores()
    if not choice.startswith(f"{LOCAL}:"):
        return None
    n = choice.split(":", 1)[1]
    if not n.isdigit() or int(n) < 1:
        raise InputError(f"scheduler {choice!r}: the number of workers must be a positive integer")
    return int(n)


@contextlib.contextmanager
def dask_client(choice: str) -> Iterator[Client | None]:
    """A Dask client for ``choice`` (see the module docstring), or None for ``none``; closed on exit."""
    if choice == SERIAL:
        logger.info("shards built in this process, one after the other (scheduler %s)", SERIAL)
        yield None
        return
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.WARNING)  # dask's own config logs every worker start at INFO
    workers = local_workers(choice)
    if workers is None:
        try:
            client = Client(choice)  # waits up to distributed.comm.timeouts.connect (30 s)
        except (OSError, ValueError) as exc:  # refused or timed out (OSError), or not an address
            raise InputError(f"cannot reach the Dask scheduler {choice!r} (--scheduler / ${ENV_VAR}): {exc}") from exc
        with client:
            logger.info("shards built on the Dask cluster at %s (%d workers)", choice,
                        len(client.scheduler_info().get("workers", {})))
            yield client
        return
    # dashboard_address ":0": any free port, so that two stages running at once do not both want 8787.
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        logger.info("shards built on a local Dask cluster: %d worker processes, 1 thread each", workers)
        yield client
