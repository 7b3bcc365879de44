"""The ``deepfake-detector`` command: judge video or image files with the pipeline's model.

Usage:
    deepfake-detector predict VIDEO_OR_DIR... [--model models/model.pt] [--frames N]
        [--json OUT | --csv OUT] [--explain DIR] [--params params.yaml] [--calibration PATH]

Files go through the pipeline's own code (:func:`predict.predict_paths`: sequential
decoding, MTCNN on a downscaled copy, the checkpoint's eval transform, batched
classification, the same aggregation and verdict rules), with the model and the face
detector built once for all files. Directories are searched recursively (sorted) for
video and image files. A file that cannot be read gets the verdict ``unreadable`` and
its reason; the exit status is non-zero (2) only for usage errors: bad flags, a model
file that is not a checkpoint, unusable params or calibration, nothing to judge.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from . import __version__, records
from .config import ConfigError, load_section
from .engine import setup_runtime
from .faces import CropParams, FaceDetector
from .logs import setup_logging
from .model import CheckpointError, CheckpointMeta, load_model
from .predict import (
    NO_FACE,
    PREDICTION_COLUMNS,
    UNREADABLE,
    Calibration,
    PathPrediction,
    PredictParams,
    VideoVerdict,
    calibration_from_checkpoint,
    load_calibration,
    predict_paths,
    summarize,
)
from .video import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

PROG = "deepfake-detector"
DEFAULT_MODEL = Path("models/model.pt")
# Written by the predict_videos stage next to the default model: the aggregation and
# threshold it chose on the validation split for that checkpoint.
DEFAULT_CALIBRATION = Path("outputs/predict_metrics.json")
DEFAULT_FRAMES = 16
VIDEO_SUFFIXES = (".avi", ".flv", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".webm", ".wmv")
MEDIA_SUFFIXES = VIDEO_SUFFIXES + IMAGE_SUFFIXES
EXPLAIN_MODULE = "deepfake_detector.explain"
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
            media = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
            if not media:
                logger.warning("%s: no video or image files (%s) in it", item, " ".join(MEDIA_SUFFIXES))
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
    p = sub.add_parser("predict", help="judge video or image files", description="Judge video or image files: fake, real, uncertain, no_face or unreadable.")
    p.add_argument("inputs", nargs="+", type=Path, metavar="VIDEO_OR_DIR", help="files, or directories to search recursively")
    p.add_argument("--model", type=Path, default=None, help=f"checkpoint (default {DEFAULT_MODEL}, the pipeline's)")
    p.add_argument("--frames", type=_positive_int, default=None, help=f"frames sampled per video (default: the checkpoint's config, else {DEFAULT_FRAMES})")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", type=Path, default=None, metavar="OUT",
                     help="also write the results as JSON (- for stdout; the table then goes to stderr)")
    out.add_argument("--csv", type=Path, default=None, metavar="OUT",
                     help="also write the results as CSV, video_predictions.csv columns (- for stdout)")
    p.add_argument("--explain", type=Path, default=None, metavar="DIR", help="write a Grad-CAM report per judged video under DIR")
    p.add_argument("--params", type=Path, default=None, help="use this file's crop_faces and predict_videos sections (default: built-in defaults)")
    p.add_argument("--calibration", type=Path, default=None,
                   help=f"predict_videos metrics with the chosen aggregation/threshold (default {DEFAULT_CALIBRATION} when present "
                        "and made for this model, else the checkpoint's)")
    return parser


def _load_checkpoint(path: Path | None) -> tuple[Path, Any, CheckpointMeta]:
    if path is None:
        path = DEFAULT_MODEL
        if not path.is_file():
            raise UsageError(
                f"no model at {path}: make one with `make demo` (trains on the embedded sample) "
                "or `dvc repro`, or pass --model PATH"
            )
    try:
        model, meta = load_model(path)
    except CheckpointError as exc:
        raise UsageError(f"--model: {exc}") from exc
    return path, model, meta


def _load_params(path: Path | None) -> tuple[CropParams, PredictParams]:
    if path is None:
        return CropParams(), PredictParams()
    try:
        return load_section(CropParams, "crop_faces", path), load_section(PredictParams, "predict_videos", path)
    except ConfigError as exc:
        raise UsageError(f"--params: {exc}") from exc


def _load_calibration(path: Path | None, meta: CheckpointMeta) -> Calibration:
    if path is not None:
        if not path.is_file():
            raise UsageError(f"--calibration: file not found: {path}")
        try:
            return load_calibration(path, meta)
        except ValueError as exc:
            raise UsageError(f"--calibration: {exc}") from exc
    if DEFAULT_CALIBRATION.is_file():
        try:
            return load_calibration(DEFAULT_CALIBRATION, meta)
        except ValueError as exc:
            logger.warning("%s; using the checkpoint's aggregation and threshold", exc)
    return calibration_from_checkpoint(meta)


ExplainFn = Callable[..., Path]


def _load_explainer() -> tuple[ExplainFn, Any]:
    """``(explain_video, GradcamParams())``, imported only for ``--explain``: Grad-CAM pulls in
    pytorch_grad_cam and matplotlib, which plain prediction does not need."""
    module = importlib.import_module(EXPLAIN_MODULE)
    return module.explain_video, module.GradcamParams()


def _explain_dir(root: Path, path: Path, used: set[str]) -> Path:
    """A distinct, filesystem-safe folder per file: its stem, suffixed on repeats."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem) or "video"
    name, k = base, 2
    while name in used:
        name, k = f"{base}_{k}", k + 1
    used.add(name)
    return root / name


def _fmt_prob(v: VideoVerdict) -> str:
    return "-" if v.prob_fake is None else f"{v.prob_fake:.3f}"


# Column widths of the verdict table, fixed so that each row can be printed as soon as its
# file is judged (the file name and the reason take what they need at the end of the line).
TABLE_COLUMNS = (("VERDICT", 10), ("P(FAKE)", 7), ("FACES", 5), ("FRAMES", 7), ("FILE", 0), ("REASON", 0))


def _table_line(cells: Sequence[str]) -> str:
    parts = []
    for i, (cell, (_, width)) in enumerate(zip(cells, TABLE_COLUMNS)):
        parts.append(cell.rjust(width) if i in (1, 2, 3) else cell.ljust(width))
    return "  ".join(parts).rstrip()


def table_header() -> str:
    """The verdict table's column titles."""
    return _table_line([name for name, _ in TABLE_COLUMNS])


def table_row(v: VideoVerdict) -> str:
    """One file's line of the verdict table (the reason only where there is no plain verdict)."""
    reason = v.reason if v.verdict in (NO_FACE, UNREADABLE, "uncertain") else ""
    return _table_line([v.verdict, _fmt_prob(v), str(v.n_faces), f"{v.n_frames_with_face}/{v.n_frames_sampled}",
                        v.video_path, reason])


def table_footer(verdicts: Sequence[VideoVerdict]) -> str:
    """Counts of each verdict."""
    counts = summarize(verdicts)
    return f"{len(verdicts)} file(s): " + ", ".join(f"{n} {v}" for v, n in counts.items())


def _predict(args: argparse.Namespace) -> int:
    model_path, model, meta = _load_checkpoint(args.model)
    crop_params, params = _load_params(args.params)
    calibration = _load_calibration(args.calibration, meta)
    n_frames = args.frames or int(meta.config.get("frames_per_video", DEFAULT_FRAMES))
    paths = find_media(args.inputs)
    if not paths:
        raise UsageError("no video or image files to judge in: " + " ".join(str(p) for p in args.inputs))
    explainer = _load_explainer() if args.explain is not None else None

    rt = setup_runtime("auto")
    detector = FaceDetector(crop_params)  # built once: MTCNN set-up is not free
    results = predict_paths(paths, model, meta, detector, crop_params, params, n_frames,
                            keep_frames=explainer is not None, calibration=calibration, runtime=rt)
    # With `--json -` or `--csv -` the data owns stdout, so the human-readable table goes to stderr.
    table = sys.stderr if STDOUT in (args.json, args.csv) else sys.stdout
    header = [
        f"model: {model_path} ({meta.arch}, input {meta.input_size} px, weights {meta.weights_sha256[:12]})",
        f"aggregation: {calibration.aggregation}, threshold {calibration.threshold:.3f} (from {calibration.source}), "
        f"abstain band +/-{params.abstain_band:g}, {n_frames} frames per video, runtime {rt.describe()}",
        table_header(),
    ]
    print("\n".join(header), file=table, flush=True)
    verdicts: list[VideoVerdict] = []
    reports: dict[int, str] = {}
    used_dirs: set[str] = set()
    for i, pred in enumerate(results):
        verdicts.append(pred.verdict)
        print(table_row(pred.verdict), file=table, flush=True)  # each verdict as soon as it is reached
        if explainer is not None and pred.verdict.prob_fake is not None:
            reports[i] = _run_explain(explainer, model, meta, pred, _explain_dir(args.explain, paths[i], used_dirs))
    print(table_footer(verdicts), file=table)
    for i, report in sorted(reports.items()):
        print(f"Grad-CAM {verdicts[i].video_path}: {report}", file=table)

    rows = [v.to_row() for v in verdicts]
    if args.json is not None:
        for i, report in reports.items():
            rows[i]["explain_report"] = report
        payload = {
            "model": str(model_path), "weights_sha256": meta.weights_sha256,
            "aggregation": calibration.aggregation, "threshold": calibration.threshold,
            "calibration": calibration.source, "abstain_band": params.abstain_band,
            "frames_per_video": n_frames, "verdicts": summarize(verdicts), "videos": rows,
        }
        text = json.dumps(payload, indent=2) + "\n"
        if args.json == STDOUT:
            sys.stdout.write(text)
        else:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(text)
    if args.csv is not None:
        df = pd.DataFrame(rows, columns=PREDICTION_COLUMNS)
        if args.csv == STDOUT:
            df.to_csv(sys.stdout, index=False, lineterminator="\n")
        else:
            records.write_csv(df, args.csv, PREDICTION_COLUMNS)
    return 0


def _run_explain(explainer: tuple[ExplainFn, Any], model: Any, meta: CheckpointMeta, pred: PathPrediction, out_dir: Path) -> str:
    """Write one file's Grad-CAM report; a failure is reported on that file, not fatal."""
    fn, gradcam_params = explainer
    try:
        return str(fn(model, meta, pred.verdict, pred.faces, pred.crops, pred.frames, out_dir, gradcam_params))
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
