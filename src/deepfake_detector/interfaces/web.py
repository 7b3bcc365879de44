"""The web demo (``deepfake-detector serve``): upload a video, see its verdict and the evidence.

One page, built with Gradio (the ``demo`` extra; imported only by :func:`build_app` and
:func:`serve`, so the rest of this module, and ``predict``, never load it). An upload goes
through the judging service the CLI uses too (:mod:`service`): :meth:`service.Judge.judge_file`
(the pipeline's decoding, face detection, eval transform, the served detector's own calibration)
and :func:`service.explain_file` (the Grad-CAM montage, the per-frame probability plot and the
self-contained report that ``predict --explain`` writes). Nothing about the verdict is decided here.

Bounded per request, on top of what every input gets (:mod:`media`, :mod:`video`): the upload
size (:data:`MAX_UPLOAD_MB`, enforced by the server and checked again here), the frames and
pixels decoded (:data:`MAX_FRAMES_PER_REQUEST`, :data:`MAX_DECODED_PIXELS`: a 10-minute or 4K video
is judged on its first frames, and the page says so), and one request judged at a time (a
bounded queue). A bad upload gets its reason in the page; an unexpected failure is logged
with its traceback on the server and reported in one line in the page; the server keeps
serving either way.

A demo that starts like a demo: :func:`serve` imports gradio (about 4 s), serves the page,
and only then loads the detector, MTCNN and Grad-CAM (PyTorch and the rest: the bulk of a
start) in a background thread (:meth:`WebJudge.start_loading`). Until they are ready the page
says so and its Judge button is disabled; a request that comes through the API meanwhile waits
for them. A model that fails to load stops the server with its reason, as it did when it was
loaded before serving. Ctrl-C stops the server (``KeyboardInterrupt``, which the CLI turns into
one line and status 130); SIGTERM stops it too (status 0).

Example:
    >>> web = WebJudge(Path("release/detector.pt"), "the released detector")  # doctest: +SKIP
    >>> build_app(web).launch(server_name="127.0.0.1")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import html
import importlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import pandas as pd

from .. import records
from ..service import CHECKOUT, Judge, UsageError, explain_file

if TYPE_CHECKING:
    import gradio

logger = logging.getLogger(__name__)

# Set before gradio is imported: a local demo makes no calls home.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

# Largest upload accepted, MB: a minute of 1080p phone video is about 100-150 MB.
MAX_UPLOAD_MB = 200
# Frames decoded per request (1 minute at 30 fps): a longer video is judged on its first minute.
# The demo's own budget, far below the pipeline's per-video cap (video.MAX_FRAMES_DECODED).
MAX_FRAMES_PER_REQUEST = 1800
# Pixels decoded per request: 1800 frames of 1280x720 (1.66 Gpx). Decoding time follows the
# pixels, so a 1080p video is judged on its first 800 frames and a 4K one on its first 200.
MAX_DECODED_PIXELS = 1800 * 1280 * 720
# Requests waiting for their turn (one is judged at a time: the model and MTCNN are shared).
MAX_QUEUE = 16
# Output folders of the last requests kept on disk (older ones are deleted).
KEEP_RESULTS = 8
# The embedded sample (the make_sample stage), offered as examples when it is there.
SAMPLE_DIR = Path("data/sample")
# What the page says while the model loads, and what the server prints (stderr) when it is ready.
LOADING_TEXT = ("**Loading the model** (PyTorch, the detector, the face detector and Grad-CAM): "
                "the Judge button comes on when it is ready, in a few seconds.")
READY_LINE = "model ready"
# How often an open page asks whether the model is ready, s.
POLL_S = 1.0

# (fraction done, what is happening) -> None
ProgressFn = Callable[[float, str], None]


@dataclass
class Analysis:
    """What the page shows for one upload.

    Attributes:
        verdict: The verdict row (``unreadable`` for a refused upload).
        summary: The verdict and what it rests on, as Markdown.
        plot: PNG of the per-frame fake probability (None without face scores).
        montage: PNG of the Grad-CAM montage (None without face scores).
        report: The self-contained ``report.html`` to download (None without face scores).
    """

    verdict: records.VideoVerdict
    summary: str
    plot: Path | None = None
    montage: Path | None = None
    report: Path | None = None


def sample_clips(root: Path | None = None) -> list[Path]:
    """One clip per manipulation of the embedded sample (real, self-blended, swap), if it is there.

    Args:
        root: The sample folder (default ``data/sample`` in the current directory, else in the checkout).
    """
    for folder in [root] if root is not None else [SAMPLE_DIR, CHECKOUT / SAMPLE_DIR]:
        labels = folder / "labels.csv"
        if labels.is_file():
            table = pd.read_csv(labels)
            firsts = table.drop_duplicates("manipulation")["file"]
            return [folder / f for f in firsts if (folder / f).is_file()]
    return []


def _md(text: object) -> str:
    """Text from a file name or a reason, safe inside the page's Markdown."""
    return html.escape(str(text), quote=False).replace("*", "\\*").replace("_", "\\_").replace("`", "\\`")


class WebJudge:
    """Judges and explains uploads, one at a time, with the judging service's :class:`service.Judge`.

    Args:
        model_path: The detector checkpoint (checked by the caller).
        which: Which detector it is, in words.
        work_dir: Where each request's report folder is written (a temporary folder by default).
        max_upload_mb: Largest upload accepted.
    """

    def __init__(self, model_path: Path, which: str, work_dir: Path | None = None,
                 max_upload_mb: int = MAX_UPLOAD_MB) -> None:
        self.judge = Judge(model_path, which, frames=None, keep_frames=True, table=sys.stderr,
                           max_frames=MAX_FRAMES_PER_REQUEST, max_decoded_pixels=MAX_DECODED_PIXELS)
        self.work_dir = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="dfd-web-"))
        self.max_upload_mb = max_upload_mb
        self._results: deque[Path] = deque()
        self._count = 0
        self._load_lock = threading.Lock()
        self.about: str | None = None  # the page's model description, once the model is loaded
        self.load_error: BaseException | None = None  # why loading in the background failed

    def ensure_loaded(self) -> str:
        """Load the model, MTCNN and the Grad-CAM code once (whoever asks first loads; the others wait).

        Returns:
            The page's model description (:meth:`describe`).
        """
        with self._load_lock:
            if self.about is None:
                about = self.describe()
                importlib.import_module("..explanations.explain", __package__)  # Grad-CAM's imports, before the first upload
                self.about = about
        return self.about

    def start_loading(self) -> threading.Thread:
        """Load in a background thread (:meth:`ensure_loaded`); a failure is kept in :attr:`load_error`."""
        def load() -> None:
            t0 = time.perf_counter()
            try:
                self.ensure_loaded()
            except Exception as exc:  # handed to the main thread, which stops the server with it
                logger.debug("loading the model failed", exc_info=True)
                self.load_error = exc
                return
            print(f"{READY_LINE} ({time.perf_counter() - t0:.1f} s after the page)", file=sys.stderr, flush=True)

        thread = threading.Thread(target=load, name="load model", daemon=True)
        thread.start()
        return thread

    def describe(self) -> str:
        """The served model, its model card and its calibration, as Markdown (loads the model).

        The model as ``predict`` prints it: its path, which detector it is, and where its
        model card is (:meth:`service.Judge.card_text`).
        """
        detector = self.judge.load()
        cal = detector.calibration
        return (f"**Model** {_md(detector.path)} ({_md(self.judge.which)}; {detector.meta.arch}, "
                f"weights `{detector.meta.weights_sha256[:12]}`; {_md(self.judge.card_text())}). "
                f"**Calibration**: fake when P(fake) >= "
                f"**{cal.threshold:.3f}**, *uncertain* within +/-{cal.abstain_band:g} of it or with fewer than "
                f"{cal.min_faces} face(s) scored; {cal.frames_per_video} frames sampled per video, aggregation "
                f"`{cal.aggregation}`. **Limits**: uploads up to {self.max_upload_mb} MB; a video is judged on "
                f"its first {MAX_FRAMES_PER_REQUEST} frames, fewer above 1280x720 "
                f"({MAX_DECODED_PIXELS / 1e9:.2f} Gpx decoded per request).")

    def _new_dir(self) -> Path:
        """A fresh folder for this request; the oldest beyond :data:`KEEP_RESULTS` are deleted."""
        self._count += 1
        out = self.work_dir / f"request_{self._count:05d}"
        self._results.append(out)
        while len(self._results) > KEEP_RESULTS:
            shutil.rmtree(self._results.popleft(), ignore_errors=True)
        return out

    def analyse(self, path: str | Path | None, progress: ProgressFn | None = None) -> Analysis:
        """Judge and explain one upload.

        Args:
            path: The uploaded file (None: nothing was uploaded).
            progress: Told what is happening, with the fraction done.

        Returns:
            What to show. Never raises for a bad file: its verdict is ``unreadable`` or
            ``no_face`` with the reason.
        """
        report = progress or (lambda fraction, what: None)
        if path is None:
            v = self.judge.unreadable(Path("(nothing)"), "no file uploaded: choose a video or image file first")
            return Analysis(v, self._summary(v))
        path = Path(path)
        report(0.05, "checking the file")
        size = path.stat().st_size if path.is_file() else 0
        if size > self.max_upload_mb * 1_000_000:
            v = self.judge.unreadable(path, f"{size / 1e6:.1f} MB is above this server's upload limit of "
                                            f"{self.max_upload_mb} MB: {path.name}")
            return Analysis(v, self._summary(v, path))
        if self.about is None:
            report(0.1, "waiting for the model to load")
        self.ensure_loaded()
        report(0.15, "decoding frames, finding faces, scoring them")
        verdict, pred = self.judge.judge_file(path)
        if pred is None or verdict.prob_fake is None:  # unreadable or no face: nothing to explain
            return Analysis(verdict, self._summary(verdict, path))
        report(0.7, "Grad-CAM on the most and least suspicious faces")
        result = explain_file(self.judge.detector, pred, self._new_dir())
        if isinstance(result, str):  # the verdict stands without its evidence
            return Analysis(verdict, self._summary(verdict, path, f"Grad-CAM {result}"))
        report(1.0, "done")
        from ..explanations.explain import MONTAGE_FILE, PLOT_FILE

        folder = result.report.parent
        return Analysis(verdict, self._summary(verdict, path), folder / PLOT_FILE, folder / MONTAGE_FILE, result.report)

    def _summary(self, v: records.VideoVerdict, path: Path | None = None, extra: str = "") -> str:
        """The verdict, its score against the threshold and band, and why, as Markdown (the
        upload's server-side folder left out)."""
        cal = self.judge.detector.calibration if self.judge.detector is not None else None
        lines = [f"## Verdict: {v.verdict.upper()}"]
        reason = v.reason
        if path is not None:
            lines.append(f"File: {_md(path.name)}")
            reason = reason.replace(str(path), path.name)
        if v.prob_fake is not None and cal is not None:
            lines.append(f"P(fake) **{v.prob_fake:.3f}**; threshold {cal.threshold:.3f}, abstain band +/-{cal.abstain_band:g} "
                         f"(uncertain between {max(0.0, cal.threshold - cal.abstain_band):.3f} and "
                         f"{min(1.0, cal.threshold + cal.abstain_band):.3f})")
            lines.append(f"{v.n_faces} face(s) in {v.n_frames_with_face} of {v.n_frames_sampled} sampled frames, "
                         f"aggregation `{v.aggregation}`")
        lines.append(f"Reason: {_md(reason)}")
        if extra:
            lines.append(_md(extra))
        return "\n\n".join(lines)


# What the page's outputs get: the verdict (Markdown), the plot, the montage, the report.
PageOutputs = tuple[str, str | None, str | None, str | None]


def page_outputs(web: WebJudge, upload: str | None, progress: ProgressFn | None = None) -> PageOutputs:
    """:meth:`WebJudge.analyse` for the page: an unexpected failure becomes one line there (and a
    traceback in the server's log), and the server keeps serving."""
    try:
        a = web.analyse(upload, progress=progress)
    except Exception as exc:  # no stack trace in the page; the next upload must work
        logger.exception("failed on upload %s", upload)
        name = Path(upload).name if upload else ""
        return (f"## Verdict: ERROR\n\nThe server failed on {_md(name)} ({_md(type(exc).__name__)}: "
                f"{_md(str(exc).replace(str(upload), name))}); it keeps serving.", None, None, None)
    return a.summary, a.plot and str(a.plot), a.montage and str(a.montage), a.report and str(a.report)


def page_state(web: WebJudge) -> tuple[str, bool]:
    """What the page's model panel says, and whether its Judge button is on (the model is loaded)."""
    if web.about is not None:
        return web.about, True
    if web.load_error is not None:
        return f"**The model could not be loaded**: {_md(web.load_error)}", False
    return LOADING_TEXT, False


def build_app(web: WebJudge, examples: list[Path] | None = None) -> gradio.Blocks:
    """The page: upload (or pick an example), judge, see the verdict, plot, montage and report.

    Loads nothing: until ``web`` has loaded the model (:meth:`WebJudge.start_loading`) the model
    panel says it is loading and the Judge button is off; an open page asks every
    :data:`POLL_S` s, outside the one-at-a-time queue of the judging.

    Args:
        web: What judges the uploads.
        examples: Clips offered as examples (default :func:`sample_clips`).
    """
    import gradio as gr

    examples = sample_clips() if examples is None else examples
    text, ready = page_state(web)

    def judge(upload: str | None, progress: gr.Progress = gr.Progress(track_tqdm=True)) -> PageOutputs:  # noqa: B008
        return page_outputs(web, upload, lambda fraction, what: progress(fraction, desc=what))

    def refresh() -> tuple[str, gradio.Button, gradio.Timer]:
        text, ready = page_state(web)
        return text, gr.Button(interactive=ready), gr.Timer(active=not ready and web.load_error is None)

    with gr.Blocks(title="deepfake-detector", delete_cache=(600, 3600)) as app:
        gr.Markdown("# deepfake-detector\nUpload a video (or a photo) to judge whether its faces are deepfakes. "
                    "The verdict is fake, real, uncertain, no_face or unreadable.")
        about = gr.Markdown(text, elem_id="about")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Video or image", type="filepath", file_count="single", elem_id="upload")
                button = gr.Button("Judge", variant="primary", elem_id="judge", interactive=ready)
                if examples:
                    gr.Examples([[str(p)] for p in examples], inputs=[upload], label="Embedded sample clips")
            with gr.Column(scale=2):
                verdict = gr.Markdown("Upload a file and press **Judge**.", elem_id="verdict")
                report = gr.File(label="Report (self-contained HTML)", elem_id="report")
        gr.Markdown("### P(fake) per sampled frame\nEach face's fake probability, the most suspicious face per frame, "
                    "the threshold, and the frames explained below.")
        plot = gr.Image(show_label=False, type="filepath", elem_id="plot")
        gr.Markdown("### Grad-CAM evidence\nWhere the fake score came from: the most suspicious faces (top row, red) "
                    "and the least suspicious (bottom row, blue).")
        montage = gr.Image(show_label=False, type="filepath", elem_id="montage")
        button.click(judge, inputs=[upload], outputs=[verdict, plot, montage, report], api_name="judge")
        timer = gr.Timer(POLL_S, active=not ready)
        for event in (timer.tick, app.load):  # app.load: a page opened after loading shows it at once
            event(refresh, outputs=[about, button, timer], show_progress="hidden", concurrency_limit=None,
                  api_visibility="private")
    app.queue(max_size=MAX_QUEUE, default_concurrency_limit=1)
    return app


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _on_sigterm(action: Callable[[], None]) -> Iterator[None]:
    """Run ``action`` on SIGTERM inside the block (only the main thread can set a signal handler)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: action())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait(web: WebJudge, stop: threading.Event) -> None:
    """Block until ``stop`` is set (SIGTERM) or Ctrl-C (``KeyboardInterrupt``).

    Raises:
        UsageError: If the model failed to load in the background.
    """
    # Polled rather than stop.wait(): a signal handler that sets an Event the main thread is
    # waiting on can deadlock on the Event's own lock.
    while not stop.is_set():
        error = web.load_error
        if isinstance(error, UsageError):
            raise error
        if error is not None:
            raise UsageError(f"--model: could not load {web.judge.model_path}: {type(error).__name__}: {error}") from error
        time.sleep(0.2)


def serve(model_path: Path, which: str, host: str = "127.0.0.1", port: int = 7860, max_upload_mb: int | None = None,
          share: bool = False) -> None:
    """Start the web demo and block until stopped: the page first, the model loading behind it.

    Args:
        model_path: The detector checkpoint.
        which: Which detector it is, in words.
        host: Address to bind (loopback by default: this machine only).
        port: Port (0: a free one).
        max_upload_mb: Largest upload accepted (default :data:`MAX_UPLOAD_MB`).
        share: Also open a public share link (never unless asked).

    Returns:
        After SIGTERM, with the server closed.

    Raises:
        KeyboardInterrupt: On Ctrl-C, with the server closed.
        UsageError: If the model cannot be loaded (the server is closed).
    """
    import gradio as gr

    limit = max_upload_mb or MAX_UPLOAD_MB
    clips = sample_clips()
    port = port or free_port(host)
    # System fonts: the default theme would ask Google Fonts, which an offline machine cannot reach.
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="dfd-web-") as work, _on_sigterm(stop.set):  # the reports go at the end
        web = WebJudge(model_path, which, work_dir=Path(work), max_upload_mb=limit)
        app = build_app(web, examples=clips)
        app.launch(server_name=host, server_port=port, share=share, max_file_size=limit * 1_000_000,
                   allowed_paths=sorted({str(p.parent) for p in clips}), show_error=False, inbrowser=False, quiet=True,
                   theme=theme, footer_links=[], prevent_thread_lock=True)
        try:
            print(f"deepfake-detector web demo on http://{host}:{port}/ (Ctrl+C stops it); loading the model",
                  file=sys.stderr, flush=True)
            web.start_loading()
            _wait(web, stop)
        finally:
            app.close(verbose=False)
    print("deepfake-detector web demo stopped (SIGTERM)", file=sys.stderr, flush=True)
