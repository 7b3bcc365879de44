"""The ``deepfake-detector`` command: judge video or image files with a calibrated detector.

Usage:
    deepfake-detector predict VIDEO_OR_DIR... [--model PATH] [--frames N]
        [--json OUT | --csv OUT] [--explain DIR]
    deepfake-detector serve [--model PATH] [--host 127.0.0.1] [--port 7860]

Without ``--model`` both use the released detector (``release/detector.pt``); the sample
pipeline's own ``models/detector.pt`` (``make demo``) only when asked for with ``--model``.
Which model judges, and where its model card is, is printed with its description.

Files are judged and explained by the judging service (:mod:`service`: :class:`service.Judge`,
:func:`service.explain_file`), which runs the pipeline's own code (:func:`judge.judge_paths`) with the detector's
own calibration: the frames per video, detection and crop settings, aggregation, threshold
and abstain band the calibrate stage chose on validation, so a video gets the verdict here
that it gets in the pipeline. Inputs and output paths are checked first; the model and the
face detector are loaded once, for the first file that decodes (PyTorch alone takes seconds
to import, so a batch of unreadable files never pays for it). Directories are searched
recursively (sorted) for video and image files; every entry with a media name gets a row,
broken symlinks and FIFOs included, and so does a folder that cannot be listed. Each
verdict is printed as soon as it is reached. A file that cannot be read gets the verdict
``unreadable`` and its reason; the exit status is non-zero only for usage errors (2: bad
flags, an output path that cannot be written, a model file that is not a calibrated
checkpoint, nothing to judge, an output path that another run is writing) and when the
results cannot be written at the end (1). Ctrl-C stops it with one line and status 130.

Outputs are whole or absent (:mod:`atomic`): ``--json``/``--csv`` are written to a temporary
file next to their path and renamed onto it, each ``--explain`` report folder likewise, so an
interrupted run leaves the previous results as they were; and a run holds a lock on each
output path from start to end (``<file>.lock`` beside a results file, ``<folder>/.lock`` in
the ``--explain`` folder), so a second run on the same path is refused (status 2, naming the
path and the other run's pid) instead of silently overwriting the first one's.
The progress bar (stderr) is cleared before each line of the table or of the log is printed
and redrawn after it, so the two never share a line on a terminal.

``serve`` starts the web demo (:mod:`deepfake_detector.interfaces.web`, an optional extra: gradio is
imported only there), which judges and explains uploads with the same :class:`service.Judge` and
:func:`service.explain_file` as ``predict --explain``. It stops on Ctrl-C (status 130) and on SIGTERM
(status 0).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Sequence, TextIO

import pandas as pd
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .. import __version__, records
from ..core.atomic import OutputBusyError, OutputLock, atomic_path, write_text_atomic
from ..core.errors import EXIT_INTERRUPTED
from ..core.logs import setup_logging
from ..media.probe import list_entries
from ..service import PIPELINE_MODEL, RELEASED_MODEL, Judge, UsageError, explain_file, resolve_model

logger = logging.getLogger(__name__)

PROG = "deepfake-detector"
# `--json -` / `--csv -`: write to standard output instead of a file named "-".
STDOUT = Path("-")
# Exit status after Ctrl-C (128 + SIGINT), as a shell reports a process it interrupted.


def find_media(inputs: Sequence[Path]) -> tuple[list[Path], dict[Path, str]]:
    """Expand the command-line inputs into the entries to judge.

    Args:
        inputs: Files and directories as given.

    Returns:
        ``(entries, unlisted)``: entries in the order given, each directory replaced by
        everything in it with a media name (recursive, sorted, suffix matched
        case-insensitively), whatever it is: a broken symlink, a symlink loop or a FIFO
        named ``.mp4`` is kept, and so is a folder that could not be listed (with its reason
        in ``unlisted``). Each gets an ``unreadable`` row saying what it is, as does a path
        that does not exist.
    """
    found: list[Path] = []
    unlisted: dict[Path, str] = {}
    for item in inputs:
        if os.path.isdir(item):  # False, not an error, when a folder on its path cannot be searched
            entries, problems = list_entries(item)
            unlisted.update(problems)
            media = sorted([p for p in entries if records.is_media_name(p)] + [folder for folder, _ in problems])
            if not media:
                logger.warning("%s: no video or image files (%s) in it", item, " ".join(records.MEDIA_SUFFIXES))
            found.extend(media)
        else:
            found.append(item)
    return found, unlisted


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 0..65535, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser (``predict`` and ``serve`` sub-commands)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details (INFO) to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="judge video or image files",
                       description="Judge video or image files: fake, real, uncertain, no_face or unreadable.")
    p.add_argument("inputs", nargs="+", type=Path, metavar="VIDEO_OR_DIR", help="files, or directories to search recursively")
    p.add_argument("--model", type=Path, default=None,
                   help=f"calibrated detector checkpoint (default: the released detector {RELEASED_MODEL}; "
                        f"{PIPELINE_MODEL} for the one `make demo` trains on the sample)")
    p.add_argument("--frames", type=_positive_int, default=None,
                   help="frames sampled per video (default: the detector's calibration; another number "
                        "departs from what its threshold was calibrated on)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", type=Path, default=None, metavar="OUT",
                     help="also write the results as JSON (- for stdout; the table then goes to stderr)")
    out.add_argument("--csv", type=Path, default=None, metavar="OUT",
                     help="also write the results as CSV, video_predictions.csv columns (- for stdout)")
    p.add_argument("--explain", type=Path, default=None, metavar="DIR", help="write a Grad-CAM report per judged video under DIR")
    s = sub.add_parser("serve", help="start the local web demo (needs the demo extra: pip install -e .[demo])",
                       description="Start a local web app: upload a video, see its verdict, the fake probability over "
                                   "time and the Grad-CAM evidence, download the report.")
    s.add_argument("--model", type=Path, default=None,
                   help=f"calibrated detector checkpoint (default: the released detector {RELEASED_MODEL}; "
                        f"{PIPELINE_MODEL} for the one `make demo` trains on the sample)")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it to the network)")
    s.add_argument("--port", type=_port, default=7860, help="port (default 7860; 0: a free one)")
    s.add_argument("--max-upload-mb", type=_positive_int, default=None, metavar="MB",
                   help="largest upload accepted (default: web.MAX_UPLOAD_MB)")
    s.add_argument("--share", action="store_true", help="also open a public gradio.live link (off unless asked)")
    return parser


def _explain_dir(root: Path, path: Path, used: set[str]) -> Path:
    """A distinct, filesystem-safe folder per file: its stem, suffixed on repeats; never a
    hidden name (those are the lock's and the folders being built, :mod:`atomic`)."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).lstrip(".") or "video"
    name, k = base, 2
    while name in used:
        name, k = f"{base}_{k}", k + 1
    used.add(name)
    return root / name


# Column widths of the verdict table, fixed so that each row can be printed as soon as its
# file is judged (the file name and the reason take what they need at the end of the line).
TABLE_COLUMNS = (("VERDICT", 10), ("P(FAKE)", 7), ("FACES", 5), ("FRAMES", 7), ("FILE", 0), ("REASON", 0))


def _table_line(cells: Sequence[str]) -> str:
    parts = [cell.rjust(width) if i in (1, 2, 3) else cell.ljust(width)
             for i, (cell, (_, width)) in enumerate(zip(cells, TABLE_COLUMNS))]
    return "  ".join(parts).rstrip()


def table_header() -> str:
    """The verdict table's column titles."""
    return _table_line([name for name, _ in TABLE_COLUMNS])


def _printable(text: str) -> str:
    """``text`` with control characters escaped, so a newline in a file name cannot split a row."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def table_row(v: records.VideoVerdict) -> str:
    """One file's line of the verdict table (the reason only where there is no plain verdict)."""
    prob = "-" if v.prob_fake is None else f"{v.prob_fake:.3f}"
    reason = v.reason if v.verdict in (records.NO_FACE, records.UNREADABLE, records.UNCERTAIN) else ""
    frames = f"{v.n_frames_with_face}/{v.n_frames_sampled}"
    return _table_line([v.verdict, prob, str(v.n_faces), frames, _printable(v.video_path), _printable(reason)])


def table_footer(verdicts: Sequence[records.VideoVerdict]) -> str:
    """Counts of each verdict."""
    counts = records.count_verdicts(v.verdict for v in verdicts)
    return f"{len(verdicts)} file(s): " + ", ".join(f"{n} {v}" for v, n in counts.items())


def table_print(line: str, table: TextIO) -> None:
    """Print one line of the table now (flushed).

    Through ``tqdm.write``: a progress bar on the terminal (stderr) is cleared before the line
    and drawn again under it, so a row (stdout) never lands on the bar's line.
    """
    tqdm.write(line, file=table)
    table.flush()


def _check_writable(path: Path, flag: str, folder: bool = False) -> None:
    """Fail before any work when an output path cannot be written (not after judging every file).

    The nearest existing folder on the path must be a folder we may create files in (an output
    file is written beside its path and renamed onto it), and an existing output file must be
    writable (checked by trying, which is what counts).
    """
    exists = os.path.exists(path)  # os.path: False instead of an error when a parent cannot be searched
    if exists and os.path.isdir(path) != folder:
        raise UsageError(f"{flag} {path}: " + ("is not a folder" if folder else "is a directory; give a file name"))
    if not folder and exists:
        try:
            with path.open("ab"):
                pass
        except OSError as exc:
            raise UsageError(f"{flag} {path}: cannot be written ({exc.strerror or exc})") from None
    ancestor = path if folder else path.parent
    ancestor = Path(os.path.abspath(ancestor))
    while not os.path.exists(ancestor):
        ancestor = ancestor.parent
    if not os.path.isdir(ancestor):
        raise UsageError(f"{flag} {path}: {ancestor} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot create files in {ancestor} ({exc.strerror or exc})") from None


def _check_outputs(args: argparse.Namespace) -> None:
    """Check every output path, and that none of them is one of the inputs."""
    outputs = [(p, flag) for p, flag in ((args.json, "--json"), (args.csv, "--csv")) if p is not None and p != STDOUT]
    inputs = {os.path.realpath(p) for p in args.inputs}
    for path, flag in outputs:
        if os.path.realpath(path) in inputs:
            raise UsageError(f"{flag} {path}: is one of the inputs; it would be overwritten")
        _check_writable(path, flag)
    if args.explain is not None:
        _check_writable(args.explain, "--explain", folder=True)


def _predict(args: argparse.Namespace) -> int:
    _check_outputs(args)
    model_path, which = resolve_model(args.model)
    paths, unlisted = find_media(args.inputs)
    if not paths:
        raise UsageError("no video or image files to judge in: " + " ".join(str(p) for p in args.inputs))
    # Held until the results are written: a second run on one of these paths is refused.
    lock = OutputLock(files=[p for p in (args.json, args.csv) if p is not None and p != STDOUT],
                      folders=[args.explain] if args.explain is not None else [])
    try:
        lock.acquire()
    except OSError as exc:
        raise UsageError(f"cannot lock the outputs ({exc})") from None
    try:
        with logging_redirect_tqdm():
            return _judge_all(args, model_path, which, paths, unlisted)
    finally:
        lock.release()


def _judge_all(args: argparse.Namespace, model_path: Path, which: str, paths: list[Path], unlisted: dict[Path, str]) -> int:
    """Judge (and explain) every file, print the table as it goes, write the results."""
    # With `--json -` or `--csv -` the data owns stdout, so the human-readable table goes to stderr.
    table = sys.stderr if STDOUT in (args.json, args.csv) else sys.stdout
    judge = Judge(model_path, which, args.frames, keep_frames=args.explain is not None, table=table)
    table_print(table_header(), table)
    verdicts: list[records.VideoVerdict] = []
    reports: dict[int, str] = {}
    used_dirs: set[str] = set()
    for i, path in enumerate(paths):
        verdict, pred = (judge.unreadable(path, unlisted[path]), None) if path in unlisted else judge.judge_file(path)
        verdicts.append(verdict)
        if args.explain is not None and pred is not None and verdict.prob_fake is not None:
            result = explain_file(judge.detector, pred, _explain_dir(args.explain, path, used_dirs))
            reports[i] = result if isinstance(result, str) else str(result.report)
        table_print(table_row(verdicts[-1]), table)  # each verdict as soon as it is reached
    table_print(table_footer(verdicts), table)
    for i, report in sorted(reports.items()):
        table_print(f"Grad-CAM {verdicts[i].video_path}: {report}", table)
    try:
        _write_results(args, judge, verdicts, reports)
    except OSError as exc:
        print(f"{PROG}: error: could not write the results ({exc}); the verdicts are in the table above", file=sys.stderr)
        return 1
    return 0


def _write_results(args: argparse.Namespace, judge: Judge, verdicts: list[records.VideoVerdict],
                   reports: dict[int, str]) -> None:
    cal = judge.detector.calibration if judge.detector is not None else None
    for v in verdicts:  # files refused before the model was loaded get its settings too
        if cal is not None and v.threshold is None:
            v.threshold, v.aggregation = cal.threshold, cal.aggregation
    rows = [v.to_row() for v in verdicts]
    if args.json is not None:
        for i, report in reports.items():
            rows[i]["explain_report"] = report
        # When no file decoded, no model was loaded: its fields are null.
        payload = {
            "model": str(judge.model_path),
            "weights_sha256": judge.detector.meta.weights_sha256 if judge.detector is not None else None,
            "calibration": cal.to_dict() if cal else None, "aggregation": cal.aggregation if cal else None,
            "threshold": cal.threshold if cal else None, "abstain_band": cal.abstain_band if cal else None,
            "frames_per_video": judge.n_frames,
            "verdicts": records.count_verdicts(v.verdict for v in verdicts), "videos": rows,
        }
        _write_text(args.json, json.dumps(payload, indent=2) + "\n")
    if args.csv is not None:
        df = pd.DataFrame(rows, columns=records.PREDICTION_COLUMNS)
        if args.csv == STDOUT:
            df.to_csv(sys.stdout, index=False, lineterminator="\n")
        else:
            with atomic_path(args.csv) as tmp:  # a failure halfway leaves the previous file as it was
                records.write_predictions(df, tmp)


def _write_text(path: Path, text: str) -> None:
    if path == STDOUT:
        sys.stdout.write(text)
        return
    write_text_atomic(path, text)


def _serve(args: argparse.Namespace) -> int:
    """``serve``: check the model, then hand over to the web app (blocks until interrupted)."""
    model_path, which = resolve_model(args.model)
    if importlib.util.find_spec("gradio") is None:
        raise UsageError("the web demo needs gradio, the demo extra: pip install -e '.[demo]'")
    from . import web  # gradio: the demo extra, imported only for `serve`

    web.serve(model_path, which, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb, share=args.share)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``deepfake-detector`` console script.

    Args:
        argv: Arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 when every file got a verdict (or the server was stopped with
        SIGTERM), 2 on a usage error or an output path another run is writing, 1 when the
        results could not be written, 130 when interrupted (Ctrl-C).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage or help already
        return exc.code if isinstance(exc.code, int) else 2
    setup_logging(os.environ.get("DFD_LOG_LEVEL") or ("INFO" if args.verbose else "WARNING"))
    try:
        return _serve(args) if args.command == "serve" else _predict(args)
    except (UsageError, OutputBusyError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: outputs not yet renamed into place were removed on the way out
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
