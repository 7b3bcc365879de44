"""The web demo: its function on a real clip and on bad files, the server through gradio_client,
and the page in headless Chromium (a random-init 32 px detector: plumbing, not accuracy)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import cv2
import pytest

from conftest import noise_frames, portrait_frames, write_clip
from deepfake_detector import service
from deepfake_detector.interfaces import cli, web
from deepfake_detector.media.video import read_frames
from deepfake_detector.verdicts.calibration import ExplainParams
from full_params import full
from test_calibrate import make_calibration
from test_predict import save_detector

pytest.importorskip("gradio", reason="the web demo's tests need the demo extra (pip install -e .[demo])")

SCORED = ("FAKE", "REAL", "UNCERTAIN")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A calibrated random-init detector: 3 frames per video, threshold 0.4, band 0.05, and
    Grad-CAM on 2 frames each way (not params.yaml's 3)."""
    path = tmp_path_factory.mktemp("ckpt") / "detector.pt"
    explain = full(ExplainParams, top_k=2)
    return save_detector(path, make_calibration(threshold=0.4, aggregation="mean_logit", frames=3, explain=explain))


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A clip with a real face, one without, and the bad uploads of the issue."""
    root = tmp_path_factory.mktemp("uploads")
    good = write_clip(root / "face clip.mp4", portrait_frames(12))
    data = good.read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.mp4").write_text("this is not a video\n")
    return {"good": good, "noise": write_clip(root / "noise.mp4", noise_frames(6)), "truncated": root / "truncated.mp4",
            "empty": root / "empty.mp4", "text": root / "notes.mp4"}


@pytest.fixture(scope="module")
def judge(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> web.WebJudge:
    """The page's judge, model loaded once for the module."""
    return web.WebJudge(checkpoint, "a test detector", work_dir=tmp_path_factory.mktemp("web"))


def test_real_clip_gets_verdict_plot_montage_and_report(judge: web.WebJudge, clips: dict[str, Path]) -> None:
    steps: list[tuple[float, str]] = []
    a = judge.analyse(str(clips["good"]), progress=lambda fraction, what: steps.append((fraction, what)))
    assert a.verdict.verdict in ("fake", "real", "uncertain") and a.verdict.n_frames_sampled == 3
    assert a.verdict.threshold == 0.4 and a.verdict.aggregation == "mean_logit"  # the served detector's calibration
    assert f"P(fake) **{a.verdict.prob_fake:.3f}**; threshold 0.400, abstain band +/-0.05" in a.summary
    assert "(uncertain between 0.350 and 0.450)" in a.summary and "face clip.mp4" in a.summary
    for image in (a.plot, a.montage):
        assert cv2.imread(str(image)) is not None and image.parent == a.report.parent
    report = a.report.read_text()
    assert "data:image/png;base64," in report and a.verdict.verdict in report
    assert "Top row: the 2 frames with the highest fake probability" in report  # the detector's top_k
    assert [f for f, _ in steps] == sorted(f for f, _ in steps) and steps[-1][0] == 1.0


def test_page_shows_the_model_its_calibration_and_the_limits(judge: web.WebJudge, checkpoint: Path) -> None:
    about = judge.describe()
    assert f"**Model** {web._md(checkpoint)} (a test detector; resnet18" in about and "; no model card)" in about
    assert "fake when P(fake) >= **0.400**" in about and "+/-0.05" in about and "3 frames sampled per video" in about
    assert f"uploads up to {web.MAX_UPLOAD_MB} MB" in about and f"first {web.MAX_FRAMES_PER_REQUEST} frames" in about


@pytest.mark.parametrize(
    ("name", "verdict", "reason"),
    [
        ("text", "UNREADABLE", "plain text"),
        ("empty", "UNREADABLE", "empty"),
        ("truncated", "UNREADABLE", "truncated"),
        ("noise", "NO_FACE", "no face with probability"),
    ],
)
def test_bad_uploads_get_a_reason_not_a_traceback(judge: web.WebJudge, clips: dict[str, Path], name: str, verdict: str,
                                                  reason: str) -> None:
    a = judge.analyse(clips[name])
    assert a.summary.startswith(f"## Verdict: {verdict}") and reason in a.summary
    assert clips[name].name in a.summary and str(clips[name].parent) not in a.summary  # the server's folder stays out
    assert (a.plot, a.montage, a.report) == (None, None, None)


def test_nothing_uploaded(judge: web.WebJudge) -> None:
    a = judge.analyse(None)
    assert a.verdict.verdict == "unreadable" and "no file uploaded" in a.summary


def test_upload_above_the_size_limit_is_refused_before_decoding(checkpoint: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.mp4"
    with big.open("wb") as fh:  # sparse: 1.5 MB that were never written
        fh.truncate(1_500_000)
    a = web.WebJudge(checkpoint, "test", work_dir=tmp_path / "web", max_upload_mb=1).analyse(big)
    assert a.verdict.verdict == "unreadable" and "above this server's upload limit of 1 MB" in a.summary


def test_decode_budget_bounds_a_long_or_large_video(checkpoint: Path, clips: dict[str, Path], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # A 4K or 10-minute file, scaled down: 12 frames of 320x240 against a budget of 4 such frames.
    info, frames = read_frames(clips["good"], 3, max_decoded_pixels=4 * 320 * 240)
    assert info.n_frames == 4 and [f.frame_index for f in frames] == [0, 2, 3]
    assert "only the first 4 of 12 frames decoded (limit 0.3072 Mpx decoded per request: 4 frames at this size)" in info.notes
    monkeypatch.setattr(web, "MAX_DECODED_PIXELS", 4 * 320 * 240)
    a = web.WebJudge(checkpoint, "test", work_dir=tmp_path).analyse(clips["good"])
    assert a.verdict.n_frames_expected == 3 and "only the first 4 of 12 frames decoded" in a.summary
    assert a.report is not None  # bounded, still judged and explained


def test_an_unexpected_failure_is_one_line_in_the_page(judge: web.WebJudge, clips: dict[str, Path],
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    def boom(path: Path) -> None:
        raise MemoryError(f"cannot allocate for {path}")

    with monkeypatch.context() as mp:
        mp.setattr(judge.judge, "judge_file", boom)
        summary, plot, montage, report = web.page_outputs(judge, str(clips["good"]))
    assert summary.startswith("## Verdict: ERROR") and "MemoryError" in summary and "Traceback" not in summary
    assert str(clips["good"].parent) not in summary and (plot, montage, report) == (None, None, None)
    assert "Traceback" in caplog.text  # the server's log has it
    assert web.page_outputs(judge, str(clips["good"]))[0].split("\n")[0] in [f"## Verdict: {v}" for v in SCORED]


@pytest.mark.slow  # a fresh interpreter importing PyTorch: about 15 s
def test_predict_does_not_import_gradio(checkpoint: Path, clips: dict[str, Path]) -> None:
    code = ("import sys; from deepfake_detector.interfaces import cli; "
            f"rc = cli.main(['predict', {str(clips['good'])!r}, '--model', {str(checkpoint)!r}]); "
            "assert rc == 0, rc; print('gradio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_web_does_not_import_the_cli() -> None:
    """Both interfaces stand on the judging service (:mod:`service`); only `serve` goes cli -> web."""
    code = "import sys, deepfake_detector.interfaces.web; print('deepfake_detector.interfaces.cli' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_page_names_the_model_card_next_to_the_model(checkpoint: Path, tmp_path: Path) -> None:
    model = Path(shutil.copy(checkpoint, tmp_path / "detector.pt"))
    (tmp_path / "MODEL_CARD.md").write_text("# Model card\n")
    about = web.WebJudge(model, "the released detector", work_dir=tmp_path / "web").describe()
    assert f"**Model** {web._md(model)} (the released detector; resnet18" in about
    assert f"; model card {web._md(tmp_path / 'MODEL_CARD.md')})" in about


def test_serve_uses_the_released_detector_unless_told(checkpoint: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """After `make demo` both detectors are there: `serve` picks the pipeline's only with --model."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(service, "CHECKOUT", tmp_path / "elsewhere")
    for folder in ("release", "models"):
        (tmp_path / folder).mkdir()
        shutil.copy(checkpoint, tmp_path / folder / "detector.pt")
    served: list[tuple[Path, str]] = []
    monkeypatch.setattr(web, "serve", lambda model_path, which, **kwargs: served.append((model_path, which)))
    assert cli.main(["serve"]) == 0
    assert cli.main(["serve", "--model", "models/detector.pt"]) == 0
    assert [path for path, _ in served] == [Path("release/detector.pt"), Path("models/detector.pt")]
    assert served[0][1].startswith("the released detector") and served[1][1] == "given with --model"


def test_serve_usage_errors(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli.main(["serve", "--model", str(tmp_path / "missing.pt")]) == 2
    assert "--model:" in capsys.readouterr().err
    assert cli.main(["serve", "--model", str(checkpoint), "--port", "70000"]) == 2
    assert "must be in 0..65535" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if the demo extra were not installed
    assert cli.main(["serve", "--model", str(checkpoint)]) == 2
    assert "pip install -e '.[demo]'" in capsys.readouterr().err


def test_sample_clips_one_per_manipulation(tmp_path: Path) -> None:
    for f in ("a.mp4", "a_sbi.mp4", "a_swap.mp4", "b.mp4"):
        (tmp_path / f).write_bytes(b"x")
    (tmp_path / "labels.csv").write_text("file,label,manipulation\na.mp4,real,original\na_sbi.mp4,fake,sbi\n"
                                         "a_swap.mp4,fake,swap\nb.mp4,real,original\n")
    assert [p.name for p in web.sample_clips(tmp_path)] == ["a.mp4", "a_sbi.mp4", "a_swap.mp4"]
    assert web.sample_clips(tmp_path / "absent") == []


def test_the_page_is_built_before_the_model_loads(checkpoint: Path, clips: dict[str, Path], tmp_path: Path) -> None:
    """The page needs no model; an upload sent while the model loads in the background waits for it."""
    w = web.WebJudge(checkpoint, "test", work_dir=tmp_path)
    app = web.build_app(w, examples=[])
    assert w.judge.detector is None and web.page_state(w) == (web.LOADING_TEXT, False)
    # What an open page asks every POLL_S s (and on load): the panel's text, the button, the timer.
    refresh = next(f.fn for f in app.fns.values() if f.name == "refresh")
    text, button, timer = refresh()
    assert text == web.LOADING_TEXT and not button.interactive and timer.active
    loading = w.start_loading()
    a = w.analyse(clips["noise"])  # during or after the background load, never a second load
    loading.join(timeout=120)
    assert a.verdict.verdict == "no_face" and w.load_error is None
    assert web.page_state(w) == (w.about, True) and w.about.startswith(f"**Model** {web._md(checkpoint)}")
    text, button, timer = refresh()
    assert text == w.about and button.interactive and not timer.active  # the page stops asking


def test_a_model_that_fails_to_load_stops_the_server(tmp_path: Path) -> None:
    not_a_detector = tmp_path / "weights.pt"
    torch = pytest.importorskip("torch")
    torch.save({"weights": torch.zeros(3)}, not_a_detector)
    w = web.WebJudge(not_a_detector, "test", work_dir=tmp_path / "web")
    w.start_loading().join(timeout=120)
    assert isinstance(w.load_error, service.UsageError) and "not a deepfake-detector checkpoint" in str(w.load_error)
    text, ready = web.page_state(w)
    assert text.startswith("**The model could not be loaded**") and not ready
    with pytest.raises(service.UsageError, match="--model: .*not a deepfake-detector checkpoint"):
        web._wait(w, threading.Event())  # what serve() blocks in: the CLI prints it and exits 2


# `serve` with a stand-in for the model loading (no PyTorch): the page, then "model ready".
SERVE_STUB = """
import sys
from deepfake_detector.interfaces import cli, web

def loaded(self):
    self.about = "a stand-in model"
    return self.about

web.WebJudge.ensure_loaded = loaded
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize(("signum", "status", "last_line"), [
    (signal.SIGINT, cli.EXIT_INTERRUPTED, "deepfake-detector: interrupted"),
    (signal.SIGTERM, 0, "deepfake-detector web demo stopped (SIGTERM)"),
], ids=["SIGINT", "SIGTERM"])
def test_serve_stops_on_ctrl_c_and_sigterm(checkpoint: Path, signum: int, status: int, last_line: str) -> None:
    port = web.free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVE_STUB, "serve", "--model", str(checkpoint), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lines = [server.stderr.readline() for _ in range(2)]
        assert "web demo on http://127.0.0.1" in lines[0] and lines[1].startswith(web.READY_LINE), lines
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.status == 200
        server.send_signal(signum)
        _, err = server.communicate(timeout=30)
    finally:
        server.kill()
        server.wait()
    assert server.returncode == status and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == last_line, err


# ----------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def server(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):  # a generator fixture
    """`deepfake-detector serve` on a free loopback port, uploads up to 1 MB, for the module."""
    from tools.web_check import start_server

    running = start_server(checkpoint, tmp_path_factory.mktemp("serve") / "serve.log", extra_args=("--max-upload-mb", "1"))
    yield running
    running.stop()


@pytest.mark.slow
def test_server_judges_an_upload_through_the_client_api(server, clips: dict[str, Path], tmp_path: Path) -> None:
    import httpx
    from gradio_client import Client, handle_file

    assert server.url.startswith("http://127.0.0.1:")
    client = Client(server.url, verbose=False)
    summary, plot, montage, report = client.predict(handle_file(str(clips["good"])), api_name="/judge")
    assert summary.split("\n")[0] in [f"## Verdict: {v}" for v in SCORED] and "threshold 0.400" in summary
    assert all(Path(p).is_file() for p in (plot, montage, report))
    summary, *files = client.predict(handle_file(str(clips["text"])), api_name="/judge")
    assert summary.startswith("## Verdict: UNREADABLE") and "plain text" in summary and files == [None, None, None]
    big = tmp_path / "big.mp4"
    with big.open("wb") as fh:  # sparse: 1.5 MB that were never written
        fh.truncate(1_500_000)
    with pytest.raises(Exception, match="exceeds the maximum file size of 1000000 bytes"):  # the server's --max-upload-mb 1
        client.predict(handle_file(str(big)), api_name="/judge")
    with big.open("rb") as fh:  # a client that does not ask first: the server refuses it itself
        response = httpx.post(f"{server.url}gradio_api/upload", files={"files": ("big.mp4", fh)}, timeout=60)
    assert response.status_code == 413, (response.status_code, response.text[:300])
    assert client.predict(handle_file(str(clips["good"])), api_name="/judge")[0].startswith("## Verdict: ")  # still serving
    log = server.log.read_text()
    assert "Traceback" not in log and "gradio.live" not in log  # no public link unless asked


@pytest.mark.slow
def test_page_in_headless_chromium(server, clips: dict[str, Path], tmp_path: Path) -> None:
    from tools.web_check import find_browser, judge_in_browser

    found = find_browser()
    if isinstance(found, str):
        pytest.skip(found)
    shot = tmp_path / "page.png"
    seen = judge_in_browser(server.url, clips["good"], shot)
    assert seen["verdict"].split("\n")[0] in [f"Verdict: {v}" for v in SCORED]
    assert "threshold 0.400" in seen["verdict"] and "face clip.mp4" in seen["verdict"]
    assert seen["plot"].endswith("probability.png") and seen["montage"].endswith("montage.png")
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[1] >= 1000


# ----------------------------------------------------------------------------- the notebook


@pytest.mark.slow
def test_quickstart_notebook_runs(checkpoint: Path, clips: dict[str, Path]) -> None:
    pytest.importorskip("nbmake", reason="the notebook test needs nbmake (pip install -e .[test])")
    notebook = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
    env = {**os.environ, "DFD_MODEL": str(checkpoint), "DFD_CLIP": str(clips["good"]), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbmake", str(notebook)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "1 passed" in out.stdout
