"""The ``deepfake-detector`` command: judge video or image files with a calibrated detector.

Usage:
    deepfake-detector predict VIDEO_OR_DIR... [--model models/detector.pt] [--frames N]
        [--json OUT | --csv OUT] [--explain DIR]

Files go through the pipeline's own code (:func:`judge.judge_paths`) with the detector's
own calibration: the frames per video, detection and crop settings, aggregation, threshold
and abstain band the calibrate stage chose on validation, so a video gets the verdict here
that it gets in the pipeline. The model and the face detector are built once for all
files. Directories are searched recursively (sorted) for video and image files. Each
verdict is printed as soon as it is reached. A file that cannot be read gets the verdict
``unreadable`` and its reason; the exit status is non-zero (2) only for usage errors: bad
flags, a model file that is not a calibrated checkpoint, nothing to judge.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

from . import __version__, records
from .calibration import Detector, load_detector
from .engine import setup_runtime
from .judge import PathPrediction, judge_paths
from .logs import setup_logging
from .model import CheckpointError

logger = logging.getLogger(__name__)

PROG = "deepfake-detector"
# The detector the pipeline makes (the calibrate stage).
DEFAULT_MODEL = Path("models/detector.pt")
# The released detector (release/dvc.yaml, kept in git), used when the pipeline has made
# none: looked for in the current directory, then in the checkout this package runs from.
RELEASED_MODEL = Path("release/detector.pt")
_CHECKOUT = Path(__file__).resolve().parents[2]
# `--json -` / `--csv -`: write to standard output instead of a file named "-".
STDOUT = Path("-")


class UsageError(Exception):
    """A problem with what the user asked for (reported with exit status 2)."""


def find_media(inputs: Sequence[Path]) -> list[Path]:
    """Expand the command-line inputs into the files to judge.

    Args:
        inputs: Files and directories as given.

    Returns:
        Files in the order given; each directory replaced by its video and image files
        (recursive, sorted, suffix matched case-insensitively). A path that does not exist
        is kept: it gets an ``unreadable`` row saying so.
    """
    found: list[Path] = []
    for item in inputs:
        if item.is_dir():
            media = sorted(p for p in item.rglob("*") if p.is_file() and records.is_media_name(p))
            if not media:
                logger.warning("%s: no video or image files (%s) in it", item, " ".join(records.MEDIA_SUFFIXES))
            found.extend(media)
        else:
            found.append(item)
    return found


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser (``predict`` sub-command)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details (INFO) to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="judge video or image files",
                       description="Judge video or image files: fake, real, uncertain, no_face or unreadable.")
    p.add_argument("inputs", nargs="+", type=Path, metavar="VIDEO_OR_DIR", help="files, or directories to search recursively")
    p.add_argument("--model", type=Path, default=None,
                   help=f"calibrated detector checkpoint (default: {DEFAULT_MODEL}, the pipeline's, "
                        f"else the released detector {RELEASED_MODEL})")
    p.add_argument("--frames", type=_positive_int, default=None,
                   help="frames sampled per video (default: the detector's calibration; another number "
                        "departs from what its threshold was calibrated on)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", type=Path, default=None, metavar="OUT",
                     help="also write the results as JSON (- for stdout; the table then goes to stderr)")
    out.add_argument("--csv", type=Path, default=None, metavar="OUT",
                     help="also write the results as CSV, video_predictions.csv columns (- for stdout)")
    p.add_argument("--explain", type=Path, default=None, metavar="DIR", help="write a Grad-CAM report per judged video under DIR")
    return parser


def default_model() -> tuple[Path, str]:
    """The detector to use without ``--model``, and which one it is, in words.

    The pipeline's own detector when it has made one, else the released detector.

    Raises:
        UsageError: If neither exists.
    """
    if DEFAULT_MODEL.is_file():
        return DEFAULT_MODEL, "the pipeline's detector"
    for candidate in (RELEASED_MODEL, _CHECKOUT / RELEASED_MODEL):
        if candidate.is_file():
            return candidate, f"the released detector (release/MODEL_CARD.md); no pipeline detector at {DEFAULT_MODEL}"
    raise UsageError(
        f"no model at {DEFAULT_MODEL} and no released detector at {RELEASED_MODEL}: make one with `make demo` "
        "(trains on the embedded sample) or `dvc repro`, or pass --model PATH"
    )


def _load_detector(path: Path | None) -> tuple[Detector, str]:
    which = "given with --model"
    if path is None:
        path, which = default_model()
    try:
        return load_detector(path), which
    except CheckpointError as exc:
        raise UsageError(f"--model: {exc}") from exc


def _explain_dir(root: Path, path: Path, used: set[str]) -> Path:
    """A distinct, filesystem-safe folder per file: its stem, suffixed on repeats."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem) or "video"
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


def table_row(v: records.VideoVerdict) -> str:
    """One file's line of the verdict table (the reason only where there is no plain verdict)."""
    prob = "-" if v.prob_fake is None else f"{v.prob_fake:.3f}"
    reason = v.reason if v.verdict in (records.NO_FACE, records.UNREADABLE, records.UNCERTAIN) else ""
    return _table_line([v.verdict, prob, str(v.n_faces), f"{v.n_frames_with_face}/{v.n_frames_sampled}", v.video_path, reason])


def table_footer(verdicts: Sequence[records.VideoVerdict]) -> str:
    """Counts of each verdict."""
    counts = records.count_verdicts(v.verdict for v in verdicts)
    return f"{len(verdicts)} file(s): " + ", ".join(f"{n} {v}" for v, n in counts.items())


def _check_output(path: Path | None, flag: str) -> None:
    """Fail before any work when an output path cannot be written (not after judging every file)."""
    if path is None or path == STDOUT:
        return
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a directory; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"{flag} {path}: {parent} is not a directory")


def _predict(args: argparse.Namespace) -> int:
    _check_output(args.json, "--json")
    _check_output(args.csv, "--csv")
    paths = find_media(args.inputs)
    if not paths:
        raise UsageError("no video or image files to judge in: " + " ".join(str(p) for p in args.inputs))
    detector, which = _load_detector(args.model)
    cal = detector.calibration
    n_frames = args.frames or cal.frames_per_video
    rt = setup_runtime("auto")
    # With `--json -` or `--csv -` the data owns stdout, so the human-readable table goes to stderr.
    table = sys.stderr if STDOUT in (args.json, args.csv) else sys.stdout
    print(f"model: {detector.path}, {which} ({detector.meta.arch}, input {detector.meta.input_size} px, "
          f"weights {detector.meta.weights_sha256[:12]})", file=table)
    print(f"calibration: {cal.describe()}" + (f"; --frames {n_frames} overrides it" if args.frames else "")
          + f"; runtime {rt.describe()}", file=table)
    print(table_header(), file=table, flush=True)
    results = judge_paths(paths, detector, n_frames=n_frames, keep_frames=args.explain is not None, runtime=rt)
    verdicts: list[records.VideoVerdict] = []
    reports: dict[int, str] = {}
    used_dirs: set[str] = set()
    for i, pred in enumerate(results):
        verdicts.append(pred.verdict)
        print(table_row(pred.verdict), file=table, flush=True)  # each verdict as soon as it is reached
        if args.explain is not None and pred.verdict.prob_fake is not None:
            reports[i] = _run_explain(detector, pred, _explain_dir(args.explain, paths[i], used_dirs))
    print(table_footer(verdicts), file=table)
    for i, report in sorted(reports.items()):
        print(f"Grad-CAM {verdicts[i].video_path}: {report}", file=table)
    _write_results(args, detector, n_frames, verdicts, reports)
    return 0


def _write_results(args: argparse.Namespace, detector: Detector, n_frames: int,
                   verdicts: list[records.VideoVerdict], reports: dict[int, str]) -> None:
    rows = [v.to_row() for v in verdicts]
    if args.json is not None:
        for i, report in reports.items():
            rows[i]["explain_report"] = report
        cal = detector.calibration
        payload = {
            "model": str(detector.path), "weights_sha256": detector.meta.weights_sha256,
            "calibration": cal.to_dict(), "aggregation": cal.aggregation, "threshold": cal.threshold,
            "abstain_band": cal.abstain_band, "frames_per_video": n_frames,
            "verdicts": records.count_verdicts(v.verdict for v in verdicts), "videos": rows,
        }
        _write_text(args.json, json.dumps(payload, indent=2) + "\n")
    if args.csv is not None:
        df = pd.DataFrame(rows, columns=records.PREDICTION_COLUMNS)
        if args.csv == STDOUT:
            df.to_csv(sys.stdout, index=False, lineterminator="\n")
        else:
            records.write_predictions(df, args.csv)


def _write_text(path: Path, text: str) -> None:
    if path == STDOUT:
        sys.stdout.write(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _run_explain(detector: Detector, pred: PathPrediction, out_dir: Path) -> str:
    """Write one file's Grad-CAM report; a failure is reported on that file, not fatal."""
    # Imported here: Grad-CAM pulls in pytorch_grad_cam and matplotlib, which plain
    # prediction does not need.
    from .explain import ExplainParams, build_explanation

    try:
        result = build_explanation(detector.model, detector.meta, pred.verdict, pred.faces, pred.crops,
                                   pred.frames, out_dir, ExplainParams())
        return str(result.report)
    except Exception as exc:  # noqa: BLE001 - one file's report must not lose the other files' verdicts
        logger.error("Grad-CAM failed for %s: %s: %s", pred.verdict.video_path, type(exc).__name__, exc)
        return f"failed: {type(exc).__name__}: {exc}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``deepfake-detector`` console script.

    Args:
        argv: Arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 when every file got a verdict, 2 on a usage error.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage or help already
        return exc.code if isinstance(exc.code, int) else 2
    setup_logging(os.environ.get("DFD_LOG_LEVEL") or ("INFO" if args.verbose else "WARNING"))
    try:
        return _predict(args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
