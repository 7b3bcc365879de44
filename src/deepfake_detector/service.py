"""The judging service both user interfaces use: which detector, one file judged, one explained.

The ``deepfake-detector`` command (:mod:`cli`: ``predict``) and the web demo (:mod:`web`:
``serve``) judge and explain files through this module and nothing else, so a file gets the
same verdict and the same report from either; neither interface imports the other for it.

- Model discovery: :func:`default_model` (the released detector, ``release/detector.pt``, in
  the current directory or in the checkout this package runs from), :func:`model_card`, and
  :func:`resolve_model`, which checks a detector file without loading it.
- :class:`Judge`: one file at a time through the pipeline's own code
  (:func:`judge.judge_paths`) with the detector's own calibration; the detector, MTCNN and
  the runtime are loaded on first use (PyTorch alone takes seconds to import).
- :func:`explain_file`: one judged file's Grad-CAM montage, probability plot and report,
  written whole or not at all (:func:`atomic.atomic_dir`).

A problem with what the user asked for (a missing or wrong model file) is a
:class:`UsageError`, which each interface reports in its own way.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from . import records
from .core.atomic import atomic_dir
from .media.probe import entry_problem
from .media.video import MAX_FRAMES_DECODED, VideoReadError, check_readable

if TYPE_CHECKING:  # the real imports are deferred: they load PyTorch
    from .explanations.explain import VideoExplanation
    from .faces.detection import FaceDetector
    from .model.engine import Runtime
    from .verdicts.calibration import Detector
    from .verdicts.judge import PathPrediction

logger = logging.getLogger(__name__)

# The released detector (release/dvc.yaml, kept in git), the default: looked for in the
# current directory, then in the checkout this package runs from.
RELEASED_MODEL = Path("release/detector.pt")
# The detector the sample pipeline makes (the calibrate stage of `make demo`): a model trained
# on a few dozen synthetic clips, so it judges only when asked for with --model.
PIPELINE_MODEL = Path("models/detector.pt")
# A detector's model card: this file in its checkpoint's folder (release/MODEL_CARD.md).
MODEL_CARD = "MODEL_CARD.md"
# The checkout this package runs from (an editable install): where the released detector and
# the embedded sample are looked for when they are not in the current directory.
CHECKOUT = Path(__file__).resolve().parents[2]


class UsageError(Exception):
    """A problem with what the user asked for (reported with exit status 2)."""


def default_model() -> tuple[Path, str]:
    """The detector to use without ``--model``, and which one it is, in words.

    Always the released detector, even where ``make demo`` has made the sample pipeline's
    ``models/detector.pt``: that one is trained on a few dozen synthetic clips, and judging
    someone's video with it must be asked for (``--model models/detector.pt``).

    Returns:
        ``(path, which)``: ``release/detector.pt`` in the current directory, else in the
        checkout this package runs from.

    Raises:
        UsageError: If there is no released detector in either place; the message says how
            to get one.
    """
    for candidate in (RELEASED_MODEL, CHECKOUT / RELEASED_MODEL):
        if candidate.is_file():
            # Someone who has run `make demo` may expect its detector: say how to get it.
            return candidate, "the released detector" + (
                f" (the default; --model {PIPELINE_MODEL} for the sample pipeline's)" if PIPELINE_MODEL.is_file() else "")
    pipeline = (f"pass --model {PIPELINE_MODEL} to use the sample pipeline's detector" if PIPELINE_MODEL.is_file()
                else f"pass --model PATH (e.g. --model {PIPELINE_MODEL} after `make demo` or `dvc repro`)")
    raise UsageError(
        f"no released detector at {RELEASED_MODEL} (looked in the current directory and in {CHECKOUT}): "
        f"restore it with `git checkout -- {RELEASED_MODEL}` in the checkout, or {pipeline}"
    )


def model_card(model_path: Path) -> Path | None:
    """The model card of a detector: ``MODEL_CARD.md`` in its checkpoint's folder.

    Args:
        model_path: The detector checkpoint.

    Returns:
        The card's path (``release/MODEL_CARD.md`` for the released detector), or None when
        that folder has none.
    """
    card = model_path.parent / MODEL_CARD
    return card if card.is_file() else None


def resolve_model(path: Path | None) -> tuple[Path, str]:
    """The detector file and which one it is, checked without loading it (that waits for the
    first file that decodes).

    Args:
        path: ``--model`` as given (None: :func:`default_model`).

    Returns:
        ``(path, which)``: the checkpoint, and which detector it is, in words.

    Raises:
        UsageError: If there is no such file, it cannot be read, or it is not a PyTorch
            checkpoint (a zip archive).
    """
    which = "given with --model"
    if path is None:
        path, which = default_model()
    problem = entry_problem(path)
    if problem:
        raise UsageError(f"--model: {problem}")
    if path.stat().st_size == 0:
        raise UsageError(f"--model: empty file (0 bytes): {path}")
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError as exc:
        raise UsageError(f"--model: cannot read {path} ({exc.strerror or exc})") from exc
    if not is_zip:
        raise UsageError(f"--model: {path} is not a PyTorch checkpoint (torch.save writes a zip archive)")
    return path, which


class Judge:
    """Judges one file at a time; loads the detector, MTCNN and the runtime on first use.

    Shared by ``predict`` (:mod:`cli`) and the web demo (:mod:`web`): both judge a file
    with :meth:`judge_file` and explain it with :func:`explain_file`.

    Args:
        model_path: The detector checkpoint.
        which: Which detector it is, in words (printed with its description and model card).
        frames: ``--frames`` (None: the calibration's).
        keep_frames: Keep the sampled frames (for Grad-CAM).
        table: Where the model's description is printed once it is loaded.
        max_frames: Decode at most this many frames per video.
        max_decoded_pixels: Decode at most this many pixels per video (None: no such budget).
    """

    def __init__(self, model_path: Path, which: str, frames: int | None, keep_frames: bool, table: object,
                 max_frames: int = MAX_FRAMES_DECODED, max_decoded_pixels: int | None = None) -> None:
        self.model_path = model_path
        self.which = which
        self.frames = frames
        self.keep_frames = keep_frames
        self.table = table
        self.max_frames = max_frames
        self.max_decoded_pixels = max_decoded_pixels
        self.detector: Detector | None = None
        self.face_detector: FaceDetector | None = None
        self.runtime: Runtime | None = None

    def card_text(self) -> str:
        """Where the detector's model card is (:func:`model_card`): ``model card PATH`` or ``no model card``."""
        card = model_card(self.model_path)
        return f"model card {card}" if card is not None else "no model card"

    @property
    def n_frames(self) -> int | None:
        """Frames per video in use (None until the detector is loaded, unless ``--frames``)."""
        if self.frames or self.detector is None:
            return self.frames
        return self.detector.calibration.frames_per_video

    def load(self) -> Detector:
        """Load the detector and build MTCNN (once), and say which model judges."""
        if self.detector is not None:
            return self.detector
        # Imported here: PyTorch, torchvision and facenet-pytorch take seconds to import.
        from .faces.detection import FaceDetector
        from .model.engine import setup_runtime
        from .model.network import CheckpointError
        from .verdicts.calibration import load_detector

        try:
            detector = load_detector(self.model_path)
        except CheckpointError as exc:
            raise UsageError(f"--model: {exc}") from exc
        cal = detector.calibration
        self.runtime = setup_runtime("auto")
        self.face_detector = FaceDetector(cal.crop)
        self.detector = detector
        print(f"model: {detector.path}, {self.which} ({detector.meta.arch}, input {detector.meta.input_size} px, "
              f"weights {detector.meta.weights_sha256[:12]}); {self.card_text()}", file=self.table)
        print(f"calibration: {cal.describe()}" + (f"; --frames {self.frames} overrides it" if self.frames else "")
              + f"; runtime {self.runtime.describe()}", file=self.table, flush=True)
        return detector

    def unreadable(self, path: Path, reason: str) -> records.VideoVerdict:
        """The row of a file that was refused before any model was needed."""
        cal = self.detector.calibration if self.detector is not None else None
        return records.VideoVerdict(
            video_id=str(path), video_path=str(path), true_label=None, split=None, verdict=records.UNREADABLE,
            reason=reason, prob_fake=None, threshold=cal.threshold if cal else None,
            aggregation=cal.aggregation if cal else None)

    def __call__(self, path: Path) -> PathPrediction:
        """Judge one file that :func:`video.check_readable` accepted."""
        from .verdicts.judge import judge_paths

        detector = self.load()
        return next(judge_paths([path], detector, face_detector=self.face_detector, n_frames=self.n_frames,
                                keep_frames=self.keep_frames, runtime=self.runtime, max_frames=self.max_frames,
                                max_decoded_pixels=self.max_decoded_pixels))

    def judge_file(self, path: Path) -> tuple[records.VideoVerdict, PathPrediction | None]:
        """Judge one file: refused cheaply (no model loaded) when it cannot be decoded.

        Returns:
            The verdict, and the prediction (faces, crops, frames) when the file decoded.
        """
        try:
            check_readable(path)  # no model is loaded for a file that cannot be decoded
        except VideoReadError as exc:
            return self.unreadable(path, str(exc)), None
        pred = self(path)
        return pred.verdict, pred


def explain_file(detector: Detector, pred: PathPrediction, out_dir: Path) -> VideoExplanation | str:
    """Write one judged file's Grad-CAM montage, probability plot and report under ``out_dir``.

    Explained with the detector's own settings (``detector.calibration.explain``), as the
    gradcam stage explains the pipeline's videos.

    The folder is made under a temporary name next to ``out_dir`` and renamed onto it when
    complete (:func:`atomic.atomic_dir`): a failure or an interruption leaves the previous
    report there, whole.

    Returns:
        What :func:`explain.build_explanation` wrote (its ``report`` path inside ``out_dir``),
        or ``"failed: <why>"``: a failure is reported on that file, not fatal (one file's
        report must not lose the other verdicts).
    """
    # Imported here: Grad-CAM pulls in pytorch_grad_cam and matplotlib, which plain
    # prediction does not need.
    from .explanations.explain import build_explanation

    try:
        with atomic_dir(out_dir) as building:
            result = build_explanation(detector.model, detector.meta, pred.verdict, pred.faces, pred.crops,
                                       pred.frames, building, detector.calibration.explain)
    except Exception as exc:  # one file's report must not lose the other files' verdicts
        logger.error("Grad-CAM failed for %s: %s: %s", pred.verdict.video_path, type(exc).__name__, exc)
        return f"failed: {type(exc).__name__}: {exc}"
    result.report = Path(out_dir) / result.report.name  # where the folder is now
    return result
