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

Ctrl-C reaches every process of the terminal's process group, the local cluster's workers
included; they ignore it (:func:`dask_setup`), so that only the stage sees it, and the
stage stops them (within about :data:`INTERRUPTED_CLOSE_S` seconds) on its way out.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
from typing import TYPE_CHECKING, Iterator

from ..core.errors import InputError

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

logger = logging.getLogger(__name__)

ENV_VAR = "DFD_DASK_SCHEDULER"
SERIAL = "none"
LOCAL = "local"
# Closing the local cluster after Ctrl-C: the seconds a worker gets to stop before it is killed
# (the graceful default, 5 s per step, waits for the task each worker is running).
INTERRUPTED_CLOSE_S = 1.0


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
    import dask
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
    client = cluster = None
    interrupted = False
    try:
        # dashboard_address ":0": any free port, so that two stages running at once do not both want 8787.
        # This module is the workers' preload too (its dask_setup), after any the Dask config names.
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                               preload=[*dask.config.get("distributed.worker.preload"), __name__])
        client = Client(cluster)
        logger.info("shards built on a local Dask cluster: %d worker processes, 1 thread each", workers)
        yield client
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        _close_local(client, cluster, interrupted)


def dask_setup(worker: object) -> None:
    """Dask preload hook, run in each local worker process as it starts: Ctrl-C is not for the workers.

    They share the terminal's process group, so the terminal sends them its SIGINT too: each
    would stop mid-task and print its own KeyboardInterrupt traceback. The stage gets it as
    well and closes the cluster, which stops them (:func:`dask_client`); until then, a worker
    only stops logging, since what distributed would log now is about being stopped.
    """
    signal.signal(signal.SIGINT, _quiet)


# Above CRITICAL: distributed logs a comm closed mid-stop at CRITICAL, with a traceback.
SILENT = logging.CRITICAL + 1


def _quiet(signum: int, frame: object) -> None:
    logging.getLogger("distributed").setLevel(SILENT)


def _close_local(client: Client | None, cluster: LocalCluster | None, interrupted: bool) -> None:
    """Close the client, then the local cluster and its workers; within about a second after Ctrl-C."""
    if not interrupted:
        try:
            if client is not None:
                client.close()
        finally:
            if cluster is not None:
                cluster.close()
        return
    import psutil  # a dependency of distributed

    # Nothing the workers are doing now is kept (a shard is renamed into place only when complete), so they
    # get a moment to stop and are then killed: the graceful close waits up to 5 s for each running task,
    # and worker processes still running at exit keep this one alive. What distributed would log now is
    # all about the stop (tasks cancelled, workers killed), so it is not shown.
    logging.getLogger("distributed").setLevel(SILENT)
    workers = []
    for nanny in list(cluster.workers.values()) if cluster is not None else []:
        pid = getattr(nanny, "pid", None)  # None once the worker process has exited
        if pid:  # (psutil.Process(None) would be this process)
            with contextlib.suppress(psutil.Error):
                workers.append(psutil.Process(pid))
    for closing in (client, cluster):
        if closing is not None:
            try:
                closing.close(timeout=INTERRUPTED_CLOSE_S)
            except Exception:  # a timeout, typically; the workers left are killed below
                logger.debug("closing the Dask cluster after Ctrl-C", exc_info=True)
    for process in workers:
        with contextlib.suppress(psutil.Error):
            process.kill()  # psutil checks that the pid was not reused meanwhile
    psutil.wait_procs(workers, timeout=INTERRUPTED_CLOSE_S)
    if cluster is not None:
        # Its close may still be waiting on the (now dead) workers; distributed's exit hook would wait
        # for it another 10 s.
        cluster.shutdown_on_close = False
